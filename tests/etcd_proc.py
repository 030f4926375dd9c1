"""A real one-member etcd for tests of the etcd engine: Debian's /usr/bin/etcd on a free loopback
port, in a temporary folder, killed (with its process group) when the test is done.

The product starts its members itself (server/); this is the bare engine underneath, for tests of
storage/etcd that need no node. Tests skip when etcd is not installed (`make install` installs it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EtcdProcess:
    proc: subprocess.Popen
    endpoint: str  # host:port of its client URL
    data_dir: str
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-6000:]

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def start_etcd(directory: str, host: str = "127.0.0.1", *extra: str) -> EtcdProcess:
    """Start a one-member etcd with the limits Pillbug's members run with (rfcs/0001 §2.1)."""
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (make install installs Debian's etcd-server)")
    client, peer = _free_port(host), _free_port(host)
    data = os.path.join(directory, "etcd")
    log_path = os.path.join(directory, "etcd.log")
    args = [ETCD, "--name=t", f"--data-dir={data}",
            f"--listen-client-urls=http://{host}:{client}", f"--advertise-client-urls=http://{host}:{client}",
            f"--listen-peer-urls=http://{host}:{peer}", f"--initial-advertise-peer-urls=http://{host}:{peer}",
            f"--initial-cluster=t=http://{host}:{peer}", "--initial-cluster-state=new",
            "--max-txn-ops=4096", "--max-request-bytes=8388608", "--snapshot-count=10000",
            "--heartbeat-interval=50", "--election-timeout=500", "--pre-vote=true", *extra]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    member = EtcdProcess(proc, f"{host}:{client}", data, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"etcd exited with {proc.returncode}:\n{member.log()}")
        try:
            with socket.create_connection((host, client), timeout=0.2):
                pass
            out = subprocess.run(["etcdctl", f"--endpoints={member.endpoint}", "endpoint", "health"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                return member
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.05)
    member.stop()
    raise AssertionError(f"etcd did not become healthy:\n{member.log()}")


@contextmanager
def etcd(directory: str, host: str = "127.0.0.1", *extra: str) -> Iterator[EtcdProcess]:
    member = start_etcd(directory, host, *extra)
    try:
        yield member
    finally:
        member.stop()
