"""Transaction control statements: BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO.

Both protocol drivers (sql/simple_query.py, sql/portals.py) hand a TransactionStmt here; this
module decides what it does to the session's transaction and returns its command tag. The
states and their legal moves are sql/txn_state.py's; the transaction's life (begin, commit,
end, restart) is the Session's, which this module calls and never reimplements.

Savepoints, as in CockroachDB. A savepoint taken before the transaction read or wrote anything
is "initial": rolling back to it starts the transaction over at a fresh snapshot (a restart).
Any other savepoint keeps the snapshot and undoes the writes made after it (Txn.rollback_to),
also from ABORTED, which ROLLBACK TO SAVEPOINT leaves. SAVEPOINT cockroach_restart (any name
starting so, or every name with force_savepoint_restart) is the retry point of CockroachDB's
client-side retry protocol: it must come first and cannot be nested; RELEASE of it commits and
moves to COMMIT_WAIT; if that commit fails with 40001 the savepoint stays and the transaction is
ABORTED, so ROLLBACK TO SAVEPOINT cockroach_restart restarts it at a fresh snapshot and the
client's retry loop makes progress.

It must not know the wire protocol, the planner or how statements other than these run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pillbug.sql import cursors, unsupported
from pillbug.sql import vars as session_vars
from pillbug.sql.parser.front import Statement
from pillbug.sql.txn_state import ABORTED, COMMIT_WAIT, NO_TXN, TxnEvent, transition
from pillbug.util import errors

COMMIT_ON_RELEASE_PREFIX = "cockroach_restart"


@dataclass(slots=True)
class SavepointMark:
    """What a savepoint remembers: the undo-log position, or that it is initial (restart)."""
    token: int | None  # None: initial, rolling back restarts the transaction
    commit_on_release: bool = False


async def transaction_statement(session: Any, stmt: Statement) -> str:
    """Run one transaction control statement; returns its command tag."""
    kind = stmt.node["kind"]
    if is_retry_intent(session, stmt):
        # SQLAlchemy's retry loop declares the savepoint again instead of rolling back to it
        _rollback_to(session, stmt.node.get("savepoint_name", ""))
        return "SAVEPOINT"
    state = session.state
    if state == ABORTED and kind not in ("TRANS_STMT_ROLLBACK", "TRANS_STMT_ROLLBACK_TO",
                                         "TRANS_STMT_COMMIT"):
        raise errors.in_failed_transaction()
    if state == COMMIT_WAIT and kind not in ("TRANS_STMT_ROLLBACK", "TRANS_STMT_COMMIT"):
        raise committed_error()
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        if state != NO_TXN:
            raise errors.PgError(errors.ACTIVE_SQL_TRANSACTION, "there is already a transaction in progress")
        session.read_only_txn = _read_only_option(stmt.node.get("options") or [])
        if stmt.as_of is not None:
            session.as_of_revision = session.revision_as_of(stmt.as_of)
        session.begin(implicit=False)
        session.txn_began = session.engine.activity.clock()
        return "BEGIN"
    if kind == "TRANS_STMT_COMMIT":
        if state == NO_TXN:
            return "COMMIT"  # PostgreSQL warns and succeeds
        if state in (ABORTED, COMMIT_WAIT):
            session.end_txn()
            return "ROLLBACK" if state == ABORTED else "COMMIT"
        try:
            await session.commit_txn()
        finally:
            session.end_txn()
        return "COMMIT"
    if kind == "TRANS_STMT_ROLLBACK":
        session.end_txn()
        return "ROLLBACK"
    name = stmt.node.get("savepoint_name", "")
    if kind == "TRANS_STMT_SAVEPOINT":
        return _savepoint(session, name)
    if kind == "TRANS_STMT_RELEASE":
        return await _release(session, name)
    if kind == "TRANS_STMT_ROLLBACK_TO":
        return _rollback_to(session, name)
    if kind in ("TRANS_STMT_PREPARE", "TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED"):
        raise errors.unimplemented("two-phase commit is not supported")
    raise unsupported.statement("TransactionStmt")


def is_retry_intent(session: Any, stmt: Statement) -> bool:
    """SAVEPOINT cockroach_restart in an aborted transaction: CockroachDB takes it, like
    ROLLBACK TO SAVEPOINT cockroach_restart, as the client's intent to retry."""
    return (session.state == ABORTED and bool(session.savepoints) and session.savepoints[0][1].commit_on_release
            and stmt.kind == "TransactionStmt" and stmt.node["kind"] == "TRANS_STMT_SAVEPOINT"
            and _is_commit_on_release(session, stmt.node.get("savepoint_name", "")))


def committed_error() -> errors.PgError:
    return errors.PgError(errors.INVALID_TRANSACTION_STATE,
                          "current transaction is committed, commands ignored until end of transaction block")


def _is_commit_on_release(session: Any, name: str) -> bool:
    return name.startswith(COMMIT_ON_RELEASE_PREFIX) or session.vars.get("force_savepoint_restart") == "on"


def _savepoint(session: Any, name: str) -> str:
    if session.state == NO_TXN:
        raise errors.PgError(errors.NO_ACTIVE_SQL_TRANSACTION, "there is no transaction in progress")
    txn = session.txn
    assert txn is not None
    commit_on_release = _is_commit_on_release(session, name)
    if commit_on_release:
        savepoints = session.savepoints
        if len(savepoints) == 1 and savepoints[0][1].commit_on_release and not txn.is_active:
            return "SAVEPOINT"  # declared again at the top of a retry loop: nothing to do
        if savepoints:
            raise errors.syntax_error(f'SAVEPOINT "{name}" cannot be nested')
        if txn.is_active:
            raise errors.syntax_error(f'SAVEPOINT "{name}" needs to be the first statement in a transaction')
    token = txn.savepoint() if txn.is_active else None
    session.savepoints.append((name, SavepointMark(token, commit_on_release)))
    return "SAVEPOINT"


async def _release(session: Any, name: str) -> str:
    index = _find_savepoint(session, name)
    mark = session.savepoints[index][1]
    del session.savepoints[index:]
    if not mark.commit_on_release:
        if all(m.token is None for _, m in session.savepoints) and session.txn is not None:
            session.txn.forget_savepoints()
        return "RELEASE"
    try:
        await session.commit_txn()
    except errors.PgError as exc:
        if exc.code == errors.SERIALIZATION_FAILURE:
            # Keep the savepoint: the client is expected to ROLLBACK TO it and retry.
            session.savepoints.append((name, mark))
        session.txn = session.new_txn()
        session.state = transition(session.state, TxnEvent.RELEASE_FAILED)
        raise
    session.state = transition(session.state, TxnEvent.RELEASE_COMMITTED)
    return "RELEASE"


def _rollback_to(session: Any, name: str) -> str:
    index = _find_savepoint(session, name)
    mark = session.savepoints[index][1]
    del session.savepoints[index + 1:]
    cursors.close_declared_after(session, index)
    if mark.token is None:
        session.restart_txn()
    else:
        assert session.txn is not None
        session.txn.rollback_to(mark.token)
        session.forget_catalog()
        session.state = transition(session.state, TxnEvent.ROLLBACK_TO_SAVEPOINT)
    return "ROLLBACK"


def _find_savepoint(session: Any, name: str) -> int:
    if session.state == NO_TXN:
        raise errors.PgError(errors.NO_ACTIVE_SQL_TRANSACTION, "there is no transaction in progress")
    savepoints = session.savepoints
    for i in range(len(savepoints) - 1, -1, -1):
        if savepoints[i][0] == name:
            return i
    raise errors.PgError(errors.INVALID_SAVEPOINT_SPECIFICATION, f"savepoint \"{name}\" does not exist")


def _read_only_option(options: list) -> bool:
    read_only = False
    for opt in options:
        d = opt.get("DefElem", {})
        if d.get("defname") == "transaction_isolation":
            level = d["arg"]["A_Const"]["sval"]["sval"]
            session_vars.validate("transaction_isolation", level)
        elif d.get("defname") == "transaction_read_only":
            read_only = bool(d["arg"]["A_Const"].get("ival", {}).get("ival", 0))
    return read_only
