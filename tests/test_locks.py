"""Row locks (kv/locks.py): a write to a row that another open transaction has written waits for
that transaction, as in CockroachDB, instead of racing it to the commit.

Every test drives real psycopg2 connections from several threads against a real node: writers of
one row queue and all commit; a waiting writer reads what the holder committed; a deadlock is
broken with 40001; lock_timeout, a cancel and a dropped connection end a wait or a hold.
"""
from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.errorcodes
import pytest
from conftest import in_thread


@pytest.fixture
def counter(node, db):
    node.sql("CREATE TABLE counter (k INT PRIMARY KEY, v INT)",
             "INSERT INTO counter VALUES (1, 0), (2, 0)", database=db)
    return db


def _value(node, db, k=1):
    return node.sql(f"SELECT v FROM counter WHERE k = {k}", database=db)[0][0]


def _waits(conn, sql):
    """Runs sql on conn in a thread, and checks that it waits (for a row lock)."""
    thread, outcome = in_thread(lambda: conn.cursor().execute(sql))
    thread.join(0.3)
    assert thread.is_alive(), f"{sql} did not wait"
    return thread, outcome


def test_writers_of_one_row_queue_and_all_commit(node, counter):
    """Explicit transactions over several round trips, all on one row: without locks most
    would fail with 40001; with them, each waits its turn and commits."""
    clients, rounds = 8, 25
    failures = []

    def client():
        conn = node.connect(database=counter, autocommit=False)
        try:
            with conn.cursor() as cur:
                for _ in range(rounds):
                    cur.execute("UPDATE counter SET v = v + 1 WHERE k = 1")
                    cur.execute("SELECT v FROM counter WHERE k = 1")
                    cur.fetchone()
                    conn.commit()
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]
    assert _value(node, counter) == clients * rounds


def test_a_waiting_writer_reads_what_the_holder_committed(node, counter):
    holder = node.connect(database=counter, autocommit=False)
    try:
        holder.cursor().execute("UPDATE counter SET v = v + 10 WHERE k = 1")
        waiter = node.connect(database=counter)
        try:
            thread, outcome = _waits(waiter, "UPDATE counter SET v = v * 2 WHERE k = 1")
            holder.commit()
            thread.join(10)
            assert not thread.is_alive() and "error" not in outcome, outcome
        finally:
            waiter.close()
    finally:
        holder.close()
    assert _value(node, counter) == 20  # (0 + 10) * 2: the waiter saw the holder's commit


def test_an_update_of_a_list_of_keys_locks_them_as_a_batch(node, counter):
    """UPDATE ... WHERE k IN (...) locks its rows too (a batch at a time, in key order, then one
    read): it waits for the holder of one of them, then reads what the holder committed."""
    holder = node.connect(database=counter, autocommit=False)
    try:
        holder.cursor().execute("UPDATE counter SET v = v + 10 WHERE k = 2")
        waiter = node.connect(database=counter)
        try:
            thread, outcome = _waits(waiter, "UPDATE counter SET v = v * 2 + 1 WHERE k IN (2, 1, 3)")
            holder.commit()
            thread.join(10)
            assert not thread.is_alive() and "error" not in outcome, outcome
        finally:
            waiter.close()
    finally:
        holder.close()
    assert (_value(node, counter, 1), _value(node, counter, 2)) == (1, 21)
    plan = [line for (line,) in node.sql("EXPLAIN UPDATE counter SET v = 0 WHERE k IN (1, 2)", database=counter)]
    assert any("locking strength: for update" in line for line in plan), plan


def test_a_deadlock_is_broken_with_40001(node, counter):
    first = node.connect(database=counter, autocommit=False)
    second = node.connect(database=counter, autocommit=False)
    try:
        first.cursor().execute("UPDATE counter SET v = v + 1 WHERE k = 1")
        second.cursor().execute("UPDATE counter SET v = v + 1 WHERE k = 2")
        thread, outcome = _waits(first, "UPDATE counter SET v = v + 1 WHERE k = 2")  # for second
        with pytest.raises(psycopg2.Error) as info:
            second.cursor().execute("UPDATE counter SET v = v + 1 WHERE k = 1")  # would close the cycle
        assert info.value.pgcode == psycopg2.errorcodes.SERIALIZATION_FAILURE
        assert "deadlock" in str(info.value)
        second.rollback()  # its locks go: first gets k = 2
        thread.join(10)
        assert not thread.is_alive() and "error" not in outcome, outcome
        first.commit()
    finally:
        first.close()
        second.close()
    assert (_value(node, counter, 1), _value(node, counter, 2)) == (1, 1)


def test_lock_timeout_ends_a_wait_with_55P03(node, counter):
    holder = node.connect(database=counter, autocommit=False)
    waiter = node.connect(database=counter, autocommit=False)
    try:
        holder.cursor().execute("UPDATE counter SET v = 5 WHERE k = 1")
        cur = waiter.cursor()
        cur.execute("SET lock_timeout = '200ms'")
        started = time.monotonic()
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("UPDATE counter SET v = 6 WHERE k = 1")
        assert info.value.pgcode == "55P03"
        assert 0.15 < time.monotonic() - started < 5  # it waited for the lock; the upper bound is liveness
        waiter.rollback()
        holder.commit()
    finally:
        holder.close()
        waiter.close()
    assert _value(node, counter) == 5


def test_a_cancel_ends_a_wait(node, counter):
    holder = node.connect(database=counter, autocommit=False)
    waiter = node.connect(database=counter)
    try:
        holder.cursor().execute("UPDATE counter SET v = 5 WHERE k = 1")
        thread, outcome = _waits(waiter, "UPDATE counter SET v = 6 WHERE k = 1")
        waiter.cancel()
        thread.join(10)
        assert not thread.is_alive()
        assert getattr(outcome.get("error"), "pgcode", None) == psycopg2.errorcodes.QUERY_CANCELED, outcome
        holder.commit()
    finally:
        holder.close()
        waiter.close()
    assert _value(node, counter) == 5


def test_a_dropped_connection_lets_go_of_its_locks(node, counter):
    holder = node.connect(database=counter, autocommit=False)
    holder.cursor().execute("UPDATE counter SET v = 99 WHERE k = 1")
    waiter = node.connect(database=counter)
    try:
        thread, outcome = _waits(waiter, "UPDATE counter SET v = v + 1 WHERE k = 1")
        holder.close()  # never committed: its write is gone, and so is its lock
        thread.join(10)
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        waiter.close()
    assert _value(node, counter) == 1
