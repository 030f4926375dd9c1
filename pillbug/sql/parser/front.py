"""SQL text -> statements: pglast (the PostgreSQL grammar) plus CockroachDB's additions.

pglast parses what PostgreSQL parses. CockroachDB adds syntax PostgreSQL rejects; this front end
finds it in pglast's token stream (never with regular expressions over raw SQL) and either
 - rewrites the statement text in place, without moving any other character, so that pglast
   can parse it and error positions stay right, recording what it removed:
     UPSERT INTO ...             -> INSERT INTO ...           (Statement.upsert)
     FROM t@idx                  -> FROM t                    (Statement.index_hints)
     ... AS OF SYSTEM TIME expr  -> removed                   (Statement.as_of)
     CREATE TABLE (..., INDEX i (a), UNIQUE INDEX (b), FAMILY f (a))
                                 -> removed                   (Statement.inline_indexes)
     CREATE INDEX ... STORING (c)-> INCLUDE (c)
     PRIMARY KEY (a DESC, b)     -> PRIMARY KEY (a     , b)  (Statement.key_directions)
     ... RETURNING NOTHING       -> removed
     UPDATE/DELETE ... ORDER BY ... LIMIT n
                                 -> removed, the clauses added to the statement's node
     CREATE USER IF NOT EXISTS u -> CREATE USER u             (Statement.if_not_exists)
     ALTER USER IF EXISTS u ...  -> ALTER USER u ...          (Statement.if_exists)
     BEGIN PRIORITY HIGH         -> BEGIN
     FROM [SHOW TABLES] AS s     -> FROM _ AS s, the RangeVar replaced by a StatementSource
                                    node holding the inner statement (kind, node, text, ...)
 - or parses a CockroachDB-only statement itself (SHOW TABLES/COLUMNS/INDEXES/CREATE/GRANTS/
   USERS/ROLES/DATABASES/CLUSTER SETTING, SET/RESET CLUSTER SETTING, USE, DROP DATABASE ...
   CASCADE), producing a node shaped like pglast's (a dict of fields) under its own kind name.

The result is a list of Statement: the node kind (e.g. "SelectStmt", "ShowTables"), the node
(pglast's JSON fields, as dicts), and the statement's own text. This module knows nothing of
catalogs or plans.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg

from pillbug.util import errors

MAX_STATEMENT_BYTES = 16 << 20  # larger statements are refused with 54000


@dataclass(slots=True)
class Statement:
    kind: str
    node: dict[str, Any]
    text: str
    upsert: bool = False
    index_hints: dict[int, str] = field(default_factory=dict)  # RangeVar location -> index name
    as_of: dict | None = None  # AS OF SYSTEM TIME expression (a pglast expression node)
    inline_indexes: list[dict] = field(default_factory=list)  # IndexStmt nodes for CREATE TABLE
    if_not_exists: bool = False
    if_exists: bool = False  # ALTER USER|ROLE IF EXISTS (CockroachDB's; PostgreSQL has no such clause)
    num_params: int = 0  # the highest $n the statement uses
    parse_text: str = ""  # the text pglast parsed (after the rewrites above)
    sources: dict[int, Statement] = field(default_factory=dict)  # [ ... ] sources by location
    # PRIMARY KEY / UNIQUE (a DESC, ...): directions by the location of the constraint (its
    # CONSTRAINT or PRIMARY/UNIQUE keyword), as pglast reports it
    key_directions: dict[int, list[str]] = field(default_factory=dict)
    mutation_clauses: dict[str, Any] = field(default_factory=dict)  # UPDATE/DELETE ORDER BY, LIMIT
    # CockroachDB's role options (VIEWACTIVITY, NOCANCELQUERY, ...) by location: (name, value)
    role_options: dict[int, tuple[str, bool]] = field(default_factory=dict)

    @property
    def is_query(self) -> bool:
        return self.kind in ("SelectStmt", "ExplainStmt") or self.kind.startswith("Show") \
            or self.kind == "VariableShowStmt"


class _Tokens:
    """The token list of one statement with its text, for the CockroachDB front end."""

    def __init__(self, text: str, tokens: list) -> None:
        self.text = text
        self.toks = tokens
        self.i = 0

    def word(self, k: int) -> str:
        """The upper-case text of token k (keywords and identifiers alike)."""
        if k >= len(self.toks):
            return ""
        t = self.toks[k]
        return self.text[t.start:t.end + 1].upper()

    def raw(self, k: int) -> str:
        t = self.toks[k]
        return self.text[t.start:t.end + 1]

    def name(self, k: int) -> str:
        return self.toks[k].name if k < len(self.toks) else ""


def parse(sql: str) -> list[Statement]:
    """Parse a string of one or more statements."""
    if len(sql) > MAX_STATEMENT_BYTES:
        raise errors.program_limit_exceeded(
            f"statement of {len(sql)} bytes is larger than the maximum of {MAX_STATEMENT_BYTES} bytes")
    try:
        tokens = pg.scan(sql)
    except pg.ParseError as exc:
        raise _syntax_error(exc, sql, 0) from None
    statements: list[Statement] = []
    start_tok = 0
    for k, tok in enumerate(tokens + [None]):
        if tok is None or tok.name == "ASCII_59":
            stmt_toks = [t for t in tokens[start_tok:k] if t.name not in ("SQL_COMMENT", "C_COMMENT")]
            if stmt_toks:
                begin = stmt_toks[0].start
                end = stmt_toks[-1].end + 1
                statements.append(_parse_one(sql[begin:end], begin, sql, _shift(stmt_toks, begin)))
            start_tok = k + 1
    return statements


def split_statements(sql: str) -> list[str]:
    """The statements of a string, as texts (for clients that send them one at a time)."""
    try:
        tokens = pg.scan(sql)
    except pg.ParseError as exc:
        raise _syntax_error(exc, sql, 0) from None
    out = []
    begin = None
    end = 0
    for tok in tokens + [None]:
        if tok is None or tok.name == "ASCII_59":
            if begin is not None:
                out.append(sql[begin:end])
            begin = None
            continue
        if tok.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if begin is None:
            begin = tok.start
        end = tok.end + 1
    return out


def _shift(tokens: list, offset: int) -> list:
    if not offset:
        return tokens
    return [t._replace(start=t.start - offset, end=t.end - offset) for t in tokens]


def _parse_one(text: str, offset: int, full: str, tokens: list) -> Statement:
    toks = _Tokens(text, tokens)
    first = toks.word(0)
    second = toks.word(1)
    if first == "SHOW" and second not in ("TRANSACTION",) or first == "USE":
        own = _OwnParser(toks).statement()
        if own is not None:
            return own
    if first in ("SET", "RESET") and second == "CLUSTER":
        return _OwnParser(toks).statement()
    if first == "DROP" and second == "DATABASE":
        return _OwnParser(toks).statement()
    if first == "CANCEL":
        return _OwnParser(toks).cancel()
    if (first == "CREATE" and second == "TYPE" and toks.word(2) == "IF") or \
            (first == "ALTER" and second == "TYPE" and "DROP" in (toks.word(k) for k in range(2, 8))):
        own = _OwnParser(toks).type_statement()  # CockroachDB's additions to PostgreSQL's grammar
        if own is not None:
            return own
    edits: list[tuple[int, int, str]] = []  # (start, end exclusive, replacement of equal length)
    stmt = Statement("", {}, text)
    _find_additions(toks, stmt, edits)
    rewritten = text
    for s, e, rep in edits:
        assert len(rep) == e - s
        rewritten = rewritten[:s] + rep + rewritten[e:]
    try:
        tree = json.loads(pg.parse_sql_json(rewritten))
    except pg.ParseError as exc:
        raise _syntax_error(exc, full, offset) from None
    raw = tree.get("stmts", [])
    if not raw:
        return Statement("EmptyStmt", {}, text)
    node = raw[0]["stmt"]
    if stmt.sources:
        _place_sources(node, stmt.sources)
    if stmt.mutation_clauses:
        _place_mutation_clauses(node, stmt.mutation_clauses)
    if stmt.role_options:
        _place_role_options(node, stmt.role_options)
    (kind, fields), = node.items()
    stmt.kind = kind
    stmt.node = fields
    stmt.parse_text = rewritten
    stmt.num_params = max((int(toks.raw(k)[1:]) for k, t in enumerate(toks.toks) if t.name == "PARAM"),
                          default=0)
    return stmt


def _blank(text: str, start: int, end: int) -> tuple[int, int, str]:
    return start, end, " " * (end - start)


def _find_additions(toks: _Tokens, stmt: Statement, edits: list) -> None:
    t = toks.toks
    text = toks.text
    n = len(t)
    first = toks.word(0)
    # UPSERT, also under EXPLAIN [ANALYZE] [(options)]
    upsert_at = 0 if first == "UPSERT" else next(
        (k for k in range(min(n, 16)) if toks.word(k) == "UPSERT" and first == "EXPLAIN"), None)
    if upsert_at is not None:
        stmt.upsert = True
        edits.append((t[upsert_at].start, t[upsert_at].end + 1, "INSERT"))
    if first == "BEGIN" or (first == "START" and toks.word(1) == "TRANSACTION") or \
            (first == "SET" and toks.word(1) == "TRANSACTION"):
        for k in range(n):
            if toks.word(k) == "PRIORITY" and k + 1 < n:
                end = t[k + 1].end + 1
                # also drop a comma before the clause: BEGIN ISOLATION LEVEL ..., PRIORITY HIGH
                start = t[k].start
                if k > 0 and t[k - 1].name == "ASCII_44":
                    start = t[k - 1].start
                edits.append(_blank(text, start, end))
    if first == "CREATE" and toks.word(1) in ("USER", "ROLE", "DATABASE") and toks.word(2) == "IF":
        stmt.if_not_exists = True
        edits.append(_blank(text, t[2].start, t[4].end + 1))
    if first == "ALTER" and toks.word(1) in ("USER", "ROLE") and toks.word(2) == "IF" and toks.word(3) == "EXISTS":
        stmt.if_exists = True
        edits.append(_blank(text, t[2].start, t[3].end + 1))
    if first in ("CREATE", "ALTER") and toks.word(1) in ("USER", "ROLE"):
        _role_options(toks, stmt, edits)
    if first == "CREATE" and (toks.word(1) == "TABLE" or toks.word(2) == "TABLE"):
        _inline_indexes(toks, stmt, edits)
    if first in ("CREATE", "ALTER") and toks.word(1) == "TABLE":
        _key_directions(toks, stmt, edits)
    if first in ("INSERT", "UPSERT", "UPDATE", "DELETE", "EXPLAIN") and n >= 2 and \
            toks.word(n - 2) == "RETURNING" and toks.word(n - 1) == "NOTHING":
        edits.append(_blank(text, t[n - 2].start, t[n - 1].end + 1))
        n -= 2
    if first in ("UPDATE", "DELETE", "EXPLAIN"):
        _mutation_order_limit(toks, stmt, edits, n)
    storing_allowed = first == "CREATE" and "INDEX" in (toks.word(1), toks.word(2))
    k = 0
    # Only a few token kinds start an addition; the test on the name keeps this loop cheap, as
    # every statement (point reads included) passes through it.
    while k < n:
        tok = t[k]
        name = tok.name
        if name not in _ADDITION_TOKENS:
            k += 1
            continue
        if name == "ASCII_91" and k > 0 and toks.word(k + 1) in _SOURCE_STATEMENTS and \
                (toks.word(k - 1) in ("FROM", "JOIN") or t[k - 1].name == "ASCII_44"):
            k = _statement_source(toks, k, stmt, edits)
            continue
        if name == "Op" and toks.raw(k) == "@" and k > 0 and k + 1 < n and \
                t[k - 1].name not in ("Op",) and _is_name(t[k + 1]):
            # table@index: remember the hint by the table name's location
            name_tok = k - 1
            while name_tok >= 2 and t[name_tok - 1].name == "ASCII_46":
                name_tok -= 2
            stmt.index_hints[t[name_tok].start] = _ident(toks.raw(k + 1))
            if first in ("DROP", "ALTER") and toks.word(1) == "INDEX":
                # DROP INDEX t@i, ALTER INDEX t@i: keep the index name, remember the table
                stmt.index_hints[-1] = text[t[name_tok].start:t[k - 1].end + 1]
                edits.append(_blank(text, t[name_tok].start, tok.end + 1))
            else:
                edits.append(_blank(text, tok.start, t[k + 1].end + 1))
            k += 2
            continue
        if name == "AS" and toks.word(k + 1) == "OF" and toks.word(k + 2) == "SYSTEM" and \
                toks.word(k + 3) == "TIME":
            end_k = k + 4
            depth = 0
            while end_k < n:
                w = toks.word(end_k)
                if t[end_k].name == "ASCII_40":
                    depth += 1
                elif t[end_k].name == "ASCII_41":
                    if depth == 0:
                        break
                    depth -= 1
                elif depth == 0 and w in _CLAUSE_WORDS:
                    break
                end_k += 1
            expr_text = text[t[k + 4].start:t[end_k - 1].end + 1] if end_k > k + 4 else ""
            if not expr_text:
                raise errors.syntax_error("AS OF SYSTEM TIME: missing expression")
            stmt.as_of = _parse_expr(expr_text)
            edits.append(_blank(text, tok.start, t[end_k - 1].end + 1))
            k = end_k
            continue
        if storing_allowed and name == "IDENT" and toks.word(k) == "STORING":
            edits.append((tok.start, tok.end + 1, "INCLUDE"))
        k += 1


_ADDITION_TOKENS = frozenset({"ASCII_91", "Op", "AS", "IDENT"})


_SOURCE_STATEMENTS = frozenset({"SHOW", "EXPLAIN", "SELECT", "VALUES", "WITH", "TABLE", "INSERT",
                                "UPSERT", "UPDATE", "DELETE"})


def _statement_source(toks: _Tokens, k: int, stmt: Statement, edits: list) -> int:
    """[<statement>] used as a table: blank it to `_` and remember the inner statement by the
    position of `[`, which is where pglast's RangeVar will point. Returns the token after `]`."""
    t = toks.toks
    depth = 0
    close = k
    while close < len(t):
        if t[close].name == "ASCII_91":
            depth += 1
        elif t[close].name == "ASCII_93":
            depth -= 1
            if depth == 0:
                break
        close += 1
    if close >= len(t):
        raise errors.syntax_error('at or near "EOF": syntax error: unterminated [')
    start, end = t[k].start, t[close].end + 1
    inner = parse(toks.text[t[k].end + 1:t[close].start])
    if len(inner) != 1:
        raise errors.syntax_error("a [ ... ] data source must hold exactly one statement", start + 1)
    stmt.sources[start] = inner[0]
    edits.append((start, end, "_" + " " * (end - start - 1)))
    return close + 1


def _place_sources(node: Any, sources: dict[int, Statement]) -> None:
    """Swap the RangeVars that stand for [ ... ] sources for StatementSource nodes."""
    if isinstance(node, dict):
        rv = node.get("RangeVar")
        if rv is not None and rv.get("location") in sources and rv.get("relname") == "_":
            inner = sources[rv["location"]]
            node.clear()
            node["StatementSource"] = {"statement": inner, "alias": rv.get("alias"),
                                       "location": rv["location"]}
            return
        for v in node.values():
            _place_sources(v, sources)
    elif isinstance(node, list):
        for v in node:
            _place_sources(v, sources)


_CLAUSE_WORDS = frozenset({"WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "HAVING", "WINDOW", "FOR",
                           "UNION", "INTERSECT", "EXCEPT", "FETCH", "RETURNING", "ON", "JOIN",
                           "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL"})


def _is_name(tok: Any) -> bool:
    return tok.name == "IDENT" or tok.kind != "RESERVED_KEYWORD" and tok.name not in (
        "Op", "SCONST", "ICONST", "FCONST", "PARAM") and not tok.name.startswith("ASCII_")


def _ident(raw: str) -> str:
    if raw.startswith('"'):
        return raw[1:-1].replace('""', '"')
    return raw.lower()


def _mutation_order_limit(toks: _Tokens, stmt: Statement, edits: list, n: int) -> None:
    """UPDATE/DELETE ... [ORDER BY ...] [LIMIT n]: CockroachDB's extension, cut out and parsed alone."""
    t = toks.toks
    k = next((i for i in range(n) if toks.word(i) in ("UPDATE", "DELETE")), None)
    if k is None:
        return
    depth = 0
    start = end = None
    for j in range(k + 1, n):
        name = t[j].name
        if name in ("ASCII_40", "ASCII_91"):
            depth += 1
        elif name in ("ASCII_41", "ASCII_93"):
            depth -= 1
        elif depth == 0:
            w = toks.word(j)
            if start is None and ((w == "ORDER" and toks.word(j + 1) == "BY") or w == "LIMIT"):
                start = j
            elif start is not None and w == "RETURNING":
                end = j
                break
    if start is None:
        return
    end = n if end is None else end
    clause = toks.text[t[start].start:t[end - 1].end + 1]
    try:
        tree = json.loads(pg.parse_sql_json(f"SELECT 1 {clause}"))
    except pg.ParseError as exc:
        raise errors.syntax_error(f'at or near "{clause.split()[0].lower()}": syntax error: {exc.args[0]}',
                                  t[start].start + 1) from None
    select = tree["stmts"][0]["stmt"]["SelectStmt"]
    stmt.mutation_clauses = {k: select[k] for k in ("sortClause", "limitCount", "limitOffset") if k in select}
    edits.append(_blank(toks.text, t[start].start, t[end - 1].end + 1))


# Role options of CockroachDB's that PostgreSQL's grammar refuses; sql/users.py knows them.
_CRDB_ROLE_OPTIONS = frozenset({"CONTROLJOB", "VIEWACTIVITY", "CANCELQUERY", "MODIFYCLUSTERSETTING",
                                "CONTROLCHANGEFEED", "CREATELOGIN"})


def _role_options(toks: _Tokens, stmt: Statement, edits: list) -> None:
    """Each such option becomes CREATEDB (NOCREATEDB) padded to its length, a DefElem at its
    location that _place_role_options renames."""
    first_option = 3  # after CREATE|ALTER USER|ROLE [IF [NOT] EXISTS] name: a role may be named so
    if toks.word(2) == "IF":
        first_option += 3 if toks.word(3) == "NOT" else 2
    for k in range(first_option, len(toks.toks)):
        tok = toks.toks[k]
        word = toks.word(k)
        value = not word.startswith("NO")
        name = word if value else word[2:]
        if name in _CRDB_ROLE_OPTIONS:
            stand_in = "CREATEDB" if value else "NOCREATEDB"
            stmt.role_options[tok.start] = (name.lower(), value)
            edits.append((tok.start, tok.end + 1, stand_in.ljust(tok.end + 1 - tok.start)))


def _place_role_options(node: Any, options: dict[int, tuple[str, bool]]) -> None:
    (fields,) = node.values()
    for opt in fields.get("options") or []:
        elem = opt.get("DefElem", {})
        if elem.get("location") in options:
            name, value = options[elem["location"]]
            elem["defname"] = name
            elem["arg"] = {"Boolean": {"boolval": value}}


def _place_mutation_clauses(node: Any, clauses: dict) -> bool:
    if isinstance(node, dict):
        for kind in ("UpdateStmt", "DeleteStmt"):
            if kind in node:
                node[kind].update(clauses)
                return True
        return any(_place_mutation_clauses(v, clauses) for v in node.values())
    if isinstance(node, list):
        return any(_place_mutation_clauses(v, clauses) for v in node)
    return False


def _key_directions(toks: _Tokens, stmt: Statement, edits: list) -> None:
    """PRIMARY KEY (a DESC) and UNIQUE (a DESC): PostgreSQL takes no directions there."""
    t = toks.toks
    n = len(t)
    for k in range(n - 2):
        w = toks.word(k)
        if not ((w == "PRIMARY" and toks.word(k + 1) == "KEY" and t[k + 2].name == "ASCII_40") or
                (w == "UNIQUE" and t[k + 1].name == "ASCII_40")):
            continue
        j = k + 2 if w == "PRIMARY" else k + 1
        dirs = ["asc"]
        depth = 0
        while j < n:
            name = t[j].name
            if name == "ASCII_40":
                depth += 1
            elif name == "ASCII_41":
                depth -= 1
                if depth == 0:
                    break
            elif name == "ASCII_44" and depth == 1:
                dirs.append("asc")
            elif depth == 1 and toks.word(j) in ("ASC", "DESC"):
                dirs[-1] = toks.word(j).lower()
                edits.append(_blank(toks.text, t[j].start, t[j].end + 1))
            j += 1
        if "desc" not in dirs:
            continue
        stmt.key_directions[t[k].start] = dirs
        if k >= 2 and toks.word(k - 2) == "CONSTRAINT":
            stmt.key_directions[t[k - 2].start] = dirs


def _inline_indexes(toks: _Tokens, stmt: Statement, edits: list) -> None:
    """Lift INDEX / UNIQUE INDEX / INVERTED INDEX / FAMILY elements out of CREATE TABLE."""
    t = toks.toks
    text = toks.text
    n = len(t)
    k = 0
    while k < n and t[k].name != "ASCII_40":
        k += 1
    if k >= n:
        return
    table_text = text[t[2].start:t[k - 1].end + 1] if toks.word(1) == "TABLE" else ""
    depth = 0
    elem_start = None
    prev_sep = None
    k_open = k
    for j in range(k_open, n):
        name = t[j].name
        if name == "ASCII_40":
            depth += 1
            if depth == 1:
                elem_start = j + 1
                prev_sep = j
            continue
        if name == "ASCII_41":
            depth -= 1
            if depth == 0:
                _maybe_lift(toks, stmt, edits, elem_start, j, prev_sep, table_text)
                return
            continue
        if name == "ASCII_44" and depth == 1:
            _maybe_lift(toks, stmt, edits, elem_start, j, prev_sep, table_text)
            elem_start = j + 1
            prev_sep = j


def _maybe_lift(toks: _Tokens, stmt: Statement, edits: list, start: int | None, stop: int,
                sep: int | None, table_text: str) -> None:
    if start is None or start >= stop:
        return
    w0, w1 = toks.word(start), toks.word(start + 1)
    is_index = w0 == "INDEX" or (w0 in ("UNIQUE", "INVERTED") and w1 == "INDEX")
    is_family = w0 == "FAMILY"
    if not (is_index or is_family):
        return
    t = toks.toks
    text = toks.text
    elem_text = text[t[start].start:t[stop - 1].end + 1]
    if is_index:
        unique = w0 == "UNIQUE"
        if w0 == "INVERTED":
            raise errors.unimplemented("inverted indexes are not supported")
        body = elem_text.split(None, 2 if unique else 1)
        rest = body[-1] if len(body) > (2 if unique else 1) else ""
        if rest.lstrip().startswith("("):
            name_part, cols = "", rest
        else:
            name_part, _, cols = rest.partition("(")
            cols = "(" + cols
        cols = _replace_word(cols, "STORING", "INCLUDE")
        sql = f"CREATE {'UNIQUE ' if unique else ''}INDEX {name_part} ON {table_text or '_'} {cols}"
        try:
            tree = json.loads(pg.parse_sql_json(sql))
        except pg.ParseError as exc:
            raise errors.syntax_error(f"at or near \"{elem_text}\": syntax error: {exc.args[0]}") from None
        index_node = tree["stmts"][0]["stmt"]["IndexStmt"]
        index_node["location"] = t[start].start  # where it stood, to keep the table's index order
        stmt.inline_indexes.append(index_node)
    # Blank the element together with the comma that separates it from the one before
    # (or after, when it is the first element).
    begin = t[sep].start if sep is not None and t[sep].name == "ASCII_44" else t[start].start
    end = t[stop - 1].end + 1
    if t[sep].name != "ASCII_44" and stop < len(t) and t[stop].name == "ASCII_44":
        end = t[stop].end + 1
    edits.append(_blank(text, begin, end))


def _replace_word(text: str, word: str, replacement: str) -> str:
    try:
        toks = pg.scan(text)
    except pg.ParseError:
        return text
    for tok in reversed(toks):
        if text[tok.start:tok.end + 1].upper() == word:
            text = text[:tok.start] + replacement + text[tok.end + 1:]
    return text


def parse_expression(expr_text: str) -> dict:
    """One scalar expression (a stored DEFAULT or CHECK, an AS OF SYSTEM TIME) as a parser node."""
    return _parse_expr(expr_text)


def _parse_expr(expr_text: str) -> dict:
    try:
        tree = json.loads(pg.parse_sql_json(f"SELECT {expr_text}"))
    except pg.ParseError as exc:
        raise errors.syntax_error(f"at or near \"{expr_text}\": syntax error: {exc.args[0]}") from None
    return tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]


def _syntax_error(exc: pg.ParseError, sql: str, offset: int) -> errors.PgError:
    message, pos = (exc.args + (None,))[:2] if exc.args else ("syntax error", None)
    position = (pos + offset + 1) if isinstance(pos, int) else None
    if "at end of input" in message:
        return errors.syntax_error('at or near "EOF": syntax error', position)
    if "unterminated" in message:
        return errors.syntax_error(f"lexical error: {message}", position)
    near = ""
    if isinstance(pos, int):
        rest = sql[offset + pos:].split(None, 1)
        near = rest[0] if rest else "EOF"
    if near:
        return errors.syntax_error(f'at or near "{near.lower() if near != "EOF" else "EOF"}": syntax error', position)
    return errors.syntax_error(message, position)


_ACTIVITY_SHOWS = {"SESSIONS": "ShowSessions", "QUERIES": "ShowQueries", "STATEMENTS": "ShowQueries"}


class _OwnParser:
    """A recursive-descent parser for the CockroachDB statements PostgreSQL lacks."""

    def __init__(self, toks: _Tokens) -> None:
        self.t = toks
        self.k = 0

    # -- helpers --
    def peek(self, off: int = 0) -> str:
        return self.t.word(self.k + off)

    def at_end(self) -> bool:
        return self.k >= len(self.t.toks)

    def accept(self, *words: str) -> bool:
        for i, w in enumerate(words):
            if self.peek(i) != w:
                return False
        self.k += len(words)
        return True

    def expect(self, word: str) -> None:
        if not self.accept(word):
            self.fail()

    def fail(self) -> None:
        if self.at_end():
            raise errors.syntax_error("at or near \"EOF\": syntax error")
        tok = self.t.toks[self.k]
        raise errors.syntax_error(f'at or near "{self.t.raw(self.k).lower()}": syntax error',
                                  tok.start + 1)

    def name(self) -> str:
        if self.at_end():
            self.fail()
        tok = self.t.toks[self.k]
        if not _is_name(tok) and tok.name != "SCONST":
            self.fail()
        self.k += 1
        raw = self.t.raw(self.k - 1)
        if tok.name == "SCONST":
            return raw[1:-1].replace("''", "'")
        return _ident(raw)

    def qualified_name(self) -> list[str]:
        parts = [self.name()]
        while not self.at_end() and self.t.name(self.k) == "ASCII_46":
            self.k += 1
            if self.t.name(self.k) == "ASCII_42":  # db.* in SHOW GRANTS ON
                self.k += 1
                parts.append("*")
            else:
                parts.append(self.name())
        return parts

    def name_list(self) -> list[list[str]]:
        names = [self.qualified_name()]
        while not self.at_end() and self.t.name(self.k) == "ASCII_44":
            self.k += 1
            names.append(self.qualified_name())
        return names

    def rest_text(self) -> str:
        if self.at_end():
            return ""
        return self.t.text[self.t.toks[self.k].start:]

    def done(self, stmt: Statement) -> Statement:
        if not self.at_end():
            self.fail()
        return stmt

    def mk(self, kind: str, **fields: Any) -> Statement:
        return Statement(kind, fields, self.t.text)

    # -- statements --
    def statement(self) -> Statement | None:
        if self.accept("USE"):
            return self.done(self.mk("UseStmt", database=self.name()))
        if self.accept("SET", "CLUSTER", "SETTING"):
            setting = ".".join(self.qualified_name())
            if not (self.accept("=") or self.accept("TO")):
                self.fail()
            if self.accept("DEFAULT"):
                return self.done(self.mk("SetClusterSetting", name=setting, value=None))
            value = _parse_expr(self.rest_text())
            return self.mk("SetClusterSetting", name=setting, value=value)
        if self.accept("RESET", "CLUSTER", "SETTING"):
            return self.done(self.mk("SetClusterSetting", name=".".join(self.qualified_name()), value=None))
        if self.accept("DROP", "DATABASE"):
            if_exists = self.accept("IF", "EXISTS")
            db = self.name()
            behavior = "restrict"
            if self.accept("CASCADE"):
                behavior = "cascade"
            elif self.accept("RESTRICT"):
                behavior = "restrict"
            return self.done(self.mk("DropDatabase", name=db, if_exists=if_exists, behavior=behavior))
        if self.accept("SHOW"):
            return self.show()
        return None

    def cancel(self) -> Statement:
        """CANCEL QUERY|SESSION [IF EXISTS] <expr>, CANCEL QUERIES|SESSIONS [IF EXISTS] <select>:
        the ids come from the query a CancelQueries statement holds (CANCEL QUERY x is CANCEL
        QUERIES SELECT x, as in CockroachDB's grammar)."""
        self.expect("CANCEL")
        word = self.peek()
        if word not in ("QUERY", "QUERIES", "SESSION", "SESSIONS"):
            self.fail()
        self.k += 1
        if_exists = self.accept("IF", "EXISTS")
        text = self.rest_text().strip().rstrip(";")
        if not text:
            self.fail()
        source = parse(text if word.endswith("S") else f"SELECT {text}")
        if len(source) != 1 or source[0].kind != "SelectStmt":
            raise errors.syntax_error(f"CANCEL {word} expects a query returning the ids to cancel")
        target = "query" if word.startswith("QUER") else "session"
        stmt = self.mk("CancelQueries" if target == "query" else "CancelSessions", if_exists=if_exists,
                       source=source[0])
        stmt.num_params = source[0].num_params
        return stmt

    def show(self) -> Statement | None:
        if self.accept("DATABASES"):
            return self.done(self.mk("ShowDatabases"))
        if self.accept("TABLES"):
            source = self.qualified_name() if self.accept("FROM") else None
            return self.done(self.mk("ShowTables", source=source))
        if self.accept("SCHEMAS"):
            source = self.name() if self.accept("FROM") else None
            return self.done(self.mk("ShowSchemas", database=source))
        if self.accept("COLUMNS", "FROM"):
            return self.done(self.mk("ShowColumns", table=self.qualified_name()))
        if self.peek() in ("INDEX", "INDEXES", "KEYS") and self.peek(1) == "FROM":
            self.k += 2
            if self.accept("DATABASE"):
                return self.done(self.mk("ShowIndexes", database=self.name(), table=None))
            return self.done(self.mk("ShowIndexes", table=self.qualified_name(), database=None))
        if self.peek() in ("CONSTRAINT", "CONSTRAINTS") and self.peek(1) == "FROM":
            self.k += 2
            return self.done(self.mk("ShowConstraints", table=self.qualified_name()))
        if self.accept("CREATE"):
            kind = "table"
            if self.accept("TABLE"):
                kind = "table"
            elif self.accept("VIEW"):
                kind = "view"
            elif self.accept("SEQUENCE"):
                kind = "sequence"
            elif self.accept("DATABASE"):
                return self.done(self.mk("ShowCreateDatabase", database=self.name()))
            return self.done(self.mk("ShowCreate", table=self.qualified_name(), object_kind=kind))
        if self.accept("USERS"):
            return self.done(self.mk("ShowUsers"))
        if self.accept("ROLES"):
            return self.done(self.mk("ShowRoles"))
        if self.accept("GRANTS"):
            return self.show_grants()
        if self.accept("CLUSTER", "SETTING"):
            return self.done(self.mk("ShowClusterSetting", name=".".join(self.qualified_name())))
        if self.peek() in ("ALL", "PUBLIC") and self.peek(1) == "CLUSTER" and self.peek(2) not in _ACTIVITY_SHOWS:
            self.k += 2
            self.expect("SETTINGS")
            return self.done(self.mk("ShowClusterSettings"))
        if self.accept("CLUSTER", "SETTINGS"):
            return self.done(self.mk("ShowClusterSettings"))
        if self.accept("SESSION", "USER") or self.accept("CURRENT_USER") or self.accept("SESSION_USER"):
            return self.done(self.mk("ShowSessionUser"))
        if self.accept("SEQUENCES"):
            return self.done(self.mk("ShowSequences"))
        if self.accept("ENUMS"):
            return self.done(self.mk("ShowEnums", source=self.qualified_name() if self.accept("FROM") else None))
        if self.accept("TYPES"):
            return self.done(self.mk("ShowTypes"))
        if self.accept("JOBS"):
            return self.done(self.mk("ShowJobs"))
        # SHOW [ALL] [CLUSTER|LOCAL] SESSIONS|QUERIES|STATEMENTS (QUERIES is an alias of STATEMENTS;
        # ALL adds CockroachDB's internal sessions and statements, and Pillbug runs none)
        skip = 1 if self.peek() == "ALL" else 0
        skip += 1 if self.peek(skip) in ("CLUSTER", "LOCAL") else 0
        activity = _ACTIVITY_SHOWS.get(self.peek(skip))
        if activity is not None:
            local = self.peek(skip - 1) == "LOCAL" if skip else False  # CLUSTER is the default
            self.k += skip + 1
            return self.done(self.mk(activity, local=local))
        if self.accept("RANGES"):
            return self.done(self.mk("ShowRanges"))
        if self.accept("REGIONS"):
            return self.done(self.show_regions())
        if self.accept("SAVEPOINT", "STATUS"):
            return self.done(self.mk("ShowSavepointStatus"))
        if self.accept("SYNTAX"):
            return self.done(self.mk("ShowSyntax", text=self.name()))
        return None  # SHOW <variable>: PostgreSQL's grammar handles it

    def show_regions(self) -> Statement:
        """SHOW REGIONS [FROM CLUSTER | FROM DATABASE [name] | FROM ALL DATABASES] (after REGIONS)."""
        if not self.accept("FROM"):
            return self.mk("ShowRegions")
        if self.accept("CLUSTER"):
            return self.mk("ShowClusterRegions")
        if self.accept("ALL", "DATABASES"):
            return self.mk("ShowAllDatabaseRegions")
        self.expect("DATABASE")
        return self.mk("ShowDatabaseRegions", database=None if self.at_end() else self.name())

    def type_statement(self) -> Statement | None:
        """CREATE TYPE IF NOT EXISTS name AS ENUM (...) and ALTER TYPE name DROP VALUE 'x', in the
        shape of PostgreSQL's CreateEnumStmt (plus if_not_exists) and a node of their own."""
        if self.accept("CREATE", "TYPE", "IF", "NOT", "EXISTS"):
            names = self.qualified_name()
            if not self.accept("AS", "ENUM"):
                return None
            self.expect_token("ASCII_40")
            labels = []
            while not self.at_end() and self.t.name(self.k) == "SCONST":
                labels.append(self.name())
                if self.t.name(self.k) != "ASCII_44":
                    break
                self.k += 1
            self.expect_token("ASCII_41")
            return self.done(self.mk("CreateEnumStmt", typeName=[{"String": {"sval": n}} for n in names],
                                     vals=[{"String": {"sval": v}} for v in labels], if_not_exists=True))
        if self.accept("ALTER", "TYPE"):
            names = self.qualified_name()
            if not self.accept("DROP", "VALUE"):
                return None
            if self.at_end() or self.t.name(self.k) != "SCONST":
                self.fail()
            return self.done(self.mk("AlterEnumDropValue", type_names=names, label=self.name()))
        return None

    def expect_token(self, name: str) -> None:
        if self.at_end() or self.t.name(self.k) != name:
            self.fail()
        self.k += 1

    def show_grants(self) -> Statement:
        on_kind = on_names = None
        if self.accept("ON"):
            if self.accept("ROLE"):
                on_kind = "role"
                on_names = [[n] for n in self._names_until("FOR")] if not self.at_end() and self.peek() != "FOR" else None
            elif self.accept("DATABASE"):
                on_kind = "database"
                on_names = self.name_list()
            elif self.accept("SCHEMA"):
                on_kind = "schema"
                on_names = self.name_list()
            else:
                self.accept("TABLE")
                on_kind = "table"
                on_names = self.name_list()
        grantees = None
        if self.accept("FOR"):
            grantees = [n[0] for n in self.name_list()]
        return self.done(self.mk("ShowGrants", on_kind=on_kind, on_names=on_names, grantees=grantees))

    def _names_until(self, stop: str) -> list[str]:
        names = [self.name()]
        while not self.at_end() and self.t.name(self.k) == "ASCII_44":
            self.k += 1
            names.append(self.name())
        return names
