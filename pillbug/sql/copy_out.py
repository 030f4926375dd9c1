"""COPY ... TO STDOUT: which rows, in which columns, with which format options.

A CopyOut turns `COPY table [(cols)] TO STDOUT` (as `SELECT cols FROM table`) or
`COPY (query) TO STDOUT` into a plan and hands out its rows batch by batch, straight from the
plan's operators, so that nothing holds the whole result. It knows nothing of the wire format:
pgwire/copy_out.py encodes the rows (text, CSV or binary) and writes them out under flow control.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pillbug.sql import unsupported
from pillbug.sql.exec.context import ExecCtx
from pillbug.sql.opt.plan import plan_statement
from pillbug.sql.opt.planner import Planner
from pillbug.sql.parser import front
from pillbug.sql.parser.front import Statement
from pillbug.sql.sem.build import ParamTypes, ScopeColumn
from pillbug.util import errors

FORMATS = ("text", "csv", "binary")


@dataclass(slots=True)
class CopyOptions:
    """The WITH (...) options of a COPY, as PostgreSQL defines them per format."""
    format: str = "text"
    delimiter: str = "\t"
    null: str = "\\N"
    header: bool = False
    quote: str = '"'
    escape: str = '"'
    force_quote: list[str] | bool = field(default_factory=list)  # True: every column (FORCE_QUOTE *)


def _option_value(arg: dict | None) -> Any:
    if arg is None:
        return None
    if "String" in arg:
        return arg["String"].get("sval", "")
    if "Boolean" in arg:
        return arg["Boolean"].get("boolval", False)
    if "Integer" in arg:
        return arg["Integer"].get("ival", 0)
    if "A_Star" in arg:
        return True
    if "List" in arg:
        return [item["String"]["sval"] for item in arg["List"].get("items", [])]
    raise errors.syntax_error("unsupported COPY option value")


def _is_true(value: Any) -> bool:
    if value is None or value is True:
        return True
    if value is False:
        return False
    text = str(value).lower()
    if text in ("true", "on", "1"):
        return True
    if text in ("false", "off", "0"):
        return False
    raise errors.syntax_error(f"{value} requires a Boolean value")


def parse_out_options(options: list[dict]) -> CopyOptions:
    """COPY TO's options; the ones that make no sense for the format are errors, as in PostgreSQL."""
    opts = CopyOptions()
    given: dict[str, Any] = {}
    for opt in options:
        d = opt["DefElem"]
        name = d["defname"]
        if name in given:
            raise errors.syntax_error("conflicting or redundant options")
        given[name] = _option_value(d.get("arg"))
    fmt = given.pop("format", "text")
    if fmt not in FORMATS:
        raise errors.syntax_error(f'COPY format "{fmt}" not recognized')
    opts.format = fmt
    if fmt == "csv":
        opts.delimiter, opts.null = ",", ""
    for name, value in given.items():
        if name == "header":
            opts.header = _is_true(value)
        elif name in ("delimiter", "null", "quote", "escape"):
            if not isinstance(value, str):
                raise errors.syntax_error(f"{name} requires a string value")
            setattr(opts, name, value)
        elif name == "force_quote":
            opts.force_quote = value if isinstance(value, list) else True
        elif name == "freeze":
            continue
        else:
            raise errors.unimplemented(f"COPY option {name} is not supported")
    if fmt == "binary" and any(n in given for n in ("delimiter", "null", "header", "quote", "escape")):
        raise errors.syntax_error("cannot specify DELIMITER, NULL, HEADER, QUOTE or ESCAPE in BINARY mode")
    if fmt != "csv":
        for name in ("quote", "escape", "force_quote"):
            if name in given:
                raise errors.feature_not_supported(f"COPY {name} available only in CSV mode")
    if "escape" not in given:
        opts.escape = opts.quote
    if len(opts.delimiter.encode()) != 1:
        raise errors.feature_not_supported("COPY delimiter must be a single one-byte character")
    if fmt == "csv" and (len(opts.quote.encode()) != 1 or len(opts.escape.encode()) != 1):
        raise errors.feature_not_supported("COPY quote and escape must be single one-byte characters")
    # PostgreSQL's checks (ProcessCopyOptions): what would make the output unreadable.
    if opts.delimiter in ("\r", "\n"):
        raise errors.invalid_parameter_value("COPY delimiter cannot be newline or carriage return")
    if fmt == "text" and opts.delimiter in "\\.abcdefghijklmnopqrstuvwxyz0123456789":
        raise errors.invalid_parameter_value(f'COPY delimiter cannot be "{opts.delimiter}"')
    if "\r" in opts.null or "\n" in opts.null:
        raise errors.invalid_parameter_value("COPY null representation cannot use newline or carriage return")
    if opts.delimiter in opts.null:
        raise errors.invalid_parameter_value("COPY delimiter must not appear in the NULL specification")
    if fmt == "csv" and opts.delimiter == opts.quote:
        raise errors.invalid_parameter_value("COPY delimiter and quote must be different")
    if fmt == "csv" and opts.quote in opts.null:
        raise errors.invalid_parameter_value("CSV quote character must not appear in the NULL specification")
    return opts


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class CopyOut:
    """One COPY TO: its options, result columns and the batches of its rows (a generator that
    runs the plan lazily, in the session's current transaction)."""

    def __init__(self, session: Any, stmt: Statement) -> None:
        node = stmt.node
        assert not node.get("is_from")
        if node.get("filename") is not None or node.get("is_program"):
            raise errors.unimplemented("COPY to a file or program is not supported; use TO STDOUT")
        self.options = parse_out_options(node.get("options") or [])
        query = node.get("query")
        if query is not None:
            (kind, body), = query.items()
            if kind != "SelectStmt":
                raise errors.unimplemented(f"COPY ({unsupported.statement_name(kind)[0]}) TO is not supported; use a SELECT")
            select = Statement("SelectStmt", body, stmt.text, index_hints=stmt.index_hints,
                               sources=stmt.sources, parse_text=stmt.parse_text)
        else:
            select = self._table_query(session, node)
        plan, _tag = plan_statement(Planner(session, ParamTypes(), select.index_hints), select)
        self.columns: list[ScopeColumn] = plan.columns
        names = [c.name for c in self.columns]
        force = self.options.force_quote
        if isinstance(force, list):
            for name in force:
                if name not in names:
                    raise errors.PgError(errors.UNDEFINED_COLUMN, f'column "{name}" does not exist')
        self.ctx = ExecCtx(session, session.txn, [], session.catalog)
        self._plan = plan

    @staticmethod
    def _table_query(session: Any, node: dict) -> Statement:
        rel = node["relation"]
        names = [n for n in (rel.get("catalogname"), rel.get("schemaname"), rel["relname"]) if n]
        kind, table = session.resolve_table_name(names)
        if table.is_sequence:
            raise errors.PgError(errors.WRONG_OBJECT_TYPE, f'cannot copy from sequence "{rel["relname"]}"')
        if node.get("attlist"):
            columns = [table.column(a["String"]["sval"]).name for a in node["attlist"]]
        else:
            columns = [c.name for c in table.columns if not c.hidden]
        # The table by the names the user wrote, so that resolution (and the SELECT privilege
        # check) is the planner's, as for any query.
        text = f"SELECT {', '.join(map(_quote_ident, columns))} FROM {'.'.join(map(_quote_ident, names))}"
        return front.parse(text)[0]

    def batches(self) -> Iterator[list[tuple]]:
        return self._plan.node.batches(self.ctx)
