"""The `pillbug cert` and `pillbug sql` commands, run as a user runs them: as processes, with
their output, exit status and files checked; the interactive shell through a pseudo-terminal.
"""
from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
import tempfile
import time

import psycopg2
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG, run_cli, start_node
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# ---- pillbug cert ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki():
    """A PKI of the module's own, made with the CLI, and a node that serves it."""
    tmp = tempfile.mkdtemp(prefix="pillbug-pki-")
    certs = os.path.join(tmp, "certs")
    ca_key = os.path.join(tmp, "safe", "ca.key")
    run_cli("cert", "create-ca", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-node", "localhost", "127.0.0.1", "localhost", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-client", "root", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    run_cli("cert", "create-client", "alice", f"--certs-dir={certs}", f"--ca-key={ca_key}")
    node = start_node(tmp, certs, admin=False)
    node.sql("CREATE USER alice")
    try:
        yield tmp, certs, ca_key, node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_cert_files_names_and_modes(pki):
    tmp, certs, ca_key, _ = pki
    assert sorted(os.listdir(certs)) == ["ca.crt", "client.alice.crt", "client.alice.key", "client.root.crt",
                                         "client.root.key", "node.crt", "node.key"]
    assert os.path.exists(ca_key) and not os.path.exists(os.path.join(certs, "ca.key"))
    for key in (ca_key, *(os.path.join(certs, n) for n in os.listdir(certs) if n.endswith(".key"))):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    ca = _load(os.path.join(certs, "ca.crt"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    node_cert = _load(os.path.join(certs, "node.crt"))
    sans = node_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]  # named twice on the command line, once here
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = node_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH in usages
    alice = _load(os.path.join(certs, "client.alice.crt"))
    assert alice.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert alice.issuer == ca.subject


def test_cert_list(pki):
    _, certs, _, _ = pki
    out = run_cli("cert", "list", f"--certs-dir={certs}").stdout
    assert f"Certificate directory: {certs}" in out
    lines = out.splitlines()
    assert any(line.split("|")[0].strip() == "CA" and "ca.crt" in line for line in lines)
    assert any(line.split("|")[0].strip() == "Node" and "node.crt" in line and "node.key" in line for line in lines)
    assert any("client.alice.crt" in line and "user: alice" in line for line in lines)
    assert out.rstrip().endswith("(4 rows)")


def test_cert_refuses_to_overwrite(pki, tmp_path):
    _, certs, ca_key, _ = pki
    before = open(os.path.join(certs, "client.alice.crt"), "rb").read()
    proc = run_cli("cert", "create-client", "alice", f"--certs-dir={certs}", f"--ca-key={ca_key}", check=False)
    assert proc.returncode != 0
    assert "already exists" in proc.stderr + proc.stdout and "--overwrite" in proc.stderr + proc.stdout
    assert open(os.path.join(certs, "client.alice.crt"), "rb").read() == before
    proc = run_cli("cert", "create-ca", f"--certs-dir={certs}", f"--ca-key={ca_key}", check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr + proc.stdout
    # --overwrite replaces, in a copy of the directory so the module's node keeps its files
    copy = tmp_path / "certs"
    shutil.copytree(certs, copy)
    run_cli("cert", "create-client", "alice", f"--certs-dir={copy}", f"--ca-key={ca_key}", "--overwrite")
    assert open(copy / "client.alice.crt", "rb").read() != before
    assert stat.S_IMODE(os.stat(copy / "client.alice.key").st_mode) == 0o600


def test_cert_needs_the_ca(tmp_path):
    proc = run_cli("cert", "create-node", "localhost", f"--certs-dir={tmp_path}/certs",
                   f"--ca-key={tmp_path}/ca.key", check=False)
    assert proc.returncode != 0 and "create-ca" in proc.stderr + proc.stdout
    proc = run_cli("cert", "create-client", "bob", f"--certs-dir={tmp_path}/certs", check=False)
    assert proc.returncode != 0 and "--ca-key" in proc.stderr


def _psql(node, conninfo: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", conninfo, "-X", "-A", "-t", "-c", sql], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})


def test_certs_work_with_libpq_verify_full_and_client_cert_auth(pki):
    _, certs, _, node = pki
    base = (f"port={node.port} dbname=defaultdb sslmode=verify-full sslrootcert={certs}/ca.crt "
            f"sslcert={certs}/client.alice.crt sslkey={certs}/client.alice.key user=alice")
    for host in ("host=localhost", "host=127.0.0.1"):
        proc = _psql(node, f"{host} {base}", "SELECT current_user")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "alice"
    # the node certificate does not name this host: verify-full refuses it
    proc = _psql(node, f"host=pillbug.invalid hostaddr=127.0.0.1 {base}", "SELECT 1")
    assert proc.returncode != 0 and "does not match host name" in proc.stderr
    # alice's certificate does not log in as root
    proc = _psql(node, f"host=localhost {base.replace('user=alice', 'user=root')}", "SELECT 1")
    assert proc.returncode != 0 and "certificate is for alice" in proc.stderr


def test_certificate_from_another_ca_is_refused(pki, tmp_path):
    _, certs, _, node = pki
    other = tmp_path / "other"
    run_cli("cert", "create-ca", f"--certs-dir={other}", f"--ca-key={tmp_path}/other.key")
    run_cli("cert", "create-client", "root", f"--certs-dir={other}", f"--ca-key={tmp_path}/other.key")
    proc = _psql(node, f"host=localhost port={node.port} dbname=defaultdb user=root sslmode=verify-full "
                       f"sslrootcert={certs}/ca.crt sslcert={other}/client.root.crt sslkey={other}/client.root.key",
                 "SELECT 1")
    assert proc.returncode != 0
    assert node.sql("SELECT 1") == [(1,)]  # and the node is fine


# ---- pillbug sql: batch mode -------------------------------------------------------------------


def shell(node, *args: str, stdin: str | None = None, user: str = "root") -> subprocess.CompletedProcess:
    return subprocess.run([PILLBUG, "sql", f"--certs-dir={node.certs_dir}", "--host=localhost",
                           f"--port={node.port}", f"--user={user}", *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def url_shell(url: str, *args: str, cwd: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PILLBUG, "sql", "--url", url, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.fixture(scope="module")
def fmt_table(node):
    node.sql("CREATE DATABASE IF NOT EXISTS clidb",
             "CREATE TABLE IF NOT EXISTS clidb.fmt (id INT PRIMARY KEY, name STRING, price DECIMAL, tags STRING[])",
             "UPSERT INTO clidb.fmt VALUES (1, 'apple', 1.50, ARRAY['red','fruit']), "
             "(2, 'b,c \"q\"', NULL, ARRAY[]::STRING[]), (10, 'tab\there', 100.25, NULL)")
    return "SELECT id, name, price, tags FROM clidb.fmt ORDER BY id"


EXPECTED = {
    "table": (
        "  id |   name   | price  |     tags\n"
        "-----+----------+--------+-------------\n"
        "   1 | apple    |   1.50 | {red,fruit}\n"
        '   2 | b,c "q"  |   NULL | {}\n'
        "  10 | tab\there | 100.25 | NULL\n"
        "(3 rows)\n"),
    "tsv": (
        "id\tname\tprice\ttags\n"
        "1\tapple\t1.50\t{red,fruit}\n"
        '2\t"b,c ""q"""\tNULL\t{}\n'
        '10\t"tab\there"\t100.25\tNULL\n'),
    "csv": (
        "id,name,price,tags\n"
        '1,apple,1.50,"{red,fruit}"\n'
        '2,"b,c ""q""",NULL,{}\n'
        "10,tab\there,100.25,NULL\n"),
    "records": (
        "-[ RECORD 1 ]\n"
        "id    | 1\n"
        "name  | apple\n"
        "price | 1.50\n"
        "tags  | {red,fruit}\n"
        "-[ RECORD 2 ]\n"
        "id    | 2\n"
        'name  | b,c "q"\n'
        "price | NULL\n"
        "tags  | {}\n"
        "-[ RECORD 3 ]\n"
        "id    | 10\n"
        "name  | tab\there\n"
        "price | 100.25\n"
        "tags  | NULL\n"),
    "raw": (
        "# 4 columns\n"
        "# row 1\n## 1\n1\n## 5\napple\n## 4\n1.50\n## 11\n{red,fruit}\n"
        '# row 2\n## 1\n2\n## 7\nb,c "q"\n## 4\nNULL\n## 2\n{}\n'
        "# row 3\n## 2\n10\n## 8\ntab\there\n## 6\n100.25\n## 4\nNULL\n"
        "# 3 rows\n"),
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_formats(node, fmt_table, fmt):
    proc = shell(node, f"--format={fmt}", "-e", fmt_table)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED[fmt]


def test_tsv_is_the_default_when_piped(node, fmt_table):
    proc = shell(node, "-e", fmt_table)
    assert proc.stdout == EXPECTED["tsv"]


def test_execute_repeated_and_several_statements_each(node):
    proc = shell(node, "-e", "CREATE TABLE IF NOT EXISTS clidb.ex (k INT PRIMARY KEY); UPSERT INTO clidb.ex VALUES (1)",
                 "-e", "SELECT k FROM clidb.ex", "-e", "SELECT 'second' AS s; SELECT 3 AS n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "CREATE TABLE\nINSERT 0 1\nk\n1\ns\nsecond\nn\n3\n"


def test_statements_from_stdin(node):
    script = "SELECT 1 AS one;\n-- a comment; with a semicolon\nSELECT 'a;b' AS s;\n\nSELECT\n  2 AS two;\n"
    proc = shell(node, stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "one\n1\ns\na;b\ntwo\n2\n"


def test_a_failing_statement_stops_the_batch_with_status_1(node):
    node.sql("CREATE TABLE IF NOT EXISTS clidb.stop (k INT PRIMARY KEY)", "DELETE FROM clidb.stop")
    proc = shell(node, "-e", "INSERT INTO clidb.stop VALUES (1); SELECT nosuchcolumn FROM clidb.stop",
                 "-e", "INSERT INTO clidb.stop VALUES (2)")
    assert proc.returncode == 1
    assert proc.stderr == 'ERROR: column "nosuchcolumn" does not exist\nSQLSTATE: 42703\n'
    assert node.sql("SELECT k FROM clidb.stop ORDER BY k") == [(1,)]
    proc = shell(node, stdin="INSERT INTO clidb.stop VALUES (3);\nSELECT 1/0;\nINSERT INTO clidb.stop VALUES (4);\n")
    assert proc.returncode == 1
    assert proc.stderr == "ERROR: division by zero\nSQLSTATE: 22012\n"
    assert node.sql("SELECT k FROM clidb.stop ORDER BY k") == [(1,), (3,)]
    proc = shell(node, "-e", "SELEC 1")
    assert proc.returncode == 1 and "SQLSTATE: 42601" in proc.stderr and "syntax error" in proc.stderr


def test_connection_failure_is_status_1(node, tmp_path):
    proc = shell(node, "-e", "SELECT 1", user="nosuchuser")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "ERROR:" in proc.stderr
    proc = url_shell(f"postgresql://root@localhost:{node.port}/defaultdb?sslmode=verify-full&sslrootcert={tmp_path}/no.crt",
                     "-e", "SELECT 1")
    assert proc.returncode == 1 and "ERROR:" in proc.stderr


def test_url_with_password_and_relative_sslrootcert(node, tmp_path):
    """The seed page's form: --url with user:password and sslrootcert=certs/ca.crt, run from a
    directory that holds certs/ca.crt."""
    os.makedirs(tmp_path / "certs")
    shutil.copy(os.path.join(node.certs_dir, "ca.crt"), tmp_path / "certs" / "ca.crt")
    url = (f"postgres://{ADMIN_USER}:{ADMIN_PASSWORD}@localhost:{node.port}/clidb"
           f"?sslmode=verify-full&sslrootcert=certs/ca.crt")
    proc = url_shell(url, "--execute=SELECT current_user, current_database()", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"current_user\tcurrent_database\n{ADMIN_USER}\tclidb\n"
    proc = url_shell(url.replace(ADMIN_PASSWORD, "wrong"), "-e", "SELECT 1", cwd=str(tmp_path))
    assert proc.returncode == 1 and f"password authentication failed for user {ADMIN_USER}" in proc.stderr


def test_database_flag_and_insecure_flag_refused_by_secure_node(node):
    proc = shell(node, "--database=clidb", "-e", "SELECT current_database()")
    assert proc.stdout == "current_database\nclidb\n"
    proc = subprocess.run([PILLBUG, "sql", "--insecure", "--host", f"localhost:{node.port}", "-e", "SELECT 1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "SSL connection required" in proc.stderr


# ---- pillbug sql: on a terminal ----------------------------------------------------------------


class Terminal:
    """A child process on a pseudo-terminal: write keystrokes, read the screen's bytes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.output = b""

    def read_until(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        start = len(self.output)
        while text.encode() not in self.output[start:] and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.output += data
        got = self.output[start:].decode(errors="replace")
        assert text in got, f"did not see {text!r} in:\n{got}"
        return got

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    self.output += os.read(self.fd, 65536)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError("shell did not exit:\n" + self.output.decode(errors="replace"))


def _terminal(node, tmp_path, *args: str) -> Terminal:
    env = {"HOME": str(tmp_path), "TERM": "xterm", "PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}
    return Terminal([PILLBUG, "sql", f"--certs-dir={node.certs_dir}", "--host=localhost", f"--port={node.port}",
                     *args], env)


def test_table_is_the_default_on_a_terminal(node, fmt_table, tmp_path):
    term = _terminal(node, tmp_path, "-e", fmt_table)
    out = term.read_until("(3 rows)")
    assert term.wait() == 0
    assert "  id |   name   | price  |     tags" in out and "-----+----------+" in out


def test_interactive_shell(node, tmp_path):
    node.sql("CREATE TABLE IF NOT EXISTS clidb.inter (k INT PRIMARY KEY)", "DELETE FROM clidb.inter")
    term = _terminal(node, tmp_path, "--database=clidb")
    term.read_until("root@localhost:")
    term.read_until("/clidb>")
    # a statement over several lines runs when its `;` arrives
    term.type("INSERT INTO inter\r")
    term.read_until("->")
    term.type("VALUES (7);\r")
    term.read_until("INSERT 0 1")
    term.type("SELECT k * 6 AS answer FROM inter;\r")
    out = term.read_until("(1 row)")
    assert "answer" in out and "42" in out
    # an error is shown and the shell goes on
    term.type("SELECT nosuch FROM inter;\r")
    out = term.read_until("SQLSTATE: 42703")
    assert 'column "nosuch" does not exist' in out
    # history: the up arrow recalls the previous statement (Up Up = the SELECT that worked)
    term.type("\x1b[A\x1b[A\r")
    term.read_until("(1 row)")
    term.type("\\q\r")
    assert term.wait() == 0
    with open(tmp_path / ".pillbug_sql_history", encoding="utf-8") as f:
        history = f.read()
    assert "SELECT k * 6 AS answer FROM inter;" in history and "VALUES (7);" in history
    assert node.sql("SELECT k FROM clidb.inter") == [(7,)]


def test_interactive_shell_ends_on_ctrl_d(node, tmp_path):
    term = _terminal(node, tmp_path)
    term.read_until("defaultdb>")
    term.type("\x04")
    assert term.wait() == 0


def test_shell_password_prompt_on_a_terminal(node, tmp_path):
    """Without a password in the URL, the shell asks for one on the terminal (as cockroach sql does)."""
    os.makedirs(tmp_path / "certs", exist_ok=True)
    shutil.copy(os.path.join(node.certs_dir, "ca.crt"), tmp_path / "certs" / "ca.crt")
    env = {"HOME": str(tmp_path), "TERM": "xterm", "PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}
    url = f"postgresql://{ADMIN_USER}@localhost:{node.port}/defaultdb?sslmode=verify-full&sslrootcert={tmp_path}/certs/ca.crt"
    term = Terminal([PILLBUG, "sql", "--url", url, "-e", "SELECT current_user"], env)
    term.read_until("assword:")
    term.type(ADMIN_PASSWORD + "\r")
    out = term.read_until("(1 row)")
    assert ADMIN_USER in out
    assert term.wait() == 0


def test_psycopg2_sees_what_the_shell_wrote(node):
    proc = shell(node, "-e", "CREATE TABLE IF NOT EXISTS clidb.seen (k INT PRIMARY KEY); UPSERT INTO clidb.seen VALUES (5)")
    assert proc.returncode == 0, proc.stderr
    conn = node.connect(database="clidb")
    with conn.cursor() as cur:
        cur.execute("SELECT k FROM seen")
        assert cur.fetchall() == [(5,)]
    conn.close()
    with pytest.raises(psycopg2.Error):
        node.sql("SELECT * FROM clidb.nosuch")
