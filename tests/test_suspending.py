"""Store reads that wait (util/timeslice.py's bridge, storage/suspending.py), seen by clients.

A node started with `--test-store=suspending,slow_key=slowpoke,slow_ms=...` answers every read of
a key containing `slowpoke` only after that long, and other reads after a turn of the loop. A
statement parked in such a read must not hold the node: other clients are served meanwhile, and
CANCEL QUERY, a pgwire CancelRequest and statement_timeout end it with 57014 at once, not when
the read comes back. Real psycopg2 clients against a real node, as in test_query_control.py.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import psycopg
import psycopg2
import psycopg2.errors
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, Node, run_cli, start_node, wait_for

from pillbug.kv.txn import Txn
from pillbug.sql import activity
from pillbug.sql.settings import HBA_SETTING
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.suspending import SuspendingStore, from_spec
from pillbug.util import errors, timeslice

SLOW_SECONDS = 6.0  # far longer than any answer the tests accept while it is pending
TIMEOUT_MESSAGE = "query execution canceled due to statement timeout"


@pytest.fixture(scope="module")
def slow_node(certs: str) -> Iterator[Node]:
    tmp = tempfile.mkdtemp(prefix="pillbug-suspending-")
    node = start_node(tmp, certs, extra_args=[
        f"--test-store=suspending,max_delay_ms=0.5,seed=3,slow_key=slowpoke,slow_ms={SLOW_SECONDS * 1000:.0f}"])
    try:
        node.sql("CREATE TABLE IF NOT EXISTS kv (k STRING PRIMARY KEY, v INT)", "UPSERT INTO kv VALUES ('fast', 1)")
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _start_slow_read(node: Node, setup: tuple[str, ...] = ()) -> tuple:
    """A connection whose SELECT is parked in the slow read, in a thread; returns once the
    node lists the statement."""
    conn = node.connect()
    with conn.cursor() as cur:
        for stmt in setup:
            cur.execute(stmt)
    outcome: dict = {}

    def run() -> None:
        began = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT v FROM kv WHERE k = 'slowpoke'")
                outcome["rows"] = cur.fetchall()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        outcome["took"] = time.monotonic() - began
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    query_id = _wait_for_query(node, "slowpoke")
    return conn, thread, outcome, query_id


def _wait_for_query(node: Node, text: str) -> str:
    def running() -> list[str]:
        rows = node.sql("SELECT query_id, query FROM [SHOW CLUSTER QUERIES]")
        return [qid for qid, query in rows if text in query and "SHOW CLUSTER QUERIES" not in query]
    return wait_for(running, f"a running query like {text!r}", timeout=20)[0]


def test_the_node_serves_others_while_a_statement_waits_for_the_store(slow_node):
    other = slow_node.connect()
    conn, thread, outcome, _query_id = _start_slow_read(slow_node)
    try:
        began = time.monotonic()
        with other.cursor() as cur:
            for i in range(20):
                cur.execute("SELECT v FROM kv WHERE k = 'fast'")
                assert cur.fetchone() == (1,)
                cur.execute("INSERT INTO kv VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                            (f"k{i}", i))
        served_in = time.monotonic() - began
        assert thread.is_alive(), "the slow read answered before the other client was done"
        assert served_in < SLOW_SECONDS / 3
        thread.join(SLOW_SECONDS * 3)
        assert outcome.get("rows") == [] and outcome["took"] >= SLOW_SECONDS * 0.9, outcome
    finally:
        other.close()
        conn.close()


def test_cancel_query_ends_a_statement_parked_in_a_store_read(slow_node):
    conn, thread, outcome, query_id = _start_slow_read(slow_node)
    slow_node.sql(f"CANCEL QUERY '{query_id}'")
    thread.join(SLOW_SECONDS)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome
    assert outcome["took"] < SLOW_SECONDS / 2
    with conn.cursor() as cur:  # the session goes on
        cur.execute("SELECT v FROM kv WHERE k = 'fast'")
        assert cur.fetchone() == (1,)
    conn.close()


def test_a_cancel_request_ends_a_statement_parked_in_a_store_read(slow_node):
    conn, thread, outcome, _query_id = _start_slow_read(slow_node)
    conn.cancel()  # a pgwire CancelRequest, on a connection of its own
    thread.join(SLOW_SECONDS)
    assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome
    assert outcome["took"] < SLOW_SECONDS / 2
    conn.close()


def test_statement_timeout_ends_a_statement_parked_in_a_store_read(slow_node):
    conn = slow_node.connect()
    began = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg2.errors.QueryCanceled, match=TIMEOUT_MESSAGE):
            cur.execute("SELECT v FROM kv WHERE k = 'slowpoke'")
        assert time.monotonic() - began < SLOW_SECONDS / 2
        cur.execute("SELECT v FROM kv WHERE k = 'fast'")
        assert cur.fetchone() == (1,)
    conn.close()


def test_an_explicit_transaction_parked_in_a_read_is_aborted_by_its_timeout(slow_node):
    conn = slow_node.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '300ms'")
        cur.execute("UPDATE kv SET v = v + 1 WHERE k = 'fast'")
        with pytest.raises(psycopg2.errors.QueryCanceled, match=TIMEOUT_MESSAGE):
            cur.execute("SELECT v FROM kv WHERE k = 'slowpoke'")
    conn.rollback()
    # the update went with the aborted transaction; its row lock too (this update does not wait)
    assert slow_node.sql("UPDATE kv SET v = 1 WHERE k = 'fast' RETURNING v") == [(1,)]
    conn.close()


def test_the_test_store_is_hidden_and_refuses_unknown_specs(tmp_path):
    assert "test-store" not in run_cli("start-single-node", "--help").stdout
    with pytest.raises(ValueError, match="unknown test store"):
        from_spec("slow", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown test store option"):
        from_spec("suspending,delay=3", None)  # type: ignore[arg-type]


def test_reads_of_the_suspending_store_refuse_to_block_the_loop(tmp_path):
    """Outside a greenlet a read fails loudly instead of blocking the loop; inside one it answers
    after the loop has run, in any order of completion, with the wrapped store's answer."""
    async def scenario() -> None:
        store = SuspendingStore(LMDBStore(str(tmp_path / "store")), max_delay_ms=2, seed=5)
        try:
            def write() -> int:
                txn = Txn(store)
                for i in range(10):
                    txn.put(b"k%d" % i, b"v%d" % i)
                return timeslice.await_(txn.commit())
            revision = await timeslice.run(write)
            with pytest.raises(timeslice.OutsideSliceError, match="scenario"):
                store.get(b"k1", revision)
            reads_before = store.reads

            def read(i: int) -> tuple:
                return store.get(b"k%d" % i, revision)
            answers = await asyncio.gather(*(timeslice.run(read, i) for i in range(10)))
            assert answers == [(b"v%d" % i, revision) for i in range(10)]
            assert store.reads == reads_before + 10
            rows = await timeslice.run(store.scan, b"k", b"l", revision)
            assert [k for k, _v, _m in rows] == [b"k%d" % i for i in range(10)]
        finally:
            await store.close()
    asyncio.run(scenario())


def test_make_start_never_selects_the_test_store():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Makefile")) as f:
        assert "test-store" not in f.read()


class _Session:
    """What Activity.begin needs of a session."""

    def __init__(self, timeout_ms: str = "0") -> None:
        self.vars = {"statement_timeout": timeout_ms}
        self.query = None
        self.last_query = ""
        self.user = "root"


@pytest.mark.parametrize("timeout_ms,message", [("0", "query execution canceled"), ("50", TIMEOUT_MESSAGE)])
def test_a_read_parked_in_the_bridge_ends_with_57014_on_cancel_or_timeout(timeout_ms, message):
    """In-process: a statement registered in sql/activity.py, parked in await_ on a read that
    would take 30 s, ends at once when it is canceled or its statement_timeout rings."""
    registry = activity.Activity(node_id=1)

    async def scenario() -> float:
        queries = []

        def statement() -> None:
            query = registry.begin(_Session(timeout_ms), "SELECT v FROM kv WHERE k = 'slowpoke'")
            queries.append(query)
            try:
                timeslice.await_(asyncio.sleep(30))
            finally:
                registry.end(query)
        task = asyncio.ensure_future(timeslice.run(statement))
        await asyncio.sleep(0.01)
        began = time.monotonic()
        if timeout_ms == "0":
            queries[0].cancel(activity.CANCELED)
        with pytest.raises(errors.PgError) as info:
            await asyncio.wait_for(task, 5)
        assert info.value.code == "57014" and info.value.message == message
        assert queries[0].greenlet is None  # ended: a later cancel cannot reach the greenlet's next work
        return time.monotonic() - began
    assert asyncio.run(scenario()) < 1.0


def test_every_protocol_path_reaches_the_store_from_a_greenlet(slow_node):
    """Startup with a password (HBA rules and the user's verifier come from the catalog), Parse,
    Bind, Describe, Execute, a pipeline and COPY FROM, on a store whose reads fail outside a
    greenlet: any such path would answer XX000 here."""
    conninfo = " ".join(f"{k}={v}" for k, v in slow_node.params(ADMIN_USER, ADMIN_PASSWORD).items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ext (k INT PRIMARY KEY, v STRING)")
        conn.execute("DELETE FROM ext WHERE true")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ext VALUES (%s, %s)", [(i, f"v{i}") for i in range(20)])
            for _ in range(3):  # named prepared statements after the first executions
                cur.execute("SELECT v FROM ext WHERE k = %s", (7,), prepare=True)
                assert cur.fetchall() == [("v7",)]
            cur.execute("SELECT count(*) FROM ext WHERE v LIKE %s", ("v1%",))
            assert cur.fetchone() == (11,)
        with conn.pipeline():
            a = conn.execute("UPDATE ext SET v = %s WHERE k = %s RETURNING v", ("x", 1))
            b = conn.execute("SELECT v FROM ext WHERE k = %s", (1,))
        assert a.fetchall() == [("x",)] and b.fetchall() == [("x",)]
        with conn.cursor() as cur:
            with cur.copy("COPY ext FROM STDIN") as copy:
                for i in range(100, 150):
                    copy.write_row((i, f"c{i}"))
            cur.execute("SELECT count(*) FROM ext")
            assert cur.fetchone() == (70,)


def test_the_servers_own_store_work_runs_in_greenlets(tmp_path):
    """Bootstrap, allowlist and admin seeding, compaction and the shutdown wait of an in-process
    node on the suspending store: each reaches the store from a greenlet (timeslice.run), and the
    same work called from plain loop code is refused, which shows that the reads do wait."""
    from pillbug.server.node import Node as ServerNode
    from pillbug.server.node import NodeConfig

    async def scenario() -> None:
        node = ServerNode(NodeConfig(store=str(tmp_path / "store"), listen_port=0, http_port=0, insecure=True,
                                     allowlist=["127.0.0.1/32"], init_admin="boss",
                                     test_store="suspending,max_delay_ms=0.5"))
        await node.start()
        try:
            assert node.first_start and node.admin_password is not None
            assert isinstance(node.store, SuspendingStore) and node.store.reads > 0
            catalog = await timeslice.run(node.engine.latest_catalog)
            assert "boss" in catalog.users and "127.0.0.1/32" in catalog.settings.get(HBA_SETTING, "")
            with pytest.raises(timeslice.OutsideSliceError):
                await node._compact()
            await timeslice.run(node._compact)
        finally:
            await node.stop()
    asyncio.run(scenario())


@pytest.mark.parametrize("name", [
    "test_seed_retry_loop_keeps_the_total_under_contention",
    "test_autocommit_increments_never_fail_and_never_get_lost",
    "test_explicit_transactions_across_round_trips_see_only_40001",
])
def test_contention_invariants_hold_while_reads_wait(slow_node, name, request):
    """test_contention.py's many clients on a few rows, on a store where every read lets the
    others run (row locks, refreshes, retry turns and group commit interleave at every read):
    totals still hold and clients still see only 40001."""
    import test_contention
    test = getattr(test_contention, name)
    # The seed's own retry loop comes from the shared folder (skipped without it, as there).
    extra = [request.getfixturevalue("seed_dir")] if "seed_dir" in inspect.signature(test).parameters else []
    db = "susp_" + name[5:30]
    slow_node.sql(f"DROP DATABASE IF EXISTS {db} CASCADE", f"CREATE DATABASE {db}")
    try:
        test(*extra, slow_node, db)
    finally:
        slow_node.sql(f"DROP DATABASE IF EXISTS {db} CASCADE")
