"""pillbug init: initialize a new cluster, once (CockroachDB's `cockroach init`).

The nodes of a new cluster start their etcd members and wait; `init` marks the cluster as
initialized by creating the key `x/init` (a new cluster id and the creation time) in etcd, through
the etcd client port of the node given by --host (its SQL port + 10000, or --etcd-client-addr),
with root's client certificate. The nodes watch that key and write the SQL system data themselves.

Exactly one init wins: the write is one etcd Txn guarded by `create_revision(x/init) == 0`. Its
failure branch reads the key back, so that a retry after an answer lost on the network (the first
attempt did create the key) is told apart from a cluster that someone else initialized.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time
import uuid

from pillbug.cli import etcd_access
from pillbug.server.etcd_member import etcd_client

ALREADY_INITIALIZED = "cluster has already been initialized"


class InitError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="initialize a cluster")
    etcd_access.add_flags(p)


async def initialize(endpoint: str, certs_dir: str | None, timeout: float, node: str = "") -> str:
    """Create x/init on the cluster behind `endpoint`; return the new cluster id. InitError if the
    cluster is already initialized or cannot be reached within `timeout` seconds."""
    from pillbug.storage.etcd.coord import Coordinator  # the CLI's other verbs never load grpc
    try:
        etcd_access.check_certs(certs_dir)
    except etcd_access.AccessError as exc:
        raise InitError(str(exc)) from None
    cluster_id = str(uuid.uuid4())
    created = datetime.datetime.now(datetime.UTC).isoformat()  # the same in every attempt
    what = f"node {node} (etcd client address {endpoint})" if node else f"etcd member at {endpoint}"
    try:
        client = etcd_client([endpoint], certs_dir, etcd_access.ROOT_CERT, rpc_max_attempts=1)
    except OSError as exc:
        raise InitError(f"cannot reach {what}: {exc}") from None
    await client.connect()
    deadline = time.monotonic() + timeout
    last = "no answer"
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise InitError(f"cannot reach {what} after {timeout:g}s: {last}. Is the node running "
                                f"with --join, and are a majority of the --join nodes started?")
            try:
                created_now = await Coordinator(client).initialize(cluster_id, created=created,
                                                                   timeout=min(left, 3.0))
            except Exception as exc:  # unreachable, no leader yet, TLS refused: try until the deadline
                last = " ".join(str(exc).split())[:300]
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            if created_now:
                return cluster_id
            raise InitError(ALREADY_INITIALIZED)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    try:
        node, endpoint = etcd_access.etcd_endpoint(args.host, args.port, args.etcd_client_addr)
    except ValueError as exc:
        print(f"ERROR: --host={args.host}: {exc}", file=sys.stderr)
        return 1
    certs_dir = None if args.insecure else args.certs_dir
    try:
        asyncio.run(initialize(endpoint, certs_dir, args.timeout, node))
    except InitError as exc:
        print(f"ERROR: {exc}\nFailed running \"init\"", file=sys.stderr)
        return 1
    print("Cluster successfully initialized")
    return 0
