"""Schema changes: CREATE/DROP/ALTER/RENAME of databases, schemas, tables, indexes, views and
sequences, and TRUNCATE.

Every change writes descriptors, namespace entries and (for new or dropped indexes and columns)
data, all in the session's transaction, and bumps the catalog version, so DDL is transactional
and serializes against concurrent statements like any other write. Stored DEFAULT and CHECK
expressions are kept as SQL text, printed by pglast's deparser.
"""
from __future__ import annotations

import functools
from typing import Any

import pglast
from pglast.stream import RawStream

from pillbug.sql import access, fk_ddl, unsupported
from pillbug.sql import types as T
from pillbug.sql.catalog import system
from pillbug.sql.catalog.descriptors import (
    PUBLIC_SCHEMA,
    CheckDesc,
    ColumnDesc,
    DatabaseDesc,
    IndexDesc,
    Privileges,
    SchemaDesc,
    TableDesc,
)
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.mutations import TableWriter, sql_literal, unique_error
from pillbug.sql.exec.nodes import READ_BATCH
from pillbug.sql.opt.mutations import assign_expr, row_checks, table_scope
from pillbug.sql.opt.planner import Planner
from pillbug.sql.parser.front import Statement, parse_expression
from pillbug.sql.rowenc import TableCodec, table_prefix
from pillbug.sql.sem.build import BuildContext, ExprBuilder, ParamTypes, Scope, is_serial_type, type_from_node
from pillbug.sql.sem.expr import ColRef
from pillbug.util import encoding as enc
from pillbug.util import errors

ROWID = "rowid"


def deparse(node: Any) -> str:
    return RawStream()(node)


def _ast(stmt: Statement) -> Any:
    return pglast.parse_sql(stmt.parse_text or stmt.text)[0].stmt


def _notice(session: Any, message: str) -> None:
    session.pending_notices.append(message)


def _changed(session: Any) -> None:
    system.bump_version(session.txn)
    session.catalog_changed()


def _range_names(rv: dict) -> list[str]:
    return [n for n in (rv.get("catalogname"), rv.get("schemaname"), rv["relname"]) if n]


def _target_db_schema(session: Any, names: list[str]) -> tuple[DatabaseDesc, int, str]:
    """(database, schema id, object name) for a name being created."""
    catalog = session.catalog
    if len(names) == 3:
        db_name, schema = names[0], names[1]
    elif len(names) == 2:
        db = catalog.database(session.database)
        if db is not None and names[0] in db.schemas:
            db_name, schema = session.database, names[0]
        else:
            db_name, schema = names[0], PUBLIC_SCHEMA
    else:
        db_name, schema = session.database, PUBLIC_SCHEMA
    db = catalog.database(db_name)
    if db is None:
        raise errors.undefined_database(db_name)
    if schema in ("pg_catalog", "information_schema", "crdb_internal"):
        raise errors.insufficient_privilege(f"schema cannot be modified: \"{schema}\"")
    schema_id = db.schemas.get(schema)
    if schema_id is None:
        raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{schema}" does not exist')
    return db, schema_id, names[-1]


def _check_create(session: Any, db: DatabaseDesc, schema_id: int) -> None:
    catalog = session.catalog
    schema = catalog.by_id.get(schema_id)
    if not (access.has_privilege(catalog, session.user, db, "CREATE") or
            (schema is not None and access.has_privilege(catalog, session.user, schema, "CREATE"))):
        raise errors.insufficient_privilege(
            f"user {session.user} does not have CREATE privilege on database {db.name}")


def _name_taken(session: Any, db: DatabaseDesc, schema_id: int, name: str) -> bool:
    key = (db.id, schema_id, name)
    return session.catalog.tables.get(key) is not None or session.catalog.types.get(key) is not None


# ---- tables ----------------------------------------------------------------------------------

def create_table(session: Any, stmt: Statement) -> str:
    body = stmt.node
    if body.get("inhRelations") or body.get("partbound") or body.get("partspec"):
        raise errors.unimplemented("table inheritance and partitioning are not supported")
    if body.get("relation", {}).get("relpersistence") == "t":
        raise errors.unimplemented("temporary tables are not supported")
    names = _range_names(body["relation"])
    db, schema_id, name = _target_db_schema(session, names)
    _check_create(session, db, schema_id)
    system.check_name(name, "table")
    if _name_taken(session, db, schema_id, name):
        if body.get("if_not_exists"):
            _notice(session, f'relation "{name}" already exists, skipping')
            return "CREATE TABLE"
        raise errors.duplicate_table(name)
    ast = _ast(stmt)
    table = build_table_desc(session, stmt, body, ast, db, schema_id, name)
    txn = session.txn
    system.write_descriptor(txn, table)
    system.write_namespace(txn, db.id, schema_id, name, table.id)
    _changed(session)
    return "CREATE TABLE"


def build_table_desc(session: Any, stmt: Statement, body: dict, ast: Any, db: DatabaseDesc,
                     schema_id: int, name: str) -> TableDesc:
    columns: list[ColumnDesc] = []
    pk_cols: list[tuple[str, str]] | None = None
    pk_name: str | None = None
    # secondary indexes in the order they appear: (position, name, keys, unique, storing)
    indexes: list[tuple[int, str | None, list[tuple[str, str]], bool, list[str]]] = []
    checks: list[tuple[str | None, str]] = []
    fk_cons: list[dict] = []
    next_id = 1
    for elt, elt_ast in zip(body.get("tableElts") or [], ast.tableElts or []):
        if "ColumnDef" in elt:
            cd = elt["ColumnDef"]
            col, col_pk, col_unique, col_checks = _column_from_def(session, cd, elt_ast, next_id)
            if any(c.name == col.name for c in columns):
                raise errors.PgError(errors.DUPLICATE_COLUMN, f'column "{col.name}" specified more than once')
            columns.append(col)
            next_id += 1
            if col_pk:
                if pk_cols is not None:
                    raise errors.PgError(errors.INVALID_TABLE_DEFINITION,
                                         f'multiple primary keys for table "{name}" are not allowed')
                pk_cols = [(col.name, "asc")]
            if col_unique:
                indexes.append((cd.get("location", 0), None, [(col.name, "asc")], True, []))
            checks.extend(col_checks)
            fk_cons.extend(fk_ddl.inline_constraints(cd))
        elif "Constraint" in elt:
            con = elt["Constraint"]
            ctype = con["contype"]
            keys = _constraint_keys(stmt, con)
            if ctype == "CONSTR_PRIMARY":
                if pk_cols is not None:
                    raise errors.PgError(errors.INVALID_TABLE_DEFINITION,
                                         f'multiple primary keys for table "{name}" are not allowed')
                pk_cols = keys
                pk_name = con.get("conname")
            elif ctype == "CONSTR_UNIQUE":
                indexes.append((con.get("location", 0), con.get("conname"), keys, True, []))
            elif ctype == "CONSTR_CHECK":
                checks.append((con.get("conname"), deparse(elt_ast.raw_expr)))
            elif ctype == "CONSTR_FOREIGN":
                fk_cons.append(con)
            else:
                raise unsupported.constraint(ctype)
        else:
            raise unsupported.table_element(next(iter(elt)))
    if not columns:
        raise errors.PgError(errors.INVALID_TABLE_DEFINITION, "table must contain at least 1 column")
    by_name = {c.name: c for c in columns}
    if pk_cols is None:
        rowid = ColumnDesc(next_id, _unique_name(ROWID, by_name), T.INT8, nullable=False,
                           default="unique_rowid()", hidden=True)
        columns.append(rowid)
        by_name[rowid.name] = rowid
        next_id += 1
        pk_cols = [(rowid.name, "asc")]
    _check_distinct_columns(pk_name or f"{name}_pkey", [c for c, _ in pk_cols])
    for col_name, _ in pk_cols:
        col = by_name.get(col_name)
        if col is None:
            raise errors.undefined_column(col_name)
        col.nullable = False
        _check_indexable(col)
    table_id = system.allocate_id(session.txn)
    primary = IndexDesc(1, pk_name or f"{name}_pkey", [by_name[c].id for c, _ in pk_cols],
                        [d for _, d in pk_cols], unique=True, is_primary=True)
    table = TableDesc(table_id, name, db.id, schema_id, columns, primary, [],
                      system.default_privileges(session.user), [], next_id, 2)
    for idx_node in stmt.inline_indexes:
        keys, storing = _index_params(idx_node)
        indexes.append((idx_node.get("location", 0), idx_node.get("idxname"), keys,
                        bool(idx_node.get("unique")), storing))
    for _, idx_name, keys, unique, storing in sorted(indexes, key=lambda i: i[0]):
        _add_index(table, idx_name, keys, unique=unique, storing=storing)
    for con_name, expr_text in checks:
        _add_check(session, table, con_name, expr_text)
    for con in fk_cons:
        fk_ddl.add_foreign_key(session, table, con)
    _validate_defaults(session, table)
    return table


def _constraint_keys(stmt: Statement, con: dict) -> list[tuple[str, str]]:
    """The (column, direction) pairs of a PRIMARY KEY or UNIQUE constraint."""
    names = [k["String"]["sval"] for k in con.get("keys") or []]
    dirs = stmt.key_directions.get(con.get("location", -1)) or ["asc"] * len(names)
    return list(zip(names, dirs))


def _unique_name(base: str, taken: dict) -> str:
    name = base
    i = 1
    while name in taken:
        name = f"{base}{i}"
        i += 1
    return name


def _check_indexable(col: ColumnDesc) -> None:
    if not T.is_indexable(col.type):
        raise errors.PgError(errors.FEATURE_NOT_SUPPORTED,
                             f"column {col.name} is of type {col.type.display} and thus is not indexable")


def _type_resolver(session: Any) -> Any:
    return functools.partial(session.catalog.resolve_type, session.database)


def _column_from_def(session: Any, cd: dict, cd_ast: Any, column_id: int) -> tuple[ColumnDesc, bool, bool, list]:
    name = cd["colname"]
    type_node = cd["typeName"]
    typ = type_from_node(type_node, _type_resolver(session))
    col = ColumnDesc(column_id, name, typ)
    if is_serial_type(type_node):
        col.default = "unique_rowid()"
        col.nullable = False
    is_pk = unique = False
    checks: list[tuple[str | None, str]] = []
    explicit_null = False
    for con, con_ast in zip(cd.get("constraints") or [], cd_ast.constraints or []):
        c = con["Constraint"]
        ctype = c["contype"]
        if ctype == "CONSTR_NOTNULL":
            col.nullable = False
        elif ctype == "CONSTR_NULL":
            explicit_null = True
            col.nullable = True
        elif ctype == "CONSTR_DEFAULT":
            col.default = deparse(con_ast.raw_expr)
        elif ctype == "CONSTR_PRIMARY":
            is_pk = True
        elif ctype == "CONSTR_UNIQUE":
            unique = True
        elif ctype == "CONSTR_CHECK":
            checks.append((c.get("conname"), deparse(con_ast.raw_expr)))
        elif ctype == "CONSTR_IDENTITY":
            col.default = "unique_rowid()"
            col.nullable = False
        elif ctype == "CONSTR_FOREIGN":
            pass  # the caller adds it once the table is complete (fk_ddl.inline_constraints)
        elif ctype in ("CONSTR_GENERATED",):
            raise errors.unimplemented("computed columns are not supported")
        else:
            raise unsupported.constraint(ctype)
    if explicit_null and is_pk:
        raise errors.syntax_error(f'conflicting NULL/NOT NULL declarations for column "{name}"')
    return col, is_pk, unique, checks


def _index_params(idx: dict) -> tuple[list[tuple[str, str]], list[str]]:
    keys = []
    for p in idx.get("indexParams") or []:
        ie = p["IndexElem"]
        if "name" not in ie:
            raise errors.unimplemented("indexes on expressions are not supported")
        keys.append((ie["name"], "desc" if ie.get("ordering") == "SORTBY_DESC" else "asc"))
    storing = [p["IndexElem"]["name"] for p in idx.get("indexIncludingParams") or []]
    return keys, storing


def _check_distinct_columns(index_name: str, names: list[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise errors.PgError(errors.DUPLICATE_COLUMN, f'index "{index_name}" contains duplicate column "{n}"')
        seen.add(n)


def _add_index(table: TableDesc, name: str | None, keys: list[tuple[str, str]], unique: bool,
               storing: list[str]) -> IndexDesc:
    cols = [table.column(k) for k, _ in keys]
    _check_distinct_columns(name or f"{table.name}_{'_'.join(c.name for c in cols)}", [k for k, _ in keys])
    for c in cols:
        _check_indexable(c)
    if name is None:
        base = f"{table.name}_{'_'.join(c.name for c in cols)}_{'key' if unique else 'idx'}"
        name = _unique_name(base, {i.name: i for i in table.all_indexes()})
    elif table.find_index(name) is not None:
        raise errors.PgError(errors.DUPLICATE_OBJECT, f'index with name "{name}" already exists')
    store_ids = []
    for s in storing:
        c = table.column(s)
        if c.id in table.primary_index.column_ids or c.id in [x.id for x in cols]:
            raise errors.PgError(errors.DUPLICATE_COLUMN,
                                 f'index "{name}" already contains column "{s}"')
        store_ids.append(c.id)
    idx = IndexDesc(table.next_index_id, name, [c.id for c in cols], [d for _, d in keys], unique, store_ids)
    table.next_index_id += 1
    table.indexes.append(idx)
    return idx


def _add_check(session: Any, table: TableDesc, name: str | None, expr_text: str) -> CheckDesc:
    builder = ExprBuilder(_bctx(session), table_scope(table, table.name), clause="CHECK")
    expr = builder.build_predicate(parse_expression(expr_text))
    used = sorted({table.columns[e.index].id for e in expr.walk() if isinstance(e, ColRef)})
    if name is None:
        base = "check_" + "_".join(table.column_by_id(i).name for i in used) if used else "check"
        name = _unique_name(base, {c.name: c for c in table.checks})
    chk = CheckDesc(name, expr_text, used)
    table.checks.append(chk)
    return chk


def _bctx(session: Any) -> Any:
    return BuildContext(ParamTypes(), resolve_type=_type_resolver(session))


def _validate_defaults(session: Any, table: TableDesc) -> None:
    builder = ExprBuilder(_bctx(session), Scope([]), clause="DEFAULT")
    for col in table.columns:
        if col.default is not None:
            e = builder.build(parse_expression(col.default))
            if any(type(x).__name__ in ("ColRef", "OuterRef") for x in e.walk()):
                raise errors.syntax_error("variable sub-expressions are not allowed in DEFAULT")
            assign_expr(e, col.name, col.type, ParamTypes())


def _resolve_table(session: Any, rv_names: list[str], missing_ok: bool = False) -> TableDesc | None:
    kind, obj = session.resolve_table_name(rv_names, missing_ok=True)
    if kind == "missing" or obj is None:
        if missing_ok:
            return None
        raise errors.undefined_table(".".join(rv_names))
    if kind == "virtual":
        raise errors.insufficient_privilege(f"{'.'.join(rv_names)} is a virtual object and cannot be modified")
    return obj


def _delete_span(session: Any, start: bytes, end: bytes) -> None:
    txn = session.txn
    keys = [k for k, _ in txn.scan(start, end)]
    for k in keys:
        txn.delete(k)


def _delete_table_data(session: Any, table: TableDesc) -> None:
    prefix = table_prefix(table.id)
    _delete_span(session, prefix, enc.prefix_end(prefix))


def drop_objects(session: Any, stmt: Statement) -> str:
    body = stmt.node
    kind = body["removeType"]
    if kind in ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_SEQUENCE"):
        what = {"OBJECT_TABLE": "TABLE", "OBJECT_VIEW": "VIEW", "OBJECT_SEQUENCE": "SEQUENCE"}[kind]
        found = []
        for obj in body["objects"]:
            names = [n["String"]["sval"] for n in obj["List"]["items"]]
            table = _resolve_table(session, names, missing_ok=body.get("missing_ok", False))
            if table is None:
                _notice(session, f'relation "{".".join(names)}" does not exist, skipping')
                continue
            found.append(table)
        edits = fk_ddl.Edits(session)
        edits.dropped = {t.id for t in found}
        for table in found:
            if what == "TABLE" and (table.is_view or table.is_sequence):
                raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{table.name}" is not a table')
            if what == "VIEW" and not table.is_view:
                raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{table.name}" is not a view')
            if what == "SEQUENCE" and not table.is_sequence:
                raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{table.name}" is not a sequence')
            session.check_privilege(table, "DROP")
            fk_ddl.drop_table_references(session, table, body.get("behavior") == "DROP_CASCADE", edits,
                                         edits.dropped)
            drop_table_desc(session, table)
        edits.write()
        _changed(session)
        return f"DROP {what}"
    if kind == "OBJECT_INDEX":
        return drop_index(session, stmt)
    if kind == "OBJECT_SCHEMA":
        return drop_schema(session, stmt)
    if kind in ("OBJECT_DATABASE",):
        raise errors.internal_error("DROP DATABASE goes through drop_database")
    raise unsupported.object_statement("DROP", kind)


def drop_table_desc(session: Any, table: TableDesc) -> None:
    txn = session.txn
    _delete_table_data(session, table)
    if table.is_sequence:
        txn.delete(system.sequence_key(table.id))
    txn.delete(system.descriptor_key(table.id))
    system.delete_namespace(txn, table.parent_id, table.schema_id, table.name)


def _drop_type_desc(session: Any, desc: Any) -> None:
    """Remove a type (enum_ddl.drop_types checks that nothing uses it first)."""
    session.txn.delete(system.descriptor_key(desc.id))
    system.delete_namespace(session.txn, desc.parent_id, desc.schema_id, desc.name)


def truncate(session: Any, stmt: Statement) -> str:
    named = []
    for rel in stmt.node["relations"]:
        table = _resolve_table(session, _range_names(rel["RangeVar"]))
        assert table is not None
        if table.is_view or table.is_sequence:
            raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{table.name}" is not a table')
        named.append(table)
    for table in fk_ddl.truncate_closure(session, named, stmt.node.get("behavior") == "DROP_CASCADE"):
        session.check_privilege(table, "DROP")
        _delete_table_data(session, table)
    return "TRUNCATE"


# ---- indexes ---------------------------------------------------------------------------------

def create_index(session: Any, stmt: Statement) -> str:
    body = stmt.node
    if body.get("whereClause"):
        raise errors.unimplemented("partial indexes are not supported")
    if body.get("accessMethod", "btree") not in ("btree", "prefix"):
        raise errors.unimplemented(f"{body['accessMethod'].upper()} (inverted) indexes are not supported")
    table = _resolve_table(session, _range_names(body["relation"]))
    assert table is not None
    if table.is_view or table.is_sequence:
        raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{table.name}" is not a table')
    session.check_privilege(table, "CREATE")
    name = body.get("idxname")
    if name is not None and table.find_index(name) is not None:
        if body.get("if_not_exists"):
            _notice(session, f'index "{name}" already exists, skipping')
            return "CREATE INDEX"
        raise errors.PgError(errors.DUPLICATE_TABLE, f'index with name "{name}" already exists')
    keys, storing = _index_params(body)
    new = _copy(table)
    idx = _add_index(new, name, keys, bool(body.get("unique")), storing)
    new.version += 1
    _backfill_index(session, new, idx)
    system.write_descriptor(session.txn, new)
    _changed(session)
    return "CREATE INDEX"


def _copy(table: TableDesc) -> TableDesc:
    new = TableDesc.from_json(table.to_json())
    for col, old in zip(new.columns, table.columns):
        col.type = old.type  # from_json leaves enum types unresolved (members come from the catalog)
    return new


def _backfill_index(session: Any, table: TableDesc, idx: IndexDesc) -> None:
    codec = TableCodec(table)
    ic = next(c for c in codec.secondaries if c.index.id == idx.id)
    txn = session.txn
    entries = [(codec.index_entry(ic, row, pk[len(codec.pk_prefix):]), row)
               for pk, row in ((pk, codec.decode_row(raw)) for pk, raw in txn.scan(*codec.primary_span))]
    for lo in range(0, len(entries), READ_BATCH):
        chunk = entries[lo:lo + READ_BATCH]
        if ic.is_unique:  # one store call for the batch's uniqueness checks
            txn.prefetch([key for (key, _), _ in chunk])
        for (key, value), row in chunk:
            if ic.is_unique and txn.get(key) is not None:
                raise unique_error(table, ic, row)
            txn.put(key, value)


def drop_index(session: Any, stmt: Statement) -> str:
    body = stmt.node
    table_hint = stmt.index_hints.get(-1)
    for obj in body["objects"]:
        names = [n["String"]["sval"] for n in obj["List"]["items"]]
        idx_name = names[-1]
        candidates = []
        if table_hint is not None:
            t = _resolve_table(session, [p.strip('"') for p in table_hint.split(".")])
            assert t is not None
            candidates = [t] if t.find_index(idx_name) else []
        else:
            db = session.current_db()
            for t in session.catalog.tables_in(db.id):
                if t.find_index(idx_name) is not None:
                    candidates.append(t)
        if not candidates:
            if body.get("missing_ok"):
                _notice(session, f'index "{idx_name}" does not exist, skipping')
                continue
            raise errors.PgError(errors.UNDEFINED_OBJECT, f'index "{idx_name}" does not exist')
        if len(candidates) > 1:
            raise errors.PgError(errors.AMBIGUOUS_COLUMN,
                                 f'index name "{idx_name}" is ambiguous (found in {", ".join(t.name for t in candidates)})')
        table = candidates[0]
        session.check_privilege(table, "CREATE")
        idx = table.find_index(idx_name)
        assert idx is not None
        if idx.is_primary:
            raise errors.feature_not_supported("cannot drop the primary index of a table")
        new = _copy(table)
        edits = fk_ddl.Edits(session)
        fk_ddl.drop_index_references(session, table, idx, body.get("behavior") == "DROP_CASCADE", edits, new)
        edits.write()
        new.indexes = [i for i in new.indexes if i.id != idx.id]
        new.version += 1
        prefix = enc.encode_int(table.id) + enc.encode_int(idx.id)
        _delete_span(session, prefix, enc.prefix_end(prefix))
        system.write_descriptor(session.txn, new)
    _changed(session)
    return "DROP INDEX"


# ---- ALTER TABLE -----------------------------------------------------------------------------

def alter_table(session: Any, stmt: Statement) -> str:
    body = stmt.node
    if body.get("objtype") not in (None, "OBJECT_TABLE"):
        raise unsupported.object_statement("ALTER", body["objtype"])
    table = _resolve_table(session, _range_names(body["relation"]), missing_ok=body.get("missing_ok", False))
    if table is None:
        _notice(session, f'relation "{body["relation"]["relname"]}" does not exist, skipping')
        return "ALTER TABLE"
    session.check_privilege(table, "CREATE")
    ast = _ast(stmt)
    new = _copy(table)
    rewrite = False
    converters: dict[int, Any] = {}  # column id -> its new value computed from the old row
    to_validate = []  # foreign keys whose existing rows are checked once the table is rewritten
    edits = fk_ddl.Edits(session)
    for cmd, cmd_ast in zip(body["cmds"], ast.cmds):
        c = cmd["AlterTableCmd"]
        sub = c["subtype"]
        if sub == "AT_AddColumn":
            cd = c["def"]["ColumnDef"]
            if new.find_column(cd["colname"]) is not None:
                if c.get("missing_ok"):
                    _notice(session, f'column "{cd["colname"]}" of relation "{new.name}" already exists, skipping')
                    continue
                raise errors.PgError(errors.DUPLICATE_COLUMN, f'column "{cd["colname"]}" of relation "{new.name}" already exists')
            col, is_pk, unique, checks = _column_from_def(session, cd, cmd_ast.def_, new.next_column_id)
            if is_pk:
                raise errors.unimplemented("adding a primary key column is not supported")
            new.next_column_id += 1
            new.columns.append(col)
            new.reindex()
            if unique:
                _add_index(new, None, [(col.name, "asc")], True, [])
            for con_name, text in checks:
                _add_check(session, new, con_name, text)
            for con in fk_ddl.inline_constraints(cd):
                to_validate.append(fk_ddl.add_foreign_key(session, new, con))
            rewrite = True
        elif sub == "AT_DropColumn":
            name = c["name"]
            col = new.find_column(name)
            if col is None:
                if c.get("missing_ok"):
                    continue
                raise errors.undefined_column(name)
            if col.id in new.primary_index.column_ids:
                raise errors.feature_not_supported(f'column "{name}" is referenced by the primary key')
            cascade = c.get("behavior") == "DROP_CASCADE"
            # as in CockroachDB, indexes that use the column go with it, and so do the column's
            # own foreign keys; those of other tables that need one of the indexes need CASCADE
            new.foreign_keys = [f for f in new.foreign_keys if col.id not in f.column_ids]
            for idx in list(new.indexes):
                if col.id in idx.column_ids or col.id in idx.storing_ids:
                    fk_ddl.drop_index_references(session, table, idx, cascade, edits, new)
            new.indexes = [i for i in new.indexes if col.id not in i.column_ids and col.id not in i.storing_ids]
            new.checks = [k for k in new.checks if col.id not in k.column_ids]
            new.columns = [x for x in new.columns if x.id != col.id]
            new.reindex()
            rewrite = True
        elif sub == "AT_ColumnDefault":
            col = new.column(c["name"])
            col.default = deparse(cmd_ast.def_) if c.get("def") else None
        elif sub == "AT_SetNotNull":
            new.column(c["name"]).nullable = False
            rewrite = True
        elif sub == "AT_DropNotNull":
            col = new.column(c["name"])
            if col.id in new.primary_index.column_ids:
                raise errors.PgError(errors.INVALID_TABLE_DEFINITION,
                                     f'column "{col.name}" is in a primary index')
            col.nullable = True
        elif sub == "AT_AddConstraint":
            con = c["def"]["Constraint"]
            ctype = con["contype"]
            keys = _constraint_keys(stmt, con)
            if ctype == "CONSTR_PRIMARY":
                _replace_primary_key(new, con.get("conname"), keys)
                rewrite = True
            elif ctype == "CONSTR_UNIQUE":
                _add_index(new, con.get("conname"), keys, True, [])
                rewrite = True
            elif ctype == "CONSTR_CHECK":
                _add_check(session, new, con.get("conname"), deparse(cmd_ast.def_.raw_expr))
                rewrite = True
            elif ctype == "CONSTR_FOREIGN":
                fk = fk_ddl.add_foreign_key(session, new, con)
                if con.get("skip_validation"):
                    fk.validated = False
                else:
                    to_validate.append(fk)
            else:
                raise unsupported.constraint(ctype)
        elif sub == "AT_ValidateConstraint":
            name = c["name"]
            fk = next((f for f in new.foreign_keys if f.name == name), None)
            if fk is not None:
                fk.validated = True
                to_validate.append(fk)
            elif name not in fk_ddl.constraint_names(new):
                raise errors.undefined_object(f'constraint "{name}" of relation "{new.name}" does not exist')
        elif sub == "AT_DropConstraint":
            name = c["name"]
            if any(f.name == name for f in new.foreign_keys):
                new.foreign_keys = [f for f in new.foreign_keys if f.name != name]
            elif any(k.name == name for k in new.checks):
                new.checks = [k for k in new.checks if k.name != name]
            elif any(i.name == name and i.unique for i in new.indexes):
                idx = next(i for i in new.indexes if i.name == name)
                fk_ddl.drop_index_references(session, table, idx, c.get("behavior") == "DROP_CASCADE", edits, new)
                new.indexes = [i for i in new.indexes if i.name != name]
                rewrite = True
            elif new.primary_index.name == name:
                raise errors.feature_not_supported("cannot drop the primary key without adding a new one")
            elif not c.get("missing_ok"):
                raise errors.undefined_object(f'constraint "{name}" of relation "{new.name}" does not exist')
        elif sub == "AT_AlterColumnType":
            col = new.column(c["name"])
            cd = c["def"]["ColumnDef"]
            typ = type_from_node(cd["typeName"], _type_resolver(session))
            if typ.family != col.type.family or cd.get("raw_default") is not None:
                converters[col.id] = _general_conversion(session, table, col, typ, cd, len(body["cmds"]))
            col.type = typ
            rewrite = True
        else:
            raise unsupported.alter_table_command(sub)
    _validate_defaults(session, new)
    new.version += 1
    if rewrite:
        _rewrite_table(session, table, new, converters)
    for fk in to_validate:
        fk_ddl.validate(session, new, fk)
    edits.write()
    system.write_descriptor(session.txn, new)
    _changed(session)
    return "ALTER TABLE"


def _replace_primary_key(table: TableDesc, name: str | None, keys: list[tuple[str, str]]) -> None:
    old_cols = [table.column_by_id(i) for i in table.primary_index.column_ids]
    if not (len(old_cols) == 1 and old_cols[0].hidden and old_cols[0].default == "unique_rowid()"):
        raise errors.PgError(errors.INVALID_TABLE_DEFINITION,
                             f'multiple primary keys for table "{table.name}" are not allowed')
    cols = [table.column(k) for k, _ in keys]
    for c in cols:
        _check_indexable(c)
        c.nullable = False
    table.primary_index = IndexDesc(table.primary_index.id, name or f"{table.name}_pkey",
                                    [c.id for c in cols], [d for _, d in keys], unique=True, is_primary=True)
    # The implicit rowid served only as the old key.
    rowid = old_cols[0]
    table.columns = [c for c in table.columns if c.id != rowid.id]
    table.reindex()


def _general_conversion(session: Any, table: TableDesc, col: Any, typ: T.SQLType, cd: dict,
                        n_cmds: int) -> Any:
    """ALTER COLUMN TYPE across type families (or with USING): every row's value is recomputed
    from the old row by the USING expression, or by a cast. CockroachDB calls this the general
    conversion and refuses it unless enable_experimental_alter_column_type_general is on, for
    indexed or constrained columns, inside an explicit transaction, and next to other commands;
    Pillbug keeps those limits, so that what works here works there."""
    if session.show_var("enable_experimental_alter_column_type_general") != "on":
        raise errors.PgError(
            errors.FEATURE_NOT_SUPPORTED,
            f"ALTER COLUMN TYPE from {col.type.display} to {typ.display} is only supported experimentally",
            hint=f"See: {errors.issue_url(49329)}\n--\nyou can enable alter column type general support "
                 "by running `SET enable_experimental_alter_column_type_general = true`")
    if any(col.id in _chk_columns(table, chk.expr) for chk in table.checks) or \
            any(col.id in fk.column_ids for fk in table.foreign_keys):
        raise errors.unimplemented("ALTER COLUMN TYPE for a column that has a constraint is currently not supported",
                                   48288)
    if any(col.id in idx.column_ids for idx in [table.primary_index, *table.indexes]):
        raise errors.unimplemented("ALTER COLUMN TYPE requiring rewrite of on-disk data is currently not "
                                   "supported for columns that are part of an index", 47636)
    if not session.implicit:
        raise errors.unimplemented("ALTER COLUMN TYPE is not supported inside a transaction", 49351)
    if n_cmds > 1:
        raise errors.unimplemented("ALTER COLUMN TYPE cannot be used in combination with other ALTER TABLE "
                                   "commands", 49351)
    using = cd.get("raw_default")
    if using is None:
        using = {"TypeCast": {"arg": {"ColumnRef": {"fields": [{"String": {"sval": col.name}}]}},
                              "typeName": cd["typeName"]}}
    builder = ExprBuilder(_bctx(session), table_scope(table, table.name), clause="ALTER COLUMN TYPE USING EXPRESSION")
    try:
        expr = builder.build(using)
    except errors.PgError as exc:
        if exc.code != errors.CANNOT_COERCE:
            raise
        raise errors.PgError(errors.CANNOT_COERCE,
                             f"the requested type conversion ({col.type.display} -> {typ.display}) "
                             "requires an explicit USING expression") from None
    return assign_expr(expr, col.name, typ, ParamTypes()).compile()


def _chk_columns(table: TableDesc, text: str) -> set[int]:
    """Ids of the columns a CHECK expression names."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("ColumnRef")
            if ref is not None:
                last = ref["fields"][-1]
                if "String" in last:
                    names.add(last["String"]["sval"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(parse_expression(text))
    return {c.id for c in table.columns if c.name in names}


def _rewrite_table(session: Any, old: TableDesc, new: TableDesc,
                   converters: dict[int, Any] | None = None) -> None:
    """Rewrite every row (and index entry) from the old layout to the new one; a column in
    `converters` gets its value computed from the old row."""
    txn = session.txn
    old_codec = TableCodec(old)
    new_codec = TableCodec(new)
    ctx = ExecCtx(session, txn, [], session.catalog)
    defaults = []
    builder = ExprBuilder(_bctx(session), Scope([]), clause="DEFAULT")
    old_positions = {c.id: i for i, c in enumerate(old.columns)}
    for col in new.columns:
        if converters and col.id in converters:
            defaults.append(converters[col.id])
        elif col.id in old_positions:
            defaults.append(None)
        elif col.default is not None:
            defaults.append(assign_expr(builder.build(parse_expression(col.default)), col.name, col.type,
                                        ParamTypes()).compile())
        else:
            defaults.append(lambda row, ctx: None)
    rows = [old_codec.decode_row(raw) for _, raw in txn.scan(*old_codec.primary_span)]
    prefix = table_prefix(old.id)
    _delete_span(session, prefix, enc.prefix_end(prefix))
    checks = row_checks(Planner(session, ParamTypes()), new)
    writer = TableWriter(new_codec)
    for old_row in rows:
        new_row = tuple(old_row[old_positions[c.id]] if d is None else d(old_row, ctx)
                        for c, d in zip(new.columns, defaults))
        try:
            checks.validate(new_row, ctx)
        except errors.PgError as exc:
            raise _validation_error(exc, old, new, new_row) from None
        writer.insert(ctx, new_row)


def _validation_error(exc: errors.PgError, old: TableDesc, new: TableDesc, row: tuple) -> errors.PgError:
    """An existing row breaks a constraint being added: say which, as CockroachDB does."""
    shown = ", ".join(f"{c.name}={sql_literal(v, c.type)}" for c, v in zip(new.columns, row) if not c.hidden)
    if exc.code == errors.NOT_NULL_VIOLATION:
        col = next((c for c, v in zip(new.columns, row) if v is None and not c.nullable), None)
        if col is not None and old.find_column(col.name) is not None:
            return errors.PgError(errors.NOT_NULL_VIOLATION,
                                  f'validation of column "{col.name}" NOT NULL failed on row: {shown}')
        return exc
    if exc.code == errors.CHECK_VIOLATION:
        failed = exc.message[exc.message.find("(") + 1:-1] if "(" in exc.message else exc.message
        return errors.PgError(errors.CHECK_VIOLATION, f'validation of CHECK "{failed}" failed on row: {shown}')
    return exc


# ---- views and sequences ---------------------------------------------------------------------

def create_view(session: Any, stmt: Statement) -> str:
    body = stmt.node
    names = _range_names(body["view"])
    db, schema_id, name = _target_db_schema(session, names)
    _check_create(session, db, schema_id)
    existing = session.catalog.tables.get((db.id, schema_id, name))
    if existing is not None and not body.get("replace"):
        raise errors.duplicate_table(name)
    query_text = _view_query_text(stmt)
    plan = Planner(session, ParamTypes()).plan_query(body["query"])
    aliases = [a["String"]["sval"] for a in body.get("aliases") or []]
    columns = [ColumnDesc(i + 1, aliases[i] if i < len(aliases) else c.name, c.type)
               for i, c in enumerate(plan.columns)]
    table_id = existing.id if existing is not None else system.allocate_id(session.txn)
    view = TableDesc(table_id, name, db.id, schema_id, columns,
                     IndexDesc(1, f"{name}_pkey", [], [], True, is_primary=True), [],
                     Privileges(session.user, {}), [], len(columns) + 1, 2, view_query=query_text)
    system.write_descriptor(session.txn, view)
    system.write_namespace(session.txn, db.id, schema_id, name, table_id)
    _changed(session)
    return "CREATE VIEW"


def _view_query_text(stmt: Statement) -> str:
    from pglast import parser as pg
    text = stmt.parse_text or stmt.text
    tokens = pg.scan(text)
    depth = 0
    for t in tokens:
        if t.name == "ASCII_40":
            depth += 1
        elif t.name == "ASCII_41":
            depth -= 1
        elif t.name == "AS" and depth == 0:
            return text[t.end + 1:].strip()
    raise errors.syntax_error("CREATE VIEW needs AS <query>")


def create_sequence(session: Any, stmt: Statement) -> str:
    body = stmt.node
    names = _range_names(body["sequence"])
    db, schema_id, name = _target_db_schema(session, names)
    _check_create(session, db, schema_id)
    if _name_taken(session, db, schema_id, name):
        if body.get("if_not_exists"):
            _notice(session, f'relation "{name}" already exists, skipping')
            return "CREATE SEQUENCE"
        raise errors.duplicate_table(name)
    opts = {"start": None, "increment": 1, "minvalue": 1, "maxvalue": (1 << 63) - 1}
    for o in body.get("options") or []:
        d = o["DefElem"]
        arg = d.get("arg")
        if arg is None:
            continue
        value = arg.get("Integer", {}).get("ival", 0) if "Integer" in arg else \
            int(arg.get("Float", {}).get("fval", "0")) if "Float" in arg else None
        if d["defname"] in opts and value is not None:
            opts[d["defname"]] = value
    if opts["increment"] == 0:
        raise errors.invalid_parameter_value("INCREMENT must not be zero")
    if opts["increment"] < 0 and opts["minvalue"] == 1:
        opts["minvalue"] = -(1 << 63)
        opts["maxvalue"] = -1 if opts["maxvalue"] == (1 << 63) - 1 else opts["maxvalue"]
    if opts["start"] is None:
        opts["start"] = opts["minvalue"] if opts["increment"] > 0 else opts["maxvalue"]
    table_id = system.allocate_id(session.txn)
    seq = TableDesc(table_id, name, db.id, schema_id, [ColumnDesc(1, "value", T.INT8, False)],
                    IndexDesc(1, "primary", [1], ["asc"], True, is_primary=True), [],
                    Privileges(session.user, {}), [], 2, 2, sequence=opts)
    system.write_descriptor(session.txn, seq)
    system.write_namespace(session.txn, db.id, schema_id, name, table_id)
    _changed(session)
    return "CREATE SEQUENCE"


def sequence_next(session: Any, name: str) -> int:
    seq = _sequence(session, name)
    session.check_privilege(seq, "UPDATE")
    key = system.sequence_key(seq.id)
    raw = session.txn.get(key)
    opts = seq.sequence
    value = opts["start"] if raw is None else int(raw) + opts["increment"]
    if value > opts["maxvalue"] or value < opts["minvalue"]:
        raise errors.PgError("2200H", f'reached maximum value of sequence "{seq.name}" ({opts["maxvalue"]})')
    session.txn.put(key, str(value).encode())
    session.sequence_values[seq.id] = value
    return value


def sequence_set(session: Any, name: str, value: int) -> int:
    seq = _sequence(session, name)
    session.check_privilege(seq, "UPDATE")
    session.txn.put(system.sequence_key(seq.id), str(value).encode())
    session.sequence_values[seq.id] = value
    return value


def sequence_current(session: Any, name: str) -> int:
    seq = _sequence(session, name)
    if seq.id not in session.sequence_values:
        raise errors.PgError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE,
                             f'currval of sequence "{seq.name}" is not yet defined in this session')
    return session.sequence_values[seq.id]


def _sequence(session: Any, name: str) -> TableDesc:
    parts = [p.strip('"') for p in name.split(".")]
    table = _resolve_table(session, parts)
    assert table is not None
    if not table.is_sequence:
        raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{name}" is not a sequence')
    return table


# ---- databases and schemas -------------------------------------------------------------------

def create_database(session: Any, stmt: Statement) -> str:
    name = stmt.node["dbname"]
    catalog = session.catalog
    if not catalog.is_admin(session.user) and not catalog.users.get(session.user, system.UserRecord(
            session.user, None)).options.get("createdb"):
        raise errors.insufficient_privilege("permission denied to create database")
    system.check_name(name, "database")
    if catalog.database(name) is not None:
        if stmt.if_not_exists:
            _notice(session, f'database "{name}" already exists, skipping')
            return "CREATE DATABASE"
        raise errors.duplicate_database(name)
    db = system.create_database(session.txn, name, session.user)
    db.privileges.grants[system.PUBLIC_ROLE] = {"CONNECT"}
    system.write_descriptor(session.txn, db)
    _changed(session)
    return "CREATE DATABASE"


def drop_database(session: Any, stmt: Statement) -> str:
    node = stmt.node
    name = node["name"]
    catalog = session.catalog
    db = catalog.database(name)
    if db is None:
        if node["if_exists"]:
            _notice(session, f'database "{name}" does not exist, skipping')
            return "DROP DATABASE"
        raise errors.undefined_database(name)
    if db.id == system.SYSTEM_DATABASE_ID:
        raise errors.insufficient_privilege("cannot drop the system database")
    if not access.has_privilege(catalog, session.user, db, "DROP"):
        raise errors.insufficient_privilege(f"user {session.user} does not have DROP privilege on database {name}")
    tables = catalog.tables_in(db.id)
    if tables and node["behavior"] == "restrict" and "RESTRICT" in stmt.text.upper():
        raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                             f'database "{name}" is not empty and RESTRICT was specified')
    for table in tables:
        drop_table_desc(session, table)
    txn = session.txn
    for tdesc in [t for t in catalog.types.values() if t.parent_id == db.id]:
        _drop_type_desc(session, tdesc)
    for schema_name, schema_id in db.schemas.items():
        txn.delete(system.descriptor_key(schema_id))
        system.delete_namespace(txn, db.id, 0, schema_name)
    txn.delete(system.descriptor_key(db.id))
    system.delete_namespace(txn, 0, 0, name)
    _changed(session)
    return "DROP DATABASE"


def create_schema(session: Any, stmt: Statement) -> str:
    body = stmt.node
    name = body.get("schemaname")
    if body.get("schemaElts"):
        raise errors.unimplemented("CREATE SCHEMA with elements is not supported")
    db = session.current_db()
    _check_create(session, db, 0)  # CREATE on the database itself, as in CockroachDB
    if name in db.schemas or name in ("pg_catalog", "information_schema", "crdb_internal"):
        if body.get("if_not_exists"):
            _notice(session, f'schema "{name}" already exists, skipping')
            return "CREATE SCHEMA"
        raise errors.PgError(errors.DUPLICATE_OBJECT, f'schema "{name}" already exists')
    txn = session.txn
    schema_id = system.allocate_id(txn)
    schema = SchemaDesc(schema_id, name, db.id, Privileges(session.user, {}))
    new_db = DatabaseDesc.from_json(db.to_json())
    new_db.schemas[name] = schema_id
    system.write_descriptor(txn, schema)
    system.write_descriptor(txn, new_db)
    system.write_namespace(txn, db.id, 0, name, schema_id)
    _changed(session)
    return "CREATE SCHEMA"


def drop_schema(session: Any, stmt: Statement) -> str:
    body = stmt.node
    db = session.current_db()
    for obj in body["objects"]:
        name = obj["String"]["sval"] if "String" in obj else obj["List"]["items"][-1]["String"]["sval"]
        schema_id = db.schemas.get(name)
        if schema_id is None:
            if body.get("missing_ok"):
                continue
            raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'unknown schema "{name}"')
        if name == PUBLIC_SCHEMA:
            raise errors.feature_not_supported("cannot drop schema public")
        tables = [t for t in session.catalog.tables_in(db.id) if t.schema_id == schema_id]
        types = [t for t in session.catalog.types.values() if t.parent_id == db.id and t.schema_id == schema_id]
        if (tables or types) and body.get("behavior") != "DROP_CASCADE":
            raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                                 f'schema "{name}" is not empty and CASCADE was not specified')
        edits = fk_ddl.Edits(session)
        edits.dropped = {t.id for t in tables}
        for t in tables:
            fk_ddl.drop_table_references(session, t, True, edits, edits.dropped)
            drop_table_desc(session, t)
        edits.write()
        for tdesc in types:
            users = [u for u, _ in session.catalog.type_users(tdesc.id) if u.schema_id != schema_id]
            if users:
                raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                                     f'cannot drop type "{tdesc.name}" because other objects '
                                     f'([{", ".join(sorted(u.name for u in users))}]) still depend on it')
            _drop_type_desc(session, tdesc)
        new_db = DatabaseDesc.from_json(db.to_json())
        del new_db.schemas[name]
        txn = session.txn
        txn.delete(system.descriptor_key(schema_id))
        system.delete_namespace(txn, db.id, 0, name)
        system.write_descriptor(txn, new_db)
        db = new_db
    _changed(session)
    return "DROP SCHEMA"


# ---- renames ---------------------------------------------------------------------------------

def rename(session: Any, stmt: Statement) -> str:
    body = stmt.node
    rtype = body["renameType"]
    new_name = body["newname"]
    txn = session.txn
    if rtype == "OBJECT_DATABASE":
        catalog = session.catalog
        db = catalog.database(body["subname"])
        if db is None:
            raise errors.undefined_database(body["subname"])
        access.check_admin(catalog, session.user, "rename databases")
        if catalog.database(new_name) is not None:
            raise errors.duplicate_database(new_name)
        new_db = DatabaseDesc.from_json(db.to_json())
        new_db.name = new_name
        system.delete_namespace(txn, 0, 0, db.name)
        system.write_namespace(txn, 0, 0, new_name, db.id)
        system.write_descriptor(txn, new_db)
        if session.database == db.name:
            session.database = new_name
        _changed(session)
        return "ALTER DATABASE"
    if rtype in ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_SEQUENCE", "OBJECT_COLUMN", "OBJECT_INDEX",
                 "OBJECT_TABCONSTRAINT"):
        if rtype == "OBJECT_INDEX":
            names = _range_names(body["relation"])
            return _rename_index(session, stmt, names[-1], new_name)
        table = _resolve_table(session, _range_names(body["relation"]), missing_ok=body.get("missing_ok", False))
        if table is None:
            return "ALTER TABLE"
        session.check_privilege(table, "CREATE")
        new = _copy(table)
        if rtype == "OBJECT_COLUMN":
            col = new.column(body["subname"])
            if new.find_column(new_name) is not None:
                raise errors.PgError(errors.DUPLICATE_COLUMN, f'column "{new_name}" of relation "{new.name}" already exists')
            col.name = new_name
            new.reindex()
        elif rtype == "OBJECT_TABCONSTRAINT":
            idx = new.find_index(body["subname"])
            fk = next((f for f in new.foreign_keys if f.name == body["subname"]), None)
            if new_name in fk_ddl.constraint_names(new):
                raise errors.PgError(errors.DUPLICATE_OBJECT, f'duplicate constraint name: "{new_name}"')
            if fk is not None:
                fk.name = new_name
            elif idx is not None:
                idx.name = new_name
            else:
                chk = next((c for c in new.checks if c.name == body["subname"]), None)
                if chk is None:
                    raise errors.undefined_object(f'constraint "{body["subname"]}" does not exist')
                chk.name = new_name
        else:
            if session.catalog.tables.get((new.parent_id, new.schema_id, new_name)) is not None:
                raise errors.duplicate_table(new_name)
            system.delete_namespace(txn, new.parent_id, new.schema_id, new.name)
            new.name = new_name
            system.write_namespace(txn, new.parent_id, new.schema_id, new_name, new.id)
        new.version += 1
        system.write_descriptor(txn, new)
        _changed(session)
        return "ALTER TABLE" if rtype != "OBJECT_VIEW" else "ALTER VIEW"
    raise unsupported.object_statement("ALTER", rtype)


def _rename_index(session: Any, stmt: Statement, old_name: str, new_name: str) -> str:
    db = session.current_db()
    hint = stmt.index_hints.get(-1)
    for t in session.catalog.tables_in(db.id):
        if hint is not None and t.name != hint.split(".")[-1]:
            continue
        idx = t.find_index(old_name)
        if idx is not None:
            session.check_privilege(t, "CREATE")
            new = _copy(t)
            new_idx = new.find_index(old_name)
            assert new_idx is not None
            if new.find_index(new_name) is not None:
                raise errors.PgError(errors.DUPLICATE_OBJECT, f'index name "{new_name}" already exists')
            new_idx.name = new_name
            new.version += 1
            system.write_descriptor(session.txn, new)
            _changed(session)
            return "ALTER INDEX"
    raise errors.PgError(errors.UNDEFINED_OBJECT, f'index "{old_name}" does not exist')
