"""COPY ... FROM STDIN: rows arriving as text (PostgreSQL's text or CSV format) into a table.

A CopyIn is fed the raw bytes of CopyData messages as they come, splits them into complete
records (a partial record waits for the next chunk), converts each field with its column's input
function and inserts the row through the same TableWriter and constraint checks as INSERT.
Memory stays bounded by one record (16 MiB) plus the transaction's write buffer.

The binary format is the wire's business (its values are the types' binary receive formats,
which pgwire/codecs.py knows): for it the caller sets `parser`, which is fed the bytes instead
and hands each decoded row to insert_values().
"""
from __future__ import annotations

import csv
from typing import Any, Protocol

from pillbug.sql import datum
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.mutations import TableWriter
from pillbug.sql.opt.mutations import default_fns, row_checks, table_writer
from pillbug.sql.opt.planner import Planner
from pillbug.sql.parser.front import Statement
from pillbug.sql.sem.build import ParamTypes
from pillbug.util import errors, timeslice

COPY_BATCH_ROWS = 100  # CockroachDB's batch size for a non-atomic COPY
MAX_RECORD = 16 << 20
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unescape_text(field: str) -> str:
    if "\\" not in field:
        return field
    out = []
    i = 0
    n = len(field)
    while i < n:
        c = field[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = field[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < n and j < i + 4 and field[j] in "01234567":
                j += 1
            out.append(chr(int(field[i + 1:j], 8)))
            i = j
        elif nxt == "x" and i + 2 < n and field[i + 2] in "0123456789abcdefABCDEF":
            j = i + 2
            while j < n and j < i + 4 and field[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(field[i + 2:j], 16)))
            i = j
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


class RecordParser(Protocol):
    """Parses a COPY FROM stream in a format this module does not know (binary)."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class CopyIn:
    def __init__(self, session: Any, stmt: Statement) -> None:
        node = stmt.node
        assert node.get("is_from"), "COPY TO is sql/copy_out.py's"
        if node.get("filename") is not None or node.get("is_program"):
            raise errors.unimplemented("COPY from a file or program is not supported; use FROM STDIN")
        if node.get("query") is not None:
            raise errors.unimplemented("COPY (query) FROM is not supported")
        rel = node["relation"]
        names = [n for n in (rel.get("catalogname"), rel.get("schemaname"), rel["relname"]) if n]
        kind, table = session.resolve_table_name(names)
        if kind != "table" or table.is_view or table.is_sequence:
            raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'"{rel["relname"]}" is not a table')
        session.check_privilege(table, "INSERT")
        self.session = session
        self.table = table
        if node.get("attlist"):
            self.columns = [table.column(a["String"]["sval"]) for a in node["attlist"]]
        else:
            self.columns = [c for c in table.columns if not c.hidden]
        self.format = "text"
        self.delimiter: str | None = None
        self.null: str | None = None
        self.header = False
        self.quote = '"'
        self.escape: str | None = None
        for opt in node.get("options") or []:
            d = opt["DefElem"]
            name = d["defname"]
            arg = d.get("arg")
            value = None
            if arg is not None:
                value = arg.get("String", {}).get("sval") if "String" in arg else \
                    str(arg.get("Boolean", {}).get("boolval", True)) if "Boolean" in arg else None
            if name == "format":
                if value not in ("text", "csv", "binary"):
                    raise errors.unimplemented(f"COPY format {value} is not supported")
                self.format = value
            elif name == "delimiter":
                self.delimiter = value
            elif name == "null":
                self.null = value
            elif name == "header":
                self.header = value in (None, "true", "True", "on", "1")
            elif name == "quote":
                self.quote = value or '"'
            elif name == "escape":
                self.escape = value
            elif name == "freeze":
                pass  # an optimisation hint in PostgreSQL; nothing to do here
            else:
                raise errors.unimplemented(f"COPY option {name} is not supported")
        if self.format == "binary" and (self.delimiter is not None or self.null is not None
                                        or self.header or self.escape is not None):
            raise errors.syntax_error("cannot specify DELIMITER, NULL, HEADER or ESCAPE in BINARY mode")
        if self.delimiter is None:
            self.delimiter = "," if self.format == "csv" else "\t"
        if self.null is None:
            self.null = "" if self.format == "csv" else "\\N"
        planner = Planner(session, ParamTypes())
        self.writer = table_writer(planner, table, "insert")  # with the table's foreign keys
        self.checks = row_checks(planner, table)
        defaults = default_fns(planner, table)
        given = {c.id: i for i, c in enumerate(self.columns)}
        self.slots = [(given.get(c.id), defaults[i] if c.id not in given else None)
                      for i, c in enumerate(table.columns)]
        self.types = [c.type for c in self.columns]
        self.ctx = ExecCtx(session, session.txn, [], session.catalog)
        # Commit every COPY_BATCH_ROWS rows: only outside a transaction block, when asked.
        self.batched = session.implicit and session.vars.get("copy_from_atomic_enabled") == "off"
        self.in_batch = 0
        self.partial: list[str] = []  # the record in progress, in the pieces it arrived in
        self.partial_len = 0
        self.in_quotes = False  # whether it ends inside a quoted CSV field
        self.rows = 0
        self.skip_header = self.header
        self.done = False
        self.parser: RecordParser | None = None  # set by the caller for the binary format

    def feed(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed(data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None
        self._scan(text)
        # What stays pending is one unfinished record (a CSV one may span lines): bounded.
        if self.partial_len > MAX_RECORD:
            raise errors.program_limit_exceeded("COPY record longer than 16 MiB")

    def finish(self) -> int:
        if self.parser is not None:
            self.parser.finish()
            return self.rows
        if self.partial and not self.done:
            rest = "".join(self.partial)
            self.partial = []
            if rest.strip():
                self._record(rest.rstrip("\r"))
        TableWriter.finish(self.ctx)  # foreign key checks, once every row is in
        return self.rows

    def _scan(self, buf: str) -> None:
        """Hand complete records to _record. Only the new chunk is scanned (the state of the
        record in progress is kept in self.in_quotes and self.partial), so a record costs linear
        time however it is split into CopyData messages."""
        start = pos = 0
        in_quotes = self.in_quotes
        quote = self.quote if self.format == "csv" else None
        while not self.done:
            if in_quotes:
                # Inside a quoted CSV field newlines are data; a doubled quote closes and reopens.
                q = buf.find(quote, pos)
                if q < 0:
                    break
                in_quotes = False
                pos = q + 1
                continue
            end = buf.find("\n", pos)
            if quote is not None:
                q = buf.find(quote, pos, end if end >= 0 else len(buf))
                if q >= 0:
                    in_quotes = True
                    pos = q + 1
                    continue
            if end < 0:
                break
            record = buf[start:end]
            if self.partial:
                record = "".join(self.partial) + record
                self.partial = []
                self.partial_len = 0
            self._record(record.rstrip("\r"))
            start = pos = end + 1
        self.in_quotes = in_quotes
        if start < len(buf) and not self.done:
            self.partial.append(buf[start:])
            self.partial_len += len(buf) - start

    def _record(self, record: str) -> None:
        if self.skip_header:
            self.skip_header = False
            return
        if record == "\\.":
            self.done = True
            return
        if self.format == "csv":
            fields_raw = next(csv.reader([record], delimiter=self.delimiter, quotechar=self.quote,
                                         escapechar=self.escape if self.escape != self.quote else None,
                                         doublequote=True, strict=True))
            quoted = _quoted_flags(record, self.delimiter, self.quote)
            fields = [None if (f == self.null and not q) else f for f, q in zip(fields_raw, quoted)]
        else:
            fields = [None if f == self.null else _unescape_text(f) for f in record.split(self.delimiter)]
        if len(fields) != len(self.columns):
            raise errors.PgError(errors.BAD_COPY_FILE_FORMAT,
                                 f"expected {len(self.columns)} values, got {len(fields)}")
        tz = self.session.timezone
        self.insert_values([None if f is None else datum.parse_text(f, t, tz) for f, t in zip(fields, self.types)])

    def insert_values(self, values: list) -> None:
        """Insert one row given as values of the COPY's columns, in their order."""
        ctx = self.ctx
        row = tuple([values[i] if i is not None else (d((), ctx) if d is not None else None)
                     for i, d in self.slots])
        self.checks.validate(row, ctx)
        self.writer.insert(ctx, row)
        self.rows += 1
        if self.batched:
            self.in_batch += 1
            if self.in_batch >= COPY_BATCH_ROWS:
                self._commit_batch()

    def _commit_batch(self) -> None:
        """copy_from_atomic_enabled = off: commit the rows so far and go on in a new implicit
        transaction, as CockroachDB does (a failure later leaves the committed batches in)."""
        session = self.session
        TableWriter.finish(self.ctx)  # the batch's foreign key checks, before it commits
        timeslice.await_(session.finish_implicit())
        session.begin(implicit=True)
        self.ctx = ExecCtx(session, session.txn, [], session.catalog)
        self.in_batch = 0


def _quoted_flags(record: str, delimiter: str, quote: str) -> list[bool]:
    flags = []
    in_quotes = False
    field_quoted = False
    at_start = True
    for c in record:
        if at_start:
            field_quoted = c == quote
            at_start = False
        if c == quote:
            in_quotes = not in_quotes
        elif c == delimiter and not in_quotes:
            flags.append(field_quoted)
            at_start = True
            field_quoted = False
    flags.append(field_quoted)
    return flags
