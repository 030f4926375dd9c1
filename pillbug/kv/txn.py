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
abandoned. The commit's compares stay the only thing that SERIALIZABLE rests on.

Savepoints: savepoint() returns a position in an undo log of the writes made since the first
savepoint was taken; rollback_to() undoes the writes after it. Reads stay recorded: the undone
work may have influenced what the client did next, and keeping them can only add conflicts.

This module knows nothing of SQL; it deals in keys and values.
"""
from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Iterator

from pillbug.kv.locks import LockTable
from pillbug.storage.store import (
    CommitFailedError,
    CommitOutcomeUnknownError,
    CommitResult,
    CompactedError,
    KeyCompare,
    RangeCompare,
    Store,
)
from pillbug.util import errors
from pillbug.util.encoding import pretty_key

_SCAN_BATCH = 1024
# Bounds on what one transaction may accumulate; a client can grow these with one statement.
MAX_TXN_WRITES = 2_000_000
MAX_UNDO_ENTRIES = 2 * MAX_TXN_WRITES
MAX_READ_SPANS = 100_000
# A refresh re-reads the spans this transaction scanned; past this many rows it gives up (40001).
MAX_REFRESH_ROWS = 10_000

_ABSENT = object()  # undo log: the key had no buffered write before


class Txn:
    """One transaction. Not shared between sessions; lives on the event loop's thread."""

    __slots__ = ("store", "read_revision", "timestamp", "reads", "spans", "writes",
                 "_sorted_write_keys", "is_read_only_snapshot", "writes_refused", "committed_revision",
                 "conflict_key", "_undo", "_done", "locks", "locked", "waiting_for")

    def __init__(self, store: Store, read_revision: int | None = None,
                 is_read_only_snapshot: bool = False, writes_refused: str | None = None,
                 locks: LockTable | None = None) -> None:
        self.store = store
        self.locks = locks
        self.locked: list[bytes] = []  # keys whose lock this transaction holds
        self.waiting_for: bytes | None = None  # the key whose lock it waits for
        self.read_revision = store.current_revision() if read_revision is None else read_revision
        self.timestamp = store.now()
        self.reads: dict[bytes, int] = {}
        self.spans: list[tuple[bytes, bytes]] = []
        self.writes: dict[bytes, bytes | None] = {}
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

    def get(self, key: bytes) -> bytes | None:
        writes = self.writes
        if key in writes:
            return writes[key]
        try:
            value, mod = self.store.get(key, self.read_revision)
        except CompactedError as exc:
            raise _too_old(exc) from None
        if not self.is_read_only_snapshot:
            self.reads[key] = mod
        return value

    def get_for_update(self, key: bytes, wait: Callable[[asyncio.Future, float], None]) -> bytes | None:
        """get(), after taking key's lock; wait(future, began) blocks until the future is
        resolved or a while has passed, and raises to give up (a canceled statement, a lock
        timeout counted from `began`)."""
        locks = self.locks
        if locks is None or key in self.writes or self.writes_refused is not None:
            return self.get(key)
        future = locks.acquire(self, key)
        began = time.monotonic()
        while future is not None:
            self.waiting_for = key
            try:
                wait(future, began)
            finally:
                self.waiting_for = None
            future = locks.acquire(self, key)
        store = self.store
        newest = store.current_revision()
        if newest > self.read_revision and store.get(key, newest)[1] > self.read_revision:
            # A newer version committed since this snapshot was taken: move the snapshot on if
            # nothing this transaction read has changed meanwhile. If something has, it reads
            # the old version and its commit fails with 40001 (as CockroachDB's does when a
            # refresh fails): no write is ever made on top of a version it did not read.
            self._refresh(newest)
        return self.get(key)

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
        changed = next((k for k, mod in self.reads.items() if store.get(k, new)[1] != mod), None)
        budget = MAX_REFRESH_ROWS
        for start, end in self.spans if changed is None else ():
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
                rows = self.store.scan(lo, hi, self.read_revision, batch_limit, reverse)
            except CompactedError as exc:
                raise _too_old(exc) from None
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
        if self.writes_refused is not None or len(writes) >= MAX_TXN_WRITES:
            self._refuse_write()
        if key not in writes:
            self._sorted_write_keys = None
            if self._undo is not None:
                self._log_undo(key, _ABSENT)
        elif self._undo is not None:
            self._log_undo(key, writes[key])
        writes[key] = value

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
        raise errors.program_limit_exceeded(
            f"transaction writes more than {MAX_TXN_WRITES} keys; split it into smaller transactions")

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
            if previous is _ABSENT:
                del writes[key]
            else:
                writes[key] = previous  # type: ignore[assignment]
        self._sorted_write_keys = None

    def forget_savepoints(self) -> None:
        """No savepoint can be rolled back to any more: stop keeping the undo log."""
        self._undo = None

    # ---- commit --------------------------------------------------------------------------

    async def commit(self, alone: bool = False) -> int:
        """Commit; returns the commit revision (the read revision for a read-only transaction).

        Raises a 40001 PgError when a read is no longer current. `alone` is the store's hint
        that no other client is active (see Store.commit).
        """
        assert not self._done, "transaction already finished"
        self._done = True
        try:
            return await self._commit(alone)
        finally:
            if self.locked:
                self.release_locks()

    async def _commit(self, alone: bool) -> int:
        if not self.writes:
            # A read-only transaction read one consistent snapshot: nothing to check.
            self.committed_revision = self.read_revision
            return self.read_revision
        read_revision = self.read_revision
        compares: list = [KeyCompare(k, m) for k, m in self.reads.items()]
        compares.extend(RangeCompare(s, e, read_revision) for s, e in self.spans)
        try:
            result: CommitResult = await self.store.commit(compares, list(self.writes.items()), alone)
        except CommitFailedError as exc:
            raise errors.PgError(errors.IO_ERROR, f"commit failed, nothing was written: {exc}") from None
        except CommitOutcomeUnknownError as exc:
            raise errors.statement_completion_unknown(
                f"result is ambiguous (the commit may or may not have applied): {exc}") from None
        if not result.succeeded:
            self.conflict_key = result.conflict_key
            if isinstance(result.failed, RangeCompare):
                what = (f"committed value on key {pretty_key(result.conflict_key)} in a span this "
                        f"transaction scanned")
            else:
                what = f"committed value on key {pretty_key(result.conflict_key)}"
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: TransactionRetryError: retry txn "
                f"(RETRY_SERIALIZABLE - failed preemptive refresh due to a conflict: {what})")
        assert result.revision > read_revision
        self.committed_revision = result.revision
        return result.revision

    def abandon(self) -> None:
        self._done = True
        if self.locked:
            self.release_locks()

    def release_locks(self) -> None:
        """Let go of every lock (the transaction failed; its writes may still be undone)."""
        assert self.locks is not None
        self.locks.release_all(self)

    @property
    def is_done(self) -> bool:
        return self._done


def _too_old(exc: CompactedError) -> errors.PgError:
    return errors.PgError(errors.INVALID_PARAMETER_VALUE,
                          f"batch timestamp must be after replica GC threshold "
                          f"(revision {exc.revision} < {exc.compacted})")
