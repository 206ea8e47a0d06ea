"""The server's OpenBLAS setting (purchase_guard.blas), checked in a fresh interpreter: the
setting is process-wide, and this test process's own pools are left as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json
from purchase_guard.blas import blas_threads, single_threaded_blas
before = blas_threads()
limited = single_threaded_blas()
print(json.dumps({"before": before, "limited": limited, "after": blas_threads()}))
"""


def test_single_threaded_blas_sets_every_openblas_to_one_thread() -> None:
    """With OpenBLAS left to its default (one thread per core), numpy's and scipy's libraries are
    both found and each runs on one thread afterwards; the libraries limited are named."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert len(got["after"]) >= 2  # numpy's and scipy's own builds
    assert set(got["limited"]) == set(got["after"])
    assert set(got["after"].values()) == {1}
    if (os.cpu_count() or 1) > 1:
        assert max(got["before"].values()) > 1
