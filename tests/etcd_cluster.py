"""Helpers for tests that run etcd members through server/etcd_member.py: an event loop thread
that owns them, free port triples (SQL port, +10000, +20000), a PKI from `pillbug cert` and etcdctl
with root's certificate."""
from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import threading

from conftest import run_cli


class LoopThread:
    """An event loop in a thread of its own that lives for the whole module: the members are its
    children, and PR_SET_PDEATHSIG ties them to the forking thread's life."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_sql_port(hosts: tuple[str, ...]) -> int:
    """A SQL port whose etcd ports (+10000, +20000) are free on every host."""
    for _ in range(200):
        port = random.randrange(20000, 25000)
        if all(port_free(h, p) for h in hosts for p in (port, port + 10000, port + 20000)):
            return port
    raise AssertionError("no free port triple")


def etcdctl(certs: str, endpoints: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", f"--endpoints={','.join('https://' + e for e in endpoints)}",
                           f"--cacert={certs}/ca.crt", f"--cert={certs}/client.root.crt",
                           f"--key={certs}/client.root.key", "--command-timeout=5s", *args],
                          capture_output=True, text=True, timeout=30)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed child not yet reaped still has a pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_node_certs(directory: str, hosts: tuple[str, ...]) -> str:
    """A CA, a node certificate for `hosts` (each member's peer and client addresses) and root's."""
    certs, ca_key = os.path.join(directory, "certs"), os.path.join(directory, "safe", "ca.key")
    run_cli("cert", "create-ca", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-node", *hosts, f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-client", "root", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    return certs
