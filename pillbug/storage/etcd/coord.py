"""Cluster coordination through etcd: node ids, liveness, membership, elections and an inbox.

docs/rfcs/0001-cluster.md §2.6-2.8. Every node holds one etcd lease (10 s, renewed every ttl/3);
what must vanish when a node dies hangs on it: its registration `x/node/<id>` (the key's presence
*is* its liveness), its election candidacies, its row-lock records (storage/etcd/locks.py) and the
inbox requests it sent. A lease that lapsed while the node lived (a long pause, a partition) is
replaced by a new one and the registration put again; the candidacies see their keys go and stand
again.

Keys (all under `namespace`, in the `x/` half of the key space that SQL data never touches):
  x/init                          the cluster exists: {"cluster_id", "created_at"}
  x/nodeid                        the last node id handed out (decimal); ids are 1..32767
  x/node/<id>                     a live node's registration (JSON, under its lease)
  x/membership/<id>               active | decommissioning | decommissioned (persistent)
  x/elect/<name>/<id>             a candidacy (under its lease); the lowest create_revision leads
  x/inbox/<id>/<msg id>           a request to node <id> (under the sender's lease)
  x/inbox/<id>/reply/<msg id>     its answer, for the sender (node <id> here is the sender)

Every wait here is a watch from a known revision (nothing is missed between a read and the watch
that follows it), and every wait is bounded or ends with close(). This module knows nothing of
SQL: the inbox carries JSON objects whose meaning is the caller's (server/).
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import etcd3aio
import grpc
from etcd3aio._protobuf import Compare, RangeResponse
from etcd3aio.errors import EtcdError
from etcd3aio.kv import KVService, SortOrder, SortTarget, prefix_range_end
from etcd3aio.watch import WatchFilter

_log = logging.getLogger(__name__)

MAX_NODE_ID = 32767  # unique_rowid() keeps 15 bits for the node id
MEMBERSHIP_STATES = ("active", "decommissioning", "decommissioned")
# How many inbox requests one node handles at once; more wait for a slot (the watch is the queue).
MAX_INBOX_HANDLERS = 16
INBOX_HANDLER_SECONDS = 10.0  # a handler that runs longer is abandoned and answered with an error
_RETRY_FIRST, _RETRY_MAX = 0.05, 2.0  # backoff of loops that retry an unreachable etcd
_ALLOCATE_ATTEMPTS = 1000  # node id CAS attempts before giving up (contention, not outage)
# What a call to an unreachable or overloaded etcd raises.
TRANSIENT_ERRORS = (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError)

_DELETE = 1  # mvccpb.Event.DELETE


class CoordinationError(Exception):
    """A coordination request that cannot be done (no node id left, node not live, ...)."""


async def wait_for_event(client: etcd3aio.Etcd3Client, key: bytes, start_revision: int, *,
                         range_end: bytes | None = None, deletes_only: bool = False) -> None:
    """Return at the first change to key (or [key, range_end)) at or after start_revision, or
    when etcd cancels the watch (its start was compacted): the caller re-reads either way."""
    assert client.watch is not None, "client is not connected"
    filters = [WatchFilter.NOPUT] if deletes_only else []
    stream = client.watch.watch(key, range_end, start_revision=start_revision, filters=filters)
    try:
        async for response in stream:
            if response.canceled or response.events:
                return
    finally:
        await stream.aclose()


async def keep_alive_once(client: etcd3aio.Etcd3Client, lease_id: int) -> int:
    """One keepalive of a lease; its remaining TTL (0: it had expired)."""
    lease = client.lease
    assert lease is not None
    call = lease.keep_alive(lease_id)
    try:
        async for response in call:
            return response.TTL
    finally:
        call.cancel()
    return 0


async def watch_events(client: etcd3aio.Etcd3Client, prefix: bytes,
                       start_revision: int) -> AsyncIterator[tuple[int, bytes, bytes, int]]:
    """(event type, key, value, mod_revision) of every change under prefix from start_revision;
    ends when etcd cancels the watch (the caller lists again and watches anew)."""
    assert client.watch is not None, "client is not connected"
    stream = client.watch.watch(prefix, prefix_range_end(prefix), start_revision=start_revision)
    try:
        async for response in stream:
            if response.canceled:
                return
            for event in response.events:
                yield event.type, event.kv.key, event.kv.value, event.kv.mod_revision
    finally:
        await stream.aclose()


class Coordinator:
    """One node's view of the cluster's coordination keys (see the module docstring)."""

    def __init__(self, client: etcd3aio.Etcd3Client, *, namespace: bytes = b"") -> None:
        self.client = client
        self.prefix = namespace + b"x/"
        self.node_id: int | None = None
        self.lease_id: int | None = None
        self.ttl = 10
        self._info: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        self._keepalive_task: asyncio.Task | None = None

    @property
    def kv(self) -> KVService:
        kv = self.client.kv
        assert kv is not None, "client is not connected"
        return kv

    def key(self, *parts: str | int) -> bytes:
        return self.prefix + "/".join(str(p) for p in parts).encode()

    # ---- the cluster ---------------------------------------------------------------------

    async def initialize(self, cluster_id: str, also: dict[bytes, bytes] | None = None, *,
                         created: str | None = None, timeout: float | None = None) -> bool:
        """Create x/init = {"cluster_id", "created"} (and the engine's own initial keys, `also`,
        in the same Txn) unless it exists; True if this call created it. A call repeated with
        the same cluster id and `created` after an answer was lost is told apart from a cluster
        someone else initialized: the Txn's failure branch reads the key back."""
        key = self.key("init")
        created = created or datetime.datetime.now(datetime.UTC).isoformat()
        init = json.dumps({"cluster_id": cluster_id, "created": created}).encode()
        puts = [KVService.txn_op_put(key, init)]
        puts.extend(KVService.txn_op_put(k, v) for k, v in (also or {}).items())
        response = await self.kv.txn([KVService.txn_compare_create_revision(key, 0)], puts,
                                     [KVService.txn_op_get(key)], timeout=timeout)
        if response.succeeded:
            return True
        found = response.responses[0].response_range.kvs
        return bool(found) and found[0].value == init  # our own earlier attempt

    async def wait_initialized(self) -> dict:
        """x/init's JSON, once some node has initialized the cluster (waits until then)."""
        key = self.key("init")
        while True:
            response = await self.kv.get(key)
            if response.kvs:
                return json.loads(response.kvs[0].value)
            await wait_for_event(self.client, key, response.header.revision + 1)

    async def allocate_node_id(self) -> int:
        """A node id no other call ever got: CAS x/nodeid from n to n+1."""
        key = self.key("nodeid")
        response = await self.kv.get(key)
        kvs = response.kvs
        for _ in range(_ALLOCATE_ATTEMPTS):
            last, mod = (int(kvs[0].value), kvs[0].mod_revision) if kvs else (0, 0)
            node_id = last + 1
            if node_id > MAX_NODE_ID:
                raise CoordinationError(f"no node id left: all {MAX_NODE_ID} have been handed out")
            compare = Compare(result=Compare.EQUAL, target=Compare.MOD, key=key, mod_revision=mod)
            txn = await self.kv.txn([compare], [KVService.txn_op_put(key, str(node_id).encode())],
                                    [KVService.txn_op_get(key)])
            if txn.succeeded:
                return node_id
            kvs = txn.responses[0].response_range.kvs
        raise CoordinationError(f"could not allocate a node id in {_ALLOCATE_ATTEMPTS} attempts")

    # ---- liveness --------------------------------------------------------------------------

    async def register(self, node_id: int, info: dict, ttl: int = 10) -> None:
        """Put x/node/<node_id> = info under a new lease of `ttl` seconds, kept alive from now on
        (every ttl/3) until close(); a lease lost meanwhile is replaced and the key put again."""
        assert 1 <= node_id <= MAX_NODE_ID, node_id
        assert self._keepalive_task is None, "already registered"
        self.node_id, self.ttl, self._info = node_id, ttl, dict(info)
        await self._new_lease()
        self._keepalive_task = self._spawn(self._keep_alive(), f"lease keepalive of node {node_id}")

    async def _new_lease(self) -> None:
        grant = await self.client.lease.grant(self.ttl)  # type: ignore[union-attr]
        self.lease_id = grant.ID
        await self._put_info()

    async def _put_info(self) -> None:
        await self.kv.put(self.key("node", self.node_id or 0), json.dumps(self._info).encode(),
                          lease=self.lease_id or 0)

    async def update_info(self, node_id: int, **fields: Any) -> None:
        """Change fields of this node's registration (e.g. draining=True), under the same lease."""
        assert node_id == self.node_id, f"node {self.node_id} cannot update node {node_id}"
        self._info.update(fields)
        await self._put_info()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                assert self.lease_id is not None
                remaining = await asyncio.wait_for(keep_alive_once(self.client, self.lease_id), self.ttl / 3)
                if remaining <= 0:
                    _log.warning("node %s lost its etcd lease %x; taking a new one", self.node_id,
                                 self.lease_id or 0)
                    await asyncio.wait_for(self._new_lease(), self.ttl / 3)
            except TRANSIENT_ERRORS as exc:  # the next tick tries again; a lapsed lease is then replaced
                _log.warning("lease keepalive of node %s failed: %s", self.node_id, exc)


    async def nodes(self) -> dict[int, dict]:
        """The live nodes' registrations by node id."""
        prefix = self.key("node") + b"/"
        response = await self.kv.get(prefix, prefix_range_end(prefix))
        return {int(kv.key[len(prefix):]): json.loads(kv.value) for kv in response.kvs}

    async def last_node_id(self) -> int:
        """The highest node id handed out so far (0 before any): ids 1..this are every node that
        ever joined, live or not."""
        response = await self.kv.get(self.key("nodeid"))
        return int(response.kvs[0].value) if response.kvs else 0

    async def set_membership(self, node_id: int, state: str) -> None:
        if state not in MEMBERSHIP_STATES:
            raise ValueError(f"unknown membership state {state!r}: expected one of {', '.join(MEMBERSHIP_STATES)}")
        await self.kv.put(self.key("membership", node_id), state.encode())

    async def memberships(self) -> dict[int, str]:
        prefix = self.key("membership") + b"/"
        response = await self.kv.get(prefix, prefix_range_end(prefix))
        return {int(kv.key[len(prefix):]): kv.value.decode() for kv in response.kvs}

    # ---- elections -------------------------------------------------------------------------

    def campaign(self, name: str) -> Leadership:
        """Stand in the election `name` (register() first); see Leadership."""
        assert self.node_id is not None, "register() before campaigning"
        return Leadership(self, name)

    # ---- the inbox -------------------------------------------------------------------------

    async def send(self, node_id: int, message: dict, timeout: float = 5.0) -> dict:
        """Ask node `node_id` (its serve() handler) and return its answer. Raises
        CoordinationError when that node is not live, TimeoutError when no answer came in time
        (the request is then withdrawn). A sender that is no node (the CLI) is sender 0: its
        replies go to x/inbox/0/reply/<msg id>, which random message ids keep apart."""
        sender = self.node_id or 0
        msg_id = os.urandom(8).hex()
        request_key = self.key("inbox", node_id, msg_id)
        reply_key = self.key("inbox", sender, "reply", msg_id)
        body = json.dumps({"from": sender, "id": msg_id, "message": message}).encode()
        live = Compare(result=Compare.GREATER, target=Compare.CREATE, key=self.key("node", node_id),
                       create_revision=0)
        async with asyncio.timeout(timeout):
            sent = await self.kv.txn([live], [KVService.txn_op_put(request_key, body, lease=self.lease_id or 0)])
            if not sent.succeeded:
                raise CoordinationError(f"node {node_id} is not live")
            try:
                revision = sent.header.revision + 1
                while True:
                    await wait_for_event(self.client, reply_key, revision)
                    response = await self.kv.get(reply_key)
                    if response.kvs:
                        await self.kv.delete(reply_key)
                        return json.loads(response.kvs[0].value)
                    revision = response.header.revision + 1
            except BaseException:
                # Withdrawn, so that a late node does not act on a request nobody waits for.
                self._spawn(self._delete_quietly(request_key, reply_key), "withdraw inbox request")
                raise

    async def _delete_quietly(self, *keys: bytes) -> None:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.kv.txn([], [KVService.txn_op_delete(k) for k in keys], timeout=5)

    def serve(self, handler: Callable[[dict], Awaitable[dict]]) -> None:
        """Answer this node's inbox with handler (message -> answer), until close()."""
        assert self.node_id is not None, "register() before serving"
        self._spawn(self._serve(handler), f"inbox of node {self.node_id}")

    async def _serve(self, handler: Callable[[dict], Awaitable[dict]]) -> None:
        prefix = self.key("inbox", self.node_id or 0) + b"/"
        replies = prefix + b"reply/"
        slots = asyncio.Semaphore(MAX_INBOX_HANDLERS)
        handling: set[bytes] = set()

        async def answer(key: bytes, value: bytes) -> None:
            try:
                request = json.loads(value)
                try:
                    reply = await asyncio.wait_for(handler(request["message"]), INBOX_HANDLER_SECONDS)
                except Exception as exc:  # the sender gets the error instead of a timeout
                    _log.warning("inbox handler failed on %r: %s", request, exc)
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                reply_key = self.key("inbox", request["from"], "reply", request["id"])
                # The reply hangs on our lease; the sender deletes it, or it goes with the lease.
                # No reply to a request the sender withdrew (it gave up): nobody would delete it.
                pending = Compare(result=Compare.GREATER, target=Compare.CREATE, key=key, create_revision=0)
                await self.kv.txn([pending], [KVService.txn_op_put(reply_key, json.dumps(reply).encode(),
                                                            lease=self.lease_id or 0),
                                       KVService.txn_op_delete(key)], timeout=5)
            except TRANSIENT_ERRORS as exc:
                _log.warning("inbox: could not answer %r: %s", key, exc)
            finally:
                handling.discard(key)
                slots.release()

        async def take(key: bytes, value: bytes) -> None:
            if key.startswith(replies) or key in handling:
                return
            await slots.acquire()
            handling.add(key)
            self._spawn(answer(key, value), "inbox request")

        backoff = _RETRY_FIRST
        while True:
            try:
                listed = await self.kv.get(prefix, prefix_range_end(prefix))
                for kv in listed.kvs:
                    await take(kv.key, kv.value)
                async for kind, key, value, _ in watch_events(self.client, prefix, listed.header.revision + 1):
                    if kind != _DELETE:
                        await take(key, value)
                    backoff = _RETRY_FIRST
            except TRANSIENT_ERRORS as exc:
                _log.warning("inbox watch of node %s failed: %s", self.node_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX)

    # ---- tasks and shutdown ----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("coordination task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Stop every task and revoke the lease: this node's registration, candidacies and row
        locks go at once, instead of when the lease would have expired."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.lease_id is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.client.lease.revoke(self.lease_id, timeout=5)  # type: ignore[union-attr]
            self.lease_id = None


class Leadership:
    """A candidacy in one election: x/elect/<name>/<node id> under the node's lease; the candidate
    with the lowest create_revision leads. Re-campaigns when its key goes (a lapsed lease).

    is_leader can be stale by up to a lease TTL (a paused leader does not know it was replaced),
    so the work a leader does must be idempotent or guarded (rfcs/0001 §2.4)."""

    def __init__(self, coordinator: Coordinator, name: str) -> None:
        self.coordinator = coordinator
        self.name = name
        self.is_leader = False
        self._won = asyncio.Event()
        self._prefix = coordinator.key("elect", name) + b"/"
        self._key = self._prefix + str(coordinator.node_id).encode()
        self._task = coordinator._spawn(self._run(), f"election {name}")

    async def won(self) -> None:
        """Return once this candidate leads."""
        await self._won.wait()

    async def resign(self) -> None:
        """Stop leading and standing."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.coordinator.kv.delete(self._key, timeout=5)

    def _lose(self) -> None:
        self.is_leader = False
        self._won.clear()

    async def _run(self) -> None:
        try:
            await self._stand()
        finally:
            self._lose()  # resigned, or the node closed

    async def _stand(self) -> None:
        coordinator = self.coordinator
        kv = coordinator.kv
        backoff = _RETRY_FIRST
        while True:
            try:
                await kv.put(self._key, str(coordinator.node_id).encode(), lease=coordinator.lease_id or 0)
                while True:
                    listed: RangeResponse = await kv.get(self._prefix, prefix_range_end(self._prefix),
                                                         sort_order=SortOrder.ASCEND,
                                                         sort_target=SortTarget.CREATE)
                    keys = [item.key for item in listed.kvs]
                    if self._key not in keys:
                        self._lose()  # our lease lapsed: stand again under the new one
                        break
                    if keys[0] == self._key:
                        self.is_leader = True
                        self._won.set()
                    else:
                        self._lose()
                    # Any candidacy that goes may change who leads (ours included).
                    await wait_for_event(coordinator.client, self._prefix, listed.header.revision + 1,
                                         range_end=prefix_range_end(self._prefix), deletes_only=True)
                    backoff = _RETRY_FIRST
            except TRANSIENT_ERRORS as exc:
                _log.warning("election %s: %s", self.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX)

