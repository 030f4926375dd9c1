"""The two servers under test, started by the benchmark on their own ports and stopped at the end.

`make_pki` makes the run's CA, a node certificate for localhost/127.0.0.1 and a root client
certificate with `pillbug cert`. `PostgresServer` runs Debian's PostgreSQL 15 binaries (initdb into
a temporary directory, default settings except the port, the socket directory and ssl=on with the
run's node certificate); as root it runs them as an unprivileged system user, since initdb and
postgres refuse to run as root. `PillbugServer` runs `pillbug start-single-node` with the same
certificates. Each creates the same password user and database, and hands out an `Endpoint`: how a
client connects (sslmode=verify-full against the run's CA) for psycopg2 and for libpq programs.

Both are context managers; children get a parent-death signal, so a benchmark killed outright does
not leave servers running either. This module knows nothing of workloads or reports.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
BENCH_USER = "bench"
BENCH_DATABASE = "bench"
# The system user Debian's postgresql package creates; made if missing when running as root.
PG_SYSTEM_USER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ServerError(RuntimeError):
    """A server could not be set up, started or stopped; the message carries its log's tail."""


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches one server: TLS verify-full against the run's CA, with a password."""
    name: str
    port: int
    password: str
    ca_file: str
    user: str = BENCH_USER
    database: str = BENCH_DATABASE
    host: str = "localhost"
    # Both servers listen on 127.0.0.1 only; without hostaddr libpq would try ::1 first.
    hostaddr: str = "127.0.0.1"

    def connect_params(self) -> dict[str, str]:
        return {"host": self.host, "hostaddr": self.hostaddr, "port": str(self.port), "user": self.user,
                "password": self.password, "dbname": self.database, "sslmode": "verify-full",
                "sslrootcert": self.ca_file}

    def libpq_env(self) -> dict[str, str]:
        """The same connection as PG* environment variables, for pgbench and psql."""
        env = dict(os.environ)
        env.update({"PGHOST": self.host, "PGHOSTADDR": self.hostaddr, "PGPORT": str(self.port),
                    "PGUSER": self.user, "PGPASSWORD": self.password, "PGDATABASE": self.database,
                    "PGSSLMODE": "verify-full", "PGSSLROOTCERT": self.ca_file})
        return env

    def connect(self):
        conn = psycopg2.connect(**self.connect_params())
        conn.autocommit = True
        return conn


@dataclass(frozen=True)
class Pki:
    certs_dir: str
    ca_key: str

    @property
    def ca_file(self) -> str:
        return os.path.join(self.certs_dir, "ca.crt")

    @property
    def node_cert(self) -> str:
        return os.path.join(self.certs_dir, "node.crt")

    @property
    def node_key(self) -> str:
        return os.path.join(self.certs_dir, "node.key")


def pillbug_command() -> list[str]:
    """The `pillbug` console script of the Python running the benchmark (the project's venv)."""
    script = os.path.join(os.path.dirname(sys.executable), "pillbug")
    if os.path.exists(script):
        return [script]
    found = shutil.which("pillbug")
    if found is None:
        raise ServerError("no `pillbug` command: install the project (make install)")
    return [found]


def make_pki(directory: str) -> Pki:
    certs = os.path.join(directory, "certs")
    ca_key = os.path.join(directory, "safe", "ca.key")
    steps = [["create-ca"], ["create-node", "localhost", "127.0.0.1"], ["create-client", "root"]]
    for step in steps:
        proc = subprocess.run([*pillbug_command(), "cert", *step, f"--certs-dir={certs}", f"--ca-key={ca_key}"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ServerError(f"pillbug cert {step[0]} failed:\n{proc.stdout}{proc.stderr}")
    return Pki(certs, ca_key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the benchmark process dies, however it dies."""
    def set_pdeathsig() -> None:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    return set_pdeathsig


def _stop_process(proc: subprocess.Popen, sig: int) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _log_tail(path: str, chars: int = 4000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


class PostgresServer:
    """A throwaway PostgreSQL cluster in `workdir`, listening on 127.0.0.1 with ssl=on."""

    name = "PostgreSQL"

    def __init__(self, workdir: str, pki: Pki, pg_bin: str = DEFAULT_PG_BIN) -> None:
        self.workdir = workdir
        self.pki = pki
        self.pg_bin = pg_bin
        self.data_dir = os.path.join(workdir, "data")
        self.socket_dir = os.path.join(workdir, "sock")
        self.log_path = os.path.join(workdir, "postgres.log")
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.version = ""
        self.endpoint: Endpoint | None = None
        self._uid, self._gid = self._run_as()

    @staticmethod
    def _run_as() -> tuple[int | None, int | None]:
        """initdb and postgres refuse root: as root, run them as the `postgres` system user."""
        if os.geteuid() != 0:
            return None, None
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER], check=True,
                           capture_output=True, timeout=60)
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        return entry.pw_uid, entry.pw_gid

    def _give(self, path: str, mode: int) -> None:
        os.chmod(path, mode)
        if self._uid is not None:
            os.chown(path, self._uid, self._gid)

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        extra = {} if self._uid is None else {"user": self._uid, "group": self._gid, "extra_groups": []}
        return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=self.workdir,
                              **extra, **kwargs)

    def start(self) -> Endpoint:
        initdb = os.path.join(self.pg_bin, "initdb")
        if not os.path.exists(initdb):
            raise ServerError(f"no PostgreSQL server binaries under {self.pg_bin} "
                              "(Debian package postgresql-15; `make deps` installs it)")
        os.makedirs(self.workdir, exist_ok=True)
        if self._uid is not None:
            # The run's temporary directory is root's (0700): let the server's user traverse it.
            parent = os.path.dirname(self.workdir)
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self._give(self.workdir, 0o700)
        os.makedirs(self.socket_dir)
        self._give(self.socket_dir, 0o700)
        # --no-sync only skips initdb's own final flush; the server's fsync stays at its default (on).
        proc = self._run([initdb, "-D", self.data_dir, "--username=postgres", "--encoding=UTF8",
                          "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        if proc.returncode != 0:
            raise ServerError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
        for source, target in ((self.pki.node_cert, "server.crt"), (self.pki.node_key, "server.key")):
            path = os.path.join(self.data_dir, target)
            shutil.copyfile(source, path)
            self._give(path, 0o600)
        self.port = free_port()
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            conf.write("\n# set by Pillbug's benchmark; everything else is PostgreSQL's default\n"
                       f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n"
                       "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as hba:
            hba.write("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
        log = open(self.log_path, "ab")
        extra = {} if self._uid is None else {"user": self._uid, "group": self._gid, "extra_groups": []}
        self.proc = subprocess.Popen([os.path.join(self.pg_bin, "postgres"), "-D", self.data_dir],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True, preexec_fn=_die_with_parent(signal.SIGINT),
                                     **extra)
        log.close()
        password = secrets.token_urlsafe(18)
        admin = self._wait_for_socket()
        try:
            with admin.cursor() as cur:
                cur.execute(f"CREATE ROLE {BENCH_USER} LOGIN PASSWORD %s", (password,))
                cur.execute(f"CREATE DATABASE {BENCH_DATABASE} OWNER {BENCH_USER}")
                cur.execute("SELECT version()")
                self.version = cur.fetchone()[0]
        finally:
            admin.close()
        self.endpoint = Endpoint(self.name, self.port, password, self.pki.ca_file)
        return self.endpoint

    def _wait_for_socket(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"postgres exited with {self.proc.returncode}:\n{_log_tail(self.log_path)}")
            try:
                conn = psycopg2.connect(host=self.socket_dir, port=self.port, user="postgres", dbname="postgres")
                conn.autocommit = True
                return conn
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(f"postgres did not accept connections: {exc}\n"
                                      f"{_log_tail(self.log_path)}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT)  # fast shutdown
            self.proc = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def create_bench_user(pki: Pki, host: str, hostaddr: str, port: int) -> tuple[str, str]:
    """As root (client certificate): the bench user with a new password in the admin role and the
    bench database. Returns the password and the server's version()."""
    password = secrets.token_urlsafe(18)
    root = psycopg2.connect(host=host, hostaddr=hostaddr, port=port, user="root", dbname="defaultdb",
                            sslmode="verify-full", sslrootcert=pki.ca_file,
                            sslcert=os.path.join(pki.certs_dir, "client.root.crt"),
                            sslkey=os.path.join(pki.certs_dir, "client.root.key"))
    root.autocommit = True
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER {BENCH_USER} WITH PASSWORD %s", (password,))
            cur.execute(f"GRANT admin TO {BENCH_USER}")
            cur.execute(f"CREATE DATABASE {BENCH_DATABASE}")
            cur.execute("SELECT version()")
            return password, cur.fetchone()[0]
    finally:
        root.close()


class PillbugServer:
    """A `pillbug start-single-node` process with its own store and ports, secure."""

    name = "Pillbug"

    def __init__(self, workdir: str, pki: Pki) -> None:
        self.workdir = workdir
        self.pki = pki
        self.store = os.path.join(workdir, "store")
        self.log_path = os.path.join(workdir, "pillbug.log")
        self.port = 0
        self.http_port = 0
        self.proc: subprocess.Popen | None = None
        self.version = ""
        self.endpoint: Endpoint | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Endpoint:
        os.makedirs(self.workdir, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*pillbug_command(), "start-single-node", f"--store={self.store}", f"--certs-dir={self.pki.certs_dir}",
             f"--listen-addr=127.0.0.1:{self.port}", f"--http-addr=127.0.0.1:{self.http_port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGTERM))
        log.close()
        self._wait_ready()
        password, self.version = create_bench_user(self.pki, "localhost", "127.0.0.1", self.port)
        self.endpoint = Endpoint(self.name, self.port, password, self.pki.ca_file)
        return self.endpoint

    def _wait_ready(self) -> None:
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        url = f"https://localhost:{self.http_port}/health?ready=1"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"pillbug exited with {self.proc.returncode}:\n{_log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (OSError, ssl.SSLError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"pillbug did not become ready:\n{_log_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            code = _stop_process(self.proc, signal.SIGTERM)
            self.proc = None
            if code not in (0, -signal.SIGTERM):
                print(f"bench: pillbug exited with {code}; log tail:\n{_log_tail(self.log_path, 2000)}",
                      file=sys.stderr)

    def __enter__(self) -> PillbugServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
