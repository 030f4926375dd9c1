"""TLS contexts of a secure node, from the files in its --certs-dir (CockroachDB's names)."""
from __future__ import annotations

import os
import ssl

from pillbug.util import errors


def server_context(certs_dir: str) -> ssl.SSLContext:
    """Serves node.crt/node.key; asks for (but does not require) a client certificate from ca.crt."""
    paths = {name: os.path.join(certs_dir, name) for name in ("ca.crt", "node.crt", "node.key")}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise errors.PgError(errors.CONNECTION_EXCEPTION,
                             f"cannot start a secure node: missing {', '.join(missing)} "
                             f"(create them with `pillbug cert create-ca` and `pillbug cert create-node`)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths["node.crt"], paths["node.key"])
    ctx.load_verify_locations(paths["ca.crt"])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
