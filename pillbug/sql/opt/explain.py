"""EXPLAIN and EXPLAIN ANALYZE: a plan shown as CockroachDB draws it, and measured as it runs.

EXPLAIN prints the operator tree, one row per line of the `info` column:

    distribution: local
    vectorized: false
    ·
    • filter
    │ filter: b > 1
    │
    └── • scan
          table: t@t_pkey
          spans: [/1 - /10]

Each operator gives its name and attributes (exec nodes' explain_name/explain_attrs, with the
SQL-level facts the planner attached); operators EXPLAIN does not show (renders) are skipped.

EXPLAIN ANALYZE runs the statement (writes included, as CockroachDB does) with each operator's
batches counted and the transaction wrapped in a counter of what the kv layer returned, and
prints the totals ("rows decoded from KV: 1 (8 B, 1 gRPC calls)") and per-operator counts
("KV rows decoded: 1", "KV gRPC calls: 1"). KV calls are the store calls the transaction makes
(get, get_many and scan count one each; a scan reads in batches, each one call): in a cluster
each is a network round trip, so they are what a batched read saves. The counting wrappers exist
only in EXPLAIN ANALYZE plans; ordinary plans run unwrapped.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from pillbug.sql import types as T
from pillbug.sql.exec import nodes as N
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt.planner import Planner, QueryPlan
from pillbug.sql.parser.front import Statement
from pillbug.sql.sem.build import ScopeColumn
from pillbug.util import errors

INFO_COLUMNS = [ScopeColumn("info", T.STRING)]


def plan_explain(planner: Planner, stmt: Statement,
                 plan_statement: Callable[[Planner, Statement], tuple[QueryPlan, str]]) -> QueryPlan:
    options = {o["DefElem"]["defname"].lower() for o in stmt.node.get("options") or []}
    unknown = options - {"analyze", "verbose", "costs", "format"}
    if unknown:
        raise errors.unimplemented(f"EXPLAIN option {sorted(unknown)[0].upper()} is not supported")
    (kind, node), = stmt.node["query"].items()
    inner = Statement(kind, node, stmt.text, stmt.upsert, stmt.index_hints, stmt.as_of)
    started = time.perf_counter()
    inner_plan, _ = plan_statement(planner, inner)
    planning = time.perf_counter() - started
    root = inner_plan.node
    if "analyze" not in options:
        lines = ["distribution: local", "vectorized: false", ""] + render(root)
        return QueryPlan(N.Generate(INFO_COLUMNS, lambda ctx: [(line,) for line in lines], "explain"),
                         INFO_COLUMNS)
    stats = instrument(root)

    def analyze(ctx: ExecCtx) -> list[tuple]:
        for s in stats.values():
            s.reset()
        total = _OpStats()
        counting = CountingTxn(ctx.txn, total)
        calls_before = counting.txn.store_calls
        ctx.txn = counting
        started = time.perf_counter()
        try:
            for _ in root.batches(ctx):
                pass
        finally:
            ctx.txn = counting.txn
        # Every store call of the statement, also those the operators' counts could not place.
        total.kv_calls = counting.txn.store_calls - calls_before
        execution = time.perf_counter() - started
        header = [f"planning time: {_duration(planning)}", f"execution time: {_duration(execution)}",
                  "distribution: local", "vectorized: false",
                  f"rows decoded from KV: {total.kv_rows} ({_bytes(total.kv_bytes)}, "
                  f"{total.kv_calls} gRPC calls)", ""]
        return [(line,) for line in header + render(root, stats)]
    return QueryPlan(N.Generate(INFO_COLUMNS, analyze, "explain analyze"), INFO_COLUMNS)


# ---- drawing the tree -----------------------------------------------------------------------

def render(root: N.Node, stats: dict[int, _OpStats] | None = None) -> list[str]:
    lines: list[str] = []
    for tree in _shown(root):
        _draw(tree, "", "", lines, stats)
    return lines


class _Shown:
    """One operator as EXPLAIN draws it (an index join draws as two)."""
    __slots__ = ("name", "attrs", "children", "node")

    def __init__(self, name: str, attrs: list[str], children: list[_Shown], node: N.Node | None) -> None:
        self.name = name
        self.attrs = attrs
        self.children = children
        self.node = node


def _shown(node: N.Node) -> list[_Shown]:
    kids = [s for c in node.children() for s in _shown(c)]
    name = node.explain_name()
    if name is None:
        return kids
    if isinstance(node, N.IndexScan) and not node.covering:
        scan = _Shown("scan", node.explain_index_attrs(), [], None)
        return [_Shown(name, node.explain_attrs(), [scan], node)]
    return [_Shown(name, node.explain_attrs(), kids, node)]


def _draw(op: _Shown, first: str, rest: str, lines: list[str], stats: dict | None) -> None:
    lines.append(f"{first}• {op.name}")
    bar = "│ " if op.children else "  "
    attrs = list(op.attrs)
    if stats is not None and op.node is not None:
        s = stats.get(id(op.node))
        if s is not None:
            extra = [f"actual row count: {s.rows}"]
            if s.kv_calls or s.kv_rows:
                extra.append(f"KV rows decoded: {s.kv_rows}")
                extra.append(f"KV bytes read: {_bytes(s.kv_bytes)}")
                extra.append(f"KV gRPC calls: {s.kv_calls}")
            attrs = extra + attrs
    for a in attrs:
        lines.append(f"{rest}{bar}{a}".rstrip())
    for i, child in enumerate(op.children):
        last = i == len(op.children) - 1
        lines.append(f"{rest}│")
        _draw(child, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "), lines, stats)


# ---- measuring a run ------------------------------------------------------------------------

class _OpStats:
    __slots__ = ("rows", "kv_rows", "kv_bytes", "kv_calls")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.kv_rows = 0
        self.kv_bytes = 0
        self.kv_calls = 0


_running: list[_OpStats] = []  # the operators whose code is running, innermost last


def instrument(root: N.Node) -> dict[int, _OpStats]:
    """Wrap every operator's batches() to count its rows and the kv reads made while it runs."""
    stats: dict[int, _OpStats] = {}

    def visit(node: N.Node) -> None:
        if id(node) in stats:
            return
        s = stats[id(node)] = _OpStats()
        inner = node.batches

        def counted(ctx: ExecCtx, inner: Callable = inner, s: _OpStats = s) -> Iterator[N.Batch]:
            gen = inner(ctx)
            while True:
                _running.append(s)
                try:
                    batch = next(gen)
                except StopIteration:
                    return
                finally:
                    _running.pop()
                s.rows += len(batch)
                yield batch
        node.batches = counted  # type: ignore[method-assign]
        for c in node.children():
            visit(c)
    visit(root)
    return stats


def _count(total: _OpStats, n_rows: int, n_bytes: int, calls: int) -> None:
    for s in (total, _running[-1]) if _running else (total,):
        s.kv_rows += n_rows
        s.kv_bytes += n_bytes
        s.kv_calls += calls


class CountingTxn:
    """A transaction that counts the keys and bytes its reads return, and the store calls they
    took (the Txn's store_calls), for the operator running (EXPLAIN ANALYZE only)."""

    def __init__(self, txn: Any, total: _OpStats) -> None:
        self.txn = txn
        self.total = total

    def get(self, key: bytes) -> bytes | None:
        calls = self.txn.store_calls
        return self._counted([key], [self.txn.get(key)], calls)[0]

    def get_for_update(self, key: bytes, wait: Any) -> bytes | None:
        calls = self.txn.store_calls
        return self._counted([key], [self.txn.get_for_update(key, wait)], calls)[0]

    def get_many(self, keys: Any) -> list[bytes | None]:
        calls = self.txn.store_calls
        return self._counted(keys, self.txn.get_many(keys), calls)

    def get_many_for_update(self, keys: Any, wait: Any) -> list[bytes | None]:
        calls = self.txn.store_calls
        return self._counted(keys, self.txn.get_many_for_update(keys, wait), calls)

    def prefetch(self, keys: Any) -> None:
        calls = self.txn.store_calls
        self.txn.prefetch(keys)
        _count(self.total, 0, 0, self.txn.store_calls - calls)

    def _counted(self, keys: Any, values: list[bytes | None], calls_before: int) -> list[bytes | None]:
        found = [len(k) + len(v) for k, v in zip(keys, values) if v is not None]
        _count(self.total, len(found), sum(found), self.txn.store_calls - calls_before)
        return values

    def scan(self, start: bytes, end: bytes, limit: int = 0, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        txn = self.txn
        rows = txn.scan(start, end, limit=limit, reverse=reverse)
        while True:
            calls = txn.store_calls
            row = next(rows, None)
            if row is None:
                _count(self.total, 0, 0, txn.store_calls - calls)
                return
            key, value = row
            _count(self.total, 1, len(key) + len(value), txn.store_calls - calls)
            yield key, value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    return f"{seconds * 1e3:.1f}ms"


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB"
