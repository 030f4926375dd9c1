"""psql (Debian's postgresql-client 15) against a real node over TLS with sslmode=verify-full.

psql's backslash commands (\\l, \\dt, \\d, \\du, \\dn, \\di, ...) are catalog queries: pg_class joined
with pg_namespace, pg_attribute, pg_index, pg_constraint, pg_roles and pg_auth_members, correlated
subqueries in the select list, OPERATOR(pg_catalog.~), regclass casts, ARRAY(subquery), and the
functions of sem/pg_builtins.py. These tests run psql exactly as a user does (-X, ON_ERROR_STOP)
and check what it prints. The last tests check the catalogs' OIDs join up, with psycopg2.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import psycopg2
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, Node

ACCOUNTS = """
CREATE TABLE accounts (
    id INT PRIMARY KEY,
    owner STRING NOT NULL,
    email VARCHAR(100) UNIQUE,
    balance DECIMAL(12,2) NOT NULL DEFAULT 0,
    status STRING DEFAULT 'open',
    created_at TIMESTAMPTZ DEFAULT now(),
    CONSTRAINT balance_nonneg CHECK (balance >= 0),
    INDEX accounts_owner_idx (owner)
)"""


def psql(node: Node, database: str, script: str, user: str = "root", password: str | None = None,
         check: bool = True, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run psql -X -v ON_ERROR_STOP=1 with a verify-full connection URL, feeding it a script."""
    url = node.url(user=user, database=database)
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    assert "sslmode=verify-full" in url and "sslrootcert=" in url
    proc = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", *extra, url], input=script,
                          capture_output=True, text=True, timeout=60, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"psql failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def table_rows(output: str, title: str) -> list[list[str]]:
    """The rows of the psql table printed under `title` (aligned format), cells stripped.

    `title` is the table's caption ("List of relations") or, for a query's result, its header."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)

    def is_rule(line: str) -> bool:
        return set(line.replace("+", "")) == {"-"}
    rule = start + 1 if is_rule(lines[start + 1]) else start + 2
    assert is_rule(lines[rule]), lines[start:rule + 1]
    rows = []
    for line in lines[rule + 1:]:
        if not line.startswith(" "):  # a blank line, "(n rows)" or a footer such as "Indexes:"
            break
        rows.append([cell.strip() for cell in line.split("|")])
    return rows


def section(output: str, heading: str) -> list[str]:
    """The indented lines under a footer heading of \\d ("Indexes:", "Check constraints:")."""
    lines = output.splitlines()
    start = lines.index(heading)
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        out.append(line.strip())
    return out


@pytest.fixture
def accounts_db(node: Node, db: str) -> str:
    node.sql(ACCOUNTS, "CREATE INDEX accounts_created_idx ON accounts (created_at DESC) STORING (status)",
             database=db)
    return db


def test_describe_table_columns_indexes_and_constraints(node: Node, accounts_db: str) -> None:
    out = psql(node, accounts_db, "\\d accounts").stdout
    assert table_rows(out, 'Table "public.accounts"') == [
        ["id", "bigint", "", "not null", ""],
        ["owner", "text", "", "not null", ""],
        ["email", "character varying(100)", "", "", ""],
        ["balance", "numeric(12,2)", "", "not null", "0"],
        ["status", "text", "", "", "'open'"],
        ["created_at", "timestamp with time zone", "", "", "now()"],
    ]
    assert section(out, "Indexes:") == [
        '"accounts_pkey" PRIMARY KEY, btree (id ASC)',
        '"accounts_created_idx" btree (created_at DESC) STORING (status)',
        '"accounts_email_key" UNIQUE CONSTRAINT, btree (email ASC)',
        '"accounts_owner_idx" btree (owner ASC)',
    ]
    assert section(out, "Check constraints:") == ['"balance_nonneg" CHECK ((balance >= 0))']


def test_describe_verbose_index_view_and_sequence(node: Node, accounts_db: str) -> None:
    node.sql("CREATE VIEW rich AS SELECT id, owner FROM accounts WHERE balance > 100",
             "CREATE SEQUENCE order_ids START 10 INCREMENT 5", database=accounts_db)
    out = psql(node, accounts_db, "\\d+ accounts\n\\d accounts_email_key\n\\d+ rich\n\\d order_ids\n").stdout
    assert table_rows(out, 'Table "public.accounts"')[0][:5] == ["id", "bigint", "", "not null", ""]
    assert table_rows(out, 'Index "public.accounts_email_key"') == [
        ["email", "character varying(100)", "yes", "email"]]
    assert 'unique, prefix, for table "public.accounts"' in out
    assert table_rows(out, 'View "public.rich"') == [
        ["id", "bigint", "", "", "", "plain", ""], ["owner", "text", "", "", "", "extended", ""]]
    view_definition = out.split("View definition:")[1].strip().splitlines()[0]
    assert "balance > 100" in view_definition
    assert table_rows(out, 'Sequence "public.order_ids"') == [
        ["bigint", "10", "1", "9223372036854775807", "5", "no", "1"]]


def test_describe_system_catalogs(node: Node, db: str) -> None:
    out = psql(node, db, "\\d pg_class\n\\dvS pg_catalog.pg_nam*\n\\d information_schema.columns\n").stdout
    columns = table_rows(out, 'View "pg_catalog.pg_class"')
    assert columns[:3] == [["oid", "oid", "", "", ""], ["relname", "name", "", "", ""],
                           ["relnamespace", "oid", "", "", ""]]
    assert table_rows(out, "List of relations") == [["pg_catalog", "pg_namespace", "view", "node"]]
    assert ["table_name", "text", "", "", ""] in table_rows(out, 'View "information_schema.columns"')


def test_list_tables_indexes_and_relations(node: Node, accounts_db: str) -> None:
    node.sql("CREATE TABLE notes (id INT PRIMARY KEY, body STRING)", "CREATE VIEW v AS SELECT 1 AS one",
             "CREATE SCHEMA archive", "CREATE TABLE archive.old_notes (id INT PRIMARY KEY)",
             database=accounts_db)
    out = psql(node, accounts_db, "\\dt\n\\di\n\\d\n\\dt archive.*\n").stdout
    assert table_rows(out, "List of relations") == [
        ["public", "accounts", "table", "root"], ["public", "notes", "table", "root"]]
    blocks = out.split("List of relations")
    index_rows = table_rows("List of relations" + blocks[2], "List of relations")
    assert index_rows == [
        ["public", "accounts_created_idx", "index", "root", "accounts"],
        ["public", "accounts_email_key", "index", "root", "accounts"],
        ["public", "accounts_owner_idx", "index", "root", "accounts"],
        ["public", "accounts_pkey", "index", "root", "accounts"],
        ["public", "notes_pkey", "index", "root", "notes"],
    ]
    assert table_rows("List of relations" + blocks[3], "List of relations") == [
        ["public", "accounts", "table", "root"], ["public", "notes", "table", "root"],
        ["public", "v", "view", "root"]]
    assert table_rows("List of relations" + blocks[4], "List of relations") == [
        ["archive", "old_notes", "table", "root"]]


def test_list_roles_schemas_and_databases(node: Node, db: str) -> None:
    node.sql("CREATE ROLE IF NOT EXISTS psql_readers", "CREATE USER IF NOT EXISTS psql_alice",
             "GRANT psql_readers TO psql_alice", f"CREATE SCHEMA {db}_reports", database=db)
    out = psql(node, db, "\\du\n\\dn\n\\l\n").stdout
    roles = {row[0]: row for row in table_rows(out, "List of roles")}
    assert roles["root"][2] == "{admin}"
    assert "Superuser" in roles["root"][1]
    assert roles[ADMIN_USER][2] == "{admin}"
    assert roles["psql_alice"][1:] == ["", "{psql_readers}"]
    assert roles["psql_readers"][1] == "Cannot login"
    assert "Cannot login" in roles["admin"][1]
    schemas = dict(tuple(row) for row in table_rows(out, "List of schemas"))
    assert schemas[f"{db}_reports"] == "root"
    assert "public" in schemas and "crdb_internal" in schemas
    assert "pg_catalog" not in schemas and "information_schema" not in schemas  # psql hides them
    databases = {row[0]: row for row in table_rows(out, "List of databases") if row[0]}
    assert {"defaultdb", "postgres", "system", db} <= set(databases)
    assert databases[db][1:4] == ["root", "UTF8", "C.UTF-8"]


def test_list_functions(node: Node, db: str) -> None:
    """\\df lists functions from pg_proc (its result and argument types from
    pg_get_function_result and pg_get_function_arguments); \\dfa lists aggregates."""
    out = psql(node, db, "\\df\n\\df upper\n\\dfa count\n\\df crdb_internal.*\n\\dfS generate_series\n").stdout
    listings = out.split("List of functions")
    assert len(listings) == 6, out
    assert "(0 rows)" in listings[1]  # no user-defined functions
    upper = table_rows("List of functions" + listings[2], "List of functions")
    assert upper == [["pg_catalog", "upper", "text", "text", "func"]]
    count = table_rows("List of functions" + listings[3], "List of functions")
    assert count == [["pg_catalog", "count", "bigint", "anyelement", "agg"]]
    internal = {row[1]: row for row in table_rows("List of functions" + listings[4], "List of functions")}
    assert internal["increment_feature_counter"][2:] == ["boolean", "text", "func"]
    series = table_rows("List of functions" + listings[5], "List of functions")
    assert ["pg_catalog", "generate_series", "SETOF bigint", "bigint, bigint", "func"] in series


def test_ordinary_queries_transactions_and_copy(node: Node, accounts_db: str) -> None:
    script = """
INSERT INTO accounts (id, owner, email, balance) VALUES (1, 'ann', 'ann@example.com', 10.5), (2, 'bob', NULL, 0);
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE id = 2;
SELECT balance FROM accounts WHERE id = 2;
COMMIT;
\\copy accounts (id, owner) FROM stdin
3\tcarol
4\tdave
\\.
SELECT id, owner, balance, status FROM accounts ORDER BY id;
\\x on
SELECT owner, email FROM accounts WHERE id = 1;
"""
    out = psql(node, accounts_db, script).stdout
    assert "INSERT 0 2" in out and "UPDATE 1" in out and "COPY 2" in out and "COMMIT" in out
    assert table_rows(out, "id | owner | balance | status") == [
        ["1", "ann", "10.50", "open"], ["2", "bob", "1.00", "open"],
        ["3", "carol", "0.00", "open"], ["4", "dave", "0.00", "open"]]
    assert "owner | ann" in out and "email | ann@example.com" in out


def test_error_stops_the_script_with_the_servers_message(node: Node, accounts_db: str) -> None:
    proc = psql(node, accounts_db, "INSERT INTO accounts (id, owner, balance) VALUES (1, 'x', -1);\n"
                "SELECT 'not reached';\n", check=False, extra=("-v", "VERBOSITY=verbose"))
    assert proc.returncode == 3
    assert "ERROR:  23514: failed to satisfy CHECK constraint" in proc.stderr
    assert "not reached" not in proc.stdout
    # The node is fine and the table unchanged.
    assert node.sql("SELECT count(*) FROM accounts", database=accounts_db) == [(0,)]


def test_password_user_over_verify_full(node: Node, accounts_db: str) -> None:
    out = psql(node, accounts_db, "SELECT current_user;\n\\dt\n", user=ADMIN_USER, password=ADMIN_PASSWORD).stdout
    assert table_rows(out, "current_user") == [[ADMIN_USER]]
    assert table_rows(out, "List of relations") == [["public", "accounts", "table", "root"]]


# ---- the catalogs behind psql: OIDs join up --------------------------------------------------

def test_catalog_oids_are_consistent(node: Node, accounts_db: str) -> None:
    conn = node.connect(database=accounts_db)
    cur = conn.cursor()
    cur.execute("SELECT oid FROM pg_catalog.pg_class WHERE relname = 'accounts' AND relkind = 'r'")
    (table_oid,) = cur.fetchone()
    cur.execute("SELECT 'accounts'::regclass::oid, to_regclass('public.accounts')::oid, to_regclass('nope')")
    assert cur.fetchone() == (table_oid, table_oid, None)
    cur.execute("SELECT attname, attnum FROM pg_catalog.pg_attribute WHERE attrelid = %s ORDER BY attnum",
                (table_oid,))
    assert [r[0] for r in cur.fetchall()] == ["id", "owner", "email", "balance", "status", "created_at"]
    # Every index of the table is a pg_class row of kind 'i', with pg_attribute rows of its own.
    cur.execute("""
        SELECT c.relname, i.indisunique, i.indisprimary, i.indkey::text, pg_get_indexdef(i.indexrelid),
               (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid)
        FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %s AND c.relkind = 'i' ORDER BY c.relname""", (table_oid,))
    assert cur.fetchall() == [
        ("accounts_created_idx", False, False, "6 5",
         "CREATE INDEX accounts_created_idx ON public.accounts USING btree (created_at DESC) STORING (status)", 2),
        ("accounts_email_key", True, False, "3",
         "CREATE UNIQUE INDEX accounts_email_key ON public.accounts USING btree (email ASC)", 1),
        ("accounts_owner_idx", False, False, "2",
         "CREATE INDEX accounts_owner_idx ON public.accounts USING btree (owner ASC)", 1),
        ("accounts_pkey", True, True, "1",
         "CREATE UNIQUE INDEX accounts_pkey ON public.accounts USING btree (id ASC)", 1),
    ]
    # Constraints point at their table and (for keys) their index; their definitions round-trip.
    cur.execute("""
        SELECT con.conname, con.contype, idx.relname, pg_get_constraintdef(con.oid), con.conkey::text
        FROM pg_catalog.pg_constraint con
        JOIN pg_catalog.pg_class tbl ON tbl.oid = con.conrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace AND n.oid = tbl.relnamespace
        LEFT JOIN pg_catalog.pg_class idx ON idx.oid = con.conindid
        WHERE tbl.relname = 'accounts' ORDER BY con.conname""")
    assert cur.fetchall() == [
        ("accounts_email_key", "u", "accounts_email_key", "UNIQUE (email)", "{3}"),
        ("accounts_pkey", "p", "accounts_pkey", "PRIMARY KEY (id)", "{1}"),
        ("balance_nonneg", "c", None, "CHECK ((balance >= 0))", "{4}"),
    ]
    # Defaults: pg_attrdef rows belong to the table's columns.
    cur.execute("""
        SELECT a.attname, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a
          ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE d.adrelid = %s ORDER BY d.adnum""", (table_oid,))
    assert cur.fetchall() == [("balance", "0"), ("status", "'open'"), ("created_at", "now()")]
    # Owners and types resolve.
    cur.execute("""
        SELECT pg_get_userbyid(c.relowner), n.nspname, format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'balance'
        WHERE c.oid = %s""", (table_oid,))
    assert cur.fetchone() == ("root", "public", "numeric(12,2)")
    conn.close()


# (catalog, OID column, referenced catalog, its key, which rows must have a referent)
CATALOG_REFERENCES = [
    ("pg_class", "relnamespace", "pg_namespace", "oid", "true"),
    ("pg_class", "relowner", "pg_roles", "oid", "c.relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public')"),
    ("pg_class", "relam", "pg_am", "oid", "c.relam <> 0"),
    ("pg_attribute", "attrelid", "pg_class", "oid", "true"),
    ("pg_attribute", "atttypid", "pg_type", "oid", "true"),
    ("pg_attribute", "attcollation", "pg_collation", "oid", "c.attcollation <> 0"),
    ("pg_index", "indexrelid", "pg_class", "oid", "true"),
    ("pg_index", "indrelid", "pg_class", "oid", "true"),
    ("pg_constraint", "conrelid", "pg_class", "oid", "true"),
    ("pg_constraint", "connamespace", "pg_namespace", "oid", "true"),
    ("pg_constraint", "conindid", "pg_class", "oid", "c.conindid <> 0"),
    ("pg_attrdef", "adrelid", "pg_class", "oid", "true"),
    ("pg_type", "typnamespace", "pg_namespace", "oid", "true"),
    ("pg_type", "typarray", "pg_type", "oid", "c.typarray <> 0"),
    ("pg_type", "typelem", "pg_type", "oid", "c.typelem <> 0"),
    ("pg_auth_members", "roleid", "pg_roles", "oid", "true"),
    ("pg_auth_members", "member", "pg_roles", "oid", "true"),
    ("pg_database", "datdba", "pg_roles", "oid", "true"),
    ("pg_sequence", "seqrelid", "pg_class", "oid", "true"),
    ("pg_opclass", "opcmethod", "pg_am", "oid", "true"),
    ("pg_opclass", "opcintype", "pg_type", "oid", "true"),
]


@pytest.fixture(scope="module")
def catalog_db(node: Node) -> Iterator[str]:
    """One database with a table of every kind of object, shared by the catalog checks."""
    node.sql("DROP DATABASE IF EXISTS psql_catalogs CASCADE", "CREATE DATABASE psql_catalogs")
    node.sql(ACCOUNTS, "CREATE INDEX accounts_created_idx ON accounts (created_at DESC) STORING (status)",
             "CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 100", "CREATE SEQUENCE seq",
             "CREATE USER IF NOT EXISTS psql_carol", "GRANT admin TO psql_carol", database="psql_catalogs")
    yield "psql_catalogs"
    node.sql("DROP DATABASE IF EXISTS psql_catalogs CASCADE")


@pytest.mark.parametrize("child,column,parent,key,which", CATALOG_REFERENCES,
                         ids=[f"{c}.{col}" for c, col, *_ in CATALOG_REFERENCES])
def test_catalog_references_resolve(node: Node, catalog_db: str, child: str, column: str, parent: str,
                                    key: str, which: str) -> None:
    rows, orphans = node.sql(f"""
        SELECT count(*), count(*) FILTER (WHERE p.{key} IS NULL)
        FROM pg_catalog.{child} c LEFT JOIN pg_catalog.{parent} p ON p.{key} = c.{column}
        WHERE {which}""", database=catalog_db)[0]
    assert rows > 0 and orphans == 0, (rows, orphans)


def test_index_columns_resolve(node: Node, catalog_db: str) -> None:
    keys = node.sql("""
        SELECT k.indexrelid, k.attnum,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = k.indrelid AND a.attnum = k.attnum)
        FROM (SELECT indexrelid, indrelid, unnest(indkey) AS attnum FROM pg_catalog.pg_index) AS k""",
                    database=catalog_db)
    assert len(keys) == 5 and all(found for _, _, found in keys), keys


def test_virtual_tables_have_oids(node: Node, db: str) -> None:
    conn = node.connect(database=db)
    cur = conn.cursor()
    cur.execute("""
        SELECT 'pg_catalog.pg_class'::regclass::oid, c.oid, n.nspname, c.relkind,
               (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'relname')
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'pg_class'""")
    assert cur.fetchall() == [(1259, 1259, "pg_catalog", "v", 1)]
    cur.execute("SELECT count(DISTINCT oid) = count(*) FROM pg_catalog.pg_class")
    assert cur.fetchone() == (True,)
    conn.close()


# (expression, expected value) in the catalog_db database: the catalog functions of pg_builtins.py
CATALOG_FUNCTIONS = [
    ("format_type(1042, NULL)", "character"),
    ("format_type(1042, -1)", "bpchar"),
    ("format_type(1043, 104)", "character varying(100)"),
    ("format_type(1015, 14)", "character varying(10)[]"),
    ("format_type(1700, (12 << 16 | 2) + 4)", "numeric(12,2)"),
    ("format_type('int8'::regtype, NULL)", "bigint"),
    ("format_type(1184, -1)", "timestamp with time zone"),
    ("format_type(123456, -1)", "???"),
    ("format_type(NULL, 1)", None),
    ("to_regtype('int')::oid", 20),
    ("to_regtype('no_such_type')", None),
    ("to_regclass('rich')::oid = 'public.rich'::regclass::oid", True),
    ("to_regnamespace('public')::oid = (SELECT oid FROM pg_namespace WHERE nspname = 'public')", True),
    ("pg_get_viewdef('rich'::regclass)", "SELECT id FROM accounts WHERE balance > 100"),
    ("pg_get_viewdef('accounts'::regclass)", None),
    ("pg_table_is_visible('accounts'::regclass)", True),
    ("pg_table_is_visible('pg_catalog.pg_class'::regclass)", True),
    ("pg_table_is_visible('crdb_internal.tables'::regclass)", False),
    ("pg_table_is_visible(123456)", None),
    ("pg_get_indexdef('accounts'::regclass)", None),
    ("pg_get_indexdef((SELECT indexrelid FROM pg_index WHERE indrelid = 'accounts'::regclass "
     "AND NOT indisprimary AND indnatts = 2), 2, true)", "status"),
    ("pg_get_constraintdef(0)", None),
    ("pg_get_serial_sequence('accounts', 'id')", None),
    ("obj_description('accounts'::regclass, 'pg_class')", None),
    ("col_description('accounts'::regclass, 1)", None),
    ("pg_get_userbyid((SELECT datdba FROM pg_database WHERE datname = current_database()))", "root"),
    ("pg_get_userbyid(1)", "unknown (OID=1)"),
    ("pg_encoding_to_char(6)", "UTF8"),
    ("(SELECT array_agg(x ORDER BY x DESC) FROM unnest(ARRAY[2, 3, 1]) AS u(x))", [3, 2, 1]),
    ("(SELECT array_agg(s) FROM (SELECT generate_subscripts(ARRAY['a', 'b'], 1) AS s) AS g)", [1, 2]),
]


@pytest.mark.parametrize("expression,expected", CATALOG_FUNCTIONS, ids=[e for e, _ in CATALOG_FUNCTIONS])
def test_catalog_functions(node: Node, catalog_db: str, expression: str, expected: object) -> None:
    assert node.sql(f"SELECT {expression}", database=catalog_db) == [(expected,)]


def test_privilege_functions(node: Node, accounts_db: str) -> None:
    node.sql("CREATE USER IF NOT EXISTS psql_bob", "GRANT SELECT ON accounts TO psql_bob", database=accounts_db)
    conn = node.connect(database=accounts_db)
    cur = conn.cursor()
    cur.execute("""
        SELECT has_table_privilege('psql_bob', 'accounts', 'SELECT'),
               has_table_privilege('psql_bob', 'accounts', 'INSERT, UPDATE'),
               has_table_privilege('accounts', 'DELETE'),
               has_database_privilege('psql_bob', current_database(), 'CONNECT'),
               has_schema_privilege('psql_bob', 'public', 'USAGE'),
               pg_has_role('root', 'admin', 'MEMBER'),
               pg_has_role('psql_bob', 'admin', 'MEMBER')""")
    assert cur.fetchone() == (True, False, True, True, True, True, False)
    cur.execute("SELECT relacl FROM pg_catalog.pg_class WHERE relname = 'accounts'")
    assert cur.fetchone() == (["root=arwdDxt/root", "admin=arwdDxt/root", "psql_bob=r/root"],)
    with pytest.raises(psycopg2.errors.UndefinedObject):
        cur.execute("SELECT has_table_privilege('nobody_here', 'accounts', 'SELECT')")
    conn.close()
