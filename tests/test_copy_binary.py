"""The PGCOPY parser (pgwire/copy_binary.py) against the writer (pgwire/copy_out.py), without a
server: any rows, written and cut into any chunks, parse back to the same rows."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillbug.pgwire.copy_binary import HEADER, TRAILER, BinaryCopyParser
from pillbug.pgwire.copy_out import binary_row_encoder
from pillbug.sql import types as T
from pillbug.util import errors

TYPES = [T.INT8, T.STRING, T.BOOL]
rows_strategy = st.lists(st.tuples(st.none() | st.integers(-2**63, 2**63 - 1),
                                   st.none() | st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                                              blacklist_categories=("Cs",))),
                                   st.none() | st.booleans()), max_size=30)


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_written_rows_parse_back_whatever_the_chunks(rows, cuts):
    encode = binary_row_encoder(TYPES)
    stream = HEADER + b"".join(encode(r) for r in rows) + TRAILER
    got: list = []
    parser = BinaryCopyParser(TYPES, got.append)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in zip(points, points[1:]):
        parser.feed(stream[start:end])
    parser.finish()
    assert [tuple(r) for r in got] == rows
    assert not parser.buf  # nothing is kept once the stream is done


def test_parser_keeps_only_the_item_in_progress():
    got: list = []
    parser = BinaryCopyParser([T.STRING], got.append)
    parser.feed(HEADER + b"\x00\x01" + struct.pack(">i", 1000) + b"x" * 10)
    assert len(parser.buf) == 10  # the field's bytes so far, nothing before them
    parser.feed(b"x" * 990)
    assert got == [["x" * 1000]] and not parser.buf
    with pytest.raises(errors.PgError) as info:
        parser.finish()  # no trailer is fine at a tuple boundary; mid-tuple it is not
        parser.feed(b"\x00")
        parser.finish()
    assert info.value.code == "22P04"
