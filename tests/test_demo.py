"""`pillbug demo --nodes 3` end to end: three `pillbug start` nodes, init, the printed URLs work on
every node, a write on one node is read on another, and SIGTERM stops every node and its etcd
member.

Needs cluster mode in server/node.py (a `pillbug start` node that runs its etcd member and serves
SQL once `pillbug init` has run).
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading

import psycopg2
import pytest
from conftest import PILLBUG, listening, run_cli, wait_for
from etcd_cluster import port_free

from pillbug.server.etcd_member import ETCD_BINARY

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BINARY),
                                reason="etcd is not installed (make install installs Debian's etcd-server)")


def _free_run(n: int, offsets: tuple[int, ...]) -> int:
    for _ in range(200):
        base = random.randrange(20000, 25000)
        if all(port_free("127.0.0.1", base + i + off) for i in range(n) for off in offsets):
            return base
    raise AssertionError("no free ports")


def test_demo_three_nodes(tmp_path) -> None:
    sql_base = _free_run(3, (0, 10000, 20000))
    http_base = _free_run(3, (0,))
    proc = subprocess.Popen([PILLBUG, "demo", "--nodes=3", f"--dir={tmp_path}", f"--sql-port={sql_base}",
                             f"--http-port={http_base}", "--timeout=90"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Press Ctrl-C" in line for line in lines) or proc.poll() is not None,
                 "the demo's banner", timeout=120, every=0.1)
        banner = "".join(lines)
        assert proc.poll() is None, banner
        urls = dict(re.findall(r"#   node (\d): (postgresql://\S+)", banner))
        assert sorted(urls) == ["1", "2", "3"], banner
        assert f"pillbug sql --url '{urls['1']}'" in banner
        for i, url in urls.items():
            assert f"127.0.0.1:{sql_base + int(i) - 1}/" in url and url.startswith("postgresql://demo:")
        with psycopg2.connect(urls["1"]) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE demo_t (k INT PRIMARY KEY, v STRING)")
                cur.execute("INSERT INTO demo_t VALUES (1, 'from node 1')")
        with psycopg2.connect(urls["3"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM demo_t WHERE k = 1")
            assert cur.fetchall() == [("from node 1",)]
        out = run_cli("sql", "--url", urls["2"], "-e", "SELECT count(*) FROM demo_t")
        assert out.stdout.split() == ["count", "1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        # every node and every member is gone: nothing listens on their ports (a bind could still
        # fail for a minute, on connections the servers closed, in TIME_WAIT)
        wait_for(lambda: not any(listening("127.0.0.1", sql_base + i + off) for i in range(3)
                                 for off in (0, 10000, 20000)), "the nodes and members to stop", timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)  # its nodes die with it (PR_SET_PDEATHSIG), and their members with them
