"""The `pillbug` command: CockroachDB's CLI verbs."""
from __future__ import annotations

import argparse
import sys

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.cli import cert, sql_shell, start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pillbug", description="Pillbug: a CockroachDB-compatible SQL database")
    sub = parser.add_subparsers(dest="command", required=True)
    start.add_parser(sub)
    sql_shell.add_parser(sub)
    cert.add_parser(sub)
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "start-single-node":
        return start.run(args)
    if args.command == "sql":
        return sql_shell.run(args)
    if args.command == "cert":
        return cert.run(args)
    if args.command == "version":
        print(f"Build Tag:        {CRDB_COMPAT_VERSION}\nPillbug:          {__version__}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
