"""Rows and index entries to keys and values, and back.

Keys: /<table id>/<index id>/<index column values...>[/<primary key values>], each part an
order-preserving encoding from util.encoding (DESC columns inverted), so that a key range is a
range of SQL values.

  primary index   key = /t/1/<pk values>                value = the whole row
  unique index    key = /t/i/<index values>            value = (pk suffix, stored values)
                  (a unique index entry with a NULL in it gets the pk suffix in its key too,
                   since NULLs never collide)
  other index     key = /t/i/<index values>/<pk suffix> value = (pk suffix, stored values)

The stored values of a secondary index entry are those of its key columns, its STORING columns
and the primary key columns, so that a read needing only those (a covering index) builds its
rows from the entries without fetching the primary rows.

A row value is marshal of a tuple with one slot per column in descriptor order, each in its
storage form (Decimal as text, dates as day numbers, timestamps as microseconds...). Rows
written before a column was added are shorter; missing trailing slots read as NULL.
This module knows nothing of transactions; it turns rows into bytes.
"""
from __future__ import annotations

import datetime
import marshal
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql.catalog.descriptors import IndexDesc, TableDesc
from pillbug.sql.types import SQLType
from pillbug.util import encoding as enc
from pillbug.util import errors

EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def index_prefix(table_id: int, index_id: int) -> bytes:
    return enc.encode_int(table_id) + enc.encode_int(index_id)


def table_prefix(table_id: int) -> bytes:
    return enc.encode_int(table_id)


def _interval_span(v: datum.Interval) -> int:
    return (v.months * 30 + v.days) * datum.MICROS_PER_DAY + v.micros


def _time_micros(v: datetime.time) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond


def key_encoder(typ: SQLType) -> Callable[[Any], bytes]:
    """The ascending key encoding of non-NULL values of typ."""
    fam = typ.family
    if fam in ("int", "oid"):
        return enc.encode_int
    if fam == "string":
        return enc.encode_string
    if fam == "bool":
        return lambda v: enc.encode_int(1 if v else 0)
    if fam == "float":
        return enc.encode_float
    if fam == "decimal":
        return enc.encode_decimal
    if fam == "bytes":
        return enc.encode_bytes
    if fam == "date":
        return lambda v: enc.encode_int(v.toordinal() - EPOCH_ORDINAL)
    if fam in ("timestamp", "timestamptz"):
        return lambda v: enc.encode_int(datum.micros_since_epoch(v))
    if fam == "interval":
        return lambda v: enc.encode_int(_interval_span(v))
    if fam == "uuid":
        return enc.encode_uuid
    if fam == "time":
        return lambda v: enc.encode_int(_time_micros(v))
    if fam == "enum":
        # the member's physical representation, whose byte order is declaration order
        return lambda v: enc.encode_bytes(v.rep)
    raise errors.PgError(errors.FEATURE_NOT_SUPPORTED,
                         f"column of type {typ.crdb_name} is not indexable",
                         hint="CockroachDB does not index JSONB or array columns with ordinary indexes")


def column_encoder(typ: SQLType, descending: bool) -> Callable[[Any], bytes]:
    """Encodes one key column, NULL included, in the given direction."""
    base = key_encoder(typ)
    if descending:
        invert = enc.invert
        return lambda v: enc.NULL_DESC if v is None else invert(base(v))
    null = enc.NULL_ASC
    return lambda v: null if v is None else base(v)


# ---- storage forms of values inside a row value ---------------------------------------------

def _to_storage(typ: SQLType) -> Callable[[Any], Any] | None:
    fam = typ.family
    if fam == "decimal":
        return lambda v: str(v)
    if fam == "date":
        return lambda v: v.toordinal()
    if fam in ("timestamp", "timestamptz"):
        return datum.micros_since_epoch
    if fam == "interval":
        return lambda v: (v.months, v.days, v.micros)
    if fam == "uuid":
        return lambda v: v.bytes
    if fam == "jsonb":
        return lambda v: v.text
    if fam == "time":
        return _time_micros
    if fam == "enum":
        return lambda v: v.rep  # not the label: RENAME VALUE must not rewrite rows
    if fam == "oid":
        return int  # a REGCLASS value (datum.RegClass, which prints as a name) is stored as its OID
    if fam == "array":
        elem = _to_storage(typ.elem) if typ.elem else None
        if elem is None:
            return lambda v: tuple(v)
        return lambda v: tuple(None if x is None else elem(x) for x in v)
    return None


def _from_storage(typ: SQLType) -> Callable[[Any], Any] | None:
    fam = typ.family
    if fam == "decimal":
        return Decimal
    if fam == "date":
        return datetime.date.fromordinal
    if fam == "timestamp":
        return lambda v: datum.from_micros(v, False)
    if fam == "timestamptz":
        return lambda v: datum.from_micros(v, True)
    if fam == "interval":
        return lambda v: datum.Interval(*v)
    if fam == "uuid":
        return lambda v: uuid.UUID(bytes=v)
    if fam == "jsonb":
        return datum.parse_json
    if fam == "time":
        return lambda v: (datetime.datetime.min + datetime.timedelta(microseconds=v)).time()
    if fam == "enum":
        assert typ.enum is not None, "enum column types are resolved by the catalog"
        return typ.enum.from_rep
    if fam == "array":
        elem = _from_storage(typ.elem) if typ.elem else None
        if elem is None:
            return list
        return lambda v: [None if x is None else elem(x) for x in v]
    return None


class ValueCodec:
    """Encodes and decodes tuples of values of fixed types with marshal."""

    __slots__ = ("width", "_to", "_from")

    def __init__(self, column_types: list[SQLType]) -> None:
        self.width = len(column_types)
        self._to = [(i, f) for i, t in enumerate(column_types) if (f := _to_storage(t)) is not None]
        self._from = [(i, f) for i, t in enumerate(column_types) if (f := _from_storage(t)) is not None]

    def encode(self, values: tuple | list) -> bytes:
        if self._to:
            values = list(values)
            for i, f in self._to:
                v = values[i]
                if v is not None:
                    values[i] = f(v)
            values = tuple(values)
        return marshal.dumps(values)

    def decode(self, raw: bytes) -> tuple:
        values = marshal.loads(raw)
        if len(values) < self.width:
            values = values + (None,) * (self.width - len(values))
        if self._from:
            values = list(values)
            for i, f in self._from:
                v = values[i]
                if v is not None:
                    values[i] = f(v)
            return tuple(values)
        return values


class IndexCodec:
    """Keys of one index of a table."""

    __slots__ = ("index", "prefix", "positions", "types", "encoders", "stored_positions", "stored_codec",
                 "is_unique")

    def __init__(self, table: TableDesc, index: IndexDesc) -> None:
        self.index = index
        self.prefix = index_prefix(table.id, index.id)
        self.positions = [table.position(cid) for cid in index.column_ids]
        self.types = [table.column_by_id(cid).type for cid in index.column_ids]
        self.encoders = [column_encoder(table.column_by_id(cid).type, d == "desc")
                         for cid, d in zip(index.column_ids, index.directions)]
        ids = list(index.column_ids) + [i for i in index.storing_ids if i not in index.column_ids]
        if not index.is_primary:
            ids += [i for i in table.primary_index.column_ids if i not in ids]
        self.stored_positions = [table.position(cid) for cid in ids]
        self.stored_codec = ValueCodec([table.column_by_id(cid).type for cid in ids])
        self.is_unique = index.unique

    def encode_values(self, values: list | tuple) -> bytes:
        """The key suffix for values of this index's columns (a prefix of them for spans)."""
        return b"".join([e(v) for e, v in zip(self.encoders, values)])

    def row_suffix(self, row: tuple) -> bytes:
        return b"".join([e(row[p]) for e, p in zip(self.encoders, self.positions)])


class TableCodec:
    """Everything needed to write and read a table's rows and index entries."""

    __slots__ = ("table", "primary", "secondaries", "value", "pk_prefix", "span", "primary_span")

    def __init__(self, table: TableDesc) -> None:
        self.table = table
        self.primary = IndexCodec(table, table.primary_index)
        self.secondaries = [IndexCodec(table, idx) for idx in table.indexes]
        self.value = ValueCodec([c.type for c in table.columns])
        self.pk_prefix = self.primary.prefix
        prefix = table_prefix(table.id)
        self.span = (prefix, enc.prefix_end(prefix))
        self.primary_span = (self.pk_prefix, enc.prefix_end(self.pk_prefix))

    def primary_key(self, row: tuple) -> bytes:
        return self.primary.prefix + self.primary.row_suffix(row)

    def encode_row(self, row: tuple) -> bytes:
        return self.value.encode(row)

    def decode_row(self, raw: bytes) -> tuple:
        return self.value.decode(raw)

    def index_entry(self, codec: IndexCodec, row: tuple, pk_suffix: bytes) -> tuple[bytes, bytes]:
        suffix = codec.row_suffix(row)
        key = codec.prefix + suffix
        if not codec.is_unique or any(row[p] is None for p in codec.positions):
            key += pk_suffix
        stored = codec.stored_codec.encode(tuple(row[p] for p in codec.stored_positions))
        return key, marshal.dumps((pk_suffix, stored))

    def index_entries(self, row: tuple, pk_key: bytes) -> list[tuple[IndexCodec, bytes, bytes]]:
        pk_suffix = pk_key[len(self.pk_prefix):]
        out = []
        for codec in self.secondaries:
            key, value = self.index_entry(codec, row, pk_suffix)
            out.append((codec, key, value))
        return out

    @staticmethod
    def decode_index_value(raw: bytes) -> tuple[bytes, bytes]:
        """(pk suffix, stored values) of a secondary index entry."""
        return marshal.loads(raw)
