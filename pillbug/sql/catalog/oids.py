"""The OID scheme of the virtual catalogs for objects that have no descriptor of their own.

A table's (or view's, or sequence's) OID is its descriptor id, as in CockroachDB; indexes,
constraints and column defaults get OIDs computed from their table's id, so that an OID maps back
to its object without a lookup table. catalog/virtual.py shows these OIDs and sem/casts.py reads
them back (regclass); this module knows descriptors and the catalog snapshot only, not the virtual
tables, functions or plans.
"""
from __future__ import annotations

from pillbug.sql.catalog.descriptors import IndexDesc, TableDesc
from pillbug.sql.catalog.system import Catalog

# OIDs. A table's (or view's, or sequence's) OID is its descriptor id, as in CockroachDB. Indexes,
# constraints and column defaults get OIDs of their own, computed from the table's id so that they
# can be mapped back to the object without a lookup table; each kind has its own range below 2^32.
INDEX_OID_BASE = 2_000_000_000
CONSTRAINT_OID_BASE = 3_000_000_000
ATTRDEF_OID_BASE = 4_000_000_000
PER_TABLE = 1000  # index ids, constraint numbers or column positions per table
# (so the scheme holds for descriptor ids below 294,967, which keeps every OID below 2^32)


def index_oid(table: TableDesc, index_id: int) -> int:
    return INDEX_OID_BASE + table.id * PER_TABLE + index_id


def constraint_oid(table: TableDesc, n: int) -> int:
    return CONSTRAINT_OID_BASE + table.id * PER_TABLE + n


def attrdef_oid(table: TableDesc, attnum: int) -> int:
    return ATTRDEF_OID_BASE + table.id * PER_TABLE + attnum


def relation_by_oid(catalog: Catalog, oid: int) -> tuple[TableDesc, IndexDesc | None] | None:
    """The table (index None) or the index (with its table) whose pg_class OID this is."""
    desc = catalog.by_id.get(oid)
    if isinstance(desc, TableDesc):
        return desc, None
    if INDEX_OID_BASE <= oid < CONSTRAINT_OID_BASE:
        table_id, index_id = divmod(oid - INDEX_OID_BASE, PER_TABLE)
        table = catalog.by_id.get(table_id)
        if isinstance(table, TableDesc):
            for idx in table.all_indexes():
                if idx.id == index_id:
                    return table, idx
    return None
