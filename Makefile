# Pillbug's set-up: `make start` and `make test` are the two commands in the README.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE ?= pillbug-data
CERTS ?= certs
ADDR ?= 127.0.0.1:26257
HTTP ?= 127.0.0.1:8080
# Debian packages the tests and the benchmark use: psql and pgbench (the real clients),
# and a PostgreSQL server that bench/ starts to compare against.
DEB_PACKAGES := postgresql-client postgresql openssl

.PHONY: install deps start test lint bench clean

install: $(VENV)/.installed deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

deps:
	@missing=""; \
	command -v psql >/dev/null || missing="$$missing postgresql-client"; \
	command -v pgbench >/dev/null || missing="$$missing postgresql-client"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

start: install
	$(BIN)/pillbug start-single-node --certs-dir=$(CERTS) --store=$(STORE) \
		--listen-addr=$(ADDR) --http-addr=$(HTTP) --init-admin=admin

test: install
	$(BIN)/ruff check pillbug tests
	$(BIN)/pytest -p no:cacheprovider tests

# make bench BENCH_ARGS="--quick" (or --profile, --duration=S, ...; see python -m bench.run --help)
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
