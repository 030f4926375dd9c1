"""Virtual schemas: pg_catalog, information_schema and crdb_internal, computed from the catalog.

Each virtual table is a list of columns and a function from the execution context to rows; the
planner reads them like any table (without indexes). OIDs follow CockroachDB's scheme: a table's
or schema's OID is its descriptor id, a type's OID is PostgreSQL's, a role's OID is a stable hash
of its name; indexes, constraints and column defaults get OIDs computed from their table's id (see
index_oid and friends), and the virtual tables themselves have OIDs too (PostgreSQL's own for its
system catalogs), so that every OID one catalog table shows can be joined with another's and
handed to the functions of sem/pg_builtins.py.
This module knows nothing of plans or of the wire protocol.
"""
from __future__ import annotations

import datetime
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.sql import activity, cluster, datum
from pillbug.sql import types as T
from pillbug.sql import vars as session_vars
from pillbug.sql.catalog import foreign_keys
from pillbug.sql.catalog.descriptors import DatabaseDesc, ForeignKeyDesc, IndexDesc, TableDesc
from pillbug.sql.catalog.oids import (
    ATTRDEF_OID_BASE,
    CONSTRAINT_OID_BASE,
    PER_TABLE,
    attrdef_oid,
    constraint_oid,
    index_oid,
)
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.sem import builtins
from pillbug.sql.sem.builtins import NAVIGATION, RANKING
from pillbug.util import errors

SCHEMAS = ("pg_catalog", "information_schema", "crdb_internal", "pg_extension")
# OIDs of the virtual schemas themselves (real schemas use their descriptor ids).
SCHEMA_OIDS = {"pg_catalog": 11, "information_schema": 4294967294, "crdb_internal": 4294967295,
               "pg_extension": 4294967293}


# PostgreSQL's OIDs for its system catalogs: tools compare classoid with them (and with
# 'pg_class'::regclass). Other virtual tables count down from VIRTUAL_OID_TOP.
PG_CATALOG_OIDS = {
    "pg_aggregate": 2600, "pg_am": 2601, "pg_attrdef": 2604, "pg_attribute": 1249,
    "pg_auth_members": 1261, "pg_authid": 1260, "pg_cast": 2605, "pg_class": 1259,
    "pg_collation": 3456, "pg_constraint": 2606, "pg_database": 1262, "pg_depend": 2608,
    "pg_description": 2609, "pg_enum": 3501, "pg_event_trigger": 3466, "pg_extension": 3079,
    "pg_foreign_server": 1417, "pg_foreign_table": 3118, "pg_index": 2610, "pg_inherits": 2611,
    "pg_language": 2612, "pg_namespace": 2615, "pg_opclass": 2616, "pg_operator": 2617, "pg_partitioned_table": 3350,
    "pg_policy": 3256, "pg_proc": 1255, "pg_publication": 6104, "pg_publication_namespace": 6237,
    "pg_publication_rel": 6106, "pg_rewrite": 2618, "pg_sequence": 2224, "pg_shdescription": 2396,
    "pg_statistic_ext": 3381, "pg_tablespace": 1213, "pg_trigger": 2620, "pg_type": 1247,
}
VIRTUAL_OID_TOP = 4_294_967_000
NODE_USER = "node"  # CockroachDB's internal user: owns the virtual schemas and tables


@dataclass(slots=True)
class VirtualTable:
    schema: str
    name: str
    columns: list[tuple[str, T.SQLType]]
    produce: Callable[[Any], Iterable[tuple]]
    oid: int = 0  # assigned once every table is registered (_assign_oids)

    def rows(self, ctx: Any) -> Iterable[tuple]:
        return self.produce(ctx)


TABLES: dict[tuple[str, str], VirtualTable] = {}
_BY_OID: dict[int, VirtualTable] = {}


def virtual(schema: str, name: str, columns: str) -> Callable:
    """Register a virtual table; columns is "name type, name type, ..."."""
    cols = []
    for part in columns.split(","):
        col_name, type_name = part.split()
        cols.append((col_name, _type(type_name)))

    def register(fn: Callable[[Any], Iterable[tuple]]) -> Callable:
        TABLES[(schema, name)] = VirtualTable(schema, name, cols, fn)
        return fn
    return register


def _type(name: str) -> T.SQLType:
    return {"text": T.STRING, "name": T.NAME, "oid": T.OID, "int2": T.INT2, "int4": T.INT4,
            "int8": T.INT8, "bool": T.BOOL, "char": T.CHAR_INTERNAL, "float4": T.FLOAT4,
            "float8": T.FLOAT8, "text[]": T.STRING_ARRAY, "oid[]": T.OID_ARRAY,
            "int2vector": T.INT2VECTOR, "oidvector": T.OIDVECTOR, "timestamptz": T.TIMESTAMPTZ,
            "regproc": T.REGPROC, "int2[]": T.array_of(T.INT2), "name[]": T.array_of(T.NAME),
            "char[]": T.array_of(T.CHAR_INTERNAL), "bytes": T.BYTES, "jsonb": T.JSONB}[name]


def lookup(schema: str, name: str) -> VirtualTable | None:
    if schema not in SCHEMAS:
        return None
    return TABLES.get((schema, name))


def table_by_oid(oid: int) -> VirtualTable | None:
    return _BY_OID.get(oid)


def user_oid(name: str) -> int:
    return 100_000 + zlib.crc32(name.encode()) % 2_000_000_000


def _catalog(ctx: Any) -> Catalog:
    return ctx.session.catalog


def _db(ctx: Any) -> DatabaseDesc:
    return ctx.session.current_db()


def _schema_names(db: DatabaseDesc) -> dict[int, str]:
    return {sid: name for name, sid in db.schemas.items()}


def _tables(ctx: Any) -> list[tuple[TableDesc, str]]:
    db = _db(ctx)
    names = _schema_names(db)
    return [(t, names.get(t.schema_id, "public")) for t in _catalog(ctx).tables_in(db.id)]


def _visible(ctx: Any, desc: Any) -> bool:
    catalog = _catalog(ctx)
    user = ctx.session.user
    if catalog.is_admin(user):
        return True
    roles = catalog.roles_of(user)
    return desc.privileges.owner in roles or any(r in desc.privileges.grants for r in roles)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One row of pg_constraint: a table's primary key, a unique index, a CHECK or a FOREIGN KEY."""
    oid: int
    name: str
    contype: str  # 'p', 'u' or 'c'
    attnums: list[int]
    index: IndexDesc | None
    check_expr: str | None

    @property
    def definition(self) -> str:
        """pg_get_constraintdef(): what the constraint says, as CockroachDB prints it."""
        if self.check_expr is not None:
            return f"CHECK (({self.check_expr}))"
        if self.contype == "f":
            return self.columns_text
        return f"{'PRIMARY KEY' if self.contype == 'p' else 'UNIQUE'} ({self.columns_text})"

    columns_text: str = ""  # a foreign key's whole definition
    fk: ForeignKeyDesc | None = None
    ref_table: TableDesc | None = None


def table_constraints(table: TableDesc, catalog: Catalog | None = None) -> list[Constraint]:
    """The constraints of a table in a stable order (their OIDs depend on it); foreign keys
    (which name other tables) only when the catalog is given."""
    if table.is_view or table.is_sequence:
        return []
    out = []
    n = 0
    for idx in table.all_indexes():
        if not idx.unique:
            continue
        n += 1
        cols = ", ".join(table.column_by_id(c).name for c in idx.column_ids)
        out.append(Constraint(constraint_oid(table, n), idx.name, "p" if idx.is_primary else "u",
                              [table.position(c) + 1 for c in idx.column_ids], idx, None, cols))
    for chk in table.checks:
        n += 1
        out.append(Constraint(constraint_oid(table, n), chk.name, "c",
                              [table.position(c) + 1 for c in chk.column_ids], None, chk.expr))
    for fk in table.foreign_keys if catalog is not None else ():
        n += 1
        parent = catalog.by_id.get(fk.ref_table_id)
        if not isinstance(parent, TableDesc):
            continue
        idx = foreign_keys.referenced_index(parent, fk.ref_column_ids)
        out.append(Constraint(constraint_oid(table, n), fk.name, "f",
                              [table.position(c) + 1 for c in fk.column_ids], idx, None,
                              foreign_keys.definition(catalog, table, fk, show_not_valid=True), fk, parent))
    return out


def constraint_by_oid(catalog: Catalog, oid: int) -> tuple[TableDesc, Constraint] | None:
    if not CONSTRAINT_OID_BASE <= oid < ATTRDEF_OID_BASE:
        return None
    table = catalog.by_id.get((oid - CONSTRAINT_OID_BASE) // PER_TABLE)
    if not isinstance(table, TableDesc):
        return None
    for con in table_constraints(table, catalog):
        if con.oid == oid:
            return table, con
    return None


def schema_name_of(catalog: Catalog, table: TableDesc) -> str:
    db = catalog.by_id.get(table.parent_id)
    if isinstance(db, DatabaseDesc):
        for name, sid in db.schemas.items():
            if sid == table.schema_id:
                return name
    return "public"


def search_path(session: Any) -> list[str]:
    """The schemas unqualified names are looked up in, in order (pg_catalog first, implicitly)."""
    out = ["pg_catalog"]
    for part in session.show_var("search_path").split(","):
        name = part.strip().strip('"')
        if name == "$user":
            name = session.user
        if name and name not in out:
            out.append(name)
    return out


# The default operator class of each indexable type (PostgreSQL's btree OIDs and names);
# pg_index.indclass names one per index column.
OPCLASSES = {
    16: (424, "bool_ops"), 17: (428, "bytea_ops"), 18: (429, "char_ops"), 19: (1986, "name_ops"),
    20: (3124, "int8_ops"), 21: (1979, "int2_ops"), 23: (1978, "int4_ops"), 25: (3126, "text_ops"),
    26: (1989, "oid_ops"), 700: (1970, "float4_ops"), 701: (1971, "float8_ops"), 869: (3123, "inet_ops"),
    1042: (426, "bpchar_ops"), 1043: (3126, "text_ops"), 1082: (3122, "date_ops"),
    1083: (1991, "time_ops"), 1114: (3128, "timestamp_ops"), 1184: (3127, "timestamptz_ops"),
    1186: (3129, "interval_ops"), 1700: (3125, "numeric_ops"), 2950: (2968, "uuid_ops"),
}
PREFIX_AM = 2631  # CockroachDB's access method for ordinary (forward) indexes


def opclass_oid(typ: T.SQLType) -> int:
    return OPCLASSES.get(typ.oid, (0, ""))[0]


def relkind(table: TableDesc) -> str:
    return "S" if table.is_sequence else ("v" if table.is_view else "r")


def data_type_name(typ: T.SQLType) -> str:
    """information_schema.columns.data_type: PostgreSQL's spelling without modifiers."""
    if typ.family == "array":
        return "ARRAY"
    if typ.family == "enum":
        return "USER-DEFINED"
    base = typ.pg_name.split("(")[0]
    return base


def _udt_schema(typ: T.SQLType) -> str:
    base = typ.elem if typ.family == "array" and typ.elem is not None else typ
    return base.enum.schema if base.enum is not None else "pg_catalog"


def _udt_name(typ: T.SQLType) -> str:
    if typ.family == "array" and typ.elem is not None and typ.elem.family == "enum":
        return "_" + typ.elem.pg_name
    return typ.pg_name.split("(")[0]


# ---- information_schema ---------------------------------------------------------------------

@virtual("information_schema", "schemata",
         "catalog_name text, schema_name text, default_character_set_name text, sql_path text, crdb_is_user_defined text")
def _schemata(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for name in sorted(list(db.schemas) + ["crdb_internal", "information_schema", "pg_catalog", "pg_extension"]):
        yield (db.name, name, None, None, "YES" if name in db.schemas and name != "public" else "NO")


@virtual("information_schema", "tables",
         "table_catalog text, table_schema text, table_name text, table_type text, is_insertable_into text, version int8")
def _info_tables(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if not _visible(ctx, t):
            continue
        kind = "VIEW" if t.is_view else ("SEQUENCE" if t.is_sequence else "BASE TABLE")
        yield (db.name, schema, t.name, kind, "NO" if t.is_view else "YES", t.version)


@virtual("information_schema", "columns",
         "table_catalog text, table_schema text, table_name text, column_name text, column_comment text, "
         "ordinal_position int8, column_default text, is_nullable text, data_type text, "
         "character_maximum_length int8, character_octet_length int8, numeric_precision int8, "
         "numeric_precision_radix int8, numeric_scale int8, datetime_precision int8, "
         "interval_type text, interval_precision int8, character_set_catalog text, "
         "character_set_schema text, character_set_name text, collation_catalog text, "
         "collation_schema text, collation_name text, domain_catalog text, domain_schema text, "
         "domain_name text, udt_catalog text, udt_schema text, udt_name text, scope_catalog text, "
         "scope_schema text, scope_name text, maximum_cardinality int8, dtd_identifier text, "
         "is_self_referencing text, is_identity text, identity_generation text, identity_start text, "
         "identity_increment text, identity_maximum text, identity_minimum text, identity_cycle text, "
         "is_generated text, generation_expression text, is_updatable text, is_hidden text, crdb_sql_type text")
def _info_columns(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if t.is_sequence or not _visible(ctx, t):
            continue
        for pos, col in enumerate(t.columns, start=1):
            typ = col.type
            char_len = typ.width if typ.family == "string" and typ.width else None
            precision = scale = radix = None
            if typ.family == "int":
                precision, radix, scale = typ.width, 2, 0
            elif typ.family == "float":
                precision, radix = (24 if typ.width == 32 else 53), 2
            elif typ.family == "decimal":
                precision = typ.precision or None
                scale = typ.scale if typ.precision else None
                radix = 10
            yield (db.name, schema, t.name, col.name, None, pos, col.default,
                   "YES" if col.nullable else "NO", data_type_name(typ), char_len,
                   char_len * 4 if char_len else None, precision, radix, scale, None,
                   None, None, None, None, None, None, None, None, None, None, None,
                   db.name, _udt_schema(typ), _udt_name(typ),
                   None, None, None, None, str(pos),
                   "NO", "NO", None, None, None, None, None, None, "NEVER", None,
                   "YES", "YES" if col.hidden else "NO", typ.crdb_name)


@virtual("information_schema", "key_column_usage",
         "constraint_catalog text, constraint_schema text, constraint_name text, table_catalog text, "
         "table_schema text, table_name text, column_name text, ordinal_position int8, "
         "position_in_unique_constraint int8")
def _key_column_usage(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if t.is_view or t.is_sequence:
            continue
        for idx in t.all_indexes():
            if not idx.unique:
                continue
            for pos, cid in enumerate(idx.column_ids, start=1):
                yield (db.name, schema, idx.name, db.name, schema, t.name, t.column_by_id(cid).name, pos, None)
        for fk in t.foreign_keys:
            parent = _catalog(ctx).by_id.get(fk.ref_table_id)
            ref_idx = foreign_keys.referenced_index(parent, fk.ref_column_ids) if isinstance(parent, TableDesc) else None
            for pos, (cid, ref) in enumerate(zip(fk.column_ids, fk.ref_column_ids), start=1):
                in_unique = ref_idx.column_ids.index(ref) + 1 if ref_idx is not None else None
                yield (db.name, schema, fk.name, db.name, schema, t.name, t.column_by_id(cid).name, pos, in_unique)


@virtual("information_schema", "table_constraints",
         "constraint_catalog text, constraint_schema text, constraint_name text, table_catalog text, "
         "table_schema text, table_name text, constraint_type text, is_deferrable text, initially_deferred text")
def _table_constraints(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if t.is_view or t.is_sequence:
            continue
        yield (db.name, schema, t.primary_index.name, db.name, schema, t.name, "PRIMARY KEY", "NO", "NO")
        for idx in t.indexes:
            if idx.unique:
                yield (db.name, schema, idx.name, db.name, schema, t.name, "UNIQUE", "NO", "NO")
        for chk in t.checks:
            yield (db.name, schema, chk.name, db.name, schema, t.name, "CHECK", "NO", "NO")
        for fk in t.foreign_keys:
            yield (db.name, schema, fk.name, db.name, schema, t.name, "FOREIGN KEY", "NO", "NO")


@virtual("information_schema", "referential_constraints",
         "constraint_catalog text, constraint_schema text, constraint_name text, "
         "unique_constraint_catalog text, unique_constraint_schema text, unique_constraint_name text, "
         "match_option text, update_rule text, delete_rule text, table_name text, referenced_table_name text")
def _referential_constraints(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    catalog = _catalog(ctx)
    names = _schema_names(db)
    for t, schema in _tables(ctx):
        for fk in t.foreign_keys:
            parent = catalog.by_id.get(fk.ref_table_id)
            if not isinstance(parent, TableDesc):
                continue
            idx = foreign_keys.referenced_index(parent, fk.ref_column_ids)
            yield (db.name, schema, fk.name, db.name, names.get(parent.schema_id, "public"),
                   idx.name if idx is not None else None, {"s": "NONE", "f": "FULL"}.get(fk.match, "PARTIAL"),
                   foreign_keys.ACTION_NAMES[fk.on_update], foreign_keys.ACTION_NAMES[fk.on_delete],
                   t.name, parent.name)


@virtual("information_schema", "constraint_column_usage",
         "table_catalog text, table_schema text, table_name text, column_name text, "
         "constraint_catalog text, constraint_schema text, constraint_name text")
def _constraint_column_usage(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    catalog = _catalog(ctx)
    names = _schema_names(db)
    for t, schema in _tables(ctx):
        if t.is_view or t.is_sequence:
            continue
        for idx in t.all_indexes():
            if idx.unique:
                for cid in idx.column_ids:
                    yield (db.name, schema, t.name, t.column_by_id(cid).name, db.name, schema, idx.name)
        for chk in t.checks:
            for cid in chk.column_ids:
                yield (db.name, schema, t.name, t.column_by_id(cid).name, db.name, schema, chk.name)
        for fk in t.foreign_keys:
            parent = catalog.by_id.get(fk.ref_table_id)
            if isinstance(parent, TableDesc):
                for cid in fk.ref_column_ids:
                    yield (db.name, names.get(parent.schema_id, "public"), parent.name,
                           parent.column_by_id(cid).name, db.name, schema, fk.name)


@virtual("information_schema", "views",
         "table_catalog text, table_schema text, table_name text, view_definition text, check_option text, "
         "is_updatable text, is_insertable_into text, is_trigger_updatable text, is_trigger_deletable text, "
         "is_trigger_insertable_into text")
def _info_views(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if t.is_view:
            yield (db.name, schema, t.name, t.view_query, None, "NO", "NO", "NO", "NO", "NO")


@virtual("information_schema", "sequences",
         "sequence_catalog text, sequence_schema text, sequence_name text, data_type text, "
         "numeric_precision int8, numeric_precision_radix int8, numeric_scale int8, start_value text, "
         "minimum_value text, maximum_value text, increment text, cycle_option text")
def _info_sequences(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    for t, schema in _tables(ctx):
        if t.is_sequence:
            s = t.sequence or {}
            yield (db.name, schema, t.name, "bigint", 64, 2, 0, str(s.get("start")), str(s.get("minvalue")),
                   str(s.get("maxvalue")), str(s.get("increment")), "NO")


# ---- pg_catalog -----------------------------------------------------------------------------

@virtual("pg_catalog", "pg_namespace", "oid oid, nspname name, nspowner oid, nspacl text[]")
def _pg_namespace(ctx: Any) -> Iterable[tuple]:
    db = _db(ctx)
    catalog = _catalog(ctx)
    for name, sid in sorted(db.schemas.items()):
        desc = catalog.schemas.get(sid)
        if desc is None:
            continue
        yield (sid, name, user_oid(desc.privileges.owner), _acl(desc.privileges, _SCHEMA_ACL))
    for name, oid in SCHEMA_OIDS.items():
        yield (oid, name, user_oid(NODE_USER), None)


@virtual("pg_catalog", "pg_database",
         "oid oid, datname name, datdba oid, encoding int4, datcollate text, datctype text, "
         "datistemplate bool, datallowconn bool, datconnlimit int4, datlastsysoid oid, "
         "datfrozenxid int8, datminmxid int8, dattablespace oid, datacl text[]")
def _pg_database(ctx: Any) -> Iterable[tuple]:
    for db in sorted(_catalog(ctx).databases.values(), key=lambda d: d.name):
        yield (db.id, db.name, user_oid(db.privileges.owner), 6, "C.UTF-8", "C.UTF-8", False, True, -1, 0,
               0, 0, 0, _acl(db.privileges, _DATABASE_ACL))


# aclitem letters (PostgreSQL's) for the privileges that have one; "ALL" grants all of them.
_DATABASE_ACL = {"CREATE": "C", "TEMPORARY": "T", "CONNECT": "c"}
_TABLE_ACL = {"INSERT": "a", "SELECT": "r", "UPDATE": "w", "DELETE": "d", "TRUNCATE": "D",
              "REFERENCES": "x", "TRIGGER": "t"}
_SCHEMA_ACL = {"USAGE": "U", "CREATE": "C"}


def _acl(privileges: Any, letters: dict[str, str]) -> list[str]:
    """Grants as aclitem texts, e.g. ['root=arwdDxt/root', '=U/root'] (PUBLIC has no name).

    The owner, who holds every privilege without a grant, comes first, as in PostgreSQL."""
    owner = privileges.owner
    out = [f"{owner}={''.join(letters.values())}/{owner}"]
    for grantee, privs in sorted(privileges.grants.items()):
        if grantee == owner:
            continue
        if "ALL" in privs:
            granted = "".join(letters.values())
        else:
            granted = "".join(letter for p, letter in letters.items() if p in privs)
        if granted:
            out.append(f"{'' if grantee == 'public' else grantee}={granted}/{privileges.owner}")
    return out


@virtual("pg_catalog", "pg_class",
         "oid oid, relname name, relnamespace oid, reltype oid, reloftype oid, relowner oid, relam oid, "
         "relfilenode oid, reltablespace oid, relpages int4, reltuples float4, relallvisible int4, "
         "reltoastrelid oid, relhasindex bool, relisshared bool, relpersistence char, relistemp bool, "
         "relkind char, relnatts int2, relchecks int2, relhasoids bool, relhaspkey bool, relhasrules bool, "
         "relhastriggers bool, relhassubclass bool, relfrozenxid int8, relacl text[], reloptions text[], "
         "relforcerowsecurity bool, relispartition bool, relispopulated bool, relreplident char, "
         "relrewrite oid, relrowsecurity bool, relpartbound text, relminmxid int8")
def _pg_class(ctx: Any) -> Iterable[tuple]:
    tables = _tables(ctx)
    # relhastriggers: psql's \d lists foreign keys (both ways) only for tables that say they have
    # triggers, which is how PostgreSQL enforces them.
    with_fks = {fk.ref_table_id for t, _ in tables for fk in t.foreign_keys} | \
        {t.id for t, _ in tables if t.foreign_keys}
    for t, _ in tables:
        owner = user_oid(t.privileges.owner)
        kind = relkind(t)
        yield (t.id, t.name, t.schema_id, 0, 0, owner, 0, 0, 0, 0, 0.0, 0, 0,
               bool(t.indexes) or kind == "r", False, "p", False, kind, len(t.columns), len(t.checks),
               False, kind == "r", False, t.id in with_fks, False, 0, _acl(t.privileges, _TABLE_ACL), None, False,
               False, True, "d", 0, False, None, 0)
        if kind != "r":
            continue
        for idx in t.all_indexes():
            yield (index_oid(t, idx.id), idx.name, t.schema_id, 0, 0, owner, PREFIX_AM, 0, 0, 0,
                   0.0, 0, 0, False, False, "p", False, "i", len(idx.column_ids) + len(idx.storing_ids), 0,
                   False, False, False, False, False, 0, None, None, False, False, True, "n", 0, False,
                   None, 0)
    node = user_oid(NODE_USER)
    for vt in _virtual_tables():
        yield (vt.oid, vt.name, SCHEMA_OIDS[vt.schema], 0, 0, node, 0, 0, 0, 0, 0.0, 0, 0, False, False,
               "p", False, "v", len(vt.columns), 0, False, False, False, False, False, 0, None, None,
               False, False, True, "d", 0, False, None, 0)


def _virtual_tables() -> list[VirtualTable]:
    return sorted(TABLES.values(), key=lambda vt: vt.oid)


@virtual("pg_catalog", "pg_am", "oid oid, amname name, amhandler oid, amtype char")
def _pg_am(ctx: Any) -> Iterable[tuple]:
    yield (PREFIX_AM, "prefix", 0, "i")
    yield (2632, "inverted", 0, "i")


@virtual("pg_catalog", "pg_type",
         "oid oid, typname name, typnamespace oid, typowner oid, typlen int2, typbyval bool, "
         "typtype char, typcategory char, typispreferred bool, typisdefined bool, typdelim char, "
         "typrelid oid, typelem oid, typarray oid, typinput regproc, typoutput regproc, "
         "typreceive regproc, typsend regproc, typmodin regproc, typmodout regproc, typanalyze regproc, "
         "typalign char, typstorage char, typnotnull bool, typbasetype oid, typtypmod int4, "
         "typndims int4, typcollation oid, typdefaultbin text, typdefault text, typacl text[]")
def _pg_type(ctx: Any) -> Iterable[tuple]:
    seen = set()
    for oid, typ in sorted(T.BY_OID.items()):
        if oid in seen:
            continue
        seen.add(oid)
        name = _pg_type_name(typ)
        array_oid = T._ARRAY_OIDS.get(oid, 0) if typ.family != "array" else 0
        elem = typ.elem.oid if typ.family == "array" and typ.elem else 0
        category = {"int": "N", "float": "N", "decimal": "N", "string": "S", "bool": "B", "bytes": "U",
                    "date": "D", "timestamp": "D", "timestamptz": "D", "interval": "T", "array": "A",
                    "uuid": "U", "jsonb": "U", "oid": "N"}.get(typ.family, "U")
        kind = "p" if typ.family in ("void", "record", "any", "trigger", "unknown") else "b"
        io = (ARRAY_IN, ARRAY_OUT, ARRAY_RECV, ARRAY_SEND) if elem and oid not in (22, 30) else (0, 0, 0, 0)
        yield (oid, name, 11, user_oid("admin"), typ.typlen, typ.typlen > 0, kind, category, False, True,
               ",", 0, elem, array_oid, *io, 0, 0, 0, "i", "x", False, 0, -1, 0,
               100 if typ.family == "string" else 0, None, None, None)
    yield from _enum_pg_types(ctx)


# PostgreSQL's OIDs of the I/O functions of enums and arrays (pg_proc has no rows for them here)
ENUM_IN, ENUM_OUT, ENUM_RECV, ENUM_SEND = 3504, 3505, 3532, 3533
ARRAY_IN, ARRAY_OUT, ARRAY_RECV, ARRAY_SEND = 750, 751, 2400, 2401


def _enum_types(ctx: Any) -> list[tuple[Any, T.SQLType]]:
    """(TypeDesc, SQLType) of the current database's enum types, by OID."""
    catalog = _catalog(ctx)
    db = _db(ctx)
    return sorted(((d, catalog.enum_types[d.id + T.ENUM_OID_OFFSET]) for d in catalog.types.values()
                   if d.parent_id == db.id), key=lambda dt: dt[0].id)


def _enum_pg_types(ctx: Any) -> Iterable[tuple]:
    for desc, typ in _enum_types(ctx):
        assert typ.enum is not None
        owner = user_oid(desc.privileges.owner)
        yield (typ.oid, desc.name, desc.schema_id, owner, -1, False, "e", "E", False, True, ",", 0, 0,
               typ.enum.array_oid, ENUM_IN, ENUM_OUT, ENUM_RECV, ENUM_SEND, 0, 0, 0, "i", "p", False, 0,
               -1, 0, 0, None, None, None)
        yield (typ.enum.array_oid, "_" + desc.name, desc.schema_id, owner, -1, False, "b", "A", False,
               True, ",", 0, typ.oid, 0, ARRAY_IN, ARRAY_OUT, ARRAY_RECV, ARRAY_SEND, 0, 0, 0, "i", "x",
               False, 0, -1, 0, 0, None, None, None)


@virtual("pg_catalog", "pg_enum", "oid oid, enumtypid oid, enumsortorder float4, enumlabel name")
def _pg_enum(ctx: Any) -> Iterable[tuple]:
    for desc, typ in _enum_types(ctx):
        for order, (label, rep) in enumerate(desc.members, start=1):
            # a member's OID stays the same when members are added around it or it is renamed
            yield (zlib.crc32(rep, desc.id) | 0x8000_0000, typ.oid, float(order), label)


def _pg_type_name(typ: T.SQLType) -> str:
    if typ.family == "array":
        return "_" + _pg_type_name(typ.elem) if typ.oid not in (22, 30) else typ.pg_name
    return {16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4",
            25: "text", 26: "oid", 700: "float4", 701: "float8", 705: "unknown", 1042: "bpchar",
            1043: "varchar", 1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz",
            1186: "interval", 1700: "numeric", 2950: "uuid", 3802: "jsonb", 2205: "regclass",
            2206: "regtype", 24: "regproc", 2202: "regprocedure", 4089: "regnamespace",
            4096: "regrole", 2278: "void", 2276: "anyelement", 2249: "record", 869: "inet",
            2279: "trigger", 2277: "anyarray"}.get(
        typ.oid, typ.pg_name)


@virtual("pg_catalog", "pg_attribute",
         "attrelid oid, attname name, atttypid oid, attstattarget int4, attlen int2, attnum int2, "
         "attndims int4, attcacheoff int4, atttypmod int4, attbyval bool, attstorage char, attalign char, "
         "attnotnull bool, atthasdef bool, atthasmissing bool, attidentity char, attgenerated char, "
         "attisdropped bool, attislocal bool, attinhcount int4, attcollation oid, attacl text[], "
         "attoptions text[], attfdwoptions text[], atthasmissingval bool")
def _pg_attribute(ctx: Any) -> Iterable[tuple]:
    for t, _ in _tables(ctx):
        for num, col in enumerate(t.columns, start=1):
            yield _attribute(t.id, num, col.name, col.type, not col.nullable, col.default is not None)
        if t.is_view or t.is_sequence:
            continue
        for idx in t.all_indexes():
            for num, cid in enumerate(idx.column_ids + idx.storing_ids, start=1):
                col = t.column_by_id(cid)
                yield _attribute(index_oid(t, idx.id), num, col.name, col.type, not col.nullable, False)
    for vt in _virtual_tables():
        for num, (name, typ) in enumerate(vt.columns, start=1):
            yield _attribute(vt.oid, num, name, typ, False, False)


def _attribute(relid: int, num: int, name: str, typ: T.SQLType, notnull: bool, hasdef: bool) -> tuple:
    return (relid, name, typ.oid, -1, typ.typlen, num, 1 if typ.is_array else 0, -1, typ.typmod,
            typ.typlen > 0, "p" if typ.typlen > 0 else "x", "i", notnull, hasdef, False, "", "",
            False, True, 0, 100 if typ.family == "string" else 0, None, None, None, False)


@virtual("pg_catalog", "pg_attrdef", "oid oid, adrelid oid, adnum int2, adbin text, adsrc text")
def _pg_attrdef(ctx: Any) -> Iterable[tuple]:
    for t, _ in _tables(ctx):
        for num, col in enumerate(t.columns, start=1):
            if col.default is not None:
                yield (attrdef_oid(t, num), t.id, num, col.default, col.default)


@virtual("pg_catalog", "pg_index",
         "indexrelid oid, indrelid oid, indnatts int2, indnkeyatts int2, indisunique bool, "
         "indisprimary bool, indisexclusion bool, indimmediate bool, indisclustered bool, indisvalid bool, "
         "indcheckxmin bool, indisready bool, indislive bool, indisreplident bool, indkey int2vector, "
         "indcollation oidvector, indclass oidvector, indoption int2vector, indexprs text, indpred text, "
         "indnullsnotdistinct bool")
def _pg_index(ctx: Any) -> Iterable[tuple]:
    for t, _ in _tables(ctx):
        if t.is_view or t.is_sequence:
            continue
        for idx in t.all_indexes():
            keys = [t.position(c) + 1 for c in idx.column_ids]
            stored = [t.position(c) + 1 for c in idx.storing_ids]
            options = [1 if d == "desc" else 0 for d in idx.directions]
            opclasses = [opclass_oid(t.column_by_id(c).type) for c in idx.column_ids]
            yield (index_oid(t, idx.id), t.id, len(keys) + len(stored), len(keys), idx.unique,
                   idx.is_primary, False, True, False, True, False, True, True, False, keys + stored,
                   [0] * len(keys), opclasses, options, None, None, False)


@virtual("pg_catalog", "pg_constraint",
         "oid oid, conname name, connamespace oid, contype char, condeferrable bool, condeferred bool, "
         "convalidated bool, conrelid oid, contypid oid, conindid oid, confrelid oid, confupdtype char, "
         "confdeltype char, confmatchtype char, conislocal bool, coninhcount int4, connoinherit bool, "
         "conkey int2[], confkey int2[], conpfeqop oid[], conppeqop oid[], conffeqop oid[], "
         "conexclop oid[], conbin text, consrc text, condef text, conparentid oid")
def _pg_constraint(ctx: Any) -> Iterable[tuple]:
    for t, _ in _tables(ctx):
        for con in table_constraints(t, _catalog(ctx)):
            fk, parent = con.fk, con.ref_table
            if fk is not None and parent is not None:
                assert con.index is not None
                yield (con.oid, con.name, t.schema_id, "f", False, False, fk.validated, t.id, 0,
                       index_oid(parent, con.index.id), parent.id, fk.on_update, fk.on_delete, fk.match,
                       True, 0, True, con.attnums, [parent.position(c) + 1 for c in fk.ref_column_ids],
                       None, None, None, None, None, None, con.definition, 0)
                continue
            indid = index_oid(t, con.index.id) if con.index is not None else 0
            yield (con.oid, con.name, t.schema_id, con.contype, False, False, True, t.id, 0, indid, 0,
                   " ", " ", " ", True, 0, True, con.attnums, None, None, None, None, None,
                   con.check_expr, con.check_expr, con.definition, 0)


@virtual("pg_catalog", "pg_roles",
         "oid oid, rolname name, rolsuper bool, rolinherit bool, rolcreaterole bool, rolcreatedb bool, "
         "rolcatupdate bool, rolcanlogin bool, rolreplication bool, rolconnlimit int4, rolpassword text, "
         "rolvaliduntil timestamptz, rolbypassrls bool, rolconfig text[]")
def _pg_roles(ctx: Any) -> Iterable[tuple]:
    catalog = _catalog(ctx)
    for name in sorted(catalog.users):
        rec = catalog.users[name]
        admin = catalog.is_admin(name)
        yield (user_oid(name), name, admin, True, admin or bool(rec.options.get("createrole")),
               admin or bool(rec.options.get("createdb")), False, rec.can_login, False, -1, "********",
               None, False, None)


@virtual("pg_catalog", "pg_user",
         "usename name, usesysid oid, usecreatedb bool, usesuper bool, userepl bool, usebypassrls bool, "
         "passwd text, valuntil timestamptz, useconfig text[]")
def _pg_user(ctx: Any) -> Iterable[tuple]:
    catalog = _catalog(ctx)
    for name in sorted(catalog.users):
        rec = catalog.users[name]
        if not rec.can_login:
            continue
        admin = catalog.is_admin(name)
        yield (name, user_oid(name), admin or bool(rec.options.get("createdb")), admin, False, False,
               "********", None, None)


@virtual("pg_catalog", "pg_auth_members",
         "roleid oid, member oid, grantor oid, admin_option bool")
def _pg_auth_members(ctx: Any) -> Iterable[tuple]:
    catalog = _catalog(ctx)
    for role, members in sorted(catalog.members.items()):
        for member, admin in sorted(members.items()):
            yield (user_oid(role), user_oid(member), user_oid("root"), admin)


@virtual("pg_catalog", "pg_tables",
         "schemaname name, tablename name, tableowner name, tablespace name, hasindexes bool, "
         "hasrules bool, hastriggers bool, rowsecurity bool")
def _pg_tables(ctx: Any) -> Iterable[tuple]:
    for t, schema in _tables(ctx):
        if relkind(t) == "r":
            yield (schema, t.name, t.privileges.owner, None, True, False, False, False)


@virtual("pg_catalog", "pg_views", "schemaname name, viewname name, viewowner name, definition text")
def _pg_views(ctx: Any) -> Iterable[tuple]:
    for t, schema in _tables(ctx):
        if t.is_view:
            yield (schema, t.name, t.privileges.owner, t.view_query)


@virtual("pg_catalog", "pg_indexes",
         "crdb_oid oid, schemaname name, tablename name, indexname name, tablespace name, indexdef text")
def _pg_indexes(ctx: Any) -> Iterable[tuple]:
    for t, schema in _tables(ctx):
        if relkind(t) != "r":
            continue
        for idx in t.all_indexes():
            yield (index_oid(t, idx.id), schema, t.name, idx.name, None, index_definition(t, idx, schema))


def index_definition(t: TableDesc, idx: Any, schema: str = "public") -> str:
    cols = ", ".join(f"{t.column_by_id(c).name} {d.upper()}" for c, d in zip(idx.column_ids, idx.directions))
    stored = ""
    if idx.storing_ids:
        stored = f" STORING ({', '.join(t.column_by_id(c).name for c in idx.storing_ids)})"
    return f"CREATE {'UNIQUE ' if idx.unique else ''}INDEX {idx.name} ON {schema}.{t.name} USING btree ({cols}){stored}"


@virtual("pg_catalog", "pg_settings",
         "name text, setting text, unit text, category text, short_desc text, extra_desc text, "
         "context text, vartype text, source text, min_val text, max_val text, enumvals text[], "
         "boot_val text, reset_val text, sourcefile text, sourceline int4, pending_restart bool")
def _pg_settings(ctx: Any) -> Iterable[tuple]:
    session = ctx.session
    for name in sorted(session.vars):
        value = session.show_var(name)
        default = session_vars.DEFINITIONS.get(name, ("", None))[0]
        yield (name, value, None, None, None, None, "user", "string", "session", None, None, None,
               default, default, None, None, False)


@virtual("pg_catalog", "pg_description", "objoid oid, classoid oid, objsubid int4, description text")
def _pg_description(ctx: Any) -> Iterable[tuple]:
    return []


@virtual("pg_catalog", "pg_shdescription", "objoid oid, classoid oid, description text")
def _pg_shdescription(ctx: Any) -> Iterable[tuple]:
    return []


@virtual("pg_catalog", "pg_sequence",
         "seqrelid oid, seqtypid oid, seqstart int8, seqincrement int8, seqmax int8, seqmin int8, "
         "seqcache int8, seqcycle bool")
def _pg_sequence(ctx: Any) -> Iterable[tuple]:
    for t, _ in _tables(ctx):
        if t.is_sequence:
            s = t.sequence or {}
            yield (t.id, 20, s.get("start"), s.get("increment"), s.get("maxvalue"), s.get("minvalue"), 1, False)


@virtual("pg_catalog", "pg_proc",
         "oid oid, proname name, pronamespace oid, proowner oid, prolang oid, procost float4, "
         "prorows float4, provariadic oid, prokind char, prosecdef bool, proleakproof bool, "
         "proisstrict bool, proretset bool, provolatile char, proparallel char, pronargs int2, "
         "pronargdefaults int2, prorettype oid, proargtypes oidvector, proallargtypes oid[], "
         "proargmodes char[], proargnames text[], proargdefaults text, protrftypes oid[], prosrc text, "
         "probin text, proconfig text[], proacl text[], proisagg bool, proiswindow bool")
def _pg_proc(ctx: Any) -> Iterable[tuple]:
    node = user_oid(NODE_USER)
    for p in builtin_procs():
        volatility = "v" if p.volatile else "i" if p.kind == "a" else "s"
        yield (p.oid, p.name, SCHEMA_OIDS[p.schema], node, INTERNAL_LANGUAGE, 1.0, 1000.0 if p.returns_set else 0.0,
               p.variadic, p.kind, False, False, p.strict, p.returns_set, volatility, "s", len(p.arg_types), 0,
               p.return_type, list(p.arg_types), None, None, None, None, None, p.name, None, None, None,
               p.kind == "a", p.kind == "w")


@dataclass(frozen=True, slots=True)
class BuiltinProc:
    """One overload of a builtin function, as pg_proc shows it."""
    oid: int
    schema: str
    name: str
    arg_types: tuple[int, ...]  # type OIDs; polymorphic arguments are anyelement or anyarray
    return_type: int
    kind: str  # "f" function, "a" aggregate, "w" window function
    returns_set: bool = False
    strict: bool = True
    volatile: bool = False
    variadic: int = 0  # the element type of a VARIADIC last argument


# Argument families of sem/builtins.py overloads -> the type OIDs pg_proc shows for them.
_FAMILY_OIDS = {"int": 20, "float": 701, "decimal": 1700, "string": 25, "bool": 16, "bytes": 17, "date": 1082,
                "timestamp": 1114, "timestamptz": 1184, "interval": 1186, "uuid": 2950, "jsonb": 3802,
                "oid": 26, "time": 1083, "string_array": 1009, "array": T.ANYARRAY.oid, "any": T.ANY.oid,
                "inet": 869}
PROC_OID_BASE = 5_000_000  # builtins' OIDs count up from here, in name order
INTERNAL_LANGUAGE = 12  # pg_language's "internal": builtins are written in the server's language
_PROCS: list[BuiltinProc] = []
_PROCS_BY_OID: dict[int, BuiltinProc] = {}


def builtin_procs() -> list[BuiltinProc]:
    """Every builtin function, aggregate and window function overload, with a stable OID (the
    builtins are fixed for a build, so the list is computed once)."""
    if not _PROCS:
        entries: list[tuple[str, Any]] = [(name, d) for name, d in builtins.FUNCTIONS.items()]
        entries += [(name, a) for name, a in builtins.AGGREGATES.items()]
        entries += [(name, None) for name in RANKING | NAVIGATION]
        oid = PROC_OID_BASE
        for name, d in sorted(entries, key=lambda e: e[0]):
            schema, _, proname = name.rpartition(".")
            schema = schema or "pg_catalog"
            if d is None:
                oid += 1
                ret = 20 if name in ("row_number", "rank", "dense_rank", "ntile") else \
                    701 if name in ("percent_rank", "cume_dist") else T.ANY.oid
                args = (T.ANY.oid,) if name in NAVIGATION else (20,) if name == "ntile" else ()
                _PROCS.append(BuiltinProc(oid, schema, proname, args, ret, "w", strict=False))
            elif isinstance(d, builtins.AggregateDef):
                oid += 1
                args = (T.ANY.oid,) * max(d.arity)
                _PROCS.append(BuiltinProc(oid, schema, proname, args, _return_oid(d.result_type, args), "a",
                                          strict=False))
            else:
                for ov in d.overloads:
                    oid += 1
                    args = tuple(_FAMILY_OIDS.get(f, T.ANY.oid) for f in ov.args)
                    _PROCS.append(BuiltinProc(
                        oid, schema, proname, args, _return_oid(ov.returns, args), "f", d.is_srf, ov.strict,
                        ov.volatile, args[-1] if ov.variadic and args else 0))
        # the type I/O functions pg_type's typinput/typoutput/typreceive/typsend name (with
        # PostgreSQL's OIDs): pgjdbc tells arrays by typinput = 'array_in'::regproc. They
        # cannot be called.
        for io_oid, io_name in sorted(datum.REGPROC_NAMES.items()):
            if io_oid:
                wire = 17 if io_name.endswith(("_recv", "_send")) else 25
                incoming = io_name.endswith(("_in", "_recv"))
                _PROCS.append(BuiltinProc(io_oid, "pg_catalog", io_name, (wire,) if incoming else (T.ANY.oid,),
                                          T.ANY.oid if incoming else wire, "f"))
        _PROCS_BY_OID.update((p.oid, p) for p in _PROCS)
    return _PROCS


def builtin_proc(oid: int) -> BuiltinProc | None:
    builtin_procs()
    return _PROCS_BY_OID.get(oid)


def resolve_proc(text: str, with_args: bool) -> int:
    """'upper'::regproc, 'pg_catalog.upper(text)'::regprocedure: a builtin's name to its OID."""
    name, _, arglist = text.partition("(")
    parts = [p.strip().strip('"').lower() for p in name.split(".")]
    schema = parts[0] if len(parts) > 1 else None
    candidates = [p for p in builtin_procs() if p.name == parts[-1] and schema in (None, p.schema)]
    if with_args and arglist:
        wanted = [T.lookup(a.strip().lower()).oid for a in arglist.rstrip(") ").split(",") if a.strip()]
        candidates = [p for p in candidates if list(p.arg_types) == wanted]
    if not candidates:
        raise errors.undefined_function(f"unknown function: {text.strip()}()")
    if len(candidates) > 1:
        raise errors.PgError(errors.AMBIGUOUS_FUNCTION, f"more than one function named '{text.strip()}'")
    return candidates[0].oid


def _return_oid(returns: Any, arg_oids: tuple[int, ...]) -> int:
    if isinstance(returns, T.SQLType):
        return returns.oid
    # The result type follows the argument types: find it for two different element types in
    # place of the polymorphic arguments. The same answer twice is the function's type; different
    # answers make it polymorphic itself (anyelement, or anyarray, or record).
    results = []
    for probe in (T.INT8, T.DATE):
        types = [probe if a == T.ANY.oid else T.array_of(probe) if a == T.ANYARRAY.oid else T.BY_OID.get(a, T.ANY)
                 for a in arg_oids]
        try:
            results.append(returns(types))
        except (AttributeError, IndexError, TypeError, errors.PgError):
            results.append(None)
    first, second = results
    if first is not None and first == second:
        return first.oid
    family = (first or second).family if (first or second) else ""
    return T.RECORD.oid if family == "record" else T.ANYARRAY.oid if family == "array" else T.ANY.oid


@virtual("pg_catalog", "pg_language",
         "oid oid, lanname name, lanowner oid, lanispl bool, lanpltrusted bool, lanplcallfoid oid, "
         "laninline oid, lanvalidator oid, lanacl text[]")
def _pg_language(ctx: Any) -> Iterable[tuple]:
    # CockroachDB's rows; builtins are "internal", and no user language can be created here
    node = user_oid(NODE_USER)
    yield (INTERNAL_LANGUAGE, "internal", node, False, False, 0, 0, 2246, None)
    yield (13, "c", node, False, False, 0, 0, 2247, None)
    yield (14, "sql", node, False, True, 0, 0, 2248, None)
    yield (14024, "plpgsql", node, True, True, 0, 0, 0, None)


def _empty(schema: str, name: str, columns: str) -> None:
    virtual(schema, name, columns)(lambda ctx: [])


@virtual("pg_catalog", "pg_opclass",
         "oid oid, opcmethod oid, opcname name, opcnamespace oid, opcowner oid, opcfamily oid, "
         "opcintype oid, opcdefault bool, opckeytype oid")
def _pg_opclass(ctx: Any) -> Iterable[tuple]:
    seen = set()
    for type_oid, (oid, name) in sorted(OPCLASSES.items()):
        if oid not in seen:
            seen.add(oid)
            yield (oid, PREFIX_AM, name, SCHEMA_OIDS["pg_catalog"], user_oid(NODE_USER), oid, type_oid, True, 0)


_empty("pg_catalog", "pg_inherits", "inhrelid oid, inhparent oid, inhseqno int4, inhdetachpending bool")
_empty("pg_catalog", "pg_trigger", "oid oid, tgrelid oid, tgparentid oid, tgname name, tgfoid oid, "
       "tgtype int2, tgenabled char, tgisinternal bool, tgconstrrelid oid, tgconstrindid oid, "
       "tgconstraint oid, tgdeferrable bool, tginitdeferred bool, tgnargs int2, tgattr int2vector, "
       "tgargs bytes, tgqual text, tgoldtable name, tgnewtable name")
_empty("pg_catalog", "pg_policy", "oid oid, polname name, polrelid oid, polcmd char, polpermissive bool, "
       "polroles oid[], polqual text, polwithcheck text")
_empty("pg_catalog", "pg_statistic_ext", "oid oid, stxrelid oid, stxname name, stxnamespace oid, "
       "stxowner oid, stxstattarget int4, stxkeys int2vector, stxkind char[], stxexprs text")
_empty("pg_catalog", "pg_publication", "oid oid, pubname name, pubowner oid, puballtables bool, "
       "pubinsert bool, pubupdate bool, pubdelete bool, pubtruncate bool, pubviaroot bool")
_empty("pg_catalog", "pg_publication_rel", "oid oid, prpubid oid, prrelid oid, prqual text, prattrs int2vector")
_empty("pg_catalog", "pg_publication_namespace", "oid oid, pnpubid oid, pnnspid oid")
_empty("pg_catalog", "pg_rewrite", "oid oid, rulename name, ev_class oid, ev_type char, ev_enabled char, "
       "is_instead bool, ev_qual text, ev_action text")
# CockroachDB has no range types; drivers (asyncpg) still join pg_range when they introspect.
_empty("pg_catalog", "pg_range", "rngtypid oid, rngsubtype oid, rngmultitypid oid, rngcollation oid, "
       "rngsubopc oid, rngcanonical regproc, rngsubdiff regproc")
_empty("pg_catalog", "pg_extension", "oid oid, extname name, extowner oid, extnamespace oid, "
       "extrelocatable bool, extversion text, extconfig oid[], extcondition text[]")
_empty("pg_catalog", "pg_foreign_table", "ftrelid oid, ftserver oid, ftoptions text[]")
_empty("pg_catalog", "pg_foreign_server", "oid oid, srvname name, srvowner oid, srvfdw oid, "
       "srvtype text, srvversion text, srvacl text[], srvoptions text[]")
_empty("pg_catalog", "pg_partitioned_table", "partrelid oid, partstrat char, partnatts int2, "
       "partdefid oid, partattrs int2vector, partclass oidvector, partcollation oidvector, partexprs text")
_empty("pg_catalog", "pg_depend", "classid oid, objid oid, objsubid int4, refclassid oid, refobjid oid, "
       "refobjsubid int4, deptype char")
_empty("pg_catalog", "pg_event_trigger", "oid oid, evtname name, evtevent name, evtowner oid, "
       "evtfoid oid, evtenabled char, evttags text[]")
_empty("pg_catalog", "pg_matviews", "schemaname name, matviewname name, matviewowner name, "
       "tablespace name, hasindexes bool, ispopulated bool, definition text")
_empty("pg_catalog", "pg_locks", "locktype text, database oid, relation oid, page int4, tuple int2, "
       "virtualxid text, transactionid int8, classid oid, objid oid, objsubid int2, virtualtransaction text, "
       "pid int4, mode text, granted bool, fastpath bool")
_empty("pg_catalog", "pg_stat_user_tables", "relid oid, schemaname name, relname name, seq_scan int8, "
       "n_live_tup int8")


@virtual("pg_catalog", "pg_collation",
         "oid oid, collname name, collnamespace oid, collowner oid, collprovider char, "
         "collisdeterministic bool, collencoding int4, collcollate text, collctype text")
def _pg_collation(ctx: Any) -> Iterable[tuple]:
    yield (100, "default", 11, user_oid("node"), "d", True, -1, "", "")
    yield (950, "C", 11, user_oid("node"), "c", True, -1, "C", "C")


@virtual("pg_catalog", "pg_tablespace", "oid oid, spcname name, spcowner oid, spcacl text[], spcoptions text[]")
def _pg_tablespace(ctx: Any) -> Iterable[tuple]:
    yield (1663, "pg_default", user_oid("node"), None, None)


@virtual("pg_catalog", "pg_cursors",
         "name text, statement text, is_holdable bool, is_binary bool, is_scrollable bool, creation_time timestamptz")
def _pg_cursors(ctx: Any) -> Iterable[tuple]:
    # The session's own open cursors (sql/cursors.py); none are holdable, binary or scrollable.
    for cursor in list(ctx.session.cursors.values()):
        yield (cursor.name, cursor.statement, False, False, False, cursor.created)


@virtual("pg_catalog", "pg_stat_activity",
         "datid oid, datname name, pid int4, usesysid oid, usename name, application_name text, "
         "client_addr text, client_hostname text, client_port int4, backend_start timestamptz, "
         "xact_start timestamptz, query_start timestamptz, state_change timestamptz, wait_event_type text, "
         "wait_event text, state text, backend_xid int8, backend_xmin int8, query text, backend_type text")
def _pg_stat_activity(ctx: Any) -> Iterable[tuple]:
    session = ctx.session
    for s in session.engine.activity.visible_sessions(session):
        db = _catalog(ctx).database(s.database)
        query = s.query
        state = "active" if query is not None else "idle in transaction" if s.ready_status != "I" else "idle"
        yield (db.id if db else 0, s.database, s.backend_pid, user_oid(s.user), s.user,
               s.vars.get("application_name", ""), s.client_addr, None, None, s.session_start, None,
               query.start if query is not None else None, None, None, None, state, None, None,
               query.sql if query is not None else s.last_query, "client backend")


# Query control (sql/activity.py): CockroachDB's tables behind SHOW QUERIES and SHOW SESSIONS.
# One node: the cluster's and the node's are the same rows.
_QUERY_COLUMNS = ("query_id text, node_id int8, session_id text, user_name text, start timestamptz, query text, "
                  "client_address text, application_name text, distributed bool, full_scan bool, phase text")
_SESSION_COLUMNS = ("node_id int8, session_id text, status text, user_name text, client_address text, "
                    "application_name text, active_queries text, last_active_query text, "
                    "session_start timestamptz, active_query_start timestamptz, num_txns_executed int8")


@virtual("crdb_internal", "node_queries", _QUERY_COLUMNS)
def _queries(ctx: Any) -> Iterable[tuple]:
    return activity.query_rows(ctx.session)


@virtual("crdb_internal", "cluster_queries", _QUERY_COLUMNS)
def _cluster_queries(ctx: Any) -> Iterable[tuple]:
    return cluster.cluster_rows(ctx.session, "queries")


@virtual("crdb_internal", "node_sessions", _SESSION_COLUMNS)
def _sessions(ctx: Any) -> Iterable[tuple]:
    return activity.session_rows(ctx.session)


@virtual("crdb_internal", "cluster_sessions", _SESSION_COLUMNS)
def _cluster_sessions(ctx: Any) -> Iterable[tuple]:
    return cluster.cluster_rows(ctx.session, "sessions")


@virtual("crdb_internal", "gossip_liveness",
         "node_id int8, epoch int8, expiration text, draining bool, decommissioning bool, membership text, "
         "updated_at timestamptz")
def _gossip_liveness(ctx: Any) -> Iterable[tuple]:
    for n in _nodes(ctx):
        yield (n.node_id, 1, "", n.draining, n.membership == "decommissioning", n.membership,
               _epoch_ts(n.updated_at))


@virtual("crdb_internal", "gossip_nodes",
         "node_id int8, network text, address text, advertise_address text, sql_network text, sql_address text, "
         "advertise_sql_address text, attrs jsonb, locality text, cluster_name text, server_version text, "
         "build_tag text, started_at timestamptz, is_live bool, ranges int8, leases int8")
def _gossip_nodes(ctx: Any) -> Iterable[tuple]:
    for n in _nodes(ctx):
        yield (n.node_id, "tcp", n.address, n.address, "tcp", n.address, n.address, "[]", n.locality,
               ctx.session.engine.cluster_name, CRDB_COMPAT_VERSION.lstrip("v").rsplit(".", 1)[0], n.build,
               _epoch_ts(n.started_at), n.is_live, 0, 0)


@virtual("crdb_internal", "kv_node_status",
         "node_id int8, network text, address text, attrs jsonb, locality text, server_version text, "
         "go_version text, tag text, time text, revision text, cgo_compiler text, platform text, "
         "distribution text, type text, dependencies text, started_at timestamptz, updated_at timestamptz, "
         "is_live bool, is_voter bool, draining bool, membership text")
def _kv_node_status(ctx: Any) -> Iterable[tuple]:
    for n in _nodes(ctx):
        yield (n.node_id, "tcp", n.address, "[]", n.locality, CRDB_COMPAT_VERSION.lstrip("v").rsplit(".", 1)[0],
               "", n.build, "", "", "", "", "CCL", "release", "", _epoch_ts(n.started_at),
               _epoch_ts(n.updated_at), n.is_live, n.is_voter, n.draining, n.membership)


def _nodes(ctx: Any) -> list[cluster.NodeDescriptor]:
    return cluster.nodes(ctx.session.engine)


def _epoch_ts(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


@virtual("crdb_internal", "node_build_info", "node_id int8, field text, value text")
def _node_build_info(ctx: Any) -> Iterable[tuple]:
    session = ctx.session
    yield (session.engine.node_id, "Name", "CockroachDB")
    yield (session.engine.node_id, "Build", session.engine.version_string)
    yield (session.engine.node_id, "Version", CRDB_COMPAT_VERSION)
    yield (session.engine.node_id, "Pillbug", __version__)


@virtual("crdb_internal", "tables",
         "table_id int8, parent_id int8, name text, database_name text, version int8, state text, "
         "sc_lease_node_id int8, create_statement text")
def _crdb_tables(ctx: Any) -> Iterable[tuple]:
    catalog = _catalog(ctx)
    for t in sorted((d for d in catalog.by_id.values() if isinstance(d, TableDesc)), key=lambda d: d.id):
        db = catalog.by_id.get(t.parent_id)
        yield (t.id, t.parent_id, t.name, db.name if db else "", t.version, "PUBLIC", None, None)


@virtual("crdb_internal", "feature_usage", "feature_name text, usage_count int8")
def _feature_usage(ctx: Any) -> Iterable[tuple]:
    yield from sorted(ctx.session.engine.feature_usage.items())


def resolve_reg(session: Any, typ: T.SQLType, name: str) -> int:
    """'accounts'::regclass and friends: a name to its OID."""
    text = name.strip()
    if typ.oid == T.REGCLASS.oid:
        parts = [p.strip('"') for p in text.split(".")]
        kind, obj = session.resolve_table_name(parts)
        return obj.id if kind == "table" else obj.oid
    if typ.oid == T.REGTYPE.oid:
        try:
            return T.lookup(text.lower()).oid
        except errors.PgError:
            user_type = session.catalog.resolve_type(session.database, [p.strip('"') for p in text.split(".")])
            if user_type is None:
                raise errors.undefined_object(f'type "{text}" does not exist') from None
            return user_type.oid
    if typ.oid == T.REGNAMESPACE.oid:
        db = session.current_db()
        if text in db.schemas:
            return db.schemas[text]
        if text in SCHEMA_OIDS:
            return SCHEMA_OIDS[text]
        raise errors.PgError(errors.INVALID_SCHEMA_NAME, f'schema "{text}" does not exist')
    if typ.oid in (T.REGPROC.oid, T.REGPROCEDURE.oid):
        return resolve_proc(text, typ.oid == T.REGPROCEDURE.oid)
    if typ.oid == T.REGROLE.oid:
        if text not in session.catalog_or_latest().users:
            raise errors.undefined_object(f'role "{text}" does not exist')
        return user_oid(text)
    raise errors.unimplemented(f"cannot resolve {typ.pg_name} values")


def _assign_oids() -> None:
    top = VIRTUAL_OID_TOP
    for key in sorted(TABLES):
        vt = TABLES[key]
        if vt.schema == "pg_catalog" and vt.name in PG_CATALOG_OIDS:
            vt.oid = PG_CATALOG_OIDS[vt.name]
        else:
            vt.oid = top
            top -= 1
        _BY_OID[vt.oid] = vt


_assign_oids()
