"""``jaxfactor predict`` throughput: CCLONE cell assignment (k = 4, 200 variants), cells per minute.

    python experiments/benchmarks/predict_speed.py [--cells 1000000] [--variants 200] [--k 4]
        [--batch-size 16384] [--repeats 3] [--threads 2] [--keep DIR]

1. Fits CCLONE (k = 4, no filters, 10 bootstraps) on 4000 simulated cells through the runner
   (``jaxfactor.runner.run``): a real run folder.
2. Writes an .h5ad of ``--cells`` new cells (the simulated cells, tiled with fresh row orders)
   with sparse CSR REF/ALT layers, chunk by chunk with h5py in anndata's on-disk format, so
   the file is never held in memory.
3. Times ``jaxfactor predict`` end to end on it (``predict(run_dir, data, out)``: backed
   reading of every batch from disk, M/W, the exact box-constrained per-cell solve, writing the
   output), the median of ``--repeats`` runs, compilation apart; and the compiled batch function
   alone on in-memory batches (the ceiling the disk reading leaves).

The issue's target: >= 1 million cells per minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import pin_threads  # noqa: E402


def write_big_h5ad(path, ref, alt, n_cells, var_names, seed=0, chunk=100_000):
    """An .h5ad with obs/var and CSR layers REF/ALT of ``n_cells`` rows tiled from ``ref``/``alt``."""
    import anndata
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    obs = pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n_cells)]))
    anndata.AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(var_names))).write_h5ad(path)
    rng = np.random.default_rng(seed)
    p = ref.shape[1]
    with h5py.File(path, "a") as f:
        layers = f.require_group("layers")
        groups = {}
        for name in ("REF", "ALT"):
            g = layers.create_group(name)
            g.attrs["encoding-type"] = "csr_matrix"
            g.attrs["encoding-version"] = "0.1.0"
            g.attrs["shape"] = (n_cells, p)
            g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
            g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
            g.create_dataset("indptr", data=np.zeros(n_cells + 1, np.int64))
            groups[name] = (g, [0])
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            rows = rng.integers(0, ref.shape[0], stop - start)
            for name, mat in (("REF", ref), ("ALT", alt)):
                g, nnz = groups[name]
                block = sp.csr_matrix(mat[rows])
                n_new = block.nnz
                for key, values in (("data", block.data.astype(np.int32)), ("indices", block.indices.astype(np.int32))):
                    g[key].resize((nnz[0] + n_new,))
                    g[key][nnz[0]:] = values
                g["indptr"][start + 1: stop + 1] = block.indptr[1:] + nnz[0]
                nnz[0] += n_new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--variants", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default="", help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    print(pin_threads(args.threads))
    os.environ.setdefault("CI", "1")  # no progress bar in the timings

    import time

    import jax
    import numpy as np
    import scipy.sparse as sp

    from jaxfactor.data import simulate_clones
    from jaxfactor.runner import run
    from jaxfactor.runner._predict import PREDICTORS, _batch, predict

    work = args.keep or tempfile.mkdtemp(prefix="predict_speed_")
    os.makedirs(work, exist_ok=True)
    sim = simulate_clones(n_cells=4000, n_variants=args.variants, n_clones=args.k - 1, healthy_fraction=0.25, n_germline=0,
                          mean_coverage=5.0, seed=0)
    train = sim.to_anndata()
    train.write_h5ad(os.path.join(work, "train.h5ad"))
    cfg = os.path.join(work, "cclone.toml")
    with open(cfg, "w") as fh:
        fh.write(f'[data]\npath = "train.h5ad"\n[model]\nname = "cclone"\nk = {args.k}\nfilter = false\nn_bootstrap = 10\n'
                 'n_cycles = 50\n[run]\nfigures = false\n')
    run_dir = os.path.join(work, "run")
    t0 = time.perf_counter()
    run(cfg, out=run_dir, force=True, log=lambda m: None)
    print(f"fitted CCLONE k={args.k} on {train.n_obs} cells x {train.n_vars} variants in {time.perf_counter() - t0:.1f} s")

    big = os.path.join(work, "new_cells.h5ad")
    t0 = time.perf_counter()
    ref = sp.csr_matrix(train.layers["REF"])
    alt = sp.csr_matrix(train.layers["ALT"])
    write_big_h5ad(big, ref, alt, args.cells, list(train.var_names))
    print(f"wrote {args.cells} cells to {big} ({os.path.getsize(big) / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")

    print(f"load average {os.getloadavg()[0]:.2f} before timing")
    runs = []
    for r in range(args.repeats):
        s = predict(run_dir, big, os.path.join(work, "pred.h5ad"), batch_size=args.batch_size, force=True)
        runs.append(s)
    per_min = [s["cells_per_minute"] for s in runs]
    median = float(np.median(per_min))
    per_min_total = [s["cells_per_minute_total"] for s in runs]

    # the compiled batch function alone, on in-memory dense batches
    import anndata

    fitted = anndata.read_h5ad(os.path.join(run_dir, "result.h5ad"))
    pred = PREDICTORS["cclone"]
    import tomllib

    with open(os.path.join(run_dir, "config.toml"), "rb") as fh:
        config = tomllib.load(fh)
    params, static = pred.load(run_dir, fitted, config)
    params = jax.tree_util.tree_map(lambda a: jax.numpy.asarray(a, np.float32), params)
    B = args.batch_size
    rows = np.random.default_rng(1).integers(0, ref.shape[0], B)
    blocks = (jax.numpy.asarray(ref[rows].toarray(), np.float32), jax.numpy.asarray(alt[rows].toarray(), np.float32))
    kw = dict(kernel=pred.kernel, static=tuple(sorted(static.items())))
    jax.block_until_ready(_batch(params, blocks, **kw))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        jax.block_until_ready(_batch(params, blocks, **kw))
        times.append(time.perf_counter() - t0)
    kernel_rate = B / float(np.median(times)) * 60
    print(f"\nCCLONE assignment, k={args.k}, {args.variants} variants, batches of {B}, {args.threads} threads:")
    print(f"  end to end from disk: {median:,.0f} cells/min (median of {len(per_min)}: "
          f"{', '.join(f'{x:,.0f}' for x in per_min)}); compile {runs[0]['compile_seconds']:.2f} s apart")
    print(f"  including opening the run folder, reading obs and writing the output: "
          f"{float(np.median(per_min_total)):,.0f} cells/min")
    print(f"  compiled batch function alone: {kernel_rate:,.0f} cells/min")
    print(f"  target >= 1,000,000 cells/min: {'met' if median >= 1e6 else 'NOT met'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end; device {jax.devices()[0]}")
    print(json.dumps({"cells": args.cells, "variants": args.variants, "k": args.k, "batch_size": B, "threads": args.threads,
                      "end_to_end_cells_per_min": per_min,
                      "with_io_cells_per_min": per_min_total, "kernel_cells_per_min": kernel_rate}))


if __name__ == "__main__":
    main()
