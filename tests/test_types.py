"""Every supported type round-trips exactly through the real drivers, and prints as PostgreSQL does.

The table TYPE_CASES is the specification: for each SQL type, the Python values (edge cases
included) that psycopg 3 (binary parameters and binary results, then text both ways, through its
CockroachDB adapters), asyncpg (binary for everything) and psycopg2 (text) insert as parameters
and must read back equal — for DECIMAL, with the same digits and scale. TEXT_OUTPUT fixes the
text each value prints as (what psql and psycopg2 parse), checked through psycopg2 with the
raw strings and through psql. BAD_PARAMETERS lists values the node must refuse, and with which
SQLSTATE. Codec-level property tests (hypothesis) check numeric's binary form against psycopg's
own encoder and that no input text makes an input function fail with anything but a PgError.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import math
import ssl
import struct
import subprocess
import uuid
from decimal import Decimal

import asyncpg
import psycopg
import psycopg.adapt
import psycopg.crdb
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from pillbug.pgwire import codecs
from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.util import errors

UTC = datetime.UTC
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
D = Decimal

# (SQL type, values). Every value goes in as a parameter and must come back equal.
TYPE_CASES = [
    ("INT2", [0, 1, -1, 32767, -32768]),
    ("INT4", [0, 2**31 - 1, -2**31, 123456]),
    ("INT8", [0, 2**63 - 1, -2**63, 1 << 40]),
    ("INT", [42, -(2**62)]),
    ("FLOAT4", [0.0, 1.5, -2.25, 3.4028234663852886e38, 1.401298464324817e-45, math.inf, -math.inf,
                math.nan]),
    ("FLOAT8", [0.0, -0.5, 1.1, 1 / 3, -1e308, 5e-324, 2.2250738585072014e-308, 1e15, 123456789.125,
                math.inf, -math.inf, math.nan]),
    ("DECIMAL", [D("0"), D("1.50"), D("-123.456"), D("0.000"), D("100"), D("1e-30"), D("-0.0001"),
                 D("12345678901234567890123456789.123456789"), D("9" * 120), D("1." + "0" * 80 + "1"),
                 D("1234.5678"), D("10000"), D("0.1"), D("NaN")]),
    ("DECIMAL(10,2)", [D("12.34"), D("-0.01"), D("99999999.99"), D("0.00")]),
    ("STRING", ["", "hello", "ünïcødé ✓ 🐛", "a'b\"c\\d", "tab\tnl\ncr\r", "x" * 100_000]),
    ("VARCHAR(5)", ["abc", "abcde", "ü✓🐛"]),
    ("CHAR(3)", ["abc", "x✓y"]),
    ("BOOL", [True, False]),
    ("BYTES", [b"", b"\x00\x01\xff", bytes(range(256)), b"\\x41"]),
    ("DATE", [datetime.date(2024, 2, 29), datetime.date(1, 1, 2), datetime.date(9999, 12, 30),
              datetime.date(1970, 1, 1), datetime.date(1999, 12, 31)]),
    ("TIMESTAMP", [datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.datetime(1, 1, 2),
                   datetime.datetime(9999, 12, 30, 23, 59, 59, 999999), datetime.datetime(2000, 1, 1),
                   datetime.datetime(1969, 12, 31, 23, 59, 59, 1)]),
    ("TIMESTAMPTZ", [datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                     datetime.datetime(2024, 6, 1, 12, 0, tzinfo=IST),
                     datetime.datetime(1900, 1, 1, tzinfo=UTC)]),
    ("INTERVAL", [datetime.timedelta(0), datetime.timedelta(days=1, seconds=3, microseconds=4),
                  datetime.timedelta(days=-3, hours=5), datetime.timedelta(microseconds=1),
                  datetime.timedelta(days=10000, seconds=86399, microseconds=999999),
                  -datetime.timedelta(microseconds=1)]),
    ("UUID", [uuid.UUID(int=0), uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), uuid.UUID(int=(1 << 128) - 1)]),
    ("JSONB", [{"a": 1, "b": [1, 2.5, None, True, "x"]}, [], {}, "s", None, 3, 1.25, {"nested": {"ü": ["✓"]}},
               [1e-7, 12345678901234567890]]),
    ("INT8[]", [[1, 2, None, -3], [], [2**63 - 1]]),
    ("STRING[]", [["a", "b c", "", None, "NULL", 'q"x', "back\\slash", "{}", "ü"], []]),
    ("BOOL[]", [[True, False, None]]),
    ("FLOAT8[]", [[1.5, -0.25, math.inf]]),
    ("DECIMAL[]", [[D("1.10"), D("-2"), None]]),
    ("DATE[]", [[datetime.date(2020, 1, 1), None]]),
    ("UUID[]", [[uuid.UUID(int=5)]]),
]


def _ids(cases):
    return [typ for typ, _ in cases]


def _same(expected, got, integral_scale: bool = True) -> bool:
    """Equal, and of the same kind; DECIMALs with the same scale (1.50 stays 1.50). asyncpg reads
    integral numerics with trailing zero digit groups as 1E+4 (from PostgreSQL as well), so for it
    the scale of whole numbers is not compared (integral_scale=False)."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(expected, Decimal):
        if not isinstance(got, Decimal):
            return False
        if expected.is_nan():
            return got.is_nan()
        exponent = expected.as_tuple().exponent
        return got == expected and (got.as_tuple().exponent == exponent or (not integral_scale and exponent == 0))
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and \
            all(_same(e, g, integral_scale) for e, g in zip(expected, got))
    if isinstance(expected, bool | int | float | str | bytes):
        return type(got) is type(expected) and got == expected
    return got == expected


def _as_float4(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


def _table_sql(index: int, typ: str) -> tuple[str, str]:
    name = f"rt_{index}"
    return name, f"CREATE TABLE {name} (k INT PRIMARY KEY, v {typ})"


@pytest.fixture(scope="module")
def typedb(node):
    node.sql("DROP DATABASE IF EXISTS typedb CASCADE", "CREATE DATABASE typedb")
    statements = []
    for i, (typ, _) in enumerate(TYPE_CASES):
        name, create = _table_sql(i, typ)
        statements += [create]
    node.sql(*statements, database="typedb")
    return "typedb"


def _conninfo(node, database):
    return " ".join(f"{k}={v}" for k, v in node.params(database=database).items())


@pytest.fixture(scope="module")
def crdb_conn(node, typedb):
    conn = psycopg.crdb.connect(_conninfo(node, typedb), autocommit=True)
    yield conn
    conn.close()


def test_psycopg_detects_cockroachdb(crdb_conn):
    assert psycopg.crdb.CrdbConnection.is_crdb(crdb_conn)
    assert crdb_conn.info.parameter_status("crdb_version").startswith("CockroachDB")
    assert crdb_conn.info.server_version >= 130000


def _psycopg_value(typ, value):
    return Jsonb(value) if typ == "JSONB" else value


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("index", range(len(TYPE_CASES)), ids=_ids(TYPE_CASES))
def test_psycopg_roundtrip(crdb_conn, index, binary):
    typ, values = TYPE_CASES[index]
    table = f"rt_{index}"
    placeholder = "%b" if binary else "%t"
    with crdb_conn.cursor(binary=binary) as cur:
        cur.execute(f"DELETE FROM {table}")
        for k, value in enumerate(values):
            cur.execute(f"INSERT INTO {table} VALUES (%b, {placeholder})", (k, _psycopg_value(typ, value)))
        for k, value in enumerate(values):
            cur.execute(f"SELECT v FROM {table} WHERE k = %b", (k,))
            (got,) = cur.fetchone()
            if typ == "FLOAT4" and not binary:
                got = _as_float4(got)  # float4's shortest text reads back as the nearest float8
            assert _same(value, got), f"{typ}: sent {value!r}, got {got!r}"
            # The value also finds its own row when used as a parameter in a comparison.
            if typ not in ("JSONB",) and not (isinstance(value, float) and math.isnan(value)) and \
                    not (isinstance(value, Decimal) and value.is_nan()) and not typ.endswith("[]"):
                cur.execute(f"SELECT k FROM {table} WHERE v = {placeholder}", (value,))
                assert (k,) in cur.fetchall(), f"{typ}: {value!r} does not find its row"


def _asyncpg_ssl(node):
    params = node.params()
    ctx = ssl.create_default_context(cafile=params["sslrootcert"])
    ctx.load_cert_chain(params["sslcert"], params["sslkey"])
    return ctx


async def _asyncpg_connect(node, database):
    conn = await asyncpg.connect(host=node.host, port=node.port, user="root", database=database,
                                 ssl=_asyncpg_ssl(node))
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


@pytest.mark.parametrize("index", range(len(TYPE_CASES)), ids=_ids(TYPE_CASES))
def test_asyncpg_roundtrip(node, typedb, index):
    typ, values = TYPE_CASES[index]
    table = f"rt_{index}"

    async def run():
        conn = await _asyncpg_connect(node, typedb)
        try:
            await conn.execute(f"DELETE FROM {table}")
            await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2)", list(enumerate(values)))
            rows = await conn.fetch(f"SELECT k, v FROM {table} ORDER BY k")
            return [r["v"] for r in rows]
        finally:
            await conn.close()
    got = asyncio.run(run())
    for value, back in zip(values, got, strict=True):
        if typ == "UUID":
            back = uuid.UUID(str(back))  # asyncpg has a UUID class of its own
        assert _same(value, back, integral_scale=False), f"{typ}: sent {value!r}, got {back!r}"


@pytest.mark.parametrize("index", range(len(TYPE_CASES)), ids=_ids(TYPE_CASES))
def test_psycopg2_roundtrip(node, typedb, index):
    typ, values = TYPE_CASES[index]
    if typ.endswith("[]") and typ not in ("INT8[]", "STRING[]", "BOOL[]", "FLOAT8[]"):
        pytest.skip("psycopg2 returns these arrays as strings (no array typecaster for them)")
    table = f"rt_{index}"
    conn = node.connect(database=typedb)
    psycopg2.extras.register_uuid(conn_or_curs=conn)
    try:
        cur = conn.cursor()
        cur.execute(f"DELETE FROM {table}")
        for k, value in enumerate(values):
            if typ == "JSONB":
                value = psycopg2.extras.Json(value)
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (k, value))
        cur.execute(f"SELECT v FROM {table} ORDER BY k")
        got = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    for value, back in zip(values, got, strict=True):
        if isinstance(value, memoryview | bytes):
            back = bytes(back)
        if typ == "FLOAT4":
            back = _as_float4(back)
        assert _same(value, back), f"{typ}: sent {value!r}, got {back!r}"


def test_serial_and_generated_defaults(node, db):
    node.sql("CREATE TABLE s (id SERIAL PRIMARY KEY, u UUID DEFAULT gen_random_uuid(), n STRING)", database=db)
    with psycopg.crdb.connect(_conninfo(node, db), autocommit=True) as conn:
        ids = [conn.execute("INSERT INTO s (n) VALUES (%s) RETURNING id, u", (f"r{i}",)).fetchone()
               for i in range(20)]
        assert len({i for i, _ in ids}) == 20 and all(isinstance(i, int) and i > 0 for i, _ in ids)
        assert len({u for _, u in ids}) == 20 and all(isinstance(u, uuid.UUID) and u.version == 4 for _, u in ids)
        for i, u in ids:
            with conn.cursor(binary=True) as cur:
                cur.execute("SELECT u FROM s WHERE id = %b", (i,))
                assert cur.fetchone() == (u,)
        desc = conn.execute("SELECT id FROM s LIMIT 1").description
        assert desc[0].type_code == 20  # SERIAL is INT8, as in CockroachDB

    async def run():
        conn = await _asyncpg_connect(node, db)
        try:
            return [(await conn.fetchval("SELECT u FROM s WHERE id = $1", i), u) for i, u in ids]
        finally:
            await conn.close()
    assert all(a == b for a, b in asyncio.run(run()))


# (SQL expression, its text output): what psql shows and what every text-format client parses.
TEXT_OUTPUT = [
    ("1::INT2", "1"), ("(-32768)::INT2", "-32768"), ("9223372036854775807::INT8", "9223372036854775807"),
    ("1.5::FLOAT8", "1.5"), ("0.1::FLOAT8", "0.1"), ("1e15::FLOAT8", "1e+15"), ("123456789012345.0::FLOAT8", "123456789012345"),
    ("1e-5::FLOAT8", "1e-05"), ("0.0001::FLOAT8", "0.0001"), ("'NaN'::FLOAT8", "NaN"),
    ("'-Infinity'::FLOAT8", "-Infinity"), ("(1/3)::FLOAT8", "0.3333333333333333"),
    ("1.1::FLOAT4", "1.1"), ("1000000::FLOAT4", "1e+06"), ("123456789::FLOAT4", "1.2345679e+08"),
    ("1.50::DECIMAL", "1.50"), ("-0.001::DECIMAL", "-0.001"), ("'1e3'::DECIMAL", "1000"),
    ("'NaN'::DECIMAL", "NaN"), ("'-0'::DECIMAL", "0"), ("12.5::DECIMAL(6,3)", "12.500"),
    ("true", "t"), ("false", "f"),
    ("'\\x00ff41'::BYTES", "\\x00ff41"), ("'abc'::BYTES", "\\x616263"),
    ("'2024-02-29'::DATE", "2024-02-29"), ("'0001-01-01'::DATE", "0001-01-01"),
    ("'2024-01-02 03:04:05.678'::TIMESTAMP", "2024-01-02 03:04:05.678"),
    ("'2024-01-02 03:04:05'::TIMESTAMP", "2024-01-02 03:04:05"),
    ("'2024-01-02 03:04:05.000001+00'::TIMESTAMPTZ", "2024-01-02 03:04:05.000001+00"),
    ("'1 day 02:03:04.5'::INTERVAL", "1 day 02:03:04.5"), ("'-1 hour'::INTERVAL", "-01:00:00"),
    ("'1 year 2 months 3 days'::INTERVAL", "1 year 2 mons 3 days"), ("'0'::INTERVAL", "00:00:00"),
    ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("'{\"b\": [1, 2.50], \"a\": null}'::JSONB", '{"a": null, "b": [1, 2.50]}'),
    ("'1e2'::JSONB", "100"),
    ("ARRAY[1, NULL, 3]", "{1,NULL,3}"), ("ARRAY['a b', '', 'q\"', NULL]::STRING[]", '{"a b","","q\\"",NULL}'),
    ("'ü✓'::STRING", "ü✓"),
]


def test_text_output_psycopg2(node):
    conn = node.connect()
    try:
        # Every type's raw text, as psycopg2 receives it before parsing.
        raw = psycopg2.extensions.new_type(tuple(T.BY_OID), "RAW", lambda s, cur: s)
        psycopg2.extensions.register_type(raw, conn)
        cur = conn.cursor()
        for expr, expected in TEXT_OUTPUT:
            cur.execute(f"SELECT {expr}")
            assert cur.fetchone()[0] == expected, expr
    finally:
        conn.close()


def test_text_output_psql(node):
    script = "".join(f"SELECT {expr};\n" for expr, _ in TEXT_OUTPUT)
    params = node.params()
    env = {"PGSSLMODE": params["sslmode"], "PGSSLROOTCERT": params["sslrootcert"], "PGSSLCERT": params["sslcert"],
           "PGSSLKEY": params["sslkey"], "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", node.host, "-p", str(node.port),
                           "-U", "root", "-d", "defaultdb"], input=script, capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == [expected for _, expected in TEXT_OUTPUT]


# (column type, a value the driver sends, its format, SQLSTATE): bad parameters fail the
# statement only, and the connection goes on.
BAD_PARAMETERS = [
    ("INT2", 70000, "b", "22003"), ("INT4", 2**31, "b", "22003"), ("INT2", "70000", "t", "22003"),
    ("VARCHAR(3)", "abcd", "b", "22001"), ("DECIMAL(5,2)", D("12345.6"), "b", "22003"),
    ("STRING", "nul\x00inside", "b", "22021"), ("DECIMAL", "1e200000", "t", "22003"),
    ("INT8", "12abc", "t", "22P02"), ("DATE", "2024-13-45", "t", "22008"), ("JSONB", "{", "t", "22P02"),
    ("UUID", "not-a-uuid", "t", "22P02"), ("INTERVAL", "99999999999 years", "t", "22008"),
]


class _UnknownTextDumper(psycopg.adapt.Dumper):
    """A str as a text parameter of unspecified type (OID 0), as libpq sends parameters: the
    server reads it with the input function of the type it infers."""
    oid = 0

    def dump(self, obj):
        return obj.encode()


@pytest.mark.parametrize("typ,value,fmt,sqlstate", BAD_PARAMETERS,
                         ids=[f"{t}-{f}-{s}" for t, _, f, s in BAD_PARAMETERS])
def test_bad_parameters_are_refused(node, db, typ, value, fmt, sqlstate):
    node.sql(f"CREATE TABLE bad (v {typ})", database=db)
    with psycopg.crdb.connect(_conninfo(node, db), autocommit=True) as conn:
        with conn.cursor(binary=True) as cur:
            cur.adapters.register_dumper(str, _UnknownTextDumper)
            with pytest.raises(psycopg.Error) as info:
                cur.execute(f"INSERT INTO bad VALUES (%{fmt})", (value,))
            assert info.value.sqlstate == sqlstate, info.value
        assert conn.execute("SELECT count(*) FROM bad").fetchone() == (0,)


# ---- codec properties -----------------------------------------------------------------------

finite_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)


@settings(max_examples=400, deadline=None)
@given(finite_decimals.filter(lambda d: -1000 < d.as_tuple().exponent <= 0 and d.adjusted() < 1000))
def test_numeric_binary_matches_psycopg(value):
    from psycopg.types.numeric import DecimalBinaryDumper
    ours = codecs.encode_numeric(value)
    assert ours == bytes(DecimalBinaryDumper(Decimal).dump(value))
    back = codecs.decode_numeric(ours)
    assert back == value and back.as_tuple().exponent == value.as_tuple().exponent


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_binary_decoders_fail_only_with_sqlstate(raw):
    for typ in (T.INT8, T.INT2, T.FLOAT8, T.BOOL, T.DECIMAL, T.DATE, T.TIMESTAMP, T.TIMESTAMPTZ,
                T.INTERVAL, T.UUID, T.JSONB, T.TIME, T.STRING, T.INT_ARRAY, T.STRING_ARRAY,
                T.array_of(T.DECIMAL)):
        try:
            codecs.binary_decoder(typ)(raw)
        except errors.PgError as exc:
            assert exc.code[:2] in ("22", "42", "0A"), exc


TEXT_TYPES = (T.INT8, T.INT2, T.FLOAT8, T.FLOAT4, T.BOOL, T.DECIMAL, T.decimal(5, 2), T.DATE, T.TIMESTAMP,
              T.TIMESTAMPTZ, T.INTERVAL, T.UUID, T.JSONB, T.TIME, T.BYTES, T.varchar(3), T.INT_ARRAY,
              T.STRING_ARRAY)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[-+ 0-9.eE:PTYMDHS_a-z{},\"\\]{0,30}", fullmatch=True))
def test_text_input_fails_only_with_sqlstate(text):
    for typ in TEXT_TYPES:
        try:
            value = datum.parse_text(text, typ)
        except errors.PgError as exc:
            assert exc.code[:2] in ("22", "42", "0A"), exc
            continue
        # Whatever was accepted prints, and encodes in both formats.
        codecs.text_encoder(typ)(value)
        codecs.binary_encoder(typ)(value)


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False))
def test_float4_text_is_shortest_and_exact(value):
    text = datum.format_float4(value)
    assert struct.unpack(">f", struct.pack(">f", float(text)))[0] == value


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text() |
                    st.decimals(allow_nan=False, allow_infinity=False, places=3),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                                       max_size=4), max_leaves=12))
def test_jsonb_text_roundtrips(value):
    first = datum.Json(value).text
    assert datum.parse_json(first).text == first


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_json_parameters_declared_as_json(crdb_conn, binary):
    """psycopg's Json wrapper declares PostgreSQL's json type (OID 114), whose binary form has no
    version byte; CockroachDB takes it as JSONB."""
    from psycopg.types.json import Json
    value = [1, {"x": "y", "n": 2.5}]
    with crdb_conn.cursor(binary=binary) as cur:
        cur.execute("SELECT %s::JSONB, %s::JSONB = '[1, {\"n\": 2.5, \"x\": \"y\"}]'", (Json(value), Json(value)))
        assert cur.fetchone() == (value, True)
