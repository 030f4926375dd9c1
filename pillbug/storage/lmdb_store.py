"""The embedded Store engine: versioned keys in LMDB behind a write-ahead log.

Layout (four LMDB databases in one environment under --store, and two log files beside them):
  latest   key -> mod_revision (8 bytes BE) + flag (0 live, 1 tombstone) + value
  history  escaped(key) + ~revision (8 bytes BE) -> flag + value, for every older version
  revlog   revision (8 bytes BE) -> HLC timestamp (16 bytes BE) + the keys it wrote (marshal)
  meta     b"compacted" -> the compacted revision
  wal.0, wal.1   write-ahead logs (wal.py)

A read at revision R looks at `latest`; when the latest version is newer than R it seeks
`history` to the newest version at or before R (the inverted revision makes that the first
entry at or after escaped(key) + ~R). Escaping makes history keys prefix-free, so a seek never
lands on a version of another key that merely starts with the same bytes.

Commits (docs/architecture.md, 2026-12-04). A synced LMDB commit flushes twice (data pages, then
the meta page) and writes several B-tree pages; appending a small record to a preallocated log
and flushing once costs about a third of that. So a commit goes through three steps:
  1. admit: on the event loop's thread, check its compares against the newest state (memtable
     first, then LMDB), give it the next revision and put its versions in the memtable
     (memtable.py), where they stay invisible until published;
  2. make durable: append its record to the active log and flush. Commits admitted during one
     turn of the loop share one append at the end of that turn (group commit); a lone client's
     commit is appended at once;
  3. publish: the current revision moves on and the caller hears of it.
A checkpoint, on the writer thread, later writes many commits from the memtable into LMDB in one
synced write transaction. When one starts, appends switch to the other log, so the log it
empties needs no further writes and is free again once it is done; opening the store replays
from both logs what LMDB lacks, so every acknowledged commit survives a crash. Checkpoints start
when CHECKPOINT_REVISIONS commits or half a log are waiting, CHECKPOINT_IDLE_SECONDS after a
commit, before compaction and on close. A commit whose record is bigger than LARGE_COMMIT_BYTES
is made durable by a checkpoint of its own instead (other commits wait meanwhile), so that a
store too full for it refuses it at once.

Threads. Admitting, appending, reading and evicting from the memtable all happen on the event
loop's thread, so none of it needs a lock, and no commit waits for another thread to be
scheduled (under a busy loop, a thread can wait many GIL switch intervals). Reads go through one
cached LMDB snapshot, renewed when a checkpoint has moved LMDB on; the memtable then lets go of
what the new snapshot holds. The writer thread runs checkpoints and compaction (LMDB requires a
write transaction to begin and end on one thread).

Range compares ("no key in [a, b) changed after R") are checked against an in-memory log of the
keys each recent revision wrote; when R is older than that log (after a restart the log starts
empty), by scanning the memtable and `latest`, whose tombstones record deletes. Compaction drops
tombstones, so a range compare older than the compaction horizon fails (the transaction is
older than the GC horizon, 25 hours by default).

Growing the map: when a write transaction finds the map full, the writer asks the read thread
to drop its snapshot and grow the map (LMDB remaps, which is only safe with no transaction open
anywhere in the process), waits for that, and retries.

Compaction runs on the writer thread in chunks of bounded size (an LMDB write transaction must
hold all its dirty pages in memory), running queued checkpoints between chunks.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import marshal
import os
import queue
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import lmdb

from pillbug.storage.memtable import MemTable, Writes
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
from pillbug.storage.wal import DEFAULT_CAPACITY, HEADER_BYTES, WriteAheadLog, encode_payload, framed_size
from pillbug.util import hlc

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
_MAX_U64 = (1 << 64) - 1
_LIVE = b"\x00"
_TOMBSTONE = b"\x01"
_RECENT_REVISIONS = 8192  # revisions whose written keys stay in memory for range compares
_WATCH_QUEUE = 10000  # events buffered for a watcher before it is cut off
_COMPACT_CHUNK = 2000  # latest keys (or revlog entries) visited per compaction transaction
_MAX_MAP_GROWS = 8  # doublings tried for one transaction before giving up
CHECKPOINT_REVISIONS = 4096  # commits waiting for LMDB that start a checkpoint
CHECKPOINT_IDLE_SECONDS = 1.0  # how long a commit waits for LMDB at most, when nothing else starts one
# A commit whose log record would be bigger goes straight into LMDB (a checkpoint of its own): the
# log is for the many small commits whose flush a client waits for (and at most a quarter of it).
LARGE_COMMIT_BYTES = 256 << 10

# What one commit may hold. A commit's versions go into one LMDB write transaction, which keeps
# every dirty page in memory, and through the log, whose records carry a 32-bit length; a value
# is bounded as PostgreSQL bounds a field (1 GiB).
LIMITS = StoreLimits(max_ops_per_commit=2_000_000, max_bytes_per_commit=4 << 30, max_value_bytes=1 << 30)
# A commit goes to the log at once when no other commit arrived in the same turn of the loop for
# this long (one client alone); otherwise it waits for the turn's end to share a flush.
_SHARED_WINDOW = 0.1

_STAMP_BYTES = 16  # an HLC timestamp (wall ns << 16 | logical) needs 80 bits

_R = TypeVar("_R")


def _stamp(revlog_value: bytes) -> int:
    return int.from_bytes(revlog_value[:_STAMP_BYTES], "big")


def _history_key(key: bytes, revision: int) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01" + _U64.pack(_MAX_U64 - revision)


def _history_prefix(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _first(pair: tuple) -> object:
    return pair[0]


def _merge(rows: Iterator[tuple[bytes, bytes, int]], overlay: Iterator[tuple[bytes, bytes | None, int]],
           reverse: bool) -> Iterator[tuple[bytes, bytes, int]]:
    """LMDB's live rows merged with the memtable's versions of the same range (which win, and
    whose tombstones hide rows), in key order (or reverse)."""
    pending = next(overlay, None)
    for row in rows:
        key = row[0]
        while pending is not None and (pending[0] > key if reverse else pending[0] < key):
            if pending[1] is not None:
                yield pending  # type: ignore[misc]
            pending = next(overlay, None)
        if pending is not None and pending[0] == key:
            if pending[1] is not None:
                yield pending  # type: ignore[misc]
            pending = next(overlay, None)
            continue
        yield row
    while pending is not None:
        if pending[1] is not None:
            yield pending  # type: ignore[misc]
        pending = next(overlay, None)


@dataclass
class StoreStats:
    """Counters (read anywhere, for metrics and tests)."""
    commits: int = 0  # commits that applied writes
    conflicts: int = 0  # commits refused because a compare failed
    batches: int = 0  # log flushes (or checkpoints of a large commit) that made commits durable
    largest_batch: int = 0  # most commits made durable by one flush
    inline_batches: int = 0  # flushes of a lone client's commit, at once
    checkpoints: int = 0  # synced LMDB write transactions that took commits from the memtable
    map_grows: int = 0
    compactions: int = 0


class _Pending:
    """An admitted commit waiting for the next log flush (payload None: nothing to write)."""
    __slots__ = ("revision", "payload", "future", "writes")

    def __init__(self, revision: int, payload: bytes | None, future: asyncio.Future, writes: Writes) -> None:
        self.revision = revision
        self.payload = payload
        self.future = future
        self.writes = writes


class _Checkpoint:
    """For the writer thread: write `entries` into LMDB, then resolve `future`."""
    __slots__ = ("entries", "future", "loop")

    def __init__(self, entries: list[tuple[int, int, Writes]], future: asyncio.Future,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.entries = entries
        self.future = future
        self.loop = loop


class _Compact:
    __slots__ = ("revision", "future", "loop")

    def __init__(self, revision: int, future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        self.revision = revision
        self.future = future
        self.loop = loop


class _Closing(Exception):
    """close() was called while the writer was between compaction chunks."""


class LMDBStore(Store):
    def __init__(self, path: str, map_size: int = 1 << 36,
                 wall_clock: Callable[[], int] | None = None,
                 log_capacity: int = DEFAULT_CAPACITY) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        # LMDB's own commits are checkpoints: rare, and fully synced.
        self._env = lmdb.open(path, map_size=map_size, max_dbs=8, sync=True, metasync=True,
                              readahead=False, max_readers=2048, subdir=True)
        self._latest = self._env.open_db(b"latest")
        self._history = self._env.open_db(b"history")
        self._revlog = self._env.open_db(b"revlog")
        self._meta = self._env.open_db(b"meta")
        self._clock = hlc.Clock() if wall_clock is None else hlc.Clock(wall_clock)
        self._clock_lock = threading.Lock()
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._revlog)
            if cursor.last():
                self._revision = _U64.unpack(cursor.key())[0]
                self._clock.update(_stamp(cursor.value()))
            else:
                self._revision = 0
            raw = txn.get(b"compacted", db=self._meta)
            self._compacted = _U64.unpack(raw)[0] if raw else 0
        self.stats = StoreStats()
        # The read thread's cached snapshot, renewed when a checkpoint moves LMDB on.
        self._read_txn: lmdb.Transaction | None = None
        self._snapshot_flushed = -1  # the newest revision that snapshot holds
        self._mem = MemTable()
        self._logs = [WriteAheadLog(os.path.join(path, f"wal.{i}"), log_capacity) for i in (0, 1)]
        try:
            self._recover()
        except BaseException:
            self._close_files()
            raise
        self._active = 0  # the log that appends go to; the other one is free
        self._admitted = self._revision  # the newest revision given to a commit
        self._flushed = self._revision  # the newest revision in LMDB (set by the writer thread)
        self._large = min(LARGE_COMMIT_BYTES, (log_capacity - HEADER_BYTES) // 4)
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._turn_commits = False  # a commit arrived in this turn of the loop (_alone)
        self._shared_until = 0.0  # (loop time) commits were concurrent lately: group them
        self._log_failure: str | None = None  # set when a log write failed: nothing more may commit
        self._checkpointing: asyncio.Future | None = None  # the checkpoint in flight
        self._checkpoint_error: BaseException | None = None  # why the last checkpoint failed
        self._checkpoint_retry_at = 0.0  # (loop time) after a failure, no new one before this
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._gate: asyncio.Future | None = None  # a large commit in flight: others wait to be admitted
        self._recent: deque[tuple[int, list[bytes]]] = deque(maxlen=_RECENT_REVISIONS)
        self._watchers: list[tuple[bytes, asyncio.Queue]] = []
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._deferred: list[_Checkpoint | _Compact] = []  # arrived during a compaction
        # The loop that reads (and must grow the map): the one the latest request came from.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="lmdb-writer", daemon=True)
        self._writer.start()

    def _recover(self) -> None:
        """Write the commits in the logs that LMDB lacks (the node stopped between checkpoints)
        into LMDB, then start both logs over."""
        records = sorted((entry for wal in self._logs for entry in wal.records()), key=_first)
        missing = []
        for entry in records:
            if entry[0] == self._revision + len(missing) + 1:
                missing.append(entry)
            elif entry[0] > self._revision + len(missing):
                break  # a gap: nothing after it can have been acknowledged
        if missing:
            self._in_write_txn(lambda txn: self._write_revisions(txn, missing), None)
            self._revision = missing[-1][0]
            self._clock.update(missing[-1][1])
            log.info("replayed %d commits from the write-ahead log", len(missing))
        for wal in self._logs:
            wal.reset(self._revision)

    # ---- reads (the read thread) ---------------------------------------------------------

    def current_revision(self) -> int:
        return self._revision

    def compacted_revision(self) -> int:
        return self._compacted

    def now(self) -> int:
        with self._clock_lock:
            return self._clock.now()

    def _snapshot(self) -> lmdb.Transaction:
        flushed = self._flushed
        txn = self._read_txn
        if txn is None or self._snapshot_flushed != flushed:
            if txn is not None:
                txn.abort()
            # Opened after reading self._flushed, so it holds every revision up to it; only
            # then may the memtable let go of them.
            txn = self._env.begin()
            self._read_txn = txn
            self._snapshot_flushed = flushed
            oldest = self._mem.oldest_revision()
            if oldest and oldest <= flushed:
                self._mem.evict(flushed)
        return txn

    def _drop_snapshot(self) -> None:
        if self._read_txn is not None:
            self._read_txn.abort()
            self._read_txn = None
            self._snapshot_flushed = -1

    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        txn = self._snapshot()
        # Checked after taking the snapshot: compaction raises the horizon before it deletes
        # anything, so a snapshot that lacks old versions is always caught here.
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        listed = self._mem.versions.get(key)
        if listed is not None:
            for revision, value in reversed(listed):
                if revision <= at:
                    return value, revision
        raw = txn.get(key, db=self._latest)
        if raw is None:
            return None, 0
        mod = _U64.unpack_from(raw)[0]
        if mod <= at:
            return (raw[9:] if raw[8] == 0 else None), mod
        return self._older_version(txn, key, at)

    def get_many(self, keys: Sequence[bytes], at: int) -> list[tuple[bytes | None, int]]:
        # One snapshot for all of them (the kv layer's batched reads: an index join's lookups).
        txn = self._snapshot()
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        versions = self._mem.versions
        latest = self._latest
        unpack = _U64.unpack_from
        out: list[tuple[bytes | None, int]] = []
        for key in keys:
            listed = versions.get(key)
            if listed is not None:
                found = next(((value, revision) for revision, value in reversed(listed) if revision <= at), None)
                if found is not None:
                    out.append(found)
                    continue
            raw = txn.get(key, db=latest)
            if raw is None:
                out.append((None, 0))
                continue
            mod = unpack(raw)[0]
            if mod <= at:
                out.append(((raw[9:] if raw[8] == 0 else None), mod))
            else:
                out.append(self._older_version(txn, key, at))
        return out

    @property
    def limits(self) -> StoreLimits:
        return LIMITS

    def _older_version(self, txn: lmdb.Transaction, key: bytes, at: int) -> tuple[bytes | None, int]:
        cursor = txn.cursor(db=self._history)
        prefix = _history_prefix(key)
        if not cursor.set_range(prefix + _U64.pack(_MAX_U64 - at)):
            return None, 0
        hkey = cursor.key()
        if len(hkey) != len(prefix) + 8 or not hkey.startswith(prefix):
            return None, 0
        raw = cursor.value()
        revision = _MAX_U64 - _U64.unpack_from(hkey, len(prefix))[0]
        return (raw[1:] if raw[0] == 0 else None), revision

    def scan(self, start: bytes, end: bytes, at: int, limit: int = 0,
             reverse: bool = False) -> list[tuple[bytes, bytes, int]]:
        txn = self._snapshot()
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        if start >= end:
            return []
        rows = self._lmdb_rows(txn, start, end, at, reverse)
        overlay = self._mem.overlay(start, end, at) if self._mem.keys else None
        if overlay:
            rows = _merge(rows, reversed(overlay) if reverse else iter(overlay), reverse)
        out: list[tuple[bytes, bytes, int]] = []
        for row in rows:
            out.append(row)
            if limit and len(out) >= limit:
                break
        return out

    def _lmdb_rows(self, txn: lmdb.Transaction, start: bytes, end: bytes, at: int,
                   reverse: bool) -> Iterator[tuple[bytes, bytes, int]]:
        """Live (key, value, mod_revision) in LMDB in [start, end) as of `at`, in key order."""
        cursor = txn.cursor(db=self._latest)
        if reverse:
            if cursor.set_range(end):
                found = cursor.prev()
            else:
                found = cursor.last()
            if not found:
                return
            entries = cursor.iterprev()
        else:
            if not cursor.set_range(start):
                return
            entries = cursor.iternext()
        unpack = _U64.unpack_from
        for key, raw in entries:
            if reverse:
                if key < start:
                    return
            elif key >= end:
                return
            mod = unpack(raw)[0]
            if mod <= at:
                if raw[8] == 0:
                    yield key, raw[9:], mod
            else:
                value, mod = self._older_version(txn, key, at)
                if value is not None:
                    yield key, value, mod

    def revision_timestamp(self, revision: int) -> int:
        if revision == 0:
            return 0
        txn = self._snapshot()
        if revision < self._compacted or revision > self._revision:
            raise CompactedError(revision, self._compacted)
        if revision > self._snapshot_flushed:
            stamp = self._mem.stamp(revision)
            if stamp is None:
                raise CompactedError(revision, self._compacted)
            return stamp
        raw = txn.get(_U64.pack(revision), db=self._revlog)
        if raw is None:
            raise CompactedError(revision, self._compacted)
        return _stamp(raw)

    def revision_at(self, timestamp: int) -> int:
        txn = self._snapshot()
        recent = self._mem.revision_at(timestamp, self._revision)
        if recent is not None:
            return recent
        # A large commit's checkpoint reaches LMDB just before the commit is published.
        lo, hi = max(self._compacted, 1), min(self._snapshot_flushed, self._revision)
        found = 0
        while lo <= hi:  # revision timestamps increase with the revision
            mid = (lo + hi) // 2
            raw = txn.get(_U64.pack(mid), db=self._revlog)
            if raw is None:  # compacted away below us
                lo = mid + 1
                continue
            if _stamp(raw) <= timestamp:
                found = mid
                lo = mid + 1
            else:
                hi = mid - 1
        return found

    # ---- commits (the loop's thread) -------------------------------------------------------

    async def commit(self, compares: Sequence[Compare], writes: Sequence[tuple[bytes, bytes | None]],
                     held_locks: HeldLocks | None = None) -> CommitResult:
        if self._closed:
            raise RuntimeError("store is closed")
        loop = self._loop = asyncio.get_running_loop()
        while self._gate is not None:
            await asyncio.shield(self._gate)
        if self._log_failure is not None:
            raise CommitFailedError(self._log_failure)
        view = self._snapshot()
        failed = self._check(view, compares)
        if failed is not None:
            self.stats.conflicts += 1
            if self._admitted > self._revision:
                # It may have lost to a commit that is not durable yet: answer once that one
                # is visible, so that a retry reads it instead of losing to it again.
                await self._wait_for_flush(_Pending(self._admitted, None, loop.create_future(), []))
            return CommitResult(0, failed[0], failed[1])
        if not writes:
            if self._admitted == self._revision:
                return CommitResult(self._revision)
            # It saw commits that are not durable yet: it may only answer once they are.
            return await self._wait_for_flush(_Pending(self._admitted, None, loop.create_future(), []))
        effective: Writes = []
        for key, value in sorted(writes, key=_first):
            if value is None and self._is_absent(view, key):
                continue  # deleting what is already absent writes no version
            effective.append((key, value))
        revision = self._admitted + 1
        with self._clock_lock:
            stamp = self._clock.now()
        self._admitted = revision
        self._recent.append((revision, [key for key, _ in effective]))
        payload = encode_payload(stamp, effective)
        if len(payload) > self._large:
            return await self._commit_large((revision, stamp, effective))
        self._mem.add(revision, stamp, effective)
        wal = self._logs[self._active]
        # A lone client gains nothing from waiting for the end of the loop's turn: its commit
        # is flushed at once (when nothing admitted before it is still waiting).
        if self._alone(loop) and not self._pending and self._revision == revision - 1 and framed_size(payload) <= wal.room():
            try:
                wal.append([(revision, payload)])
            except OSError as exc:
                self._fail_log(exc)
                raise CommitOutcomeUnknownError(f"the write-ahead log could not be written: {exc}") from None
            self.stats.inline_batches += 1
            self._published([revision], [effective])
            return CommitResult(revision)
        return await self._wait_for_flush(_Pending(revision, payload, loop.create_future(), effective))

    def _alone(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this commit is the only one lately: none other arrived in this turn of the
        loop, nor two in one turn within _SHARED_WINDOW. Concurrent clients' commits arrive in
        the same turns (each woke from its own read); those share one flush at the turn's end."""
        now = loop.time()
        if self._turn_commits:
            self._shared_until = now + _SHARED_WINDOW
            return False
        self._turn_commits = True
        loop.call_soon(self._end_turn)  # runs in the loop's next turn
        return now >= self._shared_until

    def _end_turn(self) -> None:
        self._turn_commits = False

    async def _wait_for_flush(self, pending: _Pending) -> CommitResult:
        self._pending.append(pending)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)
        return await pending.future

    def _flush_pending(self) -> None:
        """At the end of a turn of the loop: make every commit admitted during it durable with
        one log append (two when the active log fills up and a checkpoint frees the other)."""
        self._flush_scheduled = False
        while self._pending:
            if self._log_failure is not None:
                failure = CommitFailedError(self._log_failure)
                for pending in self._pending:
                    _fail(pending.future, failure)
                self._pending = []
                return
            wal = self._logs[self._active]
            room = wal.room()
            count = 0
            for pending in self._pending:
                size = framed_size(pending.payload) if pending.payload is not None else 0
                if size > room:
                    break
                room -= size
                count += 1
            if count == 0:
                # The active log is full: switch to the other one. When that one still holds
                # commits that LMDB lacks, the checkpoint running (or started) for them flushes
                # again when it ends; when checkpoints fail, nothing more fits.
                if self._start_checkpoint():
                    continue
                if self._checkpointing is None and self._checkpoint_error is not None:
                    failure = CommitFailedError(
                        f"the write-ahead log is full and LMDB cannot take its commits: {self._checkpoint_error}")
                    for pending in self._pending:
                        _fail(pending.future, failure)
                    self._pending = []
                return
            batch = self._pending[:count]
            del self._pending[:count]
            records = [(p.revision, p.payload) for p in batch if p.payload is not None]
            if records:
                try:
                    wal.append(records)
                except OSError as exc:
                    self._fail_log(exc)
                    unknown = CommitOutcomeUnknownError(f"the write-ahead log could not be written: {exc}")
                    for pending in batch:
                        _fail(pending.future, unknown)
                    continue
            written = [p for p in batch if p.payload is not None]
            if written:
                self._published([p.revision for p in written], [p.writes for p in written])
            for pending in batch:
                _resolve(pending.future, CommitResult(pending.revision))

    def _fail_log(self, exc: OSError) -> None:
        # Which records reached the disk is unknown, and a restart will replay those that did:
        # their callers cannot be told either way, and nothing more may commit after them.
        log.error("the write-ahead log could not be written: %s", exc)
        self._log_failure = f"the write-ahead log failed earlier ({exc}); restart the node"

    def _published(self, revisions: list[int], writes: list[Writes]) -> None:
        """Durable: visible to reads from now on."""
        self._revision = revisions[-1]
        stats = self.stats
        stats.batches += 1
        stats.commits += len(revisions)
        stats.largest_batch = max(stats.largest_batch, len(revisions))
        if self._watchers:
            self._notify([WatchEvent(rev, key, value) for rev, pairs in zip(revisions, writes)
                          for key, value in pairs])
        waiting = self._revision - self._flushed
        if waiting >= CHECKPOINT_REVISIONS or self._logs[self._active].room() < self._logs[self._active].capacity // 2:
            self._start_checkpoint()
        elif waiting and self._checkpoint_timer is None and self._loop is not None:
            self._checkpoint_timer = self._loop.call_later(CHECKPOINT_IDLE_SECONDS, self._checkpoint_when_idle)

    async def _commit_large(self, entry: tuple[int, int, Writes]) -> CommitResult:
        """Make a big commit durable by a checkpoint of its own, with every commit admitted
        before it. Nothing else is admitted meanwhile, so that a failure takes back this one
        alone (the commits before it stay, and wait for the log as usual). Its versions go
        straight to LMDB, never through the memtable."""
        revision, _, writes = entry
        loop = asyncio.get_running_loop()
        gate = self._gate = loop.create_future()
        try:
            while self._checkpointing is not None:
                await asyncio.wait({self._checkpointing})  # its failure is not this commit's
            if self._log_failure is not None:
                raise CommitFailedError(self._log_failure)
            try:
                await self._run_checkpoint_on_writer(revision - 1, loop, entry)
            except Exception as exc:
                log.warning("a large commit could not be written: %s", exc)
                raise CommitFailedError(f"the store could not commit: {exc}") from None
        except BaseException:
            self._admitted = revision - 1
            if self._recent and self._recent[-1][0] == revision:
                self._recent.pop()
            if self._pending and not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush_pending)
            raise
        finally:
            self._gate = None
            gate.set_result(None)
        # Everything up to it is in LMDB: both logs are free, and the next record follows it.
        self._logs[self._active].reset(revision)
        waiting, self._pending = self._pending, []
        written = [p for p in waiting if p.payload is not None and p.revision > self._revision]
        self._published([p.revision for p in written] + [revision], [p.writes for p in written] + [writes])
        for pending in waiting:
            _resolve(pending.future, CommitResult(pending.revision))
        return CommitResult(revision)

    def _check(self, view: lmdb.Transaction, compares: Sequence[Compare]) -> tuple[Compare, bytes] | None:
        mem = self._mem
        for compare in compares:
            if type(compare) is KeyCompare:
                newest = mem.newest(compare.key)
                if newest is not None:
                    mod = newest[0]
                else:
                    raw = view.get(compare.key, db=self._latest)
                    mod = _U64.unpack_from(raw)[0] if raw is not None else 0
                if mod != compare.mod_revision:
                    return compare, compare.key
            else:
                assert isinstance(compare, RangeCompare)
                key = self._changed_in_range(view, compare)
                if key is not None:
                    return compare, key
        return None

    def _is_absent(self, view: lmdb.Transaction, key: bytes) -> bool:
        newest = self._mem.newest(key)
        if newest is not None:
            return newest[1] is None
        raw = view.get(key, db=self._latest)
        return raw is None or raw[8] == 1

    def _changed_in_range(self, view: lmdb.Transaction, compare: RangeCompare) -> bytes | None:
        """A key in [start, end) written after compare.revision by an admitted commit, or None."""
        since = compare.revision
        if since >= self._admitted:
            return None
        recent = self._recent
        start, end = compare.start, compare.end
        # The log answers when it holds every revision after `since`: revisions enter it
        # consecutively, as they are admitted.
        if (recent[0][0] <= since + 1) if recent else since >= self._admitted:
            for rev, keys in reversed(recent):
                if rev <= since:
                    break
                i = bisect.bisect_left(keys, start)
                if i < len(keys) and keys[i] < end:
                    return keys[i]
            return None
        if since < self._compacted:
            # Tombstones at or below the horizon are gone: a delete in the range can no longer
            # be seen, so the compare cannot be proven to hold.
            return start
        changed = self._mem.changed_key(start, end, since)
        if changed is not None:
            return changed
        cursor = view.cursor(db=self._latest)
        if not cursor.set_range(start):
            return None
        for key, raw in cursor.iternext():
            if key >= end:
                return None
            if _U64.unpack_from(raw)[0] > since:
                return key
        return None

    # ---- checkpoints -----------------------------------------------------------------------

    def _start_checkpoint(self) -> bool:
        """Start writing the durable commits into LMDB and, when the other log holds nothing
        that LMDB lacks, switch appends to it. Returns whether appends switched."""
        if (self._checkpointing is not None or self._gate is not None or self._log_failure is not None
                or self._loop is None or self._loop.time() < self._checkpoint_retry_at):
            return False
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        target = self._revision
        other = 1 - self._active
        switched = self._logs[other].last <= self._flushed
        if switched:
            # Records up to `target` stay where they are, later ones go to the other log;
            # the active one is free once the checkpoint has written `target`.
            self._logs[other].reset(target)
            self._active = other
        if target > self._flushed:
            self._checkpointing = self._loop.create_task(self._run_checkpoint_on_writer(target, self._loop))
            self._checkpointing.add_done_callback(self._checkpoint_done)
        return switched

    async def _run_checkpoint_on_writer(self, target: int, loop: asyncio.AbstractEventLoop,
                                        large: tuple[int, int, Writes] | None = None) -> None:
        """Write the memtable's revisions up to `target` (and a large commit after them)."""
        entries = self._mem.revisions_between(self._flushed + 1, target)
        if large is not None:
            entries.append(large)
        future = loop.create_future()
        self._requests.put(_Checkpoint(entries, future, loop))
        await future
        self._snapshot()  # let the memtable go of what LMDB holds now

    def _checkpoint_done(self, task: asyncio.Task) -> None:
        self._checkpointing = None
        self._checkpoint_error = None if task.cancelled() else task.exception()
        if self._checkpoint_error is not None:
            # The commits stay in the logs and the memtable; a checkpoint retries a while later.
            log.error("checkpoint failed: %s", self._checkpoint_error)
            self._checkpoint_retry_at = asyncio.get_running_loop().time() + CHECKPOINT_IDLE_SECONDS
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)
        if self._revision > self._flushed and self._checkpoint_timer is None:
            self._checkpoint_timer = asyncio.get_running_loop().call_later(
                CHECKPOINT_IDLE_SECONDS, self._checkpoint_when_idle)

    def _checkpoint_when_idle(self) -> None:
        self._checkpoint_timer = None
        if self._revision > self._flushed and not self._closed:
            self._start_checkpoint()

    async def checkpoint(self) -> None:
        """Write every durable commit into LMDB now (compaction, close and tests need it)."""
        while True:
            busy = self._gate or self._checkpointing
            if busy is not None:
                await asyncio.wait({busy})
                continue
            if self._revision <= self._flushed:
                return
            if self._log_failure is not None:
                raise CommitFailedError(self._log_failure)
            self._loop = asyncio.get_running_loop()
            self._checkpoint_retry_at = 0.0  # asked for: no waiting after an earlier failure
            self._start_checkpoint()
            task = self._checkpointing
            assert task is not None, "a checkpoint starts when commits wait and nothing else runs"
            await asyncio.shield(task)  # raises what made it fail

    # ---- the writer thread ---------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        loop = self._loop = asyncio.get_running_loop()
        revision = min(revision, self._revision)
        if revision > self._flushed:  # what compaction drops must be in LMDB for it to find
            await self.checkpoint()
        future = loop.create_future()
        self._requests.put(_Compact(revision, future, loop))
        await future
        self._drop_snapshot()  # reads from now on see the compacted store (and LMDB reuses its pages)

    def _write_loop(self) -> None:
        try:
            while True:
                request = self._deferred.pop(0) if self._deferred else self._requests.get()
                if request is None:
                    return
                self._serve(request)
        except _Closing:
            return
        finally:
            for request in self._deferred:  # closing: nothing more will be compacted
                _post(request.loop, _resolve, request.future, None)

    def _serve(self, request: _Checkpoint | _Compact) -> None:
        if isinstance(request, _Compact):
            self._run_compaction(request)
            return
        try:
            entries = request.entries
            if entries:
                self._in_write_txn(lambda txn: self._write_revisions(txn, entries), request.loop)
                self._flushed = entries[-1][0]
                self.stats.checkpoints += 1
            _post(request.loop, _resolve, request.future, None)
        except Exception as exc:
            _post(request.loop, _fail, request.future, exc)

    def _serve_waiting(self) -> None:
        """Between compaction chunks: run the checkpoints that queued up meanwhile."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is None:
                raise _Closing()
            if isinstance(request, _Compact):
                self._deferred.append(request)
            else:
                self._serve(request)

    def _in_write_txn(self, fn: Callable[[lmdb.Transaction], _R], loop: asyncio.AbstractEventLoop | None) -> _R:
        """Run fn in one synced write transaction, growing the map when it is full."""
        for _ in range(_MAX_MAP_GROWS):
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow_map(loop)
        raise lmdb.MapFullError("the store's map could not be grown enough for one transaction")

    def _grow_map(self, loop: asyncio.AbstractEventLoop | None) -> None:
        size = self._env.info()["map_size"]
        disk = os.statvfs(self.path)
        if size >= disk.f_blocks * disk.f_frsize:
            # A map as big as the disk is all the disk can hold. (Never ask LMDB for an absurd
            # size either: a failed remap leaves the environment without a map.)
            raise lmdb.MapFullError(f"the store is full: its map is {size} bytes, as big as its disk")
        new_size = size * 2
        done = threading.Event()
        failure: list[BaseException] = []

        def grow() -> None:
            # On the read thread, between callbacks: no read transaction or cursor is in use.
            try:
                self._drop_snapshot()
                self._env.set_mapsize(new_size)
            except BaseException as exc:  # reported to the writer, which fails the checkpoint
                failure.append(exc)
            finally:
                done.set()

        if loop is None:  # opening the store: nobody reads yet
            grow()
        else:
            try:
                loop.call_soon_threadsafe(grow)
            except RuntimeError:  # the loop is closed: nobody reads, grow here
                grow()
        done.wait()
        if failure:
            raise failure[0]
        self.stats.map_grows += 1
        log.info("store map grown to %d bytes", new_size)

    def _write_revisions(self, txn: lmdb.Transaction, revisions: Sequence[tuple[int, int, Writes]]) -> None:
        latest, history, revlog = self._latest, self._history, self._revlog
        for revision, stamp, writes in revisions:
            rev_bytes = _U64.pack(revision)
            for key, value in writes:
                old = txn.get(key, db=latest)
                if old is not None:
                    txn.put(_history_key(key, _U64.unpack_from(old)[0]), old[8:], db=history)
                txn.put(key, rev_bytes + (_TOMBSTONE if value is None else _LIVE + value), db=latest)
            keys = [key for key, _ in writes]
            txn.put(rev_bytes, stamp.to_bytes(_STAMP_BYTES, "big") + marshal.dumps(keys), db=revlog)

    # ---- compaction ----------------------------------------------------------------------

    def _run_compaction(self, request: _Compact) -> None:
        horizon = request.revision
        try:
            if horizon > self._compacted:
                self._compact(horizon, request.loop)
            self.stats.compactions += 1
            _post(request.loop, _resolve, request.future, None)
        except _Closing:
            _post(request.loop, _resolve, request.future, None)
            raise
        except Exception as exc:
            log.exception("compaction failed")
            _post(request.loop, _fail, request.future, exc)

    def _compact(self, horizon: int, loop: asyncio.AbstractEventLoop) -> None:
        # Raise the horizon before anything is deleted, so that no read below it can run on a
        # snapshot that lacks the versions it needs (reads check the horizon after taking their
        # snapshot). A crash part-way leaves versions below the horizon: harmless, dropped next time.
        self._compacted = horizon
        self._in_write_txn(lambda txn: txn.put(b"compacted", _U64.pack(horizon), db=self._meta), loop)
        start: bytes | None = b""
        while start is not None:
            start = self._in_write_txn(lambda txn, s=start: self._compact_keys(txn, horizon, s), loop)
            self._serve_waiting()
        more = True
        while more:
            more = self._in_write_txn(lambda txn: self._compact_revlog(txn, horizon), loop)
            self._serve_waiting()

    def _compact_keys(self, txn: lmdb.Transaction, horizon: int, start: bytes) -> bytes | None:
        """Delete what no read at or after `horizon` can see, for up to _COMPACT_CHUNK keys from
        `start`; returns where the next chunk starts (None: done).

        A history version is needed by reads in [its revision, the next version's revision);
        once that next revision is at or below the horizon, nobody can read it. A tombstone at
        or below the horizon is no longer needed either, and neither is any version under it.
        """
        latest_cursor = txn.cursor(db=self._latest)
        hist_cursor = txn.cursor(db=self._history)
        if not latest_cursor.set_range(start):
            return None
        doomed_latest = []
        doomed_history = []
        next_start = None
        for visited, (key, raw) in enumerate(latest_cursor.iternext()):
            if visited == _COMPACT_CHUNK:
                next_start = key
                break
            mod = _U64.unpack_from(raw)[0]
            if raw[8] == 1 and mod <= horizon:
                doomed_latest.append(key)
            prefix = _history_prefix(key)
            if not hist_cursor.set_range(prefix):
                continue
            next_revision = mod
            for hkey in hist_cursor.iternext(values=False):
                if len(hkey) != len(prefix) + 8 or not hkey.startswith(prefix):
                    break
                if next_revision <= horizon:
                    doomed_history.append(hkey)
                next_revision = _MAX_U64 - _U64.unpack_from(hkey, len(prefix))[0]
        for hkey in doomed_history:
            txn.delete(hkey, db=self._history)
        for key in doomed_latest:
            txn.delete(key, db=self._latest)
        return next_start

    def _compact_revlog(self, txn: lmdb.Transaction, horizon: int) -> bool:
        """Drop up to _COMPACT_CHUNK revlog entries below the horizon; True if more remain."""
        cursor = txn.cursor(db=self._revlog)
        doomed = []
        more = False
        if cursor.first():
            for rkey in cursor.iternext(values=False):
                if _U64.unpack(rkey)[0] >= horizon:
                    break
                if len(doomed) == _COMPACT_CHUNK:
                    more = True
                    break
                doomed.append(rkey)
        for rkey in doomed:
            txn.delete(rkey, db=self._revlog)
        return more

    # ---- watch ---------------------------------------------------------------------------

    async def watch(self, prefix: bytes, from_revision: int) -> AsyncIterator[WatchEvent]:
        events: asyncio.Queue = asyncio.Queue(maxsize=_WATCH_QUEUE)
        entry = (prefix, events)
        self._watchers.append(entry)
        try:
            replayed_up_to = self._revision
            for event in self._replay(prefix, from_revision, replayed_up_to):
                yield event
            while True:
                event = await events.get()
                if event is None:
                    raise RuntimeError("watcher fell too far behind and was cut off")
                if event.revision > replayed_up_to:
                    yield event
        finally:
            self._watchers.remove(entry)

    def _replay(self, prefix: bytes, from_revision: int, up_to: int) -> list[WatchEvent]:
        if from_revision <= 0 or from_revision > up_to:
            return []
        txn = self._snapshot()
        if from_revision < self._compacted:
            raise CompactedError(from_revision, self._compacted)
        out = []
        in_lmdb = min(up_to, self._snapshot_flushed)
        cursor = txn.cursor(db=self._revlog)
        if from_revision <= in_lmdb and cursor.set_range(_U64.pack(from_revision)):
            for rkey, raw in cursor.iternext():
                rev = _U64.unpack(rkey)[0]
                if rev > in_lmdb:
                    break
                for key in marshal.loads(raw[_STAMP_BYTES:]):
                    if key.startswith(prefix):
                        value, _ = self.get(key, rev)
                        out.append(WatchEvent(rev, key, value))
        for rev, _, writes in self._mem.revisions_between(max(from_revision, in_lmdb + 1), up_to):
            out.extend(WatchEvent(rev, key, value) for key, value in writes if key.startswith(prefix))
        return out

    def _notify(self, events: list[WatchEvent]) -> None:
        for prefix, events_queue in self._watchers:
            for event in events:
                if event.key.startswith(prefix):
                    try:
                        events_queue.put_nowait(event)
                    except asyncio.QueueFull:
                        while not events_queue.empty():
                            events_queue.get_nowait()
                        events_queue.put_nowait(None)
                        break

    # ---- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop = asyncio.get_running_loop()
        while self._pending or self._gate is not None:
            if self._pending:
                self._flush_pending()
            if self._gate is not None:
                await asyncio.wait({self._gate})
            elif self._pending:  # the active log is full: a checkpoint frees the other one
                if self._checkpointing is None:
                    break  # the logs failed: _flush_pending failed them all
                await asyncio.wait({self._checkpointing})
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
        try:
            await self.checkpoint()
        except Exception as exc:  # the logs keep every commit: the next start replays them
            log.error("the closing checkpoint failed: %s", exc)
        self._requests.put(None)
        await loop.run_in_executor(None, self._writer.join)
        self._drop_snapshot()
        self._close_files()

    def _close_files(self) -> None:
        self._env.close()
        for wal in self._logs:
            wal.close()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable, *args: object) -> None:
    """Run fn(*args) on the loop that waits for it; a closed loop has nobody left to tell."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
