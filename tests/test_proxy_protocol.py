"""PROXY protocol v2 on the SQL listener: the parser (pgwire/proxy_protocol.py) and, end to end,
a node started with --accept-proxy-protocol-from.

The raw client (tests/rawpg.py) binds its source to loopback aliases: 127.0.0.50 plays the
trusted balancer, 127.0.0.51 an untrusted peer, and the header claims 127.0.0.2 (allowed by the
test's allowlist) or 127.0.0.3 (refused). The last tests put a real HAProxy (send-proxy-v2,
source 127.0.0.50) in front of the node and connect with psycopg2, which always comes from
127.0.0.1: the node must decide, and report, by 127.0.0.1, never by the balancer's address.
"""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest
import rawpg
from conftest import free_port, listening, run_cli, start_node, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from pillbug.cli.main import build_parser
from pillbug.cli.start import FlagError, cluster_config, parse_proxy_protocol_from
from pillbug.pgwire import proxy_protocol as pp
from pillbug.util import errors

SETTING = "server.host_based_authentication.configuration"
USER = "proxyuser"
PASSWORD = "proxy-pw-1"
BALANCER = "127.0.0.50"
STRANGER = "127.0.0.51"
NODE_ADDR = ("127.0.0.1", 26257)


# ---- the parser ----------------------------------------------------------------------------------

ports = st.integers(0, 65535)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=64)), max_size=8)


def endpoints(version: int):
    return st.tuples(st.ip_addresses(v=version).map(str), ports)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda v: st.tuples(endpoints(v), endpoints(v))), tlvs,
       st.binary(max_size=32))
def test_round_trip(ends, tlv_list, tail):
    source, destination = ends
    header = pp.encode_header(source, destination, tlvs=tlv_list)
    parsed = pp.parse_header(header + tail)
    assert parsed == pp.ProxyHeader(len(header), pp.PROXY, source, destination)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda v: st.tuples(endpoints(v), endpoints(v))), tlvs)
def test_every_prefix_asks_for_more(ends, tlv_list):
    header = pp.encode_header(*ends, tlvs=tlv_list)
    for end in range(len(header)):
        assert pp.parse_header(header[:end]) is None, end
        assert pp.parse_header(bytearray(header[:end])) is None, end


def _outcome(data: bytes) -> str:
    try:
        header = pp.parse_header(data)
    except errors.PgError as exc:
        assert exc.code == errors.PROTOCOL_VIOLATION
        assert "PROXY protocol" in exc.message
        return "refused"
    if header is None:
        return "more"
    assert 16 <= header.length <= len(data) and header.length <= 16 + pp.MAX_PAYLOAD
    return "parsed"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_08P01_only(data):
    _outcome(data)
    _outcome(b"\r" + data)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_garbage_after_the_signature_is_refused_with_08P01_only(ver_cmd, fam, length, rest):
    data = pp.SIGNATURE + bytes([ver_cmd, fam]) + struct.pack(">H", length) + rest
    outcome = _outcome(data)
    if length > pp.MAX_PAYLOAD or ver_cmd >> 4 != 2:
        assert outcome == "refused"


def _fixed(ver_cmd: int, fam: int, payload: bytes, length: int | None = None) -> bytes:
    return pp.SIGNATURE + bytes([ver_cmd, fam]) + struct.pack(">H", len(payload) if length is None else length) + payload


V4 = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", 5000, 26257)


@pytest.mark.parametrize("data, part", [
    (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(4), "bad signature"),
    (b"\r\x00", "bad signature"),
    (_fixed(0x11, 0x11, V4), "version 1, expected 2"),
    (_fixed(0x22, 0x11, V4), "unknown command 0x2"),
    (_fixed(0x21, 0x41, V4), "unknown address family 0x4"),
    (_fixed(0x21, 0x13, V4), "unknown transport protocol 0x3"),
    (_fixed(0x21, 0x12, V4), "datagram"),
    (_fixed(0x21, 0x10, V4), "unspecified transport"),
    (_fixed(0x21, 0x11, V4[:8]), "too few for the addresses"),
    (_fixed(0x21, 0x21, V4), "too few for the addresses"),  # an INET6 header with INET's 12 bytes
    (_fixed(0x21, 0x11, V4 + b"\x01\x00"), "stray bytes"),
    (_fixed(0x21, 0x11, V4 + b"\x01\x00\x05abc"), "runs past the end"),
    (_fixed(0x21, 0x11, b"", length=pp.MAX_PAYLOAD + 1), "more than the 2048 allowed"),
    (b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 26257\r\n", "version 1 (text) is not supported"),
])
def test_malformed_headers(data, part):
    with pytest.raises(errors.PgError) as exc:
        pp.parse_header(data)
    assert exc.value.code == "08P01"
    assert part in exc.value.message


def test_an_oversized_header_is_refused_from_its_first_16_bytes():
    # the node never buffers a header's body it would refuse anyway
    with pytest.raises(errors.PgError):
        pp.parse_header(_fixed(0x21, 0x11, b"", length=0xFFFF))
    largest = _fixed(0x21, 0x11, V4 + b"\x04" + struct.pack(">H", pp.MAX_PAYLOAD - 15) + bytes(pp.MAX_PAYLOAD - 15))
    assert pp.parse_header(largest).length == 16 + pp.MAX_PAYLOAD


def test_local_unspec_and_unix_keep_the_connection_address():
    local = pp.encode_header(None, None, command=pp.LOCAL)
    assert pp.parse_header(local) == pp.ProxyHeader(16, pp.LOCAL, None, None)
    # LOCAL with addresses (and even a short block): the receiver ignores the block
    local_v4 = pp.encode_header(("10.0.0.1", 1), ("10.0.0.2", 2), command=pp.LOCAL)
    assert pp.parse_header(local_v4).source is None
    assert pp.parse_header(_fixed(0x20, 0x11, b"")).source is None
    assert pp.parse_header(pp.encode_header(None, None)) == pp.ProxyHeader(16, pp.PROXY, None, None)
    unix = _fixed(0x21, 0x31, b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0"))
    assert pp.parse_header(unix) == pp.ProxyHeader(16 + 216, pp.PROXY, None, None)


def test_a_startup_packet_is_never_taken_for_a_header():
    # what the connection's first-byte decision rests on
    for first_message in (struct.pack("!ii", 8, 80877103), struct.pack("!ii", 16, 80877102) + bytes(8),
                          struct.pack("!ii", 9, 196608) + b"\0"):
        assert first_message[0] not in pp.FIRST_BYTES
    assert pp.SIGNATURE[0] in pp.FIRST_BYTES


# ---- end to end: a node that trusts 127.0.0.50 -------------------------------------------------

@pytest.fixture(scope="module")
def balanced(certs):
    tmp = tempfile.mkdtemp(prefix="pillbug-proxy-")
    node = start_node(tmp, certs, [f"--accept-proxy-protocol-from={BALANCER}/32,fd00::/8"])
    node.sql(f"CREATE USER IF NOT EXISTS {USER} WITH PASSWORD '{PASSWORD}'")
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def allow_only_127_0_0_2(balanced):
    balanced.sql(f"SET CLUSTER SETTING {SETTING} = 'host all all 127.0.0.2/32 password'")
    yield
    balanced.sql(f"RESET CLUSTER SETTING {SETTING}")


def claim(address: str, port: int = 40000) -> bytes:
    return pp.encode_header((address, port), NODE_ADDR)


def via(node, source: str, header: bytes | list[bytes], user: str = USER) -> rawpg.Exchange:
    return rawpg.exchange(node.port, user, source=source, cafile=os.path.join(node.certs_dir, "ca.crt"),
                          password=PASSWORD, proxy_header=header)


def refused_as(result: rawpg.Exchange, code: str) -> dict[str, str]:
    assert result.names() == ["ErrorResponse"], result.names()
    err = result.error
    assert err["C"] == code and err["S"] == "FATAL", err
    return err


def test_the_header_s_address_decides(balanced, allow_only_127_0_0_2):
    err = refused_as(via(balanced, BALANCER, claim("127.0.0.3")), "28000")
    assert '"127.0.0.3"' in err["M"] and BALANCER not in err["M"], err
    assert via(balanced, BALANCER, claim("127.0.0.2")).authenticated


def test_a_header_split_over_segments(balanced, allow_only_127_0_0_2):
    header = claim("127.0.0.2")
    pieces = [header[:1], header[1:5], header[5:13], header[13:15], header[15:17], header[17:]]
    assert via(balanced, BALANCER, pieces).authenticated
    header = claim("127.0.0.3")
    err = refused_as(via(balanced, BALANCER, [header[:12], header[12:]]), "28000")
    assert '"127.0.0.3"' in err["M"]


def test_an_ipv6_client_behind_the_balancer(balanced):
    balanced.sql(f"SET CLUSTER SETTING {SETTING} = 'host all all 2001:db8::/32 password'")
    try:
        header = pp.encode_header(("2001:db8::7", 5000), ("2001:db8::1", 26257))
        assert via(balanced, BALANCER, header).authenticated
        err = refused_as(via(balanced, BALANCER, pp.encode_header(("2001:db9::7", 5000), ("::1", 1))), "28000")
        assert '"2001:db9::7"' in err["M"]
    finally:
        balanced.sql(f"RESET CLUSTER SETTING {SETTING}")


def test_a_header_from_an_untrusted_peer_is_refused(balanced):
    err = refused_as(via(balanced, STRANGER, claim("127.0.0.2")), "08P01")
    assert STRANGER in err["M"] and "not a trusted balancer" in err["M"]
    # even split, refused at its first byte: the node does not wait for the rest
    err = refused_as(via(balanced, STRANGER, [claim("127.0.0.2")[:1], claim("127.0.0.2")[1:]]), "08P01")
    assert "not a trusted balancer" in err["M"]
    assert f"PROXY protocol header from {STRANGER}, which is not in the trusted balancer networks" in balanced.log()
    # the same peer without a header is an ordinary client
    assert via(balanced, STRANGER, b"").authenticated


def test_a_trusted_balancer_without_a_header_is_a_direct_client(balanced, allow_only_127_0_0_2):
    err = refused_as(via(balanced, BALANCER, b""), "28000")
    assert f'"{BALANCER}"' in err["M"]
    assert via(balanced, "127.0.0.2", b"").authenticated


def test_local_command_keeps_the_balancer_s_address(balanced, allow_only_127_0_0_2):
    local = pp.encode_header(None, None, command=pp.LOCAL)
    err = refused_as(via(balanced, BALANCER, local), "28000")
    assert f'"{BALANCER}"' in err["M"]
    balanced.sql(f"SET CLUSTER SETTING {SETTING} = 'host all all {BALANCER}/32 password'")
    assert via(balanced, BALANCER, local).authenticated


@pytest.mark.parametrize("header, part", [
    (_fixed(0x21, 0x11, V4[:8]), "too few for the addresses"),
    (_fixed(0x21, 0x11, b"", length=0xFFFF), "more than the 2048 allowed"),
    (b"PROXY TCP4 127.0.0.2 127.0.0.1 5000 26257\r\n", "send-proxy-v2"),
    (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(4), "bad signature"),
])
def test_a_malformed_header_from_the_balancer(balanced, header, part):
    err = refused_as(via(balanced, BALANCER, header), "08P01")
    assert part in err["M"], err


def test_a_node_without_the_flag_refuses_every_header(node):
    result = rawpg.exchange(node.port, "root", source="127.0.0.1", cafile=os.path.join(node.certs_dir, "ca.crt"),
                            proxy_header=claim("127.0.0.2"))
    err = refused_as(result, "08P01")
    assert "127.0.0.1" in err["M"] and "not a trusted balancer" in err["M"]


def test_the_flag_s_networks():
    assert parse_proxy_protocol_from(None) is None
    assert parse_proxy_protocol_from("10.1.0.0/16, 127.0.0.50,fd00::/8") == ["10.1.0.0/16", "127.0.0.50/32",
                                                                             "fd00::/8"]
    for value, reason in (("10.0.0.0/40", "10.0.0.0/40"), ("10.0.0.1/8", "has host bits set"),
                          ("nonsense", "does not appear to be an IPv4 or IPv6 network"), (",", "expected CIDR")):
        with pytest.raises(FlagError) as exc:
            parse_proxy_protocol_from(value)
        assert str(exc.value).startswith(f'invalid argument "{value}" for "--accept-proxy-protocol-from" flag: ')
        assert reason in str(exc.value)


def test_the_flag_reaches_the_node_config():
    argv = ["start", "--insecure", "--join=127.0.0.11:26257", "--accept-proxy-protocol-from=10.0.0.2,10.0.1.0/24"]
    assert cluster_config(build_parser().parse_args(argv)).proxy_protocol_from == ["10.0.0.2/32", "10.0.1.0/24"]
    assert cluster_config(build_parser().parse_args(argv[:-1])).proxy_protocol_from is None


def test_a_bad_flag_is_a_startup_error(tmp_path):
    value = "10.0.0.1/8"
    flag = f"--accept-proxy-protocol-from={value}"
    single = run_cli("start-single-node", f"--store={tmp_path / 's'}", "--insecure", flag, check=False)
    cluster = run_cli("start", f"--store={tmp_path / 'c'}", "--insecure", "--join=127.0.0.1:1", flag, check=False)
    for proc in (single, cluster):
        assert proc.returncode == 1
        assert f'ERROR: invalid argument "{value}" for "--accept-proxy-protocol-from" flag: ' in proc.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


# ---- end to end: a real HAProxy in front ---------------------------------------------------------

GLOBAL_BALANCER = "127.0.0.60"


@pytest.fixture(scope="module")
def haproxy(balanced, tmp_path_factory):
    """HAProxy on 127.0.0.1:<port>, in TCP mode, passing TLS through to the node and telling it the
    client's address with send-proxy-v2 while connecting from 127.0.0.50. Returns (port, port of
    a chain): a global balancer (from 127.0.0.60) in front of a regional one that accepts its
    header and passes the client's address on, as in a multi-region cluster."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    port, global_port, regional_port = free_port(), free_port(), free_port()
    cfg = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    cfg.write_text(f"""global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

listen pillbug
    bind 127.0.0.1:{port}
    server n1 127.0.0.1:{balanced.port} send-proxy-v2 source {BALANCER}

listen global
    bind 127.0.0.1:{global_port}
    server region1 127.0.0.1:{regional_port} send-proxy-v2 source {GLOBAL_BALANCER}

listen region1
    bind 127.0.0.1:{regional_port} accept-proxy
    server n1 127.0.0.1:{balanced.port} send-proxy-v2 source {BALANCER}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or all(listening("127.0.0.1", p) for p in (port, global_port)),
                 "haproxy to listen", timeout=15)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        yield port, global_port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def through(balanced, port: int, **kwargs):
    params = balanced.params(USER, PASSWORD)
    params.update(host="127.0.0.1", port=str(port), application_name="via-haproxy", **kwargs)
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


@pytest.mark.parametrize("entry", ["regional", "global"])
def test_haproxy_passes_the_client_address(balanced, haproxy, entry):
    port = haproxy[0] if entry == "regional" else haproxy[1]
    # Only the balancers' own addresses allowed: were the node to believe the socket (or the
    # global balancer's address in a chain), this would pass.
    balanced.sql(f"SET CLUSTER SETTING {SETTING} = "
                 f"'host all all {BALANCER}/32 password\nhost all all {GLOBAL_BALANCER}/32 password'")
    try:
        with pytest.raises(psycopg2.OperationalError) as exc:
            through(balanced, port)
        assert '"127.0.0.1"' in str(exc.value) and BALANCER not in str(exc.value), exc.value
        balanced.sql(f"SET CLUSTER SETTING {SETTING} = 'host all all 127.0.0.1/32 password'")
        conn = through(balanced, port)
        try:
            assert conn.get_dsn_parameters()["sslmode"] == "verify-full"
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
                cur.execute("SELECT client_addr FROM pg_catalog.pg_stat_activity "
                            "WHERE application_name = 'via-haproxy'")
                assert cur.fetchall() == [("127.0.0.1",)]
        finally:
            conn.close()
    finally:
        balanced.sql(f"RESET CLUSTER SETTING {SETTING}")


def test_cancel_request_through_haproxy(balanced, haproxy):
    # libpq sends the CancelRequest on a new connection to the same address: through HAProxy,
    # which puts a header before it too.
    conn = through(balanced, haproxy[0])
    try:
        outcome: dict = {}

        def sleep():
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(30)")
            except psycopg2.Error as exc:
                outcome["error"] = exc
        thread = threading.Thread(target=sleep, daemon=True)
        began = time.monotonic()
        thread.start()
        wait_for(lambda: balanced.sql("SELECT count(*) FROM [SHOW QUERIES] WHERE query LIKE '%pg_sleep(30)%' "
                                      "AND query NOT LIKE '%SHOW QUERIES%'")[0][0] == 1,
                 "the sleep to run", timeout=15)
        conn.cancel()
        thread.join(20)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome
        assert time.monotonic() - began < 20  # cut short (a liveness bound)
        with conn.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
    finally:
        conn.close()
