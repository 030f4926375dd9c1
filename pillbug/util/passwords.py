"""Password verifiers: salted SCRAM-SHA-256, the only form in which passwords are stored.

A verifier is PostgreSQL's text form "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
(base64 parts). It serves both SCRAM authentication (the server needs only StoredKey and
ServerKey) and cleartext password authentication inside TLS (recompute and compare).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096
PREFIX = "SCRAM-SHA-256$"


def make_verifier(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"{PREFIX}{iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def parse_verifier(verifier: str) -> tuple[bytes, bytes, bytes, int]:
    """(salt, stored_key, server_key, iterations)."""
    if not verifier.startswith(PREFIX):
        raise ValueError("not a SCRAM-SHA-256 verifier")
    head, keys = verifier[len(PREFIX):].split("$", 1)
    iterations_text, salt_b64 = head.split(":", 1)
    stored_b64, server_b64 = keys.split(":", 1)
    b64 = base64.b64decode
    return b64(salt_b64), b64(stored_b64), b64(server_b64), int(iterations_text)


def check_password(verifier: str, password: str) -> bool:
    salt, stored_key, server_key, iterations = parse_verifier(verifier)
    got_stored, got_server = _keys(password, salt, iterations)
    return hmac.compare_digest(got_stored, stored_key) and hmac.compare_digest(got_server, server_key)


_DECOY_SECRET = os.urandom(32)


def decoy_verifier(user: str) -> str:
    """A verifier for a password nobody knows, for a user that does not exist (or has no password).

    Such a user goes through the same exchange and the same work as a real one, and, as a real
    user's salt does, its salt stays the same from one attempt to the next and differs between
    names; so neither the answer, nor its timing, nor the salt tells whether a user exists.
    """
    def part(label: bytes, size: int) -> bytes:
        return hmac.new(_DECOY_SECRET, label + b"\0" + user.encode(), "sha256").digest()[:size]
    b64 = base64.b64encode
    return (f"{PREFIX}{ITERATIONS}:{b64(part(b'salt', 16)).decode()}$"
            f"{b64(part(b'stored', 32)).decode()}:{b64(part(b'server', 32)).decode()}")
