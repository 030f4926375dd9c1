"""Serializable transactions over the Store contract: optimistic, first committer wins.

A transaction reads at one revision (its snapshot), records what it read (each key with the
mod_revision it saw, and each scanned span), buffers its writes (and reads them back), and
commits with one conditional commit whose compares are its read set. If any read is stale at
commit time, another transaction committed a conflicting write first: the commit fails with
SQLSTATE 40001 and none of this transaction's writes become visible.

Why that is SERIALIZABLE: a commit applies all writes at one new revision, and only if every
read would return the same thing at that revision, so each read-write transaction is equivalent
to running all at once at its commit point; read-only transactions read one committed prefix.
Spans make phantoms conflicts too: a scan records [start, end) and any write into it after the
snapshot fails the compare.

Picture (revisions left to right; T1 and T2 both read x at r5, both write y):
  r5  x=1            T1: read x@5, write y    T2: read x@5, write x
  r6  x=2 (T2 commits first)
  T1 commits: compare "x still at r5" fails -> 40001; T1 restarts at r6 and sees x=2.

Locks (kv/locks.py): get_for_update() takes a key's lock before reading it, so that writers of
one row queue rather than fail at commit; when the key changed after the snapshot, the snapshot
moves forward (refresh) if nothing else this transaction read changed meanwhile, else it reads
at its old snapshot and fails at commit. Locks go when the transaction commits, fails or is
abandoned. The commit's compares stay the only thing that SERIALIZABLE rests on. On a store
shared by several nodes (Store.row_locks), keys this node has seen contended are locked in the
cluster too (kv/locks.py lock_in_cluster), and a key whose commit compare failed becomes such a
key; that lock's step also reads the row's current version, which then decides the refresh.

Savepoints: savepoint() returns a position in an undo log of the writes made since the first
savepoint was taken; rollback_to() undoes the writes after it. Reads stay recorded: the undone
work may have influenced what the client did next, and keeping them can only add conflicts.

This module knows nothing of SQL; it deals in keys and values.
"""
from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Iterator, Sequence

from pillbug.kv.locks import DEADLOCK_WALK_SECONDS, LockTable, deadlock, lock_in_cluster
from pillbug.storage.store import (
    CommitFailedError,
    CommitOutcomeUnknownError,
    CommitResult,
    CompactedError,
    HeldLocks,
    KeyCompare,
    RangeCompare,
    Store,
)
from pillbug.util import errors, timeslice
from pillbug.util.encoding import pretty_key

_SCAN_BATCH = 1024
# Keys per store call of a batched read (get_many): a networked store's request stays small.
GET_MANY_BATCH = 1024
# Bounds on what one transaction may accumulate; a client can grow these with one statement.
# (What one commit may write is the engine's to say: Store.limits.)
MAX_UNDO_ENTRIES = 4_000_000
MAX_READ_SPANS = 100_000
# A refresh re-reads the spans this transaction scanned; past this many rows it gives up (40001).
MAX_REFRESH_ROWS = 10_000
# Cluster row locks one transaction takes (each a replicated write); past this, only optimism.
MAX_CLUSTER_LOCKS = 1_000

_ABSENT = object()  # undo log: the key had no buffered write before


class Txn:
    """One transaction. Not shared between sessions; lives on the event loop's thread."""

    __slots__ = ("store", "_read_revision", "timestamp", "reads", "spans", "writes", "_write_bytes",
                 "_limits", "_sorted_write_keys", "is_read_only_snapshot", "writes_refused",
                 "committed_revision", "conflict_key", "_undo", "_done", "locks", "locked", "waiting_for",
                 "_prefetched", "store_calls", "txn_id", "cluster_locked", "_speculated", "_may_speculate")

    def __init__(self, store: Store, read_revision: int | None = None,
                 is_read_only_snapshot: bool = False, writes_refused: str | None = None,
                 locks: LockTable | None = None, speculate: bool = False) -> None:
        self.store = store
        self.locks = locks
        self.locked: list[bytes] = []  # keys whose lock this transaction holds
        self.waiting_for: bytes | None = None  # the key whose lock it waits for
        self.txn_id: bytes | None = None  # its id in the cluster's row locks, once it takes one
        self.cluster_locked: list[bytes] = []  # keys whose cluster lock (Store.row_locks) it holds
        # Taken at the first read (read_revision), not here: a networked store's current
        # revision is a round trip, which a transaction that only writes never needs.
        self._read_revision = read_revision
        # (key, mod_revision) of a value answered from store.peek(), not yet checked (get()).
        self._speculated: tuple[bytes, int] | None = None
        self._may_speculate = speculate
        # Values prefetch() read from the store at read_revision, for the get() calls that follow.
        self._prefetched: dict[bytes, bytes | None] | None = None
        # Reads sent to the store (get, get_many, scan batches): EXPLAIN ANALYZE's KV calls.
        self.store_calls = 0
        self.timestamp = store.now()
        self.reads: dict[bytes, int] = {}
        self.spans: list[tuple[bytes, bytes]] = []
        self.writes: dict[bytes, bytes | None] = {}
        self._write_bytes = 0  # the keys and values in `writes` (Store.limits)
        self._limits = store.limits
        self._sorted_write_keys: list[bytes] | None = None
        # AS OF SYSTEM TIME: reads at an old revision, records no reads, refuses writes.
        self.is_read_only_snapshot = is_read_only_snapshot
        if writes_refused is None and is_read_only_snapshot:
            writes_refused = "AS OF SYSTEM TIME"
        # Why writes are refused (a READ ONLY or AS OF SYSTEM TIME transaction), or None.
        self.writes_refused = writes_refused
        self.committed_revision = 0
        self.conflict_key: bytes | None = None  # set when commit fails a compare
        self._undo: list[tuple[bytes, object]] | None = None
        self._done = False

    # ---- reads ---------------------------------------------------------------------------

    @property
    def read_revision(self) -> int:
        """The snapshot this transaction reads, fixed by its first use."""
        revision = self._read_revision
        if revision is None:
            revision = self.store.current_revision()
            speculated = self._speculated
            if speculated is not None:
                self._check_speculation(self.store.get(speculated[0], revision)[1])
            self._read_revision = revision
        return revision

    def _check_speculation(self, mod: int) -> None:
        """The key answered from store.peek() has the version it was answered with at this
        transaction's revision, or the transaction starts over (it acted on a stale value)."""
        key, speculated_mod = self._speculated  # type: ignore[misc]
        self._speculated = None
        if mod != speculated_mod:
            self.conflict_key = key
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: TransactionRetryError: retry txn "
                f"(RETRY_SERIALIZABLE - a newer value of key {pretty_key(key)} committed before this "
                f"transaction's first read)")

    def check_speculation(self) -> None:
        """Settle a value answered from store.peek() now (before reporting an error that it may
        have caused: a name that a newer catalog has): raises 40001 if it was stale."""
        if self._speculated is not None and self._read_revision is None:
            self.read_revision  # noqa: B018 - taking the revision checks the speculation

    def _first_read(self, keys: Sequence[bytes]) -> list[tuple[bytes | None, int]]:
        """The first store read of a transaction that answered a key from store.peek(): the
        keys, the revision and that key's check in one call (store.read_now)."""
        speculated = self._speculated
        assert speculated is not None and self._read_revision is None
        self.store_calls += 1
        revision, found = self.store.read_now([speculated[0], *keys])
        self._check_speculation(found[0][1])
        self._read_revision = revision
        return found[1:]

    @read_revision.setter
    def read_revision(self, revision: int) -> None:
        self._read_revision = revision
        self._prefetched = None  # read at the old snapshot

    def prefetch(self, keys: Sequence[bytes]) -> None:
        """Read keys now, with get_many, so that the get() of each that follows makes no store
        call: a statement that checks a batch of rows one by one (uniqueness) reads them in one
        call. Only the latest prefetch is kept (a batch's worth), and only values from the
        store: this transaction's writes, made before or after, still win in get()."""
        writes = self.writes
        wanted = list(dict.fromkeys(key for key in keys if key not in writes))
        self._prefetched = None
        if not wanted:
            return
        values = self.get_many(wanted)
        self._prefetched = dict(zip(wanted, values))

    def get(self, key: bytes) -> bytes | None:
        writes = self.writes
        if key in writes:
            return writes[key]
        prefetched = self._prefetched
        if prefetched is not None and key in prefetched:
            return prefetched[key]
        if self._read_revision is None and not self.is_read_only_snapshot:
            if self._speculated is None and self._may_speculate and not self.reads:
                peeked = self.store.peek(key)
                if peeked is not None:
                    # A key the engine keeps at hand (the catalog version): answered now, checked
                    # at the first read, which then costs one round trip for both.
                    self._speculated = (key, peeked[1])
                    self.reads[key] = peeked[1]
                    return peeked[0]
            elif self._speculated is not None:
                try:
                    value, mod = self._first_read([key])[0]
                except CompactedError as exc:
                    raise self._too_old(exc) from None
                self.reads[key] = mod
                return value
        try:
            self.store_calls += 1
            value, mod = self.store.get(key, self.read_revision)
        except CompactedError as exc:
            raise self._too_old(exc) from None
        if not self.is_read_only_snapshot:
            self.reads[key] = mod
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """get() of every key, in order: this transaction's own writes first, the rest with one
        store call per GET_MANY_BATCH keys; every key read from the store joins the read set."""
        writes = self.writes
        out: list[bytes | None] = [None] * len(keys)
        missing = []  # positions to read from the store
        for i, key in enumerate(keys):
            if key in writes:
                out[i] = writes[key]
            else:
                missing.append(i)
        record = not self.is_read_only_snapshot
        reads = self.reads
        for lo in range(0, len(missing), GET_MANY_BATCH):
            chunk = missing[lo:lo + GET_MANY_BATCH]
            try:
                if self._speculated is not None and self._read_revision is None:
                    found = self._first_read([keys[i] for i in chunk])
                else:
                    found = self._store_get_many([keys[i] for i in chunk], self.read_revision)
            except CompactedError as exc:
                raise self._too_old(exc) from None
            for i, (value, mod) in zip(chunk, found):
                out[i] = value
                if record:
                    reads[keys[i]] = mod
        return out

    def _too_old(self, exc: CompactedError) -> errors.PgError:
        """A read below the compaction horizon: AS OF SYSTEM TIME asked for it (22023, as
        CockroachDB says it); any other transaction may retry at a newer revision (40001)."""
        return _too_old(exc) if self.is_read_only_snapshot else _too_old_to_read(exc)

    def _store_get_many(self, keys: Sequence[bytes], at: int) -> list[tuple[bytes | None, int]]:
        self.store_calls += 1
        return self.store.get_many(keys, at)

    def get_for_update(self, key: bytes, wait: Callable[[asyncio.Future, float], None]) -> bytes | None:
        """get(), after taking key's lock; wait(future, began) blocks until the future is
        resolved or a while has passed, and raises to give up (a canceled statement, a lock
        timeout counted from `began`)."""
        return self.get_many_for_update([key], wait)[0]

    def get_many_for_update(self, keys: Sequence[bytes],
                            wait: Callable[[asyncio.Future, float], None]) -> list[bytes | None]:
        """get_many(), after taking every key's lock (see get_for_update).

        Locks are taken in key order, so that two statements locking overlapping batches queue
        rather than deadlock; then one store call finds which keys changed since the snapshot
        and, when any did, the snapshot moves on (refresh) before the batch is read with one call.
        """
        locks = self.locks
        if locks is None or self.writes_refused is not None:
            return self.get_many(keys)
        writes = self.writes
        to_lock = sorted({key for key in keys if key not in writes})
        if not to_lock:
            return self.get_many(keys)
        service = self.store.row_locks
        for key in to_lock:
            future = locks.acquire(self, key)
            began = time.monotonic()
            walk_at = began
            noted: bytes | None = None  # the lock txn id whose wait etcd records
            try:
                while future is not None:
                    self.waiting_for = key
                    try:
                        if service is not None and self.txn_id is not None:
                            # It holds cluster locks and now waits in this node's table: a cycle
                            # through this wait spans nodes, and only a walk through etcd sees it.
                            if noted is None:
                                noted = self.txn_id
                                timeslice.await_(service.note_wait(noted, key))
                            now = time.monotonic()
                            if now >= walk_at:
                                walk_at = now + DEADLOCK_WALK_SECONDS
                                if timeslice.await_(service.is_deadlock_victim(noted, key)):
                                    raise deadlock(key)
                        wait(future, began)
                    finally:
                        self.waiting_for = None
                    future = locks.acquire(self, key)
            finally:
                if noted is not None and service is not None:
                    service.clear_wait(noted)
        store = self.store
        if store.row_locks is not None:
            granted = self._lock_in_cluster(to_lock, wait)
            if granted is None:
                # Rows this node has not seen contended stay optimistic in a cluster: checking
                # for a newer version would cost two round trips (the newest revision, then the
                # rows' versions at it) on every write; a conflict at commit marks the row hot,
                # and the retry queues for its lock, which reads the current version for free.
                return self.get_many(keys)
        else:
            granted = None
        if granted is not None:
            # Every key was locked in the cluster, each with its current version: no read needed.
            newest = max(revision for revision, _ in granted)
            read_revision = self.read_revision
            changed = any(mod > read_revision for _, mod in granted)
        else:
            newest = store.current_revision()
            read_revision = self.read_revision
            changed = False
            if newest > read_revision:
                try:
                    changed = any(mod > read_revision for lo in range(0, len(to_lock), GET_MANY_BATCH)
                                  for _, mod in self._store_get_many(to_lock[lo:lo + GET_MANY_BATCH], newest))
                except CompactedError as exc:
                    raise self._too_old(exc) from None
        if changed and newest > read_revision:
            # A newer version committed since this snapshot was taken: move the snapshot on if
            # nothing this transaction read has changed meanwhile. If something has, it reads
            # the old version and its commit fails with 40001 (as CockroachDB's does when a
            # refresh fails): no write is ever made on top of a version it did not read.
            self._refresh(newest)
        return self.get_many(keys)

    def _lock_in_cluster(self, keys: list[bytes],
                         wait: Callable[[asyncio.Future, float], None]) -> list[tuple[int, int]] | None:
        """Take the cluster lock of each hot key (in key order); the (revision, mod_revision)
        read with each when every key was locked now, else None (the caller reads)."""
        service = self.store.row_locks
        locks = self.locks
        assert service is not None and locks is not None
        hot = locks.hot
        granted: list[tuple[int, int]] = []
        for key in keys:
            if key in self.cluster_locked or not hot.is_hot(key) or len(self.cluster_locked) >= MAX_CLUSTER_LOCKS:
                continue
            if self.txn_id is None:
                self.txn_id = service.txn_id(self.timestamp)
            grant = lock_in_cluster(service, self.txn_id, key, self, hot, wait)
            if grant is not None:
                self.cluster_locked.append(key)
                granted.append((grant.revision, grant.mod_revision))
        return granted if len(granted) == len(keys) else None

    def _refresh(self, new: int) -> None:
        """Move the snapshot to revision `new`, if everything read so far is unchanged."""
        try:
            changed = self._changed_read(self.read_revision, new)
        except CompactedError:
            return
        if changed is None:
            self.read_revision = new

    def _changed_read(self, old: int, new: int) -> bytes | None:
        """A key (or the start of a span) this transaction read that changed after `old`."""
        store = self.store
        changed = None
        reads = list(self.reads.items())
        for lo in range(0, len(reads), GET_MANY_BATCH):  # one store call per batch of keys
            chunk = reads[lo:lo + GET_MANY_BATCH]
            found = self._store_get_many([k for k, _ in chunk], new)
            changed = next((k for (k, mod), (_, now) in zip(chunk, found) if now != mod), None)
            if changed is not None:
                break
        budget = MAX_REFRESH_ROWS
        for start, end in self.spans if changed is None else ():
            self.store_calls += 2
            before = store.scan(start, end, old, budget + 1)
            after = store.scan(start, end, new, budget + 1)
            budget -= max(len(before), len(after))
            if budget < 0 or [(k, m) for k, _, m in before] != [(k, m) for k, _, m in after]:
                return start
        return changed

    def scan(self, start: bytes, end: bytes, limit: int = 0,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs in [start, end), merged with this transaction's writes.

        Reads in batches so that a scan whose consumer stops early (LIMIT) reads little; the
        span recorded for conflict checks is what was actually read from the store: a batch is
        recorded before any of its rows is handed out, and a stop before the next batch leaves
        the rest of the range unrecorded (and unread).
        """
        record = not self.is_read_only_snapshot
        lo, hi = start, end
        produced = 0
        while lo < hi:
            batch_limit = _SCAN_BATCH if not limit else min(_SCAN_BATCH, limit - produced)
            try:
                self.store_calls += 1
                rows = self.store.scan(lo, hi, self.read_revision, batch_limit, reverse)
            except CompactedError as exc:
                raise self._too_old(exc) from None
            exhausted = len(rows) < batch_limit
            if exhausted:
                covered = (lo, hi)
            elif reverse:
                covered = (rows[-1][0], hi)
            else:
                covered = (lo, rows[-1][0] + b"\x00")
            if record:
                self._record_span(*covered)
            for key, value in self._merge_writes(rows, covered[0], covered[1], reverse):
                yield key, value
                produced += 1
                if limit and produced >= limit:
                    return
            if exhausted:
                return
            if reverse:
                hi = rows[-1][0]
            else:
                lo = rows[-1][0] + b"\x00"

    def _record_span(self, start: bytes, end: bytes) -> None:
        spans = self.spans
        if spans and spans[-1] == (start, end):  # the same scan again
            return
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        elif spans and spans[-1][0] == end:  # the next batch of a reverse scan
            spans[-1] = (start, spans[-1][1])
        else:
            if len(spans) >= MAX_READ_SPANS:
                # Collapse into one covering span: still correct, only less precise.
                lo = min(s for s, _ in spans)
                hi = max(e for _, e in spans)
                spans[:] = [(lo, hi)]
            spans.append((start, end))

    def _merge_writes(self, rows: list[tuple[bytes, bytes, int]], start: bytes, end: bytes,
                      reverse: bool) -> list[tuple[bytes, bytes]]:
        if not self.writes:
            return [(k, v) for k, v, _ in rows]
        keys = self._write_keys()
        i = bisect.bisect_left(keys, start)
        j = bisect.bisect_left(keys, end)
        if i == j:
            return [(k, v) for k, v, _ in rows]
        writes = self.writes
        merged: dict[bytes, bytes | None] = {k: v for k, v, _ in rows}
        for k in keys[i:j]:
            merged[k] = writes[k]
        out = [(k, v) for k, v in merged.items() if v is not None]
        out.sort(reverse=reverse)
        return out

    def _write_keys(self) -> list[bytes]:
        if self._sorted_write_keys is None:
            self._sorted_write_keys = sorted(self.writes)
        return self._sorted_write_keys

    # ---- writes --------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        self._write(key, value)

    def delete(self, key: bytes) -> None:
        self._write(key, None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        writes = self.writes
        if self.writes_refused is not None:
            self._refuse_write()
        limits = self._limits
        size = len(value) if value is not None else 0
        if size > limits.max_value_bytes:
            raise _over_limit(f"a value of {size} bytes", limits.max_value_bytes, "bytes per value",
                              "max_value_bytes")
        if key not in writes:
            if len(writes) >= limits.max_ops_per_commit:
                raise _over_limit("transaction", limits.max_ops_per_commit, "operations per commit",
                                  "max_ops_per_commit")
            grown = self._write_bytes + len(key) + size
        else:
            previous = writes[key]
            grown = self._write_bytes + size - (len(previous) if previous is not None else 0)
        if grown > limits.max_bytes_per_commit:
            raise _over_limit("transaction", limits.max_bytes_per_commit, "bytes per commit",
                              "max_bytes_per_commit")
        if key not in writes:
            self._sorted_write_keys = None
            if self._undo is not None:
                self._log_undo(key, _ABSENT)
        elif self._undo is not None:
            self._log_undo(key, writes[key])
        writes[key] = value
        self._write_bytes = grown

    def _log_undo(self, key: bytes, previous: object) -> None:
        undo = self._undo
        assert undo is not None
        if len(undo) >= MAX_UNDO_ENTRIES:
            raise errors.program_limit_exceeded(
                f"transaction made more than {MAX_UNDO_ENTRIES} writes under savepoints; "
                f"release savepoints or split the transaction")
        undo.append((key, previous))

    def _refuse_write(self) -> None:
        if self.writes_refused is not None:
            raise errors.PgError(errors.READ_ONLY_SQL_TRANSACTION,
                                 f"cannot execute a write in a read-only transaction ({self.writes_refused})")

    @property
    def has_writes(self) -> bool:
        return bool(self.writes)

    @property
    def is_active(self) -> bool:
        """Whether the transaction has read or written anything yet."""
        return bool(self.reads or self.spans or self.writes)

    # ---- savepoints ----------------------------------------------------------------------

    def savepoint(self) -> int:
        """A token that rollback_to() returns this transaction's writes to."""
        if self._undo is None:
            self._undo = []
        return len(self._undo)

    def rollback_to(self, token: int) -> None:
        undo = self._undo
        assert undo is not None and 0 <= token <= len(undo), "unknown savepoint token"
        writes = self.writes
        while len(undo) > token:
            key, previous = undo.pop()
            current = writes[key]
            self._write_bytes -= len(current) if current is not None else 0
            if previous is _ABSENT:
                del writes[key]
                self._write_bytes -= len(key)
            else:
                writes[key] = previous  # type: ignore[assignment]
                self._write_bytes += len(previous) if previous is not None else 0  # type: ignore[arg-type]
        self._sorted_write_keys = None

    def forget_savepoints(self) -> None:
        """No savepoint can be rolled back to any more: stop keeping the undo log."""
        self._undo = None

    # ---- commit --------------------------------------------------------------------------

    async def commit(self) -> int:
        """Commit; returns the commit revision (the read revision for a read-only transaction).

        Raises a 40001 PgError when a read is no longer current.
        """
        assert not self._done, "transaction already finished"
        self._done = True
        try:
            return await self._commit()
        finally:
            if self.locked or self.cluster_locked:
                self.release_locks()

    async def _commit(self) -> int:
        if not self.writes:
            # A read-only transaction read one consistent snapshot: nothing to check.
            self.committed_revision = self.read_revision
            return self.read_revision
        read_revision = self._read_revision  # None: it read nothing, so it needed no snapshot
        compares: list = [KeyCompare(k, m) for k, m in self.reads.items()]
        compares.extend(RangeCompare(s, e, read_revision) for s, e in self.spans)
        try:
            held = HeldLocks(self.txn_id, list(self.cluster_locked)) if self.cluster_locked and self.txn_id else None
            result: CommitResult = await self.store.commit(compares, list(self.writes.items()), held)
        except CommitFailedError as exc:
            raise errors.PgError(errors.IO_ERROR, f"commit failed, nothing was written: {exc}") from None
        except CommitOutcomeUnknownError as exc:
            raise errors.statement_completion_unknown(
                f"result is ambiguous (the commit may or may not have applied): {exc}") from None
        if not result.succeeded:
            self.conflict_key = result.conflict_key
            if self.locks is not None and result.conflict_key is not None and self.store.row_locks is not None:
                self.locks.hot.note(result.conflict_key)  # its writers queue from now on
            if isinstance(result.failed, RangeCompare):
                what = (f"committed value on key {pretty_key(result.conflict_key)} in a span this "
                        f"transaction scanned")
            else:
                what = f"committed value on key {pretty_key(result.conflict_key)}"
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: TransactionRetryError: retry txn "
                f"(RETRY_SERIALIZABLE - failed preemptive refresh due to a conflict: {what})")
        assert read_revision is None or result.revision > read_revision
        if result.released_locks:
            self.cluster_locked = []  # the commit let go of them: nothing left to release
        self.committed_revision = result.revision
        return result.revision

    def abandon(self) -> None:
        self._done = True
        if self.locked or self.cluster_locked:
            self.release_locks()

    def release_locks(self) -> None:
        """Let go of every lock (the transaction failed; its writes may still be undone)."""
        assert self.locks is not None
        self.locks.release_all(self)
        if self.cluster_locked:
            service = self.store.row_locks
            assert service is not None and self.txn_id is not None
            service.release(self.txn_id, self.cluster_locked)  # in the background
            self.cluster_locked = []
            # Locks it takes again are a new holder's: the background release must not free them.
            self.txn_id = None

    @property
    def is_done(self) -> bool:
        return self._done


def _over_limit(what: str, limit: int, unit: str, name: str) -> errors.PgError:
    return errors.program_limit_exceeded(
        f"{what} exceeds the store's limit of {limit} {unit} ({name}); split it into smaller transactions")


def _too_old(exc: CompactedError) -> errors.PgError:
    return errors.PgError(errors.INVALID_PARAMETER_VALUE,
                          f"batch timestamp must be after replica GC threshold "
                          f"(revision {exc.revision} < {exc.compacted})")


def _too_old_to_read(exc: CompactedError) -> errors.PgError:
    # A transaction that chose its own snapshot (not AS OF SYSTEM TIME) and outlived the horizon
    # (or met a store compacted under it, e.g. etcd's) is retried from a new snapshot: 40001.
    return errors.serialization_failure(
        f"TransactionRetryError: retry txn (RETRY_SERIALIZABLE - its read revision {exc.revision} was "
        f"compacted away, below {exc.compacted})")
