"""The seed page's promise: its four examples, unmodified, pass against a real node.

An extra run, not part of a clone alone: it needs the shared acceptance folder
(../shared/acceptance/seed, or PILLBUG_SHARED), and skips without it except under CI=true, where it
fails (see the seed_dir fixture). tests/test_connect_flows.py covers the same flows with the
project's own code and runs everywhere.

Runs the seed folder's run.py (the project's acceptance check, not edited here) against a node
started with certificates and a password user in the admin role, using the `pillbug sql` shell and
this environment's psycopg2, SQLAlchemy and sqlalchemy-cockroachdb.
"""
import os
import subprocess
import sys

from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG


def test_seed_examples_pass(seed_dir, node):
    proc = subprocess.run(
        [sys.executable, os.path.join(seed_dir, "run.py"), "--sql", PILLBUG + " sql", "--host", "localhost",
         "--port", str(node.port), "--user", ADMIN_USER, "--password", ADMIN_PASSWORD,
         "--certs-dir", node.certs_dir, "--python", sys.executable],
        capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().endswith("4 passed, 0 failed"), proc.stdout + proc.stderr
    assert proc.returncode == 0
