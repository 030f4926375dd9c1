"""The Store contract that the kv layer is written against.

Every committed write gets a revision (one global, increasing counter); each key remembers the
revision of its last change (mod_revision); old versions stay readable until compacted. Deletes are
tombstone versions, so a range compare still sees that a key went away. See
docs/architecture.md ("The Store contract") for why this shape lets one node become a cluster,
and docs/rfcs/0001-cluster.md for the contract's revision (reads that may suspend, get_many, a
lazy read revision, engine limits) and the cluster built on etcd.
"""
from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyCompare:
    """Holds if `key` still has mod_revision `mod_revision` (0: the key is still absent)."""
    key: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class RangeCompare:
    """Holds if no key in [start, end) changed after `revision`."""
    start: bytes
    end: bytes
    revision: int


Compare = KeyCompare | RangeCompare


@dataclass(frozen=True, slots=True)
class HeldLocks:
    """The row locks a committing transaction holds (Store.row_locks): its lock id and the keys."""
    txn_id: bytes
    keys: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The outcome of a conditional commit: a new revision, or the compare that failed."""
    revision: int  # 0 when a compare failed
    failed: Compare | None = None
    conflict_key: bytes | None = None  # the key whose change made `failed` fail
    released_locks: bool = False  # the commit let go of the held locks itself (see Store.commit)

    @property
    def succeeded(self) -> bool:
        return self.failed is None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    revision: int
    key: bytes
    value: bytes | None  # None: deleted


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """What one commit may hold, as the engine declares it; the kv layer refuses (54000) a
    transaction as it writes past these, before a commit could fail part-way inside the engine."""
    max_ops_per_commit: int  # writes (puts and deletes) in one commit
    max_bytes_per_commit: int  # the keys and values of those writes, in bytes
    max_value_bytes: int  # one value


@dataclass(frozen=True, slots=True)
class LockGrant:
    """A row lock taken in the cluster, with the row's version read in the same step."""
    revision: int  # the store revision at which the lock was taken and the row read
    mod_revision: int  # the row's mod_revision then (0: absent)


class LockWait(abc.ABC):
    """Someone else holds the row lock: `released` is resolved when they let go, with a LockGrant
    when the service already knows the lock is the waiter's now, else with None (try again)."""
    released: asyncio.Future
    holder: bytes  # the holding transaction's id

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop watching for the release (the waiter gave up or will try again)."""


class RowLockService(abc.ABC):
    """Row locks shared by every node of a cluster (docs/rfcs/0001-cluster.md §2.5), an optional
    capability of a Store (Store.row_locks; None for a one-node engine, whose LockTable is
    enough). Locks carry no correctness, the commit compares do: a lock only makes writers of a
    row on different nodes queue instead of failing at commit. A crashed node's locks go with it.
    """

    @abc.abstractmethod
    def txn_id(self, timestamp: int) -> bytes:
        """A new transaction id, unique in the cluster, that sorts by `timestamp` (HLC) first."""

    @abc.abstractmethod
    async def note_wait(self, txn_id: bytes, key: bytes) -> None:
        """Record that txn_id waits for key in a node's own lock table, so that a deadlock walk
        can pass through a wait that no cluster lock shows."""

    @abc.abstractmethod
    def clear_wait(self, txn_id: bytes) -> None:
        """Withdraw note_wait's record, in the background."""

    @abc.abstractmethod
    async def lock(self, txn_id: bytes, key: bytes) -> LockGrant | LockWait | None:
        """Take key's lock for txn_id and read the row's version, or say who holds it (and
        record that txn_id waits for key); None when the service cannot answer now (the caller
        goes on without the lock)."""

    @abc.abstractmethod
    async def is_deadlock_victim(self, txn_id: bytes, key: bytes) -> bool:
        """Whether txn_id, waiting for key, closes a cycle of waits in which it is the youngest
        transaction (the one that must give way)."""

    @abc.abstractmethod
    def release(self, txn_id: bytes, keys: Sequence[bytes]) -> None:
        """Let go of txn_id's locks on keys and of its wait, in the background."""


class CompactedError(Exception):
    """A read asked for a revision older than the compaction horizon."""

    def __init__(self, revision: int, compacted: int) -> None:
        super().__init__(f"revision {revision} is older than the compacted revision {compacted}")
        self.revision = revision
        self.compacted = compacted


class CommitFailedError(Exception):
    """The commit definitely did not apply (an I/O error, a full disk); nothing of it is visible."""


class CommitOutcomeUnknownError(Exception):
    """The commit's durable write failed part-way: it may or may not have applied."""


# For engines that declare nothing: as much as one LMDB commit takes (lmdb_store.LIMITS).
DEFAULT_LIMITS = StoreLimits(max_ops_per_commit=2_000_000, max_bytes_per_commit=4 << 30,
                             max_value_bytes=1 << 30)


class Store(abc.ABC):
    """Versioned bytes with snapshot reads and one atomic conditional commit."""

    @abc.abstractmethod
    def current_revision(self) -> int:
        """The newest committed revision (its writes are durable and visible)."""

    @abc.abstractmethod
    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        """The value of key as of revision `at` and the revision that wrote it.

        Returns (None, 0) for a key that never existed (or whose history was compacted away)
        and (None, mod_revision) for a key whose version at `at` is a tombstone.
        """

    def get_many(self, keys: Sequence[bytes], at: int) -> list[tuple[bytes | None, int]]:
        """get() of every key, in order, at one revision, in one call (one round trip for a
        networked engine; this default, for engines without a batch read, loops over get)."""
        return [self.get(key, at) for key in keys]

    # Row locks across nodes (RowLockService), for an engine that several nodes share.
    row_locks: RowLockService | None = None

    def peek(self, key: bytes) -> tuple[bytes | None, int] | None:
        """A recent (value, mod_revision) of a key the engine keeps at hand, with no round trip,
        or None. It may be stale: a transaction that uses it checks it at its first read
        (read_now) or commit. Never suspends. Engines without such keys return None."""
        return None

    def read_now(self, keys: Sequence[bytes]) -> tuple[int, list[tuple[bytes | None, int]]]:
        """A transaction's first read: the newest revision and keys' values at it, in one call
        where the engine can (etcd: one linearizable Txn). MAY SUSPEND."""
        revision = self.current_revision()
        return revision, self.get_many(keys, revision)

    @property
    def limits(self) -> StoreLimits:
        """The engine's limits on one commit (see StoreLimits)."""
        return DEFAULT_LIMITS

    @abc.abstractmethod
    def scan(self, start: bytes, end: bytes, at: int, limit: int = 0,
             reverse: bool = False) -> list[tuple[bytes, bytes, int]]:
        """Live (key, value, mod_revision) in [start, end) as of `at`, in key order (or reverse).

        limit 0 means no limit.
        """

    @abc.abstractmethod
    async def commit(self, compares: Sequence[Compare], writes: Sequence[tuple[bytes, bytes | None]],
                     held_locks: HeldLocks | None = None) -> CommitResult:
        """Apply writes atomically and durably iff every compare holds.

        held_locks: the row locks (row_locks) the committing transaction holds. An engine with
        row locks also fails the commit when it writes a key that another transaction queues for
        without holding its lock (conflict_key names it), so that writers who never saw the row
        contended queue behind its waiters instead of overtaking them; and it may let go of the
        held locks in the same commit (then it says so: CommitResult.released_locks).

        A write with value None is a delete (a tombstone version). The returned revision is the
        new revision of every written key. Durable means synced before this returns. Raises
        CommitFailedError when the commit certainly did not apply for another reason, and
        CommitOutcomeUnknownError when nobody can tell whether it did. Whether a commit waits
        to share a group commit with others or goes at once is the engine's own business.
        """

    @abc.abstractmethod
    def revision_timestamp(self, revision: int) -> int:
        """The HLC timestamp stamped on a revision when it was committed."""

    @abc.abstractmethod
    def revision_at(self, timestamp: int) -> int:
        """The newest revision whose timestamp is at or before `timestamp`."""

    @abc.abstractmethod
    def compacted_revision(self) -> int:
        """Reads at revisions below this fail with CompactedError."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop versions and tombstones that no read at or after `revision` can see."""

    @abc.abstractmethod
    def watch(self, prefix: bytes, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under prefix from `from_revision` on, in revision order, then as they commit."""

    @abc.abstractmethod
    def now(self) -> int:
        """An HLC timestamp from the store's clock (used for transaction timestamps)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending commits and release the engine."""
