"""SQL cursors (DECLARE / FETCH / MOVE / CLOSE) through real clients over real sockets:
psycopg2 named cursors (itersize), psycopg 3 server-side cursors (DECLARE, Describe of the cursor
as a portal, FETCH FORWARD n in the extended protocol, MOVE via scroll()), and the raw protocol.
The SQL-level behaviour is also in tests/logic/cursors.test.
"""
from __future__ import annotations

import time

import psycopg
import psycopg2
import psycopg2.errors
import pytest
from wire_client import SYNC, RawConnection, bind, describe, execute, parse, query

N = 10_000


@pytest.fixture
def numbers(node, db):
    node.sql("CREATE TABLE nums (k INT PRIMARY KEY, s STRING)",
             f"INSERT INTO nums SELECT g, 'row ' || g::STRING FROM generate_series(1, {N}) AS g", database=db)
    return db


def _conninfo(node, db) -> str:
    return " ".join(f"{k}={v}" for k, v in node.params(database=db).items())


def test_psycopg2_named_cursor_with_itersize(node, numbers):
    conn = node.connect(database=numbers, autocommit=False)
    try:
        cur = conn.cursor(name="big")
        cur.itersize = 777
        cur.execute("SELECT k, s FROM nums WHERE k > %s ORDER BY k", (10,))
        seen = [row for row in cur]
        assert len(seen) == N - 10 and seen[0] == (11, "row 11") and seen[-1] == (N, f"row {N}")
        cur.close()
        cur = conn.cursor(name="some")
        cur.execute("SELECT k FROM nums ORDER BY k")
        assert cur.fetchmany(3) == [(1,), (2,), (3,)]
        cur.scroll(10)  # MOVE FORWARD 10
        assert cur.fetchone() == (14,)
        with pytest.raises(psycopg2.Error) as info:
            cur.scroll(-2)  # backward: forward-only cursor
        assert info.value.pgcode == "55000"
        conn.rollback()
    finally:
        conn.close()


def test_psycopg3_server_cursor(node, numbers):
    with psycopg.connect(_conninfo(node, numbers)) as conn:
        with conn.cursor(name="c", scrollable=False) as cur:
            cur.itersize = 1000
            cur.execute("SELECT k, s FROM nums WHERE k <= %s ORDER BY k", (N,))
            assert [d.name for d in cur.description] == ["k", "s"]
            total = 0
            last = 0
            for k, s in cur:
                assert k == last + 1 and s == f"row {k}"
                last = k
                total += 1
            assert total == N
        with conn.cursor(name="c2") as cur:
            cur.execute("SELECT k FROM nums ORDER BY k")
            assert cur.fetchmany(2) == [(1,), (2,)]
            cur.scroll(5)
            assert cur.fetchone() == (8,)
            cur.scroll(100, mode="absolute")
            assert cur.fetchone() == (101,)
            assert len(cur.fetchall()) == N - 101
        conn.commit()
        with conn.cursor(name="c3", binary=True) as cur:
            cur.execute("SELECT k, s FROM nums WHERE k < 4 ORDER BY k")
            assert cur.fetchall() == [(1, "row 1"), (2, "row 2"), (3, "row 3")]


def test_cursor_sql_errors_and_lifecycle(node, numbers):
    conn = node.connect(database=numbers)
    try:
        cur = conn.cursor()
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("DECLARE c CURSOR FOR SELECT 1")
        assert info.value.pgcode == "25P01" and "transaction blocks" in str(info.value)
        cur.execute("BEGIN")
        cur.execute("DECLARE c CURSOR FOR SELECT k FROM nums ORDER BY k")
        assert cur.statusmessage == "DECLARE CURSOR"
        cur.execute("FETCH 2 FROM c")
        assert cur.fetchall() == [(1,), (2,)] and cur.statusmessage == "FETCH 2"
        cur.execute("MOVE FORWARD 3 IN c")
        assert cur.statusmessage == "MOVE 3"
        cur.execute("FETCH RELATIVE 0 FROM c")
        assert cur.fetchall() == [(5,)]
        cur.execute("FETCH ABSOLUTE 7 FROM c")
        assert cur.fetchall() == [(7,)]
        cur.execute("FETCH c")
        assert cur.fetchall() == [(8,)]
        cur.execute("MOVE ALL FROM c")
        assert cur.statusmessage == f"MOVE {N - 8}"
        cur.execute("FETCH NEXT FROM c")
        assert cur.fetchall() == [] and cur.statusmessage == "FETCH 0"
        cur.execute("CLOSE c")
        assert cur.statusmessage == "CLOSE CURSOR"
        for statement, sqlstate in [("FETCH c", "34000"), ("CLOSE c", "34000")]:
            cur.execute("SAVEPOINT s")
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(statement)
            assert info.value.pgcode == sqlstate and 'cursor "c" does not exist' in str(info.value)
            cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("DECLARE d CURSOR FOR SELECT 1")
        cur.execute("SAVEPOINT s")
        for statement, sqlstate in [("DECLARE d CURSOR FOR SELECT 2", "42P03"),
                                    ("DECLARE e CURSOR WITH HOLD FOR SELECT 1", "0A000"),
                                    ("DECLARE e SCROLL CURSOR FOR SELECT 1", "0A000"),
                                    ("DECLARE e BINARY CURSOR FOR SELECT 1", "0A000"),
                                    ("DECLARE e CURSOR FOR SELECT * FROM missing", "42P01"),
                                    ("FETCH BACKWARD 1 FROM d", "55000"),
                                    ("FETCH PRIOR FROM d", "55000"),
                                    ("FETCH ABSOLUTE -1 FROM d", "55000")]:
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(statement)
            assert info.value.pgcode == sqlstate, statement
            cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("CLOSE ALL")
        assert cur.statusmessage == "CLOSE CURSOR ALL"
        cur.execute("DECLARE d CURSOR FOR SELECT 1")  # the name is free again
        cur.execute("COMMIT")
        # Cursors end with their transaction.
        cur.execute("BEGIN")
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("FETCH d")
        assert info.value.pgcode == "34000"
        cur.execute("ROLLBACK")
    finally:
        conn.close()


def test_query_error_surfaces_on_fetch(node, numbers):
    """DECLARE plans; running is lazy: the division by zero at row 5000 is FETCH's error, and
    the rows before it arrive first."""
    conn = node.connect(database=numbers, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("DECLARE c CURSOR FOR SELECT k, 1 / (k - 5000) FROM nums ORDER BY k")
        cur.execute("FETCH 10 FROM c")
        assert [r[0] for r in cur.fetchall()] == list(range(1, 11))
        cur.execute("SAVEPOINT s")
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute("FETCH ALL FROM c")
        cur.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("FETCH 1 FROM c")  # a failed cursor has no rows after the failure
        assert info.value.pgcode == "55000"
        conn.rollback()
        cur.execute("SELECT count(*) FROM nums")
        assert cur.fetchone() == (N,)
    finally:
        conn.close()


def test_cursor_sees_its_transaction_and_pg_cursors(node, numbers):
    conn = node.connect(database=numbers, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO nums VALUES (0, 'zero')")
        cur.execute("DECLARE c NO SCROLL CURSOR FOR SELECT k, s FROM nums ORDER BY k")
        cur.execute("SELECT name, statement, is_holdable, is_binary, is_scrollable FROM pg_cursors")
        assert cur.fetchall() == [("c", "DECLARE c NO SCROLL CURSOR FOR SELECT k, s FROM nums ORDER BY k",
                                   False, False, False)]
        cur.execute("FETCH 1 FROM c")
        assert cur.fetchall() == [(0, "zero")]
        conn.rollback()
        cur.execute("SELECT count(*) FROM pg_cursors")
        assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_cursor_over_the_raw_protocol_in_one_query(node, numbers):
    """A simple Query with BEGIN; DECLARE; FETCH; COMMIT: each FETCH's rows are described."""
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=numbers)
        conn.send(query("BEGIN; DECLARE c CURSOR FOR SELECT k FROM nums ORDER BY k; FETCH 2 c; FETCH 1 c; COMMIT"))
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"C", b"C", b"T", b"D", b"D", b"C", b"T", b"D", b"C", b"C", b"Z"]
        tags = [body for t, body in msgs if t == b"C"]
        assert tags == [b"BEGIN\x00", b"DECLARE CURSOR\x00", b"FETCH 2\x00", b"FETCH 1\x00", b"COMMIT\x00"]
        # In an implicit transaction (one Query, no BEGIN) DECLARE is refused.
        conn.send(query("DECLARE c CURSOR FOR SELECT 1; FETCH c"))
        msgs = conn.read_until()
        assert conn.errors(msgs)[0]["C"] == "25P01"
    finally:
        conn.close()


def test_cursor_holds_an_iterator_not_the_result(node, db):
    """A cursor over a billion rows declares and fetches at once: nothing runs ahead of FETCH."""
    conn = node.connect(database=db, autocommit=False)
    try:
        cur = conn.cursor()
        start = time.monotonic()
        cur.execute("DECLARE huge CURSOR FOR SELECT g, g * 2 FROM generate_series(1, 1000000000) AS g")
        cur.execute("FETCH 3 FROM huge")
        assert cur.fetchall() == [(1, 2), (2, 4), (3, 6)]
        cur.execute("MOVE 10000 IN huge")
        cur.execute("FETCH huge")
        assert cur.fetchall() == [(10004, 20008)]
        assert time.monotonic() - start < 10  # lazy: a liveness bound (a billion rows never made), not a speed target
        conn.rollback()
    finally:
        conn.close()


def test_prepared_fetch_describes_the_cursor_it_reads(node, db):
    """A FETCH prepared once and bound again reports the columns of the cursor open now (a
    cursor of the same name may have been declared over another query since)."""
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=db)
        conn.send(query("BEGIN; DECLARE c CURSOR FOR SELECT 7::INT8 AS x"))
        conn.read_until()
        conn.send(parse("FETCH 1 FROM c", name="f") + bind([], stmt="f") + describe(b"P") + execute() + SYNC)
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"1", b"2", b"T", b"D", b"C", b"Z"]
        assert msgs[2][1].startswith(b"\x00\x01x\x00") and msgs[3][1] == b"\x00\x01\x00\x00\x00\x017"
        conn.send(query("CLOSE c; DECLARE c CURSOR FOR SELECT 'hello' AS y"))
        conn.read_until()
        conn.send(bind([], stmt="f") + describe(b"P") + execute() + SYNC)
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"2", b"T", b"D", b"C", b"Z"]
        assert msgs[1][1].startswith(b"\x00\x01y\x00") and msgs[2][1] == b"\x00\x01\x00\x00\x00\x05hello"
        # The cursor is a portal for Describe too (psycopg 3 asks for its description).
        conn.send(describe(b"P", "c") + SYNC)
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"T", b"Z"] and msgs[0][1].startswith(b"\x00\x01y\x00")
        conn.send(query("COMMIT"))
        conn.read_until()
    finally:
        conn.close()
