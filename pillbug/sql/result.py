"""What a statement produces, and where it goes: the result types every layer of sql/ shares.

`ResultColumn` is what a client is told about one output column, `StatementOutcome` is what
executing one statement produced before it is written out, and `ResultSink` is where a session
writes results (pgwire implements it). A leaf module: it must not know how statements are
planned, run or dispatched, nor the wire format.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from pillbug.sql.types import SQLType


class ResultColumn(Protocol):
    """One output column as a client sees it (sem.build.ScopeColumn is one)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> SQLType: ...

    @property
    def table_id(self) -> int: ...  # for RowDescription: the source table's OID and column number

    @property
    def column_id(self) -> int: ...


class ResultSink(Protocol):
    """Where a session writes results (pgwire implements it)."""

    def row_description(self, columns: Sequence[ResultColumn]) -> None: ...

    def data_rows(self, batch: list[tuple], columns: Sequence[ResultColumn]) -> None: ...

    def command_complete(self, tag: str) -> None: ...

    def portal_suspended(self) -> None: ...

    def notice(self, message: str) -> None: ...

    def mark(self) -> int: ...

    def rewind(self, mark: int) -> bool: ...

    async def drain(self) -> None: ...


class StatementOutcome:
    """What executing one statement produced, before it is written to the sink."""
    __slots__ = ("columns", "rows", "tag", "ctx")

    def __init__(self, columns: Sequence[ResultColumn] | None, rows: Iterator[list[tuple]] | None,
                 tag: str, ctx: Any = None) -> None:
        self.columns = columns
        self.rows = rows
        self.tag = tag
        self.ctx = ctx  # the statement's ExecCtx, None for statements run without a plan


class EmptyQuery(Exception):
    """The query string held no statement (EmptyQueryResponse)."""
