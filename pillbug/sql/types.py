"""SQL types: what the engine knows about each type, and how a type name resolves to one.

Each SQLType carries its family (how values of it behave), its PostgreSQL OID and type
modifier (what the wire protocol and pg_catalog report), its CockroachDB name (what SHOW COLUMNS
and SHOW CREATE print) and its PostgreSQL name (what format_type() and information_schema print).

As in CockroachDB, INT and INTEGER mean INT8, SERIAL means INT8 DEFAULT unique_rowid(), STRING is
TEXT, and JSON is JSONB. Values of each family are plain Python objects (see datum.py).
This module knows nothing of storage or the wire protocol.
"""
from __future__ import annotations

from dataclasses import dataclass

from pillbug.sql.enums import OID_OFFSET as ENUM_OID_OFFSET
from pillbug.sql.enums import EnumInfo
from pillbug.util import errors


@dataclass(frozen=True, slots=True)
class SQLType:
    family: str
    oid: int
    crdb_name: str
    pg_name: str
    typlen: int = -1
    width: int = 0  # max characters for VARCHAR/CHAR, bits for INT/FLOAT
    precision: int = 0  # DECIMAL(precision, scale); 0 means unconstrained
    scale: int = 0
    elem: SQLType | None = None  # element type of an array
    enum: EnumInfo | None = None  # the members of an enum type (family "enum")
    # the named fields of a record (the rows of _pg_expandarray() in a select list); values of a
    # record are tuples in this order
    fields: tuple[tuple[str, SQLType], ...] = ()

    @property
    def typmod(self) -> int:
        if self.family == "string" and self.width:
            return self.width + 4
        if self.family == "decimal" and self.precision:
            return ((self.precision << 16) | self.scale) + 4
        return -1

    @property
    def display(self) -> str:
        """The type's name in error messages, as CockroachDB words them (INT8 is "int")."""
        if self.family == "array" and self.elem is not None and self.oid not in (22, 30):
            return self.elem.display + "[]"
        if self.family == "enum":
            return self.pg_name
        name = self.crdb_name.split("(")[0].lower()
        return _MESSAGE_NAMES.get(name, name)

    @property
    def is_array(self) -> bool:
        return self.family == "array"

    @property
    def is_numeric(self) -> bool:
        return self.family in ("int", "float", "decimal")

    def __str__(self) -> str:
        return self.crdb_name

    def __repr__(self) -> str:
        return f"SQLType({self.crdb_name})"


_MESSAGE_NAMES = {"int8": "int", "float8": "float"}


def _t(family: str, oid: int, crdb: str, pg: str, typlen: int = -1, width: int = 0) -> SQLType:
    return SQLType(family, oid, crdb, pg, typlen, width)


BOOL = _t("bool", 16, "BOOL", "boolean", 1)
BYTES = _t("bytes", 17, "BYTES", "bytea")
CHAR_INTERNAL = _t("string", 18, '"char"', '"char"', 1)  # pg_catalog's one-byte "char"
NAME = _t("string", 19, "NAME", "name", 64)
INT8 = _t("int", 20, "INT8", "bigint", 8, 64)
INT2 = _t("int", 21, "INT2", "smallint", 2, 16)
INT4 = _t("int", 23, "INT4", "integer", 4, 32)
STRING = _t("string", 25, "STRING", "text")
OID = _t("oid", 26, "OID", "oid", 4)
REGPROC = _t("oid", 24, "REGPROC", "regproc", 4)
REGCLASS = _t("oid", 2205, "REGCLASS", "regclass", 4)
REGTYPE = _t("oid", 2206, "REGTYPE", "regtype", 4)
REGNAMESPACE = _t("oid", 4089, "REGNAMESPACE", "regnamespace", 4)
REGPROCEDURE = _t("oid", 2202, "REGPROCEDURE", "regprocedure", 4)
REGROLE = _t("oid", 4096, "REGROLE", "regrole", 4)
FLOAT4 = _t("float", 700, "FLOAT4", "real", 4, 32)
FLOAT8 = _t("float", 701, "FLOAT8", "double precision", 8, 64)
UNKNOWN = _t("unknown", 705, "UNKNOWN", "unknown", -2)
DECIMAL = _t("decimal", 1700, "DECIMAL", "numeric")
DATE = _t("date", 1082, "DATE", "date", 4)
TIME = _t("time", 1083, "TIME", "time without time zone", 8)
TIMESTAMP = _t("timestamp", 1114, "TIMESTAMP", "timestamp without time zone", 8)
TIMESTAMPTZ = _t("timestamptz", 1184, "TIMESTAMPTZ", "timestamp with time zone", 8)
INTERVAL = _t("interval", 1186, "INTERVAL", "interval", 16)
UUID = _t("uuid", 2950, "UUID", "uuid", 16)
JSONB = _t("jsonb", 3802, "JSONB", "jsonb")
# JSON is JSONB in CockroachDB; this type only names what a client declared as a parameter of
# PostgreSQL's json type (OID 114), whose binary form has no version byte.
JSON = _t("jsonb", 114, "JSONB", "json")
VOID = _t("void", 2278, "VOID", "void", 4)
ANY = _t("any", 2276, "ANY", "anyelement", 4)
RECORD = _t("record", 2249, "RECORD", "record")
# pseudo-types: functions' signatures in pg_proc name them, and clients cast names to them
# ('trigger'::regtype); no value has them
TRIGGER = _t("trigger", 2279, "TRIGGER", "trigger", 4)
ANYARRAY = _t("any", 2277, "ANYARRAY", "anyarray")
INET = _t("inet", 869, "INET", "inet")
INT2VECTOR = SQLType("array", 22, "INT2VECTOR", "int2vector", -1, elem=INT2)
OIDVECTOR = SQLType("array", 30, "OIDVECTOR", "oidvector", -1, elem=OID)

_ARRAY_OIDS = {
    16: 1000, 17: 1001, 18: 1002, 19: 1003, 20: 1016, 21: 1005, 23: 1007, 25: 1009, 26: 1028,
    700: 1021, 701: 1022, 1700: 1231, 1082: 1182, 1083: 1183, 1114: 1115, 1184: 1185,
    1186: 1187, 2950: 2951, 3802: 3807, 1043: 1015, 1042: 1014, 2205: 2210, 2206: 2211,
    869: 1041, 24: 1008,
}


def array_of(elem: SQLType) -> SQLType:
    oid = elem.enum.array_oid if elem.enum is not None else _ARRAY_OIDS.get(elem.oid, 0)
    return SQLType("array", oid, f"{elem.crdb_name}[]", f"{elem.pg_name}[]", -1, elem=elem)


def record_of(fields: list[tuple[str, SQLType]]) -> SQLType:
    """The type of a record with these named fields."""
    return SQLType("record", RECORD.oid, "RECORD", "record", fields=tuple(fields))


def enum_type(info: EnumInfo) -> SQLType:
    """The SQL type of an enum: CockroachDB prints it schema-qualified (public.mood),
    PostgreSQL's format_type and information_schema by its bare name."""
    return SQLType("enum", info.oid, f"{info.schema}.{info.name}", info.name, -1, enum=info)


def enum_placeholder(type_id: int) -> SQLType:
    """An enum type known only by its descriptor id, as a stored column names it; the
    catalog replaces it with the type's current members (see Catalog)."""
    return SQLType("enum", type_id + ENUM_OID_OFFSET, f"@{type_id}", f"@{type_id}")


def varchar(width: int = 0) -> SQLType:
    if width:
        return SQLType("string", 1043, f"VARCHAR({width})", f"character varying({width})", -1, width)
    return SQLType("string", 1043, "VARCHAR", "character varying")


def char(width: int = 1) -> SQLType:
    return SQLType("string", 1042, f"CHAR({width})" if width != 1 else "CHAR",
                   f"character({width})", -1, width)


def decimal(precision: int = 0, scale: int = 0) -> SQLType:
    if not precision:
        return DECIMAL
    if not 1 <= precision <= 1000:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE,
                             "precision for type DECIMAL must be between 1 and 1000")
    if not 0 <= scale <= precision:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE,
                             f"scale ({scale}) must be between 0 and precision ({precision})")
    crdb = f"DECIMAL({precision},{scale})" if scale else f"DECIMAL({precision})"
    return SQLType("decimal", 1700, crdb, f"numeric({precision},{scale})",
                   -1, 0, precision, scale)


INT_ARRAY = array_of(INT8)
STRING_ARRAY = array_of(STRING)
OID_ARRAY = array_of(OID)

# Type names as the parser hands them over (lower case; "pg_catalog." kept where the grammar
# adds it, because INT/INTEGER arrive as pg_catalog.int4 and must mean INT8 here).
_BY_NAME: dict[str, SQLType] = {
    "pg_catalog.int4": INT8, "int": INT8, "integer": INT8, "int8": INT8, "int64": INT8,
    "bigint": INT8, "pg_catalog.int8": INT8, "int4": INT4, "int2": INT2, "smallint": INT2,
    "pg_catalog.int2": INT2,
    "serial": INT8, "serial8": INT8, "bigserial": INT8, "serial4": INT8, "serial2": INT8,
    "smallserial": INT8,
    "float": FLOAT8, "float8": FLOAT8, "pg_catalog.float8": FLOAT8, "double precision": FLOAT8,
    "float4": FLOAT4, "real": FLOAT4, "pg_catalog.float4": FLOAT4,
    "decimal": DECIMAL, "numeric": DECIMAL, "dec": DECIMAL, "pg_catalog.numeric": DECIMAL,
    "string": STRING, "text": STRING, "pg_catalog.text": STRING,
    "varchar": varchar(), "pg_catalog.varchar": varchar(), "character varying": varchar(),
    "char": char(1), "pg_catalog.bpchar": char(1), "bpchar": char(1), "character": char(1),
    "pg_catalog.char": CHAR_INTERNAL, '"char"': CHAR_INTERNAL,
    "bool": BOOL, "boolean": BOOL, "pg_catalog.bool": BOOL,
    "bytes": BYTES, "bytea": BYTES, "blob": BYTES,
    "date": DATE, "time": TIME, "pg_catalog.time": TIME,
    "timestamp": TIMESTAMP, "pg_catalog.timestamp": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ, "pg_catalog.timestamptz": TIMESTAMPTZ,
    "interval": INTERVAL, "pg_catalog.interval": INTERVAL,
    "uuid": UUID, "jsonb": JSONB, "json": JSONB,
    "oid": OID, "regclass": REGCLASS, "regtype": REGTYPE, "regproc": REGPROC,
    "regprocedure": REGPROCEDURE, "regnamespace": REGNAMESPACE, "regrole": REGROLE,
    "name": NAME, "inet": INET, "void": VOID, "record": RECORD,
    "int2vector": INT2VECTOR, "oidvector": OIDVECTOR, "anyelement": ANY,
    "trigger": TRIGGER, "anyarray": ANYARRAY,
}
for _alias in list(_BY_NAME):
    if _alias.startswith("pg_catalog."):
        continue
    _BY_NAME.setdefault("pg_catalog." + _alias, _BY_NAME[_alias])

BUILTIN_NAMES = frozenset(_BY_NAME)

SERIAL_NAMES = frozenset({"serial", "serial8", "bigserial", "serial4", "serial2", "smallserial",
                          "pg_catalog.serial", "pg_catalog.serial8", "pg_catalog.serial4",
                          "pg_catalog.serial2", "pg_catalog.bigserial", "pg_catalog.smallserial"})

BY_OID: dict[int, SQLType] = {}
for _typ in list(_BY_NAME.values()) + [UNKNOWN, varchar(), char(1)]:
    BY_OID.setdefault(_typ.oid, _typ)
BY_OID[20] = INT8
BY_OID[23] = INT4
BY_OID[21] = INT2
BY_OID[1043] = varchar()
BY_OID[1042] = char(1)
BY_OID[114] = JSON
for _typ in list(BY_OID.values()):
    if _typ.family != "array" and _typ.oid in _ARRAY_OIDS:
        BY_OID[_ARRAY_OIDS[_typ.oid]] = array_of(_typ)


def lookup(name: str, modifiers: list[int] | None = None, array_dims: int = 0) -> SQLType:
    """The type a (lower-case, possibly pg_catalog-qualified) type name denotes."""
    base = _BY_NAME.get(name)
    if base is None:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f'type "{name.removeprefix("pg_catalog.")}" does not exist')
    if modifiers:
        base = _apply_modifiers(base, name, modifiers)
    for _ in range(array_dims):
        base = array_of(base)
    return base


def _apply_modifiers(base: SQLType, name: str, modifiers: list[int]) -> SQLType:
    if base.family == "decimal":
        return decimal(modifiers[0], modifiers[1] if len(modifiers) > 1 else 0)
    if base.family == "string" and base.oid == 1043:
        return varchar(modifiers[0])
    if base.family == "string" and name in ("string", "pg_catalog.string"):  # CockroachDB's STRING(n)
        return SQLType("string", 1043, f"STRING({modifiers[0]})", f"character varying({modifiers[0]})",
                       -1, modifiers[0])
    if base.family == "string" and base.oid == 1042:
        return char(modifiers[0])
    if base.family == "float" and name in ("float", "pg_catalog.float8", "pg_catalog.float4"):
        return FLOAT4 if modifiers[0] <= 24 else FLOAT8
    if base.family in ("timestamp", "timestamptz", "time", "interval"):
        return base  # fractional-second precision is accepted; values keep microseconds
    if base.family == "bit":
        return base
    raise errors.syntax_error(f"type {base.crdb_name} does not take modifiers")


def by_oid(oid: int) -> SQLType:
    typ = BY_OID.get(oid)
    if typ is None:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"type with OID {oid} does not exist")
    return typ


# How assignments and comparisons widen numeric types.
NUMERIC_RANK = {"int": 1, "decimal": 2, "float": 3}


def common_numeric(a: SQLType, b: SQLType) -> SQLType:
    if a.family == b.family:
        if a.family == "int":
            return INT8
        if a.family == "float":
            return FLOAT8
        return DECIMAL
    return a if NUMERIC_RANK[a.family] > NUMERIC_RANK[b.family] else b


def is_indexable(typ: SQLType) -> bool:
    return typ.family not in ("jsonb", "array", "record", "void", "unknown")
