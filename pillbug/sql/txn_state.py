"""The session's transaction state machine: one state enum and one guarded transition function.

States (CockroachDB's, which extend PostgreSQL's):
  NO_TXN       no transaction block; each statement (or simple-query batch) runs in an implicit one
  OPEN         inside BEGIN ... COMMIT
  ABORTED      a statement failed: only ROLLBACK [TO SAVEPOINT] (or COMMIT, which rolls back) is
               accepted, 25P02 otherwise
  COMMIT_WAIT  RELEASE SAVEPOINT cockroach_restart committed: only COMMIT/ROLLBACK remain

    NO_TXN --BEGIN--> OPEN --STATEMENT_FAILED / RELEASE_FAILED--> ABORTED
    OPEN --RELEASE_COMMITTED--> COMMIT_WAIT
    OPEN, ABORTED --ROLLBACK_TO_SAVEPOINT / RESTART--> OPEN
    any --END (COMMIT, ROLLBACK, the implicit transaction finished)--> NO_TXN

An implicit transaction leaves the state at NO_TXN (BEGIN_IMPLICIT); a statement that fails in
ABORTED or COMMIT_WAIT leaves the state as it is. The values are the names SHOW
transaction_status prints. This module is pure: it maps (state, event) to the next state and
raises on a move the table does not hold; it must not know about kv transactions, savepoint
marks, statements or the wire protocol (sql/session.py does the work each move stands for).
"""
from __future__ import annotations

import enum

from pillbug.util import errors


class TxnState(enum.StrEnum):
    NO_TXN = "NoTxn"
    OPEN = "Open"
    ABORTED = "Aborted"
    COMMIT_WAIT = "CommitWait"


class TxnEvent(enum.Enum):
    BEGIN_EXPLICIT = enum.auto()  # BEGIN / START TRANSACTION
    BEGIN_IMPLICIT = enum.auto()  # a statement outside a transaction block gets its own transaction
    STATEMENT_FAILED = enum.auto()
    RESTART = enum.auto()  # ROLLBACK TO an initial savepoint: a fresh snapshot
    ROLLBACK_TO_SAVEPOINT = enum.auto()  # undo the writes after a savepoint, keep the snapshot
    RELEASE_COMMITTED = enum.auto()  # RELEASE SAVEPOINT cockroach_restart committed
    RELEASE_FAILED = enum.auto()  # ... and failed: the client rolls back to it and retries
    END = enum.auto()  # COMMIT, ROLLBACK, or the implicit transaction finished


NO_TXN, OPEN, ABORTED, COMMIT_WAIT = TxnState.NO_TXN, TxnState.OPEN, TxnState.ABORTED, TxnState.COMMIT_WAIT

_NEXT: dict[tuple[TxnState, TxnEvent], TxnState] = {
    (NO_TXN, TxnEvent.BEGIN_EXPLICIT): OPEN,
    (NO_TXN, TxnEvent.BEGIN_IMPLICIT): NO_TXN,
    (NO_TXN, TxnEvent.STATEMENT_FAILED): NO_TXN,  # the implicit transaction ends (END follows)
    (OPEN, TxnEvent.STATEMENT_FAILED): ABORTED,
    (ABORTED, TxnEvent.STATEMENT_FAILED): ABORTED,
    (COMMIT_WAIT, TxnEvent.STATEMENT_FAILED): COMMIT_WAIT,
    (OPEN, TxnEvent.RESTART): OPEN,
    (ABORTED, TxnEvent.RESTART): OPEN,
    (OPEN, TxnEvent.ROLLBACK_TO_SAVEPOINT): OPEN,
    (ABORTED, TxnEvent.ROLLBACK_TO_SAVEPOINT): OPEN,
    (OPEN, TxnEvent.RELEASE_COMMITTED): COMMIT_WAIT,
    (OPEN, TxnEvent.RELEASE_FAILED): ABORTED,
    **{(state, TxnEvent.END): NO_TXN for state in TxnState},
}


def transition(state: TxnState, event: TxnEvent) -> TxnState:
    """The state after `event` in `state`; an internal error (XX000) if the move is not legal."""
    nxt = _NEXT.get((state, event))
    if nxt is None:
        raise errors.internal_error(f"transaction state {state.value}: {event.name} is not a legal move")
    return nxt
