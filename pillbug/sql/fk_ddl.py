"""Foreign keys in schema changes: defining them (CREATE TABLE ... REFERENCES, ALTER TABLE ... ADD
CONSTRAINT ... FOREIGN KEY [NOT VALID]), validating existing rows (VALIDATE CONSTRAINT), and what
dropping or truncating a referenced object does to them (refused, or with CASCADE the
constraints go; the referencing tables stay).

A constraint is resolved once, here, into column and table ids (ForeignKeyDesc), so renames of
tables and columns keep it working. The referenced columns need a unique index or primary key;
the referencing columns need no index, as in CockroachDB since v20.2 (which no longer creates
one): the parent side of the check reads an index that starts with them if the table has one,
and scans the table otherwise (exec/fk.py). ddl.py calls in here; this module knows nothing of
how statements are planned.
"""
from __future__ import annotations

import itertools
from typing import Any

from pillbug.sql.catalog import foreign_keys as F
from pillbug.sql.catalog import system
from pillbug.sql.catalog.descriptors import ForeignKeyDesc, IndexDesc, TableDesc
from pillbug.sql.exec.mutations import sql_literal
from pillbug.sql.exec.nodes import READ_BATCH
from pillbug.sql.rowenc import TableCodec
from pillbug.util import errors

INVALID_FOREIGN_KEY = "42830"


def constraint_names(table: TableDesc) -> set[str]:
    """Every constraint name a table uses (indexes, CHECKs, foreign keys)."""
    return ({i.name for i in table.all_indexes()} | {c.name for c in table.checks} |
            {f.name for f in table.foreign_keys})


def inline_constraints(column_def: dict) -> list[dict]:
    """The REFERENCES clauses of a column definition, each as a table-level FOREIGN KEY node."""
    out = []
    for c in column_def.get("constraints") or []:
        con = c["Constraint"]
        if con["contype"] == "CONSTR_FOREIGN":
            out.append({**con, "fk_attrs": [{"String": {"sval": column_def["colname"]}}]})
    return out


def add_foreign_key(session: Any, table: TableDesc, con: dict) -> ForeignKeyDesc:
    """Resolve a FOREIGN KEY node against `table` (being created or altered: it is its own parent
    for a self-reference) and add it. Existing rows are not looked at (see validate)."""
    if con.get("deferrable") or con.get("initdeferred"):
        raise errors.unimplemented("DEFERRABLE foreign key constraints are not supported")
    if con.get("fk_matchtype") == "p":
        raise errors.unimplemented("MATCH PARTIAL is not supported")
    col_names = [n["String"]["sval"] for n in con.get("fk_attrs") or []]
    cols = [table.column(n) for n in col_names]
    if len(set(col_names)) != len(col_names):
        raise errors.PgError(errors.DUPLICATE_COLUMN, "foreign key contains duplicate column")
    parent = _parent_table(session, table, con["pktable"])
    ref_names = [n["String"]["sval"] for n in con.get("pk_attrs") or []]
    if ref_names:
        ref_cols = [parent.column(n) for n in ref_names]
    else:
        ref_cols = [parent.column_by_id(c) for c in parent.primary_index.column_ids]
    if len(ref_cols) != len(cols):
        raise errors.PgError(errors.SYNTAX_ERROR,
                             f"{len(cols)} columns must reference exactly {len(cols)} columns in "
                             f"referenced table (found {len(ref_cols)})")
    if F.referenced_index(parent, [c.id for c in ref_cols]) is None:
        raise errors.PgError(INVALID_FOREIGN_KEY,
                             f"there is no unique constraint matching given keys for referenced table {parent.name}")
    for c, r in zip(cols, ref_cols):
        if c.type.family != r.type.family:
            raise errors.datatype_mismatch(
                f'type of "{c.name}" ({c.type.family}) does not match foreign key '
                f'"{parent.name}"."{r.name}" ({r.type.family})')
    on_delete = con.get("fk_del_action", "a")
    on_update = con.get("fk_upd_action", "a")
    for action in (on_delete, on_update):
        for c in cols:
            if action == "n" and not c.nullable:
                raise errors.PgError(INVALID_FOREIGN_KEY,
                                     f'cannot add a SET NULL cascading action on column "{table.name}.{c.name}" '
                                     "which has a NOT NULL constraint")
            if action == "d" and not c.nullable and c.default is None:
                raise errors.PgError(INVALID_FOREIGN_KEY,
                                     f'cannot add a SET DEFAULT cascading action on column "{table.name}.{c.name}" '
                                     "which has a NOT NULL constraint and a NULL default expression")
    taken = constraint_names(table)
    name = con.get("conname")
    if name is None:
        base = f"{table.name}_{'_'.join(col_names)}_fkey"
        name, i = base, 1
        while name in taken:
            name = f"{base}{i}"
            i += 1
    elif name in taken:
        raise errors.PgError(errors.DUPLICATE_OBJECT, f'duplicate constraint name: "{name}"')
    fk = ForeignKeyDesc(name, [c.id for c in cols], parent.id, [r.id for r in ref_cols], on_delete, on_update,
                        con.get("fk_matchtype", "s"), validated=True)
    table.foreign_keys.append(fk)
    return fk


def _parent_table(session: Any, table: TableDesc, rv: dict) -> TableDesc:
    names = [n for n in (rv.get("catalogname"), rv.get("schemaname"), rv["relname"]) if n]
    if len(names) == 1 and names[0] == table.name:
        found = session.catalog.by_id.get(table.id)
        if found is None or found.schema_id == table.schema_id:
            return table  # a self-reference (the table may not exist yet)
    kind, parent = session.resolve_table_name(names, missing_ok=True)
    if kind == "missing" or parent is None:
        raise errors.undefined_table(".".join(names))
    if kind != "table" or parent.is_view or parent.is_sequence:
        raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{parent.name}" is not a table')
    if parent.id == table.id:
        return table
    if parent.parent_id != table.parent_id:
        raise errors.feature_not_supported(
            "foreign references between databases are not allowed "
            "(see the cluster setting sql.cross_db_fks.enabled)")
    return parent


def validate(session: Any, table: TableDesc, fk: ForeignKeyDesc, parent: TableDesc | None = None) -> None:
    """Every row of `table` must satisfy `fk` (23503 naming the first that does not)."""
    txn = session.txn
    if parent is None:
        found = session.catalog.by_id.get(fk.ref_table_id)
        parent = table if fk.ref_table_id == table.id or not isinstance(found, TableDesc) else found
    codec = TableCodec(table)
    parent_codec = TableCodec(parent)
    idx = F.referenced_index(parent, fk.ref_column_ids)
    assert idx is not None
    ic = next(c for c in [parent_codec.primary, *parent_codec.secondaries] if c.index.id == idx.id)
    positions = [table.position(fk.column_ids[fk.ref_column_ids.index(cid)]) for cid in idx.column_ids]
    scan = txn.scan(*codec.primary_span)
    while chunk := [codec.decode_row(raw) for _, raw in itertools.islice(scan, READ_BATCH)]:
        keys = [None if None in values else ic.prefix + ic.encode_values(values)
                for values in ([row[p] for p in positions] for row in chunk)]
        txn.prefetch([key for key in keys if key is not None])  # one store call per batch
        for row, key in zip(chunk, keys):
            if key is None:
                if fk.match == "f" and any(row[p] is not None for p in positions):
                    raise _row_error(table, fk, parent, row, "MATCH FULL does not allow mixing of null and nonnull values")
                continue
            if txn.get(key) is None:
                raise _row_error(table, fk, parent, row, None)


def _row_error(table: TableDesc, fk: ForeignKeyDesc, parent: TableDesc, row: tuple, why: str | None) -> errors.PgError:
    ids = list(fk.column_ids) + [c for c in table.primary_index.column_ids if c not in fk.column_ids]
    shown = ", ".join(f"{table.column_by_id(c).name}={sql_literal(row[table.position(c)], table.column_by_id(c).type)}"
                      for c in ids)
    return errors.PgError(errors.FOREIGN_KEY_VIOLATION,
                          f'foreign key violation: "{table.name}" row {shown} has no match in "{parent.name}"',
                          detail=why)


# ---- what dropping and truncating do to references -------------------------------------------

def referenced_by_error(what: str, child: TableDesc) -> errors.PgError:
    return errors.PgError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                          f'"{what}" is referenced by foreign key from table "{child.name}"')


class Edits:
    """Descriptors of referencing tables changed by one statement (several drops may touch
    the same child), written once at the end."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.tables: dict[int, TableDesc] = {}
        self.dropped: set[int] = set()

    def table(self, child: TableDesc) -> TableDesc:
        edited = self.tables.get(child.id)
        if edited is None:
            edited = self.tables[child.id] = TableDesc.from_json(child.to_json())
        return edited

    def drop_constraint(self, child: TableDesc, name: str) -> None:
        edited = self.table(child)
        edited.foreign_keys = [f for f in edited.foreign_keys if f.name != name]

    def write(self) -> None:
        for t in self.tables.values():
            if t.id in self.dropped:
                continue
            t.version += 1
            system.write_descriptor(self.session.txn, t)


def drop_table_references(session: Any, table: TableDesc, cascade: bool, edits: Edits,
                          dropping: set[int]) -> None:
    """A table is being dropped: the foreign keys of other tables (not also being dropped) that
    reference it are refused without CASCADE, and go with it otherwise."""
    for child, fk in F.inbound(session.catalog, table.id):
        if child.id in dropping or child.id == table.id:
            continue
        if not cascade:
            raise referenced_by_error(table.name, child)
        edits.drop_constraint(child, fk.name)


def drop_index_references(session: Any, table: TableDesc, idx: IndexDesc, cascade: bool, edits: Edits,
                          new_table: TableDesc) -> None:
    """An index (or the column it is on) is going: the foreign keys that need it as their
    referenced unique index are refused without CASCADE and dropped with it (an index on the
    referencing columns only speeds the check up). `new_table` is the table's descriptor being
    edited."""
    if idx.unique:
        for child, fk in F.inbound(session.catalog, table.id):
            ref_idx = F.referenced_index(table, fk.ref_column_ids)
            if ref_idx is None or ref_idx.id != idx.id:
                continue
            if not cascade:
                raise referenced_by_error(idx.name, child)
            if child.id == table.id:
                new_table.foreign_keys = [f for f in new_table.foreign_keys if f.name != fk.name]
            else:
                edits.drop_constraint(child, fk.name)


def truncate_closure(session: Any, tables: list[TableDesc], cascade: bool) -> list[TableDesc]:
    """The tables TRUNCATE empties: those named, and with CASCADE every table referencing one of
    them (transitively); without CASCADE a reference from a table not named is refused."""
    out = {t.id: t for t in tables}
    frontier = list(tables)
    while frontier:
        t = frontier.pop()
        for child, _ in F.inbound(session.catalog, t.id):
            if child.id in out:
                continue
            if not cascade:
                raise referenced_by_error(t.name, child)
            out[child.id] = child
            frontier.append(child)
    return list(out.values())
