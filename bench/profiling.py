"""Where the Pillbug node spends its time during a workload: py-spy attached to the running node.

`Recording` attaches `py-spy record --pid` to the node for the length of a `with` block and writes
a speedscope file (open it at https://www.speedscope.app or with `speedscope FILE`). py-spy leaves
out samples in which the node's threads were idle, so the samples are the node's CPU time: their
count over the expected count is how busy the node was, and `summarize` ranks functions by self
time (the frame on top of the stack: the work done in that function itself, C calls included) and
by total time (the function anywhere on the stack).

Attaching needs ptrace rights over the node (root, or CAP_SYS_PTRACE, or ptrace_scope 0); when
py-spy cannot attach, `Recording` raises `ProfileError` with py-spy's own message.
This module knows nothing of workloads, servers or reports.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

ATTACH_TIMEOUT = 20.0
STOP_TIMEOUT = 60.0
DEFAULT_RATE = 200
# The ranking by total time is of the project's own functions: those are what a developer changes.
PROJECT_PREFIX = "pillbug/"


class ProfileError(RuntimeError):
    pass


def py_spy_command() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "py-spy")
    found = script if os.path.exists(script) else shutil.which("py-spy")
    if found is None:
        raise ProfileError("py-spy is not installed (pip install -e '.[bench]')")
    return found


class Recording:
    """py-spy recording process `pid` into `output` (speedscope JSON) while the block runs."""

    def __init__(self, pid: int, output: str, rate: int = DEFAULT_RATE) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.log_path = output + ".log"
        self.proc: subprocess.Popen | None = None
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Recording:
        os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
        log = open(self.log_path, "wb")
        # --nonblocking: py-spy reads the node's memory without stopping it. Stopping it would
        # slow it more and make threads blocked on a lock look busy; the price is a few stacks
        # read half-way through a change, which `summarize` sets aside.
        self.proc = subprocess.Popen(
            [py_spy_command(), "record", "--pid", str(self.pid), "--rate", str(self.rate),
             "--format", "speedscope", "--output", self.output, "--nonblocking"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while "Sampling process" not in self._log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise ProfileError(f"py-spy could not attach to pid {self.pid}: {self._log().strip()[-500:]}")
            time.sleep(0.05)
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.monotonic() - self._started
        self._stop()
        if exc_info[0] is None and not os.path.exists(self.output):
            raise ProfileError(f"py-spy wrote no profile: {self._log().strip()[-500:]}")

    def _stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@dataclass(frozen=True)
class HotSpot:
    function: str
    location: str
    percent: float  # of wall-clock time: the share of samples a thread could have given
    us_per_op: float | None  # the same time spread over the operations the workload did


@dataclass
class ProfileSummary:
    path: str
    samples: int
    seconds: float
    partial: int = 0  # stacks py-spy read half-way through a change (left out of the rankings)
    threads: list[tuple[str, float]] = field(default_factory=list)  # (thread, busy share of wall time)
    by_self: list[HotSpot] = field(default_factory=list)
    by_total: list[HotSpot] = field(default_factory=list)


def short_location(path: str) -> str:
    """A frame's file as a reader looks for it: inside the project or a package, not the venv."""
    at = path.find("/site-packages/")
    if at >= 0:
        return path[at + len("/site-packages/"):]
    at = path.rfind("/pillbug/")
    if at >= 0:
        return path[at + 1:]
    at = path.find("/lib/python3")
    if at >= 0:
        return path[at + len("/lib/python3"):].split("/", 1)[-1]
    return path


def _thread_name(profile: dict) -> str:
    name = profile.get("name", "?")
    quoted = name.split('"')
    return quoted[1] if len(quoted) >= 3 and quoted[1] else name


def summarize(path: str, rate: int, seconds: float, ops_per_second: float | None = None,
              top: int = 15) -> ProfileSummary:
    """Ranks the functions of a py-spy speedscope profile by self and by total time.

    Times are shares of the wall-clock time recorded (`rate` samples a second for `seconds`, per
    thread), and, given the workload's throughput, microseconds per operation. A stack that does
    not start where most of its thread's stacks start was read half-way through a change (py-spy
    does not stop the node): it counts towards the thread's busy time, and the thread's complete
    stacks are scaled up to stand for it in the rankings.
    """
    with open(path) as f:
        profile = json.load(f)
    frames = profile["shared"]["frames"]
    # A speedscope frame is a (function, file, line) where line is where it was when sampled;
    # hot spots are per function, so lines are merged.
    keys = [(frame["name"], short_location(frame.get("file") or "?")) for frame in frames]
    possible = max(1.0, rate * seconds)
    summary = ProfileSummary(path=path, samples=0, seconds=seconds)
    self_counts: Counter = Counter()
    total_counts: Counter = Counter()
    entry_frames: set = set()
    for thread in profile["profiles"]:
        stacks = [stack for stack in thread["samples"] if stack]
        if not stacks:
            continue
        summary.samples += len(stacks)
        summary.threads.append((_thread_name(thread), len(stacks) / possible))
        root = Counter(keys[stack[0]] for stack in stacks).most_common(1)[0][0]
        complete = [stack for stack in stacks if keys[stack[0]] == root]
        summary.partial += len(stacks) - len(complete)
        weight = len(stacks) / len(complete)
        on_stack: Counter = Counter()
        for stack in complete:
            self_counts[keys[stack[-1]]] += weight
            on_stack.update({keys[i] for i in stack})
        for key, n in on_stack.items():
            total_counts[key] += n * weight
            if n == len(complete):
                # On every stack of its thread (the event loop's entry): says nothing about where
                # time goes, so the ranking by total leaves it out.
                entry_frames.add(key)
    ops = ops_per_second * seconds if ops_per_second else 0.0

    def spot(key: tuple[str, str], count: float) -> HotSpot:
        return HotSpot(key[0], key[1], 100.0 * count / possible,
                       1e6 * count / rate / ops if ops else None)

    summary.by_self = [spot(k, n) for k, n in self_counts.most_common(top)]
    summary.by_total = [spot(k, n) for k, n in total_counts.most_common()
                        if k not in entry_frames and k[1].startswith(PROJECT_PREFIX)][:top]
    return summary
