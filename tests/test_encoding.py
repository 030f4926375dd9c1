"""Property tests: key encodings preserve order and round-trip (util/encoding.py)."""
import math
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pillbug.util import encoding as enc

ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=Decimal("-1e30"),
                       max_value=Decimal("1e30"))


@given(ints, ints)
def test_int_order_and_roundtrip(a, b):
    ea, eb = enc.encode_int(a), enc.encode_int(b)
    assert (ea < eb) == (a < b) and (ea == eb) == (a == b)
    assert enc.decode_int(ea, 0) == (a, len(ea))


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_float_order(a, b):
    ea, eb = enc.encode_float(a), enc.encode_float(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)
    assert enc.decode_float(ea, 0)[0] == a


def test_float_nan_sorts_first():
    assert enc.encode_float(math.nan) < enc.encode_float(-math.inf)


@given(decimals, decimals)
@settings(max_examples=300)
def test_decimal_order_and_roundtrip(a, b):
    ea, eb = enc.encode_decimal(a), enc.encode_decimal(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)
    assert enc.decode_decimal(ea, 0)[0] == a


@given(st.text(), st.text())
def test_string_order_and_roundtrip(a, b):
    ea, eb = enc.encode_string(a), enc.encode_string(b)
    assert (ea < eb) == (a.encode() < b.encode())
    assert enc.decode_string(ea, 0) == (a, len(ea))


@given(st.binary(), st.binary())
def test_bytes_descending_inverts_order(a, b):
    ea, eb = enc.invert(enc.encode_bytes(a)), enc.invert(enc.encode_bytes(b))
    assert (ea < eb) == (a > b)


@given(st.lists(st.tuples(ints, st.text()), min_size=2, max_size=8))
def test_composite_keys_sort_like_tuples(rows):
    keys = [enc.encode_int(i) + enc.encode_string(s) for i, s in rows]
    by_key = [r for _, r in sorted(zip(keys, rows))]
    assert by_key == sorted(rows, key=lambda r: (r[0], r[1].encode()))


@given(st.binary(min_size=1).filter(lambda b: b.strip(b"\xff")))
def test_prefix_end_bounds_every_extension(prefix):
    end = enc.prefix_end(prefix)
    assert prefix < end
    assert prefix + b"\xff\xff" < end
