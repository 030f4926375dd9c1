"""What a node's SQL engine may ask of the rest of its cluster, and how it answers the others.

On one node there is nothing to ask: Engine.cluster is None and every answer is local. In a
cluster, server/ hands the engine a ClusterView that reaches the other nodes (through etcd:
docs/rfcs/0001-cluster.md §2.6–2.7); sql/ holds only this protocol, never etcd. Requests are small
JSON-able dicts, so that any transport can carry them; `answer()` is what a node runs for a request
another node sent it (CANCEL QUERY/SESSION for one of its statements, a pgwire CancelRequest that
landed elsewhere, its part of SHOW CLUSTER QUERIES/SESSIONS), with the same privilege checks as for
a local request: the requester's user name travels with it and is checked against this node's
catalog.

It also says which nodes there are and where they stand (`nodes`, on one node this node alone), and
the regions their localities name (`regions`): the node tables and SHOW REGIONS read the nodes
through here.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pillbug.sql import activity
from pillbug.util import errors, locality

# Node ids live in the low half of CockroachDB's 128-bit query and session ids (activity.py) and
# in the upper bits of the BackendKeyData pid, so that any node can tell whose a cancel is.
PID_NODE_SHIFT = 16
MAX_NODE_ID = (1 << 15) - 1


@dataclass(frozen=True, slots=True)
class NodeDescriptor:
    """One node as the cluster knows it (its registration, kept alive by its lease)."""
    node_id: int
    address: str  # the SQL address it advertises (host:port)
    http_address: str
    locality: str
    build: str
    started_at: float  # seconds since the epoch
    updated_at: float
    is_live: bool
    is_voter: bool  # runs an etcd member
    draining: bool
    membership: str  # active | decommissioning | decommissioned


class ClusterView(Protocol):
    """The rest of the cluster, as server/ provides it. Both calls may suspend (network)."""

    def nodes(self) -> list[NodeDescriptor]:
        """Every node that has registered, live or not (decommissioned ones included)."""

    def call(self, node_id: int, request: dict) -> dict:
        """Send `request` to node `node_id` and return its answer (answer() ran there).
        Raises a PgError when the node cannot be reached in time."""


def nodes(engine: Any) -> list[NodeDescriptor]:
    """Every node of the cluster by node id, live or not; on one node, this node alone."""
    if engine.cluster is not None:
        return sorted(engine.cluster.nodes(), key=lambda n: n.node_id)
    started = engine.start_time.timestamp()
    return [NodeDescriptor(engine.node_id, engine.sql_address, "", engine.locality, engine.version_string,
                           started, time.time(), True, False, False, "active")]


def regions(engine: Any) -> list[tuple[str, list[str]]]:
    """SHOW REGIONS FROM CLUSTER: (region, its zones) for the region tiers of the live nodes, both
    sorted. A node without a region tier has no region to add to; decommissioned nodes serve no
    more and add nothing either."""
    zones: dict[str, set[str]] = {}
    for node in nodes(engine):
        if not node.is_live or node.membership == "decommissioned":
            continue
        region = locality.value(node.locality, "region")
        if region is None:
            continue
        found = zones.setdefault(region, set())
        zone = locality.zone(node.locality)
        if zone is not None:
            found.add(zone)
    return [(region, sorted(zones[region])) for region in sorted(zones)]


def pid_node(pid: int) -> int:
    """The node that handed out a backend pid (0 for pids of a node with no cluster id)."""
    return (pid >> PID_NODE_SHIFT) & MAX_NODE_ID


def node_of_id(text: str) -> int | None:
    """The node a query or session id (32 hex digits) belongs to; None when malformed."""
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        return None
    return int(text[16:], 16)


class _Requester:
    """The user a remote request speaks for, seen through this node's catalog."""

    def __init__(self, engine: Any, user: str) -> None:
        self.engine = engine
        self.user = user

    def catalog_or_latest(self) -> Any:
        return self.engine.latest_catalog()


def forward_cancel(session: Any, kind: str, target_id: str, if_exists: bool) -> bool | None:
    """CANCEL QUERY/SESSION for an id of another node: ask that node. None when the id is this
    node's (or malformed, or there is no cluster): the caller handles it locally."""
    cluster = session.engine.cluster
    node = node_of_id(target_id)
    if cluster is None or node is None or node == session.engine.node_id:
        return None
    if not any(n.node_id == node and n.is_live for n in cluster.nodes()):
        if if_exists:
            return False
        what = "query" if kind == "cancel_query" else "session"
        raise errors.PgError(activity.UNCATEGORIZED,
                             f"could not cancel {what} {target_id}: {what} ID {target_id} not found "
                             f"(node {node} is not live)")
    answer = cluster.call(node, {"kind": kind, "id": target_id, "user": session.user, "if_exists": if_exists})
    _raise_remote_error(answer)
    return bool(answer.get("done"))


def cluster_rows(session: Any, kind: str) -> list[tuple]:
    """SHOW CLUSTER QUERIES / SESSIONS: this node's rows and every other live node's."""
    local = activity.query_rows(session) if kind == "queries" else activity.session_rows(session)
    cluster = session.engine.cluster
    if cluster is None:
        return local
    rows = list(local)
    for node in cluster.nodes():
        if node.node_id == session.engine.node_id or not node.is_live:
            continue
        try:
            answer = cluster.call(node.node_id, {"kind": kind, "user": session.user})
        except errors.PgError:
            continue  # a node that went away meanwhile has nothing running
        _raise_remote_error(answer)
        rows.extend(_decode_row(row) for row in answer.get("rows", ()))
    return rows


def answer(engine: Any, request: dict) -> dict:
    """Run a request another node sent. In a greenlet (the catalog read may wait)."""
    kind = request.get("kind")
    try:
        if kind == "cancel_request":
            session = engine.sessions.get(int(request["pid"]))
            if session is not None and session.secret_key == int(request["secret"]) & 0xFFFFFFFF:
                session.cancel()
            return {"done": True}
        requester = _Requester(engine, str(request.get("user", "")))
        if kind == "cancel_query":
            return {"done": engine.activity.cancel_query(requester, str(request["id"]), bool(request["if_exists"]))}
        if kind == "cancel_session":
            return {"done": engine.activity.cancel_session(requester, str(request["id"]),
                                                           bool(request["if_exists"]))}
        if kind in ("queries", "sessions"):
            viewer = _Viewer(engine, requester.user)
            rows = activity.query_rows(viewer) if kind == "queries" else activity.session_rows(viewer)
            return {"rows": [_encode_row(row) for row in rows]}
    except errors.PgError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    return {"error": {"code": errors.INTERNAL_ERROR, "message": f"unknown cluster request {kind!r}"}}


class _Viewer(_Requester):
    """A remote SHOW CLUSTER QUERIES/SESSIONS: what the requester may see on this node."""


def _raise_remote_error(answer: dict) -> None:
    error = answer.get("error")
    if error:
        raise errors.PgError(error.get("code", errors.INTERNAL_ERROR), error.get("message", "remote error"))


def _encode_row(row: tuple) -> list:
    return [{"ts": v.isoformat()} if isinstance(v, datetime.datetime) else v for v in row]


def _decode_row(row: list) -> tuple:
    return tuple(datetime.datetime.fromisoformat(v["ts"]) if isinstance(v, dict) and "ts" in v else v
                 for v in row)
