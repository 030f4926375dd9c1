"""The Store contract on etcd (docs/rfcs/0001-cluster.md §2.1-2.4; shared/reference/etcd.md rules 1-5).

Reads. A transaction reads at one revision R, chosen by one linearizable call (current_revision);
every read at R is then a serializable Range at R, served by the local member without a Raft round
trip (etcd rule 5). History at R never changes, so such a read is never stale; a member that has
not applied R yet says "future revision" and the next member is asked. current_revision() calls
are coalesced: callers that arrive before a call is sent share it, and a caller that arrives
while one is in flight waits for the next one (an earlier call could miss a commit it must see).
That call also reads x/clock (fed into the HLC) and the `revision_keys` (the SQL catalog version:
every transaction's first read), so the get of those keys at R that follows costs nothing. get_many
is one read-only Txn of serializable Ranges at R (measured: 0.6-0.9 ms for 50 keys against 7-10 ms
for 50 concurrent Ranges). scan pages with `limit`, skipping tombstones, and halves a page that
comes back too big for the 16 MiB receive limit.

Commits. One etcd Txn: mod_revision(dk) == m per KeyCompare (also sees a delete, rule 2);
mod_revision([da, db)) < R+1 per RangeCompare, plus value(x/gc) < R+1 for the oldest R, because
a range compare does not see an etcd delete and the tombstone GC deletes (rule 1, §2.3);
create_revision(x/txn/<id>) == 0. Success ops: the writes (a delete is a nested Txn that puts a
tombstone and x/tomb/<key> if the key holds a live value), the record x/txn/<id> = COMMITTED, and a nested Txn that raises x/clock to the
commit's HLC stamp. More compares than etcd takes (--max-txn-ops=4096) are merged into covering
ranges: coarser, still correct. A commit is sent once (never retried: a retried commit that had
applied fails its own compares). When its answer is lost (timeout, UNAVAILABLE) the outcome is
settled by poisoning the record (rule 3): if the poison lands first the commit can never apply
(40001); if the record says COMMITTED it did, at the record's mod_revision; if no member answers
for 10 s, CommitOutcomeUnknownError (40003).

Compaction (§2.4) writes the horizon H to x/gc first, deletes tombstones at or below H (each
guarded by its mod_revision, so a row written again meanwhile stays), deletes transaction records
older than 10 minutes, then runs etcd's Compact(H). compacted_revision() is a cache that a watch of
x/gc keeps current. A tombstone at or below the horizon reads as (None, 0), as on LMDB, whether
or not the GC has removed it yet.

The reads that the contract says MAY SUSPEND park the statement's greenlet through
util/timeslice.await_; their coroutine twins (aget, aget_many, ascan, acurrent_revision, ...) are
for code that already runs on the loop.
"""
from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
from etcd3aio import Etcd3Client
from etcd3aio import _protobuf as pb

from pillbug.storage.etcd import keys
from pillbug.storage.etcd.keys import Layout
from pillbug.storage.etcd.transport import (
    CompactedRevision,
    EtcdStats,
    EtcdTLS,
    FutureRevision,
    Transport,
    is_compacted,
    is_transient,
)
from pillbug.storage.store import (
    CommitFailedError,
    CommitOutcomeUnknownError,
    CommitResult,
    CompactedError,
    Compare,
    HeldLocks,
    KeyCompare,
    RangeCompare,
    Store,
    StoreLimits,
    WatchEvent,
)
from pillbug.util import hlc, timeslice

# rfcs/0001 §1: 1,000 writes x up to 3 success ops each stay under --max-txn-ops=4096; 6 MiB of
# writes leave room in --max-request-bytes=8 MiB for compares and framing; 1 MiB values.
LIMITS = StoreLimits(max_ops_per_commit=1000, max_bytes_per_commit=6 << 20, max_value_bytes=1 << 20)
MAX_TXN_OPS = 4096
# Written keys whose lock queue a commit checks (row locks in use); past it a write stays optimistic.
MAX_QUEUE_CHECKS = 64
# Room for the x/gc guard, the record's compare and the lock queue checks.
MAX_COMPARES = MAX_TXN_OPS - 96 - MAX_QUEUE_CHECKS
MAX_READ_OPS = 4000  # Ranges in one get_many Txn
COMMIT_SECONDS = 5.0  # a commit's deadline: past it the outcome is ambiguous and gets settled
SETTLE_SECONDS = 10.0  # how long to try to settle an ambiguous commit (covers an election)
PAGE_ROWS = 1024
GC_PAGE = 1000  # tombstones per GC Txn: 2 compares and 2 deletes each
RECORD_PAGE = 10_000
RECORD_TTL_NS = 600 * 10**9  # records older than this are deleted by compact()
REVISION_CACHE = 16  # revisions whose revision_keys values are kept
STAMP_CACHE = 4096

C = pb.Compare
_DELETE = 1  # mvccpb.Event.DELETE
_LIVE = keys.LIVE[0]


class EtcdStore(Store):
    """Versioned bytes on an etcd cluster. Open with `await EtcdStore.open(endpoints, ...)`."""

    def __init__(self, transport: Transport, layout: Layout, revision_keys: Sequence[bytes],
                 client: Etcd3Client) -> None:
        self._transport = transport
        self._layout = layout
        self.client = client
        self.stats: EtcdStats = transport.stats
        self._revision_keys = [layout.d(k) for k in revision_keys]
        self._revision_keys_user = frozenset(revision_keys)
        # The newest known (revision, (value, mod_revision)) of each revision key: what peek() says.
        self._latest: dict[bytes, tuple[int, tuple[bytes | None, int]]] = {}
        self._clock = hlc.Clock()
        self._revision = 0  # the newest revision seen
        self._compacted = 0  # the GC horizon, from x/gc
        self._values_at: collections.OrderedDict[int, dict[bytes, tuple[bytes | None, int]]] = \
            collections.OrderedDict()
        self._stamps: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._pending: asyncio.Future | None = None  # the next current_revision call, not sent yet
        self._sending: asyncio.Task | None = None  # the current_revision call in flight
        self._gc_watch: asyncio.Task | None = None
        self._closed = False

    @classmethod
    async def open(cls, endpoints: Sequence[str], *, tls: EtcdTLS | None = None, namespace: bytes = b"",
                   revision_keys: Sequence[bytes] = ()) -> EtcdStore:
        """Connect (endpoints[0] is the local member), create x/gc and x/clock if they are absent,
        and start following x/gc."""
        transport = Transport(endpoints, tls, EtcdStats())
        conn: dict[str, Any] = {}
        if tls is not None:
            with open(tls.ca_file, "rb") as f:
                conn["ca_cert"] = f.read()
            with open(tls.key_file, "rb") as f:
                conn["cert_key"] = f.read()
            with open(tls.cert_file, "rb") as f:
                conn["cert_chain"] = f.read()
        client = Etcd3Client([transport.endpoints[0]], **conn)
        await client.connect()
        store = cls(transport, Layout(namespace), revision_keys, client)
        try:
            await store._init()
        except BaseException:
            await store.close()
            raise
        return store

    async def _init(self) -> None:
        layout = self._layout
        init = pb.TxnRequest(
            compare=[C(target=C.CREATE, result=C.EQUAL, key=layout.gc, create_revision=0)],
            success=[_put(layout.gc, keys.u64(0)), _put(layout.clock, keys.stamp(0))],
            failure=[_get(layout.gc), _get(layout.clock)])
        resp = await self._idempotent("Txn", init)  # guarded: sending it twice does no harm
        self._saw(resp.header.revision)
        if not resp.succeeded:
            gc_kvs = resp.responses[0].response_range.kvs
            clock_kvs = resp.responses[1].response_range.kvs
            self._compacted = keys.number(gc_kvs[0].value) if gc_kvs else 0
            if clock_kvs:
                self._clock.update(keys.number(clock_kvs[0].value))
        self._gc_watch = asyncio.ensure_future(self._follow_gc(resp.header.revision + 1))

    # ---- plumbing -------------------------------------------------------------------------

    def _saw(self, revision: int) -> None:
        if revision > self._revision:
            self._revision = revision

    async def _idempotent(self, method: str, request: Any) -> Any:
        """A call that may be sent twice (guarded or idempotent writes): retried like a read."""
        return await self._transport.read(method, request)

    async def _read(self, method: str, request: Any, at: int) -> Any:
        """A serializable read at revision `at`, as CompactedError when etcd compacted it."""
        try:
            return await self._transport.read(method, request)
        except CompactedRevision:
            raise CompactedError(at, max(self._compacted, at + 1)) from None
        except FutureRevision:
            # Nobody has it: it is past the newest revision (LMDB answers the same way).
            raise CompactedError(at, self._compacted) from None

    def _check_horizon(self, at: int) -> None:
        if at < self._compacted:
            raise CompactedError(at, self._compacted)

    def _row(self, kv: Any) -> tuple[bytes | None, int]:
        value = keys.decode_value(kv.value)
        if value is None and kv.mod_revision <= self._compacted:
            return None, 0  # a tombstone below the horizon: gone (or about to be) for every reader
        return value, kv.mod_revision

    # ---- the revision (linearizable) ------------------------------------------------------

    def current_revision(self) -> int:
        return timeslice.await_(self.acurrent_revision())

    async def acurrent_revision(self) -> int:
        """The newest revision, from a linearizable call shared with the callers that arrive
        before it is sent."""
        pending = self._pending
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._pending = loop.create_future()
            pending.add_done_callback(_consume)
            if self._sending is None:
                loop.call_soon(self._send_revision_call)
        return await asyncio.shield(pending)

    def _send_revision_call(self) -> None:
        if self._sending is not None or self._pending is None:
            return
        future, self._pending = self._pending, None
        self._sending = asyncio.ensure_future(self._revision_call(future))

    async def _revision_call(self, future: asyncio.Future) -> None:
        try:
            revision, _ = await self._linearizable_read()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(revision)
        finally:
            self._sending = None
            if self._pending is not None and not self._closed:
                self._send_revision_call()

    def peek(self, key: bytes) -> tuple[bytes | None, int] | None:
        """A revision key's value at the newest linearizable call (no round trip); None for
        other keys (kv/txn.py speculates with it, and checks it at the transaction's first read)."""
        found = self._latest.get(self._layout.d(key))
        return found[1] if found is not None else None

    def _note_latest(self, etcd_key: bytes, revision: int, value: tuple[bytes | None, int]) -> None:
        known = self._latest.get(etcd_key)
        if known is None or known[0] < revision:
            self._latest[etcd_key] = (revision, value)

    def read_now(self, keys_: Sequence[bytes]) -> tuple[int, list[tuple[bytes | None, int]]]:
        return timeslice.await_(self.aread_now(keys_))

    async def aread_now(self, keys_: Sequence[bytes]) -> tuple[int, list[tuple[bytes | None, int]]]:
        """keys read linearizably in the same call that takes the revision (and the revision keys,
        and the clock): a transaction's first read costs one round trip, not two."""
        if len(keys_) > MAX_READ_OPS:
            revision = await self.acurrent_revision()
            return revision, await self.aget_many(keys_, revision)
        return await self._linearizable_read(keys_)

    async def _linearizable_read(self, extra: Sequence[bytes] = ()) -> tuple[int, list[tuple[bytes | None, int]]]:
        layout = self._layout
        request = pb.TxnRequest(success=[_get(layout.clock)] + [_get(k) for k in self._revision_keys]
                                + [_get(layout.d(k)) for k in extra])
        self.stats.linearizable_calls += 1
        resp = await self._transport.read("Txn", request)
        revision = resp.header.revision
        self._saw(revision)
        clock = resp.responses[0].response_range.kvs
        if clock:
            self._clock.update(keys.number(clock[0].value))
        if self._revision_keys:
            values = {}
            for key, response in zip(self._revision_keys, resp.responses[1:]):
                kvs = response.response_range.kvs
                values[key] = self._row(kvs[0]) if kvs else (None, 0)
            for key, value in values.items():
                self._note_latest(key, revision, value)
            cache = self._values_at
            cache[revision] = values
            while len(cache) > REVISION_CACHE:
                cache.popitem(last=False)
        found = []
        for response in resp.responses[1 + len(self._revision_keys):]:
            kvs = response.response_range.kvs
            found.append(self._row(kvs[0]) if kvs else (None, 0))
        return revision, found

    def cached_revision(self) -> int:
        """The newest revision this store has seen (never suspends; for metrics)."""
        return self._revision

    async def healthy(self) -> bool:
        """Can a linearizable read reach a quorum now (through any member)?"""
        request = pb.RangeRequest(key=self._layout.gc)
        for member in range(len(self._transport.kv)):
            try:
                resp = await self._transport.once("Range", request, member, 2.0)
            except grpc.aio.AioRpcError:
                continue
            self._saw(resp.header.revision)
            return True
        return False

    # ---- reads at a revision (serializable) -----------------------------------------------

    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        values = self._values_at.get(at)
        if values is not None:
            found = values.get(self._layout.d(key))
            if found is not None and at >= self._compacted:
                return found
        return timeslice.await_(self.aget(key, at))

    async def aget(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        self._check_horizon(at)
        if at <= 0:
            return None, 0
        self.stats.reads += 1
        resp = await self._read("Range", pb.RangeRequest(key=self._layout.d(key), revision=at,
                                                          serializable=True), at)
        return self._row(resp.kvs[0]) if resp.kvs else (None, 0)

    def get_many(self, keys_: Sequence[bytes], at: int) -> list[tuple[bytes | None, int]]:
        return timeslice.await_(self.aget_many(keys_, at))

    async def aget_many(self, keys_: Sequence[bytes], at: int) -> list[tuple[bytes | None, int]]:
        """One read-only Txn of serializable Ranges at `at` (more Txns, concurrently, past
        MAX_READ_OPS keys)."""
        self._check_horizon(at)
        if at <= 0 or not keys_:
            return [(None, 0)] * len(keys_)
        d = self._layout.d
        chunks = [keys_[i:i + MAX_READ_OPS] for i in range(0, len(keys_), MAX_READ_OPS)]
        self.stats.reads += len(chunks)
        requests = [pb.TxnRequest(success=[_get(d(k), at) for k in chunk]) for chunk in chunks]
        responses = await asyncio.gather(*(self._read("Txn", r, at) for r in requests))
        out: list[tuple[bytes | None, int]] = []
        for resp in responses:
            for op in resp.responses:
                kvs = op.response_range.kvs
                out.append(self._row(kvs[0]) if kvs else (None, 0))
        return out

    def scan(self, start: bytes, end: bytes, at: int, limit: int = 0,
             reverse: bool = False) -> list[tuple[bytes, bytes, int]]:
        return timeslice.await_(self.ascan(start, end, at, limit, reverse))

    async def ascan(self, start: bytes, end: bytes, at: int, limit: int = 0,
                    reverse: bool = False) -> list[tuple[bytes, bytes, int]]:
        self._check_horizon(at)
        if start >= end or at <= 0:
            return []
        layout = self._layout
        lo, hi = layout.data_range(start, end)
        out: list[tuple[bytes, bytes, int]] = []
        page = min(max(limit, 64), PAGE_ROWS) if limit else PAGE_ROWS
        while True:
            request = pb.RangeRequest(key=lo, range_end=hi, revision=at, serializable=True, limit=page)
            if reverse:
                # etcd 3.4 sorts (and so reads) the whole remaining range for a DESCEND page.
                request.sort_order = pb.RangeRequest.DESCEND
                request.sort_target = pb.RangeRequest.KEY
            self.stats.reads += 1
            try:
                resp = await self._read("Range", request, at)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and page > 1:
                    page //= 2  # values too big for one response: ask for fewer
                    continue
                raise
            for kv in resp.kvs:
                raw = kv.value
                if raw[0] == _LIVE:
                    out.append((layout.user_key(kv.key), raw[1:], kv.mod_revision))
                    if limit and len(out) >= limit:
                        return out
            if not resp.more or not resp.kvs:
                return out
            last = resp.kvs[-1].key
            if reverse:
                hi = last
            else:
                lo = last + b"\x00"

    # ---- commits ----------------------------------------------------------------------------

    @property
    def limits(self) -> StoreLimits:
        return LIMITS

    async def commit(self, compares: Sequence[Compare], writes: Sequence[tuple[bytes, bytes | None]],
                     held_locks: HeldLocks | None = None) -> CommitResult:
        if self._closed:
            raise RuntimeError("store is closed")
        layout = self._layout
        ts = self._clock.now()
        txn_id = keys.stamp(ts) + os.urandom(6)
        record = layout.txn_key(txn_id)
        etcd_compares = self._etcd_compares(compares)
        etcd_compares.append(C(target=C.CREATE, result=C.EQUAL, key=record, create_revision=0))
        queued = self._queue_checks(writes, held_locks)
        for key in queued:
            # Nobody queues for this row (an empty range: the compare holds vacuously); else
            # this writer, which does not hold the row's lock, must queue too (locks.py).
            queue = layout.lock_queue(key)
            etcd_compares.append(C(target=C.CREATE, result=C.LESS, key=queue, range_end=keys.prefix_end(queue),
                                   create_revision=1))
        success = []
        for key, value in writes:
            if value is None:
                # Deleting what is absent (or a tombstone already) writes no version, as on LMDB:
                # only a live value (flag 0 < 1) becomes a tombstone; etcd fails a value compare on a
                # missing key.
                data_key = layout.d(key)
                success.append(pb.RequestOp(request_txn=pb.TxnRequest(
                    compare=[C(target=C.VALUE, result=C.LESS, key=data_key, value=keys.TOMBSTONE)],
                    success=[_put(data_key, keys.TOMBSTONE), _put(layout.tomb_key(key), b"")])))
            else:
                success.append(_put(layout.d(key), keys.LIVE + value))
        success.append(_put(record, keys.COMMITTED))
        if held_locks is not None and held_locks.keys:
            # Let go of the row locks in the commit itself: waiters wake as it applies, and no
            # release is left to do (a failed commit applies none of this: kv/ releases then).
            success.extend(_delete(layout.lock_queue(key) + held_locks.txn_id) for key in held_locks.keys)
            success.append(_delete(layout.wait_key(held_locks.txn_id)))
        stamp = keys.stamp(ts)
        success.append(pb.RequestOp(request_txn=pb.TxnRequest(
            compare=[C(target=C.VALUE, result=C.LESS, key=layout.clock, value=stamp)],
            success=[_put(layout.clock, stamp)])))
        request = pb.TxnRequest(compare=etcd_compares, success=success)
        try:
            resp = await self._transport.once("Txn", request, self._transport.writer(), COMMIT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                              grpc.StatusCode.FAILED_PRECONDITION):
                # Refused before it was proposed (too big, no space, not allowed): nothing applied.
                raise CommitFailedError(f"etcd refused the commit: {exc.details()}") from None
            return await self._settle(record, exc)
        revision = resp.header.revision
        self._saw(revision)
        if resp.succeeded:
            self.stats.commits += 1
            if self._revision_keys_user:
                for key, value in writes:
                    if key in self._revision_keys_user:  # this node's own DDL: peek sees it at once
                        self._note_latest(layout.d(key), revision, (value, revision))
            return CommitResult(revision, released_locks=bool(held_locks and held_locks.keys))
        self.stats.conflicts += 1
        return await self._explain(compares, revision, queued)

    def _queue_checks(self, writes: Sequence[tuple[bytes, bytes | None]],
                      held_locks: HeldLocks | None) -> list[bytes]:
        """The written keys whose lock queue the commit checks: with row locks in use, every key
        it writes without holding the lock, up to MAX_QUEUE_CHECKS (a bulk write stays optimistic)."""
        if self.row_locks is None or len(writes) > MAX_QUEUE_CHECKS:
            return []
        held = set(held_locks.keys) if held_locks is not None else ()
        return [key for key, _ in writes if key not in held]

    def _etcd_compares(self, compares: Sequence[Compare]) -> list[Any]:
        d = self._layout.d
        items = [c for c in compares if isinstance(c, KeyCompare) or c.start < c.end]
        if len(items) > MAX_COMPARES:
            items = _merge(items)
        out = []
        oldest = None
        for c in items:
            if isinstance(c, KeyCompare):
                out.append(C(target=C.MOD, result=C.EQUAL, key=d(c.key), mod_revision=c.mod_revision))
            else:
                out.append(C(target=C.MOD, result=C.LESS, key=d(c.start), range_end=d(c.end),
                             mod_revision=c.revision + 1))
                oldest = c.revision if oldest is None else min(oldest, c.revision)
        if oldest is not None:
            # No tombstone that a range compare at `oldest` needs to see has been GC'd.
            out.append(C(target=C.VALUE, result=C.LESS, key=self._layout.gc, value=keys.u64(oldest + 1)))
        return out

    async def _explain(self, compares: Sequence[Compare], at: int, queued: Sequence[bytes] = ()) -> CommitResult:
        """Which compare failed, and on which key: serializable reads at the failed Txn's revision
        (what its compares saw), in one Txn (per MAX_READ_OPS compares)."""
        layout = self._layout
        d = layout.d
        ops = [_get(layout.gc, at)]
        for c in compares:
            if isinstance(c, KeyCompare):
                ops.append(_get(d(c.key), at, keys_only=True))
            elif c.start < c.end:
                ops.append(pb.RequestOp(request_range=pb.RangeRequest(
                    key=d(c.start), range_end=d(c.end), revision=at, serializable=True, keys_only=True,
                    min_mod_revision=c.revision + 1, limit=1)))
            else:
                ops.append(_get(layout.gc, at))  # an empty range: holds; a placeholder keeps positions
        chunks = [ops[i:i + MAX_READ_OPS] for i in range(0, len(ops), MAX_READ_OPS)]
        responses = await asyncio.gather(*(self._read("Txn", pb.TxnRequest(success=chunk), at)
                                           for chunk in chunks))
        found = [op.response_range.kvs for resp in responses for op in resp.responses]
        gc_kvs = found[0]
        horizon = keys.number(gc_kvs[0].value) if gc_kvs else 0
        for c, kvs in zip(compares, found[1:]):
            if isinstance(c, KeyCompare):
                mod = kvs[0].mod_revision if kvs else 0
                if mod != c.mod_revision:
                    return CommitResult(0, c, c.key)
            elif c.start < c.end:
                if c.revision < horizon:
                    return CommitResult(0, c, c.start)  # older than the GC horizon (as on LMDB)
                if kvs:
                    return CommitResult(0, c, layout.user_key(kvs[0].key))
        if queued:
            # A row someone queues for, written without its lock: the writer must queue too.
            reads = [pb.RequestOp(request_range=pb.RangeRequest(
                key=layout.lock_queue(key), range_end=keys.prefix_end(layout.lock_queue(key)), revision=at,
                serializable=True, keys_only=True, limit=1)) for key in queued]
            resp = await self._read("Txn", pb.TxnRequest(success=reads), at)
            for key, op in zip(queued, resp.responses):
                if op.response_range.kvs:
                    return CommitResult(0, KeyCompare(key, 0), key)
        # Only a merged (coarser) compare failed: report the first range it covers that changed.
        for c in _merge([c for c in compares if isinstance(c, KeyCompare) or c.start < c.end]):
            if isinstance(c, RangeCompare):
                resp = await self._read("Range", pb.RangeRequest(
                    key=d(c.start), range_end=d(c.end), revision=at, serializable=True, keys_only=True,
                    min_mod_revision=c.revision + 1, limit=1), at)
                if resp.kvs:
                    return CommitResult(0, c, layout.user_key(resp.kvs[0].key))
        # The record's compare (an id collision) or a horizon between the two reads: retry.
        first = compares[0] if compares else KeyCompare(b"", 0)
        return CommitResult(0, first, first.key if isinstance(first, KeyCompare) else first.start)

    async def _settle(self, record: bytes, cause: grpc.aio.AioRpcError) -> CommitResult:
        """The commit's answer was lost: poison its record and see who won (RFC §2.3)."""
        self.stats.ambiguous_commits += 1
        poison = pb.TxnRequest(
            compare=[C(target=C.CREATE, result=C.EQUAL, key=record, create_revision=0)],
            success=[_put(record, keys.ABORTED)], failure=[_get(record)])
        transport = self._transport
        count = len(transport.kv)
        member = transport.preferred
        deadline = time.monotonic() + SETTLE_SECONDS
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                resp = await transport.once("Txn", poison, member, min(2.0, left))
            except grpc.aio.AioRpcError as exc:
                if not is_transient(exc):
                    break
                member = (member + 1) % count
                attempt += 1
                await asyncio.sleep(min(0.02 * 2 ** min(attempt, 5), 0.5))
                continue
            self._saw(resp.header.revision)
            transport.moved(member)
            kvs = [] if resp.succeeded else resp.responses[0].response_range.kvs
            if kvs and kvs[0].value == keys.COMMITTED:
                self.stats.commits += 1
                return CommitResult(kvs[0].mod_revision)
            # Poisoned now, or by an earlier attempt of ours whose answer was lost too: the commit's
            # own create_revision compare can never hold any more.
            self.stats.conflicts += 1
            engine_key = record[len(self._layout.ns):]
            return CommitResult(0, KeyCompare(engine_key, 0), engine_key)
        self.stats.unknown_commits += 1
        raise CommitOutcomeUnknownError(
            f"etcd did not answer the commit ({cause.code().name}: {cause.details()}) and no member "
            f"could settle it within {SETTLE_SECONDS:.0f} s")

    # ---- the revision clock -----------------------------------------------------------------

    def revision_timestamp(self, revision: int) -> int:
        cached = self._stamps.get(revision)
        if cached is not None and revision >= self._compacted:
            return cached
        return timeslice.await_(self.arevision_timestamp(revision))

    async def arevision_timestamp(self, revision: int) -> int:
        """x/clock as of `revision`: the largest commit stamp up to it."""
        if revision <= 0:
            return 0
        self._check_horizon(revision)
        cached = self._stamps.get(revision)
        if cached is not None:
            return cached
        resp = await self._read("Range", pb.RangeRequest(key=self._layout.clock, revision=revision,
                                                          serializable=True), revision)
        stamp = keys.number(resp.kvs[0].value) if resp.kvs else 0
        self._stamps[revision] = stamp
        while len(self._stamps) > STAMP_CACHE:
            self._stamps.popitem(last=False)
        return stamp

    def revision_at(self, timestamp: int) -> int:
        return timeslice.await_(self.arevision_at(timestamp))

    async def arevision_at(self, timestamp: int) -> int:
        """The newest revision whose stamp is at or before `timestamp`: a binary search (x/clock
        never decreases with the revision), about log2(revisions) serializable Gets."""
        lo, hi = max(self._compacted, 1), await self.acurrent_revision()
        found = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            if await self.arevision_timestamp(mid) <= timestamp:
                found = mid
                lo = mid + 1
            else:
                hi = mid - 1
        return found

    def now(self) -> int:
        return self._clock.now()

    # ---- compaction -------------------------------------------------------------------------

    def compacted_revision(self) -> int:
        return self._compacted

    async def compact(self, revision: int) -> None:
        """Raise the horizon to `revision` (at most the current one); every step is guarded or
        idempotent, so a run cut short is finished by the next one."""
        layout = self._layout
        horizon = max(min(revision, await self.acurrent_revision()), self._compacted)
        if horizon <= 0:
            return
        encoded = keys.u64(horizon)
        await self._idempotent("Txn", pb.TxnRequest(
            compare=[C(target=C.VALUE, result=C.LESS, key=layout.gc, value=encoded)],
            success=[_put(layout.gc, encoded)]))
        self._compacted = max(self._compacted, horizon)
        await self._gc_tombstones(horizon)
        await self._gc_records()
        try:
            await self._idempotent("Compact", pb.CompactionRequest(revision=horizon))
        except grpc.aio.AioRpcError as exc:
            if not is_compacted(exc):
                raise
        except CompactedRevision:
            pass  # etcd is compacted there already (another namespace or compactor did it)

    async def _gc_tombstones(self, horizon: int) -> None:
        layout = self._layout
        lo, hi = layout.tomb, keys.prefix_end(layout.tomb)
        while True:
            resp = await self._transport.read("Range", pb.RangeRequest(
                key=lo, range_end=hi, limit=GC_PAGE, keys_only=True, serializable=True))
            entries = [(kv.key, kv.mod_revision) for kv in resp.kvs if kv.mod_revision <= horizon]
            for _ in range(3):
                if not entries or await self._gc_page(entries):
                    break
            if not resp.more or not resp.kvs:
                return
            lo = resp.kvs[-1].key + b"\x00"

    async def _gc_page(self, entries: list[tuple[bytes, int]]) -> bool:
        """Delete the tombstones of one page whose rows are still those tombstones."""
        layout = self._layout
        cut = len(layout.tomb)
        rows = [layout.d(key[cut:]) for key, _ in entries]
        current = await self._transport.read("Txn", pb.TxnRequest(
            success=[_get(row, keys_only=True) for row in rows]))
        compares, deletes = [], []
        for (tomb, mod), row, op in zip(entries, rows, current.responses):
            kvs = op.response_range.kvs
            compares.append(C(target=C.MOD, result=C.EQUAL, key=tomb, mod_revision=mod))
            deletes.append(pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=tomb)))
            if kvs and kvs[0].mod_revision == mod:
                compares.append(C(target=C.MOD, result=C.EQUAL, key=row, mod_revision=mod))
                deletes.append(pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=row)))
            # else: the row was written again since; only the stale index entry goes.
        resp = await self._idempotent("Txn", pb.TxnRequest(compare=compares, success=deletes))
        self._saw(resp.header.revision)
        return resp.succeeded

    async def _gc_records(self) -> None:
        """Delete transaction records older than RECORD_TTL_NS (ids start with their HLC stamp)."""
        layout = self._layout
        cut = layout.txn + keys.stamp(hlc.pack(max(hlc.wall_ns(self._clock.now()) - RECORD_TTL_NS, 0)))
        while True:
            resp = await self._transport.read("Range", pb.RangeRequest(
                key=layout.txn, range_end=cut, limit=RECORD_PAGE, keys_only=True, serializable=True))
            if not resp.kvs:
                return
            await self._idempotent("DeleteRange", pb.DeleteRangeRequest(
                key=layout.txn, range_end=resp.kvs[-1].key + b"\x00"))
            if not resp.more:
                return

    async def _follow_gc(self, from_revision: int) -> None:
        """Keep compacted_revision() current with the x/gc that other gateways' compactors write."""
        gc = self._layout.gc
        while not self._closed:
            try:
                async for kv, _ in self._watch_raw(gc, b"", from_revision):
                    self._compacted = max(self._compacted, keys.number(kv.value))
                return
            except CompactedError:
                # We fell behind etcd's compaction: read x/gc now and follow it from there.
                resp = await self._transport.read("Range", pb.RangeRequest(key=gc))
                if resp.kvs:
                    self._compacted = max(self._compacted, keys.number(resp.kvs[0].value))
                from_revision = resp.header.revision + 1

    # ---- watch ------------------------------------------------------------------------------

    async def watch(self, prefix: bytes, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under prefix from `from_revision` on; the tombstone GC's etcd deletes are not
        changes (the tombstone was reported when it was written)."""
        layout = self._layout
        lo, hi = layout.data_prefix(prefix)
        async for kv, deleted in self._watch_raw(lo, hi, max(from_revision, 1)):
            if not deleted:
                yield WatchEvent(kv.mod_revision, layout.user_key(kv.key), keys.decode_value(kv.value))

    async def _watch_raw(self, key: bytes, range_end: bytes, from_revision: int) -> AsyncIterator[Any]:
        """(kv, is_delete) from a watch stream, resumed on another member when one fails."""
        transport = self._transport
        member = transport.preferred
        next_revision = from_revision
        failures = 0
        while True:
            request = pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=next_revision))
            stream = transport.watch[member].Watch(_requests(request))
            try:
                async for resp in stream:
                    if resp.compact_revision:
                        raise CompactedError(next_revision, resp.compact_revision)
                    if resp.canceled:
                        raise RuntimeError(f"etcd canceled the watch: {resp.cancel_reason}")
                    failures = 0
                    for event in resp.events:
                        kv = event.kv
                        next_revision = kv.mod_revision + 1
                        yield kv, event.type == _DELETE
                    if resp.header.revision >= next_revision and not resp.events and not resp.created:
                        next_revision = resp.header.revision + 1
                return
            except grpc.aio.AioRpcError as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                member = (member + 1) % len(transport.watch)
                await asyncio.sleep(min(0.05 * 2 ** min(failures, 5), 1.0))
            finally:
                stream.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._gc_watch is not None:
            self._gc_watch.cancel()
            try:
                await self._gc_watch
            except BaseException:  # noqa: BLE001 - it was canceled; whatever it raised is moot
                pass
        if self._sending is not None:
            self._sending.cancel()
        await self.client.close()
        await self._transport.close()


def _delete(key: bytes) -> Any:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))


def _put(key: bytes, value: bytes) -> Any:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))


def _get(key: bytes, at: int = 0, keys_only: bool = False) -> Any:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, revision=at, serializable=at > 0,
                                                      keys_only=keys_only))


async def _requests(first: Any) -> AsyncIterator[Any]:
    """A watch stream's requests: the create request, then nothing until the stream ends."""
    yield first
    await asyncio.Event().wait()


def _consume(future: asyncio.Future) -> None:
    """Retrieve a shared future's exception, so that nobody waiting is no error to log."""
    if not future.cancelled():
        future.exception()


def _merge(compares: Sequence[Compare]) -> list[Compare]:
    """At most MAX_COMPARES compares covering `compares`: neighbours (in key order) are merged into
    one RangeCompare over their span, at the oldest revision any of them guards. A merged range
    fails on any change in the gaps too: coarser, never wrong, because every read of a transaction
    is at one revision R >= every mod_revision it saw (so "unchanged since R" implies "still m"),
    and deletes are tombstones."""
    spans = []
    for c in compares:
        if isinstance(c, KeyCompare):
            spans.append((c.key, c.key + b"\x00", None, c.mod_revision, c))
        else:
            spans.append((c.start, c.end, c.revision, 0, c))
    spans.sort(key=lambda s: s[0])
    size = -(-len(spans) // MAX_COMPARES)
    out: list[Compare] = []
    for i in range(0, len(spans), size):
        group = spans[i:i + size]
        if len(group) == 1:
            out.append(group[0][4])
            continue
        range_revs = [s[2] for s in group if s[2] is not None]
        key_mods = [s[3] for s in group if s[2] is None]
        revision = min(range_revs) if range_revs else max(key_mods)
        if any(s[2] is None and s[3] > revision for s in group):
            out.extend(s[4] for s in group)  # a key written after the ranges' revision: not coverable
            continue
        out.append(RangeCompare(group[0][0], max(s[1] for s in group), revision))
    return out
