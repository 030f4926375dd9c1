"""What the planner promises, measured on a real node: lookups read only the keys they need, and
statements that differ only in their literals share one cached plan.

Keys read come from EXPLAIN ANALYZE, which runs the statement with the transaction wrapped in a
counter of the key-value pairs the kv layer returned ("rows decoded from KV: N"); a full scan of
the table would count every row. Plan reuse comes from the node's plan-cache metrics on
/_status/vars (sql_optimizer_plan_cache_hits / _misses), read over HTTPS like any scraper does.
"""
from __future__ import annotations

import datetime
import decimal
import os
import re
import ssl
import urllib.request

import pytest

ROWS = 500


@pytest.fixture(scope="module")
def conn(node):
    node.sql("DROP DATABASE IF EXISTS plans CASCADE", "CREATE DATABASE plans")
    c = node.connect(database="plans")
    with c.cursor() as cur:
        cur.execute("CREATE TABLE kv (k INT PRIMARY KEY, v INT, s STRING, d DATE, INDEX kv_v_idx (v), "
                    "UNIQUE INDEX kv_s_key (s))")
        cur.execute(f"INSERT INTO kv SELECT i, i % 50, 's' || i::STRING, '2024-01-01'::DATE + i "
                    f"FROM generate_series(1, {ROWS}) AS g(i)")
        cur.execute("CREATE TABLE child (id INT PRIMARY KEY, kv_k INT, INDEX (kv_k))")
        cur.execute("INSERT INTO child SELECT i, i * 7 FROM generate_series(1, 20) AS g(i)")
    yield c
    c.close()
    node.sql("DROP DATABASE IF EXISTS plans CASCADE")


def keys_read(conn, sql: str) -> int:
    with conn.cursor() as cur:
        cur.execute("EXPLAIN ANALYZE " + sql)
        lines = [r[0] for r in cur.fetchall()]
    for line in lines:
        m = re.match(r"rows decoded from KV: (\d+) ", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no KV read count in:\n" + "\n".join(lines))


def test_full_scan_reads_every_row(conn):
    # The counter is real: a predicate no index serves reads the whole table.
    assert keys_read(conn, "SELECT * FROM kv WHERE s LIKE '%9'") == ROWS
    assert keys_read(conn, "SELECT count(*) FROM kv") == ROWS


@pytest.mark.parametrize("sql, expected", [
    ("SELECT * FROM kv WHERE k = 123", 1),
    ("SELECT v FROM kv WHERE k = 123 AND v = 23", 1),
    ("SELECT * FROM kv WHERE k = 100000", 0),
    ("SELECT * FROM kv WHERE k IN (1, 2, 3)", 3),
    ("SELECT * FROM kv WHERE k > 10 AND k <= 20", 10),
    ("SELECT * FROM kv WHERE k < 5 ORDER BY k", 4),
    ("SELECT * FROM kv ORDER BY k LIMIT 3", 3),
])
def test_primary_key_lookups_read_only_matching_keys(conn, sql, expected):
    assert keys_read(conn, sql) == expected


@pytest.mark.parametrize("sql, expected", [
    # one index entry, then the row it points to
    ("SELECT * FROM kv WHERE s = 's77'", 2),
    ("SELECT k FROM kv WHERE s = 'nope'", 0),
    # ROWS / 50 = 10 entries with v = 7, each followed by its row
    ("SELECT * FROM kv WHERE v = 7", 20),
    ("SELECT * FROM kv WHERE v IN (7, 8)", 40),
])
def test_secondary_index_lookups_read_only_matching_keys(conn, sql, expected):
    assert keys_read(conn, sql) == expected


@pytest.mark.parametrize("sql, expected", [
    # the index holds every column named (key, STORING and primary key columns): no row fetch
    ("SELECT k FROM kv WHERE s = 's77'", 1),
    ("SELECT count(*) FROM kv WHERE v = 7", 10),
    ("SELECT k, v FROM kv WHERE v IN (7, 8) ORDER BY k", 20),
])
def test_covering_index_reads_only_index_entries(conn, sql, expected):
    assert keys_read(conn, sql) == expected


def test_lookup_join_reads_only_matching_rows(conn):
    # 20 child rows scanned, then one primary-key get into kv for each (all of them exist)
    assert keys_read(conn, "SELECT c.id, kv.s FROM child c JOIN kv ON kv.k = c.kv_k") == 40
    # one child row, one get
    assert keys_read(conn, "SELECT kv.s FROM child c JOIN kv ON kv.k = c.kv_k WHERE c.id = 3") == 2
    # the join through kv's index on v: the 10 kv rows with v = 7, each probing child's index
    n = keys_read(conn, "SELECT kv.k, c.id FROM kv JOIN child c ON c.kv_k = kv.k WHERE kv.v = 7")
    assert n < 60, n


def test_point_writes_read_only_their_row(conn):
    assert keys_read(conn, "UPDATE kv SET v = v WHERE k = 42") == 1
    # the unique index on s is checked for the moved entry: one more get
    assert keys_read(conn, "UPDATE kv SET s = 's42' WHERE k = 42") <= 2
    assert keys_read(conn, "DELETE FROM kv WHERE k = 100000") == 0


def metrics(node) -> dict[str, float]:
    ctx = ssl.create_default_context(cafile=os.path.join(node.certs_dir, "ca.crt"))
    ctx.check_hostname = False
    with urllib.request.urlopen(f"https://127.0.0.1:{node.http_port}/_status/vars", context=ctx,
                                timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        out[name] = float(value)
    return out


def test_literals_share_one_plan(node, conn):
    with conn.cursor() as cur:
        cur.execute("SELECT s, v FROM kv WHERE k = 1")  # planned and cached
        before = metrics(node)
        for k in range(2, 102):
            cur.execute(f"SELECT s, v FROM kv WHERE k = {k}")
            assert cur.fetchall() == [(f"s{k}", k % 50)]
        for s in ("s5", "s17", "nope"):
            cur.execute(f"SELECT k FROM kv WHERE s = '{s}'")
            assert cur.fetchall() == ([(int(s[1:]),)] if s != "nope" else [])
        after = metrics(node)
    # one new plan for the s = '...' shape; the 100 k = ... statements reused the first plan
    assert after["sql_optimizer_plan_cache_misses"] - before["sql_optimizer_plan_cache_misses"] == 1
    assert after["sql_optimizer_plan_cache_hits"] - before["sql_optimizer_plan_cache_hits"] >= 102


def test_literal_kinds_do_not_share_plans(node, conn):
    with conn.cursor() as cur:
        cur.execute("SELECT k FROM kv WHERE k = 7")
        assert cur.fetchall() == [(7,)]
        cur.execute("SELECT k FROM kv WHERE k = 7.0")
        assert cur.fetchall() == [(7,)]
        cur.execute("SELECT k FROM kv WHERE k = 7.5")
        assert cur.fetchall() == []
        cur.execute("SELECT k, k + 1.5 FROM kv WHERE k = 8")
        assert cur.fetchall() == [(8, decimal.Decimal("9.5"))]


def test_writes_share_plans_and_keep_each_value(node, conn):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE w (id INT PRIMARY KEY, name STRING, amount DECIMAL(10,2))")
        cur.execute("INSERT INTO w VALUES (0, 'zero', 0)")
        before = metrics(node)
        for i in range(1, 41):
            cur.execute(f"INSERT INTO w VALUES ({i}, 'name {i}', {i}.555)")
            cur.execute(f"UPDATE w SET amount = amount + 1 WHERE id = {i}")
        after = metrics(node)
        cur.execute("SELECT id, name, amount FROM w WHERE id IN (1, 40) ORDER BY id")
        assert cur.fetchall() == [(1, "name 1", decimal.Decimal("2.56")), (40, "name 40", decimal.Decimal("41.56"))]
    # two shapes (the INSERT and the UPDATE), each planned once
    assert after["sql_optimizer_plan_cache_misses"] - before["sql_optimizer_plan_cache_misses"] == 2


def test_not_cacheable_shapes_are_planned_per_text(node, conn):
    with conn.cursor() as cur:
        # ORDER BY 1 / 2: a position, not a value; each text gets its own plan
        cur.execute("SELECT k, s FROM kv WHERE k < 4 ORDER BY 1 DESC")
        assert cur.fetchall() == [(3, "s3"), (2, "s2"), (1, "s1")]
        cur.execute("SELECT k, s FROM kv WHERE k < 4 ORDER BY 2 DESC")
        assert cur.fetchall() == [(3, "s3"), (2, "s2"), (1, "s1")]
        cur.execute("SELECT v, count(*) FROM kv WHERE k <= 100 GROUP BY 1 ORDER BY 1 LIMIT 2")
        assert cur.fetchall() == [(0, 2), (1, 2)]
        # typed literals stay in the statement's shape
        for day in (1, 2, 3):
            cur.execute(f"SELECT k FROM kv WHERE d = DATE '2024-01-0{day + 1}'")
            assert cur.fetchall() == [(day,)]
        cur.execute("SELECT k FROM kv WHERE d = DATE '2024-01-02' + 1")
        assert cur.fetchall() == [(2,)]
        cur.execute("SELECT d FROM kv WHERE k = 5")
        assert cur.fetchall() == [(datetime.date(2024, 1, 6),)]


def test_prepared_statements_bind_each_value(node, conn):
    import psycopg
    with psycopg.connect(**node.params(database="plans"), autocommit=True) as c3:
        for k in (3, 4, 300, 100000):
            row = c3.execute("SELECT s FROM kv WHERE k = %s", (k,), prepare=True).fetchone()
            assert row == ((f"s{k}",) if k <= ROWS else None)
        rows = c3.execute("SELECT k FROM kv WHERE v = %s AND k < %s ORDER BY k DESC", (7, 200),
                          prepare=True).fetchall()
        assert rows == [(157,), (107,), (57,), (7,)]
