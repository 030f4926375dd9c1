"""The benchmark harness (bench/): it runs end to end and reports what it measured.

One quick run of `python -m bench.run` starts PostgreSQL 15 and a Pillbug node, runs every workload
against both, profiles Pillbug and writes the report to a temporary page. Performance targets are
deliberately not asserted here: they belong to the benchmark's report, not to a timed unit test.
The parsing of pgbench's output, the page's history keeping and the profile summary are checked on
their own with fixed inputs.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # bench/ is a top-level package of the checkout, not installed

from conftest import ADMIN_PASSWORD, ADMIN_USER  # noqa: E402

from bench import profiling, report, workloads  # noqa: E402
from bench.servers import Endpoint  # noqa: E402
from bench.workloads import Sample, Workload  # noqa: E402

# pgbench 15's summaries, as printed against PostgreSQL 15 and Pillbug.
SELECT_ONLY = """pgbench (15.18 (Debian 15.18-0+deb12u1), server 13.0.0)
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 1
number of threads: 1
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 9437
number of failed transactions: 0 (0.000%)
latency average = 0.317 ms
initial connection time = 10.773 ms
tps = 3156.637033 (without initial connection time)
"""
TPCB_RETRIED = """pgbench (15.18 (Debian 15.18-0+deb12u1), server 13.0.0)
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 1
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 100
duration: 3 s
number of transactions actually processed: 306
number of failed transactions: 3 (0.971%)
number of transactions retried: 107 (34.628%)
total number of retries: 1803
latency average = 76.591 ms (including failures)
initial connection time = 53.565 ms
tps = 103.436526 (without initial connection time)
"""
ABORTED_OUT = """pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/bad.sql
scaling factor: 1
query mode: simple
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 1 s
number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
"""
ABORTED_ERR = """starting vacuum...pgbench: error: ERROR:  relation "pgbench_branches" does not exist
pgbench: detail: (ignoring this error and continuing anyway)
pgbench: error: ERROR:  relation "pgbench_tellers" does not exist
pgbench: detail: (ignoring this error and continuing anyway)
end.
pgbench: error: client 1 script 0 aborted in command 0 query 0: ERROR:  division by zero
pgbench: error: client 0 script 0 aborted in command 0 query 0: ERROR:  division by zero
pgbench: error: Run was aborted; the above results are incomplete.
"""


@pytest.mark.parametrize("output, expected", [
    (SELECT_ONLY, {"processed": 9437, "failed": 0, "latency_avg_ms": 0.317, "tps": 3156.637033}),
    (TPCB_RETRIED, {"processed": 306, "failed": 3, "retried": 107, "retries": 1803,
                    "latency_avg_ms": 76.591, "tps": 103.436526}),
    (ABORTED_OUT, {"processed": 0, "failed": 0}),
    ("", {}),
])
def test_parse_pgbench(output, expected):
    assert workloads.parse_pgbench(output) == expected


def test_pgbench_failure_names_the_error_once():
    summary = workloads.pgbench_failure(ABORTED_OUT, ABORTED_ERR, 2)
    assert summary == ("pgbench exited with 2: pgbench: error: client N script 0 aborted in command 0 query 0: "
                       "ERROR:  division by zero | pgbench: error: Run was aborted; the above results are incomplete.")
    assert "pgbench_tellers" not in summary  # the vacuum errors pgbench ignored are not the failure


@pytest.mark.parametrize("values, fraction, expected", [
    ([1], 0.5, 1), ([1], 0.99, 1), ([1, 2], 0.5, 1), ([1, 2, 3, 4], 0.5, 2),
    (list(range(1, 101)), 0.99, 99), (list(range(1, 101)), 0.50, 50), (list(range(1, 1001)), 0.99, 990),
])
def test_percentile_is_nearest_rank(values, fraction, expected):
    assert workloads.percentile(values, fraction) == expected


def _run(when: str, reads: tuple[float, float], pgbench_error: str | None) -> report.RunResult:
    def nothing(endpoint, seed):
        raise AssertionError("not run in this test")
    work = [Workload("point-reads", "point reads, 1 connection", "ops/s", nothing),
            Workload("point-updates", "point updates, 1 connection", "ops/s", nothing),
            Workload("pgbench-tpcb-8", "pgbench tpcb-like, 8 clients", "tps", nothing, uses_pgbench=True)]
    run = report.RunResult(started=datetime.datetime.fromisoformat(when), mode="full", commit="abc1234",
                           facts=[("CPU", "test")], parameters=[("rounds", "3")], workloads=work)
    pg_reads, pb_reads = reads
    run.samples[("point-reads", "PostgreSQL")] = [Sample(rate=r, p50_ms=0.1, p99_ms=0.2) for r in
                                                  (pg_reads, pg_reads * 2, pg_reads / 2)]
    run.samples[("point-reads", "Pillbug")] = [Sample(rate=pb_reads, p50_ms=0.3, p99_ms=0.5),
                                               Sample(error="OperationalError: boom"),
                                               Sample(rate=pb_reads * 3, p50_ms=0.2, p99_ms=0.4)]
    run.samples[("point-updates", "PostgreSQL")] = [Sample(rate=3000.0, p50_ms=0.3, p99_ms=0.6)]
    run.samples[("point-updates", "Pillbug")] = [Sample(rate=1000.0, p50_ms=0.9, p99_ms=1.6)]
    run.samples[("pgbench-tpcb-8", "PostgreSQL")] = [Sample(rate=1500.0, latency_avg_ms=5.3, ops=3000)]
    run.samples[("pgbench-tpcb-8", "Pillbug")] = (
        [Sample(error=pgbench_error)] if pgbench_error else
        [Sample(rate=100.0, latency_avg_ms=70.0, ops=300, failed=3, retried=100, retries=1800)])
    return run


def test_medians_ratios_and_targets():
    run = _run("2026-11-25T10:00:00+00:00", (4000.0, 2200.0), None)
    reads = run.figure("point-reads", "Pillbug")
    assert (reads.rate, reads.rounds_ok, reads.rounds, reads.errors) == (4400.0, 2, 3, ["OperationalError: boom"])
    assert run.figure("point-reads", "PostgreSQL").rate == 4000.0
    assert run.ratio("point-reads") == pytest.approx(1.1)
    assert run.ratio("point-updates") == pytest.approx(1 / 3)
    assert [(title, met) for title, _, met in run.targets()] == [
        ("point reads, 1 connection", True), ("point updates, 1 connection", False)]
    assert run.targets_met() is False


def test_throughput_floors_are_checked_in_the_benchmark():
    run = _run("2026-11-25T10:00:00+00:00", (4000.0, 2200.0), None)
    assert run.floors() == [("pgbench tpcb-like, 8 clients", 100.0, 5.0, True)]
    page = report.update_page(None, run)
    assert "**Floors** (" + report.FLOOR_TEXT + "): met: pgbench tpcb-like, 8 clients 100 tps (floor 5: met)." in page
    failed = _run("2026-11-26T11:30:00+00:00", (4000.0, 2200.0), "pgbench exited with 2")
    assert failed.floors() == [("pgbench tpcb-like, 8 clients", None, 5.0, False)]
    assert "): NOT met: pgbench tpcb-like, 8 clients — (floor 5: NOT met)." in report.render_run(failed)


def test_page_keeps_every_earlier_run(tmp_path):
    first = _run("2026-11-25T10:00:00+00:00", (4000.0, 2200.0), None)
    second = _run("2026-11-26T11:30:00+00:00", (5000.0, 1000.0), "pgbench exited with 2: pgbench -i failed: COPY")
    page = report.update_page(None, first)
    page = report.update_page(page, second)
    rows = [line for line in page.split(report.HISTORY_START)[1].split(report.HISTORY_END)[0].splitlines()
            if line.startswith("| 2026")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2026-11-25 10:00", "| 2026-11-26 11:30"]
    assert "1.10 (4,400)" in rows[0] and "0.33 (1,000)" in rows[0] and rows[0].endswith("| not met |")
    assert "failed" in rows[1]
    # Newest run first, both kept, with the failure spelled out.
    assert page.index("### 2026-11-26 11:30 UTC") < page.index("### 2026-11-25 10:00 UTC")
    assert "`pgbench exited with 2: pgbench -i failed: COPY`" in page
    assert "| pgbench tpcb-like, 8 clients | 1,500 tps; avg 5.300 ms; 0 failed of 3,000 | **failed**" in page
    assert "100 tps; avg 70.0 ms; 3 failed of 303; 100 retried (1,800 retries) | 0.07 |" in page
    # A page edited by hand (no markers) is kept whole under the new run.
    hand = "# Old notes\n\nPillbug did 12 reads/s in 2025.\n"
    page = report.update_page(hand, first)
    assert "Pillbug did 12 reads/s in 2025." in page and page.count("| 2026-11-25 10:00") == 1


def test_profile_summary_ranks_functions(tmp_path):
    path_of = {"a": "/w/pillbug/pillbug/cli/main.py",
               "b": "/w/pillbug/pillbug/pgwire/connection.py", "c": "/py/lib/python3.11/ssl.py"}
    frames = [{"name": "main", "file": path_of["a"], "line": 1},
              {"name": "flush", "file": path_of["b"], "line": 10},
              {"name": "flush", "file": path_of["b"], "line": 11},
              {"name": "write", "file": path_of["c"], "line": 5}]
    speedscope = {"shared": {"frames": frames}, "profiles": [
        {"type": "sampled", "name": 'Thread 1 "MainThread"', "samples": [[0, 1, 3], [0, 2], [0, 2], [0, 1], [0], [1]],
         "weights": [0.01] * 6},
        {"type": "sampled", "name": 'Thread 2 "lmdb-writer"', "samples": [[3]], "weights": [0.01]}]}
    path = tmp_path / "profile.speedscope.json"
    path.write_text(json.dumps(speedscope))
    summary = profiling.summarize(str(path), rate=100, seconds=0.1, ops_per_second=100.0)
    assert (summary.samples, summary.partial) == (7, 1)
    assert summary.threads == [("MainThread", 0.6), ("lmdb-writer", 0.1)]
    # Lines of one function are merged; the writer thread's samples count too; the partial stack
    # ([1]: it does not start at `main`) is left out and MainThread's 5 complete ones weigh 6/5.
    assert [(s.function, s.location, round(s.percent)) for s in summary.by_self] == [
        ("flush", "pillbug/pgwire/connection.py", 36), ("write", "ssl.py", 22), ("main", "pillbug/cli/main.py", 12)]
    # 3.6 samples at 100 Hz while 10 operations ran: 3.6 ms per operation.
    assert summary.by_self[0].us_per_op == pytest.approx(3600.0)
    # The ranking by total is of Pillbug's own functions that are not on every stack of their
    # thread, as the event loop's entry is.
    assert [(s.function, round(s.percent)) for s in summary.by_total] == [("flush", 48)]


def test_quick_run_end_to_end(tmp_path):
    page = tmp_path / "benchmarks.md"
    profiles = tmp_path / "profiles"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--profile", f"--report={page}",
                           f"--profile-dir={profiles}"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = page.read_text()
    table = {}
    for line in text.split("| workload | PostgreSQL | Pillbug | Pillbug / PostgreSQL |")[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        title, pg, pb, ratio = [cell.strip() for cell in line.strip("|").split(" | ")]
        table[title] = (pg, pb, ratio)
    assert list(table) == ["point reads, 1 connection", "point updates, 1 connection",
                           "pgbench select-only, 1 client", "pgbench select-only, 8 clients",
                           "pgbench tpcb-like, 1 client", "pgbench tpcb-like, 8 clients"]
    for title, (pg, pb, ratio) in table.items():
        assert re.match(r"[\d,]+ (ops/s|tps); ", pg), (title, pg)  # PostgreSQL runs everything
        # Pillbug's pgbench may fail while pgbench support is being built; then it must say so.
        assert re.match(r"[\d,]+ (ops/s|tps); ", pb) or "**failed**" in pb, (title, pb)
        assert re.fullmatch(r"\d+\.\d\d", ratio) or ("**failed**" in pb and ratio == "—"), (title, ratio)
        if "**failed**" in pb:
            assert f"- {title}, Pillbug: `" in text  # the error itself is in the report
    for title in ("point reads, 1 connection", "point updates, 1 connection"):
        assert re.match(r"[\d,]+ ops/s; p50 [\d.]+ ms, p99 [\d.]+ ms$", table[title][1]), table[title]
        assert re.fullmatch(r"\d+\.\d\d", table[title][2])
        assert f"Profile of the Pillbug node during {title} (py-spy):" in text
    assert "**Target** (Pillbug at no less than 0.5" in text
    assert re.search(r"^\| \d{4}-\d\d-\d\d \d\d:\d\d \| \w+.* \| quick \| ", text, re.MULTILINE)
    written = sorted(p.name for p in profiles.glob("*.speedscope.json"))
    assert [name.split("-", 2)[2] for name in written] == ["point-reads.speedscope.json",
                                                          "point-updates.speedscope.json"]
    assert all(json.loads(p.read_text())["profiles"] for p in profiles.glob("*.speedscope.json"))
    assert "pillbug/" in text.split("Profile of the Pillbug node during point reads")[1]


def test_pgbench_failure_is_a_result_not_an_exception(node):
    """pgbench run before `pgbench -i` fails; the harness hands back why, from pgbench itself."""
    node.sql("CREATE DATABASE IF NOT EXISTS bench_uninitialised")
    endpoint = Endpoint("Pillbug", node.port, ADMIN_PASSWORD, os.path.join(node.certs_dir, "ca.crt"),
                        user=ADMIN_USER, database="bench_uninitialised")
    sample = workloads.pgbench_run(endpoint, select_only=True, clients=1, duration=1, max_tries=10)
    assert not sample.ok and sample.rate is None
    assert sample.error.startswith("pgbench exited with 1: ") and "pgbench_branches" in sample.error, sample.error


@pytest.mark.parametrize("path, expected", [
    ("/work/wt/x/pillbug/pgwire/connection.py", "pillbug/pgwire/connection.py"),
    ("/home/me/pillbug/pillbug/sql/session.py", "pillbug/sql/session.py"),
    ("/w/.venv/lib/python3.11/site-packages/uvloop/__init__.py", "uvloop/__init__.py"),
    ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/runners.py", "asyncio/runners.py"),
    ("/w/.venv/bin/pillbug", "/w/.venv/bin/pillbug"),
])
def test_profile_locations_read_as_module_paths(path, expected):
    assert profiling.short_location(path) == expected
