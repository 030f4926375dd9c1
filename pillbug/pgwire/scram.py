"""The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding.

Written here rather than taken from scramp because libpq sends an empty user name in its
client-first message ("n=,r=...", the user is in the startup packet), which scramp refuses.
A pure exchange: client_first() returns the server-first message, client_final() checks the
proof and returns the server-final message; a bad proof raises ValueError.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ValueError(f"malformed SCRAM attribute {part!r}")
        out[part[0]] = part[2:]
    return out


class ScramServer:
    def __init__(self, salt: bytes, stored_key: bytes, server_key: bytes, iterations: int) -> None:
        self.salt = salt
        self.stored_key = stored_key
        self.server_key = server_key
        self.iterations = iterations
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def client_first(self, message: str) -> str:
        # gs2-header: "n,," (no channel binding) or "y,," (client supports it, server does not)
        if not (message.startswith("n,") or message.startswith("y,")):
            raise ValueError("channel binding is not supported")
        _, _, rest = message.partition(",")
        authzid, _, bare = rest.partition(",")
        if authzid:
            raise ValueError("authorization identities are not supported")
        attrs = _attributes(bare)
        client_nonce = attrs.get("r")
        if not client_nonce or "m" in attrs:
            raise ValueError("missing client nonce")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = f"r={self._nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        return self._server_first

    def client_final(self, message: str) -> str:
        without_proof, _, proof_part = message.rpartition(",p=")
        if not without_proof:
            raise ValueError("missing proof")
        attrs = _attributes(without_proof)
        if attrs.get("r") != self._nonce:
            raise ValueError("nonce mismatch")
        if attrs.get("c") not in ("biws", "eSws"):  # base64 of "n,," and "y,,"
            raise ValueError("unexpected channel binding")
        proof = base64.b64decode(proof_part)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.new(self.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(client_signature):
            raise ValueError("bad proof")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key):
            raise ValueError("bad proof")
        server_signature = hmac.new(self.server_key, auth_message, hashlib.sha256).digest()
        return "v=" + base64.b64encode(server_signature).decode()
