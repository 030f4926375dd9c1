"""Plan-cache keys (sql/parser/lift.py): which literals become parameters, and the memo by shape.

The table pins what is lifted and what stays in the key. The property test checks the memo: a
statement answered from the memo of its shape (learnt from another statement that differs only
in its digits) gets exactly what a fresh scan of its own text gives.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pillbug.sql.parser import lift

CASES = [
    ("SELECT v FROM t WHERE id = 42", ("SELECT v FROM t WHERE id = $1", [("i", "42")], 0)),
    ("UPDATE t SET v = v + 1 WHERE id = 7", ("UPDATE t SET v = v + $1 WHERE id = $2", [("i", "1"), ("i", "7")], 0)),
    ("SELECT * FROM t2 WHERE x = 1.50", ("SELECT * FROM t2 WHERE x = $1", [("n", "1.50")], 0)),
    ("SELECT 99999999999999999999", ("SELECT $1", [("n", "99999999999999999999")], 0)),
    ("SELECT -9223372036854775808", ("SELECT -9223372036854775808", [], 0)),
    ("SELECT x::DECIMAL(10, 2) FROM t", ("SELECT x::DECIMAL(10, 2) FROM t", [], 0)),
    ("SELECT name FROM t WHERE name = 'it''s' AND id = 3",
     ("SELECT name FROM t WHERE name = $1 AND id = $2", [("s", "it's"), ("i", "3")], 0)),
    ("SELECT DATE '2020-01-01' + 1", ("SELECT DATE '2020-01-01' + $1", [("i", "1")], 0)),
    ("SELECT v FROM t WHERE id = $1 AND k = 5", ("SELECT v FROM t WHERE id = $1 AND k = $2", [("i", "5")], 1)),
    ("SELECT E'\\n'", None),
    ("SELECT 1 -- comment", None),
    ("CREATE TABLE t (id INT)", None),
    ("EXPLAIN SELECT 1", None),
]


@pytest.mark.parametrize("sql, expected", CASES, ids=[c[0][:40] for c in CASES])
def test_lifting(sql, expected):
    lift._shapes.clear()
    assert lift.lift_literals(sql) == expected
    assert lift.lift_literals(sql) == expected  # from the memo the second time


TEMPLATES = [
    "SELECT v FROM t{} WHERE id = {} AND k IN ({}, {})",
    "UPDATE t SET v = v + {} WHERE id = {} RETURNING v{}",
    "SELECT x::VARCHAR({}) FROM t WHERE y > {}.{} LIMIT {}",
    "INSERT INTO t{} VALUES ({}, {}e{}, {})",
    "SELECT {} ORDER BY {}",
]
NUMBER = st.one_of(st.integers(0, 10**25).map(str), st.just("9223372036854775807"), st.just("0"))


@given(st.sampled_from(TEMPLATES), st.lists(NUMBER, min_size=5, max_size=5), st.data())
def test_the_memo_answers_as_a_fresh_scan_would(template, first, data):
    lift._shapes.clear()
    lift.lift_literals(template.format(*first))  # learns the shape
    # Another statement of the same shape: other digits, in the same places.
    second = [data.draw(st.text("0123456789", min_size=len(n), max_size=len(n))) for n in first]
    text = template.format(*second)
    assert text.encode().translate(lift._ZERO_DIGITS) == template.format(*first).encode().translate(lift._ZERO_DIGITS)
    remembered = lift.lift_literals(text)
    lift._shapes.clear()
    assert remembered == lift.lift_literals(text)
