"""`pillbug gen haproxy` without a cluster: which nodes it keeps (locality filter, membership,
liveness), what it writes, and that HAProxy accepts it. Against a running 3-node cluster (the file
it writes, HAProxy in front of the nodes, a drained node avoided) in tests/test_cluster.py, which
shares that module's cluster.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest
from conftest import PILLBUG, free_port

from pillbug.cli.gen import (
    GenError,
    add_parser,
    balancer_options,
    parse_locality_filter,
    render,
    select_nodes,
)
from pillbug.cli.haproxy_config import Server
from pillbug.cli.start import FlagError


def _node(i: int, locality: str = "") -> dict:
    return {"address": f"10.0.0.{i}:26257", "http_address": f"10.0.0.{i}:8080", "locality": locality,
            "is_voter": True}


THREE = {1: _node(1, "region=us-east1,zone=a"), 2: _node(2, "region=us-west1,zone=b"),
         3: _node(3, "region=eu-west1,zone=c,deployment=testing")}


@pytest.mark.parametrize("flt, locality, expected", [
    ("region=us-east1", "region=us-east1,zone=a", True),
    ("region=us.*", "region=us-west1,zone=b", True),
    ("region=us", "region=us-west1,zone=b", False),  # the regex matches the whole value
    ("region=east", "region=us-east1", False),
    ("zone=a", "region=us-east1,zone=a", True),
    ("region=us.*,zone=a", "region=us-east1,zone=a", True),  # every tier must match
    ("region=us.*,zone=b", "region=us-east1,zone=a", False),
    ("rack=1", "region=us-east1,zone=a", False),  # the key must be there
    ("region=.*", "", False),  # a node without a locality never matches
    ("region=us-(east|west)1", "region=us-west1", True),
    ("region=us-east1|eu.*", "region=eu-west1", True),
])
def test_locality_filter(flt, locality, expected):
    assert parse_locality_filter(flt).matches(locality) is expected


@pytest.mark.parametrize("bad", ["region", "region=", "=us", "region=us,", "region=(us"])
def test_bad_locality_filter_is_a_flag_error(bad):
    with pytest.raises(FlagError) as exc:
        parse_locality_filter(bad)
    assert '"--locality" flag' in str(exc.value)


def test_every_live_active_node_in_id_order():
    selection = select_nodes({3: THREE[3], 1: THREE[1], 2: THREE[2]}, {}, 3)
    assert selection.servers == [Server("pillbug1", "10.0.0.1", 26257, 8080),
                                 Server("pillbug2", "10.0.0.2", 26257, 8080),
                                 Server("pillbug3", "10.0.0.3", 26257, 8080)]
    assert selection.left_out == [] and selection.warnings == []


def test_decommissioned_decommissioning_and_not_live_nodes_are_left_out():
    nodes = {**THREE, 5: _node(5)}
    memberships = {1: "active", 2: "decommissioning", 3: "decommissioned", 4: "decommissioned"}
    selection = select_nodes(nodes, memberships, 7)
    assert [s.name for s in selection.servers] == ["pillbug1", "pillbug5"]
    assert selection.warnings == ["warning: node 2 status is DECOMMISSIONING, excluding from haproxy configuration"]
    # 6 and 7 joined once (the id counter says so) and are not live: said in the file
    assert len(selection.left_out) == 1 and "nodes 6, 7, not live" in selection.left_out[0]
    text = render(selection, None)
    assert text.startswith("# left out: nodes 6, 7, not live")
    assert "pillbug2" not in text and "pillbug3" not in text


def test_locality_filter_selects_and_says_what_it_found_when_nothing_matches():
    assert [s.name for s in select_nodes(THREE, {}, 3, parse_locality_filter("region=us.*")).servers] \
        == ["pillbug1", "pillbug2"]
    assert [s.name for s in select_nodes(THREE, {}, 3, parse_locality_filter("deployment=test.*")).servers] \
        == ["pillbug3"]
    with pytest.raises(GenError) as exc:
        select_nodes(THREE, {}, 3, parse_locality_filter("region=ap.*"))
    assert str(exc.value) == ("no nodes match locality filter region=ap.*. Found localities: "
                              "[region=eu-west1,zone=c,deployment=testing region=us-east1,zone=a "
                              "region=us-west1,zone=b]")


def test_no_node_left_is_an_error():
    with pytest.raises(GenError) as exc:
        select_nodes({1: _node(1)}, {1: "decommissioned"}, 2)
    assert "no live node" in str(exc.value)


def test_ipv6_and_default_http_port():
    selection = select_nodes({1: {"address": "[::1]:26300", "http_address": "[::1]"}}, {}, 1)
    assert selection.servers == [Server("pillbug1", "::1", 26300, 8080)]
    assert "server pillbug1 [::1]:26300 check port 8080" in render(selection, None)


def test_haproxy_accepts_the_configuration(tmp_path, certs):
    """The file as written (CockroachDB's layout with a secure health check) passes `haproxy -c`."""
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is not installed")
    selection = select_nodes(THREE, {}, 4)
    ca = f"{certs}/ca.crt"
    text = render(selection, ca)
    assert f"check port 8080 check-ssl verify required ca-file {ca}" in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text.replace("bind :26257", f"bind 127.0.0.1:{free_port()}"))
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cli_errors_exit_1_with_a_message(tmp_path):
    out = tmp_path / "haproxy.cfg"
    bad = subprocess.run([PILLBUG, "gen", "haproxy", "--insecure", "--locality=region=(", f"--out={out}"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "could not compile regular expression" in bad.stderr, bad.stderr
    gone = subprocess.run([PILLBUG, "gen", "haproxy", "--insecure", "--host=127.0.0.1:26257",
                           f"--etcd-client-addr=127.0.0.1:{free_port()}", "--timeout=0.5", f"--out={out}"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "cannot reach node 127.0.0.1:26257" in gone.stderr, gone.stderr
    assert "only voting nodes (those named in --join) serve the cluster's etcd" in gone.stderr, gone.stderr
    # a SQL port whose etcd port (+ 10000) does not exist is a message too, not a traceback
    high = subprocess.run([PILLBUG, "gen", "haproxy", "--insecure", "--host=127.0.0.1:60000", f"--out={out}"],
                          capture_output=True, text=True, timeout=60)
    assert high.returncode == 1 and high.stderr.startswith("ERROR: cannot reach node 127.0.0.1:60000") \
        and "out of range" in high.stderr, high.stderr
    assert not out.exists()  # nothing written on an error


def test_pillbug_flags_make_a_balancer_that_passes_client_addresses(tmp_path, certs):
    """--proxy-protocol-source / --accept-proxy-protocol-from / --health-addr / --bind: the regional
    balancer of docs/deploy.md, which HAProxy accepts."""
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is not installed")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    port, health = free_port(), free_port()
    args = parser.parse_args(["gen", "haproxy", f"--bind=127.0.0.1:{port}", "--proxy-protocol-source=127.0.0.70",
                              "--accept-proxy-protocol-from=127.0.0.71/32", f"--health-addr=127.0.0.1:{health}",
                              "--check-interval=500ms"])
    text = render(select_nodes(THREE, {}, 3), f"{certs}/ca.crt", **balancer_options(args))
    assert f"bind 127.0.0.1:{port}" in text
    assert "tcp-request connection expect-proxy layer4 if { src 127.0.0.71/32 }" in text
    assert text.count("send-proxy-v2 source 127.0.0.70") == 3
    assert "monitor-uri /health" in text and "default-server inter 500ms" in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    for flag, value in (("--proxy-protocol-source", "lb.example"), ("--accept-proxy-protocol-from", "10.0.0.1/8"),
                        ("--check-interval", "soon")):
        with pytest.raises(FlagError):
            balancer_options(parser.parse_args(["gen", "haproxy", f"{flag}={value}"]))
