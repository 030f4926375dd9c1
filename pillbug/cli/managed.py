"""pillbug cluster create | status | stop | start | delete: the managed service, on one machine.

`create` does what a managed service does before it hands a user the "Connect" dialog: it makes the
CA and the certificates, starts the nodes of every region with their localities, places the etcd
voters so that losing any one whole region keeps a quorum, initializes the cluster, starts one
HAProxy per region (balancing that region's nodes, health-checking /health?ready=1) and one global
HAProxy in front of the regions' balancers, creates an admin user with a generated password, sets
the allowlist, and prints the connection details (also written to DIR/connection.json).

The machine stands in for the regions: region r lives on 127.0.r.0/24 (Linux routes all of 127/8
to lo), its nodes on 127.0.r.1, .2, ..., its balancer on 127.0.r.200, the global host on
127.0.0.200; every entry point serves the same SQL port, as a managed service's hosts do. The
same software runs across machines: docs/deploy.md shows that deployment.

What the control plane knows lives in DIR/cluster.json (the plan: regions, nodes, voters, ports,
the user, the allowlist); each process it runs has DIR/run/<name>.pid and DIR/logs/<name>.log, so
that `status`, `stop`, `start` and `delete` work from the folder alone, from any shell, after the
`create` that started them has exited. The processes run in sessions of their own: they outlive
the command that started them, as a service's processes do.

The nodes see each client's real address: the balancers send a PROXY protocol v2 header from their
own address, the only one each node accepts such a header from (`--accept-proxy-protocol-from`),
and a regional balancer takes a header only from the global host. So the allowlist
(server.host_based_authentication.configuration) refuses a client outside it with 28000 naming
the client, whichever entry point it came through.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from pillbug.cli import cert, haproxy_config, health, init
from pillbug.server.etcd_member import CLIENT_PORT_OFFSET, PEER_PORT_OFFSET

PLAN_FILE = "cluster.json"
CONNECTION_FILE = "connection.json"
GLOBAL_HOST = "127.0.0.200"
BALANCER_SUFFIX = 200  # 127.0.<region>.200
MAX_REGIONS = 20
MAX_NODES_PER_REGION = 9
MAX_VOTERS = 5  # etcd's own advice: more members make every write slower, not safer
HBA_SETTING = "server.host_based_authentication.configuration"
CHECK_INTERVAL = "1s"  # how often balancers probe a server in service
TRANSITION_INTERVAL = "250ms"  # ... and one that failed a check, or is down: out or back in 0.5 s
STOP_TIMEOUT = 30.0  # SIGTERM (a node drains), then SIGKILL
_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class ClusterError(Exception):
    """What the user did wrong or what failed, printed as ERROR: ..."""


# ---- the plan ------------------------------------------------------------------------------------

def place_voters(regions: int, nodes_per_region: int) -> list[int]:
    """How many etcd voters each region gets: an odd number, at most MAX_VOTERS, and with three or
    more regions fewer than half of them in any one region, so that a whole region's loss leaves a
    quorum (3 regions x 1 node: 1-1-1; x 2 or more: 2-2-1, as CockroachDB's REGION survival places
    five replicas). With one or two regions no placement survives a region's loss."""
    total = regions * nodes_per_region
    voters = min(MAX_VOTERS, total)
    if voters % 2 == 0:
        voters -= 1
    cap = (voters - 1) // 2 if regions >= 3 else voters
    cap = min(cap, nodes_per_region)
    counts = [0] * regions
    placed = 0
    while placed < voters:
        progressed = False
        for r in range(regions):
            if placed < voters and counts[r] < cap:
                counts[r] += 1
                placed += 1
                progressed = True
        if not progressed:
            break
    if placed % 2 == 0:  # a cap left an even count: drop one from the last region that has one
        last = max(r for r in range(regions) if counts[r])
        counts[last] -= 1
    return counts


def _parse_near(values: list[str], regions: list[str]) -> dict[str, list[str]]:
    near: dict[str, list[str]] = {}
    for value in values:
        region, eq, cidrs = value.partition("=")
        if not eq or region not in regions:
            raise ClusterError(f"--near={value}: expected REGION=CIDR[,CIDR...] with REGION one of "
                               f"{', '.join(regions)}")
        for cidr in cidrs.split(","):
            try:
                near.setdefault(region, []).append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
            except ValueError as exc:
                raise ClusterError(f"--near={value}: {exc}") from None
    return near


def _parse_allowlist(text: str) -> list[str]:
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as exc:
            raise ClusterError(f"--allowlist: {exc}") from None
    if not out:
        raise ClusterError("--allowlist: no network given (0.0.0.0/0 allows every address)")
    return out


def make_plan(name: str, regions: list[str], nodes_per_region: int, port: int, http_port: int, user: str,
              allowlist: list[str], near: dict[str, list[str]]) -> dict:
    """The cluster's layout as cluster.json holds it."""
    if not regions or len(regions) > MAX_REGIONS:
        raise ClusterError(f"--regions: between 1 and {MAX_REGIONS} regions")
    for region in regions:
        if not _REGION_NAME.match(region):
            raise ClusterError(f"--regions: {region!r} is not a region name (lower-case letters, digits, '-')")
    if len(set(regions)) != len(regions):
        raise ClusterError("--regions: a region is named twice")
    if not 1 <= nodes_per_region <= MAX_NODES_PER_REGION:
        raise ClusterError(f"--nodes-per-region: between 1 and {MAX_NODES_PER_REGION}")
    if not 1 <= port <= 65535 - PEER_PORT_OFFSET:
        raise ClusterError(f"--port={port}: out of range (the SQL port + {PEER_PORT_OFFSET} must be a port too)")
    if not 1 <= http_port <= 65535:
        raise ClusterError(f"--http-port={http_port}: out of range")
    if port == http_port or http_port in (port + CLIENT_PORT_OFFSET, port + PEER_PORT_OFFSET):
        raise ClusterError(f"--http-port={http_port} collides with the SQL port or its etcd ports")
    if not user.isidentifier() or user.lower() in ("root", "admin", "public", "node"):
        raise ClusterError(f"--user={user}: choose another name (root, admin, public and node are reserved)")
    voters = place_voters(len(regions), nodes_per_region)
    plan_regions = []
    for r, region in enumerate(regions, start=1):
        nodes = [{"name": f"{region}-{i}", "host": f"127.0.{r}.{i}", "zone": f"{region}-{'abc'[(i - 1) % 3]}",
                  "voter": i <= voters[r - 1]} for i in range(1, nodes_per_region + 1)]
        plan_regions.append({"name": region, "lb_host": f"127.0.{r}.{BALANCER_SUFFIX}",
                             "client_networks": near.get(region, [f"127.0.{r}.0/24"]), "nodes": nodes})
    return {"name": name, "port": port, "http_port": http_port, "user": user, "database": "defaultdb",
            "allowlist": allowlist, "global_host": GLOBAL_HOST, "regions": plan_regions}


@dataclass(frozen=True)
class Process:
    """One process of the managed cluster: a node, a region's balancer, or the global host."""
    name: str
    kind: str  # node | balancer | global
    region: str
    host: str
    command: list[str]
    voter: bool = False  # a node that runs an etcd member


class Cluster:
    """A managed cluster's folder: its plan, its files and its processes."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)

    # paths
    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def ca_cert(self) -> str:
        return self.path("certs", "ca.crt")

    @property
    def operator_certs(self) -> str:
        """ca.crt and root's client certificate: how the control plane reaches etcd and SQL."""
        return self.path("operator")

    def node_certs(self, node: dict) -> str:
        return self.path("nodes", node["name"], "certs")

    def pid_file(self, name: str) -> str:
        return self.path("run", f"{name}.pid")

    def log_file(self, name: str) -> str:
        return self.path("logs", f"{name}.log")

    # the plan
    def exists(self) -> bool:
        return os.path.exists(self.path(PLAN_FILE))

    def load(self) -> dict:
        try:
            with open(self.path(PLAN_FILE)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise ClusterError(f"no managed cluster in {self.dir} (no {PLAN_FILE}; create one with "
                               f"`pillbug cluster create --dir={self.dir}`)") from None

    def save(self, plan: dict) -> None:
        _write_json(self.path(PLAN_FILE), plan, 0o644)

    # processes
    def processes(self, plan: dict) -> list[Process]:
        port, http_port = plan["port"], plan["http_port"]
        voters = [f"{n['host']}:{port}" for r in plan["regions"] for n in r["nodes"] if n["voter"]]
        out = []
        for region in plan["regions"]:
            for node in region["nodes"]:
                command = [sys.executable, "-m", "pillbug.cli.main", "start",
                           f"--store={self.path('nodes', node['name'], 'data')}",
                           f"--listen-addr={node['host']}:{port}", f"--http-addr={node['host']}:{http_port}",
                           f"--join={','.join(voters)}",
                           f"--locality=region={region['name']},zone={node['zone']}",
                           f"--certs-dir={self.node_certs(node)}",
                           f"--accept-proxy-protocol-from={region['lb_host']}/32"]
                out.append(Process(node["name"], "node", region["name"], node["host"], command, node["voter"]))
        for region in plan["regions"]:
            name = f"lb-{region['name']}"
            out.append(Process(name, "balancer", region["name"], region["lb_host"],
                               ["haproxy", "-db", "-f", self.path("haproxy", f"{name}.cfg")]))
        out.append(Process("global", "global", "", plan["global_host"],
                           ["haproxy", "-db", "-f", self.path("haproxy", "global.cfg")]))
        return out

    def pid(self, name: str) -> int | None:
        """The pid of a running process of this cluster, None if it is not running."""
        try:
            with open(self.pid_file(name)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_ours(pid, self.dir) else None

    def spawn(self, process: Process) -> int:
        with open(self.log_file(process.name), "ab") as log:
            # A session of its own: the process outlives this command and no Ctrl-C of the shell
            # that ran `create` reaches it.
            proc = subprocess.Popen(process.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.dir)
        with open(self.pid_file(process.name), "w") as f:
            f.write(f"{proc.pid}\n")
        return proc.pid

    def log_tail(self, name: str, chars: int = 2000) -> str:
        try:
            with open(self.log_file(name), errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""


def _is_ours(pid: int, directory: str) -> bool:
    """Whether pid runs and is a process of the cluster in `directory` (not a reused pid, not a
    zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            # every command names a file inside the folder; the separator keeps /x/a from /x/ab
            return (directory.rstrip(os.sep) + os.sep).encode() in f.read()
    except OSError:
        return False


def _write_json(path: str, data: dict, mode: int) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)


# ---- files: certificates and balancer configurations -------------------------------------------

def _write_certificates(cluster: Cluster, plan: dict) -> None:
    ca_key = cluster.path("ca", "ca.key")
    common = {"ca_key": ca_key, "key_size": 2048, "overwrite": False}
    cert.create_ca(argparse.Namespace(**common, certs_dir=cluster.path("certs"), lifetime="3660d",
                                      allow_ca_key_reuse=False))
    os.makedirs(cluster.operator_certs, exist_ok=True)
    shutil.copy(cluster.ca_cert, cluster.operator_certs)
    cert.create_client(argparse.Namespace(**common, certs_dir=cluster.operator_certs, lifetime="1830d",
                                          user="root"))
    for region in plan["regions"]:
        for node in region["nodes"]:
            certs = cluster.node_certs(node)
            os.makedirs(certs, exist_ok=True)
            shutil.copy(cluster.ca_cert, certs)
            # Every name a client may dial reaches this node through TLS passed along by balancers.
            hosts = [node["host"], region["lb_host"], plan["global_host"], "localhost", "127.0.0.1"]
            cert.create_node(argparse.Namespace(**common, certs_dir=certs, lifetime="1830d", hosts=hosts))


def _write_balancer_configs(cluster: Cluster, plan: dict) -> None:
    port, http_port = plan["port"], plan["http_port"]
    os.makedirs(cluster.path("haproxy"), exist_ok=True)
    regions = []
    for region in plan["regions"]:
        servers = [haproxy_config.Server(n["name"], n["host"], port, http_port) for n in region["nodes"]]
        lb = region["lb_host"]
        text = haproxy_config.balancer_config(
            servers, bind=f"{lb}:{port}", ca_file=cluster.ca_cert, send_proxy=True, source=lb,
            trusted_proxies=[f"{plan['global_host']}/32"], health_bind=f"{lb}:{http_port}",
            check_interval=CHECK_INTERVAL, transition_interval=TRANSITION_INTERVAL, client_timeout="30m",
            log=True)
        with open(cluster.path("haproxy", f"lb-{region['name']}.cfg"), "w") as f:
            f.write(text)
        regions.append(haproxy_config.Region(region["name"], haproxy_config.Server(f"lb-{region['name']}", lb, port,
                                                                                    http_port),
                                             tuple(region["client_networks"])))
    g = plan["global_host"]
    text = haproxy_config.global_config(regions, bind=f"{g}:{port}", source=g, health_bind=f"{g}:{http_port}",
                                        check_interval=CHECK_INTERVAL, transition_interval=TRANSITION_INTERVAL,
                                        log=True)
    with open(cluster.path("haproxy", "global.cfg"), "w") as f:
        f.write(text)


def _check_ports_free(plan: dict) -> None:
    port, http_port = plan["port"], plan["http_port"]
    wanted = [(plan["global_host"], port), (plan["global_host"], http_port)]
    for region in plan["regions"]:
        wanted += [(region["lb_host"], port), (region["lb_host"], http_port)]
        for node in region["nodes"]:
            wanted += [(node["host"], port), (node["host"], http_port)]
            if node["voter"]:
                wanted += [(node["host"], port + CLIENT_PORT_OFFSET), (node["host"], port + PEER_PORT_OFFSET)]
    for host, p in wanted:
        with socket.socket() as s:
            # as the servers will bind: a port left in TIME_WAIT by an earlier run is free to them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, p))
            except OSError as exc:
                raise ClusterError(f"{host}:{p} is in use ({exc.strerror}); choose another --port/--http-port, "
                                   f"or stop what listens there") from None


# ---- health --------------------------------------------------------------------------------------

def balancer_servers(host: str, http_port: int) -> dict[tuple[str, str], str] | None:
    """{(proxy, server): status} from an HAProxy's /stats;csv, None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/stats;csv", timeout=2) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    rows = csv.reader(io.StringIO(text.lstrip("# ")))
    header = next(rows, [])
    try:
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
    except ValueError:
        return None
    return {(row[px], row[sv]): row[st] for row in rows
            if len(row) > st and row[sv] not in ("FRONTEND", "BACKEND")}


def _wait(what: str, condition: Callable[[], bool], deadline: float, check_exits: Callable[[], None]) -> None:
    while not condition():
        check_exits()
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ---- lifecycle -----------------------------------------------------------------------------------

def _launch(cluster: Cluster, plan: dict, timeout: float, initialize: bool) -> None:
    """Start every process that is not running, initialize the cluster (create only), and wait
    until every node is ready and the global host sees every region's balancer up."""
    deadline = time.monotonic() + timeout
    for d in ("run", "logs"):
        os.makedirs(cluster.path(d), exist_ok=True)
    processes = cluster.processes(plan)
    pids, started = {}, set()
    for process in processes:
        pid = cluster.pid(process.name)
        if pid is None:
            pid = cluster.spawn(process)
            started.add(process.name)
        pids[process.name] = pid

    def check_exits() -> None:
        for process in processes:
            if not _is_ours(pids[process.name], cluster.dir):
                raise ClusterError(f"{process.kind} {process.name} exited; its log "
                                   f"({cluster.log_file(process.name)}) ends:\n{cluster.log_tail(process.name)}")

    if initialize:
        first = next(n for r in plan["regions"] for n in r["nodes"] if n["voter"])
        endpoint = f"{first['host']}:{plan['port'] + CLIENT_PORT_OFFSET}"
        try:
            asyncio.run(init.initialize(endpoint, cluster.operator_certs, max(1.0, deadline - time.monotonic()),
                                        f"{first['host']}:{plan['port']}"))
        except init.InitError as exc:
            check_exits()
            raise ClusterError(f"could not initialize the cluster: {exc}") from None
    ctx = health.tls_context(cluster.ca_cert)
    nodes = [n for r in plan["regions"] for n in r["nodes"]]
    states: dict[str, str] = {}

    def in_service(node: dict) -> bool:
        state = states[node["name"]] = health.node_state(node["host"], plan["http_port"], ctx)
        # A node that was running drained or decommissioned stays so until it restarts: the
        # operator took it out; it is not waited for (status shows it).
        return state == health.READY or (state in health.OUT_OF_SERVICE and node["name"] not in started)
    _wait("every node to be ready", lambda: all(in_service(n) for n in nodes), deadline, check_exits)
    serving = {name for name, state in states.items() if state == health.READY}

    def regions_up() -> bool:
        servers = balancer_servers(plan["global_host"], plan["http_port"])
        if servers is None or not servers:
            return False
        # every region whose nodes serve is in service at the global host
        wanted = {r["name"] for r in plan["regions"] if any(n["name"] in serving for n in r["nodes"])}
        return wanted <= {sv for (_, sv), st in servers.items() if st == "UP"}
    _wait("the global host to see every region's balancer up", regions_up, deadline, check_exits)


def _setup_sql(cluster: Cluster, plan: dict) -> str:
    """The admin user with a new password, and the allowlist; returns the password."""
    import psycopg2
    alphabet = string.ascii_letters + string.digits  # nothing a URL must escape
    password = "".join(secrets.choice(alphabet) for _ in range(22))
    node = plan["regions"][0]["nodes"][0]
    certs = cluster.operator_certs
    conn = psycopg2.connect(host=node["host"], port=plan["port"], user="root", dbname="defaultdb",
                            sslmode="verify-full", sslrootcert=os.path.join(certs, "ca.crt"),
                            sslcert=os.path.join(certs, "client.root.crt"),
                            sslkey=os.path.join(certs, "client.root.key"), connect_timeout=10)
    hba = "\n".join(f"host all all {cidr} cert-password" for cidr in plan["allowlist"])
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS {plan['user']} WITH PASSWORD %s", (password,))
            cur.execute(f"GRANT admin TO {plan['user']}")
            # Last: from here on only the allowlist may connect, this control plane's address too.
            cur.execute(f"SET CLUSTER SETTING {HBA_SETTING} = %s", (hba,))
    finally:
        conn.close()
    return password


def stop_processes(cluster: Cluster, plan: dict, timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every running process of the cluster (nodes drain), SIGKILL what is left after
    `timeout`; returns the names of those stopped."""
    running = {p.name: pid for p in cluster.processes(plan) if (pid := cluster.pid(p.name)) is not None}
    for pid in running.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_is_ours(pid, cluster.dir) for pid in running.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in running.values():
        if _is_ours(pid, cluster.dir):
            try:
                os.killpg(pid, signal.SIGKILL)  # its session: a node's etcd member goes with it
            except ProcessLookupError:
                pass
    for name in running:
        try:
            os.unlink(cluster.pid_file(name))
        except FileNotFoundError:
            pass
    return sorted(running)


# ---- what the user gets --------------------------------------------------------------------------

def sql_url(plan: dict, host: str, password: str, ca_cert: str, scheme: str = "postgresql",
            database: str | None = None) -> str:
    return (f"{scheme}://{plan['user']}:{urllib.parse.quote(password, safe='')}@{host}:{plan['port']}/"
            f"{database or plan['database']}?sslmode=verify-full&sslrootcert={ca_cert}")


def connection_details(cluster: Cluster, plan: dict, password: str) -> dict:
    """DIR/connection.json: what the confirmation shows, for scripts."""
    ca = cluster.ca_cert
    return {
        "name": plan["name"], "global_host": plan["global_host"], "port": plan["port"], "ca_cert": ca,
        "user": plan["user"], "password": password, "database": plan["database"], "allowlist": plan["allowlist"],
        "regions": {r["name"]: {"lb_host": r["lb_host"], "client_networks": r["client_networks"],
                                "nodes": [f"{n['host']}:{plan['port']}" for n in r["nodes"]]}
                    for r in plan["regions"]},
        "urls": {"global": sql_url(plan, plan["global_host"], password, ca),
                 **{r["name"]: sql_url(plan, r["lb_host"], password, ca) for r in plan["regions"]}},
    }


def confirmation(details: dict, elapsed: float) -> str:
    port, ca = details["port"], details["ca_cert"]
    url = details["urls"]["global"]
    sqlalchemy_url = url.replace("postgresql://", "cockroachdb://", 1)
    width = max(len(r) for r in details["regions"])
    lines = [f'Your cluster "{details["name"]}" is ready ({elapsed:.1f} s).', "",
             "Connection details (also in connection.json; the password is shown only here and there):", "",
             f"  Global host:    {details['global_host']}   (directs you to one of the regional load balancers)",
             "  Regional load balancers (use the one for the region closest to your client):"]
    for name, region in details["regions"].items():
        lines.append(f"    {name:<{width}}  {region['lb_host']}   nodes {', '.join(region['nodes'])}")
    lines += [f"  Port:           {port}",
              f"  Database:       {details['database']}",
              f"  User:           {details['user']}",
              f"  Password:       {details['password']}",
              f"  CA certificate: {ca}",
              "                  (copy it to certs/ca.crt beside your code, or point sslrootcert at it)",
              f"  Allowlist:      {', '.join(details['allowlist'])}   (other client addresses are refused)",
              "", "Connect with the SQL shell:",
              f"  pillbug sql --url '{url}'",
              "", "psycopg2:",
              f"  conn = psycopg2.connect('{url}')",
              "", "SQLAlchemy (sqlalchemy-cockroachdb):",
              f"  engine = create_engine('{sqlalchemy_url}')",
              ""]
    return "\n".join(lines)


# ---- the verbs -----------------------------------------------------------------------------------

def create(args: argparse.Namespace) -> int:
    started = time.monotonic()
    cluster = Cluster(args.dir)
    if cluster.exists():
        raise ClusterError(f"{cluster.dir} already holds a cluster; `pillbug cluster start --dir={args.dir}` "
                           f"resumes it, `pillbug cluster delete` removes it")
    if shutil.which("haproxy") is None:
        raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy; `make install` does it)")
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    plan = make_plan(args.name or os.path.basename(cluster.dir.rstrip("/")) or "pillbug", regions,
                     args.nodes_per_region, args.port, args.http_port, args.user,
                     _parse_allowlist(args.allowlist), _parse_near(args.near, regions))
    _check_ports_free(plan)
    os.makedirs(cluster.dir, exist_ok=True)
    _write_certificates(cluster, plan)
    _write_balancer_configs(cluster, plan)
    cluster.save(plan)
    if len(regions) < 3:
        print(f"WARNING: with {len(regions)} region(s) the loss of a whole region can lose the quorum; "
              f"3 regions survive one", file=sys.stderr)
    try:
        _launch(cluster, plan, args.timeout, initialize=True)
        password = _setup_sql(cluster, plan)
    except BaseException:
        stop_processes(cluster, plan)
        print(f"the cluster's processes were stopped; its files are kept in {cluster.dir} "
              f"(`pillbug cluster delete --dir={args.dir}` removes them)", file=sys.stderr)
        raise
    details = connection_details(cluster, plan, password)
    _write_json(cluster.path(CONNECTION_FILE), details, 0o600)
    print(confirmation(details, time.monotonic() - started), flush=True)
    return 0


def start(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    plan = cluster.load()
    started = time.monotonic()
    _launch(cluster, plan, args.timeout, initialize=False)
    print(f'cluster "{plan["name"]}" is ready ({time.monotonic() - started:.1f} s): global host '
          f'{plan["global_host"]}:{plan["port"]}; connection details in {cluster.path(CONNECTION_FILE)}')
    return 0


def stop(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    plan = cluster.load()
    stopped = stop_processes(cluster, plan)
    print(f"stopped {len(stopped)} process(es)" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


def delete(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    plan = cluster.load()
    stop_processes(cluster, plan)
    shutil.rmtree(cluster.dir)
    print(f'cluster "{plan["name"]}" deleted: its processes are stopped and {cluster.dir} is removed')
    return 0


def status_rows(cluster: Cluster, plan: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(region, role, name, address, pid, state) for every process of the cluster."""
    ctx = health.tls_context(cluster.ca_cert)
    rows = []
    port, http_port = plan["port"], plan["http_port"]
    for process in cluster.processes(plan):
        pid = cluster.pid(process.name)
        address = f"{process.host}:{port}"
        if pid is None:
            state = "stopped"
        elif process.kind == "node":
            state = health.node_state(process.host, http_port, ctx) + (", voter" if process.voter else "")
        else:
            servers = balancer_servers(process.host, http_port)
            if servers is None:
                state = "not answering"
            elif process.kind == "balancer":
                nodes = {sv: st for (px, sv), st in servers.items() if px == "psql"}
                up = sorted(sv for sv, st in nodes.items() if st == "UP")
                state = f"up: {len(up)}/{len(nodes)} nodes in service" + (f" ({', '.join(up)})" if up else "")
            else:
                up = sorted({sv for (_, sv), st in servers.items() if st == "UP"})
                state = "up: regions in service: " + (", ".join(up) or "none")
        rows.append((process.region or "-", process.kind, process.name, address, str(pid or "-"), state))
    return rows


def status(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    plan = cluster.load()
    rows = status_rows(cluster, plan)
    header = ("region", "role", "name", "address", "pid", "state")
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f'cluster "{plan["name"]}" in {cluster.dir}')
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="create and run a managed multi-region cluster on this machine")
    verbs = p.add_subparsers(dest="cluster_command", required=True)
    c = verbs.add_parser("create", help="provision a cluster and print its connection details")
    c.add_argument("--dir", required=True, help="the cluster's folder (certificates, data, logs, connection.json)")
    c.add_argument("--regions", default="us-east1,us-west1,europe-west1",
                   help="comma-separated region names (default us-east1,us-west1,europe-west1)")
    c.add_argument("--nodes-per-region", type=int, default=3, help="nodes in each region (default 3)")
    c.add_argument("--allowlist", default="127.0.0.1/32",
                   help="comma-separated CIDRs whose clients may connect (default 127.0.0.1/32: this "
                        "machine's own clients; 0.0.0.0/0 allows every address)")
    c.add_argument("--near", action="append", default=[], metavar="REGION=CIDR[,CIDR]",
                   help="clients the global host sends to REGION (default: each region's own 127.0.R.0/24; "
                        "clients no region claims go to the first region)")
    c.add_argument("--user", default="dbadmin", help="the admin SQL user to create (default dbadmin)")
    c.add_argument("--name", default=None, help="the cluster's name (default: the folder's name)")
    c.add_argument("--port", type=int, default=26257, help="the SQL port of every host (default 26257)")
    c.add_argument("--http-port", type=int, default=8080, help="the HTTP port of every host (default 8080)")
    c.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the cluster to be ready")
    for name, help_text in (("status", "regions, nodes, balancers and their health"),
                            ("stop", "stop every process (data and files are kept)"),
                            ("start", "start what is not running (a stopped cluster, or its parts that died), with its data"),
                            ("delete", "stop the cluster and remove its folder")):
        v = verbs.add_parser(name, help=help_text)
        v.add_argument("--dir", required=True)
        if name == "start":
            v.add_argument("--timeout", type=float, default=120.0)


def run(args: argparse.Namespace) -> int:
    verb = {"create": create, "status": status, "stop": stop, "start": start, "delete": delete}[args.cluster_command]
    try:
        return verb(args)
    except ClusterError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the folder cannot be written, a program cannot be started
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
