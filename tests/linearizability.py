"""A linearizability checker for one read/write/compare-and-set register (Wing & Gong's search, with
Lowe's memoization of (linearized set, register value), as in Knossos' WGL checker).

Why our own: the fault tests record histories of real clients against a real cluster, and a verdict
needs a checker that understands operations whose outcome is unknown (a connection lost or a 40003
mid-commit): such a write or CAS may have taken effect at any point after its invocation, or never,
so it never has to be linearized and it never blocks another operation in real-time order. An
unknown read constrains nothing and is dropped.

An `Op` is one operation on one key: `invoke` and `complete` are client clock readings (monotonic,
same clock for every client); `complete` is None when the outcome is unknown.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

READ, WRITE, CAS = "read", "write", "cas"


@dataclass(frozen=True)
class Op:
    kind: str  # READ, WRITE or CAS
    invoke: float
    complete: float | None  # None: outcome unknown
    value: int | None = None  # READ: the value read (None: no row); WRITE: written; CAS: new value
    expect: int | None = None  # CAS: the value compared against
    ok: bool | None = None  # CAS: whether it swapped (None when unknown)
    client: int = 0

    @property
    def known(self) -> bool:
        return self.complete is not None


class CheckerBudgetExceeded(RuntimeError):
    """The search visited more states than allowed: no verdict (make the history shorter)."""


@dataclass
class Verdict:
    linearizable: bool
    states: int
    # When not linearizable: the longest prefix of a linearization found, and the ops that could
    # not follow it (for the failure message).
    explanation: str = ""


def _step(op: Op, value: int | None) -> tuple[bool, int | None]:
    """Whether `op` can take effect on a register holding `value`, and the value after it."""
    if op.kind == READ:
        return op.value == value, value
    if op.kind == WRITE:
        return True, op.value
    if op.kind == CAS:
        if not op.known:  # an unknown CAS that is linearized is one that swapped
            return value == op.expect, op.value
        if op.ok:
            return value == op.expect, op.value
        return value != op.expect, value
    raise ValueError(f"unknown operation kind {op.kind!r}")


def check(history: Iterable[Op], initial: int | None = None, budget: int = 2_000_000) -> Verdict:
    """Is there a total order of the history's operations that respects real time (an op that
    completed before another was invoked comes first) and the register's sequential semantics?"""
    ops = [op for op in history if op.known or op.kind != READ]
    ops.sort(key=lambda op: op.invoke)
    n = len(ops)
    ends = [op.complete if op.known else math.inf for op in ops]
    required = 0
    for i, op in enumerate(ops):
        if op.known:
            required |= 1 << i
    seen: set[tuple[int, int | None]] = set()
    best: tuple[int, list[int]] = (-1, [])
    # Depth-first search over (done set, value); `path` is the current linearization.
    stack: list[tuple[int, int | None, list[int]]] = [(0, initial, [])]
    while stack:
        done, value, path = stack.pop()
        if done & required == required:
            return Verdict(True, len(seen))
        if (done, value) in seen:
            continue
        seen.add((done, value))
        if len(seen) > budget:
            raise CheckerBudgetExceeded(f"more than {budget} states for a history of {n} operations")
        if len(path) > best[0]:
            best = (len(path), path)
        # An op may go next only if no other pending op completed before it was invoked.
        horizon = math.inf
        for i in range(n):
            if not done >> i & 1 and ends[i] < horizon:
                horizon = ends[i]
        for i in range(n):
            if done >> i & 1:
                continue
            if ops[i].invoke > horizon:
                break  # sorted by invoke: none later can go next either
            fits, after = _step(ops[i], value)
            if fits:
                stack.append((done | 1 << i, after, path + [i]))
    order = ", ".join(_describe(ops[i]) for i in best[1])
    return Verdict(False, len(seen), f"longest linearizable prefix ({best[0]} of {bin(required).count('1')} "
                                     f"required ops): [{order}]")


def _describe(op: Op) -> str:
    end = f"{op.complete:.6f}" if op.known else "?"
    if op.kind == READ:
        return f"c{op.client} read->{op.value} [{op.invoke:.6f},{end}]"
    if op.kind == WRITE:
        return f"c{op.client} write {op.value} [{op.invoke:.6f},{end}]"
    return f"c{op.client} cas {op.expect}->{op.value} ok={op.ok} [{op.invoke:.6f},{end}]"


def describe_history(ops: Sequence[Op]) -> str:
    return "\n".join(_describe(op) for op in sorted(ops, key=lambda o: o.invoke))
