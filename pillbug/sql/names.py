"""Name resolution: what a name a client writes refers to in one catalog snapshot.

A table name ([db.][schema.]name) resolves to a table's descriptor or to a virtual table
(pg_catalog, information_schema, crdb_internal; an unqualified name that no table of the
public schema has may be a pg_catalog table, as in PostgreSQL); OIDs a client sends resolve to
users and types. The caller passes the catalog snapshot and the current database. This module
must not know sessions, transactions, plans or the wire protocol.
"""
from __future__ import annotations

from typing import Any

from pillbug.sql import types as T
from pillbug.sql.catalog import virtual
from pillbug.sql.catalog.descriptors import PUBLIC_SCHEMA, DatabaseDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.util import errors


def current_database(catalog: Catalog, database: str) -> DatabaseDesc:
    db = catalog.database(database)
    if db is None:
        raise errors.undefined_database(database)
    return db


def resolve_table_name(catalog: Catalog, database: str, names: list[str],
                       missing_ok: bool = False) -> tuple[str, Any]:
    """[db.][schema.]name -> ("table", TableDesc) or ("virtual", VirtualTable); ("missing",
    None) when missing_ok and there is no such table."""
    name = names[-1]
    if len(names) == 3:
        db_name, schema, _ = names
    elif len(names) == 2:
        first = names[0]
        if first in virtual.SCHEMAS or first == PUBLIC_SCHEMA or \
                (catalog.database(database) is not None and
                 first in catalog.database(database).schemas):
            db_name, schema = database, first
        else:
            db_name, schema = first, PUBLIC_SCHEMA
    else:
        db_name, schema = database, None
    if schema in virtual.SCHEMAS:
        vt = virtual.lookup(schema, name)
        if vt is None:
            if missing_ok:
                return "missing", None
            raise errors.undefined_table(".".join(names))
        return "virtual", vt
    db = catalog.database(db_name)
    if db is None:
        if len(names) > 1:
            raise errors.undefined_table(".".join(names))
        raise errors.undefined_database(db_name)
    if schema is None:
        vt = virtual.lookup("pg_catalog", name)
        table = catalog.table(db, PUBLIC_SCHEMA, name)
        if table is None and vt is not None:
            return "virtual", vt
        schema = PUBLIC_SCHEMA
    else:
        table = catalog.table(db, schema, name)
    if table is None:
        if missing_ok:
            return "missing", None
        raise errors.undefined_table(".".join(names))
    return "table", table


def user_by_oid(catalog: Catalog, oid: int) -> str:
    for name in catalog.users:
        if virtual.user_oid(name) == oid:
            return name
    return f"unknown (OID={oid})"


def type_by_oid(catalog: Catalog, oid: int) -> T.SQLType:
    """A type a client names by OID: built in, or a user-defined (enum) type."""
    found = T.BY_OID.get(oid)
    if found is None:
        found = catalog.type_by_oid(oid)
    if found is None:
        raise errors.PgError(errors.UNDEFINED_OBJECT, f"type with OID {oid} does not exist")
    return found
