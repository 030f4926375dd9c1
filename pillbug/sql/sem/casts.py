"""Conversions between types: explicit casts (CAST, ::) and assignment to a column.

cast_fn(src, dst) returns impl(value, ctx) for non-NULL values, or raises 42846 when no cast
exists. assignment_fn(src, dst) is what INSERT and UPDATE apply to a value bound for a column of
type dst: numbers are range-checked and rounded to the column's scale, strings are checked
against the column's width (an explicit cast truncates instead, as PostgreSQL does).
This module knows nothing of the parser.
"""
from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.catalog import foreign_keys, oids
from pillbug.sql.datum import UTC, Interval, Json
from pillbug.sql.types import SQLType
from pillbug.util import errors

CastImpl = Callable[[Any, Any], Any]


def _session_tz(ctx: Any) -> datetime.tzinfo:
    return ctx.timezone if ctx is not None else UTC


def to_int(v: Any, typ: SQLType = T.INT8) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return datum.check_int_range(v, typ)
    if isinstance(v, float):
        if v != v or v in (math.inf, -math.inf):
            raise errors.out_of_range("integer out of range")
        return datum.check_int_range(round(v), typ)
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise errors.out_of_range("integer out of range")
        return datum.check_int_range(int(v.quantize(Decimal(1), rounding=decimal.ROUND_HALF_UP)), typ)
    if isinstance(v, str):
        return datum.parse_int(v, typ)
    if isinstance(v, Interval):
        return datum.check_int_range(int(v.total_seconds()), typ)
    raise errors.PgError(errors.CANNOT_COERCE, f"cannot cast to {typ.crdb_name}")


def to_float(v: Any) -> float:
    if isinstance(v, str):
        return datum.parse_float(v)
    if isinstance(v, Interval):
        return v.total_seconds()
    return float(v)


def to_decimal(v: Any, typ: SQLType = T.DECIMAL) -> Decimal:
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, bool):
        d = Decimal(int(v))
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, float):
        if v != v:
            d = Decimal("NaN")
        elif v in (math.inf, -math.inf):
            d = Decimal("Infinity") if v > 0 else Decimal("-Infinity")
        else:
            d = Decimal(repr(v))
    elif isinstance(v, str):
        d = datum.parse_decimal(v, typ)
    elif isinstance(v, Interval):
        d = Decimal(v.total_seconds())
    else:
        raise errors.PgError(errors.CANNOT_COERCE, f"cannot cast to {typ.crdb_name}")
    return datum.round_decimal(d, typ)


def to_text(v: Any, src: SQLType, ctx: Any) -> str:
    if src.family == "bool":
        return "true" if v else "false"
    return datum.format_text(v, src, _session_tz(ctx))


def to_timestamptz(v: Any, ctx: Any) -> datetime.datetime:
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            return v.replace(tzinfo=_session_tz(ctx)).astimezone(UTC)
        return v
    if isinstance(v, datetime.date):
        return datetime.datetime(v.year, v.month, v.day, tzinfo=_session_tz(ctx)).astimezone(UTC)
    if isinstance(v, str):
        return datum.parse_timestamptz(v, _session_tz(ctx))
    if isinstance(v, (int, float, Decimal)):
        return datum.EPOCH_TZ + datetime.timedelta(seconds=float(v))
    raise errors.PgError(errors.CANNOT_COERCE, "cannot cast to TIMESTAMPTZ")


def to_timestamp(v: Any, ctx: Any) -> datetime.datetime:
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            return v.astimezone(_session_tz(ctx)).replace(tzinfo=None)
        return v
    if isinstance(v, datetime.date):
        return datetime.datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        return datum.parse_timestamp(v)
    if isinstance(v, (int, float, Decimal)):
        return datum.EPOCH + datetime.timedelta(seconds=float(v))
    raise errors.PgError(errors.CANNOT_COERCE, "cannot cast to TIMESTAMP")


def to_date(v: Any, ctx: Any) -> datetime.date:
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_session_tz(ctx))
        return v.date()
    if isinstance(v, datetime.date):
        return v
    if isinstance(v, str):
        return datum.parse_date(v)
    if isinstance(v, int):
        return datum.EPOCH_DATE + datetime.timedelta(days=v)
    raise errors.PgError(errors.CANNOT_COERCE, "cannot cast to DATE")


def to_interval(v: Any) -> Interval:
    if isinstance(v, Interval):
        return v
    if isinstance(v, str):
        return datum.parse_interval(v)
    if isinstance(v, (int, float, Decimal)):
        return Interval(0, 0, round(float(v) * 1_000_000))
    raise errors.PgError(errors.CANNOT_COERCE, "cannot cast to INTERVAL")


def to_json_value(v: Any) -> Any:
    """A SQL value as a JSON value (to_jsonb)."""
    if v is None:
        return None
    if isinstance(v, Json):
        return v.value
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, Decimal)):
        return v
    if isinstance(v, float):
        if v != v or v in (math.inf, -math.inf):
            return datum.format_float(v)
        return Decimal(repr(v))
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return [to_json_value(x) for x in v]
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, Interval):
        return datum.format_interval(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return datum.format_bytes(v)
    return str(v)


def cast_fn(src: SQLType, dst: SQLType, explicit: bool = True) -> CastImpl:
    """impl(value, ctx) converting non-NULL values of src to dst."""
    sf, df = src.family, dst.family
    if df == "any" or (src == dst and not dst.width and not dst.precision):
        return lambda v, ctx: v
    if df == "string":
        width = dst.width
        if sf == "string" or sf == "unknown":
            if not width:
                return lambda v, ctx: v
            if explicit:
                return lambda v, ctx: v[:width]
            return lambda v, ctx: datum.check_string_width(v, dst)
        if width and explicit:
            return lambda v, ctx: to_text(v, src, ctx)[:width]
        return lambda v, ctx: datum.check_string_width(to_text(v, src, ctx), dst)
    if sf in ("string", "unknown") and df not in ("oid",):
        return lambda v, ctx: datum.parse_text(v, dst, _session_tz(ctx))
    if df == "int":
        if sf in ("int", "float", "decimal", "bool", "oid", "interval"):
            return lambda v, ctx: to_int(v, dst)
    elif df == "float":
        if sf in ("int", "float", "decimal", "bool", "interval"):
            if dst.width == 32:
                return lambda v, ctx: datum.to_float4(to_float(v))
            return lambda v, ctx: to_float(v)
    elif df == "decimal":
        if sf in ("int", "float", "decimal", "bool", "interval"):
            return lambda v, ctx: to_decimal(v, dst)
    elif df == "bool":
        if sf in ("int", "bool"):
            return lambda v, ctx: bool(v)
        if sf in ("float", "decimal"):
            return lambda v, ctx: v != 0
    elif df == "timestamptz":
        if sf in ("timestamp", "timestamptz", "date", "int", "float", "decimal"):
            return lambda v, ctx: to_timestamptz(v, ctx)
    elif df == "timestamp":
        if sf in ("timestamp", "timestamptz", "date", "int", "float", "decimal"):
            return lambda v, ctx: to_timestamp(v, ctx)
    elif df == "date":
        if sf in ("timestamp", "timestamptz", "date", "int"):
            return lambda v, ctx: to_date(v, ctx)
    elif df == "time":
        if sf in ("timestamp", "timestamptz"):
            return lambda v, ctx: v.time() if v.tzinfo is None else v.astimezone(_session_tz(ctx)).time()
        if sf == "interval":
            return lambda v, ctx: (datetime.datetime.min + datetime.timedelta(microseconds=v.micros)).time()
    elif df == "interval":
        if sf in ("interval", "int", "float", "decimal"):
            return lambda v, ctx: to_interval(v)
        if sf == "time":
            return lambda v, ctx: Interval(0, 0, ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)
    elif df == "uuid":
        if sf == "bytes":
            return lambda v, ctx: uuid.UUID(bytes=v)
    elif df == "bytes":
        if sf == "uuid":
            return lambda v, ctx: v.bytes
        if sf == "string":
            return lambda v, ctx: v.encode()
    elif df == "jsonb":
        return lambda v, ctx: v if isinstance(v, Json) else Json(to_json_value(v))
    elif df == "oid":
        if dst.oid == T.REGCLASS.oid:
            to_oid = (lambda v, ctx: int(v)) if sf in ("int", "oid") else \
                _regtype_cast(dst) if sf in ("string", "unknown") else None
            if to_oid is not None:
                return lambda v, ctx: _regclass(to_oid(v, ctx), ctx)
        if sf in ("int", "oid"):
            return lambda v, ctx: int(v)
        if sf in ("string", "unknown"):
            return _regtype_cast(dst)
    elif df == "array" and sf == "array":
        inner = cast_fn(src.elem or T.STRING, dst.elem or T.STRING, explicit)
        return lambda v, ctx: [None if x is None else inner(x, ctx) for x in v]
    elif df == "array" and sf in ("string", "unknown"):
        return lambda v, ctx: datum.parse_array(v, dst.elem or T.STRING, _session_tz(ctx))
    if sf == "jsonb" and df in ("string",):
        return lambda v, ctx: v.text
    if sf == "jsonb" and df in ("int", "float", "decimal", "bool"):
        return lambda v, ctx: _json_scalar(v, dst)
    raise errors.PgError(errors.CANNOT_COERCE, f"invalid cast: {src.display} -> {dst.crdb_name}")


def _json_scalar(v: Json, dst: SQLType) -> Any:
    x = v.value
    if dst.family == "bool":
        if isinstance(x, bool):
            return x
    elif isinstance(x, (int, Decimal, float)) and not isinstance(x, bool):
        return cast_fn(T.DECIMAL, dst)(Decimal(x) if not isinstance(x, Decimal) else x, None)
    raise errors.invalid_parameter_value(f"cannot cast jsonb {type(x).__name__} to type {dst.display}")


def _regclass(oid: int, ctx: Any) -> int:
    """The OID as a REGCLASS that prints as the relation's name (the bare OID when no relation
    of the session's catalog has it, as PostgreSQL prints those)."""
    catalog = getattr(ctx, "catalog", None)
    if catalog is None:
        return oid

    found = oids.relation_by_oid(catalog, oid)
    if found is None:
        return oid
    table, index = found
    return datum.RegClass(oid, foreign_keys.quote_name(index.name if index is not None else table.name))


def _regtype_cast(dst: SQLType) -> CastImpl:
    def cast(v: str, ctx: Any) -> int:
        if v.strip().isdigit():
            return int(v)
        if ctx is None:
            raise errors.PgError(errors.CANNOT_COERCE, f"cannot resolve {dst.pg_name} {v!r}")
        return ctx.resolve_reg(dst, v)
    return cast


def assignment_fn(src: SQLType, dst: SQLType) -> CastImpl | None:
    """Conversion applied when storing a value of type src into a column of type dst.

    Returns None when values need no conversion at all (the common case, kept free).
    """
    sf, df = src.family, dst.family
    if sf == df:
        if df == "enum" and src.oid != dst.oid:
            raise errors.datatype_mismatch(f"value type {src.display} doesn't match type {dst.display}")
        if df == "int":
            if dst.width == 64:
                return None
            return lambda v, ctx: datum.check_int_range(v, dst)
        if df == "string":
            if not dst.width:
                return None
            return lambda v, ctx: datum.check_string_width(v, dst)
        if df == "decimal":
            if not dst.precision:
                return None
            return lambda v, ctx: datum.round_decimal(v, dst)
        if df == "float":
            if dst.width == 32:
                return lambda v, ctx: datum.to_float4(v)
            return None
        if df == "array":
            inner = assignment_fn(src.elem or T.STRING, dst.elem or T.STRING)
            if inner is None:
                return None
            return lambda v, ctx: [None if x is None else inner(x, ctx) for x in v]
        return None
    if not is_assignable(src, dst):
        raise errors.datatype_mismatch(
            f"value type {src.display} doesn't match type {dst.display}")
    return cast_fn(src, dst, explicit=False)


_ASSIGNABLE = {
    "int": {"float", "decimal", "oid"},
    "float": {"int", "decimal"},
    "decimal": {"int", "float"},
    "timestamp": {"timestamptz", "date"},
    "timestamptz": {"timestamp", "date"},
    "date": {"timestamp", "timestamptz"},
    "oid": {"int"},
}


def is_assignable(src: SQLType, dst: SQLType) -> bool:
    if src.family == "unknown" or dst.family == "any" or src.family == dst.family:
        return True
    return dst.family in _ASSIGNABLE.get(src.family, set())


def json_dumps(value: Any) -> str:
    return json.dumps(value)
