"""Shared fixtures: real certificates, real server processes, real clients over real sockets.

`certs` makes a CA, a node certificate for localhost/127.0.0.1 and a root client certificate with
the `pillbug cert` CLI. `node` starts `pillbug start-single-node` (one per test module) on free
ports with its own store, creates an admin-role user with a password, and stops the process when
the module is done. Tests connect with psycopg2/psycopg/asyncpg/psql exactly as users do.

PILLBUG_TEST_STORE=SPEC starts every node with `--test-store=SPEC` (storage/suspending.py), so
that the whole suite can run with store reads that wait: `PILLBUG_TEST_STORE=suspending pytest tests`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shared acceptance folder sits beside a checkout (../shared) or wherever PILLBUG_SHARED says.
# A clone of the repository alone has none: the tests that need it skip, except under CI=true.
SHARED = os.environ.get("PILLBUG_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
SEED_DIR = os.path.join(SHARED, "acceptance", "seed")
BIN = os.path.dirname(sys.executable)
PILLBUG = os.path.join(BIN, "pillbug")
ADMIN_USER = "dbadmin"
ADMIN_PASSWORD = "Adm1n-secret-pw"
TEST_STORE = os.environ.get("PILLBUG_TEST_STORE", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([PILLBUG, *args], capture_output=True, text=True, timeout=120, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"pillbug {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def make_certs(directory: str, users: tuple[str, ...] = ("root",)) -> str:
    certs = os.path.join(directory, "certs")
    ca_key = os.path.join(directory, "safe", "ca.key")
    run_cli("cert", "create-ca", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-node", "localhost", "127.0.0.1", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    for user in users:
        run_cli("cert", "create-client", user, f"--certs-dir={certs}", f"--ca-key={ca_key}")
    return certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_certs(str(tmp_path_factory.mktemp("pki")), ("root", "testuser"))


@dataclass
class Node:
    """A running `pillbug start-single-node` process."""
    certs_dir: str | None
    store: str
    port: int = 0
    http_port: int = 0
    host: str = "localhost"
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def insecure(self) -> bool:
        return self.certs_dir is None

    def start(self, timeout: float = 60.0) -> None:
        self.port = self.port or free_port()
        self.http_port = self.http_port or free_port()
        args = [PILLBUG, "start-single-node", f"--store={self.store}",
                f"--listen-addr=127.0.0.1:{self.port}", f"--http-addr=127.0.0.1:{self.http_port}"]
        args += ["--insecure"] if self.insecure else [f"--certs-dir={self.certs_dir}"]
        args += self.extra_args
        if TEST_STORE and not any(a.startswith("--test-store") for a in args):
            args.append(f"--test-store={TEST_STORE}")
        self.log_path = self.store.rstrip("/") + ".log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(self.store))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            if self.is_ready():
                return
            time.sleep(0.05)
        raise AssertionError(f"node did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    def health(self, ready: bool = False) -> tuple[int, bytes]:
        scheme = "http" if self.insecure else "https"
        url = f"{scheme}://127.0.0.1:{self.http_port}/health" + ("?ready=1" if ready else "")
        ctx = None
        if not self.insecure:
            ctx = ssl.create_default_context(cafile=os.path.join(self.certs_dir, "ca.crt"))
            ctx.check_hostname = False
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def is_ready(self) -> bool:
        try:
            return self.health(ready=True)[0] == 200
        except (OSError, ssl.SSLError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # ---- connecting --------------------------------------------------------------------

    def params(self, user: str = "root", password: str | None = None, database: str = "defaultdb",
               use_cert: bool | None = None) -> dict[str, str]:
        params = {"host": self.host, "port": str(self.port), "user": user, "dbname": database}
        if self.insecure:
            params["sslmode"] = "disable"
            return params
        params["sslmode"] = "verify-full"
        params["sslrootcert"] = os.path.join(self.certs_dir, "ca.crt")
        if use_cert is None:
            use_cert = password is None
        crt = os.path.join(self.certs_dir, f"client.{user}.crt")
        if use_cert and os.path.exists(crt):
            params["sslcert"] = crt
            params["sslkey"] = os.path.join(self.certs_dir, f"client.{user}.key")
        if password is not None:
            params["password"] = password
        return params

    def url(self, user: str = "root", password: str | None = None, database: str = "defaultdb") -> str:
        p = self.params(user, password, database)
        cred = user if password is None else f"{user}:{password}"
        query = "&".join(f"{k}={v}" for k, v in p.items() if k not in ("host", "port", "user", "dbname", "password"))
        return f"postgresql://{cred}@{self.host}:{self.port}/{database}?{query}"

    def connect(self, user: str = "root", password: str | None = None, database: str = "defaultdb",
                autocommit: bool = True, **kwargs):
        import psycopg2
        conn = psycopg2.connect(**self.params(user, password, database), **kwargs)
        conn.autocommit = autocommit
        return conn

    def sql(self, *statements: str, user: str = "root", database: str = "defaultdb") -> list:
        """Run statements as root and return the rows of the last one that returns rows."""
        conn = self.connect(user=user, database=database)
        return run_and_close(conn, statements)


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_and_close(conn, statements) -> list:
    """Run statements on a connection, close it, and return the rows of the last one that returns
    rows."""
    try:
        rows: list = []
        with conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
                if cur.description is not None:
                    rows = cur.fetchall()
        return rows
    finally:
        conn.close()


def start_node(tmp: str, certs_dir: str | None, extra_args: list[str] | None = None,
               admin: bool = True) -> Node:
    store = os.path.join(tmp, "store")
    node = Node(certs_dir=certs_dir, store=store, extra_args=extra_args or [])
    node.start()
    if admin and certs_dir is not None:
        node.sql(f"CREATE USER IF NOT EXISTS {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}'",
                 f"GRANT admin TO {ADMIN_USER}")
    return node


@pytest.fixture(scope="module")
def node(certs: str) -> Iterator[Node]:
    tmp = tempfile.mkdtemp(prefix="pillbug-node-")
    n = start_node(tmp, certs)
    try:
        yield n
    finally:
        n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_node(certs: str, tmp_path) -> Iterator[Node]:
    """A node of the test's own, for tests that restart, kill or reconfigure it."""
    n = start_node(str(tmp_path), certs)
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def db(node: Node, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    node.sql(f"DROP DATABASE IF EXISTS {name} CASCADE", f"CREATE DATABASE {name}")
    yield name
    try:
        node.sql(f"DROP DATABASE IF EXISTS {name} CASCADE")
    except Exception:
        pass


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def seed_dir() -> str:
    """The shared acceptance seed folder, for the extra run of the seed page's own examples.

    Session-scoped so that a test asking for it skips before any node starts. Without the folder
    the test is skipped, except in CI (CI=true), which is promised the folder: there it fails, so
    CI cannot silently lose the acceptance run.
    """
    if os.path.isfile(os.path.join(SEED_DIR, "run.py")):
        return SEED_DIR
    why = (f"shared acceptance seed not found at {SEED_DIR} (an extra run: put the shared folder "
           f"beside the checkout as ../shared or set PILLBUG_SHARED to it)")
    if in_ci():
        pytest.fail(f"{why}; CI=true promises it", pytrace=False)
    pytest.skip(why)


def in_thread(fn):
    """Run fn in a daemon thread; returns the thread and a dict that gets fn's "result" or the
    "error" it raised, for the test to check after joining."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# ---- waiting for conditions, not for time ------------------------------------------------------

def wait_for(predicate, what: str, timeout: float = 30.0, every: float = 0.01):
    """Poll predicate until it returns something true and return that; fail after timeout seconds
    (a liveness bound: the verdict is the condition, never the time waited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the local TCP socket local_port -> remote_port, as
    the kernel reports them in /proc/net/tcp (Linux); None if there is no such socket."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    return None


def wait_until_the_pipe_is_full(server_port: int, client_port: int, timeout: float = 60.0) -> tuple[int, int]:
    """Wait until a client that does not read has held the server back: the kernel holds bytes the
    client has not read and bytes the server could not send yet, and the client's receive queue
    did not move between two looks (its window is closed). Returns (unsent, unread) bytes."""
    last = [-1]

    def full():
        server_side = tcp_queues(server_port, client_port)
        client_side = tcp_queues(client_port, server_port)
        assert server_side is not None and client_side is not None, "the connection is not in /proc/net/tcp"
        unsent, unread = server_side[0], client_side[1]
        steady, last[0] = unread == last[0], unread
        return (unsent, unread) if unsent > 0 and unread > 0 and steady else None
    return wait_for(full, "the client's receive window to fill", timeout)


def round_trips(node: Node, n: int, database: str = "defaultdb") -> None:
    """n statements from another client, one after another. The node serves every connection from
    one event loop, giving each runnable statement a time slice per turn of the loop, so this also
    gives any statement still able to run n turns: a measure of opportunity, not of time."""
    conn = node.connect(database=database)
    try:
        with conn.cursor() as cur:
            for i in range(n):
                cur.execute("SELECT %s + 1", (i,))
                assert cur.fetchone() == (i + 1,)
    finally:
        conn.close()
