"""The planned statements: which planner function builds the plan of each statement kind.

plan_statement() is the one entry point the session uses for SELECT, INSERT/UPSERT, UPDATE,
DELETE and EXPLAIN; it returns the plan and the command tag. The planner also comes here for a
`[ ... ]` data source that holds one of these statements.
"""
from __future__ import annotations

from pillbug.sql.opt import explain, mutations
from pillbug.sql.opt.planner import Planner, QueryPlan
from pillbug.sql.parser.front import Statement
from pillbug.util import errors

PLANNED_KINDS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "ExplainStmt"})


_MUTATIONS = {"InsertStmt": (mutations.plan_insert, "INSERT"), "UpdateStmt": (mutations.plan_update, "UPDATE"),
              "DeleteStmt": (mutations.plan_delete, "DELETE")}


def plan_statement(planner: Planner, stmt: Statement) -> tuple[QueryPlan, str]:
    kind = stmt.kind
    if kind == "SelectStmt":
        return planner.plan_query({"SelectStmt": stmt.node}), "SELECT"
    if kind in _MUTATIONS:
        plan_fn, tag = _MUTATIONS[kind]
        with planner.with_clause(stmt.node.get("withClause"), None):
            return plan_fn(planner, stmt), tag
    if kind == "ExplainStmt":
        return explain.plan_explain(planner, stmt, plan_statement), "EXPLAIN"
    raise errors.internal_error(f"cannot plan {kind}")
