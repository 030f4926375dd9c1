"""Values of SQL types as Python objects, and their text forms.

  INT*        int                     FLOAT*     float
  DECIMAL     decimal.Decimal         STRING     str
  BOOL        bool                    BYTES      bytes
  DATE        datetime.date           TIME       datetime.time
  TIMESTAMP   naive datetime          TIMESTAMPTZ  aware datetime (UTC)
  INTERVAL    Interval                UUID       uuid.UUID
  JSONB       Json                    arrays     list
  NULL        None

parse_text() is each type's input function (text -> value, as a string literal or a text-format
parameter is read) and format_text() its output function (value -> text, as the wire protocol's
text format and casts to STRING print it), following PostgreSQL's formats. This module knows
nothing of the wire protocol's framing or of storage.
"""
from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.types import SQLType
from pillbug.util import errors

# Decimal arithmetic: wide enough for NUMERIC's usual range; exact for sums and products of
# stored values (CockroachDB uses 2000 digits of precision for intermediate results).
DECIMAL_CONTEXT = decimal.Context(prec=1000, Emax=100000, Emin=-100000,
                                  traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
decimal.setcontext(DECIMAL_CONTEXT)

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1)
EPOCH_TZ = datetime.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE = datetime.date(1970, 1, 1)
MICROS_PER_DAY = 86_400_000_000
INT_RANGES = {16: (-(1 << 15), (1 << 15) - 1), 32: (-(1 << 31), (1 << 31) - 1),
              64: (-(1 << 63), (1 << 63) - 1)}


class RegClass(int):
    """A REGCLASS value: the relation's OID, printed as its name (as PostgreSQL prints it), so
    that `conrelid::regclass` shows a table, while comparing and hashing as the OID does."""

    def __new__(cls, oid: int, name: str) -> RegClass:
        obj = super().__new__(cls, oid)
        obj.name = name
        return obj

    def __str__(self) -> str:
        return self.name


class Interval:
    """An interval as PostgreSQL keeps it: months, days and microseconds, each with a sign."""

    __slots__ = ("months", "days", "micros")

    def __init__(self, months: int = 0, days: int = 0, micros: int = 0) -> None:
        self.months = months
        self.days = days
        self.micros = micros

    def _span(self) -> int:
        # PostgreSQL compares intervals by their span with 30-day months and 24-hour days.
        return (self.months * 30 + self.days) * MICROS_PER_DAY + self.micros

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interval) and self._span() == other._span()

    def __hash__(self) -> int:
        return hash(self._span())

    def __lt__(self, other: Interval) -> bool:
        return self._span() < other._span()

    def __le__(self, other: Interval) -> bool:
        return self._span() <= other._span()

    def __gt__(self, other: Interval) -> bool:
        return self._span() > other._span()

    def __ge__(self, other: Interval) -> bool:
        return self._span() >= other._span()

    def __neg__(self) -> Interval:
        return Interval(-self.months, -self.days, -self.micros)

    def __add__(self, other: Interval) -> Interval:
        return Interval(self.months + other.months, self.days + other.days, self.micros + other.micros)

    def __sub__(self, other: Interval) -> Interval:
        return Interval(self.months - other.months, self.days - other.days, self.micros - other.micros)

    def scale(self, factor: float | int | Decimal) -> Interval:
        if isinstance(factor, int):
            return Interval(self.months * factor, self.days * factor, self.micros * factor)
        f = float(factor)
        months = self.months * f
        whole_months = int(months)
        days = self.days * f + (months - whole_months) * 30
        whole_days = int(days)
        micros = self.micros * f + (days - whole_days) * MICROS_PER_DAY
        return Interval(whole_months, whole_days, round(micros))

    def total_seconds(self) -> float:
        return self._span() / 1_000_000

    def __repr__(self) -> str:
        return f"Interval({self.months}, {self.days}, {self.micros})"

    def __str__(self) -> str:
        return format_interval(self)


class Json:
    """A JSONB value. Wrapping keeps JSON null apart from SQL NULL (None)."""

    __slots__ = ("value", "_text")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _dump_json(self.value, False)
        return self._text

    def __eq__(self, other: object) -> bool:
        # numbers compare by value: '1'::JSONB = '1.0'::JSONB
        return isinstance(other, Json) and _dump_json(self.value, True) == _dump_json(other.value, True)

    def __hash__(self) -> int:
        return hash(_dump_json(self.value, True))

    def _order(self) -> tuple:
        return _json_order(self.value)

    def __lt__(self, other: Json) -> bool:
        return self._order() < other._order()

    def __gt__(self, other: Json) -> bool:
        return self._order() > other._order()

    def __le__(self, other: Json) -> bool:
        return self._order() <= other._order()

    def __ge__(self, other: Json) -> bool:
        return self._order() >= other._order()

    def __repr__(self) -> str:
        return f"Json({self.text})"


def _dump_json(v: Any, canonical: bool) -> str:
    """JSON text with sorted keys; numbers (Decimal from parsing) as written, or normalized."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, float, Decimal)):
        d = v if isinstance(v, Decimal) else Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        if canonical:
            d = d.normalize() if d else Decimal(0)
        return format(d, "f")
    if isinstance(v, list):
        return "[" + ", ".join(_dump_json(x, canonical) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_dump_json(v[k], canonical)}"
                           for k in sorted(v)) + "}"


def _json_order(v: Any) -> tuple:
    # CockroachDB's JSON ordering: null < strings < numbers < false < true < arrays < objects
    if v is None:
        return (0,)
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, bool):
        return (3, v)
    if isinstance(v, (int, float, Decimal)):
        return (2, v)
    if isinstance(v, list):
        return (4, len(v), [_json_order(x) for x in v])
    return (5, len(v), sorted((k, _json_order(x)) for k, x in v.items()))


# ---- output --------------------------------------------------------------------------------

def format_float(v: float) -> str:
    """PostgreSQL's float8out: the shortest digits that round-trip, exponential when the
    decimal exponent is below -4 or at least 15 (Python's repr switches at 16)."""
    if v != v:
        return "NaN"
    if v == math.inf:
        return "Infinity"
    if v == -math.inf:
        return "-Infinity"
    r = repr(v)
    if "e" in r:
        return r
    if r.endswith(".0"):
        r = r[:-2]
    if abs(v) >= 1e15:
        sign = "-" if r.startswith("-") else ""
        digits = r.lstrip("-")
        mantissa = digits[0] + ("." + digits[1:].rstrip("0") if digits[1:].rstrip("0") else "")
        return f"{sign}{mantissa}e+{len(digits) - 1:02d}"
    return r


_F32 = struct.Struct(">f")


def format_float4(v: float) -> str:
    """float4out: the shortest digits that read back as the same 32-bit float (a FLOAT4 value
    is kept as a Python float holding a 32-bit value; its repr would show the widening)."""
    if v != v or v in (math.inf, -math.inf):
        return format_float(v)
    try:
        target = _F32.pack(v)
    except OverflowError:
        return format_float(v)
    for precision in range(1, 10):
        candidate = float(f"{v:.{precision}g}")
        try:
            if _F32.pack(candidate) == target:
                break
        except OverflowError:  # rounded up past the largest float4
            continue
    else:
        candidate = v
    sign, digit_tuple, exponent = Decimal(repr(candidate)).normalize().as_tuple()
    adjusted = exponent + len(digit_tuple) - 1  # type: ignore[operator]
    if -4 <= adjusted < 6 or not candidate:
        return format_float(candidate)
    # Exponential from 1e+06 on, where float4out switches (FLT_DIG), like float8out at 1e+15.
    digits = "".join(map(str, digit_tuple))
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if adjusted < 0 else '+'}{abs(adjusted):02d}"


def format_decimal(v: Decimal) -> str:
    if v.is_nan():
        return "NaN"
    if v.is_infinite():
        return "Infinity" if v > 0 else "-Infinity"
    return format(v, "f")


def format_date(v: datetime.date) -> str:
    if v.year < 1:
        return f"{1 - v.year:04d}-{v.month:02d}-{v.day:02d} BC"
    return v.isoformat()


def _format_time_part(v: datetime.datetime | datetime.time) -> str:
    s = f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if v.microsecond:
        s += f".{v.microsecond:06d}".rstrip("0")
    return s


def format_timestamp(v: datetime.datetime) -> str:
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {_format_time_part(v)}"


def format_timestamptz(v: datetime.datetime, tz: datetime.tzinfo = UTC) -> str:
    local = v.astimezone(tz)
    offset = local.utcoffset() or datetime.timedelta(0)
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hh, rem = divmod(total, 3600)
    mm, ss = divmod(rem, 60)
    off = f"{sign}{hh:02d}"
    if mm or ss:
        off += f":{mm:02d}"
    if ss:
        off += f":{ss:02d}"
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d} {_format_time_part(local)}{off}"


def format_time(v: datetime.time) -> str:
    return _format_time_part(v)


def format_interval(v: Interval) -> str:
    parts = []
    years = int(v.months / 12)
    months = v.months - years * 12
    if years:
        parts.append(f"{years} year{'s' if years != 1 else ''}")
    if months:
        parts.append(f"{months} mon{'s' if months != 1 else ''}")
    if v.days:
        parts.append(f"{v.days} day{'s' if v.days != 1 else ''}")
    if v.micros or not parts:
        micros = abs(v.micros)
        secs, frac = divmod(micros, 1_000_000)
        hh, rem = divmod(secs, 3600)
        mm, ss = divmod(rem, 60)
        t = f"{'-' if v.micros < 0 else ''}{hh:02d}:{mm:02d}:{ss:02d}"
        if frac:
            t += f".{frac:06d}".rstrip("0")
        parts.append(t)
    return " ".join(parts)


def format_bytes(v: bytes) -> str:
    return "\\x" + bytes(v).hex()


def format_bool(v: bool) -> str:
    return "t" if v else "f"


def format_array(v: list, elem: SQLType) -> str:
    out = []
    for x in v:
        if x is None:
            out.append("NULL")
            continue
        s = format_text(x, elem)
        if s == "" or any(c in s for c in ' ,{}"\\') or s.upper() == "NULL":
            s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(s)
    return "{" + ",".join(out) + "}"


# PostgreSQL's pg_proc OIDs of the type I/O functions that pg_type's regproc columns name; a
# regproc prints as its function's name ("-" for none), as in PostgreSQL, so that a client's
# typinput = 'array_in'::regproc (pgjdbc) or a reader of typinput sees enum_in, array_in, ...
REGPROC_NAMES = {0: "-", 750: "array_in", 751: "array_out", 2400: "array_recv", 2401: "array_send",
                 3504: "enum_in", 3505: "enum_out", 3532: "enum_recv", 3533: "enum_send"}


# The builtins' names by OID, registered once the builtins are (sem/pg_builtins.py), so that
# 'upper'::regproc prints as upper.
_BUILTIN_PROC_NAMES: dict[int, str] = {}


def register_proc_names(names: dict[int, str]) -> None:
    _BUILTIN_PROC_NAMES.update(names)


def format_regproc(v: int) -> str:
    name = REGPROC_NAMES.get(v) or _BUILTIN_PROC_NAMES.get(v)
    return str(v) if name is None else name


def format_text(v: Any, typ: SQLType, tz: datetime.tzinfo = UTC) -> str:
    """The PostgreSQL text output of a non-NULL value of type typ."""
    fam = typ.family
    if typ.oid == T.REGTYPE.oid:
        return format_regtype(v)
    if typ.oid == 24:  # regproc
        return format_regproc(v)
    if fam == "int":
        return str(int(v))
    if fam == "oid":
        return str(v) if isinstance(v, RegClass) else str(int(v))
    if fam == "string":
        return v
    if fam == "float":
        return format_float4(v) if typ.oid == 700 else format_float(v)
    if fam == "decimal":
        return format_decimal(v)
    if fam == "bool":
        return "t" if v else "f"
    if fam == "bytes":
        return format_bytes(v)
    if fam == "timestamptz":
        return format_timestamptz(v, tz)
    if fam == "timestamp":
        return format_timestamp(v)
    if fam == "date":
        return format_date(v)
    if fam == "interval":
        return format_interval(v)
    if fam == "uuid":
        return str(v)
    if fam == "jsonb":
        return v.text
    if fam == "array":
        if typ.oid in (22, 30):  # int2vector, oidvector print space-separated
            return " ".join(str(x) for x in v)
        return format_array(v, typ.elem or T.STRING)
    if fam == "time":
        return format_time(v)
    if fam == "record" and typ.fields:
        return format_record(v, typ)
    return str(v)


def format_record(v: tuple, typ: SQLType) -> str:
    """A record's text form, as PostgreSQL's record_out writes it: (1,"a b",)."""
    out = []
    for x, (_, ftyp) in zip(v, typ.fields):
        if x is None:
            out.append("")
            continue
        s = format_text(x, ftyp)
        if s == "" or any(c in s for c in ' ,()"\\') or any(c.isspace() for c in s):
            s = '"' + s.replace("\\", "\\\\").replace('"', '""') + '"'
        out.append(s)
    return "(" + ",".join(out) + ")"


def format_regtype(oid: int) -> str:
    """A regtype's text form: the type's name, as PostgreSQL's regtypeout prints it (bigint,
    character varying, text[], trigger); an OID no type has prints as the number."""
    typ = T.BY_OID.get(int(oid))
    return str(int(oid)) if typ is None else typ.pg_name


def value_formatter(typ: SQLType, tz: datetime.tzinfo = UTC) -> Callable[[Any], str]:
    """A fast text formatter for one type (used once per column, then per value)."""
    fam = typ.family
    if typ.oid == T.REGTYPE.oid:
        return format_regtype
    if typ.oid == 24:  # regproc
        return format_regproc
    if fam in ("int", "oid"):
        return str
    if fam == "string":
        return _identity
    if fam == "decimal":
        return format_decimal
    if fam == "bool":
        return format_bool
    if fam == "float":
        return format_float4 if typ.oid == 700 else format_float
    if fam == "timestamptz":
        return lambda v: format_timestamptz(v, tz)
    return lambda v: format_text(v, typ, tz)


def _identity(v: Any) -> Any:
    return v


# ---- input ---------------------------------------------------------------------------------

def _bad(text: str, typ: SQLType) -> errors.PgError:
    return errors.invalid_text(f'could not parse "{text}" as type {typ.display}')


def parse_int(text: str, typ: SQLType = T.INT8) -> int:
    s = text.strip()
    # Python's int() also takes other scripts' digits; SQL takes ASCII only. Anything longer
    # than 40 characters is out of range anyway, and int() of a huge string is slow.
    if not s.isascii():
        raise _bad(text, typ)
    if len(s) > 40 and s.lstrip("+-").isdigit():
        check_int_range(1 << 64, typ)  # raises
    try:
        v = int(s)
    except ValueError:
        raise _bad(text, typ) from None
    return check_int_range(v, typ)


def check_int_range(v: int, typ: SQLType) -> int:
    lo, hi = INT_RANGES.get(typ.width or 64, INT_RANGES[64])
    if not lo <= v <= hi:
        if typ.width == 64 or not typ.width:
            raise errors.out_of_range("integer out of range")
        raise errors.out_of_range(f"integer out of range for type {typ.display}")
    return v


def parse_float(text: str, typ: SQLType = T.FLOAT8) -> float:
    s = text.strip().lower()
    if not s.isascii():
        raise _bad(text, typ)
    if s in ("nan",):
        return math.nan
    if s in ("infinity", "+infinity", "inf", "+inf"):
        return math.inf
    if s in ("-infinity", "-inf"):
        return -math.inf
    try:
        v = float(s)
    except ValueError:
        raise _bad(text, typ) from None
    if typ.oid == 700 and not math.isinf(v):
        try:
            narrowed = to_float4(v)
        except errors.PgError:
            narrowed = math.inf
        # Too big or too small (but not zero) for a float4: out of range, as PostgreSQL says.
        v = math.inf if narrowed == 0.0 and v != 0.0 else narrowed
    # Python reads 1e400 as inf and 1e-400 as 0; PostgreSQL calls both out of range.
    if math.isinf(v) or (v == 0.0 and any(c in "123456789" for c in s.partition("e")[0])):
        raise errors.out_of_range(f'"{text}" is out of range for type {typ.display}')
    return v


def to_float4(v: float) -> float:
    """v rounded to the nearest 32-bit float (how a FLOAT4 value is kept); 22003 past its range."""
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:
        raise errors.out_of_range("float4 value out of range") from None


def parse_decimal(text: str, typ: SQLType = T.DECIMAL) -> Decimal:
    s = text.strip()
    low = s.lower()
    if low in ("infinity", "+infinity", "inf"):
        return Decimal("Infinity")
    if low in ("-infinity", "-inf"):
        return Decimal("-Infinity")
    if not s.isascii():
        raise _bad(text, typ)
    try:
        d = Decimal(s)
    except decimal.InvalidOperation:
        raise _bad(text, typ) from None
    if d.is_nan():
        if d.is_snan() or low.lstrip("+-") != "nan":
            raise _bad(text, typ)
        return Decimal("NaN")
    return check_decimal_range(d)


# NUMERIC's limits in PostgreSQL: 131072 digits before the decimal point, 16383 after. They
# also bound the text a value prints as, which a client must not be able to make gigantic.
MAX_DECIMAL_ADJUSTED = 131071
MIN_DECIMAL_EXPONENT = -16383


def check_decimal_range(d: Decimal) -> Decimal:
    if d.is_finite():
        if d and d.adjusted() > MAX_DECIMAL_ADJUSTED:
            raise errors.out_of_range("value overflows numeric format")
        if d.as_tuple().exponent < MIN_DECIMAL_EXPONENT:  # type: ignore[operator]
            raise errors.out_of_range("value overflows numeric format")
        if not d and d.is_signed():
            return d.copy_abs()  # -0 is 0, as in PostgreSQL
    return d


_TRUE = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}


def parse_bool(text: str) -> bool:
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise errors.invalid_text(f'could not parse "{text}" as type bool: invalid bool value')


def parse_bytes(text: str) -> bytes:
    if text.startswith("\\x") or text.startswith("\\X"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise errors.invalid_text(f'could not parse "{text}" as type bytes') from None
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        c = raw[i]
        if c == 0x5C:  # backslash: \\ or \ooo
            if raw[i + 1:i + 2] == b"\\":
                out.append(0x5C)
                i += 2
                continue
            octal = raw[i + 1:i + 4]
            # \ooo names one byte, so its first digit is 0-3 (\400 would be 256), as in PostgreSQL
            if len(octal) == 3 and 0x30 <= octal[0] <= 0x33 and all(0x30 <= b <= 0x37 for b in octal[1:]):
                out.append(int(octal, 8))
                i += 4
                continue
            raise errors.invalid_text(f'could not parse "{text}" as type bytes: invalid escape')
        out.append(c)
        i += 1
    return bytes(out)


_DATE_RE = re.compile(r"^\s*(\d{1,7})-(\d{1,2})-(\d{1,2})(?:\s*(BC|AD))?\s*$", re.I)
_TS_RE = re.compile(
    r"^\s*(\d{1,7})-(\d{1,2})-(\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|UTC|[+-]\d{1,2}(?::?\d{2}(?::?\d{2})?)?)?\s*(BC|AD)?\s*$", re.I)


def parse_date(text: str) -> datetime.date:
    m = _DATE_RE.match(text)
    try:
        if m:
            year = int(m.group(1))
            if m.group(4) and m.group(4).upper() == "BC":
                year = 1 - year
            try:
                return datetime.date(year, int(m.group(2)), int(m.group(3)))
            except ValueError:
                raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW,
                                     f'parsing as type date: field value out of range: "{text}"') from None
        low = text.strip().lower()
        if low == "epoch":
            return EPOCH_DATE
        if low in ("today", "now"):
            return datetime.datetime.now(UTC).date()
        ts = _parse_ts(text, T.DATE)
        return ts.date()
    except ValueError:
        raise errors.PgError(errors.INVALID_DATETIME_FORMAT,
                             f'parsing as type date: could not parse "{text}"') from None


def _parse_ts(text: str, typ: SQLType) -> datetime.datetime:
    m = _TS_RE.match(text)
    if not m:
        low = text.strip().lower()
        if low == "epoch":
            return EPOCH_TZ if typ.family == "timestamptz" else EPOCH
        if low == "now":
            now = datetime.datetime.now(UTC)
            return now if typ.family == "timestamptz" else now.replace(tzinfo=None)
        try:
            return datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise errors.PgError(errors.INVALID_DATETIME_FORMAT,
                                 f'parsing as type {typ.display}: could not parse "{text}"') from None
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if m.group(9) and m.group(9).upper() == "BC":
        year = 1 - year
    hour = int(m.group(4) or 0)
    minute = int(m.group(5) or 0)
    second = int(m.group(6) or 0)
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    if frac and len(frac) > 6 and int(frac[6]) >= 5:
        micro += 1
    tz = None
    zone = m.group(8)
    if zone:
        if zone.upper() in ("Z", "UTC"):
            tz = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            hh = int(digits[:2]) if len(digits) >= 2 and len(digits) != 1 else int(digits[:1])
            if len(digits) in (1, 3):  # e.g. +5 or +530
                hh = int(digits[: len(digits) - 2] or digits)
                rest = digits[len(digits) - 2:] if len(digits) == 3 else ""
            else:
                rest = digits[2:]
            mm = int(rest[:2]) if rest[:2] else 0
            ss = int(rest[2:4]) if rest[2:4] else 0
            tz = datetime.timezone(sign * datetime.timedelta(hours=hh, minutes=mm, seconds=ss))
    try:
        ts = datetime.datetime(year, month, day, hour, minute, second) + datetime.timedelta(microseconds=micro)
    except ValueError:
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW,
                             f'parsing as type {typ.display}: field value out of range: "{text}"') from None
    if tz is not None:
        ts = ts.replace(tzinfo=tz)
    return ts


def parse_timestamp(text: str) -> datetime.datetime:
    ts = _parse_ts(text, T.TIMESTAMP)
    # A zone on a TIMESTAMP literal is ignored, as PostgreSQL does.
    return ts.replace(tzinfo=None)


def parse_timestamptz(text: str, session_tz: datetime.tzinfo = UTC) -> datetime.datetime:
    ts = _parse_ts(text, T.TIMESTAMPTZ)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=session_tz)
    return ts.astimezone(UTC)


def parse_time(text: str) -> datetime.time:
    try:
        return datetime.time.fromisoformat(text.strip())
    except ValueError:
        raise errors.PgError(errors.INVALID_DATETIME_FORMAT,
                             f'parsing as type time: could not parse "{text}"') from None


_INTERVAL_UNITS = {
    "microsecond": (0, 0, 1), "microseconds": (0, 0, 1), "us": (0, 0, 1), "usec": (0, 0, 1),
    "usecs": (0, 0, 1),
    "millisecond": (0, 0, 1000), "milliseconds": (0, 0, 1000), "ms": (0, 0, 1000), "msec": (0, 0, 1000),
    "msecs": (0, 0, 1000),
    "second": (0, 0, 1_000_000), "seconds": (0, 0, 1_000_000), "s": (0, 0, 1_000_000),
    "sec": (0, 0, 1_000_000), "secs": (0, 0, 1_000_000),
    "minute": (0, 0, 60_000_000), "minutes": (0, 0, 60_000_000), "m": (0, 0, 60_000_000),
    "min": (0, 0, 60_000_000), "mins": (0, 0, 60_000_000),
    "hour": (0, 0, 3_600_000_000), "hours": (0, 0, 3_600_000_000), "h": (0, 0, 3_600_000_000),
    "hr": (0, 0, 3_600_000_000), "hrs": (0, 0, 3_600_000_000),
    "day": (0, 1, 0), "days": (0, 1, 0), "d": (0, 1, 0),
    "week": (0, 7, 0), "weeks": (0, 7, 0), "w": (0, 7, 0),
    "month": (1, 0, 0), "months": (1, 0, 0), "mon": (1, 0, 0), "mons": (1, 0, 0),
    "year": (12, 0, 0), "years": (12, 0, 0), "y": (12, 0, 0), "yr": (12, 0, 0), "yrs": (12, 0, 0),
    "decade": (120, 0, 0), "decades": (120, 0, 0), "century": (1200, 0, 0),
    "centuries": (1200, 0, 0), "millennium": (12000, 0, 0), "millennia": (12000, 0, 0),
}
_INTERVAL_TOKEN = re.compile(r"\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([a-zA-Z]+)?")
_INTERVAL_CLOCK = re.compile(r"\s*([+-])?(\d+):(\d{1,2})(?::(\d{1,2})(?:\.(\d+))?)?\s*")
_ISO_INTERVAL = re.compile(
    r"^P(?:(-?\d+(?:\.\d+)?)Y)?(?:(-?\d+(?:\.\d+)?)M)?(?:(-?\d+(?:\.\d+)?)W)?(?:(-?\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(-?\d+(?:\.\d+)?)H)?(?:(-?\d+(?:\.\d+)?)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$", re.I)


def parse_interval(text: str, default_unit: str = "second") -> Interval:
    s = text.strip()
    if not s:
        raise errors.PgError(errors.INVALID_DATETIME_FORMAT, f'could not parse "{text}" as type interval')
    m = _ISO_INTERVAL.match(s)
    if m and s.upper() != "P":
        return _iso_interval(m)
    months = days = 0
    micros: float = 0  # stays an exact int unless a fraction appears
    ago = False
    low = s.lower()
    if low.endswith(" ago"):
        ago = True
        low = low[:-4]
    low = low.lstrip("@ ")
    pos = 0
    try:
        while pos < len(low):
            cm = _INTERVAL_CLOCK.match(low, pos)
            if cm and cm.end() > pos and ":" in cm.group(0):
                sign = -1 if cm.group(1) == "-" else 1
                h, mi = int(cm.group(2)), int(cm.group(3))
                sec = int(cm.group(4) or 0)
                frac = cm.group(5) or ""
                us = int((frac + "000000")[:6]) if frac else 0
                micros += sign * ((h * 3600 + mi * 60 + sec) * 1_000_000 + us)
                pos = cm.end()
                continue
            tm = _INTERVAL_TOKEN.match(low, pos)
            if not tm or tm.end() == pos:
                raise ValueError
            number = float(tm.group(1)) if ("." in tm.group(1)) else int(tm.group(1))
            unit = tm.group(2) or default_unit
            if unit not in _INTERVAL_UNITS:
                raise ValueError
            um, ud, uus = _INTERVAL_UNITS[unit]
            if isinstance(number, float):
                if um:
                    total_months = number * um
                    months += int(total_months)
                    frac_days = (total_months - int(total_months)) * 30
                    days += int(frac_days)
                    micros += (frac_days - int(frac_days)) * MICROS_PER_DAY
                elif ud:
                    total_days = number * ud
                    days += int(total_days)
                    micros += (total_days - int(total_days)) * MICROS_PER_DAY
                else:
                    micros += number * uus
            else:
                months += number * um
                days += number * ud
                micros += number * uus
            pos = tm.end()
    except ValueError:
        raise errors.PgError(errors.INVALID_DATETIME_FORMAT,
                             f'could not parse "{text}" as type interval') from None
    iv = check_interval_range(Interval(months, days, round(micros)))
    return -iv if ago else iv


def check_interval_range(iv: Interval) -> Interval:
    """Intervals keep PostgreSQL's field widths (32-bit months and days, 64-bit microseconds)."""
    if not (-(1 << 31) <= iv.months < 1 << 31 and -(1 << 31) <= iv.days < 1 << 31
            and -(1 << 63) <= iv.micros < 1 << 63):
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "interval out of range")
    return iv


def _iso_interval(m: re.Match) -> Interval:
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    months = y * 12 + mo
    days = w * 7 + d + (months - int(months)) * 30
    micros = ((h * 60 + mi) * 60 + s) * 1_000_000 + (days - int(days)) * MICROS_PER_DAY
    return check_interval_range(Interval(int(months), int(days), round(micros)))


def parse_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise errors.invalid_text(f'could not parse "{text}" as type uuid: uuid: incorrect UUID length: {text}') from None


def _json_number(text: str) -> Any:
    return check_decimal_range(Decimal(text))


def _json_int(text: str) -> int | Decimal:
    # int() refuses more than 4300 digits; JSON numbers are arbitrary-precision.
    return int(text) if len(text) < 1000 else _json_number(text)


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Json:
    try:
        value = Json(json.loads(text, parse_float=_json_number, parse_int=_json_int,
                                parse_constant=_json_constant))
        value.text.encode()  # a lone surrogate escape (\ud800) has no UTF-8 form
    except (ValueError, RecursionError) as exc:
        raise errors.invalid_text(f"could not parse JSON: {exc}") from None
    return value


def parse_array(text: str, elem: SQLType, tz: datetime.tzinfo = UTC) -> list:
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise errors.invalid_text(f'could not parse "{text}" as type {elem.display}[]: '
                                  f'array must be enclosed in {{ and }}')
    items: list = []
    i, n = 1, len(s) - 1
    while i < n:
        while i < n and s[i] in " \t\n":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            j = i + 1
            buf = []
            while j < n and s[j] != '"':
                if s[j] == "\\":
                    j += 1
                buf.append(s[j])
                j += 1
            items.append(parse_text("".join(buf), elem, tz))
            i = j + 1
        else:
            j = i
            while j < n and s[j] != ",":
                j += 1
            token = s[i:j].strip()
            items.append(None if token.upper() == "NULL" else parse_text(token, elem, tz))
            i = j
        while i < n and s[i] in " \t\n":
            i += 1
        if i < n and s[i] == ",":
            i += 1
    return items


def parse_text(text: str, typ: SQLType, tz: datetime.tzinfo = UTC) -> Any:
    """The input function of typ: text (a literal or a text-format parameter) to a value."""
    fam = typ.family
    if fam == "int":
        return parse_int(text, typ)
    if fam == "string":
        return check_string_width(text, typ)
    if fam == "decimal":
        return round_decimal(parse_decimal(text, typ), typ)
    if fam == "float":
        return parse_float(text, typ)
    if fam == "bool":
        return parse_bool(text)
    if fam == "bytes":
        return parse_bytes(text)
    if fam == "timestamptz":
        return parse_timestamptz(text, tz)
    if fam == "timestamp":
        return parse_timestamp(text)
    if fam == "date":
        return parse_date(text)
    if fam == "interval":
        return parse_interval(text)
    if fam == "uuid":
        return parse_uuid(text)
    if fam == "jsonb":
        return parse_json(text)
    if fam == "oid":
        return parse_int(text, T.INT8)
    if fam == "array":
        return parse_array(text, typ.elem or T.STRING, tz)
    if fam == "time":
        return parse_time(text)
    if fam == "enum":
        assert typ.enum is not None
        return typ.enum.parse(text)
    if fam in ("unknown", "any"):
        return text
    raise errors.unimplemented(f"cannot parse values of type {typ.crdb_name}")


def check_string_width(v: str, typ: SQLType) -> str:
    if typ.width and len(v) > typ.width:
        if typ.oid == 1042 and not v[typ.width:].strip(" "):
            return v[:typ.width]
        raise errors.PgError(errors.STRING_DATA_RIGHT_TRUNCATION,
                             f"value too long for type {typ.crdb_name}")
    if "\x00" in v:
        raise errors.PgError(errors.CHARACTER_NOT_IN_REPERTOIRE,
                             "invalid byte sequence for encoding \"UTF8\": 0x00")
    return v


def round_decimal(v: Decimal, typ: SQLType) -> Decimal:
    if not typ.precision or not v.is_finite():
        return v
    q = Decimal(1).scaleb(-typ.scale)
    try:
        r = v.quantize(q, rounding=decimal.ROUND_HALF_UP)
    except decimal.InvalidOperation:
        raise _decimal_overflow(typ) from None
    if r.adjusted() >= typ.precision - typ.scale:
        raise _decimal_overflow(typ)
    return r


def _decimal_overflow(typ: SQLType) -> errors.PgError:
    return errors.out_of_range(
        f"value with precision {typ.precision}, scale {typ.scale} must round to an absolute value "
        f"less than 10^{typ.precision - typ.scale}")


def micros_since_epoch(ts: datetime.datetime) -> int:
    if ts.tzinfo is not None:
        delta = ts - EPOCH_TZ
    else:
        delta = ts - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int, tz: bool) -> datetime.datetime:
    base = EPOCH_TZ if tz else EPOCH
    return base + datetime.timedelta(microseconds=micros)
