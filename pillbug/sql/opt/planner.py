"""Queries -> physical plans.

plan_query() turns a SELECT (or VALUES, or a set operation, with its WITH clause) into a tree of
exec nodes and the list of result columns. The steps, in order, are those of SQL's logical
evaluation: FROM (tables, joins, subqueries; WHERE conjuncts that touch one table are pushed into
its scan, where index selection turns them into key spans), WHERE, GROUP BY and aggregates,
window functions, HAVING, the target list, DISTINCT, ORDER BY, LIMIT/OFFSET.

A JOIN ... ON is built only once the WHERE conjuncts over it are known (Source.deferred), so that
each goes to the input it restricts when the join type allows (both sides of an inner join, the
preserved side of an outer one). Join methods: a lookup join when the right side is a table whose
index prefix is pinned by equalities with left columns; a hash join on other equalities; a nested
loop otherwise. An ORDER BY that the chosen index already delivers (forwards or backwards) needs
no sort, and a LIMIT over such a scan bounds the keys it reads.
This module knows nothing of the wire protocol or of sessions; it reads a PlanEnv.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pillbug.sql import types as T
from pillbug.sql import unsupported
from pillbug.sql.catalog.descriptors import TableDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.exec import nodes as N
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt import index_select, window
from pillbug.sql.parser.front import Statement, parse
from pillbug.sql.rowenc import TableCodec
from pillbug.sql.sem import builtins
from pillbug.sql.sem.build import (
    BuildContext,
    ExprBuilder,
    GroupingHook,
    NotCacheable,
    ParamTypes,
    Scope,
    ScopeColumn,
    coerce,
    node_key,
    resolve_overload,
)
from pillbug.sql.sem.casts import cast_fn
from pillbug.sql.sem.expr import ColRef, Compare, Const, Expr, Subquery, conjuncts, format_expr, make_and
from pillbug.util import errors


class VirtualTable(Protocol):
    name: str
    columns: list[tuple[str, T.SQLType]]

    def rows(self, ctx: ExecCtx) -> Any: ...


# The statement kinds opt/plan.py plans (the others are run by the statements layer).
PLANNED_KINDS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "ExplainStmt"})


class PlanEnv(Protocol):
    catalog: Catalog
    database: str
    user: str

    def codec(self, table: TableDesc) -> TableCodec: ...

    def check_privilege(self, desc: Any, privilege: str) -> None: ...

    def virtual_table(self, schema: str, name: str) -> VirtualTable | None: ...

    def resolve_table_name(self, names: list[str]) -> tuple[str, Any]: ...

    def plan_statement(self, planner: Planner, stmt: Statement) -> tuple[QueryPlan, str]:
        """A statement of PLANNED_KINDS planned with `planner` (opt/plan.py's dispatch, which sits
        above the planner): for a WITH clause's DML and a `[ ... ]` data source."""
        ...

    def statement_source(self, stmt: Statement) -> tuple[list[ScopeColumn], Callable[[ExecCtx], Any]] | None:
        """A statement that is not planned (SHOW ...) as a data source: its columns and a function
        that runs it in the executing session (ctx.session) and returns its rows; None when the
        statement returns no rows. The statements layer above the planner answers it."""
        ...


@dataclass(slots=True)
class Source:
    """One FROM item after planning: its node, columns, and (for a base table) its descriptor."""
    node: N.Node | None
    columns: list[ScopeColumn]
    table: TableDesc | None = None
    codec: TableCodec | None = None
    alias: str = ""
    hint: str | None = None
    nullable: bool = False  # on the outer side of an outer join: no pushdown into it
    pushed: list[Expr] = field(default_factory=list)
    # a JOIN ... ON not built yet: called with the predicates pushed into it from above
    deferred: Callable[[list[Expr]], N.Node] | None = None


@dataclass(slots=True)
class QueryPlan:
    node: N.Node
    columns: list[ScopeColumn]


def target_name(node: dict) -> str:
    """The column name PostgreSQL/CockroachDB give an unnamed target expression."""
    (kind, body), = node.items()
    if kind == "ColumnRef":
        last = body["fields"][-1]
        return "*" if "A_Star" in last else last["String"]["sval"]
    if kind == "FuncCall":
        return body["funcname"][-1]["String"]["sval"]
    if kind == "TypeCast":
        inner = target_name(body["arg"])
        # as PostgreSQL's FigureColname: a cast names its column after what it casts, unless
        # that is itself a cast (a weaker name): 'int8'::regtype::text is "text"
        if inner != "?column?" and "TypeCast" not in body["arg"]:
            return inner
        names = [n["String"]["sval"] for n in body["typeName"]["names"]]
        return names[-1]
    if kind == "SQLValueFunction":
        return {"SVFOP_CURRENT_DATE": "current_date", "SVFOP_CURRENT_TIMESTAMP": "current_timestamp",
                "SVFOP_CURRENT_USER": "current_user", "SVFOP_SESSION_USER": "session_user",
                "SVFOP_CURRENT_CATALOG": "current_catalog", "SVFOP_CURRENT_SCHEMA": "current_schema",
                "SVFOP_LOCALTIMESTAMP": "localtimestamp", "SVFOP_USER": "current_user",
                "SVFOP_CURRENT_ROLE": "current_role"}.get(body["op"], "?column?")
    if kind == "A_Indirection":
        ind = body["indirection"][-1]
        if "String" in ind:
            return ind["String"]["sval"]
        return target_name(body["arg"])
    if kind == "CaseExpr":
        return "case"
    if kind == "CoalesceExpr":
        return "coalesce"
    if kind == "MinMaxExpr":
        return "greatest" if body["op"] == "IS_GREATEST" else "least"
    if kind == "SubLink":
        if body["subLinkType"] == "EXISTS_SUBLINK":
            return "exists"
        if body["subLinkType"] == "ARRAY_SUBLINK":
            return "array"
        sub = body["subselect"].get("SelectStmt", {})
        tl = sub.get("targetList") or []
        if body["subLinkType"] == "EXPR_SUBLINK" and len(tl) == 1:
            rt = tl[0]["ResTarget"]
            return rt.get("name") or target_name(rt["val"])
    if kind == "A_ArrayExpr":
        return "array"
    if kind == "CollateClause":
        return target_name(body["arg"])
    return "?column?"


class AggHook(GroupingHook):
    """Expressions after GROUP BY: group keys and aggregate calls become output columns."""

    def __init__(self, input_scope: Scope, group_exprs: list[Expr], group_nodes: list[dict],
                 bctx: BuildContext, base_tables: dict[str, TableDesc] | None = None) -> None:
        self.input_scope = input_scope
        self.bctx = bctx
        self.group_exprs = group_exprs
        self.by_key = {node_key(n): i for i, n in enumerate(group_nodes)}
        self.by_column = {e.index: i for i, e in enumerate(group_exprs) if isinstance(e, ColRef)}
        self.determined = _determined_tables(input_scope, group_exprs, base_tables or {})
        self.aggs: list[tuple[str, list[Expr], bool, Expr | None, bool, T.SQLType, Callable, list]] = []
        self.agg_keys: dict[str, int] = {}
        # window function columns: placeholders while the aggregates are being collected, then
        # (finalized) real columns after the groups, resolved by the builder's own scope
        self.window_types: dict[str, T.SQLType] = {}
        self.finalized = False

    def lookup(self, node: dict, builder: ExprBuilder) -> Expr | None:
        (kind, body), = node.items()
        if kind == "ColumnRef" and self.window_types:
            wname = body["fields"][-1].get("String", {}).get("sval")
            if wname in self.window_types:
                return None if self.finalized else Const(None, self.window_types[wname])
        key = node_key(node)
        i = self.by_key.get(key)
        if i is not None:
            e = self.group_exprs[i]
            return ColRef(i, e.type if e.type.family != "unknown" else T.STRING, getattr(e, "name", ""))
        if kind == "ColumnRef" and "A_Star" not in body["fields"][-1]:
            names = [f["String"]["sval"] for f in body["fields"]]
            depth, index, col = self.input_scope.resolve(names)
            if depth == 0:
                gi = self.by_column.get(index)
                if gi is not None:
                    return ColRef(gi, col.type, col.name)
                if (col.table, col.table_id) in self.determined:
                    return self._dependent(index, col)
                raise errors.PgError(
                    errors.GROUPING_ERROR,
                    f'column "{col.name}" must appear in the GROUP BY clause or be used in an aggregate function')
            return None
        if kind == "FuncCall":
            name = body["funcname"][-1]["String"]["sval"].lower()
            if name in builtins.AGGREGATES and not body.get("over"):
                return self._aggregate(name, body, key)
        return None

    def _dependent(self, index: int, col: ScopeColumn) -> Expr:
        """A column of a table whose primary key is grouped: one value per group, carried
        through the aggregation as CockroachDB does, by any_not_null."""
        key = f"\x00dependent {index}"
        existing = self.agg_keys.get(key)
        if existing is None:
            self.aggs.append(("any_not_null", [ColRef(index, col.type, col.name)], False, None, False, col.type,
                              builtins.AnyNotNull, []))
            existing = self.agg_keys[key] = len(self.aggs) - 1
        return ColRef(len(self.group_exprs) + existing, col.type, col.name)

    def _aggregate(self, name: str, body: dict, key: str) -> Expr:
        existing = self.agg_keys.get(key)
        if existing is not None:
            return ColRef(len(self.group_exprs) + existing, self.aggs[existing][5], name)
        inner = ExprBuilder(self.bctx, self.input_scope, clause="aggregate arguments")
        star = bool(body.get("agg_star"))
        args = [] if star else [inner.build(a) for a in body.get("args", [])]
        args = [coerce(a, T.STRING, self.bctx.params) if a.type.family == "unknown" else a for a in args]
        agg = builtins.AGGREGATES[name]
        if star:
            if name != "count":
                raise errors.syntax_error(f"{name}(*) is not valid")
            factory: Callable = builtins.CountStar
            typ = T.INT8
        else:
            if len(args) not in agg.arity:
                raise errors.undefined_function(
                    f"unknown signature: {name}({', '.join(a.type.display for a in args)})")
            arg_types = [a.type for a in args]
            typ = agg.result_type(arg_types)
            factory = agg.factory(arg_types)
        filter_expr = None
        if body.get("agg_filter"):
            filter_expr = inner.build_predicate(body["agg_filter"])
        order = []
        for item in body.get("agg_order") or []:
            sb = item["SortBy"]
            desc, nulls = _sort_direction(sb)
            order.append(N.SortKey(inner.build(sb["node"]).compile(), desc, nulls))
        self.aggs.append((name, args, bool(body.get("agg_distinct")), filter_expr, star, typ, factory, order))
        self.agg_keys[key] = len(self.aggs) - 1
        return ColRef(len(self.group_exprs) + len(self.aggs) - 1, typ, name)


def _function_name(fc: dict) -> str:
    """A function call's name as the registry keys it (schema-qualified for crdb_internal. and
    information_schema. functions)."""
    names = [n["String"]["sval"].lower() for n in fc["funcname"]]
    if len(names) > 1 and names[0] in ("pg_catalog", "public"):
        names = names[1:]
    return ".".join(names)


def _rows_as_records(impl: Callable[..., Any]) -> Callable[..., Any]:
    def records(*args: Any) -> Any:
        return ((tuple(r),) for r in impl(*args))
    return records


def _with_ordinality(rows_for: Callable[[tuple, ExecCtx], Any]) -> Callable[[tuple, ExecCtx], Any]:
    def numbered(row: tuple, ctx: ExecCtx) -> Any:
        return [(*r, n) for n, r in enumerate(rows_for(row, ctx), 1)]
    return numbered


def _determined_tables(scope: Scope, group_exprs: list[Expr],
                       base_tables: dict[str, TableDesc]) -> set[tuple[str | None, int]]:
    """The (alias, table id) of each table in FROM whose primary key columns are all grouping
    columns: every other column of that table has one value per group (a functional dependency),
    so it may be selected without being grouped, as in CockroachDB and PostgreSQL."""
    grouped: dict[tuple[str | None, int], set[int]] = {}
    for e in group_exprs:
        if isinstance(e, ColRef) and 0 <= e.index < len(scope.columns):
            c = scope.columns[e.index]
            if c.table_id:
                grouped.setdefault((c.table, c.table_id), set()).add(c.column_id)
    return {(alias, t.id) for alias, t in base_tables.items()
            if set(t.primary_index.column_ids) <= grouped.get((alias, t.id), set())}


def referenced_columns(node: Any) -> set[str] | None:
    """The names a statement's column references use, or None when it reads columns without
    naming them (*, NATURAL JOIN, JOIN ... USING)."""
    names: set[str] = set()

    def walk(n: Any) -> bool:
        if isinstance(n, dict):
            ref = n.get("ColumnRef")
            if ref is not None:
                last = ref["fields"][-1]
                if "A_Star" in last:
                    return False
                names.add(last["String"]["sval"])
                return True
            if n.get("isNatural") or n.get("usingClause"):
                return False
            return all(walk(v) for v in n.values())
        if isinstance(n, list):
            return all(walk(x) for x in n)
        return True
    return names if walk(node) else None


def has_aggregates(node: Any) -> bool:
    """Whether an expression tree calls an aggregate (outside subqueries)."""
    if isinstance(node, dict):
        for kind, body in node.items():
            if kind == "FuncCall" and isinstance(body, dict):
                name = body["funcname"][-1]["String"]["sval"].lower()
                if (name in builtins.AGGREGATES or body.get("agg_star")) and not body.get("over"):
                    return True
            if kind == "SubLink":
                continue
            if has_aggregates(body):
                return True
    elif isinstance(node, list):
        return any(has_aggregates(x) for x in node)
    return False


class Planner:
    def __init__(self, env: PlanEnv, params: ParamTypes, index_hints: dict[int, str] | None = None) -> None:
        self.env = env
        self.params = params
        self.index_hints = index_hints or {}
        self.bctx = BuildContext(params, plan_subquery=self._plan_subquery,
                                 resolve_type=functools.partial(env.catalog.resolve_type, env.database))
        self.ctes: list[dict[str, QueryPlan]] = []
        # Inside a view's query only the view's own SELECT privilege counts (as in CockroachDB):
        # a view exists to expose part of a table to users who may not read the table itself.
        self.view_depth = 0
        # the column names the statement mentions, when they are all it can read (no *, no
        # NATURAL JOIN, no view): lets an index that holds them all serve without the table
        self.referenced: set[str] | None = None

    # ---- entry ---------------------------------------------------------------------------

    def plan_query(self, node: dict, outer: Scope | None = None) -> QueryPlan:
        """node: {"SelectStmt": {...}} (also VALUES and set operations)."""
        (kind, body), = node.items()
        if kind != "SelectStmt":
            raise errors.unimplemented(f"{unsupported.statement_name(kind)[0]} is not supported as a query")
        with self.with_clause(body.get("withClause"), outer) as first:
            plan = self._plan_select_body(body, outer)
        return with_mutations_first(plan, first)

    @contextmanager
    def with_clause(self, with_clause: dict | None, outer: Scope | None) -> Iterator[list[N.Node]]:
        """Make a WITH clause's queries visible by name while the statement is planned. Yields
        the WITH clause's data-modifying statements, which must run whether read or not: the
        caller wraps its plan with with_mutations_first()."""
        first: list[N.Node] = []
        if not with_clause:
            yield first
            return
        scope_ctes: dict[str, QueryPlan] = {}
        self.ctes.append(scope_ctes)
        try:
            for cte_node in with_clause["ctes"]:
                cte = cte_node["CommonTableExpr"]
                q = cte["ctequery"]
                (q_kind, q_body), = q.items()
                if q_kind in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
                    stmt = Statement(q_kind, q_body, "", index_hints=self.index_hints)
                    plan, _ = self.env.plan_statement(self, stmt)
                    node = N.Materialized(plan.node)
                    first.append(node)
                    scope_ctes[cte["ctename"]] = QueryPlan(node, plan.columns)
                    continue
                if q_kind != "SelectStmt":
                    raise errors.unimplemented(f"{unsupported.statement_name(q_kind)[0]} is not supported in WITH")
                names = [n["String"]["sval"] for n in cte.get("aliascolnames") or []]
                body = q["SelectStmt"]
                if with_clause.get("recursive") and body.get("op", "SETOP_NONE") == "SETOP_UNION":
                    scope_ctes[cte["ctename"]] = self._plan_recursive_cte(cte["ctename"], body, names, outer,
                                                                          scope_ctes)
                    continue
                plan = self.plan_query(q, outer)
                cols = plan.columns
                if names:
                    cols = [ScopeColumn(n, c.type) for n, c in zip(names, cols)]
                scope_ctes[cte["ctename"]] = QueryPlan(N.Materialized(plan.node), cols)
            yield first
        finally:
            self.ctes.pop()

    def _plan_recursive_cte(self, name: str, body: dict, names: list[str], outer: Scope | None,
                            scope_ctes: dict[str, QueryPlan]) -> QueryPlan:
        """WITH RECURSIVE name AS (anchor UNION [ALL] step): step reads the previous round."""
        anchor = self.plan_query({"SelectStmt": body["larg"]}, outer)
        cols = anchor.columns
        if names:
            if len(names) != len(cols):
                raise errors.syntax_error(
                    f'WITH query "{name}" has {len(cols)} columns available but {len(names)} columns specified')
            cols = [ScopeColumn(n, c.type) for n, c in zip(names, cols)]
        working = N.WorkingTable(cols)
        scope_ctes[name] = QueryPlan(working, cols)
        step = self.plan_query({"SelectStmt": body["rarg"]}, outer)
        if len(step.columns) != len(cols):
            raise errors.syntax_error(
                f"each UNION query must have the same number of columns: {len(cols)} vs {len(step.columns)}")
        node = N.RecursiveUnion(anchor.node, step.node, working, bool(body.get("all")), cols)
        return QueryPlan(N.Materialized(node), cols)

    def _plan_select_body(self, body: dict, outer: Scope | None) -> QueryPlan:
        op = body.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            return self._plan_setop(body, outer)
        if body.get("valuesLists"):
            plan = self._plan_values(body["valuesLists"], outer)
            if body.get("sortClause") or body.get("limitCount") or body.get("limitOffset"):
                scope = Scope(plan.columns, outer)
                plan = QueryPlan(self._order_and_limit(body, plan.node, scope, plan.columns, scope), plan.columns)
        else:
            plan = self._plan_simple_select(body, outer)
        return plan

    # ---- VALUES --------------------------------------------------------------------------

    def _plan_values(self, lists: list, outer: Scope | None, target_types: list[T.SQLType] | None = None) -> QueryPlan:
        builder = ExprBuilder(self.bctx, Scope([], outer), clause="VALUES")
        rows = [[builder.build(v) for v in lst["List"]["items"]] for lst in lists]
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            raise errors.syntax_error("VALUES lists must all be the same length")
        types = []
        for i in range(width):
            col_exprs = [r[i] for r in rows]
            if target_types is not None:
                types.append(target_types[i])
                continue
            known = [e.type for e in col_exprs if e.type.family != "unknown"]
            typ = known[0] if known else T.STRING
            for t in known[1:]:
                if t.is_numeric and typ.is_numeric:
                    typ = T.common_numeric(typ, t)
                elif t.family != typ.family:
                    raise errors.datatype_mismatch(
                        f"VALUES types {t.display} and {typ.display} cannot be matched")
            types.append(typ)
        compiled = []
        for r in rows:
            out = []
            for i, e in enumerate(r):
                e = coerce(e, types[i], self.params) if e.type.family != types[i].family or \
                    (isinstance(e, Const) and e.untyped) else e
                out.append(e.compile())
            compiled.append(out)
        columns = [ScopeColumn(f"column{i + 1}", t) for i, t in enumerate(types)]
        return QueryPlan(N.Values(columns, compiled), columns)

    # ---- set operations ------------------------------------------------------------------

    def _plan_setop(self, body: dict, outer: Scope | None) -> QueryPlan:
        left = self.plan_query({"SelectStmt": body["larg"]}, outer)
        right = self.plan_query({"SelectStmt": body["rarg"]}, outer)
        if len(left.columns) != len(right.columns):
            raise errors.syntax_error(
                f"each {body['op'][6:]} query must have the same number of columns: "
                f"{len(left.columns)} vs {len(right.columns)}")
        columns = []
        left_conv: list = []
        right_conv: list = []
        for lc, rc in zip(left.columns, right.columns):
            typ = lc.type
            if lc.type.family != rc.type.family:
                if lc.type.family == "unknown":
                    typ = rc.type
                elif rc.type.family == "unknown":
                    typ = lc.type
                elif lc.type.is_numeric and rc.type.is_numeric:
                    typ = T.common_numeric(lc.type, rc.type)
                else:
                    raise errors.datatype_mismatch(
                        f"{body['op'][6:]} types {lc.type.display} and "
                        f"{rc.type.display} cannot be matched")
            left_conv.append(None if lc.type.family == typ.family else cast_fn(lc.type, typ))
            right_conv.append(None if rc.type.family == typ.family else cast_fn(rc.type, typ))
            columns.append(ScopeColumn(lc.name, typ))
        kind = {"SETOP_UNION": "union", "SETOP_INTERSECT": "intersect", "SETOP_EXCEPT": "except"}[body["op"]]
        node: N.Node = N.SetOp(kind, bool(body.get("all")), left.node, right.node, columns,
                               left_conv if any(left_conv) else None,
                               right_conv if any(right_conv) else None)
        scope = Scope(columns, outer)
        node = self._order_and_limit(body, node, scope, columns, outer_for_exprs=scope)
        return QueryPlan(node, columns)

    # ---- SELECT --------------------------------------------------------------------------

    def _plan_simple_select(self, body: dict, outer: Scope | None) -> QueryPlan:
        items = body.get("fromClause") or []
        if len(items) > 1 and self._is_lateral_function(items[-1], outer):
            sources = [self._plan_lateral_function(items, outer)]
        else:
            sources = [self._plan_from_item(item, outer) for item in items]
        # Lay the FROM items side by side: a row of the whole FROM is their concatenation.
        from_columns: list[ScopeColumn] = []
        offsets = []
        for s in sources:
            offsets.append(len(from_columns))
            from_columns.extend(s.columns)
        scope = Scope(from_columns, outer)
        where = None
        if body.get("whereClause"):
            if has_aggregates(body["whereClause"]):
                raise errors.PgError(errors.GROUPING_ERROR, "aggregate functions are not allowed in WHERE")
            where = ExprBuilder(self.bctx, scope, clause="WHERE").build_predicate(body["whereClause"])
        node, residual = self._join_sources(sources, offsets, conjuncts(where), from_columns)
        if residual:
            node = filter_node(node, residual)
        target_list = body.get("targetList") or []
        group_clause = body.get("groupClause") or []
        having = body.get("havingClause")
        sort_clause = body.get("sortClause") or []
        aggregating = bool(group_clause) or having is not None or has_aggregates(target_list) or \
            has_aggregates([s["SortBy"]["node"] for s in sort_clause])
        if aggregating:
            # a set-returning function over the input rows (SELECT regexp_split_to_table(s, ',')
            # AS w, count(*) ... GROUP BY w) runs before the grouping
            node, scope, body = self._project_set(body, node, scope, over_aggregates=False)
            return self._plan_aggregate(body, node, scope, outer)
        node, scope, body = self._project_set(body, node, scope)
        if window.has_windows([target_list, sort_clause]):
            body, calls = window.extract(body)
            node, scope = window.plan(calls, node, scope, ExprBuilder(self.bctx, scope, clause="SELECT"))
        return self._finish_select(body, node, scope, ExprBuilder(self.bctx, scope, clause="SELECT"), outer)

    def _project_set(self, body: dict, node: N.Node, scope: Scope,
                     over_aggregates: bool = True) -> tuple[N.Node, Scope, dict]:
        """Set-returning functions in the select list (SELECT unnest(a), generate_series(1, 3)):
        each input row becomes as many rows as its longest function result, the results added
        as hidden columns that the rewritten target list reads."""
        targets = body.get("targetList") or []
        calls = []
        new_targets = []
        for t in targets:
            rt = t["ResTarget"]
            # f(...) or (f(...)).field, the field of a function returning records
            indirection = rt["val"].get("A_Indirection")
            fc = (indirection["arg"] if indirection else rt["val"]).get("FuncCall")
            fname = _function_name(fc) if fc else ""
            fdef = builtins.FUNCTIONS.get(fname)
            if fdef is None or not fdef.is_srf or fc.get("over") or \
                    (not over_aggregates and has_aggregates(fc.get("args", []))):
                new_targets.append(t)
                continue
            if fdef.srf_columns and len(fdef.srf_columns) > 1:
                raise errors.unimplemented(f"{fname}() returns several columns: call it in FROM")
            builder = ExprBuilder(self.bctx, scope, clause="SELECT")
            args = [builder.build(a) for a in fc.get("args", [])]
            overload, args = resolve_overload(fdef, args, self.params)
            impl = overload.impl
            typ = overload.result_type([a.type for a in args])
            row = fdef.srf_row([a.type for a in args]) if fdef.srf_row is not None else []
            if len(row) > 1:
                # a row of several columns is one value here: a record with named fields
                typ = T.record_of(row)
                impl = _rows_as_records(impl)
            hidden = f"\x00srf{len(calls)}"
            calls.append((impl, [a.compile() for a in args], typ, hidden))
            ref = {"ColumnRef": {"fields": [{"String": {"sval": hidden}}]}}
            new_val = {"A_Indirection": {**indirection, "arg": ref}} if indirection else ref
            new_targets.append({"ResTarget": {**rt, "name": rt.get("name") or target_name(rt["val"]),
                                              "val": new_val}})
        if not calls:
            return node, scope, body
        fns = [(c[0], c[1]) for c in calls]
        columns = scope.columns + [ScopeColumn(c[3], c[2], hidden=True) for c in calls]
        out = N.ProjectSet(node, columns, fns)
        return out, Scope(columns, scope.outer), {**body, "targetList": new_targets}

    def _finish_select(self, body: dict, node: N.Node, scope: Scope, builder: ExprBuilder,
                       outer: Scope | None) -> QueryPlan:
        """Target list, DISTINCT, ORDER BY, LIMIT over rows laid out as `scope` says."""
        exprs, names = self._targets(body.get("targetList") or [], scope, builder)
        columns = [ScopeColumn(n, _output_type(e.type)) for e, n in zip(exprs, names)]
        for c, e in zip(columns, exprs):
            if isinstance(e, ColRef) and 0 <= e.index < len(scope.columns):
                src = scope.columns[e.index]
                c.table_id, c.column_id = src.table_id, src.column_id
        # a bare NULL keeps no type yet, so that SELECT 1 UNION SELECT NULL types it as INT
        exprs = [coerce(e, T.STRING, self.params) if e.type.family == "unknown" and not _is_null(e) else e
                 for e in exprs]
        distinct = body.get("distinctClause")
        sort_clause = body.get("sortClause") or []
        # ORDER BY keys: an output column (by position or name) or an expression over the input.
        sort_refs: list[tuple[int, bool, bool | None]] = []
        extra: list[Expr] = []
        for item in sort_clause:
            sb = item["SortBy"]
            pos = self._output_ref(sb["node"], names, exprs)
            if pos is None:
                e = builder.build(sb["node"])
                if distinct is not None:
                    match = next((i for i, x in enumerate(exprs) if node_key_expr(x) == node_key_expr(e)), None)
                    if match is None:
                        raise errors.PgError(errors.INVALID_COLUMN_REFERENCE,
                                             "for SELECT DISTINCT, ORDER BY expressions must appear in select list")
                    pos = match
                else:
                    extra.append(e)
                    pos = len(exprs) + len(extra) - 1
            desc, nulls = _sort_direction(sb)
            sort_refs.append((pos, desc, nulls))
        all_exprs = exprs + extra
        fns = [e.compile() for e in all_exprs]
        positions = [e.index for e in all_exprs] if all(isinstance(e, ColRef) for e in all_exprs) else None
        out_cols = columns + [ScopeColumn(format_expr(e), e.type, hidden=True) for e in extra]
        if positions is not None and positions == list(range(len(scope.columns))) and len(positions) == len(node.columns):
            projected = node
        else:
            projected = N.Project(node, out_cols, fns, positions)
            projected.sources = [e.index if isinstance(e, ColRef) else None for e in all_exprs]
        if distinct is not None:
            on = [d for d in distinct if d]
            if on:
                key_positions = []
                for d in on:
                    p = self._output_ref(d, names, exprs)
                    if p is None:
                        e = builder.build(d)
                        p = next((i for i, x in enumerate(exprs) if node_key_expr(x) == node_key_expr(e)), None)
                        if p is None:
                            raise errors.PgError(errors.INVALID_COLUMN_REFERENCE,
                                                 "DISTINCT ON expressions must match initial ORDER BY expressions")
                    key_positions.append(p)
                if sort_refs:
                    projected = N.Sort(projected, [N.SortKey(_pos_fn(p), d, nl) for p, d, nl in sort_refs])
                    sort_refs = []
                projected = N.Distinct(projected, key_positions)
            else:
                projected = N.Distinct(projected)
        result = self._apply_order_limit(body, projected, sort_refs, scope)
        if extra:
            result = N.Project(result, columns, [], list(range(len(columns))))
        return QueryPlan(result, columns)

    def _output_ref(self, node: dict, names: list[str], exprs: list[Expr]) -> int | None:
        """ORDER BY 2 or ORDER BY alias: the output column it names."""
        (kind, body), = node.items()
        if kind == "A_Const" and "ival" in body:
            n = body["ival"].get("ival", 0)
            if not 1 <= n <= len(names):
                raise errors.PgError(errors.INVALID_COLUMN_REFERENCE,
                                     f"ORDER BY position {n} is not in select list")
            return n - 1
        if kind == "ParamRef" and (body.get("number", 0) - 1) in self.params.lifted:
            raise NotCacheable()
        if kind == "ColumnRef" and len(body["fields"]) == 1 and "String" in body["fields"][0]:
            name = body["fields"][0]["String"]["sval"]
            hits = [i for i, n in enumerate(names) if n == name]
            if len(hits) == 1:
                return hits[0]
        return None

    def _apply_order_limit(self, body: dict, node: N.Node, sort_refs: list, scope: Scope) -> N.Node:
        limit_fn = offset_fn = None
        empty = Scope([], scope.outer)
        lb = ExprBuilder(self.bctx, empty, clause="LIMIT")
        lc = body.get("limitCount")
        info = []
        if lc is not None and not ("A_Const" in lc and lc["A_Const"].get("isnull")):
            limit_expr = coerce(lb.build(lc), T.INT8, self.params)
            limit_fn = limit_expr.compile()
            info.append(f"count: {format_expr(limit_expr)}")
        if body.get("limitOffset"):
            offset_expr = coerce(lb.build(body["limitOffset"]), T.INT8, self.params)
            offset_fn = offset_expr.compile()
            info.append(f"offset: {format_expr(offset_expr)}")
        if sort_refs and _provide_order(node, sort_refs):
            sort_refs = []  # the rows arrive in that order already: no sort
        if sort_refs:
            keys = [N.SortKey(_pos_fn(p), d, nl) for p, d, nl in sort_refs]
            order = _order_info(node, sort_refs)
            if limit_fn is not None and offset_fn is None:
                node = N.TopK(node, keys, limit_fn)
                node.info = [order, f"k: {info[0][len('count: '):]}"]
                return node  # the top-k keeps at most the limit
            else:
                node = N.Sort(node, keys)
                node.info = [order]
        if limit_fn is not None or offset_fn is not None:
            node = N.Limit(node, limit_fn, offset_fn)
            node.info = info
            _hint_limit(node)
        return node

    def _order_and_limit(self, body: dict, node: N.Node, scope: Scope, columns: list[ScopeColumn],
                         outer_for_exprs: Scope) -> N.Node:
        names = [c.name for c in columns]
        exprs: list[Expr] = [ColRef(i, c.type, c.name) for i, c in enumerate(columns)]
        sort_refs = []
        for item in body.get("sortClause") or []:
            sb = item["SortBy"]
            pos = self._output_ref(sb["node"], names, exprs)
            if pos is None:
                e = ExprBuilder(self.bctx, outer_for_exprs).build(sb["node"])
                if not isinstance(e, ColRef):
                    raise errors.unimplemented("ORDER BY on a set operation must name an output column")
                pos = e.index
            desc, nulls = _sort_direction(sb)
            sort_refs.append((pos, desc, nulls))
        return self._apply_order_limit(body, node, sort_refs, scope)

    def _targets(self, target_list: list, scope: Scope, builder: ExprBuilder) -> tuple[list[Expr], list[str]]:
        exprs: list[Expr] = []
        names: list[str] = []
        for t in target_list:
            rt = t["ResTarget"]
            val = rt["val"]
            if "ColumnRef" in val and "A_Star" in val["ColumnRef"]["fields"][-1]:
                fields = val["ColumnRef"]["fields"]
                table = fields[-2]["String"]["sval"] if len(fields) >= 2 else None
                if not scope.columns and table is None:
                    raise errors.PgError(errors.INVALID_COLUMN_REFERENCE,
                                         "SELECT * with no tables specified is not valid")
                if builder.grouping is not None:
                    # t.* after GROUP BY names the input's columns (each then grouped, or
                    # determined by a grouped primary key), not the aggregation's output
                    assert isinstance(builder.grouping, AggHook)
                    for _, c in builder.grouping.input_scope.star(table):
                        exprs.append(builder.build({"ColumnRef": {"fields": [{"String": {"sval": c.name}}]}}) if table is None
                                     else builder.build({"ColumnRef": {"fields": [{"String": {"sval": table}}, {"String": {"sval": c.name}}]}}))
                        names.append(c.name)
                    continue
                for i, c in scope.star(table):
                    exprs.append(ColRef(i, c.type, c.name))
                    names.append(c.name)
                continue
            exprs.append(builder.build(val))
            names.append(rt.get("name") or target_name(val))
        return exprs, names

    # ---- aggregation ---------------------------------------------------------------------

    def _base_tables(self, from_clause: list) -> dict[str, TableDesc]:
        """The tables (not views, subqueries or CTEs) that FROM reads directly, by alias: only
        their rows are known to be determined by their primary key."""
        out: dict[str, TableDesc] = {}
        ctes = {name for scope_ctes in self.ctes for name in scope_ctes}
        for item in from_clause:
            (kind, body), = item.items()
            if kind == "JoinExpr":
                out.update(self._base_tables([body["larg"], body["rarg"]]))
            elif kind == "RangeVar":
                names = [n for n in (body.get("catalogname"), body.get("schemaname"), body["relname"]) if n]
                if len(names) == 1 and names[0] in ctes:
                    continue
                what, obj = self.env.resolve_table_name(names)
                if what == "table" and not obj.is_view:
                    alias = body["alias"]["aliasname"] if body.get("alias") else body["relname"]
                    out[alias] = obj
        return out

    def _plan_aggregate(self, body: dict, node: N.Node, scope: Scope, outer: Scope | None) -> QueryPlan:
        in_builder = ExprBuilder(self.bctx, scope, clause="GROUP BY")
        group_nodes = []
        group_exprs: list[Expr] = []
        target_list = body.get("targetList") or []
        for g in body.get("groupClause") or []:
            if "A_Const" in g and "ival" in g["A_Const"]:
                n = g["A_Const"]["ival"].get("ival", 0)
                if not 1 <= n <= len(target_list):
                    raise errors.PgError(errors.INVALID_COLUMN_REFERENCE, f"GROUP BY position {n} is not in select list")
                g = target_list[n - 1]["ResTarget"]["val"]
            elif "ParamRef" in g and (g["ParamRef"].get("number", 0) - 1) in self.params.lifted:
                raise NotCacheable()
            elif "ColumnRef" in g and len(g["ColumnRef"]["fields"]) == 1:
                # GROUP BY an output alias
                name = g["ColumnRef"]["fields"][0].get("String", {}).get("sval")
                if name is not None and not any(c.name == name for c in scope.columns):
                    for t in target_list:
                        if t["ResTarget"].get("name") == name:
                            g = t["ResTarget"]["val"]
                            break
            if has_aggregates(g):
                raise errors.PgError(errors.GROUPING_ERROR, "aggregate functions are not allowed in GROUP BY")
            group_nodes.append(g)
            e = in_builder.build(g)
            if e.type.family == "unknown":
                e = coerce(e, T.STRING, self.params)
            group_exprs.append(e)
        hook = AggHook(scope, group_exprs, group_nodes, self.bctx, self._base_tables(body.get("fromClause") or []))
        # The row after aggregation: group keys, then aggregate results. Expressions over it are
        # built through the hook; its scope has no columns of its own, only the outer query's.
        agg_scope = Scope([], outer)
        post = ExprBuilder(self.bctx, agg_scope, grouping=hook, allow_aggregates=True, clause="SELECT")
        calls: list[window.WindowCall] = []
        if window.has_windows([target_list, body.get("sortClause") or []]):
            # window functions run over the groups; what they read registers with the hook first
            body, calls = window.extract(body)
            target_list = body.get("targetList") or []
            hook.window_types = window.result_types(calls, post)
        # Build everything that can mention aggregates first, so that the hook knows them all.
        exprs, names = self._targets(target_list, scope, post)
        having = None
        if body.get("havingClause"):
            having = ExprBuilder(self.bctx, agg_scope, grouping=hook, allow_aggregates=True,
                                 clause="HAVING").build_predicate(body["havingClause"])
        sort_exprs = []
        for item in body.get("sortClause") or []:
            sb = item["SortBy"]
            if self._output_ref(sb["node"], names, exprs) is None:
                sort_exprs.append(post.build(sb["node"]))
        agg_columns = [ScopeColumn(format_expr(e), e.type) for e in group_exprs] + \
                      [ScopeColumn(a[0], a[5]) for a in hook.aggs]
        specs = [N.AggSpec(a[6], [x.compile() for x in a[1]], a[2],
                           a[3].compile() if a[3] is not None else None, a[4], a[7]) for a in hook.aggs]
        agg_node: N.Node = N.Aggregate_(node, agg_columns, [e.compile() for e in group_exprs], specs,
                                        scalar=not group_exprs)
        if group_exprs:
            agg_node.info = [f"group by: {', '.join(format_expr(e) for e in group_exprs)}"]
        if having is not None:
            agg_node = filter_node(agg_node, [having])
        agg_scope.columns = agg_columns
        hook.finalized = True
        if calls:
            agg_node, agg_scope = window.plan(calls, agg_node, agg_scope, post)
            post = ExprBuilder(self.bctx, agg_scope, grouping=hook, allow_aggregates=True, clause="SELECT")
        return self._finish_select(body, agg_node, agg_scope, post, outer)

    # ---- FROM ----------------------------------------------------------------------------

    def _plan_from_item(self, item: dict, outer: Scope | None) -> Source:
        (kind, body), = item.items()
        if kind == "RangeVar":
            return self._plan_range_var(body)
        if kind == "RangeSubselect":
            if body.get("lateral"):
                raise errors.unimplemented("LATERAL subqueries are not supported")
            plan = self.plan_query(body["subquery"], outer)
            alias = body.get("alias", {}).get("aliasname", "")
            cols = _rename(plan.columns, body.get("alias"), alias)
            return Source(N.Rename(plan.node, cols), cols, alias=alias)
        if kind == "JoinExpr":
            return self._plan_join_expr(body, outer)
        if kind == "RangeFunction":
            return self._plan_range_function(body, outer)
        if kind == "StatementSource":
            return self._plan_statement_source(body)
        raise unsupported.from_item(kind)

    def _plan_statement_source(self, body: dict) -> Source:
        """[SHOW ...], [EXPLAIN ...], [INSERT ... RETURNING ...] used as a table."""
        stmt = body["statement"]
        alias_node = body.get("alias")
        alias = alias_node["aliasname"] if alias_node else ""
        if stmt.kind in PLANNED_KINDS:
            inner = Planner(self.env, self.params, stmt.index_hints)
            plan, _ = self.env.plan_statement(inner, stmt)
            if not plan.columns:
                raise errors.syntax_error("statement source must return rows: add RETURNING")
            node = plan.node
            # A mutation runs once per execution however often the outer query reads it.
            if stmt.kind != "SelectStmt":
                node = N.Materialized(node)
            cols = _rename([ScopeColumn(c.name, c.type, alias) for c in plan.columns], alias_node, alias)
            return Source(N.Rename(node, cols), cols, alias=alias)
        # SHOW statements: run by the statements layer, which this planner sits under, so it
        # is reached through the environment, and run in the executing session.
        source = self.env.statement_source(stmt)
        if source is None:
            raise errors.syntax_error(f"{unsupported.statement_name(stmt.kind)[0]} cannot be used as a data source")
        columns, produce = source
        cols = _rename([ScopeColumn(c.name, c.type, alias) for c in columns], alias_node, alias)
        return Source(N.Generate(cols, produce, f"show ({stmt.kind})"), cols, alias=alias)

    def _plan_range_var(self, body: dict) -> Source:
        names = [n for n in (body.get("catalogname"), body.get("schemaname"), body["relname"]) if n]
        alias_node = body.get("alias")
        alias = alias_node["aliasname"] if alias_node else body["relname"]
        if len(names) == 1:
            for scope_ctes in reversed(self.ctes):
                cte = scope_ctes.get(names[0])
                if cte is not None:
                    if not cte.columns:
                        raise errors.feature_not_supported(
                            f'WITH query "{names[0]}" does not have a RETURNING clause')
                    cols = _rename(cte.columns, alias_node, alias)
                    return Source(N.Rename(cte.node, cols), cols, alias=alias)
        kind, obj = self.env.resolve_table_name(names)
        if kind == "virtual":
            cols = [ScopeColumn(n, t, alias) for n, t in obj.columns]
            cols = _rename(cols, alias_node, alias)
            return Source(N.Generate(cols, obj.rows, f"virtual table {'.'.join(names)}"), cols, alias=alias)
        table: TableDesc = obj
        if table.is_view:
            self.referenced = None  # the view's query names columns of its own
            stmt = parse(table.view_query)[0]
            if not self.view_depth:
                self.env.check_privilege(table, "SELECT")
            self.view_depth += 1
            try:
                plan = self.plan_query({"SelectStmt": stmt.node}, None)
            finally:
                self.view_depth -= 1
            cols = _rename([ScopeColumn(c.name, c.type, alias) for c in plan.columns], alias_node, alias)
            return Source(N.Rename(plan.node, cols), cols, alias=alias)
        if not self.view_depth:
            self.env.check_privilege(table, "SELECT")
        cols = [ScopeColumn(c.name, c.type, alias, c.hidden, table.id, c.id) for c in table.columns]
        cols = _rename(cols, alias_node, alias)
        hint = self.index_hints.get(body.get("location", -2))
        return Source(None, cols, table, self.env.codec(table), alias, hint)

    def _plan_range_function(self, body: dict, outer: Scope | None) -> Source:
        cols, rows_for, label = self._range_function(body, Scope([], outer))
        return Source(N.Generate(cols, lambda ctx: rows_for((), ctx), label), cols, alias=cols[0].table or "")

    def _range_function(self, body: dict, arg_scope: Scope
                        ) -> tuple[list[ScopeColumn], Callable[[tuple, ExecCtx], Any], str]:
        """A function in FROM: its columns, and its rows for one row of `arg_scope` (the columns
        its arguments may read: none, or those of the FROM items before it when it is lateral)."""
        if len(body["functions"]) != 1:
            raise errors.unimplemented("ROWS FROM with several functions")
        call = body["functions"][0]["List"]["items"][0]
        if "FuncCall" not in call:
            raise errors.unimplemented("only function calls are supported in FROM")
        fc = call["FuncCall"]
        name = _function_name(fc)
        builder = ExprBuilder(self.bctx, arg_scope, clause="FROM")
        args = [builder.build(a) for a in fc.get("args", [])]
        fdef = builtins.FUNCTIONS.get(name)
        if fdef is None:
            raise errors.undefined_function(f"unknown function: {name}()")
        overload, args = resolve_overload(fdef, args, self.params)
        alias_node = body.get("alias")
        alias = alias_node["aliasname"] if alias_node else name
        fns = [a.compile() for a in args]
        impl = overload.impl
        rows_for: Callable[[tuple, ExecCtx], Any]
        if fdef.is_srf:
            typ = overload.result_type([a.type for a in args])
            if fdef.srf_row is not None:
                col_names, types = map(list, zip(*fdef.srf_row([a.type for a in args])))
            else:
                col_names = fdef.srf_columns or [name]
                types = [typ] if len(col_names) == 1 else [T.STRING, typ][:len(col_names)]
            if name in ("jsonb_each", "json_each"):
                types = [T.STRING, T.JSONB]
            cols = [ScopeColumn(n if len(col_names) > 1 or n != name else alias if alias_node else n, t, alias)
                    for n, t in zip(col_names, types)]
            strict = overload.strict

            def rows_for(row: tuple, ctx: ExecCtx) -> Any:
                vals = [f(row, ctx) for f in fns]
                if strict and None in vals:
                    return []
                return impl(*vals)
        else:
            typ = overload.result_type([a.type for a in args])
            cols = [ScopeColumn(alias if alias_node else name, typ, alias)]
            needs_ctx = overload.needs_ctx

            def rows_for(row: tuple, ctx: ExecCtx) -> Any:
                vals = [f(row, ctx) for f in fns]
                return [(impl(ctx, *vals) if needs_ctx else impl(*vals),)]
        if body.get("ordinality"):
            # WITH ORDINALITY numbers the function's rows from 1 in a last column
            # (Django reads pg_constraint.conkey this way).
            cols = [*cols, ScopeColumn("ordinality", T.INT8, alias)]
            rows_for = _with_ordinality(rows_for)
        return _rename(cols, alias_node, alias), rows_for, f"function {name}"

    def _is_lateral_function(self, item: dict, outer: Scope | None) -> bool:
        """Whether a function in FROM reads columns of the FROM items before it."""
        if "RangeFunction" not in item:
            return False
        body = item["RangeFunction"]
        if body.get("lateral"):
            return True
        try:
            self._range_function(body, Scope([], outer))
        except errors.PgError as exc:
            if exc.code in (errors.UNDEFINED_COLUMN, errors.UNDEFINED_TABLE):
                return True
            raise
        return False

    def _plan_lateral_function(self, items: list, outer: Scope | None) -> Source:
        """FROM a, b, f(a.x, b.y): a function after other FROM items may read their columns
        (implicitly LATERAL, as in PostgreSQL); each row of the items before it is joined with
        the rows the function returns for it."""
        sources = [self._plan_from_item(item, outer) for item in items[:-1]]
        left_columns: list[ScopeColumn] = []
        offsets = []
        for src in sources:
            offsets.append(len(left_columns))
            left_columns.extend(src.columns)
        left, residual = self._join_sources(sources, offsets, [], left_columns)
        assert not residual
        fn_cols, rows_for, label = self._range_function(items[-1]["RangeFunction"], Scope(left_columns, outer))
        columns = left_columns + fn_cols
        return Source(N.LateralFunction(left, columns, rows_for, label), columns, alias="")

    def _plan_join_expr(self, body: dict, outer: Scope | None) -> Source:
        left = self._plan_from_item(body["larg"], outer)
        right = self._plan_from_item(body["rarg"], outer)
        jointype = body.get("jointype", "JOIN_INNER")
        kind = {"JOIN_INNER": "inner", "JOIN_LEFT": "left", "JOIN_RIGHT": "right",
                "JOIN_FULL": "full"}.get(jointype)
        if kind is None:
            raise errors.unimplemented("this join type is not supported")
        columns = left.columns + right.columns
        scope = Scope(columns, outer)
        cond: list[Expr] = []
        using = body.get("usingClause")
        natural = body.get("isNatural")
        if natural:
            lnames = {c.name for c in left.columns if _unqualified(c)}
            using_names = [c.name for c in right.columns if c.name in lnames and _unqualified(c)]
        elif using:
            using_names = [u["String"]["sval"] for u in using]
        else:
            using_names = []
        builder = ExprBuilder(self.bctx, scope, clause="ON")
        using_pairs = []
        for name in using_names:
            li = next((i for i, c in enumerate(left.columns) if c.name == name and _unqualified(c)), None)
            ri = next((i for i, c in enumerate(right.columns) if c.name == name and _unqualified(c)), None)
            if li is None or ri is None:
                raise errors.PgError(errors.UNDEFINED_COLUMN,
                                     f'column "{name}" specified in USING clause does not exist '
                                     f'in {"left" if li is None else "right"} table')
            using_pairs.append((li, len(left.columns) + ri))
            cond.append(builder.compare("=", ColRef(li, left.columns[li].type, name),
                                        ColRef(len(left.columns) + ri, right.columns[ri].type, name)))
        if body.get("quals"):
            cond.extend(conjuncts(builder.build_predicate(body["quals"])))
        if kind in ("left", "full"):
            right.nullable = True
        if kind in ("right", "full"):
            left.nullable = True
        if using_pairs:
            node = self._build_join(left, right, kind, cond, columns, [])
            node, columns = _merge_using(node, columns, using_pairs, kind)
            return Source(node, columns, alias="")
        return Source(None, columns, alias="",
                      deferred=lambda pushed: self._build_join(left, right, kind, cond, columns, pushed))

    def _build_join(self, left: Source, right: Source, kind: str, cond: list[Expr],
                    columns: list[ScopeColumn], pushed: list[Expr]) -> N.Node:
        """The join's node, with WHERE predicates over its row (`pushed`) sent to the inputs
        they restrict where the join type allows: a predicate over the preserved side of an
        outer join filters that side first; over both sides of an inner join it joins the ON."""
        nl = len(left.columns)
        above = []
        cond = list(cond)
        for p in pushed:
            used = {e.index for e in p.walk() if isinstance(e, ColRef)}
            if any(isinstance(e, Subquery) for e in p.walk()) or not used:
                above.append(p)
            elif max(used) < nl and kind in ("inner", "left"):
                left.pushed.append(p)
            elif min(used) >= nl and kind in ("inner", "right"):
                right.pushed.append(_shift(p, -nl))
            elif kind == "inner":
                cond.append(p)
            else:
                above.append(p)
        if kind == "right":
            # plan as a left join with the sides swapped, then restore the column order
            swapped_cols = right.columns + left.columns
            nr = len(right.columns)
            mapping = {i: i + nr for i in range(nl)}
            mapping.update({nl + j: j for j in range(nr)})
            for c in cond:
                for e in c.walk():
                    if isinstance(e, ColRef):
                        e.index = mapping[e.index]
            right.nullable = False
            left.nullable = True
            node = self._join_two(right, left, "left", cond, swapped_cols)
            node = N.Project(node, columns, [], [nr + i for i in range(nl)] + list(range(nr)))
        else:
            node = self._join_two(left, right, kind, cond, columns)
        if above:
            node = filter_node(node, above)
        return node

    def _materialize(self, source: Source, pushed: list[Expr]) -> N.Node:
        """A FROM item's node, reading a base table through the best index for `pushed`."""
        if source.deferred is not None:
            return source.deferred(pushed)
        if source.node is not None:
            if pushed:
                return filter_node(source.node, pushed)
            return source.node
        table, codec = source.table, source.codec
        assert table is not None and codec is not None
        cons = index_select.choose(table, codec, pushed, source.hint)
        if source.hint is not None and cons is None and source.hint != table.primary_index.name:
            if table.find_index(source.hint) is None:
                raise errors.PgError(errors.UNDEFINED_OBJECT, f'index "{source.hint}" not found')
        residual = list(pushed)
        if cons is None:
            node: N.Node = N.Scan(source.columns, codec, lambda ctx, s=codec.primary_span: [s])
        else:
            # the spans are exact: what they enforce needs no filter
            for e in cons.eq_exprs + cons.range_conjuncts:
                residual.remove(e)
            if cons.is_point and cons.index.is_primary:
                node = N.PointGet(source.columns, codec, index_select.point_key_function(cons))
            elif cons.index.is_primary:
                node = N.Scan(source.columns, codec, index_select.span_function(cons))
                # every span one whole primary key (k IN (...)): rows an UPDATE may lock
                node.points = (cons.pinned == len(cons.index.column_ids)
                               and cons.lower is None and cons.upper is None)
            else:
                node = N.IndexScan(source.columns, codec, cons.codec, index_select.span_function(cons),
                                   covering=self._covers(table, cons.codec))
        node.info = [f"spans: {index_select.describe_spans(cons)}"]
        if residual:
            node = filter_node(node, residual)
        return node

    def _covers(self, table: TableDesc, ic: Any) -> bool:
        """Whether every column of the table the statement names is in the index's entries."""
        if self.referenced is None:
            return False
        stored = {table.columns[p].name for p in ic.stored_positions}
        return all(c.name in stored for c in table.columns if c.name in self.referenced)

    def _join_sources(self, sources: list[Source], offsets: list[int], where: list[Expr],
                      all_columns: list[ScopeColumn]) -> tuple[N.Node, list[Expr]]:
        """Join comma-separated FROM items, pushing WHERE conjuncts down: in FROM order, or in the
        order join_order() picks so that each item joins on a condition rather than as a cross
        product (then a projection restores FROM order's columns, which the rest of the plan uses)."""
        order = join_order(sources, where)
        if order is None:
            return self._join_in_order(sources, offsets, where, all_columns)
        to_new: dict[int, int] = {}
        new_offsets: list[int] = []
        for i in order:
            new_offsets.append(len(to_new))
            for k in range(len(sources[i].columns)):
                to_new[offsets[i] + k] = len(to_new)
        _remap(where, to_new)
        node, remaining = self._join_in_order([sources[i] for i in order], new_offsets, where,
                                              [c for i in order for c in sources[i].columns])
        _remap(remaining, {new: old for old, new in to_new.items()})
        return N.Project(node, all_columns, [], [to_new[c] for c in range(len(all_columns))]), remaining

    def _join_in_order(self, sources: list[Source], offsets: list[int], where: list[Expr],
                       all_columns: list[ScopeColumn]) -> tuple[N.Node, list[Expr]]:
        """Join comma-separated FROM items left to right, pushing WHERE conjuncts down."""
        if not sources:
            return N.OneRow(), where
        # Which FROM item each column belongs to.
        owner = []
        for i, s in enumerate(sources):
            owner.extend([i] * len(s.columns))
        per_source: list[list[Expr]] = [[] for _ in sources]
        rest: list[Expr] = []
        for conj in where:
            used = {e.index for e in conj.walk() if isinstance(e, ColRef)}
            has_sub = any(isinstance(e, Subquery) for e in conj.walk())
            items = {owner[i] for i in used}
            if len(items) == 1 and not has_sub:
                (i,) = items
                if not sources[i].nullable:
                    per_source[i].append(_shift(conj, -offsets[i]))
                    continue
            rest.append(conj)
        if len(sources) == 1:
            return self._materialize(sources[0], per_source[0]), rest
        # Join left to right; a WHERE conjunct joins in as soon as all its columns are present.
        left = Source(self._materialize(sources[0], per_source[0]), list(sources[0].columns))
        width = len(sources[0].columns)
        remaining = rest
        for i in range(1, len(sources)):
            right = sources[i]
            width_after = width + len(right.columns)
            conds = []
            later = []
            for conj in remaining:
                used = {e.index for e in conj.walk() if isinstance(e, ColRef)}
                has_sub = any(isinstance(e, Subquery) for e in conj.walk())
                if not has_sub and used and max(used) < width_after:
                    conds.append(conj)
                else:
                    later.append(conj)
            remaining = later
            right_src = Source(right.node, right.columns, right.table, right.codec, right.alias,
                               right.hint, pushed=per_source[i], deferred=right.deferred)
            cols = left.columns + right.columns
            node = self._join_two(left, right_src, "inner", conds, cols)
            left = Source(node, cols)
            width = width_after
        return left.node, remaining

    def _join_two(self, left: Source, right: Source, kind: str, cond: list[Expr],
                  columns: list[ScopeColumn]) -> N.Node:
        nl = len(left.columns)
        left_node = self._materialize(left, left.pushed)
        # Conjuncts over the right side alone can be pushed into it for inner and left joins.
        right_only = []
        both = []
        for c in cond:
            used = {e.index for e in c.walk() if isinstance(e, ColRef)}
            has_sub = any(isinstance(e, Subquery) for e in c.walk())
            if used and min(used) >= nl and kind in ("inner", "left") and not has_sub:
                right_only.append(_shift(c, -nl))
            else:
                both.append(c)
        pushed = right.pushed + right_only
        # Equalities between a left expression and a right column.
        equalities = []
        for c in both:
            if isinstance(c, Compare) and c.op == "=":
                lu = {e.index for e in c.left.walk() if isinstance(e, ColRef)}
                ru = {e.index for e in c.right.walk() if isinstance(e, ColRef)}
                if lu and ru and max(lu) < nl and min(ru) >= nl:
                    equalities.append((c, c.left, c.right))
                elif lu and ru and max(ru) < nl and min(lu) >= nl:
                    equalities.append((c, c.right, c.left))
        if kind in ("inner", "left") and right.table is not None and right.node is None and equalities:
            lookup = self._lookup_join(left_node, right, kind, equalities, both, pushed, columns, nl)
            if lookup is not None:
                return lookup
        right_node = self._materialize(right, pushed)
        if equalities:
            residual = [c for c in both if all(c is not eq[0] for eq in equalities)]
            info = [_equality_info([eq[1] for eq in equalities], [eq[2] for eq in equalities])]
            if residual:
                info.append(f"pred: {format_expr(make_and(residual))}")
            lkeys = [eq[1].compile() for eq in equalities]
            rkeys = [_shift(eq[2], -nl).compile() for eq in equalities]
            join: N.Node = N.HashJoin(left_node, right_node, kind, lkeys, rkeys,
                                      make_and(residual).compile() if residual else None, columns)
            join.info = info
            return join
        pred = make_and(both)
        join = N.NestedLoopJoin(left_node, right_node, kind if cond or kind != "inner" else "cross",
                                pred.compile() if pred is not None else None, columns)
        join.info = [f"pred: {format_expr(pred)}"] if pred is not None else []
        return join

    def _lookup_join(self, left_node: N.Node, right: Source, kind: str, equalities: list,
                     cond: list[Expr], pushed: list[Expr], columns: list[ScopeColumn], nl: int) -> N.Node | None:
        table, codec = right.table, right.codec
        assert table is not None and codec is not None
        best = None
        for ic in [codec.primary, *codec.secondaries]:
            key_fns = []
            used = []
            for pos in ic.positions:
                hit = None
                for eq in equalities:
                    r = eq[2]
                    if isinstance(r, ColRef) and r.index - nl == pos and eq[1].type.family == r.type.family:
                        hit = eq
                        break
                if hit is None:
                    break
                key_fns.append(hit[1].compile())
                used.append(hit[0])
            if key_fns and (best is None or len(key_fns) > len(best[1])):
                best = (ic, key_fns, used, [hit_pair for hit_pair in _pairs(used, equalities)])
        if best is None:
            return None
        ic, key_fns, used, pairs = best
        residual = [c for c in cond if all(c is not u for u in used)]
        residual += [_shift(p, nl) for p in pushed]
        join = N.LookupJoin(left_node, right.columns, codec, ic, key_fns, kind,
                            make_and(residual).compile() if residual else None, columns)
        join.info = [_equality_info([p[0] for p in pairs], [p[1] for p in pairs])]
        if residual:
            join.info.append(f"pred: {format_expr(make_and(residual))}")
        return join

    # ---- subqueries ----------------------------------------------------------------------

    def _plan_subquery(self, node: dict, scope: Scope, bctx: BuildContext) -> tuple[Callable, list[ScopeColumn], bool]:
        chain = []
        s: Scope | None = scope
        while s is not None:
            chain.append(s)
            s = s.outer
        before = sum(x.inner_refs for x in chain)
        plan = self.plan_query(node, scope)
        # Correlated when the subquery read a column of this query or of an enclosing one.
        correlated = sum(x.inner_refs for x in chain) != before
        root = plan.node

        def run(ctx: ExecCtx) -> list[tuple]:
            return list(root.rows(ctx))
        return run, plan.columns, correlated


def _order_info(node: N.Node, sort_refs: list) -> str:
    names = [c.name for c in node.columns]
    return "order: " + ",".join(("-" if d else "+") + names[p] for p, d, _ in sort_refs)


def with_mutations_first(plan: QueryPlan, first: list[N.Node]) -> QueryPlan:
    if not first:
        return plan
    return QueryPlan(N.RunFirst(first, plan.node), plan.columns)


def _unqualified(c: ScopeColumn) -> bool:
    """Whether an unqualified name or * can reach the column."""
    return not c.hidden and not c.qualified_only


def _merge_using(node: N.Node, columns: list[ScopeColumn], pairs: list[tuple[int, int]],
                 kind: str) -> tuple[N.Node, list[ScopeColumn]]:
    """JOIN ... USING / NATURAL JOIN: each joined column once, first, under its bare name (the
    left value, the right one for RIGHT JOIN, the non-NULL one for FULL JOIN); the sides'
    own columns stay reachable by qualified name only."""
    fns: list[Callable] = []
    merged = []
    for li, ri in pairs:
        lc, rc = columns[li], columns[ri]
        typ = lc.type if lc.type.family != "unknown" else rc.type
        merged.append(ScopeColumn(lc.name, typ, ""))
        if kind == "full":
            fns.append(lambda row, ctx, li=li, ri=ri: row[li] if row[li] is not None else row[ri])
        else:
            fns.append(_pos_fn(ri if kind == "right" else li))
    joined = {i for pair in pairs for i in pair}
    rest = []
    for i, c in enumerate(columns):
        if i in joined:
            c = ScopeColumn(c.name, c.type, c.table, c.hidden, c.table_id, c.column_id, qualified_only=True)
        rest.append(c)
        fns.append(_pos_fn(i))
    out_columns = merged + rest
    return N.Project(node, out_columns, fns), out_columns


def _pairs(used: list[Expr], equalities: list) -> list[tuple[Expr, Expr]]:
    return [(eq[1], eq[2]) for u in used for eq in equalities if eq[0] is u]


def _equality_info(left: list[Expr], right: list[Expr]) -> str:
    return (f"equality: ({', '.join(format_expr(e) for e in left)}) = "
            f"({', '.join(format_expr(e) for e in right)})")


def node_key_expr(e: Expr) -> str:
    if isinstance(e, ColRef):
        return f"col{e.index}"
    return repr(e)


def _pos_fn(p: int) -> Callable:
    return lambda row, ctx: row[p]


def _sort_direction(sb: dict) -> tuple[bool, bool | None]:
    desc = sb.get("sortby_dir") == "SORTBY_DESC"
    nulls = sb.get("sortby_nulls", "SORTBY_NULLS_DEFAULT")
    nulls_first = None if nulls == "SORTBY_NULLS_DEFAULT" else nulls == "SORTBY_NULLS_FIRST"
    return desc, nulls_first


def _output_type(t: T.SQLType) -> T.SQLType:
    return t


def _is_null(e: Expr) -> bool:
    return isinstance(e, Const) and e.value is None


def _rename(cols: list[ScopeColumn], alias_node: dict | None, alias: str) -> list[ScopeColumn]:
    names = [n["String"]["sval"] for n in (alias_node or {}).get("colnames", [])] if alias_node else []
    out = []
    for i, c in enumerate(cols):
        out.append(ScopeColumn(names[i] if i < len(names) else c.name, c.type, alias, c.hidden,
                               c.table_id, c.column_id))
    return out


def join_order(sources: list[Source], where: list[Expr]) -> list[int] | None:
    """The order to join comma-separated FROM items in, None for FROM order. Greedy: the first item
    first, then each time the first remaining item that a WHERE conjunct links to the items already
    joined (so it joins on that condition), else the first remaining one (a cross product nothing
    avoids). `FROM a, b, c WHERE a.x = c.x AND b.y = c.y` joins a, c, b: FROM order would build a x b
    first, which grows with every item (a query of SQLite's corpus joining 17 such tables never
    finished). Only plain items are reordered: none on the nullable side of an outer join, no
    JOIN ... ON built later, and no conjunct with a subquery (its column references are another
    scope's)."""
    if len(sources) < 3 or any(s.nullable or s.deferred is not None for s in sources):
        return None
    if any(isinstance(e, Subquery) for conj in where for e in conj.walk()):
        return None
    owner = [i for i, s in enumerate(sources) for _ in s.columns]
    links = []
    for conj in where:
        items = frozenset(owner[e.index] for e in conj.walk() if isinstance(e, ColRef))
        if len(items) > 1:
            links.append(items)
    if not links:
        return None
    order, joined = [0], {0}
    remaining = list(range(1, len(sources)))
    while remaining:
        pick = next((r for r in remaining if any(r in items and items - {r} <= joined for items in links)),
                    remaining[0])
        order.append(pick)
        joined.add(pick)
        remaining.remove(pick)
    return None if order == list(range(len(sources))) else order


def _remap(exprs: list[Expr], mapping: dict[int, int]) -> None:
    for e in exprs:
        for x in e.walk():
            if isinstance(x, ColRef):
                x.index = mapping[x.index]


def _shift(e: Expr, delta: int) -> Expr:
    for x in e.walk():
        if isinstance(x, ColRef):
            x.index += delta
    return e


def filter_node(node: N.Node, predicates: list[Expr]) -> N.Filter:
    pred = make_and(predicates)
    assert pred is not None
    out = N.Filter(node, pred.compile())
    out.info = [f"filter: {format_expr(pred)}"]
    return out


def _ordering(node: N.Node) -> list[tuple[int, bool]]:
    """The (column position, descending) order the node's rows come in, as far as known."""
    if isinstance(node, (N.Scan, N.PointGet, N.IndexScan)):
        ic = node.index if isinstance(node, N.IndexScan) else node.codec.primary
        reverse = getattr(node, "reverse", False)
        order = [(p, (d == "desc") != reverse) for p, d in zip(ic.positions, ic.index.directions)]
        if isinstance(node, N.IndexScan):
            # entries with equal index values follow in primary key order
            pk = node.codec.primary
            order += [(p, (d == "desc") != reverse) for p, d in zip(pk.positions, pk.index.directions)
                      if p not in ic.positions]
        return order
    if isinstance(node, (N.Filter, N.Limit, N.Rename, N.LookupJoin)):
        return _ordering(node.left if isinstance(node, N.LookupJoin) else node.child)
    if isinstance(node, (N.HashJoin, N.NestedLoopJoin)) and node.kind in ("inner", "left", "cross"):
        return _ordering(node.left)
    if isinstance(node, N.Project):
        sources = node.positions if node.positions is not None else getattr(node, "sources", None)
        if sources is None:
            return []
        out = []
        for p, desc in _ordering(node.child):
            if p not in sources:
                break
            out.append((sources.index(p), desc))
        return out
    return []


def _provide_order(node: N.Node, sort_refs: list) -> bool:
    """Whether the rows already come sorted as sort_refs ask, possibly by reading the index
    backwards (which this turns on). NULLs sort as the index stores them: first ascending,
    last descending."""
    have = _ordering(node)
    want = [(p, d) for p, d, _ in sort_refs]
    if any(nl is not None and nl != (not d) for _, d, nl in sort_refs) or len(want) > len(have):
        return False
    if have[:len(want)] == want:
        return True
    if have[:len(want)] == [(p, not d) for p, d in want]:
        scan = _reversible_scan(node)
        if scan is not None:
            scan.reverse = not scan.reverse
            return True
    return False


def _reversible_scan(node: N.Node) -> N.Scan | N.IndexScan | None:
    while isinstance(node, (N.Filter, N.Project, N.Rename)):
        node = node.child
    return node if isinstance(node, (N.Scan, N.IndexScan)) else None


def _hint_limit(node: N.Limit) -> None:
    """LIMIT n over a scan (through renders that keep every row): read at most offset + n keys."""
    child = node.child
    while isinstance(child, (N.Project, N.Rename)):
        child = child.child
    if isinstance(child, (N.Scan, N.IndexScan)) and child.limit_hint is None:
        limit, offset = node.limit, node.offset

        def hint(ctx: ExecCtx) -> int:
            n = limit((), ctx) if limit is not None else None
            o = offset((), ctx) if offset is not None else 0
            if n is None:
                return 0
            return max(n + (o or 0), 0) or 1
        child.limit_hint = hint

