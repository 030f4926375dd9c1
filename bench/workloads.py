"""What the benchmark measures, run the same way against any server reachable through an `Endpoint`.

Point reads and point updates: one psycopg2 connection in autocommit mode (simple query protocol,
as most Python applications use it), random primary keys from a seeded generator over a table of
`rows` rows, each statement timed on the client from send to result. Every result is checked (a
read returns its row, an update touches one row), so a server that answers quickly but wrongly does
not score.

pgbench: Debian's pgbench 15 with its built-in select-only (-S) and tpcb-like scripts after
`pgbench -i`, over the same TLS connection settings; its summary is parsed into a `Sample`. A
pgbench that fails or aborts gives a `Sample` whose `error` says why, never an exception: a failing
workload is a result to report.

This module knows nothing of how servers are started or how results are reported.
"""
from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from bench.servers import Endpoint

POINT_TABLE = "t"
POINT_READ_SQL = f"SELECT v FROM {POINT_TABLE} WHERE id = %s"
POINT_UPDATE_SQL = f"UPDATE {POINT_TABLE} SET v = v + 1 WHERE id = %s"
LOAD_BATCH = 500
# Extra time pgbench may take beyond -T (connecting, its pre-run vacuum) before it counts as hung.
PGBENCH_GRACE = 120.0
ERROR_LINES = 3


@dataclass
class Sample:
    """One run of one workload against one server. `rate` is ops/s (point) or tps (pgbench)."""
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    latency_avg_ms: float | None = None
    ops: int = 0
    failed: int = 0
    retried: int = 0
    retries: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.rate is not None


def describe_error(exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None)
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return f"{type(exc).__name__}{f' [{code}]' if code else ''}: {text}"


# ---- point reads and updates -------------------------------------------------------------------

def load_point_table(endpoint: Endpoint, rows: int) -> None:
    """(Re)creates the point table with ids 1..rows and v = 0, and checks that all rows are there."""
    conn = endpoint.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {POINT_TABLE}")
            cur.execute(f"CREATE TABLE {POINT_TABLE} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
            for first in range(1, rows + 1, LOAD_BATCH):
                ids = range(first, min(first + LOAD_BATCH, rows + 1))
                cur.execute(f"INSERT INTO {POINT_TABLE} (id, v) VALUES " + ",".join(f"({i}, 0)" for i in ids))
            cur.execute(f"SELECT count(*) FROM {POINT_TABLE}")
            count = cur.fetchone()[0]
            if count != rows:
                raise RuntimeError(f"{endpoint.name}: point table has {count} rows after loading {rows}")
    finally:
        conn.close()


def _check_read(cur) -> None:
    if cur.fetchone() is None:
        raise RuntimeError("a point read by an existing primary key returned no row")


def _check_update(cur) -> None:
    if cur.rowcount != 1:
        raise RuntimeError(f"a point update by an existing primary key touched {cur.rowcount} rows")


def percentile(sorted_values, fraction: float):
    """Nearest-rank percentile of an ascending sequence."""
    assert sorted_values, "percentile of nothing"
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _point_workload(endpoint: Endpoint, statement: str, check, duration: float, rows: int, seed: int,
                    warmup: float) -> Sample:
    try:
        conn = endpoint.connect()
    except psycopg2.Error as exc:
        return Sample(error=f"connect: {describe_error(exc)}")
    try:
        cur = conn.cursor()
        randint = random.Random(seed).randint
        clock = time.perf_counter_ns
        execute = cur.execute
        warm_until = clock() + int(warmup * 1e9)
        while clock() < warm_until:
            execute(statement, (randint(1, rows),))
            check(cur)
        # Bounded by the duration: at most duration / (one round trip) entries.
        latencies = array("q")
        started = clock()
        deadline = started + int(duration * 1e9)
        finished = started
        while finished < deadline:
            key = randint(1, rows)
            sent = clock()
            execute(statement, (key,))
            check(cur)
            finished = clock()
            latencies.append(finished - sent)
    except (psycopg2.Error, RuntimeError) as exc:
        return Sample(error=describe_error(exc))
    finally:
        conn.close()
    ordered = sorted(latencies)
    return Sample(rate=len(ordered) / ((finished - started) / 1e9), ops=len(ordered),
                  p50_ms=percentile(ordered, 0.50) / 1e6, p99_ms=percentile(ordered, 0.99) / 1e6)


def point_reads(endpoint: Endpoint, duration: float, rows: int, seed: int, warmup: float = 0.5) -> Sample:
    return _point_workload(endpoint, POINT_READ_SQL, _check_read, duration, rows, seed, warmup)


def point_updates(endpoint: Endpoint, duration: float, rows: int, seed: int, warmup: float = 0.5) -> Sample:
    return _point_workload(endpoint, POINT_UPDATE_SQL, _check_update, duration, rows, seed, warmup)


# ---- pgbench -----------------------------------------------------------------------------------

def pgbench_command() -> str:
    found = shutil.which("pgbench")
    if found is None:
        raise FileNotFoundError("no pgbench on PATH (Debian package postgresql-client; `make deps`)")
    return found


def pgbench_version() -> str:
    proc = subprocess.run([pgbench_command(), "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


@dataclass
class InitResult:
    """The outcome of `pgbench -i` against one server."""
    ok: bool
    seconds: float
    summary: str  # pgbench's "done in ..." line, or the error


def pgbench_failure(stdout: str, stderr: str, returncode: int) -> str:
    """The distinct error lines of a failed pgbench (one per aborted client is common), first few."""
    lines: list[str] = []
    for line in (stderr + "\n" + stdout).splitlines():
        # Every aborted client reports the same error: say it once.
        line = re.sub(r"\bclient \d+", "client N", line.strip())
        if "ignoring this error and continuing" in line:
            # pgbench's pre-run vacuum failed and it went on: not why the run failed.
            if lines:
                lines.pop()
            continue
        if re.search(r"error|fatal|abort", line, re.IGNORECASE) and line not in lines:
            lines.append(line)
    if not lines:
        lines = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    more = f" (+{len(lines) - ERROR_LINES} more)" if len(lines) > ERROR_LINES else ""
    return f"pgbench exited with {returncode}: " + " | ".join(lines[:ERROR_LINES]) + more


def pgbench_init(endpoint: Endpoint, scale: int, timeout: float = 900.0) -> InitResult:
    began = time.monotonic()
    try:
        proc = subprocess.run([pgbench_command(), "-i", "-s", str(scale)], env=endpoint.libpq_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return InitResult(False, time.monotonic() - began, f"pgbench -i did not finish in {timeout:.0f} s")
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        return InitResult(False, seconds, pgbench_failure(proc.stdout, proc.stderr, proc.returncode))
    done = re.search(r"^done in .*$", proc.stderr + proc.stdout, re.MULTILINE)
    return InitResult(True, seconds, done.group(0) if done else f"done in {seconds:.2f} s")


_PGBENCH_FIELDS = {
    "processed": re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE),
    "failed": re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE),
    "retried": re.compile(r"^number of transactions retried: (\d+)", re.MULTILINE),
    "retries": re.compile(r"^total number of retries: (\d+)", re.MULTILINE),
    "latency_avg_ms": re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE),
    "tps": re.compile(r"^tps = ([\d.]+)", re.MULTILINE),
}


def parse_pgbench(output: str) -> dict[str, float]:
    """The figures of pgbench 15's summary; the keys of `_PGBENCH_FIELDS` that it printed."""
    figures: dict[str, float] = {}
    for key, pattern in _PGBENCH_FIELDS.items():
        match = pattern.search(output)
        if match:
            figures[key] = float(match.group(1))
    return figures


def pgbench_run(endpoint: Endpoint, select_only: bool, clients: int, duration: float, max_tries: int,
                threads: int = 2) -> Sample:
    args = [pgbench_command(), "-c", str(clients), "-j", str(min(threads, clients)),
            "-T", str(max(1, round(duration))), f"--max-tries={max_tries}"]
    if select_only:
        args.append("-S")
    try:
        proc = subprocess.run(args, env=endpoint.libpq_env(), capture_output=True, text=True,
                              timeout=duration + PGBENCH_GRACE)
    except subprocess.TimeoutExpired:
        return Sample(error=f"pgbench did not finish within {duration + PGBENCH_GRACE:.0f} s")
    if proc.returncode != 0:
        return Sample(error=pgbench_failure(proc.stdout, proc.stderr, proc.returncode))
    figures = parse_pgbench(proc.stdout)
    if "tps" not in figures or "processed" not in figures:
        return Sample(error="could not read tps from pgbench's output: " + proc.stdout.strip()[-300:])
    return Sample(rate=figures["tps"], latency_avg_ms=figures.get("latency_avg_ms"),
                  ops=int(figures["processed"]), failed=int(figures.get("failed", 0)),
                  retried=int(figures.get("retried", 0)), retries=int(figures.get("retries", 0)))


@dataclass(frozen=True)
class Workload:
    """One row of the report: what it is called, its unit, and how to run it against an endpoint."""
    key: str
    title: str
    unit: str
    run: Callable[[Endpoint], Sample]
    uses_pgbench: bool = False
