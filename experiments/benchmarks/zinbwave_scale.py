"""Benchmark: ZINB-WaVE at atlas scale (issue 18, item 4), streamed and zinbsurf-style.

Data: ``simulate_zinb(n_cells, n_genes, K, mean_log_mu=-1, sd_log_mu=1.2)`` (three clusters in W,
about 30 % of the entries non-zero), stored as scipy CSR (float32) in a cache folder and
simulated once, in its own process, so the fits below are measured alone.

(a) Full fit, streamed: ``fit_zinbwave(Y_csr, K)`` with zinbwave's defaults otherwise
    (max_iter 25, tol 1e-4, ε = J): the counts stay sparse; blocks of about 4·10⁶ entries are made
    dense one at a time (``jaxfactor.factorization._zinb_stream``). One process: wall time (of which
    compiling, by JAX's monitoring spans), peak resident memory of that process (ru_maxrss,
    loading the counts included), outer iterations, the penalised log-likelihood trace (it must
    never decrease), and the canonical correlations of W with the simulated W.
    Targets: ≤ 30 min and ≤ 8 GB on this 2-core CPU.
(b) zinbsurf: ``fit_zinbwave(Y_csr, K, subsample=m)``: every parameter fitted on m random cells
    (topped up to cover every gene), then every cell's γ and W by the cell-wise block with the
    gene parameters fixed. Same measurements, plus its accuracy against (a): the relative
    difference of the two penalised log-likelihoods of all cells, and the canonical correlations
    of the two W.

There is no peer in this run (no ratio is printed): R zinbwave is not run at this size;
``zinbwave_speed.py`` compares the two side by side, in one run, at sizes where R finishes.
Threads are pinned (OMP/OpenBLAS/MKL_NUM_THREADS, PJRT_NPROC); the load average is printed before
each fit.

Run:  python experiments/benchmarks/zinbwave_scale.py [--cells 100000] [--genes 2000] [--k 10]
      [--subsample 10000] [--quick] [--threads 2] [--skip a,b]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--cells", type=int, default=100_000)
parser.add_argument("--genes", type=int, default=2000)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--subsample", type=int, default=10_000)
parser.add_argument("--quick", action="store_true", help="5000 cells x 500 genes, subsample 1000 (a smoke test)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--skip", default="", help="comma-separated parts to skip: a, b")
parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "jaxfactor_bench"))
parser.add_argument("--child", default="", help=argparse.SUPPRESS)
parser.add_argument("--out", default="", help=argparse.SUPPRESS)
args = parser.parse_args()
if args.quick:
    args.cells, args.genes, args.subsample = 5000, 500, 1000

from _bench import load_average, pin_threads  # noqa: E402

threads = pin_threads(args.threads)
os.environ.setdefault("CI", "1")  # no progress bars
stem = os.path.join(args.cache, f"zinb_{args.cells}x{args.genes}_k{args.k}_seed{args.seed}")


def simulate():
    import numpy as np
    import scipy.sparse as sp

    from jaxfactor.data._simulate_zinb import simulate_zinb

    sim = simulate_zinb(n_cells=args.cells, n_genes=args.genes, n_components=args.k, mean_log_mu=-1.0,
                        sd_log_mu=1.2, seed=args.seed)
    Y = sp.csr_matrix(np.asarray(sim.X, np.float32))
    keep_c, keep_g = Y.getnnz(axis=1) > 0, Y.getnnz(axis=0) > 0
    Y = Y[keep_c][:, keep_g]
    os.makedirs(args.cache, exist_ok=True)
    sp.save_npz(stem + ".tmp.npz", Y)
    np.save(stem + "_W.tmp.npy", np.asarray(sim.W)[keep_c])
    os.replace(stem + "_W.tmp.npy", stem + "_W.npy")
    os.replace(stem + ".tmp.npz", stem + ".npz")  # written last: its presence means both are complete


def fit(part: str):
    import resource
    import time

    import numpy as np
    import scipy.sparse as sp

    from jaxfactor._progress import timed
    from jaxfactor.factorization._zinb_fit import STREAM_ENTRIES, fit_zinbwave
    from jaxfactor.factorization._zinb_model import canonical_correlations

    Y = sp.load_npz(stem + ".npz")
    t0 = time.perf_counter()
    with timed() as t:
        res = fit_zinbwave(Y, args.k, seed=args.seed, subsample=args.subsample if part == "b" else None)
    wall = time.perf_counter() - t0
    np.save(args.out, res.W)
    cc = canonical_correlations(res.W, np.load(stem + "_W.npy"))
    print(json.dumps({"wall": wall, "compile": t.compile_seconds, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      "n_iter": res.n_iter, "converged": res.converged, "trace": res.trace.tolist(),
                      "pll": res.penalized_log_likelihood, "cc_truth": cc.tolist(),
                      "fitted_cells": None if res.subsample is None else int(res.subsample.size),
                      "streamed": Y.shape[0] * Y.shape[1] > STREAM_ENTRIES}))


if args.child == "simulate":
    simulate()
    sys.exit(0)
if args.child in ("a", "b"):
    fit(args.child)
    sys.exit(0)


def child(part: str, out: str = "") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", part, "--cells", str(args.cells), "--genes",
           str(args.genes), "--k", str(args.k), "--subsample", str(args.subsample), "--threads", str(args.threads),
           "--seed", str(args.seed), "--cache", args.cache, "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"part {part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if part != "simulate" else {}


print(f"ZINB-WaVE at scale: {args.cells} cells x {args.genes} genes, K = {args.k}; threads: {threads}")
if not os.path.exists(stem + ".npz"):
    print(f"simulating (once, cached in {args.cache}) ...", flush=True)
    child("simulate")
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

Y = sp.load_npz(stem + ".npz")
print(f"counts: {Y.shape[0]} x {Y.shape[1]} CSR, {Y.nnz} non-zeros ({Y.nnz / (Y.shape[0] * Y.shape[1]):.1%}), "
      f"{(Y.data.nbytes + Y.indices.nbytes + Y.indptr.nbytes) / 1e9:.2f} GB sparse vs {4 * Y.shape[0] * Y.shape[1] / 1e9:.2f} GB dense float32")
del Y

results, W = {}, {}
skip = {s.strip() for s in args.skip.split(",") if s.strip()}
with tempfile.TemporaryDirectory() as tmp:
    for part, name in (("a", "full fit"), ("b", f"zinbsurf, subsample={args.subsample}")):
        if part in skip:
            continue
        print(f"\n({part}) {name}: {load_average()}", flush=True)
        out = os.path.join(tmp, f"W_{part}.npy")
        r = results[part] = child(part, out)
        W[part] = np.load(out)
        trace = np.asarray(r["trace"])
        monotone = bool(np.all(np.diff(trace) >= -1e-5 * np.abs(trace[1:])))
        print(f"    {'streamed over blocks' if r['streamed'] else 'the whole matrix at once (below the streaming size)'}: "
              f"wall {r['wall']:.1f} s (compiling {r['compile']:.1f} s), peak memory {r['rss_gb']:.2f} GB, "
              f"{r['n_iter']} outer iterations, converged {r['converged']}"
              + (f", parameters fitted on {r['fitted_cells']} cells" if r["fitted_cells"] else ""))
        print(f"    PLL trace: {' '.join(f'{v:.6e}' for v in trace)}  (never decreasing: {monotone})")
        print(f"    canonical correlations of W with the simulated W: min {min(r['cc_truth']):.4f}, "
              f"median {np.median(r['cc_truth']):.4f}")
        if part == "a":
            print(f"    targets: <= 30 min {'met' if r['wall'] <= 1800 else 'NOT met'}, <= 8 GB "
                  f"{'met' if r['rss_gb'] <= 8 else 'NOT met'}, PLL never decreasing {'met' if monotone else 'NOT met'}")
        print(f"    {load_average()} (after)", flush=True)

if "a" in results and "b" in results:
    from jaxfactor.factorization._zinb_model import canonical_correlations  # noqa: E402

    a, b = results["a"], results["b"]
    cc = canonical_correlations(W["b"], W["a"])
    print(f"\nzinbsurf against the full fit: PLL of all cells {b['pll']:.6e} vs {a['pll']:.6e} "
          f"(relative difference {(b['pll'] - a['pll']) / abs(a['pll']):+.2e}); canonical correlations of the two W: "
          f"min {cc.min():.4f}, median {np.median(cc):.4f}; time {b['wall']:.1f} s vs {a['wall']:.1f} s "
          f"({a['wall'] / b['wall']:.1f}x faster), memory {b['rss_gb']:.2f} vs {a['rss_gb']:.2f} GB")
