"""One node process: opens the store, bootstraps it, and runs the SQL and HTTP listeners.

Lifecycle: start() opens the LMDB store under --store, bootstraps an empty one (system data,
defaultdb, postgres, root and the admin role), seeds the allowlist and the first admin user if
asked, then starts listening; from then on /health?ready=1 answers 200. stop() (SIGTERM/SIGINT)
turns readiness off, stops accepting, closes client connections, and closes the store after its
pending commits are durable. A background task compacts MVCC history older than gc.ttlseconds.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.kv.db import DB
from pillbug.kv.txn import Txn
from pillbug.pgwire.server import PgServer
from pillbug.server import tls
from pillbug.server.cluster import ClusterNode
from pillbug.server.http import HttpServer
from pillbug.sql import settings
from pillbug.sql.catalog import system
from pillbug.sql.engine import Engine
from pillbug.sql.retry import retry_serialization_failures
from pillbug.sql.settings import HBA_SETTING, QUERY_WAIT_SETTING, SHUTDOWN_WAIT_SETTING
from pillbug.storage import suspending
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.store import Store
from pillbug.util import errors, hba, hlc, passwords, timeslice

log = logging.getLogger("pillbug")
COMPACTION_INTERVAL = 600.0
PROBE_INTERVAL = 0.25  # seconds between checks that the cluster's etcd has a quorum
PROBE_TIMEOUT = 1.0
RESERVED_NAMES = frozenset({system.ROOT_USER, system.ADMIN_ROLE, system.PUBLIC_ROLE, "none"})


@dataclass
class NodeConfig:
    store: str = "pillbug-data"
    listen_host: str = "127.0.0.1"
    listen_port: int = 26257
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    certs_dir: str | None = "certs"
    insecure: bool = False
    allowlist: list[str] | None = None
    init_admin: str | None = None
    test_store: str | None = None  # tests only: storage/suspending.py's SPEC, LMDB behind waiting reads
    # cluster mode (`pillbug start`); None for start-single-node. server/etcd_member.cluster_layout
    # turns these into the node's etcd member and client endpoints.
    join: list[str] | None = None  # the voters' addresses, host:port
    locality: str = ""  # region=...,zone=...
    etcd_client_addr: str | None = None
    etcd_peer_addr: str | None = None
    advertise_addr: str | None = None
    # --accept-proxy-protocol-from: CIDRs of the balancers whose PROXY v2 header names the client
    # (pgwire/proxy_protocol.py); None: nobody's header is accepted
    proxy_protocol_from: list[str] | None = None


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.lmdb: LMDBStore | None = None  # the engine; for its statistics
        self.store: Store | None = None  # what the SQL engine reads: lmdb, or a test wrapper over it
        self.engine: Engine | None = None
        self.pg: PgServer | None = None
        self.http: HttpServer | None = None
        self.ready = False
        self.sql_port = 0
        self.http_port = 0
        self.started_at = 0.0
        self.first_start = False
        self.admin_password: str | None = None
        self._compactor: asyncio.Task | None = None
        self.queries = 0
        self.cluster: ClusterNode | None = None  # `pillbug start --join`: etcd, node id, liveness
        self._cluster_healthy = True  # the last probe of the cluster's quorum (readiness)
        self._decommissioned = False
        self._prober: asyncio.Task | None = None
        self._draining = False

    async def start(self) -> None:
        began = time.monotonic()
        cfg = self.config
        ssl_context = None if cfg.insecure else tls.server_context(cfg.certs_dir or "certs")
        try:
            balancers = [ipaddress.ip_network(cidr) for cidr in cfg.proxy_protocol_from or ()]
        except ValueError as exc:
            raise errors.invalid_parameter_value(f"--accept-proxy-protocol-from: {exc}") from None
        if cfg.init_admin is not None and cfg.init_admin in RESERVED_NAMES:
            raise errors.invalid_parameter_value(
                f"--init-admin: {cfg.init_admin!r} is a reserved role name; choose another user name")
        # HTTP first, so that /health?ready=1 answers 503 (not "connection refused") while the store
        # opens and bootstraps.
        self.http = HttpServer(self._status, self._metrics, ssl_context)
        self.http_port = await self.http.start(cfg.http_host, cfg.http_port)
        node_id = 1
        if cfg.join:
            self.cluster = ClusterNode(cfg)
            self.store = await self.cluster.open()
            node_id = await self.cluster.join()
        else:
            self.store = self.lmdb = LMDBStore(cfg.store)
            if cfg.test_store:
                try:
                    self.store = suspending.from_spec(cfg.test_store, self.lmdb)
                except ValueError as exc:
                    raise errors.invalid_parameter_value(f"--test-store: {exc}") from None
                log.warning("--test-store=%s: reads go through a test store that delays them; not for "
                            "production", cfg.test_store)
        self.engine = Engine(DB(self.store), node_id=node_id, locality=cfg.locality)
        self.engine.cluster = self.cluster
        self.first_start = await self.engine.start()
        if cfg.allowlist:
            await self._seed_allowlist(cfg.allowlist)
        if cfg.init_admin:
            await self._init_admin(cfg.init_admin)
        self.pg = PgServer(self.engine, ssl_context, proxy_protocol_from=balancers)
        self.sql_port = await self.pg.start(cfg.listen_host, cfg.listen_port)
        self.engine.sql_address = f"{cfg.advertise_addr or cfg.listen_host}:{self.sql_port}"
        if self.cluster is not None:
            await self.cluster.register(self.engine, self.engine.sql_address,
                                        f"{cfg.http_host}:{self.http_port}", self._serve_request)
            self._prober = asyncio.create_task(self._probe_cluster())
        self.started_at = time.time()
        self.ready = True
        self._compactor = asyncio.create_task(self._compact_loop())
        self._announce(time.monotonic() - began)

    async def stop(self) -> None:
        """Drain and stop: unready first (for server.shutdown.initial_wait, so that load balancers
        stop sending new connections), then close the listeners, the connections and the store."""
        was_ready = self.ready
        self.ready = False
        if self.cluster is not None:
            await self.cluster.set_draining()
        if was_ready and self.engine is not None:
            wait, query_wait = await timeslice.run(self._shutdown_waits)
            if wait > 0:
                log.info("draining: unready for %.1fs before shutting down (%s)", wait, SHUTDOWN_WAIT_SETTING)
                await asyncio.sleep(wait)
            if self.pg is not None:
                ended = await self.pg.drain(query_wait)
                log.info("drained: no new sessions; %d open sessions ended with 57P01 after up to %.1fs (%s)",
                         ended, query_wait, QUERY_WAIT_SETTING)
        for task in (self._compactor, self._prober):
            if task is not None:
                task.cancel()
        if self.http is not None:
            await self.http.stop()
        if self.pg is not None:
            await self.pg.stop()
        if self.cluster is not None:
            await self.cluster.close()  # the lease, the store, then the etcd member
        elif self.store is not None:
            await self.store.close()
        log.info("node shut down cleanly")

    def _shutdown_waits(self) -> tuple[float, float]:
        """server.shutdown.initial_wait and .query_wait, in seconds. Runs in a greenlet
        (timeslice.run): the catalog is read from the store."""
        assert self.engine is not None
        waits = []
        for name, default in ((SHUTDOWN_WAIT_SETTING, 0.0), (QUERY_WAIT_SETTING, 10.0)):
            try:
                text = settings.current(self.engine.latest_catalog().settings, name)
                waits.append(min(settings.parse_duration(text), settings.MAX_SHUTDOWN_WAIT))
            except (ValueError, errors.PgError):
                waits.append(default)
        return waits[0], waits[1]

    async def _write_system(self, fn: Any) -> None:
        """Run fn(txn) in its own transaction, retrying on conflict; in a greenlet, because the
        transaction reads the store (timeslice.run)."""
        store = self.store
        assert store is not None

        async def attempt() -> None:
            txn = Txn(store)
            fn(txn)
            await txn.commit()
        await timeslice.run(lambda: retry_serialization_failures(attempt, max_retries=99))

    async def _seed_allowlist(self, cidrs: list[str]) -> None:
        try:
            config = hba.allowlist_config(cidrs)
        except ValueError as exc:
            raise errors.invalid_parameter_value(f"--allowlist: {exc}") from None

        def seed(txn: Txn) -> None:
            if txn.get(system.setting_key(HBA_SETTING)) is None:
                txn.put(system.setting_key(HBA_SETTING), config.encode())
                system.bump_version(txn)
        await self._write_system(seed)

    async def _init_admin(self, name: str) -> None:
        password = secrets.token_urlsafe(18)
        created = []

        def create(txn: Txn) -> None:
            created.clear()
            if txn.get(system.user_key(name)) is not None:
                return
            system.write_user(txn, system.UserRecord(name, passwords.make_verifier(password)))
            txn.put(system.member_key(system.ADMIN_ROLE, name), b'{"admin": true}')
            system.bump_version(txn)
            created.append(True)
        await self._write_system(create)
        if created:
            self.admin_password = password

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(COMPACTION_INTERVAL)
            if self.cluster is not None and not self.cluster.is_compactor:
                continue  # one node at a time compacts a cluster's store (rfcs/0001 §2.4, §2.8)
            try:
                await timeslice.run(self._compact)
            except Exception:
                log.exception("compaction failed")

    async def _compact(self) -> None:
        """Drop history older than gc.ttlseconds. Runs in a greenlet: the catalog read may wait."""
        store, engine = self.store, self.engine
        assert store is not None and engine is not None
        ttl = int(engine.latest_catalog().settings.get("gc.ttlseconds", "90000"))
        horizon = store.now() - (ttl * 1_000_000_000 << hlc.LOGICAL_BITS)
        revision = store.revision_at(horizon)
        if revision > store.compacted_revision():
            await store.compact(revision)

    async def _probe_cluster(self) -> None:
        """Keep readiness current: a node whose etcd has no quorum, or that was decommissioned,
        answers /health?ready=1 with 503 so that load balancers send its clients elsewhere."""
        cluster = self.cluster
        assert cluster is not None
        while True:
            try:
                healthy = await asyncio.wait_for(cluster.healthy(), PROBE_TIMEOUT)
            except Exception:
                healthy = False
            if healthy != self._cluster_healthy:
                log.warning("etcd %s", "reachable with a quorum again" if healthy else
                            "unreachable or without a quorum: this node reports not ready")
            self._cluster_healthy = healthy
            if healthy:
                try:
                    membership = await asyncio.wait_for(cluster.membership(), PROBE_TIMEOUT)
                    self._decommissioned = membership != "active"
                except Exception:
                    membership = None
                if membership == "decommissioned" and not self._draining:
                    log.warning("this node was decommissioned: draining")
                    asyncio.get_running_loop().create_task(self.drain())
            await asyncio.sleep(PROBE_INTERVAL)

    async def _serve_request(self, request: dict) -> dict | None:
        """Requests for the node itself (not its SQL engine) from another node or the CLI."""
        if request.get("kind") == "drain":
            await self.drain()
            return {"remaining": 0}
        return None

    async def drain(self) -> None:
        """`pillbug node drain`: stop taking sessions and end open ones, but keep running."""
        if self._draining:
            return
        self._draining = True
        self.ready = False
        if self.cluster is not None:
            await self.cluster.set_draining()
        if self.engine is not None and self.pg is not None:
            _, query_wait = await timeslice.run(self._shutdown_waits)
            await self.pg.drain(query_wait)

    @property
    def is_ready(self) -> bool:
        return self.ready and self._cluster_healthy and not self._decommissioned

    def _status(self) -> dict[str, Any]:
        # draining/decommissioned: why a node is not ready, when it is by choice (balancers and
        # `pillbug cluster` tell a node taken out of service from one that cannot serve)
        return {"nodeId": self.engine.node_id if self.engine else 0, "ready": self.is_ready,
                "draining": self._draining, "decommissioned": self._decommissioned,
                "address": {"networkField": "tcp", "addressField": f"{self.config.listen_host}:{self.sql_port}"},
                "buildTag": CRDB_COMPAT_VERSION, "pillbug": __version__,
                "startedAt": int(self.started_at * 1e9)}

    def _metrics(self) -> dict[str, float]:
        if self.cluster is not None:
            return self._cluster_metrics()
        engine = self.engine
        # The engine itself, not a test wrapper: a metric is what this node last saw, and must not
        # wait for the store (this runs in the HTTP handler, outside any greenlet).
        store = self.lmdb
        stats = store.stats if store else None
        return {"sql_conns": float(len(engine.sessions)) if engine else 0.0,
                "sys_uptime": time.time() - self.started_at if self.started_at else 0.0,
                "storage_revision": float(store.current_revision()) if store else 0.0,
                "storage_commits": float(stats.commits) if stats else 0.0,
                "storage_commit_batches": float(stats.batches) if stats else 0.0,
                "storage_commit_conflicts": float(stats.conflicts) if stats else 0.0,
                "storage_checkpoints": float(stats.checkpoints) if stats else 0.0,
                "sql_optimizer_plan_cache_hits": float(engine.plan_cache_hits) if engine else 0.0,
                "sql_optimizer_plan_cache_misses": float(engine.plan_cache_misses) if engine else 0.0,
                "liveness_livenodes": 1.0}

    def _cluster_metrics(self) -> dict[str, float]:
        """/_status/vars in a cluster: the SQL side, and this node's view of etcd (its round trips,
        commits and conflicts), from counters: nothing here waits for the network."""
        engine, cluster = self.engine, self.cluster
        assert cluster is not None
        store = cluster.store
        out = {"sql_conns": float(len(engine.sessions)) if engine else 0.0,
               "sys_uptime": time.time() - self.started_at if self.started_at else 0.0,
               "sql_optimizer_plan_cache_hits": float(engine.plan_cache_hits) if engine else 0.0,
               "sql_optimizer_plan_cache_misses": float(engine.plan_cache_misses) if engine else 0.0,
               "liveness_livenodes": float(cluster.live_node_count),
               "etcd_healthy": 1.0 if self._cluster_healthy else 0.0,
               "etcd_voter": 1.0 if cluster.is_voter else 0.0,
               "compactor": 1.0 if cluster.is_compactor else 0.0}
        if store is not None:
            stats = store.stats
            out.update({"storage_revision": float(store.cached_revision()),
                        "storage_commits": float(stats.commits),
                        "storage_commit_conflicts": float(stats.conflicts),
                        "etcd_commits_ambiguous": float(stats.ambiguous_commits),
                        "etcd_commits_unknown": float(stats.unknown_commits),
                        "etcd_reads": float(stats.reads),
                        "etcd_linearizable_calls": float(stats.linearizable_calls),
                        "etcd_failovers": float(stats.failovers),
                        "etcd_round_trips": float(stats.rtt_count),
                        "etcd_round_trip_seconds_mean": stats.rtt_mean_seconds,
                        "etcd_round_trip_seconds_last": stats.rtt_last_seconds})
        return out

    def sql_url(self, user: str, password: str | None = None, database: str = "defaultdb") -> str:
        cfg = self.config
        host = cfg.listen_host if cfg.listen_host not in ("", "0.0.0.0", "::") else "localhost"
        cred = f"{user}:{password}" if password else user
        base = f"postgresql://{cred}@{host}:{self.sql_port}/{database}"
        if cfg.insecure:
            return base + "?sslmode=disable"
        ca = os.path.abspath(os.path.join(cfg.certs_dir or "certs", "ca.crt"))
        return f"{base}?sslmode=verify-full&sslrootcert={ca}"

    def _announce(self, took: float) -> None:
        cfg = self.config
        scheme = "http" if cfg.insecure else "https"
        root_url = self.sql_url("root")
        if not cfg.insecure:
            certs = os.path.abspath(cfg.certs_dir or "certs")
            root_url = root_url.replace("sslmode=verify-full",
                                        f"sslcert={certs}/client.root.crt&sslkey={certs}/client.root.key"
                                        f"&sslmode=verify-full")
        lines = [
            f"CockroachDB node starting at {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} "
            f"(took {took:.1f}s)",
            f"build:               CCL {CRDB_COMPAT_VERSION} (Pillbug {__version__})",
            f"webui:               {scheme}://{cfg.http_host}:{self.http_port}",
            f"sql:                 {root_url}",
            f"RPC client flags:    pillbug <client cmd> --host={cfg.listen_host}:{self.sql_port} "
            + ("--insecure" if cfg.insecure else f"--certs-dir={cfg.certs_dir}"),
            f"store[0]:            path={os.path.abspath(cfg.store)}",
            "storage engine:      " + self._engine_line(),
            f"status:              {self._status_line()}",
            f"nodeID:              {self.engine.node_id if self.engine else 0}",
        ]
        if cfg.locality:
            lines.insert(-2, f"locality:            {cfg.locality}")
        if cfg.proxy_protocol_from:
            lines.insert(-2, f"proxy protocol from: {','.join(cfg.proxy_protocol_from)}")
        print("\n".join(lines), flush=True)
        if self.config.init_admin:
            if self.admin_password is not None:
                self._print_connection_details(self.config.init_admin, self.admin_password)
            else:
                print(f"\nadmin user {self.config.init_admin} already exists; its password was shown when it was "
                      f"created.", flush=True)

    def _engine_line(self) -> str:
        if self.cluster is not None:
            layout = self.cluster.layout
            role = (f"voter, its member at {layout.member.client_addr}" if layout.member is not None
                    else "gateway, no etcd member")
            return f"etcd ({role}; endpoints {','.join(layout.client_endpoints)})"
        return "lmdb" if not self.config.test_store else "lmdb behind the suspending test store"

    def _status_line(self) -> str:
        if self.cluster is not None:
            return "initialized new cluster" if self.first_start else "joined existing cluster"
        return "initialized new cluster" if self.first_start else "restarted pre-existing node"

    def _print_connection_details(self, user: str, password: str) -> None:
        cfg = self.config
        ca = os.path.abspath(os.path.join(cfg.certs_dir or "certs", "ca.crt"))
        url = self.sql_url(user, password).replace(f"sslrootcert={ca}", "sslrootcert=certs/ca.crt")
        print("\n".join([
            "",
            "Your cluster is ready. Connection details:",
            f"  CA certificate:  {ca}",
            f"  user:            {user}",
            f"  password:        {password}",
            f"  global host:     {cfg.listen_host if cfg.listen_host not in ('', '0.0.0.0') else 'localhost'}",
            f"  port:            {self.sql_port}",
            f"  connection URL:  {url}",
            "  (put ca.crt in a certs/ folder next to your client, as the URL's sslrootcert expects)",
            f"  SQL shell:       pillbug sql --url '{url}'",
            "",
        ]), flush=True)
