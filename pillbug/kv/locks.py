"""Exclusive row locks that make contending writers queue instead of failing at commit.

Transactions stay optimistic (kv/txn.py): what makes them SERIALIZABLE is the conditional commit,
and nothing here can weaken it. Locks only change *when* a conflict is noticed. Without them,
eight clients that each do `UPDATE branches SET bal = bal + d WHERE id = 1` all read the same
version, and all but one fail at commit with 40001, again and again (pgbench's tpcb-like script
starved that way). With them, as with CockroachDB's implicit SELECT FOR UPDATE, a statement that
is about to read a row in order to update it first takes the row's lock; a second writer waits
until the first commits or aborts, then moves its snapshot forward (when nothing else it read has
changed) and reads the new version: it queues, and commits, instead of retrying.

A lock is held from the moment it is taken until its transaction commits, aborts or is abandoned.
Deadlocks are found when a wait would close a cycle (A waits for B, who waits for A): the
transaction that would close it gets 40001 at once. The table holds one entry per locked key; a
transaction holds at most MAX_LOCKS_PER_TXN locks (past that its writes are only optimistic).

The table lives with the node's event loop and is touched only from its thread.

In a cluster (a Store with `row_locks`, storage/store.py RowLockService), writers of a row on
different nodes queue too: after the local lock, a transaction also takes the row's lock in the
cluster (lock_in_cluster) - but only for keys this node has seen contended (HotKeys: a commit
conflict on the key, or the cluster lock found held by another node, within the last
HOT_SECONDS). A cluster lock costs a replicated write (~2 ms on etcd) that an uncontended
UPDATE does not need: its commit compares decide alone, as on one node before locks. A key that
lost a commit is queued from its next attempt on. The wait for a cluster lock is bounded by
CLUSTER_WAIT_SECONDS, after which the transaction goes on without it (optimistic: the commit
decides): that also ends any cross-node cycle of waits that the cluster's deadlock walk cannot
see (one that passes through this table's in-memory waits).
This module knows nothing of SQL; it deals in keys and transactions.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

from pillbug.storage.store import LockGrant, RowLockService
from pillbug.util import errors, timeslice
from pillbug.util.encoding import pretty_key

_log = logging.getLogger(__name__)

MAX_LOCKS_PER_TXN = 10_000
MAX_HOT_KEYS = 10_000
HOT_SECONDS = 10.0  # a key stays hot this long after its last conflict
CLUSTER_WAIT_SECONDS = 5.0
DEADLOCK_WALK_SECONDS = 1.0  # a waiter for a cluster lock looks for a cycle this often


class LockOwner(Protocol):
    locked: list[bytes]
    waiting_for: bytes | None


class _Lock:
    __slots__ = ("holder", "waiters")

    def __init__(self, holder: LockOwner) -> None:
        self.holder = holder
        self.waiters: list[asyncio.Future] = []


class LockTable:
    def __init__(self) -> None:
        self._locks: dict[bytes, _Lock] = {}
        self.hot = HotKeys()  # keys locked in the cluster too (used when the store has row_locks)

    def __len__(self) -> int:
        return len(self._locks)

    def holder(self, key: bytes) -> LockOwner | None:
        lock = self._locks.get(key)
        return lock.holder if lock is not None else None

    def acquire(self, owner: LockOwner, key: bytes) -> asyncio.Future | None:
        """Take key's lock for owner and return None, or return a future that is resolved when
        the holder lets go (then call acquire again: another waiter may have come first).

        Raises 40001 when waiting would deadlock.
        """
        lock = self._locks.get(key)
        if lock is None:
            if len(owner.locked) < MAX_LOCKS_PER_TXN:
                self._locks[key] = _Lock(owner)
                owner.locked.append(key)
            return None
        if lock.holder is owner:
            return None
        self._check_deadlock(owner, lock.holder, key)
        future = asyncio.get_running_loop().create_future()
        # Waiters that gave up or were woken by a timer leave finished futures behind.
        lock.waiters = [f for f in lock.waiters if not f.done()]
        lock.waiters.append(future)
        return future

    def _check_deadlock(self, owner: LockOwner, holder: LockOwner, key: bytes) -> None:
        # Each owner waits for at most one key, so the waits-for graph is a set of chains.
        seen = 0
        while holder.waiting_for is not None and seen <= len(self._locks):
            lock = self._locks.get(holder.waiting_for)
            if lock is None:
                return
            holder = lock.holder
            if holder is owner:
                raise deadlock(key)
            seen += 1

    def release_all(self, owner: LockOwner) -> None:
        locks = self._locks
        for key in owner.locked:
            lock = locks.get(key)
            if lock is None or lock.holder is not owner:
                continue
            del locks[key]
            for future in lock.waiters:
                if not future.done():
                    future.set_result(None)
        owner.locked = []
        owner.waiting_for = None


def deadlock(key: bytes) -> errors.PgError:
    return errors.serialization_failure(
        "TransactionRetryWithProtoRefreshError: TransactionAbortedError(ABORT_REASON_ABORTED_RECORD_FOUND): "
        f"deadlock detected while waiting for the lock on key {pretty_key(key)}")


class HotKeys:
    """The keys this node has seen contended lately: a bounded LRU whose entries expire
    HOT_SECONDS after their last conflict (see the module docstring)."""

    def __init__(self, capacity: int = MAX_HOT_KEYS, seconds: float = HOT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.seconds = seconds
        self.clock = clock
        self._last: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def note(self, key: bytes) -> None:
        """key was contended just now."""
        last = self._last
        last[key] = self.clock()
        last.move_to_end(key)
        while len(last) > self.capacity:
            last.popitem(last=False)

    def is_hot(self, key: bytes) -> bool:
        seen = self._last.get(key)
        if seen is None:
            return False
        if self.clock() - seen > self.seconds:
            del self._last[key]
            return False
        return True


def _wait_for(released: asyncio.Future, began: float, wait: Callable[[asyncio.Future, float], None]) -> None:
    """wait() on a stand-in for `released`: wait's poll timer resolves the future it is given after a
    short while, and a release that the timer faked would send the waiter back to the queue's Txn (a
    replicated write, a new wait edge, a new watch) every poll instead of once its turn comes."""
    stand_in = released.get_loop().create_future()

    def follow(_: asyncio.Future) -> None:
        if not stand_in.done():
            stand_in.set_result(None)

    released.add_done_callback(follow)
    try:
        wait(stand_in, began)
    finally:
        released.remove_done_callback(follow)


def lock_in_cluster(service: RowLockService, txn_id: bytes, key: bytes, owner: LockOwner, hot: HotKeys,
                    wait: Callable[[asyncio.Future, float], None]) -> LockGrant | None:
    """Take key's cluster lock for txn_id (from a statement's greenlet: the calls to the service
    park it, timeslice.await_), waiting its turn; None when the transaction goes on without it.

    wait(future, began) parks the statement until the future is resolved or a short while has
    passed, and raises to end the wait (a cancel, lock_timeout): Txn.get_many_for_update's.
    Raises 40001 when this transaction is the one that must give way in a cycle of waits.
    """
    began = time.monotonic()
    walk_at = began
    granted = False
    try:
        while True:
            outcome = timeslice.await_(service.lock(txn_id, key))
            if outcome is None:
                return None
            if isinstance(outcome, LockGrant):
                granted = True
                return outcome
            hot.note(key)  # held by another transaction, most likely on another node
            owner.waiting_for = key
            try:
                while not outcome.released.done():
                    now = time.monotonic()
                    if now - began >= CLUSTER_WAIT_SECONDS:
                        _log.info("gave up waiting %.0fs for the row lock on %s (queued behind %s)",
                                  CLUSTER_WAIT_SECONDS, pretty_key(key), outcome.holder.hex())
                        return None  # go on, optimistic: the commit's compares decide
                    if now >= walk_at:
                        walk_at = now + DEADLOCK_WALK_SECONDS
                        if timeslice.await_(service.is_deadlock_victim(txn_id, key)):
                            raise deadlock(key)
                    _wait_for(outcome.released, began, wait)
                turn = None if outcome.released.cancelled() else outcome.released.result()
                if isinstance(turn, LockGrant):  # the service saw its turn come: no need to ask again
                    granted = True
                    return turn
            finally:
                owner.waiting_for = None
                outcome.cancel()
    finally:
        if not granted:
            # Leave the row's queue (and withdraw the wait), whatever ended the wait: a place
            # left behind would hold up everyone queued after it for as long as this node lives.
            service.release(txn_id, (key,))
