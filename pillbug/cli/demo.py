"""pillbug demo: a throwaway local cluster of N nodes (CockroachDB's `cockroach demo --nodes N`).

In a temporary folder (or --dir) it makes the certificates, starts N `pillbug start` processes on
127.0.0.1 (SQL ports --sql-port, +1, ...; HTTP ports --http-port, +1, ...; every node a voter),
initializes the cluster, waits until every node is ready, creates the user `demo` with a random
password in the admin role, and prints how to connect. Ctrl-C or SIGTERM stops every node (and a
demo killed outright takes its nodes with it: they get SIGKILL from the kernel). The temporary
folder is removed at the end; a --dir is kept.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from pillbug.cli import cert, health, init
from pillbug.server.etcd_member import CLIENT_PORT_OFFSET, PEER_PORT_OFFSET, spawn_tied

HOST = "127.0.0.1"
DEMO_USER = "demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a temporary local cluster")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--dir", default=None, help="keep the cluster's files here (default: a temporary folder, "
                                               "removed on exit)")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--sql-port", type=int, default=None,
                   help="SQL port of node 1; node i uses port+i-1 (default 26257, or the next free ports)")
    p.add_argument("--http-port", type=int, default=None,
                   help="HTTP port of node 1; node i uses port+i-1 (default 8080, or the next free ports)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the cluster to be ready")


@dataclass
class DemoNode:
    index: int
    sql_port: int
    http_port: int
    store: str
    log_path: str
    proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.sql_port}"

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _sql_ports_free(base: int, n: int) -> bool:
    return all(_free(base + i + off) for i in range(n) for off in (0, CLIENT_PORT_OFFSET, PEER_PORT_OFFSET))


def _pick(base: int | None, default: int, n: int, free) -> int:
    """The given base port, which must be free, or the first free run at or after the default."""
    if base is not None:
        if not free(base, n):
            raise SystemExit(f"ERROR: ports from {base} for {n} nodes are not all free")
        return base
    for candidate in range(default, default + 50 * n, n):
        if free(candidate, n):
            return candidate
    raise SystemExit(f"ERROR: no free ports near {default} for {n} nodes")


def _stop_all(nodes: list[DemoNode], timeout: float = 30.0) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node in nodes:
        if node.proc is None:
            continue
        try:
            node.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)


def _create_demo_user(node: DemoNode, certs: str | None) -> str | None:
    """The demo user with a random password in the admin role (secure mode); None when insecure,
    where passwords cannot be used and everyone is root."""
    import psycopg2
    if certs is None:
        return None
    password = secrets.token_urlsafe(12)
    conn = psycopg2.connect(host=HOST, port=node.sql_port, user="root", dbname="defaultdb", sslmode="verify-ca",
                            sslrootcert=os.path.join(certs, "ca.crt"),
                            sslcert=os.path.join(certs, "client.root.crt"),
                            sslkey=os.path.join(certs, "client.root.key"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS {DEMO_USER} WITH PASSWORD %s", (password,))
            cur.execute(f"GRANT admin TO {DEMO_USER}")
    finally:
        conn.close()
    return password


def _banner(nodes: list[DemoNode], certs: str | None, password: str | None, directory: str) -> str:
    lines = ["#", f"# Welcome to the Pillbug demo: a cluster of {len(nodes)} nodes in {directory}.", "#"]
    if password is not None:
        url = lambda n: f"postgresql://{DEMO_USER}:{password}@{HOST}:{n.sql_port}/defaultdb?sslmode=require"  # noqa: E731
        lines.append(f"# The user \"{DEMO_USER}\" with password \"{password}\" has admin privileges.")
    else:
        url = lambda n: f"postgresql://root@{HOST}:{n.sql_port}/defaultdb?sslmode=disable"  # noqa: E731
    lines += ["#", "# Connect with the SQL shell:", f"#   pillbug sql --url '{url(nodes[0])}'", "#",
              "# Connection URLs (psql, drivers):"]
    scheme = "https" if certs else "http"
    for n in nodes:
        lines.append(f"#   node {n.index}: {url(n)}")
        lines.append(f"#           webui {scheme}://{HOST}:{n.http_port}  log {n.log_path}")
    lines += ["#", "# Press Ctrl-C to stop the cluster.", "#"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 9:
        print("ERROR: --nodes must be between 1 and 9", file=sys.stderr)
        return 1
    n = args.nodes
    sql_base = _pick(args.sql_port, 26257, n, _sql_ports_free)
    http_base = _pick(args.http_port, 8080, n, lambda b, k: all(_free(b + i) for i in range(k)))
    temporary = args.dir is None
    directory = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="pillbug-demo-"))
    os.makedirs(directory, exist_ok=True)
    certs = None
    if not args.insecure:
        certs = os.path.join(directory, "certs")
        if not os.path.exists(os.path.join(certs, "node.crt")):
            cert.make_pki(certs, os.path.join(directory, "ca.key"), ["localhost", HOST], ["root"])
    nodes = [DemoNode(i + 1, sql_base + i, http_base + i, os.path.join(directory, f"node{i + 1}"),
                      os.path.join(directory, f"node{i + 1}.log")) for i in range(n)]
    join = ",".join(node.addr for node in nodes)
    stop = {"signal": 0}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for node in nodes:
            cmd = [sys.executable, "-m", "pillbug.cli.main", "start", f"--store={node.store}",
                   f"--listen-addr={node.addr}", f"--http-addr={HOST}:{node.http_port}", f"--join={join}"]
            cmd += ["--insecure"] if certs is None else [f"--certs-dir={certs}"]
            with open(node.log_path, "ab") as log:
                # its own session: a Ctrl-C reaches the demo only, which stops the nodes in order
                node.proc = spawn_tied(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        print(f"starting {n} nodes in {directory} ...", flush=True)
        if not _wait_ready(nodes, certs, args.timeout, stop):
            return 1
        password = _create_demo_user(nodes[0], certs)
        print(_banner(nodes, certs, password, directory), flush=True)
        while not stop["signal"]:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    print(f"ERROR: node {node.index} exited with {node.proc.returncode}:\n{node.log_tail()}",
                          file=sys.stderr)
                    return 1
            time.sleep(0.2)
        print("stopping the demo cluster ...", file=sys.stderr, flush=True)
        return 0
    finally:
        _stop_all(nodes)
        for s, handler in old.items():
            signal.signal(s, handler)
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(nodes: list[DemoNode], certs: str | None, timeout: float, stop: dict) -> bool:
    """Init the cluster once its members listen, then wait for /health?ready=1 on every node."""
    deadline = time.monotonic() + timeout
    ctx = health.tls_context(os.path.join(certs, "ca.crt")) if certs is not None else None
    initialized = False
    while time.monotonic() < deadline and not stop["signal"]:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is not None:
                print(f"ERROR: node {node.index} exited with {node.proc.returncode}:\n{node.log_tail()}",
                      file=sys.stderr)
                return False
        if not initialized:
            if all(not _free(node.sql_port + CLIENT_PORT_OFFSET) for node in nodes):
                endpoint = f"{HOST}:{nodes[0].sql_port + CLIENT_PORT_OFFSET}"
                try:
                    asyncio.run(init.initialize(endpoint, certs, max(1.0, deadline - time.monotonic()),
                                                nodes[0].addr))
                except init.InitError as exc:
                    if str(exc) != init.ALREADY_INITIALIZED:  # a kept --dir: initialized before
                        print(f"ERROR: {exc}", file=sys.stderr)
                        return False
                initialized = True
        elif all(health.node_state(HOST, node.http_port, ctx) == health.READY for node in nodes):
            return True
        time.sleep(0.1)
    if not stop["signal"]:
        print(f"ERROR: the demo cluster was not ready after {timeout:g}s; see the logs in "
              f"{os.path.dirname(nodes[0].log_path)}", file=sys.stderr)
    return False
