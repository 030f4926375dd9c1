"""The SQL engine of one node: what all its sessions share.

It owns the Store handle, the cache of Catalog snapshots (by catalog version), the plan cache
(by catalog version, database, user and statement shape), the unique_rowid() generator, the
live sessions by backend pid (for cancel requests) and by id with their running statements
(Activity, sql/activity.py: SHOW QUERIES / SESSIONS, CANCEL, statement_timeout), and the turns that
server-side retries take on a contended key (RetryTurns). Sessions come from
new_session(). This module knows nothing of the wire protocol: pgwire creates sessions and
feeds them statements, and so can an embedded caller or a test.
"""
from __future__ import annotations

import asyncio
import datetime
import itertools
import platform
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.kv.locks import LockTable
from pillbug.kv.txn import Txn
from pillbug.sql.activity import Activity
from pillbug.sql.catalog import system
from pillbug.sql.catalog.system import Catalog
from pillbug.storage.store import Store
from pillbug.util import timeslice

PLAN_CACHE_SIZE = 4096
# How long after two sessions' statements interleave the node counts as shared.
SHARED_WINDOW = 0.1
CATALOG_CACHE_SIZE = 8


class RetryTurns:
    """First come, first served turns on a key, for server-side retries that lost a conflict on it.

    Optimistic transactions that all contend on one key would otherwise race again on every
    retry, and an unlucky statement could lose many times in a row. A retry waits for its turn
    on the key it lost on and runs while holding it. A first attempt that would write a key
    whose turn someone else holds gives way (Session._commit: it fails as if it had lost, and
    queues up), so the holder never loses to newcomers that were scheduled before it. The turn
    is handed straight to the next waiter (no lost wake-ups when a waiting session goes away).
    Entries exist only while a turn is held, and a session waits for or holds at most one, so
    this is bounded by the number of sessions.
    """

    def __init__(self) -> None:
        self._queues: dict[bytes, deque[asyncio.Future]] = {}  # key -> waiters; present while held

    async def take(self, key: bytes) -> None:
        waiters = self._queues.get(key)
        if waiters is None:
            self._queues[key] = deque()
            return
        turn = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give_back(key)  # handed the turn while going away: pass it on
            elif turn in waiters:
                waiters.remove(turn)
            raise

    def held_elsewhere(self, keys: Iterable[bytes], mine: bytes | None) -> bytes | None:
        """One of `keys` whose turn is held, other than `mine` (the caller's), or None."""
        queues = self._queues
        if queues:
            for key in keys:
                if key in queues and key != mine:
                    return key
        return None

    def give_back(self, key: bytes) -> None:
        waiters = self._queues[key]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._queues[key]


class Engine:
    def __init__(self, store: Store, node_id: int = 1, cluster_name: str = "") -> None:
        self.store = store
        self.locks = LockTable()  # row locks of this node's transactions (kv/locks.py)
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.start_time = datetime.datetime.now(datetime.UTC)
        self._catalogs: OrderedDict[int, Catalog] = OrderedDict()
        self.plan_cache: OrderedDict[tuple, Any] = OrderedDict()
        self.plan_cache_hits = 0  # lookups that found a plan
        self.plan_cache_misses = 0  # lookups that found nothing: the statement gets planned
        self.parse_cache: OrderedDict[str, list] = OrderedDict()
        self._last_active_pid = 0
        self._shared_until = 0.0
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
        # In a greenlet of its own, like every path to the store (its reads may wait).
        return await timeslice.run(system.bootstrap, self.store)

    def catalog_for(self, txn: Txn) -> Catalog:
        """The catalog as of the transaction's snapshot; its version key joins the read set."""
        version = system.read_version(txn)
        cached = self._catalogs.get(version)
        if cached is not None:
            self._catalogs.move_to_end(version)
            return cached
        catalog = system.load_catalog(self.store, txn.read_revision, version)
        self._catalogs[version] = catalog
        while len(self._catalogs) > CATALOG_CACHE_SIZE:
            self._catalogs.popitem(last=False)
        return catalog

    def latest_catalog(self) -> Catalog:
        """The newest committed catalog (for authentication and the HBA check)."""
        return self.catalog_for(Txn(self.store, is_read_only_snapshot=True))

    def cached_plan(self, key: tuple, count_miss: bool = True) -> Any:
        """The plan cached under key (False: known not to be cacheable; None: not seen).

        count_miss=False is for a look that falls back to a fuller one, which counts it.
        """
        plan = self.plan_cache.get(key)
        if plan is not None:
            self.plan_cache.move_to_end(key)
            if plan:
                self.plan_cache_hits += 1
        elif count_miss:
            self.plan_cache_misses += 1
        return plan

    def cache_plan(self, key: tuple, plan: Any) -> None:
        self.plan_cache[key] = plan
        if len(self.plan_cache) > PLAN_CACHE_SIZE:
            self.plan_cache.popitem(last=False)

    def cached_parse(self, sql: str) -> list | None:
        return self.parse_cache.get(sql)

    def cache_parse(self, sql: str, statements: list) -> None:
        if len(sql) > 4096:
            return
        self.parse_cache[sql] = statements
        if len(self.parse_cache) > PLAN_CACHE_SIZE:
            self.parse_cache.popitem(last=False)

    def unique_rowid(self) -> int:
        """CockroachDB's unique_rowid(): time in 10 µs units, shifted, with the node id below."""
        candidate = (time.time_ns() // 10_000) << 15 | (self.node_id & 0x7FFF)
        if candidate <= self._rowid_last:
            candidate = self._rowid_last + (1 << 15)
        self._rowid_last = candidate
        return candidate

    def next_backend_pid(self) -> int:
        return next(self._pids)

    def note_active(self, backend_pid: int) -> None:
        """A session starts a statement; interleaving sessions mean the node is shared."""
        if backend_pid != self._last_active_pid:
            self._last_active_pid = backend_pid
            self._shared_until = time.monotonic() + SHARED_WINDOW

    def is_alone(self) -> bool:
        """Whether one session has had the node to itself lately (see Store.commit's `alone`)."""
        return time.monotonic() > self._shared_until

    def new_session(self, user: str, database: str, **kwargs: Any) -> Any:
        from pillbug.sql.session import Session
        session = Session(self, user, database, **kwargs)
        self.sessions[session.backend_pid] = session
        self.activity.add_session(session)
        return session

    def close_session(self, session: Any) -> None:
        self.sessions.pop(session.backend_pid, None)
        self.activity.remove_session(session)
