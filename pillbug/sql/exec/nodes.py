"""Physical operators: each pulls batches (lists of row tuples) from its children.

An operator's `batches(ctx)` is a generator of non-empty lists of tuples; rows are plain tuples
laid out as the operator's `columns` say. Expressions arrive compiled (closures f(row, ctx)).
Operators hand out their rows through emit(), which makes the batches and checks for cancel
once per batch (and once per BATCH steps of work that produced no row): that is where a long
statement yields its time slice and where statement_timeout and CANCEL QUERY take effect.
Operators that read a key per input row read a batch of keys per store call (Txn.get_many).
This module knows nothing of the parser; the planner builds these.
"""
from __future__ import annotations

import decimal
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.rowenc import IndexCodec, TableCodec
from pillbug.sql.sem.builtins import Aggregate
from pillbug.sql.sem.expr import Compiled
from pillbug.util import errors
from pillbug.util.encoding import prefix_end

BATCH = 256
Batch = list[tuple]
# Keys per batched read of work collected across a statement (foreign key checks, backfills);
# operators that read per input row read a BATCH of rows' keys per call.
READ_BATCH = 1024


def emit(ctx: ExecCtx, rows: Iterable[tuple | None]) -> Iterator[Batch]:
    """The batches of `rows`, checking for cancel before each one is handed out.

    A producer yields None for a step of work that made no row (a left row with no match, a
    filtered-out candidate): every BATCH such steps check for cancel too, so that an operator
    that works long without output still stops under statement_timeout or CANCEL QUERY.
    A list is sliced rather than iterated.
    """
    if isinstance(rows, list):
        for i in range(0, len(rows), BATCH):
            ctx.check_cancel()
            yield rows[i:i + BATCH]
        return
    out: Batch = []
    idle = 0
    for row in rows:
        if row is None:
            idle += 1
            if idle >= BATCH:
                idle = 0
                ctx.check_cancel()
            continue
        out.append(row)
        if len(out) >= BATCH:
            idle = 0
            ctx.check_cancel()
            yield out
            out = []
    if out:
        ctx.check_cancel()
        yield out


class Node:
    columns: list = []
    # EXPLAIN lines the planner attaches ("filter: a > 1", "spans: [/1 - /1]"): facts it knows
    # in SQL terms that the compiled closures no longer show.
    info: list[str] = []

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        raise NotImplementedError

    def rows(self, ctx: ExecCtx) -> Iterator[tuple]:
        for batch in self.batches(ctx):
            yield from batch

    def explain_name(self) -> str | None:
        """The operator's name in EXPLAIN; None for operators EXPLAIN does not show."""
        return type(self).__name__.lower()

    def explain_attrs(self) -> list[str]:
        return list(self.info)

    def children(self) -> list[Node]:
        return []


def _hashable(row: tuple) -> tuple:
    if any(isinstance(v, list) for v in row):
        return tuple(tuple(v) if isinstance(v, list) else v for v in row)
    return row


def python_error(exc: Exception) -> errors.PgError:
    """A Python exception raised while evaluating SQL, as the SQL error it stands for.

    Arithmetic on values a client chose can overflow Python's date, decimal and float types; the
    client gets the matching SQLSTATE and keeps its connection. Anything else is a bug, reported
    as an internal error (XX000) rather than by closing the connection.
    """
    if isinstance(exc, (decimal.Overflow, OverflowError)):
        return errors.out_of_range("value out of range")
    if isinstance(exc, (ZeroDivisionError, decimal.DivisionByZero)):
        return errors.division_by_zero()
    if isinstance(exc, (decimal.InvalidOperation, ValueError)):
        return errors.invalid_parameter_value(f"invalid value: {exc}")
    if isinstance(exc, RecursionError):
        return errors.PgError(errors.PROGRAM_LIMIT_EXCEEDED, "expression is too deeply nested")
    if isinstance(exc, MemoryError):
        return errors.PgError(errors.OUT_OF_MEMORY, "out of memory")
    return errors.internal_error(f"{type(exc).__name__}: {exc}")


GUARDED = (ArithmeticError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
           MemoryError)


class Guard(Node):
    """The root of every plan: turns a Python exception from evaluation into a SQL error."""

    def __init__(self, child: Node) -> None:
        self.child = child
        self.columns = child.columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        try:
            yield from self.child.batches(ctx)
        except GUARDED as exc:
            raise python_error(exc) from exc

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str | None:
        return None


class Values(Node):
    def __init__(self, columns: list, rows: list[list[Compiled]]) -> None:
        self.columns = columns
        self.row_fns = rows

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        empty = ()
        return emit(ctx, (tuple(f(empty, ctx) for f in fns) for fns in self.row_fns))

    def explain_name(self) -> str:
        return "values"

    def explain_attrs(self) -> list[str]:
        width = len(self.row_fns[0]) if self.row_fns else len(self.columns)
        return [f"size: {_plural(width, 'column')}, {_plural(len(self.row_fns), 'row')}"]


class OneRow(Node):
    """The single empty row a FROM-less SELECT evaluates its target list against."""
    columns: list = []

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        yield [()]

    def explain_name(self) -> str:
        return "values"

    def explain_attrs(self) -> list[str]:
        return ["size: 0 columns, 1 row"]


SpanFn = Callable[[ExecCtx], list[tuple[bytes, bytes]] | None]


class Scan(Node):
    """Rows of a table's primary index within key spans computed at run time."""

    def __init__(self, columns: list, codec: TableCodec, spans: SpanFn, reverse: bool = False,
                 limit_hint: Callable[[ExecCtx], int] | None = None) -> None:
        self.columns = columns
        self.codec = codec
        self.spans = spans
        self.reverse = reverse
        self.limit_hint = limit_hint
        self.points = False  # every span is one whole primary key (the planner knows)
        self.for_update = False  # (only with points) lock the rows, a batch at a time

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        spans = self.spans(ctx)
        if not spans:
            return
        decode = self.codec.decode_row
        txn = ctx.txn
        if self.for_update and self.limit_hint is None:
            keys = [start for start, _ in (reversed(spans) if self.reverse else spans)]
            yield from emit(ctx, (decode(value) for lo in range(0, len(keys), BATCH)
                                  for value in txn.get_many_for_update(keys[lo:lo + BATCH], ctx.wait_for_lock)
                                  if value is not None))
            return
        limit = self.limit_hint(ctx) if self.limit_hint is not None else 0
        for start, end in (reversed(spans) if self.reverse else spans):
            yield from emit(ctx, (decode(value) for _, value in
                                  txn.scan(start, end, limit=limit, reverse=self.reverse)))

    def explain_name(self) -> str:
        return "scan"

    def explain_attrs(self) -> list[str]:
        table = self.codec.table
        attrs = [f"table: {table.name}@{table.primary_index.name}", *self.info]
        if self.reverse:
            attrs.append("reverse: true")
        if self.for_update:
            attrs.append("locking strength: for update")
        return attrs


class PointGet(Node):
    """At most one row, by its primary key; when `for_update` (the rows an UPDATE or DELETE
    changes), the row's lock is taken first (kv/locks.py)."""

    def __init__(self, columns: list, codec: TableCodec, key: Callable[[ExecCtx], bytes | None]) -> None:
        self.columns = columns
        self.codec = codec
        self.key = key
        self.for_update = False

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        key = self.key(ctx)
        if key is None:
            return
        value = ctx.txn.get_for_update(key, ctx.wait_for_lock) if self.for_update else ctx.txn.get(key)
        if value is not None:
            yield [self.codec.decode_row(value)]

    def explain_name(self) -> str:
        return "scan"

    def explain_attrs(self) -> list[str]:
        table = self.codec.table
        attrs = [f"table: {table.name}@{table.primary_index.name}", *self.info]
        if self.for_update:
            attrs.append("locking strength: for update")
        return attrs


class IndexScan(Node):
    """Rows found through a secondary index: scan its entries, then fetch each primary row, or,
    when the index covers every column the statement reads, build the rows from the entries
    (the other columns are left NULL: nothing reads them)."""

    def __init__(self, columns: list, codec: TableCodec, index: IndexCodec, spans: SpanFn,
                 reverse: bool = False, limit_hint: Callable[[ExecCtx], int] | None = None,
                 covering: bool = False) -> None:
        self.columns = columns
        self.codec = codec
        self.index = index
        self.spans = spans
        self.reverse = reverse
        self.limit_hint = limit_hint
        self.covering = covering

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        spans = self.spans(ctx)
        if not spans:
            return
        if self.covering:
            yield from self._covered(ctx, spans)
            return
        limit = self.limit_hint(ctx) if self.limit_hint is not None else 0
        for start, end in (reversed(spans) if self.reverse else spans):
            yield from emit(ctx, self._joined(ctx, start, end, limit))

    def _joined(self, ctx: ExecCtx, start: bytes, end: bytes, limit: int) -> Iterator[tuple]:
        """The index join: a batch of index entries, then their rows with one batched read."""
        txn = ctx.txn
        pk_prefix = self.codec.pk_prefix
        decode_entry = TableCodec.decode_index_value
        decode = self.codec.decode_row
        entries = txn.scan(start, end, limit=limit, reverse=self.reverse)
        while chunk := list(itertools.islice(entries, BATCH)):
            keys = [pk_prefix + decode_entry(entry)[0] for _, entry in chunk]
            for value in txn.get_many(keys):
                if value is None:
                    raise errors.internal_error("index entry without a row")
                yield decode(value)

    def _covered(self, ctx: ExecCtx, spans: list[tuple[bytes, bytes]]) -> Iterator[Batch]:
        txn = ctx.txn
        decode_entry = TableCodec.decode_index_value
        decode_stored = self.index.stored_codec.decode
        positions = self.index.stored_positions
        width = len(self.codec.table.columns)
        limit = self.limit_hint(ctx) if self.limit_hint is not None else 0

        def rows(start: bytes, end: bytes) -> Iterator[tuple]:
            for _, entry in txn.scan(start, end, limit=limit, reverse=self.reverse):
                row: list = [None] * width
                for p, v in zip(positions, decode_stored(decode_entry(entry)[1])):
                    row[p] = v
                yield tuple(row)
        for start, end in (reversed(spans) if self.reverse else spans):
            yield from emit(ctx, rows(start, end))

    def explain_name(self) -> str:
        return "scan" if self.covering else "index join"

    def explain_attrs(self) -> list[str]:
        if self.covering:
            return self.explain_index_attrs()
        return [f"table: {self.codec.table.name}@{self.codec.table.primary_index.name}"]

    def explain_index_attrs(self) -> list[str]:
        """The index scan half of this operator, shown by EXPLAIN as the index join's child."""
        attrs = [f"table: {self.codec.table.name}@{self.index.index.name}", *self.info]
        if self.reverse:
            attrs.append("reverse: true")
        return attrs


class Filter(Node):
    def __init__(self, child: Node, predicate: Compiled) -> None:
        self.child = child
        self.columns = child.columns
        self.predicate = predicate

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        pred = self.predicate
        for batch in self.child.batches(ctx):
            out = [r for r in batch if pred(r, ctx) is True]
            if out:
                yield out

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "filter"


class Project(Node):
    def __init__(self, child: Node, columns: list, fns: list[Compiled],
                 positions: list[int] | None = None) -> None:
        self.child = child
        self.columns = columns
        self.fns = fns
        self.positions = positions  # a pure column selection, when every fn is a ColRef
        self.sources: list[int | None] | None = None  # per output column, the input column it copies

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        positions = self.positions
        if positions is not None:
            if len(positions) == 1:
                (p,) = positions
                for batch in self.child.batches(ctx):
                    yield [(r[p],) for r in batch]
                return
            for batch in self.child.batches(ctx):
                yield [tuple([r[p] for p in positions]) for r in batch]
            return
        fns = self.fns
        for batch in self.child.batches(ctx):
            yield [tuple([f(r, ctx) for f in fns]) for r in batch]

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str | None:
        return None


class Limit(Node):
    def __init__(self, child: Node, limit: Compiled | None, offset: Compiled | None) -> None:
        self.child = child
        self.columns = child.columns
        self.limit = limit
        self.offset = offset

    def bounds(self, ctx: ExecCtx) -> tuple[int | None, int]:
        limit = self.limit((), ctx) if self.limit is not None else None
        offset = self.offset((), ctx) if self.offset is not None else 0
        if limit is not None and limit < 0:
            raise errors.PgError(errors.INVALID_ROW_COUNT_IN_LIMIT, "negative LIMIT")
        if offset is None:
            offset = 0
        if offset < 0:
            raise errors.PgError(errors.INVALID_ROW_COUNT_IN_RESULT_OFFSET, "negative OFFSET")
        return limit, offset

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        limit, offset = self.bounds(ctx)
        if limit == 0:
            return
        skipped = 0
        produced = 0
        for batch in self.child.batches(ctx):
            if skipped < offset:
                drop = min(offset - skipped, len(batch))
                skipped += drop
                batch = batch[drop:]
                if not batch:
                    continue
            if limit is not None and produced + len(batch) >= limit:
                yield batch[: limit - produced]
                return
            produced += len(batch)
            yield batch

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "limit"


class SortKey:
    __slots__ = ("fn", "descending", "nulls_first")

    def __init__(self, fn: Compiled, descending: bool, nulls_first: bool | None) -> None:
        self.fn = fn
        self.descending = descending
        # CockroachDB: NULLs first when ascending, last when descending
        self.nulls_first = (not descending) if nulls_first is None else nulls_first


def _sort_rows(rows: list, keys: list[SortKey], ctx: ExecCtx, key_index: int | None = None) -> list:
    """Rows sorted by the keys; with key_index, the keys read item[key_index] of each item."""
    if key_index is None:
        decorated = [(tuple(k.fn(r, ctx) for k in keys), r) for r in rows]
    else:
        decorated = [(tuple(k.fn(r[key_index], ctx) for k in keys), r) for r in rows]
    for i in range(len(keys) - 1, -1, -1):
        k = keys[i]
        # with reverse=True the largest comes first, so flip which flag marks a NULL
        null_high = k.nulls_first == k.descending

        def keyfn(item: tuple, i: int = i, null_high: bool = null_high) -> tuple:
            v = item[0][i]
            if v is None:
                return (1, 0) if null_high else (0, 0)
            return (0 if null_high else 1, v)
        try:
            decorated.sort(key=keyfn, reverse=k.descending)
        except TypeError:
            raise errors.internal_error("values of different types in one sort column") from None
    return [r for _, r in decorated]


class Sort(Node):
    MAX_ROWS = 10_000_000

    def __init__(self, child: Node, keys: list[SortKey]) -> None:
        self.child = child
        self.columns = child.columns
        self.keys = keys

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        rows: list[tuple] = []
        for batch in self.child.batches(ctx):
            rows.extend(batch)
            if len(rows) > self.MAX_ROWS:
                raise errors.PgError(errors.OUT_OF_MEMORY,
                                     f"sort of more than {self.MAX_ROWS} rows exceeds the memory budget")
        if not rows:
            return
        yield from emit(ctx, _sort_rows(rows, self.keys, ctx))

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "sort"


class TopK(Node):
    """ORDER BY ... LIMIT k without sorting everything: keep the best k rows."""

    def __init__(self, child: Node, keys: list[SortKey], k: Compiled) -> None:
        self.child = child
        self.columns = child.columns
        self.keys = keys
        self.k = k

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        k = self.k((), ctx)
        if k is not None and k < 0:
            raise errors.PgError(errors.INVALID_ROW_COUNT_IN_LIMIT, "negative LIMIT")
        rows: list[tuple] = []
        for batch in self.child.batches(ctx):
            rows.extend(batch)
            if k is not None and len(rows) > 4 * k + 1024:
                rows = _sort_rows(rows, self.keys, ctx)[:k]
            elif len(rows) > Sort.MAX_ROWS:
                raise errors.PgError(errors.OUT_OF_MEMORY,
                                     f"sort of more than {Sort.MAX_ROWS} rows exceeds the memory budget")
        yield from emit(ctx, _sort_rows(rows, self.keys, ctx)[:k])

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "top-k"


class Distinct(Node):
    MAX_ROWS = 10_000_000

    def __init__(self, child: Node, key_positions: list[int] | None = None) -> None:
        self.child = child
        self.columns = child.columns
        self.key_positions = key_positions  # DISTINCT ON: only these columns decide

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        seen: set = set()
        positions = self.key_positions
        for batch in self.child.batches(ctx):
            out = []
            for r in batch:
                key = _hashable(r if positions is None else tuple(r[p] for p in positions))
                if key not in seen:
                    seen.add(key)
                    out.append(r)
            if len(seen) > self.MAX_ROWS:
                raise errors.PgError(errors.OUT_OF_MEMORY, "DISTINCT exceeds the memory budget")
            if out:
                yield out

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "distinct"


class AggSpec:
    __slots__ = ("factory", "args", "distinct", "filter", "star", "order")

    def __init__(self, factory: Callable[[], Aggregate], args: list[Compiled], distinct: bool,
                 filter_fn: Compiled | None, star: bool, order: list[SortKey] | None = None) -> None:
        self.factory = factory
        self.args = args
        self.distinct = distinct
        self.filter = filter_fn
        self.star = star
        self.order = order or None  # agg(x ORDER BY y): inputs are buffered, sorted, then fed


class _GroupState:
    __slots__ = ("aggs", "seen", "buffered")

    def __init__(self, specs: list[AggSpec]) -> None:
        self.aggs = [s.factory() for s in specs]
        self.seen: list[set | None] = [set() if s.distinct else None for s in specs]
        self.buffered: list[list | None] = [[] if s.order else None for s in specs]

    def results(self, specs: list[AggSpec], ctx: ExecCtx) -> tuple:
        for i, spec in enumerate(specs):
            pending = self.buffered[i]
            if pending:
                agg = self.aggs[i]
                for _, values in _sort_rows(pending, spec.order, ctx, key_index=0):
                    agg.add(*values)
        return tuple(a.result() for a in self.aggs)


class Aggregate_(Node):
    """GROUP BY: output rows are the group key values followed by the aggregate results."""
    MAX_GROUPS = 5_000_000

    def __init__(self, child: Node, columns: list, group_fns: list[Compiled], specs: list[AggSpec],
                 scalar: bool) -> None:
        self.child = child
        self.columns = columns
        self.group_fns = group_fns
        self.specs = specs
        self.scalar = scalar  # no GROUP BY: exactly one output row even for empty input

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        groups: dict[tuple, tuple[tuple, _GroupState]] = {}
        specs = self.specs
        group_fns = self.group_fns
        for batch in self.child.batches(ctx):
            for row in batch:
                key_values = tuple(f(row, ctx) for f in group_fns)
                hkey = _hashable(key_values)
                entry = groups.get(hkey)
                if entry is None:
                    if len(groups) >= self.MAX_GROUPS:
                        raise errors.PgError(errors.OUT_OF_MEMORY, "too many groups for the memory budget")
                    entry = groups[hkey] = (key_values, _GroupState(specs))
                state = entry[1]
                for i, spec in enumerate(specs):
                    if spec.filter is not None and spec.filter(row, ctx) is not True:
                        continue
                    if spec.star:
                        state.aggs[i].add()
                        continue
                    values = [a(row, ctx) for a in spec.args]
                    if spec.distinct:
                        dkey = _hashable(tuple(values))
                        seen = state.seen[i]
                        if dkey in seen or None in values:
                            continue
                        seen.add(dkey)
                    if spec.order:
                        state.buffered[i].append((row, values))
                        continue
                    state.aggs[i].add(*values)
        if not groups and self.scalar:
            state = _GroupState(specs)
            yield [state.results(specs, ctx)]
            return
        yield from emit(ctx, (key_values + state.results(specs, ctx) for key_values, state in groups.values()))

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "group (hash)" if not self.scalar else "group (scalar)"


class NestedLoopJoin(Node):
    """Any join: the right side is materialized once, then matched against each left row."""
    MAX_RIGHT = 5_000_000

    def __init__(self, left: Node, right: Node, kind: str, predicate: Compiled | None,
                 columns: list) -> None:
        self.left = left
        self.right = right
        self.kind = kind  # inner | left | right | full | cross
        self.predicate = predicate
        self.columns = columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        right_rows = []
        for batch in self.right.batches(ctx):
            right_rows.extend(batch)
            if len(right_rows) > self.MAX_RIGHT:
                raise errors.PgError(errors.OUT_OF_MEMORY, "join input exceeds the memory budget")
        pred = self.predicate
        kind = self.kind
        right_null = (None,) * len(self.right.columns)
        left_null = (None,) * len(self.left.columns)
        matched_right = [False] * len(right_rows) if kind in ("right", "full") else None

        def joined() -> Iterator[tuple | None]:
            for batch in self.left.batches(ctx):
                for lrow in batch:
                    hit = False
                    for j, rrow in enumerate(right_rows):
                        row = lrow + rrow
                        if pred is None or pred(row, ctx) is True:
                            hit = True
                            yield row
                            if matched_right is not None:
                                matched_right[j] = True
                        elif j & 255 == 255:
                            yield None  # 256 pairs without a match: a step for emit's cancel check
                    if not hit and kind in ("left", "full"):
                        yield lrow + right_null
                    else:
                        yield None
            if matched_right is not None:
                for j, rrow in enumerate(right_rows):
                    if not matched_right[j]:
                        yield left_null + rrow
        yield from emit(ctx, joined())

    def children(self) -> list[Node]:
        return [self.left, self.right]

    def explain_name(self) -> str:
        if self.kind == "cross":
            return "cross join"
        return "cross join" + _JOIN_SUFFIX[self.kind]


class HashJoin(Node):
    MAX_BUILD = 5_000_000

    def __init__(self, left: Node, right: Node, kind: str, left_keys: list[Compiled],
                 right_keys: list[Compiled], residual: Compiled | None, columns: list) -> None:
        self.left = left
        self.right = right
        self.kind = kind
        self.left_keys = left_keys
        self.right_keys = right_keys
        self.residual = residual
        self.columns = columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        table: dict[tuple, list[int]] = {}
        right_rows: list[tuple] = []
        rkeys = self.right_keys
        for batch in self.right.batches(ctx):
            for rrow in batch:
                key = tuple(f(rrow, ctx) for f in rkeys)
                right_rows.append(rrow)
                if None in key:
                    continue  # NULL never equals anything
                table.setdefault(_hashable(key), []).append(len(right_rows) - 1)
            if len(right_rows) > self.MAX_BUILD:
                raise errors.PgError(errors.OUT_OF_MEMORY, "join input exceeds the memory budget")
        kind = self.kind
        residual = self.residual
        lkeys = self.left_keys
        right_null = (None,) * len(self.right.columns)
        left_null = (None,) * len(self.left.columns)
        matched_right = [False] * len(right_rows) if kind in ("right", "full") else None

        def joined() -> Iterator[tuple | None]:
            for batch in self.left.batches(ctx):
                for lrow in batch:
                    key = tuple(f(lrow, ctx) for f in lkeys)
                    hit = False
                    if None not in key:
                        for j in table.get(_hashable(key), ()):
                            row = lrow + right_rows[j]
                            if residual is None or residual(row, ctx) is True:
                                hit = True
                                yield row
                                if matched_right is not None:
                                    matched_right[j] = True
                    if not hit:
                        yield lrow + right_null if kind in ("left", "full") else None
            if matched_right is not None:
                for j, rrow in enumerate(right_rows):
                    if not matched_right[j]:
                        yield left_null + rrow
        yield from emit(ctx, joined())

    def children(self) -> list[Node]:
        return [self.left, self.right]

    def explain_name(self) -> str:
        return "hash join" + _JOIN_SUFFIX[self.kind]


class LookupJoin(Node):
    """For each left row, read the matching right rows through the right table's index."""

    def __init__(self, left: Node, right_columns: list, codec: TableCodec, index: IndexCodec,
                 key_fns: list[Compiled], kind: str, residual: Compiled | None, columns: list) -> None:
        self.left = left
        self.right_columns = right_columns
        self.codec = codec
        self.index = index
        self.key_fns = key_fns
        self.kind = kind
        self.residual = residual
        self.columns = columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        return emit(ctx, self._joined(ctx))

    def _joined(self, ctx: ExecCtx) -> Iterator[tuple | None]:
        residual = self.residual
        left_outer = self.kind == "left"
        right_null = (None,) * len(self.right_columns)
        for batch in self.left.batches(ctx):
            for lrow, matches in zip(batch, self._lookup(ctx, batch)):
                hit = False
                for rrow in matches:
                    row = lrow + rrow
                    if residual is None or residual(row, ctx) is True:
                        hit = True
                        yield row
                if not hit:
                    yield lrow + right_null if left_outer else None

    def _lookup(self, ctx: ExecCtx, batch: Batch) -> list[list[tuple]]:
        """The right rows matching each left row of a batch. Point lookups (a unique index given
        all its columns) and the primary rows behind index entries are read with one batched
        read per batch; a prefix of an index is a scan per left row."""
        txn = ctx.txn
        codec = self.codec
        index = self.index
        decode = codec.decode_row
        found: list[list[tuple]] = [[] for _ in batch]
        wanted: list[tuple[int, bytes]] = []
        for i, lrow in enumerate(batch):
            values = [f(lrow, ctx) for f in self.key_fns]
            if None not in values:  # NULL never equals anything
                wanted.append((i, index.prefix + index.encode_values(values)))
        point = index.is_unique and len(self.key_fns) == len(index.positions)
        if index.index.is_primary:
            if point:
                for (i, _), raw in zip(wanted, txn.get_many([key for _, key in wanted])):
                    if raw is not None:
                        found[i].append(decode(raw))
            else:
                for i, prefix in wanted:
                    found[i] = [decode(raw) for _, raw in txn.scan(prefix, prefix_end(prefix))]
            return found
        owners: list[int] = []
        pk_keys: list[bytes] = []
        if point:
            for (i, _), raw in zip(wanted, txn.get_many([key for _, key in wanted])):
                if raw is not None:
                    owners.append(i)
                    pk_keys.append(codec.pk_prefix + TableCodec.decode_index_value(raw)[0])
        else:
            for i, prefix in wanted:
                for _, raw in txn.scan(prefix, prefix_end(prefix)):
                    owners.append(i)
                    pk_keys.append(codec.pk_prefix + TableCodec.decode_index_value(raw)[0])
        for i, row_raw in zip(owners, txn.get_many(pk_keys)):
            if row_raw is not None:
                found[i].append(decode(row_raw))
        return found

    def children(self) -> list[Node]:
        return [self.left]

    def explain_name(self) -> str:
        return "lookup join" + _JOIN_SUFFIX[self.kind]

    def explain_attrs(self) -> list[str]:
        attrs = [f"table: {self.codec.table.name}@{self.index.index.name}", *self.info]
        if self.index.is_unique and len(self.key_fns) == len(self.index.positions):
            attrs.append("equality cols are key")
        return attrs


class SetOp(Node):
    def __init__(self, kind: str, all_rows: bool, left: Node, right: Node, columns: list,
                 left_conv: list | None = None, right_conv: list | None = None) -> None:
        self.kind = kind  # union | intersect | except
        self.all = all_rows
        self.left = left
        self.right = right
        self.columns = columns
        self.left_conv = left_conv
        self.right_conv = right_conv

    @staticmethod
    def _convert(rows: Iterator[tuple], conv: list | None, ctx: ExecCtx) -> Iterator[tuple]:
        if conv is None:
            yield from rows
            return
        for r in rows:
            yield tuple(v if f is None or v is None else f(v, ctx) for f, v in zip(conv, r))

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        left = self._convert(self.left.rows(ctx), self.left_conv, ctx)
        right = self._convert(self.right.rows(ctx), self.right_conv, ctx)
        if self.kind == "union":
            if self.all:
                yield from emit(ctx, itertools.chain(left, right))
                return
            seen: set = set()
            out = []
            for r in itertools.chain(left, right):
                k = _hashable(r)
                if k not in seen:
                    seen.add(k)
                    out.append(r)
            yield from emit(ctx, out)
            return
        counts: dict[tuple, int] = {}
        for r in right:
            k = _hashable(r)
            counts[k] = counts.get(k, 0) + 1
        out = []
        emitted: set = set()
        for r in left:
            k = _hashable(r)
            n = counts.get(k, 0)
            if self.kind == "intersect":
                if n > 0:
                    if self.all:
                        counts[k] = n - 1
                        out.append(r)
                    elif k not in emitted:
                        emitted.add(k)
                        out.append(r)
            else:
                if self.all:
                    if n > 0:
                        counts[k] = n - 1
                    else:
                        out.append(r)
                elif n == 0 and k not in emitted:
                    emitted.add(k)
                    out.append(r)
        yield from emit(ctx, out)

    def children(self) -> list[Node]:
        return [self.left, self.right]

    def explain_name(self) -> str:
        return f"{self.kind}{' all' if self.all else ''}"


_JOIN_SUFFIX = {"inner": "", "left": " (left outer)", "right": " (right outer)", "full": " (full outer)",
                "cross": "", "semi": " (semi)", "anti": " (anti)"}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Generate(Node):
    """Rows produced by a Python function of the execution context (virtual tables, SRFs)."""

    def __init__(self, columns: list, produce: Callable[[ExecCtx], Any], label: str = "") -> None:
        self.columns = columns
        self.produce = produce
        self.label = label

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        # Called at the first batch, not before (a plan's batches() may be set up early).
        yield from emit(ctx, self.produce(ctx))  # generate_series can be as long as a client likes

    def explain_name(self) -> str:
        return self.label or "virtual table"


class Materialized(Node):
    """A subtree computed once per execution and replayed (WITH queries)."""

    def __init__(self, child: Node) -> None:
        self.child = child
        self.columns = child.columns
        self.slot = object()

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        cache = ctx.subquery_cache
        rows = cache.get(self.slot)
        if rows is None:
            rows = cache[self.slot] = list(self.child.rows(ctx))
        yield from emit(ctx, rows)

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str | None:
        return None


class ProjectSet(Node):
    """Set-returning functions in a select list: each input row is repeated once per row of the
    longest function result, with each function's value appended (NULL once it runs out)."""
    MAX_ROWS_PER_INPUT = 10_000_000

    def __init__(self, child: Node, columns: list, calls: list[tuple[Callable, list[Compiled]]]) -> None:
        self.child = child
        self.columns = columns
        self.calls = calls

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        return emit(ctx, self._rows(ctx))

    def _rows(self, ctx: ExecCtx) -> Iterator[tuple | None]:
        calls = self.calls
        for batch in self.child.batches(ctx):
            for row in batch:
                results = []
                for impl, fns in calls:
                    args = [f(row, ctx) for f in fns]
                    results.append(iter(()) if None in args else iter(impl(*args)))
                produced = 0
                while True:
                    values = [next(r, None) for r in results]
                    if all(v is None for v in values):
                        break
                    yield row + tuple(v[0] if v is not None else None for v in values)
                    produced += 1
                    if produced > self.MAX_ROWS_PER_INPUT:
                        raise errors.PgError(errors.PROGRAM_LIMIT_EXCEEDED,
                                             "set-returning function produced too many rows")
                if not produced:
                    yield None

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return "project set"


class LateralFunction(Node):
    """FROM a, f(a.x): each row of the child followed by each row the function returns for it
    (a row for which it returns none is dropped, as in a cross join)."""

    def __init__(self, child: Node, columns: list, rows_for: Callable[[tuple, ExecCtx], Any],
                 label: str) -> None:
        self.child = child
        self.columns = columns
        self.rows_for = rows_for
        self.label = label

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        rows_for = self.rows_for

        def rows() -> Iterator[tuple | None]:
            for batch in self.child.batches(ctx):
                for row in batch:
                    yield None  # a step, even when the function returns nothing for this row
                    for produced in rows_for(row, ctx):
                        yield row + tuple(produced)
        return emit(ctx, rows())

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str:
        return f"lateral {self.label}"


class RunFirst(Node):
    """Runs the WITH clause's data-modifying statements (materialized, so a reference to one
    reads the same rows) before the statement that follows them."""

    def __init__(self, first: list[Node], child: Node) -> None:
        self.first = first
        self.child = child
        self.columns = child.columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        affected = ctx.rows_affected  # the command tag counts the main statement's rows only
        for node in self.first:
            for _ in node.batches(ctx):
                pass
        ctx.rows_affected = affected
        yield from self.child.batches(ctx)

    def children(self) -> list[Node]:
        return [*self.first, self.child]

    def explain_name(self) -> str:
        return "root"


class WorkingTable(Node):
    """The rows of the previous round of a recursive CTE, as its step query reads them."""

    def __init__(self, columns: list) -> None:
        self.columns = columns
        self.slot = object()

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        yield from emit(ctx, list(ctx.subquery_cache.get(self.slot, ())))

    def explain_name(self) -> str:
        return "scan buffer"


class RecursiveUnion(Node):
    """WITH RECURSIVE: the anchor's rows, then the step's rows over each previous round until a
    round adds nothing. UNION (not ALL) drops rows already produced."""
    MAX_ROWS = 10_000_000

    def __init__(self, anchor: Node, step: Node, working: WorkingTable, all_rows: bool, columns: list) -> None:
        self.anchor = anchor
        self.step = step
        self.working = working
        self.all = all_rows
        self.columns = columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        seen: set | None = None if self.all else set()
        total = 0
        rows = self._new_rows(self.anchor.rows(ctx), seen)
        cache = ctx.subquery_cache
        outside = set(cache)  # results computed before the rounds stay valid through them
        while rows:
            total += len(rows)
            if total > self.MAX_ROWS:
                raise errors.PgError(errors.OUT_OF_MEMORY, "recursive query exceeds the memory budget")
            yield from emit(ctx, rows)
            ctx.check_cancel()  # a round may add rows forever without the consumer pulling any
            cache[self.working.slot] = rows
            # the step's uncorrelated subqueries may read the working table: recompute them
            for key in [k for k in cache if k not in outside and k is not self.working.slot]:
                del cache[key]
            rows = self._new_rows(self.step.rows(ctx), seen)

    @staticmethod
    def _new_rows(rows: Iterator[tuple], seen: set | None) -> list[tuple]:
        if seen is None:
            return list(rows)
        out = []
        for r in rows:
            k = _hashable(r)
            if k not in seen:
                seen.add(k)
                out.append(r)
        return out

    def children(self) -> list[Node]:
        return [self.anchor, self.step]

    def explain_name(self) -> str:
        return "recursive cte"


class Rename(Node):
    """The same rows under new column names (a subquery in FROM with an alias)."""

    def __init__(self, child: Node, columns: list) -> None:
        self.child = child
        self.columns = columns

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        return self.child.batches(ctx)

    def children(self) -> list[Node]:
        return [self.child]

    def explain_name(self) -> str | None:
        return None

