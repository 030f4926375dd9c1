"""The SQL engine of one node: what all its sessions share.

It holds the key-value database (kv.db.DB: the server wraps its Store in one), the cache of Catalog snapshots (by catalog version), the plan cache
(by catalog version, database, user and statement shape), the unique_rowid() generator, the
live sessions by backend pid (for cancel requests) and by id with their running statements
(Activity, sql/activity.py: SHOW QUERIES / SESSIONS, CANCEL, statement_timeout), and the turns that
server-side retries take on a contended key (RetryTurns). Sessions come from
new_session(). This module knows nothing of the wire protocol: pgwire creates sessions and
feeds them statements, and so can an embedded caller or a test.
"""
from __future__ import annotations

import datetime
import itertools
import platform
import time
from collections import Counter, OrderedDict
from typing import Any

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.kv.db import DB
from pillbug.kv.locks import LockTable
from pillbug.kv.txn import Txn
from pillbug.sql.activity import Activity
from pillbug.sql.catalog import system
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.cluster import MAX_NODE_ID, PID_NODE_SHIFT, ClusterView
from pillbug.sql.plan_cache import PlanCache
from pillbug.sql.retry import RetryTurns, retry_serialization_failures
from pillbug.sql.session import Session
from pillbug.util import errors, timeslice

CATALOG_CACHE_SIZE = 8


class Engine:
    def __init__(self, db: DB, node_id: int = 1, cluster_name: str = "", locality: str = "") -> None:
        self.db = db
        self.locks = LockTable()  # row locks of this node's transactions (kv/locks.py)
        self.node_id = node_id
        # --locality as given (region=...,zone=...; "" without it): SHOW LOCALITY, gateway_region()
        # and this node's row of the node tables (sql/cluster.py: locality_tiers, nodes).
        self.locality = locality
        self.cluster_name = cluster_name
        # The other nodes (server/ sets it in a cluster; None on one node): sql/cluster.py.
        self.cluster: ClusterView | None = None
        self.sql_address = ""  # host:port this node serves SQL on (crdb_internal's node tables)
        self.start_time = datetime.datetime.now(datetime.UTC)
        self._catalogs: OrderedDict[int, Catalog] = OrderedDict()
        self.plans = PlanCache()  # plans and parses of statement texts (sql/plan_cache.py)
        self._rowid_last = 0
        self._pids = itertools.count(1)
        self.sessions: dict[int, Any] = {}
        self.activity = Activity(node_id)  # sessions and running statements by id (sql/activity.py)
        self.retry_turns = RetryTurns()
        # crdb_internal.increment_feature_counter(name) counts here; crdb_internal.feature_usage
        # shows the counts. Per node and not persisted, as CockroachDB's telemetry counters are.
        self.feature_usage: Counter[str] = Counter()
        self.version_string = (
            f"CockroachDB CCL {CRDB_COMPAT_VERSION} ({platform.machine()}-pc-linux-gnu, "
            f"built {time.strftime('%Y/%m/%d')}, Pillbug {__version__}, Python {platform.python_version()})")

    async def start(self) -> bool:
        """Bootstrap an empty store. Returns True when this was the first start."""
        # In a greenlet of its own, like every path to the store (its reads may wait). In a
        # cluster every node tries at once after `pillbug init`: one commit wins, the others fail
        # their compare (40001) and, retried, find the system data there.
        return await timeslice.run(lambda: retry_serialization_failures(lambda: system.bootstrap(self.db),
                                                                        max_retries=20))

    def catalog_for(self, txn: Txn) -> Catalog:
        """The catalog as of the transaction's snapshot; its version key joins the read set."""
        version = system.read_version(txn)
        cached = self._catalogs.get(version)
        if cached is not None:
            self._catalogs.move_to_end(version)
            return cached
        catalog = system.load_catalog(self.db, txn.read_revision, version)
        self._catalogs[version] = catalog
        while len(self._catalogs) > CATALOG_CACHE_SIZE:
            self._catalogs.popitem(last=False)
        return catalog

    def latest_catalog(self) -> Catalog:
        """The newest committed catalog (for authentication and the HBA check)."""
        return self.catalog_for(self.db.txn(is_read_only_snapshot=True))

    @property
    def plan_cache_hits(self) -> int:
        return self.plans.hits

    @property
    def plan_cache_misses(self) -> int:
        return self.plans.misses

    def unique_rowid(self) -> int:
        """CockroachDB's unique_rowid(): time in 10 µs units, shifted, with the node id below."""
        candidate = (time.time_ns() // 10_000) << 15 | (self.node_id & 0x7FFF)
        if candidate <= self._rowid_last:
            candidate = self._rowid_last + (1 << 15)
        self._rowid_last = candidate
        return candidate

    def next_backend_pid(self) -> int:
        """A BackendKeyData pid whose upper bits name this node, so that a CancelRequest that a load
        balancer sends to another node can be forwarded here (sql/cluster.py)."""
        base = (self.node_id & MAX_NODE_ID) << PID_NODE_SHIFT
        for _ in range(1 << PID_NODE_SHIFT):
            pid = base | (next(self._pids) & ((1 << PID_NODE_SHIFT) - 1))
            if pid & ((1 << PID_NODE_SHIFT) - 1) and pid not in self.sessions:
                return pid
        raise errors.PgError(errors.TOO_MANY_CONNECTIONS, "too many sessions on this node")

    def new_session(self, user: str, database: str, **kwargs: Any) -> Any:
        session = Session(self, user, database, **kwargs)
        self.sessions[session.backend_pid] = session
        self.activity.add_session(session)
        return session

    def close_session(self, session: Any) -> None:
        self.sessions.pop(session.backend_pid, None)
        self.activity.remove_session(session)
