"""The embedded Store engine: versioned keys in LMDB, group-committed by one writer thread.

Layout (four LMDB databases in one environment under --store):
  latest   key -> mod_revision (8 bytes BE) + flag (0 live, 1 tombstone) + value
  history  escaped(key) + ~revision (8 bytes BE) -> flag + value, for every older version
  revlog   revision (8 bytes BE) -> HLC timestamp (16 bytes BE) + the keys it wrote (marshal)
  meta     b"compacted" -> the compacted revision

A read at revision R looks at `latest`; when the latest version is newer than R it seeks
`history` to the newest version at or before R (the inverted revision makes that the first
entry at or after escaped(key) + ~R). Escaping makes history keys prefix-free, so a seek never
lands on a version of another key that merely starts with the same bytes.

Threads. Reads run on one thread (the event loop's) through one cached read snapshot, renewed
when the revision moves. Every commit() call is queued to one writer thread, which owns all
LMDB write transactions (LMDB requires a write transaction to begin and end on one thread).

Group commit: the writer takes all queued commits, checks each one's compares against the state
left by the ones before it, applies the survivors in one LMDB write transaction, syncs it once
(sync=True, metasync=True), and only then publishes the new revision and resolves the callers'
futures: many sessions' commits share one fsync and nobody hears of a commit before it is
durable. `stats` counts commits and synced batches.

Range compares ("no key in [a, b) changed after R") are checked against an in-memory log of the
keys each recent revision wrote; when R is older than that log (after a restart the log starts
empty), by scanning `latest` instead, whose tombstones record deletes. Compaction drops
tombstones, so a range compare older than the compaction horizon fails (the transaction is
older than the GC horizon, 25 hours by default).

Growing the map: when a write transaction finds the map full, the writer asks the read thread
to drop its snapshot and grow the map (LMDB remaps, which is only safe with no transaction open
anywhere in the process), waits for that, and retries.

Compaction runs on the writer thread in chunks of bounded size (an LMDB write transaction must
hold all its dirty pages in memory), serving queued commits between chunks.
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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import lmdb

from pillbug.storage.store import (
    CommitFailedError,
    CommitResult,
    CompactedError,
    Compare,
    KeyCompare,
    RangeCompare,
    Store,
    WatchEvent,
)
from pillbug.util import hlc

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
_MAX_U64 = (1 << 64) - 1
_LIVE = b"\x00"
_TOMBSTONE = b"\x01"
_MAX_BATCH = 512  # commits taken into one synced LMDB transaction
_RECENT_REVISIONS = 8192  # revisions whose written keys stay in memory for range compares
_WATCH_QUEUE = 10000  # events buffered for a watcher before it is cut off
_COMPACT_CHUNK = 2000  # latest keys (or revlog entries) visited per compaction transaction
_MAX_MAP_GROWS = 8  # doublings tried for one transaction before giving up

_STAMP_BYTES = 16  # an HLC timestamp (wall ns << 16 | logical) needs 80 bits

_R = TypeVar("_R")


def _stamp(revlog_value: bytes) -> int:
    return int.from_bytes(revlog_value[:_STAMP_BYTES], "big")


def _history_key(key: bytes, revision: int) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01" + _U64.pack(_MAX_U64 - revision)


def _history_prefix(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


@dataclass
class StoreStats:
    """Counters written under the write lock (read anywhere, for metrics and tests)."""
    commits: int = 0  # commits that applied writes
    conflicts: int = 0  # commits refused because a compare failed
    batches: int = 0  # synced LMDB write transactions that applied at least one commit
    largest_batch: int = 0  # most commits applied by one synced transaction
    inline_batches: int = 0  # synced transactions run on the caller's thread (a lone client)
    map_grows: int = 0
    compactions: int = 0


class _Commit:
    __slots__ = ("compares", "writes", "future", "loop")

    def __init__(self, compares: Sequence[Compare], writes: Sequence[tuple[bytes, bytes | None]],
                 future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        self.compares = compares
        self.writes = writes
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
                 wall_clock: Callable[[], int] | None = None) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
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
        # The read thread's cached snapshot, renewed when the revision moves.
        self._read_txn: lmdb.Transaction | None = None
        self._read_txn_revision = -1
        self._recent: deque[tuple[int, list[bytes]]] = deque(maxlen=_RECENT_REVISIONS)
        self._watchers: list[tuple[bytes, asyncio.Queue]] = []
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._deferred: list[_Compact] = []  # compactions that arrived during a compaction
        self._write_lock = threading.Lock()  # one write transaction at a time: writer or inline
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="lmdb-writer", daemon=True)
        self._writer.start()

    # ---- reads (the read thread) ---------------------------------------------------------

    def current_revision(self) -> int:
        return self._revision

    def compacted_revision(self) -> int:
        return self._compacted

    def now(self) -> int:
        with self._clock_lock:
            return self._clock.now()

    def _snapshot(self) -> lmdb.Transaction:
        revision = self._revision
        txn = self._read_txn
        if txn is None or self._read_txn_revision != revision:
            if txn is not None:
                txn.abort()
            # Opened after reading self._revision, so it contains every revision up to it.
            txn = self._env.begin()
            self._read_txn = txn
            self._read_txn_revision = revision
        return txn

    def _drop_snapshot(self) -> None:
        if self._read_txn is not None:
            self._read_txn.abort()
            self._read_txn = None
            self._read_txn_revision = -1

    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        txn = self._snapshot()
        # Checked after taking the snapshot: compaction raises the horizon before it deletes
        # anything, so a snapshot that lacks old versions is always caught here.
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        raw = txn.get(key, db=self._latest)
        if raw is None:
            return None, 0
        mod = _U64.unpack_from(raw)[0]
        if mod <= at:
            return (raw[9:] if raw[8] == 0 else None), mod
        return self._older_version(txn, key, at)

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
        out: list[tuple[bytes, bytes, int]] = []
        if start >= end:
            return out
        cursor = txn.cursor(db=self._latest)
        if reverse:
            if cursor.set_range(end):
                found = cursor.prev()
            else:
                found = cursor.last()
            if not found:
                return out
            entries = cursor.iterprev()
        else:
            if not cursor.set_range(start):
                return out
            entries = cursor.iternext()
        unpack = _U64.unpack_from
        for key, raw in entries:
            if reverse:
                if key < start:
                    break
            elif key >= end:
                break
            mod = unpack(raw)[0]
            if mod <= at:
                if raw[8] == 0:
                    out.append((key, raw[9:], mod))
                else:
                    continue
            else:
                value, mod = self._older_version(txn, key, at)
                if value is None:
                    continue
                out.append((key, value, mod))
            if limit and len(out) >= limit:
                break
        return out

    def revision_timestamp(self, revision: int) -> int:
        if revision == 0:
            return 0
        raw = self._snapshot().get(_U64.pack(revision), db=self._revlog)
        if raw is None or revision < self._compacted:
            raise CompactedError(revision, self._compacted)
        return _stamp(raw)

    def revision_at(self, timestamp: int) -> int:
        txn = self._snapshot()
        lo, hi = max(self._compacted, 1), self._read_txn_revision
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

    # ---- commits -------------------------------------------------------------------------

    async def commit(self, compares: Sequence[Compare],
                     writes: Sequence[tuple[bytes, bytes | None]], alone: bool = False) -> CommitResult:
        if self._closed:
            raise RuntimeError("store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request = _Commit(compares, writes, future, loop)
        # A lone client gains nothing from group commit, and handing its commit to the writer
        # thread and back costs a tenth of the commit: commit here, blocking the loop for the
        # sync, when the writer has nothing to do. Concurrent clients keep sharing fsyncs.
        if alone and self._requests.empty() and not self._deferred and self._write_lock.acquire(blocking=False):
            try:
                done = self._run_batch([request], inline=True)
            finally:
                self._write_lock.release()
            if done:
                self.stats.inline_batches += 1
                return await future
        self._requests.put(request)
        return await future

    async def compact(self, revision: int) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests.put(_Compact(min(revision, self._revision), future, loop))
        await future

    def _write_loop(self) -> None:
        try:
            while True:
                if self._deferred:
                    request = self._deferred.pop(0)
                else:
                    request = self._requests.get()
                if request is None:
                    return
                with self._write_lock:
                    if isinstance(request, _Compact):
                        self._run_compaction(request)
                    else:
                        self._serve(request)
        except _Closing:
            return
        finally:
            for request in self._deferred:  # closing: nothing more will be compacted
                _post(request.loop, _resolve, request.future, None)

    def _serve(self, first: _Commit) -> None:
        """Run `first` and every commit queued behind it as one batch (one synced transaction)."""
        batch = [first]
        stop = False
        while len(batch) < _MAX_BATCH:
            try:
                more = self._requests.get_nowait()
            except queue.Empty:
                break
            if more is None:
                stop = True
                break
            if isinstance(more, _Compact):
                self._deferred.append(more)
                continue
            batch.append(more)
        self._run_batch(batch)
        if stop:
            raise _Closing()

    def _serve_waiting(self) -> None:
        """Between compaction chunks: run the commits that queued up meanwhile."""
        try:
            first = self._requests.get_nowait()
        except queue.Empty:
            return
        if first is None:
            raise _Closing()
        if isinstance(first, _Compact):
            self._deferred.append(first)
            return
        self._serve(first)

    def _in_write_txn(self, fn: Callable[[lmdb.Transaction], _R], loop: asyncio.AbstractEventLoop) -> _R:
        """Run fn in one synced write transaction, growing the map when it is full."""
        for _ in range(_MAX_MAP_GROWS):
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow_map(loop)
        raise lmdb.MapFullError("the store's map could not be grown enough for one transaction")

    def _grow_map(self, loop: asyncio.AbstractEventLoop) -> None:
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
            except BaseException as exc:  # reported to the writer, which fails the batch
                failure.append(exc)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(grow)
        except RuntimeError:  # the loop is closed: nobody reads, grow here
            grow()
        done.wait()
        if failure:
            raise failure[0]
        self.stats.map_grows += 1
        log.info("store map grown to %d bytes", new_size)

    def _run_batch(self, batch: list[_Commit], inline: bool = False) -> bool:
        """Commit a batch in one synced write transaction and tell its callers.

        inline: on the loop's own thread, which cannot grow the map (growing needs the loop
        free of read snapshots): returns False untouched when the map is full, for the writer
        thread to retry.
        """
        try:
            if inline:
                with self._env.begin(write=True) as txn:
                    results, applied, written, revision = self._apply(txn, batch)
            else:
                results, applied, written, revision = self._in_write_txn(
                    lambda txn: self._apply(txn, batch), batch[0].loop)
        except lmdb.MapFullError as exc:
            if inline:
                return False
            self._fail_batch(batch, exc)
            return True
        except Exception as exc:  # an I/O error or a full disk: nobody in the batch committed
            self._fail_batch(batch, exc)
            return True
        stats = self.stats
        if applied:
            stats.batches += 1
            stats.commits += len(applied)
            stats.largest_batch = max(stats.largest_batch, len(applied))
        stats.conflicts += sum(1 for r in results if not r.succeeded)
        self._recent.extend(applied)
        self._revision = revision  # published only once durable
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for request, result, keys in zip(batch, results, written):
            by_loop.setdefault(request.loop, []).append((request, result, keys))
        for loop, done in by_loop.items():
            _post(loop, self._finish, done)
        return True

    def _fail_batch(self, batch: list[_Commit], exc: Exception) -> None:
        if len(batch) > 1:  # one commit too big to fit must not fail the others with it
            for request in batch:
                self._run_batch([request])
            return
        log.exception("commit failed")
        failure = CommitFailedError(f"the store could not commit: {exc}")
        for request in batch:
            _post(request.loop, _fail, request.future, failure)

    def _apply(self, txn: lmdb.Transaction, batch: list[_Commit]
               ) -> tuple[list[CommitResult], list[tuple[int, list[bytes]]], list[list[bytes]], int]:
        revision = self._revision
        results: list[CommitResult] = []
        applied: list[tuple[int, list[bytes]]] = []
        written: list[list[bytes]] = []
        latest, history, revlog = self._latest, self._history, self._revlog
        for request in batch:
            failed = self._check(txn, request.compares, applied, revision)
            if failed is not None:
                results.append(CommitResult(0, failed[0], failed[1]))
                written.append([])
                continue
            if not request.writes:
                results.append(CommitResult(revision))
                written.append([])
                continue
            revision += 1
            rev_bytes = _U64.pack(revision)
            keys = []
            for key, value in request.writes:
                old = txn.get(key, db=latest)
                if value is None and (old is None or old[8] == 1):
                    continue  # deleting what is already absent writes no version
                if old is not None:
                    txn.put(_history_key(key, _U64.unpack_from(old)[0]), old[8:], db=history)
                txn.put(key, rev_bytes + (_TOMBSTONE if value is None else _LIVE + value), db=latest)
                keys.append(key)
            keys.sort()
            with self._clock_lock:
                stamp = self._clock.now()
            txn.put(rev_bytes, stamp.to_bytes(_STAMP_BYTES, "big") + marshal.dumps(keys), db=revlog)
            applied.append((revision, keys))
            written.append(keys)
            results.append(CommitResult(revision))
        return results, applied, written, revision

    def _check(self, txn: lmdb.Transaction, compares: Sequence[Compare],
               pending: list[tuple[int, list[bytes]]],
               revision: int) -> tuple[Compare, bytes] | None:
        for compare in compares:
            if type(compare) is KeyCompare:
                raw = txn.get(compare.key, db=self._latest)
                mod = _U64.unpack_from(raw)[0] if raw is not None else 0
                if mod != compare.mod_revision:
                    return compare, compare.key
            else:
                assert isinstance(compare, RangeCompare)
                key = self._changed_in_range(txn, compare, pending, revision)
                if key is not None:
                    return compare, key
        return None

    def _changed_in_range(self, txn: lmdb.Transaction, compare: RangeCompare,
                          pending: list[tuple[int, list[bytes]]], revision: int) -> bytes | None:
        """A key in [start, end) written after compare.revision (as of `revision`), or None."""
        since = compare.revision
        if since >= revision:
            return None
        recent = self._recent
        # The log answers when it holds every revision after `since`: revisions enter it
        # consecutively, and `pending` holds this batch's (not yet published) ones.
        if (recent[0][0] <= since + 1) if recent else since >= self._revision:
            for log_part in (pending, recent):
                for rev, keys in reversed(log_part):
                    if rev <= since:
                        break
                    i = bisect.bisect_left(keys, compare.start)
                    if i < len(keys) and keys[i] < compare.end:
                        return keys[i]
            return None
        if since < self._compacted:
            # Tombstones at or below the horizon are gone: a delete in the range can no longer
            # be seen, so the compare cannot be proven to hold.
            return compare.start
        cursor = txn.cursor(db=self._latest)
        if not cursor.set_range(compare.start):
            return None
        for key, raw in cursor.iternext():
            if key >= compare.end:
                return None
            if _U64.unpack_from(raw)[0] > since:
                return key
        return None

    def _finish(self, done: list[tuple[_Commit, CommitResult, list[bytes]]]) -> None:
        events: list[WatchEvent] = []
        for request, result, keys in done:
            if not request.future.done():
                request.future.set_result(result)
            if self._watchers and keys:
                values = dict(request.writes)
                events.extend(WatchEvent(result.revision, k, values[k]) for k in keys)
        if events:
            self._notify(events)

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
        cursor = txn.cursor(db=self._revlog)
        if not cursor.set_range(_U64.pack(from_revision)):
            return out
        for rkey, raw in cursor.iternext():
            rev = _U64.unpack(rkey)[0]
            if rev > up_to:
                break
            for key in marshal.loads(raw[_STAMP_BYTES:]):
                if key.startswith(prefix):
                    value, _ = self.get(key, rev)
                    out.append(WatchEvent(rev, key, value))
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
        self._requests.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        self._drop_snapshot()
        self._env.close()


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
