"""The managed cluster as its user meets it: `pillbug cluster create` with three regions, then the
connection details it prints, the seed page's examples through the global host and through each
region's load balancer, the allowlist at every entry point, the global host's choice of region,
and the control plane's status / stop / start / delete.

One cluster of 3 regions x 1 node serves the module (tests/test_managed_faults.py kills parts of
another one). Clients with a chosen source address are tests/rawpg.py's (libpq always connects from
127.0.0.1); the cluster allowlists 127.0.0.1 and 127.0.9.0/24, and the global host is told that
127.0.9.0/24 is nearest to us-west1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import rawpg
from cluster_harness import cluster_mode_available
from conftest import PILLBUG
from managed_harness import ManagedCluster, haproxy_available

from pillbug.cli import managed

REGIONS = ["us-east1", "us-west1", "europe-west1"]
ALLOWED_SOURCE = "127.0.9.9"
REFUSED_SOURCE = "127.0.8.8"

pytestmark = pytest.mark.skipif(bool(cluster_mode_available() or haproxy_available()),
                                reason=str(cluster_mode_available() or haproxy_available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ManagedCluster(str(tmp_path_factory.mktemp("managed") / "acme"), REGIONS, 1,
                       ["--allowlist=127.0.0.1/32,127.0.9.0/24", "--near=us-west1=127.0.9.0/24"])
    try:
        c.create()
        yield c
    finally:
        c.teardown()


def entry_points(cluster: ManagedCluster) -> dict[str, str]:
    """Every way in: the global host, each region's balancer, and each node."""
    d = cluster.details
    points = {"global host": d["global_host"]}
    for name, region in d["regions"].items():
        points[f"{name} balancer"] = region["lb_host"]
        for addr in region["nodes"]:
            points[f"{name} node {addr}"] = addr.rpartition(":")[0]
    return points


def raw(cluster: ManagedCluster, host: str, source: str, query: str | None = None) -> rawpg.Exchange:
    d = cluster.details
    return rawpg.exchange(d["port"], d["user"], source=source, host=host, cafile=d["ca_cert"],
                          password=d["password"], query=query)


def test_voters_survive_the_loss_of_any_region():
    for regions in (3, 4, 5):
        for per_region in (1, 2, 3):
            counts = managed.place_voters(regions, per_region)
            total = sum(counts)
            assert total % 2 == 1 and total <= managed.MAX_VOTERS
            assert all(total - c > total // 2 for c in counts), (regions, per_region, counts)
    assert managed.place_voters(3, 2) == [2, 2, 1]
    assert managed.place_voters(1, 3) == [3]


def test_confirmation_and_connection_json(cluster):
    d = cluster.details
    assert set(d) >= {"global_host", "port", "ca_cert", "user", "password", "regions"}
    assert list(d["regions"]) == REGIONS
    for region in d["regions"].values():
        assert region["lb_host"] in cluster.output
        assert len(region["nodes"]) == 1
    out = cluster.output
    for needle in (d["global_host"], str(d["port"]), d["ca_cert"], d["user"], d["password"],
                   "pillbug sql --url", "psycopg2.connect(", "cockroachdb://"):
        assert needle in out, (needle, out)
    assert os.path.isfile(d["ca_cert"])
    assert os.stat(os.path.join(cluster.dir, "connection.json")).st_mode & 0o077 == 0  # it holds the password
    # The printed shell command works as printed.
    url = d["urls"]["global"]
    shell = subprocess.run([PILLBUG, "sql", f"--url={url}", "--execute=SELECT 1 + 1 AS two"], capture_output=True,
                           text=True, timeout=60)
    assert shell.returncode == 0 and "2" in shell.stdout, shell.stdout + shell.stderr


def test_seed_examples_through_every_host(cluster, seed_dir):
    """The seed page's run.py, 4/4, through the global host and through each regional balancer,
    with the printed user and password."""
    d = cluster.details
    certs = os.path.dirname(d["ca_cert"])
    hosts = [d["global_host"]] + [r["lb_host"] for r in d["regions"].values()]
    for host in hosts:
        proc = subprocess.run(
            [sys.executable, os.path.join(seed_dir, "run.py"), "--sql", PILLBUG + " sql", "--host", host,
             "--port", str(d["port"]), "--user", d["user"], "--password", d["password"], "--certs-dir", certs,
             "--python", sys.executable], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "4 passed, 0 failed" in proc.stdout, (host, proc.stdout, proc.stderr)


def test_allowlist_at_every_entry_point(cluster):
    """A client outside the allowlist is refused with 28000 naming its own address (not a
    balancer's) whichever way it comes in; an allowlisted one is let in."""
    for what, host in entry_points(cluster).items():
        refused = raw(cluster, host, REFUSED_SOURCE)
        err = refused.error
        assert err is not None and err["C"] == "28000", (what, refused.names(), err)
        assert f'"{REFUSED_SOURCE}"' in err["M"], (what, err["M"])
        assert "AuthenticationSASL" not in refused.names(), what  # refused before any password exchange
        allowed = raw(cluster, host, ALLOWED_SOURCE, query="SELECT 1")
        assert allowed.authenticated and allowed.rows == [["1"]], (what, allowed.names(), allowed.error)


def test_global_host_sends_clients_to_their_nearest_region(cluster):
    d = cluster.details
    # 127.0.9.0/24 was declared nearest to us-west1; anyone else goes to the first region.
    near_west = raw(cluster, d["global_host"], ALLOWED_SOURCE, query="SELECT gateway_region()")
    assert near_west.rows == [["us-west1"]], (near_west.names(), near_west.error)
    assert cluster.query(d["global_host"], "SELECT gateway_region()") == [("us-east1",)]
    for name, region in d["regions"].items():
        assert cluster.query(region["lb_host"], "SHOW LOCALITY")[0][0].startswith(f"region={name},")
    assert sorted(r[0] for r in cluster.query(d["global_host"], "SELECT region FROM [SHOW REGIONS]")) == \
        sorted(REGIONS)


def test_status_stop_start_keep_the_data(cluster):
    d = cluster.details
    conn = cluster.connect(d["global_host"])
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS kept (id INT PRIMARY KEY, note STRING)")
        cur.execute("UPSERT INTO kept VALUES (1, 'before the stop')")
    conn.close()
    status = cluster.cli("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    for region in REGIONS:
        assert any(f"{region}-1" in line and "ready, voter" in line for line in lines), status.stdout
        assert any(f"lb-{region}" in line and "up: 1/1 nodes in service" in line for line in lines), status.stdout
    assert any(line.split()[2] == "global" and all(r in line for r in REGIONS) for line in lines[2:]), status.stdout

    stopped = cluster.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert all(cluster.pid(name) is None or not os.path.exists(f"/proc/{cluster.pid(name)}")
               for name in [f"{r}-1" for r in REGIONS] + [f"lb-{r}" for r in REGIONS] + ["global"])
    assert all("stopped" in line for line in cluster.cli("status").stdout.splitlines()[2:])

    started = cluster.cli("start", timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    assert cluster.query(d["global_host"], "SELECT note FROM kept WHERE id = 1") == [("before the stop",)]
    # the same password still works (the user and the allowlist live in the cluster, not in create)
    with open(os.path.join(cluster.dir, "connection.json")) as f:
        assert json.load(f)["password"] == d["password"]


def test_create_refuses_bad_flags_and_an_existing_cluster(cluster, tmp_path):
    again = cluster.cli("create", "--regions=us-east1")
    assert again.returncode == 1 and "already holds a cluster" in again.stderr
    for flags, message in ((["--regions=US East"], "not a region name"),
                           (["--regions=a,a"], "named twice"),
                           (["--nodes-per-region=0"], "--nodes-per-region"),
                           (["--allowlist=10.0.0.0/33"], "--allowlist"),
                           (["--near=mars=10.0.0.0/8"], "--near"),
                           (["--user=root"], "reserved")):
        proc = subprocess.run([PILLBUG, "cluster", "create", f"--dir={tmp_path / 'bad'}", *flags],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and message in proc.stderr, (flags, proc.stderr)
        assert not os.path.exists(tmp_path / "bad" / "cluster.json")
    # a port that another cluster's host holds
    busy = subprocess.run([PILLBUG, "cluster", "create", f"--dir={tmp_path / 'busy'}", "--regions=us-east1",
                           f"--port={cluster.port}", f"--http-port={cluster.details['port'] + 1}"],
                          capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "is in use" in busy.stderr, busy.stderr


def test_gen_haproxy_writes_a_regions_balancer(cluster, tmp_path):
    """What docs/deploy.md does on a balancer machine: gen haproxy over the running cluster, one
    region's nodes, with the PROXY header from the balancer's address."""
    west = cluster.details["regions"]["us-west1"]
    out = tmp_path / "west.cfg"
    proc = subprocess.run([PILLBUG, "gen", "haproxy", f"--host={west['nodes'][0]}",
                           f"--certs-dir={os.path.join(cluster.dir, 'operator')}", "--locality=region=us-west1",
                           f"--proxy-protocol-source={west['lb_host']}", f"--out={out}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    servers = [line.split()[2] for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers == west["nodes"], text
    assert f"send-proxy-v2 source {west['lb_host']}" in text
    check = subprocess.run(["haproxy", "-c", "-f", str(out)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
