"""Window functions: each input row gets the values of f(...) OVER (PARTITION BY ... ORDER BY ...).

The operator reads all its input (bounded), and for each window specification splits the rows
into partitions, sorts each partition, and computes that specification's functions along it.
Rows leave in their input order with one more column per function.

Frames follow SQL's defaults: with ORDER BY, from the partition's start to the current row and
its peers (rows with equal ORDER BY values); without it, the whole partition. ROWS frames with
offsets are computed per row. Ranking (row_number, rank, dense_rank, percent_rank, cume_dist,
ntile) and navigation (lag, lead, first_value, last_value, nth_value) functions read the sorted
partition directly; aggregates run over the frame.
This module knows nothing of the parser; the planner hands it compiled expressions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pillbug.sql.datum import Json
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.nodes import Batch, Node, SortKey, _hashable, _sort_rows, emit
from pillbug.sql.sem.builtins import NAVIGATION, RANKING, Aggregate
from pillbug.sql.sem.expr import Compiled
from pillbug.util import errors


@dataclass(slots=True)
class Frame:
    """{ROWS | RANGE} BETWEEN start AND end. A bound is "unbounded" (preceding for the start,
    following for the end), "current" (the row; with RANGE, its peers too), or n "preceding" /
    "following" (ROWS only). The default is RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW."""
    mode: str = "range"
    start: str = "unbounded"
    end: str = "current"
    start_offset: Compiled | None = None
    end_offset: Compiled | None = None


@dataclass(slots=True)
class WindowFunc:
    name: str
    args: list[Compiled]
    factory: Callable[[], Aggregate] | None = None  # an aggregate used as a window function
    star: bool = False


@dataclass(slots=True)
class WindowSpec:
    partition: list[Compiled]
    order: list[SortKey]
    frame: Frame
    funcs: list[tuple[int, WindowFunc]] = field(default_factory=list)  # (output slot, function)


class Window(Node):
    MAX_ROWS = 5_000_000

    def __init__(self, child: Node, columns: list, specs: list[WindowSpec], n_funcs: int) -> None:
        self.child = child
        self.columns = columns
        self.specs = specs
        self.n_funcs = n_funcs

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        rows: list[tuple] = []
        for batch in self.child.batches(ctx):
            rows.extend(batch)
            if len(rows) > self.MAX_ROWS:
                raise errors.PgError(errors.OUT_OF_MEMORY, "window function input exceeds the memory budget")
        extra = [[None] * self.n_funcs for _ in rows]
        for spec in self.specs:
            partitions: dict[tuple, list[int]] = {}
            for i, row in enumerate(rows):
                key = _hashable(tuple(f(row, ctx) for f in spec.partition))
                partitions.setdefault(key, []).append(i)
            for members in partitions.values():
                if spec.order:
                    members = [i for i, _ in _sort_rows([(i, rows[i]) for i in members], spec.order, ctx,
                                                        key_index=1)]
                _compute(spec, members, rows, extra, ctx)
            ctx.check_cancel()
        yield from emit(ctx, [row + tuple(values) for row, values in zip(rows, extra)])

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "window"


def _compute(spec: WindowSpec, members: list[int], rows: list[tuple], extra: list[list], ctx: ExecCtx) -> None:
    n = len(members)
    # peer groups: [start, end) of the rows whose ORDER BY values equal
    order_values = [tuple(k.fn(rows[i], ctx) for k in spec.order) for i in members]
    peer_end = [0] * n
    peer_start = [0] * n
    j = 0
    while j < n:
        k = j
        while k + 1 < n and order_values[k + 1] == order_values[j]:
            k += 1
        for m in range(j, k + 1):
            peer_start[m], peer_end[m] = j, k + 1
        j = k + 1
    for slot, func in spec.funcs:
        name = func.name
        if name in RANKING:
            _ranking(name, func, members, rows, extra, slot, peer_start, peer_end, ctx)
        elif name in NAVIGATION and name in ("lag", "lead"):
            _lag_lead(name, func, members, rows, extra, slot, ctx)
        else:
            _framed(spec, func, members, rows, extra, slot, peer_start, peer_end, ctx)


def _ranking(name: str, func: WindowFunc, members: list[int], rows: list[tuple], extra: list[list], slot: int,
             peer_start: list[int], peer_end: list[int], ctx: ExecCtx) -> None:
    n = len(members)
    dense = 0
    buckets = None
    if name == "ntile":
        buckets = func.args[0](rows[members[0]], ctx) if n else None
        if buckets is not None and buckets <= 0:
            raise errors.invalid_parameter_value("argument of ntile() must be greater than zero")
    for pos, i in enumerate(members):
        if pos == peer_start[pos]:
            dense += 1
        if name == "row_number":
            v: Any = pos + 1
        elif name == "rank":
            v = peer_start[pos] + 1
        elif name == "dense_rank":
            v = dense
        elif name == "percent_rank":
            v = 0.0 if n <= 1 else peer_start[pos] / (n - 1)
        elif name == "cume_dist":
            v = peer_end[pos] / n
        else:  # ntile: the first n % buckets groups get one extra row
            if buckets is None:
                v = None
            else:
                size, big = divmod(n, buckets)
                cut = big * (size + 1)
                v = pos // (size + 1) + 1 if pos < cut else big + (pos - cut) // max(size, 1) + 1
        extra[i][slot] = v


def _lag_lead(name: str, func: WindowFunc, members: list[int], rows: list[tuple], extra: list[list], slot: int,
              ctx: ExecCtx) -> None:
    sign = -1 if name == "lag" else 1
    for pos, i in enumerate(members):
        row = rows[i]
        offset = func.args[1](row, ctx) if len(func.args) > 1 else 1
        default = func.args[2](row, ctx) if len(func.args) > 2 else None
        if offset is None:
            extra[i][slot] = None
            continue
        target = pos + sign * offset
        extra[i][slot] = func.args[0](rows[members[target]], ctx) if 0 <= target < len(members) else default


def _bounds(spec: WindowSpec, pos: int, n: int, peer_start: list[int], peer_end: list[int],
            row: tuple, ctx: ExecCtx) -> tuple[int, int]:
    """The frame of the row at pos as [lo, hi) positions in the sorted partition."""
    frame = spec.frame
    if frame.start == "unbounded":
        lo = 0
    elif frame.start == "current":
        lo = pos if frame.mode == "rows" else (peer_start[pos] if spec.order else 0)
    else:
        lo = pos + _offset(frame.start_offset, row, ctx) * (-1 if frame.start == "preceding" else 1)
    if frame.end == "unbounded":
        hi = n
    elif frame.end == "current":
        hi = pos + 1 if frame.mode == "rows" else (peer_end[pos] if spec.order else n)
    else:
        hi = pos + 1 + _offset(frame.end_offset, row, ctx) * (-1 if frame.end == "preceding" else 1)
    return max(lo, 0), min(max(hi, 0), n)


def _offset(fn: Compiled | None, row: tuple, ctx: ExecCtx) -> int:
    off = fn(row, ctx) if fn is not None else None
    if off is None or off < 0:
        raise errors.invalid_parameter_value("frame offset must not be null or negative")
    return off


def _framed(spec: WindowSpec, func: WindowFunc, members: list[int], rows: list[tuple], extra: list[list],
            slot: int, peer_start: list[int], peer_end: list[int], ctx: ExecCtx) -> None:
    n = len(members)
    name = func.name
    running = spec.frame.start == "unbounded"  # frames only grow: feed one aggregate along the partition
    agg = func.factory() if func.factory is not None and running else None
    fed = 0
    for pos, i in enumerate(members):
        row = rows[i]
        lo, hi = _bounds(spec, pos, n, peer_start, peer_end, row, ctx)
        if name in ("first_value", "last_value", "nth_value"):
            if name == "nth_value":
                k = func.args[1](row, ctx)
                if k is not None and k <= 0:
                    raise errors.invalid_parameter_value("argument of nth_value() must be greater than zero")
                at = None if k is None else lo + k - 1
            else:
                at = lo if name == "first_value" else hi - 1
            extra[i][slot] = func.args[0](rows[members[at]], ctx) if at is not None and lo <= at < hi else None
            continue
        if agg is not None:
            while fed < hi:
                _feed(agg, func, rows[members[fed]], ctx)
                fed += 1
            extra[i][slot] = _snapshot(agg.result())
            continue
        fresh = func.factory()
        for m in range(lo, hi):
            _feed(fresh, func, rows[members[m]], ctx)
        extra[i][slot] = fresh.result()


def _feed(agg: Aggregate, func: WindowFunc, row: tuple, ctx: ExecCtx) -> None:
    if func.star:
        agg.add()
    else:
        agg.add(*[f(row, ctx) for f in func.args])


def _snapshot(value: Any) -> Any:
    """A running aggregate's result, copied where the aggregate keeps appending to it."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, Json) and isinstance(value.value, (list, dict)):
        return Json(type(value.value)(value.value))
    return value
