"""Joins against an oracle: random inner and outer joins, with ON conditions and WHERE predicates
over either side, compared with Python's nested-loop evaluation of the same SQL semantics.

The planner picks lookup, hash or nested-loop joins and pushes WHERE predicates into join inputs
when the join type allows; whatever it picks must return exactly these rows.
"""
from __future__ import annotations

import random

import pytest

SEED = 7_2026
N_QUERIES = 100


def cmp(op, x, y):
    if x is None or y is None:
        return None
    return {"=": x == y, "<": x < y, ">": x > y, "<>": x != y}[op]


def and3(values):
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


@pytest.fixture(scope="module")
def tables(node):
    rnd = random.Random(SEED)
    left = [{"id": i, "k": None if rnd.random() < 0.2 else rnd.randint(0, 6), "x": rnd.randint(0, 9)}
            for i in range(1, 31)]
    right = [{"id": i, "k": None if rnd.random() < 0.2 else rnd.randint(0, 6), "y": rnd.randint(0, 9)}
             for i in range(1, 26)]
    node.sql("DROP DATABASE IF EXISTS joinoracle CASCADE", "CREATE DATABASE joinoracle")
    conn = node.connect(database="joinoracle")

    def v(x):
        return "NULL" if x is None else str(x)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE l (id INT PRIMARY KEY, k INT, x INT, INDEX (k))")
        cur.execute("CREATE TABLE r (id INT PRIMARY KEY, k INT, y INT, INDEX (k))")
        cur.execute("INSERT INTO l VALUES " + ", ".join(f"({r['id']}, {v(r['k'])}, {r['x']})" for r in left))
        cur.execute("INSERT INTO r VALUES " + ", ".join(f"({r['id']}, {v(r['k'])}, {r['y']})" for r in right))
    yield conn, left, right, rnd
    conn.close()
    node.sql("DROP DATABASE IF EXISTS joinoracle CASCADE")


def join(kind, left, right, on):
    out = []
    matched_right = set()
    for lr in left:
        hit = False
        for rr in right:
            if on(lr, rr) is True:
                hit = True
                matched_right.add(rr["id"])
                out.append((lr, rr))
        if not hit and kind in ("LEFT", "FULL"):
            out.append((lr, None))
    if kind in ("RIGHT", "FULL"):
        out.extend((None, rr) for rr in right if rr["id"] not in matched_right)
    return out


def col(side, name):
    return lambda lr, rr: (lr if side == "l" else rr)[name] if (lr if side == "l" else rr) is not None else None


def random_predicate(rnd):
    side = rnd.choice("lr")
    name = rnd.choice(["k", "x" if side == "l" else "y", "id"])
    op = rnd.choice(["=", "<", ">", "<>"])
    value = rnd.randint(0, 9)
    get = col(side, name)
    if rnd.random() < 0.15:
        return f"{side}.{name} IS NULL", lambda lr, rr: get(lr, rr) is None
    return f"{side}.{name} {op} {value}", lambda lr, rr: cmp(op, get(lr, rr), value)


def test_joins_match_the_oracle(tables):
    conn, left, right, rnd = tables
    for _ in range(N_QUERIES):
        kind = rnd.choice(["INNER", "LEFT", "RIGHT", "FULL", "INNER", "LEFT"])
        on_sql = ["l.k = r.k"]
        on_fns = [lambda lr, rr: cmp("=", lr["k"], rr["k"])]
        if rnd.random() < 0.3:
            text, fn = random_predicate(rnd)
            on_sql.append(text)
            on_fns.append(fn)
        where = [random_predicate(rnd) for _ in range(rnd.randint(0, 2))]
        sql = (f"SELECT l.id, r.id FROM l {kind} JOIN r ON {' AND '.join(on_sql)}"
               + (f" WHERE {' AND '.join(w[0] for w in where)}" if where else ""))
        pairs = join(kind, left, right, lambda lr, rr, fns=on_fns: and3([f(lr, rr) for f in fns]))
        expected = [((lr["id"] if lr else None), (rr["id"] if rr else None)) for lr, rr in pairs
                    if and3([w[1](lr, rr) for w in where]) is True]
        with conn.cursor() as cur:
            cur.execute(sql)
            got = sorted(cur.fetchall(), key=lambda t: (t[0] is None, t[0] or 0, t[1] is None, t[1] or 0))
        expected.sort(key=lambda t: (t[0] is None, t[0] or 0, t[1] is None, t[1] or 0))
        assert got == expected, sql


def test_comma_joins_match_the_oracle(tables):
    conn, left, right, rnd = tables
    for _ in range(N_QUERIES // 2):
        where = [("l.k = r.k", lambda lr, rr: cmp("=", lr["k"], rr["k"]))] + \
                [random_predicate(rnd) for _ in range(rnd.randint(0, 2))]
        sql = f"SELECT l.id, r.id FROM l, r WHERE {' AND '.join(w[0] for w in where)}"
        expected = sorted((lr["id"], rr["id"]) for lr in left for rr in right
                          if and3([w[1](lr, rr) for w in where]) is True)
        with conn.cursor() as cur:
            cur.execute(sql)
            assert sorted(cur.fetchall()) == expected, sql
