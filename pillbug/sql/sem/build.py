"""Parser expression nodes -> typed Expr trees: name resolution, type checking, coercion.

The builder resolves column references against a Scope (the columns of the row the expression
will see, with enclosing scopes for correlated subqueries), checks and infers types (a string
literal or an untyped placeholder takes the type its context needs, as in PostgreSQL), and
resolves operators and functions against ops.py and builtins.py. Aggregates and GROUP BY
expressions are handed to a GroupingHook; subqueries to the planner through a callback, so
that this module does not depend on the planner.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pillbug.sql import datum, unsupported
from pillbug.sql import types as T
from pillbug.sql.sem import builtins, casts, ops, pg_builtins  # noqa: F401  (registers its functions)
from pillbug.sql.sem.expr import (
    And,
    ArrayCtor,
    Call,
    Case,
    Cast,
    Coalesce,
    ColRef,
    Compare,
    Const,
    Expr,
    InList,
    IsDistinct,
    IsNull,
    Not,
    Or,
    OuterRef,
    Param,
    Subquery,
)
from pillbug.sql.types import SQLType
from pillbug.util import errors


class NotCacheable(Exception):
    """A lifted literal sits where only a literal may (ORDER BY 1): plan the original text."""


@dataclass(slots=True)
class ScopeColumn:
    name: str
    type: SQLType
    table: str | None = None  # the table alias that qualifies it
    hidden: bool = False
    table_id: int = 0  # for RowDescription: the source table's OID and column number
    column_id: int = 0
    qualified_only: bool = False  # a JOIN ... USING column of one side: only t.col reaches it


class Scope:
    def __init__(self, columns: list[ScopeColumn], outer: Scope | None = None) -> None:
        self.columns = columns
        self.outer = outer
        self.inner_refs = 0  # how often a subquery's expression resolved a column here

    def resolve(self, names: list[str]) -> tuple[int, int, ScopeColumn]:
        col_name = names[-1]
        table = names[-2] if len(names) >= 2 else None
        scope: Scope | None = self
        depth = 0
        while scope is not None:
            found = -1
            for i, c in enumerate(scope.columns):
                if c.name == col_name and (c.table == table if table is not None else not c.qualified_only):
                    if found >= 0:
                        if table is None and scope.columns[found].table != c.table:
                            raise errors.PgError(errors.AMBIGUOUS_COLUMN,
                                                 f'column reference "{col_name}" is ambiguous')
                        continue
                    found = i
            if found >= 0:
                if depth:
                    scope.inner_refs += 1
                return depth, found, scope.columns[found]
            scope = scope.outer
            depth += 1
        if table is not None:
            if not any(c.table == table for s in _chain(self) for c in s.columns):
                raise errors.PgError(errors.UNDEFINED_TABLE,
                                     f'missing FROM-clause entry for table "{table}"')
            raise errors.undefined_column(".".join(names))
        raise errors.undefined_column(col_name)

    def star(self, table: str | None) -> list[tuple[int, ScopeColumn]]:
        out = [(i, c) for i, c in enumerate(self.columns)
               if not c.hidden and (c.table == table if table is not None else not c.qualified_only)]
        if table is not None and not any(c.table == table for c in self.columns):
            raise errors.PgError(errors.UNDEFINED_TABLE, f'no data source matches pattern: {table}.*')
        return out


def _chain(scope: Scope | None):
    while scope is not None:
        yield scope
        scope = scope.outer


@dataclass(slots=True)
class ParamTypes:
    """What the statement's placeholders are: given types, inferred types, lifted literals."""
    types: list[SQLType | None] = field(default_factory=list)
    lifted: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (kind, text)

    def ensure(self, n: int) -> None:
        while len(self.types) < n:
            self.types.append(None)

    def get(self, i: int) -> SQLType | None:
        self.ensure(i + 1)
        return self.types[i]

    def set(self, i: int, typ: SQLType) -> None:
        self.ensure(i + 1)
        if typ.family == "unknown":
            return
        self.types[i] = typ

    def final_types(self) -> list[SQLType]:
        return [t if t is not None else T.STRING for t in self.types]


class GroupingHook:
    """Maps expressions of an aggregating query onto the aggregation's output row."""

    def lookup(self, node: dict, builder: ExprBuilder) -> Expr | None:
        raise NotImplementedError


def strip_locations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_locations(v) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [strip_locations(x) for x in node]
    return node


def node_key(node: Any) -> str:
    return json.dumps(strip_locations(node), sort_keys=True, default=lambda o: f"<{id(o)}>")


SubqueryPlanner = Callable[[dict, Scope, "BuildContext"], tuple[Callable[[Any], list[tuple]], list[ScopeColumn], bool]]


@dataclass(slots=True)
class BuildContext:
    params: ParamTypes
    plan_subquery: SubqueryPlanner | None = None
    resolve_type_oid: Callable[[str], int] | None = None
    resolve_type: TypeResolver | None = None


# [db.][schema.]name of a user-defined type -> its SQLType, or None when there is no such type
TypeResolver = Callable[[list[str]], SQLType | None]


def type_from_node(type_name: dict, resolve: TypeResolver | None = None) -> SQLType:
    names = [n["String"]["sval"] for n in type_name.get("names", [])]
    name = ".".join(names).lower()
    # built-in names first: pg_catalog comes first on every search path
    if resolve is not None and name not in T.BUILTIN_NAMES and names[0] != "pg_catalog":
        user_type = resolve(names)
        if user_type is not None:
            if type_name.get("typmods"):
                raise errors.syntax_error(f"type {user_type.display} does not take modifiers")
            for _ in type_name.get("arrayBounds", []) or []:
                user_type = T.array_of(user_type)
            return user_type
    mods = []
    for m in type_name.get("typmods", []) or []:
        c = m.get("A_Const", {})
        if "ival" in c:
            mods.append(c["ival"].get("ival", 0))
        else:
            raise errors.syntax_error("type modifiers must be simple constants")
    dims = len(type_name.get("arrayBounds", []) or [])
    if name in ("pg_catalog.interval",) and mods:
        mods = []
    return T.lookup(name, mods, dims)


def is_serial_type(type_name: dict) -> bool:
    names = [n["String"]["sval"] for n in type_name.get("names", [])]
    return ".".join(names).lower() in T.SERIAL_NAMES


_SVF = {
    "SVFOP_CURRENT_DATE": "current_date", "SVFOP_CURRENT_TIMESTAMP": "now",
    "SVFOP_CURRENT_TIMESTAMP_N": "now", "SVFOP_LOCALTIMESTAMP": "localtimestamp",
    "SVFOP_LOCALTIMESTAMP_N": "localtimestamp", "SVFOP_CURRENT_USER": "current_user",
    "SVFOP_CURRENT_ROLE": "current_user", "SVFOP_SESSION_USER": "current_user",
    "SVFOP_USER": "current_user", "SVFOP_CURRENT_CATALOG": "current_database",
    "SVFOP_CURRENT_SCHEMA": "current_schema", "SVFOP_CURRENT_TIME": "now",
    "SVFOP_LOCALTIME": "localtimestamp",
}


class ExprBuilder:
    def __init__(self, ctx: BuildContext, scope: Scope, grouping: GroupingHook | None = None,
                 allow_aggregates: bool = False, clause: str = "") -> None:
        self.ctx = ctx
        self.scope = scope
        self.grouping = grouping
        self.allow_aggregates = allow_aggregates
        self.clause = clause
        # Set-returning functions met in a select list (planner-provided list, else refused): each
        # becomes a column after the scope's, filled by the planner's ProjectSet node.

    # ---- entry points --------------------------------------------------------------------

    def build(self, node: dict) -> Expr:
        if self.grouping is not None:
            hit = self.grouping.lookup(node, self)
            if hit is not None:
                return hit
        (kind, body), = node.items()
        method = getattr(self, "_" + kind, None)
        if method is None:
            raise unsupported.expression(kind)
        return method(body)

    def build_typed(self, node: dict, typ: SQLType) -> Expr:
        return coerce(self.build(node), typ, self.ctx.params)

    def build_predicate(self, node: dict) -> Expr:
        e = self.build(node)
        if e.type.family == "unknown":
            e = coerce(e, T.BOOL, self.ctx.params)
        if e.type.family != "bool":
            where = self.clause or "WHERE"
            raise errors.datatype_mismatch(f"argument of {where} must be type bool, not type {e.type.display}")
        return e

    # ---- leaves --------------------------------------------------------------------------

    def _A_Const(self, body: dict) -> Expr:
        if body.get("isnull"):
            return Const(None, T.UNKNOWN)
        if "ival" in body:
            return Const(body["ival"].get("ival", 0), T.INT8, untyped=True)
        if "fval" in body:
            text = body["fval"]["fval"]
            try:
                v = int(text)
                if -(1 << 63) <= v < (1 << 63):
                    return Const(v, T.INT8, untyped=True)
            except ValueError:
                pass
            return Const(Decimal(text), T.DECIMAL, untyped=True)
        if "sval" in body:
            return Const(body["sval"].get("sval", ""), T.UNKNOWN)
        if "boolval" in body:
            return Const(bool(body["boolval"].get("boolval", False)), T.BOOL)
        if "bsval" in body:
            raw = body["bsval"]["bsval"]
            if raw[:1] in ("x", "X"):
                return Const(bytes.fromhex(raw[1:]), T.BYTES)
            if raw[:1] == "b":  # CockroachDB's b'...' bytes literal (PostgreSQL's B'0101' is upper case)
                return Const(_unescape_bytes(raw[1:]), T.BYTES)
            raise errors.unimplemented("bit string literals are not supported")
        raise errors.internal_error(f"unknown constant {body}")

    def _ParamRef(self, body: dict) -> Expr:
        number = body.get("number", 0)
        if number < 1:
            raise errors.PgError(errors.UNDEFINED_PARAMETER, f"there is no parameter ${number}")
        i = number - 1
        params = self.ctx.params
        lifted = params.lifted.get(i)
        if lifted is not None:
            kind, _ = lifted
            if kind == "i":
                params.set(i, T.INT8)
                return Param(i, T.INT8, "i")
            if kind == "n":
                params.set(i, T.DECIMAL)
                return Param(i, T.DECIMAL, "n")
            typ = params.get(i)
            return Param(i, typ if typ is not None else T.UNKNOWN, "s")
        typ = params.get(i)
        return Param(i, typ if typ is not None else T.UNKNOWN)

    def _ColumnRef(self, body: dict) -> Expr:
        fields = body["fields"]
        names = []
        for f in fields:
            if "A_Star" in f:
                raise errors.syntax_error("* is not allowed here")
            names.append(f["String"]["sval"])
        if len(names) > 4:
            raise errors.syntax_error(f"improper qualified name: {'.'.join(names)}")
        depth, index, col = self.scope.resolve(names)
        if depth == 0:
            return ColRef(index, col.type, col.name)
        return OuterRef(depth, index, col.type, col.name)

    # ---- operators -----------------------------------------------------------------------

    def _A_Expr(self, body: dict) -> Expr:
        kind = body["kind"]
        name = body["name"][-1]["String"]["sval"] if body.get("name") else ""
        lexpr = body.get("lexpr")
        rexpr = body.get("rexpr")
        if kind == "AEXPR_OP":
            if lexpr is None:
                return self.unary(name, self.build(rexpr))
            if "RowExpr" in lexpr and "RowExpr" in rexpr:
                return self._row_compare(name, lexpr["RowExpr"]["args"], rexpr["RowExpr"]["args"])
            return self.binary(name, self.build(lexpr), self.build(rexpr))
        if kind == "AEXPR_IN":
            if "RowExpr" in lexpr:
                items = rexpr["List"]["items"]
                if not all("RowExpr" in x for x in items):
                    raise errors.datatype_mismatch("IN: a row can only be compared with rows")
                any_equal = Or([self._row_compare("=", lexpr["RowExpr"]["args"], x["RowExpr"]["args"])
                                for x in items])
                return Not(any_equal) if name == "<>" else any_equal
            arg = self.build(lexpr)
            items = [self.build(x) for x in rexpr["List"]["items"]]
            return self.in_list(arg, items, negate=(name == "<>"))
        if kind in ("AEXPR_LIKE", "AEXPR_ILIKE"):
            op = name
            return self.binary(op, self.build(lexpr), self._like_pattern(rexpr))
        if kind == "AEXPR_SIMILAR":
            return self._similar(name, lexpr, rexpr)
        if kind in ("AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN", "AEXPR_BETWEEN_SYM", "AEXPR_NOT_BETWEEN_SYM"):
            arg = self.build(lexpr)
            lo_node, hi_node = rexpr["List"]["items"]
            lo, hi = self.build(lo_node), self.build(hi_node)
            between = And([self.compare(">=", arg, lo), self.compare("<=", arg, hi)])
            if "SYM" in kind:
                arg2 = self.build(lexpr)
                between = Or([between, And([self.compare(">=", arg2, self.build(hi_node)),
                                            self.compare("<=", arg2, self.build(lo_node))])])
            return Not(between) if "NOT" in kind else between
        if kind == "AEXPR_DISTINCT" or kind == "AEXPR_NOT_DISTINCT":
            left, right = self.unify(self.build(lexpr), self.build(rexpr))
            return IsDistinct(left, right, negate=kind == "AEXPR_NOT_DISTINCT")
        if kind == "AEXPR_NULLIF":
            left, right = self.unify(self.build(lexpr), self.build(rexpr))
            return Call("nullif", [left, right], left.type,
                        lambda ctx, a, b: None if a is not None and b is not None and a == b else a,
                        strict=False)
        if kind in ("AEXPR_OP_ANY", "AEXPR_OP_ALL"):
            arg = self.build(lexpr)
            arr = self.build(rexpr)
            if arr.type.family == "unknown":
                arr = coerce(arr, T.array_of(arg.type if arg.type.family != "unknown" else T.STRING),
                             self.ctx.params)
            if arr.type.family != "array":
                raise errors.datatype_mismatch("op ANY/ALL requires array on right side")
            elem = arr.type.elem or T.STRING
            arg = coerce(arg, elem, self.ctx.params) if arg.type.family == "unknown" else arg
            cmp = ops_compare_fn(name)
            want_all = kind == "AEXPR_OP_ALL"

            def any_all(ctx: Any, x: Any, values: Any) -> Any:
                if x is None or values is None:
                    return None
                saw_null = False
                for v in values:
                    if v is None:
                        saw_null = True
                        continue
                    hit = cmp(x, v)
                    if want_all and not hit:
                        return False
                    if not want_all and hit:
                        return True
                if saw_null:
                    return None
                return want_all
            return Call("any" if not want_all else "all", [arg, arr], T.BOOL, any_all, strict=False)
        raise unsupported.operator(kind)

    def _row_compare(self, op: str, left: list, right: list) -> Expr:
        """(a, b) op (c, d): element by element, with SQL's NULL rules for each comparison."""
        if len(left) != len(right):
            raise errors.syntax_error(f"unequal number of entries in row expressions: {len(left)} vs {len(right)}")
        pairs = [(self.build(a), self.build(b)) for a, b in zip(left, right)]
        if op in ("=", "<>", "!="):
            eqs: list[Expr] = [self.compare("=", a, b) for a, b in pairs]
            return And(eqs) if op == "=" else Not(And(eqs))
        if op not in ("<", "<=", ">", ">="):
            raise errors.undefined_function(f"unsupported comparison operator: <tuple> {op} <tuple>")
        # (a, b) < (c, d)  is  a < c OR (a = c AND b < d), the last pair taking the operator as given
        strict = op[0]
        out: Expr | None = None
        for i in range(len(pairs) - 1, -1, -1):
            a, b = pairs[i]
            if out is None:
                out = self.compare(op, a, b)
            else:
                out = Or([self.compare(strict, a, b), And([self.compare("=", *self.unify(a, b)), out])])
        assert out is not None
        return out

    def _similar(self, name: str, lexpr: dict, rexpr: dict) -> Expr:
        """x SIMILAR TO pattern: the SQL regular expression translated to Python's, anchored."""
        arg = coerce(self.build(lexpr), T.STRING, self.ctx.params)
        fc = rexpr.get("FuncCall", {})
        pattern_args = [coerce(self.build(a), T.STRING, self.ctx.params) for a in fc.get("args", [])]
        if not pattern_args:
            pattern_args = [coerce(self.build(rexpr), T.STRING, self.ctx.params)]
        negate = name == "!~"

        def similar(ctx: Any, value: Any, pattern: Any, escape: Any = "\\") -> Any:
            if value is None or pattern is None:
                return None
            hit = _similar_regex(pattern, escape).fullmatch(value) is not None
            return hit != negate
        return Call("similar_to", [arg, *pattern_args], T.BOOL, similar, strict=False)

    def _like_pattern(self, node: dict) -> Expr:
        # LIKE ... ESCAPE arrives as like_escape(pattern, escape)
        if "FuncCall" in node:
            fname = node["FuncCall"]["funcname"][-1]["String"]["sval"]
            if fname == "like_escape":
                pattern, escape = (self.build(a) for a in node["FuncCall"]["args"])
                pattern = coerce(pattern, T.STRING, self.ctx.params)
                escape = coerce(escape, T.STRING, self.ctx.params)

                def convert(p: str, e: str) -> str:
                    return _reescape(p, e)
                return Call("like_escape", [pattern, escape], T.STRING, convert)
        return self.build(node)

    def unary(self, op: str, arg: Expr) -> Expr:
        if arg.type.family == "unknown":
            arg = coerce(arg, T.DECIMAL if op == "-" else T.INT8, self.ctx.params)
        if op == "-" and isinstance(arg, Const) and arg.value is not None and arg.type.is_numeric:
            value = -arg.value
            if arg.untyped and isinstance(value, Decimal) and value == -(1 << 63) and value == value.to_integral():
                return Const(int(value), T.INT8, untyped=True)  # -9223372036854775808 is an INT
            return Const(value, arg.type, arg.untyped)
        typ, impl = ops.resolve_unary(op, arg.type)
        return Call(op, [arg], typ, impl)

    def binary(self, op: str, left: Expr, right: Expr) -> Expr:
        if op in ("=", "<>", "!=", "<", "<=", ">", ">="):
            return self.compare(op, left, right)
        left, right = self._arith_unify(op, left, right)
        typ, impl = ops.resolve_binary(op, left.type, right.type)
        result = Call(op, [left, right], typ, impl)
        if isinstance(left, Const) and isinstance(right, Const) and left.untyped and right.untyped \
                and typ.is_numeric and left.value is not None and right.value is not None:
            return Const(impl(left.value, right.value), typ, untyped=True)
        return result

    def _arith_unify(self, op: str, left: Expr, right: Expr) -> tuple[Expr, Expr]:
        lf, rf = left.type.family, right.type.family
        params = self.ctx.params
        if lf == "unknown" and rf == "unknown":
            return coerce(left, T.STRING, params), coerce(right, T.STRING, params)
        if op == "||":
            if lf == "unknown":
                target = right.type if rf in ("jsonb", "bytes") else (
                    right.type.elem if rf == "array" else T.STRING)
                return coerce(left, target or T.STRING, params), right
            if rf == "unknown":
                target = left.type if lf in ("jsonb", "bytes") else (
                    left.type.elem if lf == "array" else T.STRING)
                return left, coerce(right, target or T.STRING, params)
            return left, right
        if op in ("->", "->>", "#>", "#>>", "?", "?|", "?&", "-") and lf == "jsonb":
            if rf == "unknown":
                if op in ("#>", "#>>", "?|", "?&"):
                    return left, coerce(right, T.STRING_ARRAY, params)
                if op == "-" or isinstance(right, Const):
                    return left, coerce(right, T.STRING, params)
                return left, coerce(right, T.STRING, params)
            return left, right
        if op in ("@>", "<@") and (lf == "jsonb" or rf == "jsonb"):
            if lf == "unknown":
                return coerce(left, T.JSONB, params), right
            if rf == "unknown":
                return left, coerce(right, T.JSONB, params)
            return left, right
        if op in ("~~", "~~*", "!~~", "!~~*", "~", "~*", "!~", "!~*", "^@"):
            return coerce(left, T.STRING, params), coerce(right, T.STRING, params)
        if lf == "unknown":
            target = right.type
            if rf in ("timestamp", "timestamptz", "date") and op == "-":
                target = T.INTERVAL if not isinstance(left, Param) else right.type
            if rf == "interval" and op in ("+",):
                target = T.TIMESTAMPTZ
            return coerce(left, target, params), right
        if rf == "unknown":
            target = left.type
            if lf in ("timestamp", "timestamptz", "date") and op in ("+", "-"):
                target = T.INTERVAL
            if lf == "interval" and op in ("*", "/"):
                target = T.FLOAT8
            return left, coerce(right, target, params)
        left, right = _adapt_untyped_numeric(left, right, params)
        return left, right

    def compare(self, op: str, left: Expr, right: Expr) -> Expr:
        left, right = self.unify(left, right)
        if not ops.comparable(left.type, right.type):
            raise errors.undefined_function(
                f"unsupported comparison operator: <{left.type.display}> {op} "
                f"<{right.type.display}>")
        la, ra = ops.comparison_adapter(left.type, right.type)
        if la is not None:
            left = Call("adapt", [left], right.type, la)
        if ra is not None:
            right = Call("adapt", [right], left.type, ra)
        if op == "!=":
            op = "<>"
        return Compare(op, left, right)

    def unify(self, left: Expr, right: Expr) -> tuple[Expr, Expr]:
        """Coerce two operands of a comparison to a common type."""
        params = self.ctx.params
        lf, rf = left.type.family, right.type.family
        if lf == "unknown" and rf == "unknown":
            return coerce(left, T.STRING, params), coerce(right, T.STRING, params)
        if lf == "unknown":
            return coerce(left, right.type, params), right
        if rf == "unknown":
            return left, coerce(right, left.type, params)
        return _adapt_untyped_numeric(left, right, params)

    def in_list(self, arg: Expr, items: list[Expr], negate: bool) -> Expr:
        params = self.ctx.params
        if arg.type.family == "unknown":
            known = next((i.type for i in items if i.type.family != "unknown"), T.STRING)
            arg = coerce(arg, known, params)
        out = []
        for item in items:
            if item.type.family == "unknown":
                item = coerce(item, arg.type, params)
            elif not ops.comparable(arg.type, item.type):
                raise errors.undefined_function(
                    f"unsupported comparison operator: <{arg.type.display}> IN "
                    f"<tuple{{{item.type.display}}}>")
            else:
                _, item = _adapt_untyped_numeric(arg, item, params)
            out.append(item)
        return InList(arg, out, negate)

    # ---- boolean and null tests ----------------------------------------------------------

    def _BoolExpr(self, body: dict) -> Expr:
        op = body["boolop"]
        args = [self.build_predicate(a) for a in body["args"]]
        if op == "AND_EXPR":
            flat: list[Expr] = []
            for a in args:
                flat.extend(a.args if isinstance(a, And) else [a])
            return And(flat)
        if op == "OR_EXPR":
            return Or(args)
        return Not(args[0])

    def _NullTest(self, body: dict) -> Expr:
        arg = self.build(body["arg"])
        return IsNull(arg, negate=body["nulltesttype"] == "IS_NOT_NULL")

    def _BooleanTest(self, body: dict) -> Expr:
        arg = coerce(self.build(body["arg"]), T.BOOL, self.ctx.params)
        test = body["booltesttype"]
        want = {"IS_TRUE": True, "IS_NOT_TRUE": True, "IS_FALSE": False, "IS_NOT_FALSE": False}.get(test)
        if test in ("IS_UNKNOWN", "IS_NOT_UNKNOWN"):
            return IsNull(arg, negate=test == "IS_NOT_UNKNOWN")
        negate = "NOT" in test
        return Call(test.lower(), [arg], T.BOOL,
                    lambda ctx, v: (v is want) != negate, strict=False)

    # ---- casts, functions, conditionals --------------------------------------------------

    def _TypeCast(self, body: dict) -> Expr:
        typ = type_from_node(body["typeName"], self.ctx.resolve_type)
        arg_node = body["arg"]
        arg = self.build(arg_node)
        return cast_expr(arg, typ, self.ctx.params)

    def _CollateClause(self, body: dict) -> Expr:
        return self.build(body["arg"])

    def _SQLValueFunction(self, body: dict) -> Expr:
        name = _SVF.get(body["op"])
        if name is None:
            raise unsupported.value_function(body["op"])
        return self.call(name, [])

    def _FuncCall(self, body: dict) -> Expr:
        names = [n["String"]["sval"] for n in body["funcname"]]
        name = names[-1].lower()
        if len(names) > 1 and names[0] not in ("pg_catalog", "public", "crdb_internal", "information_schema"):
            raise errors.undefined_function(f"unknown function: {'.'.join(names)}()")
        if len(names) > 1 and names[0] == "crdb_internal":
            name = "crdb_internal." + name
        if body.get("over"):
            raise errors.PgError(errors.WINDOWING_ERROR, f"window functions are not allowed in {self.clause or 'this context'}")
        if name in builtins.AGGREGATES or body.get("agg_star"):
            raise errors.PgError(errors.GROUPING_ERROR,
                                 f"aggregate functions are not allowed in {self.clause or 'this context'}")
        args = [self.build(a) for a in body.get("args", [])]
        if name in ("enum_first", "enum_last", "enum_range") and args:
            return _enum_function(name, args, self.ctx.params)
        if name == "pg_typeof" and len(args) == 1:
            return Const(args[0].type.pg_name if args[0].type.family != "unknown" else "unknown", T.STRING)
        if name in ("concat", "concat_ws"):
            return self._concat(name, args)
        if name in ("coalesce", "ifnull"):
            return self._coalesce(args)
        if name in ("greatest", "least"):
            return self._minmax(name == "greatest", args)
        if name == "nullif" and len(args) == 2:
            left, right = self.unify(*args)
            return Call("nullif", [left, right], left.type,
                        lambda ctx, a, b: None if a is not None and b is not None and a == b else a,
                        strict=False)
        if name == "iferror":
            raise errors.unimplemented("iferror is not supported")
        if name == "if" and len(args) == 3:
            cond = coerce(args[0], T.BOOL, self.ctx.params)
            a, b = self.unify(args[1], args[2])
            return Case([(cond, a)], b, a.type)
        return self.call(name, args)

    def call(self, name: str, args: list[Expr]) -> Expr:
        fdef = builtins.FUNCTIONS.get(name)
        if fdef is None:
            raise errors.undefined_function(f"unknown function: {name}()")
        if fdef.is_srf:
            raise errors.unimplemented(
                f"set-returning function {name}() is only supported in the FROM clause and at the top of "
                f"the select list")
        overload, coerced = resolve_overload(fdef, args, self.ctx.params)
        typ = overload.result_type([a.type for a in coerced])
        impl = overload.impl
        if overload.needs_ctx:
            if overload.strict:
                inner = impl

                def with_ctx(ctx: Any, *vals: Any) -> Any:
                    if None in vals:
                        return None
                    return inner(ctx, *vals)
                return Call(name, coerced, typ, with_ctx, strict=False, volatile=overload.volatile)
            return Call(name, coerced, typ, impl, strict=False, volatile=overload.volatile)
        if not overload.strict:
            inner2 = impl
            return Call(name, coerced, typ, lambda ctx, *vals: inner2(*vals), strict=False,
                        volatile=overload.volatile)
        return Call(name, coerced, typ, impl, volatile=overload.volatile)

    def _concat(self, name: str, args: list[Expr]) -> Expr:
        params = self.ctx.params
        args = [coerce(a, T.STRING, params) if a.type.family == "unknown" else a for a in args]
        fmts = [_texter(a.type) for a in args]
        if name == "concat":
            def concat(ctx: Any, *vals: Any) -> str:
                return "".join(f(v) for f, v in zip(fmts, vals) if v is not None)
            return Call(name, args, T.STRING, concat, strict=False)

        def concat_ws(ctx: Any, sep: Any, *vals: Any) -> Any:
            if sep is None:
                return None
            return sep.join(f(v) for f, v in zip(fmts[1:], vals) if v is not None)
        return Call(name, args, T.STRING, concat_ws, strict=False)

    def _coalesce(self, args: list[Expr]) -> Expr:
        typ = _common_type(args)
        return Coalesce([coerce_to_common(a, typ, self.ctx.params) for a in args], typ)

    def _CoalesceExpr(self, body: dict) -> Expr:
        return self._coalesce([self.build(a) for a in body["args"]])

    def _minmax(self, greatest: bool, args: list[Expr]) -> Expr:
        typ = _common_type(args)
        args = [coerce_to_common(a, typ, self.ctx.params) for a in args]

        def pick(ctx: Any, *vals: Any) -> Any:
            present = [v for v in vals if v is not None]
            if not present:
                return None
            return max(present) if greatest else min(present)
        return Call("greatest" if greatest else "least", args, typ, pick, strict=False)

    def _MinMaxExpr(self, body: dict) -> Expr:
        return self._minmax(body["op"] == "IS_GREATEST", [self.build(a) for a in body["args"]])

    def _CaseExpr(self, body: dict) -> Expr:
        subject = self.build(body["arg"]) if body.get("arg") else None
        whens = []
        results = []
        for w in body["args"]:
            cw = w["CaseWhen"]
            if subject is not None:
                cond = self.compare("=", subject, self.build(cw["expr"]))
            else:
                cond = self.build_predicate(cw["expr"])
            whens.append(cond)
            results.append(self.build(cw["result"]))
        default = self.build(body["defresult"]) if body.get("defresult") else None
        typ = _common_type(results + ([default] if default is not None else []))
        results = [coerce_to_common(r, typ, self.ctx.params) for r in results]
        if default is not None:
            default = coerce_to_common(default, typ, self.ctx.params)
        return Case(list(zip(whens, results)), default, typ)

    def _A_ArrayExpr(self, body: dict) -> Expr:
        items = [self.build(e) for e in body.get("elements", [])]
        elem = _common_type(items) if items else T.STRING
        items = [coerce_to_common(i, elem, self.ctx.params) for i in items]
        return ArrayCtor(items, T.array_of(elem))

    def _A_Indirection(self, body: dict) -> Expr:
        arg = self.build(body["arg"])
        for ind in body["indirection"]:
            if "A_Indices" in ind:
                idx = ind["A_Indices"]
                if idx.get("is_slice"):
                    raise errors.unimplemented("array slices are not supported")
                sub = coerce(self.build(idx["uidx"]), T.INT8, self.ctx.params)
                if arg.type.family == "jsonb":
                    arg = Call("->", [arg, sub], T.JSONB, ops.json_fetch)
                    continue
                if arg.type.family != "array":
                    raise errors.datatype_mismatch(f"cannot subscript type {arg.type.display}")
                elem = arg.type.elem or T.STRING
                arg = Call("subscript", [arg, sub], elem,
                           lambda a, i: a[i - 1] if 1 <= i <= len(a) else None)
            elif "String" in ind and arg.type.fields:
                arg = _field(arg, ind["String"]["sval"])
            else:
                raise errors.unimplemented("field selection is not supported")
        return arg

    def _SubLink(self, body: dict) -> Expr:
        kind = body["subLinkType"]
        if self.ctx.plan_subquery is None:
            raise errors.unimplemented("subqueries are not supported here")
        run, columns, correlated = self.ctx.plan_subquery(body["subselect"], self.scope, self.ctx)
        if kind == "EXISTS_SUBLINK":
            return Subquery("exists", run, T.BOOL, correlated)
        if kind in ("EXPR_SUBLINK", "ARRAY_SUBLINK"):
            if len(columns) != 1:
                raise errors.syntax_error(f"subquery must return only one column, found {len(columns)}")
            if kind == "ARRAY_SUBLINK":
                return Subquery("array", run, T.array_of(columns[0].type), correlated)
            return Subquery("scalar", run, columns[0].type, correlated)
        if kind in ("ANY_SUBLINK", "ALL_SUBLINK"):
            if len(columns) != 1:
                raise errors.syntax_error("subquery has too many columns")
            arg = self.build(body["testexpr"])
            if arg.type.family == "unknown":
                arg = coerce(arg, columns[0].type, self.ctx.params)
            elif not ops.comparable(arg.type, columns[0].type):
                raise errors.undefined_function(
                    f"unsupported comparison operator: <{arg.type.display}> IN "
                    f"<{columns[0].type.display}>")
            op = body["operName"][-1]["String"]["sval"] if body.get("operName") else "="
            return Subquery("any" if kind == "ANY_SUBLINK" else "all", run, T.BOOL, correlated,
                            arg=arg, op=op)
        raise unsupported.sublink(kind)

    def _RowExpr(self, body: dict) -> Expr:
        raise unsupported.expression("RowExpr")

    def _GroupingFunc(self, body: dict) -> Expr:
        raise unsupported.expression("GroupingFunc")


def ops_compare_fn(op: str) -> Callable[[Any, Any], bool]:
    import operator as o
    return {"=": o.eq, "<>": o.ne, "!=": o.ne, "<": o.lt, "<=": o.le, ">": o.gt, ">=": o.ge}[op]


def _reescape(pattern: str, escape: str) -> str:
    """Rewrite a LIKE pattern with a custom escape character to use backslash."""
    if escape == "\\":
        return pattern
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape and c == escape and i + 1 < len(pattern):
            out.append("\\" + pattern[i + 1])
            i += 2
            continue
        if c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
        i += 1
    return "".join(out)


_BYTE_ESCAPES = {"n": 10, "t": 9, "r": 13, "b": 8, "f": 12, "a": 7, "v": 11, "\\": 92, "'": 39, '"': 34}


def _unescape_bytes(text: str) -> bytes:
    """The contents of b'...': characters as UTF-8, with \\xHH, \\ooo and C escapes."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out += c.encode()
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in "xX" and i + 3 < len(text) + 1 and all(ch in "0123456789abcdefABCDEF" for ch in text[i + 2:i + 4]) \
                and len(text[i + 2:i + 4]) == 2:
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif nxt in "01234567" and len(text[i + 1:i + 4]) == 3 and all(ch in "01234567" for ch in text[i + 1:i + 4]):
            out.append(int(text[i + 1:i + 4], 8) & 0xFF)
            i += 4
        elif nxt in _BYTE_ESCAPES:
            out.append(_BYTE_ESCAPES[nxt])
            i += 2
        else:
            raise errors.syntax_error(f"invalid escape sequence in bytes literal: \\{nxt}")
    return bytes(out)


@functools.lru_cache(maxsize=256)
def _similar_regex(pattern: str, escape: str | None) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape and c == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c in "|*+?{}()[]":
            out.append(c)
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise errors.PgError(errors.INVALID_REGULAR_EXPRESSION, f"invalid regular expression: {exc}") from None


def _texter(typ: SQLType) -> Callable[[Any], str]:
    if typ.family == "string":
        return lambda v: v
    if typ.family == "bool":
        return lambda v: "true" if v else "false"
    return lambda v: datum.format_text(v, typ)


def _common_type(exprs: list[Expr]) -> SQLType:
    known = [e.type for e in exprs if e.type.family != "unknown"]
    if not known:
        return T.STRING
    typ = known[0]
    for t in known[1:]:
        if t.family == typ.family:
            if t.family == "int":
                typ = T.INT8
            continue
        if t.is_numeric and typ.is_numeric:
            typ = T.common_numeric(typ, t)
        elif {t.family, typ.family} <= {"timestamp", "timestamptz", "date"}:
            typ = T.TIMESTAMPTZ if "timestamptz" in (t.family, typ.family) else T.TIMESTAMP
        else:
            raise errors.datatype_mismatch(
                f"incompatible value type: expected {typ.display}, found type: {t.display}")
    return typ


def coerce_to_common(e: Expr, typ: SQLType, params: ParamTypes) -> Expr:
    if e.type.family == "unknown" or (isinstance(e, Const) and e.untyped):
        return coerce(e, typ, params)
    if e.type.family != typ.family:
        return Cast(e, typ, casts.cast_fn(e.type, typ))
    return e


def _adapt_untyped_numeric(left: Expr, right: Expr, params: ParamTypes) -> tuple[Expr, Expr]:
    """A numeric literal takes the type of the typed numeric operand it meets, if lossless."""
    def adapt(lit: Expr, other: Expr) -> Expr:
        if other.type.family not in ("int", "float", "decimal"):
            return lit
        if lit.type.family == other.type.family:
            return lit
        if lit.type.family == "int" or other.type.family == "float":
            # the family's unconstrained type: 2 next to a DECIMAL(10,2) stays 2, not 2.00
            return coerce(lit, _BARE_NUMERIC[other.type.family], params)
        return lit
    if _is_untyped(left) and not _is_untyped(right):
        return adapt(left, right), right
    if _is_untyped(right) and not _is_untyped(left):
        return left, adapt(right, left)
    return left, right


_BARE_NUMERIC = {"int": T.INT8, "decimal": T.DECIMAL, "float": T.FLOAT8}


def _is_untyped(e: Expr) -> bool:
    return (isinstance(e, Const) and e.untyped) or (isinstance(e, Param) and e.lifted_kind in ("i", "n"))


def coerce(e: Expr, typ: SQLType, params: ParamTypes) -> Expr:
    """Give an expression of unknown (or adaptable) type the type its context requires."""
    fam = e.type.family
    tfam = typ.family
    if tfam in ("unknown", "any"):
        return e
    if isinstance(e, Param):
        if fam == "unknown" or e.lifted_kind == "s":
            params.set(e.index, typ)
            return Param(e.index, typ, e.lifted_kind)
        if e.lifted_kind in ("i", "n") and tfam in ("int", "float", "decimal", "oid"):
            if e.lifted_kind == "n" and tfam in ("int", "oid"):
                return Cast(e, typ, casts.cast_fn(T.DECIMAL, typ))
            params.set(e.index, typ)
            return Param(e.index, typ, e.lifted_kind)
    if isinstance(e, Const):
        if e.value is None:
            return Const(None, typ)
        if fam == "unknown":
            if tfam == "oid":  # a name to resolve against the catalog at run time
                return Cast(e, typ, casts.cast_fn(T.STRING, typ))
            return Const(casts.cast_fn(T.UNKNOWN, typ)(e.value, None), typ)
        if e.untyped and e.type.is_numeric and typ.is_numeric and fam != tfam:
            return Const(casts.cast_fn(e.type, typ)(e.value, None), typ)
    if isinstance(e, ArrayCtor) and tfam == "array" and typ.elem is not None and typ.elem.family == "enum" \
            and all(_is_string_literal(i) for i in e.items):
        # ARRAY['a', 'b'] where a mood[] is wanted: its literals are labels, as in CockroachDB
        return ArrayCtor([coerce(_as_unknown(i), typ.elem, params) for i in e.items], typ)
    if fam == tfam and (fam != "enum" or e.type.oid == typ.oid):
        return e
    if fam == "unknown":
        return Cast(e, typ, casts.cast_fn(T.STRING, typ))
    if e.type.is_numeric and typ.is_numeric:
        return Cast(e, typ, casts.cast_fn(e.type, typ))
    timeish = ("date", "timestamp", "timestamptz")
    if fam in timeish and tfam in timeish:
        return Cast(e, typ, casts.cast_fn(e.type, typ))
    if fam in ("int", "oid") and tfam in ("int", "oid"):
        return e
    raise errors.datatype_mismatch(
        f"expected {typ.display} but found {e.type.display}")


def _enum_function(name: str, args: list[Expr], params: ParamTypes) -> Expr:
    """enum_first/enum_last/enum_range: they answer from their argument's type, not its value
    (enum_range(NULL::mood) is every member of mood)."""
    if len(args) == 2 and name == "enum_range":
        known = args[0].type if args[0].type.family != "unknown" else args[1].type
        args = [coerce(a, known, params) for a in args]
    typ = args[0].type
    if typ.enum is None or len(args) > (2 if name == "enum_range" else 1) or \
            any(a.type.oid != typ.oid for a in args):
        sig = ", ".join(a.type.display for a in args)
        raise errors.undefined_function(f"unknown signature: {name}({sig})")
    values = list(typ.enum.values)
    if name == "enum_first":
        return Const(values[0] if values else None, typ)
    if name == "enum_last":
        return Const(values[-1] if values else None, typ)
    if len(args) == 1:
        return Const(values, T.array_of(typ))

    def enum_range(lo: Any, hi: Any) -> list:
        return [v for v in values if (lo is None or v >= lo) and (hi is None or v <= hi)]
    return Call(name, args, T.array_of(typ), enum_range, strict=False)


def _is_string_literal(e: Expr) -> bool:
    return (isinstance(e, Const) and e.type.family == "string") or (isinstance(e, Param) and e.lifted_kind == "s")


def _as_unknown(e: Expr) -> Expr:
    return Const(e.value, T.UNKNOWN) if isinstance(e, Const) else e


def cast_expr(arg: Expr, typ: SQLType, params: ParamTypes) -> Expr:
    """An explicit CAST / ::."""
    if isinstance(arg, Param) and typ.family == "oid" and (arg.type.family == "unknown" or arg.lifted_kind == "s"):
        params.set(arg.index, T.STRING)  # a name ('t'::REGCLASS), resolved against the catalog when run
        return Cast(Param(arg.index, T.STRING), typ, casts.cast_fn(T.STRING, typ))
    if isinstance(arg, Param) and (arg.type.family == "unknown" or arg.lifted_kind == "s"):
        if typ.width or typ.precision:
            # the value arrives as the unconstrained type; the cast then truncates or rounds it
            # ('abc'::CHAR(2) is 'ab'), where storing it would have been an error
            base = T.STRING if typ.family == "string" else T.DECIMAL if typ.family == "decimal" else typ
            params.set(arg.index, base)
            return Cast(Param(arg.index, base), typ, casts.cast_fn(base, typ))
        params.set(arg.index, typ)
        return Param(arg.index, typ)  # typed now: no longer adapts to its context
    impl = casts.cast_fn(arg.type, typ)
    if isinstance(arg, Const) and typ.family != "oid":
        if arg.value is None:
            return Const(None, typ)
        return Const(impl(arg.value, None), typ)
    return Cast(arg, typ, impl)


_FAMILY_ORDER = {"int": 0, "decimal": 1, "float": 2}


def _field(record: Expr, name: str) -> Expr:
    """(record).name: one field of a record value."""
    for i, (field_name, field_type) in enumerate(record.type.fields):
        if field_name == name:
            return Call(f"field {name}", [record], field_type, lambda r, i=i: r[i])
    raise errors.undefined_column(name)


def resolve_overload(fdef: builtins.FunctionDef, args: list[Expr],
                     params: ParamTypes) -> tuple[builtins.Overload, list[Expr]]:
    best: tuple[int, builtins.Overload] | None = None
    for ov in fdef.overloads:
        score = _match(ov, args)
        if score is not None and (best is None or score < best[0]):
            best = (score, ov)
    if best is None:
        sig = ", ".join(a.type.display for a in args)
        raise errors.undefined_function(f"unknown signature: {fdef.name}({sig})")
    ov = best[1]
    coerced = []
    for i, a in enumerate(args):
        fam = ov.args[min(i, len(ov.args) - 1)] if ov.args else "any"
        coerced.append(_coerce_arg(a, fam, params))
    return ov, coerced


def _family_type(fam: str) -> SQLType:
    return {"int": T.INT8, "float": T.FLOAT8, "decimal": T.DECIMAL, "string": T.STRING,
            "bool": T.BOOL, "bytes": T.BYTES, "date": T.DATE, "timestamp": T.TIMESTAMP,
            "timestamptz": T.TIMESTAMPTZ, "interval": T.INTERVAL, "uuid": T.UUID,
            "jsonb": T.JSONB, "oid": T.OID, "time": T.TIME, "string_array": T.STRING_ARRAY,
            "array": T.STRING_ARRAY}.get(fam, T.STRING)


def _coerce_arg(a: Expr, fam: str, params: ParamTypes) -> Expr:
    if fam == "any":
        return coerce(a, T.STRING, params) if a.type.family == "unknown" else a
    target_family = "array" if fam == "string_array" else fam
    if a.type.family == target_family:
        if fam == "string_array" and a.type.family == "array":
            return a
        return a
    if a.type.family == "array" and fam == "array":
        return a
    return coerce(a, _family_type(fam), params)


def _match(ov: builtins.Overload, args: list[Expr]) -> int | None:
    n = len(ov.args)
    if ov.variadic:
        if len(args) < n - 1 or (n == 0 and args):
            return None
    elif len(args) != n:
        return None
    score = 0
    for i, a in enumerate(args):
        fam = ov.args[min(i, n - 1)]
        af = a.type.family
        if fam == "any":
            score += 1
            continue
        want = "array" if fam == "string_array" else fam
        if af == want:
            continue
        if af == "unknown":
            score += 2
            continue
        if af in _FAMILY_ORDER and want in _FAMILY_ORDER:
            # only widening: an INT argument may feed a DECIMAL or FLOAT overload, never the
            # reverse (mod(10.5, 3) is a DECIMAL mod); an untyped constant widens more cheaply
            if _FAMILY_ORDER[af] < _FAMILY_ORDER[want]:
                score += (2 if _is_untyped(a) else 3) + _FAMILY_ORDER[want] - _FAMILY_ORDER[af]
                continue
            if _is_untyped(a) and af == "decimal" and want == "float":
                score += 3
                continue
            return None
        if af in ("date", "timestamp") and want in ("timestamp", "timestamptz"):
            score += 4
            continue
        if af == "timestamptz" and want == "timestamp":
            score += 6
            continue
        if af == "oid" and want == "int" or af == "int" and want == "oid":
            score += 3
            continue
        return None
    return score
