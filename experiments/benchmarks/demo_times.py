"""How long each shipped demo takes, as a user meets it: the first run (an empty compilation cache)
and the second (the cache filled by the first), whole commands in new processes (imports, data,
fitting, writing the outputs and figures), plus how fast a mistake answers (a missing config file, a
missing data file, an existing --out). Compile and fit seconds are read from each run's
metrics.json (``compile_seconds`` / ``run_seconds``) where the run writes them.

    python experiments/benchmarks/demo_times.py [--demos clones,demo.toml,...] [--threads 2] [--keep DIR]

Every command runs with ``CI=true`` (no progress output) and its own fresh cache folder. The load
average is printed before each run. No peers: this measures jaxfactor against itself. ``--keep DIR``
keeps every demo's output folder (its figures, tables and result) under DIR, to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import REPO, pin_threads  # noqa: E402

DEMOS = ["clones", "demo.toml", "cclone_demo.toml", "gmm_demo.toml", "ppca_demo.toml", "binomial_mixture_demo.toml",
         "allele_demo.toml", "vae_demo.toml", "zinbwave_demo.toml", "clones_demo.toml", "vae_h5ad.toml", "zinbwave_h5ad.toml"]


def _command(demo: str, out: str) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "jaxfactor")
    if demo == "clones":
        return [exe, "clones", "--demo", "--out", out, "--force"]
    return [exe, "run", os.path.join(REPO, "experiments", demo), "--out", out, "--force"]


def _run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, exit status, the last line it printed)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = (p.stderr or p.stdout).strip().splitlines()
    return time.perf_counter() - t0, p.returncode, lines[-1] if lines else ""


def _split(out: str) -> str:
    try:
        with open(os.path.join(out, "metrics.json")) as fh:
            m = json.load(fh)
        return f"{m['compile_seconds']:.1f} / {m['run_seconds']:.1f}"
    except (OSError, KeyError, ValueError):
        return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demos", default=",".join(DEMOS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR", help="keep each demo's output folder under DIR (created)")
    args = ap.parse_args()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    print(pin_threads(args.threads))
    work = tempfile.mkdtemp(prefix="demo_times_")
    env = {**os.environ, "CI": "true"}
    print(f"{'demo':<28} {'first (s)':>10} {'second (s)':>11} {'2nd compile/fit (s)':>20}  load")
    try:
        for demo in args.demos.split(","):
            cache = os.path.join(work, "cache_" + demo.replace(".", "_"))
            denv = {**env, "JAXFACTOR_CACHE_DIR": cache}
            out = os.path.join(args.keep or work, "out_" + demo.replace(".", "_"))
            load = os.getloadavg()[0]
            first, rc1, msg1 = _run(_command(demo, out), denv)
            second, rc2, msg2 = _run(_command(demo, out), denv)
            if rc1 or rc2:
                print(f"{demo:<28} failed (exit {rc1 or rc2}): {msg1 if rc1 else msg2}")
                continue
            print(f"{demo:<28} {first:>10.1f} {second:>11.1f} {_split(out):>20}  {load:.2f}", flush=True)
        exe = os.path.join(os.path.dirname(sys.executable), "jaxfactor")
        existing = os.path.join(work, "exists")
        os.makedirs(existing, exist_ok=True)
        mistakes = {"missing config file": [exe, "run", os.path.join(work, "nope.toml"), "--out", os.path.join(work, "m1")],
                    "missing data file": [exe, "run", os.path.join(REPO, "experiments", "nmf_file.toml"), "--set",
                                          "data.path=" + os.path.join(work, "nope.h5ad"), "--out", os.path.join(work, "m2")],
                    "existing --out": [exe, "run", os.path.join(REPO, "experiments", "demo.toml"), "--out", existing]}
        for name, cmd in mistakes.items():
            seconds, rc, msg = _run(cmd, env)
            print(f"{name:<28} {seconds:>10.2f} s, exit {rc}: {msg}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
