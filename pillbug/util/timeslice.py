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

Store reads that wait (the bridge). The SQL engine and the kv layer are synchronous code, but a
store answering over the network (etcd: about 0.5 ms a read) must not hold the loop meanwhile.
await_(awaitable), called from code running inside a Slicer's greenlet, parks that greenlet on
the awaitable and switches back to the driver, which resumes it once the awaitable is done: the
caller gets the result (or the exception) as if the call had been synchronous, and the loop
serves everyone else in between. Called outside such a greenlet it raises OutsideSliceError
naming the caller, because the only alternatives are blocking the loop or a wrong answer.
interrupt() ends such a wait early with an exception (CANCEL QUERY, statement_timeout:
sql/activity.py). run(fn, *args) is how code outside any connection (bootstrap, seeding,
compaction, tests) gets a greenlet: it runs fn in a fresh one driven by the loop, and drives a
coroutine that fn returns inside it too. See docs/architecture.md (2026-12-05, suspending reads).
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

SLICE_SECONDS = 0.02
PAUSED = object()  # what Slicer.start/resume return when the call paused at a yield_point


T = TypeVar("T")


class OutsideSliceError(AssertionError):
    """A wait for I/O from code that no greenlet driver can resume: a bug in the caller."""


class _SliceGreenlet(greenlet.greenlet):
    deadline = 0.0
    parked: asyncio.Future | None = None  # what await_ waits on while the greenlet is parked
    interruption: BaseException | None = None  # interrupt() asks await_ to raise this


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


def current() -> greenlet.greenlet | None:
    """The sliced call this code runs in (a handle for interrupt()), or None outside one."""
    green = greenlet.getcurrent()
    return green if type(green) is _SliceGreenlet else None


def await_(awaitable: Awaitable[T]) -> T:
    """Inside a sliced call: wait for awaitable while the loop runs, and return its result (or
    raise its exception). Outside one: raise OutsideSliceError, never block the loop."""
    green = greenlet.getcurrent()
    if type(green) is not _SliceGreenlet:
        raise OutsideSliceError(
            f"{_callers()} waited for {type(awaitable).__name__} outside a sliced call: every path to "
            f"the store must run in a greenlet (a connection's Slicer or timeslice.run)")
    future = asyncio.ensure_future(awaitable)
    if future.done():
        return future.result()
    # The driver is woken by `wake`, not by `future` itself, so that interrupt() can end the wait
    # before the store answers.
    wake = future.get_loop().create_future()
    future.add_done_callback(lambda _: _wake(wake))
    green.parked = wake
    try:
        green.parent.switch(wake)
    finally:
        green.parked = None
    interruption = green.interruption
    if interruption is not None:
        green.interruption = None
        if not future.done():
            future.cancel()  # nobody will read the answer
        raise interruption
    return future.result()


def interrupt(green: greenlet.greenlet, exc: BaseException) -> bool:
    """End the await_ that `green` is parked in with exc; False (nothing done) if it is not
    parked in one. The greenlet raises exc when its driver resumes it, one turn of the loop on."""
    wake = getattr(green, "parked", None)
    if wake is None or wake.done():
        return False
    green.interruption = exc
    wake.set_result(None)
    return True


def _callers() -> str:
    """await_'s caller and the two frames above it, for the error that names who went wrong."""
    names = []
    frame = sys._getframe(2)
    while frame is not None and len(names) < 3:
        names.append(f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}:{frame.f_lineno}")
        frame = frame.f_back
    return " <- ".join(names)


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a greenlet of its own, driven by the running loop, so that it may reach the
    store (await_); if it returns a coroutine, that runs in the greenlet too. Returns the result,
    raises the exception."""
    slicer = Slicer()
    outcome = await _settle(slicer, slicer.start(_call, (fn, args)))
    if not inspect.iscoroutine(outcome):
        return outcome
    coro = outcome
    try:
        while True:
            done, value = await _settle(slicer, slicer.start(_step_coroutine, coro))
            if done:
                return value
            if value is None:
                await asyncio.sleep(0)  # a bare yield: asyncio.sleep(0) inside the coroutine
            else:
                await asyncio.wait((value,))  # the future it awaits; its outcome is read inside
    finally:
        if not slicer.paused:  # else it is mid-step in the greenlet; dropping both ends them
            coro.close()


async def _settle(slicer: Slicer, outcome: Any) -> Any:
    while slicer.paused:
        if outcome is PAUSED:
            await asyncio.sleep(0)
        else:
            await asyncio.wait((outcome,))
        outcome = slicer.resume()
    return outcome


def _call(job: tuple[Callable[..., Any], tuple]) -> Any:
    fn, args = job
    return fn(*args)


def _step_coroutine(coro: Any) -> tuple[bool, Any]:
    # StopIteration is caught here, in the greenlet: raised through run()'s own frame it would
    # become a RuntimeError.
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


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


def log_parked_stacks() -> None:
    """Log the stack of every statement greenlet that is parked (waiting for a future): for
    finding out what a stuck node waits for (SIGUSR2 on a node)."""
    import gc
    import logging
    import traceback
    log = logging.getLogger("pillbug.stacks")
    parked = [g for g in gc.get_objects() if type(g) is _SliceGreenlet and g.gr_frame is not None]
    log.warning("%d statement greenlets", len(parked))
    for g in parked:
        log.warning("greenlet parked on %r:\n%s", getattr(g, "parked", None),
                    "".join(traceback.format_stack(g.gr_frame)))
