"""Cluster coordination (storage/etcd/coord.py) against a real one-member etcd: node ids, liveness
by lease, re-registration after a lost lease, elections and the inbox.

Each test is one or more Coordinators, each on its own etcd client (as separate nodes would be),
under a namespace of its own on one etcd started for the module.
"""
from __future__ import annotations

import asyncio
import itertools

import etcd3aio
import pytest
from etcd_proc import etcd

from pillbug.storage.etcd.coord import CoordinationError, Coordinator

_namespaces = itertools.count()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with etcd(str(tmp_path_factory.mktemp("etcd"))) as member:
        yield member.endpoint


@pytest.fixture
def namespace():
    return f"t{next(_namespaces)}/".encode()


async def _nodes(endpoint, namespace, count):
    clients = [etcd3aio.Etcd3Client([endpoint]) for _ in range(count)]
    for client in clients:
        await client.connect()
    return clients, [Coordinator(client, namespace=namespace) for client in clients]


async def _close(clients, coordinators):
    for coordinator in coordinators:
        await coordinator.close()
    for client in clients:
        await client.close()


async def _until(predicate, seconds=15.0):
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_initialize_once_and_wait(endpoint, namespace):
    async def run():
        clients, (a, b) = await _nodes(endpoint, namespace, 2)
        try:
            waiter = asyncio.ensure_future(b.wait_initialized())
            await asyncio.sleep(0.2)
            assert not waiter.done()
            assert await a.initialize("c1", also={namespace + b"x/gc": bytes(8)})
            assert not await b.initialize("c2")
            info = await asyncio.wait_for(waiter, 5)
            assert info["cluster_id"] == "c1"
            assert (await clients[0].kv.get(namespace + b"x/gc")).kvs[0].value == bytes(8)
        finally:
            await _close(clients, [a, b])
    asyncio.run(run())


def test_node_ids_are_distinct_under_concurrency(endpoint, namespace):
    async def run():
        clients, coordinators = await _nodes(endpoint, namespace, 2)
        try:
            ids = await asyncio.gather(*(coordinators[i % 2].allocate_node_id() for i in range(20)))
            assert sorted(ids) == list(range(1, 21))
            assert await coordinators[0].allocate_node_id() == 21
        finally:
            await _close(clients, coordinators)
    asyncio.run(run())


def test_node_ids_run_out_at_32767(endpoint, namespace):
    async def run():
        clients, (a,) = await _nodes(endpoint, namespace, 1)
        try:
            await clients[0].kv.put(namespace + b"x/nodeid", b"32766")
            assert await a.allocate_node_id() == 32767
            with pytest.raises(CoordinationError, match="no node id left"):
                await a.allocate_node_id()
        finally:
            await _close(clients, [a])
    asyncio.run(run())


def test_registration_membership_and_expiry(endpoint, namespace):
    async def run():
        clients, (a, b) = await _nodes(endpoint, namespace, 2)
        try:
            await a.register(1, {"sql": "127.0.0.1:1"}, ttl=2)
            await b.register(2, {"sql": "127.0.0.1:2"}, ttl=2)
            assert await b.nodes() == {1: {"sql": "127.0.0.1:1"}, 2: {"sql": "127.0.0.1:2"}}
            await a.update_info(1, draining=True)
            assert (await b.nodes())[1] == {"sql": "127.0.0.1:1", "draining": True}
            await a.set_membership(1, "decommissioning")
            with pytest.raises(ValueError, match="unknown membership state"):
                await a.set_membership(1, "gone")
            assert await b.memberships() == {1: "decommissioning"}
            # Kept alive past several TTLs.
            await asyncio.sleep(3)
            assert set(await b.nodes()) == {1, 2}
            # Node 1 stops renewing (a crash): its registration goes once the lease lapses.
            a._keepalive_task.cancel()
            await _until(lambda: _absent(b, 1), seconds=6)
            assert await b.memberships() == {1: "decommissioning"}  # persistent, not leased
            # A clean stop revokes the lease: the key goes at once.
            await b.close()
            assert await a.nodes() == {}
        finally:
            await _close(clients, [a, b])
    asyncio.run(run())


async def _absent(coordinator, node_id):
    return node_id not in await coordinator.nodes()


def test_re_registers_after_losing_its_lease(endpoint, namespace):
    async def run():
        clients, (a, b) = await _nodes(endpoint, namespace, 2)
        try:
            await a.register(1, {"n": 1}, ttl=2)
            old = a.lease_id
            # The lease lapses under a live node (as after a long pause or a partition).
            await clients[1].lease.revoke(old)
            assert await b.nodes() == {}
            await _until(lambda: _present(b, 1), seconds=5)
            assert a.lease_id != old
            assert (await b.nodes())[1] == {"n": 1}
        finally:
            await _close(clients, [a, b])
    asyncio.run(run())


async def _present(coordinator, node_id):
    return node_id in await coordinator.nodes()


def test_election_one_leader_and_failover(endpoint, namespace):
    async def run():
        clients, coordinators = await _nodes(endpoint, namespace, 3)
        try:
            for i, c in enumerate(coordinators):
                await c.register(i + 1, {}, ttl=2)
            races = [c.campaign("compactor") for c in coordinators]
            await _until(lambda: _one_leads(races), seconds=5)
            await asyncio.sleep(0.3)  # and it stays that way
            assert sum(r.is_leader for r in races) == 1
            first = next(i for i, r in enumerate(races) if r.is_leader)
            # The leader stops cleanly: one of the others leads.
            await coordinators[first].close()
            assert not races[first].is_leader
            rest = [r for i, r in enumerate(races) if i != first]
            await _until(lambda: _one_leads(rest), seconds=5)
            second = next(r for r in rest if r.is_leader)
            last = next(r for r in rest if not r.is_leader)
            # The new leader resigns: the last one leads.
            await second.resign()
            await asyncio.wait_for(last.won(), 5)
            assert not second.is_leader and last.is_leader
            # The leader's lease is lost under it: alone, it stands again and leads again.
            owner = coordinators[races.index(last)]
            lost = owner.lease_id
            await clients[0].lease.revoke(lost)
            await _until(lambda: _relead(last, owner, lost), seconds=6)
        finally:
            await _close(clients, coordinators)
    asyncio.run(run())


async def _leads(leadership):
    return leadership.is_leader


async def _relead(leadership, coordinator, lost_lease):
    """Leads under a new lease, with its candidacy key on that lease."""
    if coordinator.lease_id == lost_lease or not leadership.is_leader:
        return False
    listed = await coordinator.kv.get(leadership._key)
    return bool(listed.kvs) and listed.kvs[0].lease == coordinator.lease_id


async def _one_leads(races):
    return sum(r.is_leader for r in races) == 1


def test_inbox_request_reply_and_timeout(endpoint, namespace):
    async def run():
        clients, (a, b) = await _nodes(endpoint, namespace, 2)
        try:
            await a.register(1, {}, ttl=5)
            await b.register(2, {}, ttl=5)
            seen = []

            async def handler(message):
                seen.append(message)
                if message.get("slow"):
                    await asyncio.sleep(3)
                if message.get("fail"):
                    raise RuntimeError("no such query")
                return {"ok": True, "echo": message["n"]}

            b.serve(handler)
            assert await a.send(2, {"n": 1}) == {"ok": True, "echo": 1}
            replies = await asyncio.gather(*(a.send(2, {"n": i}) for i in range(10)))
            assert [r["echo"] for r in replies] == list(range(10))
            assert (await a.send(2, {"n": 0, "fail": True}))["error"] == "RuntimeError: no such query"
            with pytest.raises(TimeoutError):
                await a.send(2, {"n": 0, "slow": True}, timeout=0.5)
            with pytest.raises(CoordinationError, match="node 3 is not live"):
                await a.send(3, {"n": 0})
            # Nothing is left behind: requests deleted, replies read and deleted, the
            # withdrawn one too.
            await asyncio.sleep(3.5)
            left = await clients[0].kv.get(namespace + b"x/inbox/", namespace + b"x/inbox0")
            assert [kv.key for kv in left.kvs] == []
        finally:
            await _close(clients, [a, b])
    asyncio.run(run())
