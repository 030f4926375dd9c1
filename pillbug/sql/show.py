"""CockroachDB's SHOW statements: DATABASES, TABLES, COLUMNS, INDEXES, CONSTRAINTS, CREATE, USERS,
ROLES, GRANTS, SCHEMAS, SEQUENCES, CLUSTER SETTING(S), SESSIONS, JOBS and friends.

Each returns (columns, rows) computed from the session's catalog snapshot, with CockroachDB's
column names and types, so that tools that parse SHOW output find what they expect.
"""
from __future__ import annotations

from typing import Any

from pillbug.sql import access, activity, cluster, enum_ddl, settings
from pillbug.sql import types as T
from pillbug.sql.catalog import foreign_keys
from pillbug.sql.catalog.descriptors import PUBLIC_SCHEMA, DatabaseDesc, TableDesc
from pillbug.sql.catalog.system import ADMIN_ROLE, ROOT_USER
from pillbug.sql.parser.front import Statement
from pillbug.sql.sem.build import ScopeColumn
from pillbug.util import errors

Result = tuple[list[ScopeColumn], list[tuple]]


def _cols(*spec: tuple[str, T.SQLType]) -> list[ScopeColumn]:
    return [ScopeColumn(n, t) for n, t in spec]


S, B, INT, SA = T.STRING, T.BOOL, T.INT8, T.STRING_ARRAY


def columns_of(kind: str, stmt: Statement) -> list[ScopeColumn] | None:
    """The result columns of a SHOW statement without running it (for Describe)."""
    spec = _COLUMNS.get(kind)
    if spec is None:
        return None
    if callable(spec):
        return spec(stmt)
    return _cols(*spec)


_COLUMNS: dict[str, Any] = {
    "ShowDatabases": (("database_name", S), ("owner", S), ("primary_region", S), ("secondary_region", S),
                      ("regions", SA), ("survival_goal", S)),
    "ShowTables": (("schema_name", S), ("table_name", S), ("type", S), ("owner", S),
                   ("estimated_row_count", INT), ("locality", S)),
    "ShowSchemas": (("schema_name", S), ("owner", S)),
    "ShowColumns": (("column_name", S), ("data_type", S), ("is_nullable", B), ("column_default", S),
                    ("generation_expression", S), ("indices", SA), ("is_hidden", B)),
    "ShowIndexes": (("table_name", S), ("index_name", S), ("non_unique", B), ("seq_in_index", INT),
                    ("column_name", S), ("definition", S), ("direction", S), ("storing", B),
                    ("implicit", B), ("visible", B)),
    "ShowConstraints": (("table_name", S), ("constraint_name", S), ("constraint_type", S),
                        ("details", S), ("validated", B)),
    "ShowCreate": (("table_name", S), ("create_statement", S)),
    "ShowCreateDatabase": (("database_name", S), ("create_statement", S)),
    "ShowUsers": (("username", S), ("options", SA), ("member_of", SA)),
    "ShowRoles": (("username", S), ("options", SA), ("member_of", SA)),
    "ShowClusterSettings": (("variable", S), ("value", S), ("setting_type", S), ("public", B),
                            ("description", S)),
    "ShowSessionUser": (("session_user", S),),
    "ShowSequences": (("sequence_schema", S), ("sequence_name", S)),
    "ShowEnums": enum_ddl.SHOW_ENUMS_COLUMNS,
    "ShowTypes": enum_ddl.SHOW_TYPES_COLUMNS,
    "ShowJobs": (("job_id", INT), ("job_type", S), ("description", S), ("status", S), ("created", T.TIMESTAMPTZ)),
    "ShowSessions": (("node_id", INT), ("session_id", S), ("status", S), ("user_name", S),
                     ("client_address", S), ("application_name", S), ("active_queries", S),
                     ("last_active_query", S), ("session_start", T.TIMESTAMPTZ),
                     ("active_query_start", T.TIMESTAMPTZ), ("num_txns_executed", INT)),
    "ShowQueries": (("query_id", S), ("node_id", INT), ("session_id", S), ("user_name", S),
                    ("start", T.TIMESTAMPTZ), ("query", S), ("client_address", S), ("application_name", S),
                    ("distributed", B), ("full_scan", B), ("phase", S)),
    "ShowRanges": (("start_key", S), ("end_key", S), ("range_id", INT), ("replicas", T.INT_ARRAY),
                   ("lease_holder", INT)),
    "ShowRegions": (("region", S), ("zones", SA), ("database_names", SA), ("primary_region_of", SA),
                    ("secondary_region_of", SA)),
    "ShowClusterRegions": (("region", S), ("zones", SA)),
    "ShowDatabaseRegions": (("database", S), ("region", S), ("primary", B), ("secondary", B), ("zones", SA)),
    "ShowAllDatabaseRegions": (("database_name", S), ("regions", SA), ("primary_region", S),
                               ("secondary_region", S), ("survival_goal", S)),
    "ShowSavepointStatus": (("savepoint_name", S), ("is_initial_savepoint", B)),
    "ShowClusterSetting": lambda stmt: _cols((stmt.node["name"], S)),
    "ShowGrants": lambda stmt: _grant_columns(stmt.node),
}


def _grant_columns(node: dict) -> list[ScopeColumn]:
    kind = node.get("on_kind")
    if kind == "role":
        return _cols(("role_name", S), ("member", S), ("is_admin", B))
    if kind == "database":
        return _cols(("database_name", S), ("grantee", S), ("privilege_type", S), ("is_grantable", B))
    if kind == "schema":
        return _cols(("database_name", S), ("schema_name", S), ("grantee", S), ("privilege_type", S),
                     ("is_grantable", B))
    if kind == "table":
        return _cols(("database_name", S), ("schema_name", S), ("table_name", S), ("grantee", S),
                     ("privilege_type", S), ("is_grantable", B))
    return _cols(("database_name", S), ("schema_name", S), ("object_name", S), ("object_type", S),
                 ("grantee", S), ("privilege_type", S), ("is_grantable", B))


def run(session: Any, stmt: Statement) -> Result:
    fn = globals().get("_" + stmt.kind)
    if fn is None:
        raise errors.unimplemented("this SHOW statement is not supported")
    rows = fn(session, stmt.node)
    return columns_of(stmt.kind, stmt) or [], rows


def _schema_name(session: Any, db: DatabaseDesc, schema_id: int) -> str:
    for name, sid in db.schemas.items():
        if sid == schema_id:
            return name
    return PUBLIC_SCHEMA


def _visible(session: Any, desc: Any) -> bool:
    catalog = session.catalog
    if catalog.is_admin(session.user):
        return True
    roles = catalog.roles_of(session.user)
    return desc.privileges.owner in roles or any(r in desc.privileges.grants for r in roles)


def _ShowDatabases(session: Any, node: dict) -> list[tuple]:
    return [(db.name, db.privileges.owner, None, None, [], None) for db in _databases(session)]


def _databases(session: Any) -> list[DatabaseDesc]:
    """The databases the user may see, by name."""
    return [db for db in sorted(session.catalog.databases.values(), key=lambda d: d.name) if _visible(session, db)]


def _db_for(session: Any, source: list[str] | None) -> tuple[DatabaseDesc, str | None]:
    catalog = session.catalog
    if not source:
        return session.current_db(), None
    if len(source) == 1:
        db = catalog.database(source[0])
        if db is None:
            current = session.current_db()
            if source[0] in current.schemas:
                return current, source[0]
            raise errors.undefined_database(source[0])
        return db, None
    db = catalog.database(source[0])
    if db is None:
        raise errors.undefined_database(source[0])
    return db, source[1]


def _ShowTables(session: Any, node: dict) -> list[tuple]:
    db, schema = _db_for(session, node.get("source"))
    rows = []
    for t in session.catalog.tables_in(db.id):
        sname = _schema_name(session, db, t.schema_id)
        if schema is not None and sname != schema:
            continue
        if not _visible(session, t):
            continue
        kind = "sequence" if t.is_sequence else ("view" if t.is_view else "table")
        rows.append((sname, t.name, kind, t.privileges.owner, 0, None))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def _ShowSchemas(session: Any, node: dict) -> list[tuple]:
    db = session.catalog.database(node["database"]) if node.get("database") else session.current_db()
    if db is None:
        raise errors.undefined_database(node["database"])
    names = sorted(list(db.schemas) + ["crdb_internal", "information_schema", "pg_catalog", "pg_extension"])
    return [(n, ROOT_USER if n in db.schemas else None) for n in names]


def _table(session: Any, names: list[str]) -> TableDesc:
    kind, obj = session.resolve_table_name(names)
    if kind != "table":
        raise errors.unimplemented("SHOW on virtual tables is not supported")
    if not _visible(session, obj):
        raise errors.insufficient_privilege(
            f"user {session.user} has no privileges on relation {obj.name}")
    return obj


def _ShowColumns(session: Any, node: dict) -> list[tuple]:
    table = _table(session, node["table"])
    rows = []
    pk = set(table.primary_index.column_ids)
    for col in table.columns:
        # every index holds the primary key columns, and the primary index holds every column
        indices = sorted(i.name for i in table.all_indexes()
                         if col.id in i.column_ids or col.id in i.storing_ids or col.id in pk or
                         (i.is_primary and not table.is_view))
        rows.append((col.name, col.type.crdb_name, col.nullable, col.default, "", indices, col.hidden))
    return rows


def index_rows(table: TableDesc) -> list[tuple]:
    rows = []
    for idx in table.all_indexes():
        seq = 1
        key_ids = list(idx.column_ids)
        for cid, direction in zip(idx.column_ids, idx.directions):
            col = table.column_by_id(cid)
            rows.append((table.name, idx.name, not idx.unique, seq, col.name, col.name, direction.upper(),
                         False, False, True))
            seq += 1
        if idx.is_primary:
            stored = [c.id for c in table.columns if c.id not in key_ids]
        else:
            stored = list(idx.storing_ids)
        for cid in stored:
            col = table.column_by_id(cid)
            rows.append((table.name, idx.name, not idx.unique, seq, col.name, col.name, "N/A", True, False, True))
            seq += 1
        if not idx.is_primary:
            for cid in table.primary_index.column_ids:
                if cid in key_ids or cid in stored:
                    continue
                col = table.column_by_id(cid)
                rows.append((table.name, idx.name, not idx.unique, seq, col.name, col.name, "ASC",
                             False, True, True))
                seq += 1
    rows.sort(key=lambda r: (r[1], r[3]))
    return rows


def _ShowIndexes(session: Any, node: dict) -> list[tuple]:
    if node.get("table") is None:
        db = session.catalog.database(node["database"])
        if db is None:
            raise errors.undefined_database(node["database"])
        return [r for t in session.catalog.tables_in(db.id) if not t.is_view and not t.is_sequence
                for r in index_rows(t)]
    return index_rows(_table(session, node["table"]))


def _ShowConstraints(session: Any, node: dict) -> list[tuple]:
    table = _table(session, node["table"])
    rows = []
    pk = table.primary_index
    rows.append((table.name, pk.name, "PRIMARY KEY", f"PRIMARY KEY ({_index_cols(table, pk)})", True))
    for idx in table.indexes:
        if idx.unique:
            rows.append((table.name, idx.name, "UNIQUE", f"UNIQUE ({_index_cols(table, idx)})", True))
    for chk in table.checks:
        rows.append((table.name, chk.name, "CHECK", f"CHECK (({chk.expr}))", True))
    for fk in table.foreign_keys:
        rows.append((table.name, fk.name, "FOREIGN KEY", foreign_keys.definition(session.catalog, table, fk),
                     fk.validated))
    rows.sort(key=lambda r: r[1])
    return rows


def _index_cols(table: TableDesc, idx: Any) -> str:
    return ", ".join(f"{table.column_by_id(c).name} {d.upper()}" for c, d in zip(idx.column_ids, idx.directions))


def create_statement(session: Any, table: TableDesc) -> str:
    db = session.catalog.by_id.get(table.parent_id)
    schema = _schema_name(session, db, table.schema_id) if isinstance(db, DatabaseDesc) else PUBLIC_SCHEMA
    qualified = f"{schema}.{table.name}"
    if table.is_view:
        cols = ", ".join(c.name for c in table.columns)
        return f"CREATE VIEW {qualified} ({cols}) AS {table.view_query}"
    if table.is_sequence:
        s = table.sequence or {}
        return (f"CREATE SEQUENCE {qualified} MINVALUE {s.get('minvalue')} MAXVALUE {s.get('maxvalue')} "
                f"INCREMENT {s.get('increment')} START {s.get('start')}")
    lines = []
    for col in table.columns:
        parts = [col.name, col.type.crdb_name]
        if col.hidden:
            parts.append("NOT VISIBLE")
        parts.append("NULL" if col.nullable else "NOT NULL")
        if col.default is not None:
            parts.append(f"DEFAULT {col.default}")
        lines.append(" ".join(parts))
    pk = table.primary_index
    lines.append(f"CONSTRAINT {pk.name} PRIMARY KEY ({_index_cols(table, pk)})")
    for fk in table.foreign_keys:
        lines.append(f"CONSTRAINT {foreign_keys.quote_name(fk.name)} "
                     f"{foreign_keys.definition(session.catalog, table, fk, True, True)}")
    for idx in table.indexes:
        line = f"{'UNIQUE ' if idx.unique else ''}INDEX {idx.name} ({_index_cols(table, idx)})"
        if idx.storing_ids:
            line += f" STORING ({', '.join(table.column_by_id(c).name for c in idx.storing_ids)})"
        lines.append(line)
    for chk in table.checks:
        lines.append(f"CONSTRAINT {chk.name} CHECK ({chk.expr})")
    body = ",\n\t".join(lines)
    return f"CREATE TABLE {qualified} (\n\t{body}\n)"


def _ShowCreate(session: Any, node: dict) -> list[tuple]:
    table = _table(session, node["table"])
    return [(".".join(node["table"]), create_statement(session, table))]


def _ShowCreateDatabase(session: Any, node: dict) -> list[tuple]:
    db = session.catalog.database(node["database"])
    if db is None:
        raise errors.undefined_database(node["database"])
    return [(db.name, f"CREATE DATABASE {db.name}")]


def _user_rows(session: Any) -> list[tuple]:
    catalog = session.catalog
    rows = []
    for name in sorted(catalog.users):
        rec = catalog.users[name]
        options = []
        if not rec.can_login:
            options.append("NOLOGIN")
        options.extend(k.upper() for k in sorted(rec.options) if rec.options[k] is True)
        member_of = sorted(r for r, members in catalog.members.items() if name in members)
        rows.append((name, options, member_of))
    return rows


def _ShowUsers(session: Any, node: dict) -> list[tuple]:
    return _user_rows(session)


def _ShowRoles(session: Any, node: dict) -> list[tuple]:
    return _user_rows(session)


def _ShowSessionUser(session: Any, node: dict) -> list[tuple]:
    return [(session.user,)]


def _grant_rows(desc: Any) -> list[tuple[str, str, bool]]:
    rows = []
    owner = desc.privileges.owner
    seen_owner_all = False
    for grantee in sorted(desc.privileges.grants):
        for p in sorted(desc.privileges.grants[grantee]):
            rows.append((grantee, p, grantee in (ADMIN_ROLE, ROOT_USER) or grantee == owner))
            if grantee == owner and p == "ALL":
                seen_owner_all = True
    if not seen_owner_all:
        rows.append((owner, "ALL", True))
    rows.sort()
    return rows


def _ShowGrants(session: Any, node: dict) -> list[tuple]:
    catalog = session.catalog
    kind = node.get("on_kind")
    grantees = node.get("grantees")
    expanded = None
    if grantees:
        expanded = set()
        for g in grantees:
            if g not in catalog.users:
                raise errors.undefined_object(f'role/user "{g}" does not exist')
            expanded |= catalog.roles_of(g)

    def wanted(grantee: str) -> bool:
        return expanded is None or grantee in expanded

    if kind == "role":
        names = [n[0] for n in node["on_names"]] if node.get("on_names") else sorted(catalog.members)
        rows = []
        for role in names:
            for member, admin in sorted(catalog.members.get(role, {}).items()):
                if grantees is None or member in grantees:
                    rows.append((role, member, admin))
        return rows
    if kind == "database":
        rows = []
        for names in node["on_names"]:
            db = catalog.database(names[0])
            if db is None:
                raise errors.undefined_database(names[0])
            rows.extend((db.name, g, p, grantable) for g, p, grantable in _grant_rows(db) if wanted(g))
        return rows
    if kind == "schema":
        db = session.current_db()
        rows = []
        for names in node["on_names"]:
            schema_id = db.schemas.get(names[-1])
            if schema_id is None:
                raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{names[-1]}" does not exist')
            schema = catalog.by_id[schema_id]
            rows.extend((db.name, schema.name, g, p, grantable) for g, p, grantable in _grant_rows(schema)
                        if wanted(g))
        return rows
    if kind == "table":
        rows = []
        for names in node["on_names"]:
            if names[-1] == "*":
                db, schema = _db_for(session, names[:-1] or None)
                tables = [t for t in catalog.tables_in(db.id)
                          if schema is None or _schema_name(session, db, t.schema_id) == schema]
            else:
                tables = [_table(session, names)]
            for t in tables:
                db = catalog.by_id[t.parent_id]
                sname = _schema_name(session, db, t.schema_id)
                rows.extend((db.name, sname, t.name, g, p, grantable) for g, p, grantable in _grant_rows(t)
                            if wanted(g))
        return rows
    db = session.current_db()
    rows = [(db.name, None, None, "database", g, p, grantable) for g, p, grantable in _grant_rows(db) if wanted(g)]
    for sname, sid in sorted(db.schemas.items()):
        schema = catalog.by_id.get(sid)
        if schema is not None:
            rows.extend((db.name, sname, None, "schema", g, p, grantable)
                        for g, p, grantable in _grant_rows(schema) if wanted(g))
    for t in catalog.tables_in(db.id):
        kind_name = access.object_kind(t)
        sname = _schema_name(session, db, t.schema_id)
        rows.extend((db.name, sname, t.name, kind_name, g, p, grantable) for g, p, grantable in _grant_rows(t)
                    if wanted(g))
    return rows


def _ShowClusterSetting(session: Any, node: dict) -> list[tuple]:
    name = node["name"]
    if name not in settings.SETTINGS:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"unknown setting: {name}")
    access.check_admin(session.catalog, session.user, "read cluster settings")
    return [(settings.current(session.catalog.settings, name),)]


def _ShowClusterSettings(session: Any, node: dict) -> list[tuple]:
    access.check_admin(session.catalog, session.user, "read cluster settings")
    return [(s.name, settings.current(session.catalog.settings, s.name), s.type, True, s.description)
            for s in sorted(settings.SETTINGS.values(), key=lambda s: s.name)]


def _ShowSequences(session: Any, node: dict) -> list[tuple]:
    db = session.current_db()
    return [(_schema_name(session, db, t.schema_id), t.name) for t in session.catalog.tables_in(db.id)
            if t.is_sequence]


_ShowEnums = enum_ddl.show_enums
_ShowTypes = enum_ddl.show_types


def _ShowJobs(session: Any, node: dict) -> list[tuple]:
    return []


def _ShowSessions(session: Any, node: dict) -> list[tuple]:
    return activity.session_rows(session) if node.get("local") else cluster.cluster_rows(session, "sessions")


def _ShowQueries(session: Any, node: dict) -> list[tuple]:
    return activity.query_rows(session) if node.get("local") else cluster.cluster_rows(session, "queries")


def _ShowRanges(session: Any, node: dict) -> list[tuple]:
    return [("/Min", "/Max", 1, [session.engine.node_id], session.engine.node_id)]


# Regions: the cluster's are the region tiers of its live nodes' --locality (sql/cluster.py). A
# database is never multi-region in Pillbug (no PRIMARY REGION): it uses none of them.
def _ShowRegions(session: Any, node: dict) -> list[tuple]:
    return [(region, zones, [], [], []) for region, zones in cluster.regions(session.engine)]


def _ShowClusterRegions(session: Any, node: dict) -> list[tuple]:
    return [(region, zones) for region, zones in cluster.regions(session.engine)]


def _ShowDatabaseRegions(session: Any, node: dict) -> list[tuple]:
    name = node["database"] or session.current_db().name
    if session.catalog.database(name) is None:
        raise errors.undefined_database(name)
    return []


def _ShowAllDatabaseRegions(session: Any, node: dict) -> list[tuple]:
    return [(db.name, [], None, None, None) for db in _databases(session)]


def _ShowSavepointStatus(session: Any, node: dict) -> list[tuple]:
    return [(name, mark.token is None) for name, mark in session.savepoints]
