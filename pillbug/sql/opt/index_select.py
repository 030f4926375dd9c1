"""Index selection: which index a table is read through, and the key spans to read.

For each index, walk its columns in order: as long as a conjunct pins the column to one value
(`col = <expr constant for this execution>`, or `col IN (...)`), extend an equality prefix; the
next column may take a range (<, <=, >, >=). The index with the most pinned columns wins, the
primary index on ties (no index join needed); pinning every column of the primary key makes a
point lookup. Spans are computed at run time from the (possibly parameterised) values, so one
plan serves every execution of a prepared or lifted statement.

The conjuncts the spans express (the equality prefix and the range on the next column) are
dropped from the residual filter: key encodings are exact and prefix-free, NULLs are skipped by
the span bounds, and a NULL comparison value makes no span at all.
This module knows nothing of SQL text; it reads typed expressions and descriptors.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.catalog.descriptors import IndexDesc, TableDesc
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.rowenc import IndexCodec, TableCodec, key_encoder
from pillbug.sql.sem.expr import ColRef, Compare, Compiled, Expr, InList, Or, format_expr
from pillbug.util import encoding as enc

MAX_IN_SPANS = 10_000


@dataclass(slots=True)
class Constraint:
    index: IndexDesc
    codec: IndexCodec
    eq: list[list[Compiled]]  # per pinned column: the candidate values (IN gives several)
    eq_exprs: list[Expr]  # the conjuncts the equality prefix consumed
    lower: tuple[Compiled, bool] | None = None  # (value, inclusive) on the next column
    upper: tuple[Compiled, bool] | None = None
    range_conjuncts: list[Expr] = field(default_factory=list)
    # the same values as expressions, for EXPLAIN
    eq_values: list[list[Expr]] = field(default_factory=list)
    lower_expr: Expr | None = None
    upper_expr: Expr | None = None

    @property
    def pinned(self) -> int:
        return len(self.eq)

    @property
    def is_point(self) -> bool:
        return (self.index.is_primary or self.index.unique) and self.pinned == len(self.index.column_ids) \
            and all(len(v) == 1 for v in self.eq)


def _same_family(col_type: T.SQLType, value: Expr) -> bool:
    a, b = col_type.family, value.type.family
    return a == b or (a in ("int", "oid") and b in ("int", "oid"))


def _match_column(conj: Expr, position: int) -> tuple[str, Expr] | None:
    """(op, value expr) if conj compares column `position` with a per-execution constant."""
    if isinstance(conj, Compare):
        left, right = conj.left, conj.right
        if isinstance(left, ColRef) and left.index == position and right.is_constant:
            return conj.op, right
        if isinstance(right, ColRef) and right.index == position and left.is_constant:
            flipped = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<=", "<>": "<>"}[conj.op]
            return flipped, left
    return None


def choose(table: TableDesc, codec: TableCodec, conjuncts: list[Expr],
           hint: str | None = None) -> Constraint | None:
    """The best constraint over the table's indexes, or None for a full scan."""
    candidates = table.all_indexes()
    if hint is not None:
        candidates = [i for i in candidates if i.name == hint]
    best: Constraint | None = None
    best_score = (-1, 0, 0)
    for index in candidates:
        ic = codec.primary if index.is_primary else next(
            c for c in codec.secondaries if c.index.id == index.id)
        cons = _constrain(table, index, ic, conjuncts)
        has_range = cons.lower is not None or cons.upper is not None
        score = (cons.pinned, 1 if has_range else 0, 1 if index.is_primary else 0)
        if cons.is_point:
            score = (1000, 0, 1 if index.is_primary else 0)
        if score > best_score:
            best, best_score = cons, score
    if best is None or (best.pinned == 0 and best.lower is None and best.upper is None):
        if hint is not None and best is not None and not best.index.is_primary:
            return best  # a forced secondary index with no constraint: a full index scan
        return None
    return best


def _constrain(table: TableDesc, index: IndexDesc, ic: IndexCodec, conjuncts: list[Expr]) -> Constraint:
    cons = Constraint(index, ic, [], [])
    for cid, pos in zip(index.column_ids, ic.positions):
        col_type = table.column_by_id(cid).type
        pinned = False
        for conj in conjuncts:
            m = _match_column(conj, pos)
            if m is not None and m[0] == "=" and _same_family(col_type, m[1]):
                cons.eq.append([_converter(col_type, m[1])])
                cons.eq_values.append([m[1]])
                cons.eq_exprs.append(conj)
                pinned = True
                break
            values = _in_values(conj, pos)
            if values is not None and all(v.is_constant and _same_family(col_type, v) for v in values) \
                    and 0 < len(values) <= MAX_IN_SPANS:
                cons.eq.append([_converter(col_type, v) for v in values])
                cons.eq_values.append(values)
                cons.eq_exprs.append(conj)
                pinned = True
                break
        if pinned:
            continue
        for conj in conjuncts:
            m = _match_column(conj, pos)
            if m is None or not _same_family(col_type, m[1]):
                continue
            op, value = m
            fn = _converter(col_type, value)
            if op in (">", ">=") and cons.lower is None:
                cons.lower = (fn, op == ">=")
                cons.lower_expr = value
                cons.range_conjuncts.append(conj)
            elif op in ("<", "<=") and cons.upper is None:
                cons.upper = (fn, op == "<=")
                cons.upper_expr = value
                cons.range_conjuncts.append(conj)
        break
    return cons


def _in_values(conj: Expr, position: int) -> list[Expr] | None:
    """The values of `col IN (...)`, or of `col = x OR col = y ...`, for the column at position."""
    if isinstance(conj, InList):
        if not conj.negate and isinstance(conj.arg, ColRef) and conj.arg.index == position:
            return list(conj.items)
        return None
    if isinstance(conj, Or):
        values: list[Expr] = []
        for arg in conj.args:
            m = _match_column(arg, position)
            if m is not None and m[0] == "=":
                values.append(m[1])
                continue
            inner = _in_values(arg, position)
            if inner is None:
                return None
            values.extend(inner)
        return values
    return None


def _converter(col_type: T.SQLType, value: Expr) -> Compiled:
    f = value.compile()
    if col_type.family == "float" and value.type.family != "float":
        return lambda row, ctx: None if (v := f(row, ctx)) is None else float(v)
    return f


def span_function(cons: Constraint) -> Callable[[ExecCtx], list[tuple[bytes, bytes]]]:
    """Key spans for the constraint, computed from each execution's values."""
    ic = cons.codec
    prefix = ic.prefix
    encoders = ic.encoders
    n_eq = cons.pinned
    eq = cons.eq
    next_col = n_eq
    has_range = cons.lower is not None or cons.upper is not None
    descending = has_range and ic.index.directions[next_col] == "desc"
    range_encoder = None
    if has_range:
        base = key_encoder(_column_type(cons, next_col))
        range_encoder = (lambda v: enc.invert(base(v))) if descending else base
    lower, upper = cons.lower, cons.upper
    empty: tuple = ()
    single = all(len(v) == 1 for v in eq)

    def spans(ctx: ExecCtx) -> list[tuple[bytes, bytes]]:
        if single:
            combos: Any = [[v[0](empty, ctx) for v in eq]]
        else:
            combos = list(itertools.product(*[[f(empty, ctx) for f in v] for v in eq]))
        out = []
        seen = set()
        for values in combos:
            if None in values:
                continue  # col = NULL matches nothing
            head = prefix + b"".join([e(v) for e, v in zip(encoders, values)])
            if head in seen:
                continue
            seen.add(head)
            if not has_range:
                out.append((head, enc.prefix_end(head)))
                continue
            start = head + (b"\x01" if not descending else b"")  # skip NULLs (0x00 ascending)
            end = enc.prefix_end(head) if not descending else head + b"\xff"  # NULLs are 0xff descending
            lo = lower[0](empty, ctx) if lower is not None else None
            hi = upper[0](empty, ctx) if upper is not None else None
            if (lower is not None and lo is None) or (upper is not None and hi is None):
                continue
            lo_bound = hi_bound = None
            if lo is not None:
                k = head + range_encoder(lo)
                lo_bound = (k, lower[1])
            if hi is not None:
                k = head + range_encoder(hi)
                hi_bound = (k, upper[1])
            if descending:
                lo_bound, hi_bound = hi_bound, lo_bound
            if lo_bound is not None:
                k, inclusive = lo_bound
                start = max(start, k if inclusive else enc.prefix_end(k))
            if hi_bound is not None:
                k, inclusive = hi_bound
                end = min(end, enc.prefix_end(k) if inclusive else k)
            if start < end:
                out.append((start, end))
        out.sort()
        return out
    return spans


def _column_type(cons: Constraint, i: int) -> T.SQLType:
    return cons.codec.types[i]


def point_key_function(cons: Constraint) -> Callable[[ExecCtx], bytes | None]:
    """The exact primary key of a point lookup."""
    ic = cons.codec
    prefix = ic.prefix
    fns = [v[0] for v in cons.eq]
    encoders = ic.encoders
    empty: tuple = ()
    if len(fns) == 1:
        (f,), (e,) = fns, encoders

        def one(ctx: ExecCtx) -> bytes | None:
            v = f(empty, ctx)
            return None if v is None else prefix + e(v)
        return one

    def key(ctx: ExecCtx) -> bytes | None:
        values = [f(empty, ctx) for f in fns]
        if None in values:
            return None
        return prefix + b"".join([e(v) for e, v in zip(encoders, values)])
    return key


def describe_spans(cons: Constraint | None) -> str:
    """The spans in CockroachDB's EXPLAIN notation: [/1 - /1], [/'a' - ], FULL SCAN."""
    if cons is None or (not cons.eq_values and cons.lower is None and cons.upper is None):
        return "FULL SCAN"
    prefixes = [""]
    for values in cons.eq_values:
        if len(prefixes) * len(values) > 10:
            return f"{len(prefixes) * len(values)} spans"
        prefixes = [p + "/" + format_expr(v) for p in prefixes for v in values]
    if cons.lower is None and cons.upper is None:
        return " ".join(f"[{p} - {p}]" for p in prefixes)
    out = []
    for p in prefixes:
        lo = "[" + p + (f"/{format_expr(cons.lower_expr)}" if cons.lower_expr is not None else "")
        if cons.lower is not None and not cons.lower[1]:
            lo = "(" + lo[1:]
        hi = p + (f"/{format_expr(cons.upper_expr)}" if cons.upper_expr is not None else "")
        hi += ")" if cons.upper is not None and not cons.upper[1] else "]"
        out.append(f"{lo} - {hi}")
    return " ".join(out)
