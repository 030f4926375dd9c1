"""The etcd engine (storage/etcd) on real etcd processes: what the kv scripts cannot show.

Tombstones seen by range compares and the GC horizon guard, get_many as one call, coalesced
current_revision calls, the 54000 limits, compaction, watch, ambiguous commits settled both ways
(a TCP proxy that loses the answer, or the request) and left unknown (a SIGSTOPped member), and
reads and commits going on when the local member of a 3-member cluster dies.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import etcd_proc
import pytest
from etcd3aio import _protobuf as pb

from pillbug.kv.txn import Txn
from pillbug.storage.etcd import EtcdStore
from pillbug.storage.etcd import store as etcd_store
from pillbug.storage.store import CommitOutcomeUnknownError, CompactedError, KeyCompare, RangeCompare
from pillbug.util import timeslice
from pillbug.util.errors import PgError


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    with etcd_proc.etcd(str(tmp_path_factory.mktemp("etcd"))) as m:
        yield m


def run(coro):
    return asyncio.run(coro)


_count = [0]


async def open_store(endpoints, **kwargs) -> EtcdStore:
    _count[0] += 1
    kwargs.setdefault("namespace", f"t{_count[0]}-{os.getpid()}/".encode())
    return await EtcdStore.open(endpoints, **kwargs)


async def etcd_get(store: EtcdStore, raw_key: bytes):
    resp = await store._transport.read("Range", pb.RangeRequest(key=raw_key))
    return resp.kvs[0] if resp.kvs else None


def test_tombstones_fail_range_compares_and_gc_guards_them(member):
    async def scenario():
        store = await open_store([member.endpoint])
        try:
            r1 = (await store.commit([], [(b"r/a", b"1"), (b"r/c", b"1")])).revision
            deleted = await store.commit([], [(b"r/c", None)])
            assert deleted.succeeded
            # A delete after R is seen by a range compare at R (etcd alone would miss it: etcd.md §5).
            failed = await store.commit([RangeCompare(b"r/", b"r0", r1)], [(b"z", b"1")])
            assert not failed.succeeded and failed.conflict_key == b"r/c"
            assert isinstance(failed.failed, RangeCompare)
            assert await store.aget(b"r/c", deleted.revision) == (None, deleted.revision)
            # Compaction GCs the tombstone (a real etcd delete)...
            await store.compact(deleted.revision)
            assert await etcd_get(store, store._layout.d(b"r/c")) is None
            assert await etcd_get(store, store._layout.tomb_key(b"r/c")) is None
            # ... and a range compare older than the horizon fails on x/gc instead of missing it.
            failed = await store.commit([RangeCompare(b"r/", b"r0", r1)], [(b"z", b"1")])
            assert not failed.succeeded and failed.conflict_key == b"r/"
            ok = await store.commit([RangeCompare(b"r/", b"r0", deleted.revision)], [(b"z", b"2")])
            assert ok.succeeded
            # A deleted-then-reinserted row keeps its new value through a GC.
            await store.commit([], [(b"r/c", b"2")])
            again = await store.commit([], [(b"r/b", None), (b"r/d", b"x")])
            await store.commit([], [(b"r/d", None)])
            await store.commit([], [(b"r/d", b"back")])
            await store.compact(await store.acurrent_revision())
            now = await store.acurrent_revision()
            assert [k for k, _, _ in await store.ascan(b"r/", b"r0", now)] == [b"r/a", b"r/c", b"r/d"]
            assert (await store.aget(b"r/d", now))[0] == b"back"
            assert again.succeeded
        finally:
            await store.close()
    run(scenario())


def test_get_many_is_one_call_and_revision_calls_are_coalesced(member):
    async def scenario():
        store = await open_store([member.endpoint], revision_keys=[b"catalog"])
        try:
            await store.commit([], [(b"k%d" % i, b"v%d" % i) for i in range(50)] + [(b"catalog", b"7")])
            at = await store.acurrent_revision()
            before = (store.stats.rtt_count, store.stats.reads)
            keys = [b"k%d" % i for i in range(0, 60, 2)]
            found = await timeslice.run(store.get_many, keys, at)
            assert (store.stats.rtt_count - before[0], store.stats.reads - before[1]) == (1, 1)
            assert [v for v, _ in found] == [b"v%d" % i if i < 50 else None for i in range(0, 60, 2)]
            assert found == [await store.aget(k, at) for k in keys]
            # Twenty callers in one turn share one linearizable call; the catalog key at that R
            # is answered from it, without a call.
            calls = store.stats.linearizable_calls
            revisions = await asyncio.gather(*(store.acurrent_revision() for _ in range(20)))
            assert len(set(revisions)) == 1 and store.stats.linearizable_calls == calls + 1
            rtts = store.stats.rtt_count
            assert await timeslice.run(store.get, b"catalog", revisions[0]) == (b"7", at)
            assert store.stats.rtt_count == rtts
            # A caller that arrives while a call is in flight waits for the next one.
            first = asyncio.ensure_future(store.acurrent_revision())
            await asyncio.sleep(0)  # the call is sent
            await asyncio.sleep(0)
            assert store._sending is not None
            second = asyncio.ensure_future(store.acurrent_revision())
            await asyncio.gather(first, second)
            assert store.stats.linearizable_calls == calls + 3
        finally:
            await store.close()
    run(scenario())


def test_limits_refuse_big_transactions_with_54000(member):
    async def scenario():
        store = await open_store([member.endpoint])
        try:
            def too_many():
                txn = Txn(store)
                for i in range(store.limits.max_ops_per_commit):
                    txn.put(b"w%d" % i, b"v")
                txn.put(b"one-more", b"v")
            def too_big():
                Txn(store).put(b"big", b"x" * (store.limits.max_value_bytes + 1))
            for fn in (too_many, too_big):
                with pytest.raises(PgError) as info:
                    await timeslice.run(fn)
                assert info.value.code == "54000"
            # The largest allowed transaction commits (1,000 writes, deletes included, in one Txn).
            txn = Txn(store)
            for i in range(store.limits.max_ops_per_commit):
                txn.put(b"w%04d" % i, b"v" * 100)
            revision = await txn.commit()
            txn = Txn(store)
            for i in range(store.limits.max_ops_per_commit):
                txn.delete(b"w%04d" % i)
            await txn.commit()
            assert await store.ascan(b"w", b"x", revision) and not await store.ascan(
                b"w", b"x", await store.acurrent_revision())
        finally:
            await store.close()
    run(scenario())


def test_compaction_clock_and_watch(member):
    async def scenario():
        store = await open_store([member.endpoint])
        try:
            stream = store.watch(b"w/", store.cached_revision() + 1)
            revs = [(await store.commit([], [(b"w/%d" % i, b"v")])).revision for i in range(5)]
            await store.commit([], [(b"w/0", None), (b"nope", None)])
            events = [await stream.__anext__() for _ in range(6)]
            await stream.aclose()
            assert [(e.key, e.value) for e in events] == [(b"w/%d" % i, b"v") for i in range(5)] + [(b"w/0", None)]
            stamps = [await store.arevision_timestamp(r) for r in revs]
            assert stamps == sorted(stamps) and len(set(stamps)) == 5 and stamps[-1] < store.now()
            for r, ts in zip(revs, stamps):
                assert await store.arevision_at(ts) == r
                assert await store.arevision_at(ts - 1) < r
            await store.compact(revs[2])
            assert store.compacted_revision() == revs[2]
            with pytest.raises(CompactedError):
                await store.aget(b"w/1", revs[1])
            with pytest.raises(CompactedError):
                await store.arevision_timestamp(revs[1])
            assert await store.aget(b"w/1", revs[2]) == (b"v", revs[1])
            # Another gateway on the same namespace learns the horizon (the x/gc watch).
            other = await EtcdStore.open([member.endpoint], namespace=store._layout.ns)
            try:
                assert other.compacted_revision() == revs[2]
                await store.compact(revs[4])
                for _ in range(100):
                    if other.compacted_revision() == revs[4]:
                        break
                    await asyncio.sleep(0.02)
                assert other.compacted_revision() == revs[4]
            finally:
                await other.close()
            with pytest.raises(CompactedError):
                await store.watch(b"w/", revs[0]).__anext__()
        finally:
            await store.close()
    run(scenario())


# ---- ambiguous commits -----------------------------------------------------------------------

class Proxy:
    """A TCP proxy in front of etcd that can lose what flows one way: "answers" (etcd applies the
    request; the client never hears back) or "requests" (etcd never sees it)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.lose: str | None = None
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src, dst, direction):
            try:
                while data := await src.read(65536):
                    if self.lose != direction:
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pump(reader, up_writer, "requests"), pump(up_reader, writer, "answers"))

    async def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("lose", ["answers", "requests"])
def test_ambiguous_commit_is_settled_by_the_record(member, lose, monkeypatch):
    monkeypatch.setattr(etcd_store, "COMMIT_SECONDS", 0.5)

    async def scenario():
        proxy = Proxy(member.endpoint)
        through = await proxy.start()
        # The proxy is the "local" member; the direct endpoint is the other one the poison reaches.
        store = await open_store([through, member.endpoint])
        try:
            r1 = (await store.commit([], [(b"acct", b"100")])).revision
            proxy.lose = lose
            result = await store.commit([KeyCompare(b"acct", r1)], [(b"acct", b"150")])
            assert store.stats.ambiguous_commits == 1
            held = await etcd_get(store, store._layout.d(b"acct"))
            if lose == "answers":  # it applied; the record says so, at its revision
                assert result.succeeded and held.value == b"\x00150" and held.mod_revision == result.revision
            else:  # it never reached etcd; the poison landed first, so it never can
                assert not result.succeeded and held.value == b"\x00100" and held.mod_revision == r1
        finally:
            proxy.lose = None
            await store.close()
            await proxy.close()
    run(scenario())


def test_unreachable_etcd_makes_a_commit_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(etcd_store, "COMMIT_SECONDS", 0.3)
    monkeypatch.setattr(etcd_store, "SETTLE_SECONDS", 1.0)
    with etcd_proc.etcd(str(tmp_path)) as m:
        async def scenario():
            store = await open_store([m.endpoint])
            try:
                await store.commit([], [(b"a", b"1")])
                os.killpg(m.proc.pid, signal.SIGSTOP)
                try:
                    with pytest.raises(CommitOutcomeUnknownError):
                        await store.commit([], [(b"a", b"2")])
                finally:
                    os.killpg(m.proc.pid, signal.SIGCONT)
                # etcd decides once it runs again: whatever it holds, a read says the same.
                assert store.stats.unknown_commits == 1
                held = await etcd_get(store, store._layout.d(b"a"))
                assert held.value in (b"\x001", b"\x002")
            finally:
                await store.close()
        run(scenario())


# ---- failover -----------------------------------------------------------------------------------

def start_cluster(directory: str, hosts: list[str]) -> list[subprocess.Popen]:
    ports = [(h, etcd_proc._free_port(h), etcd_proc._free_port(h)) for h in hosts]
    initial = ",".join(f"m{i}=http://{h}:{peer}" for i, (h, _, peer) in enumerate(ports))
    procs = []
    for i, (h, client, peer) in enumerate(ports):
        log = open(os.path.join(directory, f"m{i}.log"), "ab")
        procs.append(subprocess.Popen(
            [etcd_proc.ETCD, f"--name=m{i}", f"--data-dir={directory}/m{i}",
             f"--listen-client-urls=http://{h}:{client}", f"--advertise-client-urls=http://{h}:{client}",
             f"--listen-peer-urls=http://{h}:{peer}", f"--initial-advertise-peer-urls=http://{h}:{peer}",
             f"--initial-cluster={initial}", "--initial-cluster-state=new", "--max-txn-ops=4096",
             "--max-request-bytes=8388608", "--heartbeat-interval=50", "--election-timeout=500",
             "--pre-vote=true"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
    endpoints = [f"{h}:{client}" for h, client, _ in ports]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run(["etcdctl", f"--endpoints={','.join(endpoints)}", "endpoint", "health"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return procs, endpoints
        time.sleep(0.1)
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
    raise AssertionError("the 3-member etcd did not become healthy")


def test_reads_and_commits_go_on_when_the_local_member_dies(tmp_path):
    if not os.path.exists(etcd_proc.ETCD):
        pytest.skip("etcd is not installed")
    procs, endpoints = start_cluster(str(tmp_path), ["127.0.0.11", "127.0.0.12", "127.0.0.13"])
    try:
        async def scenario():
            store = await open_store(endpoints)
            try:
                r = (await store.commit([], [(b"a", b"1")])).revision
                os.killpg(procs[0].pid, signal.SIGKILL)  # the local member
                procs[0].wait()
                began = time.monotonic()
                assert await timeslice.run(store.get, b"a", r) == (b"1", r)
                now = await store.acurrent_revision()
                assert now >= r
                committed = 0
                for i in range(5):
                    result = await store.commit([], [(b"b%d" % i, b"x")])
                    committed += result.succeeded
                assert committed >= 4  # the first may be settled as aborted (its answer was lost)
                assert time.monotonic() - began < 10
                assert len(await store.ascan(b"b", b"c", await store.acurrent_revision())) == committed
                assert store.stats.failovers >= 1 and await store.healthy()
            finally:
                await store.close()
        run(scenario())
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def test_a_compacted_read_revision_is_retryable_unless_as_of_system_time(member):
    async def scenario():
        store = await open_store([member.endpoint])
        try:
            r1 = (await store.commit([], [(b"a", b"1")])).revision
            txn, snapshot = Txn(store), Txn(store, r1, is_read_only_snapshot=True)
            assert await timeslice.run(txn.get, b"a") == b"1"
            await store.commit([], [(b"a", b"2")])
            await store.compact(await store.acurrent_revision())
            for t, code in ((txn, "40001"), (snapshot, "22023")):
                with pytest.raises(PgError) as info:
                    await timeslice.run(lambda t=t: list(t.scan(b"a", b"b")))
                assert info.value.code == code
        finally:
            await store.close()
    run(scenario())
