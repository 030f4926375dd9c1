"""Authentication of one connection: the HBA (allowlist) decision, then the method's exchange.

A pure state machine: start() and each receive() return the bytes to send and whether the
client is now authenticated; failures raise PgError (28000 refused, 28P01 bad password). It does
no I/O and reads the catalog (users, the HBA setting) through the snapshot it is given.

Order matters: the address check comes first, so that a client outside the allowlist is refused
before it is asked for any password. root with a valid client certificate is always let in, so
that a wrong HBA setting can never lock the operator out. An unknown user and a wrong password
get the same answer after the same work (a decoy verifier), so neither tells a user exists.
"""
from __future__ import annotations

from pillbug.pgwire import messages as M
from pillbug.pgwire.scram import ScramServer
from pillbug.sql.catalog.system import ROOT_USER, Catalog
from pillbug.sql.settings import HBA_SETTING
from pillbug.util import errors, hba, passwords

SCRAM = "SCRAM-SHA-256"


def _password_failed(user: str) -> errors.PgError:
    return errors.PgError(errors.INVALID_PASSWORD, f"password authentication failed for user {user}")


class Authenticator:
    def __init__(self, catalog: Catalog, user: str, database: str, address: str | None, is_tls: bool,
                 cert_user: str | None, insecure: bool) -> None:
        self.catalog = catalog
        self.user = user
        self.database = database
        self.address = address
        self.is_tls = is_tls
        self.cert_user = cert_user  # the CN of a verified client certificate, if any
        self.insecure = insecure
        self.state = "start"
        self._scram = None
        record = catalog.users.get(user)
        self.record = record
        verifier = record.verifier if record is not None else None
        self._verifier = verifier or passwords.decoy_verifier(user)
        self._user_ok = record is not None and verifier is not None

    def start(self) -> tuple[bytes, bool]:
        record = self.record
        if self.insecure:
            if record is None:
                raise errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                     f"role \"{self.user}\" does not exist")
            self._check_login()
            return M.AUTH_OK, True
        if self.user == ROOT_USER and self.cert_user == ROOT_USER:
            return M.AUTH_OK, True
        rules = hba.rules_for(self.catalog.settings.get(HBA_SETTING, ""))
        rule = hba.match(rules, "host", self.database, self.user, self.address, self.is_tls)
        if rule is None:
            raise errors.PgError(
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
                f'no {HBA_SETTING} entry for host "{self.address}", user "{self.user}", '
                f'database "{self.database}"',
                hint="the client's address is not in the cluster's IP allowlist")
        if rule.method == "reject":
            raise errors.PgError(
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
                f'authentication rejected by configuration for host "{self.address}", user "{self.user}", '
                f'database "{self.database}"')
        method = rule.method
        if method == "trust":
            self._check_exists()
            return M.AUTH_OK, True
        # As in CockroachDB, a client that presents a certificate under cert-password is judged by
        # that certificate alone: one issued to another user is refused, not retried as a password.
        if method == "cert" or (method in ("cert-password", "cert-scram-sha-256") and self.cert_user is not None):
            if self.cert_user is None:
                raise errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                     "no TLS peer certificates, but required for auth")
            if self.cert_user != self.user:
                raise errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                     f"requested user is {self.user}, but certificate is for {self.cert_user}")
            self._check_exists()
            return M.AUTH_OK, True
        if method == "password":
            self.state = "cleartext"
            return M.AUTH_CLEARTEXT, False
        # scram-sha-256, cert-password, cert-scram-sha-256 without a matching certificate
        self.state = "sasl_initial"
        return M.auth_sasl([SCRAM]), False

    def _check_exists(self) -> None:
        if self.record is None:
            raise errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                 f"password authentication failed for user {self.user}")
        self._check_login()

    def _check_login(self) -> None:
        if self.record is not None and not self.record.can_login:
            raise errors.PgError(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                                 f"{self.user} does not have login privilege")

    def receive(self, body: bytes) -> tuple[bytes, bool]:
        """A PasswordMessage / SASLInitialResponse / SASLResponse body."""
        if self.state == "cleartext":
            password = body.rstrip(b"\x00").decode(errors="replace")
            ok = passwords.check_password(self._verifier, password)
            if not (ok and self._user_ok):
                raise _password_failed(self.user)
            self._check_login()
            self.state = "done"
            return M.AUTH_OK, True
        if self.state == "sasl_initial":
            reader = M.Body(body)
            mechanism = reader.cstring()
            if mechanism != SCRAM:
                raise errors.PgError(errors.PROTOCOL_VIOLATION, f"unsupported SASL mechanism {mechanism}")
            length = reader.int32()
            data = reader.bytes(length) if length >= 0 else b""
            self._scram = ScramServer(*passwords.parse_verifier(self._verifier))
            try:
                first = self._scram.client_first(data.decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise errors.PgError(errors.PROTOCOL_VIOLATION, f"invalid SCRAM message: {exc}") from None
            self.state = "sasl_final"
            return M.auth_sasl_continue(first.encode()), False
        if self.state == "sasl_final":
            assert self._scram is not None
            try:
                final = self._scram.client_final(body.decode())
            except (ValueError, UnicodeDecodeError):
                raise _password_failed(self.user) from None
            if not self._user_ok:
                raise _password_failed(self.user)
            self._check_login()
            self.state = "done"
            return M.auth_sasl_final(final.encode()) + M.AUTH_OK, True
        raise errors.protocol_violation("unexpected authentication message")
