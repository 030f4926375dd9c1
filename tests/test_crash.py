"""kill -9 during a write load, then a restart on the same store.

Writers run explicit transactions that each insert one `acks` row and three `parts` rows under a
transaction id and move money between two accounts. A writer records a transaction id as
acknowledged only once COMMIT has returned. The node is killed with SIGKILL in the middle of the
load, restarted on the same --store, and then: every acknowledged transaction is there in full,
no transaction is there in part, the money adds up, and the node serves new writes. Several
rounds run on the same store, so later rounds also check what earlier ones left.
"""
from __future__ import annotations

import random
import threading
import time

import psycopg2
from conftest import start_node

ACCOUNTS = 5
PARTS = 3
WRITERS = 6


def _writer(node, client: int, stop: threading.Event, acked: list, in_doubt: list, seq_start: int) -> None:
    rng = random.Random(client * 7919 + seq_start)
    seq = seq_start
    # Odd clients send each statement and COMMIT on its own; even ones send the whole
    # transaction as one query (BEGIN; ...; COMMIT), which the server may retry by itself.
    one_query = client % 2 == 0
    try:
        conn = node.connect(autocommit=one_query)
    except psycopg2.Error:
        return
    try:
        while not stop.is_set():
            seq += 1
            txn_id = client * 1_000_000 + seq
            frm, to = rng.sample(range(1, ACCOUNTS + 1), 2)
            statements = [
                ("INSERT INTO acks (txn_id, client) VALUES (%s, %s)", [txn_id, client]),
                ("INSERT INTO parts (txn_id, part, payload) VALUES " + ", ".join(["(%s, %s, %s)"] * PARTS),
                 [v for p in range(PARTS) for v in (txn_id, p, "x" * rng.randint(1, 200))]),
                ("UPDATE accounts SET balance = balance - 7 WHERE id = %s", [frm]),
                ("UPDATE accounts SET balance = balance + 7 WHERE id = %s", [to]),
            ]
            try:
                with conn.cursor() as cur:
                    if one_query:
                        cur.execute("BEGIN; " + "; ".join(sql for sql, _ in statements) + "; COMMIT",
                                    [v for _, args in statements for v in args])
                    else:
                        for sql, args in statements:
                            cur.execute(sql, args)
                if not one_query:
                    conn.commit()
            except psycopg2.errors.SerializationFailure:
                if not one_query:
                    conn.rollback()
                continue
            except psycopg2.Error:
                in_doubt.append(txn_id)  # the node died: the commit may or may not have happened
                return
            acked.append(txn_id)
    finally:
        try:
            conn.close()
        except psycopg2.Error:
            pass


def _check_store(node, acked: set[int], in_doubt: set[int]) -> int:
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT txn_id FROM acks")
            present = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT txn_id, count(*) FROM parts GROUP BY txn_id")
            parts = dict(cur.fetchall())
            cur.execute("SELECT count(*), sum(balance) FROM accounts")
            accounts = cur.fetchone()
    finally:
        conn.close()
    missing = acked - present
    assert not missing, f"{len(missing)} acknowledged transactions are gone, e.g. {sorted(missing)[:5]}"
    unexpected = present - acked - in_doubt
    assert not unexpected, f"transactions nobody committed: {sorted(unexpected)[:5]}"
    half = {t: n for t, n in parts.items() if n != PARTS}
    assert not half, f"transactions with some of their parts: {list(half.items())[:5]}"
    assert set(parts) == present, "parts without their ack row, or the other way round"
    assert accounts[0] == ACCOUNTS and accounts[1] == 1000 * ACCOUNTS, accounts
    return len(present)


def test_kill_9_during_writes_loses_no_acknowledged_commit(certs, tmp_path):
    node = start_node(str(tmp_path), certs)
    try:
        node.sql("CREATE TABLE acks (txn_id INT PRIMARY KEY, client INT)",
                 "CREATE TABLE parts (txn_id INT, part INT, payload STRING, PRIMARY KEY (txn_id, part))",
                 "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)",
                 f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) AS g")
        acked_total: set[int] = set()
        in_doubt_total: set[int] = set()
        rng = random.Random(20261125)
        for round_ in range(3):
            stop = threading.Event()
            acked: list[int] = []
            in_doubt: list[int] = []
            writers = [threading.Thread(target=_writer, args=(node, c, stop, acked, in_doubt, round_ * 100_000))
                       for c in range(1, WRITERS + 1)]
            for w in writers:
                w.start()
            deadline = time.monotonic() + 30
            while len(acked) < 40 and time.monotonic() < deadline:  # well into the load
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.4))
            node.kill()  # SIGKILL, mid-load
            stop.set()
            for w in writers:
                w.join(30)
            assert len(acked) >= 40, f"round {round_}: the load never got going:\n{node.log()}"
            acked_total.update(acked)
            in_doubt_total.update(in_doubt)
            node.start()  # the same --store
            present = _check_store(node, acked_total, in_doubt_total)
            assert present >= len(acked_total)
        assert {t // 1_000_000 % 2 for t in acked_total} == {0, 1}  # both kinds of writer got through
        node.sql("INSERT INTO acks VALUES (1, 0)")  # and it takes writes again
        assert node.sql("SELECT count(*) FROM acks WHERE txn_id = 1") == [(1,)]
    finally:
        node.stop()
