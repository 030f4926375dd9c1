"""A node's part in a cluster: its etcd member, the store on etcd, and what it does through etcd.

`pillbug start --join=...` makes a node a member of a cluster (docs/rfcs/0001-cluster.md §2): the
nodes named in --join are the voters, each running one etcd member that this module starts and
stops (server/etcd_member.py); any other node is a gateway that only talks to them. The data lives
in etcd (storage/etcd/store.py); the node waits for `pillbug init` (the key x/init), takes a node id
(kept in its store folder, as CockroachDB keeps its node id), registers itself under a lease (its
liveness), answers requests other nodes send it (cancel, SHOW CLUSTER QUERIES), and takes part in
the election of the node that compacts.

ClusterNode is also the SQL engine's view of the cluster (sql/cluster.py's ClusterView): the node
list and calls to other nodes, which may wait for the network and so run in a statement's greenlet.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pillbug import CRDB_COMPAT_VERSION
from pillbug.server import etcd_member
from pillbug.sql import cluster as sql_cluster
from pillbug.sql.catalog import system
from pillbug.storage.etcd.coord import CoordinationError, Coordinator
from pillbug.storage.etcd.locks import EtcdRowLocks
from pillbug.storage.etcd.store import EtcdStore, EtcdTLS
from pillbug.util import errors, timeslice

log = logging.getLogger("pillbug.cluster")
NODE_ID_FILE = "node_id"
LIVENESS_TTL = 10  # seconds: how long a dead node stays "live" (its lease's TTL; rfcs/0001 §2.6)
CALL_TIMEOUT = 5.0  # seconds a request to another node may take
MEMBER_WAIT_SECONDS = 10.0  # between "still waiting for the other members" log lines
COMPACTOR = "compactor"


class ClusterNode:
    """One node's cluster services. Lifecycle: open() -> join() -> register(engine) ... close()."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.layout = etcd_member.cluster_layout(
            f"{config.listen_host}:{config.listen_port}", config.join or [], config.store,
            None if config.insecure else config.certs_dir, advertise_addr=config.advertise_addr,
            etcd_client_addr=config.etcd_client_addr, etcd_peer_addr=config.etcd_peer_addr)
        self.member: etcd_member.EtcdMember | None = None
        self.store: EtcdStore | None = None
        self.coord: Coordinator | None = None
        self.node_id = 0
        self.info: dict[str, Any] = {}
        self.leadership: Any = None
        self.row_locks: EtcdRowLocks | None = None
        self.live_node_count = 0
        self._counted_at = 0.0

    @property
    def is_voter(self) -> bool:
        return self.layout.member is not None

    async def open(self) -> EtcdStore:
        """Start this node's etcd member (a voter) and open the store on the cluster's members."""
        if self.layout.member is not None:
            self.member = etcd_member.EtcdMember(self.layout.member)
            await self.member.start()
            # Until the member answers with a quorum: coordination talks to it alone, and a
            # restarted member takes a moment to listen. On a new cluster that needs a majority of
            # the --join nodes started, which may take the operator a while: wait, and say so.
            while True:
                try:
                    await self.member.wait_ready(MEMBER_WAIT_SECONDS)
                    break
                except TimeoutError as exc:
                    log.warning("waiting for a majority of the --join nodes to start their etcd members (%s)", exc)
        cfg = self.config
        tls = None
        if not cfg.insecure:
            certs = cfg.certs_dir or "certs"
            tls = EtcdTLS(os.path.join(certs, "ca.crt"), os.path.join(certs, "node.crt"),
                          os.path.join(certs, "node.key"))
        self.store = await EtcdStore.open(self.layout.client_endpoints, tls=tls, revision_keys=[system.VERSION_KEY])
        self.coord = Coordinator(self.store.client)
        return self.store

    async def join(self) -> int:
        """Wait for `pillbug init`, then take this node's id (allocated once, kept in the store folder)."""
        assert self.coord is not None
        log.info("waiting for the cluster to be initialized (pillbug init --host=...)")
        await self.coord.wait_initialized()
        path = os.path.join(self.config.store, NODE_ID_FILE)
        try:
            with open(path) as f:
                self.node_id = int(f.read().strip())
        except FileNotFoundError:
            self.node_id = await self.coord.allocate_node_id()
            os.makedirs(self.config.store, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.node_id}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return self.node_id

    async def register(self, engine: Any, sql_address: str, http_address: str,
                       node_requests: Callable[[dict], Awaitable[dict | None]]) -> None:
        """Announce this node (liveness under its lease), serve other nodes' requests, and stand
        for the compactor election. node_requests answers what is for the node itself (a drain),
        or None; everything else goes to the SQL engine (sql/cluster.py's answer)."""
        assert self.coord is not None
        member = self.layout.member
        self.info = {"address": sql_address, "http_address": http_address, "locality": self.config.locality,
                     "build": CRDB_COMPAT_VERSION, "started_at": time.time(), "is_voter": self.is_voter,
                     "etcd_endpoint": member.client_addr if member is not None else "", "draining": False}
        await self.coord.register(self.node_id, self.info, ttl=LIVENESS_TTL)

        async def handle(request: dict) -> dict:
            answer = await node_requests(request)
            if answer is not None:
                return answer
            return await timeslice.run(sql_cluster.answer, engine, request)
        self.coord.serve(handle)
        self.leadership = self.coord.campaign(COMPACTOR)
        # Row locks of hot keys across nodes hang on this node's lease (rfcs/0001 §2.5).
        assert self.store is not None
        self.row_locks = EtcdRowLocks(self.coord)
        self.store.row_locks = self.row_locks

    async def healthy(self) -> bool:
        """Whether etcd answers with a quorum now; also refreshes the live node count now and then."""
        assert self.store is not None and self.coord is not None
        ok = await self.store.healthy()
        now = time.monotonic()
        if ok and now - self._counted_at > 2.0:
            self._counted_at = now
            self.live_node_count = len(await self.coord.nodes())
        return ok

    @property
    def is_compactor(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader

    async def set_draining(self) -> None:
        if self.coord is not None and self.node_id:
            try:
                await asyncio.wait_for(self.coord.update_info(self.node_id, draining=True), 2.0)
            except Exception as exc:  # the cluster may be unreachable; the drain goes on regardless
                log.warning("could not mark node %d draining: %s", self.node_id, exc)

    async def membership(self) -> str:
        assert self.coord is not None
        return (await self.coord.memberships()).get(self.node_id, "active")

    async def close(self) -> None:
        """Leave: revoke the lease (locks and liveness go at once), close the store, stop the member."""
        if self.row_locks is not None:
            try:
                await asyncio.wait_for(self.row_locks.close(), 2.0)  # pending releases go out first
            except Exception as exc:
                log.warning("could not release this node's row locks: %s", exc)
        if self.coord is not None:
            try:
                await asyncio.wait_for(self.coord.close(), 3.0)
            except Exception as exc:
                log.warning("could not revoke this node's lease: %s", exc)
        if self.store is not None:
            await self.store.close()
        if self.member is not None:
            await self.member.stop()

    # ---- sql/cluster.py's ClusterView (called in a statement's greenlet) ----------------------

    def nodes(self) -> list[sql_cluster.NodeDescriptor]:
        return timeslice.await_(self.describe_nodes())

    async def describe_nodes(self) -> list[sql_cluster.NodeDescriptor]:
        coord = self.coord
        assert coord is not None
        live, memberships = await asyncio.gather(coord.nodes(), coord.memberships())
        known = set(live) | set(memberships)
        out = []
        for node_id in sorted(known):
            info = live.get(node_id, {})
            out.append(sql_cluster.NodeDescriptor(
                node_id=node_id, address=info.get("address", ""), http_address=info.get("http_address", ""),
                locality=info.get("locality", ""), build=info.get("build", ""),
                started_at=float(info.get("started_at", 0.0)), updated_at=time.time() if info else 0.0,
                is_live=node_id in live, is_voter=bool(info.get("is_voter")), draining=bool(info.get("draining")),
                membership=memberships.get(node_id, "active")))
        return out

    def call(self, node_id: int, request: dict) -> dict:
        assert self.coord is not None
        try:
            return timeslice.await_(self.coord.send(node_id, request, timeout=CALL_TIMEOUT))
        except TimeoutError:
            raise errors.PgError(errors.CONNECTION_FAILURE,
                                 f"node {node_id} did not answer within {CALL_TIMEOUT:.0f}s") from None
        except CoordinationError as exc:
            raise errors.PgError(errors.CONNECTION_FAILURE, f"node {node_id}: {exc}") from None

