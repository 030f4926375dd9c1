"""pillbug gen haproxy: CockroachDB's `cockroach gen haproxy`, an HAProxy configuration for the
nodes of a running cluster.

It reads the cluster's registry through the etcd member of the node --host names (as `pillbug node`
does: cli/etcd_access.py) and writes cli/haproxy_config.py's balancer with one `server pillbug<id>`
line per node, in node id order, at the SQL address the node registered (its --advertise-addr, else
its --listen-addr), health-checked on its HTTP port's `/health?ready=1` (over HTTPS against the
cluster's CA in secure mode, since that is how a secure node serves it). What is left out, and why:

- decommissioned nodes, silently, and decommissioning ones with a warning on stderr, as CockroachDB
  does;
- nodes that are not live: CockroachDB still lists a dead node at the address it last reported, but
  a Pillbug node's address is part of its liveness registration and goes with it, so there is no
  address to write. The configuration says which ids were left out this way in a comment at its
  top (ids come from the node id counter: every node that ever joined), so that an operator can run
  the command again once they are back;
- with --locality, nodes whose locality does not match every tier of the filter: a tier is
  `key=regex`, the key must be a tier of the node's locality and its value must match the regex
  whole (CockroachDB anchors it with ^...$). Nodes without a locality never match a filter.

Nothing to balance over is an error (exit 1), not an empty configuration: CockroachDB errors when
the locality filter matches no node, and a balancer without servers refuses every client.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from pillbug.cli import etcd_access
from pillbug.cli.haproxy_config import Server, balancer_config
from pillbug.cli.start import FlagError, parse_locality
from pillbug.server.etcd_member import split_host_port
from pillbug.storage.etcd.coord import Coordinator
from pillbug.util.locality import tiers as locality_tiers
from pillbug.util.locality import value as tier_value

DEFAULT_HTTP_PORT = 8080  # what a registration without a port means (CockroachDB's default)


class GenError(Exception):
    """Nothing to write: no node left to balance over."""


@dataclass(frozen=True)
class LocalityFilter:
    """--locality of gen haproxy: every tier's key must be in the node's locality with a value the
    tier's regex matches whole."""
    text: str
    tiers: tuple[tuple[str, re.Pattern[str]], ...]

    def matches(self, locality: str) -> bool:
        if not locality:
            return False
        for key, pattern in self.tiers:
            # The node's first tier with that key decides, as in CockroachDB's localityMatches.
            value = tier_value(locality, key)
            if value is None or pattern.fullmatch(value) is None:
                return False
        return True


def parse_locality_filter(text: str) -> LocalityFilter:
    """`key=regex,key=regex`; FlagError for a malformed tier or a regex that does not compile."""
    parse_locality(text)
    compiled = []
    for key, value in locality_tiers(text):
        try:
            compiled.append((key, re.compile(value)))
        except re.error as exc:
            raise FlagError("--locality", text, f'could not compile regular expression for "{key}={value}": '
                                                f"{exc}") from None
    return LocalityFilter(text, tuple(compiled))


@dataclass
class Selection:
    """The nodes a balancer is written for, and what the operator should hear about the others."""
    servers: list[Server] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # comment lines in the configuration
    warnings: list[str] = field(default_factory=list)  # lines on stderr


def select_nodes(nodes: dict[int, dict], memberships: dict[int, str], last_node_id: int,
                 locality: LocalityFilter | None = None) -> Selection:
    """The servers for the live nodes (`Coordinator.nodes()`), not decommissioning or decommissioned
    (`memberships()`), matching `locality`; every other id up to `last_node_id` is either silently
    gone (decommissioned), warned about (decommissioning) or noted as not live. GenError when no
    node is left."""
    selection = Selection()
    not_live: list[int] = []
    localities: set[str] = set()
    for node_id in sorted(set(range(1, last_node_id + 1)) | set(nodes) | set(memberships)):
        membership = memberships.get(node_id, "active")
        if membership == "decommissioned":
            continue
        if membership == "decommissioning":
            selection.warnings.append(f"warning: node {node_id} status is DECOMMISSIONING, excluding from "
                                      f"haproxy configuration")
            continue
        info = nodes.get(node_id)
        if info is None or not info.get("address"):
            not_live.append(node_id)
            continue
        node_locality = info.get("locality") or ""
        if locality is not None:
            if node_locality:
                localities.add(node_locality)
            if not locality.matches(node_locality):
                continue
        host, port = split_host_port(info["address"])
        _, check_port = split_host_port(info.get("http_address") or "", DEFAULT_HTTP_PORT)
        selection.servers.append(Server(f"pillbug{node_id}", host, port, check_port))
    if not_live:
        ids = ", ".join(str(i) for i in not_live)
        selection.left_out.append(f"# left out: node{'s' if len(not_live) > 1 else ''} {ids}, not live "
                                  f"(a node's address goes with its liveness); run gen haproxy again once "
                                  f"they are back")
    if not selection.servers:
        if locality is not None:
            found = " ".join(sorted(localities))
            raise GenError(f"no nodes match locality filter {locality.text}. Found localities: [{found}]")
        raise GenError("no live node to balance over (all are decommissioned, decommissioning or not live)")
    return selection


def render(selection: Selection, ca_file: str | None, **balancer: Any) -> str:
    """The configuration: the left-out notes, then CockroachDB's layout (with `balancer`'s options of
    haproxy_config.balancer_config: Pillbug's flags for PROXY headers, bind, health listener)."""
    notes = "".join(line + "\n" for line in selection.left_out)
    return notes + balancer_config(selection.servers, ca_file=ca_file, **balancer)


def balancer_options(args: argparse.Namespace) -> dict[str, Any]:
    """Pillbug's own gen haproxy flags as balancer_config's keyword arguments; FlagError for a bad one."""
    options: dict[str, Any] = {"bind": args.bind}
    if args.proxy_protocol_source:
        try:
            options["source"] = str(ipaddress.ip_address(args.proxy_protocol_source))
        except ValueError:
            raise FlagError("--proxy-protocol-source", args.proxy_protocol_source, "expected an IP address") from None
        options["send_proxy"] = True
    if args.accept_proxy_protocol_from:
        networks = []
        for item in args.accept_proxy_protocol_from.split(","):
            try:
                networks.append(str(ipaddress.ip_network(item.strip())))
            except ValueError as exc:
                raise FlagError("--accept-proxy-protocol-from", args.accept_proxy_protocol_from, str(exc)) from None
        options["trusted_proxies"] = networks
    if args.health_addr:
        options["health_bind"] = args.health_addr
    if args.check_interval:
        if not re.fullmatch(r"\d+(ms|s)", args.check_interval):
            raise FlagError("--check-interval", args.check_interval, "expected a duration such as 500ms or 2s")
        options["check_interval"] = args.check_interval
    return options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gen", help="generate auxiliary files")
    verbs = p.add_subparsers(dest="gen_command", required=True)
    h = verbs.add_parser("haproxy", help="generate haproxy.cfg for the connected cluster")
    etcd_access.add_flags(h)
    h.add_argument("--locality", default="",
                   help="only nodes whose locality matches, e.g. region=us.*,zone=us-east1-b "
                        "(each value is a regular expression)")
    h.add_argument("--out", default="haproxy.cfg", help='the file to write ("-" for stdout)')
    # Pillbug's own, for a balancer that tells the nodes who the client is (docs/deploy.md)
    h.add_argument("--bind", default=":26257", help="where the balancer listens (default :26257)")
    h.add_argument("--proxy-protocol-source", default=None, metavar="ADDR",
                   help="send each node a PROXY protocol v2 header naming the client, from this address "
                        "(the one the nodes' --accept-proxy-protocol-from lists)")
    h.add_argument("--accept-proxy-protocol-from", default=None, metavar="CIDR[,CIDR]",
                   help="take a PROXY protocol v2 header from these clients (a global balancer in front)")
    h.add_argument("--health-addr", default=None, metavar="ADDR:PORT",
                   help="also serve /health (503 when no node is in service) and /stats here")
    h.add_argument("--check-interval", default=None, help="health check interval (HAProxy's default: 2s)")


def run(args: argparse.Namespace) -> int:
    try:
        locality = parse_locality_filter(args.locality) if args.locality else None
        options = balancer_options(args)
        selection = asyncio.run(_select(args, locality))
    except (FlagError, etcd_access.AccessError, GenError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    for warning in selection.warnings:
        print(warning, file=sys.stderr)
    # The nodes' /health is HTTPS in secure mode; the path must hold wherever haproxy runs from.
    ca_file = None if args.insecure else os.path.abspath(os.path.join(args.certs_dir, "ca.crt"))
    text = render(selection, ca_file, **options)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(args.out, "w") as f:
            f.write(text)
    except OSError as exc:
        print(f"ERROR: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _select(args: argparse.Namespace, locality: LocalityFilter | None) -> Selection:
    async with etcd_access.connect(args) as client:
        coord = Coordinator(client)
        nodes, memberships, last = await asyncio.gather(coord.nodes(), coord.memberships(), coord.last_node_id())
    return select_nodes(nodes, memberships, last, locality)
