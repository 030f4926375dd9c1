"""The simple query protocol's driver: a Query message's statements, run one after another.

run_simple() is Session.run_simple. Outside a transaction block each statement runs in an
implicit transaction of its own (BEGIN ... COMMIT inside the text makes an explicit one, handed
to sql/txn_control.py). The point-read fast path: a one-statement text whose lifted shape is in
the plan cache (sql/plan_cache.py) runs that plan without being parsed (_cached_text_plan).

Retries by the server: a batch whose results have not left the node yet (the sink can rewind to
its mark) is re-run on 40001 when it holds one transaction, implicit, or explicit from BEGIN to
COMMIT, and nothing else that committed (Session.with_retries, sql/retry.py).

It must not know the wire format (the sink encodes), how a statement is planned or run (the
session's execute_statement and run_plan), nor what transaction control statements do.
"""
from __future__ import annotations

from typing import Any

from pillbug.sql import portals, txn_control
from pillbug.sql.parser.front import Statement
from pillbug.sql.parser.lift import cache_key, lift_literals
from pillbug.sql.plan_cache import CachedPlan, bind_literals
from pillbug.sql.result import EmptyQuery, ResultSink
from pillbug.sql.statements import BATCH_TXN_KINDS, RETRY_SAFE_KINDS
from pillbug.sql.txn_state import NO_TXN, OPEN
from pillbug.util import errors


async def run_simple(session: Any, sql: str, sink: ResultSink) -> None:
    """Run a Query message's statements, with the server's retries on 40001."""
    query = session.engine.activity.begin(session, sql)
    try:
        await _run_simple(session, sql, sink)
    except errors.PgError as exc:
        raise query.explain(exc)  # noqa: B904 - the same error, told why it stopped
    finally:
        session.engine.activity.end(query)


async def _run_simple(session: Any, sql: str, sink: ResultSink) -> None:
    retry_safe = session.state == NO_TXN
    statements: list[Statement] | None = None
    mark = commits = 0

    async def attempt() -> None:
        nonlocal statements, retry_safe, mark, commits
        mark = sink.mark()
        commits = session.commits
        hit = _cached_text_plan(session, sql)
        if hit is not None:
            await _run_cached(session, hit[0], hit[1], sink)
            return
        if statements is None:
            statements = _parse_batch(session, sql)
            retry_safe = retry_safe and all(_is_retry_safe(s) for s in statements)
        await _run_batch(session, statements, sink)

    def may_retry(exc: errors.PgError) -> bool:
        # Re-run only what is wholly undone: the failed transaction ended (state is NO_TXN
        # again), nothing earlier in the batch committed, nothing was sent.
        return retry_safe and session.state == NO_TXN and session.commits == commits and sink.rewind(mark)

    await session.with_retries(attempt, may_retry)


def _parse_batch(session: Any, sql: str) -> list[Statement]:
    try:
        statements = session.parse(sql)
    except errors.PgError as exc:
        session.fail(exc)
        raise
    if not statements:
        raise EmptyQuery()
    return statements


def _cached_text_plan(session: Any, sql: str) -> tuple[CachedPlan, list[str]] | None:
    """The cached plan of a one-statement query text, found without parsing it.

    Most statements a client sends as text have run before with other literals; their
    plan is in the cache under the lifted text (see Session._plan_for_text), so parsing them again
    would only cost time. Begins the implicit transaction the lookup needs (the catalog
    version is read through it) and ends it again on a miss.
    """
    state = session.state
    if state != NO_TXN and state != OPEN:
        return None
    text = sql.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    if not text or ";" in text:
        return None
    lifted = lift_literals(text)
    if lifted is None or lifted[2]:
        return None  # not DML, or it names $n placeholders a simple query cannot bind
    lifted_text, literals, _ = lifted
    began = session.txn is None
    if began:
        session.begin(implicit=True)
    cached = None
    if not session.ddl_in_txn:
        key = (session.catalog.version, session.database, session.user,
               cache_key(lifted_text, literals) if literals else text)
        cached = session.engine.plans.lookup(key, count_miss=False)
    if not cached:
        if began:
            session.end_txn()
        return None
    return cached, [lit for _, lit in literals]


async def _run_cached(session: Any, cached: CachedPlan, literals: list[str], sink: ResultSink) -> None:
    try:
        outcome = session.run_plan(cached, bind_literals(cached, session.timezone, [], literals))
        await portals.write_outcome(session, outcome, sink, describe=True)
    except errors.PgError as exc:
        session.fail(exc)
        raise
    await session.finish_implicit()


async def _run_batch(session: Any, statements: list[Statement], sink: ResultSink) -> None:
    for i, stmt in enumerate(statements):
        if i and session.query is not None:
            # statement_timeout applies to each statement of a batch (PostgreSQL 13+, CockroachDB)
            session.engine.activity.next_statement(session.query, stmt.text)
        try:
            await _run_one(session, stmt, sink)
        except errors.PgError as exc:
            session.fail(exc)
            raise
    await session.finish_implicit()


async def _run_one(session: Any, stmt: Statement, sink: ResultSink) -> None:
    if stmt.kind == "TransactionStmt":
        if session.implicit:
            await session.finish_implicit()
        tag = await txn_control.transaction_statement(session, stmt)
        sink.command_complete(tag)
        return
    if stmt.kind == "EmptyStmt":
        return
    if session.txn is None:
        session.check_statement_allowed(stmt)
        if stmt.as_of is not None:
            session.as_of_revision = session.revision_as_of(stmt.as_of)
        session.begin(implicit=True)
    elif stmt.as_of is not None:
        session.check_as_of_in_txn(stmt.as_of)
    outcome = session.execute_statement(stmt, stmt.text, [])
    await portals.write_outcome(session, outcome, sink, describe=True)


def _is_retry_safe(stmt: Statement) -> bool:
    """Whether re-running the statement from scratch after a 40001 is the same as running it once."""
    if stmt.kind == "TransactionStmt":
        return stmt.node["kind"] in BATCH_TXN_KINDS
    return stmt.kind in RETRY_SAFE_KINDS
