"""COPY's binary file format (PGCOPY), read incrementally for COPY ... FROM STDIN (FORMAT binary).

The stream is a header (an 11-byte signature, 32-bit flags, a header extension of stated length),
then per tuple a 16-bit field count followed by each field as a 32-bit length (-1 for NULL) and
that many bytes in the column type's binary receive format, then a trailer of -1 as field count.
CopyData messages cut this stream anywhere, so BinaryCopyParser is a state machine fed chunks:
it keeps only the bytes of the item in progress and the values of the tuple in progress (a tuple
at most MAX_TUPLE long, as sql/copy.py bounds a text record; a field that would pass that is
refused before it is buffered), decodes each field with codecs' binary decoder for its column and
hands each complete row to a callback. Writing the format is pgwire/copy_out.py's.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

from pillbug.pgwire import codecs
from pillbug.sql import types as T
from pillbug.util import errors

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no header extension
TRAILER = b"\xff\xff"
MAX_TUPLE = 16 << 20  # the fields of one tuple, together
_FLAG_OIDS = 1 << 16
_CRITICAL_FLAGS = 0xFFFF0000
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER_TAIL = struct.Struct(">ii")

# States of the parser: what the next bytes are.
_HEADER, _EXTENSION, _TUPLE, _FIELD_LENGTH, _FIELD, _DONE = range(6)


def _bad_format(message: str) -> errors.PgError:
    return errors.PgError(errors.BAD_COPY_FILE_FORMAT, message)


class BinaryCopyParser:
    """Feed it CopyData payloads; it calls insert(values) once per complete row."""

    def __init__(self, types: list[T.SQLType], insert: Callable[[list], None]) -> None:
        self.decoders = [codecs.binary_decoder(t) for t in types]
        self.insert = insert
        self.buf = bytearray()
        self.state = _HEADER
        self.skip = 0  # header extension bytes still to skip
        self.field_length = 0
        self.tuple_bytes = 0  # of the tuple in progress
        self.values: list = []

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = self._consume(buf)
        del buf[:pos]

    def finish(self) -> None:
        """The client sent CopyDone: the stream must end between tuples (with or without the
        trailer, as PostgreSQL accepts)."""
        if self.state in (_HEADER, _EXTENSION):
            raise _bad_format("COPY file signature not recognized" if self.state == _HEADER
                              else "invalid COPY file header (wrong length)")
        if self.state != _DONE and (self.state != _TUPLE or self.buf):
            raise _bad_format("unexpected EOF in COPY data")

    def _consume(self, buf: bytearray) -> int:
        """Parse what buf holds; return how many bytes were used up."""
        pos = 0
        end = len(buf)
        decoders = self.decoders
        n_columns = len(decoders)
        while True:
            state = self.state
            if state == _FIELD_LENGTH:
                if end - pos < 4:
                    return pos
                (length,) = _I32.unpack_from(buf, pos)
                pos += 4
                if length == -1:
                    self._value(None)
                    continue
                if length < 0:
                    raise _bad_format("invalid field size")
                self.tuple_bytes += length
                if self.tuple_bytes > MAX_TUPLE:
                    raise errors.program_limit_exceeded("COPY row longer than 16 MiB")
                self.field_length = length
                self.state = _FIELD
            elif state == _FIELD:
                length = self.field_length
                if end - pos < length:
                    return pos
                self._value(decoders[len(self.values)](bytes(buf[pos:pos + length])))
                pos += length
            elif state == _TUPLE:
                if end - pos < 2:
                    return pos
                (count,) = _I16.unpack_from(buf, pos)
                pos += 2
                if count == -1:
                    self.state = _DONE
                    continue
                if count != n_columns:
                    raise _bad_format(f"row field count is {count}, expected {n_columns}")
                if n_columns == 0:
                    self.insert([])
                    continue
                self.values = []
                self.tuple_bytes = 0
                self.state = _FIELD_LENGTH
            elif state == _HEADER:
                if end - pos < len(SIGNATURE) + 8:
                    if buf[pos:pos + len(SIGNATURE)] != SIGNATURE[:end - pos]:
                        raise _bad_format("COPY file signature not recognized")
                    return pos
                if buf[pos:pos + len(SIGNATURE)] != SIGNATURE:
                    raise _bad_format("COPY file signature not recognized")
                flags, extension = _HEADER_TAIL.unpack_from(buf, pos + len(SIGNATURE))
                pos += len(SIGNATURE) + 8
                if flags & _FLAG_OIDS:
                    raise _bad_format("invalid COPY file header (WITH OIDS)")
                if flags & _CRITICAL_FLAGS:
                    raise _bad_format("unrecognized critical flags in COPY file header")
                if extension < 0:
                    raise _bad_format("invalid COPY file header (missing length)")
                self.skip = extension
                self.state = _EXTENSION
            elif state == _EXTENSION:
                # Skipped as it arrives, never buffered: its length is the client's to choose.
                taken = min(self.skip, end - pos)
                pos += taken
                self.skip -= taken
                if self.skip:
                    return pos
                self.state = _TUPLE
            else:
                if end > pos:
                    raise _bad_format("received copy data after EOF marker")
                return pos

    def _value(self, value: object) -> None:
        values = self.values
        values.append(value)
        if len(values) == len(self.decoders):
            self.values = []
            self.state = _TUPLE
            self.insert(values)
        else:
            self.state = _FIELD_LENGTH
