"""The system key space and the catalog snapshot built from it.

System data lives in the same transactional key space as table data, under reserved table ids:

  /2/<parent id>/<schema id>/<name>   namespace: name -> descriptor id
  /3/<id>                            descriptors (JSON)
  /4/<user name>                     users and roles (JSON: SCRAM verifier, login, options)
  /5/<role>/<member>                 role membership (JSON: with admin option)
  /6/<setting name>                  cluster settings (text)
  /7/<counter name>                  counters (the descriptor id allocator)
  /8                                 the catalog version: bumped by every DDL, user, grant or
                                     setting change
  /9/<sequence id>                   sequence values

Every transaction reads the catalog version key (so it is in its read set) and then uses the
immutable Catalog snapshot cached for that version; a DDL running concurrently bumps the version,
and whichever of the two commits second fails its compare and retries. A transaction that has
itself written system keys builds its Catalog from its own reads instead.
This module knows nothing of SQL statements; it reads and writes descriptors and system rows.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from pillbug.kv.db import DB
from pillbug.kv.txn import Txn
from pillbug.sql import types as T
from pillbug.sql.catalog.descriptors import (
    PUBLIC_SCHEMA,
    DatabaseDesc,
    Descriptor,
    Privileges,
    SchemaDesc,
    TableDesc,
    TypeDesc,
    descriptor_from_bytes,
    descriptor_to_bytes,
)
from pillbug.sql.enums import EnumInfo
from pillbug.sql.types import SQLType
from pillbug.util import encoding as enc
from pillbug.util import errors

NAMESPACE_TABLE = 2
DESCRIPTOR_TABLE = 3
USERS_TABLE = 4
ROLE_MEMBERS_TABLE = 5
SETTINGS_TABLE = 6
COUNTERS_TABLE = 7
VERSION_TABLE = 8
SEQUENCE_TABLE = 9
FIRST_USER_ID = 100
SYSTEM_DATABASE_ID = 1
SYSTEM_PUBLIC_SCHEMA_ID = 29

SYSTEM_SPAN = (b"", enc.encode_int(SEQUENCE_TABLE))  # everything the Catalog is built from
VERSION_KEY = enc.encode_int(VERSION_TABLE)
ADMIN_ROLE = "admin"
ROOT_USER = "root"
PUBLIC_ROLE = "public"


def _k(table: int, *parts: bytes) -> bytes:
    return enc.encode_int(table) + b"".join(parts)


def namespace_key(parent_id: int, schema_id: int, name: str) -> bytes:
    return _k(NAMESPACE_TABLE, enc.encode_int(parent_id), enc.encode_int(schema_id), enc.encode_string(name))


def descriptor_key(desc_id: int) -> bytes:
    return _k(DESCRIPTOR_TABLE, enc.encode_int(desc_id))


def user_key(name: str) -> bytes:
    return _k(USERS_TABLE, enc.encode_string(name))


def member_key(role: str, member: str) -> bytes:
    return _k(ROLE_MEMBERS_TABLE, enc.encode_string(role), enc.encode_string(member))


def setting_key(name: str) -> bytes:
    return _k(SETTINGS_TABLE, enc.encode_string(name))


def counter_key(name: str) -> bytes:
    return _k(COUNTERS_TABLE, enc.encode_string(name))


def sequence_key(seq_id: int) -> bytes:
    return _k(SEQUENCE_TABLE, enc.encode_int(seq_id))


@dataclass(slots=True)
class UserRecord:
    name: str
    verifier: str | None  # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    is_role: bool = False  # created by CREATE ROLE (NOLOGIN by default)
    can_login: bool = True
    options: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps({"verifier": self.verifier, "is_role": self.is_role,
                           "login": self.can_login, "options": self.options}).encode()

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> UserRecord:
        d = json.loads(raw)
        return cls(name, d.get("verifier"), d.get("is_role", False), d.get("login", True),
                   d.get("options", {}))


class Catalog:
    """An immutable snapshot of every descriptor, user, role membership and setting."""

    def __init__(self, version: int, descriptors: Iterable[Descriptor],
                 users: dict[str, UserRecord], members: dict[str, dict[str, bool]],
                 settings: dict[str, str]) -> None:
        self.version = version
        self.by_id: dict[int, Descriptor] = {}
        self.databases: dict[str, DatabaseDesc] = {}
        self.tables: dict[tuple[int, int, str], TableDesc] = {}
        self.schemas: dict[int, SchemaDesc] = {}
        self.types: dict[tuple[int, int, str], TypeDesc] = {}
        self.enum_types: dict[int, SQLType] = {}  # enum OID -> its SQLType (members resolved)
        for desc in descriptors:
            self.by_id[desc.id] = desc
            if isinstance(desc, DatabaseDesc):
                self.databases[desc.name] = desc
            elif isinstance(desc, SchemaDesc):
                self.schemas[desc.id] = desc
            elif isinstance(desc, TableDesc):
                self.tables[(desc.parent_id, desc.schema_id, desc.name)] = desc
            elif isinstance(desc, TypeDesc):
                self.types[(desc.parent_id, desc.schema_id, desc.name)] = desc
        for tdesc in self.types.values():
            schema = self.schemas.get(tdesc.schema_id)
            info = EnumInfo(tdesc.id, tdesc.array_id, schema.name if schema else PUBLIC_SCHEMA,
                            tdesc.name, tdesc.members)
            self.enum_types[info.oid] = T.enum_type(info)
        if self.enum_types:
            for table in self.tables.values():
                for col in table.columns:
                    col.type = self._resolved(col.type)
        self.users = users
        self.members = members  # role -> {member: is_admin_option}
        self.settings = settings
        self._memberships: dict[str, frozenset[str]] = {}
        self.codecs: dict[int, object] = {}  # table id -> rowenc.TableCodec, filled lazily

    # -- names --
    def database(self, name: str) -> DatabaseDesc | None:
        return self.databases.get(name)

    def schema_id(self, db: DatabaseDesc, schema: str) -> int | None:
        return db.schemas.get(schema)

    def table(self, db: DatabaseDesc, schema: str, name: str) -> TableDesc | None:
        schema_id = db.schemas.get(schema)
        if schema_id is None:
            return None
        return self.tables.get((db.id, schema_id, name))

    def _resolved(self, typ: SQLType) -> SQLType:
        """A stored column type with its enum placeholder replaced by the type's members."""
        if typ.family == "enum" and typ.enum is None:
            # A column never outlives its type (DROP TYPE refuses while one uses it); were one to,
            # only reads of its table would fail (rowenc asserts resolved types), not every
            # catalog load.
            return self.enum_types.get(typ.oid, typ)
        if typ.family == "array" and typ.elem is not None and typ.elem.family == "enum":
            return T.array_of(self._resolved(typ.elem))
        return typ

    # -- types --
    def type_desc(self, db: DatabaseDesc, schema: str, name: str) -> TypeDesc | None:
        schema_id = db.schemas.get(schema)
        if schema_id is None:
            return None
        return self.types.get((db.id, schema_id, name))

    def type_by_oid(self, oid: int) -> SQLType | None:
        """A user-defined type or its array type by OID (built-in types are in types.BY_OID)."""
        found = self.enum_types.get(oid)
        if found is not None:
            return found
        for typ in self.enum_types.values():
            assert typ.enum is not None
            if typ.enum.array_oid == oid:
                return T.array_of(typ)
        return None

    def resolve_type(self, database: str, names: list[str]) -> SQLType | None:
        """The enum type a [db.][schema.]name denotes from a session in database, or None."""
        if len(names) == 3:
            db_name, schema = names[0], names[1]
        elif len(names) == 2:
            db_name, schema = database, names[0]
        else:
            db_name, schema = database, PUBLIC_SCHEMA
        db = self.databases.get(db_name)
        if db is None:
            return None
        desc = self.type_desc(db, schema, names[-1])
        if desc is None:
            return None
        if db_name != database:
            # as in CockroachDB: a database's objects may use only its own types
            raise errors.feature_not_supported(
                f"cross database type references are not supported: {'.'.join(names)}")
        return self.enum_types[desc.id + T.ENUM_OID_OFFSET]

    def type_users(self, type_id: int) -> list[tuple[TableDesc, str]]:
        """(table, column name) of every column whose type is the type or an array of it."""
        oid = type_id + T.ENUM_OID_OFFSET
        out = []
        for table in self.tables.values():
            for col in table.columns:
                typ = col.type.elem if col.type.family == "array" and col.type.elem else col.type
                if typ.family == "enum" and typ.oid == oid:
                    out.append((table, col.name))
        return out

    def tables_in(self, db_id: int) -> list[TableDesc]:
        return sorted((t for t in self.tables.values() if t.parent_id == db_id), key=lambda t: t.name)

    # -- users and roles --
    def roles_of(self, user: str) -> frozenset[str]:
        """Every role the user belongs to, directly or through other roles, and the user itself."""
        cached = self._memberships.get(user)
        if cached is not None:
            return cached
        seen = {user, PUBLIC_ROLE}
        frontier = [user]
        while frontier:
            member = frontier.pop()
            for role, members in self.members.items():
                if member in members and role not in seen:
                    seen.add(role)
                    frontier.append(role)
        result = frozenset(seen)
        self._memberships[user] = result
        return result

    def is_admin(self, user: str) -> bool:
        return user == ROOT_USER or ADMIN_ROLE in self.roles_of(user)


def load_catalog(db: DB, revision: int, version: int) -> Catalog:
    """Build the Catalog from the system keys as of a revision (not recorded in any read set)."""
    return _build(db.scan(SYSTEM_SPAN[0], SYSTEM_SPAN[1], revision), version)


def load_catalog_in_txn(txn: Txn, version: int) -> Catalog:
    """Build the Catalog through a transaction, seeing its own uncommitted writes."""
    return _build(list(txn.scan(SYSTEM_SPAN[0], SYSTEM_SPAN[1])), version)


def _build(rows: list[tuple[bytes, bytes]], version: int) -> Catalog:
    descriptors = []
    users: dict[str, UserRecord] = {}
    members: dict[str, dict[str, bool]] = {}
    settings: dict[str, str] = {}
    for key, value in rows:
        table, pos = enc.decode_int(key, 0)
        if table == DESCRIPTOR_TABLE:
            descriptors.append(descriptor_from_bytes(value))
        elif table == USERS_TABLE:
            name, _ = enc.decode_string(key, pos)
            users[name] = UserRecord.from_bytes(name, value)
        elif table == ROLE_MEMBERS_TABLE:
            role, pos = enc.decode_string(key, pos)
            member, _ = enc.decode_string(key, pos)
            members.setdefault(role, {})[member] = json.loads(value).get("admin", False)
        elif table == SETTINGS_TABLE:
            name, _ = enc.decode_string(key, pos)
            settings[name] = value.decode()
    return Catalog(version, descriptors, users, members, settings)


def read_version(txn: Txn) -> int:
    raw = txn.get(VERSION_KEY)
    return int(raw) if raw else 0


def bump_version(txn: Txn) -> int:
    version = read_version(txn) + 1
    txn.put(VERSION_KEY, str(version).encode())
    return version


def allocate_id(txn: Txn) -> int:
    key = counter_key("descriptor_id")
    raw = txn.get(key)
    next_id = int(raw) if raw else FIRST_USER_ID
    txn.put(key, str(next_id + 1).encode())
    return next_id


def write_descriptor(txn: Txn, desc: Descriptor) -> None:
    txn.put(descriptor_key(desc.id), descriptor_to_bytes(desc))


def write_namespace(txn: Txn, parent_id: int, schema_id: int, name: str, desc_id: int) -> None:
    txn.put(namespace_key(parent_id, schema_id, name), str(desc_id).encode())


def delete_namespace(txn: Txn, parent_id: int, schema_id: int, name: str) -> None:
    txn.delete(namespace_key(parent_id, schema_id, name))


def write_user(txn: Txn, user: UserRecord) -> None:
    txn.put(user_key(user.name), user.to_bytes())


def default_privileges(owner: str) -> Privileges:
    return Privileges(owner, {ADMIN_ROLE: {"ALL"}, ROOT_USER: {"ALL"}})


def create_database(txn: Txn, name: str, owner: str, db_id: int | None = None,
                    schema_id: int | None = None) -> DatabaseDesc:
    db_id = allocate_id(txn) if db_id is None else db_id
    schema_id = allocate_id(txn) if schema_id is None else schema_id
    privileges = default_privileges(owner)
    if name in ("defaultdb", "postgres"):
        privileges.grants[PUBLIC_ROLE] = {"CONNECT"}
    db = DatabaseDesc(db_id, name, privileges, {PUBLIC_SCHEMA: schema_id})
    schema = SchemaDesc(schema_id, PUBLIC_SCHEMA, db_id,
                        Privileges(owner, {ADMIN_ROLE: {"ALL"}, ROOT_USER: {"ALL"},
                                           PUBLIC_ROLE: {"CREATE", "USAGE"}}))
    write_descriptor(txn, db)
    write_descriptor(txn, schema)
    write_namespace(txn, 0, 0, name, db_id)
    write_namespace(txn, db_id, 0, PUBLIC_SCHEMA, schema_id)
    return db


async def bootstrap(db: DB) -> bool:
    """Write the initial system data into an empty store. Returns False if already there."""
    txn = db.txn()
    if txn.get(VERSION_KEY) is not None:
        return False
    write_user(txn, UserRecord(ROOT_USER, None))
    write_user(txn, UserRecord(ADMIN_ROLE, None, is_role=True, can_login=False))
    txn.put(member_key(ADMIN_ROLE, ROOT_USER), b'{"admin": true}')
    create_database(txn, "system", ROOT_USER, db_id=SYSTEM_DATABASE_ID, schema_id=SYSTEM_PUBLIC_SCHEMA_ID)
    create_database(txn, "defaultdb", ROOT_USER)
    create_database(txn, "postgres", ROOT_USER)
    txn.put(VERSION_KEY, b"1")
    await txn.commit()
    return True


def check_name(name: str, what: str) -> None:
    if not name:
        raise errors.PgError(errors.INVALID_NAME, f"empty {what} name")
    if len(name) > 63 * 4:
        raise errors.PgError(errors.INVALID_NAME, f"{what} name too long")
