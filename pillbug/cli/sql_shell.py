"""pillbug sql: the SQL shell, with `cockroach sql`'s flags.

Connects with --url (any postgres:// URL, e.g. with sslmode=verify-full&sslrootcert=...) or with
--host/--port/--user/--database/--certs-dir/--insecure. With --execute/-e (repeatable, several
statements each) or statements on a non-terminal stdin, it runs them one by one and prints each
result in --format (table on a terminal, tsv otherwise); the first failing statement prints
"ERROR: ..." and its SQLSTATE on stderr and the shell exits with status 1. On a terminal without
--execute it opens an interactive prompt.

It speaks to the server through libpq (psycopg2), receiving every value as the server's text.
"""
from __future__ import annotations

import argparse
import csv
import getpass
import io
import os
import sys
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg2
import psycopg2.extensions

from pillbug.sql import types as T
from pillbug.sql.parser.front import split_statements
from pillbug.util import errors

FORMATS = ("table", "csv", "tsv", "records", "raw", "sql", "html")


def _raw_text_casts() -> None:
    """Make psycopg2 hand over each value as the server's text, for exact rendering."""
    # Arrays included: the shell prints an array as the server's text ({a,b}), as cockroach sql does.
    oids = tuple(sorted(set(T.BY_OID) | {0}))
    raw = psycopg2.extensions.new_type(oids, "PILLBUG_RAW", lambda value, cur: value)
    psycopg2.extensions.register_type(raw)


def dsn_from_args(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    if args.url:
        url = args.url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            parsed = urlparse(url)
            query = dict(parse_qsl(parsed.query))
            params = {
                "host": parsed.hostname or "localhost",
                "port": str(parsed.port or 26257),
                "user": unquote(parsed.username) if parsed.username else (args.user or "root"),
                "dbname": unquote(parsed.path.lstrip("/")) or args.database or "defaultdb",
            }
            if parsed.password is not None:
                params["password"] = unquote(parsed.password)
            params.update(query)
            if "sslmode" not in params:
                params["sslmode"] = "verify-full" if not args.insecure else "disable"
            return "", params
        raise SystemExit("ERROR: --url must start with postgres:// or postgresql://")
    host = args.host or "localhost"
    port = str(args.port or 26257)
    if ":" in host and not host.startswith("["):
        host, _, port = host.partition(":")
    user = args.user or "root"
    params = {"host": host, "port": port, "user": user, "dbname": args.database or "defaultdb"}
    if args.insecure:
        params["sslmode"] = "disable"
    else:
        certs = args.certs_dir
        params["sslmode"] = "verify-full"
        params["sslrootcert"] = os.path.join(certs, "ca.crt")
        crt = os.path.join(certs, f"client.{user}.crt")
        key = os.path.join(certs, f"client.{user}.key")
        if os.path.exists(crt) and os.path.exists(key):
            params["sslcert"] = crt
            params["sslkey"] = key
    return "", params


def connect(args: argparse.Namespace) -> Any:
    _, params = dsn_from_args(args)
    try:
        return psycopg2.connect(**params)
    except psycopg2.OperationalError as exc:
        text = str(exc)
        needs_password = "password" in text and "password" not in params
        if needs_password and sys.stdin.isatty():
            params["password"] = getpass.getpass("Enter password: ")
            return psycopg2.connect(**params)
        raise


def _render_value(value: Any, oid: int) -> str:
    if value is None:
        return "NULL"
    if oid == 16:
        return "true" if value == "t" else "false" if value == "f" else value
    return value


class Printer:
    def __init__(self, fmt: str, out: Any) -> None:
        self.fmt = fmt
        self.out = out

    def result(self, names: list[str], oids: list[int], rows: list[tuple]) -> None:
        cells = [[_render_value(v, o) for v, o in zip(r, oids)] for r in rows]
        getattr(self, "_" + self.fmt)(names, oids, cells)

    def _table(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        widths = [len(n) for n in names]
        for r in cells:
            for i, v in enumerate(r):
                for line in v.split("\n"):
                    widths[i] = max(widths[i], len(line))
        numeric = [o in (20, 21, 23, 700, 701, 1700, 26) for o in oids]
        header = " | ".join(n.center(w) for n, w in zip(names, widths))
        self.out.write("  " + header.rstrip() + "\n")
        separator = "+".join(["-" * (widths[0] + 3)] + ["-" * (w + 2) for w in widths[1:]])
        self.out.write(separator + "\n")
        for r in cells:
            parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric)]
            self.out.write("  " + " | ".join(parts).rstrip() + "\n")
        n = len(cells)
        self.out.write(f"({n} row{'s' if n != 1 else ''})\n")

    def _tsv(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        self._delimited(names, cells, "\t")

    def _csv(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        self._delimited(names, cells, ",")

    def _delimited(self, names: list[str], cells: list[list[str]], sep: str) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=sep, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(names)
        for r in cells:
            writer.writerow(r)
        self.out.write(buf.getvalue())

    def _records(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        width = max((len(n) for n in names), default=0)
        for i, r in enumerate(cells, start=1):
            self.out.write(f"-[ RECORD {i} ]\n")
            for n, v in zip(names, r):
                self.out.write(f"{n.ljust(width)} | {v}\n")
        if not cells:
            self.out.write("(0 rows)\n")

    def _raw(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        self.out.write(f"# {len(names)} column{'s' if len(names) != 1 else ''}\n")
        for i, r in enumerate(cells, start=1):
            self.out.write(f"# row {i}\n")
            for v in r:
                self.out.write(f"## {len(v)}\n{v}\n")
        self.out.write(f"# {len(cells)} row{'s' if len(cells) != 1 else ''}\n")

    def _sql(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        for r in cells:
            values = ", ".join("NULL" if v == "NULL" else "'" + v.replace("'", "''") + "'" for v in r)
            self.out.write(f"INSERT INTO results({', '.join(names)}) VALUES ({values});\n")

    def _html(self, names: list[str], oids: list[int], cells: list[list[str]]) -> None:
        import html
        self.out.write("<table>\n<thead><tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr></thead>\n<tbody>\n")
        for r in cells:
            self.out.write("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>\n")
        self.out.write("</tbody>\n</table>\n")

    def tag(self, status: str) -> None:
        if self.fmt == "table" or self.fmt == "tsv":
            self.out.write(status + "\n")


def run_statement(conn: Any, sql: str, printer: Printer) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
        if cur.description is not None:
            names = [d.name for d in cur.description]
            oids = [d.type_code for d in cur.description]
            printer.result(names, oids, cur.fetchall())
        elif cur.statusmessage:
            printer.tag(cur.statusmessage)
    for notice in conn.notices:
        sys.stderr.write(notice.replace("NOTICE:  ", "NOTICE: "))
    del conn.notices[:]


def report(exc: Exception) -> None:
    if isinstance(exc, psycopg2.Error):
        msg = (exc.pgerror or str(exc)).strip()
        msg = msg.replace("ERROR:  ", "ERROR: ", 1)
        if not msg.startswith("ERROR:") and not msg.startswith("FATAL"):
            msg = f"ERROR: {msg}"
        sys.stderr.write(msg + "\n")
        if exc.pgcode:
            sys.stderr.write(f"SQLSTATE: {exc.pgcode}\n")
    elif isinstance(exc, errors.PgError):
        sys.stderr.write(f"ERROR: {exc.message}\nSQLSTATE: {exc.code}\n")
    else:
        sys.stderr.write(f"ERROR: {exc}\n")


def run_batch(conn: Any, texts: list[str], printer: Printer) -> int:
    for text in texts:
        try:
            statements = split_statements(text)
        except errors.PgError as exc:
            report(exc)
            return 1
        for sql in statements:
            try:
                run_statement(conn, sql, printer)
            except psycopg2.Error as exc:
                report(exc)
                return 1
    return 0


def interactive(conn: Any, args: argparse.Namespace, printer: Printer) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history = os.path.expanduser("~/.pillbug_sql_history")
    session = PromptSession(history=FileHistory(history))
    params = conn.get_dsn_parameters()
    prompt_base = f"{params.get('user')}@{params.get('host')}:{params.get('port')}"
    buffer = []
    print("#\n# Welcome to the Pillbug SQL shell.\n# All statements must be terminated by a semicolon.\n"
          "# To exit, type: \\q.\n#")
    while True:
        db = conn.get_dsn_parameters().get("dbname")
        prompt = f"{prompt_base}/{db}> " if not buffer else " " * (len(prompt_base) + len(db or "") + 1) + "-> "
        try:
            line = session.prompt(prompt)
        except EOFError:
            return 0
        except KeyboardInterrupt:
            buffer = []
            continue
        stripped = line.strip()
        if not buffer and stripped in ("\\q", "quit", "exit"):
            return 0
        if not buffer and stripped.startswith("\\"):
            print(f"unsupported client-side command: {stripped}", file=sys.stderr)
            continue
        buffer.append(line)
        text = "\n".join(buffer)
        if not stripped.endswith(";"):
            continue
        buffer = []
        conn.autocommit = True
        try:
            for sql in split_statements(text):
                run_statement(conn, sql, printer)
        except (psycopg2.Error, errors.PgError) as exc:
            report(exc)
            if conn.closed:
                return 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="open a SQL shell or run statements")
    p.add_argument("--url", default=os.environ.get("COCKROACH_URL"))
    p.add_argument("--host", default=os.environ.get("COCKROACH_HOST"))
    p.add_argument("--port", "-p", type=int, default=None)
    p.add_argument("--user", "-u", default=os.environ.get("COCKROACH_USER"))
    p.add_argument("--database", "-d", default=os.environ.get("COCKROACH_DATABASE"))
    p.add_argument("--certs-dir", default=os.environ.get("COCKROACH_CERTS_DIR", "certs"))
    p.add_argument("--insecure", action="store_true", default=os.environ.get("COCKROACH_INSECURE") == "true")
    p.add_argument("--execute", "-e", action="append", default=[])
    p.add_argument("--format", choices=FORMATS, default=None)
    p.add_argument("--set", action="append", default=[], help="accepted for compatibility")
    p.add_argument("--echo-sql", action="store_true")


def run(args: argparse.Namespace) -> int:
    _raw_text_casts()
    fmt = args.format or ("table" if sys.stdout.isatty() else "tsv")
    printer = Printer(fmt, sys.stdout)
    try:
        conn = connect(args)
    except psycopg2.Error as exc:
        report(exc)
        return 1
    conn.autocommit = True
    try:
        if args.execute:
            return run_batch(conn, args.execute, printer)
        if not sys.stdin.isatty():
            return run_batch(conn, [sys.stdin.read()], printer)
        return interactive(conn, args, printer)
    finally:
        conn.close()
