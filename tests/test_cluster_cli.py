"""The CLI verbs that form a cluster: `pillbug start`'s flags (parsed into NodeConfig, and
CockroachDB's errors for bad ones) and `pillbug init` against a real etcd member.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from conftest import run_cli
from etcd_cluster import LoopThread, etcdctl, free_sql_port, make_node_certs

from pillbug.cli import start
from pillbug.cli.main import build_parser
from pillbug.server.etcd_member import ETCD_BINARY, EtcdMember, cluster_layout
from pillbug.server.node import NodeConfig
from pillbug.util import errors

# ---- pillbug start: flags -----------------------------------------------------------------------


def _config(*argv: str) -> NodeConfig:
    return start.cluster_config(build_parser().parse_args(["start", *argv]))


def test_start_flags_become_the_node_config() -> None:
    cfg = _config("--certs-dir=/c", "--store=path=/data/n1", "--listen-addr=127.0.0.11:26257",
                  "--http-addr=127.0.0.11:8081", "--join=127.0.0.11,127.0.0.12:26257", "-j", "127.0.0.13:26257",
                  "--locality=region=us-east1,zone=us-east1-b", "--advertise-addr=127.0.0.11:26257",
                  "--etcd-client-addr=127.0.0.11:2379", "--etcd-peer-addr=127.0.0.11:2380",
                  "--cache=.25", "--max-sql-memory=25%")
    assert cfg == NodeConfig(store="/data/n1", listen_host="127.0.0.11", listen_port=26257, http_host="127.0.0.11",
                             http_port=8081, certs_dir="/c", insecure=False,
                             join=["127.0.0.11:26257", "127.0.0.12:26257", "127.0.0.13:26257"],
                             locality="region=us-east1,zone=us-east1-b", etcd_client_addr="127.0.0.11:2379",
                             etcd_peer_addr="127.0.0.11:2380", advertise_addr="127.0.0.11:26257")


def test_start_insecure_has_no_certs_dir() -> None:
    cfg = _config("--insecure", "--join=localhost:26257")
    assert cfg.insecure and cfg.certs_dir is None and cfg.join == ["localhost:26257"]
    assert (cfg.listen_host, cfg.listen_port, cfg.locality) == ("localhost", 26257, "")


def test_start_without_join() -> None:
    with pytest.raises(errors.PgError) as info:
        _config("--insecure")
    assert info.value.message == "no --join flags provided to 'pillbug start'"
    out = run_cli("start", "--insecure", check=False)
    assert out.returncode == 1
    assert out.stderr == ("ERROR: no --join flags provided to 'pillbug start'\n"
                          "HINT: Consider using 'pillbug init' or 'pillbug start-single-node' instead\n")


@pytest.mark.parametrize("flag,message", [
    ("--locality=region", 'invalid argument "region" for "--locality" flag: '
                          'tier must be in the form "key=value" not "region"'),
    ("--locality=region=a,zone", 'invalid argument "region=a,zone" for "--locality" flag: '
                                 'tier must be in the form "key=value" not "zone"'),
    ("--join=127.0.0.1:abc", 'invalid argument "127.0.0.1:abc" for "--join" flag: '
                             "invalid port 'abc' in address '127.0.0.1:abc'"),
    ("--cache=lots", 'invalid argument "lots" for "--cache" flag: expected a size (1GiB), a percentage (25%) '
                     "or a fraction (.25) of the machine's memory"),
    ("--listen-addr=127.0.0.1:99999",
     "port 99999 out of range in address '127.0.0.1:99999'"),
    ("--listen-addr=127.0.0.1:50000", "address 127.0.0.1:50000: port 50000 + 20000 is past 65535; "
                                      "choose a lower port or set the etcd addresses explicitly"),
])
def test_start_bad_flags(flag: str, message: str, capsys) -> None:
    args = build_parser().parse_args(["start", "--insecure", "--join=127.0.0.1:26257,127.0.0.1:50000", flag])
    assert start.run(args) == 1
    assert capsys.readouterr().err == f"ERROR: {message}\n"


def test_start_single_node_is_unchanged() -> None:
    args = build_parser().parse_args(["start-single-node", "--insecure"])
    assert not hasattr(args, "join")


# ---- pillbug init against a real member ---------------------------------------------------------

@pytest.fixture(scope="module")
def member(tmp_path_factory) -> Iterator[tuple[str, str, EtcdMember]]:
    """A one-voter cluster's member on 127.0.0.1: (node address, certs dir, member)."""
    if not os.path.exists(ETCD_BINARY):
        pytest.skip("etcd is not installed (make install installs Debian's etcd-server)")
    base = str(tmp_path_factory.mktemp("init"))
    certs = make_node_certs(base, ("127.0.0.1", "localhost"))
    node = f"127.0.0.1:{free_sql_port(('127.0.0.1',))}"
    loop = LoopThread()
    m = EtcdMember(cluster_layout(node, [node], os.path.join(base, "n1"), certs).member)
    try:
        loop.run(m.start())
        loop.run(m.wait_ready(30))
        yield node, certs, m
    finally:
        loop.run(m.stop())
        loop.close()


def test_init_once(member) -> None:
    node, certs, m = member
    out = run_cli("init", f"--certs-dir={certs}", f"--host={node}")
    assert out.stdout == "Cluster successfully initialized\n"
    got = etcdctl(certs, [m.client_endpoint], "get", "x/init", "--print-value-only")
    value = json.loads(got.stdout)
    assert len(value["cluster_id"]) == 36 and value["created"].startswith("20")
    again = run_cli("init", f"--certs-dir={certs}", f"--host={node}", check=False)
    assert again.returncode == 1
    assert again.stderr == 'ERROR: cluster has already been initialized\nFailed running "init"\n'
    assert json.loads(etcdctl(certs, [m.client_endpoint], "get", "x/init", "--print-value-only").stdout) == value
    # a host name works too (the certificate lists localhost), and --etcd-client-addr names the member directly
    port = node.rsplit(":", 1)[1]
    third = run_cli("init", f"--certs-dir={certs}", f"--host=localhost:{port}", check=False)
    assert third.stderr.startswith("ERROR: cluster has already been initialized")
    fourth = run_cli("init", f"--certs-dir={certs}", "--host=127.0.0.1:1", f"--etcd-client-addr={m.client_endpoint}",
                     check=False)
    assert fourth.stderr.startswith("ERROR: cluster has already been initialized")


def test_init_unreachable_node_fails_fast(member) -> None:
    _, certs, _ = member
    port = free_sql_port(("127.0.0.1",))
    began = time.monotonic()
    out = run_cli("init", f"--certs-dir={certs}", f"--host=127.0.0.1:{port}", "--timeout=1", check=False)
    assert time.monotonic() - began < 10
    assert out.returncode == 1
    assert out.stderr.startswith(f"ERROR: cannot reach node 127.0.0.1:{port} (etcd client address "
                                 f"127.0.0.1:{port + 10000}) after 1s: ")
    assert "Is the node running with --join" in out.stderr


def test_init_without_root_certificate(member, tmp_path) -> None:
    node, certs, _ = member
    out = run_cli("init", f"--certs-dir={tmp_path}", f"--host={node}", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith(f"ERROR: cannot load ca.crt from {tmp_path}")


def test_init_refuses_plain_http_against_a_tls_member(member) -> None:
    node, _, _ = member
    out = run_cli("init", "--insecure", f"--host={node}", "--timeout=1", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith(f"ERROR: cannot reach node {node}")
