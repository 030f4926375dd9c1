"""Plan-cache keys: a DML statement's text with its literals lifted out as parameters.

`SELECT balance FROM accounts WHERE id = 42` and `... WHERE id = 43` share one plan: both
become `SELECT balance FROM accounts WHERE id = $1` with the literal ('i', '42') or ('i', '43')
handed to the plan as the value of $1. The scanner below visits only what matters for that
(string and numeric literals, quoted identifiers, parameters), deciding each literal's context
from the word before it, and gives up (returns None: no lifting, the exact text is the key) on
anything it does not fully understand: comments, dollar quotes, prefixed strings (E'', B'', X'').

A literal is lifted only where a parameter is allowed in its place. A string right after a
word that is not in _VALUE_CONTEXT (DATE '2020-01-01', INTERVAL '1 day') is a typed literal
and stays in the key; a number in a type modifier (VARCHAR(20)) or a positional ORDER BY/GROUP BY
reference would change meaning as a parameter: the planner detects those (a lifted parameter
where a literal is required), and the caller then plans the original text instead.

The kinds of the lifted literals are part of the key, so that `x = 1` and `x = '1'` do not share
a plan. This module knows nothing of plans; it returns text.

Every statement sent as text passes here, point reads included, so the scan's outcome is
remembered by the statement's shape: its text with every digit turned into 0. Two texts of one
shape differ only in their digits, so the scanner, which tells digits apart only from other
characters, finds literals at the same places in both and decides the same for each. Only texts
without quotes use this (a client's strings would fill the memo with shapes seen once).
"""
from __future__ import annotations

import re

LIFTABLE_STATEMENTS = frozenset({"select", "insert", "update", "delete", "upsert", "with", "values", "table"})

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


# Only the tokens that matter are visited: literals, quoted identifiers (which may hold quotes
# and digits), parameters, and what makes lifting unsafe (comments, dollar quotes).
_LITERAL = re.compile(r"""
    (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?<![\w$.])(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$])
  | (?P<param>\$\d+)
  | (?P<bail>--|/\*|\$|')
""", re.VERBOSE)
_NUMBER = re.compile(r"(?<![\w$.])(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$])")
_TYPMOD_WINDOW = 24  # "(1000, 999)" and the like fit; a type modifier is never longer
MAX_LIFTED = 1000  # a statement with more literals is planned from its own text, uncached
_ASCII_DIGIT = re.compile(r"[0-9]")
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")  # bytes: str.translate is ten times slower
SHAPES_MEMO_SIZE = 4096  # shapes remembered; the memo starts over when it is full
# shape -> where its lifted literals stand, and its lifted text when every statement of the shape has the same
_shapes: dict[bytes, tuple[list[tuple[int, int]], str | None]] = {}


def _previous_word(sql: str, end: int) -> str:
    """The identifier or keyword right before position end (lower case), or ''."""
    i = end - 1
    while i >= 0 and sql[i].isspace():
        i -= 1
    j = i
    while j >= 0 and (sql[j].isalnum() or sql[j] == "_" or sql[j] == "$"):
        j -= 1
    return sql[j + 1:i + 1].lower() if j < i and not sql[j + 1].isdigit() else ""


def _in_type_modifier(sql: str, start: int) -> bool:
    """Whether a number at start is inside VARCHAR( ... ) / DECIMAL( ... , ...).

    Looks back over at most a short window of digits, commas and spaces, so that a long IN list
    costs constant work per number.
    """
    i = start - 1
    limit = max(start - _TYPMOD_WINDOW, 0)
    while i >= limit and (sql[i].isspace() or sql[i] == "," or sql[i].isdigit()):
        i -= 1
    if i < limit or sql[i] != "(":
        return False
    return _previous_word(sql, i) in _TYPES_WITH_MODIFIERS


def lift_literals(sql: str) -> tuple[str, list[Literal], int] | None:
    """(text with literals replaced by $n, the literals in order, count of explicit params).

    Returns None when the statement should not be lifted (not DML, or it holds something the
    lifter does not fully understand: comments, dollar quotes, prefixed strings).
    """
    if "--" in sql or "/*" in sql:
        return None
    quoted = "'" in sql or '"' in sql or "$" in sql
    shape = None
    if not quoted and _INT64_MIN_DIGITS not in sql:
        shape = sql.encode("utf-8", "surrogatepass").translate(_ZERO_DIGITS)
        known = _shapes.get(shape)
        if known is not None:
            # Its shape passed every check below already.
            spans, lifted_text = known
            literals = []
            for start, end in spans:
                text = sql[start:end]
                literals.append(("i" if text.isdigit() and int(text) <= _INT64_MAX else "n", text))
            return lifted_text or _replace(sql, spans, 0), literals, 0
    head = sql.lstrip()[:7].lower()
    word = head.split(None, 1)[0] if head else ""
    if word.rstrip("(") not in LIFTABLE_STATEMENTS:
        return None
    if "[" in sql and _STATEMENT_SOURCE.search(sql):
        return None  # [EXPLAIN ...] shows its literals; [SHOW ...] has none worth sharing
    scanned = _scan(sql, quoted)
    if scanned is None:
        return None
    literals, spans, explicit = scanned
    lifted = _replace(sql, spans, explicit) if literals else sql
    if shape is not None:
        if len(_shapes) >= SHAPES_MEMO_SIZE:
            _shapes.clear()
        # The lifted text is the same for the whole shape when no digit stands outside the
        # literals (an identifier such as t2 does: its statements each keep their own).
        ends = [0] + [end for _, end in spans]
        starts = [start for start, _ in spans] + [len(sql)]
        outside = any(_ASCII_DIGIT.search(sql, a, b) for a, b in zip(ends, starts))
        _shapes[shape] = (spans, None if outside else lifted)
    return lifted, literals, explicit


def _replace(sql: str, spans: list[tuple[int, int]], explicit: int) -> str:
    out = []
    last = 0
    for n, (start, end) in enumerate(spans, explicit + 1):
        out.append(sql[last:start])
        out.append(f"${n}")
        last = end
    out.append(sql[last:])
    return "".join(out)


def _scan(sql: str, quoted: bool) -> tuple[list[Literal], list[tuple[int, int]], int] | None:
    """The literals to lift, where they stand, and the highest explicit $n; None: no lifting."""
    literals: list[Literal] = []
    spans: list[tuple[int, int]] = []
    explicit = 0
    for m in (_LITERAL if quoted else _NUMBER).finditer(sql):
        kind = m.lastgroup
        start, end = m.span()
        if kind == "string":
            if start > 0 and (sql[start - 1].isalnum() or sql[start - 1] in "&_$"):
                return None  # E'...', B'...', X'...', U&'...'
            prev = _previous_word(sql, start)
            if prev and prev not in _VALUE_CONTEXT:
                continue  # a typed literal (DATE '...'): keep it in the key
            literals.append(("s", sql[start + 1:end - 1].replace("''", "'")))
            spans.append((start, end))
        elif kind == "number":
            text = m.group(kind)
            prev = _previous_word(sql, start)
            if prev and prev not in _VALUE_CONTEXT or text == _INT64_MIN_DIGITS or \
                    _in_type_modifier(sql, start):
                # (-9223372036854775808 is an INT only while its digits stay next to the minus)
                continue
            is_int = text.isdigit() and int(text) <= _INT64_MAX
            literals.append(("i" if is_int else "n", text))
            spans.append((start, end))
        if len(literals) > MAX_LIFTED:
            return None
        elif kind == "param":
            explicit = max(explicit, int(m.group(kind)[1:]))
        elif kind == "bail":
            return None
    return literals, spans, explicit


def cache_key(lifted_text: str, literals: list[Literal]) -> str:
    return lifted_text + "\x00" + "".join(kind for kind, _ in literals)
