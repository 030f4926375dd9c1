"""The key-value database as sql/ holds it: transactions and snapshot reads over a Store.

CockroachDB's sql layer holds a kv.DB, never an engine; this is Pillbug's. The server opens the
Store and wraps it here (`DB(store)`), and sql/ begins transactions (`txn()`), reads committed
key-value pairs outside any transaction (`scan()`, for catalog snapshots that no read set should
record) and asks the clock and revision questions AS OF SYSTEM TIME needs. The Store itself is
not handed out, so sql/ depends on the Store contract only through kv/.
This module knows nothing of SQL; it deals in keys, values, revisions and HLC timestamps.
"""
from __future__ import annotations

from pillbug.kv.locks import LockTable
from pillbug.kv.txn import Txn
from pillbug.storage.store import Store


class DB:
    """One node's key-value database: a Store seen through kv/."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def txn(self, read_revision: int | None = None, *, is_read_only_snapshot: bool = False,
            writes_refused: str | None = None, locks: LockTable | None = None, speculate: bool = False) -> Txn:
        """A new transaction reading at `read_revision` (default: the newest committed one);
        `speculate`: it may answer a key the store keeps at hand from store.peek() (Txn.get)."""
        return Txn(self._store, read_revision, is_read_only_snapshot=is_read_only_snapshot,
                   writes_refused=writes_refused, locks=locks, speculate=speculate)

    def scan(self, start: bytes, end: bytes, revision: int) -> list[tuple[bytes, bytes]]:
        """The live (key, value) pairs in [start, end) as of `revision`, in key order, read
        outside any transaction (nothing records them)."""
        return [(key, value) for key, value, _ in self._store.scan(start, end, revision)]

    def now(self) -> int:
        """An HLC timestamp from the store's clock."""
        return self._store.now()

    def revision_at(self, timestamp: int) -> int:
        """The newest revision whose timestamp is at or before `timestamp`."""
        return self._store.revision_at(timestamp)

    def compacted_revision(self) -> int:
        """Reads at revisions below this fail (CompactedError)."""
        return self._store.compacted_revision()
