"""PostgreSQL's system information functions: what psql, ORMs and drivers call to describe objects.

format_type, pg_get_indexdef, pg_get_constraintdef, pg_get_expr, pg_get_viewdef,
pg_get_userbyid, pg_get_serial_sequence, the *_is_visible tests, the has_*_privilege checks,
to_regclass and friends, obj_description and friends. They answer from the
session's catalog snapshot, using the OID scheme of the virtual catalogs (catalog/virtual.py), so
that an OID read from pg_class, pg_index or pg_constraint means the same object here.

The functions are registered into builtins.FUNCTIONS when this module is imported (build.py
does); builtins.py keeps the functions that do not read the catalog. This module knows nothing
of the parser or of plans.
"""
from __future__ import annotations

from typing import Any

from pillbug.sql import access, datum
from pillbug.sql import types as T
from pillbug.sql.catalog import oids, virtual
from pillbug.sql.catalog.descriptors import DatabaseDesc, Privileges, SchemaDesc, TableDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.sem.builtins import fn
from pillbug.util import errors

# ---- types ----------------------------------------------------------------------------------


@fn("format_type", ("oid", "int"), T.STRING, strict=False, needs_ctx=True)
def _format_type(ctx: Any, oid: int | None, typmod: int | None) -> str | None:
    if oid is None:
        return None
    typ = T.BY_OID.get(oid) or _catalog(ctx).type_by_oid(oid)  # built in, or an enum
    if typ is None:
        return "???"
    if typmod is None and typ.oid == 1042:
        return "character"
    return format_type(typ, typmod if typmod is not None else -1)


def format_type(typ: T.SQLType, typmod: int) -> str:
    """The SQL-standard spelling of a type with its modifier, as PostgreSQL prints it."""
    if typ.family == "array" and typ.oid not in (22, 30):
        return format_type(typ.elem or T.STRING, typmod) + "[]"
    if typmod >= 0:
        if typ.oid == 1043:
            return f"character varying({typmod - 4})"
        if typ.oid == 1042:
            return f"character({typmod - 4})"
        if typ.family == "decimal":
            precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
            return f"numeric({precision},{scale})"
    if typ.oid == 1042:
        return "bpchar"  # no length: not CHARACTER, which would mean CHARACTER(1)
    return typ.pg_name.split("(")[0] if typ.family in ("string", "decimal") else typ.pg_name


# ---- arrays ---------------------------------------------------------------------------------


@fn("generate_subscripts", ("array", "int"), T.INT8, srf=True, srf_columns=["generate_subscripts"])
def _generate_subscripts(array: list, dim: int) -> list[tuple]:
    """The valid subscripts of an array's dimension (arrays here are one-dimensional, from 1)."""
    return [(i,) for i in range(1, len(array) + 1)] if dim == 1 else []


@fn("generate_subscripts", ("array", "int", "bool"), T.INT8, srf=True, srf_columns=["generate_subscripts"])
def _generate_subscripts_rev(array: list, dim: int, reverse: bool) -> list[tuple]:
    subscripts = _generate_subscripts(array, dim)
    return subscripts[::-1] if reverse else subscripts


# ---- relations, indexes, constraints ------------------------------------------------------------


def _catalog(ctx: Any) -> Catalog:
    return ctx.session.catalog


@fn("pg_get_indexdef", ("oid",), T.STRING, needs_ctx=True)
def _pg_get_indexdef(ctx: Any, oid: int) -> str | None:
    return _pg_get_indexdef3(ctx, oid, 0, False)


@fn("pg_get_indexdef", ("oid", "int", "bool"), T.STRING, needs_ctx=True)
def _pg_get_indexdef3(ctx: Any, oid: int, column: int, pretty: bool) -> str | None:
    found = oids.relation_by_oid(_catalog(ctx), oid)
    if found is None or found[1] is None:
        return None
    table, idx = found
    if column == 0:
        return virtual.index_definition(table, idx, virtual.schema_name_of(_catalog(ctx), table))
    column_ids = idx.column_ids + idx.storing_ids
    if not 1 <= column <= len(column_ids):
        return ""
    return table.column_by_id(column_ids[column - 1]).name


@fn("pg_get_constraintdef", ("oid",), T.STRING, needs_ctx=True)
def _pg_get_constraintdef(ctx: Any, oid: int) -> str | None:
    found = virtual.constraint_by_oid(_catalog(ctx), oid)
    return found[1].definition if found is not None else None


@fn("pg_get_constraintdef", ("oid", "bool"), T.STRING, needs_ctx=True)
def _pg_get_constraintdef2(ctx: Any, oid: int, pretty: bool) -> str | None:
    return _pg_get_constraintdef(ctx, oid)


# pg_attrdef.adbin, pg_constraint.conbin and pg_index.indexprs hold expression text already (there
# is no node-tree form in Pillbug), so decompiling one is the identity.
@fn("pg_get_expr", ("string", "oid"), T.STRING)
def _pg_get_expr(expr: str, relation: int) -> str:
    return expr


@fn("pg_get_expr", ("string", "oid", "bool"), T.STRING)
def _pg_get_expr3(expr: str, relation: int, pretty: bool) -> str:
    return expr


@fn("pg_get_viewdef", ("oid",), T.STRING, needs_ctx=True)
def _pg_get_viewdef(ctx: Any, oid: int) -> str | None:
    found = oids.relation_by_oid(_catalog(ctx), oid)
    if found is None or found[1] is not None or not found[0].is_view:
        return None
    return found[0].view_query


@fn("pg_get_viewdef", ("oid", "bool"), T.STRING, needs_ctx=True)
def _pg_get_viewdef2(ctx: Any, oid: int, pretty: bool) -> str | None:
    return _pg_get_viewdef(ctx, oid)


@fn("pg_get_serial_sequence", ("string", "string"), T.STRING, needs_ctx=True)
def _pg_get_serial_sequence(ctx: Any, table_name: str, column_name: str) -> str | None:
    """The sequence a column's DEFAULT nextval('...') draws from, schema-qualified."""
    table = _table_by_name(ctx, table_name)
    col = table.find_column(column_name)
    if col is None:
        raise errors.undefined_column(column_name)
    default = col.default or ""
    start = default.find("nextval(")
    if start < 0:
        return None
    quote = default.find("'", start)
    end = default.find("'", quote + 1)
    if quote < 0 or end < 0:
        return None
    seq_name = default[quote + 1:end]
    if "." in seq_name:
        return seq_name
    return f"{virtual.schema_name_of(_catalog(ctx), table)}.{seq_name}"


def _table_by_name(ctx: Any, name: str) -> TableDesc:
    kind, obj = ctx.session.resolve_table_name(_split_name(name))
    if kind != "table":
        raise errors.undefined_table(name)
    return obj


def _split_name(name: str) -> list[str]:
    """'public."My Table"' -> ['public', 'My Table']: quoted parts keep their case."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        c = name[i]
        if c == '"':
            if quoted and name[i + 1:i + 2] == '"':
                buf.append('"')
                i += 2
                continue
            quoted = not quoted
        elif c == "." and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c if quoted else c.lower())
        i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts]


@fn("pg_relation_is_publishable", ("oid",), T.BOOL, needs_ctx=True)
def _pg_relation_is_publishable(ctx: Any, oid: int) -> bool | None:
    """Whether a publication FOR ALL TABLES would include the relation: ordinary tables only."""
    found = oids.relation_by_oid(_catalog(ctx), oid)
    if found is None:
        return None
    table, idx = found
    return idx is None and virtual.relkind(table) == "r"


# ---- visibility -------------------------------------------------------------------------------


# There are no partitioned tables, so no relation is a partition (PostgreSQL returns no rows for
# those); psql's \d asks, for the tables that reference one, through this function.
@fn("pg_partition_ancestors", ("oid",), T.REGCLASS, srf=True, srf_columns=["relid"])
def _pg_partition_ancestors(oid: int) -> list[tuple]:
    return []


# Nor are there triggers (pg_trigger is empty): no OID names one. psql's \d asks for the
# definitions of a table's triggers once relhastriggers says it has foreign keys.
@fn("pg_get_triggerdef", ("oid",), T.STRING)
def _pg_get_triggerdef(oid: int) -> str | None:
    return None


@fn("pg_get_triggerdef", ("oid", "bool"), T.STRING)
def _pg_get_triggerdef2(oid: int, pretty: bool) -> str | None:
    return None


@fn("pg_table_is_visible", ("oid",), T.BOOL, needs_ctx=True)
def _pg_table_is_visible(ctx: Any, oid: int) -> bool | None:
    """Whether the relation can be named without its schema: its schema is on the search path
    and no schema before it there holds a relation of the same name."""
    catalog = _catalog(ctx)
    found = oids.relation_by_oid(catalog, oid)
    if found is None:
        vt = virtual.table_by_oid(oid)
        return None if vt is None else vt.schema in virtual.search_path(ctx.session)
    table, idx = found
    name = idx.name if idx is not None else table.name
    schema = virtual.schema_name_of(catalog, table)
    db = catalog.by_id.get(table.parent_id)
    if not isinstance(db, DatabaseDesc):
        return False
    for candidate in virtual.search_path(ctx.session):
        if candidate == schema:
            return True
        schema_id = db.schemas.get(candidate)
        if schema_id is not None and _relation_named(catalog, db, schema_id, name):
            return False
    return False


def _relation_named(catalog: Catalog, db: DatabaseDesc, schema_id: int, name: str) -> bool:
    table = catalog.tables.get((db.id, schema_id, name))
    if table is not None:
        return True
    return any(t.find_index(name) is not None for t in catalog.tables_in(db.id) if t.schema_id == schema_id)


@fn("pg_type_is_visible", ("oid",), T.BOOL, needs_ctx=True)
def _pg_type_is_visible(ctx: Any, oid: int) -> bool | None:
    # Built-in types live in pg_catalog, which is always searched first; an enum is visible when
    # its schema is on the search path.
    if oid in T.BY_OID:
        return True
    typ = _catalog(ctx).type_by_oid(oid)
    if typ is None:
        return None
    base = typ.elem if typ.family == "array" and typ.elem is not None else typ
    return base.enum is not None and base.enum.schema in virtual.search_path(ctx.session)


@fn("pg_function_is_visible", ("oid",), T.BOOL)
def _pg_function_is_visible(oid: int) -> bool | None:
    # pg_catalog is always searched first; crdb_internal and information_schema never are
    proc = virtual.builtin_proc(oid)
    return None if proc is None else proc.schema == "pg_catalog"


# ---- functions --------------------------------------------------------------------------------


def _type_name(oid: int) -> str:
    typ = T.BY_OID.get(oid)
    return format_type(typ, -1) if typ is not None else "???"


@fn("pg_get_function_result", ("oid",), T.STRING)
def _pg_get_function_result(oid: int) -> str | None:
    """A function's result type as psql's \\df shows it (SETOF for a set-returning function)."""
    proc = virtual.builtin_proc(oid)
    if proc is None:
        return None
    return ("SETOF " if proc.returns_set else "") + _type_name(proc.return_type)


@fn("pg_get_function_arguments|pg_get_function_identity_arguments", ("oid",), T.STRING)
def _pg_get_function_arguments(oid: int) -> str | None:
    proc = virtual.builtin_proc(oid)
    if proc is None:
        return None
    names = [_type_name(a) for a in proc.arg_types]
    if proc.variadic and names:
        # PostgreSQL shows a variadic argument of any type as "any", others by their array type
        names[-1] = "VARIADIC " + ('"any"' if proc.variadic in (T.ANY.oid, T.ANYARRAY.oid) else names[-1] + "[]")
    return ", ".join(names)


# ---- users and privileges ---------------------------------------------------------------------


@fn("pg_get_userbyid", ("oid",), T.STRING, needs_ctx=True)
def _pg_get_userbyid(ctx: Any, oid: int) -> str:
    for name in (*_catalog(ctx).users, virtual.NODE_USER):
        if virtual.user_oid(name) == oid:
            return name
    return f"unknown (OID={oid})"


_TABLE_PRIVILEGES = {"SELECT": "SELECT", "INSERT": "INSERT", "UPDATE": "UPDATE", "DELETE": "DELETE",
                     "TRUNCATE": "DROP", "REFERENCES": "SELECT", "TRIGGER": "CREATE", "RULE": "CREATE"}
_DATABASE_PRIVILEGES = {"CREATE": "CREATE", "CONNECT": "CONNECT", "TEMPORARY": "CREATE", "TEMP": "CREATE"}
_SCHEMA_PRIVILEGES = {"CREATE": "CREATE", "USAGE": "USAGE"}


def _privileges(text: str, allowed: dict[str, str]) -> list[str]:
    """'SELECT, INSERT WITH GRANT OPTION' -> ['SELECT', 'INSERT'] as Pillbug's privilege names."""
    out = []
    for part in text.split(","):
        word = part.strip().upper().removesuffix(" WITH GRANT OPTION").strip()
        if word not in allowed:
            raise errors.invalid_parameter_value(f"unrecognized privilege type: \"{part.strip()}\"")
        out.append(allowed[word])
    return out


def _holds(ctx: Any, user: str, desc: Any, privileges: list[str]) -> bool:
    catalog = _catalog(ctx)
    if user not in catalog.users:
        raise errors.undefined_object(f'role "{user}" does not exist')
    return any(access.has_privilege(catalog, user, desc, p) for p in privileges)


def _table_arg(ctx: Any, table: Any) -> TableDesc:
    if isinstance(table, str):
        return _table_by_name(ctx, table)
    found = oids.relation_by_oid(_catalog(ctx), table)
    if found is None or found[1] is not None:
        raise errors.undefined_table(f"relation with OID {table} does not exist")
    return found[0]


def _user_arg(ctx: Any, user: Any) -> str:
    return user if isinstance(user, str) else _pg_get_userbyid(ctx, user)


def _register_privilege_check(name: str, resolve: Any, allowed: dict[str, str], object_families: tuple[str, ...]) -> None:
    """name(object, privilege) and name(user, object, privilege), object by name or by OID."""
    for family in object_families:
        @fn(name, (family, "string"), T.BOOL, needs_ctx=True)
        def _own(ctx: Any, obj: Any, privilege: str) -> bool:
            return _holds(ctx, ctx.user, resolve(ctx, obj), _privileges(privilege, allowed))

        for user_family in ("string", "oid"):
            @fn(name, (user_family, family, "string"), T.BOOL, needs_ctx=True)
            def _other(ctx: Any, user: Any, obj: Any, privilege: str) -> bool:
                return _holds(ctx, _user_arg(ctx, user), resolve(ctx, obj), _privileges(privilege, allowed))


def _database_arg(ctx: Any, db: Any) -> DatabaseDesc:
    catalog = _catalog(ctx)
    desc = catalog.database(db) if isinstance(db, str) else catalog.by_id.get(db)
    if not isinstance(desc, DatabaseDesc):
        raise errors.undefined_database(str(db))
    return desc


def _schema_arg(ctx: Any, schema: Any) -> Any:
    catalog = _catalog(ctx)
    db = ctx.session.current_db()
    if isinstance(schema, str):
        if schema in virtual.SCHEMA_OIDS:
            return _virtual_schema(schema)
        schema_id = db.schemas.get(schema)
        if schema_id is None:
            raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{schema}" does not exist')
    else:
        schema_id = schema
        for name, oid in virtual.SCHEMA_OIDS.items():
            if oid == schema_id:
                return _virtual_schema(name)
    desc = catalog.schemas.get(schema_id)
    if not isinstance(desc, SchemaDesc):
        raise errors.PgError(errors.INVALID_SCHEMA_NAME, f"schema with OID {schema_id} does not exist")
    return desc


def _virtual_schema(name: str) -> SchemaDesc:
    """pg_catalog and friends: everyone may use them, no one may create in them."""
    return SchemaDesc(virtual.SCHEMA_OIDS[name], name, 0, Privileges("node", {"public": {"USAGE"}}))


_register_privilege_check("has_table_privilege", _table_arg, _TABLE_PRIVILEGES, ("string", "oid"))
_register_privilege_check("has_sequence_privilege", _table_arg,
                          {**_TABLE_PRIVILEGES, "USAGE": "SELECT"}, ("string", "oid"))
_register_privilege_check("has_database_privilege", _database_arg, _DATABASE_PRIVILEGES, ("string", "oid"))
_register_privilege_check("has_schema_privilege", _schema_arg, _SCHEMA_PRIVILEGES, ("string", "oid"))


@fn("has_column_privilege", ("string", "string", "string"), T.BOOL, needs_ctx=True)
def _has_column_privilege(ctx: Any, table: str, column: str, privilege: str) -> bool:
    desc = _table_arg(ctx, table)
    desc.column(column)
    return _holds(ctx, ctx.user, desc, _privileges(privilege, _TABLE_PRIVILEGES))


@fn("has_column_privilege", ("oid", "int", "string"), T.BOOL, needs_ctx=True)
def _has_column_privilege_num(ctx: Any, table: int, attnum: int, privilege: str) -> bool:
    desc = _table_arg(ctx, table)
    if not 1 <= attnum <= len(desc.columns):
        raise errors.undefined_column(f"column number {attnum} of relation {desc.name}")
    return _holds(ctx, ctx.user, desc, _privileges(privilege, _TABLE_PRIVILEGES))


@fn("has_function_privilege", ("any", "string"), T.BOOL, strict=True)
def _has_function_privilege(function: Any, privilege: str) -> bool:
    if privilege.strip().upper().removesuffix(" WITH GRANT OPTION").strip() != "EXECUTE":
        raise errors.invalid_parameter_value(f"unrecognized privilege type: \"{privilege}\"")
    return True  # every builtin may be executed by everyone


@fn("pg_has_role", ("string", "string"), T.BOOL, needs_ctx=True)
def _pg_has_role(ctx: Any, role: str, mode: str) -> bool:
    return _has_role(ctx, ctx.user, role, mode)


@fn("pg_has_role", ("string", "string", "string"), T.BOOL, needs_ctx=True)
def _pg_has_role3(ctx: Any, user: str, role: str, mode: str) -> bool:
    return _has_role(ctx, user, role, mode)


@fn("pg_has_role", ("oid", "string"), T.BOOL, needs_ctx=True)
def _pg_has_role_oid(ctx: Any, role: int, mode: str) -> bool:
    return _has_role(ctx, ctx.user, _pg_get_userbyid(ctx, role), mode)


def _has_role(ctx: Any, user: str, role: str, mode: str) -> bool:
    catalog = _catalog(ctx)
    for name in (user, role):
        if name not in catalog.users:
            raise errors.undefined_object(f'role "{name}" does not exist')
    words = {m.strip().upper().removesuffix(" WITH ADMIN OPTION").removesuffix(" WITH GRANT OPTION")
             for m in mode.split(",")}
    if not words <= {"MEMBER", "USAGE", "SET"}:
        raise errors.invalid_parameter_value(f"unrecognized privilege type: \"{mode}\"")
    return role in catalog.roles_of(user)


# ---- name -> OID without errors -----------------------------------------------------------------


def _to_reg(typ: T.SQLType) -> Any:
    def to_reg(ctx: Any, name: str) -> int | None:
        try:
            return virtual.resolve_reg(ctx.session, typ, name)
        except errors.PgError as exc:
            if exc.code in (errors.UNDEFINED_TABLE, errors.UNDEFINED_OBJECT, errors.INVALID_SCHEMA_NAME,
                            errors.INVALID_CATALOG_NAME):
                return None
            raise
    return to_reg


for _name, _typ in (("to_regclass", T.REGCLASS), ("to_regtype", T.REGTYPE),
                    ("to_regnamespace", T.REGNAMESPACE), ("to_regrole", T.REGROLE)):
    fn(_name, ("string",), _typ, needs_ctx=True)(_to_reg(_typ))


# ---- comments and encodings -------------------------------------------------------------------------

# COMMENT ON is not supported, so no object has a description: these are NULL for every object,
# as PostgreSQL's are for an object without a comment.
@fn("obj_description|shobj_description", ("oid", "string"), T.STRING)
def _obj_description(oid: int, catalog_name: str) -> None:
    return None


@fn("obj_description", ("oid",), T.STRING)
def _obj_description1(oid: int) -> None:
    return None


@fn("col_description", ("oid", "int"), T.STRING)
def _col_description(oid: int, attnum: int) -> None:
    return None


@fn("pg_encoding_to_char", ("int",), T.STRING)
def _pg_encoding_to_char(encoding: int) -> str:
    return "UTF8" if encoding == 6 else ""


# Every builtin is registered by now (builtins.py, then this module): regproc values print as
# their names.
datum.register_proc_names({p.oid: p.name if p.schema == "pg_catalog" else f"{p.schema}.{p.name}"
                           for p in virtual.builtin_procs()})
