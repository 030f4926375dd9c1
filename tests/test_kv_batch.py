"""The kv layer's side of the revised Store contract: a lazy snapshot, batched reads (get_many,
prefetch, get_many_for_update) and the limits an engine declares, enforced as a transaction
writes (54000)."""
from __future__ import annotations

import asyncio

import pytest

from pillbug.kv.locks import LockTable
from pillbug.kv.txn import Txn
from pillbug.storage import lmdb_store
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.store import StoreLimits
from pillbug.util.errors import PgError


@pytest.fixture
def store(tmp_path):
    loop = asyncio.new_event_loop()
    s = LMDBStore(str(tmp_path / "store"))
    s.loop = loop  # type: ignore[attr-defined]
    yield s
    loop.run_until_complete(s.close())
    loop.close()


def commit(store, writes) -> int:
    result = store.loop.run_until_complete(store.commit([], writes))
    assert result.succeeded
    return result.revision


class Calls:
    """Counts the store calls a transaction makes."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name in ("get", "get_many", "scan", "current_revision"):
            def counted(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)
            return counted
        return attr


def test_the_snapshot_is_taken_at_the_first_read(store):
    commit(store, [(b"a", b"1")])
    calls = Calls(store)
    txn = Txn(calls)  # type: ignore[arg-type]
    assert "current_revision" not in calls.calls
    commit(store, [(b"a", b"2")])  # after BEGIN, before the first read: visible
    assert txn.get(b"a") == b"2"
    assert txn.read_revision == store.current_revision()
    commit(store, [(b"a", b"3")])  # after the first read: not
    assert txn.get(b"a") == b"2"
    assert calls.calls.count("current_revision") == 1


def test_a_write_only_transaction_never_asks_for_a_revision(store):
    calls = Calls(store)
    txn = Txn(calls)  # type: ignore[arg-type]
    txn.put(b"w", b"1")
    assert store.loop.run_until_complete(txn.commit()) > 0
    assert calls.calls == []


def test_an_explicit_read_revision_is_kept(store):
    first = commit(store, [(b"a", b"1")])
    commit(store, [(b"a", b"2")])
    txn = Txn(store, first, is_read_only_snapshot=True)
    assert txn.get_many([b"a", b"zz"]) == [b"1", None]
    assert txn.reads == {}  # AS OF SYSTEM TIME records nothing


def test_get_many_is_one_store_call_and_reads_own_writes(store):
    commit(store, [(b"k%03d" % i, b"v%d" % i) for i in range(600)])
    calls = Calls(store)
    txn = Txn(calls)  # type: ignore[arg-type]
    txn.put(b"k001", b"mine")
    txn.delete(b"k002")
    keys = [b"k%03d" % i for i in range(600)] + [b"nope"]
    values = txn.get_many(keys)
    assert values[:3] == [b"v0", b"mine", None] and values[599] == b"v599" and values[600] is None
    assert calls.calls.count("get_many") == 1
    assert b"k001" not in txn.reads and txn.reads[b"nope"] == 0 and len(txn.reads) == 599


def test_prefetch_serves_the_gets_that_follow_and_yields_to_writes(store):
    commit(store, [(b"a", b"1"), (b"b", b"1")])
    calls = Calls(store)
    txn = Txn(calls)  # type: ignore[arg-type]
    txn.prefetch([b"a", b"b", b"c"])
    txn.put(b"b", b"2")
    token = txn.savepoint()
    txn.delete(b"a")
    assert [txn.get(b"a"), txn.get(b"b"), txn.get(b"c")] == [None, b"2", None]
    txn.rollback_to(token)
    assert txn.get(b"a") == b"1"  # the prefetched store value again, not a stale write
    assert calls.calls.count("get_many") == 1 and "get" not in calls.calls


def _limited(monkeypatch, **kwargs):
    limits = dict(max_ops_per_commit=1000, max_bytes_per_commit=1 << 20, max_value_bytes=1 << 20)
    limits.update(kwargs)
    monkeypatch.setattr(lmdb_store, "LIMITS", StoreLimits(**limits))


def test_the_store_declares_its_limits(store):
    limits = store.limits
    assert limits.max_ops_per_commit == 2_000_000
    assert limits.max_value_bytes <= limits.max_bytes_per_commit


def test_operations_past_the_store_limit_fail_with_54000(store, monkeypatch):
    _limited(monkeypatch, max_ops_per_commit=3)
    txn = Txn(store)
    for k in (b"a", b"b", b"c"):
        txn.put(k, b"v")
    txn.put(b"a", b"again")  # the same key again is not another operation
    with pytest.raises(PgError) as info:
        txn.delete(b"d")
    assert info.value.code == "54000"
    assert "limit of 3 operations per commit (max_ops_per_commit)" in info.value.message


def test_bytes_past_the_store_limits_fail_with_54000(store, monkeypatch):
    _limited(monkeypatch, max_bytes_per_commit=20, max_value_bytes=8)
    txn = Txn(store)
    with pytest.raises(PgError) as info:
        txn.put(b"a", b"123456789")
    assert info.value.code == "54000" and "8 bytes per value (max_value_bytes)" in info.value.message
    txn.put(b"a", b"12345678")  # 9 bytes
    token = txn.savepoint()
    txn.put(b"b", b"12345678")  # 18
    with pytest.raises(PgError) as info:
        txn.put(b"c", b"12")
    assert "20 bytes per commit (max_bytes_per_commit)" in info.value.message
    txn.rollback_to(token)  # gives b's bytes back
    txn.put(b"c", b"12")
    txn.put(b"a", b"")  # a smaller value gives bytes back too
    txn.put(b"d", b"1234567")


def test_get_many_for_update_locks_a_batch_then_reads_it_after_a_refresh(store):
    locks = LockTable()
    commit(store, [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")])

    def no_wait(future, began):
        raise TimeoutError

    async def scenario():
        t1 = Txn(store, locks=locks)
        t2 = Txn(store, locks=locks)
        t2.get(b"zz")  # t2's snapshot is taken now
        assert t1.get_many_for_update([b"c", b"a"], no_wait) == [b"1", b"1"]
        assert set(t1.locked) == {b"a", b"c"}
        with pytest.raises(TimeoutError):  # a is held: t2 waits for it
            t2.get_many_for_update([b"b", b"a"], no_wait)
        assert t2.locked == []  # taken in key order: it waits for a before it takes b
        t1.put(b"a", b"2")
        await t1.commit()
        # a changed after t2's snapshot and nothing t2 read did: the snapshot moves on
        calls = Calls(store)
        t2.store = calls  # type: ignore[assignment]
        assert t2.get_many_for_update([b"b", b"a"], no_wait) == [b"1", b"2"]
        # which keys changed, whether anything t2 read did (the refresh), then the batch
        assert calls.calls.count("get_many") == 3
        t2.put(b"a", b"3")
        await t2.commit()
    store.loop.run_until_complete(scenario())
    assert store.get(b"a", store.current_revision())[0] == b"3"
