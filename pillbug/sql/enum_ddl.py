"""Enum types as catalog objects: CREATE TYPE ... AS ENUM, ALTER TYPE, DROP TYPE, SHOW ENUMS/TYPES.

A type is a TypeDesc (catalog/descriptors.py) under the system key space, named in the same
namespace as tables, written in the session's transaction with a catalog version bump like any
other DDL. Adding a member picks a physical representation between its neighbours'
(enums.rep_between), so no row or index key is ever rewritten; renaming a member or the type
changes only the descriptor. Dropping a member or the type is refused while something uses it.
Who may change a type: its owner or an admin; everyone may use one (as in CockroachDB, where
USAGE on a type goes to public).
"""
from __future__ import annotations

from typing import Any

from pillbug.sql import ddl, unsupported
from pillbug.sql import types as T
from pillbug.sql.catalog import system
from pillbug.sql.catalog.descriptors import PUBLIC_SCHEMA, DatabaseDesc, TableDesc, TypeDesc
from pillbug.sql.enums import check_label, initial_reps, rep_between
from pillbug.sql.parser.front import Statement
from pillbug.sql.rowenc import TableCodec
from pillbug.util import errors


def _names(node: list) -> list[str]:
    return [n["String"]["sval"] for n in node]


def _resolve(session: Any, names: list[str], missing_ok: bool = False) -> TypeDesc | None:
    """The type a [db.][schema.]name denotes, as ddl resolves tables' names."""
    catalog = session.catalog
    if len(names) == 3:
        db_name, schema = names[0], names[1]
    elif len(names) == 2:
        db_name, schema = session.database, names[0]
    else:
        db_name, schema = session.database, PUBLIC_SCHEMA
    db = catalog.database(db_name)
    desc = catalog.type_desc(db, schema, names[-1]) if db is not None else None
    if desc is None and not missing_ok:
        raise errors.undefined_object(f'type "{".".join(names)}" does not exist')
    return desc


def _check_owner(session: Any, desc: TypeDesc) -> None:
    catalog = session.catalog
    if catalog.is_admin(session.user) or desc.privileges.owner in catalog.roles_of(session.user):
        return
    raise errors.insufficient_privilege(f"must be owner of type {desc.name}")


def _write(session: Any, desc: TypeDesc) -> None:
    desc.version += 1
    system.write_descriptor(session.txn, desc)


def _copy(desc: TypeDesc) -> TypeDesc:
    return TypeDesc.from_json(desc.to_json())


def _name_in_use(session: Any, db: DatabaseDesc, schema_id: int, name: str) -> None:
    catalog = session.catalog
    if catalog.types.get((db.id, schema_id, name)) is not None:
        raise errors.PgError(errors.DUPLICATE_OBJECT, f'type "{name}" already exists')
    if catalog.tables.get((db.id, schema_id, name)) is not None:
        raise errors.duplicate_table(name)


# ---- CREATE TYPE -----------------------------------------------------------------------------

def create_enum(session: Any, stmt: Statement) -> str:
    body = stmt.node
    db, schema_id, name = ddl._target_db_schema(session, _names(body["typeName"]))
    ddl._check_create(session, db, schema_id)
    system.check_name(name, "type")
    if body.get("if_not_exists") and session.catalog.types.get((db.id, schema_id, name)) is not None:
        ddl._notice(session, f'type "{name}" already exists, skipping')
        return "CREATE TYPE"
    _name_in_use(session, db, schema_id, name)
    labels = [v["String"]["sval"] for v in body.get("vals") or []]
    seen: set[str] = set()
    for label in labels:
        check_label(label)
        if label in seen:
            raise errors.PgError(errors.DUPLICATE_OBJECT, f'enum definition contains duplicate value "{label}"')
        seen.add(label)
    txn = session.txn
    type_id = system.allocate_id(txn)
    array_id = system.allocate_id(txn)
    desc = TypeDesc(type_id, name, db.id, schema_id, array_id, list(zip(labels, initial_reps(len(labels)))),
                    system.default_privileges(session.user))
    system.write_descriptor(txn, desc)
    system.write_namespace(txn, db.id, schema_id, name, type_id)
    ddl._changed(session)
    return "CREATE TYPE"


# ---- ALTER TYPE ------------------------------------------------------------------------------

def alter_enum(session: Any, stmt: Statement) -> str:
    """ALTER TYPE ... ADD VALUE [IF NOT EXISTS] 'x' [BEFORE|AFTER 'y'] / RENAME VALUE 'a' TO 'b'."""
    body = stmt.node
    desc = _resolve(session, _names(body["typeName"]))
    assert desc is not None
    _check_owner(session, desc)
    new = _copy(desc)
    labels = [label for label, _ in new.members]
    new_label = body["newVal"]
    check_label(new_label)
    if body.get("oldVal") is not None:
        old_label = body["oldVal"]
        if old_label not in labels:
            raise errors.invalid_parameter_value(f'"{old_label}" is not an existing enum label')
        if new_label in labels:
            raise errors.PgError(errors.DUPLICATE_OBJECT, f'enum label "{new_label}" already exists')
        i = labels.index(old_label)
        new.members[i] = (new_label, new.members[i][1])
        _rename_in_defaults(session, desc, old_label, new_label)
    else:
        if new_label in labels:
            if body.get("skipIfNewValExists"):
                ddl._notice(session, f'enum label "{new_label}" already exists, skipping')
                return "ALTER TYPE"
            raise errors.PgError(errors.DUPLICATE_OBJECT, f'enum label "{new_label}" already exists')
        neighbor = body.get("newValNeighbor")
        if neighbor is None:
            at = len(labels)
        elif neighbor not in labels:
            raise errors.invalid_parameter_value(f'"{neighbor}" is not an existing enum label')
        else:
            at = labels.index(neighbor) + (1 if body.get("newValIsAfter") else 0)
        lo = new.members[at - 1][1] if at > 0 else b""
        hi = new.members[at][1] if at < len(new.members) else None
        new.members.insert(at, (new_label, rep_between(lo, hi)))
    _write(session, new)
    ddl._changed(session)
    return "ALTER TYPE"


def _sql_string(label: str) -> str:
    return "'" + label.replace("'", "''") + "'"


def _rename_in_defaults(session: Any, desc: TypeDesc, old_label: str, new_label: str) -> None:
    """Column defaults are stored as SQL text: a default that is the renamed label (as 'x' or
    'x'::type) follows the rename, as it does in CockroachDB, where defaults are stored typed."""
    old_text, new_text = _sql_string(old_label), _sql_string(new_label)
    for table in {t.id: t for t, _ in session.catalog.type_users(desc.id)}.values():
        changed = ddl._copy(table)
        for col in changed.columns:
            d = col.default
            if d is None:
                continue
            if d == old_text:  # DEFAULT 'x'
                col.default = new_text
            elif d.startswith(f"CAST({old_text} AS "):  # DEFAULT 'x'::type, as deparsed
                col.default = f"CAST({new_text} AS " + d[len(f"CAST({old_text} AS "):]
        if any(a.default != b.default for a, b in zip(changed.columns, table.columns)):
            changed.version += 1
            system.write_descriptor(session.txn, changed)


def drop_value(session: Any, stmt: Statement) -> str:
    """ALTER TYPE ... DROP VALUE 'x': refused while a row or a column default holds the value."""
    node = stmt.node
    desc = _resolve(session, node["type_names"])
    assert desc is not None
    _check_owner(session, desc)
    label = node["label"]
    at = next((i for i, (lb, _) in enumerate(desc.members) if lb == label), None)
    if at is None:
        raise errors.invalid_parameter_value(f'"{label}" is not an existing enum label')
    rep = desc.members[at][1]
    for table, column in session.catalog.type_users(desc.id):
        _check_value_unused(session, table, column, rep, label)
    new = _copy(desc)
    del new.members[at]
    _write(session, new)
    ddl._changed(session)
    return "ALTER TYPE"


def _check_value_unused(session: Any, table: TableDesc, column: str, rep: bytes, label: str) -> None:
    col = table.column(column)
    codec = TableCodec(table)
    pos = table.position(col.id)
    is_array = col.type.family == "array"
    start, end = codec.primary_span
    for _, raw in session.txn.scan(start, end):
        v = codec.decode_row(raw)[pos]
        if v is None:
            continue
        if any(x is not None and x.rep == rep for x in v) if is_array else v.rep == rep:
            raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                                 f'could not remove enum value "{label}" as it is being used by '
                                 f'"{table.name}" in row: {column}=\'{label}\'')
    if col.default is not None and _sql_string(label) in col.default:
        raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                             f'could not remove enum value "{label}" as it is being used in a '
                             f'default expression of "{table.name}"')


def rename_type(session: Any, stmt: Statement) -> str:
    body = stmt.node
    desc = _resolve(session, _names(body["object"]["List"]["items"]), missing_ok=body.get("missing_ok", False))
    if desc is None:
        return "ALTER TYPE"
    _check_owner(session, desc)
    new_name = body["newname"]
    db = session.catalog.by_id[desc.parent_id]
    _name_in_use(session, db, desc.schema_id, new_name)
    system.check_name(new_name, "type")
    new = _copy(desc)
    system.delete_namespace(session.txn, desc.parent_id, desc.schema_id, desc.name)
    new.name = new_name
    system.write_namespace(session.txn, desc.parent_id, desc.schema_id, new_name, desc.id)
    _write(session, new)
    ddl._changed(session)
    return "ALTER TYPE"


def alter_owner(session: Any, stmt: Statement) -> str:
    """ALTER TYPE ... OWNER TO role (the only ALTER ... OWNER TO supported so far)."""
    body = stmt.node
    if body["objectType"] != "OBJECT_TYPE":
        raise errors.unimplemented(
            f"ALTER {unsupported.OBJECT_TYPES.get(body['objectType'], 'this object')} ... OWNER TO is not supported")
    desc = _resolve(session, _names(body["object"]["List"]["items"]))
    assert desc is not None
    _check_owner(session, desc)
    spec = body["newowner"]
    owner = session.user if spec.get("roletype") in ("ROLESPEC_CURRENT_USER", "ROLESPEC_SESSION_USER") \
        else spec["rolename"]
    catalog = session.catalog
    if owner not in catalog.users:
        raise errors.undefined_object(f'role/user "{owner}" does not exist')
    if not catalog.is_admin(session.user) and owner not in catalog.roles_of(session.user):
        raise errors.insufficient_privilege(f"must be member of role {owner}")
    new = _copy(desc)
    new.privileges.owner = owner
    _write(session, new)
    ddl._changed(session)
    return "ALTER TYPE"


# ---- DROP TYPE -------------------------------------------------------------------------------

def drop_types(session: Any, stmt: Statement) -> str:
    body = stmt.node
    if body.get("behavior") == "DROP_CASCADE":
        raise errors.unimplemented("DROP TYPE CASCADE is not yet supported")
    catalog = session.catalog
    for obj in body["objects"]:
        names = _names(obj["TypeName"]["names"])
        desc = _resolve(session, names, missing_ok=body.get("missing_ok", False))
        if desc is None:
            ddl._notice(session, f'type "{".".join(names)}" does not exist, skipping')
            continue
        _check_owner(session, desc)
        users = catalog.type_users(desc.id)
        if users:
            listed = ", ".join(sorted({_qualified(session, t) for t, _ in users}))
            raise errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                                 f'cannot drop type "{desc.name}" because other objects ([{listed}]) '
                                 f'still depend on it')
        ddl._drop_type_desc(session, desc)
    ddl._changed(session)
    return "DROP TYPE"


def _qualified(session: Any, table: TableDesc) -> str:
    db = session.catalog.by_id[table.parent_id]
    schema = next((n for n, sid in db.schemas.items() if sid == table.schema_id), PUBLIC_SCHEMA)
    return f"{db.name}.{schema}.{table.name}"


# ---- SHOW ENUMS / SHOW TYPES ---------------------------------------------------------------

SHOW_ENUMS_COLUMNS = (("schema", T.STRING), ("name", T.STRING), ("values", T.STRING_ARRAY),
                      ("owner", T.STRING))
SHOW_TYPES_COLUMNS = (("schema", T.STRING), ("name", T.STRING), ("owner", T.STRING))


def _types_in(session: Any, source: list[str] | None) -> list[tuple[str, TypeDesc]]:
    """The types of the current database, or of FROM schema / FROM db.schema."""
    catalog = session.catalog
    if source and len(source) == 2:
        db = catalog.database(source[0])
        if db is None:
            raise errors.undefined_database(source[0])
    else:
        db = session.current_db()
    if source and source[-1] not in db.schemas:
        raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{".".join(source)}" does not exist')
    schema_names = {sid: name for name, sid in db.schemas.items()}
    found = [(schema_names.get(t.schema_id, PUBLIC_SCHEMA), t) for t in catalog.types.values()
             if t.parent_id == db.id]
    if source:
        found = [(s, t) for s, t in found if s == source[-1]]
    return sorted(found, key=lambda st: (st[0], st[1].name))


def show_enums(session: Any, node: dict) -> list[tuple]:
    return [(schema, t.name, [label for label, _ in t.members], t.privileges.owner)
            for schema, t in _types_in(session, node.get("source"))]


def show_types(session: Any, node: dict) -> list[tuple]:
    return [(schema, t.name, t.privileges.owner) for schema, t in _types_in(session, None)]
