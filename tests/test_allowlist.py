"""The IP allowlist: server.host_based_authentication.configuration, end to end.

A raw pgwire client (tests/rawpg.py) binds its source to loopback aliases (127.0.0.2, 127.0.0.3:
Linux routes all of 127/8 to lo without configuration) and records every message the server
sends, so that a refusal can be shown to come before any password request. libpq clients always
connect from 127.0.0.1 (the kernel picks that source even towards 127.0.0.2), so their tests
include or exclude 127.0.0.1/32.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

import psycopg2
import pytest
import rawpg
from conftest import ADMIN_PASSWORD, ADMIN_USER, start_node

from pillbug.util import hba

SETTING = "server.host_based_authentication.configuration"
USER = "allowuser"
PASSWORD = "allow-pw-1"


@pytest.fixture(scope="module", autouse=True)
def user(node):
    node.sql(f"CREATE USER IF NOT EXISTS {USER} WITH PASSWORD '{PASSWORD}'")


@pytest.fixture(autouse=True)
def reset_hba(node):
    yield
    node.sql(f"RESET CLUSTER SETTING {SETTING}")


def set_hba(node, config: str) -> None:
    node.sql(f"SET CLUSTER SETTING {SETTING} = '{config}'")


def raw(node, user: str = USER, source: str = "127.0.0.1", password: str | None = None, cert_user: str | None = None):
    certs = node.certs_dir
    kwargs = {}
    if cert_user is not None:
        kwargs = {"certfile": os.path.join(certs, f"client.{cert_user}.crt"),
                  "keyfile": os.path.join(certs, f"client.{cert_user}.key")}
    return rawpg.exchange(node.port, user, source=source, cafile=os.path.join(certs, "ca.crt"),
                          password=password, **kwargs)


def test_kernel_source_address_towards_another_loopback_alias():
    """Why libpq tests use 127.0.0.1: an unbound socket towards 127.0.0.2 still comes from 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.2", 0))
        server.listen()
        with socket.socket() as client:
            client.connect(server.getsockname())
            accepted, peer = server.accept()
            accepted.close()
    assert peer[0] == "127.0.0.1"


def test_refused_before_any_password_request(node):
    set_hba(node, "host all all 127.0.0.2/32 cert-password")
    refused = raw(node, source="127.0.0.3", password=PASSWORD)
    assert refused.tls
    assert refused.names() == ["ErrorResponse"], refused.names()
    err = refused.error
    assert err["C"] == "28000"
    assert err["S"] == "FATAL"
    assert '"127.0.0.3"' in err["M"] and SETTING in err["M"], err
    allowed = raw(node, source="127.0.0.2", password=PASSWORD)
    assert allowed.names()[:3] == ["AuthenticationSASL", "AuthenticationSASLContinue", "AuthenticationSASLFinal"]
    assert allowed.authenticated


def test_refusal_does_not_depend_on_the_user_existing(node):
    set_hba(node, "host all all 127.0.0.2/32 password")
    known = raw(node, user=USER, source="127.0.0.4", password=PASSWORD)
    unknown = raw(node, user="nosuchuser", source="127.0.0.4", password=PASSWORD)
    assert known.names() == unknown.names() == ["ErrorResponse"]
    assert known.error["C"] == unknown.error["C"] == "28000"


def test_libpq_client_refused_then_allowed_immediately(node):
    set_hba(node, "host all all 10.0.0.0/8 password")
    with pytest.raises(psycopg2.OperationalError) as exc:
        node.connect(USER, PASSWORD)
    assert '"127.0.0.1"' in str(exc.value)
    assert "password authentication" not in str(exc.value)
    set_hba(node, "host all all 10.0.0.0/8 password\nhost all all 127.0.0.1/32 password")
    conn = node.connect(USER, PASSWORD)  # the very next connection sees the new setting
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (USER,)
    conn.close()


def test_existing_connections_survive_a_narrower_allowlist(node):
    conn = node.connect(USER, PASSWORD)
    set_hba(node, "host all all 10.0.0.0/8 password")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        node.connect(USER, PASSWORD)


def test_root_with_certificate_is_never_locked_out(node):
    set_hba(node, "host all all all reject")
    assert raw(node, user="root", cert_user="root", source="127.0.0.5").authenticated
    assert node.sql("SELECT current_user") == [("root",)]
    # root without its certificate is an ordinary password user: refused like everyone else
    refused = raw(node, user="root", source="127.0.0.5", password="whatever")
    assert refused.names() == ["ErrorResponse"] and refused.error["C"] == "28000"
    # and root can undo the mistake
    node.sql(f"RESET CLUSTER SETTING {SETTING}")
    assert raw(node, source="127.0.0.5", password=PASSWORD).authenticated


@pytest.mark.parametrize("config, error_part", [
    ("host all all 127.0.0.1/33 password", "invalid address"),
    ("host all all 300.1.1.1/32 password", "invalid address"),
    ("host all all all md4", "unknown authentication method"),
    ("hots all all all password", "unknown connection type"),
    ("host all all password", "end-of-line before authentication method"),
    ("host all all", "end-of-line before authentication method"),
])
def test_bad_configuration_is_refused_and_keeps_the_old_one(node, config, error_part):
    good = "host all all 127.0.0.0/8 password"
    set_hba(node, good)
    with pytest.raises(psycopg2.Error) as exc:
        set_hba(node, config)
    assert exc.value.pgcode == "22023"
    assert error_part in exc.value.pgerror
    assert node.sql(f"SHOW CLUSTER SETTING {SETTING}") == [(good,)]
    assert raw(node, source="127.0.0.9", password=PASSWORD).authenticated


def test_show_cluster_setting_round_trips_a_multiline_config(node):
    config = "# office and VPN\nhost all all 192.168.1.0 255.255.255.0 password\nhost all all ::1/128 scram-sha-256"
    set_hba(node, config)
    assert node.sql(f"SHOW CLUSTER SETTING {SETTING}") == [(config,)]
    node.sql(f"RESET CLUSTER SETTING {SETTING}")
    assert node.sql(f"SHOW CLUSTER SETTING {SETTING}") == [("",)]


def test_only_admins_change_the_allowlist(node):
    conn = node.connect(USER, PASSWORD)
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as exc:
            cur.execute(f"SET CLUSTER SETTING {SETTING} = 'host all all all trust'")
        assert exc.value.pgcode == "42501"
        with pytest.raises(psycopg2.Error) as exc:
            cur.execute(f"SHOW CLUSTER SETTING {SETTING}")
        assert exc.value.pgcode == "42501"
    conn.close()
    admin = node.connect(ADMIN_USER, ADMIN_PASSWORD)
    with admin.cursor() as cur:
        cur.execute(f"SET CLUSTER SETTING {SETTING} = 'host all all 127.0.0.0/8 password'")
        cur.execute(f"SHOW CLUSTER SETTING {SETTING}")
        assert cur.fetchone() == ("host all all 127.0.0.0/8 password",)
    admin.close()


@pytest.mark.parametrize("config, source, user, database, expect", [
    # first matching rule wins
    ("host all all 127.0.0.2/32 reject\nhost all all all password", "127.0.0.2", USER, "defaultdb", "refused"),
    ("host all all 127.0.0.2/32 reject\nhost all all all password", "127.0.0.3", USER, "defaultdb", "Cleartext"),
    # per user
    (f"host all {USER} all scram-sha-256\nhost all all all reject", "127.0.0.2", USER, "defaultdb", "SASL"),
    (f"host all other,{USER} all password", "127.0.0.2", USER, "defaultdb", "Cleartext"),
    ("host all other all password", "127.0.0.2", USER, "defaultdb", "refused"),
    # per database
    ("host postgres all all password", "127.0.0.2", USER, "defaultdb", "refused"),
    ("host postgres all all password", "127.0.0.2", USER, "postgres", "Cleartext"),
    # address with a netmask, hostssl/hostnossl against a TLS connection
    ("host all all 127.0.0.0 255.255.255.252 password", "127.0.0.3", USER, "defaultdb", "Cleartext"),
    ("host all all 127.0.0.0 255.255.255.252 password", "127.0.0.4", USER, "defaultdb", "refused"),
    ("hostssl all all all password", "127.0.0.2", USER, "defaultdb", "Cleartext"),
    ("hostnossl all all all password", "127.0.0.2", USER, "defaultdb", "refused"),
    # local rules never match a TCP connection
    ("local all all password", "127.0.0.2", USER, "defaultdb", "refused"),
])
def test_rule_matching(node, config, source, user, database, expect):
    set_hba(node, config)
    result = rawpg.exchange(node.port, user, source=source, database=database,
                            cafile=os.path.join(node.certs_dir, "ca.crt"))
    first = result.names()[0]
    if expect == "refused":
        assert first == "ErrorResponse" and result.error["C"] == "28000", result.names()
        assert f'"{source}"' in result.error["M"]
    else:
        assert expect in first, result.names()


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "host all all all cert", "host all all 0.0.0.0/0 trust",
    "host db1,db2 u1,\"U2\" 10.0.0.0/8 cert-password # trailing comment",
    "hostssl all all fe80::/10 scram-sha-256", "local all all reject",
])
def test_parse_accepts(text):
    hba.parse(text)


def test_allowlist_flag_seeds_the_setting(certs):
    tmp = tempfile.mkdtemp(prefix="pillbug-allow-")
    node = start_node(tmp, certs, ["--allowlist", "127.0.0.2/32,10.1.0.0/16"], admin=False)
    try:
        config = node.sql(f"SHOW CLUSTER SETTING {SETTING}")[0][0]
        assert "127.0.0.2/32" in config and "10.1.0.0/16" in config
        node.sql(f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'")
        assert raw(node, source="127.0.0.2", password=PASSWORD).authenticated
        refused = raw(node, source="127.0.0.1", password=PASSWORD)
        assert refused.names() == ["ErrorResponse"] and '"127.0.0.1"' in refused.error["M"]
        with pytest.raises(psycopg2.OperationalError):
            node.connect(USER, PASSWORD)
        # a setting changed with SQL is not overwritten by the flag on the next start
        node.sql(f"SET CLUSTER SETTING {SETTING} = 'host all all 127.0.0.1/32 password'")
        node.stop()
        node.start()
        assert node.sql(f"SHOW CLUSTER SETTING {SETTING}") == [("host all all 127.0.0.1/32 password",)]
        conn = node.connect(USER, PASSWORD)
        conn.close()
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_allowlist_flag_rejects_a_bad_cidr(certs, tmp_path):
    from conftest import Node
    node = Node(certs_dir=certs, store=str(tmp_path / "store"), extra_args=["--allowlist", "10.0.0.0/40"])
    with pytest.raises(AssertionError) as exc:
        node.start(timeout=30)
    assert "10.0.0.0/40" in str(exc.value)
    node.stop()
