"""COPY TO STDOUT on the wire: rows -> CopyData messages in text, CSV or binary format.

The rows come batch by batch from a sql.copy_out.CopyOut; each row becomes one CopyData
message (clients such as psycopg parse one row per message), and the binary format's header
rides in the first one, as PostgreSQL sends it. The stream is bounded by flow control: once the
output buffer is past the connection's flush threshold it is written to the socket, and while
the socket's buffer is over its high-water mark (pause_writing) the statement waits in drain(),
so a slow reader holds at most one batch plus those two buffers, whatever the result's size.
"""
from __future__ import annotations

import datetime
import string
import struct
from collections.abc import Callable
from typing import Any

from pillbug.pgwire import codecs
from pillbug.pgwire import messages as M
from pillbug.pgwire.copy_binary import HEADER as BINARY_HEADER
from pillbug.pgwire.copy_binary import TRAILER as BINARY_TRAILER
from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.copy_out import CopyOptions, CopyOut

COPY_DONE = M.message(b"c")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
RowEncoder = Callable[[tuple], bytes]

# COPY's text format: backslash escapes for the characters that would break the record.
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                               "\b": "\\b", "\f": "\\f", "\v": "\\v"})


def copy_out_response(n_columns: int, binary: bool) -> bytes:
    fmt = 1 if binary else 0
    return M.message(b"H", struct.pack(">bh", fmt, n_columns) + _I16.pack(fmt) * n_columns)


# Types whose text form is made of _PLAIN_CHARS only (numbers, NaN/Infinity, t/f, dates and
# times, BC, UUIDs): unless the delimiter or quote is one of those characters, their values need
# no escaping or quoting, and skip the scan for it.
_PLAIN_FAMILIES = frozenset({"int", "oid", "float", "decimal", "bool", "date", "timestamp", "timestamptz",
                             "uuid", "time"})
_PLAIN_CHARS = frozenset(string.ascii_letters + string.digits + ".-+: ")


def _text_values(types: list[T.SQLType], tz: datetime.tzinfo) -> list[Callable[[Any], str]]:
    # The wire's text format (codecs.text_encoder) is value_formatter's output, as str.
    return [datum.value_formatter(t, tz) for t in types]


def _is_plain(typ: T.SQLType, *specials: str) -> bool:
    return typ.family in _PLAIN_FAMILIES and not any(c in _PLAIN_CHARS for c in "".join(specials))


def text_row_encoder(types: list[T.SQLType], opts: CopyOptions, tz: datetime.tzinfo) -> RowEncoder:
    delimiter = opts.delimiter
    table = dict(_TEXT_ESCAPES)
    table[ord(delimiter)] = "\\" + delimiter
    escapes = str.maketrans(table)
    formatters = [fmt if _is_plain(t, delimiter) else (lambda v, fmt=fmt: fmt(v).translate(escapes))
                  for fmt, t in zip(_text_values(types, tz), types)]
    null = opts.null

    def encode(row: tuple) -> bytes:
        return (delimiter.join([null if v is None else fmt(v) for v, fmt in zip(row, formatters)]) + "\n").encode()
    return encode


def _csv_field_quoter(opts: CopyOptions) -> Callable[[str, bool], str]:
    quote, escape, delimiter, null = opts.quote, opts.escape, opts.delimiter, opts.null
    special = (delimiter, quote, "\n", "\r")

    def field(text: str, force: bool) -> str:
        # PostgreSQL quotes a value that holds a special character, that equals the NULL string
        # (so it reads back as a value) or that could be taken for the end-of-data marker.
        if force or text == null or any(c in text for c in special) or text.startswith("\\."):
            if escape in text or quote in text:
                text = text.replace(escape, escape + escape) if escape != quote else text
                text = text.replace(quote, escape + quote)
            return quote + text + quote
        return text
    return field


def csv_row_encoder(columns: list[str], types: list[T.SQLType], opts: CopyOptions,
                    tz: datetime.tzinfo) -> RowEncoder:
    field = _csv_field_quoter(opts)
    force = opts.force_quote
    forced = [True] * len(columns) if force is True else [name in force for name in columns]
    delimiter, null = opts.delimiter, opts.null
    formatters = []
    for fmt, typ, is_forced in zip(_text_values(types, tz), types, forced):
        # A plain value (see _PLAIN_FAMILIES) is never empty, so only a NULL string it could
        # equal would need it quoted.
        if not is_forced and _is_plain(typ, delimiter, opts.quote, null):
            formatters.append(fmt)
        else:
            formatters.append(lambda v, fmt=fmt, is_forced=is_forced: field(fmt(v), is_forced))

    def encode(row: tuple) -> bytes:
        return (delimiter.join([null if v is None else fmt(v) for v, fmt in zip(row, formatters)]) + "\n").encode()
    return encode


def csv_header(columns: list[str], opts: CopyOptions) -> bytes:
    field = _csv_field_quoter(opts)
    return (opts.delimiter.join(field(name, False) for name in columns) + "\n").encode()


def binary_row_encoder(types: list[T.SQLType]) -> RowEncoder:
    """A binary COPY tuple: framed as a DataRow's fields are (codecs.row_encoder)."""
    return codecs.row_encoder([codecs.binary_encoder(t) for t in types])


def _copy_data(payload: bytes) -> bytes:
    return b"d" + _I32.pack(len(payload) + 4) + payload


def row_encoder(copy: CopyOut, tz: datetime.tzinfo) -> RowEncoder:
    opts = copy.options
    types = [c.type for c in copy.columns]
    if opts.format == "binary":
        return binary_row_encoder(types)
    if opts.format == "csv":
        return csv_row_encoder([c.name for c in copy.columns], types, opts, tz)
    return text_row_encoder(types, opts, tz)


async def stream(conn: Any, copy: CopyOut, tz: datetime.tzinfo, flush_threshold: int) -> int:
    """Write the whole COPY TO to conn (CopyOutResponse .. CopyDone) and return the row count.

    conn has the connection's output buffer `out`, `flush()` and `drain()` (which waits while
    the client does not read)."""
    opts = copy.options
    binary = opts.format == "binary"
    encode = row_encoder(copy, tz)
    conn.out += copy_out_response(len(copy.columns), binary)
    prefix = b""
    if binary:
        prefix = BINARY_HEADER
    elif opts.header:
        names = [c.name for c in copy.columns]
        if opts.format == "csv":
            conn.out += _copy_data(csv_header(names, opts))
        else:
            conn.out += _copy_data(text_row_encoder([T.STRING] * len(names), opts, tz)(tuple(names)))
    count = 0
    for batch in copy.batches():
        out = conn.out
        if prefix and batch:
            out += _copy_data(prefix + encode(batch[0]))
            prefix = b""
            batch = batch[1:]
            count += 1
        for row in batch:
            payload = encode(row)
            out += b"d"
            out += _I32.pack(len(payload) + 4)
            out += payload
        count += len(batch)
        if len(out) > flush_threshold:
            conn.flush()
            await conn.drain()
    if binary:
        conn.out += _copy_data(prefix + BINARY_TRAILER)
    conn.out += COPY_DONE
    return count
