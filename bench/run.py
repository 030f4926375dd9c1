"""`python -m bench.run`: one benchmark run, PostgreSQL 15 and Pillbug side by side, written up.

The order of things: make a CA and certificates for the run; start PostgreSQL and a Pillbug node
(both stopped on the way out, whatever happens, and on SIGTERM too); load the point table and run
`pgbench -i` on each; then `--rounds` rounds in which every workload runs against both servers,
the order alternating between rounds; then, with `--profile`, the point workloads once more
against Pillbug with py-spy attached; finally the results go to stdout and to the report page.

A workload or preparation step that fails against one server is recorded as a failure for that
server and the run goes on; only a server that does not start at all ends the run early.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extensions

from bench import profiling, report, workloads
from bench.servers import DEFAULT_PG_BIN, Endpoint, PillbugServer, PostgresServer, ServerError, make_pki
from bench.workloads import Sample, Workload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REPORT = os.path.join(REPO, "docs", "benchmarks.md")
DEFAULT_PROFILE_DIR = os.path.join(REPO, "bench", "profiles")
FULL = {"duration": 20.0, "point_duration": 10.0, "rounds": 3, "warmup": 0.5}
QUICK = {"duration": 1.0, "point_duration": 1.0, "rounds": 2, "warmup": 0.2}
WORKLOAD_GROUPS = ("point-reads", "point-updates", "pgbench-select", "pgbench-tpcb")
PROFILED = ("point-reads", "point-updates")


def log(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run",
                                description="Benchmark Pillbug against PostgreSQL 15 in one run and write "
                                            "docs/benchmarks.md.")
    p.add_argument("--quick", action="store_true",
                   help=f"a short run to check the harness: {QUICK['rounds']} rounds, "
                        f"{QUICK['point_duration']:g} s per point run, {QUICK['duration']:g} s per pgbench run")
    p.add_argument("--duration", type=float, help=f"seconds per pgbench run (default {FULL['duration']:g})")
    p.add_argument("--point-duration", type=float,
                   help=f"seconds per point-read/point-update run (default {FULL['point_duration']:g})")
    p.add_argument("--rounds", type=int, help=f"rounds of every workload on both servers (default {FULL['rounds']})")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each point run")
    p.add_argument("--rows", type=int, default=10_000, help="rows in the point table")
    p.add_argument("--scale", type=int, default=1, help="pgbench scale factor")
    p.add_argument("--clients", default="1,8", help="pgbench client counts, comma-separated")
    p.add_argument("--max-tries", type=int, default=100, help="pgbench --max-tries (retries of 40001)")
    p.add_argument("--workloads", default=",".join(WORKLOAD_GROUPS),
                   help="which of " + ", ".join(WORKLOAD_GROUPS) + " to run (comma-separated)")
    p.add_argument("--report", default=DEFAULT_REPORT, help="the page to update (default docs/benchmarks.md)")
    p.add_argument("--no-report", action="store_true", help="print the results only")
    p.add_argument("--profile", action="store_true",
                   help="also run the point workloads against Pillbug under py-spy (speedscope files)")
    p.add_argument("--profile-dir", default=DEFAULT_PROFILE_DIR, help="where profiles go (default bench/profiles)")
    p.add_argument("--profile-rate", type=int, default=profiling.DEFAULT_RATE, help="py-spy samples per second")
    p.add_argument("--pg-bin", default=DEFAULT_PG_BIN, help="PostgreSQL 15 server binaries")
    p.add_argument("--seed", type=int, default=20261125, help="seed of the random keys")
    p.add_argument("--keep", action="store_true", help="keep the run's temporary directory (stores, logs)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    customised = False
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif not args.quick and value != getattr(args, name):
            customised = True
    args.groups = [g.strip() for g in args.workloads.split(",") if g.strip()]
    unknown = sorted(set(args.groups) - set(WORKLOAD_GROUPS))
    if unknown:
        p.error(f"unknown workloads {', '.join(unknown)}; choose from {', '.join(WORKLOAD_GROUPS)}")
    args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 1 or args.duration <= 0 or args.point_duration <= 0 or not args.client_counts:
        p.error("rounds, durations and client counts must be positive")
    customised = customised or args.groups != list(WORKLOAD_GROUPS) or args.client_counts != [1, 8] \
        or args.rows != 10_000 or args.scale != 1
    args.mode = "quick" if args.quick else ("custom" if customised else "full")
    return args


def build_workloads(args: argparse.Namespace) -> list[Workload]:
    """The run's workloads; each `run` takes an endpoint and a round's seed."""
    found: list[Workload] = []
    if "point-reads" in args.groups:
        found.append(Workload("point-reads", "point reads, 1 connection", "ops/s",
                              functools.partial(_point, workloads.point_reads, args)))
    if "point-updates" in args.groups:
        found.append(Workload("point-updates", "point updates, 1 connection", "ops/s",
                              functools.partial(_point, workloads.point_updates, args)))
    for group, select_only, name in (("pgbench-select", True, "select-only"), ("pgbench-tpcb", False, "tpcb-like")):
        if group not in args.groups:
            continue
        for clients in args.client_counts:
            found.append(Workload(f"pgbench-{group.split('-')[1]}-{clients}",
                                  f"pgbench {name}, {clients} client{'s' if clients > 1 else ''}", "tps",
                                  functools.partial(_pgbench, select_only, clients, args), uses_pgbench=True))
    return found


def _point(measure, args: argparse.Namespace, endpoint: Endpoint, seed: int) -> Sample:
    return measure(endpoint, args.point_duration, args.rows, seed, args.warmup)


def _pgbench(select_only: bool, clients: int, args: argparse.Namespace, endpoint: Endpoint, seed: int) -> Sample:
    return workloads.pgbench_run(endpoint, select_only, clients, args.duration, args.max_tries)


def _describe(sample: Sample, unit: str) -> str:
    if not sample.ok:
        return f"FAILED {sample.error}"
    text = f"{sample.rate:,.0f} {unit}"
    if sample.p50_ms is not None:
        text += f" p50 {sample.p50_ms:.3f} ms p99 {sample.p99_ms:.3f} ms"
    if sample.latency_avg_ms is not None:
        text += f" avg {sample.latency_avg_ms:.3f} ms, {sample.failed} failed, {sample.retried} retried"
    return text


def prepare(endpoint: Endpoint, args: argparse.Namespace, work: list[Workload], notes: list[str]) -> dict[bool, str]:
    """Loads what the workloads need on one server; returns why a kind of workload cannot run there."""
    blocked: dict[bool, str] = {}
    if any(not w.uses_pgbench for w in work):
        began = time.monotonic()
        try:
            workloads.load_point_table(endpoint, args.rows)
            notes.append(f"{endpoint.name}: point table of {args.rows:,} rows loaded in "
                         f"{time.monotonic() - began:.2f} s")
        except (psycopg2.Error, RuntimeError) as exc:
            blocked[False] = f"loading the point table failed: {workloads.describe_error(exc)}"
    if any(w.uses_pgbench for w in work):
        init = workloads.pgbench_init(endpoint, args.scale)
        notes.append(f"{endpoint.name}: `pgbench -i -s {args.scale}` "
                     + (init.summary if init.ok else f"**failed** after {init.seconds:.1f} s: `{init.summary}`"))
        if not init.ok:
            blocked[True] = f"pgbench -i failed: {init.summary}"
    for reason in blocked.values():
        log(f"{endpoint.name}: {reason}")
    return blocked


def machine_facts() -> list[tuple[str, str]]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    facts = [("CPU", f"{cpu}; {os.cpu_count()} cores, {len(os.sched_getaffinity(0))} usable")]
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        facts.append(("memory", f"{kib / 1024 / 1024:.1f} GiB"))
    except (OSError, StopIteration, ValueError):
        pass
    facts.append(("OS", platform.platform()))
    facts.append(("Python", f"{platform.python_implementation()} {platform.python_version()}"))
    facts.append(("client", f"psycopg2 {psycopg2.__version__.split()[0]}, libpq "
                            f"{psycopg2.extensions.libpq_version()}; {workloads.pgbench_version()}"))
    return facts


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!docs/benchmarks.md"],
                               cwd=REPO, timeout=30).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+uncommitted changes" if dirty else "")


def run_rounds(args, work: list[Workload], servers: list[tuple[str, Endpoint, dict[bool, str]]],
               result: report.RunResult) -> None:
    for round_no in range(args.rounds):
        # Alternate which server goes first, so that neither always meets a warmer or cooler machine.
        order = servers if round_no % 2 == 0 else servers[::-1]
        for w in work:
            for name, endpoint, blocked in order:
                if w.uses_pgbench in blocked:
                    sample = Sample(error=blocked[w.uses_pgbench])
                else:
                    sample = w.run(endpoint, args.seed + round_no)
                result.samples.setdefault((w.key, name), []).append(sample)
                log(f"round {round_no + 1}/{args.rounds} {w.title} {name}: {_describe(sample, w.unit)}")


def run_profiles(args, work: list[Workload], node: PillbugServer, endpoint: Endpoint,
                 result: report.RunResult) -> None:
    stamp = result.started.strftime("%Y%m%d-%H%M%S")
    for w in work:
        if w.key not in PROFILED:
            continue
        path = os.path.join(args.profile_dir, f"{stamp}-{w.key}.speedscope.json")
        try:
            with profiling.Recording(node.pid, path, args.profile_rate) as recording:
                sample = w.run(endpoint, args.seed)
            summary = profiling.summarize(path, args.profile_rate, recording.seconds,
                                         sample.rate if sample.ok else None)
            result.profiles.append((w.title, summary))
            result.notes.append(f"under the profiler, Pillbug's {w.title}: {_describe(sample, w.unit)}")
            log(f"profile of {w.title}: {path}")
        except (profiling.ProfileError, OSError, ValueError) as exc:
            result.profiles.append((w.title, str(exc)))
            log(f"profiling {w.title} failed: {exc}")


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    work = build_workloads(args)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="pillbug-bench-")
    log(f"{args.mode} run: {args.rounds} rounds; working in {tmp}")
    try:
        pki = make_pki(tmp)
        with PostgresServer(os.path.join(tmp, "postgres"), pki, args.pg_bin) as pg, \
                PillbugServer(os.path.join(tmp, "pillbug"), pki) as node:
            pg_endpoint = pg.start()
            log(f"started {pg.version.split(' on ')[0]} on port {pg.port}")
            node_endpoint = node.start()
            log(f"started {node.version} on port {node.port}")
            result = report.RunResult(started=started, mode=args.mode, commit=git_commit(),
                                      facts=machine_facts(), parameters=[], workloads=work)
            result.facts += [("PostgreSQL", pg.version), ("Pillbug", node.version)]
            servers = [(name, endpoint, prepare(endpoint, args, work, result.notes))
                       for name, endpoint in ((pg.name, pg_endpoint), (node.name, node_endpoint))]
            run_rounds(args, work, servers, result)
            if args.profile:
                run_profiles(args, work, node, node_endpoint, result)
    except ServerError as exc:
        log(f"a server could not be started: {exc}")
        return 1
    except FileNotFoundError as exc:
        log(str(exc))
        return 1
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    result.parameters = [
        ("load average (1 min) before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f}"),
        ("rounds", f"{args.rounds}, order alternating"),
        ("point workloads", f"{args.point_duration:g} s per run after {args.warmup:g} s warm-up; "
                            f"{args.rows:,} rows; seed {args.seed}"),
        ("pgbench", f"-s {args.scale}, {args.duration:g} s per run, -j 2, --max-tries={args.max_tries}"),
        ("wall time", f"{(datetime.datetime.now(datetime.UTC) - started).total_seconds():.0f} s"),
    ]
    section = report.render_run(result)
    print(section)
    if not args.no_report:
        existing = None
        if os.path.exists(args.report):
            with open(args.report) as f:
                existing = f.read()
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report + ".tmp", "w") as f:
            f.write(report.update_page(existing, result))
        os.replace(args.report + ".tmp", args.report)
        log(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
