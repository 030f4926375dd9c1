"""Users, roles and privileges: CREATE/ALTER/DROP USER|ROLE, GRANT/REVOKE on databases, schemas and
tables and of role membership, SHOW USERS/ROLES/GRANTS, and a privilege check on every statement
(42501 with CockroachDB's messages), as seen by real clients connected as unprivileged users.
"""
from __future__ import annotations

import psycopg
import psycopg2
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER

DB = "privdb"
PLEB = "pleb"
PLEB_PW = "pleb-password-1"
READER = "reader"
READER_PW = "reader-password-1"


@pytest.fixture(scope="module", autouse=True)
def setup(node):
    node.sql(f"CREATE DATABASE {DB}")
    node.sql("CREATE TABLE t (id INT PRIMARY KEY, v STRING)",
             "INSERT INTO t VALUES (1, 'one')",
             "CREATE SEQUENCE sq",
             "CREATE VIEW v AS SELECT id FROM t",
             # Like CockroachDB, `public` may CREATE in a new database's public schema; take that away
             # so that creating objects needs a grant.
             "REVOKE CREATE ON SCHEMA public FROM public",
             database=DB)
    node.sql(f"CREATE USER {PLEB} WITH PASSWORD '{PLEB_PW}'",
             f"CREATE USER {READER} WITH PASSWORD '{READER_PW}'",
             f"GRANT SELECT ON TABLE {DB}.public.t TO {READER}")


def connect(node, user: str = PLEB, password: str = PLEB_PW, database: str = DB):
    return node.connect(user, password, database)


def run(conn, sql: str):
    """Rows (or the status) of a statement, or ('error', sqlstate, message)."""
    with conn.cursor() as cur:
        try:
            cur.execute(sql)
        except psycopg2.Error as exc:
            return ("error", exc.pgcode, exc.diag.message_primary)
        return cur.fetchall() if cur.description is not None else cur.statusmessage


@pytest.fixture
def pleb(node):
    conn = connect(node)
    yield conn
    conn.close()


def rel(priv: str, name: str) -> str:
    return f"user {PLEB} does not have {priv} privilege on relation {name}"


DENIED = [
    ("SELECT * FROM t", rel("SELECT", "t")),
    ("SELECT id FROM privdb.public.t WHERE id = 1", rel("SELECT", "t")),
    ("SELECT (SELECT count(*) FROM t)", rel("SELECT", "t")),
    ("WITH x AS (SELECT * FROM t) SELECT count(*) FROM x", rel("SELECT", "t")),
    ("SELECT * FROM t AS OF SYSTEM TIME '-1us'", rel("SELECT", "t")),
    ("EXPLAIN SELECT * FROM t", rel("SELECT", "t")),
    ("INSERT INTO t VALUES (2, 'two')", rel("INSERT", "t")),
    ("UPDATE t SET v = 'x'", rel("UPDATE", "t")),
    ("DELETE FROM t", rel("DELETE", "t")),
    ("UPSERT INTO t VALUES (1, 'uno')", rel("INSERT", "t")),
    ("INSERT INTO t VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = 'y'", rel("INSERT", "t")),
    ("SELECT * FROM v", rel("SELECT", "v")),
    ("SELECT * FROM sq", rel("SELECT", "sq")),
    ("SELECT nextval('sq')", rel("UPDATE", "sq")),
    ("TRUNCATE t", rel("DROP", "t")),
    ("DROP TABLE t", rel("DROP", "t")),
    ("DROP VIEW v", rel("DROP", "v")),
    ("DROP SEQUENCE sq", rel("DROP", "sq")),
    ("ALTER TABLE t ADD COLUMN z INT", rel("CREATE", "t")),
    ("ALTER TABLE t RENAME TO t3", rel("CREATE", "t")),
    ("CREATE INDEX ON t (v)", rel("CREATE", "t")),
    ("SHOW COLUMNS FROM t", f"user {PLEB} has no privileges on relation t"),
    ("SHOW INDEXES FROM t", f"user {PLEB} has no privileges on relation t"),
    ("SHOW CONSTRAINTS FROM t", f"user {PLEB} has no privileges on relation t"),
    ("SHOW CREATE TABLE t", f"user {PLEB} has no privileges on relation t"),
    ("SHOW GRANTS ON TABLE t", f"user {PLEB} has no privileges on relation t"),
    ("CREATE TABLE t2 (id INT PRIMARY KEY)", f"user {PLEB} does not have CREATE privilege on database {DB}"),
    ("CREATE VIEW v2 AS SELECT 1", f"user {PLEB} does not have CREATE privilege on database {DB}"),
    ("CREATE SEQUENCE sq2", f"user {PLEB} does not have CREATE privilege on database {DB}"),
    ("CREATE SCHEMA s2", f"user {PLEB} does not have CREATE privilege on database {DB}"),
    ("CREATE DATABASE plebdb", "permission denied to create database"),
    (f"DROP DATABASE {DB}", f"user {PLEB} does not have DROP privilege on database {DB}"),
    (f"ALTER DATABASE {DB} RENAME TO other", "only users with the admin role are allowed to rename databases"),
    (f"GRANT SELECT ON t TO {PLEB}", f"user {PLEB} does not have GRANT privilege on relation t"),
    (f"GRANT ALL ON DATABASE {DB} TO {PLEB}", f"user {PLEB} does not have GRANT privilege on database {DB}"),
    (f"REVOKE SELECT ON t FROM {READER}", f"user {PLEB} does not have GRANT privilege on relation t"),
    ("CREATE USER mallory", f"user {PLEB} does not have CREATEROLE privilege"),
    ("CREATE ROLE mallory", f"user {PLEB} does not have CREATEROLE privilege"),
    (f"DROP USER {READER}", f"user {PLEB} does not have CREATEROLE privilege"),
    (f"ALTER USER {READER} WITH PASSWORD 'owned'", f"user {PLEB} does not have CREATEROLE privilege"),
    (f"GRANT admin TO {PLEB}", f'{PLEB} must have admin option on role "admin"'),
    ("SET CLUSTER SETTING cluster.organization = 'evil'",
     "only users with the MODIFYCLUSTERSETTING privilege are allowed to set cluster settings"),
    ("SHOW CLUSTER SETTING cluster.organization", "only users with the admin role are allowed to read cluster settings"),
    ("SHOW ALL CLUSTER SETTINGS", "only users with the admin role are allowed to read cluster settings"),
]


@pytest.mark.parametrize("sql, message", DENIED, ids=[d[0] for d in DENIED])
def test_denied_with_42501(node, pleb, sql, message):
    assert run(pleb, sql) == ("error", "42501", message)


def test_denials_change_nothing(node, pleb):
    for sql, _ in DENIED:
        run(pleb, sql)
    assert node.sql("SELECT * FROM t", database=DB) == [(1, "one")]
    assert [r[1] for r in node.sql("SHOW TABLES", database=DB)] == ["sq", "t", "v"]
    assert node.sql("SELECT nextval('sq')", database=DB) == [(1,)]
    users = [r[0] for r in node.sql("SHOW USERS")]
    assert "mallory" not in users and READER in users
    assert node.sql("SHOW CLUSTER SETTING cluster.organization") == [("",)]
    conn = connect(node, READER, READER_PW)
    assert run(conn, "SELECT v FROM t") == [("one",)]
    conn.close()


@pytest.mark.parametrize("sql", [d[0] for d in DENIED if not d[0].startswith(("DROP DATABASE", "ALTER DATABASE"))])
def test_the_same_statements_pass_the_privilege_check_for_an_admin(node, sql):
    """dbadmin is in the admin role: nothing above is refused for privileges (inside a transaction
    that is rolled back, so the module's fixtures stay as they are)."""
    conn = node.connect(ADMIN_USER, ADMIN_PASSWORD, DB, autocommit=False)
    try:
        result = run(conn, sql)
        assert not (isinstance(result, tuple) and result[:2] == ("error", "42501")), result
    finally:
        conn.rollback()
        conn.close()


def test_extended_protocol_and_cached_plans_are_checked_per_user(node):
    # root plans (and caches) the statement first; pleb's identical statement must still be refused
    assert node.sql("SELECT v FROM t WHERE id = 1", database=DB) == [("one",)]
    with psycopg.connect(**node.params(PLEB, PLEB_PW, DB)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT v FROM t WHERE id = %s", (1,))
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT v FROM t WHERE id = %s", (1,), prepare=True)
    conn = connect(node)
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT * FROM t")
    conn.rollback()
    conn.close()


def test_grant_and_revoke_on_a_table_take_effect_at_once(node, pleb):
    node.sql(f"GRANT SELECT, INSERT ON TABLE t TO {PLEB}", database=DB)
    try:
        assert run(pleb, "SELECT v FROM t WHERE id = 1") == [("one",)]
        assert run(pleb, "INSERT INTO t VALUES (50, 'fifty')") == "INSERT 0 1"
        assert run(pleb, "DELETE FROM t WHERE id = 50")[:2] == ("error", "42501")
        node.sql(f"REVOKE INSERT ON TABLE t FROM {PLEB}", database=DB)
        assert run(pleb, "INSERT INTO t VALUES (51, 'x')") == ("error", "42501", rel("INSERT", "t"))
        assert run(pleb, "SELECT v FROM t WHERE id = 1") == [("one",)]  # the same plan, still allowed
        node.sql(f"REVOKE ALL ON TABLE t FROM {PLEB}", database=DB)
        assert run(pleb, "SELECT v FROM t WHERE id = 1") == ("error", "42501", rel("SELECT", "t"))
    finally:
        node.sql(f"REVOKE ALL ON TABLE t FROM {PLEB}", "DELETE FROM t WHERE id = 50", database=DB)


def test_revoke_one_privilege_from_all(node, pleb):
    node.sql(f"GRANT ALL ON TABLE t TO {PLEB}", f"REVOKE DELETE ON TABLE t FROM {PLEB}", database=DB)
    try:
        grants = {r[4] for r in node.sql("SHOW GRANTS ON TABLE t", database=DB) if r[3] == PLEB}
        assert "DELETE" not in grants and "ALL" not in grants and {"SELECT", "INSERT", "UPDATE"} <= grants
        assert run(pleb, "DELETE FROM t WHERE id = 99") == ("error", "42501", rel("DELETE", "t"))
        assert run(pleb, "UPDATE t SET v = v WHERE id = 99") == "UPDATE 0"
    finally:
        node.sql(f"REVOKE ALL ON TABLE t FROM {PLEB}", database=DB)


def test_view_needs_only_its_own_select(node, pleb):
    node.sql(f"GRANT SELECT ON v TO {PLEB}", database=DB)
    try:
        assert run(pleb, "SELECT id FROM v") == [(1,)]
        assert run(pleb, "SELECT * FROM t") == ("error", "42501", rel("SELECT", "t"))
    finally:
        node.sql(f"REVOKE SELECT ON v FROM {PLEB}", database=DB)


def test_privileges_through_roles_and_nested_roles(node, pleb):
    node.sql("CREATE ROLE analysts", "CREATE ROLE seniors", "GRANT analysts TO seniors")
    node.sql("GRANT SELECT ON TABLE t TO analysts", database=DB)
    try:
        assert run(pleb, "SELECT count(*) FROM t")[0] == "error"
        node.sql(f"GRANT seniors TO {PLEB}")
        assert run(pleb, "SELECT count(*) FROM t") == [(1,)]
        node.sql(f"REVOKE seniors FROM {PLEB}")
        assert run(pleb, "SELECT count(*) FROM t") == ("error", "42501", rel("SELECT", "t"))
        assert run(pleb, "GRANT analysts TO reader") == ("error", "42501",
                                                         f'{PLEB} must have admin option on role "analysts"')
        node.sql(f"GRANT analysts TO {PLEB} WITH ADMIN OPTION")
        assert node.sql("SHOW GRANTS ON ROLE analysts") == [("analysts", PLEB, True), ("analysts", "seniors", False)]
        assert run(pleb, f"GRANT analysts TO {READER}") == "GRANT"
        assert (("analysts", READER, False)) in node.sql("SHOW GRANTS ON ROLE analysts")
        assert run(pleb, f"REVOKE analysts FROM {READER}") == "REVOKE"
        root = node.connect()
        cycle = run(root, "GRANT seniors TO analysts")
        root.close()
        assert cycle[0] == "error" and "cycle" in cycle[2]
    finally:
        node.sql("REVOKE SELECT ON TABLE t FROM analysts", database=DB)
        node.sql(f"REVOKE analysts FROM {PLEB}", "DROP ROLE analysts, seniors")


def test_database_and_schema_grants_allow_creating_and_ownership_follows(node, pleb):
    node.sql(f"GRANT CREATE ON DATABASE {DB} TO {PLEB}")
    try:
        assert run(pleb, "CREATE SCHEMA plebschema") == "CREATE SCHEMA"
        assert run(pleb, "CREATE TABLE plebschema.mine (id INT PRIMARY KEY)") == "CREATE TABLE"
        assert run(pleb, "CREATE TABLE mine (id INT PRIMARY KEY)") == "CREATE TABLE"
        assert run(pleb, "INSERT INTO mine VALUES (1)") == "INSERT 0 1"
        # the owner may grant on what it owns
        assert run(pleb, f"GRANT SELECT ON mine TO {READER}") == "GRANT"
        reader = connect(node, READER, READER_PW)
        assert run(reader, "SELECT * FROM mine") == [(1,)]
        assert run(reader, "INSERT INTO mine VALUES (2)")[:2] == ("error", "42501")
        reader.close()
        tables = {r[1]: r[3] for r in run(pleb, "SHOW TABLES")}
        assert tables == {"mine": PLEB}  # t, v and sq are not shown to a user without privileges on them
        assert run(pleb, f"REVOKE SELECT ON mine FROM {READER}") == "REVOKE"
        assert run(pleb, "DROP TABLE mine") == "DROP TABLE"
        assert run(pleb, "DROP TABLE plebschema.mine") == "DROP TABLE"
    finally:
        node.sql(f"REVOKE CREATE ON DATABASE {DB} FROM {PLEB}")
        node.sql("DROP TABLE IF EXISTS mine", database=DB)
    assert run(pleb, "CREATE TABLE mine2 (id INT PRIMARY KEY)")[:2] == ("error", "42501")
    node.sql(f"GRANT CREATE ON SCHEMA public TO {PLEB}", database=DB)
    try:
        assert run(pleb, "CREATE TABLE mine2 (id INT PRIMARY KEY)") == "CREATE TABLE"
        assert run(pleb, "DROP TABLE mine2") == "DROP TABLE"
        grants = node.sql("SHOW GRANTS ON SCHEMA public", database=DB)
        assert (DB, "public", PLEB, "CREATE", False) in grants
    finally:
        node.sql(f"REVOKE CREATE ON SCHEMA public FROM {PLEB}", database=DB)


def test_grant_on_all_tables_in_schema(node, pleb):
    node.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PLEB}", database=DB)
    try:
        assert run(pleb, "SELECT count(*) FROM t") == [(1,)]
        assert run(pleb, "SELECT id FROM v") == [(1,)]
    finally:
        node.sql(f"REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {PLEB}", database=DB)
    assert run(pleb, "SELECT count(*) FROM t")[:2] == ("error", "42501")


def test_connect_privilege(node):
    node.sql("CREATE DATABASE closeddb", "REVOKE CONNECT ON DATABASE closeddb FROM public")
    try:
        with pytest.raises(psycopg2.OperationalError) as exc:
            connect(node, database="closeddb")
        assert f"user {PLEB} does not have CONNECT privilege on database closeddb" in str(exc.value)
        node.sql(f"GRANT CONNECT ON DATABASE closeddb TO {PLEB}")
        connect(node, database="closeddb").close()
    finally:
        node.sql("DROP DATABASE closeddb")


def test_admin_role_and_role_options(node, pleb):
    try:
        node.sql(f"ALTER USER {PLEB} WITH CREATEROLE")
        assert run(pleb, "CREATE USER minion WITH PASSWORD 'minion-pw'") == "CREATE ROLE"
        assert run(pleb, "DROP USER minion") == "DROP ROLE"
        node.sql(f"ALTER USER {PLEB} WITH NOCREATEROLE")
        assert run(pleb, "CREATE USER minion")[:2] == ("error", "42501")
        admin = node.connect(ADMIN_USER, ADMIN_PASSWORD)
        assert run(admin, f"GRANT admin TO {PLEB}") == "GRANT"
        assert run(pleb, "SELECT count(*) FROM t") == [(1,)]
        assert run(pleb, "SHOW CLUSTER SETTING cluster.organization") == [("",)]
        assert run(admin, f"REVOKE admin FROM {PLEB}") == "REVOKE"
        admin.close()
        assert run(pleb, "SELECT count(*) FROM t") == ("error", "42501", rel("SELECT", "t"))
    finally:
        node.sql(f"ALTER USER {PLEB} WITH NOCREATEROLE", "DROP USER IF EXISTS minion")


def test_create_alter_drop_user_and_role(node):
    root = node.connect()
    try:
        assert run(root, "CREATE USER u1 WITH PASSWORD 'u1-pw'") == "CREATE ROLE"
        assert run(root, "CREATE USER IF NOT EXISTS u1") == "CREATE ROLE"
        assert run(root, "CREATE USER u1") == ("error", "42710", "a role/user named u1 already exists")
        assert run(root, "CREATE ROLE IF NOT EXISTS r1") == "CREATE ROLE"
        assert run(root, "CREATE ROLE r2 WITH LOGIN PASSWORD 'r2-pw'") == "CREATE ROLE"
        assert run(root, "CREATE USER u2 WITH PASSWORD NULL") == "CREATE ROLE"
        assert run(root, "ALTER ROLE r1 WITH LOGIN") == "ALTER ROLE"
        assert run(root, "ALTER USER IF EXISTS nobody WITH PASSWORD 'x'") == "ALTER ROLE"
        assert run(root, "ALTER USER nobody WITH PASSWORD 'x'") == ("error", "42704", 'role/user "nobody" does not exist')
        users = {r[0]: (r[1], r[2]) for r in run(root, "SHOW USERS")}
        assert users["u1"] == ([], [])
        options = {r[0]: r[1] for r in run(root, "SHOW ROLES")}
        assert "NOLOGIN" not in str(options["r1"]) and "NOLOGIN" not in str(options["r2"])
        assert "NOLOGIN" in str(options["admin"])
        assert run(root, "DROP USER IF EXISTS nobody") == "DROP ROLE"
        assert run(root, "DROP USER nobody") == ("error", "42704", 'role/user "nobody" does not exist')
        assert run(root, "DROP ROLE admin")[:2] == ("error", "42501")
        assert run(root, "DROP USER root")[:2] == ("error", "42501")
        assert run(root, "CREATE USER root")[0] == "error"
        assert run(root, "REVOKE admin FROM root")[:2] == ("error", "42501")
        # a user with privileges cannot be dropped until they are revoked
        run(root, f"GRANT SELECT ON TABLE {DB}.public.t TO u1")
        dropped = run(root, "DROP USER u1")
        assert dropped[:2] == ("error", "2BP01") and "t" in dropped[2]
        run(root, f"REVOKE SELECT ON TABLE {DB}.public.t FROM u1")
        assert run(root, "DROP USER u1, u2") == "DROP ROLE"
        assert run(root, "DROP ROLE r1, r2") == "DROP ROLE"
        assert not {"u1", "u2", "r1", "r2"} & {r[0] for r in run(root, "SHOW USERS")}
    finally:
        root.close()


def test_show_shapes(node):
    """The column names CockroachDB's SHOW USERS / ROLES / GRANTS return."""
    conn = node.connect(database=DB)
    with conn.cursor() as cur:
        shapes = {
            "SHOW USERS": ["username", "options", "member_of"],
            "SHOW ROLES": ["username", "options", "member_of"],
            "SHOW GRANTS ON TABLE t": ["database_name", "schema_name", "table_name", "grantee", "privilege_type",
                                       "is_grantable"],
            f"SHOW GRANTS ON DATABASE {DB}": ["database_name", "grantee", "privilege_type", "is_grantable"],
            "SHOW GRANTS ON SCHEMA public": ["database_name", "schema_name", "grantee", "privilege_type",
                                             "is_grantable"],
            "SHOW GRANTS ON ROLE": ["role_name", "member", "is_admin"],
            f"SHOW GRANTS FOR {READER}": ["database_name", "schema_name", "object_name", "object_type", "grantee",
                                          "privilege_type", "is_grantable"],
        }
        for sql, columns in shapes.items():
            cur.execute(sql)
            assert [d.name for d in cur.description] == columns, sql
        cur.execute(f"SHOW GRANTS FOR {READER}")
        assert (DB, "public", "t", "table", READER, "SELECT", False) in cur.fetchall()
        cur.execute("SHOW USERS")
        rows = {r[0]: r for r in cur.fetchall()}
        assert rows["root"][2] == ["admin"] and rows[ADMIN_USER][2] == ["admin"]
        cur.execute("SHOW GRANTS ON TABLE t")
        assert ("privdb", "public", "t", READER, "SELECT", False) in cur.fetchall()
    conn.close()
