"""The extended protocol's statements and portals, and the one writer of a statement's rows.

`Prepared` is a parsed (and, for queries and DML, planned) statement (Session.prepare makes
it, for Parse and SQL PREPARE); a `Portal` is one bound to parameter values, run by Execute
(execute_portal) up to a row limit, suspended there, and resumed by the next Execute. An
implicit transaction a suspended portal leaves open ends at Sync (sync). write_outcome() sends
a StatementOutcome's rows and command tag to the ResultSink for both protocols: the simple
protocol's statements are portals with no row limit.

It must not know the wire format (the sink encodes), how a statement is planned or run (the
session's execute_statement), nor what transaction control statements do (sql/txn_control.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pillbug.sql import txn_control
from pillbug.sql import types as T
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.parser.front import Statement
from pillbug.sql.plan_cache import CachedPlan
from pillbug.sql.result import EmptyQuery, ResultSink, StatementOutcome
from pillbug.sql.sem.build import ScopeColumn
from pillbug.sql.statements import RETRY_SAFE_KINDS
from pillbug.util import errors


@dataclass(slots=True)
class Prepared:
    """A parsed (and, for queries and DML, planned) statement ready to execute."""
    sql: str
    statement: Statement | None
    param_types: list[T.SQLType]
    columns: list[ScopeColumn] | None
    literals: list[tuple[str, str]] = field(default_factory=list)
    cached: CachedPlan | None = None
    catalog_version: int = -1
    lifted_text: str | None = None


@dataclass(slots=True)
class Portal:
    prepared: Prepared
    params: list
    rows: Iterator[list[tuple]] | None = None
    pending: list[tuple] = field(default_factory=list)
    rows_sent: int = 0
    ctx: ExecCtx | None = None
    implicit: bool = False
    done: bool = False
    tag: str = ""


async def execute_portal(session: Any, portal: Portal, sink: ResultSink, max_rows: int) -> None:
    """Execute: run the portal, or resume it, sending at most max_rows rows (0: all)."""
    query = session.engine.activity.begin(session, portal.prepared.sql)
    try:
        await _execute_portal(session, portal, sink, max_rows)
    except errors.PgError as exc:
        raise query.explain(exc)  # noqa: B904 - the same error, told why it stopped
    finally:
        session.engine.activity.end(query)


async def sync(session: Any) -> None:
    """Sync: an implicit transaction left open by a suspended portal ends here."""
    if session.implicit and session.txn is not None:
        await session.finish_implicit()


async def _execute_portal(session: Any, portal: Portal, sink: ResultSink, max_rows: int) -> None:
    prepared = portal.prepared
    stmt = prepared.statement
    if stmt is None:
        raise EmptyQuery()
    if stmt.kind == "TransactionStmt":
        if session.implicit:
            await session.finish_implicit()
        sink.command_complete(await txn_control.transaction_statement(session, stmt))
        return
    retry_safe = stmt.kind in RETRY_SAFE_KINDS
    mark = 0

    async def attempt() -> None:
        nonlocal mark
        mark = sink.mark()
        try:
            await _execute_portal_once(session, portal, sink, max_rows)
        except errors.PgError as exc:
            session.fail(exc)
            portal.rows = None
            portal.done = True
            raise

    def may_retry(exc: errors.PgError) -> bool:
        return retry_safe and portal.implicit and portal.rows_sent == 0 and sink.rewind(mark)

    def again() -> None:
        portal.done = False
    await session.with_retries(attempt, may_retry, again)


async def _execute_portal_once(session: Any, portal: Portal, sink: ResultSink, max_rows: int) -> None:
    prepared = portal.prepared
    stmt = prepared.statement
    assert stmt is not None
    if portal.done:
        raise errors.PgError(errors.INVALID_CURSOR_STATE, "portal has already been run to completion")
    if portal.rows is None:
        if session.txn is None:
            session.check_statement_allowed(stmt)
            if stmt.as_of is not None:
                session.as_of_revision = session.revision_as_of(stmt.as_of)
            session.begin(implicit=True)
            portal.implicit = True
        elif stmt.as_of is not None:
            session.check_as_of_in_txn(stmt.as_of)
        outcome = session.execute_statement(stmt, prepared.sql, portal.params, prepared)
        portal.rows = outcome.rows if outcome.rows is not None else iter(())
        portal.ctx = outcome.ctx
        portal.tag = outcome.tag
        if outcome.columns is None and outcome.rows is None:
            portal.done = True
            sink.command_complete(outcome.tag)
            if portal.implicit:
                await session.finish_implicit()
            return
        portal_columns = outcome.columns
    else:
        portal_columns = prepared.columns
    outcome = StatementOutcome(portal_columns, portal.rows, portal.tag, portal.ctx)
    finished = await write_outcome(session, outcome, sink, describe=False, max_rows=max_rows, portal=portal)
    if finished:
        portal.done = True
        if portal.implicit:
            await session.finish_implicit()


async def write_outcome(session: Any, outcome: StatementOutcome, sink: ResultSink, describe: bool,
                        max_rows: int = 0, portal: Portal | None = None) -> bool:
    """Send an outcome's rows and tag (and the notices raised meanwhile) to the sink.

    With max_rows, stop after that many rows of this Execute and suspend the portal (its
    unsent rows kept); returns False if it was suspended.
    """
    session.running_ctx = outcome.ctx
    try:
        count = portal.rows_sent if portal is not None else 0
        # max_rows counts the rows of this Execute; count is the portal's total so far.
        stop_at = count + max_rows if max_rows else 0
        columns = outcome.columns
        if columns is not None and describe:
            sink.row_description(columns)
        if outcome.rows is not None:
            rows = outcome.rows
            pending = portal.pending if portal is not None else []
            if columns is None:
                for _ in rows:
                    pass  # a mutation without RETURNING: run it to completion
            else:
                while True:
                    if pending:
                        batch = pending
                        pending = []
                    else:
                        batch = next(rows, None)
                        if batch is None:
                            break
                    if max_rows and count + len(batch) > stop_at:
                        take = stop_at - count
                        sink.data_rows(batch[:take], columns)
                        assert portal is not None
                        portal.pending = batch[take:]
                        portal.rows_sent = stop_at
                        sink.portal_suspended()
                        return False
                    sink.data_rows(batch, columns)
                    count += len(batch)
                    await sink.drain()
                    if max_rows and count == stop_at:
                        assert portal is not None
                        portal.rows_sent = count
                        portal.pending = []
                        if _peek_done(portal, rows):
                            break
                        sink.portal_suspended()
                        return False
        for message in session.pending_notices:
            sink.notice(message)
        session.pending_notices.clear()
        tag = outcome.tag
        if tag == "SELECT" or tag == "FETCH":
            tag = f"{tag} {count}"
        elif tag == "INSERT":
            tag = f"INSERT 0 {outcome.ctx.rows_affected if outcome.ctx else 0}"
        elif tag in ("UPDATE", "DELETE"):
            tag = f"{tag} {outcome.ctx.rows_affected if outcome.ctx else 0}"
        elif tag in ("SHOW",):
            tag = f"SHOW {count}"
        if tag:
            sink.command_complete(tag)
        return True
    finally:
        session.running_ctx = None


def _peek_done(portal: Portal, rows: Iterator[list[tuple]]) -> bool:
    nxt = next(rows, None)
    if nxt is None:
        return True
    portal.pending = nxt
    return False
