"""HAProxy configurations for Pillbug: a balancer in front of some nodes, and a global entry point in
front of several regions' balancers.

Pure text rendering, no I/O: `pillbug gen haproxy` (CockroachDB's verb) renders a balancer for the
nodes it finds in the cluster; `pillbug cluster create` renders one balancer per region and the
global host (cli/managed.py). What the configurations do, and why:

- A balancer passes TCP through (TLS ends at the node, whose certificate names the balancer's
  address too) and health-checks each node's `/health?ready=1`, so that a draining, decommissioned,
  quorum-less or dead node gets no new connections. A secure node serves that endpoint over HTTPS:
  the check verifies it against the cluster's CA.
- `send_proxy`: the balancer tells the node who the client is with a PROXY protocol v2 header, from
  a fixed `source` address that the nodes trust (`pillbug start --accept-proxy-protocol-from`), so
  that the allowlist sees the client and not the balancer.
- `trusted_proxies`: a balancer behind the global host takes a PROXY header from it (and only from
  it: `expect-proxy` is conditional on the source), so that the client's address survives two hops.
- `health`: an HTTP listener answering `/health` 200 while at least one node is up and 503 when none
  is (HAProxy's monitor-uri), and `/stats` (HAProxy's statistics, `;csv` for scripts). The global
  host health-checks a region through it, so that a region whose nodes are all down counts as down
  even while its balancer runs.
- The global host routes each client to its region by source address (`Region.client_networks`) and
  anyone else to the first region; every region lists the others as backup servers in order, so
  that a region that is down sends its clients to the next one.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# The first lines of CockroachDB's `gen haproxy` output; the timeouts are the parts its comment
# says to tune.
_HEADER = """global
  maxconn {maxconn}
{global_extra}
defaults
    mode                tcp
    # Timeout values should be configured for your specific use.
    # See: https://cbonte.github.io/haproxy-dconv/1.8/configuration.html#4-timeout%20connect
    timeout connect     10s
    timeout client      {client_timeout}
    timeout server      {client_timeout}
    # TCP keep-alive on client side. Server already enables them.
    option              clitcpka
{defaults_extra}"""

# How long a health check may take, whatever the interval: a busy node answering slowly is not dead.
CHECK_TIMEOUT = "2s"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Server:
    """One node behind a balancer, or one region's balancer behind the global host."""
    name: str
    host: str
    port: int
    check_port: int


@dataclass(frozen=True)
class Region:
    """A region as the global host sees it: its balancer, and which clients it is nearest to."""
    name: str
    balancer: Server
    client_networks: tuple[str, ...] = field(default=())


def config_name(text: str) -> str:
    """A name HAProxy accepts for a proxy or a server (letters, digits, '_', '.', '-')."""
    return _SAFE_NAME.sub("_", text) or "_"


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _header(maxconn: int, client_timeout: str, log: bool) -> str:
    return _HEADER.format(
        maxconn=maxconn, client_timeout=client_timeout,
        global_extra="  log stdout format raw local0 info\n" if log else "",
        # Only abnormal connections and servers going up or down: a log line per normal connection
        # would grow the log with every client.
        defaults_extra=("    log                 global\n    option              tcplog\n"
                        "    option              dontlog-normal\n") if log else "")


def _check_timing(interval: str, transition: str | None) -> str:
    """`transition`: HAProxy's fastinter and downinter, the interval while a server is changing state
    or down, so that a failed check is confirmed, and a server back is in service, sooner than the
    steady `interval` would allow. And a server that refuses a connection is out at once (observe
    layer4): the connection is retried on another server rather than on it, or failed, until the
    next check would have said it."""
    timing = f"inter {interval}"
    if transition is not None:
        timing += f" fastinter {transition} downinter {transition}"
    return timing + " fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down"


# With observe layer4: a connection the chosen server refused goes to another one at the first retry.
_RETRY = ["    option redispatch 1", "    retries 2"]


def _health_listener(name: str, bind: str, watched: str) -> str:
    return (f"\nlisten {name}\n"
            f"    bind {bind}\n"
            "    mode http\n"
            "    timeout client 10s\n"
            "    monitor-uri /health\n"
            f"    monitor fail if {{ nbsrv({watched}) lt 1 }}\n"
            "    stats enable\n"
            "    stats uri /stats\n")


def balancer_config(servers: Sequence[Server], *, bind: str = ":26257", ca_file: str | None = None,
                    send_proxy: bool = False, source: str | None = None,
                    trusted_proxies: Sequence[str] = (), health_bind: str | None = None,
                    check_interval: str | None = None, transition_interval: str | None = None,
                    client_timeout: str = "1m", maxconn: int = 4096, log: bool = False) -> str:
    """A balancer over `servers` (Pillbug nodes: SQL on `port`, /health on `check_port`).
    With the defaults this is CockroachDB's documented `gen haproxy` output (plus `check-ssl` when
    the nodes are secure: `ca_file` is the CA that signed their certificates)."""
    lines = [_header(maxconn, client_timeout, log), "listen psql", f"    bind {bind}", "    mode tcp"]
    for network in trusted_proxies:
        lines.append(f"    tcp-request connection expect-proxy layer4 if {{ src {network} }}")
    lines += ["    balance roundrobin", "    option httpchk GET /health?ready=1"]
    if check_interval is not None:
        # A dead node is out after two failed checks; a node that comes back is in after two.
        lines += [*_RETRY, f"    timeout check {CHECK_TIMEOUT}",
                  f"    default-server {_check_timing(check_interval, transition_interval)}"]
    for server in servers:
        options = [f"check port {server.check_port}"]
        if ca_file is not None:
            options.append(f"check-ssl verify required ca-file {ca_file}")
        if send_proxy:
            options.append("send-proxy-v2")
        if source is not None:
            options.append(f"source {source}")
        lines.append(f"    server {config_name(server.name)} {_addr(server.host, server.port)} {' '.join(options)}")
    text = "\n".join(lines) + "\n"
    if health_bind is not None:
        text += _health_listener("health", health_bind, "psql")
    return text


def global_config(regions: Sequence[Region], *, bind: str, source: str, health_bind: str | None = None,
                  check_interval: str = "1s", transition_interval: str | None = None,
                  client_timeout: str = "30m", maxconn: int = 4096, log: bool = False) -> str:
    """The global host: each client to its nearest region's balancer, with a PROXY v2 header from
    `source`; a region whose balancer (or every node behind it) is down sends clients on to the
    next region in `regions`' order."""
    if not regions:
        raise ValueError("the global host needs at least one region")
    lines = [_header(maxconn, client_timeout, log), "frontend global", f"    bind {bind}", "    mode tcp"]
    for region in regions[1:]:
        for network in region.client_networks:
            lines.append(f"    use_backend region_{config_name(region.name)} if {{ src {network} }}")
    # The first region takes its own clients and everyone no region claims.
    lines.append(f"    default_backend region_{config_name(regions[0].name)}")
    for index, region in enumerate(regions):
        others = list(regions[index + 1:]) + list(regions[:index])
        lines += ["", f"backend region_{config_name(region.name)}", "    mode tcp",
                  "    option httpchk GET /health",
                  *_RETRY, f"    timeout check {CHECK_TIMEOUT}",
                  f"    default-server {_check_timing(check_interval, transition_interval)} send-proxy-v2 "
                  f"source {source}"]
        for member, role in [(region, "")] + [(other, " backup") for other in others]:
            b = member.balancer
            lines.append(f"    server {config_name(member.name)} {_addr(b.host, b.port)} "
                         f"check port {b.check_port}{role}")
    text = "\n".join(lines) + "\n"
    if health_bind is not None:
        text += _health_listener("health", health_bind, f"region_{config_name(regions[0].name)}")
    return text
