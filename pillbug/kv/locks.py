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
This module knows nothing of SQL; it deals in keys and transactions.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from pillbug.util import errors
from pillbug.util.encoding import pretty_key

MAX_LOCKS_PER_TXN = 10_000


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
                raise errors.serialization_failure(
                    "TransactionRetryWithProtoRefreshError: TransactionAbortedError(ABORT_REASON_ABORTED_RECORD_FOUND): "
                    f"deadlock detected while waiting for the lock on key {pretty_key(key)}")
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
