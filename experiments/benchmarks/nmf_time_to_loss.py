"""Benchmark: how soon each NMF solver reaches scikit-learn's coordinate-descent loss, on the CPU.

Method. X is an n × p float32 non-negative matrix (rank-k signal ``U V``, U and V uniform, plus
0.1 × uniform noise). Every contender starts from the same (W0, H0), scikit-learn's NNDSVDA init
of X (``_initialize_nmf(X, k, "nndsvda")``, computed once, timed apart, counted for no one):

- scikit-learn ``NMF(solver="cd", shuffle=False)`` and ``NMF(solver="mu")``, ``init="custom"``;
- jaxfactor ``nmf_hals`` (accelerated HALS, the default method), ``nmf_hals(alpha=0)`` (one
  sweep per factor: scikit-learn cd's update sequence, so its row isolates the per-iteration
  speed), ``nmf_mu`` and ``nmf_pgd``, through ``jaxfactor.fit(alg, X, NMFHparams(), key,
  state0=(W0, H0), tol=0)``.

The target L* is the loss ½‖X − WH‖²_F of scikit-learn cd's default fit (``tol=1e-4``,
``max_iter=200``), and its median time T_cd is the yardstick. For each contender: a per-iteration
rate from a timed 20-iteration run; its loss after every iteration (untimed: scikit-learn resumed
one iteration at a time from its last (W, H) — its solvers carry nothing else between iterations —
and jaxfactor's own trace with ``chunk_size=1``), up to the first iteration N* with loss ≤ L*
or ``--budget`` × T_cd at the probe's rate; then "time to L*" = the median time of a run of
exactly N* iterations (jaxfactor: ``max_iter=N*``, the objective checked every ``--chunk-size``
iterations as in a default fit; its compile time, the first call minus the median, printed
apart), and "loss within T_cd" = its loss after the iterations that fit in T_cd at its rate on
that run (T*/N*; the probe's rate when L* was not reached).
Losses are scored with one jitted float32 ½‖X − WH‖² for the traces and re-scored in float64 for
the printed end points.

Threads. OMP/OpenBLAS/MKL_NUM_THREADS and PJRT_NPROC (XLA:CPU's intra-op pool in jax 0.10) are
set to ``--threads`` before numpy and jax load, XLA_FLAGS gets ``--xla_cpu_multi_thread_eigen=true``
and scikit-learn also runs under ``threadpool_limits(--threads)``; one process runs every
contender, one after another, with a pause between them (idle BLAS workers spin for a while).
Every ratio printed compares numbers measured in this one process.

Run:  python experiments/benchmarks/nmf_time_to_loss.py [--shapes 5000x2000x10,20000x2000x20
      --repeats 3 --threads 2 --budget 3]      (--quick: one small shape, a smoke run)
"""

import argparse
import math
import os

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--shapes", default="5000x2000x10,20000x2000x20", help="n x p x k, comma-separated")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--budget", type=float, default=3.0, help="stop a contender's trace after this many T_cd")
parser.add_argument("--chunk-size", type=int, default=10, help="jaxfactor steps between objective evaluations")
parser.add_argument("--quick", action="store_true", help="a small smoke run (400x200x5, one repeat)")
args = parser.parse_args()
if args.quick:
    args.shapes, args.repeats = "400x200x5", 1

from _bench import pin_threads, timed  # noqa: E402  (sets nothing until called)

threads = pin_threads(args.threads)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true").strip()

import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import NMF  # noqa: E402
from sklearn.decomposition._nmf import _initialize_nmf  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import jaxfactor  # noqa: E402
from jaxfactor.factorization import NMFHparams, NMFState, frobenius_objective, nmf_hals, nmf_mu, nmf_pgd  # noqa: E402

PROBE = 20  # iterations of the rate probe
MAX_ITER = 20000  # no trace runs longer, whatever the budget says


def loss64(X, W, H):
    R = X.astype(np.float64) - np.asarray(W, np.float64) @ np.asarray(H, np.float64)
    return 0.5 * float(np.einsum("ij,ij->", R, R))


loss32 = jax.jit(lambda X, W, H: frobenius_objective(NMFState(W, H), X, NMFHparams()))


class Sklearn:
    def __init__(self, solver, X, W0, H0):
        self.name, self.solver, self.X, self.W0, self.H0 = f"scikit-learn {solver}", solver, X, W0, H0

    def _fit(self, W, H, n_iter, tol=0.0):
        model = NMF(W.shape[1], solver=self.solver, init="custom", tol=tol, max_iter=n_iter, shuffle=False)
        with warnings.catch_warnings(), threadpool_limits(limits=args.threads):
            warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 runs exactly n_iter iterations
            W = model.fit_transform(self.X, W=W.copy(), H=H.copy())
        return W, model.components_, model.n_iter_

    def run(self, n_iter, tol=0.0):
        return self._fit(self.W0, self.H0, n_iter, tol)

    def compile_seconds(self, first, median):
        return None

    def losses(self):
        """The loss at the start, then after each iteration (a generator: resumed on demand)."""
        W, H = self.W0, self.H0
        yield float(loss32(Xj, W, H))
        while True:
            W, H, _ = self._fit(W, H, 1)
            yield float(loss32(Xj, W, H))


class Jaxfactor:
    SEGMENT = 50  # trace iterations per compiled call (resumed from the last state)

    def __init__(self, name, alg):
        self.name, self.alg = f"jaxfactor {name}", alg
        self.state0, self.key = NMFState(Xj_W0, Xj_H0), jax.random.PRNGKey(0)

    def run(self, n_iter):
        res = jaxfactor.fit(self.alg, Xj, NMFHparams(), self.key, max_iter=n_iter, tol=0.0,
                            chunk_size=min(args.chunk_size, n_iter), state0=self.state0)
        res = jax.block_until_ready(res)
        return res.state.W, res.state.H, int(res.n_iter)

    def compile_seconds(self, first, median):
        return first - median

    def losses(self):
        state = self.state0
        yield float(loss32(Xj, *state))
        while True:
            res = jaxfactor.fit(self.alg, Xj, NMFHparams(), self.key, max_iter=self.SEGMENT, tol=0.0, chunk_size=1,
                                state0=state)
            state = res.state
            yield from (float(v) for v in np.asarray(res.trace)[1:])


def measure(c, target, t_cd):
    """One contender: its rate, its trace, its time to ``target`` and its loss within ``t_cd``."""
    time.sleep(1.0)  # idle BLAS / OpenMP workers of the previous contender stop spinning
    _, t_probe, _ = timed(lambda: c.run(PROBE), args.repeats)
    rate = t_probe / PROBE
    cap = min(MAX_ITER, max(PROBE, math.ceil(args.budget * t_cd / rate)))
    losses = c.losses()
    trace = [next(losses)]
    while len(trace) - 1 < cap and trace[-1] > target:
        trace.append(next(losses))
    row = dict(name=c.name)
    if trace[-1] <= target:
        n_star = len(trace) - 1
        time.sleep(1.0)
        first, t_star, (W, H, n_run) = timed(lambda: c.run(n_star), args.repeats)
        assert n_run == n_star, (c.name, n_run, n_star)
        row.update(n_star=n_star, t_star=t_star, loss_star=loss64(X, W, H), compile=c.compile_seconds(first, t_star))
        rate = t_star / max(n_star, 1)
    n_b = int(t_cd / rate)
    while len(trace) - 1 < min(n_b, MAX_ITER):
        trace.append(next(losses))
    row.update(trace_len=len(trace) - 1, n_b=min(n_b, len(trace) - 1), short=n_b > len(trace) - 1,
               loss_b=trace[min(n_b, len(trace) - 1)], rate=rate)
    return row


print(f"jax {jax.__version__} on {jax.devices()[0].platform}; scikit-learn {__import__('sklearn').__version__}; "
      f"median of {args.repeats} timed runs")
print(f"threads: {threads}  XLA_FLAGS='{os.environ['XLA_FLAGS']}'  threadpool_limits={args.threads} "
      f"(BLAS: {', '.join(sorted({i['internal_api'] for i in threadpool_info()}))})")
print(f"load average before the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
      "(other processes on these cores skew every number)")

summary = []
for shape in args.shapes.split(","):
    n, p, k = (int(v) for v in shape.lower().split("x"))
    rng = np.random.default_rng(0)
    X = (rng.random((n, k)) @ rng.random((k, p)) + 0.1 * rng.random((n, p))).astype(np.float32)
    t0 = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        W0, H0 = _initialize_nmf(X, k, init="nndsvda", random_state=0)
    t_init = time.perf_counter() - t0
    Xj, Xj_W0, Xj_H0 = jnp.asarray(X), jnp.asarray(W0), jnp.asarray(H0)
    print(f"\n=== X {n}×{p} float32 ({X.nbytes / 2**20:.0f} MiB), k={k}; NNDSVDA init {t_init:.2f} s (apart), "
          f"start loss {loss64(X, W0, H0):.6e}; load average {os.getloadavg()[0]:.2f}")

    cd = Sklearn("cd", X, W0, H0)
    _, t_cd, (W_cd, H_cd, it_cd) = timed(lambda: cd.run(200, tol=1e-4), args.repeats)
    target = float(loss32(Xj, jnp.asarray(W_cd), jnp.asarray(H_cd)))
    print(f"scikit-learn cd default fit (tol=1e-4, max_iter=200): {it_cd} iterations, {t_cd:.3f} s, "
          f"loss L* = {loss64(X, W_cd, H_cd):.6e} (float32 scoring {target:.6e})")

    # scikit-learn cd is the reference itself: it reaches L* at its last iteration, in T_cd
    rows = [dict(name=cd.name, n_star=it_cd, t_star=t_cd, compile=None, n_b=it_cd, short=False, rate=t_cd / it_cd,
                 loss_b=target)]
    contenders = [Jaxfactor("hals", nmf_hals(k)), Jaxfactor("hals α=0", nmf_hals(k, alpha=0.0)),
                  Jaxfactor("mu", nmf_mu(k)), Jaxfactor("pgd", nmf_pgd(k)), Sklearn("mu", X, W0, H0)]
    rows += [measure(c, target, t_cd) for c in contenders]
    print(f"{'contender':<18} {'s/iter':>8} {'iters to L*':>11} {'time to L*':>11} {'compile':>8} "
          f"{'T_cd / time':>11} {'loss within T_cd':>17} {'(iters)':>8}")
    for r in rows:
        if "n_star" in r:
            reach = f"{r['n_star']:>11d} {r['t_star']:>10.3f}s"
            ratio = f"{t_cd / r['t_star']:>10.2f}×"
        else:
            reach = f"{'> ' + str(r['trace_len']):>11} {'> ' + format(args.budget * t_cd, '.1f') + 's':>11}"
            ratio = f"{'< ' + format(1 / args.budget, '.2f') + '×':>11}"
        comp = f"{r['compile']:>7.2f}s" if r.get("compile") is not None else f"{'-':>8}"
        print(f"{r['name']:<18} {r['rate']:>8.4f} {reach} {comp} {ratio} {r['loss_b']:>17.6e} "
              f"{r['n_b']:>7d}{'+' if r['short'] else ' '}")
    hals = rows[1]
    speedup = t_cd / hals["t_star"] if "n_star" in hals else 0.0
    goal = 4.0 if n >= 20000 else 3.0
    summary.append(f"{shape}: jaxfactor hals reaches L* {speedup:.2f}× sooner than scikit-learn cd "
                   f"(target ≥ {goal:.0f}×: {'PASS' if speedup >= goal else 'MISS'})")

print("\n(loss within T_cd: after the iterations that fit in T_cd at the contender's measured rate; '+': more "
      f"than {MAX_ITER} iterations fit, the loss shown is after {MAX_ITER})")
print(f"load average after the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
for line in summary:
    print(line)
