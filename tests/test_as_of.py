"""AS OF SYSTEM TIME: reads of old versions by relative time, timestamp and decimal HLC.

Every revision is stamped with an HLC time; AS OF SYSTEM TIME picks the newest revision at or
before the time given and reads that snapshot (with the catalog of then). Writes in such a
transaction are refused.
"""
from __future__ import annotations

import time
from decimal import Decimal

import psycopg2
import pytest
from conftest import wait_for

SECOND = Decimal(10**9)  # an HLC decimal counts nanoseconds
MICROSECOND = Decimal(1000)


@pytest.fixture
def cur(node, db):
    conn = node.connect(database=db)
    c = conn.cursor()
    c.execute("CREATE TABLE hist (k INT PRIMARY KEY, v STRING)")
    yield c
    conn.close()


def _clt(cur) -> Decimal:
    cur.execute("SELECT cluster_logical_timestamp()")
    return cur.fetchone()[0]


def _fails(cur, sql, code):
    with pytest.raises(psycopg2.Error) as info:
        cur.execute(sql)
    assert info.value.pgcode == code, (info.value.pgcode, str(info.value))
    return info.value


def _wait_clock_past(cur, ts: Decimal) -> Decimal:
    """Wait until a new transaction's HLC time on the node is past ts (a condition on the node's
    clock, not a guessed sleep) and return that time."""
    def past():
        now = _clt(cur)
        return now if now > ts else None
    return wait_for(past, f"the node's clock to pass {ts}")


def test_relative_interval_reads_the_past(cur):
    """'-1s' reads the snapshot of one second before the statement, by the node's clock. The test
    waits for the node's clock to move, and brackets the read with the node's times: if a stall of
    over a second between the update and the read left the answer open, it tries again."""
    for attempt in range(5):
        k = attempt * 10
        cur.execute("INSERT INTO hist VALUES (%s, 'old')", (k + 1,))
        inserted = _clt(cur)  # a later transaction: after the insert's commit
        before_update = _wait_clock_past(cur, inserted + Decimal("1.2") * SECOND)
        cur.execute("UPDATE hist SET v = 'new' WHERE k = %s", (k + 1,))
        cur.execute("INSERT INTO hist VALUES (%s, 'added')", (k + 2,))
        cur.execute("SELECT k, v FROM hist AS OF SYSTEM TIME '-1s' WHERE k > %s ORDER BY k", (k,))
        past = cur.fetchall()
        after_read = _clt(cur)
        if after_read - SECOND < before_update:  # the read's time was before the update, after the insert
            assert past == [(k + 1, "old")]
            break
    else:
        pytest.fail("every attempt stalled for over a second between the update and the read")
    _wait_clock_past(cur, after_read + Decimal("0.1") * SECOND)
    cur.execute("SELECT k, v FROM hist AS OF SYSTEM TIME '-0.1s' WHERE k > %s ORDER BY k", (k,))
    assert cur.fetchall() == [(k + 1, "new"), (k + 2, "added")]
    cur.execute("SELECT k, v FROM hist WHERE k > %s ORDER BY k", (k,))
    assert cur.fetchall() == [(k + 1, "new"), (k + 2, "added")]


def test_decimal_hlc_from_cluster_logical_timestamp(cur):
    cur.execute("INSERT INTO hist VALUES (1, 'first')")
    t1 = _clt(cur)  # a later transaction: its timestamp is after the insert's commit
    cur.execute("UPDATE hist SET v = 'second' WHERE k = 1")
    t2 = _clt(cur)
    cur.execute("DELETE FROM hist WHERE k = 1")
    assert isinstance(t1, Decimal) and t1 < t2
    cur.execute(f"SELECT v FROM hist AS OF SYSTEM TIME {t1}")
    assert cur.fetchall() == [("first",)]
    cur.execute(f"SELECT v FROM hist AS OF SYSTEM TIME '{t2}'")  # as a string, too
    assert cur.fetchall() == [("second",)]
    cur.execute("SELECT v FROM hist")
    assert cur.fetchall() == []


def test_timestamp_string(cur):
    cur.execute("INSERT INTO hist VALUES (1, 'then')")
    # now()::STRING keeps microseconds: a microsecond of the node's clock either side of it.
    _wait_clock_past(cur, _clt(cur) + MICROSECOND)
    cur.execute("SELECT now()::STRING")
    moment = cur.fetchone()[0]
    _wait_clock_past(cur, _clt(cur) + MICROSECOND)
    cur.execute("UPDATE hist SET v = 'now' WHERE k = 1")
    cur.execute(f"SELECT v FROM hist AS OF SYSTEM TIME '{moment}'")
    assert cur.fetchall() == [("then",)]


def test_begin_as_of_system_time_reads_old_and_refuses_writes(cur):
    cur.execute("INSERT INTO hist VALUES (1, 'a')")
    t = _clt(cur)
    cur.execute("UPDATE hist SET v = 'b' WHERE k = 1")
    cur.execute(f"BEGIN AS OF SYSTEM TIME {t}")
    cur.execute("SELECT v FROM hist WHERE k = 1")
    assert cur.fetchall() == [("a",)]
    cur.execute(f"SELECT v FROM hist AS OF SYSTEM TIME {t}")  # the transaction's own time: fine
    assert cur.fetchall() == [("a",)]
    _fails(cur, "UPDATE hist SET v = 'c' WHERE k = 1", "25006")
    cur.execute("ROLLBACK")
    cur.execute(f"BEGIN AS OF SYSTEM TIME {t}")
    _fails(cur, "INSERT INTO hist VALUES (9, 'x')", "25006")
    cur.execute("ROLLBACK")
    cur.execute("SELECT v FROM hist")
    assert cur.fetchall() == [("b",)]


def test_as_of_inside_a_transaction_must_match(cur):
    cur.execute("INSERT INTO hist VALUES (1, 'a')")
    t = _clt(cur)
    cur.execute("BEGIN")
    err = _fails(cur, f"SELECT v FROM hist AS OF SYSTEM TIME {t}", "0A000")
    assert "inconsistent AS OF SYSTEM TIME" in str(err)
    cur.execute("ROLLBACK")


def test_dropped_table_is_readable_in_the_past(cur):
    cur.execute("CREATE TABLE gone (k INT PRIMARY KEY)")
    cur.execute("INSERT INTO gone VALUES (1), (2)")
    t = _clt(cur)
    cur.execute("DROP TABLE gone")
    _fails(cur, "SELECT count(*) FROM gone", "42P01")
    cur.execute(f"SELECT count(*) FROM gone AS OF SYSTEM TIME {t}")
    assert cur.fetchall() == [(2,)]


def test_bad_as_of_values(cur):
    future = Decimal(time.time_ns() + 60 * 10**9)
    _fails(cur, f"SELECT * FROM hist AS OF SYSTEM TIME {future}", "22023")
    for bad in ("'not a time'", "'+10s'"):
        with pytest.raises(psycopg2.Error) as info:
            cur.execute(f"SELECT * FROM hist AS OF SYSTEM TIME {bad}")
        assert info.value.pgcode.startswith("22")
    cur.execute("SELECT 1")  # the connection is fine afterwards
    assert cur.fetchall() == [(1,)]


def test_as_of_through_the_extended_protocol(node, db, cur):
    import psycopg
    cur.execute("INSERT INTO hist VALUES (1, 'a')")
    t = _clt(cur)
    cur.execute("UPDATE hist SET v = 'b' WHERE k = 1")
    conninfo = " ".join(f"{k}={v}" for k, v in node.params(database=db).items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(f"SELECT v FROM hist AS OF SYSTEM TIME {t} WHERE k = %s", (1,)).fetchall()
        assert rows == [("a",)]
        assert conn.execute("SELECT v FROM hist WHERE k = %s", (1,)).fetchall() == [("b",)]
