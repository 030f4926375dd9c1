"""The write-ahead log in front of LMDB: one synced append per group of commits.

A synced LMDB commit flushes twice (its data pages, then its meta page) and touches several
B-tree pages; appending one small record to a preallocated file and flushing it once costs a
third of that. So a commit is made durable here, and reaches LMDB later, many at a time
(lmdb_store.py: checkpoints).

File layout (one file, `wal` in the store's directory, preallocated and zero-filled so that an
append never changes the file's size and fdatasync has no metadata to flush):

  header   at offset 0, HEADER_BYTES long: MAGIC, the base revision (8 bytes BE), crc32 of both
  records  from HEADER_BYTES on, back to back, each:
             payload length (4 bytes BE), crc32 (4 bytes BE) of base + revision + payload,
             revision (8 bytes BE), payload = marshal((HLC stamp, [(key, value or None), ...]))

`reset(base)` starts the log over once everything in it is in LMDB (lmdb_store.py keeps two
logs and appends to one while a checkpoint empties the other): it rewrites the header and leaves
older records in place. They cannot be mistaken for new ones: a record is accepted only if
its crc (which covers the base) holds and its revision follows the previous one, starting at
base + 1. Replay stops at the first record that fails either test, which is also how a torn write
at the tail (a crash in the middle of an append) is recognised and ignored: its commit was never
acknowledged.

This module knows nothing of LMDB, MVCC or SQL: it keeps numbered records durable.
"""
from __future__ import annotations

import marshal
import os
import struct
import zlib
from collections.abc import Iterator, Sequence

MAGIC = b"PILLBUG-WAL-1\x00\x00\x00"
HEADER_BYTES = 4096
DEFAULT_CAPACITY = 8 << 20
_HEADER = struct.Struct(">16sQI")
_RECORD = struct.Struct(">IIQ")
_U64 = struct.Struct(">Q")
_ZEROS = bytes(1 << 20)

Writes = Sequence[tuple[bytes, bytes | None]]


class LogCorruptError(Exception):
    """The log's header is unreadable: the store cannot know what was committed."""


def encode_payload(stamp: int, writes: Writes) -> bytes:
    """A commit's record body: its HLC stamp and its writes."""
    return marshal.dumps((stamp, list(writes)))


def framed_size(payload: bytes) -> int:
    return _RECORD.size + len(payload)


class WriteAheadLog:
    """A preallocated log file; append() returns once the records are on disk."""

    def __init__(self, path: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        existed = os.path.exists(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not existed or os.fstat(self._fd).st_size < HEADER_BYTES:
                self._preallocate(capacity)
                self._write_header(0)
            self.capacity = os.fstat(self._fd).st_size
            self.base = self._read_header()
        except BaseException:
            os.close(self._fd)
            raise
        self.end = HEADER_BYTES  # where the next record goes (records() moves it past the valid ones)
        self.last = self.base  # the revision of the last record (the base when there is none)

    def _preallocate(self, capacity: int) -> None:
        written = 0
        while written < capacity:
            chunk = _ZEROS[:min(len(_ZEROS), capacity - written)]
            written += os.pwrite(self._fd, chunk, written)
        os.fsync(self._fd)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name is durable too
        finally:
            os.close(directory)

    def _write_header(self, base: int) -> None:
        head = MAGIC + _U64.pack(base)
        os.pwrite(self._fd, _HEADER.pack(MAGIC, base, zlib.crc32(head)), 0)
        os.fdatasync(self._fd)

    def _read_header(self) -> int:
        raw = os.pread(self._fd, _HEADER.size, 0)
        if len(raw) < _HEADER.size:
            raise LogCorruptError(f"{self.path}: the header is cut short")
        magic, base, crc = _HEADER.unpack(raw)
        if magic != MAGIC or crc != zlib.crc32(magic + _U64.pack(base)):
            raise LogCorruptError(f"{self.path}: not a Pillbug write-ahead log, or its header is damaged")
        return base

    def records(self) -> Iterator[tuple[int, int, list[tuple[bytes, bytes | None]]]]:
        """The valid records, in order, as (revision, stamp, writes); afterwards appends go
        right after the last one."""
        offset = HEADER_BYTES
        expected = self.base + 1
        base_crc = zlib.crc32(_U64.pack(self.base))
        while offset + _RECORD.size <= self.capacity:
            length, crc, revision = _RECORD.unpack(os.pread(self._fd, _RECORD.size, offset))
            end = offset + _RECORD.size + length
            if revision != expected or length == 0 or end > self.capacity:
                break
            payload = os.pread(self._fd, length, offset + _RECORD.size)
            if len(payload) != length or zlib.crc32(payload, zlib.crc32(_U64.pack(revision), base_crc)) != crc:
                break
            stamp, writes = marshal.loads(payload)
            self.end = end
            self.last = revision
            yield revision, stamp, writes
            offset = end
            expected += 1

    def room(self) -> int:
        """Bytes that can still be appended before the log must be reset."""
        return self.capacity - self.end

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Write (revision, payload) records after the last one, and flush them to disk.
        Raises OSError; the caller must then treat the log as unusable."""
        base_crc = zlib.crc32(_U64.pack(self.base))
        framed = []
        for revision, payload in records:
            crc = zlib.crc32(payload, zlib.crc32(_U64.pack(revision), base_crc))
            framed.append(_RECORD.pack(len(payload), crc, revision))
            framed.append(payload)
        data = b"".join(framed)
        assert len(data) <= self.room(), "append() past the log's capacity"
        # One system call writes and flushes (RWF_DSYNC).
        written = os.pwritev(self._fd, [data], self.end, os.RWF_DSYNC)
        if written < len(data):  # a short write: finish it, then flush
            view = memoryview(data)[written:]
            offset = self.end + written
            while view:
                done = os.pwrite(self._fd, view, offset)
                view = view[done:]
                offset += done
                os.fdatasync(self._fd)
        self.end += len(data)
        self.last = records[-1][0]

    def reset(self, base: int) -> None:
        """Start over: every record up to `base` is durable elsewhere."""
        self._write_header(base)
        self.base = self.last = base
        self.end = HEADER_BYTES

    def close(self) -> None:
        os.close(self._fd)
