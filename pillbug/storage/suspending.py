"""A test-only Store whose reads wait, the way a networked store's do: LMDB behind a yield.

A store on the network (etcd: about 0.5 ms a read) answers every read later, and a statement
waiting for it must let the event loop serve others (util/timeslice.py, await_). The one-node
LMDB store answers at once, so nothing would show a path that reaches the store from code that
cannot wait, or Python state that breaks when other statements run in the middle of a read.
SuspendingStore wraps an LMDBStore and answers each read only after a round through the event
loop (through timeslice.await_: outside a statement's greenlet the read fails loudly with
OutsideSliceError), optionally after a random delay from a seeded generator; commits and
compactions likewise start after a turn of the loop (they are coroutines already). Everything
else is the wrapped store's.

Selecting it, for tests only: `pillbug start-single-node --test-store=SPEC` (hidden from --help;
`make start` never passes it, and the node announces `storage engine: lmdb behind the suspending
test store` and logs a warning), or SuspendingStore(LMDBStore(path), ...) in-process. SPEC is
`suspending` followed by comma-separated options:
  max_delay_ms=X   each read, commit and compaction waits a uniform 0..X ms (default 0: one turn of the loop)
  seed=N           the delays' random seed (default 0), so that a run can be repeated
  slow_key=TEXT    a read whose key (or a scan whose start) contains the bytes of TEXT ...
  slow_ms=X        ... waits X ms instead (how a test holds one statement in a slow read)
e.g. `--test-store=suspending,max_delay_ms=1,seed=7`. tests/conftest.py passes
PILLBUG_TEST_STORE on to the nodes it starts, so a whole suite can run on this engine.

This module must not be imported by production code paths except to build it from that option.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.store import CommitResult, Compare, HeldLocks, Store, StoreLimits, WatchEvent
from pillbug.util import timeslice

SPEC_NAME = "suspending"


def _suspended_read(name: str) -> Callable[..., Any]:
    """A read of the wrapped store that first waits through the bridge. One line per read method."""
    def read(self: SuspendingStore, *args: Any, **kwargs: Any) -> Any:
        timeslice.await_(self._turn(args))
        return getattr(self.base, name)(*args, **kwargs)
    read.__name__ = name
    read.__doc__ = f"The wrapped store's {name}, answered after a turn of the event loop."
    return read


class SuspendingStore(Store):
    """Reads (get, get_many, scan, current_revision) answer after a turn of the loop, perhaps a
    delay."""

    def __init__(self, base: LMDBStore, max_delay_ms: float = 0.0, seed: int = 0,
                 slow_key: bytes | None = None, slow_ms: float = 0.0) -> None:
        self.base = base
        self.max_delay = max_delay_ms / 1000
        self.slow_key = slow_key or None
        self.slow_delay = slow_ms / 1000
        self._random = random.Random(seed)
        self.reads = 0  # reads answered, for tests that check the wrapper was in the way

    def _delay(self, args: Sequence[Any]) -> float:
        marker = self.slow_key
        if marker is not None:
            for arg in args:
                if isinstance(arg, bytes) and marker in arg:
                    return self.slow_delay
                if isinstance(arg, (list, tuple)) and any(isinstance(k, bytes) and marker in k for k in arg):
                    return self.slow_delay
        return self._random.uniform(0, self.max_delay) if self.max_delay else 0.0

    def _turn(self, args: Sequence[Any] = ()) -> asyncio.Future:
        """A future resolved after the delay, or at the next turn of the loop."""
        self.reads += 1
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        delay = self._delay(args)
        if delay > 0:
            loop.call_later(delay, _resolve, future)
        else:
            loop.call_soon(_resolve, future)
        return future

    get = _suspended_read("get")
    get_many = _suspended_read("get_many")
    scan = _suspended_read("scan")
    current_revision = _suspended_read("current_revision")

    @property
    def limits(self) -> StoreLimits:
        return self.base.limits

    async def commit(self, compares: Sequence[Compare], writes: Sequence[tuple[bytes, bytes | None]],
                     held_locks: HeldLocks | None = None) -> CommitResult:
        await self._turn()
        return await self.base.commit(compares, writes, held_locks)

    async def compact(self, revision: int) -> None:
        await self._turn()
        await self.base.compact(revision)

    def revision_timestamp(self, revision: int) -> int:
        return self.base.revision_timestamp(revision)

    def revision_at(self, timestamp: int) -> int:
        return self.base.revision_at(timestamp)

    def compacted_revision(self) -> int:
        return self.base.compacted_revision()

    def watch(self, prefix: bytes, from_revision: int) -> AsyncIterator[WatchEvent]:
        return self.base.watch(prefix, from_revision)

    def now(self) -> int:
        return self.base.now()

    async def close(self) -> None:
        await self.base.close()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # the waiter may have been interrupted and canceled it
        future.set_result(None)


def from_spec(spec: str, base: LMDBStore) -> SuspendingStore:
    """Build the store that `--test-store=SPEC` names (see the module docstring)."""
    name, _, rest = spec.partition(",")
    if name.strip() != SPEC_NAME:
        raise ValueError(f"unknown test store {name!r} (the only one is {SPEC_NAME!r})")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"test store option {item!r} is not key=value")
        if key in ("max_delay_ms", "slow_ms"):
            options[key] = float(value)
        elif key == "seed":
            options[key] = int(value)
        elif key == "slow_key":
            options[key] = value.encode()
        else:
            raise ValueError(f"unknown test store option {key!r}")
    return SuspendingStore(base, **options)
