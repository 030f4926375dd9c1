"""Authentication: client certificates, cleartext passwords inside TLS, SCRAM-SHA-256, the HBA
methods (cert, password, cert-password, scram-sha-256, trust, reject), NOLOGIN, plaintext refused
by a secure node, and how passwords are stored.

Real clients (psycopg2, psycopg 3, asyncpg) over real sockets; the raw pgwire client of
tests/rawpg.py where the exact messages matter.
"""
from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import tempfile

import asyncpg
import psycopg
import psycopg2
import pytest
import rawpg
from conftest import start_node

from pillbug.sql.catalog import system
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.util import encoding as enc
from pillbug.util import passwords

SETTING = "server.host_based_authentication.configuration"
USER = "authuser"
PASSWORD = "auth-pw-Secret"


@pytest.fixture(scope="module", autouse=True)
def users(node):
    node.sql(f"CREATE USER IF NOT EXISTS {USER} WITH PASSWORD '{PASSWORD}'",
             "CREATE USER IF NOT EXISTS testuser")  # the certs fixture has a client cert for testuser


@pytest.fixture(autouse=True)
def reset_hba(node):
    yield
    node.sql(f"RESET CLUSTER SETTING {SETTING}")


def set_hba(node, config: str) -> None:
    node.sql(f"SET CLUSTER SETTING {SETTING} = '{config}'")


def raw(node, user: str = USER, password: str | None = None, cert_user: str | None = None, **kw):
    certs = node.certs_dir
    if cert_user is not None:
        kw["certfile"] = os.path.join(certs, f"client.{cert_user}.crt")
        kw["keyfile"] = os.path.join(certs, f"client.{cert_user}.key")
    return rawpg.exchange(node.port, user, cafile=os.path.join(certs, "ca.crt"), password=password, **kw)


def connect_error(node, **kw) -> str:
    with pytest.raises(psycopg2.OperationalError) as exc:
        node.connect(**kw)
    return str(exc.value)


async def _asyncpg_current_user(node, user: str, password: str) -> str:
    ctx = ssl.create_default_context(cafile=os.path.join(node.certs_dir, "ca.crt"))
    conn = await asyncpg.connect(host="localhost", port=node.port, user=user, password=password,
                                 database="defaultdb", ssl=ctx)
    try:
        return await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()


# ---- passwords -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cert-password", "password", "scram-sha-256"])
def test_wrong_password_and_unknown_user_are_indistinguishable(node, method):
    set_hba(node, f"host all all all {method}")
    wrong = raw(node, USER, "not-the-password")
    # a name of the same length, so that even the message length is the same
    unknown = raw(node, "nouserxx", "not-the-password")
    assert wrong.names() == unknown.names(), (wrong.names(), unknown.names())
    assert wrong.names()[-1] == "ErrorResponse"
    assert "AuthenticationOk" not in wrong.names()
    e1, e2 = wrong.error, unknown.error
    assert e1["C"] == e2["C"] == "28P01"
    assert e1["M"] == f"password authentication failed for user {USER}"
    assert e2["M"] == "password authentication failed for user nouserxx"
    assert {k: v for k, v in e1.items() if k != "M"} == {k: v for k, v in e2.items() if k != "M"}
    # and through libpq, the texts differ only by the name
    m1 = connect_error(node, user=USER, password="not-the-password")
    m2 = connect_error(node, user="nouserxx", password="not-the-password")
    assert m1.replace(USER, "X") == m2.replace("nouserxx", "X")


def _salt(exchange: rawpg.Exchange) -> str:
    for kind, body in exchange.messages:
        if kind == "R" and body[:4] == b"\0\0\0\x0b":
            return dict(p.split("=", 1) for p in body[4:].decode().split(","))["s"]
    raise AssertionError(exchange.names())


def test_unknown_users_salt_behaves_like_a_real_one(node):
    """A real user's SCRAM salt is stable across attempts; so is an unknown user's, and two unknown
    users do not share one (which would give them away)."""
    assert _salt(raw(node, USER, "x")) == _salt(raw(node, USER, "y"))
    assert _salt(raw(node, "ghost1", "x")) == _salt(raw(node, "ghost1", "y"))
    assert _salt(raw(node, "ghost1", "x")) != _salt(raw(node, "ghost2", "x"))
    assert len(base64.b64decode(_salt(raw(node, "ghost1", "x")))) == 16


def test_sqlstate_28P01_through_asyncpg(node):
    for user in (USER, "nosuchuser"):
        with pytest.raises(asyncpg.PostgresError) as exc:
            asyncio.run(_asyncpg_current_user(node, user, "wrong"))
        assert exc.value.sqlstate == "28P01"
        assert exc.value.args[0] == f"password authentication failed for user {user}"


def test_scram_is_the_default_for_password_users(node):
    result = raw(node, USER, PASSWORD)
    assert result.names()[:4] == ["AuthenticationSASL", "AuthenticationSASLContinue",
                                  "AuthenticationSASLFinal", "AuthenticationOk"]
    assert b"SCRAM-SHA-256\0" in result.messages[0][1]
    assert result.authenticated
    # libpq and psycopg 3 speak it (asyncpg's own startup does not get this far yet: see the report)
    node.connect(USER, PASSWORD).close()
    with psycopg.connect(**node.params(USER, PASSWORD)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (USER,)


def test_scram_method_rejects_a_bad_proof_after_the_exchange(node):
    set_hba(node, "host all all all scram-sha-256")
    result = raw(node, USER, "wrong-password")
    assert result.names() == ["AuthenticationSASL", "AuthenticationSASLContinue", "ErrorResponse"]
    assert raw(node, USER, PASSWORD).authenticated


def test_cleartext_password_inside_tls(node):
    set_hba(node, "host all all all password")
    result = raw(node, USER, PASSWORD)
    assert result.names()[:2] == ["AuthenticationCleartextPassword", "AuthenticationOk"]
    assert result.authenticated
    conn = node.connect(USER, PASSWORD)
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (USER,)
    conn.close()


def test_password_null_and_alter_password(node):
    node.sql("CREATE USER pwuser WITH PASSWORD 'first-pw'")
    try:
        node.connect("pwuser", "first-pw").close()
        conn = node.connect("pwuser", "first-pw")
        with conn.cursor() as cur:
            cur.execute("ALTER USER pwuser WITH PASSWORD 'second-pw'")  # a user may change their own
        conn.close()
        assert "password authentication failed" in connect_error(node, user="pwuser", password="first-pw")
        node.connect("pwuser", "second-pw").close()
        node.sql("ALTER USER pwuser WITH PASSWORD NULL")
        assert "password authentication failed" in connect_error(node, user="pwuser", password="second-pw")
    finally:
        node.sql("DROP USER IF EXISTS pwuser")


# ---- certificates --------------------------------------------------------------------------


def test_client_certificate_authenticates_its_user(node):
    for method in ("cert", "cert-password"):
        set_hba(node, f"host all all all {method}")
        result = raw(node, "testuser", cert_user="testuser")
        assert result.names()[0] == "AuthenticationOk", result.names()
        assert result.authenticated
    conn = node.connect("testuser")  # sslcert/sslkey from client.testuser.*
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("testuser",)
    conn.close()


@pytest.mark.parametrize("method", ["cert", "cert-password"])
def test_certificate_for_another_user_is_refused(node, method):
    set_hba(node, f"host all all all {method}")
    result = raw(node, USER, password=PASSWORD, cert_user="testuser")
    assert result.names() == ["ErrorResponse"], result.names()
    assert result.error["C"] == "28000"
    assert "certificate is for testuser" in result.error["M"]
    # root's certificate does not make anyone root either
    result = raw(node, USER, password=PASSWORD, cert_user="root")
    assert result.names() == ["ErrorResponse"] and result.error["C"] == "28000"
    params = node.params(USER, PASSWORD)
    params.update(sslcert=os.path.join(node.certs_dir, "client.testuser.crt"),
                  sslkey=os.path.join(node.certs_dir, "client.testuser.key"))
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(**params)
    assert "certificate is for testuser" in str(exc.value)


def test_cert_method_without_a_certificate_is_refused(node):
    set_hba(node, "host all all all cert")
    result = raw(node, USER, password=PASSWORD)
    assert result.names() == ["ErrorResponse"] and result.error["C"] == "28000"


def test_cert_password_without_a_certificate_asks_for_scram(node):
    set_hba(node, "host all all all cert-password")
    result = raw(node, USER, password=PASSWORD)
    assert result.names()[0] == "AuthenticationSASL" and result.authenticated


# ---- login, trust, reject, plaintext --------------------------------------------------------


def test_nologin_roles_are_refused(node):
    node.sql("CREATE ROLE nologinrole WITH PASSWORD 'role-pw'",  # CREATE ROLE is NOLOGIN by default
             "CREATE USER nologinuser WITH NOLOGIN PASSWORD 'user-pw'")
    try:
        for name, pw in (("nologinrole", "role-pw"), ("nologinuser", "user-pw")):
            result = raw(node, name, pw)
            assert result.names()[-1] == "ErrorResponse" and "AuthenticationOk" not in result.names()
            assert result.error["C"] == "28000"
            assert result.error["M"] == f"{name} does not have login privilege"
            # the same password check comes first: a wrong password says nothing about LOGIN
            assert raw(node, name, "wrong").error["C"] == "28P01"
        node.sql("ALTER ROLE nologinrole WITH LOGIN")
        assert raw(node, "nologinrole", "role-pw").authenticated
    finally:
        node.sql("DROP ROLE IF EXISTS nologinrole, nologinuser")


def test_trust_and_reject(node):
    set_hba(node, "host all testuser all reject\nhost all all all trust")
    trusted = raw(node, USER)
    assert trusted.names()[0] == "AuthenticationOk" and trusted.authenticated
    unknown = raw(node, "nosuchuser")
    assert unknown.names() == ["ErrorResponse"] and unknown.error["C"] == "28000"
    rejected = raw(node, "testuser", cert_user="testuser")
    assert rejected.names() == ["ErrorResponse"]
    assert rejected.error["C"] == "28000" and '"127.0.0.1"' in rejected.error["M"]
    assert raw(node, "root", cert_user="root").authenticated


def test_secure_node_refuses_plaintext(node):
    result = rawpg.exchange(node.port, USER, use_tls=False, password=PASSWORD)
    assert result.names() == ["ErrorResponse"]
    assert result.error["C"] == "28000"
    assert "SSL connection required" in result.error["M"]
    params = node.params(USER, PASSWORD)
    params["sslmode"] = "disable"
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(**params)
    assert "SSL connection required" in str(exc.value)


def test_garbage_before_startup_does_not_hurt_the_node(node):
    import socket
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"\xff\xff\xff\xff" + os.urandom(64))
        s.recv(4096)
    assert raw(node, USER, PASSWORD).authenticated


# ---- storage of passwords ------------------------------------------------------------------


def _user_rows(store_path: str) -> dict[str, bytes]:
    async def read() -> dict[str, bytes]:
        store = LMDBStore(store_path)
        try:
            start = enc.encode_int(system.USERS_TABLE)
            end = enc.encode_int(system.USERS_TABLE + 1)
            rows = {}
            for key, value, _ in store.scan(start, end, store.current_revision()):
                name, _ = enc.decode_string(key, len(start))
                rows[name] = value
            return rows
        finally:
            await store.close()
    return asyncio.run(read())


def test_passwords_are_stored_only_as_salted_scram_verifiers(certs):
    tmp = tempfile.mkdtemp(prefix="pillbug-pw-")
    secret = "Tr0ub4dor-and-3-horses"
    node = start_node(tmp, certs, admin=False)
    try:
        node.sql(f"CREATE USER twin1 WITH PASSWORD '{secret}'", f"CREATE USER twin2 WITH PASSWORD '{secret}'",
                 "CREATE USER changed WITH PASSWORD 'before-change'",
                 f"ALTER USER changed WITH PASSWORD '{secret}x'")
        node.connect("twin1", secret).close()
        node.connect("twin2", secret).close()
    finally:
        assert node.stop() == 0
    try:
        # nowhere in the store's files, not even in old versions of a row
        for dirpath, _, files in os.walk(node.store):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                for clear in (secret, "before-change"):
                    assert clear.encode() not in data, f"{clear!r} found in {name}"
        rows = _user_rows(node.store)
        import json
        v1 = json.loads(rows["twin1"])["verifier"]
        v2 = json.loads(rows["twin2"])["verifier"]
        assert v1.startswith("SCRAM-SHA-256$4096:") and v2.startswith("SCRAM-SHA-256$4096:")
        assert v1 != v2
        salt1, stored1, server1, _ = passwords.parse_verifier(v1)
        salt2, stored2, server2, _ = passwords.parse_verifier(v2)
        assert salt1 != salt2 and stored1 != stored2 and server1 != server2 and len(salt1) >= 16
        assert passwords.check_password(v1, secret) and passwords.check_password(v2, secret)
        assert not passwords.check_password(v1, secret + "!")
        assert json.loads(rows["root"])["verifier"] is None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
