"""The extended query protocol: Parse, Bind, Describe, Execute, Sync, Close and Flush.

Named and unnamed prepared statements (`statements`) and portals (`portals`, each with its
result formats), up to MAX_PREPARED of each per connection; parameters decoded and result
columns described with codecs.py in the formats the client asked for; after an error, the
messages up to the next Sync are skipped (`skip_until_sync`, which the driver honours). Planning
and running are the session's (`prepare`, `execute_portal`, `sync`, public API only).

A mixin of Connection (connection.py), whose driver dispatches these messages here and whose
ResultSink methods write the rows. It must not know how messages are read, dispatched or stepped,
nor about startup; a COPY in an Execute is handed to copy_protocol.py's methods.
"""
from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from pillbug.pgwire import codecs
from pillbug.pgwire import messages as M
from pillbug.sql import cursors as sql_cursors
from pillbug.sql.result import ResultColumn
from pillbug.sql.session import EmptyQuery, Portal, Prepared
from pillbug.util import errors

MAX_PREPARED = 10_000  # named statements and portals per connection
INVALID_CURSOR_NAME = "34000"


def expand(formats: list[int], n: int) -> list[int]:
    """A Bind's result format codes, one per column (none: all text; one: all alike)."""
    if not formats:
        return [0] * n
    if len(formats) == 1:
        return formats * n
    if len(formats) != n:
        raise errors.protocol_violation(f"wrong number of result format codes: {len(formats)} for {n} columns")
    return formats


def fields(columns: list[ResultColumn], formats: list[int]) -> list[tuple]:
    """RowDescription fields for the columns in the given formats."""
    return [(c.name, c.table_id, c.column_id, c.type.oid, c.type.typlen if c.type.typlen > 0 else -1,
             c.type.typmod, f) for c, f in zip(columns, formats)]


class ExtendedMixin:
    """Parse/Bind/Describe/Execute/Sync/Close/Flush, for Connection."""

    session: Any
    out: bytearray
    statements: dict[str, Prepared]
    portals: dict[str, tuple[Portal, list]]
    skip_until_sync: bool
    _encode_row: Callable[[tuple], bytes]

    def _extended_error(self, exc: errors.PgError) -> None:
        if self.session is not None:
            self.session.fail(exc)
        self._error(exc)
        self.skip_until_sync = True

    def _parse(self, body: bytes) -> None:
        session = self.session
        assert session is not None
        try:
            reader = M.Body(body)
            name = reader.cstring()
            sql = reader.cstring()
            n = reader.int16()
            oids = [reader.int32() & 0xFFFFFFFF for _ in range(max(n, 0))]
            if name and name in self.statements:
                raise errors.PgError(errors.DUPLICATE_PREPARED_STATEMENT,
                                     f'prepared statement "{name}" already exists')
            if len(self.statements) >= MAX_PREPARED and name:
                raise errors.program_limit_exceeded("too many prepared statements on this connection")
            types = [session.type_by_oid(o) if o else None for o in oids]
            prepared = session.prepare(sql, types)
        except errors.PgError as exc:
            self._extended_error(exc)
            return
        self.statements[name] = prepared
        self.out += M.PARSE_COMPLETE

    def _bind(self, body: bytes) -> None:
        session = self.session
        assert session is not None
        try:
            reader = M.Body(body)
            portal_name = reader.cstring()
            stmt_name = reader.cstring()
            prepared = self.statements.get(stmt_name)
            if prepared is None:
                raise errors.PgError(errors.UNDEFINED_PREPARED_STATEMENT,
                                     f'unknown prepared statement "{stmt_name}"')
            if prepared.statement is not None and prepared.statement.kind == "FetchStmt":
                # A FETCH returns its cursor's columns, and the cursor of that name may be
                # another one than when the statement was prepared.
                prepared.columns = sql_cursors.fetch_columns(session, prepared.statement)
            n_formats = reader.int16()
            formats = [reader.int16() for _ in range(max(n_formats, 0))]
            n_params = reader.int16()
            if n_params != len(prepared.param_types):
                raise errors.protocol_violation(
                    f"bind message supplies {n_params} parameters, but prepared statement "
                    f'"{stmt_name}" requires {len(prepared.param_types)}')
            if n_formats not in (0, 1, n_params):
                raise errors.protocol_violation(f"wrong number of parameter format codes: {n_formats}")
            values = []
            tz = session.timezone
            for i, typ in enumerate(prepared.param_types):
                length = reader.int32()
                if length == -1:
                    values.append(None)
                    continue
                raw = reader.bytes(length)
                fmt = formats[i] if n_formats > 1 else (formats[0] if n_formats == 1 else 0)
                if fmt not in (0, 1):
                    raise errors.protocol_violation(f"unsupported format code {fmt}")
                try:
                    values.append(codecs.decoder(typ, fmt, tz)(raw))
                except errors.PgError as exc:
                    exc.message = f"error in argument for ${i + 1}: {exc.message}"
                    raise
            n_results = reader.int16()
            result_formats = [reader.int16() for _ in range(max(n_results, 0))]
            if any(f not in (0, 1) for f in result_formats):
                raise errors.protocol_violation("unsupported result format code")
            if portal_name and portal_name in self.portals:
                raise errors.PgError(errors.DUPLICATE_CURSOR, f'portal "{portal_name}" already exists')
            if len(self.portals) >= MAX_PREPARED:
                raise errors.program_limit_exceeded("too many portals on this connection")
        except errors.PgError as exc:
            self._extended_error(exc)
            return
        self.portals[portal_name] = (Portal(prepared, values), result_formats)
        self.out += M.BIND_COMPLETE

    def _describe(self, body: bytes) -> None:
        try:
            reader = M.Body(body)
            kind = reader.byte()
            name = reader.cstring()
            if kind == b"S":
                prepared = self.statements.get(name)
                if prepared is None:
                    raise errors.PgError(errors.UNDEFINED_PREPARED_STATEMENT,
                                         f'unknown prepared statement "{name}"')
                self.out += M.parameter_description([t.oid for t in prepared.param_types])
                columns = prepared.columns
                if columns is None:
                    self.out += M.NO_DATA
                else:
                    self.out += M.row_description(fields(columns, [0] * len(columns)))
            elif kind == b"P":
                entry = self.portals.get(name)
                cursor = self.session.cursors.get(name) if entry is None and self.session is not None else None
                if cursor is not None:
                    # A DECLAREd cursor is a portal too (psycopg 3 describes its server cursors).
                    self.out += M.row_description(fields(cursor.columns, [0] * len(cursor.columns)))
                    return
                if entry is None:
                    raise errors.PgError(INVALID_CURSOR_NAME, f'portal "{name}" does not exist')
                portal, formats = entry
                columns = portal.prepared.columns
                if columns is None:
                    self.out += M.NO_DATA
                else:
                    self.out += M.row_description(fields(columns, expand(formats, len(columns))))
            else:
                raise errors.protocol_violation(f"invalid DESCRIBE message subtype {kind!r}")
        except errors.PgError as exc:
            self._extended_error(exc)

    def _execute(self, body: bytes) -> Coroutine | None:
        try:
            reader = M.Body(body)
            name = reader.cstring()
            max_rows = reader.int32()
            entry = self.portals.get(name)
            if entry is None:
                raise errors.PgError(INVALID_CURSOR_NAME, f'portal "{name}" does not exist')
        except errors.PgError as exc:
            self._extended_error(exc)
            return None
        return self._execute_portal(name, entry, max(max_rows, 0))

    async def _execute_portal(self, name: str, entry: tuple[Portal, list], max_rows: int) -> None:
        portal, formats = entry
        session = self.session
        assert session is not None
        stmt = portal.prepared.statement
        if stmt is not None and stmt.kind == "CopyStmt":
            self.portals.pop(name, None)  # a COPY runs once, whole
            if stmt.node.get("is_from"):
                self._start_copy(stmt, extended=True)
                return
            try:
                await self._copy_out(stmt)
            except errors.PgError as exc:
                self._extended_error(exc)
            return
        columns = portal.prepared.columns
        if columns is not None:
            fmts = expand(formats, len(columns))
            tz = session.timezone
            self._encode_row = codecs.row_encoder([codecs.encoder(c.type, f, tz) for c, f in zip(columns, fmts)])
        try:
            await session.execute_portal(portal, self, max_rows)
        except EmptyQuery:
            self.out += M.EMPTY_QUERY
        except errors.PgError as exc:
            self._extended_error(exc)
        if not name and portal.done:
            self.portals.pop("", None)

    def _sync(self, body: bytes) -> Coroutine | None:
        self.skip_until_sync = False
        return self._sync_async()

    async def _sync_async(self) -> None:
        session = self.session
        assert session is not None
        try:
            await session.sync()
        except errors.PgError as exc:
            self._error(exc)
        self.portals.pop("", None)
        if session.implicit is False and session.state == "NoTxn":
            # portals do not outlive their transaction
            self.portals.clear()
        self._apply_deallocations()
        self._ready()
        self.flush()

    def _apply_deallocations(self) -> None:
        session = self.session
        if session is None:
            return
        if session.deallocate_all or session.discarded:
            self.statements.clear()
            self.portals.clear()
            session.deallocate_all = session.discarded = False
        for name in session.deallocated:
            self.statements.pop(name, None)
        session.deallocated.clear()

    def _close_message(self, body: bytes) -> None:
        try:
            reader = M.Body(body)
            kind = reader.byte()
            name = reader.cstring()
        except errors.PgError as exc:
            self._extended_error(exc)
            return
        if kind == b"S":
            self.statements.pop(name, None)
        elif kind == b"P":
            self.portals.pop(name, None)
        else:
            self._extended_error(errors.protocol_violation(f"invalid CLOSE message subtype {kind!r}"))
            return
        self.out += M.CLOSE_COMPLETE

    def _flush_message(self, body: bytes) -> None:
        self.flush()
