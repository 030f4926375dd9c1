"""Foreign keys seen and used through real clients: psql's \\d, SQLAlchemy's reflection with the
cockroachdb dialect, and concurrent parent deletes against child inserts (SERIALIZABLE: no orphan
ever commits). The statement-level behaviour is tests/logic/foreign_keys.test."""
from __future__ import annotations

import io
import threading
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from conftest import Node
from test_psql import psql, section
from test_sqlalchemy import engine_for

SCHEMA = (
    "CREATE TABLE parent (id INT PRIMARY KEY, code STRING UNIQUE)",
    "CREATE TABLE child (id INT PRIMARY KEY, pid INT NOT NULL REFERENCES parent ON DELETE CASCADE, "
    "code STRING, CONSTRAINT child_code_fk FOREIGN KEY (code) REFERENCES parent (code) ON UPDATE SET NULL)",
)


def test_psql_describe_shows_foreign_keys_both_ways(node: Node, db: str) -> None:
    node.sql(*SCHEMA, database=db)
    out = psql(node, db, "\\d child\n\\d parent\n").stdout
    child_part, parent_part = out.split('Table "public.parent"')
    assert section(child_part, "Foreign-key constraints:") == [
        '"child_code_fk" FOREIGN KEY (code) REFERENCES parent(code) ON UPDATE SET NULL',
        '"child_pid_fkey" FOREIGN KEY (pid) REFERENCES parent(id) ON DELETE CASCADE',
    ]
    assert section(parent_part, "Referenced by:") == [
        'TABLE "child" CONSTRAINT "child_code_fk" FOREIGN KEY (code) REFERENCES parent(code) ON UPDATE SET NULL',
        'TABLE "child" CONSTRAINT "child_pid_fkey" FOREIGN KEY (pid) REFERENCES parent(id) ON DELETE CASCADE',
    ]


@pytest.mark.parametrize("driver", ["cockroachdb"])
def test_sqlalchemy_reflects_foreign_keys(node: Node, db: str, driver: str) -> None:
    node.sql(*SCHEMA, database=db)
    engine = engine_for(node, db, driver)
    try:
        fks = sorted(sa.inspect(engine).get_foreign_keys("child"), key=lambda f: f["name"])
        assert [(f["name"], f["constrained_columns"], f["referred_table"], f["referred_columns"],
                 f["options"]) for f in fks] == [
            ("child_code_fk", ["code"], "parent", ["code"], {"onupdate": "SET NULL"}),
            ("child_pid_fkey", ["pid"], "parent", ["id"], {"ondelete": "CASCADE"}),
        ]
        # Metadata reflection follows the reference to the parent table, and create_all of a
        # model with ForeignKey columns produces constraints the server enforces.
        metadata = sa.MetaData()
        child = sa.Table("child", metadata, autoload_with=engine)
        assert "parent" in metadata.tables
        assert {fk.target_fullname for fk in child.foreign_keys} == {"parent.id", "parent.code"}
        models = sa.MetaData()
        sa.Table("authors", models, sa.Column("id", sa.Integer, primary_key=True))
        books = sa.Table("books", models, sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("author_id", sa.Integer, sa.ForeignKey("authors.id", ondelete="CASCADE")))
        models.create_all(engine)
        with engine.begin() as conn:
            with pytest.raises(sa.exc.IntegrityError) as info:
                conn.execute(books.insert().values(id=1, author_id=42))
            assert info.value.orig.pgcode == "23503"
        assert [f["referred_table"] for f in sa.inspect(engine).get_foreign_keys("books")] == ["authors"]
        models.drop_all(engine)
    finally:
        engine.dispose()


def test_concurrent_parent_deletes_and_child_inserts_leave_no_orphan(node: Node, db: str) -> None:
    """Pairs of clients race, parent by parent: one inserts a child of the parent while the other
    deletes the parent, both released by a barrier. Each statement commits, fails with 40001
    (and is retried) or fails with 23503; exactly one of each pair must win, since both winning
    is an orphan and neither winning is a check that saw a row that was not there. At the end
    nothing references a missing parent and every acknowledged statement is reflected."""
    pairs, per_pair = 3, 12
    parents = pairs * per_pair
    node.sql("CREATE TABLE parent (id INT PRIMARY KEY)",
             "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent)",
             f"INSERT INTO parent SELECT generate_series(1, {parents})", database=db)
    outcomes: dict[tuple[str, int], str] = {}
    errors_seen: list[BaseException] = []
    lock = threading.Lock()

    def run(conn: Any, statement: str, args: tuple) -> str:
        """Run one autocommit statement, retrying on 40001; 'ok' or the SQLSTATE it ended with."""
        for _ in range(200):  # bounded: a retry storm fails the test instead of hanging it
            try:
                with conn.cursor() as cur:
                    cur.execute(statement, args)
                    assert cur.rowcount == 1
                    return "ok"
            except psycopg2.Error as exc:
                if exc.pgcode != "40001":
                    return exc.pgcode
        raise AssertionError(f"{statement} {args}: still 40001 after 200 tries")

    def racer(kind: str, pair: int, barrier: threading.Barrier) -> None:
        conn = node.connect(database=db)
        try:
            for pid in range(pair * per_pair + 1, (pair + 1) * per_pair + 1):
                barrier.wait(timeout=60)
                if kind == "insert":
                    outcome = run(conn, "INSERT INTO child VALUES (%s, %s)", (pid, pid))
                else:
                    outcome = run(conn, "DELETE FROM parent WHERE id = %s", (pid,))
                with lock:
                    outcomes[(kind, pid)] = outcome
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors_seen.append(exc)
            barrier.abort()
        finally:
            conn.close()

    threads = []
    for pair in range(pairs):
        barrier = threading.Barrier(2)
        threads += [threading.Thread(target=racer, args=(kind, pair, barrier)) for kind in ("insert", "delete")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "a racer did not finish"
    assert not errors_seen, errors_seen
    assert set(outcomes.values()) <= {"ok", "23503"}, outcomes
    for pid in range(1, parents + 1):
        winners = [kind for kind in ("insert", "delete") if outcomes[(kind, pid)] == "ok"]
        assert len(winners) == 1, (pid, outcomes[("insert", pid)], outcomes[("delete", pid)])
    orphans = node.sql("SELECT c.id FROM child c LEFT JOIN parent p ON p.id = c.pid WHERE p.id IS NULL",
                       database=db)
    assert orphans == []
    children = {int(r[0]) for r in node.sql("SELECT pid FROM child", database=db)}
    remaining = {int(r[0]) for r in node.sql("SELECT id FROM parent", database=db)}
    assert children == {pid for (kind, pid), o in outcomes.items() if kind == "insert" and o == "ok"}
    assert remaining == {pid for (kind, pid), o in outcomes.items() if kind == "delete" and o != "ok"}


def test_copy_checks_foreign_keys(node: Node, db: str) -> None:
    node.sql("CREATE TABLE parent (id INT PRIMARY KEY)", "INSERT INTO parent VALUES (1), (2)",
             "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent)", database=db)
    conn = node.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.copy_expert("COPY child FROM STDIN", io.StringIO("1\t1\n2\t\\N\n3\t2\n"))
            with pytest.raises(psycopg2.Error) as info:
                cur.copy_expert("COPY child FROM STDIN", io.StringIO("4\t1\n5\t7\n"))
        assert info.value.pgcode == "23503"
        assert info.value.diag.message_detail == 'Key (pid)=(7) is not present in table "parent".'
    finally:
        conn.close()
    assert node.sql("SELECT id, pid FROM child ORDER BY id", database=db) == [(1, 1), (2, None), (3, 2)]


def test_checks_are_index_lookups(node: Node, db: str) -> None:
    """EXPLAIN ANALYZE counts what the kv layer returned: a child insert reads the one parent key
    it needs and a parent delete reads the child index only where the key would be, however big
    the tables are; without an index on the referencing column the delete scans the child."""
    node.sql("CREATE TABLE parent (id INT PRIMARY KEY)", "INSERT INTO parent SELECT generate_series(1, 500)",
             "CREATE TABLE child (id INT PRIMARY KEY, pid INT REFERENCES parent, INDEX child_pid_idx (pid))",
             "INSERT INTO child SELECT i, i FROM generate_series(1, 400) AS g(i)", database=db)

    def kv_rows(statement: str) -> int:
        lines = [r[0] for r in node.sql(f"EXPLAIN ANALYZE {statement}", database=db)]
        total = next(line for line in lines if line.startswith("rows decoded from KV:"))
        return int(total.split(":")[1].split()[0])

    # the parent row, and the unique check of the new child key (none found)
    assert kv_rows("INSERT INTO child VALUES (1000, 7)") == 1
    # the parent row deleted, then nothing in the child index for key 450
    assert kv_rows("DELETE FROM parent WHERE id = 450") == 1
    # with a referencing row: the scan stops at the first child row it finds
    with pytest.raises(psycopg2.Error) as info:
        kv_rows("DELETE FROM parent WHERE id = 7")
    assert info.value.pgcode == "23503"
    node.sql("DROP INDEX child_pid_idx", database=db)
    # the parent row, then every child row (401) compared with the key
    assert kv_rows("DELETE FROM parent WHERE id = 451") == 402
    with pytest.raises(psycopg2.Error) as info:
        kv_rows("DELETE FROM parent WHERE id = 8")
    assert info.value.pgcode == "23503"


def test_alembic_autogenerate_sees_foreign_keys(node: Node, db: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    node.sql(*SCHEMA, database=db)
    engine = engine_for(node, db)
    try:
        models = sa.MetaData()
        sa.Table("parent", models, sa.Column("id", sa.BigInteger, primary_key=True),
                 sa.Column("code", sa.Text, unique=True))
        sa.Table("child", models, sa.Column("id", sa.BigInteger, primary_key=True),
                 sa.Column("pid", sa.BigInteger, sa.ForeignKey("parent.id", ondelete="CASCADE"), nullable=False),
                 sa.Column("code", sa.Text),
                 sa.ForeignKeyConstraint(["code"], ["parent.code"], name="child_code_fk", onupdate="SET NULL"))
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), models)
        fk_changes = [d for d in diff if d[0] in ("add_fk", "remove_fk")]
        # The model's unnamed key matches the reflected child_pid_fkey; nothing to migrate.
        assert fk_changes == []
        # A key the database lacks is one autogenerate would add.
        models.tables["child"].append_constraint(
            sa.ForeignKeyConstraint(["id"], ["parent.id"], name="child_id_fk"))
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), models)
        added = [d[1].name for d in diff if d[0] == "add_fk"]
        assert added == ["child_id_fk"]
    finally:
        engine.dispose()


DJANGO_MODELS = '''
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=50)


class Book(models.Model):
    title = models.CharField(max_length=50)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
'''

DJANGO_SCRIPT = '''
import json, sys
import django
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

settings.configure(INSTALLED_APPS=["shop"], DATABASES={"default": json.loads(sys.argv[1])},
                   DEFAULT_AUTO_FIELD="django.db.models.BigAutoField", USE_TZ=True,
                   DISABLE_COCKROACHDB_TELEMETRY=True)
django.setup()
from shop.models import Author, Book

out = {}
call_command("makemigrations", "shop", verbosity=0)
call_command("migrate", "shop", verbosity=0)
author = Author.objects.create(name="Ann")
Book.objects.create(title="One", author=author)
try:
    with transaction.atomic():
        Book.objects.create(title="Orphan", author_id=author.id + 1000)
    out["orphan"] = "inserted"
except IntegrityError as exc:
    out["orphan"] = exc.__cause__.sqlstate
with connection.cursor() as cur:
    out["relations"] = connection.introspection.get_relations(cur, "shop_book")
author.delete()  # Django's collector deletes the books first; the constraint must agree
out["books_left"] = Book.objects.count()
call_command("migrate", "shop", "zero", verbosity=0)
out["tables_left"] = sorted(t for t in connection.introspection.table_names() if t.startswith("shop_"))
print(json.dumps(out))
'''


def test_django_migrations_create_and_drop_foreign_keys(node: Node, db: str, tmp_path) -> None:
    """makemigrations + migrate with django-cockroachdb (the constraint is added by ALTER TABLE),
    a violating insert, get_relations, a cascade done by Django's collector, `migrate shop zero`.
    (get_constraints' own foreign key query is in foreign_keys.test: its index query needs
    LATERAL functions in FROM, which Pillbug lacks.)"""
    import json
    import os
    import subprocess
    import sys
    app = tmp_path / "shop"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    (app / "models.py").write_text(DJANGO_MODELS)
    params = node.params("root", None, db)
    database = {"ENGINE": "django_cockroachdb", "NAME": db, "USER": "root", "HOST": params["host"],
                "PORT": str(params["port"]),
                "OPTIONS": {k: v for k, v in params.items() if k.startswith("ssl")}}
    proc = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT, json.dumps(database)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path])))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"orphan": "23503", "relations": {"author_id": ["id", "shop_author"]},
                   "books_left": 0, "tables_left": []}
