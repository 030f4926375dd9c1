"""COPY formats without a server: the PGCOPY parser (pgwire/copy_binary.py) against the writer
(pgwire/copy_out.py), whatever the chunks; the text and CSV writers against readers of the formats."""
from __future__ import annotations

import csv
import datetime
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillbug.pgwire.copy_binary import HEADER, TRAILER, BinaryCopyParser
from pillbug.pgwire.copy_out import binary_row_encoder, csv_row_encoder, text_row_encoder
from pillbug.sql import types as T
from pillbug.sql.copy import _quoted_flags, _unescape_text
from pillbug.sql.copy_out import CopyOptions
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


text_values = st.none() | st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.none() | st.integers(-2**63, 2**63 - 1), text_values, text_values), max_size=10),
       delimiter=st.sampled_from([",", ";", "|", "1", "a", " ", "\t"]), null=st.sampled_from(["", "NULL", "1", "\\N"]))
def test_csv_and_text_output_read_back(rows, delimiter, null):
    """What COPY TO writes in CSV reads back (Python's csv module) and in text format (the
    COPY FROM unescaping) as the same values, whatever the delimiter and NULL string."""
    if delimiter in null:
        return  # refused: see test_copy_out.py's option errors
    types = [T.INT8, T.STRING, T.STRING]
    opts = CopyOptions(format="csv", delimiter=delimiter, null=null)
    encode = csv_row_encoder(["a", "b", "c"], types, opts, datetime.UTC)
    for row in rows:
        line = encode(row).decode()
        fields = next(csv.reader(io.StringIO(line, newline=""), delimiter=delimiter, strict=True))
        quoted = _quoted_flags(line.rstrip("\n"), delimiter, '"')
        got = [None if f == null and not q else f for f, q in zip(fields, quoted)]
        assert got == [None if v is None else str(v) for v in row]
    if delimiter.isalnum() or null != "\\N":
        return  # text format: refused delimiters; a NULL string that a value can equal is ambiguous
    encode = text_row_encoder(types, CopyOptions(delimiter=delimiter, null=null), datetime.UTC)
    for row in rows:
        line = encode(row).decode()
        assert line.endswith("\n") and "\n" not in line[:-1]
        parts = _split_unescaped(line[:-1], delimiter)
        got = [None if p == null else _unescape_text(p) for p in parts]
        assert got == [None if v is None else str(v) for v in row]


def _split_unescaped(line: str, delimiter: str) -> list[str]:
    """Split at delimiters not preceded by an escaping backslash."""
    parts, current, i = [], [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            current.append(line[i:i + 2])
            i += 2
            continue
        if c == delimiter:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts
