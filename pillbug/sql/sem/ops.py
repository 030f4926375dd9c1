"""Operators: which (operator, left type, right type) exist, their result type and implementation.

Follows CockroachDB where it differs from PostgreSQL: INT / INT is DECIMAL (// is integer
division), integer arithmetic that overflows 64 bits is an error, DECIMAL division keeps 20
significant digits. Implementations receive non-NULL values (operators are strict).
This module knows nothing of the parser or of plans.
"""
from __future__ import annotations

import datetime
import decimal
import math
import operator
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.datum import Interval, Json
from pillbug.sql.types import SQLType
from pillbug.util import errors

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
DIV_CONTEXT = decimal.Context(prec=20, Emax=100000, Emin=-100000)


def _check(v: int) -> int:
    if v < _I64_MIN or v > _I64_MAX:
        raise errors.out_of_range("integer out of range")
    return v


def _int_add(a: int, b: int) -> int:
    r = a + b
    if r > _I64_MAX or r < _I64_MIN:
        raise errors.out_of_range("integer out of range")
    return r


def _int_sub(a: int, b: int) -> int:
    r = a - b
    if r > _I64_MAX or r < _I64_MIN:
        raise errors.out_of_range("integer out of range")
    return r


def _int_mul(a: int, b: int) -> int:
    return _check(a * b)


def _int_floordiv(a: int, b: int) -> int:
    if b == 0:
        raise errors.division_by_zero()
    q = abs(a) // abs(b)
    return _check(q if (a >= 0) == (b >= 0) else -q)


def _int_mod(a: int, b: int) -> int:
    if b == 0:
        raise errors.division_by_zero()
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


def _dec_div(a: Any, b: Any) -> Decimal:
    a = a if isinstance(a, Decimal) else Decimal(a)
    b = b if isinstance(b, Decimal) else Decimal(b)
    if not b:
        raise errors.division_by_zero()
    q = DIV_CONTEXT.divide(a, b)
    exact = a / b if (a / b) * b == a else None
    if exact is not None and len(exact.as_tuple().digits) <= 20:
        return exact
    return q


def _dec_floordiv(a: Any, b: Any) -> Decimal:
    a = a if isinstance(a, Decimal) else Decimal(a)
    b = b if isinstance(b, Decimal) else Decimal(b)
    if not b:
        raise errors.division_by_zero()
    return a // b


def _dec_mod(a: Any, b: Any) -> Decimal:
    a = a if isinstance(a, Decimal) else Decimal(a)
    b = b if isinstance(b, Decimal) else Decimal(b)
    if not b:
        raise errors.division_by_zero()
    return a % b


def _dec(f: Callable[[Decimal, Decimal], Decimal]) -> Callable[[Any, Any], Decimal]:
    def op(a: Any, b: Any) -> Decimal:
        return f(a if isinstance(a, Decimal) else Decimal(a), b if isinstance(b, Decimal) else Decimal(b))
    return op


def _float_div(a: float, b: float) -> float:
    if b == 0:
        raise errors.division_by_zero()
    return a / b


def _float_floordiv(a: float, b: float) -> float:
    if b == 0:
        raise errors.division_by_zero()
    return float(math.trunc(a / b))


def _float_mod(a: float, b: float) -> float:
    if b == 0:
        raise errors.division_by_zero()
    return math.fmod(a, b)


def _pow_int(a: int, b: int) -> int:
    if b < 0:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE, "integer power with negative exponent")
    if abs(a) > 1 and b > 64:
        raise errors.out_of_range("integer out of range")
    return _check(a ** b)


def _pow_float(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except (OverflowError, ValueError):
        raise errors.out_of_range("float out of range") from None


def _pow_dec(a: Any, b: Any) -> Decimal:
    try:
        return Decimal(a) ** Decimal(b)
    except decimal.InvalidOperation:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE, "invalid argument for power") from None


def _concat(a: Any, b: Any) -> Any:
    return a + b


# ---- date and time ----------------------------------------------------------------------

def add_interval(ts: Any, iv: Interval) -> Any:
    """timestamp/date + interval: months first (clamping the day), then days, then time."""
    try:
        if iv.months:
            y, m = divmod(ts.month - 1 + iv.months, 12)
            year = ts.year + y
            month = m + 1
            day = min(ts.day, _days_in_month(year, month))
            ts = ts.replace(year=year, month=month, day=day)
        if iv.days or iv.micros:
            if isinstance(ts, datetime.datetime):
                ts = ts + datetime.timedelta(days=iv.days, microseconds=iv.micros)
            else:
                ts = datetime.datetime(ts.year, ts.month, ts.day) + datetime.timedelta(
                    days=iv.days, microseconds=iv.micros)
        elif not isinstance(ts, datetime.datetime):
            ts = datetime.datetime(ts.year, ts.month, ts.day)
    except (OverflowError, ValueError):
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "timestamp out of range") from None
    return ts


_INTERVAL_LIMIT = 1 << 31  # months and days; micros within int64 (PostgreSQL's bounds)


def _scale_interval(iv: Interval, factor: Any) -> Interval:
    try:
        out = iv.scale(factor)
    except (OverflowError, ValueError):
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "interval out of range") from None
    if abs(out.months) >= _INTERVAL_LIMIT or abs(out.days) >= _INTERVAL_LIMIT or \
            not _I64_MIN <= out.micros <= _I64_MAX:
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "interval out of range")
    return out


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime.date(year, month + 1, 1) - datetime.date(year, month, 1)).days


def _ts_sub(a: datetime.datetime, b: datetime.datetime) -> Interval:
    delta = a - b
    micros = delta.days * datum.MICROS_PER_DAY + delta.seconds * 1_000_000 + delta.microseconds
    days, rem = divmod(abs(micros), datum.MICROS_PER_DAY)
    sign = -1 if micros < 0 else 1
    return Interval(0, sign * days, sign * rem)


def _date_plus_int(d: datetime.date, n: int) -> datetime.date:
    return d + datetime.timedelta(days=n)


def _date_minus_date(a: datetime.date, b: datetime.date) -> int:
    return (a - b).days


def _as_ts(d: Any) -> datetime.datetime:
    return d if isinstance(d, datetime.datetime) else datetime.datetime(d.year, d.month, d.day)


# ---- JSON ---------------------------------------------------------------------------------

def json_fetch(j: Json, key: Any) -> Json | None:
    v = j.value
    if isinstance(key, int) and not isinstance(key, bool):
        if isinstance(v, list) and -len(v) <= key < len(v):
            return Json(v[key])
        return None
    if isinstance(v, dict) and key in v:
        return Json(v[key])
    return None


def json_fetch_text(j: Json, key: Any) -> str | None:
    r = json_fetch(j, key)
    return None if r is None else json_text(r)


def json_text(j: Json) -> str | None:
    v = j.value
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, Decimal, float)):
        return str(v)
    return j.text


def json_path(j: Json, path: list) -> Json | None:
    cur: Any = j
    for p in path:
        if cur is None:
            return None
        if isinstance(cur.value, list):
            try:
                p = int(p)
            except (TypeError, ValueError):
                return None
        cur = json_fetch(cur, p)
    return cur


def json_contains(a: Any, b: Any) -> bool:
    if isinstance(a, Json):
        a, b = a.value, b.value
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and json_contains(a[k], v) for k, v in b.items())
    if isinstance(a, list):
        if isinstance(b, list):
            return all(any(json_contains(x, y) for x in a) for y in b)
        return any(json_contains(x, b) for x in a if not isinstance(x, (list, dict)))
    return a == b and type(a) is type(b) or (isinstance(a, (int, Decimal, float)) and
                                              isinstance(b, (int, Decimal, float)) and
                                              not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def json_has_key(j: Json, key: str) -> bool:
    v = j.value
    if isinstance(v, dict):
        return key in v
    if isinstance(v, list):
        return key in v
    return isinstance(v, str) and v == key


def json_concat(a: Json, b: Json) -> Json:
    x, y = a.value, b.value
    if isinstance(x, dict) and isinstance(y, dict):
        return Json({**x, **y})
    xs = x if isinstance(x, list) else [x]
    ys = y if isinstance(y, list) else [y]
    return Json(xs + ys)


def json_delete(a: Json, key: Any) -> Json:
    v = a.value
    if isinstance(v, dict) and isinstance(key, str):
        return Json({k: x for k, x in v.items() if k != key})
    if isinstance(v, list):
        if isinstance(key, int):
            n = len(v)
            if -n <= key < n:
                idx = key % n
                return Json(v[:idx] + v[idx + 1:])
            return a
        return Json([x for x in v if x != key])
    raise errors.invalid_parameter_value("cannot delete from scalar")


# ---- LIKE and regular expressions ---------------------------------------------------------

_LIKE_CACHE: dict[tuple[str, bool, str], re.Pattern] = {}


def like_pattern(pattern: str, case_insensitive: bool, escape: str = "\\") -> re.Pattern:
    key = (pattern, case_insensitive, escape)
    compiled = _LIKE_CACHE.get(key)
    if compiled is None:
        out = []
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if escape and c == escape:
                i += 1
                if i < len(pattern):
                    out.append(re.escape(pattern[i]))
                else:
                    raise errors.PgError(errors.INVALID_ESCAPE_SEQUENCE,
                                         "LIKE pattern must not end with escape character")
            elif c == "%":
                out.append(".*")
            elif c == "_":
                out.append(".")
            else:
                out.append(re.escape(c))
            i += 1
        compiled = re.compile("".join(out), re.S | (re.I if case_insensitive else 0))
        if len(_LIKE_CACHE) > 1000:
            _LIKE_CACHE.clear()
        _LIKE_CACHE[key] = compiled
    return compiled


def like(s: str, pattern: str) -> bool:
    return like_pattern(pattern, False).fullmatch(s) is not None


def ilike(s: str, pattern: str) -> bool:
    return like_pattern(pattern, True).fullmatch(s) is not None


_REGEX_CACHE: dict[tuple[str, int], re.Pattern] = {}


def regex(pattern: str, flags: int = 0) -> re.Pattern:
    key = (pattern, flags)
    compiled = _REGEX_CACHE.get(key)
    if compiled is None:
        try:
            compiled = re.compile(pattern, flags)
        except re.error as exc:
            raise errors.PgError(errors.INVALID_REGULAR_EXPRESSION, f"invalid regular expression: {exc}") from None
        if len(_REGEX_CACHE) > 1000:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[key] = compiled
    return compiled


def regex_match(s: str, p: str) -> bool:
    return regex(p).search(s) is not None


def regex_imatch(s: str, p: str) -> bool:
    return regex(p, re.I).search(s) is not None


# ---- resolution ---------------------------------------------------------------------------

Impl = Callable[[Any, Any], Any]
_NUM = ("int", "float", "decimal")


def _numeric_result(a: SQLType, b: SQLType) -> SQLType:
    return T.common_numeric(a, b)


def resolve_binary(op: str, a: SQLType, b: SQLType) -> tuple[SQLType, Impl]:
    """The result type and implementation of `a op b`, or 42883 if there is none."""
    fa, fb = a.family, b.family
    if fa in _NUM and fb in _NUM:
        if (fa == "float") != (fb == "float") and "decimal" in (fa, fb):
            # CockroachDB has no implicit conversion between DECIMAL and FLOAT
            raise _unsupported(op, a, b)
        res = _numeric_result(a, b)
        rf = res.family
        if op == "+":
            return res, _int_add if rf == "int" else (_dec(operator.add) if rf == "decimal" else operator.add)
        if op == "-":
            return res, _int_sub if rf == "int" else (_dec(operator.sub) if rf == "decimal" else operator.sub)
        if op == "*":
            return res, _int_mul if rf == "int" else (_dec(operator.mul) if rf == "decimal" else operator.mul)
        if op == "/":
            if rf == "float":
                return T.FLOAT8, _float_div
            return T.DECIMAL, _dec_div
        if op == "//":
            if rf == "int":
                return T.INT8, _int_floordiv
            if rf == "float":
                return T.FLOAT8, _float_floordiv
            return T.DECIMAL, _dec_floordiv
        if op == "%":
            if rf == "int":
                return T.INT8, _int_mod
            if rf == "float":
                return T.FLOAT8, _float_mod
            return T.DECIMAL, _dec_mod
        if op == "^":
            if rf == "int":
                return T.INT8, _pow_int
            if rf == "float":
                return T.FLOAT8, _pow_float
            return T.DECIMAL, _pow_dec
        if fa == "int" and fb == "int":
            if op == "&":
                return T.INT8, operator.and_
            if op == "|":
                return T.INT8, operator.or_
            if op == "#":
                return T.INT8, operator.xor
            if op == "<<":
                return T.INT8, lambda x, y: _check(x << y) if 0 <= y < 64 else _shift_error()
            if op == ">>":
                return T.INT8, lambda x, y: x >> y if 0 <= y < 64 else _shift_error()
    if op == "||":
        if fa == "jsonb" and fb == "jsonb":
            return T.JSONB, json_concat
        if fa == "array" and fb == "array":
            return a, _concat
        if fa == "array":
            return a, lambda x, y: x + [y]
        if fb == "array":
            return b, lambda x, y: [x] + y
        if fa == "bytes" and fb == "bytes":
            return T.BYTES, _concat
        if fa in ("string", "unknown") and fb in ("string", "unknown"):
            return T.STRING, _concat
        if fa in ("string", "unknown") or fb in ("string", "unknown"):
            fmt_a = _text_of(a)
            fmt_b = _text_of(b)
            return T.STRING, lambda x, y: fmt_a(x) + fmt_b(y)
    timeish = ("timestamp", "timestamptz", "date")
    if op == "+":
        if fa in timeish and fb == "interval":
            return (T.TIMESTAMP if fa == "date" else a), add_interval
        if fa == "interval" and fb in timeish:
            return (T.TIMESTAMP if fb == "date" else b), lambda x, y: add_interval(y, x)
        if fa == "interval" and fb == "interval":
            return T.INTERVAL, operator.add
        if fa == "date" and fb == "int":
            return T.DATE, _date_plus_int
        if fa == "int" and fb == "date":
            return T.DATE, lambda x, y: _date_plus_int(y, x)
        if fa == "date" and fb == "time":
            return T.TIMESTAMP, lambda d, t: datetime.datetime.combine(d, t)
    if op == "-":
        if fa in timeish and fb == "interval":
            return (T.TIMESTAMP if fa == "date" else a), lambda x, y: add_interval(x, -y)
        if fa == "date" and fb == "date":
            return T.INT8, _date_minus_date
        if fa == "date" and fb == "int":
            return T.DATE, lambda x, y: _date_plus_int(x, -y)
        if fa in timeish and fb in timeish:
            if (fa == "timestamptz") != (fb == "timestamptz"):
                return T.INTERVAL, lambda x, y: _ts_sub(_utc(x), _utc(y))
            return T.INTERVAL, lambda x, y: _ts_sub(_as_ts(x), _as_ts(y))
        if fa == "interval" and fb == "interval":
            return T.INTERVAL, operator.sub
        if fa == "jsonb" and fb in ("string", "unknown", "int"):
            return T.JSONB, json_delete
    if op == "*":
        if fa == "interval" and fb in _NUM:
            return T.INTERVAL, lambda x, y: _scale_interval(x, y)
        if fb == "interval" and fa in _NUM:
            return T.INTERVAL, lambda x, y: _scale_interval(y, x)
    if op == "/" and fa == "interval" and fb in _NUM:
        return T.INTERVAL, lambda x, y: _scale_interval(x, 1 / float(y)) if y else _raise_div0()
    if fa == "jsonb":
        if op == "->":
            return T.JSONB, json_fetch
        if op == "->>":
            return T.STRING, json_fetch_text
        if op == "#>":
            return T.JSONB, json_path
        if op == "#>>":
            return T.STRING, lambda j, p: (None if (r := json_path(j, p)) is None else json_text(r))
        if op == "@>" and fb == "jsonb":
            return T.BOOL, json_contains
        if op == "<@" and fb == "jsonb":
            return T.BOOL, lambda x, y: json_contains(y, x)
        if op == "?":
            return T.BOOL, json_has_key
        if op == "?|":
            return T.BOOL, lambda j, keys: any(json_has_key(j, k) for k in keys)
        if op == "?&":
            return T.BOOL, lambda j, keys: all(json_has_key(j, k) for k in keys)
    if fa == "array" and fb == "array":
        if op == "@>":
            return T.BOOL, lambda x, y: all(v in x for v in y)
        if op == "<@":
            return T.BOOL, lambda x, y: all(v in y for v in x)
        if op == "&&":
            return T.BOOL, lambda x, y: any(v in y for v in x if v is not None)
    if fa in ("string", "unknown") and fb in ("string", "unknown"):
        if op in ("~~", "LIKE"):
            return T.BOOL, like
        if op in ("~~*", "ILIKE"):
            return T.BOOL, ilike
        if op in ("!~~", "NOT LIKE"):
            return T.BOOL, lambda s, p: not like(s, p)
        if op in ("!~~*", "NOT ILIKE"):
            return T.BOOL, lambda s, p: not ilike(s, p)
        if op == "~":
            return T.BOOL, regex_match
        if op == "~*":
            return T.BOOL, regex_imatch
        if op == "!~":
            return T.BOOL, lambda s, p: not regex_match(s, p)
        if op == "!~*":
            return T.BOOL, lambda s, p: not regex_imatch(s, p)
        if op == "^@":
            return T.BOOL, lambda s, p: s.startswith(p)
    if fa == "inet" or fb == "inet":
        pass
    raise _unsupported(op, a, b)


def _text_of(t: SQLType) -> Callable[[Any], str]:
    if t.family in ("string", "unknown"):
        return lambda v: v
    if t.family == "bool":
        return lambda v: "true" if v else "false"
    return lambda v: datum.format_text(v, t)


def _utc(x: Any) -> datetime.datetime:
    if isinstance(x, datetime.datetime):
        if x.tzinfo is None:
            return x.replace(tzinfo=datum.UTC)
        return x
    return datetime.datetime(x.year, x.month, x.day, tzinfo=datum.UTC)


def _shift_error() -> int:
    raise errors.out_of_range("shift argument out of range")


def _raise_div0() -> Any:
    raise errors.division_by_zero()


def _unsupported(op: str, a: SQLType, b: SQLType) -> errors.PgError:
    return errors.undefined_function(
        f"unsupported binary operator: <{a.display}> {op} <{b.display}>")


def resolve_unary(op: str, a: SQLType) -> tuple[SQLType, Callable[[Any], Any]]:
    fa = a.family
    if op == "-":
        if fa == "int":
            return T.INT8, lambda x: _check(-x)
        if fa in ("float", "decimal", "interval"):
            return a, operator.neg
    if op == "+" and fa in ("int", "float", "decimal", "interval"):
        return a, lambda x: x
    if op == "~" and fa == "int":
        return T.INT8, operator.invert
    if op == "|/" and fa in _NUM:
        return T.FLOAT8, lambda x: math.sqrt(x)
    if op == "@" and fa in _NUM:
        return a, abs
    raise errors.undefined_function(f"unsupported unary operator: {op} <{a.display}>")


# Types that compare with each other (after numeric widening or date/time conversion).
_COMPARABLE_GROUPS = [
    {"int", "float", "decimal", "oid"},
    {"date", "timestamp", "timestamptz"},
]


def comparable(a: SQLType, b: SQLType) -> bool:
    fa, fb = a.family, b.family
    if fa == "enum" and fb == "enum":
        return a.oid == b.oid  # two enum types' members have no order between them
    if fa == fb or "unknown" in (fa, fb) or "any" in (fa, fb):
        return True
    return any(fa in g and fb in g for g in _COMPARABLE_GROUPS)


def comparison_adapter(a: SQLType, b: SQLType) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """Converters to apply to each side so that Python's comparison is SQL's."""
    fa, fb = a.family, b.family
    if fa == fb:
        return None, None
    dt = {"date", "timestamp", "timestamptz"}
    if fa in dt and fb in dt:
        if "timestamptz" in (fa, fb):
            return (None if fa == "timestamptz" else _utc), (None if fb == "timestamptz" else _utc)
        return (None if fa == "timestamp" else _as_ts), (None if fb == "timestamp" else _as_ts)
    if {fa, fb} == {"decimal", "float"}:
        conv = lambda v: Decimal(repr(v)) if isinstance(v, float) and math.isfinite(v) else v  # noqa: E731
        return (conv if fa == "float" else None), (conv if fb == "float" else None)
    return None, None
