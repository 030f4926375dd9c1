"""A raw protocol-3.0 client for tests that must send what no driver would.

It speaks just enough of the protocol (SSLRequest + TLS with the root client certificate, the
startup message, message framing) to send arbitrary bytes and read the server's messages back.
"""
from __future__ import annotations

import os
import socket
import ssl
import struct

SSL_REQUEST = struct.pack(">ii", 8, 80877103)


def message(msg_type: bytes, body: bytes = b"") -> bytes:
    return msg_type + struct.pack(">i", len(body) + 4) + body


def cstr(text: str | bytes) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\x00"


def startup_packet(user: str = "root", database: str = "defaultdb", **extra: str) -> bytes:
    params = {"user": user, "database": database, **extra}
    body = struct.pack(">i", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return struct.pack(">i", len(body) + 4) + body


def parse(sql: str | bytes, name: str = "", oids: tuple[int, ...] = ()) -> bytes:
    return message(b"P", cstr(name) + cstr(sql) + struct.pack(">h", len(oids))
                   + b"".join(struct.pack(">I", o) for o in oids))


def bind(params: list[bytes | None], formats: tuple[int, ...] = (), portal: str = "", stmt: str = "",
         result_formats: tuple[int, ...] = ()) -> bytes:
    body = cstr(portal) + cstr(stmt) + struct.pack(">h", len(formats)) + b"".join(struct.pack(">h", f) for f in formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(">h", len(result_formats)) + b"".join(struct.pack(">h", f) for f in result_formats)
    return message(b"B", body)


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return message(b"E", cstr(portal) + struct.pack(">i", max_rows))


def describe(kind: bytes, name: str = "") -> bytes:
    return message(b"D", kind + cstr(name))


SYNC = message(b"S")
FLUSH = message(b"H")
TERMINATE = message(b"X")


def query(sql: str | bytes) -> bytes:
    return message(b"Q", cstr(sql))


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class RawConnection:
    def __init__(self, host: str, port: int, certs_dir: str | None, timeout: float = 30.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=timeout)
        self.certs_dir = certs_dir
        self.buf = b""

    def tls(self) -> None:
        self.sock.sendall(SSL_REQUEST)
        assert self.sock.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=os.path.join(self.certs_dir, "ca.crt"))
        ctx.check_hostname = False
        ctx.load_cert_chain(os.path.join(self.certs_dir, "client.root.crt"),
                            os.path.join(self.certs_dir, "client.root.key"))
        self.sock = ctx.wrap_socket(self.sock)

    def login(self, **params: str) -> list[tuple[bytes, bytes]]:
        self.tls()
        self.send(startup_packet(**params))
        return self.read_until(b"Z")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buf += data
        return True

    def read_message(self) -> tuple[bytes, bytes] | None:
        while len(self.buf) < 5:
            if not self._fill():
                return None
        (length,) = struct.unpack(">i", self.buf[1:5])
        while len(self.buf) < length + 1:
            if not self._fill():
                return None
        msg = (self.buf[:1], self.buf[5:length + 1])
        self.buf = self.buf[length + 1:]
        return msg

    def read_until(self, msg_type: bytes = b"Z") -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first of msg_type (or until the server closes)."""
        out = []
        while True:
            msg = self.read_message()
            if msg is None:
                return out
            out.append(msg)
            if msg[0] == msg_type:
                return out

    def errors(self, messages: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
        return [error_fields(body) for t, body in messages if t == b"E"]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
