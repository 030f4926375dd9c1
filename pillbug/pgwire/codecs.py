"""Values <-> the wire: PostgreSQL's text and binary formats, per type.

encoder(typ, fmt, tz) returns a function from a non-NULL value to bytes; decoder(typ, fmt, tz) a
function from bytes to a value (raising 22P02/22P03 on bad input). They are chosen once per
column or parameter, then called per value. The binary layouts are PostgreSQL's send/recv
functions: big-endian integers, dates and timestamps from 2000-01-01, NUMERIC in base 10000.
"""
from __future__ import annotations

import datetime
import decimal
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.datum import UTC, Interval, Json
from pillbug.sql.types import SQLType
from pillbug.util import errors

TEXT, BINARY = 0, 1
PG_EPOCH = datetime.datetime(2000, 1, 1)
PG_EPOCH_TZ = datetime.datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_ORDINAL = datetime.date(2000, 1, 1).toordinal()
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_INTERVAL = struct.Struct(">qii")

_EXACT = decimal.Context(prec=200_000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                         traps=[decimal.Inexact, decimal.InvalidOperation])
_WIDE = decimal.Context(prec=200_000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


def _utf8(s: str) -> bytes:
    return s.encode()


# ---- text format ---------------------------------------------------------------------------

def text_encoder(typ: SQLType, tz: datetime.tzinfo = UTC) -> Encoder:
    fam = typ.family
    if fam in ("int", "oid") and typ.oid not in (T.REGTYPE.oid, T.REGPROC.oid):  # these print as names
        return lambda v: str(v).encode()
    if fam == "string" or fam == "unknown":
        return _utf8
    if fam == "bool":
        return lambda v: b"t" if v else b"f"
    if fam == "decimal":
        return lambda v: datum.format_decimal(v).encode()
    fmt = datum.value_formatter(typ, tz)
    return lambda v: fmt(v).encode()


def text_decoder(typ: SQLType, tz: datetime.tzinfo = UTC) -> Decoder:
    def decode(raw: bytes) -> Any:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE,
                                 'invalid byte sequence for encoding "UTF8"') from None
        return datum.parse_text(text, typ, tz)
    if typ.family in ("string", "unknown") and not typ.width:
        def decode_text(raw: bytes) -> str:
            try:
                s = raw.decode()
            except UnicodeDecodeError:
                raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE,
                                     'invalid byte sequence for encoding "UTF8"') from None
            if "\x00" in s:
                raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE,
                                     'invalid byte sequence for encoding "UTF8": 0x00')
            return s
        return decode_text
    return decode


# ---- binary format: NUMERIC ------------------------------------------------------------------

_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN = 0x0000, 0x4000, 0xC000
_NUMERIC_PINF, _NUMERIC_NINF = 0xD000, 0xF000


def encode_numeric(v: Decimal) -> bytes:
    if v.is_nan():
        return struct.pack(">hhHH", 0, 0, _NUMERIC_NAN, 0)
    if v.is_infinite():
        return struct.pack(">hhHH", 0, 0, _NUMERIC_PINF if v > 0 else _NUMERIC_NINF, 0)
    sign, digits, exp = v.as_tuple()
    dscale = max(-exp, 0)
    digit_str = "".join(map(str, digits))
    if exp > 0:
        digit_str += "0" * exp
        exp = 0
    int_len = len(digit_str) + exp  # digits before the decimal point
    int_part = digit_str[:int_len] if int_len > 0 else ""
    frac_part = digit_str[int_len:] if int_len > 0 else "0" * (-int_len) + digit_str
    int_part = int_part.lstrip("0")
    pad_int = (-len(int_part)) % 4
    int_part = "0" * pad_int + int_part
    pad_frac = (-len(frac_part)) % 4
    frac_part = frac_part + "0" * pad_frac
    groups = [int(int_part[i:i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i:i + 4]) for i in range(0, len(frac_part), 4)]
    # strip leading and trailing zero groups
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    header = struct.pack(">hhHH", len(groups), weight, _NUMERIC_NEG if sign else _NUMERIC_POS, dscale)
    return header + struct.pack(f">{len(groups)}H", *groups)


_NUMERIC_HEADER = struct.Struct(">hhHH")
_MAX_DSCALE = 0x3FFF  # numeric_recv's limit


def decode_numeric(raw: bytes) -> Decimal:
    """numeric_recv: base-10000 digit groups, a weight (the power of 10000 of the first group),
    a sign and a display scale (digits after the decimal point, which is what keeps 1.50)."""
    if len(raw) < 8:
        raise _bad_binary("insufficient data left in message")
    ndigits, weight, sign, dscale = _NUMERIC_HEADER.unpack_from(raw)
    if sign == _NUMERIC_NAN:
        return Decimal("NaN")
    if sign == _NUMERIC_PINF:
        return Decimal("Infinity")
    if sign == _NUMERIC_NINF:
        return Decimal("-Infinity")
    if sign not in (_NUMERIC_POS, _NUMERIC_NEG) or ndigits < 0 or len(raw) != 8 + 2 * ndigits:
        raise _bad_binary("invalid sign or length in external \"numeric\" value")
    if dscale > _MAX_DSCALE:
        raise _bad_binary("invalid scale in external \"numeric\" value")
    groups = struct.unpack_from(f">{ndigits}H", raw, 8)
    if any(g > 9999 for g in groups):
        raise _bad_binary("invalid digit in external \"numeric\" value")
    # One string conversion: folding the groups into an int is quadratic in their number.
    digits = "".join([f"{g:04d}" for g in groups]) or "0"
    d = Decimal(f"{'-' if sign == _NUMERIC_NEG else ''}{digits}E{(weight - ndigits + 1) * 4}")
    if not d:
        d = Decimal(0)
    try:
        d = d.quantize(Decimal(1).scaleb(-dscale), context=_EXACT) if d.as_tuple().exponent != -dscale else d
    except decimal.InvalidOperation:
        # More digits were sent than the display scale keeps: PostgreSQL rounds them away.
        d = d.quantize(Decimal(1).scaleb(-dscale), rounding=decimal.ROUND_HALF_UP, context=_WIDE)
    return datum.check_decimal_range(d)


# ---- binary format: everything else ------------------------------------------------------------

def _date_to_days(d: datetime.date) -> int:
    return d.toordinal() - PG_EPOCH_ORDINAL


def _micros_of(ts: datetime.datetime) -> int:
    base = PG_EPOCH_TZ if ts.tzinfo is not None else PG_EPOCH
    delta = ts - base
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def binary_encoder(typ: SQLType) -> Encoder:
    fam = typ.family
    oid = typ.oid
    if fam == "int":
        if oid == 21:
            return _I16.pack
        if oid == 23:
            return _I32.pack
        return _I64.pack
    if fam == "oid":
        return lambda v: _U32.pack(v & 0xFFFFFFFF)
    if fam == "float":
        return _F32.pack if oid == 700 else _F64.pack
    if fam == "bool":
        return lambda v: b"\x01" if v else b"\x00"
    if fam in ("string", "unknown"):
        return _utf8
    if fam == "bytes":
        return bytes
    if fam == "decimal":
        return encode_numeric
    if fam == "date":
        return lambda v: _I32.pack(_date_to_days(v))
    if fam in ("timestamp", "timestamptz"):
        return lambda v: _I64.pack(_micros_of(v))
    if fam == "interval":
        return lambda v: _INTERVAL.pack(v.micros, v.days, v.months)
    if fam == "uuid":
        return lambda v: v.bytes
    if fam == "jsonb":
        if typ.oid == T.JSON.oid:
            return lambda v: v.text.encode()
        return lambda v: b"\x01" + v.text.encode()
    if fam == "time":
        return lambda v: _I64.pack(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)
    if fam == "enum":
        return lambda v: v.label.encode()  # enum_send: the label's bytes, as in text format
    if fam == "array":
        return _array_encoder(typ)
    raise errors.unimplemented(f"binary format for type {typ.crdb_name} is not supported")


def _array_encoder(typ: SQLType) -> Encoder:
    elem = typ.elem or T.STRING
    enc = binary_encoder(elem)

    def encode(v: list) -> bytes:
        has_null = any(x is None for x in v)
        out = [struct.pack(">iiI", 1 if v else 0, 1 if has_null else 0, elem.oid)]
        if v:
            out.append(struct.pack(">ii", len(v), 1))
        for x in v:
            if x is None:
                out.append(_I32.pack(-1))
            else:
                b = enc(x)
                out.append(_I32.pack(len(b)))
                out.append(b)
        return b"".join(out)
    return encode


def _bad_binary(message: str) -> errors.PgError:
    return errors.PgError(errors.INVALID_BINARY_REPRESENTATION, message)


def _checked(fmt: struct.Struct, raw: bytes) -> Any:
    if len(raw) != fmt.size:
        raise _bad_binary(f"incorrect binary data format: expected {fmt.size} bytes, got {len(raw)}")
    return fmt.unpack(raw)[0]


def _decode_date(raw: bytes) -> datetime.date:
    days = _checked(_I32, raw)
    try:
        return datetime.date.fromordinal(days + PG_EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "date out of range") from None


def _timestamp_decoder(base: datetime.datetime) -> Decoder:
    def decode(raw: bytes) -> datetime.datetime:
        micros = _checked(_I64, raw)
        try:
            return base + datetime.timedelta(microseconds=micros)
        except OverflowError:
            raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "timestamp out of range") from None
    return decode


def _decode_time(raw: bytes) -> datetime.time:
    micros = _checked(_I64, raw)
    if not 0 <= micros <= 86_400_000_000:
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "time out of range")
    if micros == 86_400_000_000:
        micros -= 1  # 24:00:00 has no Python form; the last microsecond of the day is nearest
    secs, us = divmod(micros, 1_000_000)
    return datetime.time(secs // 3600, secs // 60 % 60, secs % 60, us)


def _decode_jsonb(raw: bytes) -> Json:
    if raw[:1] != b"\x01":
        raise _bad_binary("unsupported jsonb version number")
    try:
        text = raw[1:].decode()
    except UnicodeDecodeError:
        raise _bad_encoding() from None
    return datum.parse_json(text)


def _decode_json(raw: bytes) -> Json:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise _bad_encoding() from None
    return datum.parse_json(text)


def _bad_encoding() -> errors.PgError:
    return errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"')


def binary_decoder(typ: SQLType) -> Decoder:
    """numeric_recv and friends: every malformed value is 22P03 (or the type's range error),
    never a Python exception."""
    fam = typ.family
    if fam == "int":
        def decode_int(raw: bytes) -> int:
            # Drivers send int4/int2 for INT8 parameters and vice versa: accept any width.
            n = len(raw)
            if n == 8:
                v = _I64.unpack(raw)[0]
            elif n == 4:
                v = _I32.unpack(raw)[0]
            elif n == 2:
                v = _I16.unpack(raw)[0]
            else:
                raise _bad_binary(f"incorrect binary data format: expected 2, 4 or 8 bytes, got {n}")
            return datum.check_int_range(v, typ)
        return decode_int
    if fam == "oid":
        return lambda raw: _checked(_U32, raw)
    if fam == "float":
        def decode_float(raw: bytes) -> float:
            if len(raw) == 4:
                return _F32.unpack(raw)[0]
            return _checked(_F64, raw)
        return decode_float
    if fam == "bool":
        def decode_bool(raw: bytes) -> bool:
            if len(raw) != 1:
                raise _bad_binary("incorrect binary data format in bool")
            return raw != b"\x00"
        return decode_bool
    if fam in ("string", "unknown"):
        return text_decoder(typ)
    if fam == "bytes":
        return bytes
    if fam == "decimal":
        return lambda raw: datum.round_decimal(decode_numeric(raw), typ)
    if fam == "date":
        return _decode_date
    if fam == "timestamp":
        return _timestamp_decoder(PG_EPOCH)
    if fam == "timestamptz":
        return _timestamp_decoder(PG_EPOCH_TZ)
    if fam == "interval":
        def decode_interval(raw: bytes) -> Interval:
            if len(raw) != 16:
                raise _bad_binary("incorrect binary data format in interval")
            micros, days, months = _INTERVAL.unpack(raw)
            return Interval(months, days, micros)
        return decode_interval
    if fam == "uuid":
        def decode_uuid(raw: bytes) -> uuid.UUID:
            if len(raw) != 16:
                raise _bad_binary("incorrect binary data format in uuid")
            return uuid.UUID(bytes=raw)
        return decode_uuid
    if fam == "jsonb":
        return _decode_json if typ.oid == T.JSON.oid else _decode_jsonb
    if fam == "time":
        return _decode_time
    if fam == "enum":
        return text_decoder(typ)  # enum_recv takes the label's bytes
    if fam == "array":
        return _array_decoder(typ)
    raise errors.unimplemented(f"binary format for type {typ.crdb_name} is not supported")


_ARRAY_HEADER = struct.Struct(">iiI")
_ARRAY_DIM = struct.Struct(">ii")


def _array_decoder(typ: SQLType) -> Decoder:
    elem = typ.elem or T.STRING
    dec = binary_decoder(elem)
    # Drivers label elements with a type of their choice (int4 for an INT8[] column, text for
    # a VARCHAR[]): accept the element types this array's decoder can read.
    accepted = {0, elem.oid} | _COMPATIBLE_ELEMENTS.get(elem.family, set())

    def decode(raw: bytes) -> list:
        if len(raw) < 12:
            raise _bad_binary("insufficient data left in message")
        ndim, flags, elem_oid = _ARRAY_HEADER.unpack_from(raw)
        if ndim == 0:
            if len(raw) != 12:
                raise _bad_binary("incorrect binary data format in array")
            return []
        if ndim < 0 or flags not in (0, 1):
            raise _bad_binary("invalid array flags or number of dimensions")
        if ndim != 1:
            raise errors.unimplemented("multi-dimensional arrays are not supported")
        if elem_oid not in accepted:
            raise errors.PgError(errors.DATATYPE_MISMATCH,
                                 f"binary data has array element type {elem_oid} instead of expected {elem.oid}")
        if len(raw) < 20:
            raise _bad_binary("insufficient data left in message")
        n, _lower = _ARRAY_DIM.unpack_from(raw, 12)
        if n < 0:
            raise _bad_binary("invalid array dimension")
        pos = 20
        end = len(raw)
        out = []
        for _ in range(n):
            if pos + 4 > end:
                raise _bad_binary("insufficient data left in message")
            (length,) = _I32.unpack_from(raw, pos)
            pos += 4
            if length == -1:
                out.append(None)
                continue
            if length < 0 or pos + length > end:
                raise _bad_binary("insufficient data left in message")
            out.append(dec(raw[pos:pos + length]))
            pos += length
        if pos != end:
            raise _bad_binary("incorrect binary data format in array")
        return out
    return decode


_COMPATIBLE_ELEMENTS = {
    "int": {20, 21, 23}, "float": {700, 701}, "string": {25, 1043, 1042, 19, 705},
    "timestamp": {1114}, "timestamptz": {1184}, "enum": {25, 1043, 705},
}


def encoder(typ: SQLType, fmt: int, tz: datetime.tzinfo = UTC) -> Encoder:
    return binary_encoder(typ) if fmt == BINARY else text_encoder(typ, tz)


def decoder(typ: SQLType, fmt: int, tz: datetime.tzinfo = UTC) -> Decoder:
    return binary_decoder(typ) if fmt == BINARY else text_decoder(typ, tz)


_NULL_FIELD = _I32.pack(-1)


def row_encoder(encoders: list[Callable[[Any], bytes]]) -> Callable[[tuple], bytes]:
    """A row's fields framed as DataRow and binary COPY both frame them: the field count, then
    each field's length (-1 for NULL) and bytes, each field encoded by its column's encoder."""
    count = _I16.pack(len(encoders))
    pack = _I32.pack

    def encode(row: tuple) -> bytes:
        parts = [count]
        for value, enc in zip(row, encoders):
            if value is None:
                parts.append(_NULL_FIELD)
            else:
                data = enc(value)
                parts.append(pack(len(data)))
                parts.append(data)
        return b"".join(parts)
    return encode
