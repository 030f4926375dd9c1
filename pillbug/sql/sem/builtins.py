"""Builtin functions and aggregates: their overloads, result types and implementations.

A function has overloads, each a tuple of argument families ('int', 'string', ... or 'any'),
a result type (or a function of the argument types), and an implementation. Strict functions
return NULL on any NULL argument without being called; functions that need the session (now(),
current_database()) take the execution context as their first argument (needs_ctx).

Aggregates are classes with add()/result(); the executor makes one instance per group.
This module knows nothing of the parser; build.py resolves calls against it.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.datum import UTC, Interval, Json
from pillbug.sql.sem import casts
from pillbug.sql.sem.ops import (
    _dec_div,
    _int_floordiv,
    _int_mod,
    _pow_dec,
    _pow_float,
    add_interval,
    json_path,
    json_text,
    regex,
)
from pillbug.sql.types import SQLType
from pillbug.util import errors, locality

ReturnSpec = SQLType | Callable[[list[SQLType]], SQLType]


@dataclass(slots=True)
class Overload:
    args: tuple[str, ...]
    returns: ReturnSpec
    impl: Callable[..., Any]
    variadic: bool = False  # the last family repeats
    strict: bool = True
    needs_ctx: bool = False
    volatile: bool = False

    def result_type(self, arg_types: list[SQLType]) -> SQLType:
        return self.returns(arg_types) if callable(self.returns) else self.returns


@dataclass(slots=True)
class FunctionDef:
    name: str
    overloads: list[Overload] = field(default_factory=list)
    is_srf: bool = False  # set-returning: impl returns an iterable of rows (tuples)
    srf_columns: list[str] | None = None
    # for a set-returning function whose columns depend on its arguments (unnest(a, b, ...)):
    # the argument types -> the names and types of its columns
    srf_row: Callable[[list[SQLType]], list[tuple[str, SQLType]]] | None = None


FUNCTIONS: dict[str, FunctionDef] = {}


def fn(name: str, args: tuple[str, ...], returns: ReturnSpec, *, variadic: bool = False,
       strict: bool = True, needs_ctx: bool = False, volatile: bool = False,
       srf: bool = False, srf_columns: list[str] | None = None,
       srf_row: Callable[[list[SQLType]], list[tuple[str, SQLType]]] | None = None) -> Callable:
    def register(impl: Callable) -> Callable:
        for alias in name.split("|"):
            d = FUNCTIONS.setdefault(alias, FunctionDef(alias))
            d.overloads.append(Overload(args, returns, impl, variadic, strict, needs_ctx, volatile))
            if srf:
                d.is_srf = True
                d.srf_columns = srf_columns
                d.srf_row = srf_row or d.srf_row
        return impl
    return register


def first_arg(types: list[SQLType]) -> SQLType:
    return types[0] if types else T.STRING


def common_arg(types: list[SQLType]) -> SQLType:
    known = [t for t in types if t.family != "unknown"]
    if not known:
        return T.STRING
    out = known[0]
    for t in known[1:]:
        if t.is_numeric and out.is_numeric:
            out = T.common_numeric(out, t)
    return out


# ---- session and system ---------------------------------------------------------------------

@fn("now|current_timestamp|transaction_timestamp", (), T.TIMESTAMPTZ, strict=False, needs_ctx=True)
def _now(ctx: Any) -> datetime.datetime:
    return ctx.txn_time


@fn("statement_timestamp", (), T.TIMESTAMPTZ, strict=False, needs_ctx=True)
def _stmt_ts(ctx: Any) -> datetime.datetime:
    return ctx.statement_time


@fn("clock_timestamp", (), T.TIMESTAMPTZ, strict=False, needs_ctx=True, volatile=True)
def _clock_ts(ctx: Any) -> datetime.datetime:
    return datetime.datetime.now(UTC)


@fn("localtimestamp", (), T.TIMESTAMP, strict=False, needs_ctx=True)
def _localts(ctx: Any) -> datetime.datetime:
    return ctx.txn_time.astimezone(ctx.timezone).replace(tzinfo=None)


@fn("current_date", (), T.DATE, strict=False, needs_ctx=True)
def _current_date(ctx: Any) -> datetime.date:
    return ctx.txn_time.astimezone(ctx.timezone).date()


@fn("timeofday", (), T.STRING, strict=False, volatile=True, needs_ctx=True)
def _timeofday(ctx: Any) -> str:
    return datetime.datetime.now(UTC).strftime("%a %b %d %H:%M:%S.%f %Y UTC")


@fn("version", (), T.STRING, strict=False, needs_ctx=True)
def _version(ctx: Any) -> str:
    return ctx.server_version_string


@fn("current_database|current_catalog", (), T.STRING, strict=False, needs_ctx=True)
def _current_database(ctx: Any) -> str:
    return ctx.database


@fn("current_schema", (), T.STRING, strict=False, needs_ctx=True)
def _current_schema(ctx: Any) -> str:
    return "public"


@fn("current_schemas", ("bool",), T.STRING_ARRAY, strict=False, needs_ctx=True)
def _current_schemas(ctx: Any, implicit: bool) -> list[str]:
    return ["pg_catalog", "public"] if implicit else ["public"]


@fn("current_user|session_user|user|current_role", (), T.STRING, strict=False, needs_ctx=True)
def _current_user(ctx: Any) -> str:
    return ctx.user


@fn("current_setting", ("string",), T.STRING, strict=False, needs_ctx=True)
def _current_setting(ctx: Any, name: str) -> str:
    return ctx.session_var(name)


@fn("current_setting", ("string", "bool"), T.STRING, strict=False, needs_ctx=True)
def _current_setting2(ctx: Any, name: str, missing_ok: bool) -> str | None:
    try:
        return ctx.session_var(name)
    except errors.PgError:
        if missing_ok:
            return None
        raise


@fn("set_config", ("string", "string", "bool"), T.STRING, strict=False, needs_ctx=True, volatile=True)
def _set_config(ctx: Any, name: str, value: str, is_local: bool) -> str:
    ctx.set_session_var(name, value)
    return value


@fn("unique_rowid", (), T.INT8, strict=False, needs_ctx=True, volatile=True)
def _unique_rowid(ctx: Any) -> int:
    return ctx.unique_rowid()


@fn("gen_random_uuid|uuid_generate_v4|uuid_v4", (), T.UUID, strict=False, volatile=True)
def _gen_random_uuid() -> uuid.UUID:
    return uuid.uuid4()


@fn("cluster_logical_timestamp", (), T.DECIMAL, strict=False, needs_ctx=True)
def _cluster_logical_timestamp(ctx: Any) -> Decimal:
    return ctx.cluster_logical_timestamp()


@fn("pg_backend_pid", (), T.INT8, strict=False, needs_ctx=True)
def _backend_pid(ctx: Any) -> int:
    return ctx.backend_pid


@fn("nextval", ("string",), T.INT8, needs_ctx=True, volatile=True)
def _nextval(ctx: Any, name: str) -> int:
    return ctx.session.sequence_next(name)


@fn("currval", ("string",), T.INT8, needs_ctx=True, volatile=True)
def _currval(ctx: Any, name: str) -> int:
    return ctx.session.sequence_current(name)


@fn("setval", ("string", "int"), T.INT8, needs_ctx=True, volatile=True)
def _setval(ctx: Any, name: str, value: int) -> int:
    return ctx.session.sequence_set(name, value)


@fn("random", (), T.FLOAT8, strict=False, volatile=True)
def _random() -> float:
    return random.random()


@fn("pg_typeof", ("any",), T.STRING, strict=False, needs_ctx=True)
def _pg_typeof(ctx: Any, v: Any) -> str:
    raise AssertionError("pg_typeof is resolved by the builder")


@fn("txid_current", (), T.INT8, strict=False, needs_ctx=True)
def _txid_current(ctx: Any) -> int:
    return ctx.txn_id


@fn("pg_is_in_recovery", (), T.BOOL, strict=False)
def _in_recovery() -> bool:
    return False


# Where the connection landed: the gateway node's id and --locality (util/locality.py). Not
# volatile: neither changes while the node runs, and a node's plans (its plan cache) are its own.
@fn("crdb_internal.node_id", (), T.INT8, strict=False, needs_ctx=True)
def _node_id(ctx: Any) -> int:
    return ctx.session.engine.node_id


@fn("gateway_region", (), T.STRING, strict=False, needs_ctx=True)
def _gateway_region(ctx: Any) -> str:
    region = locality.value(ctx.session.engine.locality, "region")
    if region is None:
        # CockroachDB's words and code (its builtins prefix their errors with their name)
        raise errors.PgError(errors.CONFIG_FILE_ERROR,
                             "gateway_region(): no region set on the locality flag on this node")
    return region


@fn("crdb_internal.locality_value", ("string",), T.STRING, needs_ctx=True)
def _locality_value(ctx: Any, key: str) -> str | None:
    return locality.value(ctx.session.engine.locality, key)


@fn("crdb_internal.increment_feature_counter", ("string",), T.BOOL, needs_ctx=True, volatile=True)
def _increment_feature_counter(ctx: Any, feature: str) -> bool:
    """Drivers (django-cockroachdb, ...) report themselves here once per process."""
    ctx.session.engine.feature_usage[feature] += 1
    return True


# Query control (sql/activity.py). Volatile: they must run when the statement does, never be
# folded while it is planned.
@fn("pg_sleep", ("float",), T.BOOL, needs_ctx=True, volatile=True)
def _pg_sleep(ctx: Any, seconds: float) -> bool:
    ctx.sleep(seconds)
    return True


@fn("crdb_internal.force_retry", ("interval",), T.INT8, needs_ctx=True, volatile=True)
def _force_retry(ctx: Any, interval: Interval) -> int:
    ctx.force_retry(((interval.months * 30 + interval.days) * 86_400_000_000 + interval.micros) / 1e6)
    return 0


@fn("pg_cancel_backend", ("int",), T.BOOL, needs_ctx=True, volatile=True)
def _pg_cancel_backend(ctx: Any, pid: int) -> bool:
    return ctx.signal_backend(pid, terminate=False)


@fn("pg_terminate_backend", ("int",), T.BOOL, needs_ctx=True, volatile=True)
def _pg_terminate_backend(ctx: Any, pid: int) -> bool:
    return ctx.signal_backend(pid, terminate=True)


# ---- strings ------------------------------------------------------------------------------

@fn("length|char_length|character_length", ("string",), T.INT8)
def _length(s: str) -> int:
    return len(s)


@fn("length|octet_length", ("bytes",), T.INT8)
def _blength(b: bytes) -> int:
    return len(b)


@fn("octet_length", ("string",), T.INT8)
def _octet_length(s: str) -> int:
    return len(s.encode())


@fn("bit_length", ("string",), T.INT8)
def _bit_length(s: str) -> int:
    return len(s.encode()) * 8


@fn("lower", ("string",), T.STRING)
def _lower(s: str) -> str:
    return s.lower()


@fn("upper", ("string",), T.STRING)
def _upper(s: str) -> str:
    return s.upper()


@fn("initcap", ("string",), T.STRING)
def _initcap(s: str) -> str:
    return s.title()


@fn("substring|substr", ("string", "int"), T.STRING)
def _substr2(s: str, start: int) -> str:
    return s[max(start - 1, 0):]


@fn("substring|substr", ("string", "int", "int"), T.STRING)
def _substr3(s: str, start: int, count: int) -> str:
    if count < 0:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE, "negative substring length not allowed")
    end = start - 1 + count
    return s[max(start - 1, 0):max(end, 0)]


@fn("substring", ("string", "string"), T.STRING)
def _substr_regex(s: str, pattern: str) -> str | None:
    m = regex(pattern).search(s)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


@fn("btrim|trim", ("string",), T.STRING)
def _trim(s: str) -> str:
    return s.strip(" ")


@fn("btrim|trim", ("string", "string"), T.STRING)
def _trim2(s: str, chars: str) -> str:
    return s.strip(chars)


@fn("ltrim", ("string",), T.STRING)
def _ltrim(s: str) -> str:
    return s.lstrip(" ")


@fn("ltrim", ("string", "string"), T.STRING)
def _ltrim2(s: str, chars: str) -> str:
    return s.lstrip(chars)


@fn("rtrim", ("string",), T.STRING)
def _rtrim(s: str) -> str:
    return s.rstrip(" ")


@fn("rtrim", ("string", "string"), T.STRING)
def _rtrim2(s: str, chars: str) -> str:
    return s.rstrip(chars)


@fn("concat", ("any",), T.STRING, variadic=True, strict=False, needs_ctx=True)
def _concat(ctx: Any, *args: Any) -> str:
    raise AssertionError("concat is resolved by the builder")


@fn("concat_ws", ("string", "any"), T.STRING, variadic=True, strict=False, needs_ctx=True)
def _concat_ws(ctx: Any, *args: Any) -> str:
    raise AssertionError("concat_ws is resolved by the builder")


@fn("replace", ("string", "string", "string"), T.STRING)
def _replace(s: str, old: str, new: str) -> str:
    return s.replace(old, new) if old else s


@fn("strpos|position", ("string", "string"), T.INT8)
def _strpos(s: str, sub: str) -> int:
    return s.find(sub) + 1


@fn("left", ("string", "int"), T.STRING)
def _left(s: str, n: int) -> str:
    return s[:n] if n >= 0 else s[:n]


@fn("right", ("string", "int"), T.STRING)
def _right(s: str, n: int) -> str:
    return s[-n:] if n > 0 else (s[-n:] if n < 0 else "")


@fn("lpad", ("string", "int"), T.STRING)
def _lpad(s: str, n: int) -> str:
    return _lpad3(s, n, " ")


@fn("lpad", ("string", "int", "string"), T.STRING)
def _lpad3(s: str, n: int, fill: str) -> str:
    _check_length(n)
    if n <= len(s) or not fill:
        return s[:max(n, 0)]
    pad = (fill * n)[: n - len(s)]
    return pad + s


@fn("rpad", ("string", "int"), T.STRING)
def _rpad(s: str, n: int) -> str:
    return _rpad3(s, n, " ")


@fn("rpad", ("string", "int", "string"), T.STRING)
def _rpad3(s: str, n: int, fill: str) -> str:
    _check_length(n)
    if n <= len(s) or not fill:
        return s[:max(n, 0)]
    return s + (fill * n)[: n - len(s)]


@fn("repeat", ("string", "int"), T.STRING)
def _repeat(s: str, n: int) -> str:
    _check_length(len(s) * max(n, 0))
    return s * max(n, 0)


MAX_STRING_RESULT = 64 << 20  # a function may not build a string longer than this from a client's numbers


def _check_length(n: int) -> None:
    if n > MAX_STRING_RESULT:
        raise errors.program_limit_exceeded("requested length too large")


@fn("reverse", ("string",), T.STRING)
def _reverse(s: str) -> str:
    return s[::-1]


@fn("split_part", ("string", "string", "int"), T.STRING)
def _split_part(s: str, delim: str, n: int) -> str:
    if n == 0:
        raise errors.invalid_parameter_value("field position must not be zero")
    parts = s.split(delim) if delim else [s]
    if n < 0:
        n = len(parts) + n + 1
    return parts[n - 1] if 0 < n <= len(parts) else ""


@fn("starts_with", ("string", "string"), T.BOOL)
def _starts_with(s: str, prefix: str) -> bool:
    return s.startswith(prefix)


@fn("md5", ("string",), T.STRING)
def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


@fn("md5", ("bytes",), T.STRING)
def _md5b(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@fn("sha256", ("string",), T.STRING)
def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@fn("sha1", ("string",), T.STRING)
def _sha1(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


@fn("to_hex", ("int",), T.STRING)
def _to_hex(n: int) -> str:
    return format(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n, "x")


@fn("ascii", ("string",), T.INT8)
def _ascii(s: str) -> int:
    return ord(s[0]) if s else 0


@fn("chr", ("int",), T.STRING)
def _chr(n: int) -> str:
    return chr(n)


@fn("quote_ident", ("string",), T.STRING)
def _quote_ident(s: str) -> str:
    if s.isidentifier() and s == s.lower():
        return s
    return '"' + s.replace('"', '""') + '"'


@fn("quote_literal", ("string",), T.STRING)
def _quote_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@fn("encode", ("bytes", "string"), T.STRING)
def _encode(b: bytes, fmt: str) -> str:
    import base64
    if fmt == "hex":
        return b.hex()
    if fmt == "base64":
        return base64.b64encode(b).decode()
    if fmt == "escape":
        return datum.format_text(b, T.BYTES)
    raise errors.invalid_parameter_value(f"unrecognized encoding: {fmt}")


@fn("decode", ("string", "string"), T.BYTES)
def _decode(s: str, fmt: str) -> bytes:
    import base64
    if fmt == "hex":
        return bytes.fromhex(s)
    if fmt == "base64":
        return base64.b64decode(s)
    if fmt == "escape":
        return datum.parse_bytes(s)
    raise errors.invalid_parameter_value(f"unrecognized encoding: {fmt}")


@fn("regexp_replace", ("string", "string", "string"), T.STRING)
def _regexp_replace(s: str, pattern: str, rep: str) -> str:
    return _regexp_replace4(s, pattern, rep, "")


@fn("regexp_replace", ("string", "string", "string", "string"), T.STRING)
def _regexp_replace4(s: str, pattern: str, rep: str, flags: str) -> str:
    import re as _re

    rx = regex(pattern, _re.I if "i" in flags else 0)
    py_rep = _re.sub(r"\\(\d)", r"\\g<\1>", rep)
    return rx.sub(py_rep, s, count=0 if "g" in flags else 1)


def _regexp_split(s: str, pattern: str, flags: str = "") -> list[str]:
    """PostgreSQL's split: a zero-length match at either end of the string, or right after the
    previous match, does not split (so '' splits between characters)."""
    import re as _re

    rx = regex(pattern, _re.I if "i" in flags else 0)
    parts = []
    start = 0
    prev_end = -1
    for m in rx.finditer(s):
        if m.start() == m.end() and m.start() in (0, len(s), prev_end):
            continue
        parts.append(s[start:m.start()])
        start = prev_end = m.end()
    parts.append(s[start:])
    return parts


@fn("regexp_split_to_array", ("string", "string"), T.STRING_ARRAY)
def _regexp_split_to_array(s: str, pattern: str) -> list[str]:
    return _regexp_split(s, pattern)


@fn("regexp_split_to_array", ("string", "string", "string"), T.STRING_ARRAY)
def _regexp_split_to_array3(s: str, pattern: str, flags: str) -> list[str]:
    return _regexp_split(s, pattern, flags)


@fn("regexp_split_to_table", ("string", "string"), T.STRING, srf=True, srf_columns=["regexp_split_to_table"])
def _regexp_split_to_table(s: str, pattern: str) -> list[tuple]:
    return [(p,) for p in _regexp_split(s, pattern)]


@fn("regexp_split_to_table", ("string", "string", "string"), T.STRING, srf=True,
    srf_columns=["regexp_split_to_table"])
def _regexp_split_to_table3(s: str, pattern: str, flags: str) -> list[tuple]:
    return [(p,) for p in _regexp_split(s, pattern, flags)]


@fn("to_uuid", ("string",), T.BYTES)
def _to_uuid(s: str) -> bytes:
    return datum.parse_uuid(s).bytes


# ---- numbers ------------------------------------------------------------------------------

@fn("abs", ("int",), T.INT8)
def _abs_int(n: int) -> int:
    if n == -(1 << 63):
        raise errors.out_of_range(f"abs of min integer value ({n}) not defined")
    return abs(n)


@fn("abs", ("float",), T.FLOAT8)
def _abs_float(n: float) -> float:
    return abs(n)


@fn("abs", ("decimal",), T.DECIMAL)
def _abs_dec(n: Decimal) -> Decimal:
    return abs(n)


@fn("ceil|ceiling", ("float",), T.FLOAT8)
def _ceil_f(x: float) -> float:
    return float(math.ceil(x)) if math.isfinite(x) else x


@fn("ceil|ceiling", ("decimal",), T.DECIMAL)
def _ceil_d(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding="ROUND_CEILING")


@fn("ceil|ceiling", ("int",), T.FLOAT8)
def _ceil_i(x: int) -> float:
    return float(x)


@fn("floor", ("float",), T.FLOAT8)
def _floor_f(x: float) -> float:
    return float(math.floor(x)) if math.isfinite(x) else x


@fn("floor", ("decimal",), T.DECIMAL)
def _floor_d(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding="ROUND_FLOOR")


@fn("floor", ("int",), T.FLOAT8)
def _floor_i(x: int) -> float:
    return float(x)


@fn("round", ("float",), T.FLOAT8)
def _round_f(x: float) -> float:
    return float(round(x)) if math.isfinite(x) else x


@fn("round", ("decimal",), T.DECIMAL)
def _round_d(x: Decimal) -> Decimal:
    return x.quantize(Decimal(1), rounding="ROUND_HALF_UP") if x.is_finite() else x


@fn("round", ("int",), T.FLOAT8)
def _round_i(x: int) -> float:
    return float(x)


@fn("round", ("decimal", "int"), T.DECIMAL)
def _round_d2(x: Decimal, places: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP") if x.is_finite() else x


@fn("round", ("float", "int"), T.FLOAT8)
def _round_f2(x: float, places: int) -> float:
    return float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_EVEN"))


@fn("trunc", ("float",), T.FLOAT8)
def _trunc_f(x: float) -> float:
    return float(math.trunc(x)) if math.isfinite(x) else x


@fn("trunc", ("decimal",), T.DECIMAL)
def _trunc_d(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding="ROUND_DOWN")


@fn("trunc", ("decimal", "int"), T.DECIMAL)
def _trunc_d2(x: Decimal, places: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-places), rounding="ROUND_DOWN")


@fn("mod", ("int", "int"), T.INT8)
def _mod(a: int, b: int) -> int:
    return _int_mod(a, b)


@fn("mod", ("decimal", "decimal"), T.DECIMAL)
def _mod_d(a: Decimal, b: Decimal) -> Decimal:
    if not b:
        raise errors.division_by_zero()
    return Decimal(a) % Decimal(b)


@fn("power|pow", ("float", "float"), T.FLOAT8)
def _pow(a: float, b: float) -> float:
    return _pow_float(a, b)


@fn("power|pow", ("decimal", "decimal"), T.DECIMAL)
def _pow_d(a: Decimal, b: Decimal) -> Decimal:
    return _pow_dec(a, b)


@fn("sqrt", ("float",), T.FLOAT8)
def _sqrt(x: float) -> float:
    if x < 0:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE, "cannot take square root of a negative number")
    return math.sqrt(x)


@fn("sqrt", ("decimal",), T.DECIMAL)
def _sqrt_d(x: Decimal) -> Decimal:
    if x < 0:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE, "cannot take square root of a negative number")
    return x.sqrt()


@fn("cbrt", ("float",), T.FLOAT8)
def _cbrt(x: float) -> float:
    return math.copysign(abs(x) ** (1 / 3), x)


@fn("exp", ("float",), T.FLOAT8)
def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        raise errors.out_of_range("float out of range") from None


@fn("exp", ("decimal",), T.DECIMAL)
def _exp_d(x: Decimal) -> Decimal:
    return x.exp()


def _check_log_arg(x: Any) -> None:
    if x == 0:
        raise errors.PgError("2201E", "cannot take logarithm of zero")
    if x < 0:
        raise errors.PgError("2201E", "cannot take logarithm of a negative number")


@fn("ln", ("float",), T.FLOAT8)
def _ln(x: float) -> float:
    _check_log_arg(x)
    return math.log(x)


@fn("ln", ("decimal",), T.DECIMAL)
def _ln_d(x: Decimal) -> Decimal:
    _check_log_arg(x)
    return x.ln()


@fn("log", ("float",), T.FLOAT8)
def _log10(x: float) -> float:
    _check_log_arg(x)
    return math.log10(x)


@fn("log", ("decimal",), T.DECIMAL)
def _log10_d(x: Decimal) -> Decimal:
    _check_log_arg(x)
    return x.log10()


@fn("log", ("float", "float"), T.FLOAT8)
def _logb(b: float, x: float) -> float:
    _check_log_arg(x)
    _check_log_arg(b)
    return math.log(x, b)


@fn("sign", ("int",), T.INT8)
def _sign_i(x: int) -> int:
    return (x > 0) - (x < 0)


@fn("sign", ("float",), T.FLOAT8)
def _sign_f(x: float) -> float:
    return float((x > 0) - (x < 0))


@fn("sign", ("decimal",), T.DECIMAL)
def _sign_d(x: Decimal) -> Decimal:
    return Decimal((x > 0) - (x < 0))


@fn("pi", (), T.FLOAT8, strict=False)
def _pi() -> float:
    return math.pi


for _name, _f in (("sin", math.sin), ("cos", math.cos), ("tan", math.tan), ("asin", math.asin),
                  ("acos", math.acos), ("atan", math.atan), ("degrees", math.degrees),
                  ("radians", math.radians)):
    fn(_name, ("float",), T.FLOAT8)(_f)
fn("atan2", ("float", "float"), T.FLOAT8)(math.atan2)


@fn("div", ("int", "int"), T.INT8)
def _div(a: int, b: int) -> int:
    return _int_floordiv(a, b)


@fn("div", ("decimal", "decimal"), T.DECIMAL)
def _div_d(a: Decimal, b: Decimal) -> Decimal:
    if not b:
        raise errors.division_by_zero()
    return (Decimal(a) / Decimal(b)).to_integral_value(rounding="ROUND_DOWN")


@fn("isnan", ("float",), T.BOOL)
def _isnan(x: float) -> bool:
    return x != x


@fn("width_bucket", ("float", "float", "float", "int"), T.INT8)
def _width_bucket(x: float, lo: float, hi: float, n: int) -> int:
    if x < lo:
        return 0
    if x >= hi:
        return n + 1
    return int((x - lo) / (hi - lo) * n) + 1


# ---- dates and times ----------------------------------------------------------------------

_EXTRACT_FIELDS = ("year", "month", "day", "hour", "minute", "second", "millisecond",
                   "microsecond", "dow", "isodow", "doy", "week", "quarter", "epoch",
                   "decade", "century", "millennium", "isoyear", "timezone", "timezone_hour",
                   "timezone_minute", "julian")


def extract(field_name: str, v: Any, ctx: Any = None) -> Decimal:
    f = field_name.lower().rstrip("s") if field_name.lower() not in ("dow", "isodow", "doy", "epoch") else field_name.lower()
    f = {"milliseconds": "millisecond", "microseconds": "microsecond", "mon": "month",
         "min": "minute", "sec": "second", "hours": "hour", "year": "year"}.get(f, f)
    if isinstance(v, Interval):
        return _extract_interval(f, v)
    if isinstance(v, datetime.datetime) and v.tzinfo is not None and ctx is not None:
        v = v.astimezone(ctx.timezone)
    if f == "epoch":
        if isinstance(v, datetime.datetime):
            return Decimal(datum.micros_since_epoch(v)) / Decimal(1_000_000)
        return Decimal((v - datum.EPOCH_DATE).days * 86400)
    if f == "year":
        return Decimal(v.year)
    if f == "month":
        return Decimal(v.month)
    if f == "day":
        return Decimal(v.day)
    if f == "quarter":
        return Decimal((v.month - 1) // 3 + 1)
    if f == "dow":
        return Decimal(v.isoweekday() % 7)
    if f == "isodow":
        return Decimal(v.isoweekday())
    if f == "doy":
        return Decimal(v.timetuple().tm_yday)
    if f == "week":
        return Decimal(v.isocalendar()[1])
    if f == "isoyear":
        return Decimal(v.isocalendar()[0])
    if f == "decade":
        return Decimal(v.year // 10)
    if f == "century":
        return Decimal((v.year - 1) // 100 + 1)
    if f == "millennium":
        return Decimal((v.year - 1) // 1000 + 1)
    if not isinstance(v, (datetime.datetime, datetime.time)):
        v = datetime.datetime(v.year, v.month, v.day)
    if f == "hour":
        return Decimal(v.hour)
    if f == "minute":
        return Decimal(v.minute)
    if f == "second":
        return Decimal(v.second) + Decimal(v.microsecond) / Decimal(1_000_000)
    if f == "millisecond":
        return Decimal(v.second * 1000) + Decimal(v.microsecond) / Decimal(1000)
    if f == "microsecond":
        return Decimal(v.second * 1_000_000 + v.microsecond)
    if f in ("timezone", "timezone_hour", "timezone_minute"):
        off = v.utcoffset() if isinstance(v, datetime.datetime) and v.tzinfo else datetime.timedelta(0)
        secs = int(off.total_seconds())
        if f == "timezone":
            return Decimal(secs)
        if f == "timezone_hour":
            return Decimal(int(secs / 3600))
        return Decimal(int((secs % 3600) / 60))
    raise errors.invalid_parameter_value(f'unsupported timespan: {field_name}')


def _extract_interval(f: str, v: Interval) -> Decimal:
    if f == "epoch":
        return Decimal(v._span()) / Decimal(1_000_000)
    if f == "year":
        return Decimal(int(v.months / 12))
    if f == "month":
        return Decimal(v.months - int(v.months / 12) * 12)
    if f == "day":
        return Decimal(v.days)
    secs = abs(v.micros) // 1_000_000
    sign = -1 if v.micros < 0 else 1
    if f == "hour":
        return Decimal(sign * (secs // 3600))
    if f == "minute":
        return Decimal(sign * ((secs % 3600) // 60))
    if f == "second":
        return Decimal(sign * (abs(v.micros) % 60_000_000)) / Decimal(1_000_000)
    if f == "millisecond":
        return Decimal(sign * (abs(v.micros) % 60_000_000)) / Decimal(1000)
    if f == "microsecond":
        return Decimal(sign * (abs(v.micros) % 60_000_000))
    raise errors.invalid_parameter_value(f"unsupported timespan: {f}")


@fn("extract|date_part", ("string", "timestamptz"), T.DECIMAL, needs_ctx=True, strict=False)
def _extract_tz(ctx: Any, f: str, v: Any) -> Decimal | None:
    return None if f is None or v is None else extract(f, v, ctx)


@fn("extract|date_part", ("string", "timestamp"), T.DECIMAL, needs_ctx=True, strict=False)
def _extract_ts(ctx: Any, f: str, v: Any) -> Decimal | None:
    return None if f is None or v is None else extract(f, v, ctx)


@fn("extract|date_part", ("string", "date"), T.DECIMAL, needs_ctx=True, strict=False)
def _extract_date(ctx: Any, f: str, v: Any) -> Decimal | None:
    return None if f is None or v is None else extract(f, v, ctx)


@fn("extract|date_part", ("string", "interval"), T.DECIMAL, needs_ctx=True, strict=False)
def _extract_iv(ctx: Any, f: str, v: Any) -> Decimal | None:
    return None if f is None or v is None else extract(f, v, ctx)


@fn("extract|date_part", ("string", "time"), T.DECIMAL, needs_ctx=True, strict=False)
def _extract_time(ctx: Any, f: str, v: Any) -> Decimal | None:
    return None if f is None or v is None else extract(f, v, ctx)


def _trunc_ts(unit: str, v: datetime.datetime) -> datetime.datetime:
    u = unit.lower()
    if u in ("microsecond", "microseconds"):
        return v
    if u in ("millisecond", "milliseconds"):
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    if u in ("second", "seconds"):
        return v.replace(microsecond=0)
    if u in ("minute", "minutes"):
        return v.replace(second=0, microsecond=0)
    if u in ("hour", "hours"):
        return v.replace(minute=0, second=0, microsecond=0)
    if u in ("day", "days"):
        return v.replace(hour=0, minute=0, second=0, microsecond=0)
    if u in ("week", "weeks"):
        d = v.replace(hour=0, minute=0, second=0, microsecond=0)
        return d - datetime.timedelta(days=d.weekday())
    if u in ("month", "months"):
        return v.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if u in ("quarter",):
        return v.replace(month=(v.month - 1) // 3 * 3 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if u in ("year", "years"):
        return v.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if u in ("decade",):
        return v.replace(year=v.year // 10 * 10, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if u in ("century",):
        return v.replace(year=(v.year - 1) // 100 * 100 + 1, month=1, day=1, hour=0, minute=0, second=0,
                         microsecond=0)
    raise errors.invalid_parameter_value(f"unsupported timespan: {unit}")


@fn("date_trunc", ("string", "timestamp"), T.TIMESTAMP)
def _date_trunc_ts(unit: str, v: datetime.datetime) -> datetime.datetime:
    return _trunc_ts(unit, v)


@fn("date_trunc", ("string", "timestamptz"), T.TIMESTAMPTZ, needs_ctx=True, strict=False)
def _date_trunc_tz(ctx: Any, unit: str, v: datetime.datetime) -> datetime.datetime | None:
    if unit is None or v is None:
        return None
    local = v.astimezone(ctx.timezone)
    truncated = _trunc_ts(unit, local.replace(tzinfo=None))
    return truncated.replace(tzinfo=ctx.timezone).astimezone(UTC)


@fn("date_trunc", ("string", "date"), T.TIMESTAMPTZ, needs_ctx=True, strict=False)
def _date_trunc_date(ctx: Any, unit: str, v: datetime.date) -> datetime.datetime | None:
    if unit is None or v is None:
        return None
    t = _trunc_ts(unit, datetime.datetime(v.year, v.month, v.day))
    return t.replace(tzinfo=ctx.timezone).astimezone(UTC)


@fn("date_trunc", ("string", "interval"), T.INTERVAL)
def _date_trunc_iv(unit: str, v: Interval) -> Interval:
    u = unit.lower().rstrip("s")
    if u == "year":
        return Interval(v.months // 12 * 12, 0, 0)
    if u == "month":
        return Interval(v.months, 0, 0)
    if u == "day":
        return Interval(v.months, v.days, 0)
    step = {"hour": 3_600_000_000, "minute": 60_000_000, "second": 1_000_000,
            "millisecond": 1000, "microsecond": 1}.get(u)
    if step is None:
        raise errors.invalid_parameter_value(f"unsupported timespan: {unit}")
    return Interval(v.months, v.days, int(v.micros / step) * step)


@fn("age", ("timestamptz", "timestamptz"), T.INTERVAL)
def _age2(a: datetime.datetime, b: datetime.datetime) -> Interval:
    return _age(a, b)


@fn("age", ("timestamptz",), T.INTERVAL, needs_ctx=True, strict=False)
def _age1(ctx: Any, a: datetime.datetime) -> Interval | None:
    if a is None:
        return None
    midnight = ctx.txn_time.astimezone(ctx.timezone).replace(hour=0, minute=0, second=0, microsecond=0)
    return _age(midnight, a)


def _age(a: datetime.datetime, b: datetime.datetime) -> Interval:
    sign = 1
    if a < b:
        a, b = b, a
        sign = -1
    months = (a.year - b.year) * 12 + (a.month - b.month)
    anchor = b
    if add_interval(anchor, Interval(months, 0, 0)) > a:
        months -= 1
    rest = a - add_interval(anchor, Interval(months, 0, 0))
    days = rest.days
    micros = rest.seconds * 1_000_000 + rest.microseconds
    return Interval(sign * months, sign * days, sign * micros)


@fn("to_timestamp", ("float",), T.TIMESTAMPTZ)
def _to_timestamp(secs: float) -> datetime.datetime:
    return datum.EPOCH_TZ + datetime.timedelta(seconds=secs)


@fn("make_date", ("int", "int", "int"), T.DATE)
def _make_date(y: int, m: int, d: int) -> datetime.date:
    try:
        return datetime.date(y, m, d)
    except ValueError:
        raise errors.PgError(errors.DATETIME_FIELD_OVERFLOW, "date field value out of range") from None


@fn("timezone", ("string", "timestamptz"), T.TIMESTAMP)
def _timezone_tz(zone: str, v: datetime.datetime) -> datetime.datetime:
    return v.astimezone(resolve_zone(zone)).replace(tzinfo=None)


@fn("timezone", ("string", "timestamp"), T.TIMESTAMPTZ)
def _timezone_ts(zone: str, v: datetime.datetime) -> datetime.datetime:
    return v.replace(tzinfo=resolve_zone(zone)).astimezone(UTC)


def resolve_zone(name: str) -> datetime.tzinfo:
    import zoneinfo
    n = name.strip()
    if n.upper() in ("UTC", "GMT", "Z", "ZULU"):
        return UTC
    try:
        offset = float(n)
        return datetime.timezone(datetime.timedelta(hours=offset))
    except ValueError:
        pass
    if n[:1] in "+-" and ":" in n:
        sign = -1 if n[0] == "-" else 1
        hh, mm = n[1:].split(":", 1)
        return datetime.timezone(sign * datetime.timedelta(hours=int(hh), minutes=int(mm)))
    try:
        return zoneinfo.ZoneInfo(n)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise errors.invalid_parameter_value(f"cannot find time zone \"{name}\"") from None


@fn("experimental_strftime|strftime", ("timestamp", "string"), T.STRING)
def _strftime(v: datetime.datetime, fmt: str) -> str:
    return v.strftime(fmt)


@fn("to_char", ("timestamp", "string"), T.STRING)
def _to_char_ts(v: datetime.datetime, fmt: str) -> str:
    return _pg_to_char(v, fmt)


@fn("to_char", ("timestamptz", "string"), T.STRING, needs_ctx=True, strict=False)
def _to_char_tz(ctx: Any, v: datetime.datetime, fmt: str) -> str | None:
    if v is None or fmt is None:
        return None
    return _pg_to_char(v.astimezone(ctx.timezone), fmt)


@fn("to_char", ("date", "string"), T.STRING)
def _to_char_date(v: datetime.date, fmt: str) -> str:
    return _pg_to_char(datetime.datetime(v.year, v.month, v.day), fmt)


_TO_CHAR = [("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH24", "%H"), ("HH12", "%I"), ("HH", "%I"),
            ("MI", "%M"), ("SS", "%S"), ("MS", "{ms}"), ("US", "{us}"), ("Mon", "%b"), ("Month", "%B"),
            ("Dy", "%a"), ("Day", "%A"), ("YY", "%y"), ("AM", "%p"), ("PM", "%p")]


def _pg_to_char(v: datetime.datetime, fmt: str) -> str:
    out = fmt
    for pg_pat, py_pat in sorted(_TO_CHAR, key=lambda p: -len(p[0])):
        out = out.replace(pg_pat, py_pat)
    out = out.replace("{ms}", f"{v.microsecond // 1000:03d}").replace("{us}", f"{v.microsecond:06d}")
    return v.strftime(out)


# ---- JSON ---------------------------------------------------------------------------------

@fn("to_jsonb|to_json", ("any",), T.JSONB)
def _to_jsonb(v: Any) -> Json:
    return Json(casts.to_json_value(v))


@fn("jsonb_typeof|json_typeof", ("jsonb",), T.STRING)
def _jsonb_typeof(j: Json) -> str:
    v = j.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float, Decimal)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


@fn("jsonb_array_length|json_array_length", ("jsonb",), T.INT8)
def _jsonb_array_length(j: Json) -> int:
    if not isinstance(j.value, list):
        raise errors.invalid_parameter_value("cannot get array length of a non-array")
    return len(j.value)


@fn("jsonb_pretty", ("jsonb",), T.STRING)
def _jsonb_pretty(j: Json) -> str:
    return _pretty(j.value, "")


def _pretty(v: Any, indent: str) -> str:
    inner = indent + "    "
    if isinstance(v, list) and v:
        return "[\n" + ",\n".join(inner + _pretty(x, inner) for x in v) + "\n" + indent + "]"
    if isinstance(v, dict) and v:
        items = [f"{inner}{Json(k).text}: {_pretty(v[k], inner)}" for k in sorted(v)]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return Json(v).text


@fn("jsonb_build_object|json_build_object", ("any",), T.JSONB, variadic=True, strict=False)
def _jsonb_build_object(*args: Any) -> Json:
    if len(args) % 2:
        raise errors.invalid_parameter_value("argument list must have even number of elements")
    out = {}
    for k, v in zip(args[::2], args[1::2]):
        if k is None:
            raise errors.invalid_parameter_value("argument 1 cannot be null")
        out[str(k) if not isinstance(k, str) else k] = casts.to_json_value(v)
    return Json(out)


@fn("jsonb_build_object|json_build_object", (), T.JSONB, strict=False)
def _jsonb_build_object0() -> Json:
    return Json({})


@fn("jsonb_build_array|json_build_array", ("any",), T.JSONB, variadic=True, strict=False)
def _jsonb_build_array(*args: Any) -> Json:
    return Json([casts.to_json_value(a) for a in args])


@fn("jsonb_extract_path|json_extract_path", ("jsonb", "string"), T.JSONB, variadic=True)
def _jsonb_extract_path(j: Json, *path: str) -> Json | None:
    return json_path(j, list(path))


@fn("jsonb_extract_path_text|json_extract_path_text", ("jsonb", "string"), T.STRING, variadic=True)
def _jsonb_extract_path_text(j: Json, *path: str) -> str | None:
    r = json_path(j, list(path))
    return None if r is None else json_text(r)


@fn("jsonb_set", ("jsonb", "string_array", "jsonb"), T.JSONB)
def _jsonb_set(j: Json, path: list, new: Json) -> Json:
    import copy
    root = copy.deepcopy(j.value)
    if not path:
        return new
    cur = root
    for p in path[:-1]:
        if isinstance(cur, list):
            cur = cur[int(p)]
        elif isinstance(cur, dict):
            cur = cur.setdefault(p, {})
    last = path[-1]
    if isinstance(cur, list):
        idx = int(last)
        if -len(cur) <= idx < len(cur):
            cur[idx] = new.value
        else:
            cur.append(new.value)
    elif isinstance(cur, dict):
        cur[last] = new.value
    return Json(root)


@fn("jsonb_strip_nulls|json_strip_nulls", ("jsonb",), T.JSONB)
def _jsonb_strip_nulls(j: Json) -> Json:
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return Json(strip(j.value))


@fn("jsonb_object_keys|json_object_keys", ("jsonb",), T.STRING, srf=True, srf_columns=["jsonb_object_keys"])
def _jsonb_object_keys(j: Json) -> list[tuple]:
    if not isinstance(j.value, dict):
        raise errors.invalid_parameter_value("cannot call jsonb_object_keys on a non-object")
    return [(k,) for k in sorted(j.value)]


@fn("jsonb_array_elements|json_array_elements", ("jsonb",), T.JSONB, srf=True, srf_columns=["value"])
def _jsonb_array_elements(j: Json) -> list[tuple]:
    if not isinstance(j.value, list):
        raise errors.invalid_parameter_value("cannot extract elements from an object")
    return [(Json(v),) for v in j.value]


@fn("jsonb_array_elements_text|json_array_elements_text", ("jsonb",), T.STRING, srf=True, srf_columns=["value"])
def _jsonb_array_elements_text(j: Json) -> list[tuple]:
    if not isinstance(j.value, list):
        raise errors.invalid_parameter_value("cannot extract elements from an object")
    return [(json_text(Json(v)),) for v in j.value]


@fn("jsonb_each|json_each", ("jsonb",), T.JSONB, srf=True, srf_columns=["key", "value"])
def _jsonb_each(j: Json) -> list[tuple]:
    if not isinstance(j.value, dict):
        raise errors.invalid_parameter_value("cannot call jsonb_each on a non-object")
    return [(k, Json(v)) for k, v in sorted(j.value.items())]


# ---- arrays -------------------------------------------------------------------------------

def _elem_array(types: list[SQLType]) -> SQLType:
    t = types[0] if types else T.STRING
    return t if t.is_array else T.array_of(t)


@fn("array_length", ("array", "int"), T.INT8)
def _array_length(a: list, dim: int) -> int | None:
    return len(a) if dim == 1 and a else None


@fn("cardinality", ("array",), T.INT8)
def _cardinality(a: list) -> int:
    return len(a)


@fn("array_to_string", ("array", "string"), T.STRING, needs_ctx=True, strict=False)
def _array_to_string(ctx: Any, a: list, sep: str) -> str | None:
    if a is None or sep is None:
        return None
    return sep.join(_text(x) for x in a if x is not None)


@fn("array_to_string", ("array", "string", "string"), T.STRING, needs_ctx=True, strict=False)
def _array_to_string3(ctx: Any, a: list, sep: str, null: str | None) -> str | None:
    if a is None or sep is None:
        return None
    return sep.join(_text(x) if x is not None else null for x in a if x is not None or null is not None)


def _text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "t" if x else "f"
    if isinstance(x, float):
        return datum.format_float(x)
    if isinstance(x, Decimal):
        return datum.format_decimal(x)
    return str(x)


@fn("array_append", ("array", "any"), first_arg, strict=False)
def _array_append(a: list | None, v: Any) -> list:
    return (a or []) + [v]


@fn("array_prepend", ("any", "array"), lambda ts: ts[1], strict=False)
def _array_prepend(v: Any, a: list | None) -> list:
    return [v] + (a or [])


@fn("array_cat", ("array", "array"), first_arg, strict=False)
def _array_cat(a: list | None, b: list | None) -> list | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@fn("array_position", ("array", "any"), T.INT8, strict=False)
def _array_position(a: list | None, v: Any) -> int | None:
    if a is None:
        return None
    for i, x in enumerate(a):
        if x == v:
            return i + 1
    return None


@fn("array_remove", ("array", "any"), first_arg, strict=False)
def _array_remove(a: list | None, v: Any) -> list | None:
    return None if a is None else [x for x in a if x != v]


@fn("array_lower", ("array", "int"), T.INT8)
def _array_lower(a: list, dim: int) -> int | None:
    return 1 if a and dim == 1 else None


@fn("array_upper", ("array", "int"), T.INT8)
def _array_upper(a: list, dim: int) -> int | None:
    return len(a) if a and dim == 1 else None


@fn("string_to_array", ("string", "string"), T.STRING_ARRAY)
def _string_to_array(s: str, sep: str) -> list:
    if s == "":
        return []
    return s.split(sep) if sep else list(s)


def _unnest_row(types: list[SQLType]) -> list[tuple[str, SQLType]]:
    return [("unnest", t.elem or T.STRING) for t in types]


@fn("unnest", ("array",), lambda ts: ts[0].elem or T.STRING, srf=True, srf_columns=["unnest"])
def _unnest(a: list) -> list[tuple]:
    return [(x,) for x in a]


@fn("unnest", ("array", "array"), lambda ts: ts[0].elem or T.STRING, variadic=True, strict=False,
    srf=True, srf_row=_unnest_row)
def _unnest_zip(*arrays: list | None) -> list[tuple]:
    """unnest(a, b, ...) in FROM: the arrays side by side, the shorter ones padded with NULLs
    (a NULL array counts as empty). bulk_create in Django's PostgreSQL backend inserts this way."""
    arrays = tuple(a or [] for a in arrays)
    n = max(len(a) for a in arrays)
    return [tuple(a[i] if i < len(a) else None for a in arrays) for i in range(n)]


def _expandarray_row(types: list[SQLType]) -> list[tuple[str, SQLType]]:
    return [("x", types[0].elem or T.STRING), ("n", T.INT8)]


@fn("information_schema._pg_expandarray", ("array",), lambda ts: T.record_of(_expandarray_row(ts)),
    srf=True, srf_row=_expandarray_row)
def _pg_expandarray(a: list) -> list[tuple]:
    """Each element with its position (from 1): pgjdbc's getPrimaryKeys and getIndexInfo pair
    pg_index.indkey's columns with their order this way."""
    return [(x, i) for i, x in enumerate(a, 1)]


def _keywords_row(types: list[SQLType]) -> list[tuple[str, SQLType]]:
    return [("word", T.STRING), ("catcode", T.CHAR_INTERNAL), ("catdesc", T.STRING)]


@fn("pg_get_keywords", (), T.RECORD, srf=True, srf_row=_keywords_row)
def _pg_get_keywords() -> list[tuple]:
    """The SQL keywords and their categories (pgjdbc's getSQLKeywords asks): PostgreSQL's
    grammar's, which pglast carries."""
    from pglast import keywords
    categories = [(keywords.UNRESERVED_KEYWORDS, "U", "unreserved"),
                  (keywords.COL_NAME_KEYWORDS, "C", "unreserved (cannot be function or type name)"),
                  (keywords.TYPE_FUNC_NAME_KEYWORDS, "T", "reserved (can be function or type name)"),
                  (keywords.RESERVED_KEYWORDS, "R", "reserved")]
    return sorted((word, code, desc) for words, code, desc in categories for word in words)


@fn("generate_series", ("int", "int"), T.INT8, srf=True, srf_columns=["generate_series"])
def _generate_series(start: int, stop: int) -> Any:
    return _generate_series3(start, stop, 1)


@fn("generate_series", ("int", "int", "int"), T.INT8, srf=True, srf_columns=["generate_series"])
def _generate_series3(start: int, stop: int, step: int) -> Any:
    if step == 0:
        raise errors.invalid_parameter_value("step cannot be 0")
    return ((i,) for i in range(start, stop + (1 if step > 0 else -1), step))


@fn("generate_series", ("timestamptz", "timestamptz", "interval"), T.TIMESTAMPTZ, srf=True,
    srf_columns=["generate_series"])
def _generate_series_ts(start: Any, stop: Any, step: Interval) -> Any:
    if step._span() == 0:
        raise errors.invalid_parameter_value("step cannot be 0")
    cur = start
    forward = step._span() > 0
    while (cur <= stop) if forward else (cur >= stop):
        yield (cur,)
        cur = add_interval(cur, step)


@fn("generate_series", ("timestamp", "timestamp", "interval"), T.TIMESTAMP, srf=True,
    srf_columns=["generate_series"])
def _generate_series_ts2(start: Any, stop: Any, step: Interval) -> Any:
    return _generate_series_ts(start, stop, step)


# ---- catalogs -----------------------------------------------------------------------------

# Functions that read the catalog (format_type, pg_get_indexdef, ...) are in pg_builtins.py.

@fn("pg_postmaster_start_time", (), T.TIMESTAMPTZ, strict=False, needs_ctx=True)
def _start_time(ctx: Any) -> datetime.datetime:
    return ctx.node_start_time


@fn("inet_server_addr|inet_client_addr", (), T.STRING, strict=False)
def _inet_addr() -> str:
    return "127.0.0.1"


@fn("array_agg_placeholder", (), T.STRING, strict=False)
def _unused() -> None:  # keeps the registry non-empty for tooling; never called
    return None


del FUNCTIONS["array_agg_placeholder"]


# ---- window functions -----------------------------------------------------------------------

# The window functions that are not aggregates (exec/window.py computes them; pg_proc lists them).
RANKING = frozenset({"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile"})
NAVIGATION = frozenset({"lag", "lead", "first_value", "last_value", "nth_value"})


# ---- aggregates ---------------------------------------------------------------------------

class Aggregate:
    __slots__ = ()

    def add(self, *args: Any) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError


class CountStar(Aggregate):
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, *args: Any) -> None:
        self.n += 1

    def result(self) -> int:
        return self.n


class Count(Aggregate):
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, v: Any) -> None:
        if v is not None:
            self.n += 1

    def result(self) -> int:
        return self.n


class Sum(Aggregate):
    __slots__ = ("total", "seen", "as_decimal")

    def __init__(self, as_decimal: bool = False) -> None:
        self.total: Any = 0
        self.seen = False
        self.as_decimal = as_decimal

    def add(self, v: Any) -> None:
        if v is not None:
            self.total = self.total + v
            self.seen = True

    def result(self) -> Any:
        if not self.seen:
            return None
        return Decimal(self.total) if self.as_decimal else self.total


class Avg(Aggregate):
    __slots__ = ("total", "n", "is_float")

    def __init__(self, is_float: bool = False) -> None:
        self.total: Any = 0
        self.n = 0
        self.is_float = is_float

    def add(self, v: Any) -> None:
        if v is not None:
            self.total = self.total + v
            self.n += 1

    def result(self) -> Any:
        if not self.n:
            return None
        if self.is_float:
            return self.total / self.n
        return _dec_div(Decimal(self.total), Decimal(self.n))


class MinMax(Aggregate):
    __slots__ = ("best", "is_max")

    def __init__(self, is_max: bool) -> None:
        self.best: Any = None
        self.is_max = is_max

    def add(self, v: Any) -> None:
        if v is None:
            return
        if self.best is None or (v > self.best if self.is_max else v < self.best):
            self.best = v

    def result(self) -> Any:
        return self.best


class AnyNotNull(Aggregate):
    """The group's first non-NULL value. CockroachDB's internal aggregate for a column that is
    functionally dependent on the grouping columns (all of its values in a group are equal), which
    is what lets SELECT name ... GROUP BY id, the primary key, run. Not callable from SQL."""
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None

    def add(self, v: Any) -> None:
        if self.value is None:
            self.value = v

    def result(self) -> Any:
        return self.value


class BoolAgg(Aggregate):
    __slots__ = ("value", "is_and")

    def __init__(self, is_and: bool) -> None:
        self.value: Any = None
        self.is_and = is_and

    def add(self, v: Any) -> None:
        if v is None:
            return
        if self.value is None:
            self.value = v
        elif self.is_and:
            self.value = self.value and v
        else:
            self.value = self.value or v

    def result(self) -> Any:
        return self.value


class ArrayAgg(Aggregate):
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list | None = None

    def add(self, v: Any) -> None:
        if self.items is None:
            self.items = []
        self.items.append(v)

    def result(self) -> Any:
        return self.items


class StringAgg(Aggregate):
    __slots__ = ("parts", "seps")

    def __init__(self) -> None:
        self.parts: list = []
        self.seps: list = []

    def add(self, v: Any, sep: Any = None) -> None:
        if v is not None:
            self.parts.append(v)
            self.seps.append(sep if sep is not None else "")

    def result(self) -> Any:
        if not self.parts:
            return None
        out = self.parts[0]
        for p, s in zip(self.parts[1:], self.seps[1:]):
            out = out + s + p
        return out


class JsonAgg(Aggregate):
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list | None = None

    def add(self, v: Any) -> None:
        if self.items is None:
            self.items = []
        self.items.append(casts.to_json_value(v))

    def result(self) -> Any:
        return None if self.items is None else Json(self.items)


class JsonObjectAgg(Aggregate):
    __slots__ = ("obj",)

    def __init__(self) -> None:
        self.obj: dict | None = None

    def add(self, k: Any, v: Any) -> None:
        if k is None:
            raise errors.invalid_parameter_value("field name must not be null")
        if self.obj is None:
            self.obj = {}
        self.obj[str(k)] = casts.to_json_value(v)

    def result(self) -> Any:
        return None if self.obj is None else Json(self.obj)


class Variance(Aggregate):
    __slots__ = ("values", "kind")

    def __init__(self, kind: str) -> None:
        self.values: list = []
        self.kind = kind

    def add(self, v: Any) -> None:
        if v is not None:
            self.values.append(v)

    def result(self) -> Any:
        import statistics
        vals = self.values
        sample = self.kind in ("stddev", "stddev_samp", "variance", "var_samp")
        if len(vals) < (2 if sample else 1):
            return None
        is_float = isinstance(vals[0], float)
        data = [float(v) for v in vals] if is_float else [Decimal(v) for v in vals]
        if self.kind in ("stddev", "stddev_samp"):
            r = statistics.stdev(data)
        elif self.kind == "stddev_pop":
            r = statistics.pstdev(data)
        elif self.kind in ("variance", "var_samp"):
            r = statistics.variance(data)
        else:
            r = statistics.pvariance(data)
        return r


@dataclass(slots=True)
class AggregateDef:
    name: str
    result_type: Callable[[list[SQLType]], SQLType]
    factory: Callable[[list[SQLType]], Callable[[], Aggregate]]
    arity: tuple[int, ...] = (1,)


def _sum_type(ts: list[SQLType]) -> SQLType:
    t = ts[0]
    if t.family == "int":
        return T.DECIMAL
    if t.family in ("float", "decimal", "interval"):
        return T.FLOAT8 if t.family == "float" else t if t.family == "interval" else T.DECIMAL
    raise errors.undefined_function(f"unknown signature: sum({t.display})")


def _avg_type(ts: list[SQLType]) -> SQLType:
    t = ts[0]
    if t.family == "float":
        return T.FLOAT8
    if t.family in ("int", "decimal"):
        return T.DECIMAL
    if t.family == "interval":
        return T.INTERVAL
    raise errors.undefined_function(f"unknown signature: avg({t.display})")


def _sum_factory(ts: list[SQLType]) -> Callable[[], Aggregate]:
    if ts[0].family == "interval":
        class IntervalSum(Sum):
            __slots__ = ()

            def __init__(self) -> None:
                super().__init__()
                self.total = Interval()
        return IntervalSum
    as_dec = ts[0].family == "int"
    return lambda: Sum(as_dec)


def _stat_type(ts: list[SQLType]) -> SQLType:
    return T.FLOAT8 if ts[0].family == "float" else T.DECIMAL


AGGREGATES: dict[str, AggregateDef] = {
    "count": AggregateDef("count", lambda ts: T.INT8, lambda ts: Count),
    "sum": AggregateDef("sum", _sum_type, _sum_factory),
    "sum_int": AggregateDef("sum_int", lambda ts: T.INT8, lambda ts: Sum),
    "avg": AggregateDef("avg", _avg_type, lambda ts: (lambda: Avg(ts[0].family == "float"))),
    "min": AggregateDef("min", lambda ts: ts[0], lambda ts: (lambda: MinMax(False))),
    "max": AggregateDef("max", lambda ts: ts[0], lambda ts: (lambda: MinMax(True))),
    "bool_and": AggregateDef("bool_and", lambda ts: T.BOOL, lambda ts: (lambda: BoolAgg(True))),
    "every": AggregateDef("every", lambda ts: T.BOOL, lambda ts: (lambda: BoolAgg(True))),
    "bool_or": AggregateDef("bool_or", lambda ts: T.BOOL, lambda ts: (lambda: BoolAgg(False))),
    "array_agg": AggregateDef("array_agg", lambda ts: T.array_of(ts[0]) if not ts[0].is_array else ts[0],
                              lambda ts: ArrayAgg),
    "string_agg": AggregateDef("string_agg", lambda ts: ts[0] if ts[0].family == "bytes" else T.STRING,
                               lambda ts: StringAgg, (2,)),
    "json_agg": AggregateDef("json_agg", lambda ts: T.JSONB, lambda ts: JsonAgg),
    "jsonb_agg": AggregateDef("jsonb_agg", lambda ts: T.JSONB, lambda ts: JsonAgg),
    "json_object_agg": AggregateDef("json_object_agg", lambda ts: T.JSONB, lambda ts: JsonObjectAgg, (2,)),
    "jsonb_object_agg": AggregateDef("jsonb_object_agg", lambda ts: T.JSONB, lambda ts: JsonObjectAgg, (2,)),
}
for _k in ("stddev", "stddev_samp", "stddev_pop", "variance", "var_samp", "var_pop"):
    AGGREGATES[_k] = AggregateDef(_k, _stat_type, lambda ts, k=_k: (lambda: Variance(k)))
