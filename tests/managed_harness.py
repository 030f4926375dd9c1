"""A managed cluster for tests: `pillbug cluster create` run as a user runs it, in a temporary
folder, on ports chosen at random (every host has its own loopback address, so only the ports can
collide with another run), and deleted at the end, its processes killed even if `delete` fails.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from types import SimpleNamespace

import psycopg2
from conftest import PILLBUG, run_and_close

CREATE_TIMEOUT = 180.0


def haproxy_available() -> str | None:
    if not shutil.which("haproxy"):
        return "haproxy is not installed (make install brings Debian's haproxy)"
    return None


class ManagedCluster:
    """One `pillbug cluster create`d cluster: its folder, what create printed, connection.json."""

    def __init__(self, directory: str, regions: list[str], nodes_per_region: int, extra: list[str]) -> None:
        self.dir = directory
        self.regions = regions
        self.nodes_per_region = nodes_per_region
        self.extra = extra
        self.output = ""
        self.elapsed = 0.0
        self.details: dict = {}

    def create(self) -> None:
        last = ""
        for _ in range(3):  # another run may hold a port: try other ones
            port = random.randrange(21000, 25000)
            http_port = random.randrange(50000, 60000)
            started = time.monotonic()
            proc = self.cli("create", f"--regions={','.join(self.regions)}",
                            f"--nodes-per-region={self.nodes_per_region}", f"--port={port}",
                            f"--http-port={http_port}", *self.extra, timeout=CREATE_TIMEOUT)
            self.elapsed = time.monotonic() - started
            self.output = proc.stdout
            if proc.returncode == 0:
                with open(os.path.join(self.dir, "connection.json")) as f:
                    self.details = json.load(f)
                return
            last = proc.stdout + proc.stderr
            if "is in use" not in last:
                break
        raise AssertionError(f"pillbug cluster create failed:\n{last}")

    def cli(self, verb: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([PILLBUG, "cluster", verb, f"--dir={self.dir}", *args], capture_output=True,
                              text=True, timeout=timeout)

    def pid(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.dir, "run", f"{name}.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def node_names(self, region: str) -> list[str]:
        return [f"{region}-{i}" for i in range(1, self.nodes_per_region + 1)]

    @property
    def port(self) -> int:
        return self.details["port"]

    def connect(self, host: str, database: str = "defaultdb", autocommit: bool = True, timeout: int = 5):
        d = self.details
        conn = psycopg2.connect(host=host, port=d["port"], user=d["user"], password=d["password"], dbname=database,
                                sslmode="verify-full", sslrootcert=d["ca_cert"], connect_timeout=timeout)
        conn.autocommit = autocommit
        return conn

    def query(self, host: str, sql: str) -> list:
        return run_and_close(self.connect(host), [sql])

    def teardown(self) -> None:
        if not os.path.isdir(self.dir):
            return
        try:
            self.cli("delete", timeout=90)
        finally:
            run = os.path.join(self.dir, "run")
            for name in os.listdir(run) if os.path.isdir(run) else []:
                pid = self.pid(name[:-4])
                if pid is not None:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            shutil.rmtree(self.dir, ignore_errors=True)


class ThroughHost:
    """What tests/cluster_workloads.py's workloads take as a cluster: here one entry point (the
    global host), so every client connects through it and goes wherever it sends them."""

    def __init__(self, managed: ManagedCluster, host: str) -> None:
        self.managed = managed
        self.host = host
        self.n = 1
        self.nodes = [SimpleNamespace(index=1, alive=True, stopped=False)]

    def connect(self, _i: int, database: str = "defaultdb", autocommit: bool = True):
        return self.managed.connect(self.host, database, autocommit)

    def sql(self, _i: int, *statements: str, database: str = "defaultdb") -> list:
        conn = self.connect(1, database)
        return run_and_close(conn, statements)
