"""Startup and authentication: from the first byte to ReadyForQuery.

SSLRequest (and the TLS upgrade, keeping bytes decrypted before start_tls returns), GSSENCRequest
(refused), CancelRequest (handed to the server), the StartupMessage and its parameters (user name
folding, `options=-c ...`), the HBA decision and the password/SCRAM/certificate exchange
(auth.py's Authenticator, scram.py), then the new session, the connect privilege, the reported
ParameterStatus values and BackendKeyData. STARTUP_TIMEOUT bounds the whole of it.

A mixin of Connection (connection.py), whose driver routes the messages of the "startup" and
"auth" states here and owns the transport, the reader and the output buffer. It must not know
about queries: once the session exists it sets `state` to "ready" and is done.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from typing import Any

from pillbug.pgwire import messages as M
from pillbug.pgwire.auth import Authenticator
from pillbug.sql import statements as sql_statements
from pillbug.sql import vars as session_vars
from pillbug.util import errors

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0  # seconds from accept to authenticated, as PostgreSQL's authentication_timeout


def _startup_options(params: dict[str, str]) -> dict[str, str]:
    """Session variables from the startup packet: known keys and `options=-c key=value`."""
    options: dict[str, str] = {}
    for key, value in params.items():
        if key in ("user", "database", "options", "application_name", "replication", "crdb:remote_addr"):
            continue
        if session_vars.canonical(key) in session_vars.DEFINITIONS and \
                session_vars.canonical(key) not in session_vars.READ_ONLY:
            options[key] = value
    raw = params.get("options", "")
    tokens = raw.replace("--", "-c ").split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "-c" and i + 1 < len(tokens):
            tok = tokens[i + 1]
            i += 1
        elif tok.startswith("-c"):
            tok = tok[2:]
        if "=" in tok:
            k, _, v = tok.partition("=")
            if k not in ("cluster",) and session_vars.canonical(k) in session_vars.DEFINITIONS:
                options[k] = v
        i += 1
    return options


class StartupMixin:
    """SSLRequest, CancelRequest, StartupMessage and authentication, for Connection."""

    server: Any
    transport: Any
    reader: M.Reader
    out: bytearray
    state: str
    session: Any
    closed: bool
    is_tls: bool
    tls_upgrading: bool
    early_data: bytearray
    peer: str | None
    cert_user: str | None
    startup_params: dict[str, str]
    authenticator: Authenticator | None
    _startup_timer: asyncio.TimerHandle | None

    def _start_startup_timer(self) -> None:
        # A connection that never finishes its startup must not hold a slot forever.
        self._startup_timer = asyncio.get_running_loop().call_later(STARTUP_TIMEOUT, self._startup_timed_out)

    def _startup_timed_out(self) -> None:
        if self.state in ("startup", "auth") and not self.closed:
            self._fatal(errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                       "connection did not complete authentication in time"))

    def _startup(self, body: bytes) -> Coroutine | None:
        reader = M.Body(body)
        code = reader.int32()
        if code == M.SSL_REQUEST:
            if self.is_tls:
                self._fatal(errors.protocol_violation("duplicate SSLRequest"))
                return None
            if self.server.ssl_context is None:
                self.transport.write(b"N")
                return None
            if self.reader.buf:
                # Bytes sent before the handshake must not pass for bytes sent inside TLS.
                self._fatal(errors.protocol_violation("received unencrypted data after SSL request"))
                return None
            self.transport.write(b"S")
            self.tls_upgrading = True
            return self._upgrade_tls()
        if code == M.GSSENC_REQUEST:
            self.transport.write(b"N")
            return None
        if code == M.CANCEL_REQUEST:
            pid = reader.int32()
            secret = reader.int32()
            self.server.cancel(pid, secret)
            self.close()
            return None
        if code != M.PROTOCOL_3:
            self._fatal(errors.protocol_violation(
                f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0"))
            return None
        params: dict[str, str] = {}
        while not reader.done():
            key = reader.cstring()
            if not key:
                break
            params[key] = reader.cstring()
        self.startup_params = params
        self.reader.startup = False
        if self.server.ssl_context is not None and not self.is_tls:
            self._fatal(errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                       "node is running secure mode, SSL connection required"))
            return None
        user = params.get("user", "").strip()
        if not user:
            self._fatal(errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                       "no username specified"))
            return None
        # CockroachDB folds unquoted user names to lower case.
        self.startup_params["user"] = user.lower() if user.lower() != user and user.isascii() else user
        self.startup_params.setdefault("database", "")
        try:
            catalog = self.server.engine.latest_catalog()
            self.authenticator = Authenticator(catalog, self.startup_params["user"], self._database(),
                                               self.peer, self.is_tls, self.cert_user, self.server.insecure)
            reply, done = self.authenticator.start()
        except errors.PgError as exc:
            self._fatal(exc)
            return None
        self.out += reply
        if done:
            return self._authenticated()
        self.state = "auth"
        self.flush()
        return None

    def _database(self) -> str:
        return self.startup_params.get("database") or "defaultdb"

    async def _upgrade_tls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, self.server.ssl_context, server_side=True,
                                             ssl_handshake_timeout=15)
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self.tls_upgrading = False
            self.close()
            return
        if transport is None:
            self.close()
            return
        self.transport = transport
        self.is_tls = True
        self.tls_upgrading = False
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        self.cert_user = value
        data = bytes(self.early_data)
        self.early_data.clear()
        if data:
            self.reader.feed(data)

    def _auth_message(self, body: bytes) -> Coroutine | None:
        assert self.authenticator is not None
        try:
            reply, done = self.authenticator.receive(body)
        except errors.PgError as exc:
            self._fatal(exc)
            return None
        self.out += reply
        if done:
            return self._authenticated()
        self.flush()
        return None

    async def _authenticated(self) -> None:
        params = self.startup_params
        engine = self.server.engine
        options = _startup_options(params)
        try:
            session = engine.new_session(params["user"], self._database(),
                                         application_name=params.get("application_name", ""),
                                         client_addr=self.peer or "", options=options)
        except errors.PgError as exc:
            self._fatal(exc)
            return
        self.session = session
        session.terminate = self._terminated
        try:
            sql_statements.check_connect(session, session.database)
        except errors.PgError as exc:
            self._fatal(exc)
            return
        self.state = "ready"
        self._startup_timer.cancel()
        session.reported_changes.clear()
        catalog = engine.latest_catalog()
        for name in session_vars.REPORTED:
            if name == "is_superuser":
                value = "on" if catalog.is_admin(session.user) else "off"
            elif name == "session_authorization":
                value = session.user
            else:
                value = session.show_var(name)
            self.out += M.parameter_status(name, value)
        self.out += M.backend_key_data(session.backend_pid, session.secret_key)
        self._ready()
