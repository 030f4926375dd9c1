"""Foreign keys as catalog facts: who references whom, through which indexes, and how a
constraint is written out.

A FOREIGN KEY is stored once, on the referencing (child) table's descriptor (ForeignKeyDesc); the
referenced (parent) side is derived here from a Catalog snapshot. Both ends are checked through
indexes: the parent's unique index (or primary key) whose columns are exactly the referenced ones,
and a child index that starts with the referencing columns. This module knows nothing of how
rows are read or written (exec/fk.py enforces the constraints) nor of DDL statements.
"""
from __future__ import annotations

from pillbug.sql.catalog.descriptors import PUBLIC_SCHEMA, DatabaseDesc, ForeignKeyDesc, IndexDesc, TableDesc
from pillbug.sql.catalog.system import Catalog

ACTION_NAMES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
ACTION_CODES = {v: k for k, v in ACTION_NAMES.items()}
MATCH_NAMES = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}

# Words that must be quoted when printed as identifiers (the reserved ones a schema is likely to use).
_RESERVED = frozenset({
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case", "cast",
    "check", "collate", "column", "constraint", "create", "current_catalog", "current_date",
    "current_role", "current_schema", "current_time", "current_timestamp", "current_user", "default",
    "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign",
    "from", "grant", "group", "having", "in", "index", "initially", "intersect", "into", "lateral",
    "leading", "limit", "localtime", "localtimestamp", "not", "nothing", "null", "offset", "on", "only",
    "or", "order", "placing", "primary", "references", "returning", "select", "session_user", "some",
    "symmetric", "table", "then", "to", "trailing", "true", "union", "unique", "user", "using",
    "variadic", "when", "where", "window", "with", "family",
})


def quote_name(name: str) -> str:
    """An identifier as CockroachDB prints it: bare when it can be, double-quoted otherwise."""
    if name.isidentifier() and name == name.lower() and name.isascii() and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def inbound(catalog: Catalog, table_id: int) -> list[tuple[TableDesc, ForeignKeyDesc]]:
    """Every (child table, constraint) that references the table, in a stable order."""
    out = []
    for child in sorted(catalog.tables.values(), key=lambda t: t.id):
        for fk in child.foreign_keys:
            if fk.ref_table_id == table_id:
                out.append((child, fk))
    return out


def referenced_index(parent: TableDesc, column_ids: list[int]) -> IndexDesc | None:
    """The parent's primary key or unique index whose columns are exactly `column_ids` (in any
    order): what makes a foreign key's lookup a point read."""
    wanted = set(column_ids)
    for idx in parent.all_indexes():
        if idx.unique and len(idx.column_ids) == len(column_ids) and set(idx.column_ids) == wanted:
            return idx
    return None


def referencing_index(child: TableDesc, column_ids: list[int]) -> IndexDesc | None:
    """A child index whose leading columns are the referencing columns (in any order), so that
    finding the rows that reference one parent key is a prefix scan."""
    wanted = set(column_ids)
    n = len(column_ids)
    for idx in child.all_indexes():
        if len(idx.column_ids) >= n and set(idx.column_ids[:n]) == wanted:
            return idx
    return None


def columns_text(table: TableDesc, column_ids: list[int]) -> str:
    return ", ".join(quote_name(table.column_by_id(c).name) for c in column_ids)


def definition(catalog: Catalog, table: TableDesc, fk: ForeignKeyDesc, schema_qualified: bool = False,
               show_not_valid: bool = False) -> str:
    """`FOREIGN KEY (pid) REFERENCES parent(id) ON DELETE CASCADE`, as CockroachDB writes it in
    SHOW CONSTRAINTS and pg_get_constraintdef (SHOW CREATE qualifies the parent with its schema)."""
    parent = catalog.by_id.get(fk.ref_table_id)
    if isinstance(parent, TableDesc):
        name = quote_name(parent.name)
        if schema_qualified or parent.parent_id != table.parent_id:
            db = catalog.by_id.get(parent.parent_id)
            schemas = db.schemas if isinstance(db, DatabaseDesc) else {}
            schema = next((n for n, sid in schemas.items() if sid == parent.schema_id), PUBLIC_SCHEMA)
            name = f"{quote_name(schema)}.{name}"
            if parent.parent_id != table.parent_id and isinstance(db, DatabaseDesc):
                name = f"{quote_name(db.name)}.{name}"
        ref_cols = columns_text(parent, fk.ref_column_ids)
    else:
        name, ref_cols = f"[{fk.ref_table_id}]", ""
    text = f"FOREIGN KEY ({columns_text(table, fk.column_ids)}) REFERENCES {name}({ref_cols})"
    if fk.match == "f":
        text += " MATCH FULL"
    if fk.on_delete != "a":
        text += f" ON DELETE {ACTION_NAMES[fk.on_delete]}"
    if fk.on_update != "a":
        text += f" ON UPDATE {ACTION_NAMES[fk.on_update]}"
    if show_not_valid and not fk.validated:
        text += " NOT VALID"
    return text
