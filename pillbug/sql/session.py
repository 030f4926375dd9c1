"""A SQL session: the state of one client's connection to SQL, and its statement dispatcher.

Session holds what lives as long as a connection: the user and database, session variables,
the open transaction and its life (begin, commit_txn, end_txn, restart_txn, fail), savepoints,
cursors and SQL-prepared statements. It is the planner's PlanEnv (catalogs and name resolution),
and it runs one statement (execute_statement: planned kinds through the plan cache, cursors,
the rest to statements.py). What drives statements lives beside it, each a set of functions
of the session: the simple query protocol (sql/simple_query.py), the extended protocol's
prepared statements and portals and the writer of rows to the sink (sql/portals.py), and the
transaction control statements and savepoints (sql/txn_control.py). The public methods here
(run_simple, prepare, execute_portal, sync, ...) are what pgwire calls.

The transaction states and their legal moves are sql/txn_state.py's (NO_TXN, OPEN, ABORTED,
COMMIT_WAIT); every change of `Session.state` goes through its transition(). Server-side
retries (with_retries) run through sql/retry.py's one loop; retries that lost a conflict on a
key take turns on that key (Engine.retry_turns), so that under contention every statement
finishes rather than some losing over and over.
The session talks to the client through a ResultSink; it knows nothing of the wire format.
"""
from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from pillbug.kv.txn import Txn
from pillbug.sql import access, activity, cursors, ddl, names, portals, simple_query, statements, txn_control
from pillbug.sql import types as T
from pillbug.sql import vars as session_vars
from pillbug.sql.catalog import system, virtual
from pillbug.sql.catalog.descriptors import TableDesc
from pillbug.sql.catalog.system import Catalog
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt.plan import plan_statement
from pillbug.sql.opt.planner import Planner, QueryPlan
from pillbug.sql.parser import front
from pillbug.sql.parser.front import Statement
from pillbug.sql.parser.lift import cache_key, lift_literals
from pillbug.sql.plan_cache import CachedPlan, bind_literals, literal_converter
from pillbug.sql.portals import Portal, Prepared
from pillbug.sql.result import EmptyQuery, ResultSink, StatementOutcome
from pillbug.sql.retry import RetryTurn, retry_serialization_failures
from pillbug.sql.rowenc import TableCodec
from pillbug.sql.sem import builtins
from pillbug.sql.sem.build import NotCacheable, ParamTypes, ScopeColumn
from pillbug.sql.statements import PLANNED_KINDS
from pillbug.sql.txn_control import SavepointMark
from pillbug.sql.txn_state import ABORTED, COMMIT_WAIT, NO_TXN, OPEN, TxnEvent, TxnState, transition
from pillbug.util import errors, hlc, timeslice
from pillbug.util.encoding import pretty_key

__all__ = ["EmptyQuery", "Portal", "Prepared", "Session"]  # what pgwire imports from here


class Session:
    def __init__(self, engine: Any, user: str, database: str, *, application_name: str = "",
                 client_addr: str = "", options: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.user = user
        self.database = database
        self.client_addr = client_addr
        self.backend_pid = engine.next_backend_pid()
        self.secret_key = secrets.randbits(31)
        self.vars: dict[str, str] = {n: d for n, (d, _) in session_vars.DEFINITIONS.items()}
        self.vars["application_name"] = application_name
        self.vars["database"] = database
        self.vars["session_user"] = user
        self.vars["crdb_version"] = engine.version_string
        self.vars["node_id"] = str(engine.node_id)
        self.vars["locality"] = engine.locality
        self.timezone: datetime.tzinfo = datetime.UTC
        self.server_version_string = engine.version_string
        self.node_start_time = engine.start_time
        self.state: TxnState = NO_TXN  # moved only by transition() (sql/txn_state.py)
        self.txn: Txn | None = None
        self.implicit = False
        # (name, SavepointMark), innermost last
        self.savepoints: list[tuple[str, SavepointMark]] = []
        self.last_conflict_key: bytes | None = None  # of the last commit that failed with 40001
        self.retry_turn: RetryTurn | None = None  # of the statement the server is retrying
        self.commits = 0  # transactions this session committed (tells a batch what it did)
        self._txn_catalog: Catalog | None = None
        self.ddl_in_txn = False  # the open transaction ran DDL: no plan cache, catalog read in it
        self.sql_prepared: dict[str, Prepared] = {}
        self.cursors: dict[str, cursors.Cursor] = {}  # DECLAREd in the open transaction block
        self.running_ctx: ExecCtx | None = None
        self.reported_changes: list[tuple[str, str]] = []
        self.as_of_revision: int | None = None
        self.read_only_txn = False  # BEGIN READ ONLY
        self.pending_notices: list[str] = []
        self.sequence_values: dict[int, int] = {}
        self.deallocated: list[str] = []
        self.deallocate_all = False
        self.discarded = False
        self.local_vars: dict[str, str] = {}  # SET LOCAL: the values to restore when the txn ends
        # Query control (sql/activity.py): the id SHOW SESSIONS and CANCEL SESSION use, the
        # statement running now, and pgwire's callback that closes this session's connection.
        self.session_id = ""
        self.query: activity.ActiveQuery | None = None
        self.terminate: Any = None
        self.last_query = ""
        self.txns_executed = 0
        self.session_start = datetime.datetime.now(datetime.UTC)
        self.txn_began = 0.0  # activity clock at BEGIN: what crdb_internal.force_retry measures
        # Startup options last: setting a variable needs the state above (timezone, reports).
        for name, value in (options or {}).items():
            self.set_var(name, value)

    # ---- session variables ---------------------------------------------------------------

    def show_var(self, name: str) -> str:
        n = session_vars.canonical(name)
        if n == "database":
            return self.database
        if n == "transaction_status":
            return self.state
        if n == "is_superuser":
            return "on" if self.catalog_or_latest().is_admin(self.user) else "off"
        if n in ("session_user", "session_authorization"):
            return self.user
        if n not in self.vars:
            raise errors.PgError(errors.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')
        return self.vars[n]

    def set_var(self, name: str, value: str) -> None:
        n = session_vars.canonical(name)
        if n == "database":
            self.use_database(value)
            return
        value = session_vars.validate(n, value)
        self.vars[n] = value
        if n == "timezone":
            self.timezone = builtins.resolve_zone(value)
        display = session_vars.DISPLAY_NAMES.get(n, n)
        if display in session_vars.REPORTED:
            self.reported_changes.append((display, value))

    def reset_var(self, name: str) -> None:
        n = session_vars.canonical(name)
        if n not in session_vars.DEFINITIONS:
            raise errors.PgError(errors.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')
        self.set_var(n, session_vars.DEFINITIONS[n][0])

    def use_database(self, name: str) -> None:
        catalog = self.catalog_or_latest()
        if catalog.database(name) is None:
            raise errors.undefined_database(name)
        self.database = name
        self.vars["database"] = name

    # ---- catalogs and name resolution (PlanEnv) --------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._txn_catalog is None:
            assert self.txn is not None
            if self.ddl_in_txn:
                self._txn_catalog = system.load_catalog_in_txn(self.txn, system.read_version(self.txn))
            else:
                self._txn_catalog = self.engine.catalog_for(self.txn)
        return self._txn_catalog

    def catalog_or_latest(self) -> Catalog:
        if self.txn is not None:
            return self.catalog
        return self.engine.latest_catalog()

    def catalog_changed(self) -> None:
        """Called after a DDL statement wrote system keys in the current transaction."""
        self.ddl_in_txn = True
        self._txn_catalog = None

    def forget_catalog(self) -> None:
        """The transaction's own writes were undone (ROLLBACK TO SAVEPOINT): read its catalog again."""
        self._txn_catalog = None

    def codec(self, table: TableDesc) -> TableCodec:
        codecs = self.catalog.codecs
        codec = codecs.get(table.id)
        if codec is None or codec.table is not table:  # type: ignore[attr-defined]
            codec = codecs[table.id] = TableCodec(table)
        return codec  # type: ignore[return-value]

    def check_privilege(self, desc: Any, privilege: str) -> None:
        access.check_privilege(self.catalog, self.user, desc, privilege)

    def virtual_table(self, schema: str, name: str) -> Any:
        return virtual.lookup(schema, name)

    def current_db(self) -> Any:
        return names.current_database(self.catalog, self.database)

    def resolve_table_name(self, table_name: list[str], missing_ok: bool = False) -> tuple[str, Any]:
        """[db.][schema.]name -> ("table", TableDesc) or ("virtual", VirtualTable) (sql/names.py)."""
        return names.resolve_table_name(self.catalog, self.database, table_name, missing_ok)

    def user_by_oid(self, oid: int) -> str:
        return names.user_by_oid(self.catalog_or_latest(), oid)

    def type_by_oid(self, oid: int) -> T.SQLType:
        """A parameter type a client names by OID: built in, or a user-defined (enum) type."""
        return names.type_by_oid(self.catalog_or_latest(), oid)

    def plan_statement(self, planner: Planner, stmt: Statement) -> tuple[QueryPlan, str]:
        return plan_statement(planner, stmt)

    def statement_source(self, stmt: Statement) -> tuple[list[ScopeColumn], Callable[[ExecCtx], Any]] | None:
        return statements.statement_source(stmt)

    def resolve_reg(self, typ: T.SQLType, name: str) -> int:
        return virtual.resolve_reg(self, typ, name)

    def sequence_next(self, name: str) -> int:
        return ddl.sequence_next(self, name)

    def sequence_current(self, name: str) -> int:
        return ddl.sequence_current(self, name)

    def sequence_set(self, name: str, value: int) -> int:
        return ddl.sequence_set(self, name, value)

    @property
    def txn_time(self) -> datetime.datetime:
        """What now() returns: the time the transaction began (its timestamp's wall time)."""
        txn = self.txn
        if txn is None:
            return datetime.datetime.now(datetime.UTC)
        return datetime.datetime.fromtimestamp(hlc.wall_ns(txn.timestamp) / 1e9, datetime.UTC)

    def cluster_logical_timestamp(self) -> Decimal:
        assert self.txn is not None
        return hlc.to_decimal(self.txn.timestamp)

    # ---- transactions ---------------------------------------------------------------------

    def new_txn(self, implicit: bool = False) -> Txn:
        """The transaction of an implicit statement may speculate on the catalog version
        (kv/txn.py): if it was stale, the statement fails with 40001 before anything was sent,
        and the server retries it."""
        db = self.engine.db
        if self.as_of_revision is not None:
            return db.txn(self.as_of_revision, is_read_only_snapshot=True)
        if self.read_only_txn or self.vars["default_transaction_read_only"] == "on":
            return db.txn(writes_refused="READ ONLY", speculate=implicit)
        return db.txn(locks=self.engine.locks, speculate=implicit)

    def begin(self, implicit: bool) -> None:
        """Begin a transaction: BEGIN's (explicit), or the implicit one a statement outside a
        transaction block runs in (pgwire's COPY begins one too)."""
        self.txn = self.new_txn(implicit)
        self.implicit = implicit
        self._txn_catalog = None
        self.ddl_in_txn = False
        self.savepoints = []
        self.state = transition(self.state, TxnEvent.BEGIN_IMPLICIT if implicit else TxnEvent.BEGIN_EXPLICIT)

    def _close_cursors(self) -> None:
        for cursor in self.cursors.values():
            cursor.close()
        self.cursors.clear()

    def end_txn(self) -> None:
        self._close_cursors()
        if self.txn is not None:
            self.txn.abandon()
            self.txns_executed += 1
        self.txn = None
        self.implicit = False
        self._txn_catalog = None
        self.ddl_in_txn = False
        self.savepoints = []
        self.as_of_revision = None
        self.read_only_txn = False
        self.state = transition(self.state, TxnEvent.END)
        if self.local_vars:
            saved, self.local_vars = self.local_vars, {}
            for name, value in saved.items():
                self.set_var(name, value)

    def restart_txn(self) -> None:
        """Start the transaction over at a fresh snapshot (ROLLBACK TO an initial savepoint).

        A transaction begun AS OF SYSTEM TIME keeps its revision.
        """
        self._close_cursors()
        if self.txn is not None:
            self.txn.abandon()
        self.txn = self.new_txn()
        self._txn_catalog = None
        self.ddl_in_txn = False
        self.state = transition(self.state, TxnEvent.RESTART)

    async def commit_txn(self) -> None:
        txn = self.txn
        assert txn is not None
        try:
            if self.implicit and txn.has_writes:
                self._give_way_to_retries(txn)
            await txn.commit()
        except errors.PgError as exc:
            if exc.code == errors.SERIALIZATION_FAILURE:
                self.last_conflict_key = txn.conflict_key
            raise
        finally:
            self.txn = None
            if not txn.is_done:
                # It gave way before committing: its row locks go now, or the statement it gave
                # way to would wait for them forever.
                txn.abandon()
        if txn.has_writes:
            self.commits += 1

    def _give_way_to_retries(self, txn: Txn) -> None:
        """A statement the server retries holds the turn on the key it lost on: a first
        attempt that writes that key loses to it now and queues for the turn (RetryTurns)."""
        turn = self.retry_turn
        key = self.engine.retry_turns.held_elsewhere(txn.writes, turn.key if turn is not None else None)
        if key is not None:
            txn.conflict_key = key
            raise errors.serialization_failure(
                "TransactionRetryWithProtoRefreshError: WriteTooOldError: a retried statement "
                f"holds the turn on key {pretty_key(key)}")

    @property
    def ready_status(self) -> str:
        if self.state == ABORTED:
            return "E"
        if self.state in (OPEN, COMMIT_WAIT):
            return "T"
        return "I"

    def fail(self, exc: errors.PgError) -> None:
        """A statement failed: an implicit transaction ends, an explicit one is aborted.

        ABORTED and COMMIT_WAIT stay as they are: only ROLLBACK [TO SAVEPOINT] (and COMMIT)
        leave them, so a client that sends one more statement before it notices the error can
        still roll back to its savepoint.
        """
        stale = None
        if self.txn is not None and exc.code != errors.SERIALIZATION_FAILURE and timeslice.current() is not None:
            # A statement that failed before its first read (a name not found, say) may have
            # been planned with a stale catalog version (kv/txn.py speculation): then it is a
            # conflict to retry, not the error to report.
            try:
                self.txn.check_speculation()
            except errors.PgError as retry:
                stale = retry
        state = self.state
        self.state = transition(state, TxnEvent.STATEMENT_FAILED)
        if state == OPEN:
            if self.txn is not None and self.txn.locked:
                # CockroachDB aborts the transaction here: its rows are free for others at once.
                self.txn.release_locks()
        elif state == NO_TXN:
            self.end_txn()
        if stale is not None:
            raise stale

    # ---- parsing and planning -------------------------------------------------------------

    def parse(self, sql: str) -> list[Statement]:
        cached = self.engine.plans.lookup_parse(sql)
        if cached is not None:
            return cached
        statements = front.parse(sql)
        if len(statements) != 1 or statements[0].kind not in PLANNED_KINDS:
            self.engine.plans.store_parse(sql, statements)
        return statements

    def prepare(self, sql: str, param_types: list[T.SQLType | None]) -> Prepared:
        """Parse and plan one statement for the extended protocol (Parse)."""
        statements = front.parse(sql)
        if len(statements) > 1:
            raise errors.syntax_error("cannot insert multiple commands into a prepared statement")
        if not statements:
            return Prepared(sql, None, [], None)
        stmt = statements[0]
        n = max(stmt.num_params, len(param_types))
        if stmt.kind in PLANNED_KINDS or stmt.kind == "ExplainStmt":
            prepared = self._with_txn_for_planning(lambda: self._plan_prepared(sql, stmt, param_types, n))
            return prepared
        if stmt.kind == "DeclareCursorStmt":
            given = list(param_types) + [None] * (n - len(param_types))
            return Prepared(sql, stmt, self._with_txn_for_planning(lambda: cursors.param_types(self, stmt, given)), None)
        types = [t if t is not None else T.STRING for t in param_types] + [T.STRING] * (n - len(param_types))
        if stmt.kind == "FetchStmt":
            return Prepared(sql, stmt, types, cursors.fetch_columns(self, stmt))
        return Prepared(sql, stmt, types, _static_columns(stmt))

    def _with_txn_for_planning(self, fn: Any) -> Any:
        if self.state == ABORTED:
            raise errors.in_failed_transaction()
        if self.txn is not None:
            return fn()
        # No transaction (or COMMIT_WAIT, whose transaction is gone): plan against the latest
        # catalog in a throwaway snapshot, leaving the transaction state alone.
        self.txn = self.engine.db.txn(is_read_only_snapshot=True)
        self._txn_catalog = None
        try:
            return fn()
        finally:
            self.txn.abandon()
            self.txn = None
            self._txn_catalog = None

    def _plan_prepared(self, sql: str, stmt: Statement, param_types: list[T.SQLType | None],
                       n: int) -> Prepared:
        params = ParamTypes(list(param_types) + [None] * (n - len(param_types)))
        cached = self._plan(stmt, params, 0)
        return Prepared(sql, stmt, cached.param_types, cached.plan.columns if _returns_rows(stmt) else None,
                        cached=cached, catalog_version=self.catalog.version)

    def _plan(self, stmt: Statement, params: ParamTypes, n_explicit: int) -> CachedPlan:
        plan, tag = plan_statement(Planner(self, params, stmt.index_hints), stmt)
        types = params.final_types()
        converters = [(i, literal_converter(kind, types[i])) for i, (kind, _) in sorted(params.lifted.items())]
        return CachedPlan(plan, types, n_explicit, tag, converters)

    def _plan_for_text(self, sql: str, stmt: Statement) -> tuple[CachedPlan, list]:
        """The plan for a DML statement sent as text, from the cache when its shape was seen."""
        catalog = self.catalog
        lifted = lift_literals(sql) if not self.ddl_in_txn else None
        if lifted is not None and lifted[1] and not stmt.as_of:
            text, literals, n_explicit = lifted
            key = (catalog.version, self.database, self.user, cache_key(text, literals))
            cached = self.engine.plans.lookup(key) if not self.ddl_in_txn else None
            if cached is None:
                lifted_stmts = front.parse(text)
                if len(lifted_stmts) == 1:
                    params = ParamTypes([None] * (n_explicit + len(literals)),
                                        {n_explicit + i: lit for i, lit in enumerate(literals)})
                    try:
                        cached = self._plan(lifted_stmts[0], params, n_explicit)
                    except NotCacheable:
                        cached = False
                    except errors.PgError:
                        cached = False  # plan the original text, so that errors show it
                    if cached is not False and not self.ddl_in_txn:
                        self.engine.plans.store(key, cached)
                if cached is False or cached is None:
                    self.engine.plans.store(key, False)
            if cached:
                return cached, [lit for _, lit in literals]
        key = (catalog.version, self.database, self.user, sql)
        cached = self.engine.plans.lookup(key) if not self.ddl_in_txn else None
        if not cached:
            cached = self._plan(stmt, ParamTypes(), 0)
            if not self.ddl_in_txn and not stmt.as_of:
                self.engine.plans.store(key, cached)
        return cached, []

    # ---- execution -----------------------------------------------------------------------

    def _ctx(self, values: list) -> ExecCtx:
        assert self.txn is not None
        return ExecCtx(self, self.txn, values, self.catalog)

    def run_plan(self, cached: CachedPlan, values: list) -> StatementOutcome:
        ctx = self._ctx(values)
        plan = cached.plan
        rows = plan.node.batches(ctx)
        columns = plan.columns if cached.tag in ("SELECT", "EXPLAIN") or plan.columns else None
        return StatementOutcome(columns, rows, cached.tag, ctx)

    def check_statement_allowed(self, stmt: Statement) -> None:
        """Raise unless the transaction state accepts the statement: in ABORTED only ROLLBACK
        [TO SAVEPOINT] and COMMIT (25P02 otherwise), in COMMIT_WAIT only COMMIT and ROLLBACK."""
        if self.state == ABORTED:
            if stmt.kind == "TransactionStmt" and stmt.node["kind"] in (
                    "TRANS_STMT_ROLLBACK", "TRANS_STMT_ROLLBACK_TO", "TRANS_STMT_COMMIT"):
                return
            if txn_control.is_retry_intent(self, stmt):
                return
            raise errors.in_failed_transaction()
        if self.state == COMMIT_WAIT:
            if stmt.kind == "TransactionStmt" and stmt.node["kind"] in (
                    "TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK"):
                return
            raise txn_control.committed_error()

    def execute_statement(self, stmt: Statement, sql: str, params: list,
                          prepared: Prepared | None = None) -> StatementOutcome:
        """Run one statement inside the current transaction (begun by the caller)."""
        self.check_statement_allowed(stmt)
        kind = stmt.kind
        if kind == "TransactionStmt":
            raise errors.internal_error("transaction statements are handled by the caller")
        if kind in PLANNED_KINDS or kind == "ExplainStmt":
            if prepared is not None and prepared.cached is not None:
                if prepared.catalog_version != self.catalog.version or self.ddl_in_txn:
                    fresh = self._plan_prepared(prepared.sql, stmt, list(prepared.param_types),
                                                len(prepared.param_types))
                    prepared.cached = fresh.cached
                    prepared.catalog_version = fresh.catalog_version
                cached = prepared.cached
                assert cached is not None
                values = bind_literals(cached, self.timezone, params, prepared.literals)
            elif kind == "ExplainStmt":
                cached = self._plan(stmt, ParamTypes(), 0)
                values = []
            else:
                if stmt.num_params > len(params):
                    raise errors.PgError(errors.UNDEFINED_PARAMETER,
                                         f"no value provided for placeholder: ${len(params) + 1}")
                cached, literals = self._plan_for_text(sql, stmt)
                values = bind_literals(cached, self.timezone, params, literals)
            return self.run_plan(cached, values)
        if kind in cursors.KINDS:
            return cursors.execute(self, stmt, params, prepared.param_types if prepared is not None else None)
        return statements.execute(self, stmt, params)

    async def finish_implicit(self) -> None:
        """Commit and end the implicit transaction, if one is open."""
        if self.txn is not None and self.implicit:
            try:
                await self.commit_txn()
            finally:
                self.end_txn()

    # ---- the simple query protocol (sql/simple_query.py) and server-side retries ---------------

    def run_simple(self, sql: str, sink: ResultSink) -> Awaitable[None]:
        """A Query message: its statements, each in its own implicit transaction unless in a
        transaction block (sql/simple_query.py)."""
        return simple_query.run_simple(self, sql, sink)

    async def with_retries(self, attempt: Callable[[], Awaitable[None]], may_retry: Callable[[errors.PgError], bool],
                           before_retry: Callable[[], None] | None = None) -> None:
        """Run attempt() with the server's retries on 40001 (sql/retry.py): between attempts the
        statement waits for its turn on the key it lost on, and holds it until it is done."""
        turn: RetryTurn | None = None

        async def wait(retries: int) -> None:
            nonlocal turn
            if before_retry is not None:
                before_retry()
            turn = self.retry_turn = turn or RetryTurn(self.engine.retry_turns)
            await self._wait_for_retry(turn, retries)
        try:
            await retry_serialization_failures(attempt, may_retry=may_retry, before_retry=wait)
        finally:
            if turn is not None:
                self.retry_turn = None
                turn.give_back()

    async def _wait_for_retry(self, turn: RetryTurn, attempt: int) -> None:
        """Before a server-side retry: its turn, within the statement's timeout and cancel."""
        query = self.query
        if query is None:
            await turn.wait(self._pop_conflict_key(), attempt)
            return
        query.check()
        await query.guard(turn.wait(self._pop_conflict_key(), attempt))
        query.check()

    def _pop_conflict_key(self) -> bytes | None:
        key = self.last_conflict_key
        self.last_conflict_key = None
        return key

    # ---- the extended protocol (sql/portals.py) -------------------------------------------

    def execute_portal(self, portal: Portal, sink: ResultSink, max_rows: int) -> Awaitable[None]:
        return portals.execute_portal(self, portal, sink, max_rows)

    def sync(self) -> Awaitable[None]:
        return portals.sync(self)

    # ---- AS OF SYSTEM TIME ------------------------------------------------------------------

    def revision_as_of(self, node: dict) -> int:
        return statements.as_of_revision(self, node)

    def check_as_of_in_txn(self, node: dict) -> None:
        """Inside a transaction, AS OF SYSTEM TIME may only repeat the transaction's own."""
        if self.state == ABORTED:
            raise errors.in_failed_transaction()
        assert self.txn is not None
        revision = self.revision_as_of(node)
        if not self.txn.is_read_only_snapshot or revision != self.txn.read_revision:
            raise errors.PgError(
                errors.FEATURE_NOT_SUPPORTED,
                f"inconsistent AS OF SYSTEM TIME timestamp; expected: revision {self.txn.read_revision}, "
                f"got: revision {revision}", hint="try BEGIN AS OF SYSTEM TIME")

    def cancel(self) -> None:
        """Stop the running statement (a CancelRequest, or the connection went away)."""
        if self.query is not None:
            self.query.cancel(activity.CANCELED)
        ctx = self.running_ctx
        if ctx is not None:
            ctx.canceled = True

    def close(self) -> None:
        self._close_cursors()
        if self.txn is not None:
            self.txn.abandon()
        self.txn = None
        self.engine.close_session(self)


def _returns_rows(stmt: Statement) -> bool:
    if stmt.kind in ("SelectStmt", "ExplainStmt"):
        return True
    return bool((stmt.node.get("returningClause") or {}).get("exprs"))


def _static_columns(stmt: Statement) -> list[ScopeColumn] | None:
    return statements.result_columns(stmt)

