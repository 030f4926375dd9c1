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

Commits: every commit() call is queued to one writer thread. The thread takes all queued
commits, checks each one's compares against the state left by the ones before it, applies the
survivors in one LMDB write transaction, syncs it once (sync=True, metasync=True: durable before
anyone hears of it), and only then publishes the new revision and resolves the callers' futures.
Many sessions' commits thus share one fsync (group commit). LMDB requires a write transaction
to begin and end on one thread, which is another reason the writer is a dedicated thread.

Range compares ("no key in [a, b) changed after R") are checked against an in-memory log of the
keys each recent revision wrote; when R is older than that log, by scanning `latest` instead.
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
from collections.abc import AsyncIterator, Sequence

import lmdb

from pillbug.storage.store import (
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


_STAMP_BYTES = 16  # an HLC timestamp (wall ns << 16 | logical) needs 80 bits


def _stamp(revlog_value: bytes) -> int:
    return int.from_bytes(revlog_value[:_STAMP_BYTES], "big")


def _history_key(key: bytes, revision: int) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01" + _U64.pack(_MAX_U64 - revision)


def _history_prefix(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


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


class LMDBStore(Store):
    def __init__(self, path: str, map_size: int = 1 << 36) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._env = lmdb.open(path, map_size=map_size, max_dbs=8, sync=True, metasync=True,
                              readahead=False, max_readers=2048, subdir=True)
        self._latest = self._env.open_db(b"latest")
        self._history = self._env.open_db(b"history")
        self._revlog = self._env.open_db(b"revlog")
        self._meta = self._env.open_db(b"meta")
        self._clock = hlc.Clock()
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
        # The loop thread's cached read snapshot, renewed when the revision moves.
        self._read_txn: lmdb.Transaction | None = None
        self._read_txn_revision = -1
        self._recent: deque[tuple[int, list[bytes]]] = deque(maxlen=_RECENT_REVISIONS)
        self._watchers: list[tuple[bytes, asyncio.Queue]] = []
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="lmdb-writer", daemon=True)
        self._writer.start()

    # ---- reads (event loop thread) -------------------------------------------------------

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

    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        txn = self._snapshot()
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
        if at < self._compacted:
            raise CompactedError(at, self._compacted)
        txn = self._snapshot()
        cursor = txn.cursor(db=self._latest)
        out: list[tuple[bytes, bytes, int]] = []
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
        if raw is None:
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
                     writes: Sequence[tuple[bytes, bytes | None]]) -> CommitResult:
        if self._closed:
            raise RuntimeError("store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests.put(_Commit(compares, writes, future, loop))
        return await future

    async def compact(self, revision: int) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests.put(_Compact(min(revision, self._revision), future, loop))
        await future

    def _write_loop(self) -> None:
        requests = self._requests
        while True:
            first = requests.get()
            if first is None:
                return
            if isinstance(first, _Compact):
                self._run_compaction(first)
                continue
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    more = requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if isinstance(more, _Compact):
                    requests.put(more)  # run after this batch
                    break
                batch.append(more)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Commit]) -> None:
        while True:
            try:
                results, applied, revision = self._apply(batch)
                break
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            except Exception as exc:  # an I/O error: nobody in the batch committed
                log.exception("commit batch failed")
                for request in batch:
                    request.loop.call_soon_threadsafe(_fail, request.future, exc)
                return
        self._recent.extend(applied)
        self._revision = revision  # published only once durable
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for request, result in zip(batch, results):
            by_loop.setdefault(request.loop, []).append((request, result))
        for loop, done in by_loop.items():
            loop.call_soon_threadsafe(self._finish, done)

    def _apply(self, batch: list[_Commit]) -> tuple[list[CommitResult], list, int]:
        revision = self._revision
        results: list[CommitResult] = []
        applied: list[tuple[int, list[bytes]]] = []
        latest, history, revlog = self._latest, self._history, self._revlog
        with self._env.begin(write=True) as txn:
            for request in batch:
                failed = self._check(txn, request.compares, applied, revision)
                if failed is not None:
                    results.append(CommitResult(0, failed[0], failed[1]))
                    continue
                if not request.writes:
                    results.append(CommitResult(revision))
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
                results.append(CommitResult(revision))
        return results, applied, revision

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
        since = compare.revision
        if since >= revision:
            return None
        recent = self._recent
        if recent and recent[0][0] <= since + 1 or not recent and since >= self._revision:
            for log_part in (pending, recent):
                for rev, keys in reversed(log_part):
                    if rev <= since:
                        break
                    i = bisect.bisect_left(keys, compare.start)
                    if i < len(keys) and keys[i] < compare.end:
                        return keys[i]
            return None
        cursor = txn.cursor(db=self._latest)
        if not cursor.set_range(compare.start):
            return None
        for key, raw in cursor.iternext():
            if key >= compare.end:
                return None
            if _U64.unpack_from(raw)[0] > since:
                return key
        return None

    def _finish(self, done: list[tuple[_Commit, CommitResult]]) -> None:
        events: list[WatchEvent] = []
        for request, result in done:
            if not request.future.done():
                request.future.set_result(result)
            if self._watchers and result.succeeded and request.writes:
                events.extend(WatchEvent(result.revision, k, v) for k, v in request.writes)
        if events:
            self._notify(events)

    # ---- compaction ----------------------------------------------------------------------

    def _run_compaction(self, request: _Compact) -> None:
        horizon = request.revision
        try:
            with self._env.begin(write=True) as txn:
                self._compact_in(txn, horizon)
            self._compacted = max(self._compacted, horizon)
            request.loop.call_soon_threadsafe(_resolve, request.future, None)
        except Exception as exc:
            log.exception("compaction failed")
            request.loop.call_soon_threadsafe(_fail, request.future, exc)

    def _compact_in(self, txn: lmdb.Transaction, horizon: int) -> None:
        """Delete what no read at or after `horizon` can see.

        A history version is needed by reads in [its revision, the next version's revision);
        once that next revision is at or below the horizon, nobody can read it. A tombstone at
        or below the horizon is no longer needed either, and neither is any version under it.
        """
        latest_cursor = txn.cursor(db=self._latest)
        hist_cursor = txn.cursor(db=self._history)
        doomed_latest = []
        for key, raw in latest_cursor.iternext():
            mod = _U64.unpack_from(raw)[0]
            if raw[8] == 1 and mod <= horizon:
                doomed_latest.append(key)
            prefix = _history_prefix(key)
            next_revision = mod
            if not hist_cursor.set_range(prefix):
                continue
            doomed_history = []
            for hkey in hist_cursor.iternext(values=False):
                if len(hkey) != len(prefix) + 8 or not hkey.startswith(prefix):
                    break
                rev = _MAX_U64 - _U64.unpack_from(hkey, len(prefix))[0]
                if next_revision <= horizon:
                    doomed_history.append(hkey)
                next_revision = rev
            for hkey in doomed_history:
                txn.delete(hkey, db=self._history)
        for key in doomed_latest:
            txn.delete(key, db=self._latest)
        rev_cursor = txn.cursor(db=self._revlog)
        doomed_revs = []
        for rkey in rev_cursor.iternext(values=False):
            if _U64.unpack(rkey)[0] >= horizon:
                break
            doomed_revs.append(rkey)
        for rkey in doomed_revs:
            txn.delete(rkey, db=self._revlog)
        txn.put(b"compacted", _U64.pack(max(self._compacted, horizon)), db=self._meta)

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
        if from_revision < self._compacted:
            raise CompactedError(from_revision, self._compacted)
        txn = self._snapshot()
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
        if self._read_txn is not None:
            self._read_txn.abort()
            self._read_txn = None
        self._env.close()


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
