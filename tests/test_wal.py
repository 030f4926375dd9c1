"""The write-ahead log file (storage/wal.py): what a reopened log hands back.

A reopened log must give back exactly the records appended since its last reset, in order,
whatever older records the file still holds from earlier rounds, and nothing of a record whose
write was torn by a crash.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillbug.storage.wal import HEADER_BYTES, LogCorruptError, WriteAheadLog, encode_payload, framed_size

CAPACITY = 1 << 14

_WRITES = st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.one_of(st.none(), st.binary(max_size=40))),
                   max_size=3)
_STEP = st.one_of(st.just("reset"), st.lists(_WRITES, min_size=1, max_size=4))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, max_size=15), torn=st.binary(max_size=30))
def test_a_reopened_log_gives_back_what_was_appended_since_its_reset(tmp_path_factory, steps, torn):
    path = str(tmp_path_factory.mktemp("wal") / "wal.0")
    wal = WriteAheadLog(path, CAPACITY)
    revision = 0
    expected: list[tuple[int, int, list]] = []
    for step in steps:
        if step == "reset":
            wal.reset(revision)
            expected = []
            continue
        records = []
        for writes in step:
            payload = encode_payload((revision + 1) * 7, writes)
            if framed_size(payload) + sum(framed_size(p) for _, p in records) > wal.room():
                break
            revision += 1
            records.append((revision, payload))
            expected.append((revision, revision * 7, [tuple(w) for w in writes]))
        if records:
            wal.append(records)
    end = wal.end
    wal.close()
    if torn and end + len(torn) <= CAPACITY:  # a crash in the middle of the next append
        with open(path, "r+b") as f:
            f.seek(end)
            f.write(torn)
    reopened = WriteAheadLog(path, CAPACITY)
    try:
        got = [(rev, stamp, [tuple(w) for w in writes]) for rev, stamp, writes in reopened.records()]
        assert got == expected
        assert reopened.last == (expected[-1][0] if expected else reopened.base)
    finally:
        reopened.close()


def test_a_new_log_is_preallocated_and_starts_empty(tmp_path):
    wal = WriteAheadLog(str(tmp_path / "wal.0"), CAPACITY)
    try:
        assert os.path.getsize(wal.path) == CAPACITY
        assert list(wal.records()) == [] and wal.base == 0 and wal.room() == CAPACITY - HEADER_BYTES
        wal.append([(1, encode_payload(5, [(b"k", b"v")]))])
        wal.reset(1)
        wal.append([(2, encode_payload(6, [(b"k", None)]))])
        assert os.path.getsize(wal.path) == CAPACITY  # appends never grow the file
    finally:
        wal.close()


def test_a_damaged_header_is_refused(tmp_path):
    path = str(tmp_path / "wal.0")
    WriteAheadLog(path, CAPACITY).close()
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    with pytest.raises(LogCorruptError):
        WriteAheadLog(path, CAPACITY)
