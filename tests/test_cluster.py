"""A 3-node secure cluster started as CockroachDB's are (`pillbug start --join` on each node, then
`pillbug init` once): what one node used to assume, now across nodes.

- the seed page's examples pass against every node (issue 10's first "Done when");
- a write on one node is read on the others; unique_rowid() never collides across nodes;
- node ids, liveness and voters in crdb_internal; SHOW CLUSTER QUERIES sees every node;
- CANCEL QUERY and a pgwire CancelRequest reach a statement whichever node they land on;
- a node whose etcd has lost its quorum answers /health?ready=1 with 503, and serves again after.

One cluster per module (tests/cluster_harness.py); the fault tests are in test_cluster_faults.py.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from cluster_harness import HTTP_PORT, SQL_PORT, Cluster, cluster_mode_available
from conftest import ADMIN_PASSWORD, ADMIN_USER, PILLBUG, free_port, wait_for
from wire_client import RawConnection, query

pytestmark = pytest.mark.skipif(cluster_mode_available() is not None, reason=str(cluster_mode_available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(3, str(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


def test_seed_examples_pass_against_every_node(seed_dir, cluster):
    for i in (1, 2, 3):
        node = cluster.node(i)
        proc = subprocess.run(
            [sys.executable, os.path.join(seed_dir, "run.py"), "--sql", PILLBUG + " sql", "--host", node.host,
             "--port", str(SQL_PORT), "--user", ADMIN_USER, "--password", ADMIN_PASSWORD,
             "--certs-dir", cluster.certs, "--python", sys.executable],
            capture_output=True, text=True, timeout=300)
        assert proc.stdout.strip().endswith("4 passed, 0 failed"), f"node {i}:\n{proc.stdout}{proc.stderr}"


def test_writes_on_one_node_are_read_on_the_others_and_row_ids_never_collide(cluster):
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS ids (id INT PRIMARY KEY DEFAULT unique_rowid(), node INT)")
    for i in (1, 2, 3):
        cluster.sql(i, *[f"INSERT INTO ids (node) VALUES ({i})"] * 20)
    for i in (1, 2, 3):
        rows = cluster.sql(i, "SELECT node, count(*), count(DISTINCT id) FROM ids GROUP BY node ORDER BY node")
        assert rows == [(1, 20, 20), (2, 20, 20), (3, 20, 20)]
    # unique_rowid() keeps the node id in its low 15 bits
    by_node = cluster.sql(1, "SELECT DISTINCT node, id & 32767 FROM ids ORDER BY node")
    assert len({low for _, low in by_node}) == 3


def test_nodes_know_each_other(cluster):
    rows = cluster.sql(2, "SELECT node_id, is_live, is_voter, membership FROM crdb_internal.kv_node_status "
                          "ORDER BY node_id")
    assert rows == [(1, True, True, "active"), (2, True, True, "active"), (3, True, True, "active")]
    ids = sorted(cluster.sql(i, "SHOW node_id")[0][0] for i in (1, 2, 3))
    assert ids == ["1", "2", "3"]
    localities = cluster.sql(1, "SELECT locality FROM crdb_internal.gossip_nodes ORDER BY node_id")
    assert all(loc.startswith("region=") for (loc,) in localities)


def test_each_node_says_which_node_and_region_served_the_connection(cluster):
    gossip = dict(cluster.sql(1, "SELECT node_id, locality FROM crdb_internal.gossip_nodes"))
    for i in (1, 2, 3):
        conn = cluster.connect(i)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW node_id")
                (shown,) = cur.fetchone()
                cur.execute("SELECT crdb_internal.node_id(), gateway_region(), crdb_internal.locality_value('zone')")
                node_id, region, zone = cur.fetchone()
                cur.execute("SHOW LOCALITY")
                (locality,) = cur.fetchone()
                cur.execute("SHOW REGIONS FROM CLUSTER")
                cluster_regions = cur.fetchall()
                cur.execute("SELECT region, zones, database_names FROM [SHOW REGIONS]")
                regions = cur.fetchall()
        finally:
            conn.close()
        # node ids come from etcd in start order: the node's own answers agree with each other and
        # with what the cluster registered for it
        assert int(shown) == node_id
        assert (locality, region, zone) == (f"region=r1,zone=z{i}", "r1", f"z{i}")
        assert gossip[node_id] == locality
        assert cluster_regions == [("r1", ["z1", "z2", "z3"])]
        assert regions == [("r1", ["z1", "z2", "z3"], [])]
    assert sorted(gossip) == [1, 2, 3]


def _sleeper(cluster: Cluster, i: int, seconds: float):
    """A statement running on node i (a pg_sleep in its own connection) and its outcome."""
    conn = cluster.connect(i)
    outcome: dict = {}

    def run() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT pg_sleep({seconds})")
            outcome["ok"] = True
        except psycopg2.Error as exc:
            outcome["code"] = exc.pgcode
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return conn, thread, outcome


def test_cancel_query_from_another_node(cluster):
    conn, thread, outcome = _sleeper(cluster, 3, 30)
    try:
        def running_on_3():
            rows = cluster.sql(1, "SELECT query_id, node_id FROM [SHOW CLUSTER QUERIES] "
                                  "WHERE query LIKE 'SELECT pg_sleep%'")
            return rows[0] if rows else None
        query_id, node_id = wait_for(running_on_3, what="node 1 to see node 3's statement")
        assert node_id == int(cluster.sql(3, "SHOW node_id")[0][0])  # ids come from etcd, in start order
        began = time.monotonic()
        cluster.sql(1, f"CANCEL QUERY '{query_id}'")
        thread.join(10)
        assert outcome == {"code": "57014"} and time.monotonic() - began < 5
        with pytest.raises(psycopg2.Error) as exc:
            cluster.sql(2, f"CANCEL QUERY '{query_id}'")
        assert "not found" in str(exc.value)
        assert cluster.sql(2, f"CANCEL QUERY IF EXISTS '{query_id}'") == []
    finally:
        conn.close()


def test_a_cancel_request_that_lands_on_another_node_is_forwarded(cluster):
    # What a load balancer does to a client's CancelRequest: it opens a new connection, which may
    # reach another node than the session's. The (pid, secret) pair says whose it is.
    node2, node1 = cluster.node(2), cluster.node(1)
    conn = RawConnection(node2.host, SQL_PORT, cluster.certs)
    try:
        messages = conn.login()
        key = next(body for kind, body in messages if kind == b"K")
        pid, secret = struct.unpack(">ii", key)
        assert pid >> 16 == int(cluster.sql(2, "SHOW node_id")[0][0])
        conn.send(query("SELECT pg_sleep(30)"))
        wait_for(lambda: cluster.sql(2, "SELECT count(*) FROM [SHOW LOCAL QUERIES] "
                                        "WHERE query LIKE 'SELECT pg_sleep%'")[0][0] == 1,
                 what="the statement to start")
        began = time.monotonic()
        with socket.create_connection((node1.host, SQL_PORT), timeout=5) as cancel:
            cancel.sendall(struct.pack(">iiii", 16, 80877102, pid, secret))
        answer = conn.read_until(b"Z")
        assert [e["C"] for e in conn.errors(answer)] == ["57014"]
        assert time.monotonic() - began < 5
    finally:
        conn.close()


def test_losing_the_quorum_makes_the_survivor_unready_and_it_serves_again_after(cluster):
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS kept (k INT PRIMARY KEY)", "UPSERT INTO kept VALUES (1), (2)")
    # kill -9 of two nodes takes their etcd members with them: node 1's member has no quorum.
    cluster.kill9(2)
    cluster.kill9(3)
    try:
        wait_for(lambda: cluster.health(1) == 503, timeout=20, what="node 1 to report not ready")
        assert cluster.health(1, ready=False) == 200  # alive, only not ready
    finally:
        cluster.restart(2)
        cluster.restart(3)
    wait_for(lambda: cluster.health(1) == 200, timeout=30, what="node 1 to be ready again")
    assert cluster.sql(1, "SELECT count(*) FROM kept") == [(2,)]


def test_status_vars_show_etcd(cluster):
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=os.path.join(cluster.certs, "ca.crt"))
    ctx.check_hostname = False
    url = f"https://{cluster.node(1).host}:{HTTP_PORT}/_status/vars"
    with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
        text = resp.read().decode()
    for metric in ("etcd_round_trip_seconds_mean", "storage_commits", "liveness_livenodes 3", "etcd_voter 1"):
        assert metric in text, text


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PILLBUG, *args, f"--certs-dir={cluster.certs}", f"--host={cluster.node(1).addr}"],
                          capture_output=True, text=True, timeout=120)


def test_node_ls_and_status(cluster):
    ls = _cli(cluster, "node", "ls")
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.split()[:1] == ["id"] and ls.stdout.strip().endswith("(3 rows)")
    status = _cli(cluster, "node", "status")
    assert status.returncode == 0, status.stderr
    header, _, *rows = status.stdout.splitlines()
    for column in ("id", "address", "locality", "is_live", "is_voter", "etcd_health", "etcd_revision"):
        assert column in header
    body = [r for r in rows if "|" in r]
    assert len(body) == 3 and all("healthy" in r and "region=" in r for r in body), status.stdout
    assert sum(r.rstrip().endswith("true") for r in body) == 1  # exactly one etcd leader
    missing = _cli(cluster, "node", "status", "99")
    assert missing.returncode == 1 and "node 99 doesn't exist" in missing.stderr


def test_node_drain_then_decommission_and_recommission(cluster):
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS kept (k INT PRIMARY KEY)", "UPSERT INTO kept VALUES (1), (2)")
    node_id = int(cluster.sql(3, "SHOW node_id")[0][0])
    idle = cluster.connect(3)
    drain = _cli(cluster, "node", "drain", str(node_id))
    assert drain.returncode == 0, drain.stderr
    assert drain.stdout.strip().endswith("ok")
    assert cluster.health(3) == 503 and cluster.health(3, ready=False) == 200  # up, not taking sessions
    with pytest.raises(psycopg2.OperationalError):
        with idle.cursor() as cur:
            cur.execute("SELECT 1")
    assert cluster.sql(1, f"SELECT draining FROM crdb_internal.gossip_liveness WHERE node_id = {node_id}") == [(True,)]
    decommission = _cli(cluster, "node", "decommission", str(node_id))
    assert decommission.returncode == 0, decommission.stderr
    assert "No more data reported on target nodes" in decommission.stdout
    assert cluster.sql(1, f"SELECT membership FROM crdb_internal.kv_node_status WHERE node_id = {node_id}") \
        == [("decommissioned",)]
    recommission = _cli(cluster, "node", "recommission", str(node_id))
    assert recommission.returncode == 0 and recommission.stdout.strip() == "ok"
    cluster.kill9(3)
    cluster.restart(3)
    assert cluster.sql(3, "SELECT count(*) FROM kept") == [(2,)]
    assert cluster.sql(1, f"SELECT membership, draining FROM crdb_internal.gossip_liveness "
                          f"WHERE node_id = {node_id}") == [("active", False)]


def test_a_transaction_too_big_for_one_etcd_txn_is_refused_with_54000(cluster):
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS big (k INT PRIMARY KEY, v STRING)")
    with pytest.raises(psycopg2.Error) as exc:
        cluster.sql(2, "INSERT INTO big SELECT g, 'x' FROM generate_series(1, 1001) AS g")
    assert exc.value.pgcode == "54000"
    assert "1000 operations per commit (max_ops_per_commit)" in str(exc.value)
    with pytest.raises(psycopg2.Error) as exc:
        cluster.sql(2, "INSERT INTO big VALUES (1, repeat('x', 1048577))")
    assert exc.value.pgcode == "54000" and "max_value_bytes" in str(exc.value)
    assert cluster.sql(3, "SELECT count(*) FROM big") == [(0,)]  # nothing of either was written
    cluster.sql(2, "INSERT INTO big SELECT g, 'x' FROM generate_series(1, 1000) AS g")
    assert cluster.sql(3, "SELECT count(*) FROM big") == [(1000,)]


def test_writers_of_one_row_on_every_node_queue_and_all_get_through(cluster):
    """Two clients per node increment one row. Row locks in etcd are first come, first served
    across nodes, so no node's clients starve the others (the old "put if absent" lock let the
    node nearest the leader take it back every time), and no lock is left behind by a statement
    that gave way to a retried one (every later writer on that node waited for it forever)."""
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS hot (id INT PRIMARY KEY, n INT)", "UPSERT INTO hot VALUES (1, 0)")
    rounds = 12
    done = [0] * 6
    failures: list[str] = []

    def client(k: int) -> None:
        conn = cluster.connect(1 + k % 3)
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '30s'")
                for _ in range(rounds):
                    cur.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
                    done[k] += 1
        except psycopg2.Error as exc:
            failures.append(f"client {k}: {exc.pgcode} {str(exc).splitlines()[0]}")
        finally:
            conn.close()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert done == [rounds] * 6
    assert cluster.sql(2, "SELECT n FROM hot WHERE id = 1") == [(6 * rounds,)]


def test_copy_bigger_than_one_transaction_commits_in_batches_when_asked(cluster):
    """A COPY of more rows than one etcd Txn holds fails whole (54000) by default; with
    CockroachDB's copy_from_atomic_enabled = off it commits every 100 rows, as pgbench -i needs."""
    cluster.sql(1, "CREATE TABLE IF NOT EXISTS loaded (k INT PRIMARY KEY, v STRING)")
    data = "".join(f"{i}\tv{i}\n" for i in range(2500))
    conn = cluster.connect(2)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.Error) as exc:
                cur.copy_expert("COPY loaded FROM STDIN", io.StringIO(data))
            assert exc.value.pgcode == "54000"
            cur.execute("SET copy_from_atomic_enabled = off")
            cur.copy_expert("COPY loaded FROM STDIN", io.StringIO(data))
    finally:
        conn.close()
    assert cluster.sql(3, "SELECT count(*), count(DISTINCT v) FROM loaded") == [(2500, 2500)]


def test_a_table_created_on_one_node_is_there_at_once_on_the_others(cluster):
    """Statements outside a transaction take the catalog version from what the node last saw
    (kv/txn.py speculation) and check it with their first read; a version that another node's DDL
    made stale turns into a retry inside the server, never into a missing table or a stale plan."""
    for i in range(15):
        name = f"fresh_{i}"
        cluster.sql(1 + i % 3, f"CREATE TABLE {name} (k INT PRIMARY KEY)", f"INSERT INTO {name} VALUES ({i})")
        reader = 1 + (i + 1) % 3
        assert cluster.sql(reader, f"SELECT k FROM {name}") == [(i,)]
        cluster.sql(reader, f"ALTER TABLE {name} ADD COLUMN v INT DEFAULT 7")
        assert cluster.sql(1 + (i + 2) % 3, f"SELECT k, v FROM {name}") == [(i, 7)]


# ---- pillbug gen haproxy (tests/test_gen_haproxy.py has the parts that need no cluster) ---------
# Last in the module: the balancer test drains a node (and restarts it after).

def test_gen_haproxy_locality_filter_and_stdout(cluster):
    zone2 = _cli(cluster, "gen", "haproxy", "--locality=zone=z2", "--out", "-")
    assert zone2.returncode == 0, zone2.stderr
    servers = [line.split() for line in zone2.stdout.splitlines() if line.strip().startswith("server ")]
    node_id = cluster.sql(2, "SHOW node_id")[0][0]
    assert [s[:6] for s in servers] == [["server", f"pillbug{node_id}", cluster.node(2).addr, "check", "port",
                                         str(HTTP_PORT)]]
    assert f"ca-file {os.path.join(cluster.certs, 'ca.crt')}" in zone2.stdout
    every = _cli(cluster, "gen", "haproxy", "--locality=region=r.*", "--out", "-")
    assert every.returncode == 0, every.stderr
    assert [line.split()[1] for line in every.stdout.splitlines() if line.strip().startswith("server ")] \
        == ["pillbug1", "pillbug2", "pillbug3"]
    none = _cli(cluster, "gen", "haproxy", "--locality=zone=z9", "--out", "-")
    assert none.returncode == 1 and none.stdout == ""
    assert "no nodes match locality filter zone=z9. Found localities: [region=r1,zone=z1 region=r1,zone=z2 " \
           "region=r1,zone=z3]" in none.stderr, none.stderr


def _served_by(params: dict) -> str:
    """The id of the node that a new connection with `params` lands on; raises if it fails."""
    conn = psycopg2.connect(**params)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW node_id")
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_gen_haproxy_balances_over_every_node_and_a_drained_one_gets_no_new_connection(cluster, tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    gen = subprocess.run([PILLBUG, "gen", "haproxy", f"--certs-dir={cluster.certs}",
                          f"--host={cluster.node(1).addr}", f"--out={cfg}"], capture_output=True, text=True,
                         timeout=120)
    assert gen.returncode == 0 and gen.stdout == "", gen.stderr
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    # Port 26257 is the nodes' own: listen elsewhere, and check twice a second so that the test
    # need not wait for HAProxy's default 2 s x 3.
    port = free_port()
    text = cfg.read_text()
    assert "    bind :26257\n" in text and "    option httpchk GET /health?ready=1\n" in text
    cfg.write_text(text.replace("    bind :26257\n", f"    bind 127.0.0.1:{port}\n").replace(
        "    option httpchk GET /health?ready=1\n",
        "    option httpchk GET /health?ready=1\n    default-server inter 500ms fall 2 rise 2\n"))
    ids = {i: cluster.sql(i, "SHOW node_id")[0][0] for i in (1, 2, 3)}
    via = {**cluster.params(1), "host": "127.0.0.1", "port": port}  # the node certificate names 127.0.0.1
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        wait_for(lambda: _connects(via), timeout=10, what="HAProxy to take connections")
        assert {_served_by(via) for _ in range(9)} == set(ids.values())  # roundrobin over all three
        drained = ids[2]
        drain = _cli(cluster, "node", "drain", drained)
        assert drain.returncode == 0, drain.stderr
        began = time.monotonic()
        # Until HAProxy's check sees the drained node's 503, a connection sent to it fails; then
        # every new connection succeeds, elsewhere.
        streak: list[str] = []
        while len(streak) < 6:
            assert time.monotonic() - began < 10, "HAProxy kept sending connections to the drained node"
            try:
                streak.append(_served_by(via))
            except psycopg2.OperationalError:
                streak = []
        served = [_served_by(via) for _ in range(12)]
        assert drained not in served and set(served) == {ids[1], ids[3]}, served
    finally:
        os.killpg(proxy.pid, signal.SIGKILL)
        proxy.wait(10)
        # The drain lasts until the node restarts.
        cluster.kill9(2)
        cluster.restart(2)


def _connects(params: dict) -> bool:
    try:
        _served_by(params)
        return True
    except psycopg2.OperationalError:
        return False
