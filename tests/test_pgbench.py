"""pgbench (Debian's postgresql-client 15) against a real node over TLS with sslmode=verify-full.

`pgbench -i -s 1` drops and creates its tables (WITH (fillfactor=100), INT meaning INT8),
truncates them, loads pgbench_accounts with COPY ... FROM STDIN, runs VACUUM ANALYZE and adds
primary keys with ALTER TABLE. Then a fixed number of transactions (-t) of the select-only script
(-S) and of the default TPC-B-like script (explicit BEGIN ... END) run with 1 and with 8 clients.
Every run must exit 0 having processed every transaction with none failed, and after the TPC-B-like
runs the balances must still add up: each committed transaction adds the same delta to one
account, one teller and one branch and writes one history row (pgbench empties the history before
each run), so any lost update or partial commit shows.

These are functional checks: how fast pgbench runs is measured by `make bench` (bench/, written
up in docs/benchmarks.md, with the throughput floors these tests used to hold), not here.

The TPC-B-like script updates the single branch row in every transaction, so concurrent clients
conflict constantly; Pillbug's optimistic transactions answer with 40001 and pgbench retries
(--max-tries). With several clients a transaction can lose many times in a row, so those runs
allow many tries (pgbench allows unlimited tries only with a duration, and a duration would make
the work done depend on the machine's speed).
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from conftest import Node

TRIES = "10000"  # practically unlimited: a transaction that still fails is a failure


def pgbench(node: Node, database: str, *args: str, timeout: float = 180) -> str:
    url = node.url(database=database)
    assert "sslmode=verify-full" in url and "sslrootcert=" in url
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    proc = subprocess.run(["pgbench", *args, url], capture_output=True, text=True, timeout=timeout, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"pgbench {' '.join(args)} exited with {proc.returncode}:\n{output}"
    return output


def report(output: str) -> dict[str, int]:
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    assert processed and failed, output
    return {"processed": int(processed.group(1)), "failed": int(failed.group(1))}


@pytest.fixture(scope="module")
def bench_db(node: Node) -> Iterator[str]:
    node.sql("DROP DATABASE IF EXISTS bench CASCADE", "CREATE DATABASE bench")
    yield "bench"
    node.sql("DROP DATABASE IF EXISTS bench CASCADE")


@pytest.fixture(scope="module")
def initialized(node: Node, bench_db: str) -> str:
    out = pgbench(node, bench_db, "-i", "-s", "1")
    for step in ("dropping old tables", "creating tables", "generating data (client-side)", "vacuuming",
                 "creating primary keys", "done in"):
        assert step in out, out
    return bench_db


def balances(node: Node, database: str) -> tuple:
    return tuple(node.sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), "
        "(SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(delta) FROM pgbench_history), "
        "(SELECT count(*) FROM pgbench_history)", database=database)[0])


def check_balances(node: Node, database: str, before: tuple, committed: int) -> None:
    """pgbench truncates pgbench_history before each run; the balances carry over."""
    accounts, tellers, branches, deltas, history = balances(node, database)
    changes = (accounts - before[0], tellers - before[1], branches - before[2])
    assert changes == (deltas, deltas, deltas), (changes, deltas)
    # Exactly one history row per transaction pgbench saw commit: none lost, none doubled.
    assert history == committed


def test_init_creates_and_loads_the_tables(node: Node, initialized: str) -> None:
    counts = node.sql("SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_tellers), "
                      "(SELECT count(*) FROM pgbench_branches), (SELECT count(*) FROM pgbench_history), "
                      "(SELECT count(DISTINCT aid) FROM pgbench_accounts), "
                      "(SELECT min(aid) FROM pgbench_accounts), (SELECT max(aid) FROM pgbench_accounts)",
                      database=initialized)
    assert counts == [(100000, 10, 1, 0, 100000, 1, 100000)]
    keys = node.sql("""
        SELECT c.relname, pg_get_constraintdef(con.oid), format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = con.conkey[1]
        WHERE con.contype = 'p' ORDER BY 1""", database=initialized)
    assert keys[:3] == [("pgbench_accounts", "PRIMARY KEY (aid)", "bigint"),
                        ("pgbench_branches", "PRIMARY KEY (bid)", "bigint"),
                        ("pgbench_history", "PRIMARY KEY (rowid)", "bigint")]
    assert keys[3] == ("pgbench_tellers", "PRIMARY KEY (tid)", "bigint")
    assert balances(node, initialized) == (0, 0, 0, None, 0)
    # A second -i starts over: drop, create and load again, without leftovers.
    pgbench(node, initialized, "-i", "-s", "1", "-q")
    assert node.sql("SELECT count(*) FROM pgbench_accounts", database=initialized) == [(100000,)]


@pytest.mark.parametrize("clients", [1, 8])
def test_select_only(node: Node, initialized: str, clients: int) -> None:
    per_client = 2000 // clients
    out = pgbench(node, initialized, "-S", "-t", str(per_client), "-c", str(clients), "-j", str(min(clients, 2)))
    assert report(out) == {"processed": clients * per_client, "failed": 0}, out
    assert "<builtin: select only>" in out


@pytest.mark.parametrize("clients", [1, 8])
def test_tpcb_like(node: Node, initialized: str, clients: int) -> None:
    before = balances(node, initialized)
    per_client = 400 // clients
    out = pgbench(node, initialized, "-t", str(per_client), "-c", str(clients), "-j", str(min(clients, 2)),
                  f"--max-tries={TRIES}")
    result = report(out)
    assert result == {"processed": clients * per_client, "failed": 0}, out
    assert "<builtin: TPC-B (sort of)>" in out
    check_balances(node, initialized, before, result["processed"])


def test_tpcb_like_extended_protocol(node: Node, initialized: str) -> None:
    before = balances(node, initialized)
    out = pgbench(node, initialized, "-M", "prepared", "-t", "25", "-c", "4", "-j", "2", f"--max-tries={TRIES}")
    result = report(out)
    assert result == {"processed": 100, "failed": 0}, out
    check_balances(node, initialized, before, result["processed"])
