"""util/timeslice.py: a sliced call pauses at yield points once its slice is used, resumes where it
stopped, hands back results and exceptions, and keeps the caller's context (decimal precision)."""
import decimal

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
