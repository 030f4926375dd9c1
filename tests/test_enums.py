"""Enum types through real clients over real sockets: asyncpg (which introspects an unknown type
OID with its big pg_type/pg_range/pg_enum query and then sends and reads enum values in binary),
psycopg 3 (EnumInfo.fetch + register_enum, text and binary), psycopg2 (strings), and SQLAlchemy's
Enum type through the cockroachdb dialect (create_all issues CREATE TYPE after checking pg_type,
reflection reads format_type and pg_enum, drop_all drops the type).
"""
from __future__ import annotations

import asyncio
import enum
import io
import ssl

import asyncpg
import psycopg
import psycopg.types.enum
import pytest
import sqlalchemy as sa
from conftest import Node
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.enum import EnumInfo, register_enum

from pillbug.sql.enums import initial_reps, rep_between
from pillbug.util import encoding as enc


@given(st.integers(min_value=0, max_value=600), st.lists(st.integers(min_value=0, max_value=10_000), max_size=200))
def test_physical_representations_keep_declaration_order(n: int, positions: list[int]) -> None:
    """Members declared at once, then added one at a time anywhere (ADD VALUE BEFORE/AFTER):
    every member's byte string, and so its key encoding, sorts in declaration order, and no
    existing member's changes."""
    reps = initial_reps(n)
    assert all(len(r) <= 2 for r in reps)  # short keys for ordinary enums
    for p in positions:
        at = p % (len(reps) + 1)
        lo = reps[at - 1] if at > 0 else b""
        hi = reps[at] if at < len(reps) else None
        new = rep_between(lo, hi)
        assert new and new[-1] != 0  # room stays below it too
        reps.insert(at, new)
    assert all(a < b for a, b in zip(reps, reps[1:]))
    keys = [enc.encode_bytes(r) for r in reps]
    assert all(a < b for a, b in zip(keys, keys[1:]))


def _setup(node: Node, db: str) -> None:
    node.sql("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
             "CREATE TABLE feelings (id INT PRIMARY KEY, m mood, ms mood[], INDEX (m))",
             "INSERT INTO feelings VALUES (1, 'happy', ARRAY['sad','happy']), (2, 'sad', NULL)",
             database=db)


def _asyncpg_ssl(node: Node) -> ssl.SSLContext:
    params = node.params()
    ctx = ssl.create_default_context(cafile=params["sslrootcert"])
    ctx.load_cert_chain(params["sslcert"], params["sslkey"])
    return ctx


def test_asyncpg_reads_and_writes_enums(node: Node, db: str) -> None:
    _setup(node, db)

    async def run() -> tuple:
        conn = await asyncpg.connect(host=node.host, port=node.port, user="root", database=db,
                                     ssl=_asyncpg_ssl(node))
        try:
            # parameters of the enum type and of its array type, described by the server
            await conn.execute("INSERT INTO feelings VALUES ($1, $2, $3)", 3, "ok", ["ok", "happy"])
            rows = await conn.fetch("SELECT id, m, ms FROM feelings ORDER BY m, id")
            found = await conn.fetchval("SELECT id FROM feelings WHERE m = $1", "happy")
            any_hit = await conn.fetch("SELECT id FROM feelings WHERE $1 = ANY(ms) ORDER BY id", "happy")
            with pytest.raises(asyncpg.InvalidTextRepresentationError, match='invalid input value for enum mood: "meh"'):
                await conn.execute("INSERT INTO feelings VALUES ($1, $2)", 4, "meh")
            oid = await conn.fetchval("SELECT oid FROM pg_type WHERE typname = 'mood'")
            stmt = await conn.prepare("SELECT m FROM feelings WHERE id = 1")
            return rows, found, any_hit, oid, stmt.get_attributes()[0].type
        finally:
            await conn.close()

    rows, found, any_hit, oid, attr_type = asyncio.run(run())
    assert [(r["id"], r["m"], r["ms"]) for r in rows] == [
        (2, "sad", None), (3, "ok", ["ok", "happy"]), (1, "happy", ["sad", "happy"])]
    assert all(isinstance(r["m"], str) for r in rows)
    assert found == 1
    assert [r["id"] for r in any_hit] == [1, 3]
    assert oid > 100_000 and attr_type.oid == oid and attr_type.kind == "scalar" and attr_type.name == "mood"


class Mood(enum.Enum):
    sad = "sad"
    ok = "ok"
    happy = "happy"


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg3_enum_info_and_register_enum(node: Node, db: str, binary: bool) -> None:
    _setup(node, db)
    with psycopg.connect(**node.params(database=db), autocommit=True) as conn:
        info = EnumInfo.fetch(conn, "mood")
        assert info is not None
        assert info.labels == ["sad", "ok", "happy"]
        assert info.name == "mood"
        oid = conn.execute("SELECT oid, typarray FROM pg_type WHERE typname = 'mood'").fetchone()
        assert (info.oid, info.array_oid) == oid
        register_enum(info, conn, Mood)
        with conn.cursor(binary=binary) as cur:
            cur.execute("INSERT INTO feelings VALUES (%s, %s, %s)", (3, Mood.ok, [Mood.ok, Mood.sad]))
            cur.execute("SELECT m, ms FROM feelings ORDER BY m DESC")
            rows = cur.fetchall()
            assert cur.description[0].type_code == info.oid
        assert rows == [(Mood.happy, [Mood.sad, Mood.happy]), (Mood.ok, [Mood.ok, Mood.sad]), (Mood.sad, None)]
        assert EnumInfo.fetch(conn, "no_such_type") is None


def test_psycopg2_returns_strings(node: Node, db: str) -> None:
    _setup(node, db)
    conn = node.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO feelings VALUES (%s, %s, %s)", (3, "ok", ["ok"]))
            cur.execute("SELECT id, m FROM feelings WHERE m >= %s ORDER BY m", ("ok",))
            assert cur.fetchall() == [(3, "ok"), (1, "happy")]
            oid = cur.description[1].type_code
            cur.execute("SELECT typname, typtype FROM pg_type WHERE oid = %s", (oid,))
            assert cur.fetchone() == ("mood", "e")
            cur.copy_expert("COPY feelings (id, m, ms) FROM STDIN", io.StringIO("7\tok\t{sad,ok}\n8\t\\N\t\\N\n"))
            cur.execute("SELECT id, m, ms::STRING FROM feelings WHERE id >= 7 ORDER BY id")
            assert cur.fetchall() == [(7, "ok", "{sad,ok}"), (8, None, None)]
            cur.execute("SELECT 'zzz'::mood")
    except Exception as exc:
        assert getattr(exc, "pgcode", None) == "22P02"
    else:
        pytest.fail("'zzz'::mood was accepted")
    finally:
        conn.close()


def test_drop_type_in_use_is_refused(node: Node, db: str) -> None:
    _setup(node, db)
    conn = node.connect(database=db)
    try:
        with conn.cursor() as cur, pytest.raises(Exception) as info:
            cur.execute("DROP TYPE mood")
        assert info.value.pgcode == "2BP01"
        assert str(info.value).startswith(
            f'cannot drop type "mood" because other objects ([{db}.public.feelings]) still depend on it')
    finally:
        conn.close()


def test_only_the_owner_or_an_admin_alters_a_type(node: Node, db: str) -> None:
    node.sql("CREATE USER IF NOT EXISTS testuser", f"GRANT ALL ON DATABASE {db} TO testuser",
             "CREATE TYPE rootmood AS ENUM ('a')", database=db)
    conn = node.connect(user="testuser", database=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 'a'::rootmood")  # everyone may use a type
            assert cur.fetchone() == ("a",)
            for stmt in ("ALTER TYPE rootmood ADD VALUE 'b'", "DROP TYPE rootmood",
                         "ALTER TYPE rootmood RENAME TO m2"):
                with pytest.raises(Exception) as info:
                    cur.execute(stmt)
                assert info.value.pgcode == "42501", stmt
            cur.execute("CREATE TYPE mine AS ENUM ('x')")
            cur.execute("ALTER TYPE mine ADD VALUE 'y'")
            cur.execute("DROP TYPE mine")
            with pytest.raises(Exception) as info:
                cur.execute("ALTER TYPE rootmood OWNER TO testuser")
            assert info.value.pgcode == "42501"
        node.sql("ALTER TYPE rootmood OWNER TO testuser", database=db)  # root is an admin
        with conn.cursor() as cur:
            cur.execute("SELECT owner FROM [SHOW TYPES] WHERE name = 'rootmood'")
            assert cur.fetchone() == ("testuser",)
            cur.execute("ALTER TYPE rootmood ADD VALUE 'b'")  # the new owner may
            cur.execute("SELECT enum_range(NULL::rootmood)::STRING")
            assert cur.fetchone() == ("{a,b}",)
    finally:
        conn.close()


def _engine(node: Node, db: str, driver: str) -> sa.Engine:
    url = node.url(database=db)
    return sa.create_engine(driver + url.removeprefix("postgresql"))


@pytest.mark.parametrize("driver", ["cockroachdb", "cockroachdb+psycopg"])
def test_sqlalchemy_enum_create_reflect_drop(node: Node, db: str, driver: str) -> None:
    engine = _engine(node, db, driver)
    metadata = sa.MetaData()
    pets = sa.Table("pets", metadata,
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("mood", sa.Enum(Mood, name="pet_mood"), nullable=False),
                    sa.Column("kind", sa.Enum("cat", "dog", name="pet_kind")))
    try:
        metadata.create_all(engine)
        metadata.create_all(engine)  # checks pg_type and creates nothing the second time
        with engine.begin() as conn:
            conn.execute(pets.insert(), [{"id": 1, "mood": Mood.happy, "kind": "cat"},
                                         {"id": 2, "mood": Mood.sad, "kind": "dog"}])
            got = conn.execute(sa.select(pets.c.id, pets.c.mood, pets.c.kind).order_by(pets.c.mood)).all()
            assert [tuple(r) for r in got] == [(2, Mood.sad, "dog"), (1, Mood.happy, "cat")]
        inspector = sa.inspect(engine)
        enums = {e["name"]: e for e in inspector.get_enums()}
        assert enums["pet_mood"]["labels"] == ["sad", "ok", "happy"]
        assert enums["pet_kind"]["labels"] == ["cat", "dog"]
        assert enums["pet_mood"]["schema"] == "public" and enums["pet_mood"]["visible"]
        # The cockroachdb dialect reads columns from information_schema, where an enum column is
        # USER-DEFINED (as in CockroachDB): it reflects the column with NullType and a warning.
        with pytest.warns(sa.exc.SAWarning, match="Could not parse type name 'USER-DEFINED'"):
            columns = {c["name"]: c for c in inspector.get_columns("pets")}
        assert set(columns) == {"id", "mood", "kind"}
        assert not columns["mood"]["nullable"] and columns["kind"]["nullable"]
        with engine.connect() as conn:
            udt = conn.execute(sa.text(
                "SELECT column_name, data_type, udt_name, crdb_sql_type FROM information_schema.columns "
                "WHERE table_name = 'pets' AND column_name != 'id' ORDER BY ordinal_position")).all()
        assert [tuple(r) for r in udt] == [("mood", "USER-DEFINED", "pet_mood", "public.pet_mood"),
                                           ("kind", "USER-DEFINED", "pet_kind", "public.pet_kind")]
    finally:
        metadata.drop_all(engine)
        engine.dispose()
    rows = node.sql("SELECT typname FROM pg_type WHERE typname IN ('pet_mood', 'pet_kind')", database=db)
    assert rows == []


def test_psql_describes_enum_types(node: Node, db: str) -> None:
    from test_psql import psql
    _setup(node, db)
    out = psql(node, db, "\\dT+\n").stdout
    cells = [c.strip() for c in next(line for line in out.splitlines() if "| mood" in line).split("|")]
    assert cells[:4] == ["public", "mood", "mood", "var"] and cells[4].startswith("sad") and cells[5] == "root"
    assert "ok" in out and "happy" in out  # the other members, one a line
    described = psql(node, db, "\\d feelings\n").stdout
    assert ["m", "mood"] in [[c.strip() for c in line.split("|")[:2]] for line in described.splitlines()]


def test_alembic_migration_with_enum_columns(node: Node, db: str) -> None:
    """An Alembic migration creates a table with an Enum column (CREATE TYPE first), adds an enum
    column of another type, and autogenerate then finds the database up to date."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    engine = _engine(node, db, "cockroachdb")
    metadata = sa.MetaData()
    sa.Table("tickets", metadata,
             sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("state", sa.Enum("open", "closed", name="ticket_state"), nullable=False),
             sa.Column("prio", sa.Enum("low", "high", name="ticket_prio")))
    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            op.create_table("tickets", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("state", sa.Enum("open", "closed", name="ticket_state"), nullable=False))
            prio = postgresql_enum("low", "high", name="ticket_prio")
            prio.create(conn)
            op.add_column("tickets", sa.Column("prio", prio))
            conn.execute(sa.text("INSERT INTO tickets VALUES (1, 'open', 'high')"))
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            # the dialect reflects USER-DEFINED columns as NullType (as from CockroachDB), which
            # Alembic leaves uncompared
            with pytest.warns(sa.exc.SAWarning, match="USER-DEFINED"):
                assert compare_metadata(context, metadata) == []
            assert conn.execute(sa.text("SELECT state::STRING, prio::STRING FROM tickets")).all() == [("open", "high")]
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            op.drop_table("tickets")
            op.execute("DROP TYPE ticket_state, ticket_prio")
        assert node.sql("SHOW TYPES", database=db) == []
    finally:
        engine.dispose()


def postgresql_enum(*labels: str, name: str) -> sa.types.TypeEngine:
    from sqlalchemy.dialects import postgresql
    return postgresql.ENUM(*labels, name=name, create_type=False)
