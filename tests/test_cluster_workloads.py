"""The fault tests' workloads and checkers (tests/cluster_workloads.py) run against one real node
seen as three (every client index maps to it): each workload makes progress and its checker passes
on a correct run; then a damage done behind the clients' backs (a balance changed, an acked row
deleted, a register value rewritten) is reported. This keeps the checkers honest without a cluster.
"""
from __future__ import annotations

import time

import pytest
from cluster_workloads import Bank, Register, UniqueInserts
from conftest import Node, start_node


class OneNodeAsThree:
    """The part of tests/cluster_harness.Cluster the workloads use, over one node."""

    def __init__(self, node: Node) -> None:
        self.node_ = node
        self.n = 3
        self.nodes = [type("N", (), {"alive": True, "stopped": False, "index": i})() for i in (1, 2, 3)]

    def connect(self, i: int, database: str = "defaultdb", autocommit: bool = True):
        return self.node_.connect(database=database, autocommit=autocommit)

    def sql(self, i: int, *statements: str, database: str = "defaultdb") -> list:
        return self.node_.sql(*statements, database=database)


@pytest.fixture(scope="module")
def one(certs, tmp_path_factory):
    node = start_node(str(tmp_path_factory.mktemp("wl")), certs)
    try:
        yield OneNodeAsThree(node)
    finally:
        node.stop()


def run(workload, acks: int = 60) -> None:
    workload.start()
    try:
        workload.wait_acks(acks, timeout=60)
    finally:
        workload.stop()


def test_bank_checker(one):
    bank = Bank(one, clients_per_node=2, seed=1)
    run(bank)
    assert bank.check() == []
    assert bank.stats.acked >= 60 and bank.snapshots > 0
    # A half transaction done behind the clients' back: money appears from nowhere.
    one.sql(1, "UPDATE accounts SET balance = balance + 5 WHERE id = 0")
    found = bank.check()
    assert any("total" in a for a in found) and any("half-applied" in a for a in found), found
    # An acknowledged transfer removed from the log.
    one.sql(1, "UPDATE accounts SET balance = balance - 5 WHERE id = 0")
    victim = next(iter(bank.acked_ids))
    one.sql(1, f"DELETE FROM transfers WHERE id = '{victim}'")
    assert any("acknowledged transfers lost" in a for a in bank.check())


def test_register_checker(one):
    reg = Register(one, clients_per_node=2, keys=2, seed=2)
    run(reg, acks=80)
    assert reg.check() == []
    assert sum(len(h) for h in reg.history.values()) >= 80
    # A value no client wrote, as if a write had been lost and replaced.
    one.sql(1, "UPDATE reg SET v = -7 WHERE k = 0")
    found = reg.check()
    assert any(a.startswith("key 0: not linearizable") for a in found), found


def test_unique_inserts_checker(one):
    uniq = UniqueInserts(one, clients_per_node=2, seed=3)
    run(uniq, acks=40)
    assert uniq.check() == []
    # Racing clients lost slots to each other: the UNIQUE column was contended.
    assert uniq.stats.errors, "no insert lost its slot: the clients did not race"
    victim = next(iter(uniq.acked_keys))
    one.sql(1, f"DELETE FROM uniq WHERE k = '{victim}'")
    one.sql(1, "INSERT INTO uniq (k, slot, node) VALUES ('nobody', 999999, 1)")
    found = uniq.check()
    assert any("acknowledged inserts missing" in a for a in found), found
    assert any("rows no client inserted" in a for a in found), found


def test_wait_acks_is_a_condition(one):
    uniq = UniqueInserts(one, clients_per_node=1, seed=4)
    began = time.monotonic()
    run(uniq, acks=5)
    assert uniq.stats.acked >= 5 and time.monotonic() - began < 30
