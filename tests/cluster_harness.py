"""A real multi-node Pillbug cluster for fault tests: n `pillbug start --join` processes, each with
the etcd member it supervises, `pillbug init` once, an admin user; and the faults done to it.

Addresses. By default node i (1-based) listens on 127.0.0.1<i> (127.0.0.11, .12, .13): separate
loopback addresses with the same ports, as separate machines would have. A network cut needs more
than loopback can give: on loopback every connection's source address is 127.0.0.1 whoever dials
(the kernel's local route picks it), so a port or address filter cannot tell node 1's etcd member
dialling node 2 from node 3's doing the same, and etcd's peer streams run both ways (a reader dials
the writer), so blocking one node's listening port cuts only half of its traffic. So a cluster made
with `netns=True` runs each node in its own network namespace joined to one bridge by a veth pair
(etcd.md: namespaces work as root here): node i is 10.231.K.1<i>, the test (root namespace) is
10.231.K.1, and cutting node i takes its veth link down - every packet to and from that node, SQL
clients included, is lost, as in a real partition, and healing brings the link back with the TCP
connections still open. The bridge has no uplink: these addresses are reachable from this host only.
That needs root and iproute2 (`make install` brings it); without them the cut tests skip.

Processes. Every node starts in its own session (process group); kill -9 of a node must take its
etcd member with it (the member gets a parent-death signal), and `orphans(i)` finds any process
still running with the node's store path or member port in its command line, which the tests assert
is empty. Teardown kills each node's group, then any straggler of the cluster's directory, by pid,
and removes the namespaces and bridge, even when the test failed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import psycopg2
from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG, run_and_close, run_cli

SQL_PORT = 26257
HTTP_PORT = 28080
ETCD_CLIENT_OFFSET = 10000
ETCD_PEER_OFFSET = 20000
START_TIMEOUT = 60.0


def cluster_mode_available() -> str | None:
    """Why a cluster cannot be started with this build (None when it can): `pillbug start` must
    take --join and `pillbug init` must exist."""
    if not shutil.which("etcd") and not os.path.exists("/usr/bin/etcd"):
        return "etcd is not installed (make install brings Debian's etcd-server)"
    start = subprocess.run([PILLBUG, "start", "--help"], capture_output=True, text=True, timeout=60)
    if start.returncode != 0 or "--join" not in start.stdout:
        return "this build's `pillbug start` does not take --join (cluster mode not built yet)"
    init = subprocess.run([PILLBUG, "init", "--help"], capture_output=True, text=True, timeout=60)
    if init.returncode != 0:
        return "this build has no `pillbug init`"
    return None


def netns_available() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no `ip` command (iproute2)"
    name = f"pbprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


class Network:
    """One bridge and a namespace per node; `cut(i)` / `heal(i)` take node i's link down / up."""

    def __init__(self, n: int) -> None:
        self.tag = random.randrange(20, 250)
        self.bridge = f"pbbr{self.tag}"
        self.n = n
        self.made: list[tuple[str, str]] = []  # ("ns" | "link", name) to remove at the end
        self.cut_nodes: set[int] = set()

    def address(self, i: int) -> str:
        return f"10.231.{self.tag}.{10 + i}"

    def namespace(self, i: int) -> str:
        return f"pb{self.tag}n{i}"

    def veth(self, i: int) -> str:
        return f"pbv{self.tag}n{i}"

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"10.231.{self.tag}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.n + 1):
            ns, veth = self.namespace(i), self.veth(i)
            _ip("netns", "add", ns)
            self.made.append(("ns", ns))
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.made.append(("link", veth))
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "down")
        self.cut_nodes.add(i)

    def heal(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "up")
        self.cut_nodes.discard(i)

    def down(self) -> None:
        for kind, name in reversed(self.made):
            if kind == "ns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self.made.clear()


@dataclass
class ClusterNode:
    index: int  # 1-based
    host: str
    store: str
    log_path: str
    args: list[str]
    prefix: list[str] = field(default_factory=list)  # `ip netns exec NS` in namespace mode
    proc: subprocess.Popen | None = None
    stopped: bool = False  # SIGSTOPped

    @property
    def addr(self) -> str:
        return f"{self.host}:{SQL_PORT}"

    @property
    def etcd_client(self) -> str:
        return f"{self.host}:{SQL_PORT + ETCD_CLIENT_OFFSET}"

    @property
    def etcd_peer(self) -> str:
        return f"{self.host}:{SQL_PORT + ETCD_PEER_OFFSET}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, chars: int = 6000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""


class Cluster:
    """`with Cluster(3, tmp) as c:` starts, inits and readies the cluster; leaving stops all."""

    def __init__(self, n: int, tmp: str, netns: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        self.n = n
        self.tmp = os.path.abspath(tmp)
        self.net = Network(n) if netns else None
        self.extra_args = list(extra_args)
        self.certs = os.path.join(self.tmp, "certs")
        self.nodes: list[ClusterNode] = []

    # ---- set-up ----------------------------------------------------------------------------

    def host(self, i: int) -> str:
        return self.net.address(i) if self.net else f"127.0.0.{10 + i}"

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def make_certs(self) -> None:
        ca_key = os.path.join(self.tmp, "safe", "ca.key")
        run_cli("cert", "create-ca", f"--certs-dir={self.certs}", f"--ca-key={ca_key}")
        hosts = [self.host(i) for i in range(1, self.n + 1)]
        run_cli("cert", "create-node", *hosts, "localhost", "127.0.0.1",
                f"--certs-dir={self.certs}", f"--ca-key={ca_key}")
        run_cli("cert", "create-client", "root", f"--certs-dir={self.certs}", f"--ca-key={ca_key}")

    def start(self) -> None:
        os.makedirs(self.tmp, exist_ok=True)
        if self.net:
            self.net.up()
        self.make_certs()
        join = ",".join(f"{self.host(i)}:{SQL_PORT}" for i in range(1, self.n + 1))
        for i in range(1, self.n + 1):
            host = self.host(i)
            store = os.path.join(self.tmp, f"n{i}")
            args = [PILLBUG, "start", f"--certs-dir={self.certs}", f"--store={store}",
                    f"--listen-addr={host}:{SQL_PORT}", f"--http-addr={host}:{HTTP_PORT}",
                    f"--join={join}", f"--locality=region=r1,zone=z{i}", *self.extra_args]
            prefix = ["ip", "netns", "exec", self.net.namespace(i)] if self.net else []
            self.nodes.append(ClusterNode(i, host, store, store + ".log", args, prefix))
        for node in self.nodes:
            self._spawn(node)
        run_cli("init", f"--certs-dir={self.certs}", f"--host={self.nodes[0].addr}")
        self.wait_ready()
        self.sql(1, f"CREATE USER IF NOT EXISTS {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}'",
                 f"GRANT admin TO {ADMIN_USER}")

    def _spawn(self, node: ClusterNode) -> None:
        with open(node.log_path, "ab") as log:
            # `ip netns exec` execs the command: the pid is the node's own.
            node.proc = subprocess.Popen(node.prefix + node.args, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.tmp)
        node.stopped = False

    def node(self, i: int) -> ClusterNode:
        return self.nodes[i - 1]

    # ---- health ----------------------------------------------------------------------------

    def health(self, i: int, ready: bool = True) -> int:
        """The HTTP status of node i's /health (?ready=1); 0 when it does not answer."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.crt"))
        url = f"https://{self.node(i).host}:{HTTP_PORT}/health" + ("?ready=1" if ready else "")
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ssl.SSLError):
            return 0

    def wait_ready(self, nodes: list[int] | None = None, timeout: float = START_TIMEOUT) -> None:
        pending = list(nodes or range(1, self.n + 1))
        deadline = time.monotonic() + timeout
        while pending:
            for i in list(pending):
                node = self.node(i)
                if node.proc is not None and node.proc.poll() is not None:
                    raise AssertionError(f"node {i} exited with {node.proc.returncode}:\n{node.log()}")
                if self.health(i) == 200:
                    pending.remove(i)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"nodes {pending} not ready after {timeout:.0f} s:\n"
                                     + "\n".join(f"--- node {i}\n{self.node(i).log()}" for i in pending))
            if pending:
                time.sleep(0.05)

    # ---- SQL -------------------------------------------------------------------------------

    def params(self, i: int, database: str = "defaultdb", user: str = "root") -> dict[str, str | int]:
        return {"host": self.node(i).host, "port": SQL_PORT, "user": user, "dbname": database,
                "sslmode": "verify-full", "sslrootcert": os.path.join(self.certs, "ca.crt"),
                "sslcert": os.path.join(self.certs, f"client.{user}.crt"),
                "sslkey": os.path.join(self.certs, f"client.{user}.key"),
                # A cut-off or dead node must not hang a client for minutes: give up on the
                # connection (an unknown outcome for what was in flight) after a few seconds.
                "connect_timeout": 3, "tcp_user_timeout": 5000, "keepalives": 1,
                "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 3}

    def connect(self, i: int, database: str = "defaultdb", autocommit: bool = True):
        conn = psycopg2.connect(**self.params(i, database))
        conn.autocommit = autocommit
        return conn

    def sql(self, i: int, *statements: str, database: str = "defaultdb") -> list:
        conn = self.connect(i, database)
        return run_and_close(conn, statements)

    # ---- etcd ------------------------------------------------------------------------------

    def etcd_status(self) -> dict[int, dict]:
        """`etcdctl endpoint status` of every live member: node index -> its status (member_id,
        leader, raft_term, revision). Members that do not answer are left out."""
        found: dict[int, dict] = {}
        for node in self.nodes:
            if not node.alive or node.stopped:
                continue
            cmd = ["etcdctl", f"--endpoints=https://{node.etcd_client}",
                   f"--cacert={os.path.join(self.certs, 'ca.crt')}",
                   f"--cert={os.path.join(self.certs, 'node.crt')}",
                   f"--key={os.path.join(self.certs, 'node.key')}",
                   "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "status", "-w", "json"]
            # The test process talks to members in a namespace over the bridge: no prefix needed.
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5,
                                     env={**os.environ, "ETCDCTL_API": "3"})
            except subprocess.TimeoutExpired:
                continue
            if out.returncode != 0:
                continue
            status = json.loads(out.stdout)[0]["Status"]
            # etcdctl's JSON leaves out fields that are zero (no leader yet: no "leader").
            found[node.index] = {"member_id": status["header"]["member_id"], "leader": status.get("leader", 0),
                                 "raft_term": status.get("raftTerm", 0),
                                 "revision": status["header"].get("revision", 0)}
        return found

    def etcd_leader(self, timeout: float = 15.0) -> int:
        """The index of the node whose etcd member is the Raft leader, as its peers agree."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.etcd_status()
            by_member = {s["member_id"]: i for i, s in status.items()}
            leaders = {s["leader"] for s in status.values()}
            if len(leaders) == 1 and len(status) >= (self.n // 2 + 1) and 0 not in leaders:
                leader = leaders.pop()
                if leader in by_member:
                    return by_member[leader]
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed etcd leader after {timeout:.0f} s: {status}")
            time.sleep(0.05)

    # ---- faults ----------------------------------------------------------------------------

    def kill9(self, i: int) -> float:
        """kill -9 node i (its process group); returns the monotonic time of the kill."""
        node = self.node(i)
        assert node.proc is not None
        at = time.monotonic()
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(10)
        return at

    def kill9_node_only(self, i: int) -> float:
        """kill -9 of the node's own pid only (not its group), as a crash or the OOM killer does:
        its etcd member must die with it (parent-death signal)."""
        node = self.node(i)
        assert node.proc is not None
        at = time.monotonic()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        return at

    def pause(self, i: int) -> None:
        """SIGSTOP node i and its member (the whole process group, as a frozen VM would be)."""
        os.killpg(self.node(i).proc.pid, signal.SIGSTOP)
        self.node(i).stopped = True

    def resume(self, i: int) -> None:
        os.killpg(self.node(i).proc.pid, signal.SIGCONT)
        self.node(i).stopped = False

    def restart(self, i: int, timeout: float = START_TIMEOUT) -> None:
        node = self.node(i)
        assert not node.alive, f"node {i} is still running"
        self._spawn(node)
        self.wait_ready([i], timeout)

    def cut(self, i: int) -> None:
        assert self.net is not None, "a network cut needs Cluster(netns=True)"
        self.net.cut(i)

    def heal(self, i: int) -> None:
        assert self.net is not None
        self.net.heal(i)

    def orphans(self, i: int | None = None) -> list[tuple[int, str]]:
        """(pid, command line) of running processes that belong to node i (or to any node):
        whose command line names the node's store or its member's peer listener, other than the
        live node process itself."""
        marks: list[str] = []
        live: set[int] = set()
        for node in self.nodes if i is None else [self.node(i)]:
            # Not the bare peer address: every member's --initial-cluster names all of them.
            marks += [node.store + "/", node.store + " ", f"--listen-peer-urls=https://{node.etcd_peer}",
                      f"--listen-peer-urls=http://{node.etcd_peer}"]
        for node in self.nodes:
            if node.alive:
                live.add(node.proc.pid)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in live or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state == "Z":
                continue
            if any(mark in cmdline for mark in marks):
                found.append((int(entry), cmdline.strip()))
        return found

    def members_of(self, i: int) -> list[tuple[int, str]]:
        """The live processes of node i other than the node process (its etcd member)."""
        return self.orphans(i)

    def wait_no_orphans(self, i: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.orphans(i):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {i} was killed but its processes live on: {self.orphans(i)}")
            time.sleep(0.02)

    # ---- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(node.proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Stragglers: members that escaped their node's group; only processes of this cluster.
        for pid, _ in self.orphans():
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.net:
            self.net.down()
