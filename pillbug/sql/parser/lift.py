"""Plan-cache keys: a DML statement's text with its literals lifted out as parameters.

`SELECT balance FROM accounts WHERE id = 42` and `... WHERE id = 43` share one plan: both
become `SELECT balance FROM accounts WHERE id = $1` with the literal ('i', '42') or ('i', '43')
handed to the plan as the value of $1. The lexer below recognises exactly the tokens that matter
for that (string and numeric literals, identifiers, quoted identifiers, parameters) and gives
up (returns None: no lifting, the exact text is the key) on anything it does not fully
understand: comments, dollar quotes, prefixed strings (E'', B'', X'', U&'').

A literal is lifted only where a parameter is allowed in its place. A string right after a
word that is not in _VALUE_CONTEXT (DATE '2020-01-01', INTERVAL '1 day') is a typed literal
and stays in the key; a number in a type modifier (VARCHAR(20)) or a positional ORDER BY/GROUP BY
reference would change meaning as a parameter: the planner detects those (a lifted parameter
where a literal is required), and the caller then plans the original text instead.

The kinds of the lifted literals are part of the key, so that `x = 1` and `x = '1'` do not share
a plan. This module knows nothing of plans; it returns text.
"""
from __future__ import annotations

import re

LIFTABLE_STATEMENTS = frozenset({"select", "insert", "update", "delete", "upsert", "with", "values", "table"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<param>\$\d+)
  | (?P<bail>--|/\*|\$|'|")
  | (?P<other>::|[<>!=]=|<>|\|\||[^\s'"A-Za-z0-9_$])
""", re.VERBOSE)

# Words after which a string literal is a value (a parameter may stand in its place).
_VALUE_CONTEXT = frozenset({
    "select", "where", "and", "or", "not", "then", "else", "when", "in", "like", "ilike",
    "is", "between", "values", "set", "returning", "on", "having", "limit", "offset", "case",
    "distinct", "from", "any", "all", "some", "similar", "to", "escape", "by", "as", "if",
})
_INT64_MAX = (1 << 63) - 1
# Type names whose modifiers the grammar wants as literal integers (VARCHAR(3), DECIMAL(10, 2)).
_TYPES_WITH_MODIFIERS = frozenset({"char", "character", "varchar", "varying", "nchar", "bpchar", "decimal",
                                   "numeric", "dec", "float", "time", "timetz", "timestamp", "timestamptz",
                                   "interval", "bit", "varbit", "string"})
_INT64_MIN_DIGITS = str(1 << 63)
_STATEMENT_SOURCE = re.compile(r"\[\s*(show|explain|select|insert|upsert|update|delete|values|with|table)\b",
                               re.IGNORECASE)

Literal = tuple[str, str]  # (kind, text): kind 'i' integer, 'n' numeric, 's' string


def lift_literals(sql: str) -> tuple[str, list[Literal], int] | None:
    """(text with literals replaced by $n, the literals in order, count of explicit params).

    Returns None when the statement should not be lifted (not DML, or the lexer bailed).
    """
    head = sql.lstrip()[:7].lower()
    word = head.split(None, 1)[0] if head else ""
    if word.rstrip("(") not in LIFTABLE_STATEMENTS:
        return None
    if "[" in sql and _STATEMENT_SOURCE.search(sql):
        return None  # [EXPLAIN ...] shows its literals; [SHOW ...] has none worth sharing
    pieces: list[str] = []
    literals: list[Literal] = []
    explicit = 0
    prev_kind = ""
    prev_text = ""
    in_typmod = False  # inside VARCHAR( ... ): numbers there are part of the type
    pos = 0
    for m in _TOKEN.finditer(sql):
        if m.start() != pos:
            return None
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "space":
            pieces.append(text)
            continue
        if kind == "bail":
            return None
        if kind == "string":
            if prev_kind == "ident" and prev_text.lower() not in _VALUE_CONTEXT:
                pieces.append(text)  # a typed literal (DATE '...'): keep it in the key
            elif m.start() > 0 and (sql[m.start() - 1].isalnum() or sql[m.start() - 1] == "&"):
                return None  # E'...', B'...', X'...', U&'...'
            else:
                literals.append(("s", text[1:-1].replace("''", "'")))
                pieces.append("\x00")
        elif kind == "number":
            if prev_kind == "ident" and prev_text.lower() not in _VALUE_CONTEXT or text == _INT64_MIN_DIGITS \
                    or in_typmod:
                # -9223372036854775808 is an INT only while its digits stay next to the minus
                pieces.append(text)
            else:
                is_int = text.isdigit() and int(text) <= _INT64_MAX
                literals.append(("i" if is_int else "n", text))
                pieces.append("\x00")
        elif kind == "param":
            explicit = max(explicit, int(text[1:]))
            pieces.append(text)
        else:
            if text == "(" and prev_kind == "ident" and prev_text.lower() in _TYPES_WITH_MODIFIERS:
                in_typmod = True
            elif text == ")":
                in_typmod = False
            pieces.append(text)
        prev_kind = kind
        prev_text = text
    if pos != len(sql):
        return None
    if not literals:
        return sql, literals, explicit
    n = explicit
    out = []
    for piece in pieces:
        if piece == "\x00":
            n += 1
            out.append(f"${n}")
        else:
            out.append(piece)
    return "".join(out), literals, explicit


def cache_key(lifted_text: str, literals: list[Literal]) -> str:
    return lifted_text + "\x00" + "".join(kind for kind, _ in literals)
