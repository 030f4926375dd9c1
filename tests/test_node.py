"""`pillbug start-single-node` as a process: flags and defaults, what exists at first start, the
health endpoints, clean shutdown on SIGTERM/SIGINT with no acknowledged write lost, the
first-start admin user (--init-admin) end to end, and the Makefile's `start` target.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg2
import pytest
from conftest import PILLBUG, ROOT, Node, free_port, listening, make_certs, run_cli, start_node, wait_for


def _health(url: str, cafile: str | None = None) -> int:
    ctx = None
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ---- an insecure node ----------------------------------------------------------------------


def test_insecure_node_first_start(tmp_path):
    node = start_node(str(tmp_path), None)
    try:
        log = node.log()
        assert f"sql:                 postgresql://root@127.0.0.1:{node.port}/defaultdb?sslmode=disable" in log
        assert f"webui:               http://127.0.0.1:{node.http_port}" in log
        assert "status:              initialized new cluster" in log
        assert _health(f"http://127.0.0.1:{node.http_port}/health") == 200
        assert _health(f"http://127.0.0.1:{node.http_port}/health?ready=1") == 200
        assert _health(f"http://127.0.0.1:{node.http_port}/nosuchpage") == 404
        databases = [r[0] for r in node.sql("SHOW DATABASES")]
        assert {"defaultdb", "postgres"} <= set(databases)
        users = {r[0]: r for r in node.sql("SHOW USERS")}
        assert set(users) == {"root", "admin"}
        assert users["root"][2] == ["admin"]
        assert "NOLOGIN" in users["admin"][1]
        # insecure: any existing user connects without a password; unknown users do not
        node.sql("CREATE USER carl")
        conn = node.connect("carl")
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("carl",)
        conn.close()
        with pytest.raises(psycopg2.OperationalError) as exc:
            node.connect("nosuchuser")
        assert "nosuchuser" in str(exc.value)
    finally:
        assert node.stop() == 0


def test_defaults_are_cockroachs_ports(tmp_path):
    """Run in a network namespace of its own, where 26257 and 8080 are surely free, with no
    --listen-addr or --http-addr: the node must answer there."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    script = f"""
set -e
ip link set lo up
{PILLBUG} start-single-node --insecure --store={tmp_path}/store > {tmp_path}/node.log 2>&1 &
pid=$!
for i in $(seq 1 200); do
  if {sys.executable} -c "import urllib.request,sys; urllib.request.urlopen('http://localhost:8080/health?ready=1', timeout=1)" 2>/dev/null; then break; fi
  sleep 0.1
done
{PILLBUG} sql --insecure -e "SELECT 'ok' AS answer"
kill -TERM $pid
wait $pid
echo "exit=$?"
"""
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("no permission for network namespaces here")
    log = (tmp_path / "node.log").read_text()
    assert proc.stdout == "answer\nok\nexit=0\n", proc.stdout + proc.stderr + log
    assert "localhost:26257" in log and "localhost:8080" in log


# ---- a secure node: health over HTTPS, shutdown ----------------------------------------------


def test_secure_node_serves_health_over_https_only(node):
    ca = os.path.join(node.certs_dir, "ca.crt")
    assert _health(f"https://127.0.0.1:{node.http_port}/health?ready=1", ca) == 200
    with pytest.raises(OSError):
        _health(f"http://127.0.0.1:{node.http_port}/health")
    assert node.proc.poll() is None
    log = node.log()
    assert f"--host=127.0.0.1:{node.port}" in log and f"https://127.0.0.1:{node.http_port}" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_shutdown_loses_no_acknowledged_write(certs, tmp_path, sig):
    node = start_node(str(tmp_path), certs, admin=False)
    node.sql("CREATE TABLE acked (id INT PRIMARY KEY, payload STRING)")
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            conn = node.connect()
        except psycopg2.Error:
            return
        i = 0
        try:
            with conn.cursor() as cur:
                while not stop.is_set() and i < 100_000:
                    i += 1
                    cur.execute("INSERT INTO acked VALUES (%s, %s)", (i, "x" * 100))
                    acknowledged.append(i)
        except psycopg2.Error:
            pass  # the node went away under us: everything acknowledged so far must survive
        finally:
            conn.close()

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    wait_for(lambda: len(acknowledged) >= 50, "50 acknowledged inserts")
    proc = node.proc
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    stop.set()
    threads[0].join(30)
    node.proc = None
    assert "node shut down cleanly" in node.log()
    node.start()
    try:
        assert "restarted pre-existing node" in node.log()
        stored = {r[0] for r in node.sql("SELECT id FROM acked")}
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged rows lost"
        assert len(acknowledged) >= 50
    finally:
        assert node.stop() == 0


def test_ready_is_503_while_draining(certs, tmp_path):
    node = start_node(str(tmp_path), certs, admin=False)
    ca = os.path.join(certs, "ca.crt")
    node.sql("SET CLUSTER SETTING server.shutdown.initial_wait = '3s'")
    assert node.sql("SHOW CLUSTER SETTING server.shutdown.initial_wait") == [("3s",)]
    with pytest.raises(psycopg2.Error) as exc:
        node.sql("SET CLUSTER SETTING server.shutdown.initial_wait = 'soon'")
    assert exc.value.pgcode == "22023"
    base = f"https://127.0.0.1:{node.http_port}/health"
    assert _health(base + "?ready=1", ca) == 200
    began = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    seen = set()
    while node.proc.poll() is None and time.monotonic() - began < 20:
        try:
            seen.add((_health(base + "?ready=1", ca), _health(base, ca)))
        except OSError:
            pass
        time.sleep(0.1)
    assert (503, 200) in seen  # unready, yet alive, for load balancers to notice
    assert node.proc.wait(30) == 0
    assert time.monotonic() - began >= 2.5  # it stayed up for initial_wait (3s): the drain is the feature
    node.proc = None


def test_sigterm_lets_open_transactions_finish_then_ends_sessions_with_57p01(certs, tmp_path):
    node = start_node(str(tmp_path), certs, admin=False)
    node.sql("CREATE TABLE t (k INT PRIMARY KEY)", "SET CLUSTER SETTING server.shutdown.query_wait = '20s'")
    idle = node.connect()
    busy = node.connect(autocommit=False)
    with busy.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1)")  # a transaction left open: the drain waits for it
    node.proc.send_signal(signal.SIGTERM)
    port = node.port
    # No new sessions while it drains; the open transaction can still commit.
    wait_for(lambda: not listening("127.0.0.1", port), what="the listener to close")
    busy.commit()
    assert node.proc.wait(30) == 0
    node.proc = None
    for conn in (idle, busy):
        with pytest.raises(psycopg2.OperationalError) as exc:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert "administrator command" in str(exc.value) or "closed" in str(exc.value)
    node.start()
    assert node.sql("SELECT k FROM t") == [(1,)]  # the transaction the drain waited for committed
    node.stop()


# ---- first start with --init-admin (what `make start` does) -----------------------------------


DETAIL = re.compile(r"^\s+(CA certificate|user|password|connection URL):\s+(.*)$", re.M)


def _details(log: str) -> dict[str, str]:
    return {k: v.strip() for k, v in DETAIL.findall(log)}


def test_init_admin_first_start_end_to_end(tmp_path):
    certs = make_certs(str(tmp_path), ("root",))
    node = Node(certs_dir=certs, store=str(tmp_path / "store"), extra_args=["--init-admin=firstadmin"])
    node.start()
    try:
        details = _details(node.log())
        assert set(details) == {"CA certificate", "user", "password", "connection URL"}, node.log()
        assert details["user"] == "firstadmin"
        assert details["CA certificate"] == os.path.join(certs, "ca.crt")
        url = details["connection URL"]
        assert "sslmode=verify-full" in url and "sslrootcert=certs/ca.crt" in url
        assert details["password"] in url and len(details["password"]) >= 16
        # a client directory as the seed page sets it up: certs/ca.crt and nothing else
        client = tmp_path / "client"
        os.makedirs(client / "certs")
        shutil.copy(details["CA certificate"], client / "certs" / "ca.crt")
        script = (f"import psycopg2; c = psycopg2.connect({url!r}); cur = c.cursor(); "
                  "cur.execute('SELECT current_user'); print(cur.fetchone()[0]); "
                  "cur.execute('CREATE DATABASE made_by_admin'); c.commit()")
        proc = subprocess.run([sys.executable, "-c", script], cwd=client, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "firstadmin"
        proc = subprocess.run([PILLBUG, "sql", f"--url={url}", "-e", "SHOW GRANTS ON ROLE admin"], cwd=client,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "admin\tfirstadmin\ttrue" in proc.stdout
        first_password = details["password"]
    finally:
        assert node.stop() == 0
    open(node.log_path, "w").close()
    node.start()
    try:
        log = node.log()
        assert "password:" not in log and first_password not in log
        assert "admin user firstadmin already exists" in log
        proc = subprocess.run([sys.executable, "-c", f"import psycopg2; psycopg2.connect({url!r}).close()"],
                              cwd=client, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert [r[0] for r in node.sql("SHOW USERS")].count("firstadmin") == 1
        assert "made_by_admin" in [r[0] for r in node.sql("SHOW DATABASES")]
    finally:
        node.stop()


def test_init_admin_refuses_a_reserved_name(tmp_path):
    certs = make_certs(str(tmp_path), ("root",))
    proc = subprocess.run([PILLBUG, "start-single-node", f"--certs-dir={certs}", f"--store={tmp_path}/store",
                           f"--listen-addr=127.0.0.1:{free_port()}", f"--http-addr=127.0.0.1:{free_port()}",
                           "--init-admin=admin"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "reserved" in proc.stderr


def test_secure_node_without_certificates_says_what_to_do(tmp_path):
    proc = subprocess.run([PILLBUG, "start-single-node", f"--certs-dir={tmp_path}/none", f"--store={tmp_path}/s",
                           f"--listen-addr=127.0.0.1:{free_port()}", f"--http-addr=127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "pillbug cert create-ca" in proc.stderr


# ---- make start -------------------------------------------------------------------------------


def test_make_start_in_a_copy_of_the_project(tmp_path):
    """`make start` in a fresh copy of the project: certs made (CA key outside certs/), a secure
    node, an admin user with a generated password, connection details printed; a second
    `make start` reuses everything. The venv is this one (-o: not reinstalled)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    project = tmp_path / "project"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        os.makedirs(project / os.path.dirname(name), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), project / name)
    venv = os.path.dirname(os.path.dirname(PILLBUG))
    port, http_port = free_port(), free_port()
    argv = ["make", "-o", f"{venv}/.installed", "start", f"VENV={venv}",
            f"ADDR=127.0.0.1:{port}", f"HTTP=127.0.0.1:{http_port}"]

    def node_is_gone() -> bool:
        try:
            _health(f"https://127.0.0.1:{http_port}/health", str(project / "certs" / "ca.crt"))
            return False
        except OSError:
            return True

    def run_make(while_up=None) -> str:
        log_path = tmp_path / "make.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError("make start exited:\n" + log_path.read_text())
                text = log_path.read_text()
                # Ready, and the announcement printed to its end (the connection details, or the
                # line saying the admin user already exists).
                if "nodeID:" in text and ("SQL shell:" in text or "already exists;" in text) and _health(
                        f"https://127.0.0.1:{http_port}/health?ready=1", str(project / "certs" / "ca.crt")) == 200:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("make start did not become ready:\n" + log_path.read_text())
            if while_up is not None:
                while_up(log_path.read_text())
            return log_path.read_text()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
            deadline = time.monotonic() + 60
            while not node_is_gone() and time.monotonic() < deadline:
                time.sleep(0.1)

    def connect_with_printed_url(out: str) -> None:
        client = tmp_path / "client"
        os.makedirs(client / "certs", exist_ok=True)
        shutil.copy(project / "certs" / "ca.crt", client / "certs" / "ca.crt")
        url = _details(out)["connection URL"]
        proc = subprocess.run([PILLBUG, "sql", f"--url={url}", "-e", "SELECT current_user"], cwd=client,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout == "current_user\ndbadmin\n", proc.stdout + proc.stderr

    out = run_make(connect_with_printed_url)
    assert sorted(os.listdir(project / "certs")) == ["ca.crt", "client.root.crt", "client.root.key", "node.crt",
                                                     "node.key"]
    assert os.path.exists(project / "pillbug-ca" / "ca.key")
    assert os.path.isdir(project / "pillbug-data")
    details = _details(out)
    assert details["user"] == "dbadmin", out
    url = details["connection URL"]
    assert f"@127.0.0.1:{port}/defaultdb?sslmode=verify-full&sslrootcert=certs/ca.crt" in url
    assert details["CA certificate"] == str(project / "certs" / "ca.crt")
    out2 = run_make(lambda _: connect_with_printed_url(out))  # the first start's password still works
    assert "password:" not in out2 and "already exists" in out2
    assert "restarted pre-existing node" in out2
    # the certificates were not remade
    proc = run_cli("cert", "list", f"--certs-dir={project}/certs")
    assert proc.stdout.count(".crt") == 3
