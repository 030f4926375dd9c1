"""Foreign keys enforced as rows are written: existence checks, RESTRICT/NO ACTION checks and
ON DELETE / ON UPDATE actions (CASCADE, SET NULL, SET DEFAULT).

The planner compiles, for the table a statement writes, a TableFKs: its outbound constraints
(each a point lookup into the parent's unique index or primary key) and its inbound ones (each a
prefix scan of a child index that starts with the referencing columns or, when the child has no
such index, a scan of the child table that keeps the matching rows), with the child's own
TableFKs attached where an action writes to the child, so cascades recurse. A TableWriter that
has a TableFKs reports every row it inserts, updates or deletes (`inserted`/`updated`/`deleted`);
what must be checked or cascaded is collected in the statement's `ctx.fk_pending`, and the
mutation operator calls `TableWriter.finish` once its own writes are done: cascades run first (breadth
first, bounded in depth and rows), then the checks, against the state the statement leaves.
Checking at the end of the statement, as PostgreSQL and CockroachDB do, is what lets one
statement insert a parent and its child in any order, or delete a row and its referencing rows.

Every read goes through the transaction (Txn.get_many / Txn.scan), so it lands in the read set: a
concurrent parent delete and child insert cannot both commit (one gets 40001 at commit, or sees
the other's write and gets 23503), which is what keeps foreign keys true under SERIALIZABLE.
This module knows nothing of the parser or of DDL.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pillbug.sql.catalog import foreign_keys as F
from pillbug.sql.catalog.descriptors import ForeignKeyDesc, TableDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.mutations import MAX_STATEMENT_ROWS, RowChecks, TableWriter, sql_literal
from pillbug.sql.exec.nodes import READ_BATCH
from pillbug.sql.rowenc import IndexCodec, TableCodec
from pillbug.sql.sem.expr import Compiled
from pillbug.util import encoding as enc
from pillbug.util import errors

# How many cascades one statement may run, a cascade being one constraint's action at one
# level (CockroachDB's foreign_key_cascades_limit, whose default this is): a bound on the work of
# long chains, and a safeguard should a cycle of actions never settle.
MAX_CASCADES = 10_000
TRIGGERED_ACTION_EXCEPTION = "09000"


class Compiler(Protocol):
    """What building a TableFKs needs from the planner."""
    catalog: Catalog

    def codec(self, table: TableDesc) -> TableCodec: ...

    def row_checks(self, table: TableDesc) -> RowChecks: ...

    def defaults(self, table: TableDesc) -> list[Compiled | None]: ...


@dataclass(slots=True)
class ParentLookup:
    """The child side of one constraint: the parent must hold the key a child row names."""
    fk: ForeignKeyDesc
    child: TableDesc
    parent: TableDesc
    index: IndexCodec  # the parent's unique index (or primary key) on the referenced columns
    positions: list[int]  # child row positions, in the order of the index's columns
    fk_positions: list[int]  # child row positions, in the constraint's column order

    def key(self, row: tuple, verb: str) -> bytes | None:
        """The parent index key a child row must find, or None when its NULLs exempt it."""
        values = [row[p] for p in self.positions]
        if None in values:
            if self.fk.match == "f" and any(v is not None for v in values):
                raise errors.PgError(
                    errors.FOREIGN_KEY_VIOLATION,
                    f'{verb} on table "{self.child.name}" violates foreign key constraint "{self.fk.name}"',
                    detail="MATCH FULL does not allow mixing of null and nonnull key values.")
            return None
        return self.index.prefix + self.index.encode_values(values)

    def error(self, row: tuple, verb: str) -> errors.PgError:
        cols = [self.child.columns[p] for p in self.fk_positions]
        values = ", ".join(sql_literal(row[p], c.type) for p, c in zip(self.fk_positions, cols))
        return errors.PgError(
            errors.FOREIGN_KEY_VIOLATION,
            f'{verb} on table "{self.child.name}" violates foreign key constraint "{self.fk.name}"',
            detail=f"Key ({', '.join(c.name for c in cols)})=({values}) is not present in table "
                   f'"{self.parent.name}".')


@dataclass(slots=True)
class ChildRef:
    """The parent side of one constraint: the child rows that reference a parent key."""
    fk: ForeignKeyDesc
    child: TableDesc
    parent: TableDesc
    parent_positions: list[int]  # parent row positions, in the constraint's column order
    child_positions: list[int]  # child row positions, in the constraint's column order
    child_index: IndexCodec  # a child index whose leading columns are the referencing ones,
    # or the child's primary index when it has none (then every row is read and compared)
    child_order: list[int]  # per leading child index column, its place in the constraint
    scans_table: bool
    child_codec: TableCodec
    parent_index: IndexCodec  # the parent's referenced unique index
    parent_order: list[int]  # per parent index column, its place in the constraint
    defaults: list[Compiled | None]  # per referencing column, its DEFAULT (for SET DEFAULT)
    target: TableFKs | None = None  # the child's own plan, when an action writes to it

    def parent_values(self, row: tuple) -> tuple | None:
        values = tuple(row[p] for p in self.parent_positions)
        return None if None in values else values

    def _span(self, values: tuple) -> tuple[bytes, bytes]:
        if self.scans_table:
            return self.child_codec.primary_span
        prefix = self.child_index.prefix + self.child_index.encode_values([values[j] for j in self.child_order])
        return prefix, enc.prefix_end(prefix)

    def _matches(self, row: tuple, values: tuple) -> bool:
        return all(row[p] == v for p, v in zip(self.child_positions, values))

    def is_referenced(self, ctx: ExecCtx, values: tuple) -> bool:
        if self.scans_table:
            # The whole table lands in the read set: a concurrent insert of any child conflicts,
            # which is more than needed but never less (CockroachDB's check scans it too).
            decode = self.child_codec.decode_row
            return any(self._matches(decode(raw), values) for _, raw in ctx.txn.scan(*self._span(values)))
        return next(iter(ctx.txn.scan(*self._span(values), limit=1)), None) is not None

    def referencing_rows(self, ctx: ExecCtx, values: tuple) -> list[tuple]:
        txn = ctx.txn
        codec = self.child_codec
        rows = []
        if self.child_index.index.is_primary:
            for _, raw in txn.scan(*self._span(values)):
                row = codec.decode_row(raw)
                if not self.scans_table or self._matches(row, values):
                    rows.append(row)
            return rows
        # Index entries, then their rows with one batched read per READ_BATCH of them.
        pk_keys = [codec.pk_prefix + TableCodec.decode_index_value(raw)[0]
                   for _, raw in txn.scan(*self._span(values))]
        for row_raw in txn.get_many(pk_keys):
            if row_raw is None:
                raise errors.internal_error("index entry without its row")
            rows.append(codec.decode_row(row_raw))
        return rows

    def parent_key(self, values: tuple) -> bytes:
        """The parent's key for the referenced values (a row that still holds them)."""
        return self.parent_index.prefix + self.parent_index.encode_values([values[j] for j in self.parent_order])

    def error(self, values: tuple, verb: str) -> errors.PgError:
        cols = [self.parent.columns[p] for p in self.parent_positions]
        shown = ", ".join(sql_literal(v, c.type) for v, c in zip(values, cols))
        return errors.PgError(
            errors.FOREIGN_KEY_VIOLATION,
            f'{verb} on table "{self.parent.name}" violates foreign key constraint "{self.fk.name}" '
            f'on table "{self.child.name}"',
            detail=f"Key ({', '.join(c.name for c in cols)})=({shown}) is still referenced from table "
                   f'"{self.child.name}".')


@dataclass(slots=True)
class TableFKs:
    """The foreign keys a writer of one table must honour, compiled over its row layout."""
    table: TableDesc
    outbound: list[ParentLookup]
    inbound: list[ChildRef]
    checks: RowChecks | None = None  # NOT NULL and CHECK, for rows an action rewrites
    delete_writer: TableWriter | None = None  # the writers cascades use
    update_writer: TableWriter | None = None

    # -- what TableWriter reports --
    def inserted(self, ctx: ExecCtx, row: tuple, verb: str) -> None:
        if self.outbound:
            pending = _pending(ctx)
            for lookup in self.outbound:
                key = lookup.key(row, verb)
                if key is not None:
                    pending.lookups.setdefault((id(lookup), key), (lookup, row, verb))

    def deleted(self, ctx: ExecCtx, row: tuple, verb: str) -> None:
        if not self.inbound:
            return
        pending = _pending(ctx)
        for ref in self.inbound:
            values = ref.parent_values(row)
            if values is not None:
                pending.parent_change(ref, values, None, ref.fk.on_delete, verb)

    def updated(self, ctx: ExecCtx, old: tuple, new: tuple, verb: str) -> None:
        if not self.outbound and not self.inbound:
            return
        pending = _pending(ctx)
        for lookup in self.outbound:
            if any(old[p] != new[p] for p in lookup.positions):
                key = lookup.key(new, verb)
                if key is not None:
                    pending.lookups.setdefault((id(lookup), key), (lookup, new, verb))
        for ref in self.inbound:
            values = ref.parent_values(old)
            if values is None:
                continue
            new_values = tuple(new[p] for p in ref.parent_positions)
            if new_values != values:
                pending.parent_change(ref, values, new_values, ref.fk.on_update, verb)

    def explain_lines(self) -> list[str]:
        """What EXPLAIN shows of the constraints (CockroachDB's `FK check` lines)."""
        lines = [f"FK check: {lk.parent.name}@{lk.index.index.name}" for lk in self.outbound]
        for ref in self.inbound:
            actions = {ref.fk.on_delete, ref.fk.on_update}
            if actions & {"a", "r"}:
                lines.append(f"FK check: {ref.child.name}@{ref.child_index.index.name}")
            if actions & {"c", "n", "d"}:
                lines.append(f"FK cascade: {ref.fk.name}")
        return lines


@dataclass(slots=True)
class Pending:
    """What one statement still has to check or cascade (kept in ctx.fk_pending)."""
    lookups: dict[tuple[int, bytes], tuple[ParentLookup, tuple, str]] = field(default_factory=dict)
    removed: dict[tuple[int, tuple], tuple[ChildRef, tuple, str]] = field(default_factory=dict)
    cascades: deque = field(default_factory=deque)  # (ChildRef, old values, new values | None, depth)
    depth: int = 0  # the cascade level whose writes are being reported
    cascades_run: set = field(default_factory=set)  # (level, constraint) pairs
    cascaded_rows: int = 0

    def parent_change(self, ref: ChildRef, old: tuple, new: tuple | None, action: str, verb: str) -> None:
        if action in ("c", "n", "d"):
            self.cascades.append((ref, old, new, self.depth + 1))
        else:
            self.removed.setdefault((id(ref), _hashable(old)), (ref, old, verb))

    def finish(self, ctx: ExecCtx) -> None:
        """Run the statement's cascades, then its checks; a mutation operator calls this once
        its own writes are done (TableWriter.finish)."""
        try:
            while self.cascades:
                ref, old, new, depth = self.cascades.popleft()
                self.cascades_run.add((depth, id(ref)))
                if len(self.cascades_run) > MAX_CASCADES:
                    raise errors.PgError(TRIGGERED_ACTION_EXCEPTION, f"cascades limit ({MAX_CASCADES}) reached")
                self.depth = depth
                self._cascade(ctx, ref, old, new)
                ctx.check_cancel()
            # The keys are read a batch per store call (Txn.get_many), in the order the rows
            # were written, so the first row at fault is the one reported.
            txn = ctx.txn
            removed = list(self.removed.values())
            for lo in range(0, len(removed), READ_BATCH):
                chunk = removed[lo:lo + READ_BATCH]
                held = txn.get_many([ref.parent_key(values) for ref, values, _ in chunk])
                for (ref, values, verb), still in zip(chunk, held):
                    if still is not None:
                        continue  # another row of the statement took the key over
                    if ref.is_referenced(ctx, values):
                        raise ref.error(values, verb)
                ctx.check_cancel()
            lookups = list(self.lookups.items())
            for lo in range(0, len(lookups), READ_BATCH):
                chunk = lookups[lo:lo + READ_BATCH]
                found = txn.get_many([key for (_, key), _ in chunk])
                for (_, (lookup, row, verb)), parent in zip(chunk, found):
                    if parent is None:
                        raise lookup.error(row, verb)
                ctx.check_cancel()
        finally:
            ctx.fk_pending = None

    def _cascade(self, ctx: ExecCtx, ref: ChildRef, old: tuple, new: tuple | None) -> None:
        target = ref.target
        assert target is not None and target.delete_writer is not None and target.update_writer is not None
        action = ref.fk.on_delete if new is None else ref.fk.on_update
        rows = ref.referencing_rows(ctx, old)
        self.cascaded_rows += len(rows)
        if self.cascaded_rows > MAX_STATEMENT_ROWS:
            raise errors.program_limit_exceeded(
                f"statement changes more than {MAX_STATEMENT_ROWS} rows through cascades")
        for row in rows:
            if action == "c" and new is None:
                target.delete_writer.delete(ctx, row)
                continue
            changed = list(row)
            for j, p in enumerate(ref.child_positions):
                if action == "c":
                    assert new is not None
                    changed[p] = new[j]
                elif action == "n":
                    changed[p] = None
                else:
                    d = ref.defaults[j]
                    changed[p] = d(row, ctx) if d is not None else None
            new_row = tuple(changed)
            if target.checks is not None:
                target.checks.validate(new_row, ctx)
            target.update_writer.update(ctx, row, new_row)
            if action == "d":
                # the default may equal the old value, whose parent row is the one going away
                target.inserted(ctx, new_row, "update")


def _hashable(values: tuple) -> tuple:
    try:
        hash(values)
    except TypeError:
        return tuple(repr(v) for v in values)
    return values


def _pending(ctx: ExecCtx) -> Pending:
    pending = ctx.fk_pending
    if pending is None:
        pending = ctx.fk_pending = Pending()
    return pending


# ---- compiling ------------------------------------------------------------------------------

def plan_table(table: TableDesc, compiler: Compiler) -> TableFKs | None:
    """The TableFKs of a table a statement writes, or None when no constraint involves it."""
    return _plan(table, compiler, {})


def _plan(table: TableDesc, compiler: Compiler, memo: dict[int, TableFKs]) -> TableFKs | None:
    if table.id in memo:
        return memo[table.id]
    catalog = compiler.catalog
    refs = F.inbound(catalog, table.id)
    if not table.foreign_keys and not refs:
        return None
    plan = TableFKs(table, [], [])
    memo[table.id] = plan  # before recursing: cascades may lead back here
    codec = compiler.codec(table)
    for fk in table.foreign_keys:
        parent = catalog.by_id.get(fk.ref_table_id)
        if not isinstance(parent, TableDesc):
            continue
        plan.outbound.append(_lookup(fk, table, parent, compiler))
    for child, fk in refs:
        ref = _child_ref(fk, child, table, compiler)
        if {fk.on_delete, fk.on_update} & {"c", "n", "d"}:
            ref.target = _plan(child, compiler, memo)
        plan.inbound.append(ref)
    plan.checks = compiler.row_checks(table)
    plan.delete_writer = TableWriter(codec, plan, "delete")
    plan.update_writer = TableWriter(codec, plan, "update")
    return plan


def _index_codec(table: TableDesc, index_id: int, compiler: Compiler) -> IndexCodec:
    codec = compiler.codec(table)
    for ic in [codec.primary, *codec.secondaries]:
        if ic.index.id == index_id:
            return ic
    raise errors.internal_error(f"index {index_id} of {table.name} not found")


def _lookup(fk: ForeignKeyDesc, child: TableDesc, parent: TableDesc, compiler: Compiler) -> ParentLookup:
    idx = F.referenced_index(parent, fk.ref_column_ids)
    if idx is None:
        raise errors.internal_error(f'foreign key "{fk.name}" has no unique index on "{parent.name}"')
    ic = _index_codec(parent, idx.id, compiler)
    order = [fk.ref_column_ids.index(cid) for cid in idx.column_ids]
    fk_positions = [child.position(cid) for cid in fk.column_ids]
    return ParentLookup(fk, child, parent, ic, [fk_positions[j] for j in order], fk_positions)


def _child_ref(fk: ForeignKeyDesc, child: TableDesc, parent: TableDesc, compiler: Compiler) -> ChildRef:
    child_idx = F.referencing_index(child, fk.column_ids)
    scans_table = child_idx is None
    if child_idx is None:
        child_idx = child.primary_index
    parent_idx = F.referenced_index(parent, fk.ref_column_ids)
    if parent_idx is None:
        raise errors.internal_error(f'foreign key "{fk.name}" has no unique index on "{parent.name}"')
    child_ic = _index_codec(child, child_idx.id, compiler)
    parent_ic = _index_codec(parent, parent_idx.id, compiler)
    n = len(fk.column_ids)
    defaults: list[Compiled | None] = []
    if "d" in (fk.on_delete, fk.on_update):
        all_defaults = compiler.defaults(child)
        defaults = [all_defaults[child.position(cid)] for cid in fk.column_ids]
    return ChildRef(
        fk, child, parent,
        [parent.position(cid) for cid in fk.ref_column_ids],
        [child.position(cid) for cid in fk.column_ids],
        child_ic, [] if scans_table else [fk.column_ids.index(cid) for cid in child_idx.column_ids[:n]],
        scans_table,
        compiler.codec(child), parent_ic, [fk.ref_column_ids.index(cid) for cid in parent_idx.column_ids],
        defaults)


def compiler_from(catalog: Catalog, codec: Callable[[TableDesc], TableCodec],
                  row_checks: Callable[[TableDesc], RowChecks],
                  defaults: Callable[[TableDesc], list[Compiled | None]]) -> Compiler:
    """A Compiler from three functions (the planner's)."""
    return _FnCompiler(catalog, codec, row_checks, defaults)


class _FnCompiler:
    def __init__(self, catalog: Catalog, codec: Any, row_checks: Any, defaults: Any) -> None:
        self.catalog = catalog
        self._codec = codec
        self._row_checks = row_checks
        self._defaults = defaults

    def codec(self, table: TableDesc) -> TableCodec:
        return self._codec(table)

    def row_checks(self, table: TableDesc) -> RowChecks:
        return self._row_checks(table)

    def defaults(self, table: TableDesc) -> list[Compiled | None]:
        return self._defaults(table)
