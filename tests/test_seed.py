"""The seed page's promise: its four examples, unmodified, pass against a real node.

Runs ../shared/acceptance/seed/run.py (the project's acceptance check, not edited here) against a
node started with certificates and a password user in the admin role, using the `pillbug sql`
shell and this environment's psycopg2, SQLAlchemy and sqlalchemy-cockroachdb.
"""
import os
import subprocess
import sys

from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG, SHARED

SEED_RUN = os.path.join(SHARED, "acceptance", "seed", "run.py")


def test_seed_examples_pass(node):
    assert os.path.exists(SEED_RUN), f"missing {SEED_RUN}"
    proc = subprocess.run(
        [sys.executable, SEED_RUN, "--sql", PILLBUG + " sql", "--host", "localhost", "--port", str(node.port),
         "--user", ADMIN_USER, "--password", ADMIN_PASSWORD, "--certs-dir", node.certs_dir,
         "--python", sys.executable],
        capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().endswith("4 passed, 0 failed"), proc.stdout + proc.stderr
    assert proc.returncode == 0
