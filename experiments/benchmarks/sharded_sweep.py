"""A 64-point weighted-NMF sweep (CCLONE's box-constrained BCD) on 4 forced CPU devices vs 1.

    python experiments/benchmarks/sharded_sweep.py [--cells 1000] [--variants 200] [--k 4]
        [--cycles 50] [--repeats 5] [--threads 2] [--devices 1 4]

Each device count runs in its own process (``XLA_FLAGS=--xla_force_host_platform_device_count``
must be set before JAX starts). The sweep is an 8 x 8 grid over the ridge penalties
``l2_C`` x ``l2_V`` with one seed: 64 fits through ``fit_many`` on CCLONE-style M and W from
simulated allele counts (``jaxfactor.data.simulate_clones``). With several devices the 64
fits are split over a 1-D ``sweep`` mesh (``mesh=sweep_mesh()``, each device runs 16 under
``shard_map``). Compilation is timed apart (``compile_fit_many``); the fit time is the median
of ``--repeats`` calls. Prints, per device count, compile and fit seconds, the speed-up over
one device, and the largest relative difference of every objective and of C from the
one-device run.

The forced CPU devices share the machine's cores: on a 2-core machine the best possible
speed-up is about 2 (one device's XLA program is mostly single-threaded elementwise work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import REPO, pin_threads  # noqa: E402


def child(args) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.child}"
    pin_threads(args.threads)
    import time

    import jax
    import numpy as np

    import jaxfactor as jf
    from jaxfactor._fit import compile_fit_many, sweep_mesh
    from jaxfactor.data import simulate_clones, variant_matrices
    from jaxfactor.factorization._wnmf import WNMFHparams, wnmf_bcd, wnmf_data

    assert jax.device_count() == args.child, jax.devices()
    sim = simulate_clones(n_cells=args.cells, n_variants=args.variants, n_clones=args.k - 1, healthy_fraction=0.25,
                          mean_coverage=5.0, seed=0)
    M, W = variant_matrices(sim.to_anndata(), "smartseq")
    data = wnmf_data(M, W)
    values = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    grid, points = jf.hparam_grid(WNMFHparams(), l2_C=values, l2_V=values)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    mesh = sweep_mesh() if args.child > 1 else None
    run, compile_s = compile_fit_many(wnmf_bcd(args.k), data, grid, keys, max_iter=args.cycles, tol=0.0,
                                      chunk_size=10, mesh=mesh)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(data, grid, keys))
        times.append(time.perf_counter() - t0)
    np.savez(args.out, objective=np.asarray(out.objective), C=np.asarray(out.best.state.C),
             times=np.asarray(times), compile=compile_s, n_points=len(points))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--variants", type=int, default=200)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import numpy as np

    print(f"64-point weighted-NMF sweep: {args.cells} cells x {args.variants} variants, k={args.k}, {args.cycles} BCD cycles, "
          f"threads={args.threads}; load average {os.getloadavg()[0]:.2f} at start")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.devices:
            out = os.path.join(tmp, f"d{n}.npz")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--out", out,
                   *(f"--{k}={v}" for k, v in (("cells", args.cells), ("variants", args.variants), ("k", args.k),
                                                ("cycles", args.cycles), ("repeats", args.repeats), ("threads", args.threads)))]
            env = {**os.environ, "PYTHONPATH": REPO}
            subprocess.run(cmd, check=True, env=env)
            results[n] = dict(np.load(out))
    base = results[args.devices[0]]
    rows = []
    for n, r in results.items():
        fit = float(np.median(r["times"]))
        rel_obj = float(np.max(np.abs(r["objective"] - base["objective"]) / np.abs(base["objective"])))
        dC = float(np.max(np.abs(r["C"] - base["C"])))
        rows.append({"devices": n, "compile_s": float(r["compile"]), "fit_s_median": fit, "fit_s_all": r["times"].round(3).tolist(),
                     "speedup_vs_first": float(np.median(base["times"])) / fit, "max_rel_objective_diff": rel_obj,
                     "max_abs_C_diff": dC})
        print(f"  {n} device(s): compile {float(r['compile']):.2f} s, fit {fit:.3f} s (median of {len(r['times'])}), "
              f"speed-up x{rows[-1]['speedup_vs_first']:.2f}; max relative objective difference {rel_obj:.2e}, "
              f"max |C difference| {dC:.2e}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
