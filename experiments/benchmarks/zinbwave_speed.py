"""Benchmark: ZINB-WaVE in jaxfactor and in the R package (Bioconductor ``zinbwave``, Risso et al.
2018) on the same counts, side by side in one run.

Method. For every size (``--sizes``, default 500 and 2000 cells x 1000 genes) and K (``--ks``,
default 2 and 10), counts are drawn once from the model (``jaxfactor.zinbwave.simulate``, seed
``--seed``; all-zero cells and genes dropped) and written to a temporary folder.

- R: ``Rscript`` runs a script this benchmark writes: ``zinbFit(Y, K = K, BPPARAM =
  BiocParallel::SerialParam())``, every other argument at zinbFit's default (common dispersion,
  zero inflation, ε = J, at most 25 outer iterations, stop when the relative change of the
  penalised log-likelihood (PLL) is below 1e-4), timed inside R around ``zinbFit`` only (elapsed
  seconds); it then exports W, α, β, γ, ζ, the penalties it used and its own PLL
  (``loglik - penalty``).
- jaxfactor: ``jaxfactor.zinbwave.fit_counts(Y, K, common_dispersion=True)`` (the same model and
  stopping rule, float32): a first call, whose compilation (or persistent-cache load) time is
  taken from JAX's monitoring events and reported apart, then the median of ``--repeats`` warm
  calls.

Both fits are scored by the same code: jaxfactor's ``penalized_log_likelihood`` in float64 with
zinbwave's default penalties (checked against those R's model used; R's own PLL of its fit is
printed beside it as a check of the parameter mapping), and the subspaces of the two W are
compared by canonical correlations (centred; QR of each, singular values of Q1ᵀQ2).

Threads: pinned before numpy/jax load. R runs single-threaded (``SerialParam``; its BLAS, printed,
sees the same OMP/OPENBLAS/MKL settings); jaxfactor's XLA pool and BLAS get ``--threads``
(default 1, the same as R). Load averages are printed before every timing: other processes on
these cores slow both sides.

A ratio (R seconds / jaxfactor warm seconds) is printed only for rows where both sides ran here,
in this process tree. Without ``Rscript`` and zinbwave the script says how to build them and exits
0 without a ratio.

Targets (issue 18): ratio >= 20, PLL(jaxfactor) >= PLL(R) - 1e-4 |PLL(R)|, every canonical
correlation >= 0.99.

Run:  python experiments/benchmarks/zinbwave_speed.py [--sizes 500x1000,2000x1000 --ks 2,10
      --threads 1 --repeats 3 --quick (500 x 1000 only) --rscript Rscript]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

TARGET_RATIO, TARGET_REL_PLL, TARGET_CC = 20.0, -1e-4, 0.99

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sizes", default="500x1000,2000x1000", help="comma-separated CELLSxGENES")
parser.add_argument("--ks", default="2,10", help="comma-separated numbers of factors")
parser.add_argument("--quick", action="store_true", help="only 500 cells x 1000 genes")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=3, help="warm jaxfactor fits per row (median)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--rscript", default="Rscript", help="the Rscript to run zinbwave with")
parser.add_argument("--r-timeout", type=float, default=3600.0, help="seconds before one R fit is abandoned")
parser.add_argument("--keep", default=None, help="keep the counts and R's fits under this folder (default: a temporary one)")
args = parser.parse_args()

from _bench import REPO, load_average, pin_threads, r_package_version  # noqa: E402

threads = pin_threads(args.threads)
r_version = r_package_version(args.rscript, "zinbwave")
if r_version is None:
    build = os.path.relpath(os.path.join(REPO, "..", "shared", "peers", "build_r_zinbwave.sh"))
    print(f"R peer missing: `{args.rscript}` with the Bioconductor package zinbwave was not found, so nothing was "
          "timed and no ratio is printed.\nBuild it (Debian R, Bioconductor packages and the zinbwave 1.25.2 "
          f"sources; a few minutes, needs root):\n    bash {build}\n"
          "then check with `Rscript -e 'library(zinbwave)'` and run this benchmark again.")
    sys.exit(0)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxfactor import zinbwave as zw  # noqa: E402
from jaxfactor._progress import timed as jax_timed  # noqa: E402

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]; K <- as.integer(args[[2]]); n <- as.integer(args[[3]]); J <- as.integer(args[[4]])
set.seed(as.integer(args[[5]]))
suppressPackageStartupMessages({library(zinbwave); library(BiocParallel)})
Y <- matrix(readBin(file.path(dir, "counts.f64"), "double", n * J), nrow = J, ncol = n)  # genes x cells
t0 <- proc.time()[["elapsed"]]
fit <- zinbFit(Y, K = K, BPPARAM = BiocParallel::SerialParam())
seconds <- proc.time()[["elapsed"]] - t0
put <- function(name, x) {
  x <- as.matrix(x)
  writeBin(as.double(x), file.path(dir, paste0("r_", name, ".f64")))
  cat(name, nrow(x), ncol(x), "\n", file = file.path(dir, "r_shapes.txt"), append = TRUE)
}
put("W", getW(fit)); put("alpha_mu", getAlpha_mu(fit)); put("alpha_pi", getAlpha_pi(fit))
put("beta_mu", getBeta_mu(fit)); put("beta_pi", getBeta_pi(fit))
put("gamma_mu", getGamma_mu(fit)); put("gamma_pi", getGamma_pi(fit)); put("zeta", getZeta(fit))
put("eps_beta_mu", getEpsilon_beta_mu(fit)); put("eps_beta_pi", getEpsilon_beta_pi(fit))
put("eps_gamma_mu", getEpsilon_gamma_mu(fit)); put("eps_gamma_pi", getEpsilon_gamma_pi(fit))
put("eps_W", getEpsilon_W(fit)); put("eps_alpha", getEpsilon_alpha(fit)); put("eps_zeta", getEpsilon_zeta(fit))
put("pll", loglik(fit, t(Y)) - penalty(fit))
put("seconds", seconds)
cat("R", R.version$major, R.version$minor, "| BLAS", extSoftVersion()[["BLAS"]], "\n")
"""


def parse_sizes(text):
    out = []
    for part in text.split(","):
        n, J = part.lower().split("x")
        out.append((int(n), int(J)))
    return out


def simulate(n, J, K, seed):
    sim = zw.simulate(n, J, K, seed=seed)
    Y = sim.X
    rows, cols = Y.sum(axis=1) > 0, Y.sum(axis=0) > 0
    return Y[rows][:, cols], sim.W[rows]


def run_r(folder, Y, K):
    """R's fit of Y (n x J) with K factors: (parameters and outputs, None) or (None, why not)."""
    n, J = Y.shape
    np.ascontiguousarray(Y, np.float64).tofile(os.path.join(folder, "counts.f64"))  # R reads it as J x n
    script = os.path.join(folder, "fit.R")
    with open(script, "w") as fh:
        fh.write(R_SCRIPT)
    shapes = os.path.join(folder, "r_shapes.txt")
    if os.path.exists(shapes):
        os.remove(shapes)
    try:
        proc = subprocess.run([args.rscript, script, folder, str(K), str(n), str(J), str(args.seed)],
                              capture_output=True, text=True, timeout=args.r_timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return None, f"R timed out after {args.r_timeout:.0f} s"
    if proc.returncode != 0:
        return None, f"Rscript exited {proc.returncode}: {proc.stderr.strip()[-800:]}"
    out = {"info": proc.stdout.strip()}
    with open(shapes) as fh:
        for line in fh:
            name, r, c = line.split()
            out[name] = np.fromfile(os.path.join(folder, f"r_{name}.f64"), "<f8").reshape((int(r), int(c)), order="F")
    out["zeta"] = out["zeta"][:, 0]
    for name in ("pll", "seconds", "eps_W", "eps_alpha", "eps_zeta"):
        out[name] = float(out[name][0, 0])
    for name in ("eps_beta_mu", "eps_beta_pi", "eps_gamma_mu", "eps_gamma_pi"):
        out[name] = out[name][:, 0]
    return out, None


def run_jax(Y, K):
    """(result, compile seconds, first-call seconds, median warm seconds)."""
    with jax_timed() as t:
        res = zw.fit_counts(Y, K, common_dispersion=True, seed=args.seed)
    warm = []
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        res = zw.fit_counts(Y, K, common_dispersion=True, seed=args.seed)
        warm.append(time.perf_counter() - t0)
    return res, t.compile_seconds, t.seconds, float(np.median(warm))


def penalties(n, J):
    """zinbwave's default penalties for intercept-only X and V (jaxfactor's ``default_hparams``)."""
    return zw.default_hparams(np.ones((n, 1)), np.ones((J, 1)))


def pll64(params, Y, hp):
    """The PLL of one side's parameters (zinbwave's layout), in float64, by jaxfactor's code."""
    n, J = Y.shape
    with jax.enable_x64(True):
        f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))  # noqa: E731
        data = zw.ZINBData(f64(Y), f64(np.ones((n, 1))), f64(np.ones((J, 1))))
        state = zw.ZINBState(**{k: f64(params[k]) for k in zw.ZINBState._fields})
        return float(zw.penalized_log_likelihood(state, data, jax.tree_util.tree_map(f64, hp), True))


def penalty_mismatch(r, hp):
    """Largest absolute difference between R's penalties and jaxfactor's defaults."""
    return max(float(np.max(np.abs(np.atleast_1d(r[k]) - np.atleast_1d(getattr(hp, k))))) for k in hp._fields)


def fmt_cc(cc):
    return np.array2string(cc, precision=4) if cc.size <= 3 else f"min {cc.min():.4f} mean {cc.mean():.4f}"


sizes = [(500, 1000)] if args.quick else parse_sizes(args.sizes)
ks = [int(k) for k in args.ks.split(",")]
print(f"threads: {threads}; R zinbwave {r_version} (BiocParallel::SerialParam); jax {jax.__version__} on "
      f"{jax.devices()[0].platform}; jaxfactor warm time = median of {args.repeats}")
if args.threads != 1:
    print(f"note: jaxfactor runs on {args.threads} threads while zinbFit with SerialParam uses one core")

rows = []
with tempfile.TemporaryDirectory(prefix="zinbwave_speed_") as tmp:
    for n0, J0 in sizes:
        for K in ks:
            Y, W_true = simulate(n0, J0, K, args.seed)
            n, J = Y.shape
            folder = tmp if args.keep is None else os.path.join(args.keep, f"{n0}x{J0}_K{K}_seed{args.seed}")
            os.makedirs(folder, exist_ok=True)
            hp = penalties(n, J)
            print(f"\n== {n} cells x {J} genes, K = {K} ({100 * np.mean(Y == 0):.0f} % zeros, largest count "
                  f"{Y.max():.0f}, 99th percentile {np.percentile(Y, 99):.0f})", flush=True)
            print(f"  R zinbFit ...          {load_average()}", flush=True)
            r, why = run_r(folder, Y, K)
            if r is None:
                print(f"  R did not finish: {why}")
            else:
                print(f"  R: {r['seconds']:.1f} s inside R ({r['info']})")
            print(f"  jaxfactor fit_counts ... {load_average()}", flush=True)
            res, compile_s, first_s, warm_s = run_jax(Y, K)
            print(f"  jaxfactor: first call {first_s:.1f} s (of which compiling {compile_s:.1f} s), warm {warm_s:.2f} s, "
                  f"{res.n_iter} outer iterations, converged {res.converged}; {load_average()}")
            row = {"n": n, "J": J, "K": K, "jax_s": warm_s, "compile_s": compile_s, "r_s": None,
                   "pll_jax": pll64(res.state._asdict(), Y, hp)}
            cc_truth_jax = zw.canonical_correlations(res.W, W_true)
            print(f"  canonical correlations with the simulated W: jaxfactor {fmt_cc(cc_truth_jax)}", end="")
            if r is not None:
                row["r_s"] = r["seconds"]
                row["pll_r"] = pll64(r, Y, hp)
                row["cc"] = zw.canonical_correlations(res.W, r["W"])
                print(f", R {fmt_cc(zw.canonical_correlations(r['W'], W_true))}")
                print(f"  penalties: R's minus jaxfactor's defaults, largest |difference| {penalty_mismatch(r, hp):.1e}; "
                      f"R's own PLL {r['pll']:.6f} vs this code on R's fit {row['pll_r']:.6f} "
                      f"({(row['pll_r'] - r['pll']) / abs(r['pll']):.1e} relative)")
            else:
                print()
            rows.append(row)

print("\nZINB-WaVE, R zinbwave vs jaxfactor on the same counts (PLL: jaxfactor's code, float64, for both fits)")
head = (f"{'cells':>5} {'genes':>5} {'K':>3} {'R s':>8} {'jf s':>7} {'compile':>7} {'ratio':>7} "
        f"{'PLL R':>15} {'PLL jf':>15} {'rel diff':>9} {'CC(W) min':>9}")
print(head)
print("-" * len(head))
for row in rows:
    base = f"{row['n']:>5} {row['J']:>5} {row['K']:>3} "
    if row["r_s"] is None:
        print(base + f"{'--':>8} {row['jax_s']:>7.2f} {row['compile_s']:>7.1f} {'--':>7} {'--':>15} "
              f"{row['pll_jax']:>15.3f} {'--':>9} {'--':>9}   (R did not run)")
        continue
    rel = (row["pll_jax"] - row["pll_r"]) / abs(row["pll_r"])
    ratio = row["r_s"] / row["jax_s"]
    row.update(rel=rel, ratio=ratio)
    print(base + f"{row['r_s']:>8.1f} {row['jax_s']:>7.2f} {row['compile_s']:>7.1f} {ratio:>6.1f}x "
          f"{row['pll_r']:>15.3f} {row['pll_jax']:>15.3f} {rel:>9.1e} {row['cc'].min():>9.4f}")
print("R s: zinbFit's elapsed seconds measured inside R; jf s: median warm fit_counts; compile: the first call's "
      "compilation (or persistent-cache load), apart; ratio = R s / jf s")
print(f"{load_average()} after the runs")
print(f"\ntargets: ratio >= {TARGET_RATIO:g}x, relative PLL difference >= {TARGET_REL_PLL:g}, "
      f"canonical correlations >= {TARGET_CC}")
for row in rows:
    if row["r_s"] is None:
        continue
    checks = [("ratio", row["ratio"] >= TARGET_RATIO), ("PLL", row["rel"] >= TARGET_REL_PLL),
              ("CC", row["cc"].min() >= TARGET_CC)]
    print(f"  {row['n']} x {row['J']}, K = {row['K']}: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in checks))
