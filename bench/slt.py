"""`python -m bench.slt`: Pillbug measured against SQLite's sqllogictest corpus (../shared/slt).

The corpus is an outside measuring stick: 30 files of SQLite's public-domain sqllogictest records
whose expected results come from SQLite. This module parses the format (statement ok|error, query
<types> <sort> [label], `----`, hash-threshold and "N values hashing to <md5>", skipif/onlyif,
halt), renders result values the way the reference runner does (I: %d, R: %.3f, T: text with
non-printable bytes as @, NULL, (empty)), sorts (nosort, rowsort, valuesort), hashes (MD5 over
every rendered value followed by "\\n", after sorting), checks labels (every query with one label
must give the same results), and counts per file: passed, failed by cause, skipped by condition.

Pillbug runs the records as the engine named `postgresql` would (the corpus's README says a
PostgreSQL-compatible engine should): `skipif postgresql` records are skipped, `onlyif X` records
for any other X are skipped. `cockroachdb` is honoured the same way, though the corpus never names
it. The run starts one secure `pillbug start-single-node` (bench/servers.py), gives every file a
fresh database and ONE psycopg2 connection (autocommit, simple query protocol: no parameters, so
psycopg2 sends the text as it is), and bounds every statement with `SET statement_timeout` (plus a
client-side cancel a little later, in case the server's own deadline does not fire).

A failure is classified by what happened, not by guesses about why: a statement that should
succeed failed (SQLSTATE and the start of the message, with names and numbers blanked so that
like errors group), a statement that should fail succeeded, a query error, a wrong result, a label
mismatch, a timeout. Errors of a query or statement that come after a failed `statement ok` in the
same file and say a relation is missing (42P01) are counted as "after failed setup", since they
follow from the earlier failure rather than being causes of their own.

Like the rest of bench/, this talks to the server only as a client does and imports nothing from
`pillbug`. The parsing, rendering and hashing are plain functions, tested without a server
(tests/test_slt.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import decimal
import fnmatch
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("PILLBUG_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
DEFAULT_SLT_DIR = os.path.join(SHARED, "slt")
DEFAULT_REPORT = os.path.join(REPO, "docs", "slt.md")
DEFAULT_JSON = os.path.join(REPO, "bench", "slt_results.json")
# The engine names a record's skipif/onlyif conditions are matched against (see the docstring).
ENGINES = frozenset({"postgresql", "cockroachdb"})
DEFAULT_TIMEOUT = 10.0
# The client cancels a statement this long after the server's own statement_timeout should have.
CLIENT_GRACE = 5.0
REPORT_BEGIN = "<!-- slt-report:begin (written by python -m bench.slt --report) -->"
REPORT_END = "<!-- slt-report:end -->"
HASH_LINE = re.compile(r"^(\d+) values hashing to ([0-9a-f]{32})$")
TIMEOUT_CAUSE = "timeout"
AFTER_SETUP = "after failed setup"
NOT_RUN = "not run: too many timeouts in the file"
DEFAULT_MAX_TIMEOUTS = 5
UNDEFINED_TABLE = "42P01"


# ---- parsing --------------------------------------------------------------------------------------

@dataclass
class Record:
    """One `statement` or `query` record, or a control line (`hash-threshold`, `halt`)."""
    kind: str  # "statement", "query", "hash-threshold", "halt"
    line: int  # 1-based line of the record's first line (after its conditions)
    conditions: list[tuple[str, str]] = field(default_factory=list)  # ("skipif"|"onlyif", engine)
    sql: str = ""
    expect_ok: bool = True  # statements: ok or error
    types: str = ""  # queries: one letter per column
    sort: str = "nosort"
    label: str | None = None
    expected: list[str] | None = None  # queries: the lines after ----, None without ----
    threshold: int = 0  # hash-threshold

    @property
    def is_test(self) -> bool:
        return self.kind in ("statement", "query")


class ParseError(ValueError):
    """A line the format does not allow, with its file and line number."""


def parse(text: str, name: str = "<string>") -> list[Record]:
    """Records of one file, in order. CRLF or LF lines; `#` lines are comments; blank lines end a record."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    records: list[Record] = []
    conditions: list[tuple[str, str]] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i].rstrip()
        lineno = i + 1
        i += 1
        if not line.strip() or line.startswith("#"):
            if not line.strip():
                conditions = []  # a condition belongs to the record right below it
            continue
        words = line.split()
        head = words[0]
        if head in ("skipif", "onlyif"):
            if len(words) < 2:
                raise ParseError(f"{name}:{lineno}: {head} without an engine")
            conditions.append((head, words[1]))
            continue
        if head == "halt":
            records.append(Record("halt", lineno, conditions))
            conditions = []
            continue
        if head == "hash-threshold":
            if len(words) != 2 or not words[1].isdigit():
                raise ParseError(f"{name}:{lineno}: hash-threshold needs one number")
            records.append(Record("hash-threshold", lineno, conditions, threshold=int(words[1])))
            conditions = []
            continue
        if head not in ("statement", "query"):
            raise ParseError(f"{name}:{lineno}: unknown record {line!r}")
        body: list[str] = []
        expected: list[str] | None = None
        while i < n and lines[i].strip():
            if lines[i].rstrip() == "----" and head == "query":
                expected = []
                i += 1
                while i < n and lines[i].strip():
                    expected.append(lines[i].rstrip())
                    i += 1
                break
            body.append(lines[i].rstrip())
            i += 1
        record = Record(head, lineno, conditions, sql="\n".join(body).strip())
        conditions = []
        if head == "statement":
            if len(words) < 2 or words[1] not in ("ok", "error"):
                raise ParseError(f"{name}:{lineno}: statement needs ok or error")
            record.expect_ok = words[1] == "ok"
        else:
            if len(words) < 2 or not re.fullmatch(r"[ITR]+", words[1]):
                raise ParseError(f"{name}:{lineno}: query needs column types (I, R, T)")
            record.types = words[1]
            if len(words) > 2:
                if words[2] not in ("nosort", "rowsort", "valuesort"):
                    raise ParseError(f"{name}:{lineno}: unknown sort mode {words[2]!r}")
                record.sort = words[2]
            if len(words) > 3:
                record.label = words[3]
            record.expected = expected
        if not record.sql:
            raise ParseError(f"{name}:{lineno}: {head} without SQL")
        records.append(record)
    return records


def applies(conditions: list[tuple[str, str]], engines: frozenset[str] = ENGINES) -> bool:
    """Whether a record with these conditions runs on an engine known by any of `engines`."""
    for kind, engine in conditions:
        if kind == "skipif" and engine in engines:
            return False
        if kind == "onlyif" and engine not in engines:
            return False
    return True


# ---- rendering, sorting, hashing --------------------------------------------------------------------

def _printable(text: str) -> str:
    # The reference runner replaces every byte outside ' '..'~' of the UTF-8 text with '@'.
    if text.isascii() and text.isprintable():
        return text
    return "".join(chr(b) if 0x20 <= b <= 0x7E else "@" for b in text.encode("utf-8"))


def _leading_number(text: str) -> float:
    # SQLite's text-to-number conversion for a text value read as a number: the longest numeric
    # prefix, 0 if none.
    m = re.match(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text)
    return float(m.group(0)) if m else 0.0


def render_value(value: object, kind: str) -> str:
    """One value as the reference runner prints it for a column of type I, R or T."""
    if value is None:
        return "NULL"
    if kind == "I":
        # printf("%d") of the value read as a 64-bit integer: a fraction is truncated toward zero.
        return str(int(_number(value)))
    if kind == "R":
        return f"{float(_number(value)):.3f}"
    text = value if isinstance(value, str) else _text_of(value)
    if text == "":
        return "(empty)"
    return _printable(text)


def _number(value: object) -> int | float | decimal.Decimal:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal):
        return value if value.is_finite() else 0
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else 0
    return _leading_number(_text_of(value))


def _text_of(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, memoryview | bytes):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def render_rows(rows: list[tuple], types: str, sort: str) -> list[str]:
    """The result's values, one per entry, rendered and sorted as the record's sort mode says."""
    rendered = [[render_value(v, types[j] if j < len(types) else "T") for j, v in enumerate(row)] for row in rows]
    if sort == "rowsort":
        rendered.sort()  # row by row, column by column, as strcmp (all values are ASCII now)
    values = [v for row in rendered for v in row]
    if sort == "valuesort":
        values.sort()
    return values


def hash_values(values: list[str]) -> str:
    md5 = hashlib.md5()
    for v in values:
        md5.update(v.encode("utf-8"))
        md5.update(b"\n")
    return md5.hexdigest()


def matches_expected(values: list[str], expected: list[str]) -> bool:
    """Whether rendered values match a record's expected lines (values, or one hash line)."""
    if len(expected) == 1:
        m = HASH_LINE.match(expected[0])
        if m:
            return len(values) == int(m.group(1)) and hash_values(values) == m.group(2)
    return values == expected


# ---- classification -------------------------------------------------------------------------------

def normalise_message(message: str, width: int = 60, keep_token: bool = False) -> str:
    """The start of an error message with names and numbers blanked, so that like errors group.
    `keep_token`: a syntax error's first quoted token stays (upper-cased), since it names the cause."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    kept = ""
    if keep_token:
        m = re.match(r'([^"]*)"([^"]*)"', first)
        if m:
            kept = m.group(1) + '"' + m.group(2).upper() + '"'
            first = first[m.end():]
    first = re.sub(r'"[^"]*"', '"…"', first)
    first = re.sub(r"'[^']*'", "'…'", first)
    first = re.sub(r"\b\d+\b", "N", first)  # numbers, not the digits of a type name (float4)
    return (kept + first)[:width]


def error_cause(prefix: str, sqlstate: str | None, message: str) -> str:
    if sqlstate == "57014" and "timeout" in message:
        return TIMEOUT_CAUSE
    return f"{prefix}: {sqlstate or '?'} {normalise_message(message, keep_token=sqlstate == '42601')}"


# ---- running one file -----------------------------------------------------------------------------

@dataclass
class FileResult:
    name: str
    records: int = 0  # statement and query records reached (up to --max-records)
    skipped: int = 0  # by skipif/onlyif
    passed: int = 0
    failed: int = 0
    seconds: float = 0.0
    halted: bool = False
    error: str = ""  # why the file stopped early, if it did
    causes: Counter = field(default_factory=Counter)
    examples: dict[str, dict] = field(default_factory=dict)  # cause -> first example

    @property
    def run(self) -> int:
        return self.passed + self.failed

    def fail(self, cause: str, record: Record, detail: str = "") -> None:
        self.failed += 1
        self.causes[cause] += 1
        if cause not in self.examples:
            self.examples[cause] = {"line": record.line, "sql": record.sql[:2000], "detail": detail[:500]}

    def to_json(self) -> dict:
        return {"file": self.name, "records": self.records, "skipped": self.skipped, "run": self.run,
                "passed": self.passed, "failed": self.failed, "seconds": round(self.seconds, 2),
                "halted": self.halted, "error": self.error, "causes": dict(self.causes.most_common()),
                "examples": self.examples}


class _Watchdog:
    """Cancels the connection's statement if it outlives the server's own statement_timeout."""

    def __init__(self, conn, seconds: float) -> None:
        self.timer = threading.Timer(seconds, self._cancel, args=(conn,))
        self.timer.daemon = True
        self.fired = False

    def _cancel(self, conn) -> None:
        self.fired = True
        try:
            conn.cancel()
        except psycopg2.Error:
            pass

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.timer.cancel()


def _execute(conn, sql: str, timeout: float) -> tuple[list[tuple] | None, psycopg2.Error | None, bool]:
    """Runs one statement; returns its rows (None if it returns none), its error, and whether the
    client had to cancel it."""
    with _Watchdog(conn, timeout + CLIENT_GRACE) as dog, conn.cursor() as cur:
        try:
            cur.execute(sql)
            return (cur.fetchall() if cur.description is not None else None), None, dog.fired
        except psycopg2.Error as exc:
            return None, exc, dog.fired


def run_records(conn, records: list[Record], result: FileResult, timeout: float,
                max_records: int | None = None, engines: frozenset[str] = ENGINES,
                max_timeouts: int | None = None) -> None:
    """Runs a file's records on `conn` (autocommit, in the file's own database), counting into `result`.

    After `max_timeouts` timeouts in the file, its remaining records are not run but counted as
    failed (NOT_RUN): select5's joins grow from 4 to 64 tables, and once joins of some size time
    out the larger ones would too, each costing the full timeout.
    """
    setup_failed = False
    labels: dict[str, str] = {}
    for record in records:
        if max_timeouts is not None and result.causes[TIMEOUT_CAUSE] >= max_timeouts and record.is_test:
            if max_records is not None and result.records >= max_records:
                return
            result.records += 1
            if applies(record.conditions, engines):
                result.fail(NOT_RUN, record)
            else:
                result.skipped += 1
            continue
        if record.kind == "halt":
            if applies(record.conditions, engines):
                result.halted = True
                return
            continue
        if record.kind == "hash-threshold":
            continue  # the expected lines say whether a result is hashed
        if max_records is not None and result.records >= max_records:
            return
        result.records += 1
        if not applies(record.conditions, engines):
            result.skipped += 1
            continue
        rows, error, client_cancel = _execute(conn, record.sql, timeout)
        if conn.closed:
            raise ConnectionError(f"connection lost at line {record.line}: {error}")
        if client_cancel and error is not None:
            result.fail(TIMEOUT_CAUSE, record, "canceled by the client: the server's statement_timeout did not fire")
            continue
        if record.kind == "statement":
            if error is None and record.expect_ok or error is not None and not record.expect_ok:
                result.passed += 1
            elif error is not None:
                cause = error_cause("statement failed", error.pgcode, str(error))
                if setup_failed and error.pgcode == UNDEFINED_TABLE:
                    cause = f"{AFTER_SETUP} ({UNDEFINED_TABLE})"
                result.fail(cause, record, str(error).strip())
                setup_failed = True
            else:
                result.fail("statement succeeded, error expected", record)
            continue
        if error is not None:
            cause = error_cause("query error", error.pgcode, str(error))
            if setup_failed and error.pgcode == UNDEFINED_TABLE:
                cause = f"{AFTER_SETUP} ({UNDEFINED_TABLE})"
            result.fail(cause, record, str(error).strip())
            continue
        rows = rows or []
        values = render_rows(rows, record.types, record.sort)
        if rows and len(rows[0]) != len(record.types):
            result.fail("wrong result: column count", record, f"{len(rows[0])} columns, types {record.types}")
            continue
        if record.expected is not None and not matches_expected(values, record.expected):
            result.fail("wrong result", record, _difference(values, record.expected))
            continue
        if record.label is not None:
            digest = hash_values(values)
            if labels.setdefault(record.label, digest) != digest:
                result.fail("wrong result: label mismatch", record, f"label {record.label}")
                continue
        result.passed += 1


def _difference(values: list[str], expected: list[str]) -> str:
    m = HASH_LINE.match(expected[0]) if len(expected) == 1 else None
    if m:
        return f"expected {expected[0]}; got {len(values)} values hashing to {hash_values(values)}"
    if len(values) != len(expected):
        return f"expected {len(expected)} values {expected[:8]}; got {len(values)} {values[:8]}"
    for want, got in zip(expected, values):
        if want != got:
            return f"expected {want!r}, got {got!r} (first difference)"
    return ""


# ---- the run --------------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"slt {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_file(endpoint, path: str, index: int, timeout: float, max_records: int | None,
             max_timeouts: int | None = DEFAULT_MAX_TIMEOUTS) -> FileResult:
    """One file in a fresh database over one connection; the database is dropped afterwards."""
    name = os.path.basename(path)
    result = FileResult(name)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        records = parse(f.read(), name)
    database = f"slt_{index}"
    admin = endpoint.connect()
    began = time.monotonic()
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} CASCADE")
            cur.execute(f"CREATE DATABASE {database}")
        conn = dataclasses.replace(endpoint, database=database).connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = '{int(timeout * 1000)}ms'")
            run_records(conn, records, result, timeout, max_records, max_timeouts=max_timeouts)
        except ConnectionError as exc:
            result.error = str(exc)
        finally:
            conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} CASCADE")
    finally:
        admin.close()
        result.seconds = time.monotonic() - began
    return result


def select_files(directory: str, pattern: str | None) -> list[str]:
    names = sorted(n for n in os.listdir(directory) if n.endswith(".test"))
    if pattern:
        patterns = [p.strip() for p in pattern.split(",") if p.strip()]
        names = [n for n in names if any(fnmatch.fnmatch(n, p) or p in n for p in patterns)]
    return [os.path.join(directory, n) for n in names]


def pass_rate(passed: int, run: int) -> float:
    return 100.0 * passed / run if run else 0.0


def totals(results: list[FileResult]) -> FileResult:
    total = FileResult("total")
    for r in results:
        total.records += r.records
        total.skipped += r.skipped
        total.passed += r.passed
        total.failed += r.failed
        total.seconds += r.seconds
        total.causes.update(r.causes)
        for cause, example in r.examples.items():
            total.examples.setdefault(cause, {**example, "file": r.name})
    return total


def markdown(results: list[FileResult], meta: dict) -> str:
    """The generated part of docs/slt.md: the run's settings, the per-file table and the overall figures."""
    total = totals(results)
    out = [f"Run of {meta['date']} on commit `{meta['commit']}`: {len(results)} files, "
           f"statement_timeout {meta['timeout']:g} s, "
           + (f"a file stopped after {meta['max_timeouts']} timeouts, " if meta["max_timeouts"] else "")
           + (f"at most {meta['max_records']:,} records per file" if meta["max_records"] else "every record")
           + f", {total.seconds / 60:.1f} min in all.", "",
           f"**Overall: {total.passed:,} of {total.run:,} records run passed "
           f"({pass_rate(total.passed, total.run):.1f} %)**; {total.skipped:,} skipped by skipif/onlyif, "
           f"{total.records:,} reached.", "",
           "| file | records | skipped | run | passed | passed % | s | top failure causes (count) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        causes = "; ".join(f"{_md(c)} ({k:,})" for c, k in r.causes.most_common(3)) or "–"
        if r.error:
            causes += f"; stopped: {_md(r.error[:100])}"
        out.append(f"| {r.name} | {r.records:,} | {r.skipped:,} | {r.run:,} | {r.passed:,} | "
                   f"{pass_rate(r.passed, r.run):.1f} | {r.seconds:.0f} | {causes} |")
    out.append(f"| **total** | {total.records:,} | {total.skipped:,} | {total.run:,} | {total.passed:,} | "
               f"**{pass_rate(total.passed, total.run):.1f}** | {total.seconds:.0f} | |")
    out += ["", "Failure causes across the corpus (all of them, most frequent first):", "",
            "| cause | records | first example (file:line) |", "| --- | ---: | --- |"]
    for cause, count in total.causes.most_common():
        ex = total.examples[cause]
        out.append(f"| {_md(cause)} | {count:,} | {ex['file']}:{ex['line']} |")
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(path: str, generated: str) -> None:
    """Replaces the generated part of the page between its markers; the hand-written rest stays."""
    block = f"{REPORT_BEGIN}\n{generated}{REPORT_END}"
    if os.path.exists(path):
        with open(path) as f:
            page = f.read()
        if REPORT_BEGIN in page and REPORT_END in page:
            start = page.index(REPORT_BEGIN)
            end = page.index(REPORT_END) + len(REPORT_END)
            page = page[:start] + block + page[end:]
        else:
            page = page.rstrip("\n") + "\n\n" + block + "\n"
    else:
        page = f"# Pillbug against SQLite's sqllogictest corpus\n\n{block}\n"
    with open(path, "w") as f:
        f.write(page)


def commit_id() -> str:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "pillbug"],
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def results_document(meta: dict, results: list[FileResult], complete: bool) -> dict:
    return {"meta": {**meta, "complete": complete}, "total": totals(results).to_json(),
            "files": [r.to_json() for r in results]}


def write_json(path: str, meta: dict, results: list[FileResult], complete: bool) -> None:
    with open(path, "w") as f:
        json.dump(results_document(meta, results, complete), f, indent=1)
        f.write("\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.slt",
                                description="Run SQLite's sqllogictest files against a Pillbug node it starts.")
    p.add_argument("--dir", default=DEFAULT_SLT_DIR, help=f"the corpus (default {DEFAULT_SLT_DIR})")
    p.add_argument("--files", help="comma-separated file name patterns (fnmatch or substring)")
    p.add_argument("--max-records", type=int, help="at most this many records per file (default: all)")
    p.add_argument("--timeout-per-statement", type=float, default=DEFAULT_TIMEOUT,
                   help=f"statement_timeout in seconds (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--max-timeouts", type=int, default=DEFAULT_MAX_TIMEOUTS,
                   help="after this many timeouts in a file, count its remaining records as failed without "
                        f"running them (default {DEFAULT_MAX_TIMEOUTS}; 0: run everything)")
    p.add_argument("--report", action="store_true", help="write the table into docs/slt.md")
    p.add_argument("--report-path", default=DEFAULT_REPORT, help="the page --report writes")
    p.add_argument("--json", default=DEFAULT_JSON, help=f"where the JSON results go (default {DEFAULT_JSON}; "
                                                        "'-' for stdout)")
    p.add_argument("--keep", action="store_true", help="keep the run's temporary directory (store, log)")
    args = p.parse_args(argv)
    if args.max_records is not None and args.max_records < 1 or args.timeout_per_statement <= 0:
        p.error("--max-records and --timeout-per-statement must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.servers import PillbugServer, ServerError, make_pki

    args = parse_args(argv)
    # A `kill` of the run still stops the node and removes the temporary directory (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.path.isdir(args.dir):
        print(f"no sqllogictest corpus at {args.dir} (put the shared folder beside the checkout as ../shared "
              "or set PILLBUG_SHARED)", file=sys.stderr)
        return 2
    files = select_files(args.dir, args.files)
    if not files:
        print(f"no .test files in {args.dir} match {args.files!r}", file=sys.stderr)
        return 2
    meta = {"date": datetime.date.today().isoformat(), "commit": commit_id(), "timeout": args.timeout_per_statement,
            "max_records": args.max_records, "max_timeouts": args.max_timeouts, "engines": sorted(ENGINES)}
    work = tempfile.mkdtemp(prefix="pillbug-slt-")
    results: list[FileResult] = []
    try:
        pki = make_pki(work)
        with PillbugServer(os.path.join(work, "pillbug"), pki) as server:
            endpoint = server.start()
            meta["version"] = server.version
            log(f"pillbug on port {endpoint.port}; {len(files)} files")
            for index, path in enumerate(files):
                if server.proc is None or server.proc.poll() is not None:
                    # Counted, not hidden: the files left are reported with the reason and no records.
                    results.append(FileResult(os.path.basename(path), error="the node had exited"))
                    continue
                try:
                    result = run_file(endpoint, path, index, args.timeout_per_statement, args.max_records,
                                      args.max_timeouts or None)
                except psycopg2.Error as exc:
                    result = FileResult(os.path.basename(path), error=f"setting up the database: {exc}".strip())
                results.append(result)
                if args.json != "-":
                    write_json(args.json, meta, results, complete=False)  # a long run's results so far
                log(f"{result.name}: {result.passed:,}/{result.run:,} passed "
                    f"({pass_rate(result.passed, result.run):.1f} %), {result.skipped:,} skipped, "
                    f"{result.seconds:.0f} s" + (f"; stopped: {result.error}" if result.error else ""))
    except ServerError as exc:
        print(f"slt: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    if args.json == "-":
        json.dump(results_document(meta, results, complete=True), sys.stdout, indent=1)
        print()
    else:
        write_json(args.json, meta, results, complete=True)
    generated = markdown(results, meta)
    if args.report:
        write_report(args.report_path, generated)
        log(f"wrote {args.report_path}")
    print(generated, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
