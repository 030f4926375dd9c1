"""A managed cluster's balancers keep clients away from a drained node; and the cluster loses a
region's balancer, then every node of a region, under a bank workload whose clients all come in
through the global host.

3 regions x 2 nodes: the etcd voters sit 2-2-1 over the regions, so that either loss leaves a
quorum. The clients come from 127.0.0.1, which the global host sends to the first region
(us-east1). What must hold:
- once us-east1's balancer is stopped, new connections through the global host land in another
  region (us-west1, the next in the regions' order), and transfers go on;
- once both us-west1 nodes are killed with SIGKILL (two of the five voters), new connections land
  in europe-west1, and transfers go on;
- afterwards the bank's checker finds the total balance kept, every acknowledged transfer present,
  none invented, no half transaction (tests/cluster_workloads.py);
- `pillbug cluster start` then restarts what is down, the restarted nodes serve with their data,
  and the global host sends the clients home again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psycopg2
import pytest
from cluster_harness import cluster_mode_available
from cluster_workloads import Bank
from conftest import PILLBUG
from managed_harness import ManagedCluster, ThroughHost, haproxy_available

REGIONS = ["us-east1", "us-west1", "europe-west1"]

pytestmark = pytest.mark.skipif(bool(cluster_mode_available() or haproxy_available()),
                                reason=str(cluster_mode_available() or haproxy_available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # One cluster for the module: the drain test leaves us-east1-2 drained, which the bank test
    # does not mind (us-east1 serves through its other node).
    c = ManagedCluster(str(tmp_path_factory.mktemp("faults") / "faults"), REGIONS, 2, [])
    try:
        c.create()
        yield c
    finally:
        c.teardown()


def wait_for_region(cluster: ManagedCluster, host: str, region: str, timeout: float = 30.0) -> None:
    """Until a new connection through `host` is served in `region`, then three more in a row."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    in_a_row = 0
    while in_a_row < 3:
        try:
            got = cluster.query(host, "SELECT gateway_region()")[0][0]
        except psycopg2.Error as exc:
            got = f"error: {str(exc).strip()[:80]}"
        seen.append(got)
        in_a_row = in_a_row + 1 if got == region else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"new connections through {host} did not move to {region} in {timeout:.0f} s; "
                                 f"they went to: {seen[-10:]}")
        if in_a_row < 3:
            time.sleep(0.2)


def test_a_drained_node_gets_no_new_connections(cluster):
    """The region's balancer checks /health?ready=1: a draining node is out of its rotation (and a
    node that is back in service is in it again)."""
    east = cluster.details["regions"]["us-east1"]
    ids = {addr: int(cluster.query(addr.rpartition(":")[0], "SHOW node_id")[0][0]) for addr in east["nodes"]}
    first, second = east["nodes"]
    assert {int(cluster.query(east["lb_host"], "SHOW node_id")[0][0]) for _ in range(6)} == set(ids.values())
    drain = subprocess.run([PILLBUG, "node", "drain", str(ids[second]), f"--host={first}",
                            f"--certs-dir={os.path.join(cluster.dir, 'operator')}"],
                           capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    deadline = time.monotonic() + 10
    landed: list[int] = []
    while landed[-6:] != [ids[first]] * 6:
        assert time.monotonic() < deadline, f"connections through {east['lb_host']} still land on {landed[-6:]}"
        landed.append(int(cluster.query(east["lb_host"], "SHOW node_id")[0][0]))
    status = cluster.cli("status").stdout
    assert any("us-east1-2" in line and "draining" in line for line in status.splitlines()), status
    assert any("lb-us-east1" in line and "1/2 nodes in service" in line for line in status.splitlines()), status


def test_bank_through_the_global_host_survives_losing_a_balancer_then_a_region(cluster):
    d = cluster.details
    host = d["global_host"]
    wait_for_region(cluster, host, "us-east1")
    bank = Bank(ThroughHost(cluster, host), accounts=16, clients_per_node=4)
    bank.start()
    try:
        bank.wait_acks(20, timeout=60)

        os.kill(cluster.pid("lb-us-east1"), signal.SIGTERM)
        wait_for_region(cluster, host, "us-west1")
        bank.wait_acks(20, timeout=60)

        for name in cluster.node_names("us-west1"):
            os.kill(cluster.pid(name), signal.SIGKILL)
        wait_for_region(cluster, host, "europe-west1", timeout=60)
        bank.wait_acks(20, timeout=90)
    finally:
        bank.stop()
    anomalies = bank.check()
    assert anomalies == [], anomalies
    assert bank.stats.acked >= 60
    status = cluster.cli("status").stdout
    for name in cluster.node_names("us-west1") + ["lb-us-east1"]:
        assert any(name in line and "stopped" in line for line in status.splitlines()), status

    # `cluster start` brings back what is not running, with its data; clients go home again.
    started = cluster.cli("start", timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    status = cluster.cli("status").stdout
    assert all("stopped" not in line for line in status.splitlines()), status
    wait_for_region(cluster, host, "us-east1")
    west = cluster.details["regions"]["us-west1"]["lb_host"]
    assert cluster.query(west, "SELECT gateway_region(), count(*) FROM accounts") == [("us-west1", 16)]
    assert bank.check() == []
