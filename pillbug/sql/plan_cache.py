"""The plan cache: plans of statement texts, kept per node and shared by its sessions.

A statement sent as text with literals in it is planned once per shape: parser/lift.py lifts
the literals out as parameters, the plan is cached under (catalog version, database, user,
lifted text), and each run binds the literals it was sent (bind_literals, through the
converters the plan chose: literal_converter). A False entry records that a shape cannot be
cached. Parses of texts that are not one planned statement are cached too. This module knows
plans only as values to keep; it must not know how statements are planned or run, sessions,
transactions or the wire protocol.
"""
from __future__ import annotations

import datetime
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pillbug.sql import datum
from pillbug.sql import types as T
from pillbug.sql.opt.planner import QueryPlan

PLAN_CACHE_SIZE = 4096
MAX_CACHED_PARSE_TEXT = 4096


@dataclass(slots=True)
class CachedPlan:
    """A plan and what a run of it needs: its parameter types (the client's $n first, then the
    lifted literals'), its command tag, and how each lifted literal's text becomes a value."""
    plan: QueryPlan
    param_types: list[T.SQLType]
    n_explicit: int
    tag: str
    literal_converters: list[tuple[int, Any]] = field(default_factory=list)


class PlanCache:
    """Least recently used plans (by key) and parses (by text), with hit and miss counts."""

    def __init__(self) -> None:
        self._plans: OrderedDict[tuple, Any] = OrderedDict()
        self._parses: OrderedDict[str, list] = OrderedDict()
        self.hits = 0  # lookups that found a plan
        self.misses = 0  # lookups that found nothing: the statement gets planned

    def lookup(self, key: tuple, count_miss: bool = True) -> Any:
        """The plan cached under key (False: known not to be cacheable; None: not seen).

        count_miss=False is for a look that falls back to a fuller one, which counts it.
        """
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            if plan:
                self.hits += 1
        elif count_miss:
            self.misses += 1
        return plan

    def store(self, key: tuple, plan: Any) -> None:
        self._plans[key] = plan
        if len(self._plans) > PLAN_CACHE_SIZE:
            self._plans.popitem(last=False)

    def lookup_parse(self, sql: str) -> list | None:
        return self._parses.get(sql)

    def store_parse(self, sql: str, statements: list) -> None:
        if len(sql) > MAX_CACHED_PARSE_TEXT:
            return
        self._parses[sql] = statements
        if len(self._parses) > PLAN_CACHE_SIZE:
            self._parses.popitem(last=False)


def literal_converter(kind: str, typ: T.SQLType) -> Any:
    fam = typ.family
    if kind == "i":
        if fam == "float":
            return lambda text, tz: float(int(text))
        if fam == "decimal":
            return lambda text, tz: datum.round_decimal(Decimal(text), typ)
        return lambda text, tz: datum.check_int_range(int(text), typ) if fam == "int" else int(text)
    if kind == "n":
        if fam == "float":
            return lambda text, tz: float(text)
        return lambda text, tz: datum.round_decimal(Decimal(text), typ)
    if fam in ("string", "unknown"):
        if typ.width:
            return lambda text, tz: datum.check_string_width(text, typ)
        return lambda text, tz: text
    return lambda text, tz: datum.parse_text(text, typ, tz)


def bind_literals(cached: CachedPlan, tz: datetime.tzinfo, explicit: list, literals: list) -> list:
    """The parameter values of a run of `cached`: the client's, then the lifted literals
    converted to the types the plan chose for them."""
    if not cached.literal_converters:
        return explicit
    values = list(explicit) + [None] * len(cached.literal_converters)
    for (i, conv), text in zip(cached.literal_converters, literals):
        values[i] = conv(text, tz)
    return values
