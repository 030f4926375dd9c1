"""How the CLI's cluster verbs (init, node) reach a cluster: through the etcd member of the node
that --host names (its SQL port + 10000, or --etcd-client-addr), with root's client certificate
from --certs-dir (etcd trusts every certificate of the cluster's CA), or plain http with --insecure.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from pillbug.server.etcd_member import CLIENT_PORT_OFFSET, etcd_client, join_host_port, split_host_port

ROOT_CERT = "client.root"


class AccessError(Exception):
    """The cluster cannot be reached, or the certificates to reach it are missing."""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("COCKROACH_HOST", "localhost:26257"),
                   help="the SQL address of any voting node (host:port)")
    p.add_argument("--port", "-p", type=int, default=None)
    p.add_argument("--certs-dir", default=os.environ.get("COCKROACH_CERTS_DIR", "certs"))
    p.add_argument("--insecure", action="store_true", default=os.environ.get("COCKROACH_INSECURE") == "true")
    p.add_argument("--etcd-client-addr", default=None,
                   help="the node's etcd client address, if it was started with --etcd-client-addr")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to keep trying to reach the node before giving up (default 10)")


def etcd_endpoint(host: str, port: int | None, etcd_client_addr: str | None) -> tuple[str, str]:
    """(the node's SQL address, its etcd client address)."""
    sql_host, sql_port = split_host_port(host)
    if port is not None:
        sql_port = port
    node = join_host_port(sql_host or "localhost", sql_port)
    if etcd_client_addr:
        return node, etcd_client_addr
    return node, join_host_port(sql_host or "localhost", sql_port + CLIENT_PORT_OFFSET)


def check_certs(certs_dir: str | None) -> None:
    if certs_dir is None:
        return
    for name in ("ca.crt", f"{ROOT_CERT}.crt", f"{ROOT_CERT}.key"):
        if not os.path.exists(os.path.join(certs_dir, name)):
            raise AccessError(f"cannot load {name} from {certs_dir} (create it with `pillbug cert`)")


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[Any]:
    """A connected etcd3aio client for the node --host names; AccessError if it does not answer
    a read within --timeout seconds."""
    node, endpoint = etcd_endpoint(args.host, args.port, args.etcd_client_addr)
    certs_dir = None if args.insecure else args.certs_dir
    check_certs(certs_dir)
    try:
        client = etcd_client([endpoint], certs_dir, ROOT_CERT, rpc_max_attempts=1)
    except (OSError, ValueError) as exc:  # ValueError: a SQL port past 55535 has no etcd port + 10000
        raise AccessError(f"cannot reach node {node} (etcd client address {endpoint}): {exc}") from None
    await client.connect()
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                await client.kv.get(b"x/init", timeout=min(3.0, max(0.1, deadline - time.monotonic())))
                break
            except Exception as exc:
                if time.monotonic() >= deadline:
                    why = " ".join(str(exc).split())[:300]
                    hint = ""
                    if "Connection refused" in why:
                        # the common case: a gateway (a node not in --join) runs no etcd member
                        hint = ("; only voting nodes (those named in --join) serve the cluster's etcd: "
                                "is the node a voter, and running?")
                    raise AccessError(f"cannot reach node {node} (etcd client address {endpoint}) after "
                                      f"{args.timeout:g}s: {why}{hint}") from None
                await asyncio.sleep(0.2)
        yield client
    finally:
        await client.close()


async def member_status(endpoint: str | None, certs_dir: str | None) -> tuple[str, int, bool]:
    """(health, revision, is the leader) of one etcd member; ("unavailable", 0, False) when it does
    not answer within a second, ("", 0, False) for a node without a member (a gateway)."""
    if not endpoint:
        return "", 0, False
    client = etcd_client([endpoint], certs_dir, ROOT_CERT, rpc_max_attempts=1)
    await client.connect()
    try:
        status = await client.maintenance.status(timeout=1.0)
        return "healthy", int(status.header.revision), status.leader == status.header.member_id
    except Exception:
        return "unavailable", 0, False
    finally:
        await client.close()


def parse_seconds(text: str) -> float:
    """A CockroachDB duration flag value (10m, 30s, 1h, or plain seconds)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(text[:-len(suffix)]) * units[suffix]
    return float(text)
