"""COPY ... TO STDOUT (text, CSV, binary) and binary COPY ... FROM STDIN through real clients over
real sockets: psycopg 3 (cursor.copy, rows(), set_types, write_row), psycopg2 (copy_expert,
copy_to), asyncpg (copy_from_table, copy_from_query, copy_records_to_table) and psql (\\copy),
plus the raw protocol for what clients hide (one CopyData per row, flow control, errors).
"""
from __future__ import annotations

import asyncio
import csv
import datetime
import io
import os
import struct
import subprocess
import uuid
from decimal import Decimal

import asyncpg
import psycopg
import psycopg2
import pytest
from conftest import round_trips, wait_until_the_pipe_is_full
from psycopg.types.json import Jsonb
from wire_client import RawConnection, message, query

TYPED = """CREATE TABLE typed (
    k INT8 PRIMARY KEY, i2 INT2, i4 INT4, f4 FLOAT4, f8 FLOAT8, n DECIMAL, b BOOL, s STRING,
    by BYTES, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, iv INTERVAL, u UUID, j JSONB, a INT8[], sa STRING[])"""
TYPED_COLUMNS = ["k", "i2", "i4", "f4", "f8", "n", "b", "s", "by", "d", "ts", "tz", "iv", "u", "j", "a", "sa"]
TYPED_NAMES = ["int8", "int2", "int4", "float4", "float8", "numeric", "bool", "text", "bytea", "date",
               "timestamp", "timestamptz", "interval", "uuid", "jsonb", "int8[]", "text[]"]
UTC = datetime.UTC


def _typed_rows() -> list[tuple]:
    return [
        (1, 7, -70000, 1.5, 2.25, Decimal("12345.678900"), True, "plain", b"\x00\x01\xff",
         datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 12, 30, 15, 123456),
         datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime.timedelta(days=3, seconds=7, microseconds=5),
         uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), {"a": [1, 2], "b": None}, [1, None, -3], ["x", "y z"]),
        (2, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None),
        (3, -32768, 2147483647, -0.5, -1e300, Decimal("-0.001"), False, "tab\tnew\nline\\ \"q\",ü",
         b"", datetime.date(1970, 1, 1), datetime.datetime(1970, 1, 1), datetime.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
         datetime.timedelta(0), uuid.UUID(int=0), [], [], []),
    ]


def _conninfo(node, db) -> str:
    return " ".join(f"{k}={v}" for k, v in node.params(database=db).items())


@pytest.fixture
def typed(node, db):
    with psycopg.connect(_conninfo(node, db), autocommit=True) as conn:
        conn.execute(TYPED)
        with conn.cursor() as cur:
            for row in _typed_rows():
                cur.execute(f"INSERT INTO typed VALUES ({', '.join(['%s'] * len(row))})",
                            [Jsonb(v) if isinstance(v, dict) or (i == 14 and v is not None) else v
                             for i, v in enumerate(row)])
    return db


@pytest.fixture
def numbers(node, db):
    node.sql("CREATE TABLE nums (k INT PRIMARY KEY, s STRING)",
             "INSERT INTO nums SELECT g, 'row ' || g::STRING FROM generate_series(1, 10000) AS g", database=db)
    return db


def _normal(row: tuple) -> tuple:
    """What psycopg hands back for a typed row (json as Python objects, bytes as bytes)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def test_psycopg3_binary_copy_out_round_trips_every_type(node, typed):
    with psycopg.connect(_conninfo(node, typed), autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY typed ({', '.join(TYPED_COLUMNS)}) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(TYPED_NAMES)
                rows = [_normal(r) for r in copy.rows()]
            assert cur.rowcount == 3
    assert sorted(rows) == sorted(_typed_rows())


def test_psycopg3_binary_copy_in_round_trips_every_type(node, typed):
    with psycopg.connect(_conninfo(node, typed), autocommit=True) as conn:
        conn.execute(TYPED.replace("typed", "typed2"))
        with conn.cursor() as cur:
            with cur.copy(f"COPY typed2 ({', '.join(TYPED_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(TYPED_NAMES)
                for row in _typed_rows():
                    copy.write_row([Jsonb(v) if i == 14 and v is not None else v for i, v in enumerate(row)])
            assert cur.rowcount == 3
        # Every value came back equal: compare the two tables in SQL and in Python.
        assert conn.execute("SELECT count(*) FROM typed2 JOIN typed USING (k) WHERE typed2.s IS NOT DISTINCT FROM typed.s "
                            "AND typed2.n IS NOT DISTINCT FROM typed.n AND typed2.tz IS NOT DISTINCT FROM typed.tz "
                            "AND typed2.a IS NOT DISTINCT FROM typed.a AND typed2.j IS NOT DISTINCT FROM typed.j").fetchone() == (3,)
        got = [_normal(r) for r in conn.execute(f"SELECT {', '.join(TYPED_COLUMNS)} FROM typed2 ORDER BY k")]
    assert got == sorted(_typed_rows())


def test_psycopg3_text_copy_out_and_query_copy(node, typed):
    with psycopg.connect(_conninfo(node, typed), autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY typed (k, s, n, a) TO STDOUT") as copy:
                rows = list(copy.rows())
            # Without set_types, text format rows are strings, NULLs are None.
            assert sorted(rows) == [("1", "plain", "12345.678900", "{1,NULL,-3}"), ("2", None, None, None),
                                    ("3", "tab\tnew\nline\\ \"q\",ü", "-0.001", "{}")]
            with cur.copy("COPY (SELECT k, k * 2 AS twice, s FROM typed WHERE k > 1 ORDER BY k) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text"])
                assert list(copy.rows()) == [(2, 4, None), (3, 6, "tab\tnew\nline\\ \"q\",ü")]
            # No rows: header and trailer in one CopyData, as PostgreSQL sends them.
            with cur.copy("COPY (SELECT k FROM typed WHERE false) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(["int8"])
                assert list(copy.rows()) == []
            assert cur.rowcount == 0


def test_copy_out_is_streamed_one_row_per_message(node, numbers):
    """10,000 rows arrive as 10,000 CopyData messages after a CopyOutResponse with per-column
    formats, then CopyDone, CommandComplete COPY 10000 and ReadyForQuery."""
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=numbers)
        conn.send(query("COPY nums TO STDOUT WITH (FORMAT csv, HEADER)"))
        msgs = conn.read_until()
        kinds = [t for t, _ in msgs]
        assert kinds[0] == b"H" and msgs[0][1] == b"\x00\x00\x02\x00\x00\x00\x00"
        assert kinds[1:] == [b"d"] * 10001 + [b"c", b"C", b"Z"]
        assert msgs[1][1] == b"k,s\n" and msgs[2][1] == b"1,row 1\n" and msgs[-3][1] == b""
        assert msgs[-2][1] == b"COPY 10000\x00"
        conn.send(query("COPY nums (k) TO STDOUT BINARY"))
        msgs = conn.read_until()
        assert msgs[0] == (b"H", b"\x01\x00\x01\x00\x01")
        data = [body for t, body in msgs if t == b"d"]
        assert data[0] == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + b"\x00\x01" + b"\x00\x00\x00\x08" + struct.pack(">q", 1)
        assert data[1] == b"\x00\x01\x00\x00\x00\x08" + struct.pack(">q", 2)
        assert data[-1] == b"\xff\xff" and len(data) == 10001
    finally:
        conn.close()


def test_copy_out_waits_for_a_slow_reader(node, numbers):
    """A client that does not read holds the COPY: the server stops producing (flow control)
    instead of buffering the result, and the rest arrives once the client reads again.

    No guessed wait: the test waits until the TCP pipe is full (the kernel holds bytes the client
    has not read and bytes the server could not send, which is what pauses the server's
    transport). Then another client runs 100 statements, each a turn of the node's event loop in
    which a COPY still producing would get a time slice (100 slices of 20 ms would finish 20 MB):
    the COPY is still running, and the kernel holds a small part of the result. That the statement
    waits in drain() instead of producing on is also shown directly by
    test_copy_out_stream_waits_in_drain_while_the_transport_is_paused."""
    node.sql("CREATE TABLE wide (k INT PRIMARY KEY, s STRING)",
             "INSERT INTO wide SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) AS g", database=numbers)
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=numbers)
        conn.send(query("COPY wide TO STDOUT"))

        def running() -> bool:
            return ("COPY wide TO STDOUT",) in node.sql("SELECT query FROM [SHOW QUERIES]", database=numbers)

        unsent, unread = wait_until_the_pipe_is_full(node.port, conn.sock.getsockname()[1])
        assert unsent + unread < 20_000_000 // 2, (unsent, unread)
        round_trips(node, 100, database=numbers)  # other clients are served meanwhile
        assert running()
        assert node.sql("SELECT count(*) FROM nums", database=numbers) == [(10000,)]
        msgs = conn.read_until()
        assert msgs[-2][1] == b"COPY 20000\x00"
        assert sum(1 for t, _ in msgs if t == b"d") == 20000
    finally:
        conn.close()


def test_copy_out_stream_waits_in_drain_while_the_transport_is_paused():
    """pgwire.copy_out.stream stops taking batches from the plan while the connection's drain()
    waits (the transport paused): what it holds is bounded by the flush threshold plus one batch,
    and it goes on once drain() returns."""
    from types import SimpleNamespace

    from pillbug.pgwire import copy_out
    from pillbug.sql import types as T
    from pillbug.sql.copy_out import CopyOptions

    batches, rows_per_batch, threshold = 50, 100, 16 << 10
    pulled = []

    def plan_batches():
        for b in range(batches):
            pulled.append(b)
            yield [(b * rows_per_batch + i, "y" * 100) for i in range(rows_per_batch)]

    copy = SimpleNamespace(options=CopyOptions(), batches=plan_batches,
                           columns=[SimpleNamespace(name="k", type=T.INT8), SimpleNamespace(name="s", type=T.STRING)])

    class PausedConn:
        def __init__(self) -> None:
            self.out = bytearray()
            self.sent = bytearray()
            self.in_drain = asyncio.Event()
            self.resume = asyncio.Event()

        def flush(self) -> None:
            self.sent += self.out
            self.out.clear()

        async def drain(self) -> None:
            self.in_drain.set()
            await self.resume.wait()
            self.in_drain.clear()

    async def scenario() -> None:
        conn = PausedConn()
        task = asyncio.ensure_future(copy_out.stream(conn, copy, UTC, threshold))
        await asyncio.wait_for(conn.in_drain.wait(), 10)
        # Paused: one batch taken past the threshold, everything flushed, nothing further pulled
        # however often the loop runs other tasks.
        held = len(pulled)
        assert 1 <= held < batches and len(conn.out) == 0
        assert len(conn.sent) <= threshold + rows_per_batch * 200
        for _ in range(100):
            await asyncio.sleep(0)  # yields to the loop only; no wall-clock time is relied on
        assert len(pulled) == held and not task.done()
        conn.resume.set()  # the client reads again: the transport resumes
        assert await asyncio.wait_for(task, 10) == batches * rows_per_batch
        assert len(pulled) == batches

    asyncio.run(scenario())


def test_psycopg2_copy_expert_csv_header_and_copy_to(node, typed):
    conn = node.connect(database=typed)
    try:
        cur = conn.cursor()
        out = io.StringIO()
        cur.copy_expert("COPY typed (k, s, b, by, j) TO STDOUT WITH CSV HEADER", out)
        assert cur.rowcount == 3
        rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert rows[0] == ["k", "s", "b", "by", "j"]
        assert sorted(rows[1:]) == [["1", "plain", "t", "\\x0001ff", '{"a": [1, 2], "b": null}'],
                                    ["2", "", "", "", ""], ["3", "tab\tnew\nline\\ \"q\",ü", "f", "\\x", "[]"]]
        out = io.StringIO()
        cur.copy_to(out, "typed", columns=("k", "s", "d"), sep="|", null="NULL")
        assert sorted(out.getvalue().splitlines()) == ["1|plain|2024-02-29", "2|NULL|NULL",
                                                      "3|tab\\tnew\\nline\\\\ \"q\",ü|1970-01-01"]
        # Round trip through COPY FROM of what COPY TO wrote, text and CSV.
        cur.execute("CREATE TABLE back (k INT8 PRIMARY KEY, s STRING, d DATE)")
        out.seek(0)
        cur.copy_from(out, "back", sep="|", null="NULL")
        cur.execute("SELECT k, s, d::STRING FROM back ORDER BY k")
        assert cur.fetchall() == [(1, "plain", "2024-02-29"), (2, None, None), (3, "tab\tnew\nline\\ \"q\",ü", "1970-01-01")]
    finally:
        conn.close()


def test_csv_options(node, typed):
    conn = node.connect(database=typed)
    try:
        cur = conn.cursor()
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT k, s FROM typed WHERE k < 3 ORDER BY k) TO STDOUT "
                        "WITH (FORMAT csv, DELIMITER ';', NULL 'none', FORCE_QUOTE (s))", out)
        assert out.getvalue() == '1;"plain"\n2;none\n'
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT 'a\"b' AS x, '' AS y) TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\\', "
                        "FORCE_QUOTE *)", out)
        assert out.getvalue() == "'a\"b',''\n"
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT 'it''s' AS x, NULL AS y, '' AS z) TO STDOUT WITH (FORMAT csv, QUOTE '''')", out)
        assert out.getvalue() == "'it''s',,''\n"
    finally:
        conn.close()


@pytest.mark.parametrize("statement,sqlstate", [
    ("COPY missing TO STDOUT", "42P01"),
    ("COPY typed (nope) TO STDOUT", "42703"),
    ("COPY (SELECT 1/0) TO STDOUT", "22012"),
    ("COPY typed TO STDOUT (FORMAT xml)", "42601"),
    ("COPY typed TO STDOUT (FORMAT binary, HEADER)", "42601"),
    ("COPY typed TO STDOUT (QUOTE '''')", "0A000"),
    ("COPY typed TO '/tmp/x'", "0A000"),
    ("COPY typed TO STDOUT (FORMAT csv, FORCE_QUOTE (nope))", "42703"),
    ("COPY typed TO STDOUT (DELIMITER 'a')", "22023"),
    ("COPY typed TO STDOUT (FORMAT csv, NULL 'x,y')", "22023"),
    ("COPY typed TO STDOUT (FORMAT csv, DELIMITER '\"')", "22023"),
    ("COPY typed TO STDOUT (FORMAT csv, FORMAT text)", "42601"),
])
def test_copy_out_errors_leave_the_connection_usable(node, typed, statement, sqlstate):
    conn = node.connect(database=typed)
    try:
        cur = conn.cursor()
        with pytest.raises(psycopg2.Error) as info:
            cur.copy_expert(statement, io.StringIO())
        assert info.value.pgcode == sqlstate
        cur.execute("SELECT count(*) FROM typed")
        assert cur.fetchone() == (3,)
    finally:
        conn.close()


def test_copy_out_needs_select_privilege(node, typed):
    node.sql("CREATE USER IF NOT EXISTS testuser", f"GRANT CONNECT ON DATABASE {typed} TO testuser",
             database=typed)
    conn = node.connect(user="testuser", database=typed)
    try:
        with pytest.raises(psycopg2.Error) as info:
            conn.cursor().copy_expert("COPY typed TO STDOUT", io.StringIO())
        assert info.value.pgcode == "42501"
        node.sql("GRANT SELECT ON typed TO testuser", database=typed)
        out = io.StringIO()
        conn.cursor().copy_expert("COPY typed (k) TO STDOUT", out)
        assert sorted(out.getvalue().split()) == ["1", "2", "3"]
    finally:
        conn.close()


def test_copy_out_sees_its_transaction(node, typed):
    conn = node.connect(database=typed, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO typed (k, s) VALUES (10, 'uncommitted')")
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT s FROM typed WHERE k = 10) TO STDOUT", out)
        assert out.getvalue() == "uncommitted\n"
        conn.rollback()
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT s FROM typed WHERE k = 10) TO STDOUT", out)
        assert out.getvalue() == ""
        # A failing COPY aborts the explicit transaction like any statement.
        with pytest.raises(psycopg2.Error):
            cur.copy_expert("COPY (SELECT 1/0) TO STDOUT", io.StringIO())
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
        conn.rollback()
    finally:
        conn.close()


def test_copy_in_the_extended_protocol(node, typed):
    """COPY in Parse/Bind/Execute/Sync (psycopg 3 does this when the COPY has parameters):
    CopyOut data then CommandComplete, and ReadyForQuery only at Sync."""
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=typed)
        parse = message(b"P", b"\x00COPY (SELECT k FROM typed ORDER BY k) TO STDOUT\x00\x00\x00")
        bind = message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
        conn.send(parse + bind + message(b"E", b"\x00\x00\x00\x00\x00") + message(b"S"))
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"1", b"2", b"H", b"d", b"d", b"d", b"c", b"C", b"Z"]
        assert [body for t, body in msgs if t == b"d"] == [b"1\n", b"2\n", b"3\n"]
        # COPY FROM in the extended protocol: the client's Sync comes after CopyDone.
        parse = message(b"P", b"\x00COPY typed (k, s) FROM STDIN\x00\x00\x00")
        conn.send(parse + bind + message(b"E", b"\x00\x00\x00\x00\x00") + message(b"S"))
        msgs = conn.read_until(b"G")
        conn.send(message(b"d", b"20\ttwenty\n") + message(b"c") + message(b"S"))
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"C", b"Z"] and msgs[0][1] == b"COPY 1\x00"
        # A bad row: ErrorResponse at CopyDone, what follows until Sync is skipped, then ready.
        conn.send(parse + bind + message(b"E", b"\x00\x00\x00\x00\x00") + message(b"S"))
        conn.read_until(b"G")
        conn.send(message(b"d", b"21\tok\nnot-a-number\tbad\n") + message(b"c")
                  + query("SELECT 1") + message(b"S"))
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"E", b"Z"] and conn.errors(msgs)[0]["C"] == "22P02"
        conn.send(query("SELECT count(*) FROM typed WHERE k >= 20"))
        assert [body for t, body in conn.read_until() if t == b"D"] == [b"\x00\x01\x00\x00\x00\x011"]
    finally:
        conn.close()
    with psycopg.connect(_conninfo(node, typed), autocommit=True) as pconn:
        with pconn.cursor() as cur:
            with cur.copy("COPY (SELECT s FROM typed WHERE k = %s) TO STDOUT", (20,)) as copy:
                assert list(copy.rows()) == [("twenty",)]


def test_asyncpg_copy(node, typed):
    async def run():
        params = node.params(database=typed)
        import ssl
        ctx = ssl.create_default_context(cafile=params["sslrootcert"])
        ctx.load_cert_chain(params["sslcert"], params["sslkey"])
        conn = await asyncpg.connect(host=node.host, port=node.port, user="root", database=typed, ssl=ctx)
        try:
            out = io.BytesIO()
            status = await conn.copy_from_table("typed", columns=["k", "s"], output=out, format="csv")
            assert status == "COPY 3"
            assert sorted(out.getvalue().decode().splitlines())[0] == "1,plain"
            out = io.BytesIO()
            status = await conn.copy_from_query("SELECT k, n FROM typed WHERE k <> $1 ORDER BY k", 2, output=out)
            assert status == "COPY 2" and out.getvalue() == b"1\t12345.678900\n3\t-0.001\n"
            await conn.execute("CREATE TABLE recs (k INT8 PRIMARY KEY, s STRING, n DECIMAL, tz TIMESTAMPTZ, u UUID, a INT8[])")
            records = [(i, f"r{i}" if i % 3 else None, Decimal(i) / 7 if i % 5 else None,
                        datetime.datetime(2020, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=i),
                        uuid.UUID(int=i), [i, None]) for i in range(5000)]
            status = await conn.copy_records_to_table("recs", records=records)
            assert status == "COPY 5000"
            back = [tuple(r) for r in await conn.fetch("SELECT k, s, n, tz, u, a FROM recs ORDER BY k")]
            assert back == records
            await conn.copy_to_table("recs", source=io.BytesIO(b"9000\tx\t1.5\t\\N\t\\N\t{}\n"))
            assert await conn.fetchval("SELECT s FROM recs WHERE k = 9000") == "x"
        finally:
            await conn.close()
    asyncio.run(run())


def test_psql_backslash_copy_to(node, typed, tmp_path):
    target = tmp_path / "out.csv"
    params = node.params()
    env = {**os.environ, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": params["sslrootcert"],
           "PGSSLCERT": params["sslcert"], "PGSSLKEY": params["sslkey"]}
    base = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", node.host, "-p", str(node.port), "-U", "root", "-d", typed]
    proc = subprocess.run(base + ["-c", f"\\copy typed (k, s) to '{target}' with csv header"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "COPY 3"
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["k", "s"] and sorted(rows[1:]) == [["1", "plain"], ["2", ""], ["3", "tab\tnew\nline\\ \"q\",ü"]]
    proc = subprocess.run(base + ["-c", "\\copy (select k, k + 1 from typed order by k) to stdout"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\t2\n2\t3\n3\t4\n"


# ---- binary COPY FROM: the PGCOPY stream, split anywhere, and its errors --------------------

def _pgcopy(rows: list[tuple[bytes | None, ...]], trailer: bool = True) -> bytes:
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack(">ii", 0, 0)]
    for row in rows:
        out.append(struct.pack(">h", len(row)))
        for field in row:
            out.append(b"\xff\xff\xff\xff" if field is None else struct.pack(">i", len(field)) + field)
    if trailer:
        out.append(b"\xff\xff")
    return b"".join(out)


def _int8(v: int) -> bytes:
    return struct.pack(">q", v)


def test_binary_copy_in_split_into_tiny_chunks(node, typed):
    """Every split point of the stream, down to one byte per CopyData, parses the same."""
    stream = _pgcopy([(_int8(100), "hundred ü".encode()), (_int8(101), None)])
    # A header extension (which a reader must skip) and no trailer (PostgreSQL accepts that).
    stream = stream[:15] + struct.pack(">i", 5) + b"extra" + stream[19:-2]
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=typed)
        conn.send(query("COPY typed (k, s) FROM STDIN WITH BINARY"))
        msgs = conn.read_until(b"G")
        assert msgs[-1] == (b"G", b"\x01\x00\x02\x00\x01\x00\x01")
        conn.send(b"".join(message(b"d", stream[i:i + 1]) for i in range(len(stream))) + message(b"c"))
        msgs = conn.read_until()
        assert msgs[0] == (b"C", b"COPY 2\x00")
    finally:
        conn.close()
    assert node.sql("SELECT k, s FROM typed WHERE k >= 100 ORDER BY k", database=typed) == [(100, "hundred ü"), (101, None)]


@pytest.mark.parametrize("stream,sqlstate,message_part", [
    (b"PGCOPX\n\xff\r\n\x00" + b"\x00" * 8, "22P04", "signature"),
    (b"NOTCOPY", "22P04", "signature"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 1 << 16, 0), "22P04", "OIDS"),
    (_pgcopy([(_int8(50),)]), "22P04", "row field count is 1, expected 2"),
    (_pgcopy([(_int8(50), b"x")])[:-4], "22P04", "unexpected EOF"),
    (_pgcopy([(_int8(50), b"x")]) + b"\x00\x02", "22P04", "after EOF marker"),
    (_pgcopy([(b"\x00\x01\x02", b"x")]), "22P03", "expected 2, 4 or 8 bytes"),
    (_pgcopy([(_int8(50), b"\xff\xfe")]), "22021", "UTF8"),
    (_pgcopy([(_int8(50), b"a"), (_int8(50), b"b")]), "23505", "duplicate key"),
    (_pgcopy([(None, b"a")]), "23502", "null value"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + b"\x00\x02" + struct.pack(">i", -7), "22P04", "field size"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + b"\x00\x02" + struct.pack(">i", 1 << 30), "54000", "16 MiB"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + b"\x00\x02" + struct.pack(">i", 8) + _int8(60)
     + struct.pack(">i", 16 << 20), "54000", "16 MiB"),
], ids=["signature", "short-garbage", "oids", "field-count", "truncated", "data-after-trailer", "bad-int",
        "bad-utf8", "unique", "not-null", "negative-length", "huge-field", "huge-row"])
def test_binary_copy_in_errors(node, typed, stream, sqlstate, message_part):
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=typed)
        conn.send(query("COPY typed (k, s) FROM STDIN (FORMAT binary)"))
        conn.read_until(b"G")
        conn.send(message(b"d", stream) + message(b"c"))
        msgs = conn.read_until()
        errs = conn.errors(msgs)
        assert errs and errs[0]["C"] == sqlstate and message_part in errs[0]["M"], errs
        assert msgs[-1] == (b"Z", b"I")
        conn.send(query("SELECT count(*) FROM typed"))
        assert [body for t, body in conn.read_until() if t == b"D"] == [b"\x00\x01\x00\x00\x00\x013"]
    finally:
        conn.close()


def test_binary_copy_in_with_options_it_cannot_take(node, typed):
    conn = node.connect(database=typed)
    try:
        with pytest.raises(psycopg2.Error) as info:
            conn.cursor().copy_expert("COPY typed (k) FROM STDIN WITH (FORMAT binary, DELIMITER ',')", io.BytesIO())
        assert info.value.pgcode == "42601"
    finally:
        conn.close()


def test_cancel_a_long_copy_out(node, db):
    """COPY of a billion generated rows: CancelRequest stops it (57014) mid-stream, and the
    connection goes on."""
    with psycopg.connect(_conninfo(node, db), autocommit=True) as conn:
        with conn.cursor() as cur:
            with pytest.raises(psycopg.errors.QueryCanceled):
                with cur.copy("COPY (SELECT g FROM generate_series(1, 1000000000) AS g) TO STDOUT") as copy:
                    for i, row in enumerate(copy.rows()):
                        assert row == (str(i + 1),)
                        if i == 1000:
                            conn.cancel()
            assert conn.execute("SELECT 42").fetchone() == (42,)
