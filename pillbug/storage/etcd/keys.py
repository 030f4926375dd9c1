"""The etcd key layout of the Pillbug store (docs/rfcs/0001-cluster.md §2.1), in one place.

Everything lives under a namespace (b"" in production; tests share one etcd and give each store its
own). Two prefixes never overlap, so a range compare over SQL data never covers an engine key:
  d<key>          the Store's keys; value = 1 flag byte (0 live, 1 tombstone) + the value
  x/txn/<id>      transaction records, which settle ambiguous commits (§2.3)
  x/tomb/<key>    the tombstone index, so that the compactor finds tombstones to GC (§2.4)
  x/clock         the revision clock: the largest commit HLC stamp so far (§2.4)
  x/gc            the GC horizon (§2.4)
Numbers are fixed-width big-endian, because etcd compares values as bytes.
"""
from __future__ import annotations

LIVE = b"\x00"
TOMBSTONE = b"\x01"
COMMITTED = b"C"
ABORTED = b"A"
GC_BYTES = 8
CLOCK_BYTES = 16


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with prefix (etcd's range_end for a prefix)."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\x00"  # etcd: every key


class Layout:
    """The etcd keys of one namespace."""

    __slots__ = ("ns", "data", "data_end", "txn", "tomb", "clock", "gc", "lock", "wait", "_cut")

    def __init__(self, namespace: bytes) -> None:
        self.ns = namespace
        self.data = namespace + b"d"
        self.data_end = prefix_end(self.data)
        self.txn = namespace + b"x/txn/"
        self.tomb = namespace + b"x/tomb/"
        self.clock = namespace + b"x/clock"
        self.gc = namespace + b"x/gc"
        self.lock = namespace + b"x/lock/"  # row lock queues (locks.py)
        self.wait = namespace + b"x/wait/"  # their wait edges
        self._cut = len(self.data)

    def d(self, key: bytes) -> bytes:
        return self.data + key

    def user_key(self, etcd_key: bytes) -> bytes:
        return etcd_key[self._cut:]

    def data_range(self, start: bytes, end: bytes) -> tuple[bytes, bytes]:
        return self.data + start, self.data + end

    def data_prefix(self, prefix: bytes) -> tuple[bytes, bytes]:
        key = self.data + prefix
        return key, prefix_end(key)

    def tomb_key(self, key: bytes) -> bytes:
        return self.tomb + key

    def txn_key(self, txn_id: bytes) -> bytes:
        return self.txn + txn_id

    def lock_queue(self, key: bytes) -> bytes:
        """The prefix of one row's lock queue; its length keeps key "a"'s queue from being a prefix
        of key "a/b"'s."""
        return self.lock + len(key).to_bytes(4, "big") + key + b"/"

    def wait_key(self, lock_txn_id: bytes) -> bytes:
        return self.wait + lock_txn_id


def encode_value(value: bytes | None) -> bytes:
    return TOMBSTONE if value is None else LIVE + value


def decode_value(raw: bytes) -> bytes | None:
    """None for a tombstone."""
    return None if raw[:1] == TOMBSTONE else raw[1:]


def u64(n: int) -> bytes:
    return n.to_bytes(GC_BYTES, "big")


def stamp(ts: int) -> bytes:
    return ts.to_bytes(CLOCK_BYTES, "big")


def number(raw: bytes) -> int:
    return int.from_bytes(raw, "big") if raw else 0
