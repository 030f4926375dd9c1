"""A raw pgwire client for tests: it binds its source address, speaks SSLRequest + TLS, and
records every message the server sends, so that tests can assert on the exact order of the
authentication exchange (e.g. that a refused client was never asked for a password).

It implements just enough of the frontend: StartupMessage, cleartext PasswordMessage and a
SCRAM-SHA-256 client (RFC 5802), then stops at ReadyForQuery or ErrorResponse. It can speak
first as a balancer does (a PROXY protocol header before the first message), in one segment
with that message or in several segments of its own.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

SSL_REQUEST = 80877103
PROTOCOL_3 = 196608
AUTH_NAMES = {0: "AuthenticationOk", 3: "AuthenticationCleartextPassword", 5: "AuthenticationMD5Password",
              10: "AuthenticationSASL", 11: "AuthenticationSASLContinue", 12: "AuthenticationSASLFinal"}


@dataclass
class Exchange:
    """What the server sent, in order: (message type byte, body) pairs."""
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    tls: bool = False
    closed_early: bool = False
    rows: list[list[str | None]] = field(default_factory=list)  # the DataRows of `query`, as text

    def names(self) -> list[str]:
        out = []
        for kind, body in self.messages:
            if kind == "R":
                out.append(AUTH_NAMES.get(struct.unpack_from("!i", body)[0], "Authentication?"))
            else:
                out.append({"E": "ErrorResponse", "Z": "ReadyForQuery", "S": "ParameterStatus",
                            "K": "BackendKeyData", "N": "NoticeResponse"}.get(kind, kind))
        return out

    @property
    def error(self) -> dict[str, str] | None:
        for kind, body in self.messages:
            if kind == "E":
                return error_fields(body)
        return None

    @property
    def authenticated(self) -> bool:
        return "AuthenticationOk" in self.names() and self.names()[-1] == "ReadyForQuery"


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.index(b"\0", pos + 1)
        fields[code] = body[pos + 1:end].decode()
        pos = end + 1
    return fields


def _data_row(body: bytes) -> list[str | None]:
    count = struct.unpack_from("!h", body)[0]
    pos, values = 2, []
    for _ in range(count):
        size = struct.unpack_from("!i", body, pos)[0]
        pos += 4
        values.append(None if size < 0 else body[pos:pos + size].decode())
        pos += max(size, 0)
    return values


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


class _Conn:
    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_message(self) -> tuple[str, bytes]:
        head = self.read_exact(5)
        length = struct.unpack("!i", head[1:])[0]
        return chr(head[0]), self.read_exact(length - 4)


def _refusal(sock: socket.socket, result: Exchange) -> Exchange:
    """The server answered before TLS with an ErrorResponse (e.g. to a PROXY header it does not
    accept), or hung up."""
    conn = _Conn(sock)
    try:
        result.messages.append(conn.read_message())
    except (EOFError, ConnectionError):
        result.closed_early = True
    return result


def _scram_first(user_nonce: str) -> str:
    return f"n,,n=,r={user_nonce}"


def exchange(port: int, user: str, *, source: str = "127.0.0.1", host: str = "127.0.0.1",
             database: str = "defaultdb", use_tls: bool = True, cafile: str | None = None,
             certfile: str | None = None, keyfile: str | None = None, password: str | None = None,
             timeout: float = 10.0, proxy_header: bytes | list[bytes] = b"",
             query: str | None = None) -> Exchange:
    """Connect from `source`, authenticate as `user`, and record everything the server sends; with
    `query`, run it once authenticated and keep its rows.

    proxy_header: bytes sent before the first message, in the same segment; a list of pieces is
    sent piece by piece, each in a segment of its own, before the first message."""
    result = Exchange()
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    raw.bind((source, 0))
    raw.connect((host, port))
    sock: socket.socket | ssl.SSLSocket = raw
    first = b""
    try:
        if isinstance(proxy_header, list):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in proxy_header:
                try:
                    raw.sendall(piece)
                except ConnectionError:
                    return _refusal(raw, result)
                time.sleep(0.02)  # so that the server reads each piece on its own (how segments arrive)
        else:
            first = proxy_header
        if use_tls:
            try:
                raw.sendall(first + struct.pack("!ii", 8, SSL_REQUEST))
            except ConnectionError:
                return _refusal(raw, result)
            first = b""
            try:
                answer = raw.recv(1, socket.MSG_PEEK)
            except ConnectionError:
                answer = b""
            if answer == b"N":
                raise AssertionError("server refused TLS")
            if answer != b"S":
                return _refusal(raw, result)
            raw.recv(1)
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.check_hostname = False
            if certfile:
                ctx.load_cert_chain(certfile, keyfile)
            sock = ctx.wrap_socket(raw, server_hostname="localhost")
            result.tls = True
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                          for k, v in (("user", user), ("database", database)))
        payload = struct.pack("!i", PROTOCOL_3) + params + b"\0"
        sock.sendall(first + struct.pack("!i", len(payload) + 4) + payload)
        conn = _Conn(sock)
        scram: dict = {}
        while True:
            try:
                kind, body = conn.read_message()
            except (EOFError, ConnectionError, ssl.SSLError):
                result.closed_early = True
                return result
            result.messages.append((kind, body))
            if kind == "Z" and query is not None:
                sock.sendall(_message(b"Q", query.encode() + b"\0"))
                query = None
                continue
            if kind == "D":
                result.rows.append(_data_row(body))
            if kind in ("E", "Z"):
                return result
            if kind != "R":
                continue
            code = struct.unpack_from("!i", body)[0]
            if code in (3, 10) and password is None:
                return result  # asked for a password we do not have: stop here
            if code == 3:
                sock.sendall(_message(b"p", password.encode() + b"\0"))
            elif code == 10:
                nonce = base64.b64encode(os.urandom(18)).decode()
                first = _scram_first(nonce)
                scram["bare"] = first[3:]
                data = first.encode()
                sock.sendall(_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(data)) + data))
            elif code == 11:
                server_first = body[4:].decode()
                attrs = dict(part.split("=", 1) for part in server_first.split(","))
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                             int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", "sha256").digest()
                stored = hashlib.sha256(client_key).digest()
                without_proof = f"c=biws,r={attrs['r']}"
                auth = f"{scram['bare']},{server_first},{without_proof}".encode()
                signature = hmac.new(stored, auth, "sha256").digest()
                proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
                sock.sendall(_message(b"p", f"{without_proof},p={proof}".encode()))
    finally:
        try:
            sock.close()
        except OSError:
            pass
