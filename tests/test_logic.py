"""SQL logic tests in CockroachDB's format, run against a real node through psycopg2.

Each file under tests/logic/ runs in a fresh database of its own on the module's node. A file is
a list of records separated by blank lines:

    statement ok                       the statement succeeds
    statement count 3                  ... and affects (or returns) 3 rows
    statement error <regex>            it fails and the error message matches the regex
    statement error pgcode 42P01 [re]  ... with that SQLSTATE (and optionally a regex over the message,
                                       detail and 'HINT: ' hint)
    query IT[R...] [rowsort|valuesort|nosort|colnames ...]
    SELECT ...
    ----
    1  one                             expected rows, columns separated by whitespace
    query error [pgcode XXXXX] <re>    a query that fails
    let $name                          run a one-value query and remember the value; later
    SELECT ...                         records have $name substituted
    user <name>                        run what follows as that user (root by default; users
                                       other than root connect with their client certificate, so
                                       files use `testuser`, whose certificate the fixtures make)
    # a comment, subtest <name>        ignored

Column types: I integer (INT2/4/8), R decimal or float, F float, B bool, O oid, T anything; a
column's declared type is checked against what the server sent. Values print as their pgwire
text form, with NULL as NULL, booleans as true/false and the empty string as `·`. Expected rows
may also be written one value per line. With `rowsort` or `valuesort` both sides are sorted.

Every file runs twice: on a node over LMDB and on one over the suspending test store (reads that
wait, storage/suspending.py). Set PILLBUG_LOGIC_REWRITE=1 to rewrite the expected output of every
query record from what the server returned (then review the diff); PILLBUG_LOGIC_FILES=a,b runs
only those files.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions
import pytest
from conftest import Node, start_node

LOGIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "logic")
REWRITE = os.environ.get("PILLBUG_LOGIC_REWRITE", "") not in ("", "0", "false")

_ONLY = {f.strip() for f in os.environ.get("PILLBUG_LOGIC_FILES", "").split(",") if f.strip()}
FILES = sorted(f[:-5] for f in os.listdir(LOGIC_DIR) if f.endswith(".test")
               and (not _ONLY or f[:-5] in _ONLY))

# Every value arrives as the server's text, so that what is compared is what a client sees.
_RAW = psycopg2.extensions.new_type(tuple(range(1, 20000)), "PILLBUG_RAW", lambda value, cur: value)

INT_OIDS = {20, 21, 23}
FLOAT_OIDS = {700, 701}
DECIMAL_OIDS = {1700}
OID_OIDS = {26, 24, 2202, 2205, 2206, 4089, 4096}
TYPE_OIDS = {"I": INT_OIDS, "R": DECIMAL_OIDS | FLOAT_OIDS, "F": FLOAT_OIDS, "B": {16}, "O": OID_OIDS}
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")


@dataclass
class Record:
    kind: str  # statement | query | let | user
    line: int
    sql: str = ""
    expect_error: bool = False
    error_code: str | None = None
    error_pattern: str | None = None
    count: int | None = None
    types: str = ""
    sort: str = "nosort"
    colnames: bool = False
    expected: list[str] = field(default_factory=list)
    expected_span: tuple[int, int] | None = None  # lines (0-based, end exclusive) of the result block
    has_separator: bool = False  # the record has its ---- line
    name: str = ""


def _parse_error_spec(spec: str) -> tuple[str | None, str | None]:
    spec = spec.strip()
    code = None
    if spec.startswith("pgcode "):
        _, code, *rest = spec.split(None, 2)
        spec = rest[0] if rest else ""
    elif _SQLSTATE.match(spec.split(" ", 1)[0]) and any(c.isdigit() for c in spec.split(" ", 1)[0]):
        code, _, spec = spec.partition(" ")
    return code, (spec.strip() or None)


def parse_file(path: str) -> tuple[list[str], list[Record]]:
    with open(path) as f:
        lines = f.read().split("\n")
    records: list[Record] = []
    i = 0
    n = len(lines)

    def block(start: int) -> tuple[list[str], int]:
        out = []
        j = start
        while j < n and lines[j].strip() != "":
            out.append(lines[j])
            j += 1
        return out, j

    while i < n:
        raw = lines[i]
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("subtest"):
            i += 1
            continue
        words = line.split()
        head = words[0]
        if head == "user":
            records.append(Record("user", i + 1, name=words[1]))
            i += 1
            continue
        if head == "let":
            body, j = block(i + 1)
            records.append(Record("let", i + 1, sql="\n".join(body), name=words[1]))
            i = j
            continue
        if head == "statement":
            rec = Record("statement", i + 1)
            if words[1] == "error":
                rec.expect_error = True
                rec.error_code, rec.error_pattern = _parse_error_spec(line.split(None, 2)[2] if len(words) > 2 else "")
            elif words[1] == "count":
                rec.count = int(words[2])
            elif words[1] != "ok":
                raise AssertionError(f"{path}:{i + 1}: unknown statement directive {line!r}")
            body, j = block(i + 1)
            rec.sql = "\n".join(body)
            records.append(rec)
            i = j
            continue
        if head == "query":
            rec = Record("query", i + 1)
            if len(words) > 1 and words[1] == "error":
                rec.expect_error = True
                rec.error_code, rec.error_pattern = _parse_error_spec(line.split(None, 2)[2] if len(words) > 2 else "")
            else:
                rec.types = words[1]
                for opt in ",".join(words[2:]).split(","):
                    if not opt:
                        continue
                    if opt in ("rowsort", "valuesort", "nosort"):
                        rec.sort = opt
                    elif opt == "colnames":
                        rec.colnames = True
                    else:
                        raise AssertionError(f"{path}:{i + 1}: unknown query option {opt!r}")
            j = i + 1
            body = []
            while j < n and lines[j].strip() != "" and lines[j].strip() != "----":
                body.append(lines[j])
                j += 1
            rec.sql = "\n".join(body)
            if j < n and lines[j].strip() == "----":
                rec.has_separator = True
                start = j + 1
                expected, j = block(start)
                rec.expected = expected
                rec.expected_span = (start, j)
            elif not rec.expect_error:
                rec.expected_span = (j, j)
            records.append(rec)
            i = j
            continue
        raise AssertionError(f"{path}:{i + 1}: cannot parse {line!r}")
    return lines, records


def format_value(value: str | None, oid: int) -> str:
    if value is None:
        return "NULL"
    if oid == 16:
        return {"t": "true", "f": "false"}.get(value, value)
    if value == "":
        return "·"
    return value


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _align(rows: list[list[str]]) -> list[str]:
    """Rows as lines, columns padded to a common width; a multi-line value continues below."""
    if not rows:
        return []
    widths = [max(len(v.split("\n", 1)[0]) for v in col) for col in zip(*rows)]
    out = []
    for r in rows:
        cells = [v.split("\n") for v in r]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)]
            out.append("  ".join(parts).rstrip())
    return out


class LogicRunner:
    def __init__(self, node, path: str) -> None:
        self.node = node
        self.path = path
        self.name = os.path.basename(path)[:-5]
        self.database = "logic_" + re.sub(r"\W", "_", self.name)
        self.conns: dict[str, object] = {}
        self.user = "root"
        self.vars: dict[str, str] = {}
        self.failures: list[str] = []
        self.rewrites: dict[tuple[int, int], list[str]] = {}

    def conn(self):
        c = self.conns.get(self.user)
        if c is None or c.closed:
            c = self.node.connect(user=self.user, database=self.database)
            psycopg2.extensions.register_type(_RAW, c)
            self.conns[self.user] = c
        return c

    def substitute(self, sql: str) -> str:
        for name, value in sorted(self.vars.items(), key=lambda kv: -len(kv[0])):
            sql = sql.replace(name, value)
        return sql

    def fail(self, rec: Record, message: str) -> None:
        self.failures.append(f"{self.path}:{rec.line}: {message}\n    SQL: {rec.sql.strip()}")

    def run(self) -> None:
        self.node.sql(f"DROP DATABASE IF EXISTS {self.database} CASCADE", f"CREATE DATABASE {self.database}")
        lines, records = parse_file(self.path)
        try:
            for rec in records:
                if rec.kind == "user":
                    self.user = rec.name
                    continue
                self.run_record(rec)
        finally:
            for c in self.conns.values():
                c.close()
            try:
                self.node.sql(f"DROP DATABASE IF EXISTS {self.database} CASCADE")
            except Exception:
                pass
        if REWRITE and self.rewrites:
            self.rewrite(lines)

    def execute(self, sql: str) -> tuple[list[tuple] | None, list, int]:
        cur = self.conn().cursor()
        try:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description is not None else None
            return rows, list(cur.description or []), cur.rowcount
        finally:
            cur.close()

    def run_record(self, rec: Record) -> None:
        sql = self.substitute(rec.sql)
        try:
            rows, description, rowcount = self.execute(sql)
        except psycopg2.Error as exc:
            if self.conn().closed:
                self.conns.pop(self.user, None)
            if not rec.expect_error:
                self.fail(rec, f"unexpected error {exc.pgcode}: {(exc.pgerror or str(exc)).strip()}")
                return
            self.check_error(rec, exc)
            return
        if rec.expect_error:
            self.fail(rec, "expected an error, but the statement succeeded")
            return
        if rec.kind == "let":
            if not rows or len(rows[0]) != 1:
                self.fail(rec, "let needs a query returning one value")
                return
            self.vars[rec.name] = str(rows[0][0])
            return
        if rec.kind == "statement":
            if rec.count is not None and rowcount != rec.count:
                self.fail(rec, f"expected {rec.count} rows affected, got {rowcount}")
            return
        self.check_query(rec, rows or [], description)

    def check_error(self, rec: Record, exc: psycopg2.Error) -> None:
        diag = exc.diag
        message = diag.message_primary or str(exc)
        full = message + ("\n" + diag.message_detail if diag.message_detail else "")
        full += "\nHINT: " + diag.message_hint if diag.message_hint else ""
        if rec.error_code is not None and exc.pgcode != rec.error_code:
            self.fail(rec, f"expected SQLSTATE {rec.error_code}, got {exc.pgcode}: {message}")
        if rec.error_pattern is not None and not re.search(rec.error_pattern, full):
            self.fail(rec, f"error {exc.pgcode} {full!r} does not match {rec.error_pattern!r}")

    def check_query(self, rec: Record, rows: list[tuple], description: list) -> None:
        oids = [d.type_code for d in description]
        if len(rec.types) != len(oids):
            self.fail(rec, f"expected {len(rec.types)} columns ({rec.types}), got {len(oids)}")
            return
        for i, (letter, oid) in enumerate(zip(rec.types, oids)):
            allowed = TYPE_OIDS.get(letter)
            if letter not in "IRFBOT":
                self.fail(rec, f"unknown column type letter {letter!r}")
                return
            if allowed is not None and oid not in allowed and any(r[i] is not None for r in rows):
                self.fail(rec, f"column {i + 1} ({description[i].name}) has type OID {oid}, not {letter}")
        actual = [[format_value(v, oid) for v, oid in zip(r, oids)] for r in rows]
        if rec.sort == "rowsort":
            actual.sort(key=lambda r: _collapse(" ".join(r)))
        elif rec.sort == "valuesort":
            values = sorted(v for r in actual for v in r)
            actual = [[v] for v in values]
        header = [[d.name for d in description]] if rec.colnames else []
        if REWRITE:
            new = _align(header + actual)
            self.rewrites[rec.expected_span] = new if rec.has_separator else ["----"] + new
            return
        got = [_collapse(" ".join(r)) for r in header + actual]
        expected = [_collapse(x) for x in rec.expected]
        if rec.sort == "rowsort":
            body = expected[len(header):]
            expected = expected[:len(header)] + sorted(body)
        elif rec.sort == "valuesort":
            body = expected[len(header):]
            expected = expected[:len(header)] + sorted(body)
        if got == expected:
            return
        if _collapse(" ".join(got)) == _collapse(" ".join(expected)) and \
                any("\n" in v for r in actual for v in r):
            return  # multi-line values (SHOW CREATE) span several expected lines
        flat = [_collapse(v) for r in actual for v in r]
        exp_body = expected[len(header):]
        if got[:len(header)] == expected[:len(header)] and len(flat) == len(exp_body) and \
                (flat == exp_body or (rec.sort != "nosort" and sorted(flat) == sorted(exp_body))):
            return
        shown_expected = "\n      ".join(rec.expected) or "(no rows)"
        shown_got = "\n      ".join(_align(header + actual)) or "(no rows)"
        self.fail(rec, f"wrong result\n    expected:\n      {shown_expected}\n    got:\n      {shown_got}")

    def rewrite(self, lines: list[str]) -> None:
        out: list[str] = []
        i = 0
        spans = sorted(self.rewrites.items())
        for (start, end), new in spans:
            out.extend(lines[i:start])
            out.extend(new)
            i = end
        out.extend(lines[i:])
        with open(self.path, "w") as f:
            f.write("\n".join(out))


# The logic tests run on LMDB and on LMDB behind the suspending test store, where every read waits
# a turn of the loop or a short seeded delay (storage/suspending.py): the same answers must come
# back when other statements run in the middle of a statement's reads.
SUSPENDING = "suspending,max_delay_ms=1,seed=11"


@pytest.fixture(scope="module", params=["lmdb", "suspending"])
def logic_node(request: pytest.FixtureRequest, certs: str) -> Iterator[Node]:
    if request.param == "lmdb":
        yield request.getfixturevalue("node")
        return
    tmp = tempfile.mkdtemp(prefix="pillbug-logic-suspending-")
    node = start_node(tmp, certs, extra_args=[f"--test-store={SUSPENDING}"])
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("name", FILES)
def test_logic(logic_node: Node, name: str) -> None:
    runner = LogicRunner(logic_node, os.path.join(LOGIC_DIR, name + ".test"))
    runner.run()
    if runner.failures:
        pytest.fail(f"{len(runner.failures)} failure(s) in {name}.test:\n" + "\n".join(runner.failures),
                    pytrace=False)
