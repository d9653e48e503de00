"""Benchmark: jaxfactor's Gaussian-mixture EM against scikit-learn's GaussianMixture, on the CPU.

Method. X is an n × d sample of a k-component Gaussian mixture (``simulate_gmm``, separation 3,
float64). The initial parameters come from jaxfactor's k-means++ init; scikit-learn receives them
as ``weights_init`` / ``means_init`` / ``precisions_init`` (it converts precisions back to the
same upper-triangular Cholesky factor), so both libraries start from the same parameters and
run exactly ``--iters`` EM iterations (scikit-learn: ``tol=0``; jaxfactor:
``jaxfactor.fit(gmm(k, cov), X, GMMHparams(), key, tol=0, state0=params0)``). Both work in
float64 by default (scikit-learn's precision; ``--dtype float32`` runs jaxfactor in float32 and
still scores its final parameters in float64). jaxfactor's steady-state time is the median of
``--repeats`` runs and its compile time is reported apart (first call minus the median);
scikit-learn is timed ``--sk-repeats`` times (one run is ~23 s at the default size here). The final
mean log-likelihood per sample of both (scikit-learn's ``score(X)``) and their relative
difference are printed: equal final log-likelihood means the difference is rounding (~1e-12 in
float64).

One EM iteration (full covariance) costs about ``4·n·k·d²`` flops: the E-step's ``X @ U`` for all
components at once, and the M-step's k scatter matrices.

Threads. OMP/OpenBLAS/MKL_NUM_THREADS and PJRT_NPROC are set before numpy and jax are imported,
and scikit-learn also runs under ``threadpool_limits(N)``. XLA:CPU runs the small blocked matmuls
of one EM pass on one core; ``--devices 2`` makes two single-threaded CPU devices
(``--xla_force_host_platform_device_count=2``, PJRT_NPROC=1) and splits the rows between them
(``gmm(..., mesh=jaxfactor.cell_mesh(devices))``: shard_map + psum of the sufficient statistics). The load average is printed before and
after: other processes on these cores slow both libraries.

Run:  python experiments/benchmarks/gmm_vs_sklearn.py [--quick] [--n-samples 100000
      --n-features 20 --k 8 --iters 100 --covariance-type full --threads 2]
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n-samples", type=int, default=100_000)
parser.add_argument("--n-features", type=int, default=20)
parser.add_argument("--k", type=int, default=8)
parser.add_argument("--iters", type=int, default=100)
parser.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
parser.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="jaxfactor's dtype")
parser.add_argument("--repeats", type=int, default=3, help="jaxfactor steady-state repeats")
parser.add_argument("--sk-repeats", type=int, default=3, help="scikit-learn repeats")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--chunk-size", type=int, default=100, help="jaxfactor steps between log-likelihood evaluations (tol = 0 needs no check before the end)")
parser.add_argument("--block-size", type=int, default=8192, help="rows per block of jaxfactor's fused E/M pass")
parser.add_argument("--devices", type=int, default=1,
                    help="jaxfactor: split the rows over this many XLA CPU devices (one per core, shard_map + psum)")
parser.add_argument("--quick", action="store_true", help="20 000 samples, 30 iterations (a smoke test)")
args = parser.parse_args()
if args.quick:
    args.n_samples, args.iters, args.repeats = 20_000, 30, 2

from _bench import THREAD_VARS, pin_threads, timed  # noqa: E402  (sets nothing until called)

N = str(args.threads)
pin_threads(args.threads)
if args.devices > 1:  # one single-threaded XLA CPU device per core
    os.environ["PJRT_NPROC"] = "1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # scikit-learn's precision; the jaxfactor dtype is chosen below
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import jaxfactor  # noqa: E402
from jaxfactor.data._simulate_gmm import simulate_gmm  # noqa: E402
from jaxfactor.mixture._gmm import GMMHparams, GMMParams, gmm, posterior  # noqa: E402


n, d, k, iters, cov = args.n_samples, args.n_features, args.k, args.iters, args.covariance_type
dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
X = simulate_gmm(n, d, k, separation=3.0, covariance_type=cov, seed=0).X  # float64
flops_iter = 4 * n * k * d * d if cov in ("full", "tied") else 8 * n * k * d

print(f"jax {jax.__version__} on {len(jax.devices())} {jax.devices()[0].platform} device(s); X {n}×{d} float64 ({X.nbytes / 2**20:.0f} MiB), "
      f"k={k}, covariance_type={cov!r}, {iters} EM iterations from the same init; jaxfactor in {args.dtype}, "
      f"chunk {args.chunk_size}, block {args.block_size}")
print("threads: " + " ".join(f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
      "MKL_NUM_THREADS", "PJRT_NPROC")) + f"  threadpool_limits={N} "
      f"(BLAS: {', '.join(sorted({i['internal_api'] for i in threadpool_info()}))})")
print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
      "(other processes on these cores skew every number)")

# the common init: jaxfactor's k-means++ centres, nearest-centre responsibilities, one M-step (float64)
hp = GMMHparams(reg_covar=1e-6)
key = jax.random.PRNGKey(0)
p0 = jax.jit(gmm(k, cov, "kmeans++", args.block_size).init)(key, jnp.asarray(X), hp)
mesh = None
if args.devices > 1:
    from jax.sharding import NamedSharding, PartitionSpec

    if n % args.devices:
        raise SystemExit(f"--n-samples must be divisible by --devices ({args.devices})")
    mesh = jaxfactor.cell_mesh(jax.devices()[: args.devices])
alg = gmm(k, cov, "kmeans++", args.block_size, mesh)
U0 = np.asarray(p0.precisions_cholesky)
prec0 = U0 @ np.swapaxes(U0, -1, -2) if cov in ("full", "tied") else U0 * U0

# jaxfactor
Xj = jnp.asarray(X, dtype)
state0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), p0)
if mesh is not None:
    Xj = jax.device_put(Xj, NamedSharding(mesh, PartitionSpec("cells")))
    state0 = jax.device_put(state0, NamedSharding(mesh, PartitionSpec()))


def run_jax():
    res = jaxfactor.fit(alg, Xj, hp, key, max_iter=iters, tol=0.0, chunk_size=args.chunk_size, state0=state0)
    return jax.block_until_ready(res)


first, t_jf, res = timed(run_jax, args.repeats)
assert int(res.n_iter) == iters
params64 = GMMParams(*(jnp.asarray(np.asarray(a), jnp.float64) for a in res.state))
ll_jf = float(jnp.mean(posterior(params64, jnp.asarray(X), cov)[1]))  # scored in float64

# scikit-learn last: its idle BLAS/OpenMP workers spin for a while after each call.
time.sleep(0.5)


def run_sklearn():
    gm = GaussianMixture(k, covariance_type=cov, weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
                         precisions_init=prec0, max_iter=iters, tol=0.0, reg_covar=hp.reg_covar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        return gm.fit(X)


sk_times = []
with threadpool_limits(limits=args.threads):
    for _ in range(args.sk_repeats):
        t0 = time.perf_counter()
        gm = run_sklearn()
        sk_times.append(time.perf_counter() - t0)
t_sk = float(np.median(sk_times))
assert gm.n_iter_ == iters, gm.n_iter_
ll_sk = float(gm.score(X))
rel = abs(ll_jf - ll_sk) / abs(ll_sk)
speedup = t_sk / t_jf

print()
print(f"scikit-learn GaussianMixture   {t_sk:8.3f} s   ({t_sk / iters * 1e3:7.2f} ms/iter, "
      f"{iters * flops_iter / t_sk / 1e9:5.1f} GFLOP/s; median of {args.sk_repeats})")
print(f"jaxfactor gmm ({args.dtype}, {args.devices} dev) {t_jf:8.3f} s   ({t_jf / iters * 1e3:7.2f} ms/iter, "
      f"{iters * flops_iter / t_jf / 1e9:5.1f} GFLOP/s; median of {args.repeats}; compile ≈ {first - t_jf:.2f} s)")
print(f"  speed-up vs scikit-learn     {speedup:8.2f} ×")
print(f"final mean log-likelihood: scikit-learn {ll_sk:.10f}, jaxfactor {ll_jf:.10f}, relative difference {rel:.1e} "
      f"({'OK' if rel < 1e-5 else 'MISMATCH'})")
print(f"load average after the run: {os.getloadavg()[0]:.2f}")
print(f"target ≥ 10× scikit-learn at equal final log-likelihood: {speedup:.2f}× "
      f"{'PASS' if speedup >= 10 and rel < 1e-5 else 'MISS'}")
