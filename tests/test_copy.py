"""COPY ... FROM STDIN through the clients that use it: psycopg2 (copy_expert, copy_from),
psycopg 3 (cursor.copy), psql (\\copy), and the raw protocol (CopyFail, errors mid-COPY).

A COPY is atomic: an error anywhere (bad value, wrong column count, constraint violation,
CopyFail) leaves no row behind and the connection ready for the next statement.
"""
from __future__ import annotations

import io
import os
import subprocess
from decimal import Decimal

import psycopg
import psycopg2
import psycopg2.errors
import pytest
from wire_client import RawConnection, message, query

ROWS = [(1, "plain", Decimal("1.50")), (2, None, Decimal("-2")), (3, "tab\there", Decimal("0.001")),
        (4, "new\nline", None), (5, "back\\slash", Decimal("100")), (6, 'quote"comma,', Decimal("6")),
        (7, "ünïcødé ✓", Decimal("7.0"))]


@pytest.fixture
def table(node, db):
    node.sql("CREATE TABLE c (k INT PRIMARY KEY, s STRING, d DECIMAL, extra STRING DEFAULT 'dflt')", database=db)
    return db


def _rows(node, db):
    return node.sql("SELECT k, s, d FROM c ORDER BY k", database=db)


def _text_format(rows) -> str:
    def field(v):
        if v is None:
            return "\\N"
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return "".join("\t".join(field(v) for v in row) + "\n" for row in rows)


def _csv_format(rows, header=True) -> str:
    import csv
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["k", "s", "d"])
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def test_psycopg2_copy_expert_text(node, table):
    conn = node.connect(database=table)
    try:
        conn.cursor().copy_expert("COPY c (k, s, d) FROM STDIN", io.StringIO(_text_format(ROWS)))
    finally:
        conn.close()
    assert _rows(node, table) == ROWS
    assert node.sql("SELECT DISTINCT extra FROM c", database=table) == [("dflt",)]


def test_psycopg2_copy_expert_csv(node, table):
    conn = node.connect(database=table)
    try:
        cur = conn.cursor()
        cur.copy_expert("COPY c (k, s, d) FROM STDIN WITH CSV HEADER", io.StringIO(_csv_format(ROWS)))
        assert cur.rowcount == len(ROWS)
    finally:
        conn.close()
    # In CSV an empty unquoted field is NULL; the test data has no empty strings.
    assert _rows(node, table) == ROWS


def test_csv_quoted_empty_string_is_not_null(node, table):
    conn = node.connect(database=table)
    try:
        conn.cursor().copy_expert("COPY c (k, s) FROM STDIN WITH (FORMAT csv)", io.StringIO('1,""\n2,\n3,"multi\nline"\n'))
    finally:
        conn.close()
    assert node.sql("SELECT k, s FROM c ORDER BY k", database=table) == [(1, ""), (2, None), (3, "multi\nline")]


def test_psycopg2_copy_from(node, table):
    conn = node.connect(database=table)
    try:
        conn.cursor().copy_from(io.StringIO(_text_format(ROWS)), "c", columns=("k", "s", "d"))
    finally:
        conn.close()
    assert _rows(node, table) == ROWS


def test_psycopg3_copy_write_row(node, table):
    conninfo = " ".join(f"{k}={v}" for k, v in node.params(database=table).items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY c (k, s, d) FROM STDIN") as copy:
                for row in ROWS:
                    copy.write_row(row)
            assert cur.rowcount == len(ROWS)
            # Large volume in chunks that split records anywhere.
            with cur.copy("COPY c (k, s) FROM STDIN") as copy:
                data = "".join(f"{i}\tvalue {i}\n" for i in range(100, 20100)).encode()
                for start in range(0, len(data), 777):
                    copy.write(data[start:start + 777])
        assert conn.execute("SELECT count(*), sum(k) FROM c WHERE k >= 100").fetchone() == (20000, sum(range(100, 20100)))
    assert _rows(node, table)[:len(ROWS)] == ROWS


def test_copy_in_explicit_transaction(node, table):
    conn = node.connect(database=table, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO c (k) VALUES (100)")
        cur.copy_expert("COPY c (k, s, d) FROM STDIN", io.StringIO(_text_format(ROWS)))
        cur.execute("SELECT count(*) FROM c")
        assert cur.fetchone() == (len(ROWS) + 1,)
        conn.rollback()
    finally:
        conn.close()
    assert _rows(node, table) == []


@pytest.mark.parametrize("data,sqlstate", [
    ("1\tok\t1\n2\tbad\tnot-a-number\n", "22P02"),
    ("1\tok\t1\n2\ttoo few\n", "22P04"),
    ("1\tok\t1\n1\tdup\t2\n", "23505"),
    ("1\tok\t1\n2\tok\t99999999999999999999999999999999999999e999999999\n", "22003"),
    ("1\t\xff\t1\n", "22021"),
], ids=["bad-value", "column-count", "unique", "out-of-range", "bad-utf8"])
def test_error_mid_copy_rolls_back_and_connection_goes_on(node, table, data, sqlstate):
    conn = node.connect(database=table)
    try:
        cur = conn.cursor()
        payload = io.BytesIO(data.encode("latin-1") if "\xff" in data else data.encode())
        with pytest.raises(psycopg2.Error) as info:
            cur.copy_expert("COPY c (k, s, d) FROM STDIN", payload)
        assert info.value.pgcode == sqlstate
        cur.execute("SELECT count(*) FROM c")
        assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_copy_fail_from_client(node, table):
    conninfo = " ".join(f"{k}={v}" for k, v in node.params(database=table).items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(RuntimeError):
            with conn.cursor().copy("COPY c (k) FROM STDIN") as copy:
                copy.write_row((1,))
                raise RuntimeError("client gives up")  # psycopg sends CopyFail, then re-raises
        assert conn.execute("SELECT count(*) FROM c").fetchone() == (0,)


def test_raw_copy_protocol(node, table):
    conn = RawConnection(node.host, node.port, node.certs_dir)
    try:
        conn.login(database=table)
        conn.send(query("COPY c (k, s) FROM STDIN"))
        msgs = conn.read_until(b"G")
        assert msgs[-1][0] == b"G" and msgs[-1][1] == b"\x00\x00\x02\x00\x00\x00\x00"
        conn.send(message(b"d", b"1\tone\n2\t") + message(b"d", b"two\n") + message(b"H") + message(b"c"))
        msgs = conn.read_until()
        assert [t for t, _ in msgs] == [b"C", b"Z"] and msgs[0][1] == b"COPY 2\x00"
        # CopyFail: error 57014 with the client's reason, nothing inserted.
        conn.send(query("COPY c (k, s) FROM STDIN"))
        conn.read_until(b"G")
        conn.send(message(b"d", b"3\tthree\n") + message(b"f", b"changed my mind\x00"))
        msgs = conn.read_until()
        errs = conn.errors(msgs)
        assert errs[0]["C"] == "57014" and "changed my mind" in errs[0]["M"]
        # A message that does not belong in COPY ends it with a protocol violation.
        conn.send(query("COPY c (k, s) FROM STDIN"))
        conn.read_until(b"G")
        conn.send(message(b"d", b"4\tfour\n") + query("SELECT 1"))
        msgs = conn.read_until()
        assert conn.errors(msgs)[0]["C"] == "08P01"
        conn.send(query("SELECT k FROM c ORDER BY k"))
        assert [body[-1:] for t, body in conn.read_until() if t == b"D"] == [b"1", b"2"]
    finally:
        conn.close()


def test_copy_end_of_data_marker_and_header(node, table):
    conn = node.connect(database=table)
    try:
        conn.cursor().copy_expert("COPY c (k, s) FROM STDIN", io.StringIO("1\ta\n2\tb\n\\.\n"))
        conn.cursor().copy_expert("COPY c (k, s) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER '|')",
                                  io.StringIO("k|s\n3|c\n"))
    finally:
        conn.close()
    assert node.sql("SELECT k, s FROM c ORDER BY k", database=table) == [(1, "a"), (2, "b"), (3, "c")]


def test_psql_backslash_copy(node, table, tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text(_csv_format(ROWS))
    params = node.params()
    env = {**os.environ, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": params["sslrootcert"],
           "PGSSLCERT": params["sslcert"], "PGSSLKEY": params["sslkey"]}
    proc = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", node.host, "-p", str(node.port), "-U", "root",
                           "-d", table, "-c", f"\\copy c (k, s, d) FROM '{data}' WITH CSV HEADER"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"COPY {len(ROWS)}"
    assert _rows(node, table) == ROWS


def test_copy_errors_for_unsupported_forms(node, table):
    conn = node.connect(database=table)
    try:
        cur = conn.cursor()
        for statement, sqlstate in [("COPY c FROM '/etc/passwd'", "0A000"), ("COPY missing FROM STDIN", "42P01"),
                                    ("COPY c (nope) FROM STDIN", "42703")]:
            with pytest.raises(psycopg2.Error) as info:
                cur.copy_expert(statement, io.StringIO(""))
            assert info.value.pgcode == sqlstate, statement
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_unterminated_csv_quote_is_bounded(node, table):
    """A quoted CSV field that never closes would keep the record open forever: past 16 MiB the
    COPY fails with 54000 instead of buffering the whole stream."""
    conn = node.connect(database=table)
    try:
        data = io.StringIO('1,"never closed\n' + "more line\n" * (2 << 20))
        with pytest.raises(psycopg2.Error) as info:
            conn.cursor().copy_expert("COPY c (k, s) FROM STDIN WITH CSV", data)
        assert info.value.pgcode == "54000"
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM c")
        assert cur.fetchone() == (0,)
    finally:
        conn.close()
