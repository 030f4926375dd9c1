"""Window functions in a SELECT: f(...) OVER (...) in the target list or ORDER BY.

extract() takes the window calls out of a SELECT body: each becomes a reference to a hidden
column ("\\x00win0", ...) in a rewritten copy of the body (the parsed statement itself is never
changed: prepared statements are planned from it again). plan() then builds the exec Window
operator that computes those columns over the rows of the FROM/WHERE (or of the GROUP BY, whose
results window functions may read), with the expressions built by the caller's builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.exec import nodes as N
from pillbug.sql.exec.window import NAVIGATION, RANKING, Frame, Window, WindowFunc, WindowSpec
from pillbug.sql.sem import builtins
from pillbug.sql.sem.build import ExprBuilder, Scope, ScopeColumn, coerce, node_key
from pillbug.util import errors

# PostgreSQL's frameOptions bits (nodes/parsenodes.h)
_NONDEFAULT, _RANGE, _ROWS, _GROUPS, _BETWEEN = 0x1, 0x2, 0x4, 0x8, 0x10
_START_UNBOUNDED, _START_CURRENT, _START_PRECEDING, _START_FOLLOWING = 0x20, 0x200, 0x800, 0x2000
_END_UNBOUNDED, _END_CURRENT, _END_PRECEDING, _END_FOLLOWING = 0x100, 0x400, 0x1000, 0x4000
_EXCLUDE = 0x8000 | 0x10000 | 0x20000

_INT_RESULT = frozenset({"row_number", "rank", "dense_rank", "ntile"})


@dataclass(slots=True)
class WindowCall:
    name: str  # the hidden column that holds its value
    call: dict  # the FuncCall node
    over: dict  # the window definition, named windows resolved


def is_window_call(node: Any) -> bool:
    return isinstance(node, dict) and "FuncCall" in node and bool(node["FuncCall"].get("over"))


def has_windows(node: Any) -> bool:
    if isinstance(node, dict):
        if is_window_call(node):
            return True
        return any(has_windows(v) for k, v in node.items() if k != "SubLink")
    if isinstance(node, list):
        return any(has_windows(x) for x in node)
    return False


def extract(body: dict) -> tuple[dict, list[WindowCall]]:
    """The body with its window calls replaced by column references, and the calls."""
    named = {w["WindowDef"]["name"]: w["WindowDef"] for w in body.get("windowClause") or []}
    calls: list[WindowCall] = []
    by_key: dict[str, str] = {}

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(x) for x in node]
        if not isinstance(node, dict):
            return node
        if is_window_call(node):
            key = node_key(node)
            name = by_key.get(key)
            if name is None:
                name = by_key[key] = f"\x00win{len(calls)}"
                calls.append(WindowCall(name, node["FuncCall"], _resolve(node["FuncCall"]["over"], named)))
            return {"ColumnRef": {"fields": [{"String": {"sval": name}}]}}
        if "SubLink" in node:
            return node
        return {k: rewrite(v) for k, v in node.items()}

    out = dict(body)
    for clause in ("targetList", "sortClause"):
        if body.get(clause):
            out[clause] = rewrite(body[clause])
    if out.get("targetList"):
        # a target that was a window call keeps the function's name as its column name
        for old, new in zip(body["targetList"], out["targetList"]):
            rt = new["ResTarget"]
            if "name" not in rt and is_window_call(old["ResTarget"]["val"]):
                new["ResTarget"] = {**rt, "name": old["ResTarget"]["val"]["FuncCall"]["funcname"][-1]["String"]["sval"]}
    return out, calls


def _resolve(over: dict, named: dict[str, dict]) -> dict:
    base_name = over.get("name") if not over.get("partitionClause") and not over.get("orderClause") \
        and "refname" not in over else over.get("refname")
    if base_name is None:
        return over
    base = named.get(base_name)
    if base is None:
        raise errors.undefined_object(f'window "{base_name}" does not exist')
    merged = dict(base)
    if over.get("orderClause"):
        merged["orderClause"] = over["orderClause"]
    if over.get("frameOptions", _RANGE | _START_UNBOUNDED | _END_CURRENT | _BETWEEN) & _NONDEFAULT:
        for k in ("frameOptions", "startOffset", "endOffset"):
            if k in over:
                merged[k] = over[k]
    return merged


def result_types(calls: list[WindowCall], builder: ExprBuilder) -> dict[str, T.SQLType]:
    """The type of each call's column, to plan the rest of the query before the calls."""
    return {c.name: _function(c, builder)[1] for c in calls}


def plan(calls: list[WindowCall], node: N.Node, scope: Scope, builder: ExprBuilder) -> tuple[N.Node, Scope]:
    """The Window operator over node, and the scope of its rows (node's plus the hidden columns)."""
    specs: dict[str, WindowSpec] = {}
    columns = list(scope.columns)
    for slot, c in enumerate(calls):
        over = c.over
        key = node_key({k: over.get(k) for k in ("partitionClause", "orderClause", "frameOptions",
                                                  "startOffset", "endOffset")})
        spec = specs.get(key)
        if spec is None:
            spec = specs[key] = _spec(over, builder)
        func, typ = _function(c, builder)
        spec.funcs.append((slot, func))
        columns.append(ScopeColumn(c.name, typ, hidden=True))
    window = Window(node, columns, list(specs.values()), len(calls))
    return window, Scope(columns, scope.outer)


def _spec(over: dict, builder: ExprBuilder) -> WindowSpec:
    partition = [builder.build(p).compile() for p in over.get("partitionClause") or []]
    order = []
    for item in over.get("orderClause") or []:
        sb = item["SortBy"]
        desc = sb.get("sortby_dir") == "SORTBY_DESC"
        nulls = sb.get("sortby_nulls", "SORTBY_NULLS_DEFAULT")
        order.append(N.SortKey(builder.build(sb["node"]).compile(), desc,
                               None if nulls == "SORTBY_NULLS_DEFAULT" else nulls == "SORTBY_NULLS_FIRST"))
    return WindowSpec(partition, order, _frame(over, builder))


def _frame(over: dict, builder: ExprBuilder) -> Frame:
    opts = over.get("frameOptions", 0)
    if not opts & _NONDEFAULT:
        return Frame()
    if opts & (_GROUPS | _EXCLUDE):
        raise errors.unimplemented("GROUPS frames and frame exclusion are not supported")
    frame = Frame(mode="rows" if opts & _ROWS else "range")
    frame.start = ("unbounded" if opts & _START_UNBOUNDED else "current" if opts & _START_CURRENT
                   else "preceding" if opts & _START_PRECEDING else "following")
    if opts & _BETWEEN:
        frame.end = ("unbounded" if opts & _END_UNBOUNDED else "current" if opts & _END_CURRENT
                     else "preceding" if opts & _END_PRECEDING else "following")
    if frame.mode == "range" and (frame.start in ("preceding", "following") or frame.end in ("preceding", "following")):
        raise errors.unimplemented("RANGE frames with offsets are not supported")
    if over.get("startOffset"):
        frame.start_offset = coerce(builder.build(over["startOffset"]), T.INT8, builder.ctx.params).compile()
    if over.get("endOffset"):
        frame.end_offset = coerce(builder.build(over["endOffset"]), T.INT8, builder.ctx.params).compile()
    return frame


def _function(c: WindowCall, builder: ExprBuilder) -> tuple[WindowFunc, T.SQLType]:
    body = c.call
    name = body["funcname"][-1]["String"]["sval"].lower()
    if body.get("agg_distinct") or body.get("agg_filter") or body.get("agg_order"):
        raise errors.unimplemented(f"DISTINCT, FILTER and ORDER BY are not supported in window {name}()")
    star = bool(body.get("agg_star"))
    params = builder.ctx.params
    args = [builder.build(a) for a in body.get("args", [])]
    if name in RANKING:
        if len(args) != (1 if name == "ntile" else 0):
            raise errors.undefined_function(f"unknown signature: {name}()")
        args = [coerce(a, T.INT8, params) for a in args]
        typ = T.INT8 if name in _INT_RESULT else T.FLOAT8
        return WindowFunc(name, [a.compile() for a in args]), typ
    if name in NAVIGATION:
        if not args or len(args) > 3:
            raise errors.undefined_function(f"unknown signature: {name}()")
        value = coerce(args[0], T.STRING, params) if args[0].type.family == "unknown" else args[0]
        rest = [coerce(a, T.INT8, params) for a in args[1:2]] + [coerce(a, value.type, params) for a in args[2:3]]
        return WindowFunc(name, [value.compile()] + [a.compile() for a in rest]), value.type
    agg = builtins.AGGREGATES.get(name)
    if agg is None:
        raise errors.undefined_function(f"unknown window function: {name}()")
    if star:
        if name != "count":
            raise errors.syntax_error(f"{name}(*) is not valid")
        return WindowFunc(name, [], builtins.CountStar, star=True), T.INT8
    args = [coerce(a, T.STRING, params) if a.type.family == "unknown" else a for a in args]
    if len(args) not in agg.arity:
        raise errors.undefined_function(f"unknown signature: {name}({', '.join(a.type.display for a in args)})")
    types = [a.type for a in args]
    return WindowFunc(name, [a.compile() for a in args], agg.factory(types)), agg.result_type(types)
