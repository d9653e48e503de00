"""Benchmark: ZINB-WaVE speed at 5000 cells x 1000 genes, K = 10, on the CPU, against the R
package's quoted rate; and recovery of simulated factors at 1000 x 500, K = 2.

Method. Counts are drawn from the model (``jaxfactor.zinbwave.simulate``: intercepts in X and V,
gene-wise θ around 5, about 20 % structural zeros, W around 3 clusters) and fitted with
zinbwave's defaults (ε = J, gene-wise dispersion here, zero inflation) until the relative change of
the penalised log-likelihood (PLL) over one outer iteration is below 1e-4 (zinbwave's
``stop.epsilon.optimize``). The fit loop is compiled ahead of time (``jax.jit(...).lower().compile()``)
so compilation is timed apart from the run. Threads are pinned before numpy/jax load.

Quoted R numbers (not measured here; from the issue, zinbwave on one core): 54 s of CPU for
500 cells x 1000 genes at K = 2 and 116 s at K = 10, i.e. 0.108 s and 0.232 s per cell at
J = 1000. The printed ratio is (quoted R seconds per cell at K = 10) / (our seconds per cell).

Accuracy (``--accuracy``, on by default): n = 1000, J = 500, K = 2 — canonical correlations
between fitted and true W, and the PLL at the fit against the PLL at the true parameters (with W, α
re-balanced by the same orthogonalisation, which can only raise it), evaluated in float64.

Run:  python experiments/benchmarks/zinbwave_speed.py [--cells 5000 --genes 1000 --k 10 --threads 2
      --no-accuracy]
"""

import argparse
import os
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--cells", type=int, default=5000)
parser.add_argument("--genes", type=int, default=1000)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--tol", type=float, default=1e-4)
parser.add_argument("--max-iter", type=int, default=100)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--no-accuracy", action="store_true", help="skip the 1000 x 500, K = 2 recovery check")
args = parser.parse_args()

from _bench import pin_threads  # noqa: E402

threads = pin_threads(args.threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxfactor import zinbwave as zw  # noqa: E402
from jaxfactor._fit import _canonical_hp, _fit_jit  # noqa: E402
from jaxfactor.zinbwave import canonical_correlations  # noqa: E402

R_SECONDS_PER_CELL = {2: 54.0 / 500, 10: 116.0 / 500}  # quoted, J = 1000, one core


def load():
    return os.getloadavg()[0]


def compiled_fit(Y, K, *, tol, max_iter, seed):
    n, J = Y.shape
    X, V = np.ones((n, 1)), np.ones((J, 1))
    data = zw.ZINBData(jnp.asarray(Y, jnp.float32), jnp.asarray(X, jnp.float32), jnp.asarray(V, jnp.float32))
    hp = _canonical_hp(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), zw.default_hparams(X, V)))
    alg = zw.zinbwave_algorithm(K, intercepts=True)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    run = _fit_jit.lower(alg, data, hp, key, None, tol, max_iter=max_iter, chunk_size=1).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jax.block_until_ready(run(data, hp, key, None, tol))
    return res, compile_s, time.perf_counter() - t0, data, hp


print(f"threads: {threads}; jax {jax.__version__}; devices {jax.devices()}; load average {load():.2f}")

sim = zw.simulate(args.cells, args.genes, args.k, seed=args.seed)
res, compile_s, run_s, _, _ = compiled_fit(sim.X, args.k, tol=args.tol, max_iter=args.max_iter, seed=args.seed)
n_iter = int(res.n_iter)
pll = -float(res.trace[n_iter])
cc = canonical_correlations(np.asarray(res.state.W, np.float64), sim.W)
print(f"\nspeed: {args.cells} cells x {args.genes} genes, K = {args.k}, float32, tol {args.tol:g}")
print(f"  compile {compile_s:.1f} s (apart), fit {run_s:.1f} s, {n_iter} outer iterations "
      f"({run_s / max(n_iter, 1):.2f} s each), converged {bool(res.converged)}")
print(f"  final penalised log-likelihood {pll:.6e}; canonical correlations with the true W: min {cc.min():.4f}, mean {cc.mean():.4f}")
per_cell = run_s / args.cells
r_rate = R_SECONDS_PER_CELL.get(args.k)
print(f"  {per_cell * 1e3:.2f} ms per cell (fit only), {(run_s + compile_s) / args.cells * 1e3:.2f} ms with compilation")
if r_rate is not None and args.genes == 1000:
    print(f"  QUOTED R zinbwave rate at K = {args.k}, J = 1000: {r_rate:.3f} s per cell -> ratio {r_rate / per_cell:.1f}x "
          f"({r_rate / ((run_s + compile_s) / args.cells):.1f}x counting compilation)")
print(f"  load average after: {load():.2f} (other processes on these cores slow the fit)")

if not args.no_accuracy:
    sim = zw.simulate(1000, 500, 2, seed=args.seed)
    res, compile_s, run_s, data, hp = compiled_fit(sim.X, 2, tol=args.tol, max_iter=50, seed=args.seed)
    W = np.asarray(res.state.W, np.float64)
    cc = canonical_correlations(W, sim.W)
    with jax.enable_x64(True):
        J = sim.X.shape[1]
        d64 = jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), data)
        hp64 = jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), hp)
        truth = zw.ZINBState(*(jnp.asarray(getattr(sim, k)) for k in
                               ("beta_mu", "beta_pi", "gamma_mu", "gamma_pi", "W", "alpha_mu", "alpha_pi", "zeta")))
        Wt, At = zw.orthogonalize(truth.W, jnp.concatenate([truth.alpha_mu, truth.alpha_pi], 1), hp64.eps_W, hp64.eps_alpha)
        truth = truth._replace(W=Wt, alpha_mu=At[:, :J], alpha_pi=At[:, J:])
        pll_truth = float(zw.penalized_log_likelihood(truth, d64, hp64))
        fit_state = jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), res.state)
        pll_fit = float(zw.penalized_log_likelihood(fit_state, d64, hp64))
    print(f"\naccuracy: 1000 cells x 500 genes, K = 2: {int(res.n_iter)} outer iterations, fit {run_s:.1f} s "
          f"(compile {compile_s:.1f} s)")
    print(f"  canonical correlations with the true W: {np.array2string(cc, precision=4)} (bound: >= 0.95)")
    print(f"  PLL at the fit {pll_fit:.6e}, at the truth {pll_truth:.6e}: fit - truth = {pll_fit - pll_truth:.1f} "
          f"({(pll_fit - pll_truth) / abs(pll_truth):.2e} relative; bound: >= -1e-5)")
