"""INSERT / UPSERT / UPDATE / DELETE -> mutation operators.

The planner resolves the target table, types each value for its column (a placeholder or string
literal takes the column's type; other values get an assignment cast, or 42804 when none
exists), compiles DEFAULT and CHECK expressions from the descriptor, picks the arbiter index for
ON CONFLICT, and plans the rows to change with the query planner (so UPDATE and DELETE get
index selection on their WHERE clause like SELECT does).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.catalog.descriptors import TableDesc
from pillbug.sql.exec import fk as FK
from pillbug.sql.exec import mutations as M
from pillbug.sql.exec import nodes as N
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt.planner import Planner, QueryPlan, Source, filter_node
from pillbug.sql.parser.front import Statement, parse_expression
from pillbug.sql.rowenc import IndexCodec, TableCodec
from pillbug.sql.sem import casts
from pillbug.sql.sem.build import ExprBuilder, Scope, ScopeColumn, coerce
from pillbug.sql.sem.expr import ArrayCtor, Cast, Compiled, Const, Expr, Subquery, conjuncts
from pillbug.util import errors


@lru_cache(maxsize=4096)
def _parsed_expression(text: str) -> dict:
    return parse_expression(text)


def assign_expr(e: Expr, col_name: str, col_type: T.SQLType, params: Any) -> Expr:
    """Type a value bound for a column: infer placeholders, or apply the assignment cast."""
    if e.type.family == "unknown" or (isinstance(e, Const) and e.untyped) or \
            getattr(e, "lifted_kind", None) is not None or \
            (isinstance(e, ArrayCtor) and col_type.elem is not None and col_type.elem.family == "enum"):
        try:
            e = coerce(e, col_type, params)
        except errors.PgError as exc:
            if exc.code == errors.DATATYPE_MISMATCH:
                raise _mismatch(e, col_name, col_type) from None
            raise
    try:
        conv = casts.assignment_fn(e.type, col_type)
    except errors.PgError as exc:
        if exc.code == errors.DATATYPE_MISMATCH:
            raise _mismatch(e, col_name, col_type) from None
        raise
    if conv is None:
        return e
    if isinstance(e, Const):
        return Const(None if e.value is None else conv(e.value, None), col_type)
    return Cast(e, col_type, conv)


def _mismatch(e: Expr, col_name: str, col_type: T.SQLType) -> errors.PgError:
    return errors.datatype_mismatch(
        f'value type {e.type.display} doesn\'t match type {col_type.display} '
        f'of column "{col_name}"')


def table_scope(table: TableDesc, alias: str) -> Scope:
    return Scope([ScopeColumn(c.name, c.type, alias, c.hidden, table.id, c.id) for c in table.columns])


def default_fns(planner: Planner, table: TableDesc) -> list[Compiled | None]:
    """Per column, its DEFAULT compiled (None: NULL)."""
    out: list[Compiled | None] = []
    builder = ExprBuilder(planner.bctx, Scope([]), clause="DEFAULT")
    for col in table.columns:
        if col.default is None:
            out.append(None)
            continue
        e = assign_expr(builder.build(_parsed_expression(col.default)), col.name, col.type, planner.params)
        out.append(e.compile())
    return out


def row_checks(planner: Planner, table: TableDesc) -> M.RowChecks:
    not_null = [(i, c.name) for i, c in enumerate(table.columns) if not c.nullable]
    checks = []
    if table.checks:
        builder = ExprBuilder(planner.bctx, table_scope(table, table.name), clause="CHECK")
        for chk in table.checks:
            checks.append((builder.build_predicate(_parsed_expression(chk.expr)).compile(), chk.expr))
    return M.RowChecks(not_null, checks)


def table_writer(planner: Planner, table: TableDesc, verb: str) -> M.TableWriter:
    """A writer for a statement's target table, with the foreign keys it must honour."""
    compiler = FK.compiler_from(planner.env.catalog, planner.env.codec,
                                lambda t: row_checks(planner, t), lambda t: default_fns(planner, t))
    return M.TableWriter(planner.env.codec(table), FK.plan_table(table, compiler), verb)


def _fk_info(writer: M.TableWriter) -> list[str]:
    return writer.fks.explain_lines() if writer.fks is not None else []


def _returning(planner: Planner, body: dict, scope: Scope) -> tuple[list[Compiled] | None, list[ScopeColumn]]:
    items = (body.get("returningClause") or {}).get("exprs")
    if not items:
        return None, []
    builder = ExprBuilder(planner.bctx, scope, clause="RETURNING")
    exprs, names = planner._targets(items, scope, builder)
    exprs = [coerce(e, T.STRING, planner.params) if e.type.family == "unknown" else e for e in exprs]
    cols = [ScopeColumn(n, e.type) for e, n in zip(exprs, names)]
    return [e.compile() for e in exprs], cols


def _resolve_target(planner: Planner, relation: dict, privileges: tuple[str, ...]) -> tuple[TableDesc, str]:
    names = [n for n in (relation.get("catalogname"), relation.get("schemaname"), relation["relname"]) if n]
    kind, obj = planner.env.resolve_table_name(names)
    if kind != "table" or obj.is_view or obj.is_sequence:
        raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{relation["relname"]}" is not a table')
    for p in privileges:
        planner.env.check_privilege(obj, p)
    alias = relation.get("alias", {}).get("aliasname") if relation.get("alias") else None
    return obj, alias or relation["relname"]


def _arbiter(table: TableDesc, codec: TableCodec, infer: dict | None) -> IndexCodec | None:
    if infer is None:
        return None
    if infer.get("conname"):
        for ic in [codec.primary, *codec.secondaries]:
            if ic.index.name == infer["conname"] and ic.is_unique:
                return ic
        raise errors.undefined_object(f'constraint "{infer["conname"]}" does not exist')
    names = []
    for elem in infer.get("indexElems") or []:
        ie = elem["IndexElem"]
        if "name" not in ie:
            raise errors.unimplemented("ON CONFLICT on expressions is not supported")
        names.append(ie["name"])
    wanted = {table.column(n).id for n in names}
    for ic in [codec.primary, *codec.secondaries]:
        if ic.is_unique and set(ic.index.column_ids) == wanted:
            return ic
    raise errors.PgError(errors.INVALID_COLUMN_REFERENCE,
                         "there is no unique or exclusion constraint matching the ON CONFLICT specification")


def plan_insert(planner: Planner, stmt: Statement) -> QueryPlan:
    body = stmt.node
    on_conflict_clause = body.get("onConflictClause")
    upsert = stmt.upsert
    privileges: tuple[str, ...] = ("INSERT",)
    if upsert or (on_conflict_clause and on_conflict_clause.get("action") == "ONCONFLICT_UPDATE"):
        privileges = ("INSERT", "UPDATE", "SELECT")
    table, alias = _resolve_target(planner, body["relation"], privileges)
    codec = planner.env.codec(table)
    if body.get("cols"):
        target = []
        for c in body["cols"]:
            rt = c["ResTarget"]
            if rt.get("indirection"):
                raise errors.unimplemented("assigning to array elements or fields is not supported")
            target.append(table.column(rt["name"]))
    else:
        target = [c for c in table.columns if not c.hidden]
    seen = set()
    for c in target:
        if c.id in seen:
            raise errors.PgError(errors.SYNTAX_ERROR, f'multiple assignments to the same column "{c.name}"')
        seen.add(c.id)
    defaults = default_fns(planner, table)
    position = {c.id: i for i, c in enumerate(table.columns)}
    select = body.get("selectStmt")
    if select is None:
        source: N.Node = N.Values([], [[]])
        n_values = 0
    else:
        sel = select["SelectStmt"]
        if sel.get("valuesLists") and not sel.get("sortClause") and not sel.get("limitCount") \
                and not sel.get("withClause"):
            source, n_values = _values_source(planner, sel["valuesLists"], target, defaults, position)
        else:
            plan = planner.plan_query(select)
            if len(plan.columns) > len(target):
                raise errors.syntax_error(
                    f"INSERT has more expressions than target columns, {len(plan.columns)} expressions "
                    f"for {len(target)} targets")
            convs = []
            for col, src in zip(target, plan.columns):
                if src.type.family == "unknown":
                    convs.append(casts.cast_fn(T.STRING, col.type, explicit=False))
                    continue
                try:
                    convs.append(casts.assignment_fn(src.type, col.type))
                except errors.PgError:
                    raise errors.datatype_mismatch(
                        f'value type {src.type.display} doesn\'t match type '
                        f'{col.type.display} of column "{col.name}"') from None
            source = plan.node
            if any(c is not None for c in convs):
                fns = [(lambda row, ctx, i=i, f=f: None if row[i] is None else f(row[i], ctx))
                       if f is not None else (lambda row, ctx, i=i: row[i]) for i, f in enumerate(convs)]
                source = N.Project(source, plan.columns, fns)
            n_values = len(plan.columns)
    # slots: per table column, the source position or its default
    src_pos = {col.id: i for i, col in enumerate(target[:n_values])}
    slots = [(src_pos.get(c.id), defaults[i] if c.id not in src_pos else None)
             for i, c in enumerate(table.columns)]

    def make_row(src: tuple, ctx: ExecCtx) -> tuple:
        return tuple([src[i] if i is not None else (d(src, ctx) if d is not None else None) for i, d in slots])

    checks = row_checks(planner, table)
    scope = table_scope(table, alias)
    returning, ret_cols = _returning(planner, body, scope)
    writer = table_writer(planner, table, "upsert" if upsert else "insert")
    node: N.Node
    if upsert:
        updated = [position[c.id] for c in target[:n_values]]

        def upsert_row(existing: tuple, proposed: tuple, ctx: ExecCtx) -> tuple:
            new = list(existing)
            for p in updated:
                new[p] = proposed[p]
            return tuple(new)
        node = M.Insert(source, writer, make_row, checks, ret_cols, returning, "update", codec.primary,
                        upsert_row)
    elif on_conflict_clause:
        action = on_conflict_clause["action"]
        arbiter = _arbiter(table, codec, on_conflict_clause.get("infer"))
        if action == "ONCONFLICT_NOTHING":
            node = M.Insert(source, writer, make_row, checks, ret_cols, returning, "nothing", arbiter)
        else:
            if arbiter is None:
                raise errors.syntax_error("ON CONFLICT DO UPDATE requires a conflict target",
                                          hint="name the unique columns: ON CONFLICT (col) DO UPDATE")
            excluded = [ScopeColumn(c.name, c.type, "excluded", c.hidden) for c in table.columns]
            combined = Scope(scope.columns + excluded)
            builder = ExprBuilder(planner.bctx, combined, clause="ON CONFLICT")
            sets = _set_clause(planner, builder, table, on_conflict_clause.get("targetList") or [], position)
            where = None
            if on_conflict_clause.get("whereClause"):
                where = builder.build_predicate(on_conflict_clause["whereClause"]).compile()
            width = len(table.columns)

            def conflict_row(existing: tuple, proposed: tuple, ctx: ExecCtx) -> tuple:
                both = existing + proposed
                new = list(existing)
                for p, f in sets:
                    new[p] = f(both, ctx)
                return tuple(new[:width])
            node = M.Insert(source, writer, make_row, checks, ret_cols, returning, "update", arbiter,
                            conflict_row, where)
    else:
        node = M.Insert(source, writer, make_row, checks, ret_cols, returning)
    node.info = _fk_info(writer)
    return QueryPlan(node, ret_cols)


def _values_source(planner: Planner, lists: list, target: list, defaults: list, position: dict) -> tuple[N.Node, int]:
    builder = ExprBuilder(planner.bctx, Scope([]), clause="VALUES")
    rows: list[list[Compiled]] = []
    width = None
    for lst in lists:
        items = lst["List"]["items"]
        if width is None:
            width = len(items)
        elif len(items) != width:
            raise errors.syntax_error("VALUES lists must all be the same length")
        if len(items) > len(target):
            raise errors.syntax_error(
                f"INSERT has more expressions than target columns, {len(items)} expressions for "
                f"{len(target)} targets")
        row = []
        for item, col in zip(items, target):
            if "SetToDefault" in item:
                d = defaults[position[col.id]]
                row.append(d if d is not None else (lambda r, ctx: None))
                continue
            row.append(assign_expr(builder.build(item), col.name, col.type, planner.params).compile())
        rows.append(row)
    return N.Values([], rows), width or 0


def _set_clause(planner: Planner, builder: ExprBuilder, table: TableDesc, target_list: list,
                position: dict) -> list[tuple[int, Compiled]]:
    sets = []
    seen = set()
    for t in target_list:
        rt = t["ResTarget"]
        val = rt["val"]
        if "MultiAssignRef" in val:
            source = val["MultiAssignRef"]["source"]
            if "RowExpr" not in source:
                raise errors.unimplemented("SET (a, b) = (SELECT ...) is not supported")
            values = source["RowExpr"]["args"]
            if len(values) != val["MultiAssignRef"]["ncolumns"]:
                raise errors.syntax_error(
                    f"number of columns ({val['MultiAssignRef']['ncolumns']}) does not match "
                    f"number of values ({len(values)})")
            val = values[val["MultiAssignRef"]["colno"] - 1]
        if rt.get("indirection"):
            raise errors.unimplemented("assigning to array elements or fields is not supported")
        col = table.column(rt["name"])
        if col.id in seen:
            raise errors.PgError(errors.SYNTAX_ERROR, f'multiple assignments to the same column "{col.name}"')
        seen.add(col.id)
        if "SetToDefault" in val:
            d = default_fns(planner, table)[position[col.id]]
            sets.append((position[col.id], d if d is not None else (lambda r, ctx: None)))
            continue
        e = assign_expr(builder.build(val), col.name, col.type, planner.params)
        sets.append((position[col.id], e.compile()))
    return sets


def lock_point_rows(node: N.Node) -> None:
    """Rows found by primary key (through filters; one key, or a list: k IN (...)) are locked as
    they are read, so that concurrent writers of one row queue for it rather than fail at commit
    (kv/locks.py); a list is locked a batch at a time, in key order (Txn.get_many_for_update)."""
    while isinstance(node, N.Filter):
        node = node.child
    if isinstance(node, N.PointGet) or (isinstance(node, N.Scan) and node.points and node.limit_hint is None):
        node.for_update = True


def _target_rows(planner: Planner, table: TableDesc, alias: str, body: dict, hint: str | None,
                 extra_from: list) -> tuple[N.Node, Scope]:
    """The rows a WHERE clause selects from the target table (through the best index), joined
    with the UPDATE ... FROM / DELETE ... USING tables when there are any (target columns first,
    each target row at most once), then ordered and limited (UPDATE/DELETE ... ORDER BY ... LIMIT)."""
    target = Source(None, table_scope(table, alias).columns, table, planner.env.codec(table), alias, hint)
    sources = [target] + [planner._plan_from_item(item, None) for item in extra_from]
    offsets = []
    columns: list[ScopeColumn] = []
    for src in sources:
        offsets.append(len(columns))
        columns.extend(src.columns)
    scope = Scope(columns)
    where: list[Expr] = []
    if body.get("whereClause") is not None:
        where = conjuncts(ExprBuilder(planner.bctx, scope, clause="WHERE").build_predicate(body["whereClause"]))
    simple = [c for c in where if not any(isinstance(e, Subquery) for e in c.walk())]
    correlated = [c for c in where if all(c is not s for s in simple)]
    node, residual = planner._join_sources(sources, offsets, simple, columns)
    if not extra_from:
        lock_point_rows(node)
    if residual or correlated:
        node = filter_node(node, residual + correlated)
    if extra_from:
        pk = [table.position(cid) for cid in table.primary_index.column_ids]
        node = N.Distinct(node, pk)
    sort = body.get("sortClause") or []
    if sort:
        builder = ExprBuilder(planner.bctx, scope, clause="ORDER BY")
        keys = []
        for item in sort:
            sb = item["SortBy"]
            desc = sb.get("sortby_dir") == "SORTBY_DESC"
            nulls = sb.get("sortby_nulls", "SORTBY_NULLS_DEFAULT")
            keys.append(N.SortKey(builder.build(sb["node"]).compile(), desc,
                                  None if nulls == "SORTBY_NULLS_DEFAULT" else nulls == "SORTBY_NULLS_FIRST"))
        node = N.Sort(node, keys)
    if body.get("limitCount") is not None or body.get("limitOffset") is not None:
        node = planner._apply_order_limit(body, node, [], scope)
    return node, scope


def plan_update(planner: Planner, stmt: Statement) -> QueryPlan:
    body = stmt.node
    table, alias = _resolve_target(planner, body["relation"], ("UPDATE", "SELECT"))
    hint = planner.index_hints.get(body["relation"].get("location", -2))
    extra = body.get("fromClause") or []
    source, scope = _target_rows(planner, table, alias, body, hint, extra)
    position = {c.id: i for i, c in enumerate(table.columns)}
    builder = ExprBuilder(planner.bctx, scope, clause="UPDATE")
    sets = _set_clause(planner, builder, table, body.get("targetList") or [], position)
    width = len(table.columns) if extra else None

    def set_row(row: tuple, ctx: ExecCtx) -> tuple:
        new = list(row) if width is None else list(row[:width])
        for p, f in sets:
            new[p] = f(row, ctx)
        return tuple(new)
    returning, ret_cols = _returning(planner, body, scope)
    writer = table_writer(planner, table, "update")
    node = M.Update(source, writer, set_row, row_checks(planner, table), ret_cols, returning, width)
    node.info = [f"set: {', '.join(table.columns[p].name for p, _ in sets)}", *_fk_info(writer)]
    return QueryPlan(node, ret_cols)


def plan_delete(planner: Planner, stmt: Statement) -> QueryPlan:
    body = stmt.node
    table, alias = _resolve_target(planner, body["relation"], ("DELETE", "SELECT"))
    hint = planner.index_hints.get(body["relation"].get("location", -2))
    extra = body.get("usingClause") or []
    source, scope = _target_rows(planner, table, alias, body, hint, extra)
    returning, ret_cols = _returning(planner, body, scope)
    writer = table_writer(planner, table, "delete")
    node = M.Delete(source, writer, ret_cols, returning, len(table.columns) if extra else None)
    node.info = _fk_info(writer)
    return QueryPlan(node, ret_cols)
