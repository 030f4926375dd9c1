"""pgcli 4 against a real node over TLS: its completion refresher and pgspecial's backslash commands.

pgcli fills its completer from catalog queries (pgcli/pgexecute.py): search_path, schemata,
tables and views with their columns (pg_class, pg_attribute), foreign keys (pg_constraint with
unnest), functions (pg_proc with ::regtype[] casts, prokind, pg_get_expr, 'trigger'::regtype),
datatypes (pg_type), databases and the casing query (pg_language, regexp_split_to_table,
ROW_NUMBER). If one of them fails, pgcli completes nothing. The test runs the real refresher,
then asks the completer what it would offer; it also runs pgspecial's commands (\\dt, \\d, \\df,
\\dn, \\l, \\du, \\dT, \\di, \\dv) through PGExecute.run as the pgcli prompt does.
"""
from __future__ import annotations

import os

import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, Node

pytest.importorskip("pgcli")
from pgcli.completion_refresher import CompletionRefresher  # noqa: E402
from pgcli.pgexecute import PGExecute  # noqa: E402
from pgspecial.main import PGSpecial  # noqa: E402
from prompt_toolkit.completion import CompleteEvent  # noqa: E402
from prompt_toolkit.document import Document  # noqa: E402


@pytest.fixture
def executor(node: Node, db: str) -> PGExecute:
    node.sql("CREATE TABLE customers (id INT PRIMARY KEY, full_name STRING NOT NULL, email STRING UNIQUE)",
             "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10, 2))",
             "CREATE INDEX orders_customer_idx ON orders (customer_id)",
             "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100",
             "CREATE SCHEMA reporting",
             "CREATE TABLE reporting.daily (day DATE PRIMARY KEY, revenue DECIMAL)",
             database=db)
    ex = PGExecute(db, ADMIN_USER, ADMIN_PASSWORD, node.host, str(node.port), sslmode="verify-full",
                   sslrootcert=os.path.join(node.certs_dir, "ca.crt"))
    yield ex
    ex.conn.close()


def completions(completer, text: str) -> set[str]:
    """What the completer offers with the cursor at "|" (or at the end)."""
    cursor = text.find("|")
    if cursor >= 0:
        text = text.replace("|", "")
    doc = Document(text, cursor_position=cursor if cursor >= 0 else len(text))
    return {c.text for c in completer.get_completions(doc, CompleteEvent())}


def test_every_refresher_query_succeeds(executor: PGExecute, tmp_path, db: str) -> None:
    casing_file = tmp_path / "casing"
    refreshed = []
    settings = {"single_connection": True, "casing_file": str(casing_file), "generate_casing_file": True}
    # _bg_refresh is what pgcli's refresh thread runs; here it runs in the test's thread, so an
    # error in any refresher query fails the test instead of leaving the completer empty.
    CompletionRefresher()._bg_refresh(executor, PGSpecial(), refreshed.append, settings=settings)
    assert len(refreshed) == 1
    completer = refreshed[0]
    assert casing_file.exists()  # the casing query ran (and found no function bodies to learn from)

    assert {"customers", "orders", "big_orders"} <= completions(completer, "SELECT * FROM ")
    assert {"full_name", "email"} <= completions(completer, "SELECT | FROM customers")
    assert "reporting" in completions(completer, "SELECT * FROM ")
    assert "daily" in completions(completer, "SELECT * FROM reporting.")
    assert "revenue" in completions(completer, "SELECT | FROM reporting.daily")
    assert "unique_rowid()" in completions(completer, "SELECT pg_catalog.unique_r")  # from pg_proc
    assert completions(completer, "SELECT crdb_internal.increment_f") == {"increment_feature_counter()"}
    assert db in completions(completer, "\\c ")


def test_refresher_results(executor: PGExecute) -> None:
    assert executor.search_path() == ["pg_catalog", "public"]
    assert {"public", "reporting"} <= set(executor.schemata())
    assert {("public", "customers"), ("public", "orders"), ("reporting", "daily")} <= set(executor.tables())
    assert ("public", "big_orders") in set(executor.views())
    columns = {(c[1], c[2]): c[3] for c in executor.table_columns()}
    assert columns[("customers", "full_name")] == "text"
    assert columns[("orders", "total")] == "numeric"
    assert columns[("daily", "day")] == "date"
    functions = {(f.schema_name, f.func_name): f for f in executor.functions()}
    upper = functions[("pg_catalog", "upper")]
    assert upper.return_type == "text" and upper.arg_types == ("text",)
    assert functions[("pg_catalog", "count")].is_aggregate
    assert functions[("pg_catalog", "row_number")].is_window
    assert functions[("pg_catalog", "generate_series")].is_set_returning
    assert ("information_schema", "_pg_expandarray") in functions
    assert list(executor.foreignkeys()) == []
    assert list(executor.datatypes()) == []  # no user-defined types
    assert list(executor.casing()) == []
    assert executor.dbname in list(executor.databases())


@pytest.mark.parametrize("command, expected", [
    ("\\dt", "customers"),
    ("\\d customers", "full_name"),
    ("\\d orders", "orders_customer_idx"),
    ("\\dn", "reporting"),
    ("\\l", "defaultdb"),
    ("\\du", ADMIN_USER),
    ("\\dv", "big_orders"),
    ("\\di", "orders_customer_idx"),
    ("\\df upper", "upper"),
    ("\\dT", None),
])
def test_pgspecial_commands(executor: PGExecute, command: str, expected: str | None) -> None:
    results = list(executor.run(command, pgspecial=PGSpecial()))
    assert results, command
    title, rows, headers, status, *_ = results[0]
    text = repr(list(rows or [])) + repr(title) + repr(status)
    assert "ERROR" not in text.upper() or expected == "ERROR", text
    if expected is not None:
        assert expected in text, text
