"""The register linearizability checker (tests/linearizability.py) against generated histories:
histories made from a sequential run with intervals around each linearization point always pass;
the search agrees with a brute force over every real-time-respecting order on small random
histories; and known anomalies (stale read, lost CAS, a read of a value never written) fail."""
from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from linearizability import CAS, READ, WRITE, CheckerBudgetExceeded, Op, _step, check

VALUES = st.integers(min_value=0, max_value=3)


@st.composite
def linearizable_histories(draw) -> list[Op]:
    """A sequential execution at points 10, 20, 30, ...; each op's interval contains its point.
    Some writes/CASes lose their outcome (complete=None), which the checker must accept."""
    value = None
    ops: list[Op] = []
    for k in range(draw(st.integers(min_value=1, max_value=12))):
        point = 10.0 * (k + 1)
        invoke = point - draw(st.floats(min_value=0.01, max_value=25.0))
        complete = point + draw(st.floats(min_value=0.01, max_value=25.0))
        kind = draw(st.sampled_from([READ, WRITE, CAS]))
        client = k
        if kind == READ:
            ops.append(Op(READ, invoke, complete, value=value, client=client))
        elif kind == WRITE:
            new = draw(VALUES)
            unknown = draw(st.booleans()) and draw(st.booleans())
            ops.append(Op(WRITE, invoke, None if unknown else complete, value=new, client=client))
            value = new
        else:
            expect, new = draw(VALUES), draw(VALUES)
            ok = value == expect
            unknown = draw(st.booleans()) and draw(st.booleans())
            ops.append(Op(CAS, invoke, None if unknown else complete, value=new, expect=expect,
                          ok=None if unknown else ok, client=client))
            if ok:
                value = new
    return ops


@settings(max_examples=300, deadline=None)
@given(linearizable_histories())
def test_generated_linearizable_histories_pass(history):
    assert check(history).linearizable


def brute_force(history: list[Op], initial=None) -> bool:
    ops = [op for op in history if op.known or op.kind != READ]
    known = [op for op in ops if op.known]
    unknown = [op for op in ops if not op.known]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            members = known + list(chosen)
            for order in itertools.permutations(members):
                # Real time: if b completed before a was invoked, b cannot come after a.
                respects = all(not (order[j].known and order[j].complete < order[i].invoke)
                               for i in range(len(order)) for j in range(i + 1, len(order)))
                if not respects:
                    continue
                value, good = initial, True
                for op in order:
                    fits, value = _step(op, value)
                    if not fits:
                        good = False
                        break
                if good:
                    return True
    return False


@st.composite
def random_histories(draw) -> list[Op]:
    ops = []
    for c in range(draw(st.integers(min_value=1, max_value=5))):
        invoke = draw(st.integers(min_value=0, max_value=20))
        length = draw(st.integers(min_value=1, max_value=10))
        kind = draw(st.sampled_from([READ, WRITE, CAS]))
        unknown = kind != READ and draw(st.integers(0, 3)) == 0
        complete = None if unknown else float(invoke + length)
        if kind == READ:
            ops.append(Op(READ, float(invoke), complete, value=draw(st.one_of(st.none(), VALUES)), client=c))
        elif kind == WRITE:
            ops.append(Op(WRITE, float(invoke), complete, value=draw(VALUES), client=c))
        else:
            ops.append(Op(CAS, float(invoke), complete, value=draw(VALUES), expect=draw(VALUES),
                          ok=None if unknown else draw(st.booleans()), client=c))
    return ops


@settings(max_examples=500, deadline=None)
@given(random_histories())
def test_search_agrees_with_brute_force(history):
    assert check(history).linearizable == brute_force(history)


def test_stale_read_is_caught():
    history = [Op(WRITE, 0, 1, value=1), Op(WRITE, 2, 3, value=2), Op(READ, 4, 5, value=1)]
    verdict = check(history)
    assert not verdict.linearizable
    assert "longest linearizable prefix" in verdict.explanation


def test_concurrent_read_may_see_either_value():
    history = [Op(WRITE, 0, 1, value=1), Op(WRITE, 2, 6, value=2), Op(READ, 3, 4, value=1),
               Op(READ, 3.5, 5, value=2)]
    assert check(history).linearizable
    # ... but not the new value and then the old one, both after the write was invoked.
    history = [Op(WRITE, 0, 1, value=1), Op(WRITE, 2, 9, value=2), Op(READ, 3, 4, value=2),
               Op(READ, 5, 6, value=1)]
    assert not check(history).linearizable


def test_two_successful_cas_from_the_same_value_is_an_anomaly():
    history = [Op(WRITE, 0, 1, value=0), Op(CAS, 2, 5, value=1, expect=0, ok=True, client=1),
               Op(CAS, 2, 5, value=2, expect=0, ok=True, client=2)]
    assert not check(history).linearizable


def test_unknown_write_may_or_may_not_have_happened():
    base = [Op(WRITE, 0, 1, value=1), Op(WRITE, 2, None, value=2)]
    assert check(base + [Op(READ, 10, 11, value=2)]).linearizable
    assert check(base + [Op(READ, 10, 11, value=1)]).linearizable
    # Once seen, it cannot be unseen.
    assert not check(base + [Op(READ, 10, 11, value=2), Op(READ, 12, 13, value=1)]).linearizable
    # And it cannot have happened before it was invoked.
    assert not check([Op(WRITE, 0, 1, value=1), Op(READ, 2, 3, value=2), Op(WRITE, 4, None, value=2)]
                     ).linearizable


def test_a_value_never_written_is_caught():
    assert not check([Op(WRITE, 0, 1, value=1), Op(READ, 2, 3, value=3)]).linearizable


def test_budget_is_reported_not_guessed():
    # Many fully concurrent writes of distinct values and reads that fit no order: a big search.
    history = [Op(WRITE, 0, 100, value=i, client=i) for i in range(14)]
    history += [Op(READ, 0, 100, value=99, client=99)]
    try:
        verdict = check(history, budget=1000)
    except CheckerBudgetExceeded:
        return
    raise AssertionError(f"expected the budget to run out, got {verdict}")
