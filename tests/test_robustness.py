"""Bad input costs nothing else: abuse of the SQL port gets the offender an error with the right
SQLSTATE (or a closed connection), and the node keeps serving everyone else.

Each case in ABUSES sends raw bytes (wire_client.RawConnection, TLS where the protocol gets that
far), checks what came back, and then — after every case — a separate healthy connection must
still work and the node process must be alive. Other tests check that what a client sends or
refuses to read cannot grow the node's memory without bound, and that statements the parser and
planner find hard (a 20 MiB query, 10k nested parentheses, a 100k-element IN list) fail or run
without freezing the node.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import psycopg2
import pytest
from conftest import round_trips, wait_for, wait_until_the_pipe_is_full
from wire_client import (
    FLUSH,
    SSL_REQUEST,
    SYNC,
    RawConnection,
    bind,
    describe,
    execute,
    message,
    parse,
    query,
    startup_packet,
)

MAX_MESSAGE = 16 << 20


def _healthy(node) -> None:
    assert node.proc is not None and node.proc.poll() is None, "node process died"
    conn = node.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1 + 1")
        assert cur.fetchone() == (2,)
    finally:
        conn.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def raw(node):
    conns: list[RawConnection] = []

    def make(login: bool = True, **params: str) -> RawConnection:
        conn = RawConnection(node.host, node.port, node.certs_dir)
        conns.append(conn)
        if login:
            msgs = conn.login(**params)
            assert msgs and msgs[-1][0] == b"Z", msgs
        return conn
    yield make
    for conn in conns:
        conn.close()
    _healthy(node)


def _closed(conn: RawConnection) -> bool:
    """The server closed the connection (after whatever it still had to say)."""
    try:
        while conn.read_message() is not None:
            pass
        return True
    except (ConnectionError, OSError):
        return True


# ---- before and during startup -------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    os.urandom(4096), b"\x00" * 3, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xff\xff\xff" + b"x" * 100,
    struct.pack(">ii", 4, 0), struct.pack(">ii", 2**31 - 1, 196608), struct.pack(">ii", 8, 1234),
], ids=["random", "short", "http", "negative-length", "tiny-length", "huge-length", "bad-protocol"])
def test_garbage_before_startup(node, payload):
    sock = socket.create_connection((node.host, node.port), timeout=10)
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        # Either silence or one FATAL protocol violation; never a hang.
        if data:
            assert data[:1] == b"E" and b"C08P01" in data, data[:200]
    finally:
        sock.close()
    _healthy(node)


def test_plaintext_startup_on_secure_node(node):
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.send(startup_packet())
        msgs = conn.read_until(b"E")
        err = conn.errors(msgs)[0]
        assert err["S"] == "FATAL" and err["C"] == "28000"
        assert err["M"] == "node is running secure mode, SSL connection required"
    finally:
        conn.close()
    _healthy(node)


def test_plaintext_bytes_after_ssl_request_are_refused(node):
    """Bytes pipelined behind the SSLRequest were sent in the clear: they must not be taken as if
    they had come through TLS (PostgreSQL's CVE-2021-23214)."""
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.send(SSL_REQUEST + startup_packet())
        data = conn.sock.recv(4096)
        assert data[:1] == b"E" and b"C08P01" in data and b"unencrypted data after SSL request" in data
    finally:
        conn.close()
    _healthy(node)


def test_garbage_instead_of_tls_handshake(node):
    sock = socket.create_connection((node.host, node.port), timeout=20)
    try:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        sock.sendall(os.urandom(2048))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    except ConnectionError:
        pass
    finally:
        sock.close()
    _healthy(node)


def test_oversized_startup_packet(raw):
    conn = raw(login=False)
    conn.tls()
    conn.send(struct.pack(">ii", 20_000, 196608) + b"x" * 19_992)
    err = conn.errors(conn.read_until(b"E"))[0]
    assert err["C"] == "08P01"


def test_cancel_request_with_wrong_key_is_ignored(node, raw):
    victim = raw()
    sock = socket.create_connection((node.host, node.port), timeout=10)
    sock.sendall(struct.pack(">iiii", 16, 80877102, 1, 12345))
    assert sock.recv(10) == b""
    sock.close()
    victim.send(query("SELECT 7"))
    msgs = victim.read_until()
    assert [t for t, _ in msgs] == [b"T", b"D", b"C", b"Z"]


# ---- after startup: malformed messages -------------------------------------------------------

# (bytes to send after login, expected SQLSTATE, whether the connection survives)
MALFORMED = [
    ("unknown-type", message(b"~", b"abc"), "08P01", False),
    ("length-below-4", b"Q" + struct.pack(">i", 2), "08P01", False),
    ("negative-length", b"Q" + struct.pack(">i", -5), "08P01", False),
    ("query-bad-utf8", message(b"Q", b"SELECT '\xff\xfe'\x00"), "22021", True),
    ("query-no-terminator", message(b"Q", b"SELECT 1"), "08P01", True),
    ("parse-truncated", message(b"P", b"\x00SELECT 1\x00\x00") + SYNC, "08P01", True),
    ("parse-bad-oid", parse("SELECT $1", oids=(999999,)) + SYNC, "42704", True),
    ("bind-unknown-statement", bind([], stmt="nope") + SYNC, "26000", True),
    ("bind-too-few-params", parse("SELECT $1::INT") + bind([]) + SYNC, "08P01", True),
    ("bind-int8-wrong-length", parse("SELECT $1::INT8") + bind([b"\x00\x01\x02"], formats=(1,)) + SYNC,
     "22P03", True),
    ("bind-uuid-wrong-length", parse("SELECT $1::UUID") + bind([b"\x00" * 15], formats=(1,)) + SYNC, "22P03", True),
    ("bind-numeric-bad-digit", parse("SELECT $1::DECIMAL") + bind([struct.pack(">hhHHH", 1, 0, 0, 0, 10000)],
                                                                   formats=(1,)) + SYNC, "22P03", True),
    ("bind-numeric-bad-length", parse("SELECT $1::DECIMAL") + bind([struct.pack(">hhHH", 5, 0, 0, 0)],
                                                                    formats=(1,)) + SYNC, "22P03", True),
    ("bind-array-truncated", parse("SELECT $1::INT8[]") + bind([struct.pack(">iiIii", 1, 0, 20, 5, 1)],
                                                                formats=(1,)) + SYNC, "22P03", True),
    ("bind-jsonb-bad-version", parse("SELECT $1::JSONB") + bind([b"\x02{}"], formats=(1,)) + SYNC, "22P03", True),
    ("bind-date-out-of-range", parse("SELECT $1::DATE") + bind([struct.pack(">i", 2**31 - 1)], formats=(1,))
     + SYNC, "22008", True),
    ("bind-bad-utf8-text-param", parse("SELECT $1::STRING") + bind([b"\xc3\x28"]) + SYNC, "22021", True),
    ("bind-bad-format-code", parse("SELECT $1::INT") + bind([b"1"], formats=(7,)) + SYNC, "08P01", True),
    ("bind-bad-result-format", parse("SELECT 1") + bind([], result_formats=(3,)) + SYNC, "08P01", True),
    ("bind-length-past-end", parse("SELECT $1::STRING") + message(b"B", b"\x00\x00\x00\x00\x00\x01"
                                                                   + struct.pack(">i", 1000) + b"abc") + SYNC,
     "08P01", True),
    ("execute-unknown-portal", execute("nope") + SYNC, "34000", True),
    ("describe-unknown-portal", describe(b"P", "nope") + SYNC, "34000", True),
    ("describe-bad-kind", describe(b"Z") + SYNC, "08P01", True),
    ("close-bad-kind", message(b"C", b"Zname\x00") + SYNC, "08P01", True),
    ("copy-data-outside-copy", message(b"d", b"1\t2\n") + query("SELECT 1"), None, True),
    ("function-call", message(b"F", b"\x00\x00\x00\x01"), "0A000", True),
]


@pytest.mark.parametrize("name,payload,sqlstate,survives", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_message(raw, name, payload, sqlstate, survives):
    conn = raw()
    conn.send(payload)
    msgs = conn.read_until(b"Z") if survives else conn.read_until(b"E")
    errs = conn.errors(msgs)
    if sqlstate is None:
        assert not errs, errs
    else:
        assert errs and errs[0]["C"] == sqlstate, (msgs, errs)
    if survives:
        assert msgs[-1][0] == b"Z"
        conn.send(query("SELECT 41 + 1"))
        after = conn.read_until()
        assert (b"D", b"\x00\x01\x00\x00\x00\x0242") in after, after
    else:
        assert errs[0]["S"] == "FATAL"
        assert _closed(conn)


def test_truncated_message_then_disconnect(raw):
    conn = raw()
    conn.send(b"Q" + struct.pack(">i", 1000) + b"SELECT")
    conn.close()


def test_oversized_message_is_refused_and_connection_goes_on(raw):
    conn = raw()
    sql = b"SELECT '" + b"x" * (MAX_MESSAGE + 1024) + b"'"
    conn.send(message(b"Q", sql + b"\x00"))
    msgs = conn.read_until()
    err = conn.errors(msgs)[0]
    assert err["C"] == "54000" and "message size" in err["M"]
    # The same for the extended protocol: the error, then everything up to Sync is skipped.
    conn.send(parse(sql) + bind([]) + execute() + SYNC)
    msgs = conn.read_until()
    assert [e["C"] for e in conn.errors(msgs)] == ["54000"] and msgs[-1] == (b"Z", b"I")
    conn.send(query("SELECT 1"))
    assert conn.read_until()[-1] == (b"Z", b"I")


def test_large_statement_under_the_limit(raw):
    conn = raw()
    literal = "y" * (2 << 20)
    conn.send(query(f"SELECT length('{literal}')"))
    msgs = conn.read_until()
    assert (b"D", b"\x00\x01\x00\x00\x00\x07" + str(2 << 20).encode()) in msgs


def test_deeply_nested_expression(node, raw):
    conn = raw()
    conn.send(query("SELECT " + "(" * 10_000 + "1" + ")" * 10_000))
    msgs = conn.read_until()
    err = conn.errors(msgs)
    # PostgreSQL's grammar gives up at 10000 levels ("memory exhausted", a syntax error).
    assert err and err[0]["C"] in ("42601", "54001"), msgs
    conn.send(parse("SELECT " + "-(" * 2000 + "1" + ")" * 2000) + bind([]) + execute() + SYNC)
    msgs = conn.read_until()
    errs = conn.errors(msgs)
    # Either it is evaluated (2000 negations of 1) or refused as too complex; nothing else.
    assert (errs and errs[0]["C"] == "54001") or (b"D", b"\x00\x01\x00\x00\x00\x011") in msgs, msgs
    conn.send(query("SELECT 1"))
    assert conn.read_until()[-1] == (b"Z", b"I")


def test_huge_in_list(node):
    conn = node.connect()
    try:
        cur = conn.cursor()
        values = ",".join(str(i) for i in range(100_000))
        started = time.monotonic()
        cur.execute(f"SELECT count(*) FROM generate_series(1, 1000) AS g(x) WHERE x IN ({values})")
        assert cur.fetchone() == (1000,)
        assert time.monotonic() - started < 60  # a liveness bound (no freeze), not a speed target
    finally:
        conn.close()


def test_syntax_error_position(raw):
    conn = raw()
    conn.send(query("SELECT 1 FROM WHERE x"))
    err = conn.errors(conn.read_until())[0]
    assert err["C"] == "42601" and err["S"] == "ERROR" and err["P"] == "15"


# ---- resource bounds ---------------------------------------------------------------------

def test_client_that_stops_reading_does_not_grow_node_memory(node, raw):
    """No guessed wait: once the TCP pipe is full, another client runs 500 statements, each a turn
    of the node's event loop in which a statement still producing rows would get a 20 ms slice
    (seconds of production, hundreds of MB had it not paused); the node's memory stays put."""
    conn = raw()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    before = _rss_kib(node.proc.pid)
    # 5 million rows is hundreds of megabytes of DataRows; the client reads none of them.
    conn.send(query("SELECT x, 'some padding to make rows wider' FROM generate_series(1, 5000000) AS g(x)"))
    wait_until_the_pipe_is_full(node.port, conn.sock.getsockname()[1])
    round_trips(node, 500)  # others are served meanwhile
    _healthy(node)
    grown = _rss_kib(node.proc.pid) - before
    assert grown < 64 << 10, f"node grew by {grown} KiB while a client was not reading"
    conn.close()


def test_pipelined_input_without_reading_is_bounded(node, raw):
    """A client that sends queries as fast as it can and never reads the answers."""
    conn = raw()
    before = _rss_kib(node.proc.pid)
    batch = query("SELECT 'a fairly long string literal so that every answer has some bytes in it'") * 2000
    sent = 0
    conn.sock.settimeout(2)
    try:
        while sent < 400 << 20:
            conn.sock.sendall(batch)
            sent += len(batch)
    except TimeoutError:
        pass  # the node stopped reading: TCP pushes back on us, as it should
    assert sent < 400 << 20, "the node kept reading input it could not answer"
    _healthy(node)
    grown = _rss_kib(node.proc.pid) - before
    assert grown < 128 << 10, f"node grew by {grown} KiB"
    conn.close()


def test_many_prepared_statements_are_bounded(raw):
    conn = raw()
    data = b"".join(parse("SELECT 1", name=f"s{i}") for i in range(10_001)) + SYNC
    conn.send(data)
    msgs = conn.read_until()
    errs = conn.errors(msgs)
    assert errs and errs[0]["C"] == "54000"


def test_flush_without_sync_delivers_results(raw):
    conn = raw()
    conn.send(parse("SELECT 5") + bind([]) + execute() + FLUSH)
    msgs = conn.read_until(b"C")
    assert [t for t, _ in msgs] == [b"1", b"2", b"D", b"C"]
    conn.send(SYNC)
    assert conn.read_until() == [(b"Z", b"I")]


def test_abuse_from_many_connections_at_once(node):
    """Garbage from several connections while a normal client keeps working."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def abuser():
        while not stop.is_set():
            try:
                s = socket.create_connection((node.host, node.port), timeout=5)
                s.sendall(os.urandom(512))
                s.close()
            except OSError:
                pass

    threads = [threading.Thread(target=abuser) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        conn = node.connect()
        cur = conn.cursor()
        for i in range(50):
            cur.execute("SELECT %s", (i,))
            assert cur.fetchone() == (i,)
        conn.close()
    except BaseException as exc:
        failures.append(exc)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    _healthy(node)


def test_startup_options_and_unknown_parameters(node):
    conn = psycopg2.connect(**node.params(), options="-c timezone=America/New_York -c application_name=probe",
                            application_name="from-startup")
    try:
        cur = conn.cursor()
        cur.execute("SHOW timezone")
        assert cur.fetchone() == ("America/New_York",)
        assert conn.get_parameter_status("TimeZone") == "America/New_York"
        cur.execute("SHOW application_name")
        assert cur.fetchone()[0] in ("probe", "from-startup")
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(**node.params(), options="-c timezone=Not/AZone")
    assert "Not/AZone" in str(info.value) or "time zone" in str(info.value)



def test_disconnect_during_long_statement(node, raw):
    """The client goes away while its statement computes: the statement stops at its next batch
    and the session is released; nobody else notices."""
    long = "SELECT count(*) FROM generate_series(1, 500000000)"

    def listed() -> int:
        return sum(1 for (q,) in node.sql("SELECT query FROM [SHOW CLUSTER QUERIES]") if q == long)
    for _ in range(3):
        conn = raw()
        conn.send(query(long))
        wait_for(listed, "the statement to be running")  # it is computing when the client leaves
        conn.close()
    _healthy(node)
    wait_for(lambda: listed() == 0 or None, "the abandoned statements to end")
    # The sessions are gone (their statements ended), so a DDL on a fresh table is not held up.
    started = time.monotonic()
    node.sql("CREATE TABLE IF NOT EXISTS after_disconnect (x INT)", "DROP TABLE after_disconnect")
    assert time.monotonic() - started < 10  # a liveness bound (no hang), not a speed target
