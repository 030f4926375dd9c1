"""`python -m bench.managed`: how long `pillbug cluster create` takes until its confirmation is
printed (issue 11's target: 3 regions x 1 node in under 15 s on this machine).

Each run creates a cluster in a fresh temporary folder, as a user would, and times the whole command
from exec to exit: the confirmation is the last thing it prints, after every node is ready, the
admin user and the allowlist are set and the global host sees every region's balancer up. Then
`pillbug cluster delete` (not timed). Besides the wall time of each run, the phases the command
reports are not split out: the figure is the user's wait. Output: a markdown section for
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PILLBUG = os.path.join(os.path.dirname(sys.executable), "pillbug")


def one_run(regions: list[str], nodes_per_region: int) -> float:
    directory = tempfile.mkdtemp(prefix="pillbug-bench-managed-")
    target = os.path.join(directory, "c")
    try:
        for _ in range(3):
            port, http_port = random.randrange(21000, 25000), random.randrange(50000, 60000)
            started = time.monotonic()
            proc = subprocess.run([PILLBUG, "cluster", "create", f"--dir={target}", f"--regions={','.join(regions)}",
                                   f"--nodes-per-region={nodes_per_region}", f"--port={port}",
                                   f"--http-port={http_port}"], capture_output=True, text=True, timeout=300)
            elapsed = time.monotonic() - started
            if proc.returncode == 0:
                return elapsed
            if "is in use" not in proc.stderr:
                raise SystemExit(f"pillbug cluster create failed:\n{proc.stdout}{proc.stderr}")
        raise SystemExit("no free ports after 3 tries")
    finally:
        subprocess.run([PILLBUG, "cluster", "delete", f"--dir={target}"], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.managed", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--regions", default="us-east1,us-west1,europe-west1")
    p.add_argument("--nodes-per-region", type=int, default=1)
    args = p.parse_args(argv)
    regions = args.regions.split(",")
    times = []
    for i in range(args.runs):
        times.append(one_run(regions, args.nodes_per_region))
        print(f"run {i + 1}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — `pillbug cluster create`, "
          f"{len(regions)} regions x {args.nodes_per_region} node(s), commit {commit or '?'}\n")
    print("| runs | min | median | max | target |\n| --- | --- | --- | --- | --- |")
    print(f"| {len(times)} | {min(times):.2f} s | {statistics.median(times):.2f} s | {max(times):.2f} s | < 15 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
