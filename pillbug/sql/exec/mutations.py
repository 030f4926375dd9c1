"""Operators that write: INSERT (with ON CONFLICT and UPSERT), UPDATE and DELETE.

Each reads its whole input first (so that a statement never sees its own writes while it scans:
no Halloween problem), then writes row by row through a TableWriter, which keeps the primary
index and every secondary index in step and enforces uniqueness. Rows go a batch at a time: the
keys a batch's uniqueness checks read are prefetched with one store call (Txn.prefetch), then
each row is checked and written in order, as if alone. Rows affected are counted in
ctx.rows_affected; RETURNING rows are what the operator yields.
This module knows nothing of the parser; the planner hands it compiled expressions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pillbug.sql import datum
from pillbug.sql.catalog.descriptors import TableDesc
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.nodes import BATCH, Batch, Node, emit
from pillbug.sql.rowenc import IndexCodec, TableCodec
from pillbug.sql.sem.expr import Compiled
from pillbug.sql.types import SQLType
from pillbug.util import errors

MAX_STATEMENT_ROWS = 1_000_000


def sql_literal(value: object, typ: SQLType) -> str:
    """A value as CockroachDB prints it in error details: numbers bare, the rest quoted."""
    if value is None:
        return "NULL"
    if typ.family == "bool":
        return "true" if value else "false"
    text = datum.format_text(value, typ)
    if typ.family in ("int", "float", "decimal", "oid"):
        return text
    return "'" + text.replace("'", "''") + "'"


def unique_error(table: TableDesc, codec: IndexCodec, row: tuple) -> errors.PgError:
    cols = [table.column_by_id(cid) for cid in codec.index.column_ids]
    values = ", ".join(sql_literal(row[p], c.type) for p, c in zip(codec.positions, cols))
    return errors.PgError(errors.UNIQUE_VIOLATION,
                          f'duplicate key value violates unique constraint "{codec.index.name}"',
                          detail=f"Key ({', '.join(c.name for c in cols)})=({values}) already exists.")


class TableWriter:
    """Writes rows of one table: the primary key entry and every secondary index entry.

    With `fks` (exec/fk.py's TableFKs) it also reports each row it writes to the foreign keys
    that involve the table, named by `verb` (insert, upsert, update, delete) in their errors;
    the statement's operator then calls finish() to run their cascades and checks."""

    def __init__(self, codec: TableCodec, fks: Any = None, verb: str = "insert") -> None:
        self.codec = codec
        self.table = codec.table
        self.fks = fks
        self.verb = verb

    @staticmethod
    def finish(ctx: ExecCtx) -> None:
        """The end of a statement's writes: foreign key cascades and checks (exec/fk.py)."""
        pending = ctx.fk_pending
        if pending is not None:
            pending.finish(ctx)

    def unique_keys(self, row: tuple) -> list[bytes]:
        """The keys find_conflict may read for a row: its primary key and each unique index
        entry it would take (a NULL in an index's columns takes none)."""
        codec = self.codec
        keys = [codec.primary_key(row)]
        for ic in codec.secondaries:
            if ic.is_unique and not any(row[p] is None for p in ic.positions):
                keys.append(ic.prefix + ic.row_suffix(row))
        return keys

    def update_probes(self, old: tuple, new: tuple) -> list[bytes]:
        """The keys update() reads to check that the new row's unique keys are free."""
        codec = self.codec
        keys = []
        new_pk = codec.primary_key(new)
        if new_pk != codec.primary_key(old):
            keys.append(new_pk)
        for ic in codec.secondaries:
            if ic.is_unique and not any(new[p] is None for p in ic.positions):
                probe = ic.prefix + ic.row_suffix(new)
                if probe != ic.prefix + ic.row_suffix(old):
                    keys.append(probe)
        return keys

    def find_conflict(self, ctx: ExecCtx, row: tuple, only: IndexCodec | None = None) -> tuple[IndexCodec, bytes] | None:
        """The first unique index (and its key) where `row` collides with a stored row."""
        txn = ctx.txn
        codec = self.codec
        if only is None or only is codec.primary:
            pk = codec.primary_key(row)
            if txn.get(pk) is not None:
                return codec.primary, pk
        for ic in codec.secondaries:
            if not ic.is_unique or (only is not None and only is not ic):
                continue
            if any(row[p] is None for p in ic.positions):
                continue
            key = ic.prefix + ic.row_suffix(row)
            if txn.get(key) is not None:
                return ic, key
        return None

    def existing_row(self, ctx: ExecCtx, ic: IndexCodec, key: bytes) -> tuple:
        """The stored row that owns a unique index key."""
        txn = ctx.txn
        raw = txn.get(key)
        assert raw is not None
        if ic.index.is_primary:
            return self.codec.decode_row(raw)
        pk_suffix, _ = TableCodec.decode_index_value(raw)
        row_raw = txn.get(self.codec.pk_prefix + pk_suffix)
        if row_raw is None:
            raise errors.internal_error("unique index entry without its row")
        return self.codec.decode_row(row_raw)

    def insert(self, ctx: ExecCtx, row: tuple) -> None:
        conflict = self.find_conflict(ctx, row)
        if conflict is not None:
            raise unique_error(self.table, conflict[0], row)
        self._put(ctx, row)
        if self.fks is not None:
            self.fks.inserted(ctx, row, self.verb)

    def _put(self, ctx: ExecCtx, row: tuple) -> None:
        txn = ctx.txn
        codec = self.codec
        pk = codec.primary_key(row)
        txn.put(pk, codec.encode_row(row))
        for _, key, value in codec.index_entries(row, pk):
            txn.put(key, value)

    def delete(self, ctx: ExecCtx, row: tuple) -> None:
        txn = ctx.txn
        codec = self.codec
        pk = codec.primary_key(row)
        txn.delete(pk)
        for _, key, _ in codec.index_entries(row, pk):
            txn.delete(key)
        if self.fks is not None:
            self.fks.deleted(ctx, row, self.verb)

    def update(self, ctx: ExecCtx, old: tuple, new: tuple) -> None:
        txn = ctx.txn
        codec = self.codec
        old_pk = codec.primary_key(old)
        new_pk = codec.primary_key(new)
        if old_pk != new_pk:
            if txn.get(new_pk) is not None:
                raise unique_error(self.table, codec.primary, new)
            txn.delete(old_pk)
        txn.put(new_pk, codec.encode_row(new))
        old_entries = codec.index_entries(old, old_pk)
        new_entries = codec.index_entries(new, new_pk)
        for (ic, old_key, old_value), (_, new_key, new_value) in zip(old_entries, new_entries):
            if old_key == new_key:
                if old_value != new_value:
                    txn.put(new_key, new_value)
                continue
            if ic.is_unique and not any(new[p] is None for p in ic.positions):
                probe = ic.prefix + ic.row_suffix(new)
                if probe != ic.prefix + ic.row_suffix(old) and txn.get(probe) is not None:
                    raise unique_error(self.table, ic, new)
            txn.delete(old_key)
            txn.put(new_key, new_value)
        if self.fks is not None:
            self.fks.updated(ctx, old, new, self.verb)


@dataclass(slots=True)
class RowChecks:
    """NOT NULL and CHECK constraints of a table, compiled over its row layout."""
    not_null: list[tuple[int, str]]  # (position, column name)
    checks: list[tuple[Compiled, str]]  # (predicate, its SQL text)

    def validate(self, row: tuple, ctx: ExecCtx) -> None:
        for pos, name in self.not_null:
            if row[pos] is None:
                raise errors.PgError(errors.NOT_NULL_VIOLATION,
                                     f'null value in column "{name}" violates not-null constraint')
        for pred, text in self.checks:
            if pred(row, ctx) is False:
                raise errors.PgError(errors.CHECK_VIOLATION, f"failed to satisfy CHECK constraint ({text})")


def _materialize(source: Node, ctx: ExecCtx) -> list[tuple]:
    rows: list[tuple] = []
    for batch in source.batches(ctx):
        rows.extend(batch)
        if len(rows) > MAX_STATEMENT_ROWS:
            raise errors.program_limit_exceeded(
                f"statement modifies more than {MAX_STATEMENT_ROWS} rows; split it into smaller batches")
    return rows


def _computed(ctx: ExecCtx, rows: list[tuple], fn: Callable[[tuple, ExecCtx], tuple]
              ) -> tuple[list[tuple], Exception | None]:
    """fn of each row of a batch, up to the first that raises, and what it raised: the rows
    before it are still written (and may fail first), as they would be one by one."""
    out: list[tuple] = []
    try:
        for row in rows:
            out.append(fn(row, ctx))
    except Exception as exc:
        return out, exc
    return out, None


class Insert(Node):
    """INSERT, INSERT ... ON CONFLICT and UPSERT.

    make_row turns a source row into a full table row (defaults applied, values cast to the
    column types). On a conflict with the arbiter index: `on_conflict` None raises 23505,
    "nothing" skips the row, "update" computes the new row from the stored row and the proposed
    one (the `excluded` row) with `update_row`, subject to `update_where`.
    """

    def __init__(self, source: Node, writer: TableWriter, make_row: Callable[[tuple, ExecCtx], tuple],
                 checks: RowChecks, columns: list, returning: list[Compiled] | None,
                 on_conflict: str | None = None, arbiter: IndexCodec | None = None,
                 update_row: Callable[[tuple, tuple, ExecCtx], tuple] | None = None,
                 update_where: Compiled | None = None) -> None:
        self.source = source
        self.writer = writer
        self.make_row = make_row
        self.checks = checks
        self.columns = columns
        self.returning = returning
        self.on_conflict = on_conflict
        self.arbiter = arbiter
        self.update_row = update_row
        self.update_where = update_where

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        source_rows = _materialize(self.source, ctx)
        writer = self.writer
        make_row = self.make_row
        returning = self.returning
        out: list[tuple] = []
        touched: set[bytes] = set()
        txn = ctx.txn
        for lo in range(0, len(source_rows), BATCH):
            ctx.check_cancel()
            rows, failure = _computed(ctx, source_rows[lo:lo + BATCH], make_row)
            txn.prefetch([key for row in rows for key in writer.unique_keys(row)])
            for row in rows:
                result_row = self._write(ctx, row, touched)
                if result_row is None:
                    continue
                ctx.rows_affected += 1
                if returning is not None:
                    out.append(tuple(f(result_row, ctx) for f in returning))
            if failure is not None:
                raise failure
        writer.finish(ctx)
        yield from emit(ctx, out)

    def _write(self, ctx: ExecCtx, row: tuple, touched: set[bytes]) -> tuple | None:
        """Insert (or, on a conflict, update or skip) one row; the row written, or None."""
        writer = self.writer
        codec = writer.codec
        validate = self.checks.validate
        validate(row, ctx)
        if self.on_conflict is None:
            writer.insert(ctx, row)
            result_row = row
        else:
            conflict = writer.find_conflict(ctx, row, None if self.on_conflict == "nothing" and
                                            self.arbiter is None else self.arbiter)
            if conflict is None:
                writer.insert(ctx, row)
                result_row = row
                if self.on_conflict == "update":
                    touched.add(codec.primary_key(row))
            elif self.on_conflict == "nothing":
                return None
            else:
                ic, key = conflict
                existing = writer.existing_row(ctx, ic, key)
                pk = codec.primary_key(existing)
                if pk in touched:
                    raise errors.PgError(errors.CARDINALITY_VIOLATION,
                                         "UPSERT or INSERT...ON CONFLICT command cannot affect row a second time",
                                         hint="Ensure that no rows proposed for insertion within the same "
                                              "command have duplicate constrained values.")
                combined = existing + row
                if self.update_where is not None and self.update_where(combined, ctx) is not True:
                    return None
                assert self.update_row is not None
                new_row = self.update_row(existing, row, ctx)
                validate(new_row, ctx)
                writer.update(ctx, existing, new_row)
                touched.add(codec.primary_key(new_row))
                result_row = new_row
        return result_row

    def children(self) -> list[Node]:
        return [self.source]

    def explain_name(self) -> str:
        return "upsert" if self.on_conflict == "update" else "insert"

    def explain_attrs(self) -> list[str]:
        attrs = [f"into: {self.writer.table.name}({', '.join(c.name for c in self.writer.table.columns)})"]
        if self.arbiter is not None:
            attrs.append(f"arbiter indexes: {self.arbiter.index.name}")
        return attrs + list(self.info)


class Update(Node):
    """UPDATE: set_row computes the new row from a source row. The source rows are the table's
    rows, or (UPDATE ... FROM) the table's `width` columns followed by the FROM tables' columns,
    which SET and RETURNING may read."""

    def __init__(self, source: Node, writer: TableWriter, set_row: Callable[[tuple, ExecCtx], tuple],
                 checks: RowChecks, columns: list, returning: list[Compiled] | None,
                 width: int | None = None) -> None:
        self.source = source
        self.writer = writer
        self.set_row = set_row
        self.checks = checks
        self.columns = columns
        self.returning = returning
        self.width = width

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        rows = _materialize(self.source, ctx)
        writer = self.writer
        set_row = self.set_row
        validate = self.checks.validate
        returning = self.returning
        width = self.width
        out: list[tuple] = []
        txn = ctx.txn
        for lo in range(0, len(rows), BATCH):
            ctx.check_cancel()
            chunk = rows[lo:lo + BATCH]
            news, failure = _computed(ctx, chunk, set_row)
            txn.prefetch([key for row, new in zip(chunk, news)
                          for key in writer.update_probes(row if width is None else row[:width], new)])
            for row, new in zip(chunk, news):
                old = row if width is None else row[:width]
                validate(new, ctx)
                writer.update(ctx, old, new)
                ctx.rows_affected += 1
                if returning is not None:
                    seen = new if width is None else new + row[width:]
                    out.append(tuple(f(seen, ctx) for f in returning))
            if failure is not None:
                raise failure
        writer.finish(ctx)
        yield from emit(ctx, out)

    def children(self) -> list[Node]:
        return [self.source]

    def explain_name(self) -> str:
        return "update"

    def explain_attrs(self) -> list[str]:
        return [f"table: {self.writer.table.name}", *self.info]


class Delete(Node):
    """DELETE: source rows as for Update (DELETE ... USING adds the USING tables' columns)."""

    def __init__(self, source: Node, writer: TableWriter, columns: list,
                 returning: list[Compiled] | None, width: int | None = None) -> None:
        self.source = source
        self.writer = writer
        self.columns = columns
        self.returning = returning
        self.width = width

    def batches(self, ctx: ExecCtx) -> Iterator[Batch]:
        rows = _materialize(self.source, ctx)
        writer = self.writer
        returning = self.returning
        width = self.width
        out: list[tuple] = []
        for i, row in enumerate(rows):
            if not i % BATCH:
                ctx.check_cancel()
            writer.delete(ctx, row if width is None else row[:width])
            ctx.rows_affected += 1
            if returning is not None:
                out.append(tuple(f(row, ctx) for f in returning))
        writer.finish(ctx)
        yield from emit(ctx, out)

    def children(self) -> list[Node]:
        return [self.source]

    def explain_name(self) -> str:
        return "delete"

    def explain_attrs(self) -> list[str]:
        return [f"from: {self.writer.table.name}", *self.info]

