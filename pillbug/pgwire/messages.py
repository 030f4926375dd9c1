"""PostgreSQL protocol 3.0 framing: complete messages out of a byte buffer, and messages in.

The reader is fed bytes and hands out (type, body) only for complete messages, never doing I/O
(the h11/asyncpg shape). A body larger than the limit is skipped without being buffered, and
reported as one oversized message so that the connection can answer with an error and go on.
The writer appends encoded messages to one bytearray that the connection flushes.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from pillbug.util import errors

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608
MAX_MESSAGE = 16 << 20  # CockroachDB's sql.conn.max_read_buffer_message_size
MAX_STARTUP = 10_000
FLUSH_THRESHOLD = 64 << 10  # the connection flushes its output buffer when it grows past this

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER = struct.Struct(">ci")
OVERSIZED = b"!"  # the type reported for a message whose body was skipped


class Reader:
    """Frames messages; feed() bytes, then take complete messages from next_message()."""

    __slots__ = ("buf", "startup", "skip", "skipped_type", "skipped_size")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.startup = True  # the first message has no type byte
        self.skip = 0  # bytes of an oversized body still to drop
        self.skipped_type = b""
        self.skipped_size = 0

    def feed(self, data: bytes) -> None:
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
            if not data:
                return
        self.buf += data

    def next_message(self) -> tuple[bytes, bytes] | None:
        buf = self.buf
        if self.skip:
            return None
        if self.skipped_type:
            t, size = self.skipped_type, self.skipped_size
            self.skipped_type = b""
            return OVERSIZED, t + _I32.pack(size)
        if self.startup:
            if len(buf) < 4:
                return None
            (length,) = _I32.unpack_from(buf)
            if length < 8 or length > MAX_STARTUP:
                raise errors.protocol_violation(f"invalid startup packet length {length}")
            if len(buf) < length:
                return None
            body = bytes(buf[4:length])
            del buf[:length]
            return b"", body
        if len(buf) < 5:
            return None
        msg_type, length = _HEADER.unpack_from(buf)
        if length < 4:
            raise errors.protocol_violation(f"invalid message length {length}")
        if length - 4 > MAX_MESSAGE:
            have = len(buf) - 5
            body_len = length - 4
            if have >= body_len:
                del buf[:5 + body_len]
            else:
                self.skip = body_len - have
                buf.clear()
            self.skipped_type = msg_type
            self.skipped_size = body_len
            if self.skip:
                return None
            return self.next_message()
        if len(buf) < length + 1:
            return None
        body = bytes(buf[5:length + 1])
        del buf[:length + 1]
        return msg_type, body


class Body:
    """A cursor over one message body for decoding fields."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise errors.protocol_violation("unterminated string in message")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None

    def int16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise errors.protocol_violation("insufficient data left in message")
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise errors.protocol_violation("insufficient data left in message")
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise errors.protocol_violation("insufficient data left in message")
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def byte(self) -> bytes:
        return self.bytes(1)

    def rest(self) -> bytes:
        v = self.data[self.pos:]
        self.pos = len(self.data)
        return v

    def done(self) -> bool:
        return self.pos >= len(self.data)


def message(msg_type: bytes, body: bytes = b"") -> bytes:
    return msg_type + _I32.pack(len(body) + 4) + body


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def error_fields(exc: errors.PgError) -> bytes:
    parts = [b"S", cstr(exc.severity), b"V", cstr(exc.severity), b"C", cstr(exc.code), b"M", cstr(exc.message)]
    if exc.detail:
        parts += [b"D", cstr(exc.detail)]
    if exc.hint:
        parts += [b"H", cstr(exc.hint)]
    if exc.position:
        parts += [b"P", cstr(str(exc.position))]
    parts.append(b"\x00")
    return b"".join(parts)


def error_response(exc: errors.PgError) -> bytes:
    return message(b"E", error_fields(exc))


def notice_response(text: str, code: str = "00000", severity: str = "NOTICE") -> bytes:
    body = b"".join([b"S", cstr(severity), b"V", cstr(severity), b"C", cstr(code), b"M", cstr(text), b"\x00"])
    return message(b"N", body)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def row_description(fields: Iterable[tuple[str, int, int, int, int, int, int]]) -> bytes:
    """fields: (name, table oid, column number, type oid, type size, type modifier, format)."""
    items = list(fields)
    parts = [_I16.pack(len(items))]
    for name, table_oid, attnum, type_oid, typlen, typmod, fmt in items:
        parts.append(cstr(name))
        parts.append(struct.pack(">IhIhih", table_oid & 0xFFFFFFFF, attnum, type_oid, typlen, typmod, fmt))
    return message(b"T", b"".join(parts))


def parameter_description(oids: list[int]) -> bytes:
    return message(b"t", _I16.pack(len(oids)) + b"".join(struct.pack(">I", o) for o in oids))


AUTH_OK = message(b"R", _I32.pack(0))
AUTH_CLEARTEXT = message(b"R", _I32.pack(3))
PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
PORTAL_SUSPENDED = message(b"s")
EMPTY_QUERY = message(b"I")


def auth_sasl(mechanisms: list[str]) -> bytes:
    return message(b"R", _I32.pack(10) + b"".join(cstr(m) for m in mechanisms) + b"\x00")


def auth_sasl_continue(data: bytes) -> bytes:
    return message(b"R", _I32.pack(11) + data)


def auth_sasl_final(data: bytes) -> bytes:
    return message(b"R", _I32.pack(12) + data)


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _I32.pack(pid) + _I32.pack(secret))


def copy_in_response(n_columns: int, binary: bool = False) -> bytes:
    fmt = 1 if binary else 0
    return message(b"G", struct.pack(">bh", fmt, n_columns) + _I16.pack(fmt) * n_columns)
