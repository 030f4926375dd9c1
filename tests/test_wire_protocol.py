"""Protocol 3.0 as the real drivers use it: startup and ParameterStatus, TLS, cancel, the simple and
extended protocols (named and unnamed statements and portals, row limits, pipelining), errors
and notices with their fields.

Behaviour drivers depend on is checked through the drivers themselves (psycopg2, psycopg 3,
asyncpg, psql); exact message sequences through the raw client in wire_client.py.
"""
from __future__ import annotations

import asyncio
import ssl
import struct
import subprocess
import threading
import time

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest
from conftest import wait_for
from wire_client import (
    FLUSH,
    SYNC,
    RawConnection,
    bind,
    describe,
    execute,
    message,
    parse,
    query,
)

SLOW_AGGREGATE = "SELECT count(*) FROM generate_series(1, 500000000)"
SLOW_CROSS_JOIN = "SELECT count(*) FROM generate_series(1, 30000) AS a, generate_series(1, 30000) AS b"


def _conninfo(node, **extra) -> str:
    params = {**node.params(), **extra}
    return " ".join(f"{k}={v}" for k, v in params.items())


def _asyncpg_ssl(node) -> ssl.SSLContext:
    params = node.params()
    ctx = ssl.create_default_context(cafile=params["sslrootcert"])
    ctx.load_cert_chain(params["sslcert"], params["sslkey"])
    return ctx


async def _asyncpg(node, **kwargs):
    return await asyncpg.connect(host=node.host, port=node.port, user="root", database="defaultdb",
                                 ssl=_asyncpg_ssl(node), **kwargs)


@pytest.fixture
def raw(node):
    conns: list[RawConnection] = []

    def make(**params: str) -> RawConnection:
        conn = RawConnection(node.host, node.port, node.certs_dir)
        conns.append(conn)
        conn.startup_messages = conn.login(**params)
        return conn
    yield make
    for conn in conns:
        conn.close()


def _types(msgs) -> list[bytes]:
    return [t for t, _ in msgs]


# ---- startup -------------------------------------------------------------------------------

EXPECTED_STATUS = {
    "server_version": "13.0.0", "server_encoding": "UTF8", "client_encoding": "UTF8",
    "application_name": "wire-test", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
    "is_superuser": "on", "TimeZone": "UTC", "integer_datetimes": "on",
    "standard_conforming_strings": "on", "session_authorization": "root",
}


def test_parameter_status_at_startup(raw):
    conn = raw(application_name="wire-test")
    msgs = conn.startup_messages
    status = {}
    for t, body in msgs:
        if t == b"S":
            name, value, _ = body.split(b"\x00")
            status[name.decode()] = value.decode()
    for name, value in EXPECTED_STATUS.items():
        assert status.get(name) == value, (name, status)
    assert status["crdb_version"].startswith("CockroachDB CCL v")
    # The order libpq expects: AuthenticationOk, ParameterStatus..., BackendKeyData, ReadyForQuery.
    assert _types(msgs)[0] == b"R" and _types(msgs)[-2:] == [b"K", b"Z"]
    pid, secret = struct.unpack(">ii", dict(msgs)[b"K"])
    assert pid > 0 and secret != 0


def test_parameter_status_through_drivers(node):
    conn = psycopg2.connect(**node.params(), application_name="wire-test")
    try:
        for name, value in EXPECTED_STATUS.items():
            assert conn.get_parameter_status(name) == value, name
    finally:
        conn.close()
    with psycopg.connect(_conninfo(node, application_name="wire-test")) as conn:
        assert conn.info.parameter_status("crdb_version").startswith("CockroachDB")
        assert conn.info.backend_pid > 0

    async def run():
        conn = await _asyncpg(node)
        try:
            return conn.get_server_pid(), conn.get_server_version()
        finally:
            await conn.close()
    pid, version = asyncio.run(run())
    assert pid > 0 and version.major == 13


def test_is_superuser_off_for_ordinary_user(node, db):
    node.sql("CREATE USER IF NOT EXISTS plainwire WITH PASSWORD 'Pl41n-wire-pw'", f"GRANT ALL ON DATABASE {db} TO plainwire")
    conn = psycopg2.connect(**node.params(user="plainwire", password="Pl41n-wire-pw", database=db))
    try:
        assert conn.get_parameter_status("is_superuser") == "off"
        assert conn.get_parameter_status("session_authorization") == "plainwire"
    finally:
        conn.close()


@pytest.mark.parametrize("statement,name,value", [
    ("SET application_name = 'renamed'", "application_name", "renamed"),
    ("SET TimeZone = 'Europe/Paris'", "TimeZone", "Europe/Paris"),
    ("SET time zone 'America/Chicago'", "TimeZone", "America/Chicago"),
    ("SET IntervalStyle = 'postgres'", "IntervalStyle", "postgres"),
    ("SET client_encoding = 'UTF8'", "client_encoding", "UTF8"),
])
def test_set_reports_parameter_status(node, statement, name, value):
    conn = node.connect()
    try:
        conn.cursor().execute(statement)
        assert conn.get_parameter_status(name) == value
    finally:
        conn.close()


def test_set_reports_through_extended_protocol(node):
    with psycopg.connect(_conninfo(node), autocommit=True) as conn:
        conn.execute("SET application_name = 'via-extended'", prepare=True)
        assert conn.info.parameter_status("application_name") == "via-extended"


def test_startup_options_and_database(node, db):
    node.sql("CREATE TABLE marker (x INT)", database=db)
    conn = psycopg2.connect(**node.params(database=db),
                            options="-c timezone=Asia/Tokyo -c statement_timeout=0 --search_path=public")
    try:
        cur = conn.cursor()
        cur.execute("SHOW timezone")
        assert cur.fetchone() == ("Asia/Tokyo",)
        assert conn.get_parameter_status("TimeZone") == "Asia/Tokyo"
        cur.execute("SELECT current_database(), count(*) FROM marker")
        assert cur.fetchone() == (db, 0)
    finally:
        conn.close()


def test_secure_node_refuses_plaintext(node):
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(**{**node.params(), "sslmode": "disable"})
    assert "node is running secure mode, SSL connection required" in str(info.value)


def test_tls_modes(node):
    for mode in ("require", "verify-ca", "verify-full"):
        conn = psycopg2.connect(**{**node.params(), "sslmode": mode})
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        finally:
            conn.close()


# ---- cancel -----------------------------------------------------------------------------------

def _running(node, sql: str) -> bool:
    return any(q == sql for (q,) in node.sql("SELECT query FROM [SHOW CLUSTER QUERIES]"))


def _cancel_when_running(node, sql: str, cancel) -> threading.Thread:
    """Cancel once the statement is listed as running on the node, not after a guessed delay
    (a cancel that arrives before the statement starts would find nothing to cancel)."""
    def run():
        try:
            wait_for(lambda: _running(node, sql), f"{sql!r} to be running")
        finally:
            cancel()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("slow", [SLOW_AGGREGATE, SLOW_CROSS_JOIN], ids=["aggregate", "cross-join"])
def test_psycopg2_cancel(node, slow):
    conn = node.connect()
    try:
        thread = _cancel_when_running(node, slow, conn.cancel)
        started = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled) as info:
            conn.cursor().execute(slow)
        thread.join()
        assert info.value.pgcode == "57014"
        assert time.monotonic() - started < 30  # a liveness bound (the cancel took), not a speed target
        cur = conn.cursor()
        cur.execute("SELECT 'still usable'")
        assert cur.fetchone() == ("still usable",)
    finally:
        conn.close()


def test_cancel_inside_explicit_transaction(node):
    conn = node.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        thread = _cancel_when_running(node, SLOW_AGGREGATE, conn.cancel)
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute(SLOW_AGGREGATE)
        thread.join()
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
        conn.rollback()
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    finally:
        conn.close()


def test_psycopg3_cancel(node):
    with psycopg.connect(_conninfo(node), autocommit=True) as conn:
        thread = _cancel_when_running(node, SLOW_CROSS_JOIN, conn.cancel)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(SLOW_CROSS_JOIN)
        thread.join()
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_asyncpg_timeout_and_cancel(node):
    async def run():
        conn = await _asyncpg(node)
        try:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval(SLOW_CROSS_JOIN, timeout=0.5)
            assert time.monotonic() - started < 5  # a liveness bound (the timeout took), not a speed target
            assert await conn.fetchval("SELECT 1") == 1
            task = asyncio.ensure_future(conn.fetchval(SLOW_AGGREGATE))
            # Cancel once the server runs it (waited for in a thread, so the loop sends it meanwhile).
            await asyncio.to_thread(wait_for, lambda: _running(node, SLOW_AGGREGATE), "the aggregate to run")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await conn.fetchval("SELECT 2") == 2
        finally:
            await conn.close()
    asyncio.run(run())


def test_other_clients_are_served_during_a_long_statement(node):
    slow = node.connect()
    thread = threading.Thread(target=lambda: pytest.raises(psycopg2.errors.QueryCanceled,
                                                            slow.cursor().execute, SLOW_AGGREGATE))
    thread.start()
    try:
        wait_for(lambda: _running(node, SLOW_AGGREGATE), "the long statement to run")
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            node.sql("SELECT 1")
            latencies.append(time.monotonic() - started)
        # A responsiveness bound, not a speed target: without time slices each would wait for the
        # whole aggregate (minutes).
        assert max(latencies) < 2.0, latencies
    finally:
        slow.cancel()
        thread.join()
        slow.close()


def test_cancel_request_for_idle_session_is_harmless(node):
    conn = node.connect()
    try:
        conn.cancel()
        cur = conn.cursor()
        cur.execute("SELECT 5")
        assert cur.fetchone() == (5,)
    finally:
        conn.close()


# ---- simple query ------------------------------------------------------------------------------

def test_simple_query_with_several_statements(raw):
    conn = raw()
    conn.send(query("SELECT 1; SELECT 'two' AS b; SELECT 3 WHERE false"))
    msgs = conn.read_until()
    assert _types(msgs) == [b"T", b"D", b"C", b"T", b"D", b"C", b"T", b"C", b"Z"]
    tags = [body for t, body in msgs if t == b"C"]
    assert tags == [b"SELECT 1\x00", b"SELECT 1\x00", b"SELECT 0\x00"]


def test_simple_query_batch_is_one_implicit_transaction(node, db):
    conn = node.connect(database=db)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (k INT PRIMARY KEY)")
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute("INSERT INTO t VALUES (1); SELECT 1/0")
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (0,)
        cur.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (2,)
    finally:
        conn.close()


def test_empty_query(raw):
    conn = raw()
    conn.send(query("") + query(" ; ") + query("-- only a comment"))
    for _ in range(3):
        assert _types(conn.read_until()) == [b"I", b"Z"]


def test_error_fields(node, db):
    node.sql("CREATE TABLE u (k INT PRIMARY KEY, j JSONB)", "INSERT INTO u VALUES (1, '{}')", database=db)
    with psycopg.connect(_conninfo(node, dbname=db), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError) as info:
            conn.execute("SELECT 1 FROM WHERE x")
        diag = info.value.diag
        assert (diag.severity, diag.severity_nonlocalized, diag.sqlstate) == ("ERROR", "ERROR", "42601")
        assert diag.statement_position == "15" and "syntax error" in diag.message_primary
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            conn.execute("INSERT INTO u VALUES (1, '{}')")
        assert info.value.diag.message_detail == "Key (k)=(1) already exists."
        with pytest.raises(psycopg.Error) as info:
            conn.execute("INSERT INTO u VALUES (1, '{}') ON CONFLICT DO UPDATE SET j = '[]'")
        assert info.value.diag.message_hint == "name the unique columns: ON CONFLICT (col) DO UPDATE"
        # The connection is fine after each.
        assert conn.execute("SELECT count(*) FROM u").fetchone() == (1,)


def test_notices(node, db):
    conn = node.connect(database=db)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE n (x INT)")
        cur.execute("CREATE TABLE IF NOT EXISTS n (x INT)")
        cur.execute("DROP TABLE IF EXISTS missing_table")
        assert conn.notices == ['NOTICE:  relation "n" already exists, skipping\n',
                                'NOTICE:  relation "missing_table" does not exist, skipping\n']
    finally:
        conn.close()
    received = []
    with psycopg.connect(_conninfo(node, dbname=db), autocommit=True) as pconn:
        # A Diagnostic is only valid inside the handler.
        pconn.add_notice_handler(lambda d: received.append((d.severity, d.sqlstate, d.message_primary)))
        pconn.execute("DROP TABLE IF EXISTS missing_table")
    assert received == [("NOTICE", "00000", 'relation "missing_table" does not exist, skipping')]


def test_psql(node):
    params = node.params()
    env = {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": params["sslrootcert"], "PGSSLCERT": params["sslcert"],
           "PGSSLKEY": params["sslkey"], "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["psql", "-X", "-h", node.host, "-p", str(node.port), "-U", "root", "-d", "defaultdb",
                           "-c", "SELECT 1 AS one, 'x' AS s", "-c", "SELECT 1 FROM WHERE"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert " one | s \n-----+---\n   1 | x\n(1 row)" in proc.stdout
    assert 'ERROR:  at or near "where": syntax error' in proc.stderr


# ---- extended query ----------------------------------------------------------------------------

def test_named_statement_and_portal_with_row_limits(raw):
    conn = raw()
    conn.send(parse("SELECT x FROM generate_series(1, $1::INT) AS g(x)", name="st") + describe(b"S", "st")
              + bind([b"5"], stmt="st", portal="p1") + describe(b"P", "p1")
              + execute("p1", 2) + execute("p1", 2) + execute("p1", 2) + SYNC)
    msgs = conn.read_until()
    assert _types(msgs) == [b"1", b"t", b"T", b"2", b"T", b"D", b"D", b"s", b"D", b"D", b"s", b"D", b"C", b"Z"]
    (param_count, oid) = struct.unpack(">hI", dict(msgs)[b"t"])
    assert (param_count, oid) == (1, 20)
    rows = [body[-1:] for t, body in msgs if t == b"D"]
    assert rows == [b"1", b"2", b"3", b"4", b"5"]
    # The statement outlives the Sync; the portal ran to completion.
    conn.send(execute("p1") + SYNC)
    assert conn.errors(conn.read_until())[0]["C"] in ("34000", "24000")
    conn.send(bind([b"1"], stmt="st") + execute() + message(b"C", b"Sst\x00") + SYNC)
    assert _types(conn.read_until()) == [b"2", b"D", b"C", b"3", b"Z"]
    conn.send(bind([b"1"], stmt="st") + SYNC)
    assert conn.errors(conn.read_until())[0]["C"] == "26000"


def test_portal_suspended_inside_transaction_resumes_across_sync(raw):
    conn = raw()
    conn.send(query("BEGIN"))
    assert conn.read_until()[-1] == (b"Z", b"T")
    conn.send(parse("SELECT x FROM generate_series(1, 1000) AS g(x)") + bind([], portal="c")
              + execute("c", 300) + SYNC)
    msgs = conn.read_until()
    assert _types(msgs).count(b"D") == 300 and _types(msgs)[-2:] == [b"s", b"Z"]
    conn.send(execute("c", 0) + SYNC)
    msgs = conn.read_until()
    assert _types(msgs).count(b"D") == 700 and dict(msgs)[b"C"] in (b"SELECT 1000\x00", b"SELECT 700\x00")
    conn.send(query("COMMIT"))
    assert conn.read_until()[-1] == (b"Z", b"I")


def test_parameter_type_inference(raw, node, db):
    node.sql("CREATE TABLE typed (a INT2, b DECIMAL(8,2), c TIMESTAMPTZ, d STRING, e UUID)", database=db)
    conn = raw(database=db)
    conn.send(parse("INSERT INTO typed VALUES ($1, $2, $3, $4, $5)") + describe(b"S")
              + parse("SELECT $1 + 1.5, $2 || 'x', $3::DATE") + describe(b"S") + SYNC)
    msgs = conn.read_until()
    descriptions = [body for t, body in msgs if t == b"t"]
    first = struct.unpack(">h5I", descriptions[0])
    assert first == (5, 21, 1700, 1184, 25, 2950)
    second = struct.unpack(">h3I", descriptions[1])
    assert second[0] == 3 and second[1] in (1700, 20) and second[2] == 25


def test_binary_and_text_result_formats_mixed(raw):
    conn = raw()
    conn.send(parse("SELECT 1::INT8, 'a'::STRING, 2.5::FLOAT8") + bind([], result_formats=(1, 0, 1))
              + describe(b"P") + execute() + SYNC)
    msgs = conn.read_until()
    row = dict(msgs)[b"D"]
    assert row == (b"\x00\x03" + struct.pack(">i", 8) + struct.pack(">q", 1) + struct.pack(">i", 1) + b"a"
                   + struct.pack(">i", 8) + struct.pack(">d", 2.5))
    desc = dict(msgs)[b"T"]
    # Each field ends with its type modifier (-1 here) and its format code.
    assert desc.count(b"\xff\xff\xff\xff\x00\x01") == 2 and desc.count(b"\xff\xff\xff\xff\x00\x00") == 1


def test_errors_skip_until_sync_and_implicit_rollback(raw, node, db):
    node.sql("CREATE TABLE ext (k INT PRIMARY KEY)", database=db)
    conn = raw(database=db)
    conn.send(parse("INSERT INTO ext VALUES (1)") + bind([]) + execute()
              + parse("SELECT 1/0") + bind([]) + execute()
              + parse("INSERT INTO ext VALUES (2)") + bind([]) + execute() + SYNC)
    msgs = conn.read_until()
    assert [e["C"] for e in conn.errors(msgs)] == ["22012"] and msgs[-1] == (b"Z", b"I")
    # Statements before the error completed (each Execute outside BEGIN commits, as CockroachDB
    # does); those after it until Sync were skipped.
    conn.send(query("SELECT k FROM ext ORDER BY k"))
    assert [body[-1:] for t, body in conn.read_until() if t == b"D"] == [b"1"]


def test_flush_delivers_without_sync(raw):
    conn = raw()
    conn.send(parse("SELECT 9") + bind([]) + execute() + FLUSH)
    assert _types(conn.read_until(b"C")) == [b"1", b"2", b"D", b"C"]
    conn.send(SYNC)
    assert conn.read_until() == [(b"Z", b"I")]


def test_duplicate_prepared_statement(raw):
    conn = raw()
    conn.send(parse("SELECT 1", name="dup") + parse("SELECT 2", name="dup") + SYNC)
    assert conn.errors(conn.read_until())[0]["C"] == "42P05"
    conn.send(parse("SELECT 1; SELECT 2", name="two") + SYNC)
    assert conn.errors(conn.read_until())[0]["C"] == "42601"


def test_asyncpg_cursors_fetch_in_chunks(node):
    async def run():
        conn = await _asyncpg(node)
        try:
            async with conn.transaction():
                seen = [r[0] async for r in conn.cursor("SELECT x FROM generate_series(1, 1000) AS g(x)", prefetch=37)]
                assert seen == list(range(1, 1001))
                cur = await conn.cursor("SELECT x FROM generate_series(1, 100) AS g(x)")
                assert [r[0] for r in await cur.fetch(5)] == [1, 2, 3, 4, 5]
                assert [r[0] for r in await cur.fetch(3)] == [6, 7, 8]
                assert (await cur.fetchrow())[0] == 9
            stmt = await conn.prepare("SELECT x, x * 2 FROM generate_series(1, $1::INT) AS g(x)")
            async with conn.transaction():
                rows = [tuple(r) async for r in stmt.cursor(300, prefetch=7)]
            assert rows == [(x, 2 * x) for x in range(1, 301)]
            assert await stmt.fetchval(3) == 1
        finally:
            await conn.close()
    asyncio.run(run())


def test_asyncpg_prepared_statement_reuse_and_executemany(node, db):
    node.sql("CREATE TABLE many (k INT PRIMARY KEY, v STRING)", database=db)

    async def run():
        conn = await asyncpg.connect(host=node.host, port=node.port, user="root", database=db, ssl=_asyncpg_ssl(node))
        try:
            await conn.executemany("INSERT INTO many VALUES ($1, $2)", [(i, f"v{i}") for i in range(500)])
            stmt = await conn.prepare("SELECT v FROM many WHERE k = $1")
            for i in (0, 250, 499):
                assert await stmt.fetchval(i) == f"v{i}"
            return await conn.fetchval("SELECT count(*) FROM many")
        finally:
            await conn.close()
    assert asyncio.run(run()) == 500


def test_psycopg3_pipeline_mode(node, db):
    node.sql("CREATE TABLE pipe (k INT PRIMARY KEY, v STRING)", database=db)
    with psycopg.connect(_conninfo(node, dbname=db), autocommit=True) as conn:
        with conn.pipeline():
            cursors = [conn.execute("INSERT INTO pipe VALUES (%s, %s) RETURNING k", (i, f"v{i}")) for i in range(50)]
            count = conn.execute("SELECT count(*) FROM pipe")
        assert [c.fetchone()[0] for c in cursors] == list(range(50))
        assert count.fetchone() == (50,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.pipeline():
                conn.execute("INSERT INTO pipe VALUES (%s, 'x')", (100,))
                conn.execute("INSERT INTO pipe VALUES (%s, 'dup')", (0,))
                conn.execute("INSERT INTO pipe VALUES (%s, 'skipped')", (101,))
        assert conn.execute("SELECT k FROM pipe WHERE k >= 100").fetchall() == [(100,)]
        with conn.transaction(), conn.pipeline():
            for i in range(200, 220):
                conn.execute("INSERT INTO pipe VALUES (%s, %s)", (i, "tx"))
        assert conn.execute("SELECT count(*) FROM pipe WHERE v = 'tx'").fetchone() == (20,)


def test_describe_statement_without_rows_and_close(raw):
    conn = raw()
    conn.send(parse("SET application_name = 'x'", name="s") + describe(b"S", "s")
              + message(b"C", b"Ss\x00") + message(b"C", b"Pnever-bound\x00") + SYNC)
    assert _types(conn.read_until()) == [b"1", b"t", b"n", b"3", b"3", b"Z"]


def test_unnamed_statement_is_replaced(raw):
    conn = raw()
    conn.send(parse("SELECT 1") + parse("SELECT 2") + bind([]) + execute() + SYNC)
    msgs = conn.read_until()
    assert [body[-1:] for t, body in msgs if t == b"D"] == [b"2"]


def test_terminate(raw):
    conn = raw()
    conn.send(message(b"X"))
    assert conn.read_message() is None

