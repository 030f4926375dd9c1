"""Committed versions that are durable in the write-ahead log but not yet in LMDB.

lmdb_store.py makes a commit durable with one append to the log (wal.py) and writes it into
LMDB later, at a checkpoint, together with many others. Until then its versions live here, and
every read looks here first: a key's versions here are all newer than any of its versions in
LMDB, so the newest one at or before the read's revision wins, and when there is none, LMDB has
the answer.

  revisions  [(revision, HLC stamp, [(key, value or None), ...]), ...], consecutive, ascending
  versions   key -> [(revision, value or None), ...], ascending (None: a tombstone)
  keys       the keys of `versions`, sorted, for scans

One thread (the event loop's) adds, reads and evicts; a checkpoint on another thread gets
copies of `revisions` entries, which are never changed once added. Revisions that are admitted
but not yet durable are here too; readers never ask for them (they read at a published revision).

This module knows nothing of LMDB or the log's format.
"""
from __future__ import annotations

import bisect

Version = tuple[int, bytes | None]
Writes = list[tuple[bytes, bytes | None]]

# Keys added in one go past which the sorted key list is rebuilt rather than inserted into.
_REBUILD_KEYS = 64


class MemTable:
    __slots__ = ("revisions", "versions", "keys", "bytes")

    def __init__(self) -> None:
        self.revisions: list[tuple[int, int, Writes]] = []
        self.versions: dict[bytes, list[Version]] = {}
        self.keys: list[bytes] = []
        self.bytes = 0  # keys and values held, for the checkpoint threshold

    # ---- adding and evicting --------------------------------------------------------------------

    def add(self, revision: int, stamp: int, writes: Writes) -> None:
        """Record one commit's versions; `writes` is sorted by key, one write per key."""
        assert not self.revisions or revision == self.revisions[-1][0] + 1, "revisions must be consecutive"
        versions = self.versions
        new_keys = []
        size = 0
        for key, value in writes:
            listed = versions.get(key)
            if listed is None:
                versions[key] = [(revision, value)]
                new_keys.append(key)
            else:
                listed.append((revision, value))
            size += len(key) + (len(value) if value is not None else 0)
        self.revisions.append((revision, stamp, writes))
        self.bytes += size
        if len(new_keys) > _REBUILD_KEYS:
            self.keys = sorted(versions)
        else:
            for key in new_keys:
                bisect.insort(self.keys, key)

    def evict(self, flushed: int) -> None:
        """Drop every version at or before `flushed`: LMDB holds them now."""
        revisions = self.revisions
        count = 0
        gone = False
        versions = self.versions
        for revision, _, writes in revisions:
            if revision > flushed:
                break
            count += 1
            for key, value in writes:
                listed = versions[key]
                del listed[0]  # the oldest version of a key belongs to the oldest revision
                if not listed:
                    del versions[key]
                    gone = True
                self.bytes -= len(key) + (len(value) if value is not None else 0)
        del revisions[:count]
        if gone:
            self.keys = sorted(versions)

    # ---- reading ---------------------------------------------------------------------------------

    def oldest_revision(self) -> int:
        """The first revision held here (0 when empty)."""
        revisions = self.revisions
        return revisions[0][0] if revisions else 0

    def version_at(self, key: bytes, at: int) -> Version | None:
        """The newest version of key at or before `at`; None when LMDB must answer."""
        listed = self.versions.get(key)
        if listed is not None:
            for version in reversed(listed):
                if version[0] <= at:
                    return version
        return None

    def newest(self, key: bytes) -> Version | None:
        listed = self.versions.get(key)
        return listed[-1] if listed else None

    def overlay(self, start: bytes, end: bytes, at: int) -> list[tuple[bytes, bytes | None, int]]:
        """(key, value or None, revision) for every key in [start, end) with a version here at
        or before `at`, in key order."""
        keys = self.keys
        out = []
        for key in keys[bisect.bisect_left(keys, start):bisect.bisect_left(keys, end)]:
            version = self.version_at(key, at)
            if version is not None:
                out.append((key, version[1], version[0]))
        return out

    def changed_key(self, start: bytes, end: bytes, since: int) -> bytes | None:
        """A key in [start, end) with a version here newer than `since`."""
        keys = self.keys
        versions = self.versions
        for key in keys[bisect.bisect_left(keys, start):bisect.bisect_left(keys, end)]:
            if versions[key][-1][0] > since:
                return key
        return None

    def stamp(self, revision: int) -> int | None:
        """The HLC stamp of a revision held here."""
        revisions = self.revisions
        if revisions:
            index = revision - revisions[0][0]
            if 0 <= index < len(revisions):
                return revisions[index][1]
        return None

    def revision_at(self, timestamp: int, newest: int) -> int | None:
        """The newest revision held here, up to `newest`, stamped at or before `timestamp`; None
        when every revision held here is younger (LMDB must answer)."""
        revisions = self.revisions
        index = bisect.bisect_right(revisions, timestamp, key=lambda entry: entry[1]) - 1
        while index >= 0 and revisions[index][0] > newest:
            index -= 1
        return revisions[index][0] if index >= 0 else None

    def revisions_between(self, first: int, last: int) -> list[tuple[int, int, Writes]]:
        """The entries of the revisions held here in [first, last]."""
        revisions = self.revisions
        if not revisions or first > last:
            return []
        oldest = revisions[0][0]
        return revisions[max(first - oldest, 0):max(last - oldest + 1, 0)]  # a copy
