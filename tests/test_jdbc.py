"""JDBC: Debian's pgjdbc (42.5) against a real node over TLS, as DBeaver, Hibernate and Liquibase use it.

tests/jdbc/MetaData.java is compiled with javac into tmp_path and run with the driver from
/usr/share/java/postgresql.jar (`make install` brings both: default-jdk-headless and
libpostgresql-jdbc-java). It connects with sslmode=verify-full, the CA as a PEM sslrootcert and
a password, and prints what DatabaseMetaData's getTables, getColumns, getPrimaryKeys,
getIndexInfo and getImportedKeys answer. Those run pgjdbc's catalog queries: pg_class,
pg_attribute, pg_index with information_schema._pg_expandarray(i.indkey) in the select list and
(keys).x field access, pg_constraint, format_type, pg_get_expr.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, ROOT, Node

JAVA = shutil.which("java")
JAVAC = shutil.which("javac")
DRIVER = "/usr/share/java/postgresql.jar"

pytestmark = pytest.mark.skipif(JAVA is None or JAVAC is None, reason="no JDK: make install brings one")


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> str:
    assert os.path.exists(DRIVER), "libpostgresql-jdbc-java is missing: run make install"
    out = str(tmp_path_factory.mktemp("jdbc"))
    source = os.path.join(ROOT, "tests", "jdbc", "MetaData.java")
    subprocess.run([JAVAC, "-d", out, source], check=True, capture_output=True, timeout=180)
    return out


def metadata(node: Node, classes: str, database: str, *tables: str) -> list[dict[str, str]]:
    url = (f"jdbc:postgresql://{node.host}:{node.port}/{database}?sslmode=verify-full"
           f"&sslrootcert={os.path.join(node.certs_dir, 'ca.crt')}")
    proc = subprocess.run([JAVA, "-cp", f"{DRIVER}{os.pathsep}{classes}", "MetaData", url, ADMIN_USER,
                           ADMIN_PASSWORD, *tables], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        call, *fields = line.split("|")
        rows.append({"call": call, **dict(f.split("=", 1) for f in fields)})
    return rows


def of(rows: list[dict[str, str]], call: str, table: str | None = None) -> list[dict[str, str]]:
    return [r for r in rows if r["call"] == call and (table is None or table in (r.get("TABLE_NAME"),
                                                                                  r.get("FKTABLE_NAME")))]


@pytest.fixture
def schema(node: Node, db: str) -> str:
    node.sql("CREATE TABLE products (sku STRING, region STRING, name VARCHAR(40) NOT NULL, "
             "price DECIMAL(8, 2) DEFAULT 0, stock INT, tags STRING[], PRIMARY KEY (region, sku))",
             "CREATE UNIQUE INDEX products_name_key ON products (name)",
             "CREATE INDEX products_stock_price_idx ON products (stock DESC, price)",
             "INSERT INTO products VALUES ('a', 'eu', 'apple', 1.50, 3, NULL), ('b', 'us', 'pear', 2, 1, ARRAY['x'])",
             database=db)
    return db


def test_tables_and_columns(node: Node, classes: str, schema: str) -> None:
    rows = metadata(node, classes, schema, "products")
    assert of(rows, "tables") == [{"call": "tables", "TABLE_SCHEM": "public", "TABLE_NAME": "products",
                                   "TABLE_TYPE": "TABLE"}]
    columns = {r["COLUMN_NAME"]: r for r in of(rows, "columns")}
    assert list(columns) == ["sku", "region", "name", "price", "stock", "tags"]
    assert [columns[c]["ORDINAL_POSITION"] for c in columns] == ["1", "2", "3", "4", "5", "6"]
    # an array column is java.sql.Types.ARRAY: pgjdbc tells arrays by pg_type.typinput = 'array_in'::regproc
    assert (columns["tags"]["TYPE_NAME"], columns["tags"]["DATA_TYPE"]) == ("_text", "2003")
    assert (columns["name"]["TYPE_NAME"], columns["name"]["DATA_TYPE"], columns["name"]["COLUMN_SIZE"]) == \
        ("varchar", "12", "40")
    assert columns["name"]["IS_NULLABLE"] == "NO"
    assert (columns["price"]["TYPE_NAME"], columns["price"]["COLUMN_SIZE"], columns["price"]["DECIMAL_DIGITS"]) == \
        ("numeric", "8", "2")
    assert columns["price"]["COLUMN_DEF"] == "0"
    assert (columns["stock"]["TYPE_NAME"], columns["stock"]["DATA_TYPE"]) == ("int8", "-5")  # BIGINT
    assert columns["sku"]["TYPE_NAME"] == "text"
    assert of(rows, "count") == [{"call": "count", "products": "2"}]


def test_schemas_types_functions_and_keywords(node: Node, classes: str, schema: str) -> None:
    rows = metadata(node, classes, schema, "products")
    assert {"public", "pg_catalog", "information_schema", "crdb_internal"} <= \
        {r["TABLE_SCHEM"] for r in of(rows, "schemas")}
    types = {r["TYPE_NAME"]: r["DATA_TYPE"] for r in of(rows, "type_info")}
    assert (types["int8"], types["text"], types["numeric"], types["_int8"], types["bool"]) == \
        ("-5", "12", "2", "2003", "-7")
    assert of(rows, "functions") == [{"call": "functions", "FUNCTION_SCHEM": "pg_catalog", "FUNCTION_NAME": "upper"}]
    # pg_get_keywords(): the keywords that are not SQL:2003's
    keywords = of(rows, "keywords")[0]["sql"].split(",")
    assert "analyse" in keywords and "select" not in keywords


def test_primary_keys_and_indexes(node: Node, classes: str, schema: str) -> None:
    rows = metadata(node, classes, schema, "products")
    # the key's columns in key order (KEY_SEQ), not in table order
    assert [(r["COLUMN_NAME"], r["KEY_SEQ"], r["PK_NAME"]) for r in of(rows, "primary_keys")] == \
        [("region", "1", "products_pkey"), ("sku", "2", "products_pkey")]
    indexes = {}
    for r in of(rows, "index_info"):
        indexes.setdefault(r["INDEX_NAME"], []).append((r["ORDINAL_POSITION"], r["COLUMN_NAME"], r["NON_UNIQUE"]))
    assert indexes == {
        "products_pkey": [("1", "region", "f"), ("2", "sku", "f")],
        "products_name_key": [("1", "name", "f")],
        "products_stock_price_idx": [("1", "stock", "t"), ("2", "price", "t")],
    }
    assert of(rows, "imported_keys") == []


def test_imported_keys(node: Node, classes: str, schema: str) -> None:
    node.sql("CREATE TABLE stock_moves (id INT PRIMARY KEY, region STRING, sku STRING, qty INT, "
             "CONSTRAINT moves_product_fk FOREIGN KEY (region, sku) REFERENCES products (region, sku))",
             database=schema)
    rows = metadata(node, classes, schema, "stock_moves")
    assert [(r["PKTABLE_NAME"], r["PKCOLUMN_NAME"], r["FKCOLUMN_NAME"], r["KEY_SEQ"], r["FK_NAME"])
            for r in of(rows, "imported_keys")] == [
        ("products", "region", "region", "1", "moves_product_fk"),
        ("products", "sku", "sku", "2", "moves_product_fk"),
    ]
