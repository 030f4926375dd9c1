"""Server-side retries of work that lost a serialization conflict (40001).

retry_serialization_failures() is the one retry loop: the session's simple-query and portal
drivers and the node's writes of system keys all run through it, each saying when a failed
attempt may be re-run and what to do before the next one. Retries that lost a conflict on a
key take turns on that key (RetryTurns, one per engine; RetryTurn, the turn one statement
holds), so that under contention every statement finishes rather than some losing over and
over. This module knows nothing of statements, sessions or the wire protocol: it deals in
attempts, 40001 errors and keys.
"""
from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from pillbug.util import errors

MAX_RETRIES = 100
T = TypeVar("T")


async def retry_serialization_failures(attempt: Callable[[], Awaitable[T]], *,
                                       may_retry: Callable[[errors.PgError], bool] | None = None,
                                       before_retry: Callable[[int], Awaitable[None]] | None = None,
                                       max_retries: int = MAX_RETRIES) -> T:
    """Run attempt() again while it fails with 40001, at most max_retries times more.

    A failed attempt is re-run only if may_retry(exc) says so; it is asked last, after the
    error's code and the count, because it may act (a sink rewinds its output). Before the nth
    retry, before_retry(n) runs (it waits for a turn, backs off). Any other error, or a 40001
    that may not be retried, propagates.
    """
    retries = 0
    while True:
        try:
            return await attempt()
        except errors.PgError as exc:
            if not (exc.code == errors.SERIALIZATION_FAILURE and retries < max_retries
                    and (may_retry is None or may_retry(exc))):
                raise
        retries += 1
        if before_retry is not None:
            await before_retry(retries)


class RetryTurns:
    """First come, first served turns on a key, for server-side retries that lost a conflict on it.

    Optimistic transactions that all contend on one key would otherwise race again on every
    retry, and an unlucky statement could lose many times in a row. A retry waits for its turn
    on the key it lost on and runs while holding it. A first attempt that would write a key
    whose turn someone else holds gives way (Session.commit_txn: it fails as if it had lost, and
    queues up), so the holder never loses to newcomers that were scheduled before it. The turn
    is handed straight to the next waiter (no lost wake-ups when a waiting session goes away).
    Entries exist only while a turn is held, and a session waits for or holds at most one, so
    this is bounded by the number of sessions.
    """

    def __init__(self) -> None:
        self._queues: dict[bytes, deque[asyncio.Future]] = {}  # key -> waiters; present while held

    async def take(self, key: bytes) -> None:
        waiters = self._queues.get(key)
        if waiters is None:
            self._queues[key] = deque()
            return
        turn = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give_back(key)  # handed the turn while going away: pass it on
            elif turn in waiters:
                waiters.remove(turn)
            raise

    def held_elsewhere(self, keys: Iterable[bytes], mine: bytes | None) -> bytes | None:
        """One of `keys` whose turn is held, other than `mine` (the caller's), or None."""
        queues = self._queues
        if queues:
            for key in keys:
                if key in queues and key != mine:
                    return key
        return None

    def give_back(self, key: bytes) -> None:
        waiters = self._queues[key]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._queues[key]


class RetryTurn:
    """The turn a statement being retried by the server holds on a contended key (at most one,
    so turns cannot deadlock), given back when the statement is done."""

    __slots__ = ("turns", "key")

    def __init__(self, turns: RetryTurns) -> None:
        self.turns = turns
        self.key: bytes | None = None

    async def wait(self, conflict_key: bytes | None, attempt: int) -> None:
        """Before the next attempt: wait for the turn on the key the last one lost on."""
        if conflict_key is None:
            await backoff(attempt)
            return
        if conflict_key == self.key:
            return  # lost to a first attempt while holding the turn: still first in line
        self.give_back()
        await self.turns.take(conflict_key)
        self.key = conflict_key

    def give_back(self) -> None:
        if self.key is not None:
            key, self.key = self.key, None
            self.turns.give_back(key)


async def backoff(attempt: int) -> None:
    """Sleep a random while, growing with the attempt, before a retry that holds no turn."""
    await asyncio.sleep(min(0.001 * (2 ** min(attempt, 8)), 0.2) * random.random())
