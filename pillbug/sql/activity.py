"""Query control: the node's registry of sessions and running statements, and how a statement
is stopped (CANCEL QUERY / SESSION, a pgwire CancelRequest, statement_timeout).

Every session registers here when it opens (Engine.new_session) and every statement while it
runs (Session.run_simple, execute_portal, COPY): that is what SHOW QUERIES / SESSIONS,
crdb_internal.node_queries and pg_stat_activity list, and what CANCEL finds by id.

A statement is stopped by setting its ActiveQuery's `reason`; nothing is interrupted from the
outside, because a node runs every statement on one event loop thread. The statement notices:
  - while it computes, at ExecCtx.canceled, which operators read once per batch (the point where
    a sliced statement also lets the loop run, util/timeslice.py);
  - while it waits (a row lock, pg_sleep), because cancel() resolves the future it waits on
    (`waiting_on`), so the wait ends at once instead of at its next poll;
  - while it waits for the store (a read parked in timeslice.await_), because cancel()
    interrupts the statement's greenlet, which raises the 57014 from the read;
  - between server-side retries of a 40001, where the session calls check() (and guard()
    interrupts the wait for a retry turn).
A statement_timeout is a deadline on the ActiveQuery, read from the registry's clock (injectable,
so that tests drive it without sleeping); a loop timer (call_later) fires at the deadline and
cancels the query with reason TIMEOUT, so no thread polls. The error is 57014 in every case; the
session turns it into CockroachDB's message for the reason (explain()).

Closing another session (CANCEL SESSION) needs the connection: pgwire sets `session.terminate`,
a callback; this module never imports pgwire.
"""
from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pillbug.util import errors, timeslice

CANCELED = "canceled"
TIMEOUT = "timeout"
SESSION_CLOSED = "session closed"
UNCATEGORIZED = "XXUUU"  # CockroachDB's code for errors that carry none (errors.Newf)
MAX_SLEEP_SECONDS = 24 * 3600.0  # pg_sleep longer than a day is refused, not queued


class ActiveQuery:
    """One running statement: what SHOW QUERIES shows and what CANCEL QUERY stops."""

    __slots__ = ("wall_ns", "session", "sql", "began", "deadline", "reason", "waiting_on",
                 "_timer", "_interrupt", "registry", "greenlet", "on_stop")

    def __init__(self, registry: Activity, wall_ns: int, session: Any, sql: str,
                 deadline: float | None, began: float) -> None:
        # Every statement passes through here: the id and the start time are kept as the one
        # integer they are made of, and formatted only when someone looks.
        self.registry = registry
        self.wall_ns = wall_ns  # unique on this node: the high half of the query id
        self.session = session
        self.sql = sql
        self.began = began
        self.deadline = deadline  # on registry.clock; None: no statement_timeout
        self.reason: str | None = None  # set once the statement must stop
        self.waiting_on: asyncio.Future | None = None  # a wait that cancel() ends at once
        self._timer: asyncio.TimerHandle | None = None
        self._interrupt: asyncio.Future | None = None
        # The sliced call the statement runs in (None when embedded): a store read it is parked
        # in (timeslice.await_) is ended by cancel(), not only at the next batch.
        self.greenlet = timeslice.current()
        # Called (at the loop's next turn) when the statement must stop while nothing of it runs
        # and nothing it waits on is a future: a COPY FROM waiting for the client's next message.
        self.on_stop: Callable[[], None] | None = None

    @property
    def query_id(self) -> str:
        return _format_id(self.wall_ns, self.registry.node_id)

    @property
    def start(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.wall_ns / 1e9, datetime.UTC)

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        for future in (self.waiting_on, self._interrupt):
            if future is not None and not future.done():
                future.set_result(None)
        if self.greenlet is not None:
            timeslice.interrupt(self.greenlet, self.error())
        if self.on_stop is not None:
            asyncio.get_running_loop().call_soon(self.on_stop)

    def expire(self) -> bool:
        """Cancel with TIMEOUT if the deadline has passed; returns whether it has."""
        if self.deadline is not None and self.registry.clock() >= self.deadline:
            self.cancel(TIMEOUT)
            return True
        return False

    def check(self) -> None:
        """Raise the statement's 57014 if it was canceled or its deadline has passed."""
        if self.reason is not None or self.expire():
            raise self.error()

    def error(self) -> errors.PgError:
        if self.reason == TIMEOUT:
            return errors.PgError(errors.QUERY_CANCELED, "query execution canceled due to statement timeout")
        return errors.query_canceled()

    def explain(self, exc: errors.PgError) -> errors.PgError:
        """The error a client sees: a 57014 raised anywhere says why this statement stopped."""
        if exc.code == errors.QUERY_CANCELED and self.reason == TIMEOUT:
            return self.error()
        return exc

    async def guard(self, awaitable: Awaitable[Any]) -> Any:
        """Await something that may take long (a retry's turn), ending early if canceled."""
        task = asyncio.ensure_future(awaitable)
        interrupt = self._interrupt = asyncio.get_running_loop().create_future()
        interrupted = True
        try:
            await asyncio.wait((task, interrupt), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._interrupt = None
            # Also when this coroutine is closed mid-wait (its connection went away): the task
            # must not go on to take a turn that nobody would give back.
            interrupted = not task.done()
            if interrupted:
                task.cancel()
        if interrupted:
            raise self.error()  # only cancel() resolves the interrupt
        return task.result()

    def _arm(self) -> None:
        # The loop's timer is only the alarm; whether the deadline passed is the registry's clock.
        if self.deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # embedded, no loop: ExecCtx.canceled and check() look at the deadline themselves
        self._timer = loop.call_later(max(self.deadline - self.registry.clock(), 0.0), self._ring)

    def _ring(self) -> None:
        self._timer = None
        if not self.expire() and self.reason is None:
            self._arm()  # the clock is behind the loop's: look again later

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Activity:
    """The sessions and running statements of one node, by their CockroachDB-style hex ids."""

    def __init__(self, node_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.clock = clock
        self.sessions: dict[str, Any] = {}  # session_id -> Session
        self.queries: dict[int, ActiveQuery] = {}  # by wall_ns, the high half of the query id
        self._last_wall = 0

    def _new_wall(self) -> int:
        # Ids are CockroachDB's ClusterWideID: 128 bits, the high half a wall time in ns, the low
        # half naming the node; shown as 32 hex digits. Strictly increasing, so never reused.
        wall = time.time_ns()
        if wall <= self._last_wall:
            wall = self._last_wall + 1
        self._last_wall = wall
        return wall

    # ---- sessions ------------------------------------------------------------------------

    def add_session(self, session: Any) -> None:
        session.session_id = _format_id(self._new_wall(), self.node_id)
        self.sessions[session.session_id] = session

    def remove_session(self, session: Any) -> None:
        query = session.query
        if query is not None:
            query.cancel(SESSION_CLOSED)
            self.end(query)
        self.sessions.pop(session.session_id, None)

    # ---- statements ----------------------------------------------------------------------

    def begin(self, session: Any, sql: str) -> ActiveQuery:
        """Register the statement a session starts, with its statement_timeout's deadline."""
        now = self.clock()
        timeout = session.vars.get("statement_timeout", "0")
        deadline = now + int(timeout) / 1000 if timeout != "0" else None
        query = ActiveQuery(self, self._new_wall(), session, sql, deadline, now)
        self.queries[query.wall_ns] = query
        session.query = query
        if deadline is not None:
            query._arm()
        return query

    def next_statement(self, query: ActiveQuery, sql: str) -> None:
        """The next statement of a simple-query batch: shown on its own, with a deadline of its
        own (statement_timeout as set now, perhaps by an earlier statement of the batch)."""
        query.sql = sql
        query._disarm()
        now = self.clock()
        timeout = query.session.vars.get("statement_timeout", "0")
        query.deadline = now + int(timeout) / 1000 if timeout != "0" else None
        if query.deadline is not None and query.reason is None:
            query._arm()

    def end(self, query: ActiveQuery) -> None:
        if query._timer is not None:
            query._disarm()
        query.greenlet = None  # the connection's greenlet goes on to other work: not ours to stop
        self.queries.pop(query.wall_ns, None)
        session = query.session
        if session.query is query:
            session.query = None
            session.last_query = query.sql

    # ---- who may see and stop what -------------------------------------------------------

    @staticmethod
    def _option(catalog: Any, user: str, option: str) -> bool:
        record = catalog.users.get(user)
        return bool(record is not None and record.options.get(option))

    def can_view(self, catalog: Any, viewer: str, owner: str) -> bool:
        return viewer == owner or catalog.is_admin(viewer) or self._option(catalog, viewer, "viewactivity")

    def check_can_cancel(self, catalog: Any, requester: str, owner: str) -> None:
        """The owner and admins may cancel; CANCELQUERY reaches everyone but admins (CockroachDB)."""
        if requester == owner or catalog.is_admin(requester):
            return
        if self._option(catalog, requester, "cancelquery") and not catalog.is_admin(owner):
            return
        raise errors.insufficient_privilege(
            f"user {requester} does not have CANCELQUERY privilege to cancel {owner}'s statements")

    def visible_sessions(self, viewer: Any) -> list[Any]:
        catalog = viewer.catalog_or_latest()
        return [s for s in self.sessions.values() if self.can_view(catalog, viewer.user, s.user)]

    def visible_queries(self, viewer: Any) -> list[ActiveQuery]:
        catalog = viewer.catalog_or_latest()
        return [q for q in self.queries.values() if self.can_view(catalog, viewer.user, q.session.user)]

    def cancel_query(self, requester: Any, query_id: str, if_exists: bool) -> bool:
        """CANCEL QUERY: stop another statement (it ends with 57014). Returns whether one was."""
        query = self.queries.get(self._wall_of(query_id))
        if query is None:
            if if_exists:
                return False
            detail = "malformed" if not _is_id(query_id) else "not found"
            raise errors.PgError(UNCATEGORIZED, f"could not cancel query {query_id}: query ID {query_id} {detail}")
        self.check_can_cancel(requester.catalog_or_latest(), requester.user, query.session.user)
        query.cancel(CANCELED)
        return True

    def cancel_session(self, requester: Any, session_id: str, if_exists: bool) -> bool:
        """CANCEL SESSION: stop the session's statement and close its connection."""
        session = self.sessions.get(session_id)
        if session is None:
            if if_exists:
                return False
            detail = "malformed" if not _is_id(session_id) else "not found"
            raise errors.PgError(UNCATEGORIZED,
                                 f"could not cancel session {session_id}: session ID {session_id} {detail}")
        self.check_can_cancel(requester.catalog_or_latest(), requester.user, session.user)
        self.terminate(session)
        return True

    def _wall_of(self, query_id: str) -> int:
        if not _is_id(query_id) or int(query_id[16:], 16) != self.node_id:
            return -1
        return int(query_id[:16], 16)

    def by_pid(self, pid: int) -> Any:
        for session in self.sessions.values():
            if session.backend_pid == pid:
                return session
        return None

    def terminate(self, session: Any) -> None:
        if session.query is not None:
            session.query.cancel(SESSION_CLOSED)
        if session.terminate is not None:
            session.terminate()  # the connection closes; its close ends the session


def _format_id(wall_ns: int, node_id: int) -> str:
    return f"{wall_ns:016x}{node_id:016x}"


def _is_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def sleep(query: ActiveQuery | None, seconds: float) -> None:
    """pg_sleep: pause the statement, letting the loop serve others; cancelable and bounded by
    the statement's deadline. Outside a sliced call (embedded use: nothing else could run on
    this thread meanwhile) it sleeps the thread."""
    if seconds != seconds or seconds > MAX_SLEEP_SECONDS:
        raise errors.invalid_parameter_value(f"pg_sleep: invalid duration {seconds}")
    clock = query.registry.clock if query is not None else time.monotonic
    end = clock() + seconds
    while True:
        if query is not None:
            query.check()
        remaining = end - clock()
        if remaining <= 0:
            return
        try:
            future = asyncio.get_running_loop().create_future()
        except RuntimeError:
            future = None
        if future is None:
            time.sleep(remaining)
            continue
        if query is not None:
            query.waiting_on = future
        try:
            sliced = timeslice.wait(future, remaining)
        finally:
            if query is not None:
                query.waiting_on = None
        if not sliced:
            time.sleep(remaining)


# ---- the statements and tables that show and stop activity --------------------------------

def cancel_statement(session: Any, stmt: Any,
                     forward: Callable[[Any, str, str, bool], bool | None] | None = None) -> str:
    """CANCEL QUERIES / SESSIONS: run the statement's query for the ids, stop each one. `forward`
    (sql/cluster.py) sends an id of another node to that node, or returns None for a local one."""
    registry = session.engine.activity
    source = stmt.node["source"]
    outcome = session.execute_statement(source, source.text, [])
    columns = outcome.columns or []
    if len(columns) != 1:
        raise errors.PgError(errors.SYNTAX_ERROR,
                             f"{stmt.kind.replace('Cancel', 'CANCEL ').upper()} expects a single column "
                             f"source, got {len(columns)} columns")
    ids = [row[0] for batch in (outcome.rows or ()) for row in batch]
    for value in ids:
        if value is None:
            continue  # CockroachDB skips NULL ids
        if not isinstance(value, str):
            raise errors.PgError(errors.DATATYPE_MISMATCH, f"invalid ID {value!r}: expected a string")
        kind = "cancel_query" if stmt.kind == "CancelQueries" else "cancel_session"
        if forward is not None and forward(session, kind, value, stmt.node["if_exists"]) is not None:
            continue
        if kind == "cancel_query":
            registry.cancel_query(session, value, stmt.node["if_exists"])
        else:
            registry.cancel_session(session, value, stmt.node["if_exists"])
    return "CANCEL QUERIES" if stmt.kind == "CancelQueries" else "CANCEL SESSIONS"


def query_rows(viewer: Any) -> list[tuple]:
    """SHOW QUERIES: query_id, node_id, session_id, user_name, start, query, client_address,
    application_name, distributed, full_scan, phase (CockroachDB's columns)."""
    registry = viewer.engine.activity
    return [(q.query_id, registry.node_id, q.session.session_id, q.session.user, q.start, q.sql,
             q.session.client_addr, q.session.vars.get("application_name", ""), False, None, "executing")
            for q in sorted(registry.visible_queries(viewer), key=lambda q: q.began)]


def session_rows(viewer: Any) -> list[tuple]:
    """SHOW SESSIONS: node_id, session_id, status, user_name, client_address, application_name,
    active_queries, last_active_query, session_start, active_query_start, num_txns_executed."""
    registry = viewer.engine.activity
    rows = []
    for s in sorted(registry.visible_sessions(viewer), key=lambda s: s.session_start):
        query = s.query
        rows.append((registry.node_id, s.session_id, "ACTIVE" if query is not None else "IDLE", s.user,
                     s.client_addr, s.vars.get("application_name", ""), query.sql if query is not None else "",
                     s.last_query, s.session_start, query.start if query is not None else None,
                     s.txns_executed))
    return rows
