"""Row locks across nodes: a queue per row in etcd, under the waiting nodes' leases (rfcs/0001 §2.5).

kv/locks.py's LockTable queues the writers of a row on one node; behind a load balancer they sit
on different nodes, and optimism alone starves them. So a transaction that must wait its turn on
a row (kv/ decides which rows: the ones this node has seen contended) also joins the row's queue

  x/lock/<len><key>/<txn id> = ""      under this node's lease (coord.py): a crash leaves the queue

with one Txn that also reads the queue's head and the row's current version (`d<key>`). The queue
is ordered by the entries' create_revision, so turns are first come, first served across nodes
(etcd's own lock recipe): the head holds the lock. A transaction behind others writes its wait
edge and watches the entry just ahead of it for its delete, then looks again; so a node whose
clients keep writing one row cannot keep taking it from the waiters of other nodes (a
release-then-retake race that an "if absent, put" lock loses to whoever is closest to etcd).
Taking a free lock costs one Raft write and no extra read.

A txn id is 16 bytes of HLC timestamp, the 2-byte node id and a 4-byte counter: ids sort by age.
Deadlocks: x/wait/<txn id> = the key a transaction waits for. A waiter walks key -> the head of its
queue -> that transaction's wait edge -> ... (at most MAX_WALK steps, reads at one revision); if the
walk comes back to itself, the youngest transaction of the cycle (the largest id) gives way, so
exactly one does. A walk that meets a transaction a second time stops (a loop without the walker
is its members' to break); one that finds the walker at the head of its own queue stops too (its
turn has come). Both happen at every hand-over: the new head keeps its wait edge until it looks,
and a walk that went round head -> edge -> head to MAX_WALK took up to a second, during which the
waiter could not take its turn (8 tps on pgbench tpcb-like with 8 clients on 3 nodes).

Releases (after commit or abort, or when a waiter gives up) run in the background: one Txn deleting
the transaction's entries and its wait edge. A release that cannot reach etcd is retried a few
times and then left to the lease.
This module knows nothing of SQL.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections.abc import Sequence

from etcd3aio._protobuf import RangeRequest, RequestOp
from etcd3aio.kv import KVService, prefix_range_end
from etcd3aio.watch import WatchFilter

from pillbug.storage.etcd.coord import TRANSIENT_ERRORS, Coordinator, keep_alive_once
from pillbug.storage.etcd.keys import Layout
from pillbug.storage.store import LockGrant, LockWait, RowLockService

_log = logging.getLogger(__name__)

MAX_WALK = 100  # steps of a deadlock walk
RELEASE_BATCH = 1000  # keys per release Txn (etcd --max-txn-ops=4096)
_RELEASE_ATTEMPTS = 3
LOCK_LEASE_SECONDS = 3  # the TTL of the lease lock entries hang on (see _lease)
CALL_SECONDS = 2.0  # an etcd call of the lock service that takes longer: go on without the lock (locks are optional)
_ID = struct.Struct(">16sHI")


class _Wait(LockWait):
    def __init__(self, released: asyncio.Future, holder: bytes, watch: asyncio.Task) -> None:
        self.released = released
        self.holder = holder
        self._watch = watch

    def cancel(self) -> None:
        self._watch.cancel()


class EtcdRowLocks(RowLockService):
    """The row locks of one node (one Coordinator: its node id and lease)."""

    def __init__(self, coordinator: Coordinator, *, namespace: bytes = b"", data_prefix: bytes = b"d") -> None:
        self.coordinator = coordinator
        self.client = coordinator.client
        self._layout = Layout(namespace)
        self._lock_prefix = self._layout.lock
        self._wait_prefix = self._layout.wait
        self._data_prefix = namespace + data_prefix
        self._counter = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._lease_id: int | None = None
        self._lease_until = 0.0
        self._keepalive: asyncio.Task | None = None

    def txn_id(self, timestamp: int) -> bytes:
        node_id = self.coordinator.node_id
        assert node_id is not None, "the node registers before it locks"
        return _ID.pack(timestamp.to_bytes(16, "big"), node_id, next(self._counter) & 0xFFFFFFFF)

    @staticmethod
    def node_of(txn_id: bytes) -> int:
        return _ID.unpack(txn_id)[1]

    def _queue(self, key: bytes) -> bytes:
        return self._layout.lock_queue(key)

    async def _lease(self) -> int | None:
        """The lease lock entries hang on: LOCK_LEASE_SECONDS, shorter than the node's liveness
        lease, so that a node that stops answering (paused, cut off) holds up the writers queued
        behind it for seconds, not for its liveness TTL. Locks carry no correctness (the commit's
        compares do), so one lost under a live holder costs queueing only."""
        if self._lease_id is not None and time.monotonic() < self._lease_until:
            return self._lease_id
        lease = self.client.lease
        assert lease is not None
        try:
            grant = await lease.grant(LOCK_LEASE_SECONDS, timeout=CALL_SECONDS)
        except TRANSIENT_ERRORS as exc:
            _log.warning("no lease for row locks: %s", exc)
            return None
        self._lease_id = grant.ID
        self._lease_until = time.monotonic() + LOCK_LEASE_SECONDS
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = self._spawn(self._keep_alive())
        return self._lease_id

    async def _keep_alive(self) -> None:
        while self._lease_id is not None:
            await asyncio.sleep(LOCK_LEASE_SECONDS / 3)
            lease_id = self._lease_id
            if lease_id is None:
                return
            try:
                ttl = await keep_alive_once(self.client, lease_id)
            except TRANSIENT_ERRORS:
                continue  # _lease() replaces it once it has lapsed
            if ttl > 0 and self._lease_id == lease_id:
                self._lease_until = time.monotonic() + ttl
            elif self._lease_id == lease_id:
                self._lease_id = None  # it lapsed: the next lock takes a new one

    async def lock(self, txn_id: bytes, key: bytes) -> LockGrant | LockWait | None:
        lease = await self._lease()
        if lease is None:
            return None
        kv = self.coordinator.kv
        queue = self._queue(key)
        # The wait edge of an earlier wait goes: a holder whose edge still named the key it now
        # holds would send every deadlock walk round in a circle that never reaches the walker.
        join = [KVService.txn_op_put(queue + txn_id, b"", lease=lease),
                RequestOp(request_range=_by_age(queue)),
                RequestOp(request_range=_keys_only(self._data_prefix + key)),
                KVService.txn_op_delete(self._wait_prefix + txn_id)]
        try:
            # A put of an entry that is already there keeps its create_revision: its place.
            response = await kv.txn([], join, [], timeout=CALL_SECONDS, max_attempts=1)
            ahead = _ahead_of(response.responses[1].response_range.kvs, queue + txn_id)
            if ahead is None:
                return LockGrant(response.header.revision, _mod(response.responses[2]))
            await kv.put(self._wait_prefix + txn_id, key, lease=lease, timeout=CALL_SECONDS)
        except TRANSIENT_ERRORS as exc:
            _log.warning("row lock on %r: etcd did not answer (%s); going on without it", key, exc)
            return None
        holders = response.responses[1].response_range.kvs
        holder = holders[0].key[len(queue):] if holders else b""
        released = asyncio.get_running_loop().create_future()
        watch = self._spawn(self._watch_release(txn_id, key, ahead, released))
        return _Wait(released, holder, watch)

    async def note_wait(self, txn_id: bytes, key: bytes) -> None:
        lease = await self._lease()
        if lease is None:
            return
        try:
            await self.coordinator.kv.put(self._wait_prefix + txn_id, key, lease=lease, timeout=CALL_SECONDS)
        except TRANSIENT_ERRORS as exc:
            _log.warning("could not record a wait for %r: %s", key, exc)

    def clear_wait(self, txn_id: bytes) -> None:
        self._spawn(self._clear_wait(txn_id))

    async def _clear_wait(self, txn_id: bytes) -> None:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.coordinator.kv.delete(self._wait_prefix + txn_id, timeout=CALL_SECONDS)

    async def _watch_release(self, txn_id: bytes, key: bytes, ahead: bytes, released: asyncio.Future) -> None:
        """Resolve `released` once the entry ahead is gone: with a LockGrant when this member's
        queue then shows txn_id at its head, else with None (the waiter joins again: lock()).

        The look after the delete is a serializable read on the member that sent the event, so it
        has applied the delete (and the holder's writes, committed in the same Txn): it costs no
        Raft round, where lock()'s join Txn is a replicated write on every hand-over of a hot row.
        The entry needs no rewrite (it keeps its place); its wait edge stays until the commit or
        release deletes it (a walk that meets an edge naming the key its writer heads stops there).
        """
        grant = None
        kv = self.coordinator.kv
        queue = self._queue(key)
        mine = queue + txn_id
        with contextlib.suppress(*TRANSIENT_ERRORS):
            while True:
                await self._wait_for_delete(ahead)
                look = await kv.txn([], [RequestOp(request_range=_by_age(queue, serializable=True)),
                                         RequestOp(request_range=_keys_only(self._data_prefix + key,
                                                                            serializable=True))],
                                    [], timeout=CALL_SECONDS)
                entries = look.responses[0].response_range.kvs
                if not any(entry.key == mine for entry in entries):
                    break  # its entry went with a lapsed lease: join again
                now_ahead = _ahead_of(entries, mine)
                if now_ahead is None:
                    grant = LockGrant(look.header.revision, _mod(look.responses[1]))
                    break
                if now_ahead == ahead:
                    break  # the watch ended without the delete (canceled): join again
                ahead = now_ahead  # the one ahead left the queue (gave up): wait for the next
        if not released.done():
            released.set_result(grant)

    async def _wait_for_delete(self, entry: bytes) -> None:
        """Until `entry` is gone. The watch starts at the member's current revision, not at the
        revision the queue was read at: etcd hands events to a watcher that starts in the past
        from a catch-up loop that runs every 100 ms, which made every hand-over of a hot row cost
        up to 100 ms (pgbench tpcb-like, 8 clients on 3 nodes: 8 tps). A delete between the read
        and the watch is caught by looking once the watch exists (same member, so in order)."""
        watch = self.client.watch
        assert watch is not None
        stream = watch.watch(entry, None, filters=[WatchFilter.NOPUT])
        try:
            async for response in stream:
                if response.canceled or response.events:
                    return
                if response.created:
                    found = await self.coordinator.kv.get(entry, serializable=True, timeout=CALL_SECONDS)
                    if not found.kvs:
                        return
        finally:
            await stream.aclose()

    async def is_deadlock_victim(self, txn_id: bytes, key: bytes) -> bool:
        kv = self.coordinator.kv
        revision = 0  # the first read's; every later read of the walk is at that revision
        cycle = [txn_id]
        try:
            for _ in range(MAX_WALK):
                queue = self._queue(key)
                read = RequestOp(request_range=_by_age(queue, limit=1, revision=revision,
                                                       serializable=revision > 0))
                answer = await kv.txn([], [read], [], timeout=CALL_SECONDS)
                revision = revision or answer.header.revision
                found = answer.responses[0].response_range.kvs
                if not found:
                    return False
                holder = found[0].key[len(queue):]
                if holder == txn_id:
                    # First step: it heads the queue it waits in, so it holds the lock (the release
                    # ahead of it came; it has not looked yet) and waits for nobody.
                    return len(cycle) > 1 and max(cycle) == txn_id
                if holder in cycle:
                    # A loop that does not pass through this transaction: it is not its to break
                    # (its members walk too). Most often no cycle at all, but a head that has not
                    # yet seen its turn come, whose wait edge still names the key it now heads.
                    return False
                cycle.append(holder)
                waits = await kv.get(self._wait_prefix + holder, revision=revision, serializable=True,
                                     timeout=CALL_SECONDS)
                if not waits.kvs:
                    return False
                key = waits.kvs[0].value
        except TRANSIENT_ERRORS as exc:
            _log.warning("deadlock walk from %r: %s", key, exc)
        return False

    def release(self, txn_id: bytes, keys: Sequence[bytes]) -> None:
        self._spawn(self._release(txn_id, list(keys)))

    async def _release(self, txn_id: bytes, keys: list[bytes]) -> None:
        kv = self.coordinator.kv
        batches = [keys[lo:lo + RELEASE_BATCH] for lo in range(0, len(keys), RELEASE_BATCH)] or [[]]
        for i, batch in enumerate(batches):
            ops = [KVService.txn_op_delete(self._queue(key) + txn_id) for key in batch]
            if i == len(batches) - 1:
                ops.append(KVService.txn_op_delete(self._wait_prefix + txn_id))
            for attempt in range(_RELEASE_ATTEMPTS):
                try:
                    await kv.txn([], ops, timeout=CALL_SECONDS)
                    break
                except TRANSIENT_ERRORS as exc:
                    _log.warning("releasing %d row locks failed (%s)%s", len(batch), exc,
                                 "; retrying" if attempt + 1 < _RELEASE_ATTEMPTS else "; the lease frees them")
                    await asyncio.sleep(0.1 * (attempt + 1))

    def _spawn(self, coro: object) -> asyncio.Task:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Let pending releases finish (bounded by CALL_SECONDS each), stop the watches, and
        revoke the locks' lease (whatever is left goes at once)."""
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.cancel()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_SECONDS)
        for task in self._tasks:
            task.cancel()
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.client.lease.revoke(lease_id, timeout=5)  # type: ignore[union-attr]


def _by_age(prefix: bytes, limit: int = 0, revision: int = 0, serializable: bool = False) -> RangeRequest:
    """A queue's entries, oldest (the holder) first."""
    return RangeRequest(key=prefix, range_end=prefix_range_end(prefix), keys_only=True, limit=limit,
                        revision=revision, serializable=serializable, sort_order=RangeRequest.ASCEND,
                        sort_target=RangeRequest.CREATE)


def _ahead_of(entries: Sequence, mine: bytes) -> bytes | None:
    """The entry just ahead of `mine` in a queue read oldest first; None when mine is the head."""
    previous = None
    for entry in entries:
        if entry.key == mine:
            return previous
        previous = entry.key
    return previous  # (mine is always there: it was put in the same Txn)


def _keys_only(key: bytes, serializable: bool = False) -> RangeRequest:
    return RangeRequest(key=key, keys_only=True, serializable=serializable)


def _mod(response: object) -> int:
    kvs = response.response_range.kvs  # type: ignore[attr-defined]
    return kvs[0].mod_revision if kvs else 0
