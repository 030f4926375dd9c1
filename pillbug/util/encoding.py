"""Order-preserving, self-delimiting encodings of values into key bytes.

The byte order of encoded values equals the SQL order of the values, NULL first; a DESC
column is the ascending encoding with every byte inverted (valid because every encoding here
is prefix-free: no encoded value is a proper prefix of another). Equal SQL values encode to
equal bytes (1.0 and 1.00, -0.0 and 0.0), so a key holds a value's identity, not its spelling:
the row value keeps the exact datum.

Markers (the first byte) only need to be ordered among values of one SQL type, plus NULL.
This module knows nothing of tables or rows; sql.rowenc composes these into index keys.
"""
from __future__ import annotations

import math
import struct
import uuid
from decimal import Decimal

NULL = 0x00
MARKER_FLOAT_NAN = 0x03
MARKER_FLOAT = 0x04
MARKER_BYTES = 0x12
MARKER_STRING = 0x13
MARKER_DEC_NAN = 0x14
MARKER_DEC_NEG_INF = 0x15
MARKER_DEC_NEG = 0x16
MARKER_DEC_ZERO = 0x17
MARKER_DEC_POS = 0x18
MARKER_DEC_POS_INF = 0x19
MARKER_UUID = 0x1A
INT_MIN = 0x80  # markers 0x80..0x87: negative ints of 8..1 bytes
INT_ZERO = 0x88  # markers 0x88..0xf5: the ints 0..109 in one byte
INT_SMALL = 109
INT_MAX = 0xFD  # markers 0xf6..0xfd: positive ints of 1..8 bytes

_DOUBLE = struct.Struct(">d")
_U64 = struct.Struct(">Q")
_INVERT = bytes(255 - i for i in range(256))

NULL_ASC = b"\x00"
NULL_DESC = b"\xff"


def invert(encoded: bytes) -> bytes:
    """The descending form of an ascending encoding."""
    return encoded.translate(_INVERT)


def encode_int(v: int) -> bytes:
    """A signed integer (int64 range) in 1 to 9 bytes; small non-negative ints take one byte."""
    if 0 <= v <= INT_SMALL:
        return bytes((INT_ZERO + v,))
    if v > 0:
        n = (v.bit_length() + 7) >> 3
        return bytes((INT_ZERO + INT_SMALL + n,)) + v.to_bytes(n, "big")
    n = ((~v).bit_length() + 8) >> 3  # bytes to hold v in two's complement, at least 1
    return bytes((INT_ZERO - n,)) + (v & ((1 << (8 * n)) - 1)).to_bytes(n, "big")


def decode_int(buf: bytes, pos: int) -> tuple[int, int]:
    m = buf[pos]
    if INT_ZERO <= m <= INT_ZERO + INT_SMALL:
        return m - INT_ZERO, pos + 1
    if m > INT_ZERO + INT_SMALL:
        n = m - INT_ZERO - INT_SMALL
        return int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), pos + 1 + n
    if INT_MIN <= m < INT_ZERO:
        n = INT_ZERO - m
        raw = int.from_bytes(buf[pos + 1:pos + 1 + n], "big")
        return raw - (1 << (8 * n)), pos + 1 + n
    raise ValueError(f"not an int marker: {m:#x}")


def encode_float(v: float) -> bytes:
    if v != v:
        return b"\x03"
    if v == 0.0:
        v = 0.0  # -0.0 equals 0.0
    (bits,) = _U64.unpack(_DOUBLE.pack(v))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return b"\x04" + _U64.pack(bits)


def decode_float(buf: bytes, pos: int) -> tuple[float, int]:
    if buf[pos] == MARKER_FLOAT_NAN:
        return math.nan, pos + 1
    (bits,) = _U64.unpack_from(buf, pos + 1)
    bits = bits ^ (1 << 63) if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return _DOUBLE.unpack(_U64.pack(bits))[0], pos + 9


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _unescape(buf: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        end = buf.index(b"\x00", pos)
        out += buf[pos:end]
        if buf[end + 1] == 0x01:
            return bytes(out), end + 2
        out.append(0)
        pos = end + 2


def encode_string(v: str) -> bytes:
    return b"\x13" + _escape(v.encode())


def encode_bytes(v: bytes) -> bytes:
    return b"\x12" + _escape(bytes(v))


def decode_string(buf: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _unescape(buf, pos + 1)
    return raw.decode(), pos


def decode_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    return _unescape(buf, pos + 1)


def encode_decimal(v: Decimal) -> bytes:
    """A decimal as sign, decimal exponent and digit string, so that byte order is numeric order.

    A finite nonzero value is 0.d1d2d3... x 10^e with d1 != 0; a larger e is a larger magnitude,
    and for equal e the digit strings compare lexicographically (the terminator sorts first).
    Negative values invert exponent and digits so that a larger magnitude sorts first.
    """
    if v.is_nan():
        return b"\x14"
    if v.is_infinite():
        return b"\x15" if v < 0 else b"\x19"
    if not v:
        return b"\x17"
    sign, digits, exp = v.as_tuple()
    digit_str = "".join(map(str, digits)).rstrip("0")
    lead = len(digit_str) - len(digit_str.lstrip("0"))
    digit_str = digit_str[lead:]
    e = len(digits) + exp - lead
    if not sign:
        return b"\x18" + encode_int(e) + digit_str.encode() + b"\x00"
    return b"\x16" + invert(encode_int(e)) + invert(digit_str.encode()) + b"\xff"


def decode_decimal(buf: bytes, pos: int) -> tuple[Decimal, int]:
    m = buf[pos]
    if m == MARKER_DEC_NAN:
        return Decimal("NaN"), pos + 1
    if m == MARKER_DEC_NEG_INF:
        return Decimal("-Infinity"), pos + 1
    if m == MARKER_DEC_POS_INF:
        return Decimal("Infinity"), pos + 1
    if m == MARKER_DEC_ZERO:
        return Decimal(0), pos + 1
    if m == MARKER_DEC_POS:
        e, pos = decode_int(buf, pos + 1)
        end = buf.index(b"\x00", pos)
        digits = buf[pos:end].decode()
        return _decimal(0, digits, e), end + 1
    # negative: the exponent and digits were inverted
    n = _int_width(invert(buf[pos + 1:pos + 2])[0])
    e, _ = decode_int(invert(buf[pos + 1:pos + 1 + n]), 0)
    pos += 1 + n
    end = buf.index(b"\xff", pos)
    digits = invert(buf[pos:end]).decode()
    return _decimal(1, digits, e), end + 1


def _decimal(sign: int, digits: str, e: int) -> Decimal:
    # 0.d1d2...dn x 10^e, built exactly (no arithmetic, so no context rounding)
    return Decimal((sign, tuple(int(c) for c in digits), e - len(digits)))


def _int_width(marker: int) -> int:
    if INT_ZERO <= marker <= INT_ZERO + INT_SMALL:
        return 1
    if marker > INT_ZERO + INT_SMALL:
        return 1 + marker - INT_ZERO - INT_SMALL
    return 1 + INT_ZERO - marker


def encode_uuid(v: uuid.UUID) -> bytes:
    return b"\x1a" + v.bytes


def decode_uuid(buf: bytes, pos: int) -> tuple[uuid.UUID, int]:
    return uuid.UUID(bytes=bytes(buf[pos + 1:pos + 17])), pos + 17


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with prefix.

    Every key Pillbug builds starts with a table id (marker at most 0xfd), so a prefix is never
    all 0xff bytes and always has such an end.
    """
    stripped = prefix.rstrip(b"\xff")
    assert stripped, "a key prefix of only 0xff bytes has no end"
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def pretty_key(key: bytes | None) -> str:
    """A key as /Table/<table id>/<index id>/<values...>, decoding what it can, for messages."""
    if key is None:
        return "?"
    parts: list[str] = []
    pos = 0
    try:
        while pos < len(key):
            m = key[pos]
            if m == NULL:
                parts.append("NULL")
                pos += 1
            elif INT_MIN <= m <= INT_MAX:
                v, pos = decode_int(key, pos)
                parts.append(str(v))
            elif m in (MARKER_FLOAT, MARKER_FLOAT_NAN):
                f, pos = decode_float(key, pos)
                parts.append(repr(f))
            elif m == MARKER_STRING:
                s, pos = decode_string(key, pos)
                parts.append(repr(s))
            elif m == MARKER_BYTES:
                b, pos = decode_bytes(key, pos)
                parts.append(repr(b))
            elif MARKER_DEC_NAN <= m <= MARKER_DEC_POS_INF:
                d, pos = decode_decimal(key, pos)
                parts.append(str(d))
            elif m == MARKER_UUID:
                u, pos = decode_uuid(key, pos)
                parts.append(str(u))
            else:
                parts.append(key[pos:].hex())
                break
    except (ValueError, IndexError):
        parts.append(key[pos:].hex())
    if parts:
        parts[0] = "Table/" + parts[0]
    return "/" + "/".join(parts)
