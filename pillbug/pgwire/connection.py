"""One client connection's driver: protocol 3.0 over an asyncio.Protocol, and the session's ResultSink.

Lifecycle: [a balancer's PROXY header] -> STARTUP (SSLRequest -> TLS, CancelRequest, StartupMessage)
-> AUTH -> READY (simple and extended query, COPY FROM STDIN and TO STDOUT) -> CLOSED. This module
reads messages, routes them by state and type, steps their handlers, owns the output buffer, flow
control, errors, ReadyForQuery and the idle/terminate timers, handles the simple Query itself, and
writes results (row_description, data_rows, command_complete, ...). The other jobs are mixins of
Connection, each in its own module: startup.py (startup and authentication, with auth.py and
scram.py), extended.py (Parse/Bind/Describe/Execute/Sync/Close/Flush, portal formats) and
copy_protocol.py (the COPY FROM sub-protocol, COPY TO's glue to copy_out.py). Mixins, because each
handler stays a plain method of one class found through the class's cached attribute lookup, so
dispatching a message costs what it did when they were all written in this file (no handler object,
no extra call, no allocation per message). What this module must not know: how a startup packet, an
authentication exchange, a Bind or a CopyData is decoded (it only routes them), nor anything of the
session beyond its public API.

A connection's first byte says whether a balancer speaks first: a PROXY protocol v2 header
(proxy_protocol.py) starts with 0x0D (a refused text v1 one with "P"), a startup packet with 0x00.
Only a peer in the server's trusted balancer networks may send one; its header's source address
becomes `peer`, which the allowlist and the session see, and the bytes after it go to the reader.
Anyone else's header is refused (FATAL 08P01). Only bytes before the first message pass through that
check.

Bytes go into a messages.Reader; complete messages are handled in order. Handling a message is
a coroutine that usually finishes without suspending (on LMDB a point read never waits), so it
is driven by hand (_run) instead of as a Task: a Task per query would cost more than the query.
When it does suspend (a commit waiting for its fsync, a read from a store that answers later),
later messages wait in the reader, and reading pauses if they pile up. Output goes to one
buffer, flushed when there is no more input to process, at the protocol's sync points, or when
it grows past a threshold.

Each step of a handler runs in the connection's Slicer (util/timeslice.py): a statement that
computes for long pauses between batches, so that the loop serves other connections and the
CancelRequest that may be on its way for it. Every handler that may read the store runs there
too (the coroutines, and the synchronous Parse, startup and CopyData handlers, through
_in_slice), because a store read may park the greenlet until the store answers
(timeslice.await_); the connection is busy meanwhile. A pipelining client gets one slice of
messages at a time, too. Nothing a client does grows memory without bound: input waits in the reader only up to
MAX_PENDING_INPUT; while the client does not read (pause_writing), no further message is taken
and reading pauses; oversized messages are skipped, not buffered (messages.py).

Query control (sql/activity.py): the session registers each statement itself; the connection
registers COPY FROM (checked between CopyData messages), arms idle_in_transaction_session_timeout
at each ReadyForQuery inside a transaction (a loop timer, cancelled by the next message), and
gives the session `terminate`, which CANCEL SESSION and pg_terminate_backend call.

Every failure is a statement's, never the node's: a PgError goes to the client with its SQLSTATE,
and any other exception escaping a handler becomes XX000 (or 54001 for too deep a recursion)
for that statement while the connection goes on. Only framing errors, which leave no way to find
the next message, end the connection (FATAL 08P01).

The connection is the session's ResultSink. It can rewind its output to a mark as long as none of
it has been flushed since, which is what lets the session retry an implicit transaction on 40001
without the client noticing.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pillbug.pgwire import codecs, proxy_protocol
from pillbug.pgwire import messages as M
from pillbug.pgwire.copy_protocol import CopyMixin, looks_like_copy
from pillbug.pgwire.extended import ExtendedMixin, fields
from pillbug.pgwire.messages import FLUSH_THRESHOLD
from pillbug.pgwire.startup import StartupMixin
from pillbug.sql.result import ResultColumn
from pillbug.sql.session import EmptyQuery, Session
from pillbug.util import errors, timeslice

log = logging.getLogger(__name__)

MAX_PENDING_INPUT = 32 << 20  # pause reading when this much unprocessed input is buffered
_I32 = struct.Struct(">i")
STATEMENT_TOO_COMPLEX = "54001"
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"


def _send(coro: Coroutine) -> Any:
    return coro.send(None)


class Connection(StartupMixin, ExtendedMixin, CopyMixin, asyncio.Protocol):
    """A client connection: the driver here, the handlers of startup, the extended protocol and
    COPY in the mixins."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.reader = M.Reader()
        self.out = bytearray()
        self.flushes = 0
        self.state = "startup"
        self.session: Session | None = None
        self.is_tls = False
        self.tls_upgrading = False
        self.early_data = bytearray()
        self.busy = False
        self._coro: Coroutine | None = None
        self.statements: dict = {}  # name -> Prepared (extended.py)
        self.portals: dict = {}  # name -> (Portal, result formats)
        self.skip_until_sync = False
        self.authenticator = None  # auth.py's, during startup (startup.py)
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self.copy = None  # the COPY FROM STDIN being fed (copy_protocol.py)
        self.copy_error: errors.PgError | None = None
        self.copy_extended = False  # the COPY FROM came in an Execute: Sync, not CopyDone, ends it
        self.peer: str | None = None  # the client's address: the socket's, or a trusted balancer's header's
        self.expecting_first_bytes = True  # whether the first bytes (a PROXY header?) are still to look at
        self.proxy_header = bytearray()  # a PROXY header received so far, bounded by proxy_protocol
        self.cert_user: str | None = None
        self.startup_params: dict[str, str] = {}
        self.closed = False
        self.reading_paused = False
        self._encode_row: Callable[[tuple], bytes] = codecs.row_encoder([])
        self._msg_type = b""
        self._processing = False
        self._continue_scheduled = False
        self._startup_timer: asyncio.TimerHandle | None = None
        self.slicer = timeslice.Slicer()
        self._idle_timer: asyncio.TimerHandle | None = None  # idle_in_transaction_session_timeout
        self.copy_query: Any = None  # the COPY FROM STDIN being fed, as sql/activity.py registers it

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        self.server.connections.add(self)
        self._start_startup_timer()

    def data_received(self, data: bytes) -> None:
        if self.tls_upgrading:
            # Decrypted bytes can arrive before start_tls() returns: keep them until it has.
            self.early_data += data
            if len(self.early_data) > M.MAX_STARTUP:
                self.close()
            return
        if self.expecting_first_bytes:
            data = self._take_proxy_header(data)
            if not data:
                return
        self.reader.feed(data)
        if self.busy or self.write_paused:
            # Unprocessed input waits in the reader; past a bound, TCP pushes back instead.
            if not self.reading_paused and self.transport is not None and (
                    self.write_paused or len(self.reader.buf) > MAX_PENDING_INPUT):
                self.transport.pause_reading()
                self.reading_paused = True
            return
        self._process()

    def _take_proxy_header(self, data: bytes) -> bytes:
        """Look at a connection's first bytes: a PROXY header from a trusted balancer is taken off
        (and sets `peer`), anyone else's refused. Returns the bytes that follow it, for the reader:
        all of data on a direct connection, nothing while the header is incomplete."""
        if self.closed:
            return b""
        if not self.proxy_header:
            if data[0] not in proxy_protocol.FIRST_BYTES:
                self.expecting_first_bytes = False
                return data
            if not self.server.is_trusted_balancer(self.peer):
                log.warning("refused a PROXY protocol header from %s, which is not in the trusted balancer "
                            "networks (--accept-proxy-protocol-from)", self.peer)
                self._fatal(errors.protocol_violation(
                    f"PROXY protocol header from {self.peer}, which is not a trusted balancer"))
                return b""
        self.proxy_header += data
        try:
            header = proxy_protocol.parse_header(self.proxy_header)
        except errors.PgError as exc:
            log.warning("balancer %s: %s", self.peer, exc.message)
            self._fatal(exc)
            return b""
        if header is None:
            return b""
        if header.source is not None:
            self.peer = header.source[0]
        rest = bytes(self.proxy_header[header.length:])
        self.expecting_first_bytes = False
        self.proxy_header = bytearray()
        return rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._startup_timer is not None:
            self._startup_timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self.server.connections.discard(self)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.cancel()
        if self.slicer.paused:
            # The statement is mid-computation in the slicer's greenlet: let it stop at its next
            # batch, then _step cleans up (closing its coroutine now would be closing a running one).
            if self.session is not None:
                self.session.cancel()
            return
        self._release()

    def _release(self) -> None:
        if self._coro is not None:
            self._coro.close()
            self._coro = None
        if self.session is not None:
            self.session.close()
            self.session = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif not self.busy and not self.closed:
            self._process()

    # ---- driving handlers ----------------------------------------------------------------

    def _process(self) -> None:
        if self._processing:
            return  # a handler finished synchronously inside the loop below, which goes on
        self._processing = True
        try:
            self._process_messages()
        finally:
            self._processing = False

    def _process_messages(self) -> None:
        # Stop taking messages while the client is not reading what we send: output stays
        # bounded by the transport's high-water mark plus the flush threshold. A client that
        # pipelines many messages gets one time slice, then the others get theirs.
        deadline = time.monotonic() + timeslice.SLICE_SECONDS
        handled = 0
        while not self.busy and not self.closed and not self.write_paused:
            handled += 1
            if len(self.out) > FLUSH_THRESHOLD:
                self.flush()
                continue
            if handled % 64 == 0 and time.monotonic() > deadline:
                if not self._continue_scheduled:
                    self._continue_scheduled = True
                    asyncio.get_running_loop().call_soon(self._continue)
                break
            try:
                msg = self.reader.next_message()
            except errors.PgError as exc:
                self._fatal(exc)
                return
            if msg is None:
                break
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self._msg_type = msg[0]
            try:
                coro = self._dispatch(*msg)
            except Exception as exc:  # a bug in a handler: the statement fails, not the node
                self._handler_failed(exc)
                continue
            if coro is not None:
                self._run(coro)
        if not self.busy:
            self.flush()
            if self.transport is None or self.closed:
                return
            if self.write_paused:
                if not self.reading_paused:
                    self.transport.pause_reading()
                    self.reading_paused = True
            elif self.reading_paused:
                self.reading_paused = False
                self.transport.resume_reading()

    def _continue(self) -> None:
        self._continue_scheduled = False
        if not self.busy and not self.closed:
            self._process()

    def _run(self, coro: Coroutine) -> None:
        self._coro = coro
        self._step(None)

    def _step(self, _fut: Any) -> None:
        """Advance the current handler coroutine by one step, inside the slicer's greenlet so
        that a long statement can pause between batches (util/timeslice.py)."""
        coro = self._coro
        if coro is None:
            return
        try:
            if self.slicer.paused:
                yielded = self.slicer.resume()
            else:
                yielded = self.slicer.start(_send, coro)
        except StopIteration:
            self._coro = None
            self._step_done()
            return
        except Exception as exc:
            self._coro = None
            self._step_done(exc)
            return
        self.busy = True
        if yielded is None or yielded is timeslice.PAUSED:
            asyncio.get_running_loop().call_soon(self._step, None)
        else:
            yielded.add_done_callback(self._step)

    def _step_done(self, exc: Exception | None = None) -> None:
        self.busy = False
        if exc is not None:
            self._handler_failed(exc)
        if self.closed:
            self._release()  # the connection went away while this handler ran
            return
        self._process()

    def _handler_failed(self, exc: BaseException) -> None:
        """An exception that is not a PgError escaped a handler. The statement gets an error
        with a SQLSTATE (internal error, or a program limit); the connection goes on."""
        if isinstance(exc, RecursionError):
            err = errors.PgError(STATEMENT_TOO_COMPLEX, "statement is too complex (too deeply nested)")
        elif isinstance(exc, MemoryError):
            err = errors.PgError(errors.OUT_OF_MEMORY, "out of memory")
        else:
            log.error("connection handler failed", exc_info=exc)
            err = errors.internal_error(f"{type(exc).__name__}: {exc}")
        if self.state != "ready" or self.session is None:
            self._fatal(err)
            return
        try:
            self.session.fail(err)
        except Exception:
            log.exception("session could not record a failure")
            self._fatal(err)
            return
        self._error(err)
        if self._msg_type == b"Q":
            self._ready()
        elif self._msg_type not in (b"S", b"X"):
            self.skip_until_sync = True
        else:
            self._ready()

    def _dispatch(self, msg_type: bytes, body: bytes) -> Coroutine | None:
        state = self.state
        if state == "ready":
            handler = _READY_HANDLERS.get(msg_type)
            if msg_type == M.OVERSIZED:
                size = M.Body(body[1:]).int32()
                self._error(errors.program_limit_exceeded(
                    f"message size {size} bytes is bigger than the maximum allowed message size "
                    f"of {M.MAX_MESSAGE} bytes"))
                if body[:1] in (b"P", b"B", b"E", b"D", b"C"):
                    self.skip_until_sync = True
                elif body[:1] == b"Q":
                    self._ready()
                return None
            if self.skip_until_sync and msg_type not in (b"S", b"X"):
                return None
            if handler is None:
                self._fatal(errors.protocol_violation(f"unknown message type {msg_type!r}"))
                return None
            if msg_type in _SLICED:
                return self._in_slice(handler, self, body)
            return handler(self, body)
        if state == "copy":
            if msg_type == b"d":  # rows are inserted as they arrive: reads of the store
                return self._in_slice(self._copy_message, msg_type, body)
            return self._copy_message(msg_type, body)
        if state == "startup":
            return self._in_slice(self._startup, body)  # the HBA check reads the catalog
        if state == "auth":
            if msg_type != b"p":
                self._fatal(errors.protocol_violation(f"expected a password message, got {msg_type!r}"))
                return None
            return self._auth_message(body)
        return None

    async def _in_slice(self, handler: Callable[..., Coroutine | None], *args: Any) -> None:
        """Run a synchronous handler as a step of the slicer, where it may wait for the store,
        then the coroutine it returns, if any."""
        coro = handler(*args)
        if coro is not None:
            await coro

    # ---- output --------------------------------------------------------------------------

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(bytes(self.out))
            self.out.clear()
            self.flushes += 1

    def _error(self, exc: errors.PgError) -> None:
        self.out += M.error_response(exc)

    def _fatal(self, exc: errors.PgError) -> None:
        exc.severity = "FATAL" if exc.severity == "ERROR" else exc.severity
        self.out += M.error_response(exc)
        self.flush()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _ready(self) -> None:
        status = self.session.ready_status if self.session is not None else "I"
        self._report_parameter_changes()
        self.out += M.ready_for_query(status)
        if status != "I" and self.session is not None:
            timeout_ms = int(self.session.vars.get("idle_in_transaction_session_timeout", "0") or 0)
            if timeout_ms > 0 and self._idle_timer is None:
                self._idle_timer = asyncio.get_running_loop().call_later(timeout_ms / 1000, self._idle_timed_out)

    def _idle_timed_out(self) -> None:
        """idle_in_transaction_session_timeout: the client left a transaction open too long."""
        self._idle_timer = None
        session = self.session
        if self.closed or self.busy or session is None or session.ready_status == "I":
            return
        self._end_session(errors.PgError(IDLE_IN_TRANSACTION_TIMEOUT,
                                         "terminating connection due to idle-in-transaction timeout"))

    def _terminated(self) -> None:
        """CANCEL SESSION or pg_terminate_backend from another session (sql/activity.py)."""
        if not self.closed:
            self._end_session(errors.PgError(errors.ADMIN_SHUTDOWN,
                                             "terminating connection due to administrator command"))

    def _end_session(self, exc: errors.PgError) -> None:
        self._fatal(exc)
        # A TLS transport closes only once the client answers its close_notify, which an idle
        # client may never do: the session (its transaction, its locks) ends now, not then.
        if not self.busy:
            self._release()

    def _report_parameter_changes(self) -> None:
        session = self.session
        if session is not None and session.reported_changes:
            for name, value in session.reported_changes:
                self.out += M.parameter_status(name, value)
            session.reported_changes.clear()

    # ---- ResultSink ----------------------------------------------------------------------

    def row_description(self, columns: list[ResultColumn]) -> None:
        self.out += M.row_description(fields(columns, [codecs.TEXT] * len(columns)))
        self._encode_row = codecs.row_encoder([codecs.text_encoder(c.type, self.session.timezone)
                                               for c in columns])

    def data_rows(self, batch: list[tuple], columns: list[ResultColumn]) -> None:
        encode = self._encode_row
        out = self.out
        pack = _I32.pack
        for row in batch:
            payload = encode(row)
            out += b"D"
            out += pack(len(payload) + 4)
            out += payload
        if len(out) > FLUSH_THRESHOLD:
            self.flush()

    def command_complete(self, tag: str) -> None:
        self.out += M.command_complete(tag)

    def portal_suspended(self) -> None:
        self.out += M.PORTAL_SUSPENDED

    def notice(self, message: str) -> None:
        self.out += M.notice_response(message)

    def mark(self) -> int:
        self._mark_len = len(self.out)
        return self.flushes

    def rewind(self, mark: int) -> bool:
        if self.flushes != mark:
            return False
        del self.out[self._mark_len:]
        return True

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.flush()
            loop = asyncio.get_running_loop()
            self._drain_waiter = loop.create_future()
            await self._drain_waiter
            self._drain_waiter = None
        if self.session is not None and self.session.running_ctx is not None and self.closed:
            raise errors.query_canceled()

    # ---- simple query --------------------------------------------------------------------

    def _query(self, body: bytes) -> Coroutine | None:
        try:
            sql = M.Body(body).cstring()
        except errors.PgError as exc:
            self._error(exc)
            self._ready()
            return None
        return self._simple_query(sql)

    async def _simple_query(self, sql: str) -> None:
        session = self.session
        assert session is not None
        try:
            if looks_like_copy(sql):
                statements = session.parse(sql)
                if len(statements) == 1 and statements[0].kind == "CopyStmt":
                    if statements[0].node.get("is_from"):
                        self._start_copy(statements[0])
                        return
                    await self._copy_out(statements[0])
                    self._ready()
                    return
            await session.run_simple(sql, self)
        except EmptyQuery:
            self.out += M.EMPTY_QUERY
        except errors.PgError as exc:
            self._error(exc)
        self._ready()

    def _terminate(self, body: bytes) -> None:
        self.flush()
        self.close()

    def _function_call(self, body: bytes) -> None:
        self._error(errors.unimplemented("the fastpath function call protocol is not supported"))
        self._ready()

    def _unexpected_copy(self, body: bytes) -> None:
        # CopyData/CopyDone/CopyFail outside of COPY are ignored, as PostgreSQL does.
        return None


# Ready-state messages whose synchronous handlers may read the store: Parse plans (the catalog,
# type lookups). Bind and Describe use what Parse planned and read nothing, so they skip the
# slicer's two greenlet switches (about 3 µs each); tests/test_suspending.py runs them on a store
# whose reads fail outside a greenlet, so one that starts reading shows up there.
_SLICED = frozenset((b"P",))

_READY_HANDLERS = {
    b"Q": Connection._query,
    b"P": Connection._parse,
    b"B": Connection._bind,
    b"D": Connection._describe,
    b"E": Connection._execute,
    b"S": Connection._sync,
    b"H": Connection._flush_message,
    b"C": Connection._close_message,
    b"X": Connection._terminate,
    b"F": Connection._function_call,
    b"d": Connection._unexpected_copy,
    b"c": Connection._unexpected_copy,
    b"f": Connection._unexpected_copy,
}
