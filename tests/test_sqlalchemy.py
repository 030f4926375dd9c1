"""SQLAlchemy 2 with the real sqlalchemy-cockroachdb dialect, over TLS with sslmode=verify-full.

The dialect reads information_schema for tables and columns and runs PostgreSQL's own reflection
queries for keys, indexes and constraints (pg_index with unnest/generate_subscripts in the select
list, array_agg(... ORDER BY ...), pg_get_constraintdef, regclass casts). These tests drive it
through create_all/drop_all, the Inspector, metadata reflection, ORM sessions and
run_transaction, with psycopg2 (cockroachdb://) and psycopg 3 (cockroachdb+psycopg://).
"""
from __future__ import annotations

import datetime
import threading
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import ADMIN_PASSWORD, ADMIN_USER, Node
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql
from sqlalchemy_cockroachdb import run_transaction

DRIVERS = ["cockroachdb", "cockroachdb+psycopg"]


def engine_for(node: Node, database: str, driver: str = "cockroachdb", user: str = "root",
               password: str | None = None, **kwargs) -> sa.Engine:
    url = node.url(user=user, password=password, database=database)
    assert "sslmode=verify-full" in url
    return sa.create_engine(driver + url.removeprefix("postgresql"), **kwargs)


def make_metadata() -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    accounts = sa.Table(
        "sa_accounts", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("email", sa.String(100), unique=True),
        sa.Column("balance", sa.Numeric(12, 2), nullable=False, server_default="0"),
        sa.Column("active", sa.Boolean, server_default=sa.text("true")),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("born", sa.Date),
        sa.Column("notes", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("big", sa.BigInteger),
        sa.Column("token", postgresql.UUID(as_uuid=True)),
        sa.Column("payload", postgresql.JSONB),
        sa.Column("blob", sa.LargeBinary),
        sa.CheckConstraint("balance >= 0", name="ck_balance"),
        sa.Index("ix_sa_accounts_name", "name"),
        sa.Index("ix_sa_accounts_created_big", sa.text("created DESC"), "big"),
    )
    sa.Table("sa_tags", metadata,
             sa.Column("account_id", sa.Integer, primary_key=True),
             sa.Column("tag", sa.String(20), primary_key=True),
             sa.UniqueConstraint("tag", "account_id", name="uq_tag_account"))
    return metadata, accounts


@pytest.mark.parametrize("driver", DRIVERS)
def test_create_reflect_and_drop(node: Node, db: str, driver: str) -> None:
    engine = engine_for(node, db, driver)
    metadata, _ = make_metadata()
    metadata.create_all(engine)
    inspector = sa.inspect(engine)
    assert inspector.get_table_names() == ["sa_accounts", "sa_tags"]
    assert inspector.has_table("sa_accounts") and not inspector.has_table("sa_missing")

    columns = {c["name"]: c for c in inspector.get_columns("sa_accounts")}
    assert list(columns) == ["id", "name", "email", "balance", "active", "created", "born", "notes", "score",
                             "big", "token", "payload", "blob"]
    expected_types = {"id": sa.INTEGER, "name": sa.VARCHAR, "email": sa.VARCHAR, "balance": sa.DECIMAL,
                      "active": sa.BOOLEAN, "created": sa.TIMESTAMP, "born": sa.DATE, "notes": sa.VARCHAR,
                      "score": sa.FLOAT, "big": sa.INTEGER, "token": postgresql.UUID,
                      "payload": postgresql.JSONB, "blob": sa.BLOB}
    for name, typ in expected_types.items():
        assert isinstance(columns[name]["type"], typ), (name, columns[name]["type"])
    assert columns["name"]["type"].length == 50 and columns["email"]["type"].length == 100
    assert (columns["balance"]["type"].precision, columns["balance"]["type"].scale) == (12, 2)
    assert columns["created"]["type"].timezone is True
    assert {n: c["nullable"] for n, c in columns.items() if not c["nullable"]} == {
        "id": False, "name": False, "balance": False}
    assert columns["id"]["autoincrement"] is True and columns["id"]["default"] == "unique_rowid()"
    assert columns["balance"]["default"] == "'0'"
    assert columns["active"]["default"].lower() == "true"
    assert columns["created"]["default"] == "now()"
    assert columns["notes"]["default"] is None

    assert inspector.get_pk_constraint("sa_accounts") == {
        "constrained_columns": ["id"], "name": "sa_accounts_pkey", "comment": None}
    assert inspector.get_pk_constraint("sa_tags")["constrained_columns"] == ["account_id", "tag"]
    indexes = {i["name"]: i for i in inspector.get_indexes("sa_accounts")}
    assert set(indexes) == {"ix_sa_accounts_name", "ix_sa_accounts_created_big", "sa_accounts_email_key"}
    assert indexes["ix_sa_accounts_name"]["column_names"] == ["name"]
    assert indexes["ix_sa_accounts_name"]["unique"] is False
    assert indexes["ix_sa_accounts_created_big"]["column_names"] == ["created", "big"]
    assert indexes["ix_sa_accounts_created_big"]["column_sorting"] == {"created": ("desc", "nulls_last")}
    assert indexes["sa_accounts_email_key"]["unique"] is True
    assert [(u["name"], u["column_names"]) for u in inspector.get_unique_constraints("sa_accounts")] == [
        ("sa_accounts_email_key", ["email"])]
    assert [(u["name"], u["column_names"]) for u in inspector.get_unique_constraints("sa_tags")] == [
        ("uq_tag_account", ["tag", "account_id"])]
    assert [(c["name"], c["sqltext"]) for c in inspector.get_check_constraints("sa_accounts")] == [
        ("ck_balance", "balance >= 0")]
    assert inspector.get_foreign_keys("sa_accounts") == []

    # A whole-schema reflection (the get_multi_* queries) sees the same tables.
    reflected = sa.MetaData()
    reflected.reflect(engine)
    table = reflected.tables["sa_accounts"]
    assert [c.name for c in table.primary_key] == ["id"]
    assert {i.name for i in table.indexes} >= {"ix_sa_accounts_name", "ix_sa_accounts_created_big"}
    assert [c.name for c in reflected.tables["sa_tags"].primary_key] == ["account_id", "tag"]

    metadata.drop_all(engine)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()


def test_core_round_trip_of_types(node: Node, db: str) -> None:
    engine = engine_for(node, db)
    metadata, accounts = make_metadata()
    metadata.create_all(engine)
    token = uuid.uuid4()
    row = {"name": "ann", "email": "ann@example.com", "balance": Decimal("12.50"), "born": datetime.date(1990, 5, 17),
           "notes": "multi\nline 'quoted'", "score": 2.5, "big": 2**40, "token": token,
           "payload": {"tags": ["a", "b"], "n": 1}, "blob": b"\x00\x01\xff"}
    with engine.begin() as conn:
        new_id = conn.execute(accounts.insert().values(**row).returning(accounts.c.id)).scalar_one()
        got = conn.execute(sa.select(accounts).where(accounts.c.id == new_id)).mappings().one()
    for key, value in row.items():
        assert got[key] == value, key
    assert got["active"] is True
    assert isinstance(got["created"], datetime.datetime) and got["created"].tzinfo is not None
    engine.dispose()


class Base(orm.DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "orm_accounts"
    id: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, primary_key=True)
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    balance: orm.Mapped[Decimal] = orm.mapped_column(sa.Numeric(12, 2), default=Decimal(0))


@pytest.mark.parametrize("driver", DRIVERS)
def test_orm_crud_with_sessions(node: Node, db: str, driver: str) -> None:
    engine = engine_for(node, db, driver, user=ADMIN_USER, password=ADMIN_PASSWORD)
    Base.metadata.create_all(engine)
    Session = orm.sessionmaker(engine)
    with Session() as session, session.begin():
        session.add_all([Account(owner="ann", balance=Decimal("100.00")),
                         Account(owner="bob", balance=Decimal("5.25")), Account(owner="cy")])
    with Session() as session:
        accounts = session.scalars(sa.select(Account).order_by(Account.owner)).all()
        assert [(a.owner, a.balance) for a in accounts] == [
            ("ann", Decimal("100.00")), ("bob", Decimal("5.25")), ("cy", Decimal("0.00"))]
        assert len({a.id for a in accounts}) == 3 and all(a.id > 0 for a in accounts)
        ann_id = accounts[0].id
    with Session() as session, session.begin():
        ann = session.get(Account, ann_id)
        ann.balance -= Decimal("30.00")
        session.delete(session.scalars(sa.select(Account).where(Account.owner == "cy")).one())
    with Session() as session:
        assert session.get(Account, ann_id).balance == Decimal("70.00")
        assert session.scalar(sa.select(sa.func.count()).select_from(Account)) == 2
        total = session.scalar(sa.select(sa.func.sum(Account.balance)))
        assert total == Decimal("75.25")
    with Session() as session:
        session.add(Account(owner="dee"))
        session.rollback()
        assert session.scalar(sa.select(sa.func.count()).select_from(Account)) == 2
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_transaction_retries_a_serialization_conflict(node: Node, db: str, driver: str) -> None:
    engine = engine_for(node, db, driver)
    Base.metadata.create_all(engine)
    with orm.Session(engine) as session, session.begin():
        session.add_all([Account(id=1, owner="ann", balance=Decimal(100)),
                         Account(id=2, owner="bob", balance=Decimal(100))])
    attempts = []

    def interfere() -> None:
        # Another client commits a change to a row the transaction has already read.
        with engine.connect() as other:
            other.execute(sa.text("UPDATE orm_accounts SET balance = balance + 1 WHERE id = 1"))
            other.commit()

    def transfer(session: orm.Session) -> None:
        attempts.append(1)
        ann = session.get(Account, 1)
        bob = session.get(Account, 2)
        if len(attempts) == 1:
            worker = threading.Thread(target=interfere)
            worker.start()
            worker.join()
        ann.balance -= Decimal(10)
        bob.balance += Decimal(10)

    run_transaction(orm.sessionmaker(engine), transfer)
    assert len(attempts) == 2  # the first attempt failed with 40001 and was retried
    with orm.Session(engine) as session:
        balances = dict(session.execute(sa.select(Account.owner, Account.balance)).all())
    assert balances == {"ann": Decimal(91), "bob": Decimal(110)}
    Base.metadata.drop_all(engine)
    engine.dispose()


def test_echo_shows_the_dialects_catalog_queries(node: Node, db: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(node, db, echo=True)
    metadata, _ = make_metadata()
    metadata.create_all(engine)
    with caplog.at_level("INFO", logger="sqlalchemy.engine"):
        sa.MetaData().reflect(engine)
    sent = "\n".join(r.getMessage() for r in caplog.records)
    # The queries that needed engine support: select-list SRFs, ordered aggregates, regclass casts.
    assert "generate_subscripts(" in sent and "ORDER BY idx_attr.ord" in sent and "AS REGCLASS" in sent
    metadata.drop_all(engine)
    engine.dispose()
