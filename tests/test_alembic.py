"""Alembic with sqlalchemy-cockroachdb, as an application's migrations use it.

A project is laid out with `alembic init` in a temporary folder; its env.py points at a real node
over TLS and at a model with related tables (foreign keys, a composite key, ON DELETE actions) and
an Enum column. Autogenerate writes the first revision from an empty database, `upgrade head`
applies it, `check` must then find no difference between the model and what the dialect reflects
(tables, columns and their types, indexes, unique constraints, foreign keys, the enum), and
`downgrade base` removes the tables again.
"""
from __future__ import annotations

import enum
import os
import textwrap

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from conftest import Node
from test_sqlalchemy import engine_for


class Status(enum.Enum):
    pending = "pending"
    shipped = "shipped"
    delivered = "delivered"


def make_model() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "customers", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(120), nullable=False, unique=True),
        sa.Column("name", sa.String(80)),
    )
    sa.Table(
        "products", metadata,
        sa.Column("sku", sa.String(20), primary_key=True),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
    )
    sa.Table(
        "orders", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("status", sa.Enum(Status, name="order_status"), nullable=False),
        sa.Column("placed", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "order_lines", metadata,
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(20), sa.ForeignKey("products.sku", name="fk_line_product"), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Index("ix_order_lines_sku", "sku"),
    )
    return metadata


ENV_PY = '''\
from alembic import context
import sqlalchemy as sa
import test_alembic

config = context.config
target_metadata = test_alembic.make_model()


def run_migrations_online() -> None:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
'''


@pytest.fixture
def alembic_config(node: Node, db: str, tmp_path) -> Config:
    script_dir = tmp_path / "migrations"
    ini = tmp_path / "alembic.ini"
    cfg = Config(str(ini))
    command.init(cfg, str(script_dir))
    (script_dir / "env.py").write_text(ENV_PY)
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(script_dir))
    url = engine_for(node, db).url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def table_names(node: Node, db: str) -> set[str]:
    engine = engine_for(node, db)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_autogenerate_upgrade_check_downgrade(node: Node, db: str, alembic_config: Config) -> None:
    revision = command.revision(alembic_config, message="initial", autogenerate=True)
    source = open(revision.path).read()
    for table in ("customers", "products", "orders", "order_lines"):
        assert f"op.create_table('{table}'" in source, source
    assert "sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE')" in source
    assert "sa.Enum('pending', 'shipped', 'delivered', name='order_status')" in source

    command.upgrade(alembic_config, "head")
    assert table_names(node, db) == {"alembic_version", "customers", "products", "orders", "order_lines"}

    # The model and the reflected schema agree: no difference is left to migrate.
    command.check(alembic_config)

    engine = engine_for(node, db)
    inspector = sa.inspect(engine)
    fks = {fk["name"]: fk for fk in inspector.get_foreign_keys("order_lines")}
    assert fks["fk_line_product"]["referred_table"] == "products"
    assert fks["fk_line_product"]["constrained_columns"] == ["sku"]
    assert [e["labels"] for e in inspector.get_enums()] == [["pending", "shipped", "delivered"]]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (id, email) VALUES (1, 'a@example.com')"))
        conn.execute(sa.text("INSERT INTO orders (id, customer_id, status) VALUES (10, 1, 'pending')"))
        with pytest.raises(sa.exc.IntegrityError, match="violates foreign key constraint"):
            with conn.begin_nested():
                conn.execute(sa.text("INSERT INTO orders (id, customer_id, status) VALUES (11, 2, 'pending')"))
        with pytest.raises(sa.exc.DataError, match="invalid input value for enum order_status"):
            with conn.begin_nested():
                conn.execute(sa.text("INSERT INTO orders (id, customer_id, status) VALUES (12, 1, 'lost')"))
        conn.execute(sa.text("DELETE FROM customers WHERE id = 1"))
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 0
    engine.dispose()

    command.downgrade(alembic_config, "base")
    assert table_names(node, db) == {"alembic_version"}
    # Alembic's drop_table leaves the enum type behind (on PostgreSQL too); with no column
    # using it any more, it can be dropped.
    engine = engine_for(node, db)
    assert [e["name"] for e in sa.inspect(engine).get_enums()] == ["order_status"]
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TYPE order_status"))
    assert sa.inspect(engine).get_enums() == []
    engine.dispose()


def test_a_second_revision_adds_a_column_and_a_foreign_key(node: Node, db: str, alembic_config: Config) -> None:
    command.revision(alembic_config, message="initial", autogenerate=True)
    command.upgrade(alembic_config, "head")
    second = command.revision(alembic_config, message="referrer", rev_id="b2")
    with open(second.path, "a") as f:
        f.write(textwrap.dedent('''
            def upgrade() -> None:
                op.add_column("customers", sa.Column("referrer_id", sa.Integer))
                op.create_foreign_key("fk_referrer", "customers", "customers", ["referrer_id"], ["id"],
                                      ondelete="SET NULL")


            def downgrade() -> None:
                op.drop_constraint("fk_referrer", "customers", type_="foreignkey")
                op.drop_column("customers", "referrer_id")
        '''))
    command.upgrade(alembic_config, "head")
    engine = engine_for(node, db)
    fks = sa.inspect(engine).get_foreign_keys("customers")
    assert [(f["name"], f["referred_table"], f["options"].get("ondelete")) for f in fks] == [
        ("fk_referrer", "customers", "SET NULL")]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (id, email) VALUES (1, 'a@x'), (2, 'b@x')"))
        conn.execute(sa.text("UPDATE customers SET referrer_id = 1 WHERE id = 2"))
        conn.execute(sa.text("DELETE FROM customers WHERE id = 1"))
        assert conn.execute(sa.text("SELECT referrer_id FROM customers WHERE id = 2")).scalar_one() is None
    engine.dispose()
    command.downgrade(alembic_config, "base")
    assert table_names(node, db) == {"alembic_version"}
    assert os.path.exists(second.path)
