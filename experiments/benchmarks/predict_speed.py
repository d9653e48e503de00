"""``jaxfactor predict`` throughput, cells per minute: CCLONE cell assignment (k = 4, 200 variants)
and the VAE encoder (2000 genes, latent 10).

    python experiments/benchmarks/predict_speed.py [--model all|cclone|vae] [--cells N]
        [--variants 200] [--k 4] [--genes 2000] [--batch-size B] [--repeats 3] [--threads 2] [--keep DIR]

CCLONE (``--cells`` default 1,000,000; batches of 16384):

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

VAE (``--cells`` default 200,000; batches of 8192): scVI's defaults (one hidden layer of 128,
latent 10, batch norm, dropout 0.1, ZINB), trained briefly (3 epochs) through the runner on 4000
simulated cells x ``--genes`` genes; then the same three steps with the counts in a CSR ``X``
(float32, as .h5ad files hold them): ``predict`` reads each batch from disk, checks its counts
(finite, non-negative integers, on the host), encodes it (posterior means and variances) and
writes ``obsm['X_jaxfactor_vae']``. The issue's target: >= 200,000 cells per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import pin_threads  # noqa: E402

TARGETS = {"cclone": 1_000_000, "vae": 200_000}
DEFAULT_CELLS = {"cclone": 1_000_000, "vae": 200_000}
DEFAULT_BATCH = {"cclone": 16384, "vae": 8192}


def write_big_h5ad(path, mats, n_cells, var_names, seed=0, chunk=100_000, dtype=None):
    """An .h5ad with obs/var and a CSR matrix per entry of ``mats`` (name -> CSR matrix; ``"X"``
    is X, any other name a layer) of ``n_cells`` rows tiled from them (the same random rows in
    every matrix). Values are stored as int32, or ``dtype``."""
    import anndata
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    obs = pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n_cells)]))
    anndata.AnnData(obs=obs, var=pd.DataFrame(index=pd.Index(var_names))).write_h5ad(path)
    rng = np.random.default_rng(seed)
    first = next(iter(mats.values()))
    p = first.shape[1]
    data_type = np.dtype(dtype or np.int32)
    with h5py.File(path, "a") as f:
        groups = {}
        for name in mats:
            if name == "X":
                if "X" in f:
                    del f["X"]
                g = f.create_group("X")
            else:
                g = f.require_group("layers").create_group(name)
            g.attrs["encoding-type"] = "csr_matrix"
            g.attrs["encoding-version"] = "0.1.0"
            g.attrs["shape"] = (n_cells, p)
            g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=data_type, chunks=(1 << 18,))
            g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
            g.create_dataset("indptr", data=np.zeros(n_cells + 1, np.int64))
            groups[name] = (g, [0])
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            rows = rng.integers(0, first.shape[0], stop - start)
            for name, mat in mats.items():
                g, nnz = groups[name]
                block = sp.csr_matrix(mat[rows])
                n_new = block.nnz
                for key, values in (("data", block.data.astype(data_type)), ("indices", block.indices.astype(np.int32))):
                    g[key].resize((nnz[0] + n_new,))
                    g[key][nnz[0]:] = values
                g["indptr"][start + 1: stop + 1] = block.indptr[1:] + nnz[0]
                nnz[0] += n_new


def time_predict(run_dir, big, out, batch_size, repeats):
    """``repeats`` end-to-end ``predict`` runs: (median cells/min, the runs' summaries)."""
    import numpy as np

    from jaxfactor.runner._predict import predict

    runs = [predict(run_dir, big, out, batch_size=batch_size, force=True) for _ in range(repeats)]
    return float(np.median([s["cells_per_minute"] for s in runs])), runs


def kernel_rate(run_dir, model, blocks, batch_size):
    """Cells per minute of the compiled batch function alone (median of 20 calls)."""
    import time
    import tomllib

    import anndata
    import jax
    import numpy as np

    from jaxfactor.runner._predict import _batch, lookup

    fitted = anndata.read_h5ad(os.path.join(run_dir, "result.h5ad"))
    pred = lookup(model)
    with open(os.path.join(run_dir, "config.toml"), "rb") as fh:
        config = tomllib.load(fh)
    params, static = pred.load(run_dir, fitted, config)
    params = jax.tree_util.tree_map(lambda a: jax.numpy.asarray(a, np.float32), params)
    blocks = tuple(jax.numpy.asarray(b, np.float32) for b in blocks)
    kw = dict(kernel=pred.kernel, static=tuple(sorted(static.items())))
    jax.block_until_ready(_batch(params, blocks, **kw))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        jax.block_until_ready(_batch(params, blocks, **kw))
        times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times)) * 60


def report(model, title, args, B, n_cells, median, runs, k_rate, extra):
    import jax
    import numpy as np

    per_min = [s["cells_per_minute"] for s in runs]
    per_min_total = [s["cells_per_minute_total"] for s in runs]
    target = TARGETS[model]
    print(f"\n{title}, batches of {B}, {args.threads} threads, {n_cells:,} cells:")
    print(f"  end to end from disk: {median:,.0f} cells/min (median of {len(per_min)}: "
          f"{', '.join(f'{x:,.0f}' for x in per_min)}); compile {runs[0]['compile_seconds']:.2f} s apart")
    print(f"  including opening the run folder, reading obs and writing the output: "
          f"{float(np.median(per_min_total)):,.0f} cells/min")
    print(f"  compiled batch function alone: {k_rate:,.0f} cells/min")
    print(f"  target >= {target:,} cells/min: {'met' if median >= target else 'NOT met'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end; device {jax.devices()[0]}")
    print(json.dumps({"model": model, "cells": n_cells, "batch_size": B, "threads": args.threads, **extra,
                      "end_to_end_cells_per_min": per_min, "with_io_cells_per_min": per_min_total,
                      "kernel_cells_per_min": k_rate, "load_average": os.getloadavg()[0]}))


def bench_cclone(args, work):
    import time

    import numpy as np
    import scipy.sparse as sp

    from jaxfactor.data import simulate_clones
    from jaxfactor.runner import run

    n_cells, B = args.cells or DEFAULT_CELLS["cclone"], args.batch_size or DEFAULT_BATCH["cclone"]
    sim = simulate_clones(n_cells=4000, n_variants=args.variants, n_clones=args.k - 1, healthy_fraction=0.25, n_germline=0,
                          mean_coverage=5.0, seed=0)
    train = sim.to_anndata()
    train.write_h5ad(os.path.join(work, "train.h5ad"))
    cfg = os.path.join(work, "cclone.toml")
    with open(cfg, "w") as fh:
        fh.write(f'[data]\npath = "train.h5ad"\n[model]\nname = "cclone"\nk = {args.k}\nfilter = false\nn_bootstrap = 10\n'
                 'n_cycles = 50\n[run]\nfigures = false\n')
    run_dir = os.path.join(work, "cclone_run")
    t0 = time.perf_counter()
    run(cfg, out=run_dir, force=True, log=lambda m: None)
    print(f"fitted CCLONE k={args.k} on {train.n_obs} cells x {train.n_vars} variants in {time.perf_counter() - t0:.1f} s")

    big = os.path.join(work, "cclone_new_cells.h5ad")
    t0 = time.perf_counter()
    ref = sp.csr_matrix(train.layers["REF"])
    alt = sp.csr_matrix(train.layers["ALT"])
    write_big_h5ad(big, {"REF": ref, "ALT": alt}, n_cells, list(train.var_names))
    print(f"wrote {n_cells} cells to {big} ({os.path.getsize(big) / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")

    print(f"load average {os.getloadavg()[0]:.2f} before timing")
    median, runs = time_predict(run_dir, big, os.path.join(work, "cclone_pred.h5ad"), B, args.repeats)
    rows = np.random.default_rng(1).integers(0, ref.shape[0], B)
    k_rate = kernel_rate(run_dir, "cclone", (ref[rows].toarray(), alt[rows].toarray()), B)
    report("cclone", f"CCLONE assignment, k={args.k}, {args.variants} variants", args, B, n_cells, median, runs, k_rate,
           {"variants": args.variants, "k": args.k})


def bench_vae(args, work):
    import time

    import numpy as np
    import scipy.sparse as sp

    from jaxfactor.data import simulate_counts
    from jaxfactor.runner import run

    n_cells, B = args.cells or DEFAULT_CELLS["vae"], args.batch_size or DEFAULT_BATCH["vae"]
    sim_args = dict(n_cells=4000, n_genes=args.genes, n_types=5, n_latent=5, mean_library=1500.0, zero_inflation=0.1,
                    seed=0)
    cfg = os.path.join(work, "vae.toml")
    with open(cfg, "w") as fh:
        fh.write('[data]\nsimulator = "counts"\n' + "".join(f"{k} = {v}\n" for k, v in sim_args.items())
                 + '[model]\nname = "vae"\nn_latent = 10\nn_hidden = 128\nn_layers = 1\nmax_epochs = 3\n'
                   'n_importance = 0\nlabel_key = "cell_type"\n[run]\nfigures = false\n')
    run_dir = os.path.join(work, "vae_run")
    t0 = time.perf_counter()
    run(cfg, out=run_dir, force=True, log=lambda m: None)
    train = simulate_counts(**sim_args).to_anndata()
    print(f"fitted the VAE (latent 10, hidden 128, 3 epochs) on {train.n_obs} cells x {train.n_vars} genes "
          f"in {time.perf_counter() - t0:.1f} s")

    big = os.path.join(work, "vae_new_cells.h5ad")
    t0 = time.perf_counter()
    X = sp.csr_matrix(train.X)
    write_big_h5ad(big, {"X": X}, n_cells, list(train.var_names), dtype=np.float32)
    density = X.nnz / np.prod(X.shape)
    print(f"wrote {n_cells} cells to {big} ({os.path.getsize(big) / 2**20:.0f} MiB, {density:.0%} non-zero) "
          f"in {time.perf_counter() - t0:.1f} s")

    print(f"load average {os.getloadavg()[0]:.2f} before timing")
    median, runs = time_predict(run_dir, big, os.path.join(work, "vae_pred.h5ad"), B, args.repeats)
    rows = np.random.default_rng(1).integers(0, X.shape[0], B)
    k_rate = kernel_rate(run_dir, "vae", (X[rows].toarray(),), B)
    report("vae", f"VAE encoder, {args.genes} genes, latent 10, hidden 128", args, B, n_cells, median, runs, k_rate,
           {"genes": args.genes, "n_latent": 10, "n_hidden": 128, "density": float(density)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("all", "cclone", "vae"), default="all")
    ap.add_argument("--cells", type=int, default=0, help="new cells (0: 1,000,000 for cclone, 200,000 for vae)")
    ap.add_argument("--variants", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=0, help="0: 16384 for cclone, 8192 for vae")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default="", help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    print(pin_threads(args.threads))
    os.environ.setdefault("CI", "1")  # no progress bar in the timings

    work = args.keep or tempfile.mkdtemp(prefix="predict_speed_")
    os.makedirs(work, exist_ok=True)
    if args.model in ("all", "cclone"):
        bench_cclone(args, work)
    if args.model in ("all", "vae"):
        bench_vae(args, work)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
