"""Row locks across nodes: lock records in etcd under the holder node's lease (rfcs/0001 §2.5).

kv/locks.py's LockTable queues the writers of a row on one node; behind a load balancer they sit
on different nodes, and optimism alone starves them. So a transaction that must wait its turn on
a row (kv/ decides which rows: the ones this node has seen contended) also takes

  x/lock/<key> = <txn id>          under this node's lease (coord.py): a crash frees it

with one Txn that also reads the row's current version (`d<key>`), so locking costs one Raft
write and no extra read:

  if create_revision(x/lock/k) == 0 then put x/lock/k, range d<k> (keys only), delete x/wait/<me>
  else range x/lock/k, range d<k>, put x/wait/<me> = k (lease)

When someone else holds it, the waiter watches x/lock/k for its delete from the Txn's revision
(so a release between the Txn and the watch is not missed) and tries again. A txn id is 16 bytes
of HLC timestamp, the 2-byte node id and a 4-byte counter: ids sort by age, and a lock whose
holder is a transaction of this node that has finished (its release still in flight) is taken
over with a compare on the holder's id instead of waiting for the delete.

Deadlocks: x/wait/<txn id> = the key a transaction waits for. A waiter walks lock -> holder ->
its wait -> lock ... (at most MAX_WALK steps, reads at one revision); if the walk comes back to
itself, the youngest transaction of the cycle (the largest id) gives way, so exactly one does.

Releases (after commit or abort) run in the background: one Txn of nested Txns, each deleting
one lock key only if it still holds this transaction's id, plus the wait edge. A release that
cannot reach etcd is retried a few times and then left to the lease.
This module knows nothing of SQL.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import struct
from collections.abc import Sequence

from etcd3aio._protobuf import Compare, RangeRequest, RequestOp, TxnRequest
from etcd3aio.kv import KVService

from pillbug.storage.etcd.coord import TRANSIENT_ERRORS, Coordinator, wait_for_event
from pillbug.storage.store import LockGrant, LockWait, RowLockService

_log = logging.getLogger(__name__)

MAX_WALK = 100  # steps of a deadlock walk
RELEASE_BATCH = 1000  # keys per release Txn (etcd --max-txn-ops=4096)
_RELEASE_ATTEMPTS = 3
_FINISHED_REMEMBERED = 4096  # this node's finished transactions whose locks may be taken over
CALL_SECONDS = 10.0  # an etcd call that takes longer: the service "cannot answer now"
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
        self._lock_prefix = namespace + b"x/lock/"
        self._wait_prefix = namespace + b"x/wait/"
        self._data_prefix = namespace + data_prefix
        self._counter = itertools.count(1)
        self._finished: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def txn_id(self, timestamp: int) -> bytes:
        node_id = self.coordinator.node_id
        assert node_id is not None, "the node registers before it locks"
        return _ID.pack(timestamp.to_bytes(16, "big"), node_id, next(self._counter) & 0xFFFFFFFF)

    @staticmethod
    def node_of(txn_id: bytes) -> int:
        return _ID.unpack(txn_id)[1]

    async def lock(self, txn_id: bytes, key: bytes) -> LockGrant | LockWait | None:
        lease = self.coordinator.lease_id
        if lease is None:
            return None
        kv = self.coordinator.kv
        lock_key, wait_key, data_key = self._lock_prefix + key, self._wait_prefix + txn_id, self._data_prefix + key
        take = [KVService.txn_op_put(lock_key, txn_id, lease=lease),
                RequestOp(request_range=_keys_only(data_key)),
                KVService.txn_op_delete(wait_key)]
        look = [KVService.txn_op_get(lock_key), RequestOp(request_range=_keys_only(data_key)),
                KVService.txn_op_put(wait_key, key, lease=lease)]
        free = KVService.txn_compare_create_revision(lock_key, 0)
        try:
            response = await kv.txn([free], take, look, timeout=CALL_SECONDS, max_attempts=1)
            for _ in range(2):  # a takeover can lose to another node's; then it waits
                if response.succeeded:
                    return LockGrant(response.header.revision, _mod(response.responses[1]))
                holders = response.responses[0].response_range.kvs
                if not holders:  # released between the compare and now: try again
                    response = await kv.txn([free], take, look, timeout=CALL_SECONDS, max_attempts=1)
                    continue
                holder = holders[0].value
                if holder == txn_id:
                    return LockGrant(response.header.revision, _mod(response.responses[1]))
                if holder not in self._finished:
                    break
                # A finished transaction of this node: its release is in flight; take over.
                same = Compare(result=Compare.EQUAL, target=Compare.VALUE, key=lock_key, value=holder)
                response = await kv.txn([same], take, look, timeout=CALL_SECONDS, max_attempts=1)
            if response.succeeded:
                return LockGrant(response.header.revision, _mod(response.responses[1]))
        except TRANSIENT_ERRORS as exc:
            _log.warning("row lock on %r: etcd did not answer (%s); going on without it", key, exc)
            return None
        holders = response.responses[0].response_range.kvs
        holder = holders[0].value if holders else b""
        released = asyncio.get_running_loop().create_future()
        watch = self._spawn(self._watch_release(lock_key, response.header.revision + 1, released))
        return _Wait(released, holder, watch)

    async def _watch_release(self, lock_key: bytes, revision: int, released: asyncio.Future) -> None:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await wait_for_event(self.client, lock_key, revision, deletes_only=True)
        if not released.done():
            released.set_result(None)

    async def is_deadlock_victim(self, txn_id: bytes, key: bytes) -> bool:
        kv = self.coordinator.kv
        revision = 0  # the first read's; every later read of the walk is at that revision
        cycle = [txn_id]
        try:
            for _ in range(MAX_WALK):
                found = await kv.get(self._lock_prefix + key, revision=revision, serializable=revision > 0,
                                     timeout=CALL_SECONDS)
                revision = revision or found.header.revision
                if not found.kvs:
                    return False
                holder = found.kvs[0].value
                if holder == txn_id:
                    return max(cycle) == txn_id
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
        if keys:  # (without keys it only withdraws a wait: the transaction goes on)
            self._finished[txn_id] = None
            if len(self._finished) > _FINISHED_REMEMBERED:
                self._finished.popitem(last=False)
        self._spawn(self._release(txn_id, list(keys)))

    async def _release(self, txn_id: bytes, keys: list[bytes]) -> None:
        kv = self.coordinator.kv
        batches = [keys[lo:lo + RELEASE_BATCH] for lo in range(0, len(keys), RELEASE_BATCH)] or [[]]
        for i, batch in enumerate(batches):
            ops = [RequestOp(request_txn=TxnRequest(
                compare=[Compare(result=Compare.EQUAL, target=Compare.VALUE, key=self._lock_prefix + key,
                                 value=txn_id)],
                success=[KVService.txn_op_delete(self._lock_prefix + key)])) for key in batch]
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
        """Let pending releases finish (bounded by CALL_SECONDS each), stop the watches."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_SECONDS)
        for task in self._tasks:
            task.cancel()


def _keys_only(key: bytes) -> RangeRequest:
    return RangeRequest(key=key, keys_only=True)


def _mod(response: object) -> int:
    kvs = response.response_range.kvs  # type: ignore[attr-defined]
    return kvs[0].mod_revision if kvs else 0
