"""The node's HTTP endpoints: /health, /health?ready=1 and /_status/vars.

/health answers 200 while the process is up; /health?ready=1 answers 200 only while the node
accepts SQL connections (load balancers use it), 503 otherwise. /_status/vars exposes a few
Prometheus-format metrics. HTTPS on a secure node, as CockroachDB does.
Requests are bounded (16 KiB of headers, 10 s), one per connection.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

MAX_HEADER = 16 << 10
TIMEOUT = 10.0


class HttpServer:
    def __init__(self, status: Callable[[], dict[str, Any]], metrics: Callable[[], dict[str, float]],
                 ssl_context: ssl.SSLContext | None) -> None:
        self.status = status
        self.metrics = metrics
        self.ssl_context = ssl_context
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, ssl=self.ssl_context,
                                                  reuse_address=True, limit=MAX_HEADER)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                await self._respond(writer, 405, {"error": "method not allowed"})
                return
            path, _, query = parts[1].partition("?")
            if path == "/health":
                status = self.status()
                ready_wanted = "ready=1" in query.split("&") or "ready=true" in query.split("&")
                if ready_wanted and not status.get("ready"):
                    await self._respond(writer, 503, {"error": "node is not ready", **status})
                else:
                    await self._respond(writer, 200, status)
            elif path == "/_status/vars":
                lines = [f"{name} {value}" for name, value in sorted(self.metrics().items())]
                await self._respond_text(writer, 200, "\n".join(lines) + "\n")
            else:
                await self._respond(writer, 404, {"error": "not found"})
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _respond(self, writer: asyncio.StreamWriter, code: int, body: dict) -> None:
        await self._respond_text(writer, code, json.dumps(body), "application/json")

    async def _respond_text(self, writer: asyncio.StreamWriter, code: int, text: str,
                            content_type: str = "text/plain; version=0.0.4") -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[code]
        data = text.encode()
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + data)
        await asyncio.wait_for(writer.drain(), TIMEOUT)
