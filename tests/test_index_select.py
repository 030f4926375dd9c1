"""Index selection against an oracle: random predicates over a table with ascending, descending,
composite, unique, nullable and covering indexes, each query run through every index (hints) and
compared with the rows Python's own evaluation of the predicate picks out of the same data.

Spans, reverse scans, IN/OR point sets, range bounds over NULLs and covering reads all have to
agree with a plain filter over every row; a seed makes a failure reproducible.
"""
from __future__ import annotations

import random

import pytest

SEED = 20261126
N_ROWS = 240
N_QUERIES = 80

COLUMNS = ("a", "b", "c", "d")
INDEXES = ["t_pkey", "t_a_idx", "t_b_a_idx", "t_c_key", "t_d_a_idx"]


def make_rows(rnd: random.Random) -> list[dict]:
    rows = []
    cs = rnd.sample(range(-500, 500), N_ROWS)
    for i in range(1, N_ROWS + 1):
        rows.append({
            "id": i,
            "a": None if rnd.random() < 0.15 else rnd.randint(-5, 5),
            "b": None if rnd.random() < 0.15 else rnd.choice(["", "a", "ab", "b", "ba", "c", "z"]),
            "c": None if rnd.random() < 0.1 else cs[i - 1] / 4,
            "d": rnd.randint(0, 3),
        })
    return rows


def sql_value(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v + "'"
    return repr(v)


def domain(rnd: random.Random, col: str):
    return {"a": lambda: rnd.randint(-6, 6), "b": lambda: rnd.choice(["", "a", "ab", "b", "bb", "c", "zz"]),
            "c": lambda: rnd.randint(-130, 130) / 2, "d": lambda: rnd.randint(-1, 4)}[col]()


def cmp(op: str, x, y):
    if x is None or y is None:
        return None
    return {"=": x == y, "<>": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def and3(values):
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def or3(values):
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def random_atom(rnd: random.Random):
    """(SQL text, evaluate(row) -> True/False/None)."""
    col = rnd.choice(COLUMNS + ("id",))
    if col == "id":
        pick = lambda: rnd.randint(-5, N_ROWS + 5)  # noqa: E731
    else:
        pick = lambda: domain(rnd, col)  # noqa: E731
    kind = rnd.random()
    if kind < 0.45:
        op = rnd.choice(["=", "=", "<", "<=", ">", ">=", "<>"])
        v = pick()
        return f"{col} {op} {sql_value(v)}", lambda r: cmp(op, r[col], v)
    if kind < 0.6:
        vs = [pick() for _ in range(rnd.randint(1, 4))] + ([None] if rnd.random() < 0.2 else [])
        text = f"{col} IN ({', '.join(sql_value(v) for v in vs)})"
        return text, lambda r: or3([cmp("=", r[col], v) for v in vs])
    if kind < 0.72:
        lo, hi = sorted([pick(), pick()], key=lambda x: (x is None, x))
        return f"{col} BETWEEN {sql_value(lo)} AND {sql_value(hi)}", \
            lambda r: and3([cmp(">=", r[col], lo), cmp("<=", r[col], hi)])
    if kind < 0.84:
        v1, v2 = pick(), pick()
        return f"({col} = {sql_value(v1)} OR {col} = {sql_value(v2)})", \
            lambda r: or3([cmp("=", r[col], v1), cmp("=", r[col], v2)])
    neg = rnd.random() < 0.5
    return f"{col} IS {'NOT ' if neg else ''}NULL", lambda r: (r[col] is not None) if neg else (r[col] is None)


@pytest.fixture(scope="module")
def data(node):
    rnd = random.Random(SEED)
    rows = make_rows(rnd)
    node.sql("DROP DATABASE IF EXISTS idxsel CASCADE", "CREATE DATABASE idxsel")
    conn = node.connect(database="idxsel")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, a INT, b STRING, c FLOAT, d INT NOT NULL, "
                    "INDEX t_a_idx (a), INDEX t_b_a_idx (b DESC, a), UNIQUE INDEX t_c_key (c), "
                    "INDEX t_d_a_idx (d, a DESC) STORING (b))")
        values = ", ".join(f"({r['id']}, {sql_value(r['a'])}, {sql_value(r['b'])}, {sql_value(r['c'])}, {r['d']})"
                           for r in rows)
        cur.execute(f"INSERT INTO t VALUES {values}")
    yield conn, rows, rnd
    conn.close()
    node.sql("DROP DATABASE IF EXISTS idxsel CASCADE")


def run(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_every_index_returns_what_a_filter_returns(data):
    conn, rows, rnd = data
    for _ in range(N_QUERIES):
        atoms = [random_atom(rnd) for _ in range(rnd.randint(1, 3))]
        where = " AND ".join(a[0] for a in atoms)
        expected = sorted(r["id"] for r in rows if and3([a[1](r) for a in atoms]) is True)
        for hint in [None, *INDEXES]:
            table = "t" if hint is None else f"t@{hint}"
            got = [r[0] for r in run(conn, f"SELECT id FROM {table} WHERE {where} ORDER BY id")]
            assert got == expected, f"{table} WHERE {where}"
            # the columns an index stores (covering reads) must be the row's own
            got_rows = run(conn, f"SELECT id, a, d FROM {table} WHERE {where} ORDER BY id")
            assert got_rows == [(r["id"], r["a"], r["d"]) for r in rows if r["id"] in set(expected)], \
                f"{table} WHERE {where}"


def _sort_key(col: str, desc: bool):
    # CockroachDB: NULLs first ascending, last descending; ties broken by id ascending
    def key(r):
        v = r[col]
        null_rank = 0 if v is None else 1
        return (null_rank, v if v is not None else 0)
    return key


@pytest.mark.parametrize("col, desc", [("a", False), ("a", True), ("b", True), ("b", False), ("d", False),
                                       ("id", True), ("c", False)])
def test_ordered_reads_through_indexes(data, col, desc):
    conn, rows, rnd = data
    for limit in (1, 7, 50):
        for hint in [None, *INDEXES]:
            table = "t" if hint is None else f"t@{hint}"
            got = run(conn, f"SELECT id, {col} FROM {table} ORDER BY {col} {'DESC' if desc else 'ASC'}, id "
                            f"LIMIT {limit}")
            ordered = sorted(rows, key=lambda r: r["id"])
            ordered = sorted(ordered, key=_sort_key(col, desc), reverse=desc)
            if desc:
                # reverse=True flipped the id tie-break; restore ascending ids within equal values
                groups: dict = {}
                for r in ordered:
                    groups.setdefault(r[col], []).append(r)
                ordered = [r for v in dict.fromkeys(r[col] for r in ordered) for r in sorted(groups[v], key=lambda x: x["id"])]
            expected = [(r["id"], r[col]) for r in ordered[:limit]]
            assert got == expected, f"{table} ORDER BY {col} {'DESC' if desc else ''} LIMIT {limit}"
