"""The transaction state machine (sql/txn_state.py), driven event by event."""

from __future__ import annotations

import pytest

from pillbug.sql.txn_state import ABORTED, COMMIT_WAIT, NO_TXN, OPEN, TxnEvent, TxnState, transition
from pillbug.util import errors


def run(*events: TxnEvent) -> TxnState:
    state = NO_TXN
    for event in events:
        state = transition(state, event)
    return state


def test_states_print_as_show_transaction_status_does() -> None:
    assert [str(s) for s in TxnState] == ["NoTxn", "Open", "Aborted", "CommitWait"]


def test_explicit_transaction_life() -> None:
    assert run(TxnEvent.BEGIN_EXPLICIT) == OPEN
    assert run(TxnEvent.BEGIN_EXPLICIT, TxnEvent.STATEMENT_FAILED) == ABORTED
    assert run(TxnEvent.BEGIN_EXPLICIT, TxnEvent.STATEMENT_FAILED, TxnEvent.ROLLBACK_TO_SAVEPOINT) == OPEN
    assert run(TxnEvent.BEGIN_EXPLICIT, TxnEvent.STATEMENT_FAILED, TxnEvent.RESTART) == OPEN
    assert run(TxnEvent.BEGIN_EXPLICIT, TxnEvent.RELEASE_COMMITTED) == COMMIT_WAIT
    assert run(TxnEvent.BEGIN_EXPLICIT, TxnEvent.RELEASE_FAILED) == ABORTED
    for state in TxnState:
        assert transition(state, TxnEvent.END) == NO_TXN


def test_implicit_transaction_stays_no_txn() -> None:
    assert run(TxnEvent.BEGIN_IMPLICIT, TxnEvent.STATEMENT_FAILED, TxnEvent.END) == NO_TXN


def test_failed_statement_leaves_aborted_and_commit_wait_alone() -> None:
    assert transition(ABORTED, TxnEvent.STATEMENT_FAILED) == ABORTED
    assert transition(COMMIT_WAIT, TxnEvent.STATEMENT_FAILED) == COMMIT_WAIT


@pytest.mark.parametrize("state,event", [
    (OPEN, TxnEvent.BEGIN_EXPLICIT),
    (ABORTED, TxnEvent.BEGIN_IMPLICIT),
    (COMMIT_WAIT, TxnEvent.ROLLBACK_TO_SAVEPOINT),
    (NO_TXN, TxnEvent.RELEASE_COMMITTED),
    (ABORTED, TxnEvent.RELEASE_COMMITTED),
    (NO_TXN, TxnEvent.RESTART),
])
def test_illegal_moves_raise(state: TxnState, event: TxnEvent) -> None:
    with pytest.raises(errors.PgError) as info:
        transition(state, event)
    assert info.value.code == errors.INTERNAL_ERROR
