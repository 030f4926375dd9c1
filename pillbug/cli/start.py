"""pillbug start-single-node: run one node until SIGTERM/SIGINT, with CockroachDB's flags."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pillbug.server.node import Node, NodeConfig
from pillbug.util import errors


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host or "0.0.0.0", int(port) if port else default_port


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start-single-node", help="start a single-node cluster")
    p.add_argument("--store", "-s", default="pillbug-data",
                   help="where the node keeps its data (path or path=<dir>)")
    p.add_argument("--listen-addr", default="localhost:26257")
    p.add_argument("--http-addr", default="localhost:8080")
    p.add_argument("--advertise-addr", default=None, help="accepted for compatibility")
    p.add_argument("--certs-dir", default="certs")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--allowlist", default=None,
                   help="comma-separated CIDRs that may connect (seeds the HBA cluster setting)")
    p.add_argument("--init-admin", default=None,
                   help="on first start, create this user in the admin role with a generated password "
                        "and print the connection details")
    p.add_argument("--cache", default=None, help="accepted for compatibility")
    p.add_argument("--max-sql-memory", default=None, help="accepted for compatibility")
    p.add_argument("--background", action="store_true", help="not supported; run under a supervisor")
    p.add_argument("--log-level", default="INFO")
    # For tests only, hidden from --help: LMDB behind a store whose reads wait
    # (storage/suspending.py documents SPEC). `make start` never passes it.
    p.add_argument("--test-store", default=None, metavar="SPEC", help=argparse.SUPPRESS)


async def _serve(config: NodeConfig) -> int:
    node = Node(config)
    try:
        await node.start()
    except (errors.PgError, OSError) as exc:
        print(f"ERROR: {getattr(exc, 'message', exc)}", file=sys.stderr)
        await node.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("initiating graceful shutdown of server", file=sys.stderr, flush=True)
    await node.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.background:
        print("ERROR: --background is not supported; run the node under a supervisor", file=sys.stderr)
        return 1
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(levelname).1s%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    store = args.store
    if store.startswith("path="):
        store = store[5:]
    store = store.split(",")[0]
    listen_host, listen_port = _host_port(args.listen_addr, 26257)
    http_host, http_port = _host_port(args.http_addr, 8080)
    config = NodeConfig(store=store, listen_host=listen_host, listen_port=listen_port,
                        http_host=http_host, http_port=http_port, certs_dir=args.certs_dir,
                        insecure=args.insecure,
                        allowlist=[c for c in args.allowlist.split(",") if c.strip()] if args.allowlist else None,
                        init_admin=args.init_admin, test_store=args.test_store)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(config))
