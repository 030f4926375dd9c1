"""Row locks across nodes (storage/etcd/locks.py, kv/locks.py lock_in_cluster and HotKeys) against
a real one-member etcd: two "nodes" are two etcd clients, each with its Coordinator (lease) and
its EtcdRowLocks; statements run in greenlets (timeslice.run) as a node's do, and wait through
timeslice.wait as Txn.get_many_for_update's callers do.
"""
from __future__ import annotations

import asyncio
import itertools

import etcd3aio
import pytest
from etcd3aio.kv import KVService
from etcd_proc import etcd

from pillbug.kv.locks import HotKeys, LockTable, lock_in_cluster
from pillbug.storage.etcd.coord import Coordinator
from pillbug.storage.etcd.locks import LOCK_LEASE_SECONDS, EtcdRowLocks
from pillbug.storage.store import LockGrant, LockWait
from pillbug.util import errors, timeslice

_namespaces = itertools.count()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with etcd(str(tmp_path_factory.mktemp("etcd"))) as member:
        yield member.endpoint


@pytest.fixture
def namespace():
    return f"l{next(_namespaces)}/".encode()


class Node:
    def __init__(self, client, coordinator, service):
        self.client, self.coordinator, self.service = client, coordinator, service
        self.table = LockTable()


async def _nodes(endpoint, namespace, count=2, ttl=5):
    nodes = []
    for i in range(count):
        client = etcd3aio.Etcd3Client([endpoint])
        await client.connect()
        coordinator = Coordinator(client, namespace=namespace)
        await coordinator.register(i + 1, {}, ttl=ttl)
        nodes.append(Node(client, coordinator, EtcdRowLocks(coordinator, namespace=namespace)))
    return nodes


async def _close(nodes):
    for node in nodes:
        await node.service.close()
        await node.coordinator.close()
        await node.client.close()


class Owner:
    """A transaction as kv/locks.py sees one."""

    def __init__(self):
        self.locked: list[bytes] = []
        self.waiting_for: bytes | None = None


def _wait(future, began):
    assert timeslice.wait(future, 0.1)


def test_hot_keys_expire_and_stay_bounded():
    now = [0.0]
    hot = HotKeys(capacity=3, seconds=10, clock=lambda: now[0])
    assert not hot.is_hot(b"a")
    hot.note(b"a")
    assert hot.is_hot(b"a")
    now[0] = 9.0
    hot.note(b"b")
    assert hot.is_hot(b"a") and hot.is_hot(b"b")
    now[0] = 10.5
    assert not hot.is_hot(b"a") and hot.is_hot(b"b")  # 10 s after its last conflict
    for key in (b"c", b"d", b"e"):
        hot.note(key)
    assert len(hot) == 3 and not hot.is_hot(b"b")  # the least recently contended went


def test_lock_wait_release_and_first_come_first_served(endpoint, namespace):
    async def run():
        a, b = await _nodes(endpoint, namespace)
        kv = a.client.kv
        try:
            ta, tb = a.service.txn_id(100), b.service.txn_id(200)
            assert EtcdRowLocks.node_of(ta) == 1 and EtcdRowLocks.node_of(tb) == 2
            assert tb > ta  # ids sort by timestamp first
            granted = await a.service.lock(ta, b"k")
            assert isinstance(granted, LockGrant) and granted.mod_revision == 0
            assert isinstance(await a.service.lock(ta, b"k"), LockGrant)  # its own lock
            put = await kv.put(namespace + b"dk", b"\x00v")
            waiting = await b.service.lock(tb, b"k")
            assert isinstance(waiting, LockWait) and waiting.holder == ta
            assert (await kv.get(namespace + b"x/wait/" + tb)).kvs[0].value == b"k"
            await asyncio.sleep(0.2)
            assert not waiting.released.done()
            a.service.release(ta, [b"k"])
            await asyncio.wait_for(waiting.released, 5)
            granted = await b.service.lock(tb, b"k")
            # Taken with the row's current version read in the same step.
            assert isinstance(granted, LockGrant) and granted.mod_revision == put.header.revision
            assert granted.revision > put.header.revision
            # First come, first served across nodes: node a's next transaction queues behind
            # node b's waiter even though node a let go and asks first after b's release.
            t2 = b.service.txn_id(300)
            behind_b = await b.service.lock(t2, b"k")  # b's second transaction, queued first
            assert isinstance(behind_b, LockWait)
            ta2 = a.service.txn_id(400)
            behind_both = await a.service.lock(ta2, b"k")
            assert isinstance(behind_both, LockWait)
            b.service.release(tb, [b"k"])
            await asyncio.wait_for(behind_b.released, 5)
            assert isinstance(await b.service.lock(t2, b"k"), LockGrant)
            assert isinstance(await a.service.lock(ta2, b"k"), LockWait)  # still behind t2
            behind_both.cancel()
            b.service.release(t2, [b"k"])
            a.service.release(ta2, [b"k"])
            await asyncio.sleep(0.3)
            assert not (await kv.get(namespace + b"x/lock/", range_end=namespace + b"x/lock0")).kvs
        finally:
            await _close([a, b])
    asyncio.run(run())


def test_a_crashed_holders_locks_go_with_its_lease(endpoint, namespace):
    async def run():
        a, b = await _nodes(endpoint, namespace, ttl=2)
        try:
            ta, tb = a.service.txn_id(1), b.service.txn_id(2)
            assert isinstance(await a.service.lock(ta, b"k"), LockGrant)
            waiting = await b.service.lock(tb, b"k")
            assert isinstance(waiting, LockWait)
            # Node a stops renewing: it crashed (or is paused). Its lock entries hang on a lease of
            # their own, shorter than its liveness lease: the waiter gets the row within seconds.
            began = asyncio.get_running_loop().time()
            a.service._keepalive.cancel()
            await asyncio.wait_for(waiting.released, 3 * LOCK_LEASE_SECONDS)
            assert asyncio.get_running_loop().time() - began <= LOCK_LEASE_SECONDS + 1.5
            assert isinstance(await b.service.lock(tb, b"k"), LockGrant)
        finally:
            await _close([a, b])
    asyncio.run(run())


def _statement(node, owner, txn_id, keys, hold=None):
    """Lock keys as a statement does (local table first, then the cluster), in a greenlet."""
    for key in keys:
        node.table.hot.note(key)
        future = node.table.acquire(owner, key)
        while future is not None:
            _wait(future, 0)
            future = node.table.acquire(owner, key)
        assert lock_in_cluster(node.service, txn_id, key, owner, node.table.hot, _wait) is not None
        if hold is not None:  # after the first lock: both transactions hold one before either waits
            timeslice.await_(hold)
            hold = None


def test_deadlock_between_two_nodes_ends_with_exactly_one_40001(endpoint, namespace):
    async def run():
        a, b = await _nodes(endpoint, namespace)
        try:
            oa, ob = Owner(), Owner()
            ta, tb = a.service.txn_id(1), b.service.txn_id(2)  # b's is the younger
            both_hold = asyncio.Event()
            held = [0]

            async def hold():
                held[0] += 1
                if held[0] == 2:
                    both_hold.set()
                await both_hold.wait()

            async def txn(node, owner, txn_id, keys):
                try:
                    await timeslice.run(_statement, node, owner, txn_id, keys, hold())
                    return "locked"
                except errors.PgError as exc:
                    return exc
                finally:
                    node.table.release_all(owner)
                    node.service.release(txn_id, keys)

            first = asyncio.ensure_future(txn(a, oa, ta, [b"k1", b"k2"]))
            second = asyncio.ensure_future(txn(b, ob, tb, [b"k2", b"k1"]))
            outcomes = await asyncio.wait_for(asyncio.gather(first, second), 10)
            assert outcomes[0] == "locked"
            assert isinstance(outcomes[1], errors.PgError) and outcomes[1].code == "40001"
            assert "deadlock detected" in str(outcomes[1])
        finally:
            await _close([a, b])
    asyncio.run(run())


def test_counter_increments_from_two_nodes_queue_on_the_lock(endpoint, namespace):
    """N tasks on 2 nodes each increment one counter: lock (local, then cluster), read, compare
    the version read and put. Every acknowledged increment is in the final value, and with the
    locks the compares (nearly) never fail."""
    tasks_per_node, rounds = 4, 10

    async def run():
        nodes = await _nodes(endpoint, namespace)
        kv = nodes[0].client.kv
        counter = namespace + b"dc"
        await kv.put(counter, b"0")
        acked, conflicts = [0], [0]

        def increment(node, owner, txn_id):
            _statement(node, owner, txn_id, [b"c"])
            current = timeslice.await_(kv.get(counter))
            value, mod = int(current.kvs[0].value), current.kvs[0].mod_revision
            same = KVService.txn_compare_value(counter, str(value))
            same.target, same.mod_revision = same.MOD, mod
            return timeslice.await_(kv.txn([same], [KVService.txn_op_put(counter, str(value + 1))])).succeeded

        async def worker(node, n):
            for i in range(rounds):
                owner = Owner()
                txn_id = node.service.txn_id(n * 1000 + i)
                try:
                    if await timeslice.run(increment, node, owner, txn_id):
                        acked[0] += 1
                    else:
                        conflicts[0] += 1
                finally:
                    node.table.release_all(owner)
                    node.service.release(txn_id, [b"c"])

        try:
            await asyncio.wait_for(asyncio.gather(*(worker(node, n) for n in range(tasks_per_node)
                                                    for node in nodes)), 60)
            final = int((await kv.get(counter)).kvs[0].value)
            assert final == acked[0]
            assert acked[0] + conflicts[0] == 2 * tasks_per_node * rounds
            assert conflicts[0] <= 2, conflicts[0]
        finally:
            await _close(nodes)
    asyncio.run(run())


class _CountingKV:
    """The node's real KVService, counting the calls made through it (round trips)."""

    def __init__(self, kv):
        self._kv = kv
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._kv, name)
        if name not in ("txn", "get"):
            return attr

        async def counted(*args, **kwargs):
            self.calls += 1
            return await attr(*args, **kwargs)
        return counted


def test_a_new_head_that_has_not_looked_yet_is_no_deadlock_and_walks_stay_short(endpoint, namespace):
    """Between a release and the next waiter's look at the queue, that waiter heads the queue while
    its wait edge still names the row. A walk then must neither call the new head a deadlock victim
    (a needless 40001) nor go round head -> edge -> head until MAX_WALK (two round trips a step:
    it kept waiters walking, deaf to their turn, for up to a second; pgbench tpcb-like, 8 clients
    on 3 nodes: 6 tps)."""
    async def run():
        a, b = await _nodes(endpoint, namespace)
        try:
            ta, tb, tc = a.service.txn_id(1), b.service.txn_id(2), a.service.txn_id(3)
            assert isinstance(await a.service.lock(ta, b"k"), LockGrant)
            second = await b.service.lock(tb, b"k")
            third = await a.service.lock(tc, b"k")
            assert isinstance(second, LockWait) and isinstance(third, LockWait)
            a.service.release(ta, [b"k"])
            await asyncio.wait_for(second.released, 5)  # tb heads the queue; it has not looked
            kv = a.client.kv
            assert (await kv.get(namespace + b"x/wait/" + tb)).kvs[0].value == b"k"
            assert not await b.service.is_deadlock_victim(tb, b"k")
            counting = a.client.kv = _CountingKV(kv)
            try:
                assert not await a.service.is_deadlock_victim(tc, b"k")
            finally:
                a.client.kv = kv
            assert counting.calls <= 4, counting.calls  # k -> tb -> k -> tb again: stop
            second.cancel()
            third.cancel()
        finally:
            await _close([a, b])
    asyncio.run(run())


def test_a_waiter_joins_the_queue_again_only_when_its_turn_comes(endpoint, namespace):
    """wait()'s poll timer wakes a waiter every 0.1 s (to notice a cancel, walk for deadlocks, give
    up after CLUSTER_WAIT_SECONDS); that must not send it back to the queue's Txn (a replicated
    write and a new watch each time). Nor does its turn: its entry is in the queue already, and the
    release watch's look at the queue (a local read) grants it, with the row's version."""
    async def run():
        a, b = await _nodes(endpoint, namespace)
        try:
            ta, tb = a.service.txn_id(1), b.service.txn_id(2)
            assert isinstance(await a.service.lock(ta, b"k"), LockGrant)
            locks = [0]
            real_lock = b.service.lock

            async def counted_lock(txn_id, key):
                locks[0] += 1
                return await real_lock(txn_id, key)
            b.service.lock = counted_lock
            owner = Owner()
            waiter = asyncio.ensure_future(timeslice.run(
                lock_in_cluster, b.service, tb, b"k", owner, b.table.hot, _wait))
            while owner.waiting_for is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # several polls
            assert locks[0] == 1 and not waiter.done()
            put = await a.client.kv.put(namespace + b"dk", b"\x00v")  # the holder's write
            a.service.release(ta, [b"k"])
            granted = await asyncio.wait_for(waiter, 5)
            assert isinstance(granted, LockGrant) and granted.mod_revision == put.header.revision
            assert locks[0] == 1
            b.service.release(tb, [b"k"])
        finally:
            await _close([a, b])
    asyncio.run(run())
