"""pillbug node ls | status | drain | decommission | recommission: CockroachDB's `cockroach node`.

These talk to the cluster through etcd, where the nodes register (docs/rfcs/0001-cluster.md
§2.6): --host names any voting node, whose etcd member answers on its SQL port + 10000 (or
--etcd-client-addr), with the client certificate of root from --certs-dir. Liveness is a node's
registration under its lease; membership (active, decommissioning, decommissioned) is a key that
outlives it. A drain is a request to the node itself (its inbox), which stops taking sessions and
ends the open ones as a SIGTERM would, but keeps running, as `cockroach node drain` does.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from typing import Any

from pillbug.cli import etcd_access
from pillbug.storage.etcd.coord import Coordinator

STATUS_COLUMNS = ("id", "address", "sql_address", "build", "started_at", "updated_at", "locality",
                  "is_available", "is_live", "is_voter", "etcd_health", "etcd_revision", "is_etcd_leader")
DECOMMISSION_COLUMNS = ("id", "is_live", "replicas", "is_decommissioning", "membership", "is_draining")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="list, inspect, drain or decommission nodes")
    verbs = p.add_subparsers(dest="node_command", required=True)
    for name, help_text in (("ls", "list the ids of the cluster's nodes"),
                            ("status", "the status of the cluster's nodes (or of one)"),
                            ("drain", "drain a node: no new sessions, open ones end"),
                            ("decommission", "take nodes out of the cluster for good"),
                            ("recommission", "undo a decommission")):
        v = verbs.add_parser(name, help=help_text)
        etcd_access.add_flags(v)
        if name == "status":
            v.add_argument("node_id", nargs="?", type=int)
        elif name == "drain":
            v.add_argument("node_id", nargs="?", type=int)
            v.add_argument("--self", dest="drain_self", action="store_true", help="drain the node --host names")
            v.add_argument("--drain-wait", default="10m", help="how long to wait for the drain to finish")
        elif name in ("decommission", "recommission"):
            v.add_argument("node_ids", nargs="+", type=int)
            if name == "decommission":
                v.add_argument("--wait", choices=("all", "none"), default="all")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except etcd_access.AccessError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    async with etcd_access.connect(args) as client:
        coord = Coordinator(client)
        verb = args.node_command
        if verb == "ls":
            nodes, members = await asyncio.gather(coord.nodes(), coord.memberships())
            ids = sorted(i for i in set(nodes) | set(members)
                         if not (members.get(i) == "decommissioned" and i not in nodes))
            _table(("id",), [(i,) for i in ids])
            return 0
        if verb == "status":
            rows = await _status_rows(coord, None if args.insecure else args.certs_dir)
            if args.node_id is not None:
                rows = [r for r in rows if r[0] == args.node_id]
                if not rows:
                    print(f"ERROR: node {args.node_id} doesn't exist", file=sys.stderr)
                    return 1
            _table(STATUS_COLUMNS, rows)
            return 0
        if verb == "drain":
            return await _drain(args, coord)
        if verb == "decommission":
            return await _decommission(args, coord)
        if verb == "recommission":
            for node_id in args.node_ids:
                await coord.set_membership(node_id, "active")
            print("ok")
            return 0
    return 2


async def _status_rows(coord: Coordinator, certs_dir: str | None) -> list[tuple]:
    nodes, members = await asyncio.gather(coord.nodes(), coord.memberships())
    rows = []
    for node_id in sorted(set(nodes) | set(members)):
        info = nodes.get(node_id, {})
        health, revision, leader = await etcd_access.member_status(info.get("etcd_endpoint"), certs_dir)
        started = info.get("started_at")
        rows.append((node_id, info.get("address", ""), info.get("address", ""), info.get("build", ""),
                     _ts(started), _ts(datetime.datetime.now(datetime.UTC).timestamp()) if info else "",
                     info.get("locality", ""), node_id in nodes, node_id in nodes, bool(info.get("is_voter")),
                     health, revision, leader))
    return rows


async def _drain(args: argparse.Namespace, coord: Coordinator) -> int:
    nodes = await coord.nodes()
    node_id = args.node_id
    if args.drain_self or node_id is None:
        node_id = next((i for i, info in nodes.items() if info.get("address") == args.host), None)
        if node_id is None:
            print(f"ERROR: no live node serves SQL at {args.host}; name the node id", file=sys.stderr)
            return 1
    if node_id not in nodes:
        print(f"ERROR: node {node_id} is not live", file=sys.stderr)
        return 1
    answer = await coord.send(node_id, {"kind": "drain"}, timeout=etcd_access.parse_seconds(args.drain_wait))
    if answer.get("error"):
        print(f"ERROR: {answer['error'].get('message')}", file=sys.stderr)
        return 1
    print(f"node is draining... remaining: {answer.get('remaining', 0)}")
    print("node is draining... remaining: 0 (complete)")
    print("ok")
    return 0


async def _decommission(args: argparse.Namespace, coord: Coordinator) -> int:
    nodes, members = await asyncio.gather(coord.nodes(), coord.memberships())
    unknown = [i for i in args.node_ids if i not in nodes and i not in members]
    if unknown:
        print(f"ERROR: node {unknown[0]} doesn't exist", file=sys.stderr)
        return 1
    for node_id in args.node_ids:
        await coord.set_membership(node_id, "decommissioning")
    # A node holds no replicas of its own (etcd replicates everything to every voter), so there is
    # nothing to move: the node is told to stop serving, and the decommission completes.
    rows = [(i, i in nodes, 0, True, "decommissioning", bool(nodes.get(i, {}).get("draining")))
            for i in args.node_ids]
    _table(DECOMMISSION_COLUMNS, rows)
    if args.wait == "none":
        return 0
    for node_id in args.node_ids:
        await coord.set_membership(node_id, "decommissioned")
    print("\nNo more data reported on target nodes. Please verify cluster health before removing the nodes.")
    return 0


def _ts(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.datetime.fromtimestamp(float(seconds), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _table(columns: tuple[str, ...], rows: list[tuple]) -> None:
    """CockroachDB's default table format for its CLI commands."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  " + " | ".join(c.center(w) for c, w in zip(columns, widths)))
    print("-" + "+".join("-" * (w + 2) for w in widths))
    for r in cells:
        print("  " + " | ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
