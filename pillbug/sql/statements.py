"""Statements that are not planned queries: SET/SHOW/RESET, USE, DDL, users and grants, cluster
settings, SHOW ..., COPY targets, and the small ones (VACUUM, DISCARD, DEALLOCATE).

execute() dispatches on the statement kind and returns a StatementOutcome; result_columns()
tells the columns a statement will return without running it (for Describe).
"""
from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pillbug.sql import access, activity, cluster, datum, ddl, enum_ddl, settings, show, unsupported, users
from pillbug.sql import types as T
from pillbug.sql import vars as session_vars
from pillbug.sql.catalog import system
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.exec.nodes import GUARDED, python_error
from pillbug.sql.parser.front import Statement
from pillbug.sql.result import StatementOutcome
from pillbug.sql.sem.build import BuildContext, ExprBuilder, ParamTypes, Scope, ScopeColumn
from pillbug.sql.txn_state import NO_TXN
from pillbug.util import errors, hlc

PLANNED_KINDS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"})  # opt/ plans them
# What the server may re-run from scratch after a 40001 as if it ran once (sql/retry.py), and
# the transaction control statements a retried batch may hold.
RETRY_SAFE_KINDS = PLANNED_KINDS | {"CreateStmt", "IndexStmt", "DropStmt", "CreatedbStmt",
                                    "DropDatabase", "TruncateStmt", "AlterTableStmt", "ViewStmt",
                                    "CreateSeqStmt", "RenameStmt", "CreateRoleStmt", "AlterRoleStmt",
                                    "DropRoleStmt", "GrantStmt", "GrantRoleStmt", "EmptyStmt",
                                    "CreateSchemaStmt", "CommentStmt"}
BATCH_TXN_KINDS = frozenset({"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT"})


def _outcome(columns: list[ScopeColumn] | None, rows: list[tuple] | None, tag: str) -> StatementOutcome:
    batches = iter([rows]) if rows else iter(())
    return StatementOutcome(columns, batches if columns is not None else None, tag)


def statement_source(stmt: Statement) -> tuple[list[ScopeColumn], Callable[[Any], list[tuple]]] | None:
    """A statement run here (SHOW ...) used as a `[ ... ]` data source: its columns and a function
    that runs it in the executing session (ctx.session) and returns its rows; None when it
    returns no rows."""
    columns = result_columns(stmt)
    if columns is None:
        return None

    def produce(ctx: Any) -> list[tuple]:
        outcome = execute(ctx.session, stmt, [])
        return [r for batch in outcome.rows or () for r in batch]
    return columns, produce


def result_columns(stmt: Statement) -> list[ScopeColumn] | None:
    kind = stmt.kind
    if kind.startswith("Show"):
        return show.columns_of(kind, stmt)
    if kind == "VariableShowStmt":
        name = stmt.node["name"]
        if name == "all":
            return [ScopeColumn("variable", T.STRING), ScopeColumn("value", T.STRING)]
        return [ScopeColumn(_show_name(name), T.STRING)]
    return None


def _show_name(name: str) -> str:
    return {"timezone": "timezone", "transaction_isolation": "transaction_isolation"}.get(name, name)


def _eval_constant(session: Any, node: dict) -> Any:
    builder = ExprBuilder(BuildContext(ParamTypes()), Scope([]), clause="SET")
    expr = builder.build(node)
    ctx = ExecCtx(session, session.txn, [], None) if session.txn is not None else ExecCtx(session, None, [], None)
    return expr.compile()((), ctx), expr.type


def _setting_value(session: Any, args: list) -> str:
    parts = []
    for a in args:
        if "A_Const" in a:
            c = a["A_Const"]
            if "sval" in c:
                parts.append(c["sval"].get("sval", ""))
            elif "ival" in c:
                parts.append(str(c["ival"].get("ival", 0)))
            elif "fval" in c:
                parts.append(c["fval"]["fval"])
            elif "boolval" in c:
                parts.append("true" if c["boolval"].get("boolval") else "false")
            else:
                parts.append("")
        elif "TypeCast" in a:
            value, _ = _eval_constant(session, a)
            parts.append(str(value))
        else:
            value, typ = _eval_constant(session, a)
            parts.append(str(value))
    return ", ".join(parts)


def execute(session: Any, stmt: Statement, params: list) -> Any:
    try:
        return _execute(session, stmt, params)
    except GUARDED as exc:  # a DEFAULT or CHECK evaluated over existing rows overflowed, ...
        raise python_error(exc) from exc


def _execute(session: Any, stmt: Statement, params: list) -> Any:
    kind = stmt.kind
    session.pending_notices = getattr(session, "pending_notices", [])
    if kind == "VariableSetStmt":
        return _outcome(None, None, _set(session, stmt.node))
    if kind == "VariableShowStmt":
        return _show_var(session, stmt)
    if kind == "UseStmt":
        session.use_database(stmt.node["database"])
        return _outcome(None, None, "SET")
    if kind.startswith("Show"):
        columns, rows = show.run(session, stmt)
        return _outcome(columns, rows, "SHOW")
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise unsupported.statement(kind, stmt.node)
    tag = handler(session, stmt)
    return _outcome(None, None, tag)


def _set(session: Any, node: dict) -> str:
    kind = node["kind"]
    name = node.get("name", "")
    if kind == "VAR_SET_MULTI":
        if name in ("TRANSACTION", "SESSION CHARACTERISTICS"):
            for opt in node.get("args") or []:
                d = opt.get("DefElem", {})
                if d.get("defname") == "transaction_isolation":
                    level = d["arg"]["A_Const"]["sval"]["sval"]
                    session_vars.validate("transaction_isolation", level)
            return "SET"
        if name == "TIME ZONE":
            name = "timezone"
        else:
            raise errors.unimplemented(f"SET {name} is not supported")
    if kind in ("VAR_RESET", "VAR_SET_DEFAULT"):
        session.reset_var(name)
        return "RESET" if kind == "VAR_RESET" else "SET"
    if kind == "VAR_RESET_ALL":
        for n in list(session.vars):
            if n not in session_vars.READ_ONLY and n not in ("database", "application_name"):
                session.vars[n] = session_vars.DEFINITIONS[n][0]
        return "RESET"
    if kind == "VAR_SET_CURRENT":
        return "SET"
    value = _setting_value(session, node.get("args") or [])
    if node.get("is_local"):
        if session.state == NO_TXN:
            session.pending_notices.append("SET LOCAL can only be used in transaction blocks")
            return "SET"
        canonical = session_vars.canonical(name)
        session.local_vars.setdefault(canonical, session.show_var(canonical))
    session.set_var(name, value)
    return "SET"


def _show_var(session: Any, stmt: Statement) -> Any:
    name = stmt.node["name"]
    if name == "all":
        rows = [(n, session.show_var(n)) for n in sorted(session.vars)]
        return _outcome(result_columns(stmt), rows, "SHOW")
    return _outcome(result_columns(stmt), [(session.show_var(name),)], "SHOW")


def _set_cluster_setting(session: Any, stmt: Statement) -> str:
    node = stmt.node
    catalog = session.catalog
    rec = catalog.users.get(session.user)
    if not catalog.is_admin(session.user) and not (rec and rec.options.get("modifyclustersetting")):
        raise errors.insufficient_privilege(
            "only users with the MODIFYCLUSTERSETTING privilege are allowed to set cluster settings")
    name = node["name"]
    txn = session.txn
    if node["value"] is None:
        settings.validate(name, settings.SETTINGS.get(name, settings.Setting(name, "s", "", "")).default) \
            if name in settings.SETTINGS else settings.validate(name, "")
        txn.delete(system.setting_key(name))
    else:
        value, _ = _eval_constant(session, node["value"])
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        txn.put(system.setting_key(name), settings.validate(name, text).encode())
    system.bump_version(txn)
    session.catalog_changed()
    return "SET CLUSTER SETTING"


def _noop(tag: str) -> Any:
    def handler(session: Any, stmt: Statement) -> str:
        return tag
    return handler


def _vacuum(session: Any, stmt: Statement) -> str:
    # CockroachDB needs no VACUUM (old versions are garbage-collected by the store); accepted so
    # that PostgreSQL tools that issue it (pgbench -i) work. The named tables must exist.
    for rel in stmt.node.get("rels") or []:
        rv = rel["VacuumRelation"]["relation"]
        names = [n for n in (rv.get("catalogname"), rv.get("schemaname"), rv["relname"]) if n]
        session.resolve_table_name(names)
    return "VACUUM"


def _discard(session: Any, stmt: Statement) -> str:
    if session.state != NO_TXN:
        raise errors.PgError(errors.ACTIVE_SQL_TRANSACTION, "DISCARD ALL cannot run inside a transaction block")
    session.sql_prepared.clear()
    for n in list(session.vars):
        if n not in session_vars.READ_ONLY and n not in ("database", "application_name"):
            session.vars[n] = session_vars.DEFINITIONS[n][0]
    session.discarded = True
    return "DISCARD ALL"


def _deallocate(session: Any, stmt: Statement) -> str:
    name = stmt.node.get("name")
    if name is None:
        session.sql_prepared.clear()
        session.deallocate_all = True
        return "DEALLOCATE ALL"
    if name not in session.sql_prepared and name not in getattr(session, "protocol_statements", {}):
        raise errors.PgError(errors.UNDEFINED_PREPARED_STATEMENT, f"prepared statement \"{name}\" does not exist")
    session.sql_prepared.pop(name, None)
    session.deallocated.append(name)
    return "DEALLOCATE"


def _comment(session: Any, stmt: Statement) -> str:
    raise unsupported.statement("CommentStmt")


_HANDLERS = {
    "CreateStmt": ddl.create_table,
    "DropStmt": lambda session, stmt: (enum_ddl.drop_types if stmt.node["removeType"] == "OBJECT_TYPE"
                                       else ddl.drop_objects)(session, stmt),
    "IndexStmt": ddl.create_index,
    "TruncateStmt": ddl.truncate,
    "AlterTableStmt": ddl.alter_table,
    "RenameStmt": lambda session, stmt: (enum_ddl.rename_type if stmt.node["renameType"] == "OBJECT_TYPE"
                                         else ddl.rename)(session, stmt),
    "CreateEnumStmt": enum_ddl.create_enum,
    "AlterEnumStmt": enum_ddl.alter_enum,
    "AlterEnumDropValue": enum_ddl.drop_value,
    "AlterOwnerStmt": enum_ddl.alter_owner,
    "ViewStmt": ddl.create_view,
    "CreateSeqStmt": ddl.create_sequence,
    "CreatedbStmt": ddl.create_database,
    "DropDatabase": ddl.drop_database,
    "CreateSchemaStmt": ddl.create_schema,
    "CreateRoleStmt": users.create_role,
    "AlterRoleStmt": users.alter_role,
    "DropRoleStmt": users.drop_role,
    "GrantStmt": users.grant,
    "GrantRoleStmt": users.grant_role,
    "SetClusterSetting": _set_cluster_setting,
    "VacuumStmt": _vacuum,
    "DiscardStmt": _discard,
    "DeallocateStmt": _deallocate,
    "CommentStmt": _comment,
    "CheckPointStmt": _noop("CHECKPOINT"),
    "CancelQueries": lambda session, stmt: activity.cancel_statement(session, stmt, cluster.forward_cancel),
    "CancelSessions": lambda session, stmt: activity.cancel_statement(session, stmt, cluster.forward_cancel),
}


def as_of_revision(session: Any, node: dict) -> int:
    """The revision an AS OF SYSTEM TIME expression names."""
    db = session.engine.db
    now_ts = db.now()
    value, typ = _eval_constant(session, node)
    if isinstance(value, str):
        text = value.strip()
        try:
            ts = hlc.from_decimal(Decimal(text))
        except Exception:
            ts = _as_of_text(text, now_ts)
    elif isinstance(value, Decimal):
        ts = hlc.from_decimal(value)
    elif isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        ts = hlc.pack(datum.micros_since_epoch(moment) * 1000)
    elif isinstance(value, int):
        ts = hlc.pack(value)
    else:
        raise errors.invalid_parameter_value(f"AS OF SYSTEM TIME: unsupported value {value!r}")
    if ts > now_ts:
        raise errors.invalid_parameter_value("AS OF SYSTEM TIME: cannot specify timestamp in the future")
    revision = db.revision_at(ts)
    if revision < db.compacted_revision():
        raise errors.invalid_parameter_value(
            "AS OF SYSTEM TIME: timestamp is older than the garbage collection threshold")
    return revision


def _as_of_text(text: str, now_ts: int) -> int:
    """A timestamp, or an interval back from now ('-10s'), as an HLC time."""
    try:
        moment = datum.parse_timestamptz(text)
        return hlc.pack(datum.micros_since_epoch(moment) * 1000)
    except errors.PgError:
        pass
    try:
        iv = datum.parse_interval(text)
    except errors.PgError:
        raise errors.invalid_parameter_value(
            f"AS OF SYSTEM TIME: value is neither timestamp, decimal, nor interval: {text!r}") from None
    if iv._span() >= 0:
        raise errors.invalid_parameter_value(
            f"AS OF SYSTEM TIME: interval value '{text}' too large, AS OF interval must be <= -1µs")
    return now_ts + (iv._span() * 1000 << hlc.LOGICAL_BITS)


def check_connect(session: Any, database: str) -> None:
    """A user may connect to a database they have CONNECT on (or any, as admin)."""
    catalog = session.catalog_or_latest()
    db = catalog.database(database)
    if db is None:
        raise errors.undefined_database(database)
    if not access.has_privilege(catalog, session.user, db, "CONNECT"):
        raise errors.insufficient_privilege(
            f"user {session.user} does not have CONNECT privilege on database {database}")
