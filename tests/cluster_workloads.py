"""Workloads for the cluster fault tests, each with its own checker: real psycopg2 clients spread
over the nodes, recording what they were told; after the faults a checker reads the data back and
says whether what the clients were told is consistent with it.

Outcomes. A write the server acknowledged is "acked"; one that failed with a definite error (40001,
23505, any other SQLSTATE but 40003) did not happen; one whose commit's outcome is unknown (40003,
or the connection lost while the commit or autocommit statement was in flight) is "maybe": it may
have taken effect or not, and the checkers accept both but nothing else. Why the connection matters:
a transaction whose connection broke before COMMIT was sent cannot have committed.

- `Bank`: accounts with client-computed balances (read both, write both) in SERIALIZABLE
  transactions with the 40001 retry loop, each transfer also inserting its id into a log table in the
  same transaction. Checked: the total never changes (also in every read-only snapshot taken during
  the run), every acked transfer is in the log, every logged transfer was acked or maybe, and the
  balances are exactly the initial ones plus the logged transfers - so no half transaction.
- `Register`: a few keys; reads, blind writes of unique values and CAS (UPDATE ... WHERE v = old)
  through different nodes, checked per key by tests/linearizability.py.
- `UniqueInserts`: every client inserts its own keys with a slot number that the clients of other
  nodes race for (a UNIQUE column) and a unique_rowid() default. Checked: every acked key present
  exactly once, nothing present that was never attempted, one row per slot and it is the acked one,
  unique_rowid() values distinct.

Clients stick to their node and reconnect when it goes away, so a dead node's clients just fail
until it is back; every queue here is bounded by the run's duration.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
from linearizability import CAS, READ, WRITE, CheckerBudgetExceeded, Op, check, describe_history

RETRYABLE = "40001"
AMBIGUOUS = "40003"


class Unknown(Exception):
    """The operation's outcome is not known (40003, or the connection broke during the commit)."""


class Failed(Exception):
    """The operation definitely did not take effect."""

    def __init__(self, why: str, code: str | None = None) -> None:
        super().__init__(why)
        self.code = code


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "pgcode", None)


def _connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and _code(exc) is None


class Client:
    """One client's connection to one node, reconnected on demand."""

    def __init__(self, cluster, node: int, database: str) -> None:
        self.cluster = cluster
        self.node = node
        self.database = database
        self.conn = None

    def cursor(self):
        if self.conn is None or self.conn.closed:
            try:
                self.conn = self.cluster.connect(self.node, self.database, autocommit=True)
            except psycopg2.Error as exc:
                self.conn = None
                raise Failed(f"connect: {exc}") from exc
        return self.conn.cursor()

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = None

    def transaction(self, body: Callable, retries: int = 50):
        """Run body(cursor) between BEGIN and COMMIT with the 40001 retry loop. Raises Failed or
        Unknown; returns body's result when the commit was acknowledged."""
        for _ in range(retries):
            cur = self.cursor()
            committing = False
            try:
                cur.execute("BEGIN")
                result = body(cur)
                committing = True
                cur.execute("COMMIT")
                return result
            except psycopg2.Error as exc:
                code = _code(exc)
                if code == AMBIGUOUS or (committing and _connection_error(exc)):
                    self.drop()
                    raise Unknown(str(exc)) from exc
                if _connection_error(exc):
                    self.drop()
                    raise Failed(f"connection lost before commit: {exc}") from exc
                try:
                    cur.execute("ROLLBACK")
                except psycopg2.Error:
                    self.drop()
                if code == RETRYABLE:
                    continue
                raise Failed(str(exc), code) from exc
        raise Failed(f"still 40001 after {retries} tries", RETRYABLE)

    def statement(self, sql: str, args: tuple = (), write: bool = True):
        """One autocommit statement; returns the cursor (for rowcount/fetch)."""
        cur = self.cursor()
        try:
            cur.execute(sql, args)
            return cur
        except psycopg2.Error as exc:
            code = _code(exc)
            if code == AMBIGUOUS or (write and _connection_error(exc)):
                self.drop()
                raise Unknown(str(exc)) from exc
            if _connection_error(exc):
                self.drop()
            raise Failed(str(exc), code) from exc


@dataclass
class Stats:
    acked: int = 0
    failed: int = 0
    unknown: int = 0
    errors: Counter = field(default_factory=Counter)
    acks_by_node: Counter = field(default_factory=Counter)
    # (monotonic completion time, node) of every acked write: for the availability gap.
    ack_times: list[tuple[float, int]] = field(default_factory=list)

    def failed_with(self, exc: Failed) -> None:
        self.failed += 1
        self.errors[(exc.code or str(exc).splitlines()[0][:60])] += 1


class Workload:
    """Clients per node in threads; `start()`, the test does its faults, `stop()`, `check()`."""

    name = "workload"
    database = "defaultdb"

    def __init__(self, cluster, clients_per_node: int = 2, seed: int = 0) -> None:
        self.cluster = cluster
        self.clients_per_node = clients_per_node
        self.seed = seed
        self.stats = Stats()
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads: list[threading.Thread] = []
        self.crashes: list[BaseException] = []

    def setup(self) -> None:
        raise NotImplementedError

    def operate(self, client: Client, client_id: int, rng: random.Random) -> None:
        raise NotImplementedError

    def check(self) -> list[str]:
        """The anomalies found (empty: consistent)."""
        raise NotImplementedError

    def _loop(self, client_id: int, node: int) -> None:
        client = Client(self.cluster, node, self.database)
        rng = random.Random(self.seed * 1000 + client_id)
        try:
            while not self.halt.is_set():
                try:
                    self.operate(client, client_id, rng)
                except Failed as exc:
                    with self.lock:
                        self.stats.failed_with(exc)
                    if exc.code is None:  # the node is away: do not spin
                        self.halt.wait(0.05)
        except BaseException as exc:  # a bug in the workload: reported by stop()
            self.crashes.append(exc)
        finally:
            client.drop()

    def start(self) -> None:
        self.setup()
        client_id = 0
        for node in range(1, self.cluster.n + 1):
            for _ in range(self.clients_per_node):
                t = threading.Thread(target=self._loop, args=(client_id, node), daemon=True,
                                     name=f"{self.name}-c{client_id}-n{node}")
                self.threads.append(t)
                t.start()
                client_id += 1

    def stop(self, timeout: float = 60.0) -> None:
        self.halt.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self.threads if t.is_alive()]
        assert not hung, f"{self.name}: clients still blocked {timeout:.0f} s after stop: {hung}"
        assert not self.crashes, f"{self.name}: a client crashed: {self.crashes[0]!r}"

    def acked(self, node: int) -> None:
        with self.lock:
            self.stats.acked += 1
            self.stats.acks_by_node[node] += 1
            self.stats.ack_times.append((time.monotonic(), node))

    def unknown(self) -> None:
        with self.lock:
            self.stats.unknown += 1

    def wait_acks(self, count: int, nodes: set[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until `count` more writes were acked (through `nodes` if given): progress is the
        condition the fault tests wait for, never a fixed time."""
        def done() -> int:
            with self.lock:
                if nodes is None:
                    return self.stats.acked
                return sum(self.stats.acks_by_node[n] for n in nodes)
        target = done() + count
        deadline = time.monotonic() + timeout
        while done() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: fewer than {count} acks through {nodes or 'any node'} "
                                     f"in {timeout:.0f} s; {self.stats}")
            if self.crashes:
                raise AssertionError(f"{self.name}: a client crashed: {self.crashes[0]!r}")
            time.sleep(0.01)

    def checker_node(self) -> int:
        """A node to read the final state through: a live, unpaused one."""
        for node in self.cluster.nodes:
            if node.alive and not node.stopped:
                return node.index
        raise AssertionError("no live node to check through")


# ---- bank --------------------------------------------------------------------------------------

class Bank(Workload):
    name = "bank"

    def __init__(self, cluster, accounts: int = 8, initial: int = 100, **kw) -> None:
        super().__init__(cluster, **kw)
        self.accounts = accounts
        self.initial = initial
        self.acked_ids: dict[str, tuple[int, int, int]] = {}
        self.maybe_ids: dict[str, tuple[int, int, int]] = {}
        self.bad_snapshots: list[tuple[int, int]] = []
        self.snapshots = 0

    def setup(self) -> None:
        self.cluster.sql(1, "DROP TABLE IF EXISTS accounts", "DROP TABLE IF EXISTS transfers",
                         "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)",
                         "CREATE TABLE transfers (id STRING PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, "
                         "amount INT NOT NULL)",
                         "INSERT INTO accounts VALUES " + ",".join(f"({a}, {self.initial})"
                                                                   for a in range(self.accounts)))

    def operate(self, client: Client, client_id: int, rng: random.Random) -> None:
        if rng.random() < 0.15:
            def total(cur):
                cur.execute("SELECT sum(balance), count(*) FROM accounts")
                return cur.fetchone()
            try:
                found = client.transaction(total)
            except Unknown:
                return  # a read-only transaction's outcome does not matter
            with self.lock:
                self.snapshots += 1
                if (int(found[0]), found[1]) != (self.initial * self.accounts, self.accounts):
                    self.bad_snapshots.append((int(found[0]), found[1]))
            return
        src, dst = rng.sample(range(self.accounts), 2)
        amount = rng.randint(1, 10)
        tid = f"c{client_id}-{rng.getrandbits(48):x}"

        def transfer(cur):
            cur.execute("SELECT id, balance FROM accounts WHERE id IN (%s, %s)", (src, dst))
            balances = dict(cur.fetchall())
            if balances[src] < amount:
                return False
            cur.execute("UPDATE accounts SET balance = %s WHERE id = %s", (balances[src] - amount, src))
            cur.execute("UPDATE accounts SET balance = %s WHERE id = %s", (balances[dst] + amount, dst))
            cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, src, dst, amount))
            return True
        try:
            moved = client.transaction(transfer)
        except Unknown:
            with self.lock:
                self.maybe_ids[tid] = (src, dst, amount)
            self.unknown()
            return
        if moved:
            with self.lock:
                self.acked_ids[tid] = (src, dst, amount)
            self.acked(client.node)

    def check(self) -> list[str]:
        node = self.checker_node()
        balances = dict(self.cluster.sql(node, "SELECT id, balance FROM accounts"))
        logged = {row[0]: tuple(row[1:]) for row in self.cluster.sql(node, "SELECT id, src, dst, amount "
                                                                            "FROM transfers")}
        anomalies = []
        if sum(balances.values()) != self.initial * self.accounts or len(balances) != self.accounts:
            anomalies.append(f"total {sum(balances.values())} over {len(balances)} accounts, "
                             f"expected {self.initial * self.accounts} over {self.accounts}")
        lost = sorted(set(self.acked_ids) - set(logged))
        if lost:
            anomalies.append(f"{len(lost)} acknowledged transfers lost, e.g. {lost[:5]}")
        invented = sorted(set(logged) - set(self.acked_ids) - set(self.maybe_ids))
        if invented:
            anomalies.append(f"{len(invented)} transfers in the log that no client was told of: {invented[:5]}")
        for tid, row in logged.items():
            told = self.acked_ids.get(tid) or self.maybe_ids.get(tid)
            if told is not None and told != row:
                anomalies.append(f"transfer {tid} logged as {row}, sent as {told}")
        expected = {a: self.initial for a in range(self.accounts)}
        for src, dst, amount in logged.values():
            expected[src] -= amount
            expected[dst] += amount
        if balances != expected:
            anomalies.append(f"balances {balances} are not the initial ones plus the logged transfers "
                             f"{expected}: a half-applied transaction")
        if self.bad_snapshots:
            anomalies.append(f"{len(self.bad_snapshots)} of {self.snapshots} snapshot reads saw a wrong "
                             f"total, e.g. {self.bad_snapshots[:3]}")
        if self.snapshots == 0:
            anomalies.append("no snapshot read completed (the check of totals during the run did not run)")
        return anomalies


# ---- register ----------------------------------------------------------------------------------

class Register(Workload):
    name = "register"

    def __init__(self, cluster, keys: int = 3, **kw) -> None:
        super().__init__(cluster, **kw)
        self.keys = keys
        self.history: dict[int, list[Op]] = defaultdict(list)
        self.last_seen: dict[int, int] = {}
        self.counter = 0

    def setup(self) -> None:
        self.cluster.sql(1, "DROP TABLE IF EXISTS reg", "CREATE TABLE reg (k INT PRIMARY KEY, v INT NOT NULL)",
                         "INSERT INTO reg VALUES " + ",".join(f"({k}, 0)" for k in range(self.keys)))

    def _next_value(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def operate(self, client: Client, client_id: int, rng: random.Random) -> None:
        key = rng.randrange(self.keys)
        roll = rng.random()
        clock = time.monotonic
        if roll < 0.5:
            invoke = clock()
            try:
                cur = client.statement("SELECT v FROM reg WHERE k = %s", (key,), write=False)
                row = cur.fetchone()
            except Failed:
                raise
            done = clock()
            value = row[0] if row else None
            with self.lock:
                self.history[key].append(Op(READ, invoke, done, value=value, client=client_id))
                if value is not None:
                    self.last_seen[client_id] = value
            return
        new = self._next_value()
        if roll < 0.75:
            sql, args, op = "UPDATE reg SET v = %s WHERE k = %s", (new, key), Op(WRITE, 0, 0, value=new)
        else:
            expect = self.last_seen.get(client_id, 0) if rng.random() < 0.8 else rng.randrange(self.counter + 1)
            sql, args = "UPDATE reg SET v = %s WHERE k = %s AND v = %s", (new, key, expect)
            op = Op(CAS, 0, 0, value=new, expect=expect)
        invoke = clock()
        try:
            cur = client.statement(sql, args)
        except Unknown:
            with self.lock:
                self.history[key].append(Op(op.kind, invoke, None, value=new, expect=op.expect,
                                            client=client_id))
            self.unknown()
            return
        done = clock()
        ok = cur.rowcount == 1
        if op.kind == WRITE and not ok:
            raise AssertionError(f"a blind write of key {key} touched {cur.rowcount} rows")
        with self.lock:
            self.history[key].append(Op(op.kind, invoke, done, value=new, expect=op.expect,
                                        ok=ok if op.kind == CAS else None, client=client_id))
        if ok:
            self.acked(client.node)

    def check(self) -> list[str]:
        anomalies = []
        node = self.checker_node()
        final = dict(self.cluster.sql(node, "SELECT k, v FROM reg"))
        for key in range(self.keys):
            # The final read is one more operation, after everything else.
            history = list(self.history[key])
            end = time.monotonic()
            history.append(Op(READ, end, end + 1e-6, value=final.get(key), client=-1))
            try:
                verdict = check(history, initial=0)
            except CheckerBudgetExceeded as exc:
                anomalies.append(f"key {key}: no verdict: {exc}")
                continue
            if not verdict.linearizable:
                anomalies.append(f"key {key}: not linearizable ({len(history)} ops). {verdict.explanation}\n"
                                 + describe_history(history)[-4000:])
        return anomalies


# ---- unique inserts ----------------------------------------------------------------------------

class UniqueInserts(Workload):
    name = "unique"

    def __init__(self, cluster, **kw) -> None:
        super().__init__(cluster, **kw)
        self.acked_keys: dict[str, int] = {}  # key -> slot
        self.maybe_keys: dict[str, int] = {}
        self.attempted: set[str] = set()
        self.sequence: Counter = Counter()
        self.unexpected: list[str] = []

    def setup(self) -> None:
        self.cluster.sql(1, "DROP TABLE IF EXISTS uniq",
                         "CREATE TABLE uniq (k STRING PRIMARY KEY, slot INT NOT NULL UNIQUE, "
                         "rid INT NOT NULL DEFAULT unique_rowid(), node INT NOT NULL)")

    def operate(self, client: Client, client_id: int, rng: random.Random) -> None:
        self.sequence[client_id] += 1
        seq = self.sequence[client_id]
        key = f"c{client_id}-{seq}"
        # Clients of every node race for the same slots: slot = the sequence number.
        slot = seq
        with self.lock:
            self.attempted.add(key)
        try:
            client.statement("INSERT INTO uniq (k, slot, node) VALUES (%s, %s, %s)", (key, slot, client.node))
        except Unknown:
            with self.lock:
                self.maybe_keys[key] = slot
            self.unknown()
            return
        except Failed as exc:
            if exc.code == "23505" and "uniq_pkey" in str(exc):
                with self.lock:
                    self.unexpected.append(f"{key}: primary key already present on first insert")
            raise
        with self.lock:
            self.acked_keys[key] = slot
        self.acked(client.node)

    def check(self) -> list[str]:
        node = self.checker_node()
        rows = self.cluster.sql(node, "SELECT k, slot, rid FROM uniq")
        anomalies = list(self.unexpected)
        keys = Counter(r[0] for r in rows)
        dup = [k for k, c in keys.items() if c > 1]
        if dup:
            anomalies.append(f"keys present more than once: {dup[:5]}")
        present = set(keys)
        lost = sorted(set(self.acked_keys) - present)
        if lost:
            anomalies.append(f"{len(lost)} of {len(self.acked_keys)} acknowledged inserts missing, e.g. {lost[:5]}")
        invented = sorted(present - self.attempted)
        if invented:
            anomalies.append(f"rows no client inserted: {invented[:5]}")
        phantom = sorted(present - set(self.acked_keys) - set(self.maybe_keys))
        if phantom:
            anomalies.append(f"{len(phantom)} rows whose insert failed definitely, e.g. {phantom[:5]}")
        slots = Counter(r[1] for r in rows)
        if any(c > 1 for c in slots.values()):
            anomalies.append(f"UNIQUE slot duplicated: {[s for s, c in slots.items() if c > 1][:5]}")
        acked_per_slot = Counter(self.acked_keys.values())
        if any(c > 1 for c in acked_per_slot.values()):
            anomalies.append(f"two inserts acked for one UNIQUE slot: "
                             f"{[s for s, c in acked_per_slot.items() if c > 1][:5]}")
        rids = Counter(r[2] for r in rows)
        if any(c > 1 for c in rids.values()):
            anomalies.append(f"unique_rowid() values repeated: {[r for r, c in rids.items() if c > 1][:5]}")
        # And the unique index agrees with the table: every slot found through it.
        by_index = self.cluster.sql(node, "SELECT count(*) FROM uniq WHERE slot > 0")[0][0]
        if by_index != len(rows):
            anomalies.append(f"{by_index} rows through the slot index, {len(rows)} in the table")
        return anomalies


WORKLOADS = {"bank": Bank, "register": Register, "unique": UniqueInserts}
