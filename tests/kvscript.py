"""A data-driven runner for scripts against the Store contract and kv transactions.

Modelled on CockroachDB's `datadriven` files (pkg/storage/testdata/mvcc_histories): a script is
a list of commands, each followed by `----` and the output it must produce. Run the tests with
PILLBUG_REWRITE=1 to rewrite the expected outputs from what the code does now (then read the
diff before committing it).

Keys and values are written as Python string literals without quotes (`a`, `a\\x00`, `k1`).
Store commands:
  commit               input lines: `cmp K MOD`, `rcmp START END REV`, `put K V`, `del K`
  get K at=R           scan START END at=R [limit=N] [reverse]
  get_many K... at=R   each key's value and mod_revision, from one store call
  compact R            revision
  restart [recent=N]   close and reopen the store on its path (keeping N recent revisions in memory)
  dump                 every raw entry of the latest, history and revlog databases, decoded
                       (after a checkpoint: what waits in the write-ahead log goes into LMDB)

Each script runs on three engines, LMDB, LMDB behind the suspending test store
(storage/suspending.py: every read answers after a turn of the event loop, through
timeslice.await_) and etcd (storage/etcd, on a real etcd from etcd_proc.py), and on LMDB once more
with a checkpoint after every commit, so that its reads are answered once from the memtable and once
from LMDB; the output must be the same. On etcd the scripts see the store through Renumbered:
etcd's revisions are shared by every namespace of the test etcd and also count the engine's own
writes (x/gc, the tombstone GC), so the script's revision n is the n-th commit of the script, and
`dump` (LMDB's own databases) is skipped, and `commit T1 T2` sends the commits one after another
(etcd has no group batch; concurrent commits would win in network order). Every command
runs inside a greenlet driven by the loop (timeslice.run), as a statement's reads do in a node.
Transaction commands (T names a transaction):
  txn T [at=R]         get T K          scan T START END [limit=N] [reverse]
  get_many T K...      each key's value (own writes first), then the read set
  put T K V            del T K          savepoint T NAME      rollback-to T NAME
  commit T [T2 ...]    (several at once: their commits are queued together, one group batch)
"""
from __future__ import annotations

import asyncio
import bisect
import marshal
import os
import shlex
import struct
from dataclasses import dataclass, field

from pillbug.kv.txn import Txn
from pillbug.storage import lmdb_store
from pillbug.storage.etcd import EtcdStore
from pillbug.storage.lmdb_store import LMDBStore
from pillbug.storage.store import (
    CommitResult,
    CompactedError,
    Compare,
    KeyCompare,
    RangeCompare,
    Store,
    StoreLimits,
)
from pillbug.storage.suspending import SuspendingStore
from pillbug.util import timeslice
from pillbug.util.errors import PgError

REWRITE = os.environ.get("PILLBUG_REWRITE") == "1"


def key_bytes(text: str) -> bytes:
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


def show(raw: bytes | None) -> str:
    if raw is None:
        return "<none>"
    return repr(raw)[2:-1]


@dataclass
class Case:
    line: int
    command: str
    input: list[str]
    expected: str
    actual: str = ""


@dataclass
class Script:
    path: str
    preamble: list[str] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)


def parse(path: str) -> Script:
    with open(path) as f:
        lines = f.read().split("\n")
    script = Script(path)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if not script.cases:
                script.preamble.append(line)
            i += 1
            continue
        start = i
        command = line
        i += 1
        body = []
        while i < len(lines) and lines[i] != "----":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: command without ----"
        i += 1
        expected = []
        while i < len(lines) and lines[i] != "":
            expected.append(lines[i])
            i += 1
        script.cases.append(Case(start + 1, command, body, "\n".join(expected)))
    return script


def write(script: Script) -> None:
    out = []
    for case in script.cases:
        out.append(case.command)
        out.extend(case.input)
        out.append("----")
        if case.actual:
            out.append(case.actual)
        out.append("")
    with open(script.path, "w") as f:
        f.write("\n".join(script.preamble).rstrip("\n") + ("\n\n" if "".join(script.preamble).strip() else ""))
        f.write("\n".join(out))


ENGINES = ("lmdb", "suspending", "etcd")
_BEYOND = 1 << 62  # a script revision past its last commit: "as new as there is"


class Renumbered(Store):
    """An EtcdStore seen with the script's revisions: revision n is the etcd revision of the
    script's n-th commit, 0 the etcd revision when the script began. A view that translates
    numbers both ways; every read, commit and compaction is the etcd store's own."""

    def __init__(self, base: EtcdStore, revisions: list[int]) -> None:
        self.base = base
        self.revisions = revisions  # script revision -> etcd revision; shared across restarts

    def to_etcd(self, revision: int) -> int:
        return self.revisions[revision] if revision < len(self.revisions) else _BEYOND

    def to_etcd_mod(self, mod: int) -> int:
        return 0 if mod == 0 else self.to_etcd(mod)

    def from_etcd(self, revision: int) -> int:
        return 0 if revision == 0 else bisect.bisect_right(self.revisions, revision) - 1

    def _compacted(self, exc: CompactedError) -> CompactedError:
        return CompactedError(self.from_etcd(exc.revision), self.from_etcd(exc.compacted))

    def current_revision(self) -> int:
        return self.from_etcd(self.base.current_revision())

    def get(self, key: bytes, at: int) -> tuple[bytes | None, int]:
        try:
            value, mod = self.base.get(key, self.to_etcd(at))
        except CompactedError as exc:
            raise self._compacted(exc) from None
        return value, self.from_etcd(mod)

    def get_many(self, keys: list[bytes], at: int) -> list[tuple[bytes | None, int]]:
        try:
            found = self.base.get_many(keys, self.to_etcd(at))
        except CompactedError as exc:
            raise self._compacted(exc) from None
        return [(value, self.from_etcd(mod)) for value, mod in found]

    def scan(self, start: bytes, end: bytes, at: int, limit: int = 0,
             reverse: bool = False) -> list[tuple[bytes, bytes, int]]:
        try:
            rows = self.base.scan(start, end, self.to_etcd(at), limit, reverse)
        except CompactedError as exc:
            raise self._compacted(exc) from None
        return [(k, v, self.from_etcd(m)) for k, v, m in rows]

    @property
    def limits(self) -> StoreLimits:
        return self.base.limits

    async def commit(self, compares: list[Compare], writes: list[tuple[bytes, bytes | None]],
                     held_locks=None) -> CommitResult:
        etcd_compares = [KeyCompare(c.key, self.to_etcd_mod(c.mod_revision)) if isinstance(c, KeyCompare)
                         else RangeCompare(c.start, c.end, self.to_etcd(c.revision)) for c in compares]
        result = await self.base.commit(etcd_compares, writes, held_locks)
        if result.succeeded:
            self.revisions.append(result.revision)
            return CommitResult(len(self.revisions) - 1)
        failed = compares[etcd_compares.index(result.failed)] if result.failed in etcd_compares else result.failed
        return CommitResult(0, failed, result.conflict_key)

    async def compact(self, revision: int) -> None:
        await self.base.compact(self.to_etcd(revision))

    def compacted_revision(self) -> int:
        return self.from_etcd(self.base.compacted_revision())

    def revision_timestamp(self, revision: int) -> int:
        return self.base.revision_timestamp(self.to_etcd(revision))

    def revision_at(self, timestamp: int) -> int:
        return self.from_etcd(self.base.revision_at(timestamp))

    def watch(self, prefix: bytes, from_revision: int):  # noqa: ANN201 - not used by scripts
        raise NotImplementedError("scripts do not watch")

    def now(self) -> int:
        return self.base.now()

    async def close(self) -> None:
        await self.base.close()


class Runner:
    def __init__(self, directory: str, checkpoint_every_commit: bool = False, engine: str = "lmdb",
                 etcd_endpoints: list[str] | None = None, namespace: bytes = b"") -> None:
        assert engine in ENGINES, engine
        self.directory = directory
        self.checkpoint_every_commit = checkpoint_every_commit
        self.engine = engine
        self.etcd_endpoints = etcd_endpoints
        self.namespace = namespace
        self.revisions: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.lmdb, self.store = self.loop.run_until_complete(self._open()) if engine == "etcd" else self._open()
        self.txns: dict[str, Txn] = {}
        self.savepoints: dict[tuple[str, str], int] = {}

    async def _open_etcd(self) -> tuple[None, Store]:
        assert self.etcd_endpoints, "the etcd engine needs etcd_endpoints"
        base = await EtcdStore.open(self.etcd_endpoints, namespace=self.namespace)
        if not self.revisions:
            self.revisions.append(base.cached_revision())
        return None, Renumbered(base, self.revisions)

    def _open(self):  # noqa: ANN202 - a pair, or its coroutine on etcd
        if self.engine == "etcd":
            return self._open_etcd()
        lmdb = LMDBStore(self.directory)
        # Seeded delays of up to 1 ms: reads of one script answer in a different order than asked.
        store = SuspendingStore(lmdb, max_delay_ms=1, seed=1) if self.engine == "suspending" else lmdb
        return lmdb, store

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()

    def _wait(self, awaitable):
        """Inside a command (a greenlet): wait for awaitable while the loop runs."""
        return timeslice.await_(awaitable)

    def run(self, case: Case) -> str:
        return self.loop.run_until_complete(timeslice.run(self._run, case))

    def _run(self, case: Case) -> str:
        words = shlex.split(case.command, posix=False)
        name, args = words[0], words[1:]
        options = {}
        positional = []
        for arg in args:
            if "=" in arg and arg.split("=", 1)[0] in ("at", "limit", "recent"):
                k, v = arg.split("=", 1)
                options[k] = int(v)
            else:
                positional.append(arg)
        try:
            return getattr(self, "cmd_" + name.replace("-", "_"))(positional, options, case.input)
        except PgError as exc:
            return f"error {exc.code}: {exc.message}"
        except CompactedError as exc:
            return f"compacted: {exc}"

    # ---- store commands --------------------------------------------------------------------

    def cmd_commit(self, args: list[str], opts: dict, body: list[str]) -> str:
        if args:
            return self._commit_txns(args)
        compares: list = []
        writes: list = []
        for line in body:
            op, *rest = line.split()
            if op == "cmp":
                compares.append(KeyCompare(key_bytes(rest[0]), int(rest[1])))
            elif op == "rcmp":
                compares.append(RangeCompare(key_bytes(rest[0]), key_bytes(rest[1]), int(rest[2])))
            elif op == "put":
                writes.append((key_bytes(rest[0]), key_bytes(rest[1])))
            elif op == "del":
                writes.append((key_bytes(rest[0]), None))
            else:
                raise AssertionError(f"unknown commit line {line!r}")
        result = self._wait(self.store.commit(compares, writes))
        self._after_commit()
        if result.succeeded:
            return f"r{result.revision}"
        return f"failed: {_show_compare(result.failed)} (changed: {show(result.conflict_key)})"

    def cmd_get(self, args: list[str], opts: dict, body: list[str]) -> str:
        if len(args) == 2:
            txn = self.txns[args[0]]
            return show(txn.get(key_bytes(args[1])))
        value, mod = self.store.get(key_bytes(args[0]), opts["at"])
        return f"{show(value)} @{mod}"

    def cmd_get_many(self, args: list[str], opts: dict, body: list[str]) -> str:
        if "at" not in opts:
            txn = self.txns[args[0]]
            keys = [key_bytes(a) for a in args[1:]]
            values = txn.get_many(keys)
            reads = " ".join(f"{show(k)}@{m}" for k, m in sorted(txn.reads.items()))
            return "\n".join([f"{show(k)}={show(v)}" for k, v in zip(keys, values)] + [f"reads: {reads}"])
        keys = [key_bytes(a) for a in args]
        found = self.store.get_many(keys, opts["at"])
        assert found == [self.store.get(k, opts["at"]) for k in keys], "get_many disagrees with get"
        return "\n".join(f"{show(k)}={show(v)} @{m}" for k, (v, m) in zip(keys, found))

    def cmd_scan(self, args: list[str], opts: dict, body: list[str]) -> str:
        reverse = "reverse" in args
        args = [a for a in args if a != "reverse"]
        limit = opts.get("limit", 0)
        if len(args) == 3:
            txn = self.txns[args[0]]
            rows = list(txn.scan(key_bytes(args[1]), key_bytes(args[2]), limit=limit, reverse=reverse))
            spans = " ".join(f"[{show(s)},{show(e)})" for s, e in txn.spans)
            return "\n".join([f"{show(k)}={show(v)}" for k, v in rows] + [f"spans: {spans}"])
        rows = self.store.scan(key_bytes(args[0]), key_bytes(args[1]), opts["at"], limit, reverse)
        return "\n".join(f"{show(k)}={show(v)} @{m}" for k, v, m in rows) or "<empty>"

    def cmd_compact(self, args: list[str], opts: dict, body: list[str]) -> str:
        self._wait(self.store.compact(int(args[0])))
        return f"compacted at r{self.store.compacted_revision()}"

    def cmd_revision(self, args: list[str], opts: dict, body: list[str]) -> str:
        return f"r{self.store.current_revision()}"

    def cmd_restart(self, args: list[str], opts: dict, body: list[str]) -> str:
        self._wait(self.store.close())
        if self.engine == "etcd":
            self.lmdb, self.store = self._wait(self._open())
            return f"reopened at r{self.store.current_revision()}, compacted at r{self.store.compacted_revision()}"
        default = lmdb_store._RECENT_REVISIONS
        lmdb_store._RECENT_REVISIONS = opts.get("recent", default)
        try:
            self.lmdb, self.store = self._open()
        finally:
            lmdb_store._RECENT_REVISIONS = default
        return f"reopened at r{self.store.current_revision()}, compacted at r{self.store.compacted_revision()}"

    def _after_commit(self) -> None:
        if self.checkpoint_every_commit and self.lmdb is not None:
            self._wait(self.lmdb.checkpoint())

    def cmd_dump(self, args: list[str], opts: dict, body: list[str]) -> str:
        store = self.lmdb
        self._wait(store.checkpoint())
        out = []
        u64 = struct.Struct(">Q")
        with store._env.begin() as txn:
            for key, raw in txn.cursor(db=store._latest):
                mod = u64.unpack_from(raw)[0]
                kind = "tombstone" if raw[8] == 1 else show(raw[9:])
                out.append(f"latest  {show(key)} @{mod} {kind}")
            for hkey, raw in txn.cursor(db=store._history):
                body_, rev = hkey[:-8], lmdb_store._MAX_U64 - u64.unpack_from(hkey, len(hkey) - 8)[0]
                key = body_[:-2].replace(b"\x00\xff", b"\x00")
                kind = "tombstone" if raw[0] == 1 else show(raw[1:])
                out.append(f"history {show(key)} @{rev} {kind}")
            for rkey, raw in txn.cursor(db=store._revlog):
                keys = marshal.loads(raw[lmdb_store._STAMP_BYTES:])
                out.append(f"revlog  r{u64.unpack(rkey)[0]} {' '.join(show(k) for k in keys)}".rstrip())
        return "\n".join(out) or "<empty>"

    # ---- transaction commands --------------------------------------------------------------

    def cmd_txn(self, args: list[str], opts: dict, body: list[str]) -> str:
        at = opts.get("at")
        txn = Txn(self.store, at, is_read_only_snapshot=at is not None)
        self.txns[args[0]] = txn
        return f"{args[0]} reads at r{txn.read_revision}"

    def cmd_put(self, args: list[str], opts: dict, body: list[str]) -> str:
        self.txns[args[0]].put(key_bytes(args[1]), key_bytes(args[2]))
        return "ok"

    def cmd_del(self, args: list[str], opts: dict, body: list[str]) -> str:
        self.txns[args[0]].delete(key_bytes(args[1]))
        return "ok"

    def cmd_savepoint(self, args: list[str], opts: dict, body: list[str]) -> str:
        self.savepoints[(args[0], args[1])] = self.txns[args[0]].savepoint()
        return "ok"

    def cmd_rollback_to(self, args: list[str], opts: dict, body: list[str]) -> str:
        self.txns[args[0]].rollback_to(self.savepoints[(args[0], args[1])])
        return "ok"

    def _commit_txns(self, names: list[str]) -> str:
        async def commit_all() -> list:
            if self.engine == "etcd":
                # etcd has no group batch: commits sent together race over the network, and the one
                # etcd applies first wins. Sent one after the other, they win in the script's order.
                outcomes = []
                for n in names:
                    try:
                        outcomes.append(await self.txns[n].commit())
                    except Exception as exc:  # noqa: BLE001 - reported like gather's
                        outcomes.append(exc)
                return outcomes
            return await asyncio.gather(*(self.txns[n].commit() for n in names), return_exceptions=True)
        outcomes = self._wait(commit_all())
        self._after_commit()
        lines = []
        for name, outcome in zip(names, outcomes):
            if isinstance(outcome, PgError):
                changed = show(self.txns[name].conflict_key)
                lines.append(f"{name}: error {outcome.code} (changed: {changed})")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                lines.append(f"{name}: committed at r{outcome}")
        return "\n".join(lines)


def _show_compare(compare: object) -> str:
    if isinstance(compare, KeyCompare):
        return f"cmp {show(compare.key)} {compare.mod_revision}"
    assert isinstance(compare, RangeCompare)
    return f"rcmp {show(compare.start)} {show(compare.end)} {compare.revision}"


def run_script(path: str, directory: str, checkpoint_every_commit: bool = False,
               engine: str = "lmdb", etcd_endpoints: list[str] | None = None, namespace: bytes = b"") -> None:
    script = parse(path)
    runner = Runner(directory, checkpoint_every_commit, engine, etcd_endpoints, namespace)
    failures = []
    try:
        for case in script.cases:
            if engine == "etcd" and case.command.split()[0] == "dump":
                continue  # LMDB's own databases
            case.actual = runner.run(case)
            if case.actual != case.expected:
                failures.append(f"{os.path.basename(path)}:{case.line}: {case.command}\n"
                                f"expected:\n{case.expected}\nactual:\n{case.actual}\n")
    finally:
        runner.close()
    if REWRITE and not checkpoint_every_commit and engine == "lmdb":
        write(script)
        return
    assert not failures, "\n".join(failures)
