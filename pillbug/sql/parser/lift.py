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

# One token, with the whitespace before it.
_TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<param>\$\d+)
  | (?P<bail>--|/\*|\$|'|")
  | (?P<other>::|[<>!=]=|<>|\|\||[^\s'"A-Za-z0-9_$])
)""", re.VERBOSE)

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
    literals: list[Literal] = []
    spans: list[tuple[int, int]] = []  # where the lifted literals stand in sql
    explicit = 0
    prev_kind = ""
    prev_word = ""  # the previous token, lower case, when it was an identifier
    in_typmod = False  # inside VARCHAR( ... ): numbers there are part of the type
    pos = 0
    # Every statement sent as text passes here (point reads included): per token, one regex
    # match and a few comparisons; the output is built from slices of the input at the end.
    for m in _TOKEN.finditer(sql):
        if m.start() != pos:
            return None
        pos = m.end()
        kind = m.lastgroup
        if kind == "ident":
            prev_kind = kind
            prev_word = m.group(kind).lower()
            continue
        if kind == "string":
            start = m.start(kind)
            if prev_kind == "ident" and prev_word not in _VALUE_CONTEXT:
                pass  # a typed literal (DATE '...'): keep it in the key
            elif start > 0 and (sql[start - 1].isalnum() or sql[start - 1] == "&"):
                return None  # E'...', B'...', X'...', U&'...'
            else:
                literals.append(("s", sql[start + 1:pos - 1].replace("''", "'")))
                spans.append((start, pos))
        elif kind == "number":
            text = m.group(kind)
            if not (prev_kind == "ident" and prev_word not in _VALUE_CONTEXT or text == _INT64_MIN_DIGITS
                    or in_typmod):
                # (-9223372036854775808 is an INT only while its digits stay next to the minus)
                is_int = text.isdigit() and int(text) <= _INT64_MAX
                literals.append(("i" if is_int else "n", text))
                spans.append((m.start(kind), pos))
        elif kind == "param":
            explicit = max(explicit, int(m.group(kind)[1:]))
        elif kind == "bail":
            return None
        elif kind == "other":
            text = m.group(kind)
            if text == "(":
                in_typmod = prev_kind == "ident" and prev_word in _TYPES_WITH_MODIFIERS
            elif text == ")":
                in_typmod = False
        prev_kind = kind
    if pos != len(sql) and not sql[pos:].isspace():
        return None
    if not literals:
        return sql, literals, explicit
    out = []
    last = 0
    for n, (start, end) in enumerate(spans, explicit + 1):
        out.append(sql[last:start])
        out.append(f"${n}")
        last = end
    out.append(sql[last:])
    return "".join(out), literals, explicit


def cache_key(lifted_text: str, literals: list[Literal]) -> str:
    return lifted_text + "\x00" + "".join(kind for kind, _ in literals)
