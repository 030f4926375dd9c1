"""COPY on a connection: the COPY FROM STDIN sub-protocol and the glue that streams COPY TO STDOUT.

COPY FROM: CopyInResponse, then CopyData rows fed to sql/copy.py's CopyIn as they arrive (binary
ones through copy_binary.py's parser), CopyDone or CopyFail, and, for a COPY sent in an Execute,
the Sync that ends it. The query registered with sql/activity.py is checked between CopyData
messages, so statement_timeout and CANCEL QUERY reach the ingest. COPY TO runs sql/copy_out.py's
plan and lets copy_out.py write its batches into the connection's output buffer.

A mixin of Connection (connection.py), which owns the state it uses (`state`, `copy`,
`copy_error`, `copy_extended`, `copy_query`, the session, the output buffer) and which routes
the messages of the "copy" state here. It must not know how messages are read or dispatched,
how handlers are stepped, nor the extended protocol beyond `_extended_error` (a COPY in an
Execute reports its error like any other extended message).
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from pillbug.pgwire import copy_out
from pillbug.pgwire import messages as M
from pillbug.pgwire.copy_binary import BinaryCopyParser
from pillbug.sql.copy import CopyIn
from pillbug.sql.copy_out import CopyOut
from pillbug.sql.parser import front
from pillbug.util import errors

# How soon a stopped COPY looks again when one of its messages was being handled.
STOP_RETRY_SECONDS = 0.005


def looks_like_copy(sql: str) -> bool:
    """Whether a simple Query may be a COPY, which the connection runs itself (cheap: no parse)."""
    return sql.lstrip()[:4].upper() == "COPY"


class CopyMixin:
    """COPY FROM STDIN and COPY TO STDOUT, for Connection."""

    session: Any
    out: bytearray
    state: str
    copy: CopyIn | None
    copy_error: errors.PgError | None
    copy_extended: bool
    copy_query: Any
    skip_until_sync: bool
    busy: bool
    closed: bool

    async def _copy_out(self, stmt: front.Statement) -> None:
        """Stream a COPY TO in the session's transaction (an implicit one if none is open)."""
        session = self.session
        assert session is not None
        # SHOW QUERIES lists it; statement_timeout and CANCEL QUERY stop it between batches.
        query = session.engine.activity.begin(session, stmt.text)
        try:
            session.check_statement_allowed(stmt)
            if session.txn is None:
                session.begin(implicit=True)
            copy = CopyOut(session, stmt)
            session.running_ctx = copy.ctx
            try:
                rows = await copy_out.stream(self, copy, session.timezone, M.FLUSH_THRESHOLD)
            finally:
                session.running_ctx = None
            await session.finish_implicit()
        except errors.PgError as exc:
            exc = query.explain(exc)
            session.fail(exc)
            raise exc from None
        finally:
            session.engine.activity.end(query)
        self.command_complete(f"COPY {rows}")

    def _start_copy(self, stmt: front.Statement, extended: bool = False) -> None:
        session = self.session
        assert session is not None
        try:
            session.check_statement_allowed(stmt)
            if session.txn is None:
                session.begin(implicit=True)
            self.copy = CopyIn(session, stmt)
            if self.copy.format == "binary":
                self.copy.parser = BinaryCopyParser(self.copy.types, self.copy.insert_values)
            # statement_timeout and CANCEL QUERY reach the ingest between CopyData messages, and
            # a client that sends nothing more through _copy_stopped.
            self.copy_query = session.engine.activity.begin(session, stmt.text)
            self.copy_query.on_stop = self._copy_stopped
        except errors.PgError as exc:
            if extended:
                self._extended_error(exc)
                return
            session.fail(exc)
            self._error(exc)
            self._ready()
            return
        self.state = "copy"
        self.copy_error = None
        self.copy_extended = extended
        self.out += M.copy_in_response(len(self.copy.columns), binary=self.copy.format == "binary")
        self.flush()

    def _copy_message(self, msg_type: bytes, body: bytes) -> Coroutine | None:
        copy = self.copy
        assert copy is not None
        if msg_type == b"d":
            if self.copy_error is None:
                try:
                    self.copy_query.check()
                    copy.feed(body)
                except errors.PgError as exc:
                    self.copy_error = exc
            return None
        if msg_type in (b"H", b"S"):
            return None
        self.state = "ready"
        self.copy = None
        if msg_type == b"c":
            return self._finish_copy(copy)
        if msg_type == b"f":
            reason = M.Body(body).cstring() if body else ""
            exc = errors.PgError(errors.QUERY_CANCELED, f"COPY from stdin failed: {reason}")
        else:
            exc = errors.protocol_violation(f"unexpected message type {msg_type!r} during COPY")
        assert self.session is not None
        self._end_copy_query()
        self.session.fail(exc)
        self._error(exc)
        self._end_copy_statement(failed=True)
        return None

    def _copy_stopped(self) -> None:
        """The COPY was canceled, or its statement_timeout passed, while it waited for the client:
        it ends now with the error (then ReadyForQuery, or in an Execute a skip to Sync), and the
        client's CopyData, CopyDone or CopyFail still on their way are dropped in the ready state,
        as PostgreSQL does. A COPY message being handled meets the cancel at its own check."""
        if self.state != "copy" or self.closed:
            return
        if self.busy:
            asyncio.get_running_loop().call_later(STOP_RETRY_SECONDS, self._copy_stopped)
            return
        query = self.copy_query
        self.state = "ready"
        self.copy = None
        exc = query.error()
        self._end_copy_query()
        self.session.fail(exc)
        self._error(exc)
        self._end_copy_statement(failed=True)
        self.flush()

    def _end_copy_statement(self, failed: bool) -> None:
        # A COPY sent in a simple Query ends with ReadyForQuery; one sent in an Execute is
        # answered at the client's Sync, and after an error the rest until Sync is skipped.
        if self.copy_extended:
            self.copy_extended = False
            self.skip_until_sync = failed
            return
        self._ready()

    def _end_copy_query(self, exc: errors.PgError | None = None) -> errors.PgError | None:
        query, self.copy_query = self.copy_query, None
        if query is None or self.session is None:
            return exc
        self.session.engine.activity.end(query)
        return query.explain(exc) if exc is not None else None

    async def _finish_copy(self, copy: CopyIn) -> None:
        session = self.session
        assert session is not None
        try:
            if self.copy_error is not None:
                raise self.copy_error
            self.copy_query.check()
            rows = copy.finish()
            await session.finish_implicit()
            self._end_copy_query()
            self.command_complete(f"COPY {rows}")
        except errors.PgError as exc:
            exc = self._end_copy_query(exc) or exc
            session.fail(exc)
            self._error(exc)
            self._end_copy_statement(failed=True)
            return
        self._end_copy_statement(failed=False)
