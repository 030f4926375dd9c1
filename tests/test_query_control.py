"""Query control (sql/activity.py): statement_timeout, lock_timeout, idle_in_transaction_session_timeout,
pg_sleep, crdb_internal.force_retry, SHOW QUERIES / SESSIONS and CANCEL QUERY / SESSION.

Real psycopg2 clients against a real node. A statement that must be stopped is started in a
thread; the test waits (bounded polling) until it shows up in SHOW CLUSTER QUERIES, never for a
guessed time, and checks that the node answers other clients meanwhile.
"""
from __future__ import annotations

import time

import psycopg2
import psycopg2.errorcodes
import pytest
from conftest import in_thread, wait_for

from pillbug.sql import activity
from pillbug.util import errors

TIMEOUT_MESSAGE = "query execution canceled due to statement timeout"
OTHER_USER, OTHER_PW = "qctl_pleb", "Pleb-secret-pw-1"


def _queries_like(node, text: str, user: str = "root", password: str | None = None) -> list:
    conn = node.connect(user, password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT query_id, session_id, user_name, query FROM [SHOW CLUSTER QUERIES] "
                        "WHERE query LIKE %s", (f"%{text}%",))
            return [r for r in cur.fetchall() if "SHOW CLUSTER QUERIES" not in r[3]]
    finally:
        conn.close()


def _select_one(node) -> int:
    return node.sql("SELECT 1")[0][0]


@pytest.fixture
def table(node, db):
    node.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", "INSERT INTO kv VALUES (1, 0), (2, 0)", database=db)
    return db


# ---- statement_timeout ----------------------------------------------------------------------

def test_statement_timeout_stops_pg_sleep_and_connection_serves(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '200ms'")
        began = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled) as info:
            cur.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - began < 4  # cut short (a liveness bound, not a speed target)
        assert info.value.pgcode == "57014"
        assert TIMEOUT_MESSAGE in str(info.value)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("200",)
        cur.execute("SELECT pg_sleep(0.01)")  # under the timeout: true, as in CockroachDB
        assert cur.fetchone() == (True,)
    conn.close()


def test_statement_timeout_stops_cpu_bound_query(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 200")
        began = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled) as info:
            cur.execute("SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b")
        assert time.monotonic() - began < 10  # a liveness bound (the timeout took), not a speed target
        assert TIMEOUT_MESSAGE in str(info.value)
        cur.execute("SELECT count(*) FROM generate_series(1, 10)")
        assert cur.fetchone() == (10,)
    conn.close()


# A join whose predicate never holds produces no row: before exec/nodes.py's emit(), the
# nested loop checked for cancel only when it had a batch of output, so this ran for its full
# 5,000 x 2,000 pairs (seconds) past the timeout. Now every 256 steps without output check too.
SILENT_JOIN = ("SELECT count(*) FROM (SELECT * FROM generate_series(1, 5000) ORDER BY 1) a(x), "
               "generate_series(1, 2000) b(y) WHERE a.x + b.y < 0")


def test_statement_timeout_stops_a_join_that_produces_no_rows(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute(f"EXPLAIN {SILENT_JOIN}")
        assert any("cross join" in line for (line,) in cur.fetchall())
        cur.execute("SET statement_timeout = 150")
        began = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled) as info:
            cur.execute(SILENT_JOIN)
        assert time.monotonic() - began < 1.5
        assert TIMEOUT_MESSAGE in str(info.value)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()


@pytest.mark.parametrize("setting", ["2s", "2000", "statement_timeout_ms"])
def test_statement_timeout_values(node, setting):
    conn = node.connect()
    with conn.cursor() as cur:
        if setting == "statement_timeout_ms":
            cur.execute("SET statement_timeout_ms = 2000")
        else:
            cur.execute(f"SET statement_timeout = '{setting}'")
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("2000",)
        cur.execute("SELECT pg_sleep(0.05)")  # well under 2 s
        assert cur.fetchone() == (True,)
        with pytest.raises(psycopg2.errors.InvalidParameterValue):
            cur.execute("SET statement_timeout = 'soon'")
    conn.close()


def test_statement_timeout_from_startup_options(node):
    conn = node.connect(options="-c statement_timeout=150")
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("SELECT pg_sleep(5)")
        cur.execute("SELECT 1")
    conn.close()


def test_statement_timeout_set_earlier_in_the_batch(node):
    conn = node.connect()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("SET statement_timeout = '200ms'; SELECT pg_sleep(5)")
        cur.execute("SELECT 1")
    conn.close()


def test_statement_timeout_per_statement_not_per_batch(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '300ms'")
        # four sleeps of 0.1 s: 0.4 s for the batch, each well under 0.3 s
        cur.execute("SELECT pg_sleep(0.1); SELECT pg_sleep(0.1); SELECT pg_sleep(0.1); SELECT pg_sleep(0.1)")
        assert cur.fetchone() == (True,)
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("SELECT 1; SELECT pg_sleep(5)")
        cur.execute("RESET statement_timeout")
    conn.close()


def test_statement_timeout_in_explicit_txn_aborts_it(node):
    conn = node.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '100ms'")
        cur.execute("SELECT 1")
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("SELECT pg_sleep(5)")
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    conn.close()


def test_pg_sleep_does_not_hold_the_node(node):
    sleeper = node.connect()

    def sleep():
        with sleeper.cursor() as cur:
            cur.execute("SELECT pg_sleep(600)")
            return cur.fetchone()
    thread, outcome = in_thread(sleep)
    wait_for(lambda: _queries_like(node, "pg_sleep(600)"), "the sleep in SHOW QUERIES", timeout=20)
    assert _select_one(node) == 1  # a new connection, served ...
    assert _queries_like(node, "pg_sleep(600)") and thread.is_alive()  # ... while the sleep runs
    sleeper.cancel()
    thread.join(20)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome
    sleeper.close()


def test_pg_sleep_bad_input(node):
    conn = node.connect()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InvalidParameterValue):
            cur.execute("SELECT pg_sleep('NaN'::FLOAT8)")
        cur.execute("SELECT pg_sleep(-1), pg_sleep(NULL), crdb_internal.force_retry(NULL)")
        assert cur.fetchone() == (True, None, None)
        with pytest.raises(psycopg2.errors.UndefinedFunction):
            cur.execute("SELECT crdb_internal.force_retry(1, 2)")
    conn.close()


# ---- row locks ---------------------------------------------------------------------------

def _hold_row(node, db):
    holder = node.connect(database=db, autocommit=False)
    with holder.cursor() as cur:
        cur.execute("UPDATE kv SET v = v + 1 WHERE k = 1")
    return holder


@pytest.mark.parametrize("setting,code,message", [
    ("statement_timeout", "57014", TIMEOUT_MESSAGE),
    ("lock_timeout", "55P03", "lock timeout"),
])
def test_timeouts_end_a_row_lock_wait(node, table, setting, code, message):
    holder = _hold_row(node, table)
    waiter = node.connect(database=table)
    with waiter.cursor() as cur:
        cur.execute(f"SET {setting} = '200ms'")
        began = time.monotonic()
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("UPDATE kv SET v = v + 10 WHERE k = 1")
        assert time.monotonic() - began < 5  # a liveness bound (the wait ended), not a speed target
        assert info.value.pgcode == code
        assert message in str(info.value)
        cur.execute("SELECT v FROM kv WHERE k = 2")
        assert cur.fetchone() == (0,)
    holder.commit()
    assert node.sql("SELECT v FROM kv WHERE k = 1", database=table) == [(1,)]
    holder.close()
    waiter.close()


def test_statement_timeout_in_lock_wait_aborts_explicit_txn(node, table):
    holder = _hold_row(node, table)
    waiter = node.connect(database=table, autocommit=False)
    with waiter.cursor() as cur:
        cur.execute("SET statement_timeout = '150ms'")
        cur.execute("SELECT 1")
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("UPDATE kv SET v = 5 WHERE k = 1")
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
    waiter.rollback()
    holder.commit()
    holder.close()
    waiter.close()


# ---- unit: the deadline is state a test drives ------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _FakeSession:
    def __init__(self, timeout_ms: str) -> None:
        self.vars = {"statement_timeout": timeout_ms}
        self.query = None
        self.last_query = ""
        self.user = "root"


def test_deadline_follows_the_injected_clock():
    clock = _Clock()
    registry = activity.Activity(node_id=1, clock=clock)
    session = _FakeSession("200")
    query = registry.begin(session, "SELECT pg_sleep(5)")
    assert session.query is query and len(query.query_id) == 32
    query.check()  # not yet
    clock.now += 0.199
    query.check()
    clock.now += 0.002
    with pytest.raises(errors.PgError) as info:
        query.check()
    assert info.value.code == "57014" and info.value.message == TIMEOUT_MESSAGE
    # an operator's generic 57014 is told why
    assert query.explain(errors.query_canceled()).message == TIMEOUT_MESSAGE
    registry.end(query)
    assert session.query is None and session.last_query == "SELECT pg_sleep(5)"
    assert registry.queries == {}


def test_cancel_wins_over_later_timeout_and_no_timeout_means_none():
    clock = _Clock()
    registry = activity.Activity(node_id=7, clock=clock)
    query = registry.begin(_FakeSession("0"), "SELECT 1")
    clock.now += 10_000
    query.check()  # statement_timeout 0: no deadline
    query.cancel(activity.CANCELED)
    query.cancel(activity.TIMEOUT)
    with pytest.raises(errors.PgError) as info:
        query.check()
    assert info.value.message == "query execution canceled"
    assert query.query_id.endswith("7".rjust(16, "0"))


def test_guard_ends_a_wait_for_a_retry_turn_when_canceled():
    import asyncio

    async def scenario():
        registry = activity.Activity(node_id=1)
        query = registry.begin(_FakeSession("0"), "UPDATE kv SET v = v + 1 WHERE k = 1")
        turn = asyncio.get_running_loop().create_future()  # a turn that never comes

        async def wait_for_turn():
            await turn
        asyncio.get_running_loop().call_soon(query.cancel, activity.CANCELED)
        with pytest.raises(errors.PgError) as info:
            await query.guard(wait_for_turn())
        assert info.value.code == "57014"
        await asyncio.sleep(0)
        assert turn.cancelled()  # the waiter left the queue
        # a wait that ends first returns its value
        query2 = registry.begin(_FakeSession("0"), "SELECT 1")

        async def quick():
            return 42
        assert await query2.guard(quick()) == 42
        # the statement's coroutine is closed mid-wait (its connection went away): the wait goes too
        query3 = registry.begin(_FakeSession("0"), "UPDATE kv SET v = v + 1 WHERE k = 1")
        turn3 = asyncio.get_running_loop().create_future()

        async def wait_for_turn3():
            await turn3

        statement = query3.guard(wait_for_turn3())
        statement.send(None)
        await asyncio.sleep(0)  # the task starts waiting for its turn
        statement.close()
        await asyncio.sleep(0)
        assert turn3.cancelled()

    asyncio.run(scenario())


# ---- SHOW QUERIES / SESSIONS, CANCEL QUERY / SESSION --------------------------------------------

@pytest.fixture(scope="module")
def other_user(node):
    node.sql(f"CREATE USER IF NOT EXISTS {OTHER_USER} WITH PASSWORD '{OTHER_PW}'")
    return OTHER_USER


def _start_sleep(node, seconds: float = 30, user: str = "root", password: str | None = None, tag: str = ""):
    conn = node.connect(user, password)
    text = f"SELECT pg_sleep({seconds}) /* {tag} */"

    def run():
        with conn.cursor() as cur:
            cur.execute(text)
    thread, outcome = in_thread(run)
    rows = wait_for(lambda: _queries_like(node, tag), f"{tag} in SHOW CLUSTER QUERIES", timeout=20)
    return conn, thread, outcome, rows[0]


def test_show_queries_and_sessions_columns(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET application_name = 'qctl_app'")
        cur.execute("SHOW CLUSTER QUERIES")
        assert [d.name for d in cur.description] == [
            "query_id", "node_id", "session_id", "user_name", "start", "query", "client_address",
            "application_name", "distributed", "full_scan", "phase"]
        rows = [r for r in cur.fetchall() if r[5] == "SHOW CLUSTER QUERIES"]
        assert len(rows) == 1  # the statement itself is running, as in CockroachDB
        query_id, node_id, session_id, user, *_rest = rows[0]
        assert len(query_id) == 32 and int(query_id, 16) and len(session_id) == 32
        assert (node_id, user, rows[0][7], rows[0][10]) == (1, "root", "qctl_app", "executing")
        for show in ("SHOW QUERIES", "SHOW LOCAL QUERIES", "SHOW STATEMENTS", "SHOW CLUSTER STATEMENTS",
                     "SHOW ALL CLUSTER QUERIES"):
            cur.execute(show)
            assert any(r[5] == show for r in cur.fetchall())
        cur.execute("SHOW SESSIONS")
        assert [d.name for d in cur.description] == [
            "node_id", "session_id", "status", "user_name", "client_address", "application_name",
            "active_queries", "last_active_query", "session_start", "active_query_start", "num_txns_executed"]
        mine = [r for r in cur.fetchall() if r[1] == session_id]
        assert len(mine) == 1
        assert mine[0][2:4] == ("ACTIVE", "root") and mine[0][6] == "SHOW SESSIONS"
        assert mine[0][7] == "SHOW ALL CLUSTER QUERIES"
        cur.execute("SELECT count(*) FROM crdb_internal.node_sessions WHERE session_id = %s", (session_id,))
        assert cur.fetchone() == (1,)
        cur.execute("SELECT query FROM crdb_internal.cluster_queries WHERE session_id = %s", (session_id,))
        assert cur.fetchall() == [("SELECT query FROM crdb_internal.cluster_queries WHERE session_id = "
                                   f"'{session_id}'",)]
        cur.execute("SELECT state, query FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == ("active", "SELECT state, query FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    conn.close()


def test_cancel_query_from_another_session(node):
    conn, thread, outcome, (query_id, *_rest) = _start_sleep(node, tag="cancel-me")
    assert _select_one(node) == 1  # the node serves others meanwhile
    node.sql(f"CANCEL QUERY '{query_id}'")
    thread.join(10)
    assert not thread.is_alive()
    err = outcome["error"]
    assert isinstance(err, psycopg2.errors.QueryCanceled)
    assert err.pgerror.startswith("ERROR:  query execution canceled")
    assert "timeout" not in err.pgerror
    with conn.cursor() as cur:  # the canceled session goes on
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert not _queries_like(node, "cancel-me")
    conn.close()


def test_cancel_queries_with_a_select(node):
    started = [_start_sleep(node, tag=f"many-{i}") for i in range(2)]
    node.sql("CANCEL QUERIES (SELECT query_id FROM [SHOW CLUSTER QUERIES] WHERE query LIKE '%many-%' "
             "AND query NOT LIKE '%SHOW CLUSTER QUERIES%')")
    for conn, thread, outcome, _row in started:
        thread.join(10)
        assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled)
        conn.close()


def test_cancel_unknown_ids(node):
    conn = node.connect()
    missing = "0" * 31 + "1"
    with conn.cursor() as cur:
        for stmt, message in [
            (f"CANCEL QUERY '{missing}'", f"could not cancel query {missing}: query ID {missing} not found"),
            (f"CANCEL SESSION '{missing}'", f"could not cancel session {missing}: session ID {missing} not found"),
            ("CANCEL QUERY 'xyz'", "query ID xyz malformed"),
        ]:
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(stmt)
            assert info.value.pgcode == activity.UNCATEGORIZED
            assert message in str(info.value)
        cur.execute(f"CANCEL QUERY IF EXISTS '{missing}'")
        cur.execute(f"CANCEL SESSION IF EXISTS '{missing}'")
        cur.execute("CANCEL QUERIES SELECT NULL")  # nothing to cancel
        with pytest.raises(psycopg2.errors.DatatypeMismatch):
            cur.execute("CANCEL QUERY 42")
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("CANCEL QUERIES SELECT 'a', 'b'")
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("CANCEL QUERY")
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("CANCEL TRANSACTION 'x'")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()


def test_non_admin_sees_and_cancels_only_its_own(node, other_user):
    conn, thread, outcome, (root_query, root_session, *_rest) = _start_sleep(node, tag="roots")
    pleb = node.connect(other_user, OTHER_PW)
    with pleb.cursor() as cur:
        cur.execute("SELECT query_id FROM [SHOW CLUSTER QUERIES]")
        visible = {r[0] for r in cur.fetchall()}
        assert root_query not in visible and len(visible) == 1  # only its own SHOW
        cur.execute("SELECT user_name FROM [SHOW SESSIONS]")
        assert {r[0] for r in cur.fetchall()} == {other_user}
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(f"CANCEL QUERY '{root_query}'")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(f"CANCEL SESSION '{root_session}'")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT pg_cancel_backend(%s)", (conn.get_backend_pid(),))
    assert thread.is_alive()
    # its own statement it may cancel
    pconn, pthread, poutcome, (pleb_query, *_rest) = _start_sleep(node, user=other_user, password=OTHER_PW,
                                                                 tag="plebs")
    with pleb.cursor() as cur:
        cur.execute(f"CANCEL QUERY '{pleb_query}'")
    pthread.join(10)
    assert isinstance(poutcome.get("error"), psycopg2.errors.QueryCanceled)
    node.sql(f"CANCEL QUERY '{root_query}'")
    thread.join(10)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled)
    for c in (conn, pleb, pconn):
        c.close()


def test_cancel_session_closes_it(node):
    victim = node.connect()
    with victim.cursor() as cur:
        cur.execute("SELECT session_id FROM [SHOW SESSIONS] WHERE active_queries LIKE 'SELECT session_id%'")
        (session_id,) = cur.fetchone()
    node.sql(f"CANCEL SESSION '{session_id}'")
    with pytest.raises(psycopg2.OperationalError):
        with victim.cursor() as cur:
            cur.execute("SELECT 1")
    wait_for(lambda: node.sql(f"SELECT count(*) FROM [SHOW SESSIONS] WHERE session_id = '{session_id}'") == [(0,)],
             "the session to go", timeout=20)
    assert _select_one(node) == 1


def test_cancel_session_stops_its_running_statement(node):
    conn, thread, outcome, (_query_id, session_id, *_rest) = _start_sleep(node, tag="session-sleep")
    node.sql(f"CANCEL SESSIONS SELECT session_id FROM [SHOW SESSIONS] WHERE session_id = '{session_id}'")
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), psycopg2.Error)
    assert not _queries_like(node, "session-sleep")
    conn.close()


def test_pgwire_cancel_request_shares_the_mechanism(node):
    conn, thread, outcome, _row = _start_sleep(node, tag="wire-cancel")
    conn.cancel()  # a CancelRequest on a connection of its own
    thread.join(10)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled)
    conn.close()


def test_pg_terminate_backend(node):
    victim = node.connect()
    with victim.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    assert node.sql(f"SELECT pg_terminate_backend({pid})") == [(True,)]
    with pytest.raises(psycopg2.OperationalError):
        with victim.cursor() as cur:
            cur.execute("SELECT 1")
    assert node.sql("SELECT pg_cancel_backend(999999)") == [(False,)]


# ---- idle_in_transaction_session_timeout --------------------------------------------------------

def test_idle_in_transaction_session_timeout_closes_the_session(node, table):
    conn = node.connect(database=table, autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET idle_in_transaction_session_timeout = '300ms'")
        cur.execute("UPDATE kv SET v = 7 WHERE k = 2")  # holds the row's lock while idle
        (session_id,) = node.sql("SELECT session_id FROM [SHOW SESSIONS] WHERE last_active_query LIKE "
                                 "'UPDATE kv SET v = 7%'")[0]
    wait_for(lambda: node.sql(f"SELECT count(*) FROM [SHOW SESSIONS] WHERE session_id = '{session_id}'") == [(0,)],
             "the idle session to be closed", timeout=20)
    with pytest.raises(psycopg2.OperationalError) as info:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "idle-in-transaction timeout" in str(info.value) or "closed" in str(info.value)
    # its lock went with it, and its write was never committed
    node.sql("SET lock_timeout = '2s'", f"UPDATE {table}.kv SET v = v + 1 WHERE k = 2")
    assert node.sql("SELECT v FROM kv WHERE k = 2", database=table) == [(1,)]


def test_idle_outside_transaction_is_not_closed(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET idle_in_transaction_session_timeout = '100ms'")
        cur.execute("SELECT pg_sleep(0.3)")  # busy, not idle: the timer is not running
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()


# ---- crdb_internal.force_retry ----------------------------------------------------------------

def test_force_retry_implicit_is_retried_by_the_server(node):
    began = time.monotonic()
    assert node.sql("SELECT crdb_internal.force_retry('50ms')") == [(0,)]
    assert time.monotonic() - began >= 0.05  # force_retry('50ms') retries for at least that long


def test_force_retry_is_bounded_by_statement_timeout(node):
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '200ms'")
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.execute("SELECT crdb_internal.force_retry('1h')")
        cur.execute("SELECT 1")
    conn.close()


def test_force_retry_explicit_gives_40001_then_client_retry_succeeds(node):
    conn = node.connect(autocommit=False)
    attempts = 0
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT cockroach_restart")
        while True:
            attempts += 1
            assert attempts < 500
            try:
                cur.execute("SELECT crdb_internal.force_retry('50ms')")
                assert cur.fetchone() == (0,)
                cur.execute("RELEASE SAVEPOINT cockroach_restart")
                break
            except psycopg2.errors.SerializationFailure as exc:
                assert exc.pgcode == "40001"
                cur.execute("ROLLBACK TO SAVEPOINT cockroach_restart")
                time.sleep(0.005)
    conn.commit()
    assert attempts > 1
    conn.close()


# ---- COPY FROM -------------------------------------------------------------------------------

def test_statement_timeout_covers_copy_from(node, table):
    import io
    conn = node.connect(database=table)

    def overdue() -> bool:
        """The COPY has run past its statement timeout by the node's clock (with a margin), or is
        no longer listed: the node ended it at its deadline."""
        rows = node.sql("SELECT now() - start > INTERVAL '300ms' FROM [SHOW CLUSTER QUERIES] "
                        "WHERE query = 'COPY kv FROM STDIN'")
        return not rows or rows[0][0]

    class SlowRows(io.RawIOBase):
        """Rows that keep coming until the COPY has run past its timeout by the node's clock, so
        it cannot finish in time however fast or slow the machine; the sleep only paces the rows."""
        def __init__(self) -> None:
            self.n = 100

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self.n % 20 == 0 and overdue():
                return b""
            assert self.n < 1_000_000, "the COPY never ran past its timeout"
            time.sleep(0.005)
            self.n += 1
            return f"{self.n}\t{self.n}\n".encode()

    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '200ms'")
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.copy_expert("COPY kv FROM STDIN", SlowRows(), size=16)
        cur.execute("SELECT count(*) FROM kv")
        assert cur.fetchone() == (2,)
        cur.execute("RESET statement_timeout")
        cur.copy_expert("COPY kv FROM STDIN", io.BytesIO(b"10\t10\n"))
        cur.execute("SELECT count(*) FROM kv")
        assert cur.fetchone() == (3,)
    conn.close()


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_copy_from_whose_client_stalls_is_ended(node, table, stop):
    """A client that starts a COPY FROM and then sends nothing: the timeout (or CANCEL QUERY)
    ends it at once with 57014 and ReadyForQuery; what the client sends afterwards for that COPY
    is dropped, and the connection serves the next query."""
    from wire_client import RawConnection, message, query
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(user="root", database=table)
        if stop == "timeout":
            conn.send(query("SET statement_timeout = '300ms'"))
            conn.read_until()
        conn.send(query("COPY kv FROM STDIN"))
        assert conn.read_until(b"G")[-1][0] == b"G"
        conn.send(message(b"d", b"10\t10\n"))
        if stop == "cancel":
            query_id = wait_for(lambda: _queries_like(node, "COPY kv FROM STDIN"), "the COPY to show up", timeout=20)[0][0]
            node.sql(f"CANCEL QUERY '{query_id}'")
        # The client sends nothing more: the server ends the COPY by itself.
        messages = conn.read_until()
        assert [t for t, _ in messages] == [b"E", b"Z"]
        fields = conn.errors(messages)[0]
        assert fields["C"] == "57014"
        if stop == "timeout":
            assert fields["M"] == TIMEOUT_MESSAGE
        assert not _queries_like(node, "COPY kv FROM STDIN")
        conn.send(message(b"d", b"11\t11\n") + message(b"c") + query("SELECT count(*) FROM kv"))
        messages = conn.read_until()
        assert [t for t, _ in messages] == [b"T", b"D", b"C", b"Z"]
        assert messages[1][1].endswith(b"2")  # nothing of the COPY was written
    finally:
        conn.close()


def test_statement_timeout_and_cancel_reach_copy_to(node):
    """COPY TO streams batch by batch: it is listed while it runs, and a timeout stops it."""
    import io
    conn = node.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '200ms'")
        began = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
            cur.copy_expert("COPY (SELECT a, b FROM generate_series(1, 100000) a, generate_series(1, 100000) b) "
                            "TO STDOUT", io.StringIO())
        assert time.monotonic() - began < 10  # a liveness bound (the timeout took), not a speed target
        cur.execute("RESET statement_timeout")
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT generate_series(1, 3)) TO STDOUT", out)
        assert out.getvalue() == "1\n2\n3\n"
    conn.close()

    def copy_forever() -> None:
        other = node.connect()
        try:
            with other.cursor() as cur:
                cur.copy_expert("COPY (SELECT a, b FROM generate_series(1, 100000) a, "
                                "generate_series(1, 100000) b) TO STDOUT", io.StringIO())
        finally:
            other.close()
    thread, outcome = in_thread(copy_forever)
    query_id = wait_for(lambda: _queries_like(node, "COPY (SELECT a, b"), "the COPY to show up", timeout=20)[0][0]
    node.sql(f"CANCEL QUERY '{query_id}'")
    thread.join(30)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome


# ---- the extended protocol and the wire ------------------------------------------------------

def test_statement_timeout_extended_protocol(node):
    import psycopg  # sends every statement with Parse/Bind/Execute
    with psycopg.connect(**node.params(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '150ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT pg_sleep(%s)", (5,))
        assert conn.execute("SELECT %s::INT + 1", (1,)).fetchone() == (2,)


def test_idle_in_transaction_timeout_sends_fatal_25p03(node):
    from wire_client import RawConnection, query
    raw = RawConnection(node.host, node.port, node.certs_dir)
    try:
        raw.login()
        raw.send(query("SET idle_in_transaction_session_timeout = '200ms'; BEGIN; SELECT 1"))
        assert raw.read_until(b"Z")[-1] == (b"Z", b"T")
        tail = raw.read_until(b"never")  # the server speaks next, then closes
        fatal = raw.errors(tail)
        assert [(e["S"], e["C"], e["M"]) for e in fatal] == [
            ("FATAL", "25P03", "terminating connection due to idle-in-transaction timeout")]
    finally:
        raw.close()


# ---- role options ------------------------------------------------------------------------------

def test_viewactivity_and_cancelquery_role_options(node, other_user):
    node.sql("CREATE USER IF NOT EXISTS qctl_watcher WITH PASSWORD 'Watch-secret-pw-1' VIEWACTIVITY CANCELQUERY")
    pconn, pthread, poutcome, (pleb_query, *_rest) = _start_sleep(node, user=other_user, password=OTHER_PW,
                                                                 tag="watched")
    rconn, rthread, routcome, (root_query, *_rest) = _start_sleep(node, tag="admins")
    watcher = node.connect("qctl_watcher", "Watch-secret-pw-1")
    with watcher.cursor() as cur:
        cur.execute("SELECT query_id FROM [SHOW CLUSTER QUERIES]")
        visible = {r[0] for r in cur.fetchall()}
        assert {pleb_query, root_query} <= visible  # VIEWACTIVITY: everyone's
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(f"CANCEL QUERY '{root_query}'")  # CANCELQUERY does not reach admins
        cur.execute(f"CANCEL QUERY '{pleb_query}'")
    pthread.join(10)
    assert isinstance(poutcome.get("error"), psycopg2.errors.QueryCanceled)
    assert rthread.is_alive()
    node.sql("ALTER USER qctl_watcher WITH NOVIEWACTIVITY NOCANCELQUERY")
    with watcher.cursor() as cur:
        cur.execute("SELECT query_id FROM [SHOW CLUSTER QUERIES]")
        assert root_query not in {r[0] for r in cur.fetchall()}
    rconn.cancel()
    rthread.join(10)
    for c in (pconn, rconn, watcher):
        c.close()


# The rule on its own, with a catalog of the test's.

class _User:
    def __init__(self, **options: bool) -> None:
        self.options = options


class _Catalog:
    def __init__(self) -> None:
        self.users = {"root": _User(), "alice": _User(), "bob": _User(),
                      "watcher": _User(viewactivity=True, cancelquery=True), "boss": _User()}

    def is_admin(self, user: str) -> bool:
        return user in ("root", "boss")


@pytest.mark.parametrize("requester,owner,allowed", [
    ("alice", "alice", True), ("alice", "bob", False), ("root", "alice", True), ("boss", "root", True),
    ("watcher", "alice", True), ("watcher", "root", False), ("watcher", "boss", False),
])
def test_who_may_cancel(requester, owner, allowed):
    registry = activity.Activity(node_id=1)
    if allowed:
        registry.check_can_cancel(_Catalog(), requester, owner)
    else:
        with pytest.raises(errors.PgError) as info:
            registry.check_can_cancel(_Catalog(), requester, owner)
        assert info.value.code == "42501"


@pytest.mark.parametrize("viewer,owner,visible", [
    ("alice", "alice", True), ("alice", "bob", False), ("boss", "alice", True), ("watcher", "root", True),
])
def test_who_may_see(viewer, owner, visible):
    assert activity.Activity(node_id=1).can_view(_Catalog(), viewer, owner) is visible


def test_one_node_lists_itself_in_the_node_tables_and_hands_out_pids_with_its_node_id(node):
    rows = node.sql("SELECT node_id, is_live, membership FROM crdb_internal.kv_node_status")
    assert rows == [(1, True, "active")]
    assert node.sql("SELECT node_id, draining FROM crdb_internal.gossip_liveness") == [(1, False)]
    assert node.sql("SELECT node_id, sql_address FROM crdb_internal.gossip_nodes")[0][0] == 1
    conn = node.connect()
    try:
        # BackendKeyData's pid carries the node id above 16 bits (sql/cluster.py), so that a
        # CancelRequest landing on another node of a cluster can be forwarded to this one.
        assert conn.get_backend_pid() >> 16 == 1
    finally:
        conn.close()
    assert node.sql("SHOW LOCAL QUERIES")[0][5] == "SHOW LOCAL QUERIES"
    assert node.sql("SHOW CLUSTER QUERIES")[0][5] == "SHOW CLUSTER QUERIES"
