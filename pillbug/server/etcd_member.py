"""The etcd member a voting node runs: its configuration, and the process that starts, supervises
and stops it.

A cluster's data lives in one etcd group (docs/rfcs/0001-cluster.md §2.1). The voters are the
nodes named in `--join`; each of them runs one member of that group as a child process of the
node. Every voter computes the same `--initial-cluster` from the join list alone (SQL port + 20000
is a node's peer port, + 10000 its client port), so no node has to ask another anything before
the group can form, and a node not in the join list is a gateway that only talks to the voters'
client ports. `cluster_layout` is that computation, a pure function; `EtcdMember` is the I/O shell.

The member's lifetime is tied to the node's: it runs in its own session (a Ctrl-C meant for the
node does not reach it; the node stops it in order), it gets SIGKILL from the kernel when the node
dies in any way, kill -9 included (PR_SET_PDEATHSIG, set by setpriv), so that a dead node's member never keeps
voting; and while the node lives, a member that crashes is restarted with a backoff, a bounded
number of times. A restart on an existing data dir rejoins with that data (etcd ignores the
initial-cluster flags then).

This module knows nothing of SQL or of how the store uses etcd; it only runs the member and says
where its clients are.
"""
from __future__ import annotations

import asyncio
import ctypes
import hashlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("pillbug.etcd")

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"
DEFAULT_SQL_PORT = 26257
CLIENT_PORT_OFFSET = 10000
PEER_PORT_OFFSET = 20000

# docs/rfcs/0001-cluster.md §2.1 and shared/reference/etcd.md §4, §6 (checked against etcd 3.4.23's
# --help). Auto-compaction stays off (retention 0): Pillbug compacts at its own GC horizon, which
# must never pass the oldest active read revision.
TUNED_FLAGS: tuple[str, ...] = (
    "--heartbeat-interval=50",
    "--election-timeout=500",
    "--pre-vote=true",
    "--max-txn-ops=4096",
    "--max-request-bytes=8388608",
    "--quota-backend-bytes=8589934592",
    "--snapshot-count=10000",
    "--auto-compaction-retention=0",
)

PR_SET_PDEATHSIG = 1


def split_host_port(text: str, default_port: int = DEFAULT_SQL_PORT) -> tuple[str, int]:
    """`host:port`, `host`, `[v6]:port` or `:port` -> (host, port); the host may be empty."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port = text, ""
    else:
        host, port = text, ""
    if port and not port.isdigit():
        raise ValueError(f"invalid port {port!r} in address {text!r}")
    number = int(port) if port else default_port
    if port and not 0 < number < 65536:
        raise ValueError(f"port {number} out of range in address {text!r}")
    return host, number


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _offset(addr: str, offset: int) -> str:
    host, port = split_host_port(addr)
    if port + offset > 65535:
        raise ValueError(f"address {addr}: port {port} + {offset} is past 65535; "
                         f"choose a lower port or set the etcd addresses explicitly")
    return join_host_port(host, port + offset)


def normalize_addr(text: str, default_port: int = DEFAULT_SQL_PORT) -> str:
    """The canonical `host:port` form that node names and join entries are compared in."""
    host, port = split_host_port(text, default_port)
    if not host:
        raise ValueError(f"address {text!r} has no host")
    return join_host_port(host, port)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """Everything one etcd member is started with."""
    name: str                                   # the node's address, host:port
    data_dir: str
    client_addr: str                            # host:port the member serves clients on
    peer_addr: str                              # host:port the member serves its peers on
    initial_cluster: tuple[tuple[str, str], ...]  # (member name, peer URL) of every voter
    certs_dir: str | None                       # ca.crt, node.crt, node.key; None = insecure (http)
    log_path: str

    @property
    def scheme(self) -> str:
        return "http" if self.certs_dir is None else "https"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.client_addr}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.peer_addr}"

    @property
    def cluster_token(self) -> str:
        """The same on every voter (it depends only on the voter list), and different for two
        clusters, so that a member never joins a group it was not meant for."""
        text = ",".join(f"{n}={u}" for n, u in self.initial_cluster)
        return "pillbug-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def args(self, binary: str = ETCD_BINARY) -> list[str]:
        """The etcd command line. Listen URLs take IP addresses (etcd refuses host names there),
        advertised URLs keep the names the other nodes use."""
        client_host, client_port = split_host_port(self.client_addr)
        peer_host, peer_port = split_host_port(self.peer_addr)
        listen_client = f"{self.scheme}://{join_host_port(_resolve(client_host), client_port)}"
        listen_peer = f"{self.scheme}://{join_host_port(_resolve(peer_host), peer_port)}"
        args = [binary, f"--name={self.name}", f"--data-dir={self.data_dir}",
                f"--listen-client-urls={listen_client}", f"--advertise-client-urls={self.client_url}",
                f"--listen-peer-urls={listen_peer}", f"--initial-advertise-peer-urls={self.peer_url}",
                "--initial-cluster=" + ",".join(f"{n}={u}" for n, u in self.initial_cluster),
                "--initial-cluster-state=new", f"--initial-cluster-token={self.cluster_token}",
                "--logger=zap", "--log-outputs=stderr", *TUNED_FLAGS]
        if self.certs_dir is not None:
            ca, crt, key = (os.path.join(self.certs_dir, f) for f in ("ca.crt", "node.crt", "node.key"))
            args += [f"--cert-file={crt}", f"--key-file={key}", "--client-cert-auth", f"--trusted-ca-file={ca}",
                     f"--peer-cert-file={crt}", f"--peer-key-file={key}", "--peer-client-cert-auth",
                     f"--peer-trusted-ca-file={ca}",
                     # Peers are nodes: like CockroachDB's node-to-node RPC, a peer must present a
                     # certificate with CN=node signed by the cluster's CA (a client.root cert may
                     # read and write keys, but cannot pose as a member). Its SANs are not checked
                     # against the connection's source address: on loopback and multi-homed hosts
                     # the kernel picks a source the certificate need not list (127.0.0.11 dials
                     # 127.0.0.12 from 127.0.0.1). The server side is still verified by its SANs.
                     "--peer-cert-allowed-cn=node", "--experimental-peer-skip-client-san-verification=true"]
        return args


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """What a node of a cluster runs and talks to."""
    member: MemberConfig | None  # None: the node is a gateway (not in --join)
    client_endpoints: tuple[str, ...]  # etcd client host:port, the node's own member first
    voters: tuple[str, ...]  # the voting nodes' addresses, from --join


def _resolve(host: str) -> str:
    if not host:
        return "0.0.0.0"
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def cluster_layout(listen_addr: str, join: list[str], store_dir: str, certs_dir: str | None, *,
                   advertise_addr: str | None = None, etcd_client_addr: str | None = None,
                   etcd_peer_addr: str | None = None) -> ClusterLayout:
    """The member a node runs (if it votes) and the etcd client endpoints it uses.

    The node's identity is its advertised address (or its listen address): the node votes iff that
    address is in `join`. Every voter's member is named after its address; its peer URL is the
    address's port + 20000 and its client address port + 10000. `etcd_peer_addr` and
    `etcd_client_addr` move this node's own member; the others' addresses are still computed, so
    an override of the peer address must be given alike to every voter (whose --initial-cluster
    would otherwise disagree) and is meant for tests and port clashes. On a gateway,
    `etcd_client_addr` names the member to prefer.
    """
    if not join:
        raise ValueError("no --join addresses")
    voters = tuple(dict.fromkeys(normalize_addr(a) for a in join))
    me = normalize_addr(advertise_addr or listen_addr)
    scheme = "http" if certs_dir is None else "https"
    for override, flag in ((etcd_peer_addr, "--etcd-peer-addr"), (etcd_client_addr, "--etcd-client-addr")):
        if override is not None and not split_host_port(override, -1)[1] > 0:
            raise ValueError(f"{flag}={override}: give host:port")
    own_peer = normalize_addr(etcd_peer_addr) if etcd_peer_addr else None
    own_client = normalize_addr(etcd_client_addr) if etcd_client_addr else None
    initial = tuple((v, f"{scheme}://{own_peer if v == me and own_peer else _offset(v, PEER_PORT_OFFSET)}")
                    for v in voters)
    others = [_offset(v, CLIENT_PORT_OFFSET) for v in voters if v != me]
    if me not in voters:
        endpoints = ([own_client] if own_client else []) + [e for e in others if e != own_client]
        return ClusterLayout(None, tuple(endpoints), voters)
    client = own_client or _offset(me, CLIENT_PORT_OFFSET)
    member = MemberConfig(name=me, data_dir=os.path.join(store_dir, "etcd"), client_addr=client,
                          peer_addr=own_peer or _offset(me, PEER_PORT_OFFSET), initial_cluster=initial,
                          certs_dir=certs_dir, log_path=os.path.join(store_dir, "logs", "etcd.log"))
    return ClusterLayout(member, (client, *others), voters)


# ---- talking to etcd with the node's certificates ----------------------------------------------

def etcd_client(endpoints: list[str] | tuple[str, ...], certs_dir: str | None, cert_name: str = "node",
                rpc_max_attempts: int = 1):
    """An etcd3aio client (not yet connected) for `endpoints`, over mutual TLS with
    `<certs_dir>/<cert_name>.crt/.key` (node, or client.root for the CLI) or plain http when
    `certs_dir` is None. etcd3aio's channel only takes IP literals: host names are resolved here,
    and the server's certificate is then checked against the first endpoint's name."""
    from etcd3aio import Etcd3Client  # grpc is heavy; single-node never loads it
    resolved, names = [], []
    for endpoint in endpoints:
        host, port = split_host_port(endpoint, 0)
        resolved.append(join_host_port(_resolve(host), port))
        names.append(host)
    if certs_dir is None:
        return Etcd3Client(resolved, rpc_max_attempts=rpc_max_attempts)
    files = {}
    for part, name in (("ca_cert", "ca.crt"), ("cert_chain", f"{cert_name}.crt"), ("cert_key", f"{cert_name}.key")):
        with open(os.path.join(certs_dir, name), "rb") as f:
            files[part] = f.read()
    server_name = None if _is_ip(names[0]) and len(resolved) == 1 else names[0] or None
    return Etcd3Client(resolved, rpc_max_attempts=rpc_max_attempts, tls_server_name=server_name, **files)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ---- the process ---------------------------------------------------------------------------------

SETPRIV = shutil.which("setpriv")  # util-linux, in every Debian


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn fallback where setpriv is missing. The parent may have died between fork and
    prctl, which prctl would not notice, hence the getppid check."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent_pid:
        os._exit(127)


def spawn_tied(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen(cmd) in a session of its own, as a child that gets SIGKILL when the thread that
    spawned it dies (PR_SET_PDEATHSIG): the member of a node killed with -9, demo's nodes.

    setpriv sets the signal and execs cmd, so no Python runs between fork and exec: a node has
    gRPC threads, and Python code in a child forked from a threaded process (a preexec_fn) can
    deadlock or abort on a lock one of those threads held at the fork (seen: SIGABRT in the child).
    The cost is a window of a few microseconds, before setpriv's prctl, in which a parent's death
    would go unnoticed."""
    if SETPRIV:
        return subprocess.Popen([SETPRIV, "--pdeathsig", "KILL", "--", *cmd], start_new_session=True,
                                **popen_kwargs)
    parent = os.getpid()
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: _die_with_parent(parent),
                            **popen_kwargs)


class EtcdMember:
    """Runs one etcd member as a child of this process and keeps it running.

    start() launches it; wait_ready() waits until it serves linearizable reads (it has joined a
    group with a leader and a quorum); stop() ends it with SIGTERM (etcd then hands off leadership)
    and SIGKILL after `stop_timeout`. Between the two, a member that exits is restarted after a
    backoff (0.2 s doubling to 5 s); after `max_restarts` restarts within `restart_window` seconds
    the supervisor gives up, logs it, and `failed` says why.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: start() must be called
    from the thread that lives as long as the node (the event loop's).
    """

    def __init__(self, config: MemberConfig, *, binary: str = ETCD_BINARY, max_restarts: int = 5,
                 restart_window: float = 60.0, stop_timeout: float = 10.0) -> None:
        self.config = config
        self.binary = binary
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.failed: str | None = None
        self._restart_times: list[float] = []
        self._stopping = False
        self._supervisor: asyncio.Task | None = None
        self._exited: asyncio.Event | None = None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def client_endpoint(self) -> str:
        return self.config.client_addr

    async def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError("etcd member already started")
        if not os.path.exists(self.binary):
            raise OSError(f"etcd is not installed at {self.binary} (Debian: apt-get install etcd-server)")
        self._stopping = False
        self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"etcd-member {self.config.name}")

    def _spawn(self) -> None:
        cfg = self.config
        os.makedirs(os.path.dirname(cfg.log_path), exist_ok=True)
        os.makedirs(os.path.dirname(os.path.abspath(cfg.data_dir)), exist_ok=True)
        rejoin = os.path.isdir(os.path.join(cfg.data_dir, "member"))
        with open(cfg.log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pillbug starts etcd member {cfg.name} "
                      f"({'rejoining with its data' if rejoin else 'new'})\n".encode())
            out.flush()
            self.proc = spawn_tied(cfg.args(self.binary), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
        log.info("etcd member %s started (pid %d, client %s, peer %s, data %s%s; log %s)", cfg.name,
                 self.proc.pid, cfg.client_url, cfg.peer_url, cfg.data_dir, ", rejoining" if rejoin else "",
                 cfg.log_path)

    async def _wait_exit(self, proc: subprocess.Popen) -> int:
        """Wait for the process without a thread or a polling loop: a pidfd is readable once the
        process has exited."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            while proc.poll() is None:
                await asyncio.sleep(0.1)
            return proc.returncode
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(fd, lambda: done.done() or done.set_result(None))
        try:
            if proc.poll() is None:
                await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return proc.wait()

    async def _supervise(self) -> None:
        backoff = 0.2
        while True:
            assert self.proc is not None
            started = time.monotonic()
            code = await self._wait_exit(self.proc)
            if self._stopping:
                return
            now = time.monotonic()
            if now - started > self.restart_window:
                backoff = 0.2  # it ran well for a while: this is a new failure, not the same one
            self._restart_times = [t for t in self._restart_times if now - t < self.restart_window]
            if len(self._restart_times) >= self.max_restarts:
                self.failed = (f"etcd member {self.config.name} exited with {code} and was restarted "
                               f"{len(self._restart_times)} times in {self.restart_window:.0f}s; giving up "
                               f"(see {self.config.log_path})")
                log.error("%s", self.failed)
                return
            log.warning("etcd member %s exited with %s; restarting in %.1fs (see %s)",
                        self.config.name, code, backoff, self.config.log_path)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            backoff = min(backoff * 2, 5.0)
            self._restart_times.append(time.monotonic())
            self.restarts += 1
            self._spawn()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the member answers a linearizable read, i.e. its group has a leader and a
        quorum. On a new cluster that needs a majority of the voters to be started."""
        if self._supervisor is None:
            raise RuntimeError("etcd member not started")
        deadline = time.monotonic() + timeout
        client = etcd_client([self.config.client_addr], self.config.certs_dir)
        await client.connect()
        last: BaseException | None = None
        try:
            while True:
                if self.failed:
                    raise OSError(self.failed)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"etcd member {self.config.name} not ready after {timeout:.0f}s "
                                       f"({last}); see {self.config.log_path}")
                try:
                    assert client.kv is not None
                    await client.kv.get(b"x/ready-probe", timeout=min(1.0, left))
                    return
                except Exception as exc:  # not up yet, no leader yet, no quorum yet: try again
                    last = exc
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        finally:
            await client.close()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after stop_timeout; the supervisor does not restart it."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self._wait_exit(proc), self.stop_timeout)
            except TimeoutError:
                log.warning("etcd member %s did not stop in %.0fs; killing it", self.config.name,
                            self.stop_timeout)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await self._wait_exit(proc)
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
