"""Typed expressions, and their compilation to Python closures.

The builder (build.py) turns parser nodes into these; the planner inspects them (index selection
looks for `column = constant`); compile() turns each into a closure `f(row, ctx)` once per plan,
so that evaluating an expression per row is a few Python calls with no tree walking.

NULL is None. Comparisons and most operators are strict (NULL in, NULL out); AND/OR/NOT follow
SQL's three-valued logic. A predicate holds only when it evaluates to True.
This module knows nothing of the parser's node shapes or of storage.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.types import SQLType
from pillbug.util import errors

Compiled = Callable[[tuple, Any], Any]


class Expr:
    __slots__ = ("type",)

    def compile(self) -> Compiled:
        raise NotImplementedError

    def children(self) -> list[Expr]:
        return []

    @property
    def is_constant(self) -> bool:
        """Evaluates to the same value for every row of one execution (no column references)."""
        return all(c.is_constant for c in self.children())

    def walk(self):
        yield self
        for c in self.children():
            yield from c.walk()


class Const(Expr):
    __slots__ = ("value", "untyped")

    def __init__(self, value: Any, typ: SQLType, untyped: bool = False) -> None:
        self.value = value
        self.type = typ
        self.untyped = untyped  # a numeric literal whose type may still adapt to its context

    def compile(self) -> Compiled:
        v = self.value
        return lambda row, ctx: v

    def __repr__(self) -> str:
        return f"Const({self.value!r})"


class Param(Expr):
    """$n: a placeholder, or a literal lifted out of the statement text for the plan cache."""
    __slots__ = ("index", "lifted_kind")

    def __init__(self, index: int, typ: SQLType, lifted_kind: str | None = None) -> None:
        self.index = index
        self.type = typ
        self.lifted_kind = lifted_kind

    def compile(self) -> Compiled:
        i = self.index
        return lambda row, ctx: ctx.params[i]

    def __repr__(self) -> str:
        return f"Param(${self.index + 1})"


class ColRef(Expr):
    __slots__ = ("index", "name")

    def __init__(self, index: int, typ: SQLType, name: str = "") -> None:
        self.index = index
        self.type = typ
        self.name = name

    @property
    def is_constant(self) -> bool:
        return False

    def compile(self) -> Compiled:
        i = self.index
        return lambda row, ctx: row[i]

    def __repr__(self) -> str:
        return f"ColRef({self.index}:{self.name})"


class OuterRef(Expr):
    """A column of an enclosing query's row (a correlated subquery)."""
    __slots__ = ("depth", "index", "name")

    def __init__(self, depth: int, index: int, typ: SQLType, name: str = "") -> None:
        self.depth = depth
        self.index = index
        self.type = typ
        self.name = name

    def compile(self) -> Compiled:
        d, i = self.depth, self.index
        return lambda row, ctx: ctx.outer[-d][i]


class Call(Expr):
    """A strict function or operator: NULL if any argument is NULL, else impl(*args)."""
    __slots__ = ("name", "args", "impl", "strict", "volatile")

    def __init__(self, name: str, args: list[Expr], typ: SQLType, impl: Callable[..., Any],
                 strict: bool = True, volatile: bool = False) -> None:
        self.name = name
        self.args = args
        self.type = typ
        self.impl = impl
        self.strict = strict
        self.volatile = volatile

    def children(self) -> list[Expr]:
        return self.args

    @property
    def is_constant(self) -> bool:
        return not self.volatile and super().is_constant

    def compile(self) -> Compiled:
        f = self.impl
        fns = [a.compile() for a in self.args]
        if not self.strict:
            if not fns:
                return lambda row, ctx: f(ctx)
            return lambda row, ctx: f(ctx, *[g(row, ctx) for g in fns])
        if len(fns) == 1:
            (a,) = fns
            return lambda row, ctx: None if (x := a(row, ctx)) is None else f(x)
        if len(fns) == 2:
            a, b = fns
            return lambda row, ctx: (None if (x := a(row, ctx)) is None or (y := b(row, ctx)) is None
                                     else f(x, y))
        if not fns:
            return lambda row, ctx: f()

        def call(row: tuple, ctx: Any) -> Any:
            vals = [g(row, ctx) for g in fns]
            if None in vals:
                for v in vals:
                    if v is None:
                        return None
            return f(*vals)
        return call

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.args))})"


_CMP = {"=": operator.eq, "<>": operator.ne, "!=": operator.ne, "<": operator.lt,
        "<=": operator.le, ">": operator.gt, ">=": operator.ge}
FLIPPED = {"=": "=", "<>": "<>", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class Compare(Expr):
    __slots__ = ("op", "left", "right")

    def __init__(self, op: str, left: Expr, right: Expr) -> None:
        self.op = op
        self.left = left
        self.right = right
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return [self.left, self.right]

    def compile(self) -> Compiled:
        f = _CMP[self.op]
        left, right = self.left, self.right
        if isinstance(left, ColRef) and isinstance(right, Const):
            i, c = left.index, right.value
            if c is None:
                return lambda row, ctx: None
            if f is operator.eq:
                return lambda row, ctx: None if (x := row[i]) is None else x == c
            return lambda row, ctx: None if (x := row[i]) is None else f(x, c)
        if isinstance(left, ColRef) and isinstance(right, Param):
            i, p = left.index, right.index
            return lambda row, ctx: (None if (x := row[i]) is None or (y := ctx.params[p]) is None
                                     else f(x, y))
        a, b = left.compile(), right.compile()
        return lambda row, ctx: (None if (x := a(row, ctx)) is None or (y := b(row, ctx)) is None
                                 else f(x, y))

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


class And(Expr):
    __slots__ = ("args",)

    def __init__(self, args: list[Expr]) -> None:
        self.args = args
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return self.args

    def compile(self) -> Compiled:
        fns = [a.compile() for a in self.args]
        if len(fns) == 2:
            a, b = fns

            def and2(row: tuple, ctx: Any) -> Any:
                x = a(row, ctx)
                if x is False:
                    return False
                y = b(row, ctx)
                if y is False:
                    return False
                return None if x is None or y is None else True
            return and2

        def and_(row: tuple, ctx: Any) -> Any:
            result: Any = True
            for f in fns:
                v = f(row, ctx)
                if v is False:
                    return False
                if v is None:
                    result = None
            return result
        return and_


class Or(Expr):
    __slots__ = ("args",)

    def __init__(self, args: list[Expr]) -> None:
        self.args = args
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return self.args

    def compile(self) -> Compiled:
        fns = [a.compile() for a in self.args]

        def or_(row: tuple, ctx: Any) -> Any:
            result: Any = False
            for f in fns:
                v = f(row, ctx)
                if v is True:
                    return True
                if v is None:
                    result = None
            return result
        return or_


class Not(Expr):
    __slots__ = ("arg",)

    def __init__(self, arg: Expr) -> None:
        self.arg = arg
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return [self.arg]

    def compile(self) -> Compiled:
        a = self.arg.compile()
        return lambda row, ctx: None if (x := a(row, ctx)) is None else not x


class IsNull(Expr):
    __slots__ = ("arg", "negate")

    def __init__(self, arg: Expr, negate: bool) -> None:
        self.arg = arg
        self.negate = negate
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return [self.arg]

    def compile(self) -> Compiled:
        a = self.arg.compile()
        if self.negate:
            return lambda row, ctx: a(row, ctx) is not None
        return lambda row, ctx: a(row, ctx) is None


class IsDistinct(Expr):
    __slots__ = ("left", "right", "negate")

    def __init__(self, left: Expr, right: Expr, negate: bool) -> None:
        self.left = left
        self.right = right
        self.negate = negate
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return [self.left, self.right]

    def compile(self) -> Compiled:
        a, b = self.left.compile(), self.right.compile()
        negate = self.negate

        def distinct(row: tuple, ctx: Any) -> bool:
            x, y = a(row, ctx), b(row, ctx)
            if x is None or y is None:
                d = (x is None) != (y is None)
            else:
                d = x != y
            return not d if negate else d
        return distinct


class Case(Expr):
    __slots__ = ("whens", "default")

    def __init__(self, whens: list[tuple[Expr, Expr]], default: Expr | None, typ: SQLType) -> None:
        self.whens = whens
        self.default = default
        self.type = typ

    def children(self) -> list[Expr]:
        out = [e for pair in self.whens for e in pair]
        if self.default is not None:
            out.append(self.default)
        return out

    def compile(self) -> Compiled:
        pairs = [(c.compile(), r.compile()) for c, r in self.whens]
        default = self.default.compile() if self.default is not None else None

        def case(row: tuple, ctx: Any) -> Any:
            for cond, result in pairs:
                if cond(row, ctx) is True:
                    return result(row, ctx)
            return default(row, ctx) if default is not None else None
        return case


class Coalesce(Expr):
    __slots__ = ("args",)

    def __init__(self, args: list[Expr], typ: SQLType) -> None:
        self.args = args
        self.type = typ

    def children(self) -> list[Expr]:
        return self.args

    def compile(self) -> Compiled:
        fns = [a.compile() for a in self.args]

        def coalesce(row: tuple, ctx: Any) -> Any:
            for f in fns:
                v = f(row, ctx)
                if v is not None:
                    return v
            return None
        return coalesce


class InList(Expr):
    __slots__ = ("arg", "items", "negate")

    def __init__(self, arg: Expr, items: list[Expr], negate: bool) -> None:
        self.arg = arg
        self.items = items
        self.negate = negate
        self.type = T.BOOL

    def children(self) -> list[Expr]:
        return [self.arg, *self.items]

    def compile(self) -> Compiled:
        a = self.arg.compile()
        negate = self.negate
        if all(isinstance(i, Const) for i in self.items):
            values = [i.value for i in self.items]
            has_null = any(v is None for v in values)
            try:
                lookup: Any = frozenset(v for v in values if v is not None)
            except TypeError:
                lookup = [v for v in values if v is not None]

            def in_const(row: tuple, ctx: Any) -> Any:
                x = a(row, ctx)
                if x is None:
                    return None
                if x in lookup:
                    return not negate
                return None if has_null else negate
            return in_const
        fns = [i.compile() for i in self.items]

        def in_list(row: tuple, ctx: Any) -> Any:
            x = a(row, ctx)
            if x is None:
                return None
            saw_null = False
            for f in fns:
                v = f(row, ctx)
                if v is None:
                    saw_null = True
                elif v == x:
                    return not negate
            return None if saw_null else negate
        return in_list


class Cast(Expr):
    __slots__ = ("arg", "impl")

    def __init__(self, arg: Expr, typ: SQLType, impl: Callable[[Any, Any], Any]) -> None:
        self.arg = arg
        self.type = typ
        self.impl = impl  # impl(value, ctx)

    def children(self) -> list[Expr]:
        return [self.arg]

    def compile(self) -> Compiled:
        a = self.arg.compile()
        f = self.impl
        return lambda row, ctx: None if (x := a(row, ctx)) is None else f(x, ctx)

    def __repr__(self) -> str:
        return f"Cast({self.arg!r} AS {self.type})"


class Subquery(Expr):
    """A subquery used as a value: kind is 'scalar', 'exists', 'in' (with arg) or 'array'.

    `run(ctx)` executes the subquery plan and returns its rows; an uncorrelated subquery runs once
    per execution (cached in ctx), a correlated one once per outer row.
    """
    __slots__ = ("kind", "run", "arg", "op", "correlated", "negate", "slot")

    def __init__(self, kind: str, run: Callable[[Any], list[tuple]], typ: SQLType, correlated: bool,
                 arg: Expr | None = None, op: str = "=", negate: bool = False) -> None:
        self.kind = kind
        self.run = run
        self.type = typ
        self.correlated = correlated
        self.arg = arg
        self.op = op
        self.negate = negate
        self.slot = object()

    def children(self) -> list[Expr]:
        return [self.arg] if self.arg is not None else []

    @property
    def is_constant(self) -> bool:
        return not self.correlated and (self.arg is None or self.arg.is_constant)

    def compile(self) -> Compiled:
        run = self.run
        slot = self.slot
        correlated = self.correlated

        def rows_for(row: tuple, ctx: Any) -> list[tuple]:
            if correlated:
                ctx.outer.append(row)
                try:
                    return run(ctx)
                finally:
                    ctx.outer.pop()
            cache = ctx.subquery_cache
            got = cache.get(slot)
            if got is None:
                got = cache[slot] = run(ctx)
            return got

        kind = self.kind
        if kind == "exists":
            negate = self.negate
            return lambda row, ctx: (not rows_for(row, ctx)) if negate else bool(rows_for(row, ctx))
        if kind == "scalar":
            def scalar(row: tuple, ctx: Any) -> Any:
                rows = rows_for(row, ctx)
                if not rows:
                    return None
                if len(rows) > 1:
                    raise errors.PgError(errors.CARDINALITY_VIOLATION,
                                         "more than one row returned by a subquery used as an expression")
                return rows[0][0]
            return scalar
        if kind == "array":
            return lambda row, ctx: [r[0] for r in rows_for(row, ctx)]
        # 'in' / 'any' / 'all' with a comparison operator
        a = self.arg.compile()
        cmp = _CMP[self.op]
        negate = self.negate
        want_all = kind == "all"

        def quantified(row: tuple, ctx: Any) -> Any:
            x = a(row, ctx)
            rows = rows_for(row, ctx)
            if not rows:
                result: Any = want_all
            elif x is None:
                result = None
            else:
                saw_null = False
                result = want_all
                for r in rows:
                    v = r[0]
                    if v is None:
                        saw_null = True
                        continue
                    hit = cmp(x, v)
                    if want_all and not hit:
                        result = False
                        break
                    if not want_all and hit:
                        result = True
                        break
                else:
                    if saw_null:
                        result = None
            if negate and result is not None:
                return not result
            return result
        return quantified


class ArrayCtor(Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[Expr], typ: SQLType) -> None:
        self.items = items
        self.type = typ

    def children(self) -> list[Expr]:
        return self.items

    def compile(self) -> Compiled:
        fns = [i.compile() for i in self.items]
        return lambda row, ctx: [f(row, ctx) for f in fns]


def conjuncts(expr: Expr | None) -> list[Expr]:
    """The top-level AND terms of a predicate."""
    if expr is None:
        return []
    if isinstance(expr, And):
        out: list[Expr] = []
        for a in expr.args:
            out.extend(conjuncts(a))
        return out
    return [expr]


def make_and(terms: list[Expr]) -> Expr | None:
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]
    return And(terms)


def columns_used(expr: Expr) -> set[int]:
    return {e.index for e in expr.walk() if isinstance(e, ColRef)}


def shift_columns(expr: Expr, mapping: dict[int, int]) -> Expr:
    """Rewrite ColRef indexes in place (used when a predicate moves to a narrower row)."""
    for e in expr.walk():
        if isinstance(e, ColRef):
            e.index = mapping[e.index]
    return expr


_INFIX = frozenset({"+", "-", "*", "/", "//", "%", "^", "||", "&", "|", "#", "<<", ">>", "->", "->>",
                    "#>", "#>>", "@>", "<@", "?", "?|", "?&", "~~", "!~~", "~~*", "!~~*", "~", "!~",
                    "~*", "!~*"})


def format_expr(e: Expr) -> str:
    """An expression as SQL-like text, for EXPLAIN (column names, literals, $n placeholders)."""
    if isinstance(e, ColRef) or isinstance(e, OuterRef):
        return e.name or f"@{e.index + 1}"
    if isinstance(e, Const):
        return _format_const(e)
    if isinstance(e, Param):
        return f"${e.index + 1}"
    if isinstance(e, Compare):
        return f"{format_expr(e.left)} {e.op} {format_expr(e.right)}"
    if isinstance(e, And):
        return " AND ".join(_paren(a, (Or,)) for a in e.args)
    if isinstance(e, Or):
        return " OR ".join(_paren(a, (And,)) for a in e.args)
    if isinstance(e, Not):
        return f"NOT {_paren(e.arg, (And, Or, Compare))}"
    if isinstance(e, IsNull):
        return f"{_paren(e.arg, (And, Or, Compare))} IS {'NOT ' if e.negate else ''}NULL"
    if isinstance(e, IsDistinct):
        return f"{format_expr(e.left)} IS {'NOT ' if e.negate else ''}DISTINCT FROM {format_expr(e.right)}"
    if isinstance(e, InList):
        items = ", ".join(format_expr(i) for i in e.items)
        return f"{format_expr(e.arg)} {'NOT ' if e.negate else ''}IN ({items})"
    if isinstance(e, Cast):
        return f"{_paren(e.arg, (Call, Compare, And, Or))}::{e.type.crdb_name}"
    if isinstance(e, Call):
        if e.name == "adapt" and len(e.args) == 1:
            return format_expr(e.args[0])
        if e.name in _INFIX and len(e.args) == 2:
            return f"{_paren(e.args[0], (Call,))} {e.name} {_paren(e.args[1], (Call,))}"
        if e.name in ("-", "~", "+") and len(e.args) == 1:
            return f"{e.name}{_paren(e.args[0], (Call,))}"
        return f"{e.name}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Subquery):
        if e.arg is not None:
            return f"{format_expr(e.arg)} {e.op} {e.kind.upper()} (subquery)"
        return "EXISTS (subquery)" if e.kind == "exists" else "(subquery)"
    if isinstance(e, Coalesce):
        return f"COALESCE({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Case):
        parts = " ".join(f"WHEN {format_expr(c)} THEN {format_expr(r)}" for c, r in e.whens)
        tail = f" ELSE {format_expr(e.default)}" if e.default is not None else ""
        return f"CASE {parts}{tail} END"
    if isinstance(e, ArrayCtor):
        return f"ARRAY[{', '.join(format_expr(i) for i in e.items)}]"
    return type(e).__name__


def _paren(e: Expr, kinds: tuple) -> str:
    text = format_expr(e)
    if isinstance(e, kinds) and not (isinstance(e, Call) and e.name not in _INFIX):
        return f"({text})"
    return text


def _format_const(e: Const) -> str:
    v = e.value
    if v is None:
        return "NULL"
    fam = e.type.family
    if fam == "bool":
        return "true" if v else "false"
    text = datum.format_text(v, e.type)
    if fam in ("int", "float", "decimal", "oid"):
        return text
    return "'" + text.replace("'", "''") + "'"
