"""Transactions: SERIALIZABLE in the kv layer (property tests) and the SQL transaction protocol.

The property test drives random interleavings of transactions (gets, scans with limits in both
directions, puts, deletes, savepoints, single and grouped commits, compactions) against the
real LMDB store in-process, and checks the outcome against a serial replay: the committed
read-write transactions in commit-revision order, each read-only one at its snapshot. Every
read any transaction made must be what the replay reads at that point, and the store must end
as the replay does.

The SQL tests run through psycopg2 against a real node: BEGIN/COMMIT/ROLLBACK, the states
(aborted 25P02, commit-wait after RELEASE cockroach_restart), nested savepoints, the
cockroach_restart protocol, READ ONLY, and the anomalies (lost update, write skew, phantom)
with real interleavings of two connections.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading

import psycopg2
import psycopg2.errorcodes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillbug.kv.txn import Txn
from pillbug.storage import lmdb_store
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.util.errors import PgError

KEYS = [b"a", b"a\x00", b"a\x00\x00", b"ab", b"b", b"c", b"d\xff"]
BOUNDS = [b""] + KEYS + [b"a\x00\x01", b"e"]
N_TXNS = 3
# Property tests commit thousands of times: on tmpfs an fsync costs nothing.
FAST_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# ---- the kv layer: random interleavings checked against a serial replay ----------------------

_TXN = st.integers(0, N_TXNS - 1)
_OPS = {
    "get": st.tuples(st.just("get"), _TXN, st.sampled_from(KEYS)),
    "scan": st.tuples(st.just("scan"), _TXN, st.sampled_from(BOUNDS), st.sampled_from(BOUNDS),
                      st.integers(0, 3), st.booleans()),
    "put": st.tuples(st.just("put"), _TXN, st.sampled_from(KEYS)),
    "delete": st.tuples(st.just("delete"), _TXN, st.sampled_from(KEYS)),
    "savepoint": st.tuples(st.just("savepoint"), _TXN),
    "rollback_to": st.tuples(st.just("rollback_to"), _TXN, st.integers(0, 3)),
    "commit": st.tuples(st.just("commit"), _TXN),
    "commit_group": st.tuples(st.just("commit_group"),
                              st.lists(_TXN, min_size=2, max_size=N_TXNS, unique=True)),
    "compact": st.tuples(st.just("compact"), st.integers(0, 3)),
    "blind_write": st.tuples(st.just("blind_write"), st.sampled_from(KEYS)),
}
# Weighted so that transactions overlap: mostly reads and writes, some commits, few compactions.
_WEIGHTS = ["get"] * 4 + ["scan"] * 4 + ["put"] * 4 + ["delete"] * 2 + ["savepoint", "rollback_to"] * 2 \
    + ["commit"] * 3 + ["commit_group", "compact"] + ["blind_write"] * 2
op_strategy = st.sampled_from(_WEIGHTS).flatmap(lambda kind: _OPS[kind])


class Attempt:
    """One transaction as the test drove it: its operations and what each read returned."""

    def __init__(self, txn: Txn) -> None:
        self.txn = txn
        self.ops: list[tuple] = []
        self.savepoints: list[int] = []  # tokens, in the order taken
        self.committed_at = 0
        self.failed = False


def _model_reads(ops: list[tuple], state: dict[bytes, bytes], check: bool) -> dict[bytes, bytes | None]:
    """Replay one transaction's operations on `state`; assert its reads; return its writes."""
    writes: dict[bytes, bytes | None] = {}
    savepoints: list[dict] = []
    for op in ops:
        kind = op[0]
        if kind == "get":
            _, key, seen = op
            expected = writes[key] if key in writes else state.get(key)
            assert not check or seen == expected, f"get {key!r}: saw {seen!r}, serial order gives {expected!r}"
        elif kind == "scan":
            _, lo, hi, limit, reverse, seen = op
            merged = {k: v for k, v in state.items() if lo <= k < hi}
            merged.update({k: v for k, v in writes.items() if lo <= k < hi})
            rows = sorted(((k, v) for k, v in merged.items() if v is not None), reverse=reverse)
            if limit:
                rows = rows[:limit]
            assert not check or seen == rows, f"scan {lo!r}..{hi!r}: saw {seen!r}, serial order gives {rows!r}"
        elif kind == "put":
            writes[op[1]] = op[2]
        elif kind == "delete":
            writes[op[1]] = None
        elif kind == "savepoint":
            savepoints.append(dict(writes))
        elif kind == "rollback_to":
            del savepoints[op[1] + 1:]
            writes = dict(savepoints[op[1]])
    return writes


def _apply(state: dict[bytes, bytes], writes: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    after = dict(state)
    for key, value in writes.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


def _scan_all(txn: Txn, lo: bytes, hi: bytes, limit: int, reverse: bool) -> list:
    return list(txn.scan(lo, hi, limit=limit, reverse=reverse))


def _run_interleaving(ops: list[tuple], directory: str) -> tuple[list[Attempt], LMDBStore, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    store = LMDBStore(directory, map_size=1 << 22)
    loop.run_until_complete(store.commit([], [(k, b"init") for k in KEYS]))
    attempts: list[Attempt] = []
    active: dict[int, Attempt] = {}
    counter = 0

    def attempt_for(i: int) -> Attempt:
        if i not in active:
            active[i] = Attempt(Txn(store))
            attempts.append(active[i])
        return active[i]

    def guarded(a: Attempt, fn, *args):
        try:
            return fn(*args)
        except PgError as exc:  # a read below the compaction horizon: the transaction is dead
            assert exc.code == "40001" and "compacted away" in exc.message, exc  # retryable
            a.failed = True
            a.txn.abandon()
            active.pop(next(i for i, x in active.items() if x is a))
            return None

    async def commit(a: Attempt) -> None:
        try:
            a.committed_at = await a.txn.commit()
        except PgError as exc:
            assert exc.code == "40001", exc
            a.failed = True

    for op in ops:
        kind = op[0]
        if kind in ("get", "scan", "put", "delete", "savepoint", "rollback_to"):
            a = attempt_for(op[1])
            txn = a.txn
            if kind == "get":
                value = guarded(a, txn.get, op[2])
                if not a.failed:
                    a.ops.append(("get", op[2], value))
            elif kind == "scan":
                _, _, lo, hi, limit, reverse = op
                rows = guarded(a, _scan_all, txn, lo, hi, limit, reverse)
                if not a.failed:
                    a.ops.append(("scan", lo, hi, limit, reverse, rows))
            elif kind == "put":
                counter += 1
                value = b"v%d" % counter
                txn.put(op[2], value)
                a.ops.append(("put", op[2], value))
            elif kind == "delete":
                txn.delete(op[2])
                a.ops.append(("delete", op[2]))
            elif kind == "savepoint":
                a.savepoints.append(txn.savepoint())
                a.ops.append(("savepoint",))
            elif a.savepoints:
                index = op[2] % len(a.savepoints)
                txn.rollback_to(a.savepoints[index])
                del a.savepoints[index + 1:]
                a.ops.append(("rollback_to", index))
        elif kind == "commit":
            if op[1] in active:
                loop.run_until_complete(commit(active.pop(op[1])))
        elif kind == "commit_group":
            group = [active.pop(i) for i in op[1] if i in active]

            async def commit_all(group=group):
                await asyncio.gather(*(commit(a) for a in group))
            loop.run_until_complete(commit_all())
        elif kind == "blind_write":  # another client's one-write transaction: the revision moves on
            a = Attempt(Txn(store))
            attempts.append(a)
            counter += 1
            a.txn.put(op[1], b"v%d" % counter)
            a.ops.append(("put", op[1], b"v%d" % counter))
            loop.run_until_complete(commit(a))
        elif kind == "compact":
            revision = max(0, store.current_revision() - op[1])
            loop.run_until_complete(store.compact(revision))
    for a in active.values():
        loop.run_until_complete(commit(a))
    return attempts, store, loop


def _check_serializable(attempts: list[Attempt], store: LMDBStore) -> None:
    # States after each committed read-write transaction, in commit order.
    writers = sorted((a for a in attempts if a.committed_at and a.txn.has_writes), key=lambda a: a.committed_at)
    state = {k: b"init" for k in KEYS}  # revision 1, written before the transactions ran
    states = {1: state}
    revisions = [1]
    for a in writers:
        assert a.committed_at > revisions[-1]
        writes = _model_reads(a.ops, state, check=True)  # its reads, at its commit point
        assert writes == a.txn.writes
        state = _apply(state, writes)
        states[a.committed_at] = state
        revisions.append(a.committed_at)

    def state_at(revision: int) -> dict[bytes, bytes]:
        return states[max(r for r in revisions if r <= revision)]

    # Every transaction, committed or not, read one snapshot (plus its own writes).
    for a in attempts:
        _model_reads(a.ops, state_at(a.txn.read_revision), check=True)
    # Aborted transactions left nothing behind: the store holds exactly the serial outcome.
    final = {k: v for k, v, _ in store.scan(b"", b"\xff\xff", store.current_revision())}
    assert final == state


@pytest.mark.parametrize("recent_log", [8192, 2], ids=["recent-log", "latest-scan"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_strategy, min_size=20, max_size=80))
def test_interleavings_are_serializable(ops, recent_log, monkeypatch):
    # With a log of 2 revisions, range compares are mostly answered by scanning `latest`.
    monkeypatch.setattr(lmdb_store, "_RECENT_REVISIONS", recent_log)
    with tempfile.TemporaryDirectory(dir=FAST_DIR) as directory:
        attempts, store, loop = _run_interleaving(ops, directory)
        try:
            _check_serializable(attempts, store)
        finally:
            loop.run_until_complete(store.close())
            loop.close()


# ---- SQL: the transaction protocol through psycopg2 ---------------------------------------------


@pytest.fixture
def conn(node, db):
    c = node.connect(database=db)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE kv (k INT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO kv VALUES (1, 10), (2, 20)")
    yield c
    c.close()


def _rows(cur, sql="SELECT k, v FROM kv ORDER BY k"):
    cur.execute(sql)
    return cur.fetchall()


def _status(cur):
    cur.execute("SHOW transaction_status")
    return cur.fetchone()[0]


def _fails(cur, sql, code):
    with pytest.raises(psycopg2.Error) as info:
        cur.execute(sql)
    assert info.value.pgcode == code, (info.value.pgcode, str(info.value))
    return info.value


def test_begin_commit_rollback(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    assert _rows(cur)[-1] == (3, 30)  # reads its own write
    cur.execute("ROLLBACK")
    assert _rows(cur) == [(1, 10), (2, 20)]
    cur.execute("BEGIN")
    cur.execute("UPDATE kv SET v = v + 1")
    cur.execute("COMMIT")
    assert _rows(cur) == [(1, 11), (2, 21)]
    assert conn.status == psycopg2.extensions.STATUS_READY


def test_error_aborts_until_rollback(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    _fails(cur, "INSERT INTO kv VALUES (1, 0)", "23505")
    _fails(cur, "SELECT 1", "25P02")
    _fails(cur, "SAVEPOINT late", "25P02")
    _fails(cur, "INSERT INTO kv VALUES (4, 40)", "25P02")  # still aborted after several errors
    cur.execute("COMMIT")  # COMMIT of an aborted transaction rolls back
    assert cur.statusmessage == "ROLLBACK"
    assert _rows(cur) == [(1, 10), (2, 20)]


def test_nested_savepoints(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    cur.execute("SAVEPOINT one")
    cur.execute("UPDATE kv SET v = 0 WHERE k = 1")
    cur.execute("SAVEPOINT two")
    cur.execute("DELETE FROM kv WHERE k = 2")
    cur.execute("INSERT INTO kv VALUES (4, 40)")
    assert _rows(cur) == [(1, 0), (3, 30), (4, 40)]
    cur.execute("ROLLBACK TO SAVEPOINT two")
    assert _rows(cur) == [(1, 0), (2, 20), (3, 30)]
    cur.execute("INSERT INTO kv VALUES (5, 50)")
    cur.execute("ROLLBACK TO SAVEPOINT one")  # also undoes what came after two
    assert _rows(cur) == [(1, 10), (2, 20), (3, 30)]
    _fails(cur, "ROLLBACK TO SAVEPOINT two", "3B001")  # gone with the rollback to one
    cur.execute("ROLLBACK TO SAVEPOINT one")
    cur.execute("UPDATE kv SET v = 12 WHERE k = 2")
    cur.execute("RELEASE SAVEPOINT one")
    _fails(cur, "ROLLBACK TO SAVEPOINT one", "3B001")
    cur.execute("ROLLBACK")
    cur.execute("BEGIN")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    cur.execute("SAVEPOINT one")
    cur.execute("UPDATE kv SET v = 12 WHERE k = 2")
    cur.execute("RELEASE SAVEPOINT one")  # keeps the writes made after it
    cur.execute("COMMIT")
    assert _rows(cur) == [(1, 10), (2, 12), (3, 30)]


def test_rollback_to_savepoint_leaves_aborted_state(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    cur.execute("SAVEPOINT before_error")
    cur.execute("INSERT INTO kv VALUES (4, 40)")
    _fails(cur, "INSERT INTO kv VALUES (5, 50), (1, 1)", "23505")  # fails part-way
    _fails(cur, "SELECT * FROM kv", "25P02")
    cur.execute("ROLLBACK TO SAVEPOINT before_error")
    assert _status(cur) == "Open"
    assert _rows(cur) == [(1, 10), (2, 20), (3, 30)]  # 4 and the half of the failed insert are gone
    cur.execute("INSERT INTO kv VALUES (6, 60)")
    cur.execute("COMMIT")
    assert _rows(cur) == [(1, 10), (2, 20), (3, 30), (6, 60)]


def test_savepoint_names_are_case_folded_and_reused(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SELECT 1 FROM kv")  # not initial: rollbacks keep the snapshot
    cur.execute("SAVEPOINT sp")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    cur.execute("SAVEPOINT SP")  # the same name again: the newest one wins
    cur.execute("INSERT INTO kv VALUES (4, 40)")
    cur.execute("ROLLBACK TO SAVEPOINT sp")
    assert [r[0] for r in _rows(cur)] == [1, 2, 3]
    cur.execute('RELEASE SAVEPOINT "sp"')
    cur.execute("ROLLBACK TO SAVEPOINT sp")  # the older one is still there
    assert [r[0] for r in _rows(cur)] == [1, 2]
    cur.execute("COMMIT")


def test_show_savepoint_status(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT cockroach_restart")
    cur.execute("SAVEPOINT early")
    cur.execute("SELECT * FROM kv")
    cur.execute("SAVEPOINT later")
    assert _rows(cur, "SHOW SAVEPOINT STATUS") == [
        ("cockroach_restart", True), ("early", True), ("later", False)]
    cur.execute("ROLLBACK")


def test_savepoint_outside_transaction(conn):
    cur = conn.cursor()
    _fails(cur, "SAVEPOINT x", "25P01")
    _fails(cur, "ROLLBACK TO SAVEPOINT x", "25P01")
    _fails(cur, "RELEASE SAVEPOINT x", "25P01")


def test_initial_savepoint_restarts_at_a_fresh_snapshot(node, conn, db):
    other = node.connect(database=db)
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT start")  # initial: nothing read or written yet
    assert _rows(cur)[0] == (1, 10)
    other.cursor().execute("UPDATE kv SET v = 11 WHERE k = 1")
    assert _rows(cur)[0] == (1, 10)  # the snapshot holds
    cur.execute("ROLLBACK TO SAVEPOINT start")
    assert _rows(cur)[0] == (1, 11)  # a restart reads at a fresh snapshot
    cur.execute("UPDATE kv SET v = v + 1 WHERE k = 1")
    cur.execute("COMMIT")
    assert _rows(cur)[0] == (1, 12)
    other.close()


def test_cockroach_restart_protocol(node, conn, db):
    other = node.connect(database=db)
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT cockroach_restart")
    cur.execute("SAVEPOINT cockroach_restart")  # declared again at the top of a loop: a no-op
    cur.execute("SELECT v FROM kv WHERE k = 1")
    # Committed after this transaction read k = 1 (and before it locks the row to write it: a
    # write to a row another open transaction has written waits for that transaction).
    other.cursor().execute("UPDATE kv SET v = 15 WHERE k = 1")
    cur.execute("UPDATE kv SET v = 100 WHERE k = 1")
    err = _fails(cur, "RELEASE SAVEPOINT cockroach_restart", "40001")
    assert "restart transaction" in str(err) and "/1/1" in str(err)  # names the conflicting key
    _fails(cur, "SELECT 1", "25P02")
    cur.execute("ROLLBACK TO SAVEPOINT cockroach_restart")
    assert _status(cur) == "Open"
    cur.execute("SAVEPOINT cockroach_restart")  # the seed's loop may declare it again: a no-op
    cur.execute("SELECT v FROM kv WHERE k = 1")
    assert cur.fetchone() == (15,)  # restarted at a fresh snapshot
    cur.execute("UPDATE kv SET v = v + 1 WHERE k = 1")
    cur.execute("RELEASE SAVEPOINT cockroach_restart")  # commits
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    assert _rows(other.cursor())[0] == (1, 16)  # visible before COMMIT: RELEASE committed
    _fails(cur, "SELECT 1", "25000")
    _fails(cur, "SAVEPOINT x", "25000")
    _fails(cur, "ROLLBACK TO SAVEPOINT cockroach_restart", "25000")
    cur.execute("COMMIT")
    assert _status(cur) == "NoTxn"
    assert _rows(cur)[0] == (1, 16)
    other.close()


def test_cockroach_restart_must_come_first_and_not_nest(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SELECT 1 FROM kv")
    _fails(cur, "SAVEPOINT cockroach_restart", "42601")
    cur.execute("ROLLBACK")
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT a")
    _fails(cur, "SAVEPOINT cockroach_restart", "42601")
    cur.execute("ROLLBACK")
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT cockroach_restart")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    cur.execute("SAVEPOINT inner_sp")  # ordinary savepoints nest inside it
    cur.execute("INSERT INTO kv VALUES (4, 40)")
    cur.execute("ROLLBACK TO SAVEPOINT inner_sp")
    cur.execute("RELEASE SAVEPOINT cockroach_restart")
    cur.execute("COMMIT")
    assert [r[0] for r in _rows(cur)] == [1, 2, 3]


def test_release_after_non_retryable_error_rolls_back(conn):
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SAVEPOINT cockroach_restart")
    cur.execute("INSERT INTO kv VALUES (3, 30)")
    _fails(cur, "INSERT INTO kv VALUES (1, 1)", "23505")
    _fails(cur, "RELEASE SAVEPOINT cockroach_restart", "25P02")
    cur.execute("ROLLBACK")
    assert [r[0] for r in _rows(cur)] == [1, 2]


def test_implicit_transaction_of_a_multi_statement_query(conn):
    cur = conn.cursor()
    _fails(cur, "INSERT INTO kv VALUES (3, 30); INSERT INTO kv VALUES (1, 1)", "23505")
    assert [r[0] for r in _rows(cur)] == [1, 2]  # the batch was one transaction
    cur.execute("INSERT INTO kv VALUES (3, 30); BEGIN; INSERT INTO kv VALUES (4, 40); COMMIT")
    assert [r[0] for r in _rows(cur)] == [1, 2, 3, 4]


def test_read_only_transactions(conn):
    cur = conn.cursor()
    cur.execute("BEGIN READ ONLY")
    assert len(_rows(cur)) == 2
    _fails(cur, "UPDATE kv SET v = 0", "25006")
    cur.execute("ROLLBACK")
    cur.execute("SET default_transaction_read_only = on")
    _fails(cur, "INSERT INTO kv VALUES (9, 9)", "25006")
    cur.execute("SET default_transaction_read_only = off")
    cur.execute("INSERT INTO kv VALUES (9, 9)")


def test_psycopg2_transactions_and_autocommit_off(node, db, conn):
    c = node.connect(database=db, autocommit=False)
    with c:
        with c.cursor() as cur:
            cur.execute("UPDATE kv SET v = 99 WHERE k = 2")
    with c:
        with pytest.raises(psycopg2.errors.UniqueViolation):
            with c.cursor() as cur:
                cur.execute("UPDATE kv SET v = 0 WHERE k = 1")
                cur.execute("INSERT INTO kv VALUES (2, 0)")
    assert _rows(conn.cursor()) == [(1, 10), (2, 99)]
    c.close()


def test_extended_protocol_parse_in_commit_wait_keeps_the_state(node, db, conn):
    import psycopg
    params = node.params(database=db)
    with psycopg.connect(" ".join(f"{k}={v}" for k, v in params.items()), autocommit=True) as c:
        c.execute("BEGIN")
        c.execute("SAVEPOINT cockroach_restart")
        c.execute("UPDATE kv SET v = %s WHERE k = %s", (7, 1))
        c.execute("RELEASE SAVEPOINT cockroach_restart")
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            c.execute("SELECT v FROM kv WHERE k = %s", (1,))  # Parse/Bind/Execute in CommitWait
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.execute("COMMIT")
        assert c.execute("SELECT v FROM kv WHERE k = %s", (1,)).fetchone() == (7,)


# ---- anomalies with real interleavings: two connections, both read before either writes ------

def _two_phase(node, db, first, second):
    """Run two transactions so that both finish their reads before either writes and commits.

    Returns each one's outcome: None (committed) or the SQLSTATE it failed with.
    """
    barrier = threading.Barrier(2, timeout=30)
    outcomes: list = [None, None]

    def run(i, body):
        c = node.connect(database=db)
        cur = c.cursor()
        try:
            cur.execute("BEGIN")
            body(cur, barrier)
            cur.execute("COMMIT")
        except psycopg2.Error as exc:
            outcomes[i] = exc.pgcode
            c.rollback()
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i, body)) for i, body in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_lost_update_never_happens(node, db, conn):
    def increment(cur, barrier):
        cur.execute("SELECT v FROM kv WHERE k = 1")
        v = cur.fetchone()[0]
        barrier.wait()
        cur.execute("UPDATE kv SET v = %s WHERE k = 1", (v + 1,))

    for _ in range(10):
        cur = conn.cursor()
        before = _rows(cur)[0][1]
        outcomes = _two_phase(node, db, increment, increment)
        assert outcomes.count(None) == 1 and outcomes.count("40001") == 1, outcomes
        assert _rows(cur)[0][1] == before + 1


def test_write_skew_two_doctors_never_both_commit(node, db):
    node.sql("CREATE TABLE doctors (name STRING PRIMARY KEY, on_call BOOL)", database=db)

    def take_off(name):
        def body(cur, barrier):
            cur.execute("SELECT count(*) FROM doctors WHERE on_call")
            on_call = cur.fetchone()[0]
            barrier.wait()  # both have seen two doctors on call
            if on_call >= 2:
                cur.execute("UPDATE doctors SET on_call = false WHERE name = %s", (name,))
        return body

    for _ in range(25):
        node.sql("UPSERT INTO doctors VALUES ('alice', true), ('bob', true)", database=db)
        outcomes = _two_phase(node, db, take_off("alice"), take_off("bob"))
        assert outcomes.count(None) == 1 and outcomes.count("40001") == 1, outcomes
        rows = node.sql("SELECT count(*) FROM doctors WHERE on_call", database=db)
        assert rows == [(1,)]  # the invariant: someone is always on call


def test_phantom_insert_into_a_read_range_conflicts(node, db, conn):
    """A predicate read, then a concurrent insert into its range commits first: the reader that
    then writes what it computed must fail, or it would have missed a row that committed
    before it (a phantom)."""
    node.sql("CREATE TABLE shifts (day INT, id INT PRIMARY KEY, hours INT)", database=db)
    node.sql("INSERT INTO shifts VALUES (1, 1, 8), (1, 2, 8), (2, 3, 8)", database=db)
    reader, writer = node.connect(database=db), node.connect(database=db)
    for predicate in ("id BETWEEN 1 AND 10", "id > 0", "day = 1"):
        node.sql("DELETE FROM shifts WHERE id = 5", "DELETE FROM kv WHERE k = 100", database=db)
        r, w = reader.cursor(), writer.cursor()
        r.execute("BEGIN")
        r.execute(f"SELECT sum(hours) FROM shifts WHERE {predicate}")
        total = int(r.fetchone()[0])
        w.execute("BEGIN")
        w.execute("INSERT INTO shifts VALUES (1, 5, 4)")  # into the range the reader read
        w.execute("COMMIT")
        r.execute("INSERT INTO kv VALUES (100, %s)", (total,))
        _fails(r, "COMMIT", "40001")
        assert node.sql("SELECT count(*) FROM kv WHERE k = 100", database=db) == [(0,)]
    # An insert outside the range read is no conflict.
    node.sql("DELETE FROM shifts WHERE id = 5", database=db)
    r, w = reader.cursor(), writer.cursor()
    r.execute("BEGIN")
    r.execute("SELECT sum(hours) FROM shifts WHERE id BETWEEN 1 AND 3")
    w.execute("INSERT INTO shifts VALUES (1, 5, 4)")
    r.execute("INSERT INTO kv VALUES (100, 24)")
    r.execute("COMMIT")
    reader.close()
    writer.close()


def test_conflict_message_names_the_reason(node, db, conn):
    def bump(cur, barrier):
        cur.execute("SELECT v FROM kv WHERE k = 2")
        barrier.wait()
        cur.execute("UPDATE kv SET v = v + 1 WHERE k = 2")

    errors_seen = []
    barrier = threading.Barrier(2)

    def run():
        c = node.connect(database=db)
        try:
            cur = c.cursor()
            cur.execute("BEGIN")
            bump(cur, barrier)
            cur.execute("COMMIT")
        except psycopg2.Error as exc:
            errors_seen.append(exc)
        finally:
            c.close()
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors_seen) == 1
    err = errors_seen[0]
    assert err.pgcode == "40001"
    assert err.pgerror.startswith("ERROR:  restart transaction: ")
    assert "RETRY_SERIALIZABLE" in err.pgerror and "/Table/" in err.pgerror


def test_node_keeps_its_data_in_lmdb_under_store(node):
    assert os.path.isdir(node.store) and os.path.exists(os.path.join(node.store, "data.mdb"))
