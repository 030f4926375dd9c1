"""The planned statements: which planner function builds the plan of each statement kind.

plan_statement() is the one entry point the session uses for SELECT, INSERT/UPSERT, UPDATE,
DELETE and EXPLAIN; it returns the plan and the command tag. The planner comes here too, for a
`[ ... ]` data source or a WITH clause's DML, through its environment (PlanEnv.plan_statement):
this module sits above the planner and the planner does not import it.
"""
from __future__ import annotations

from pillbug.sql import types as T
from pillbug.sql import unsupported
from pillbug.sql.exec import nodes as N
from pillbug.sql.exec.nodes import GUARDED, python_error
from pillbug.sql.opt import explain, mutations
from pillbug.sql.opt.planner import Planner, QueryPlan, referenced_columns, with_mutations_first
from pillbug.sql.parser.front import Statement
from pillbug.sql.sem.build import ScopeColumn
from pillbug.util import errors

_MUTATIONS = {"InsertStmt": (mutations.plan_insert, "INSERT"), "UpdateStmt": (mutations.plan_update, "UPDATE"),
              "DeleteStmt": (mutations.plan_delete, "DELETE")}


def plan_statement(planner: Planner, stmt: Statement) -> tuple[QueryPlan, str]:
    """The plan of a statement (its root guarded: see exec.nodes.Guard) and its command tag."""
    try:
        plan, tag = _plan(planner, stmt)
    except GUARDED as exc:  # constant folding overflowed, and the like
        raise python_error(exc) from exc
    # what is still untyped when it reaches the client (SELECT NULL) is a string, as in CockroachDB
    columns = [c if c.type.family != "unknown" else ScopeColumn(c.name, T.STRING, c.table, c.hidden)
               for c in plan.columns]
    return QueryPlan(N.Guard(plan.node), columns), tag


def _plan(planner: Planner, stmt: Statement) -> tuple[QueryPlan, str]:
    kind = stmt.kind
    if kind == "SelectStmt":
        planner.referenced = referenced_columns(stmt.node)
        return planner.plan_query({"SelectStmt": stmt.node}), "SELECT"
    if kind in _MUTATIONS:
        plan_fn, tag = _MUTATIONS[kind]
        with planner.with_clause(stmt.node.get("withClause"), None) as first:
            plan = plan_fn(planner, stmt)
        return with_mutations_first(plan, first), tag
    if kind == "ExplainStmt":
        return explain.plan_explain(planner, stmt, _plan), "EXPLAIN"
    raise errors.unimplemented(f"EXPLAIN of {unsupported.statement_name(kind)[0]} is not supported")
