"""The `pillbug` command: CockroachDB's CLI verbs."""
from __future__ import annotations

import argparse
import sys

from pillbug import CRDB_COMPAT_VERSION, __version__
from pillbug.cli import cert, demo, gen, init, managed, node, sql_shell, start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pillbug", description="Pillbug: a CockroachDB-compatible SQL database")
    sub = parser.add_subparsers(dest="command", required=True)
    start.add_parser(sub)
    start.add_cluster_parser(sub)
    init.add_parser(sub)
    demo.add_parser(sub)
    node.add_parser(sub)
    managed.add_parser(sub)
    sql_shell.add_parser(sub)
    cert.add_parser(sub)
    gen.add_parser(sub)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("start-single-node", "start"):
        return start.run(args)
    if args.command == "init":
        return init.run(args)
    if args.command == "demo":
        return demo.run(args)
    if args.command == "node":
        return node.run(args)
    if args.command == "cluster":
        return managed.run(args)
    if args.command == "sql":
        return sql_shell.run(args)
    if args.command == "cert":
        return cert.run(args)
    if args.command == "gen":
        return gen.run(args)
    if args.command == "version":
        print(f"Build Tag:        {CRDB_COMPAT_VERSION}\nPillbug:          {__version__}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
