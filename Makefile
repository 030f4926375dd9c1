# Pillbug's set-up: `make start` and `make test` are the two commands in the README.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE ?= pillbug-data
CERTS ?= certs
ADDR ?= 127.0.0.1:26257
HTTP ?= 127.0.0.1:8080
# The CA key signs every certificate: it stays outside certs/, which is what clients are given.
CA_KEY ?= pillbug-ca/ca.key
# The admin-role user created (with a generated password, printed once) on the first start.
ADMIN_USER ?= dbadmin
# Debian packages the tests and the benchmark use: psql and pgbench (the real clients),
# a PostgreSQL server that bench/ starts to compare against, and a JDK with Debian's pgjdbc
# (tests/test_jdbc.py compiles and runs a JDBC client).
DEB_PACKAGES := postgresql-client postgresql openssl default-jdk-headless libpostgresql-jdbc-java etcd-server etcd-client haproxy iproute2

.PHONY: install deps start certs test faults lint bench slt clean

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
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	test -f /usr/share/java/postgresql.jar || missing="$$missing libpostgresql-jdbc-java"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

start: install certs
	$(BIN)/pillbug start-single-node --certs-dir=$(CERTS) --store=$(STORE) \
		--listen-addr=$(ADDR) --http-addr=$(HTTP) --init-admin=$(ADMIN_USER)

# The CA, a node certificate for the listen address and root's client certificate, each made once.
certs:
	@test -f $(CERTS)/ca.crt || $(BIN)/pillbug cert create-ca --certs-dir=$(CERTS) --ca-key=$(CA_KEY)
	@test -f $(CERTS)/node.crt || $(BIN)/pillbug cert create-node localhost 127.0.0.1 \
		$(firstword $(subst :, ,$(ADDR))) --certs-dir=$(CERTS) --ca-key=$(CA_KEY)
	@test -f $(CERTS)/client.root.crt || $(BIN)/pillbug cert create-client root \
		--certs-dir=$(CERTS) --ca-key=$(CA_KEY)

# Runs on a clone alone. The seed page's own examples (tests/test_seed.py and the seed test in
# tests/test_contention.py) are an extra run that needs ../shared/acceptance/seed (or PILLBUG_SHARED):
# skipped without it, failing under CI=true. --durations lists the 20 slowest tests at the end.
test: install
	$(BIN)/ruff check pillbug tests bench
	$(BIN)/lint-imports
	$(BIN)/pytest -p no:cacheprovider --durations=20 tests

# The soak run of the cluster fault tests: random kills, pauses and cuts for FAULTS_DURATION seconds
# per workload, then the checkers (the short run of the same tests is part of `make test`).
FAULTS_DURATION ?= 300
faults: install
	PILLBUG_FAULTS_SOAK=1 PILLBUG_FAULTS_DURATION=$(FAULTS_DURATION) \
		$(BIN)/pytest -p no:cacheprovider -s -m cluster_faults -k test_soak -o timeout=$$(( $(FAULTS_DURATION) * 3 + 300 )) \
		tests/test_cluster_faults.py

# make bench BENCH_ARGS="--quick" (or --profile, --duration=S, ...; see python -m bench.run --help)
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Pillbug measured against SQLite's sqllogictest corpus in ../shared/slt (or PILLBUG_SHARED/slt):
# every record of all 30 files; writes docs/slt.md's table and bench/slt_results.json.
# make slt SLT_ARGS="--files select4 --max-records 500" for a part of it (python -m bench.slt --help).
SLT_ARGS ?=
slt: install
	$(BIN)/python -m bench.slt --report $(SLT_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
