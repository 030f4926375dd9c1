"""Descriptors: what a database, schema or table is, stored as JSON under system keys.

A TableDesc lists its columns (with stable ids; a new column gets next_column_id), its primary
index and secondary indexes (each a list of column ids and directions), its CHECK constraints, its
outbound FOREIGN KEY constraints (the referencing side only: who references a table is derived
from the catalog, so that a reference lives in exactly one descriptor) and its privileges. Descriptors are values like any other: they are written in the transaction that
runs the DDL, so DDL is transactional. This module knows nothing of how they are stored or cached.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.types import SQLType
from pillbug.util import errors

PUBLIC_SCHEMA = "public"


def type_to_json(typ: SQLType) -> str:
    # An enum column names its type by descriptor id ("@105", "@105[]"): the type's name and
    # members may change after the column is created.
    base, dims = typ, 0
    while base.family == "array" and base.elem is not None:
        base, dims = base.elem, dims + 1
    if base.family == "enum":
        return f"@{base.oid - T.ENUM_OID_OFFSET}" + "[]" * dims
    return typ.crdb_name


def type_from_json(name: str) -> SQLType:
    """The inverse of type_to_json (a CockroachDB type name such as DECIMAL(10,2) or INT8[])."""
    dims = 0
    while name.endswith("[]"):
        name = name[:-2]
        dims += 1
    if name.startswith("@"):
        typ = T.enum_placeholder(int(name[1:]))
        for _ in range(dims):
            typ = T.array_of(typ)
        return typ
    mods: list[int] = []
    if "(" in name:
        name, _, rest = name.partition("(")
        mods = [int(x) for x in rest.rstrip(")").split(",")]
    base = {"STRING": "string", "VARCHAR": "varchar", "CHAR": "char", '"CHAR"': '"char"'}.get(name, name.lower())
    return T.lookup(base if base != "int8" else "int8", mods, dims)


@dataclass(slots=True)
class ColumnDesc:
    id: int
    name: str
    type: SQLType
    nullable: bool = True
    default: str | None = None  # SQL expression text
    hidden: bool = False  # e.g. the implicit rowid
    computed: str | None = None

    def to_json(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "name": self.name, "type": type_to_json(self.type),
                             "nullable": self.nullable}
        if self.default is not None:
            d["default"] = self.default
        if self.hidden:
            d["hidden"] = True
        if self.computed is not None:
            d["computed"] = self.computed
        return d

    @classmethod
    def from_json(cls, d: dict) -> ColumnDesc:
        return cls(d["id"], d["name"], type_from_json(d["type"]), d.get("nullable", True),
                   d.get("default"), d.get("hidden", False), d.get("computed"))


@dataclass(slots=True)
class IndexDesc:
    id: int
    name: str
    column_ids: list[int]
    directions: list[str]  # "asc" | "desc", one per column
    unique: bool = False
    storing_ids: list[int] = field(default_factory=list)
    is_primary: bool = False

    def to_json(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "name": self.name, "column_ids": self.column_ids,
                             "directions": self.directions, "unique": self.unique}
        if self.storing_ids:
            d["storing_ids"] = self.storing_ids
        return d

    @classmethod
    def from_json(cls, d: dict, is_primary: bool = False) -> IndexDesc:
        return cls(d["id"], d["name"], list(d["column_ids"]), list(d["directions"]),
                   d.get("unique", False), list(d.get("storing_ids", [])), is_primary)


@dataclass(slots=True)
class CheckDesc:
    name: str
    expr: str
    column_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "expr": self.expr, "column_ids": self.column_ids}

    @classmethod
    def from_json(cls, d: dict) -> CheckDesc:
        return cls(d["name"], d["expr"], list(d.get("column_ids", [])))


@dataclass(slots=True)
class ForeignKeyDesc:
    """A FOREIGN KEY constraint, stored on the referencing (child) table.

    Actions and the match type use pg_constraint's one-letter codes: 'a' NO ACTION, 'r' RESTRICT,
    'c' CASCADE, 'n' SET NULL, 'd' SET DEFAULT; match 's' SIMPLE, 'f' FULL."""
    name: str
    column_ids: list[int]
    ref_table_id: int
    ref_column_ids: list[int]
    on_delete: str = "a"
    on_update: str = "a"
    match: str = "s"
    validated: bool = True

    def to_json(self) -> dict:
        return {"name": self.name, "column_ids": self.column_ids, "ref_table_id": self.ref_table_id,
                "ref_column_ids": self.ref_column_ids, "on_delete": self.on_delete,
                "on_update": self.on_update, "match": self.match, "validated": self.validated}

    @classmethod
    def from_json(cls, d: dict) -> ForeignKeyDesc:
        return cls(d["name"], list(d["column_ids"]), d["ref_table_id"], list(d["ref_column_ids"]),
                   d.get("on_delete", "a"), d.get("on_update", "a"), d.get("match", "s"),
                   d.get("validated", True))


@dataclass(slots=True)
class Privileges:
    """Grants on one object: user -> set of privilege names ("ALL" covers everything)."""
    owner: str
    grants: dict[str, set[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"owner": self.owner, "grants": {u: sorted(p) for u, p in sorted(self.grants.items())}}

    @classmethod
    def from_json(cls, d: dict) -> Privileges:
        return cls(d.get("owner", "root"), {u: set(p) for u, p in d.get("grants", {}).items()})

    def copy(self) -> Privileges:
        return Privileges(self.owner, {u: set(p) for u, p in self.grants.items()})


@dataclass(slots=True)
class DatabaseDesc:
    id: int
    name: str
    privileges: Privileges
    schemas: dict[str, int] = field(default_factory=dict)  # schema name -> schema id

    kind = "database"

    def to_json(self) -> dict:
        return {"kind": "database", "id": self.id, "name": self.name,
                "privileges": self.privileges.to_json(), "schemas": self.schemas}

    @classmethod
    def from_json(cls, d: dict) -> DatabaseDesc:
        return cls(d["id"], d["name"], Privileges.from_json(d["privileges"]), dict(d.get("schemas", {})))


@dataclass(slots=True)
class SchemaDesc:
    id: int
    name: str
    parent_id: int
    privileges: Privileges

    kind = "schema"

    def to_json(self) -> dict:
        return {"kind": "schema", "id": self.id, "name": self.name, "parent_id": self.parent_id,
                "privileges": self.privileges.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> SchemaDesc:
        return cls(d["id"], d["name"], d["parent_id"], Privileges.from_json(d["privileges"]))


@dataclass(slots=True)
class TableDesc:
    id: int
    name: str
    parent_id: int  # database id
    schema_id: int
    columns: list[ColumnDesc]
    primary_index: IndexDesc
    indexes: list[IndexDesc]
    privileges: Privileges
    checks: list[CheckDesc] = field(default_factory=list)
    next_column_id: int = 1
    next_index_id: int = 2
    version: int = 1
    sequence: dict | None = None  # for sequences: {"start":..., "increment":...}
    view_query: str | None = None
    foreign_keys: list[ForeignKeyDesc] = field(default_factory=list)
    # derived, not stored:
    _by_name: dict[str, ColumnDesc] = field(default_factory=dict, repr=False)
    _by_id: dict[int, ColumnDesc] = field(default_factory=dict, repr=False)
    _position: dict[int, int] = field(default_factory=dict, repr=False)

    kind = "table"

    def __post_init__(self) -> None:
        self.primary_index.is_primary = True
        self.reindex()

    def reindex(self) -> None:
        self._by_name = {c.name: c for c in self.columns}
        self._by_id = {c.id: c for c in self.columns}
        self._position = {c.id: i for i, c in enumerate(self.columns)}

    @property
    def is_sequence(self) -> bool:
        return self.sequence is not None

    @property
    def is_view(self) -> bool:
        return self.view_query is not None

    def column(self, name: str) -> ColumnDesc:
        col = self._by_name.get(name)
        if col is None:
            raise errors.undefined_column(name)
        return col

    def find_column(self, name: str) -> ColumnDesc | None:
        return self._by_name.get(name)

    def column_by_id(self, column_id: int) -> ColumnDesc:
        return self._by_id[column_id]

    def position(self, column_id: int) -> int:
        """The column's position in a row tuple of this table."""
        return self._position[column_id]

    def all_indexes(self) -> list[IndexDesc]:
        return [self.primary_index, *self.indexes]

    def find_index(self, name: str) -> IndexDesc | None:
        for idx in self.all_indexes():
            if idx.name == name:
                return idx
        return None

    def to_json(self) -> dict:
        d: dict[str, Any] = {
            "kind": "table", "id": self.id, "name": self.name, "parent_id": self.parent_id,
            "schema_id": self.schema_id, "columns": [c.to_json() for c in self.columns],
            "primary_index": self.primary_index.to_json(),
            "indexes": [i.to_json() for i in self.indexes], "privileges": self.privileges.to_json(),
            "checks": [c.to_json() for c in self.checks], "next_column_id": self.next_column_id,
            "next_index_id": self.next_index_id, "version": self.version,
        }
        if self.sequence is not None:
            d["sequence"] = self.sequence
        if self.view_query is not None:
            d["view_query"] = self.view_query
        if self.foreign_keys:
            d["foreign_keys"] = [fk.to_json() for fk in self.foreign_keys]
        return d

    @classmethod
    def from_json(cls, d: dict) -> TableDesc:
        return cls(d["id"], d["name"], d["parent_id"], d["schema_id"],
                   [ColumnDesc.from_json(c) for c in d["columns"]],
                   IndexDesc.from_json(d["primary_index"], is_primary=True),
                   [IndexDesc.from_json(i) for i in d.get("indexes", [])],
                   Privileges.from_json(d["privileges"]),
                   [CheckDesc.from_json(c) for c in d.get("checks", [])],
                   d.get("next_column_id", 1), d.get("next_index_id", 2), d.get("version", 1),
                   d.get("sequence"), d.get("view_query"),
                   [ForeignKeyDesc.from_json(f) for f in d.get("foreign_keys", [])])


@dataclass(slots=True)
class TypeDesc:
    """A user-defined type (an enum): its members in declaration order, each a label and the
    physical representation that keys and row values store (see sql/enums.py). The type's
    array type has its own id (its OID is that id's), as in CockroachDB, but no descriptor."""
    id: int
    name: str
    parent_id: int  # database id
    schema_id: int
    array_id: int
    members: list[tuple[str, bytes]]
    privileges: Privileges
    version: int = 1

    kind = "type"

    def to_json(self) -> dict:
        return {"kind": "type", "id": self.id, "name": self.name, "parent_id": self.parent_id,
                "schema_id": self.schema_id, "array_id": self.array_id,
                "members": [[label, rep.hex()] for label, rep in self.members],
                "privileges": self.privileges.to_json(), "version": self.version}

    @classmethod
    def from_json(cls, d: dict) -> TypeDesc:
        return cls(d["id"], d["name"], d["parent_id"], d["schema_id"], d["array_id"],
                   [(label, bytes.fromhex(rep)) for label, rep in d["members"]],
                   Privileges.from_json(d["privileges"]), d.get("version", 1))


Descriptor = DatabaseDesc | SchemaDesc | TableDesc | TypeDesc


def descriptor_from_bytes(raw: bytes) -> Descriptor:
    d = json.loads(raw)
    kind = d["kind"]
    if kind == "table":
        return TableDesc.from_json(d)
    if kind == "database":
        return DatabaseDesc.from_json(d)
    if kind == "schema":
        return SchemaDesc.from_json(d)
    if kind == "type":
        return TypeDesc.from_json(d)
    raise errors.internal_error(f"unknown descriptor kind {kind}")


def descriptor_to_bytes(desc: Descriptor) -> bytes:
    return json.dumps(desc.to_json(), separators=(",", ":")).encode()
