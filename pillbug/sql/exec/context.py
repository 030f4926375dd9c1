"""The execution context: what compiled expressions and operators see while a plan runs.

One ExecCtx per statement execution. It carries the parameter values, the transaction, the
session-level facts that builtins read (time, time zone, user, database), the stack of outer rows
for correlated subqueries, and the per-execution cache of uncorrelated subquery results.
The session fills it in; plans only read it (and call back into the session through `session`).
"""
from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

from pillbug.kv.txn import Txn
from pillbug.sql import activity
from pillbug.util import errors, timeslice

# How soon a lock wait looks again at a flag set without waking it (a cancel or a timeout through
# sql/activity.py resolves the wait at once).
LOCK_POLL_SECONDS = 0.1


class ExecCtx:
    __slots__ = ("params", "txn", "session", "outer", "subquery_cache", "_txn_time", "_statement_ns",
                 "timezone", "database", "user", "rows_affected", "catalog", "_canceled",
                 "server_version_string", "backend_pid", "node_start_time", "ticks", "fk_pending")

    def __init__(self, session: Any, txn: Txn, params: list, catalog: Any) -> None:
        self.params = params
        self.txn = txn
        self.session = session
        self.catalog = catalog
        self.outer: list[tuple] = []
        self.subquery_cache: dict[object, list[tuple]] = {}
        self.rows_affected = 0
        self._canceled = False
        self.ticks = 0
        self.fk_pending: Any = None  # exec/fk.py's Pending: foreign key work left for the statement's end
        # The clocks builtins read: taken now, turned into datetimes only if a statement asks.
        self._txn_time: datetime.datetime | None = None
        self._statement_ns = time.time_ns()
        if session is not None:
            self.timezone = session.timezone
            self.database = session.database
            self.user = session.user
            self.server_version_string = session.server_version_string
            self.backend_pid = session.backend_pid
            self.node_start_time = session.node_start_time

    @property
    def txn_time(self) -> datetime.datetime:
        if self._txn_time is None:
            self._txn_time = self.session.txn_time
        return self._txn_time

    @property
    def statement_time(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._statement_ns / 1e9, datetime.UTC)

    @property
    def canceled(self) -> bool:
        # Operators read this once per batch: the point where a long statement lets the node's
        # other connections (and its own CancelRequest) run (util/timeslice.py). The session's
        # running statement is read afresh: a portal's rows outlive the Execute that began them.
        timeslice.yield_point()
        if self._canceled:
            return True
        session = self.session
        query = session.query if session is not None else None
        return query is not None and (query.reason is not None or (query.deadline is not None and query.expire()))

    @canceled.setter
    def canceled(self, value: bool) -> None:
        self._canceled = value

    # Builtins that need the session call these.
    def session_var(self, name: str) -> str:
        return self.session.show_var(name)

    def set_session_var(self, name: str, value: str) -> None:
        self.session.set_var(name, value)

    def unique_rowid(self) -> int:
        return self.session.engine.unique_rowid()

    def cluster_logical_timestamp(self) -> Any:
        return self.session.cluster_logical_timestamp()

    @property
    def txn_id(self) -> int:
        return self.txn.read_revision

    def user_by_oid(self, oid: int) -> str:
        return self.session.user_by_oid(oid)

    def resolve_reg(self, typ: Any, name: str) -> int:
        return self.session.resolve_reg(typ, name)

    def wait_for_lock(self, future: asyncio.Future, began: float) -> None:
        """Block this statement until a row lock it waits for (since `began`, monotonic) is let
        go (kv/locks.py), or a short while has passed, so that a cancel or the session's
        lock_timeout is noticed; the caller asks for the lock again and calls back."""
        timeout_ms = int(self.session.show_var("lock_timeout")) if self.session is not None else 0
        at_most = LOCK_POLL_SECONDS
        if timeout_ms:
            at_most = max(min(at_most, began + timeout_ms / 1000 - time.monotonic()), 0.0)
        query = self.session.query if self.session is not None else None
        if query is not None:
            query.waiting_on = future  # a cancel or the statement's timeout ends the wait at once
        try:
            sliced = timeslice.wait(future, at_most)
        finally:
            if query is not None:
                query.waiting_on = None
        if not sliced:
            # Nothing else can run on this thread meanwhile: waiting would never end.
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: WriteTooOldError: a row this statement "
                "updates is locked by another transaction")
        self.check_cancel()
        if timeout_ms and (time.monotonic() - began) * 1000 >= timeout_ms:
            raise errors.PgError(errors.LOCK_NOT_AVAILABLE, "canceling statement due to lock timeout")

    def check_cancel(self) -> None:
        if self.canceled:
            query = self.session.query if self.session is not None else None
            raise query.error() if query is not None else errors.query_canceled()

    def sleep(self, seconds: float) -> None:
        """pg_sleep: pause this statement without holding the loop (sql/activity.py)."""
        activity.sleep(self.session.query if self.session is not None else None, seconds)

    def signal_backend(self, pid: int, terminate: bool) -> bool:
        """pg_cancel_backend / pg_terminate_backend: False (PostgreSQL warns) for no such pid."""
        registry = self.session.engine.activity
        target = registry.by_pid(pid)
        if target is None:
            self.session.pending_notices.append(f"PID {pid} is not a PostgreSQL backend process")
            return False
        registry.check_can_cancel(self.session.catalog_or_latest(), self.user, target.user)
        if terminate:
            registry.terminate(target)
        elif target.query is not None:
            target.query.cancel(activity.CANCELED)
        return True

    def force_retry(self, interval_seconds: float) -> None:
        """crdb_internal.force_retry: 40001 until the transaction has run longer than the
        interval. An explicit transaction counts from BEGIN (its client-side retries keep that);
        an implicit one from the statement's first attempt (the server's retries keep that)."""
        session = self.session
        if session is None:
            return
        clock = session.engine.activity.clock
        if session.implicit or session.txn is None:
            began = session.query.began if session.query is not None else clock()
        else:
            began = session.txn_began
        if clock() - began < interval_seconds:
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: forced by crdb_internal.force_retry()")
