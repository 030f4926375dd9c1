"""util/timeslice.py: a sliced call pauses at yield points once its slice is used, resumes where it
stopped, hands back results and exceptions, and keeps the caller's context (decimal precision)."""
import asyncio
import decimal
import time

import pytest

from pillbug.sql import datum  # noqa: F401  (sets the node's decimal context)
from pillbug.util import timeslice


def _counting(n):
    total = 0
    for i in range(n):
        timeslice.yield_point()
        total += i
    return total


def test_pauses_and_resumes(monkeypatch):
    monkeypatch.setattr(timeslice, "SLICE_SECONDS", -1.0)  # every yield point is past the slice
    slicer = timeslice.Slicer()
    pauses = 0
    result = slicer.start(_counting, 10)
    while result is timeslice.PAUSED:
        pauses += 1
        result = slicer.resume()
    assert (result, pauses) == (45, 10)
    assert not slicer.paused


def test_no_pause_within_the_slice():
    slicer = timeslice.Slicer()
    assert slicer.start(_counting, 1000) == sum(range(1000))


def test_exceptions_reach_the_caller_and_the_slicer_stays_usable(monkeypatch):
    monkeypatch.setattr(timeslice, "SLICE_SECONDS", -1.0)
    slicer = timeslice.Slicer()

    def failing(_):
        timeslice.yield_point()
        raise ValueError("boom")
    assert slicer.start(failing, None) is timeslice.PAUSED
    with pytest.raises(ValueError, match="boom"):
        slicer.resume()
    with pytest.raises(StopIteration):
        slicer.start(lambda _: next(iter(())), None)
    assert slicer.start(lambda x: x * 2, 21) == 42


def test_decimal_context_is_the_callers():
    slicer = timeslice.Slicer()
    assert slicer.start(lambda _: decimal.getcontext().prec, None) == decimal.getcontext().prec == 1000


def test_yield_point_outside_a_slicer_returns():
    timeslice.yield_point()
    assert _counting(3) == 3


# ---- the bridge: await_ and run ------------------------------------------------------------------

def _delayed(value, seconds=0.001, exc=None):
    async def later():
        await asyncio.sleep(seconds)
        if exc is not None:
            raise exc
        return value
    return later()


def test_await_resumes_with_the_result_while_the_loop_serves_others():
    ticks = []

    async def ticker():
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0)

    def reads():
        before = len(ticks)
        first = timeslice.await_(_delayed("a"))
        second = timeslice.await_(_delayed("b"))
        return first + second, len(ticks) > before

    async def scenario():
        tick = asyncio.ensure_future(ticker())
        result = await timeslice.run(reads)
        await tick
        return result
    assert asyncio.run(scenario()) == ("ab", True)


def test_await_propagates_the_exception_and_the_greenlet_goes_on():
    def reads():
        try:
            timeslice.await_(_delayed(None, exc=KeyError("gone")))
        except KeyError as exc:
            return "caught " + exc.args[0] + " then " + timeslice.await_(_delayed("more"))
        return "not raised"
    assert asyncio.run(timeslice.run(reads)) == "caught gone then more"

    def failing():
        timeslice.await_(_delayed(None, exc=ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(timeslice.run(failing))


def test_await_outside_a_greenlet_refuses_and_names_the_caller():
    async def on_the_loop():
        coro = _delayed(1)
        try:
            timeslice.await_(coro)
        finally:
            coro.close()
    with pytest.raises(timeslice.OutsideSliceError, match="on_the_loop"):
        asyncio.run(on_the_loop())


def test_run_drives_a_coroutine_inside_the_greenlet():
    async def statement():
        await asyncio.sleep(0.001)  # awaiting futures works as in any coroutine ...
        value = timeslice.await_(_delayed(20))  # ... and so does a synchronous wait in between
        await asyncio.sleep(0)
        return value + 1

    assert asyncio.run(timeslice.run(statement)) == 21


def test_interrupt_ends_a_parked_wait_at_once():
    greenlets = []

    def parked():
        greenlets.append(timeslice.current())
        timeslice.await_(_delayed("never", seconds=30))

    async def scenario():
        task = asyncio.ensure_future(timeslice.run(parked))
        await asyncio.sleep(0.01)
        assert timeslice.interrupt(greenlets[0], TimeoutError("stopped"))
        assert not timeslice.interrupt(greenlets[0], TimeoutError("twice"))
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="stopped"):
            await task
        return time.monotonic() - began
    assert asyncio.run(scenario()) < 1.0
    assert timeslice.current() is None
