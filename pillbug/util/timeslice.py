"""Cooperative time slices: a long computation lets the event loop run between its batches.

A node serves every connection from one event loop thread. A statement that computes for seconds
(a big cross join, an aggregation over generate_series) would stall every other client meanwhile,
and could never be cancelled: its CancelRequest arrives on a connection of its own, which the
loop cannot read while the statement holds it. So the code that may run long runs inside a
Slicer's greenlet, and the places that already look at a cancel flag once per batch call
yield_point(); once the slice is used up that switches back to the loop's greenlet, and the
Slicer's owner resumes it later (asyncio call_soon), after the loop has served everyone else.

Outside a Slicer (embedded use, tools, tests of the engine) yield_point() returns at once.
A greenlet switch costs well under a microsecond; the Slicer keeps one greenlet per owner alive,
because creating one costs about ten. This module knows nothing of SQL or of the protocol.
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

import greenlet

SLICE_SECONDS = 0.02
PAUSED = object()  # what Slicer.start/resume return when the call paused at a yield_point


class _SliceGreenlet(greenlet.greenlet):
    deadline = 0.0


def yield_point() -> None:
    """Pause here if this is a sliced call whose slice is over."""
    current = greenlet.getcurrent()
    if type(current) is _SliceGreenlet and time.monotonic() >= current.deadline:
        current.parent.switch(PAUSED)


def wait(future: asyncio.Future, at_most: float) -> bool:
    """Inside a sliced call: pause until future is resolved or at_most seconds have passed, and
    return True. Outside one (nothing could run meanwhile) return False at once."""
    current = greenlet.getcurrent()
    if type(current) is not _SliceGreenlet:
        return False
    timer = asyncio.get_running_loop().call_later(at_most, _wake, future)
    try:
        current.parent.switch(future)
    finally:
        timer.cancel()
    return True


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _serve() -> None:
    """The body of a Slicer's greenlet: run one job per switch, hand back its outcome."""
    parent = greenlet.getcurrent().parent
    job = parent.switch()
    while True:
        fn, arg = job
        try:
            outcome: tuple[bool, Any] = (True, fn(arg))
        except Exception as exc:  # the caller re-raises it in its own greenlet
            outcome = (False, exc)
        job = parent.switch(outcome)


class Slicer:
    """Runs fn(arg) so that it can pause at yield_point() or in wait(); start() and resume()
    return its result, raise its exception, or return PAUSED, or the future it waits for (then
    call resume() later, or once the future is done, and nothing else first)."""

    __slots__ = ("_green", "paused")

    def __init__(self) -> None:
        self._green: _SliceGreenlet | None = None
        self.paused = False

    def start(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        assert not self.paused, "a paused call must be resumed before another starts"
        green = self._green
        if green is None or green.dead:
            green = self._green = _SliceGreenlet(_serve)
            # A new greenlet starts with empty context variables; decimal's context is one.
            green.gr_context = contextvars.copy_context()
            green.switch()
        return self._settle(green, (fn, arg))

    def resume(self) -> Any:
        assert self.paused and self._green is not None
        return self._settle(self._green, None)

    def _settle(self, green: _SliceGreenlet, job: Any) -> Any:
        green.deadline = time.monotonic() + SLICE_SECONDS
        outcome = green.switch(job) if job is not None else green.switch()
        if outcome is PAUSED or isinstance(outcome, asyncio.Future):
            self.paused = True
            return outcome
        self.paused = False
        ok, value = outcome
        if not ok:
            raise value
        return value
