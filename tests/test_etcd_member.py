"""The etcd member a voting node runs (server/etcd_member.py), on real etcd processes.

Three members on 127.0.0.11-13 with TLS from `pillbug cert` form a group that etcdctl sees whole;
a member killed with -9 is restarted by its supervisor; a member stopped and started again on its
data dir rejoins with its data; and the member of a process killed with -9 dies with it
(PR_SET_PDEATHSIG). The layout table checks the pure computation of names, URLs and endpoints.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import ROOT, wait_for
from etcd_cluster import LoopThread, etcdctl, free_sql_port, make_node_certs, pid_alive, port_free

from pillbug.server.etcd_member import (
    ETCD_BINARY,
    ClusterLayout,
    EtcdMember,
    cluster_layout,
    etcd_client,
)

HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BINARY),
                                reason="etcd is not installed (make install installs Debian's etcd-server)")


# ---- the layout table ------------------------------------------------------------------------

def _layout(listen: str, join: list[str], **kw) -> ClusterLayout:
    return cluster_layout(listen, join, "/s", kw.pop("certs", "/c"), **kw)


J3 = ["10.0.0.1:26257", "10.0.0.2:26257", "10.0.0.3"]
LAYOUTS = [
    # (listen, join, overrides, member name, client addr, peer addr, endpoints)
    ("10.0.0.1:26257", J3, {}, "10.0.0.1:26257", "10.0.0.1:36257", "10.0.0.1:46257",
     ("10.0.0.1:36257", "10.0.0.2:36257", "10.0.0.3:36257")),
    ("10.0.0.3:26257", J3, {}, "10.0.0.3:26257", "10.0.0.3:36257", "10.0.0.3:46257",
     ("10.0.0.3:36257", "10.0.0.1:36257", "10.0.0.2:36257")),
    # the default port is 26257 on either side
    ("10.0.0.2", J3, {}, "10.0.0.2:26257", "10.0.0.2:36257", "10.0.0.2:46257",
     ("10.0.0.2:36257", "10.0.0.1:36257", "10.0.0.3:36257")),
    # not in --join: a gateway, no member, every voter's client port
    ("10.0.0.9:26257", J3, {}, None, None, None, ("10.0.0.1:36257", "10.0.0.2:36257", "10.0.0.3:36257")),
    # the same address on another port is another node
    ("10.0.0.1:26258", J3, {}, None, None, None, ("10.0.0.1:36257", "10.0.0.2:36257", "10.0.0.3:36257")),
    # --advertise-addr is the node's identity when the listen address is a wildcard
    (":26257", J3, {"advertise_addr": "10.0.0.2:26257"}, "10.0.0.2:26257", "10.0.0.2:36257",
     "10.0.0.2:46257", ("10.0.0.2:36257", "10.0.0.1:36257", "10.0.0.3:36257")),
    # overrides move the own member only
    ("10.0.0.1:26257", J3, {"etcd_client_addr": "10.0.0.1:2379", "etcd_peer_addr": "10.0.0.1:2380"},
     "10.0.0.1:26257", "10.0.0.1:2379", "10.0.0.1:2380", ("10.0.0.1:2379", "10.0.0.2:36257", "10.0.0.3:36257")),
    # a gateway's --etcd-client-addr is the member it prefers
    ("10.0.0.9:26257", J3, {"etcd_client_addr": "10.0.0.3:36257"}, None, None, None,
     ("10.0.0.3:36257", "10.0.0.1:36257", "10.0.0.2:36257")),
    # one voter: a one-member group; duplicates in --join count once
    ("n1:5432", ["n1:5432", "n1:5432"], {}, "n1:5432", "n1:15432", "n1:25432", ("n1:15432",)),
    # IPv6
    ("[::1]:26257", ["[::1]:26257"], {}, "[::1]:26257", "[::1]:36257", "[::1]:46257", ("[::1]:36257",)),
]


@pytest.mark.parametrize("listen,join,overrides,name,client,peer,endpoints", LAYOUTS)
def test_layout(listen, join, overrides, name, client, peer, endpoints) -> None:
    layout = _layout(listen, join, **overrides)
    assert layout.client_endpoints == endpoints
    if name is None:
        assert layout.member is None
        return
    m = layout.member
    assert m is not None
    assert (m.name, m.client_addr, m.peer_addr) == (name, client, peer)
    assert m.data_dir == "/s/etcd" and m.log_path == "/s/logs/etcd.log"
    assert dict(m.initial_cluster)[name] == f"https://{peer}"


def test_layout_every_voter_computes_the_same_initial_cluster() -> None:
    members = [_layout(a, J3).member for a in J3]
    assert len({m.initial_cluster for m in members}) == 1
    assert len({m.cluster_token for m in members}) == 1
    assert members[0].initial_cluster == (("10.0.0.1:26257", "https://10.0.0.1:46257"),
                                          ("10.0.0.2:26257", "https://10.0.0.2:46257"),
                                          ("10.0.0.3:26257", "https://10.0.0.3:46257"))
    # another cluster, another token
    assert _layout("10.0.0.1", ["10.0.0.1"]).member.cluster_token != members[0].cluster_token


def test_layout_insecure_uses_http_and_no_tls_flags() -> None:
    m = _layout("127.0.0.1:26257", ["127.0.0.1:26257"], certs=None).member
    args = m.args("/usr/bin/etcd")
    assert "--initial-cluster=127.0.0.1:26257=http://127.0.0.1:46257" in args
    assert "--listen-client-urls=http://127.0.0.1:36257" in args
    assert not any("cert" in a or "trusted-ca" in a for a in args)


def test_layout_secure_flags() -> None:
    args = _layout("127.0.0.1:26257", ["127.0.0.1:26257"]).member.args("/usr/bin/etcd")
    for flag in ("--client-cert-auth", "--peer-client-cert-auth", "--trusted-ca-file=/c/ca.crt",
                 "--peer-trusted-ca-file=/c/ca.crt", "--cert-file=/c/node.crt", "--peer-key-file=/c/node.key",
                 "--heartbeat-interval=50", "--election-timeout=500", "--pre-vote=true", "--max-txn-ops=4096",
                 "--max-request-bytes=8388608", "--quota-backend-bytes=8589934592", "--snapshot-count=10000",
                 "--auto-compaction-retention=0"):
        assert flag in args


@pytest.mark.parametrize("listen,join,kw,message", [
    ("10.0.0.1", [], {}, "no --join"),
    ("10.0.0.1", ["10.0.0.1:x"], {}, "invalid port"),
    ("10.0.0.1", ["10.0.0.1:99999"], {}, "out of range"),
    ("10.0.0.1:50000", ["10.0.0.1:50000"], {}, "past 65535"),
    ("10.0.0.1", ["10.0.0.1"], {"etcd_peer_addr": "10.0.0.1"}, "--etcd-peer-addr=10.0.0.1: give host:port"),
    ("10.0.0.1", [":26257"], {}, "has no host"),
])
def test_layout_errors(listen, join, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        _layout(listen, join, **kw)


# ---- real members ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> str:
    return make_node_certs(str(tmp_path_factory.mktemp("etcd-pki")), HOSTS + ("127.0.0.14",))


@pytest.fixture(scope="module")
def cluster(pki: str, tmp_path_factory) -> Iterator[tuple[LoopThread, list[EtcdMember], str]]:
    base = str(tmp_path_factory.mktemp("etcd-cluster"))
    port = free_sql_port(HOSTS)
    join = [f"{h}:{port}" for h in HOSTS]
    loop = LoopThread()
    members = [EtcdMember(cluster_layout(a, join, os.path.join(base, f"n{i}"), pki).member)
               for i, a in enumerate(join)]
    try:
        for m in members:
            loop.run(m.start())

        async def ready():
            await asyncio.gather(*(m.wait_ready(30) for m in members))
        loop.run(ready())
        yield loop, members, pki
    finally:
        for m in members:
            try:
                loop.run(m.stop())
            except Exception:
                if m.pid:
                    os.killpg(m.pid, signal.SIGKILL)
        loop.close()


def test_three_members_form_a_healthy_cluster(cluster) -> None:
    loop, members, certs = cluster
    endpoints = [m.client_endpoint for m in members]
    out = etcdctl(certs, endpoints, "endpoint", "health")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("is healthy") == 3, out.stderr
    listed = etcdctl(certs, endpoints[:1], "member", "list", "-w", "simple")
    assert listed.returncode == 0, listed.stderr
    names = sorted(line.split(", ")[2] for line in listed.stdout.splitlines())
    assert names == sorted(m.config.name for m in members)
    # the node's own client: TLS with node.crt, through etcd3aio
    put = etcdctl(certs, endpoints, "put", "k/hello", "world")
    assert put.returncode == 0, put.stderr

    async def read():
        client = etcd_client(endpoints, certs)
        await client.connect()
        try:
            return (await client.kv.get(b"k/hello", timeout=5)).kvs[0].value
        finally:
            await client.close()
    assert loop.run(read()) == b"world"


def test_client_without_a_certificate_is_refused(cluster) -> None:
    _, members, certs = cluster
    out = subprocess.run(["etcdctl", f"--endpoints=https://{members[0].client_endpoint}", f"--cacert={certs}/ca.crt",
                          "--command-timeout=1s", "get", "k/hello"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "k/hello" not in out.stdout
    with open(members[0].config.log_path) as f:
        assert "client didn't provide a certificate" in f.read()


def test_crashed_member_is_restarted(cluster) -> None:
    loop, members, certs = cluster
    m = members[1]
    old = m.pid
    restarts = m.restarts
    os.killpg(old, signal.SIGKILL)
    wait_for(lambda: m.restarts == restarts + 1 and m.pid != old and m.is_running, "the supervisor's restart")
    assert not pid_alive(old)
    loop.run(m.wait_ready(30))
    out = etcdctl(certs, [m.client_endpoint], "endpoint", "health")
    assert out.returncode == 0, out.stderr
    with open(m.config.log_path) as f:
        assert f.read().count("rejoining with its data") >= 1


def test_member_restarted_on_its_data_dir_rejoins(cluster) -> None:
    loop, members, certs = cluster
    m = members[2]
    loop.run(m.stop())
    assert not m.is_running and not pid_alive(m.pid)
    # the other two keep a quorum and take a write the stopped member has not seen
    out = etcdctl(certs, [members[0].client_endpoint], "put", "k/while-away", "v2")
    assert out.returncode == 0, out.stderr
    again = EtcdMember(m.config)
    members[2] = again  # the fixture stops it
    loop.run(again.start())
    loop.run(again.wait_ready(30))
    # a serializable read is answered by the member itself, from its own data
    got = etcdctl(certs, [again.client_endpoint], "get", "--consistency=s", "k/while-away", "--print-value-only")
    assert got.stdout.strip() == "v2", got.stderr
    listed = etcdctl(certs, [again.client_endpoint], "member", "list")
    assert len(listed.stdout.splitlines()) == 3


CHILD = """
import asyncio, sys
from pillbug.server.etcd_member import EtcdMember, cluster_layout
async def main():
    m = EtcdMember(cluster_layout(sys.argv[1], [sys.argv[1]], sys.argv[2], None).member)
    await m.start()
    print(m.pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_member_dies_with_its_node_even_by_kill_9(tmp_path) -> None:
    port = free_sql_port(("127.0.0.14",))
    env = {**os.environ, "PYTHONPATH": ROOT}
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"127.0.0.14:{port}", str(tmp_path)],
                             stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    etcd_pid = 0
    try:
        etcd_pid = int(child.stdout.readline())
        assert pid_alive(etcd_pid)
        wait_for(lambda: not port_free("127.0.0.14", port + 10000), "the member to listen")
        child.kill()  # SIGKILL: the node gets no chance to stop its member
        child.wait(10)
        wait_for(lambda: not pid_alive(etcd_pid), "the member to die with its node", timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        if etcd_pid and pid_alive(etcd_pid):
            os.kill(etcd_pid, signal.SIGKILL)
        shutil.rmtree(tmp_path, ignore_errors=True)



def test_supervisor_gives_up_after_bounded_restarts(tmp_path) -> None:
    port = free_sql_port(("127.0.0.14",))
    blocker = socket.socket()
    blocker.bind(("127.0.0.14", port + 10000))  # the member's client port is taken: etcd exits at once
    blocker.listen()
    loop = LoopThread()
    m = EtcdMember(cluster_layout(f"127.0.0.14:{port}", [f"127.0.0.14:{port}"], str(tmp_path), None).member,
                   max_restarts=2)
    try:
        loop.run(m.start())
        with pytest.raises(OSError, match="restarted 2 times in 60s; giving up"):
            loop.run(m.wait_ready(30))
        assert m.restarts == 2 and not m.is_running
        with open(m.config.log_path) as f:
            assert f.read().count("pillbug starts etcd member") == 3
    finally:
        loop.run(m.stop())
        loop.close()
        blocker.close()
