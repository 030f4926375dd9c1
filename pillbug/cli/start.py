"""pillbug start-single-node and pillbug start: run one node until SIGTERM/SIGINT, with CockroachDB's
flags.

start-single-node keeps its data in LMDB and needs nobody. start runs a node of a cluster: the
nodes named in --join are the voters (each runs an etcd member, server/etcd_member.py), any other
node is a gateway to them; the cluster is initialized once with `pillbug init`.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
import sys

from pillbug.server.etcd_member import cluster_layout, normalize_addr
from pillbug.server.node import Node, NodeConfig
from pillbug.util import errors, timeslice


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host or "0.0.0.0", int(port) if port else default_port


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start-single-node", help="start a single-node cluster")
    p.add_argument("--store", "-s", default="pillbug-data",
                   help="where the node keeps its data (path or path=<dir>)")
    p.add_argument("--listen-addr", default="localhost:26257")
    p.add_argument("--http-addr", default="localhost:8080")
    p.add_argument("--advertise-addr", default=None, help="accepted for compatibility")
    p.add_argument("--certs-dir", default="certs")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--allowlist", default=None,
                   help="comma-separated CIDRs that may connect (seeds the HBA cluster setting)")
    p.add_argument("--accept-proxy-protocol-from", default=None, metavar="CIDR[,CIDR...]",
                   help="the balancers (HAProxy send-proxy-v2) whose PROXY protocol v2 header names the "
                        "client's address; nobody's by default")
    p.add_argument("--init-admin", default=None,
                   help="on first start, create this user in the admin role with a generated password "
                        "and print the connection details")
    p.add_argument("--cache", default=None, help="accepted for compatibility")
    p.add_argument("--max-sql-memory", default=None, help="accepted for compatibility")
    p.add_argument("--background", action="store_true", help="not supported; run under a supervisor")
    p.add_argument("--log-level", default="INFO")
    # For tests only, hidden from --help: LMDB behind a store whose reads wait
    # (storage/suspending.py documents SPEC). `make start` never passes it.
    p.add_argument("--test-store", default=None, metavar="SPEC", help=argparse.SUPPRESS)


async def _serve(config: NodeConfig) -> int:
    node = Node(config)
    try:
        await node.start()
    except (errors.PgError, OSError) as exc:
        print(f"ERROR: {getattr(exc, 'message', exc)}", file=sys.stderr)
        await node.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR2: every parked statement's stack to the log (what a stuck node is waiting for), as
    # CockroachDB's goroutine dump serves; the node goes on serving.
    loop.add_signal_handler(signal.SIGUSR2, timeslice.log_parked_stacks)
    await stop.wait()
    print("initiating graceful shutdown of server", file=sys.stderr, flush=True)
    await node.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command == "start":
        return run_cluster_node(args)
    if args.background:
        print("ERROR: --background is not supported; run the node under a supervisor", file=sys.stderr)
        return 1
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(levelname).1s%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    store = args.store
    if store.startswith("path="):
        store = store[5:]
    store = store.split(",")[0]
    listen_host, listen_port = _host_port(args.listen_addr, 26257)
    http_host, http_port = _host_port(args.http_addr, 8080)
    try:
        balancers = parse_proxy_protocol_from(args.accept_proxy_protocol_from)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    config = NodeConfig(store=store, listen_host=listen_host, listen_port=listen_port,
                        http_host=http_host, http_port=http_port, certs_dir=args.certs_dir,
                        insecure=args.insecure,
                        allowlist=[c for c in args.allowlist.split(",") if c.strip()] if args.allowlist else None,
                        init_admin=args.init_admin, test_store=args.test_store,
                        proxy_protocol_from=balancers)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(config))


# ---- pillbug start -------------------------------------------------------------------------------

# CockroachDB's --cache/--max-sql-memory: a fraction (.25), a percentage (25%) or a size (1GiB, 512MB,
# 1000000), all of the machine's memory.
_SIZE = re.compile(r"(?i)^\s*(\d+(\.\d*)?|\.\d+)\s*(%|[kmgtp]i?b?|b)?\s*$")


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start a node of a multi-node cluster")
    p.add_argument("--store", "-s", default="pillbug-data",
                   help="where the node keeps its data and its etcd member's (path or path=<dir>)")
    p.add_argument("--listen-addr", default="localhost:26257")
    p.add_argument("--advertise-addr", default=None,
                   help="the address other nodes know this node by (default: --listen-addr); "
                        "the node votes iff it is in --join")
    p.add_argument("--http-addr", default="localhost:8080")
    p.add_argument("--join", "-j", action="append", default=[],
                   help="the voting nodes, host:port,... (the same list on every node)")
    p.add_argument("--locality", default="", help="region=...,zone=...")
    p.add_argument("--certs-dir", default="certs")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--accept-proxy-protocol-from", default=None, metavar="CIDR[,CIDR...]",
                   help="the balancers (HAProxy send-proxy-v2) whose PROXY protocol v2 header names the "
                        "client's address; nobody's by default")
    p.add_argument("--etcd-client-addr", default=None,
                   help="where this node's etcd member serves clients (default: SQL port + 10000)")
    p.add_argument("--etcd-peer-addr", default=None,
                   help="where this node's etcd member serves its peers (default: SQL port + 20000)")
    p.add_argument("--cache", default=None, help="accepted for compatibility")
    p.add_argument("--max-sql-memory", default=None, help="accepted for compatibility")
    p.add_argument("--background", action="store_true", help="not supported; run under a supervisor")
    p.add_argument("--log-level", default="INFO")


class FlagError(Exception):
    """A bad flag value: printed as CockroachDB's (pflag's) `invalid argument` error."""

    def __init__(self, flag: str, value: str, reason: str) -> None:
        super().__init__(f'invalid argument "{value}" for "{flag}" flag: {reason}')


def parse_locality(text: str) -> str:
    """CockroachDB's --locality: comma-separated key=value tiers."""
    if not text:
        return ""
    for tier in text.split(","):
        key, eq, value = tier.partition("=")
        if not eq or not key or not value or "=" in value:
            raise FlagError("--locality", text, f'tier must be in the form "key=value" not "{tier}"')
    return text


def parse_proxy_protocol_from(text: str | None) -> list[str] | None:
    """--accept-proxy-protocol-from: comma-separated networks (an address alone is its /32 or /128),
    normalized; None when not given."""
    if text is None:
        return None
    networks: list[str] = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(item.strip())))
        except ValueError as exc:
            raise FlagError("--accept-proxy-protocol-from", text, str(exc)) from None
    if not networks:
        raise FlagError("--accept-proxy-protocol-from", text, "expected CIDR[,CIDR...]")
    return networks


def parse_join(values: list[str]) -> list[str]:
    """--join may be given several times, each a comma-separated list; host:port, port 26257 if
    left out."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                out.append(normalize_addr(item))
            except ValueError as exc:
                raise FlagError("--join", value, str(exc)) from None
    return list(dict.fromkeys(out))


def cluster_config(args: argparse.Namespace) -> NodeConfig:
    """NodeConfig of `pillbug start`; FlagError or ValueError for bad flags."""
    join = parse_join(args.join)
    if not join:
        raise errors.PgError(errors.INVALID_PARAMETER_VALUE,
                             "no --join flags provided to 'pillbug start'",
                             hint="Consider using 'pillbug init' or 'pillbug start-single-node' instead")
    locality = parse_locality(args.locality)
    for flag, value in (("--cache", args.cache), ("--max-sql-memory", args.max_sql_memory)):
        if value is not None and not _SIZE.match(value):
            raise FlagError(flag, value, "expected a size (1GiB), a percentage (25%) or a fraction (.25) "
                                         "of the machine's memory")
    addrs = {}
    for flag, value, port in (("--listen-addr", args.listen_addr, 26257), ("--http-addr", args.http_addr, 8080)):
        try:
            addrs[flag] = _host_port(value, port)
        except ValueError:
            raise FlagError(flag, value, "expected host:port") from None
    store = args.store[5:] if args.store.startswith("path=") else args.store
    store = store.split(",")[0]
    (listen_host, listen_port), (http_host, http_port) = addrs["--listen-addr"], addrs["--http-addr"]
    config = NodeConfig(store=store, listen_host=listen_host, listen_port=listen_port, http_host=http_host,
                        http_port=http_port, certs_dir=None if args.insecure else args.certs_dir,
                        insecure=args.insecure, join=join, locality=locality,
                        etcd_client_addr=args.etcd_client_addr, etcd_peer_addr=args.etcd_peer_addr,
                        advertise_addr=args.advertise_addr,
                        proxy_protocol_from=parse_proxy_protocol_from(args.accept_proxy_protocol_from))
    # the same computation the node makes, so that a bad address fails here, before anything starts
    cluster_layout(f"{listen_host}:{listen_port}", join, store, config.certs_dir,
                   advertise_addr=args.advertise_addr, etcd_client_addr=args.etcd_client_addr,
                   etcd_peer_addr=args.etcd_peer_addr)
    return config


def run_cluster_node(args: argparse.Namespace) -> int:
    try:
        config = cluster_config(args)
    except errors.PgError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"HINT: {exc.hint}", file=sys.stderr)
        return 1
    except (FlagError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if args.background:
        print("ERROR: --background is not supported; run the node under a supervisor", file=sys.stderr)
        return 1
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(levelname).1s%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(config))
