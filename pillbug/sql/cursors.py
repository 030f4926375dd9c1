"""SQL cursors: DECLARE, FETCH, MOVE and CLOSE, inside a transaction block.

A Cursor holds its query's plan and the generator of row batches the plan's operators produce,
started in the transaction that declared it: FETCH pulls batches on demand, and at most one
partly used batch waits between FETCHes, so a cursor over millions of rows holds no more than a
batch. Cursors scan forward only (as CockroachDB's do): FETCH NEXT / FORWARD n / ALL,
ABSOLUTE and RELATIVE to a row not before the current one, and MOVE likewise; anything backward
is 55000. They live until CLOSE or the end of their transaction (Session.end_txn clears them); WITH
HOLD, SCROLL and BINARY cursors are refused with 0A000. A query that fails while running reports
its error on the FETCH that reaches the failure, which aborts the transaction like any statement.

Names a protocol client might want (Describe of a cursor as a portal, pg_cursors) read
Session.cursors; this module knows nothing of the wire.
"""
from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from pillbug.sql import types as T
from pillbug.sql import unsupported
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt.plan import plan_statement
from pillbug.sql.opt.planner import Planner, QueryPlan
from pillbug.sql.parser.front import Statement
from pillbug.sql.result import StatementOutcome
from pillbug.sql.sem.build import ParamTypes, ScopeColumn
from pillbug.util import errors

KINDS = frozenset({"DeclareCursorStmt", "FetchStmt", "ClosePortalStmt"})
MAX_CURSORS = 10_000  # per session, as pgwire bounds prepared statements and portals
INVALID_CURSOR_NAME = "34000"
# DeclareCursorStmt.options bits (PostgreSQL's CURSOR_OPT_*)
_OPT_BINARY, _OPT_SCROLL, _OPT_HOLD = 0x1, 0x2, 0x20


class Cursor:
    """One open cursor: its result columns and the rest of its rows, pulled batch by batch."""

    __slots__ = ("name", "statement", "columns", "ctx", "_batches", "_pending", "_offset", "position",
                 "current", "exhausted", "failed", "created", "depth")

    def __init__(self, name: str, statement: str, plan: QueryPlan, ctx: ExecCtx, depth: int = 0) -> None:
        self.name = name
        self.statement = statement
        self.columns: list[ScopeColumn] = plan.columns
        self.ctx = ctx
        self._batches: Iterator[list[tuple]] = plan.node.batches(ctx)
        self._pending: list[tuple] = []  # the batch being handed out, from _offset on
        self._offset = 0
        self.position = 0  # rows fetched or moved over so far: the current row's number
        self.current: tuple | None = None  # the row at position (what RELATIVE 0 fetches again)
        self.exhausted = False
        self.failed = False  # its query raised an error: the rows after it do not exist
        self.created = datetime.datetime.now(datetime.UTC)
        self.depth = depth  # savepoints open when it was declared

    def take(self, n: int) -> Iterator[list[tuple]]:
        """The next n rows (or fewer, at the end), in batches as the plan produces them."""
        while n > 0:
            batch = self._next_rows(n)
            if not batch:
                return
            n -= len(batch)
            yield batch

    def skip(self, n: int) -> int:
        """Move over the next n rows without returning them; return how many there were."""
        moved = 0
        while moved < n:
            batch = self._next_rows(n - moved)
            if not batch:
                break
            moved += len(batch)
        return moved

    def _next_rows(self, at_most: int) -> list[tuple]:
        if self._offset >= len(self._pending):
            if self.exhausted:
                return []
            if self.failed:
                raise errors.PgError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE, f'portal "{self.name}" cannot be run')
            try:
                batch = next(self._batches, None)
            except Exception:
                self.failed = True
                raise
            if batch is None:
                self.exhausted = True
                self.current = None
                self.position += 1  # after the last row, as PostgreSQL positions it
                return []
            self._pending, self._offset = batch, 0
        start = self._offset
        rows = self._pending[start:start + at_most]
        self._offset = start + len(rows)
        if self._offset >= len(self._pending):
            self._pending, self._offset = [], 0  # let the batch go as soon as it is used up
        self.position += len(rows)
        self.current = rows[-1]
        return rows

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()  # operators release what they hold (finally blocks) now, not at collection


def _in_transaction_block(session: Any) -> None:
    if session.txn is None or session.implicit:
        raise errors.PgError(errors.NO_ACTIVE_SQL_TRANSACTION,
                             "DECLARE CURSOR can only be used in transaction blocks")


def _query_statement(stmt: Statement) -> Statement:
    (kind, body), = stmt.node["query"].items()
    if kind != "SelectStmt":
        raise errors.syntax_error(f"cannot open {unsupported.statement_name(kind)[0]} query as cursor")
    return Statement("SelectStmt", body, stmt.text, index_hints=stmt.index_hints, sources=stmt.sources,
                     num_params=stmt.num_params, parse_text=stmt.parse_text)


def _plan(session: Any, stmt: Statement, param_types: list[T.SQLType | None]) -> tuple[QueryPlan, list[T.SQLType]]:
    query = _query_statement(stmt)
    params = ParamTypes(list(param_types) + [None] * (query.num_params - len(param_types)))
    plan, _tag = plan_statement(Planner(session, params, query.index_hints), query)
    return plan, params.final_types()


def param_types(session: Any, stmt: Statement, given: list[T.SQLType | None]) -> list[T.SQLType]:
    """The types of a DECLARE's $n parameters, inferred from its query (for Parse)."""
    return _plan(session, stmt, given)[1]


def execute(session: Any, stmt: Statement, params: list, types: list[T.SQLType] | None = None) -> Any:
    """Run DECLARE, FETCH/MOVE or CLOSE; return its StatementOutcome."""
    kind = stmt.kind
    if kind == "DeclareCursorStmt":
        declare(session, stmt, params, types)
        return StatementOutcome(None, None, "DECLARE CURSOR")
    if kind == "ClosePortalStmt":
        name = stmt.node.get("portalname")
        if name is None:
            for cursor in session.cursors.values():
                cursor.close()
            session.cursors.clear()
            return StatementOutcome(None, None, "CLOSE CURSOR ALL")
        _find(session, name).close()
        del session.cursors[name]
        return StatementOutcome(None, None, "CLOSE CURSOR")
    node = stmt.node
    cursor = _find(session, node["portalname"])
    skip, count = _motion(cursor, node.get("direction", "FETCH_FORWARD"), node.get("howMany", 0))
    if node.get("ismove"):
        if skip < 0:
            return StatementOutcome(None, None, f"MOVE {int(cursor.current is not None)}")
        moved = cursor.skip(skip + count)
        return StatementOutcome(None, None, f"MOVE {max(moved - skip, 0)}")
    if skip < 0:  # RELATIVE 0 / FORWARD 0 / ABSOLUTE of the current row: that row again
        rows = iter([[cursor.current]]) if cursor.current is not None else iter(())
    else:
        rows = _after_skip(cursor, skip, count)
    return StatementOutcome(cursor.columns, rows, "FETCH", cursor.ctx)


def _after_skip(cursor: Cursor, skip: int, count: int) -> Iterator[list[tuple]]:
    if skip and cursor.skip(skip) < skip:
        return
    yield from cursor.take(count)


def _motion(cursor: Cursor, direction: str, how_many: int) -> tuple[int, int]:
    """(rows to skip, rows to return) for a forward-only cursor; skip -1 means the current row."""
    if direction in ("FETCH_FORWARD", "FETCH_BACKWARD") and how_many == 0:
        return -1, 1
    if direction == "FETCH_FORWARD" and how_many > 0:  # FETCH -n is FORWARD -n: backward
        return 0, how_many
    if direction == "FETCH_RELATIVE" and how_many >= 0:
        return (-1, 1) if how_many == 0 else (how_many - 1, 1)
    if direction == "FETCH_ABSOLUTE" and how_many > 0 and how_many >= cursor.position:
        return (-1, 1) if how_many == cursor.position else (how_many - cursor.position - 1, 1)
    raise errors.PgError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE, "cursor can only scan forward")


def _find(session: Any, name: str) -> Cursor:
    cursor = session.cursors.get(name)
    if cursor is None:
        raise errors.PgError(INVALID_CURSOR_NAME, f'cursor "{name}" does not exist')
    return cursor


def declare(session: Any, stmt: Statement, params: list, types: list[T.SQLType] | None) -> Cursor:
    node = stmt.node
    name = node["portalname"]
    options = node.get("options", 0)
    if options & _OPT_HOLD:
        raise errors.unimplemented("DECLARE CURSOR WITH HOLD is not supported")
    _in_transaction_block(session)
    if options & _OPT_BINARY:
        raise errors.unimplemented("DECLARE BINARY CURSOR is not supported")
    if options & _OPT_SCROLL:
        raise errors.unimplemented("DECLARE SCROLL CURSOR is not supported")
    if name in session.cursors:
        raise errors.PgError(errors.DUPLICATE_CURSOR, f'cursor "{name}" already exists')
    if len(session.cursors) >= MAX_CURSORS:
        raise errors.program_limit_exceeded("too many open cursors in this session")
    if stmt.num_params > len(params):
        raise errors.PgError(errors.UNDEFINED_PARAMETER, f"no value provided for placeholder: ${len(params) + 1}")
    plan, _ = _plan(session, stmt, list(types) if types is not None else [None] * len(params))
    cursor = Cursor(name, stmt.text, plan, ExecCtx(session, session.txn, list(params), session.catalog),
                    len(session.savepoints))
    session.cursors[name] = cursor
    return cursor


def close_declared_after(session: Any, savepoint_index: int) -> None:
    """ROLLBACK TO the savepoint at that index: the cursors declared since go, as in PostgreSQL."""
    for name in [n for n, c in session.cursors.items() if c.depth > savepoint_index]:
        session.cursors.pop(name).close()


def fetch_columns(session: Any, stmt: Statement) -> list[ScopeColumn] | None:
    """The columns a FETCH will return (for Describe), if its cursor is open; MOVE returns none."""
    if stmt.kind != "FetchStmt" or stmt.node.get("ismove"):
        return None
    cursor = session.cursors.get(stmt.node.get("portalname"))
    return cursor.columns if cursor is not None else None
