"""Query control (sql/activity.py): statement_timeout, lock_timeout, idle_in_transaction_session_timeout,
pg_sleep, crdb_internal.force_retry, SHOW QUERIES / SESSIONS and CANCEL QUERY / SESSION.

Real psycopg2 clients against a real node. A statement that must be stopped is started in a
thread; the test waits (bounded polling) until it shows up in SHOW CLUSTER QUERIES, never for a
guessed time, and checks that the node answers other clients meanwhile.
"""
from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.errorcodes
import pytest

from pillbug.sql import activity
from pillbug.util import errors

TIMEOUT_MESSAGE = "query execution canceled due to statement timeout"
OTHER_USER, OTHER_PW = "qctl_pleb", "Pleb-secret-pw-1"


def _in_thread(fn):
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


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
        assert time.monotonic() - began < 4
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
        assert time.monotonic() - began < 10
        assert TIMEOUT_MESSAGE in str(info.value)
        cur.execute("SELECT count(*) FROM generate_series(1, 10)")
        assert cur.fetchone() == (10,)
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
            cur.execute("SELECT pg_sleep(1.5)")
            return cur.fetchone()
    thread, outcome = _in_thread(sleep)
    _wait_for(lambda: _queries_like(node, "pg_sleep(1.5)"), "the sleep in SHOW QUERIES")
    began = time.monotonic()
    assert _select_one(node) == 1  # a new connection, served while the sleep runs
    assert time.monotonic() - began < 1.0
    assert thread.is_alive()
    thread.join(20)
    assert outcome == {"result": (True,)}
    sleeper.close()


def test_pg_sleep_bad_input(node):
    conn = node.connect()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InvalidParameterValue):
            cur.execute("SELECT pg_sleep('NaN'::FLOAT8)")
        cur.execute("SELECT pg_sleep(-1), pg_sleep(NULL)")
        assert cur.fetchone() == (True, True)
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
        assert time.monotonic() - began < 5
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
