"""`python -m bench.cluster`: issue 10's cluster benchmark. A 3-node Pillbug cluster beside raw etcd
of the same shape, driven by the same number of clients, and the ratios.

Why raw etcd is the yardstick: Pillbug's cluster keeps its data in etcd, so the best a gateway can do
is what etcd itself serves; the targets are Pillbug point updates/s >= 0.5 of raw etcd's
compare-and-put Txn/s and point reads/s >= 0.5 of raw etcd's linearizable Range/s.

Raw etcd: three members on 127.0.0.11-13 (client port 36257, peer 46257, TLS with the run's
certificates), with the flags Pillbug's members run with (rfcs/0001 §2.1); the key space loaded
with `rows` keys. A read is one linearizable Range of a random key; an update is one Txn comparing
the key's mod_revision with the one the client last saw and putting the new value (its failure
branch reads the key back, and the client tries again: only successful updates count). Each client
is an asyncio task with its own channel to one member, clients spread over the members as the SQL
clients are spread over the nodes. etcd3aio's retries are off (one attempt per call).

Pillbug: `pillbug start --join` x3 on 127.0.0.11-13 and `pillbug init`; the same point table as
bench/run.py; point reads/updates with C psycopg2 connections in threads (client k on node k mod 3);
pgbench tpcb-like with C clients split over three pgbench processes, one per node, their tps summed.

Rates are summed over clients; p50/p99 are the medians over clients of each client's p50/p99.
Both sides share this 2-core box with their clients, so absolute numbers are pessimistic; the ratio
is the figure. Results go to stdout as a markdown section for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from array import array
from dataclasses import dataclass

import psycopg2

from bench import workloads
from bench.servers import (
    Endpoint,
    Pki,
    ServerError,
    _die_with_parent,
    _log_tail,
    create_bench_user,
    pillbug_command,
)
from bench.workloads import Sample, percentile

HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
SQL_PORT = 26257
HTTP_PORT = 28080
ETCD_CLIENT_PORT = SQL_PORT + 10000
ETCD_PEER_PORT = SQL_PORT + 20000
START_TIMEOUT = 90.0
ETCD_FLAGS = ["--heartbeat-interval=50", "--election-timeout=500", "--pre-vote=true", "--max-txn-ops=4096",
              "--max-request-bytes=8388608", "--quota-backend-bytes=8589934592", "--snapshot-count=10000"]
KEY_PREFIX = b"t/"


def log(message: str) -> None:
    print(f"bench-cluster {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def cluster_pki(directory: str) -> Pki:
    """The run's CA, one node certificate for every node address, root's client certificate."""
    certs = os.path.join(directory, "certs")
    ca_key = os.path.join(directory, "safe", "ca.key")
    for step in (["create-ca"], ["create-node", *HOSTS, "localhost", "127.0.0.1"], ["create-client", "root"]):
        proc = subprocess.run([*pillbug_command(), "cert", *step, f"--certs-dir={certs}", f"--ca-key={ca_key}"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ServerError(f"pillbug cert {step[0]} failed:\n{proc.stdout}{proc.stderr}")
    return Pki(certs, ca_key)


class _Processes:
    """Processes started in their own groups, killed (group and all) on the way out."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log_path: str, cwd: str) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                    preexec_fn=_die_with_parent(signal.SIGKILL))
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM,):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.procs.clear()


# ---- raw etcd ------------------------------------------------------------------------------------

class EtcdCluster(_Processes):
    """Three plain etcd members on 127.0.0.11-13, TLS for clients and peers."""

    def __init__(self, workdir: str, pki: Pki) -> None:
        super().__init__()
        self.workdir = workdir
        self.pki = pki
        self.endpoints = [f"{h}:{ETCD_CLIENT_PORT}" for h in HOSTS]

    def start(self) -> list[str]:
        cluster = ",".join(f"e{i}=https://{h}:{ETCD_PEER_PORT}" for i, h in enumerate(HOSTS))
        tls = [f"--cert-file={self.pki.node_cert}", f"--key-file={self.pki.node_key}",
               f"--trusted-ca-file={self.pki.ca_file}", "--client-cert-auth",
               f"--peer-cert-file={self.pki.node_cert}", f"--peer-key-file={self.pki.node_key}",
               f"--peer-trusted-ca-file={self.pki.ca_file}", "--peer-client-cert-auth"]
        for i, host in enumerate(HOSTS):
            data = os.path.join(self.workdir, f"etcd{i}")
            self.spawn(["etcd", f"--name=e{i}", f"--data-dir={data}",
                        f"--listen-client-urls=https://{host}:{ETCD_CLIENT_PORT}",
                        f"--advertise-client-urls=https://{host}:{ETCD_CLIENT_PORT}",
                        f"--listen-peer-urls=https://{host}:{ETCD_PEER_PORT}",
                        f"--initial-advertise-peer-urls=https://{host}:{ETCD_PEER_PORT}",
                        f"--initial-cluster={cluster}", "--initial-cluster-state=new", *ETCD_FLAGS, *tls],
                       data + ".log", self.workdir)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            proc = subprocess.run(["etcdctl", f"--endpoints={','.join('https://' + e for e in self.endpoints)}",
                                   f"--cacert={self.pki.ca_file}", f"--cert={self.pki.node_cert}",
                                   f"--key={self.pki.node_key}", "endpoint", "health"],
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode == 0:
                return self.endpoints
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise ServerError("etcd did not become healthy:\n" + proc.stdout + proc.stderr + "\n"
                                  + _log_tail(os.path.join(self.workdir, "etcd0.log")))
            time.sleep(0.2)


def _key(i: int) -> bytes:
    return KEY_PREFIX + str(i).encode()


async def _etcd_client(pki: Pki, endpoint: str):
    from etcd3aio import Etcd3Client

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()
    client = Etcd3Client([endpoint], rpc_max_attempts=1, tls_server_name="localhost",
                         ca_cert=read(pki.ca_file), cert_key=read(pki.node_key), cert_chain=read(pki.node_cert))
    await client.connect()
    return client


async def _load_etcd(pki: Pki, endpoint: str, rows: int) -> None:
    from etcd3aio.kv import KVService
    client = await _etcd_client(pki, endpoint)
    try:
        for first in range(1, rows + 1, 500):
            ops = [KVService.txn_op_put(_key(i), b"0") for i in range(first, min(first + 500, rows + 1))]
            await client.kv.txn([], ops)
        found = await client.kv.get(KEY_PREFIX, KEY_PREFIX[:-1] + b"0", count_only=True)
        if found.count != rows:
            raise RuntimeError(f"etcd holds {found.count} keys after loading {rows}")
    finally:
        await client.close()


async def _etcd_worker(pki: Pki, endpoint: str, op: str, rows: int, seed: int, warm_until: float,
                       deadline: float) -> tuple[array, float, float]:
    from etcd3aio import _protobuf as pb
    from etcd3aio.kv import KVService
    client = await _etcd_client(pki, endpoint)
    rng = random.Random(seed)
    seen: dict[int, int] = {}
    latencies = array("q")
    clock = time.perf_counter_ns
    started = finished = 0

    async def one() -> None:
        key_no = rng.randint(1, rows)
        key = _key(key_no)
        if op == "read":
            resp = await client.kv.get(key)
            if not resp.kvs:
                raise RuntimeError(f"a linearizable Range of {key!r} found nothing")
            return
        while True:
            if key_no not in seen:
                got = await client.kv.get(key)
                seen[key_no] = got.kvs[0].mod_revision
            compare = pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                                 mod_revision=seen[key_no])
            resp = await client.kv.txn([compare], [KVService.txn_op_put(key, str(rng.random()).encode())],
                                       [KVService.txn_op_get(key)])
            if resp.succeeded:
                seen[key_no] = resp.header.revision
                return
            seen[key_no] = resp.responses[0].response_range.kvs[0].mod_revision
    try:
        while clock() < warm_until:
            await one()
        started = clock()
        finished = started
        while finished < deadline:
            sent = clock()
            await one()
            finished = clock()
            latencies.append(finished - sent)
    finally:
        await client.close()
    return latencies, started, finished


def raw_etcd(pki: Pki, endpoints: list[str], op: str, clients: int, duration: float, rows: int, seed: int,
             warmup: float) -> Sample:
    async def run() -> Sample:
        now = time.perf_counter_ns()
        warm_until = now + int(warmup * 1e9)
        deadline = warm_until + int(duration * 1e9)
        results = await asyncio.gather(*(
            _etcd_worker(pki, endpoints[k % len(endpoints)], op, rows, seed * 100 + k, warm_until, deadline)
            for k in range(clients)))
        return _combine(results)
    try:
        return asyncio.run(run())
    except Exception as exc:  # a failed run is a result to report
        return Sample(error=workloads.describe_error(exc))


def _combine(results: list[tuple[array, float, float]]) -> Sample:
    ops = sum(len(r[0]) for r in results)
    rate = sum(len(lat) / ((end - start) / 1e9) for lat, start, end in results if end > start)
    p50 = statistics.median(percentile(sorted(lat), 0.5) / 1e6 for lat, _, _ in results)
    p99 = statistics.median(percentile(sorted(lat), 0.99) / 1e6 for lat, _, _ in results)
    return Sample(rate=rate, ops=ops, p50_ms=p50, p99_ms=p99)


# ---- Pillbug cluster -----------------------------------------------------------------------------

class PillbugCluster(_Processes):
    """`pillbug start --join` on 127.0.0.11-13, `pillbug init`, a bench user; one Endpoint per node."""

    name = "Pillbug cluster"

    def __init__(self, workdir: str, pki: Pki) -> None:
        super().__init__()
        self.workdir = workdir
        self.pki = pki

    def start(self) -> list[Endpoint]:
        join = ",".join(f"{h}:{SQL_PORT}" for h in HOSTS)
        for i, host in enumerate(HOSTS):
            store = os.path.join(self.workdir, f"n{i + 1}")
            self.spawn([*pillbug_command(), "start", f"--certs-dir={self.pki.certs_dir}", f"--store={store}",
                        f"--listen-addr={host}:{SQL_PORT}", f"--http-addr={host}:{HTTP_PORT}", f"--join={join}",
                        f"--locality=region=r1,zone=z{i + 1}"], store + ".log", self.workdir)
        init = subprocess.run([*pillbug_command(), "init", f"--certs-dir={self.pki.certs_dir}",
                               f"--host={HOSTS[0]}:{SQL_PORT}"], capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ServerError(f"pillbug init failed: {init.stdout}{init.stderr}")
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        deadline = time.monotonic() + START_TIMEOUT
        for i, host in enumerate(HOSTS):
            while True:
                try:
                    with urllib.request.urlopen(f"https://{host}:{HTTP_PORT}/health?ready=1", timeout=2,
                                                context=ctx) as resp:
                        if resp.status == 200:
                            break
                except (OSError, ssl.SSLError, urllib.error.HTTPError):
                    pass
                if time.monotonic() > deadline or self.procs[i].poll() is not None:
                    raise ServerError(f"node {i + 1} not ready:\n"
                                      + _log_tail(os.path.join(self.workdir, f"n{i + 1}.log")))
                time.sleep(0.1)
        password, _ = create_bench_user(self.pki, HOSTS[0], HOSTS[0], SQL_PORT)
        return [Endpoint(f"node {i + 1}", SQL_PORT, password, self.pki.ca_file, host=h, hostaddr=h)
                for i, h in enumerate(HOSTS)]


def pillbug_points(endpoints: list[Endpoint], op: str, clients: int, duration: float, rows: int, seed: int,
                   warmup: float) -> Sample:
    measure = workloads.point_reads if op == "read" else workloads.point_updates
    samples: list[Sample] = [Sample()] * clients

    def client(k: int) -> None:
        samples[k] = measure(endpoints[k % len(endpoints)], duration, rows, seed * 100 + k, warmup)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [s.error for s in samples if not s.ok]
    if failed:
        return Sample(error=failed[0])
    return Sample(rate=sum(s.rate for s in samples), ops=sum(s.ops for s in samples),
                  p50_ms=statistics.median(s.p50_ms for s in samples),
                  p99_ms=statistics.median(s.p99_ms for s in samples))


def pgbench_init_in_batches(endpoint: Endpoint, scale: int) -> str | None:
    """pgbench -i's tables and rows, loaded in transactions a cluster takes. pgbench -i itself
    loads 100,000 accounts with one COPY inside BEGIN/COMMIT (and adds the primary keys after, a
    backfill of every row): more than one etcd Txn may hold (1,000 writes, rfcs/0001 §1), so
    here the tables get their keys up front and the rows go in with COPY outside a transaction
    and copy_from_atomic_enabled = off (CockroachDB's batches of 100). Returns an error or None."""
    accounts = 100_000 * scale
    ddl = ["DROP TABLE IF EXISTS pgbench_history, pgbench_tellers, pgbench_accounts, pgbench_branches",
           "CREATE TABLE pgbench_branches (bid INT PRIMARY KEY, bbalance INT, filler CHAR(88))",
           "CREATE TABLE pgbench_tellers (tid INT PRIMARY KEY, bid INT, tbalance INT, filler CHAR(84))",
           "CREATE TABLE pgbench_accounts (aid INT PRIMARY KEY, bid INT, abalance INT, filler CHAR(84))",
           "CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, mtime TIMESTAMP, filler CHAR(22))"]
    loads = [("pgbench_branches", "".join(f"{b}\t0\t\\N\n" for b in range(1, scale + 1))),
             ("pgbench_tellers", "".join(f"{t}\t{(t - 1) // 10 + 1}\t0\t\\N\n" for t in range(1, 10 * scale + 1))),
             ("pgbench_accounts", "".join(f"{a}\t{(a - 1) // 100_000 + 1}\t0\t\n" for a in range(1, accounts + 1)))]
    try:
        conn = endpoint.connect()
        try:
            with conn.cursor() as cur:
                for statement in ddl:
                    cur.execute(statement)
                cur.execute("SET copy_from_atomic_enabled = off")
                for table, data in loads:
                    cur.copy_expert(f"COPY {table} FROM STDIN", io.StringIO(data))
        finally:
            conn.close()
    except psycopg2.Error as exc:
        return str(exc).strip()
    return None


def pillbug_tpcb(endpoints: list[Endpoint], clients: int, duration: float, max_tries: int) -> Sample:
    split = [clients // len(endpoints) + (1 if k < clients % len(endpoints) else 0) for k in range(len(endpoints))]
    results: list[Sample] = []

    def run(endpoint: Endpoint, n: int) -> None:
        results.append(workloads.pgbench_run(endpoint, False, n, duration, max_tries))
    threads = [threading.Thread(target=run, args=(e, n)) for e, n in zip(endpoints, split) if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [s.error for s in results if not s.ok]
    if failed:
        return Sample(error=failed[0])
    return Sample(rate=sum(s.rate for s in results), ops=sum(s.ops for s in results),
                  failed=sum(s.failed for s in results), retried=sum(s.retried for s in results),
                  latency_avg_ms=statistics.mean(s.latency_avg_ms or 0 for s in results))


# ---- the run -------------------------------------------------------------------------------------

@dataclass
class Row:
    what: str
    clients: int
    pillbug: Sample | None
    etcd: Sample | None


def _fmt(sample: Sample | None, unit: str) -> str:
    if sample is None:
        return "not run"
    if not sample.ok:
        return f"failed: {sample.error}"
    text = f"{sample.rate:,.0f} {unit}"
    if sample.p50_ms is not None:
        text += f" (p50 {sample.p50_ms:.2f} ms, p99 {sample.p99_ms:.2f} ms)"
    if sample.latency_avg_ms is not None:
        text += f" (avg {sample.latency_avg_ms:.2f} ms, {sample.retried} retried, {sample.failed} failed)"
    return text


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [f"## Cluster mode: 3 nodes beside raw etcd ({time.strftime('%Y-%m-%d')}, {args.duration:g} s per run)",
             "", "`python -m bench.cluster` " + " ".join(sys.argv[1:]), "",
             "| workload | clients | Pillbug cluster | raw etcd (same clients, 3 members) | ratio | target |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        unit = "tps" if row.what.startswith("pgbench") else "ops/s"
        ratio = "-"
        if row.pillbug and row.etcd and row.pillbug.ok and row.etcd.ok:
            ratio = f"{row.pillbug.rate / row.etcd.rate:.2f}"
        target = "≥ 0.5" if row.what in ("point reads", "point updates") else ""
        lines.append(f"| {row.what} | {row.clients} | {_fmt(row.pillbug, unit)} | {_fmt(row.etcd, 'ops/s')} "
                     f"| {ratio} | {target} |")
    lines += ["", "Raw etcd: a read is one linearizable Range, an update one compare(mod_revision)-and-put Txn; "
              "pgbench tpcb-like has no raw-etcd counterpart (its ratio column compares with the update Txn/s)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--clients", default="1,8")
    p.add_argument("--max-tries", type=int, default=100)
    p.add_argument("--only", choices=("etcd", "pillbug", "both"), default="both",
                   help="run one side only (raw etcd needs no cluster mode in the build)")
    p.add_argument("--seed", type=int, default=20261205)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="pillbug-bench-cluster-")
    log(f"working in {work}")
    pki = cluster_pki(work)
    results: dict[tuple[str, int], dict[str, Sample]] = {}
    if args.only in ("etcd", "both"):
        etcd = EtcdCluster(os.path.join(work, "etcd"), pki)
        os.makedirs(etcd.workdir)
        try:
            endpoints = etcd.start()
            asyncio.run(_load_etcd(pki, endpoints[0], args.rows))
            for op, what in (("read", "point reads"), ("update", "point updates")):
                for clients in args.client_counts:
                    s = raw_etcd(pki, endpoints, op, clients, args.duration, args.rows, args.seed, args.warmup)
                    results.setdefault((what, clients), {})["etcd"] = s
                    log(f"raw etcd {what} x{clients}: {_fmt(s, 'ops/s')}")
        finally:
            etcd.stop()
    if args.only in ("pillbug", "both"):
        nodes = PillbugCluster(os.path.join(work, "pillbug"), pki)
        os.makedirs(nodes.workdir)
        try:
            endpoints = nodes.start()
            workloads.load_point_table(endpoints[0], args.rows)
            for op, what in (("read", "point reads"), ("update", "point updates")):
                for clients in args.client_counts:
                    s = pillbug_points(endpoints, op, clients, args.duration, args.rows, args.seed, args.warmup)
                    results.setdefault((what, clients), {})["pillbug"] = s
                    log(f"pillbug {what} x{clients}: {_fmt(s, 'ops/s')}")
            init_error = pgbench_init_in_batches(endpoints[0], 1)
            for clients in args.client_counts:
                s = pillbug_tpcb(endpoints, clients, args.duration, args.max_tries) if init_error is None \
                    else Sample(error=f"pgbench tables: {init_error}")
                results.setdefault(("pgbench tpcb-like", clients), {})["pillbug"] = s
                log(f"pillbug tpcb-like x{clients}: {_fmt(s, 'tps')}")
        except ServerError as exc:
            log(f"the Pillbug cluster did not start: {exc}")
        finally:
            nodes.stop()
    rows = []
    for (what, clients), pair in results.items():
        etcd_sample = pair.get("etcd")
        if what.startswith("pgbench"):
            etcd_sample = results.get(("point updates", clients), {}).get("etcd")
        rows.append(Row(what, clients, pair.get("pillbug"), etcd_sample))
    print(render(rows, args))
    if not args.keep:
        subprocess.run(["rm", "-rf", work], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
