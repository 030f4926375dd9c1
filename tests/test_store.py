"""The Store contract on the LMDB engine, and the kv layer's scripts.

Data-driven scripts under testdata/kv (see kvscript.py; PILLBUG_REWRITE=1 rewrites them) pin
MVCC reads, conditional commits, compaction and transactions step by step. The tests below them
cover what a script cannot: timestamps, watch, map growth, group commit and its durability.
"""
from __future__ import annotations

import glob
import os

import pytest
from kvscript import run_script

SCRIPTS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "testdata", "kv", "*.txt")))


@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.basename(p)[:-4] for p in SCRIPTS])
def test_script(path, tmp_path):
    run_script(path, str(tmp_path / "store"))
