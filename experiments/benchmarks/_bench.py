"""Shared pieces of the benchmark scripts: thread pinning and timing.

``pin_threads`` must run before numpy, scipy or jax is imported: OpenBLAS/MKL/OpenMP read their
thread counts, and XLA:CPU its intra-op pool size (``PJRT_NPROC`` in jax 0.10), when they load.
"""

from __future__ import annotations

import os
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PJRT_NPROC")
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def pin_threads(n: int) -> str:
    """Pin every runtime to ``n`` threads, force the CPU backend, make the repo importable;
    returns the settings as a printable string."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    return " ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS)


def timed(fn, repeats: int):
    """(first-call seconds, median of ``repeats`` further calls, last result)."""
    import numpy as np

    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), out


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for printing before a timing."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def r_package_version(rscript: str, package: str, env: dict | None = None, timeout: float = 120.0) -> str | None:
    """The installed version of R ``package`` as ``rscript`` sees it, or None when ``rscript`` is
    missing or cannot load the package (a benchmark then says so and prints no ratio)."""
    import shutil
    import subprocess

    exe = shutil.which(rscript)
    if exe is None:
        return None
    code = f'suppressPackageStartupMessages(library({package})); cat(as.character(packageVersion("{package}")))'
    try:
        out = subprocess.run([exe, "-e", code], capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
