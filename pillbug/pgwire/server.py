"""The SQL listener: accepts connections and hands each to a Connection; routes cancel requests.

It knows the engine (to create sessions), the TLS context (None with --insecure), the networks
of the balancers trusted to send a PROXY protocol header (proxy_protocol.py; none by default) and
the live connections, so that a CancelRequest, which arrives on a connection of its own, can find
the session it is for. It knows nothing of HTTP or of the node's other parts.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

from pillbug.pgwire.connection import Connection
from pillbug.sql import cluster
from pillbug.util import timeslice

log = logging.getLogger(__name__)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PgServer:
    def __init__(self, engine: Any, ssl_context: ssl.SSLContext | None,
                 proxy_protocol_from: Iterable[Network] = ()) -> None:
        self.engine = engine
        self.ssl_context = ssl_context
        self.insecure = ssl_context is None
        # Whoever may send a PROXY header names the client's address, which the allowlist then
        # believes: only the operator's balancers may, never a client.
        self.proxy_protocol_from: tuple[Network, ...] = tuple(proxy_protocol_from)
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._forwards: set[asyncio.Task] = set()  # cancel requests on their way to another node

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port,
                                                reuse_address=True, backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    def is_trusted_balancer(self, address: str | None) -> bool:
        """Whether a connection from this socket address may start with a PROXY protocol header."""
        if address is None or not self.proxy_protocol_from:
            return False
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 scope id is no part of it
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 balancer seen through a dual-stack socket
        return any(ip in network for network in self.proxy_protocol_from)

    def cancel(self, pid: int, secret: int) -> None:
        engine = self.engine
        session = engine.sessions.get(pid)
        if session is not None and hmac.compare_digest(
                session.secret_key.to_bytes(4, "big"), (secret & 0xFFFFFFFF).to_bytes(4, "big")):
            session.cancel()
            return
        node = cluster.pid_node(pid)
        if session is None and engine.cluster is not None and node not in (0, engine.node_id):
            # A load balancer sent the CancelRequest to another node than the session's: forward
            # it; the owner checks the secret. Nothing answers a CancelRequest, so neither do we.
            task = asyncio.get_running_loop().create_task(self._forward_cancel(node, pid, secret))
            self._forwards.add(task)
            task.add_done_callback(self._forwards.discard)

    async def _forward_cancel(self, node: int, pid: int, secret: int) -> None:
        request = {"kind": "cancel_request", "pid": pid, "secret": secret & 0xFFFFFFFF}
        try:
            await timeslice.run(self.engine.cluster.call, node, request)
        except Exception as exc:  # the client is long gone; the node log is the only place to say it
            log.info("could not forward a cancel request to node %d: %s", node, exc)

    async def drain(self, query_wait: float) -> int:
        """Stop taking new sessions, let open ones finish what they are doing (a statement, or a
        transaction) for up to query_wait seconds, then end every one that is left with FATAL
        57P01, so that a client learns why its connection went rather than seeing it drop.
        Returns how many sessions were ended that way."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + query_wait
        while time.monotonic() < deadline and any(_is_working(conn) for conn in self.connections):
            await asyncio.sleep(0.05)
        ended = 0
        for conn in list(self.connections):
            session = conn.session
            if session is not None and not conn.closed:
                self.engine.activity.terminate(session)  # its statement stops; the client hears 57P01
                ended += 1
        return ended

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in list(self.connections):
            conn.close()


def _is_working(conn: Connection) -> bool:
    """Whether a connection is running a statement or holds an open transaction."""
    session = conn.session
    return not conn.closed and (conn.busy or (session is not None and session.ready_status != "I"))
