"""The "connect to your managed cluster" flow, end to end, as a user with only the CA certificate.

The user has a folder holding certs/ca.crt (no client certificate), an admin-role user with a
password, and the node's address. From that folder they:

  * run the SQL shell with a --url that verifies the server (sslmode=verify-full and a relative
    sslrootcert) and --execute statements, reading what it prints;
  * connect psycopg2 with keyword parameters or with the same URL, in autocommit, to create a
    table, insert and read rows;
  * use SQLAlchemy's ORM through the cockroachdb:// dialect, passing the TLS options as
    connect_args;
  * move money between accounts in SERIALIZABLE transactions, retrying a 40001 with the
    SAVEPOINT cockroach_restart protocol, from many clients at once, and the total stays put.

These run on a clone of the repository alone. tests/test_seed.py additionally runs the seed page's
own example files when the shared acceptance folder is present.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from decimal import Decimal

import psycopg2
import pytest
import sqlalchemy as sa
from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG, Node, make_certs
from sqlalchemy import orm


@pytest.fixture
def client_dir(node: Node, tmp_path, monkeypatch) -> str:
    """The user's working folder: certs/ca.crt and nothing else, and the current directory."""
    os.makedirs(tmp_path / "certs")
    shutil.copy(os.path.join(node.certs_dir, "ca.crt"), tmp_path / "certs" / "ca.crt")
    monkeypatch.chdir(tmp_path)
    return str(tmp_path)


def managed_url(node: Node, database: str, scheme: str = "postgres") -> str:
    return (f"{scheme}://{ADMIN_USER}:{ADMIN_PASSWORD}@localhost:{node.port}/{database}"
            f"?sslmode=verify-full&sslrootcert=certs/ca.crt")


def shell(url: str, *statements: str, cwd: str) -> subprocess.CompletedProcess:
    args = [PILLBUG, "sql", f"--url={url}"] + [f"--execute={s}" for s in statements]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_shell_with_a_password_url_creates_writes_and_reads(node, db, client_dir):
    url = managed_url(node, db)
    proc = shell(url, "CREATE TABLE accounts (id INT PRIMARY KEY, balance DECIMAL);", cwd=client_dir)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "CREATE TABLE\n", "")
    proc = shell(url, "INSERT INTO accounts VALUES (1, 1000.50), (2, 250)",
                 "SELECT id, balance FROM accounts ORDER BY id", cwd=client_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "INSERT 0 2\nid\tbalance\n1\t1000.50\n2\t250\n"
    # The shell and a driver see the same data: the shell's writes were committed.
    assert node.sql("SELECT sum(balance) FROM accounts", database=db) == [(Decimal("1250.50"),)]


def test_shell_refuses_a_server_it_cannot_verify(node, db, client_dir, tmp_path_factory):
    """sslmode=verify-full with another CA's certificate: the shell does not connect."""
    other_ca = make_certs(str(tmp_path_factory.mktemp("other-pki")), ())
    os.makedirs(os.path.join(client_dir, "other"))
    shutil.copy(os.path.join(other_ca, "ca.crt"), os.path.join(client_dir, "other", "ca.crt"))
    url = managed_url(node, db).replace("certs/ca.crt", "other/ca.crt")
    proc = shell(url, "SELECT 1", cwd=client_dir)
    assert proc.returncode == 1 and proc.stdout == ""
    # libpq's words depend on OpenSSL (the other CA has the same name, so it may report the
    # signature check itself): what the user sees is a refused TLS connection and no rows.
    assert proc.stderr.startswith("ERROR: connection to server") and "SSL" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["keywords-sslmode-require", "url-verify-full"])
def test_psycopg2_autocommit_create_insert_select(node, db, client_dir, how):
    if how == "url-verify-full":
        conn = psycopg2.connect(managed_url(node, db, "postgresql"))
    else:
        conn = psycopg2.connect(user=ADMIN_USER, password=ADMIN_PASSWORD, host="localhost", port=node.port,
                                database=db, sslmode="require", sslrootcert="certs/ca.crt")
    try:
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            assert cur.fetchone() == (ADMIN_USER, db)
            for _ in range(2):  # IF NOT EXISTS: running the program twice is harmless
                cur.execute("CREATE TABLE IF NOT EXISTS ledger (id INT PRIMARY KEY, balance INT)")
            cur.execute("INSERT INTO ledger (id, balance) VALUES (%s, %s), (%s, %s)", (7, 1000, 8, 250))
            assert cur.rowcount == 2
            cur.execute("SELECT id, balance FROM ledger ORDER BY id")
            assert [[str(c) for c in row] for row in cur.fetchall()] == [["7", "1000"], ["8", "250"]]
        # Autocommit: another connection sees the rows at once.
        assert node.sql("SELECT count(*) FROM ledger", database=db) == [(2,)]
    finally:
        conn.close()


def test_sqlalchemy_orm_over_the_cockroachdb_dialect(node, db, client_dir):
    Base = orm.declarative_base()

    class Wallet(Base):
        __tablename__ = "wallets"
        id = sa.Column(sa.Integer, primary_key=True)
        balance = sa.Column(sa.Integer)

    engine = sa.create_engine(
        f"cockroachdb://{ADMIN_USER}:{ADMIN_PASSWORD}@localhost:{node.port}/{db}",
        connect_args={"sslmode": "require", "sslrootcert": "certs/ca.crt"})
    try:
        assert engine.dialect.name == "cockroachdb"
        Base.metadata.create_all(engine)
        assert sa.inspect(engine).has_table("wallets")
        Session = orm.sessionmaker(bind=engine)
        session = Session()
        session.add_all([Wallet(id=11, balance=1000), Wallet(id=12, balance=250)])
        session.commit()
        # The legacy Query API, as older applications iterate it.
        assert [(w.id, w.balance) for w in session.query(Wallet).order_by(Wallet.id)] == [(11, 1000), (12, 250)]
        session.close()
        assert node.sql("SELECT id, balance FROM wallets ORDER BY id", database=db) == [(11, 1000), (12, 250)]
    finally:
        engine.dispose()


# ---- SERIALIZABLE transfers with the client-side retry protocol ------------------------------------

class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries = 0
        self.most_attempts = 0

    def record(self, attempts: int) -> None:
        with self.lock:
            self.retries += attempts - 1
            self.most_attempts = max(self.most_attempts, attempts)


def with_restarts(conn, work, stats: Stats, max_attempts: int = 200):
    """Run work(cursor) in one transaction, restarting it at SAVEPOINT cockroach_restart on 40001.

    Any other error rolls the transaction back and propagates. The connection is not in autocommit,
    so psycopg2 opens the transaction with the first statement.
    """
    cur = conn.cursor()
    try:
        cur.execute("SAVEPOINT cockroach_restart")
        for attempt in range(1, max_attempts + 1):
            try:
                result = work(cur)
                cur.execute("RELEASE SAVEPOINT cockroach_restart")
                conn.commit()
                stats.record(attempt)
                return result
            except psycopg2.Error as exc:
                if exc.pgcode != "40001":
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT cockroach_restart")
        raise AssertionError(f"no commit after {max_attempts} attempts: the retries do not converge")
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()


def move(cur, src: int, dst: int, amount: int) -> bool:
    """Move amount from src to dst if src can afford it; False (and no change) otherwise."""
    cur.execute("SELECT balance FROM accounts WHERE id = %s", (src,))
    (have,) = cur.fetchone()
    if have < amount:
        return False
    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
    return True


def test_one_transfer_through_the_restart_protocol(node, db, client_dir):
    node.sql("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)",
             "INSERT INTO accounts VALUES (3, 1000), (4, 250)", database=db)
    conn = psycopg2.connect(managed_url(node, db, "postgresql"))
    try:
        stats = Stats()
        assert with_restarts(conn, lambda cur: move(cur, 3, 4, 100), stats) is True
        assert with_restarts(conn, lambda cur: move(cur, 4, 3, 10_000), stats) is False  # refused, no change
        assert stats.retries == 0  # alone, nothing to retry
        with conn.cursor() as cur:
            cur.execute("SHOW TRANSACTION ISOLATION LEVEL")
            assert cur.fetchone()[0].lower() == "serializable"
            cur.execute("SELECT id, balance FROM accounts ORDER BY id")
            assert cur.fetchall() == [(3, 900), (4, 350)]
        conn.rollback()
    finally:
        conn.close()


def test_concurrent_transfers_retry_and_keep_the_total(node, db, client_dir):
    accounts, clients, transfers, opening = 3, 6, 40, 1000
    node.sql("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)",
             f"INSERT INTO accounts SELECT g, {opening} FROM generate_series(1, {accounts}) AS g", database=db)
    stats = Stats()
    # Every client's first attempt reads before anyone writes, so the first transfers collide for
    # certain: the retry path runs however the threads happen to be scheduled.
    first_reads = threading.Barrier(clients, timeout=60)
    failures: list[BaseException] = []
    committed: list[int] = []

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = psycopg2.connect(managed_url(node, db, "postgresql"))
        try:
            for n in range(transfers):
                src, dst = rng.sample(range(1, accounts + 1), 2)
                amount = rng.randint(1, 300)
                first = [n == 0]

                def work(cur, src=src, dst=dst, amount=amount, first=first):
                    cur.execute("SELECT balance FROM accounts WHERE id = %s", (src,))
                    if first[0]:
                        first[0] = False
                        first_reads.wait()
                    return move(cur, src, dst, amount)

                with_restarts(conn, work, stats)
                committed.append(1)
        except BaseException as exc:
            failures.append(exc)
            first_reads.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)  # liveness bound, not a speed target
    assert not any(t.is_alive() for t in threads), "a client is stuck"
    assert not failures, [f"{getattr(e, 'pgcode', '')} {e!r}" for e in failures[:3]]
    assert len(committed) == clients * transfers
    assert stats.retries > 0, "no transaction was retried: the test did not exercise contention"
    rows = node.sql("SELECT count(*), sum(balance), min(balance) FROM accounts", database=db)
    assert rows[0][:2] == (accounts, accounts * opening)
    assert rows[0][2] >= 0  # the balance check inside the transaction held under concurrency
