"""Hybrid logical clock: wall time in nanoseconds plus a logical counter.

Timestamps are packed into one int, wall_ns << 16 | logical, so that they compare and store as
plain integers. now() never goes backwards, even when the wall clock does, and update() folds
in a timestamp seen from elsewhere (another node, in a cluster). CockroachDB prints a timestamp
as the decimal "<wall ns>.<logical, 10 digits>" (cluster_logical_timestamp()); to_decimal does too.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(wall_ns: int, logical: int = 0) -> int:
    assert 0 <= logical <= LOGICAL_MASK
    return (wall_ns << LOGICAL_BITS) | logical


def wall_ns(ts: int) -> int:
    return ts >> LOGICAL_BITS


def logical(ts: int) -> int:
    return ts & LOGICAL_MASK


def to_decimal(ts: int) -> Decimal:
    return Decimal(f"{wall_ns(ts)}.{logical(ts):010d}")


def from_decimal(d: Decimal) -> int:
    wall = int(d)
    frac = d - wall
    return pack(wall, min(int(frac * 10**10), LOGICAL_MASK))


class Clock:
    """The node's HLC. Not thread-safe: it lives on the event loop's thread, or behind a lock."""

    def __init__(self, wall_clock: Callable[[], int] = time.time_ns) -> None:
        self._wall_clock = wall_clock
        self._last = 0

    def now(self) -> int:
        wall = self._wall_clock()
        last = self._last
        if wall > last >> LOGICAL_BITS:
            ts = wall << LOGICAL_BITS
        else:
            ts = last + 1  # same or older wall time: advance the logical part
        self._last = ts
        return ts

    def update(self, seen: int) -> None:
        """Fold in a timestamp observed elsewhere so that later now() values are above it."""
        if seen > self._last:
            self._last = seen
