"""The Store contract on the LMDB engine, and the kv layer's scripts.

Data-driven scripts under testdata/kv (see kvscript.py; PILLBUG_REWRITE=1 rewrites them) pin
MVCC reads, conditional commits, compaction and transactions step by step. The tests below them
cover what a script cannot: timestamps, watch, map growth, group commit and its durability.
"""
from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import sys
import time
from decimal import Decimal

import etcd_proc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvscript import run_script

from pillbug.kv.txn import Txn
from pillbug.storage import lmdb_store
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.store import CommitFailedError, CompactedError
from pillbug.util import hlc
from pillbug.util.errors import PgError

SCRIPTS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "testdata", "kv", "*.txt")))


@pytest.fixture(scope="module")
def etcd_member(tmp_path_factory):
    """One real etcd for the module's etcd runs; each script gets a namespace of its own."""
    with etcd_proc.etcd(str(tmp_path_factory.mktemp("etcd"))) as member:
        yield member


@pytest.mark.parametrize("engine,checkpointed", [("lmdb", False), ("lmdb", True), ("suspending", False),
                                                 ("etcd", False)],
                         ids=["log", "checkpointed", "suspending", "etcd"])
@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.basename(p)[:-4] for p in SCRIPTS])
def test_script(path, engine, checkpointed, tmp_path, request):
    if engine == "etcd":
        member = request.getfixturevalue("etcd_member")
        namespace = f"{os.path.basename(path)}/".encode()
        run_script(path, str(tmp_path / "store"), engine="etcd", etcd_endpoints=[member.endpoint],
                   namespace=namespace)
        return
    run_script(path, str(tmp_path / "store"), checkpoint_every_commit=checkpointed, engine=engine)


# ---- helpers ------------------------------------------------------------------------------------

class StoreHarness:
    """An LMDBStore with its own event loop, for tests that drive it step by step."""

    def __init__(self, path: str, **kwargs) -> None:
        self.path = path
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.store = LMDBStore(path, **kwargs)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def commit(self, writes, compares=()):
        result = self.run(self.store.commit(list(compares), list(writes)))
        assert result.succeeded, result
        return result.revision

    def restart(self, **kwargs) -> None:
        self.run(self.store.close())
        self.store = LMDBStore(self.path, **(kwargs or self.kwargs))

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture
def harness(tmp_path):
    h = StoreHarness(str(tmp_path / "store"))
    yield h
    h.close()


# ---- timestamps ---------------------------------------------------------------------------------

def test_revision_timestamps_map_both_ways(harness):
    store = harness.store
    assert store.revision_timestamp(0) == 0
    before = store.now()
    revisions = [harness.commit([(b"k%d" % i, b"v")]) for i in range(20)]
    stamps = [store.revision_timestamp(r) for r in revisions]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert before < stamps[0] and stamps[-1] < store.now()
    for r, ts in zip(revisions, stamps):
        assert store.revision_at(ts) == r
        assert store.revision_at(ts - 1) == r - 1  # just before its commit: the previous one
    assert store.revision_at(before) == 0
    assert store.revision_at(store.now()) == revisions[-1]
    harness.run(store.compact(revisions[10]))
    with pytest.raises(CompactedError):
        store.revision_timestamp(revisions[5])
    assert store.revision_timestamp(revisions[10]) == stamps[10]
    assert store.revision_at(stamps[12]) == revisions[12]


def test_timestamps_never_go_backwards_across_a_restart(tmp_path):
    wall = [time.time_ns()]
    h = StoreHarness(str(tmp_path / "store"), wall_clock=lambda: wall[0])
    try:
        r1 = h.commit([(b"a", b"1")])
        stamp1 = h.store.revision_timestamp(r1)
        wall[0] -= 3_600_000_000_000  # the wall clock jumps an hour back, and the node restarts
        h.restart(wall_clock=lambda: wall[0])
        assert h.store.now() > stamp1
        r2 = h.commit([(b"a", b"2")])
        assert h.store.revision_timestamp(r2) > stamp1
        assert h.store.revision_at(stamp1) == r1
        assert hlc.wall_ns(h.store.revision_timestamp(r2)) == hlc.wall_ns(stamp1)  # logical tick
    finally:
        h.close()


# ---- watch -------------------------------------------------------------------------------------

def test_watch_replays_then_follows(harness):
    store = harness.store
    r1 = harness.commit([(b"w/a", b"1"), (b"x/a", b"1")])
    r2 = harness.commit([(b"w/b", b"2")])
    harness.commit([(b"w/a", None)])

    async def scenario():
        stream = store.watch(b"w/", r2)
        seen = [await stream.__anext__() for _ in range(2)]  # replayed: r2 and the delete at r3
        done = asyncio.ensure_future(asyncio.gather(*(stream.__anext__() for _ in range(1))))
        await store.commit([], [(b"x/b", b"ignored"), (b"w/c", b"3"), (b"w/zz", None)])  # w/zz: no-op
        await store.commit([], [(b"w/c", None)])
        seen += await done
        seen.append(await stream.__anext__())
        await stream.aclose()
        return seen

    events = harness.run(scenario())
    assert [(e.revision, e.key, e.value) for e in events] == [
        (r2, b"w/b", b"2"), (r2 + 1, b"w/a", None), (r2 + 2, b"w/c", b"3"), (r2 + 3, b"w/c", None)]
    harness.run(store.compact(r2))
    with pytest.raises(CompactedError):
        harness.run(store.watch(b"w/", r1).__anext__())


# ---- growing the map ---------------------------------------------------------------------------

def test_map_grows_while_readers_keep_reading(tmp_path):
    # A small log: checkpoints (which grow the map) run while the loop keeps reading.
    h = StoreHarness(str(tmp_path / "store"), map_size=1 << 18, log_capacity=1 << 16)  # 256 KiB, 64 KiB
    try:
        store = h.store
        value = os.urandom(2000)

        async def load():
            # Commits in flight while the loop keeps reading through its cached snapshot.
            for round_ in range(40):
                pending = [asyncio.ensure_future(store.commit([], [(b"g/%04d/%02d" % (round_, i), value)]))
                           for i in range(20)]
                while not all(p.done() for p in pending):
                    rows = store.scan(b"g/", b"g0", store.current_revision())
                    assert all(v == value for _, v, _ in rows)
                    await asyncio.sleep(0)
                for p in pending:
                    assert p.result().succeeded
        h.run(load())
        assert store.stats.map_grows >= 3
        assert len(store.scan(b"g/", b"g0", store.current_revision())) == 800
        h.restart(map_size=1 << 18, log_capacity=1 << 16)  # reopening with the old, smaller size keeps the data
        assert len(h.store.scan(b"g/", b"g0", h.store.current_revision())) == 800
    finally:
        h.close()


def test_a_commit_that_cannot_fit_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_store, "_MAX_MAP_GROWS", 1)
    h = StoreHarness(str(tmp_path / "store"), map_size=1 << 17)
    try:
        before = h.commit([(b"small", b"1")])
        txn = Txn(h.store)
        for i in range(200):
            txn.put(b"big/%d" % i, os.urandom(4000))
        with pytest.raises(PgError) as info:
            h.run(txn.commit())
        assert info.value.code == "58030"
        assert h.store.current_revision() == before
        assert h.store.scan(b"big/", b"big0", before) == []
        assert h.commit([(b"small", b"2")]) == before + 1  # the store still works

        async def big_among_small():  # in one batch: only the one that cannot fit fails
            big = Txn(h.store)
            for i in range(200):
                big.put(b"big/%d" % i, os.urandom(4000))
            return await asyncio.gather(big.commit(), *(h.store.commit([], [(b"s/%d" % i, b"v")])
                                                        for i in range(5)), return_exceptions=True)
        outcomes = h.run(big_among_small())
        assert isinstance(outcomes[0], PgError) and outcomes[0].code == "58030"
        assert all(r.succeeded for r in outcomes[1:])
    finally:
        h.close()


# ---- group commit --------------------------------------------------------------------------------

def test_concurrent_commits_share_synced_batches(harness):
    store = harness.store
    assert store._env.flags()["sync"] and store._env.flags()["metasync"]
    acked_before_durable = []

    async def one(i):
        result = await store.commit([], [(b"gc/%03d" % i, b"v")])
        # The revision is published (and the batch synced) before any caller hears of it.
        if store.current_revision() < result.revision:
            acked_before_durable.append(i)
        return result.revision

    async def many():
        return await asyncio.gather(*(one(i) for i in range(300)))
    revisions = harness.run(many())
    assert sorted(revisions) == list(range(1, 301))
    assert not acked_before_durable
    stats = store.stats
    assert stats.commits == 300
    assert stats.batches < stats.commits / 4, stats  # commits shared fsyncs
    assert stats.largest_batch > 1


def test_a_lone_client_commits_inline_and_concurrent_ones_share_batches(harness):
    store = harness.store
    for i in range(20):
        result = harness.run(store.commit([], [(b"in/%02d" % i, b"v")]))
        assert result.succeeded and store.current_revision() == result.revision
    assert store.stats.inline_batches == 20

    async def many():
        # The writer thread is busy with the first of these: the rest must queue behind it,
        # even though each says it is alone, and share synced batches.
        return await asyncio.gather(*(store.commit([], [(b"cc/%03d" % i, b"v")])
                                      for i in range(200)))
    results = harness.run(many())
    assert all(r.succeeded for r in results)
    assert store.stats.inline_batches < 20 + 200 and store.stats.largest_batch > 1
    assert len(store.scan(b"cc/", b"cc0", store.current_revision())) == 200


def test_checkpoints_grow_the_map_while_a_lone_client_commits_inline(tmp_path):
    h = StoreHarness(str(tmp_path / "store"), map_size=1 << 17, log_capacity=1 << 16)  # 128 KiB, 64 KiB
    try:
        value = os.urandom(4000)
        for i in range(100):  # about 400 KiB: checkpoints on the writer thread must grow the map
            result = h.run(h.store.commit([], [(b"big/%03d" % i, value)]))
            assert result.succeeded
        assert h.store.stats.inline_batches == 100
        assert h.store.stats.checkpoints >= 1 and h.store.stats.map_grows >= 1
        assert len(h.store.scan(b"big/", b"big0", h.store.current_revision())) == 100
    finally:
        h.close()


CRASHING_WRITER = """
import asyncio, os, sys
from pillbug.storage.lmdb_store import LMDBStore

async def main(path, checkpoints_before_crash):
    store = LMDBStore(path, log_capacity=1 << 16)
    original = store._write_revisions
    done = [0]

    def write_revisions(txn, revisions):
        if done[0] == checkpoints_before_crash:
            original(txn, revisions[: len(revisions) // 2])
            os._exit(0)  # the machine dies in the middle of a checkpoint: LMDB never sees it
        done[0] += 1
        original(txn, revisions)
    store._write_revisions = write_revisions
    value = b"v" * 900
    for round_ in range(1000):
        results = await asyncio.gather(*(store.commit([], [(b"k/%04d/%d" % (round_, i), value)])
                                         for i in range(3)))
        print(max(r.revision for r in results), flush=True)  # acknowledged
    os._exit(0)  # a crash without a checkpoint or close

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.parametrize("checkpoints_before_crash", [0, 2, 1000])
def test_every_acknowledged_commit_survives_a_crash(tmp_path, checkpoints_before_crash):
    """The process dies after acknowledging commits: between checkpoints (only the log has the
    last ones), or in the middle of a checkpoint (the two logs hold them between them)."""
    path = str(tmp_path / "store")
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, path, str(checkpoints_before_crash)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    acknowledged = int(proc.stdout.split()[-1])
    h = StoreHarness(path)
    try:
        assert h.store.current_revision() >= acknowledged
        rows = h.store.scan(b"k/", b"k0", h.store.current_revision())
        assert len(rows) == h.store.current_revision() and all(v == b"v" * 900 for _, v, _ in rows)
        h.restart()  # the replayed commits are in LMDB now, and the logs start over
        assert len(h.store.scan(b"k/", b"k0", h.store.current_revision())) == len(rows)
    finally:
        h.close()


def test_a_torn_record_at_the_end_of_the_log_is_ignored(tmp_path):
    h = StoreHarness(str(tmp_path / "store"))
    acknowledged = [h.commit([(b"t/%d" % i, b"v")]) for i in range(5)][-1]
    wal_file = h.store._logs[h.store._active]
    with open(wal_file.path, "r+b") as f:  # a crash in the middle of the next append
        f.seek(wal_file.end)
        f.write(b"\x40\x00\x00\x00garbage")
    # The crash: the store goes away without its closing checkpoint.
    h.store._requests.put(None)
    h.store._writer.join()
    h.store._drop_snapshot()
    h.store._close_files()
    h.store = LMDBStore(h.path)
    assert h.store.current_revision() == acknowledged
    assert h.commit([(b"t/after", b"v")]) == acknowledged + 1
    h.close()


def test_a_failed_log_write_leaves_the_outcome_unknown_and_stops_commits(harness, monkeypatch):
    before = harness.commit([(b"f/a", b"1")])

    def failing_append(self, records):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(lmdb_store.WriteAheadLog, "append", failing_append)
    txn = Txn(harness.store)
    txn.put(b"f/b", b"2")
    with pytest.raises(PgError) as info:
        harness.run(txn.commit())
    assert info.value.code == "40003"
    monkeypatch.undo()
    txn = Txn(harness.store)
    txn.put(b"f/c", b"3")
    with pytest.raises(PgError) as info:
        harness.run(txn.commit())
    assert info.value.code == "58030" and "restart the node" in info.value.message
    assert harness.store.current_revision() == before  # nothing unacknowledged became visible
    assert harness.store.get(b"f/a", before)[0] == b"1"


def test_a_large_commit_goes_straight_into_lmdb(tmp_path):
    h = StoreHarness(str(tmp_path / "store"))
    try:
        small = h.commit([(b"l/small", b"s")])
        big = {b"l/big/%04d" % i: os.urandom(1000) for i in range(400)}  # 400 KB: bigger than a record may be
        revision = h.commit(list(big.items()))
        assert revision == small + 1
        assert h.store.stats.checkpoints == 1 and h.store._flushed == revision  # durable in LMDB at once
        assert {k: v for k, v, _ in h.store.scan(b"l/big/", b"l/big0", revision)} == big
        assert h.commit([(b"l/after", b"a")]) == revision + 1  # the log goes on after it
        h.restart()
        assert h.store.current_revision() == revision + 1
        assert h.store.get(b"l/small", revision + 1)[0] == b"s"
    finally:
        h.close()


def test_close_finishes_pending_commits(tmp_path):
    h = StoreHarness(str(tmp_path / "store"))
    try:
        async def commit_and_close():
            pending = [asyncio.ensure_future(h.store.commit([], [(b"c/%d" % i, b"v")])) for i in range(100)]
            await asyncio.sleep(0)  # all queued
            await h.store.close()
            return [p.result().revision for p in pending]
        revisions = h.run(commit_and_close())
        h.store = LMDBStore(h.path)
        assert h.store.current_revision() == max(revisions) == 100
    finally:
        h.close()


# ---- compaction ----------------------------------------------------------------------------------

def test_chunked_compaction_serves_commits_and_keeps_what_reads_need(harness, monkeypatch):
    monkeypatch.setattr(lmdb_store, "_COMPACT_CHUNK", 7)
    store = harness.store
    for round_ in range(6):
        harness.commit([(b"c/%03d" % i, b"%d" % round_) for i in range(60) if (i + round_) % 3])
        harness.commit([(b"c/%03d" % i, None) for i in range(60) if i % 7 == round_])
    horizon = store.current_revision() - 3
    expected = {at: store.scan(b"", b"\xff", at) for at in range(horizon, store.current_revision() + 1)}
    expected_gets = {(at, i): store.get(b"c/%03d" % i, at)[0] for at in expected for i in range(60)}

    async def compact_while_committing():
        compaction = asyncio.ensure_future(store.compact(horizon))
        commits = [asyncio.ensure_future(store.commit([], [(b"late/%d" % i, b"x")])) for i in range(30)]
        await asyncio.gather(compaction, *commits)
        return [c.result().revision for c in commits]
    late = harness.run(compact_while_committing())
    assert store.compacted_revision() == horizon
    assert all(r > horizon for r in late)
    for at, rows in expected.items():
        assert [r for r in store.scan(b"", b"\xff", at) if not r[0].startswith(b"late/")] == rows
    for (at, i), value in expected_gets.items():
        assert store.get(b"c/%03d" % i, at)[0] == value
    with pytest.raises(CompactedError):
        store.get(b"c/000", horizon - 1)
    harness.restart()
    assert harness.store.compacted_revision() == horizon
    with pytest.raises(CompactedError):
        harness.store.scan(b"", b"\xff", horizon - 1)


def test_reads_below_the_horizon_fail_in_transactions(harness):
    r1 = harness.commit([(b"a", b"1")])
    harness.commit([(b"a", b"2")])
    txn = Txn(harness.store, r1, is_read_only_snapshot=True)
    harness.run(harness.store.compact(r1 + 1))
    with pytest.raises(PgError) as info:
        txn.get(b"a")
    assert info.value.code == "22023" and "GC threshold" in info.value.message


# ---- the hybrid logical clock ----------------------------------------------------------------------

@given(st.integers(0, 2**63), st.integers(0, hlc.LOGICAL_MASK))
def test_hlc_decimal_round_trip(wall, logical):
    ts = hlc.pack(wall, logical)
    assert hlc.from_decimal(hlc.to_decimal(ts)) == ts
    assert hlc.to_decimal(ts) == Decimal(f"{wall}.{logical:010d}")


@given(st.lists(st.one_of(st.tuples(st.just("tick"), st.integers(-10**9, 10**9)),
                          st.tuples(st.just("seen"), st.integers(0, 10**12))), max_size=50))
def test_hlc_never_goes_backwards(steps):
    wall = [10**12]
    clock = hlc.Clock(lambda: wall[0])
    last = clock.now()
    for kind, n in steps:
        if kind == "tick":  # the wall clock moves, forwards or backwards
            wall[0] = max(0, wall[0] + n)
        else:  # a timestamp from elsewhere
            clock.update(hlc.pack(n))
            last = max(last, hlc.pack(n))
        ts = clock.now()
        assert ts > last
        assert hlc.wall_ns(ts) >= wall[0]  # and never lags the wall clock
        last = ts


# ---- the memtable in front of LMDB ---------------------------------------------------------------

_KEYS = [b"a", b"a\x00", b"ab", b"b", b"c"]
_STEP = st.one_of(
    st.just("checkpoint"),
    st.lists(st.tuples(st.sampled_from(_KEYS), st.one_of(st.none(), st.binary(max_size=3))),
             min_size=1, max_size=4, unique_by=lambda w: w[0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, max_size=12))
def test_reads_agree_with_a_model_wherever_the_versions_live(tmp_path_factory, steps):
    """Versions waiting in the memtable, in LMDB, or some in each: every get and scan at every
    revision answers as a plain list of versions says it should."""
    h = StoreHarness(str(tmp_path_factory.mktemp("model") / "store"), log_capacity=1 << 16)
    versions: dict[bytes, list[tuple[int, bytes | None]]] = {}
    try:
        for step in steps:
            if step == "checkpoint":
                h.run(h.store.checkpoint())
                continue
            revision = h.commit(step)
            for key, value in step:
                if value is not None or (versions.get(key) and versions[key][-1][1] is not None):
                    versions.setdefault(key, []).append((revision, value))

        def model_get(key, at):
            older = [v for v in versions.get(key, []) if v[0] <= at]
            return (older[-1][1], older[-1][0]) if older else (None, 0)

        store = h.store
        for at in range(store.current_revision() + 1):
            live = [(k, *model_get(k, at)) for k in sorted(_KEYS)]
            live = [(k, v, m) for k, v, m in live if v is not None]
            for key in _KEYS:
                assert store.get(key, at) == model_get(key, at)
            assert store.get_many(_KEYS, at) == [model_get(key, at) for key in _KEYS]
            for start, end in ((b"", b"\xff"), (b"a", b"b"), (b"a\x00", b"c"), (b"ab", b"ab\x00")):
                expected = [row for row in live if start <= row[0] < end]
                assert store.scan(start, end, at) == expected
                assert store.scan(start, end, at, limit=2) == expected[:2]
                assert store.scan(start, end, at, reverse=True) == expected[::-1]
                assert store.scan(start, end, at, limit=1, reverse=True) == expected[::-1][:1]
    finally:
        h.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, max_size=10),
       own=st.lists(st.tuples(st.sampled_from(_KEYS), st.one_of(st.none(), st.binary(max_size=3))), max_size=4),
       asked=st.lists(st.lists(st.sampled_from(_KEYS + [b"zz"]), max_size=8), min_size=1, max_size=4),
       at=st.integers(0, 12))
def test_get_many_answers_as_get_does(tmp_path_factory, steps, own, asked, at):
    """On a random history, Store.get_many at any revision is get of each key, in order and with
    duplicates; Txn.get_many reads its own writes, records the same read set as get does and
    makes one store call per batch of keys."""
    h = StoreHarness(str(tmp_path_factory.mktemp("get_many") / "store"), log_capacity=1 << 16)
    try:
        for step in steps:
            if step == "checkpoint":
                h.run(h.store.checkpoint())
            else:
                h.commit(step)
        store = h.store
        at = min(at, store.current_revision())
        for keys in asked:
            assert store.get_many(keys, at) == [store.get(k, at) for k in keys]
        one, many = Txn(store, at), Txn(store, at)
        for key, value in own:
            for txn in (one, many):
                if value is None:
                    txn.delete(key)
                else:
                    txn.put(key, value)
        calls = []
        real = store.get_many
        store.get_many = lambda keys, at: calls.append(len(keys)) or real(keys, at)  # type: ignore[method-assign]
        try:
            for keys in asked:
                assert many.get_many(keys) == [one.get(k) for k in keys]
        finally:
            del store.get_many
        assert many.reads == one.reads
        assert all(n > 0 for n in calls) and len(calls) <= len(asked)
    finally:
        h.close()


def test_when_lmdb_cannot_take_the_log_commits_fail_instead_of_waiting(tmp_path, monkeypatch):
    """Checkpoints keep failing (the map may not grow), so the logs fill up: later commits get
    an error, acknowledged ones stay durable, and a restart with room replays them."""
    monkeypatch.setattr(lmdb_store, "_MAX_MAP_GROWS", 1)
    h = StoreHarness(str(tmp_path / "store"), map_size=1 << 17, log_capacity=1 << 16)
    acknowledged = []
    try:
        async def fill():
            for i in range(400):
                try:
                    result = await h.store.commit([], [(b"f/%04d" % i, os.urandom(900))])
                except CommitFailedError:
                    return
                acknowledged.append((b"f/%04d" % i, result.revision))
                await asyncio.sleep(0)  # let checkpoints run (and fail)
        h.run(asyncio.wait_for(fill(), 60))
        assert 0 < len(acknowledged) < 400
        assert h.store.current_revision() == acknowledged[-1][1]
    finally:
        h.close()
    monkeypatch.undo()
    h = StoreHarness(str(tmp_path / "store"))
    try:
        rows = h.store.scan(b"f/", b"f0", h.store.current_revision())
        assert [k for k, _, _ in rows] == [k for k, _ in acknowledged]
    finally:
        h.close()
