"""How the CLI asks a node whether it serves: its `/health?ready=1` (server/http.py), the endpoint
balancers check, over HTTPS against the cluster's CA on a secure node, plain HTTP on an insecure
one. `pillbug demo` and `pillbug cluster` wait on it and report it."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

READY = "ready"
OUT_OF_SERVICE = ("draining", "decommissioned")  # not ready by an operator's choice


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A context that verifies a node's certificate against the cluster's CA."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False  # the address is one of the certificate's, but urllib passes none
    return ctx


def node_state(host: str, http_port: int, ctx: ssl.SSLContext | None) -> str:
    """"ready"; "draining" or "decommissioned" (taken out of service); "not ready" (starting, or no
    etcd quorum); or "down" (no answer). `ctx` None: an insecure node (plain HTTP)."""
    scheme = "https" if ctx is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{http_port}/health?ready=1", timeout=2,
                                    context=ctx) as resp:
            return READY if resp.status == 200 else "not ready"
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read(4096) or b"{}")
        except ValueError:
            body = {}
        return next((state for state in OUT_OF_SERVICE if body.get(state)), "not ready")
    except (urllib.error.URLError, OSError):
        return "down"
