"""Benchmark: accuracy of the three clone models behind ``jaxfactor.clones.call`` on simulated data with
the confounders of real data, against the truth.

Every setting is ``simulate_clones(n_cells=--n-cells, n_variants=40, n_clones=K, healthy_fraction=0.3,
n_germline=8, celltypes=True, annotation_noise=0.05, celltype_coverage_sd=1.0, n_editing=4, ...)``
(annotation with 5 % errors, coverage that depends on the cell type, RNA-editing sites listed in
REDIdb) with one factor varied from the baseline (coverage 3, K = 3, LOH 0.5, allelic dropout 0.2):

- mean coverage 1, 3, 6;  clones K 2, 3, 4;  LOH share of germline SNPs 0, 0.5, 1;  allelic dropout 0.1, 0.2, 0.4.

Each setting runs ``clones.call(..., method=m, n_clones="auto")`` for m = allele, binomial, cclone
with their defaults (automatic K among 2–6; the same annotation, T/B/NK healthy, Immature/Early
myeloid cancer) and prints per method: the chosen K (the truth is K + 1 populations with the
healthy cells), the ARI of the clones against the true populations, and the strict balanced
accuracy of the cancer/healthy calls (undetermined counted wrong), over ``--seeds`` data seeds.

Run:  python experiments/benchmarks/clones_accuracy.py [--n-cells 3000 --seeds 1 --threads 2]
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n-cells", type=int, default=3000)
parser.add_argument("--seeds", type=int, default=1)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--methods", default="allele,binomial,cclone",
                    help="comma-separated; a method may carry options: allele:site_dropout=false")
args = parser.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import pin_threads  # noqa: E402

settings = pin_threads(args.threads)
os.environ.setdefault("CI", "1")

import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from jaxfactor import clones  # noqa: E402
from jaxfactor.cclone import adjusted_rand_index  # noqa: E402
from jaxfactor.data import simulate_clones  # noqa: E402

warnings.filterwarnings("ignore")
BASE = dict(mean_coverage=3.0, n_clones=3, loh_fraction=0.5, allelic_dropout=0.2)
GRID = [("mean_coverage", (1.0, 3.0, 6.0)), ("n_clones", (2, 3, 4)), ("loh_fraction", (0.0, 0.5, 1.0)),
        ("allelic_dropout", (0.1, 0.2, 0.4))]
methods = args.methods.split(",")


def _spec(m):
    """'allele:site_dropout=false' -> ('allele', {'site_dropout': False})."""
    name, _, opts = m.partition(":")
    kw = {}
    for item in filter(None, opts.split(";")):
        k, v = item.split("=")
        kw[k] = {"true": True, "false": False}.get(v.lower(), float(v) if "." in v else int(v) if v.isdigit() else v)
    return name, kw


print(f"{settings}; {args.n_cells} cells × 40 variants, {args.seeds} data seed(s) per setting; load {os.getloadavg()[0]:.2f}")
header = f"{'setting':<22}" + "".join(f" | {m + ' K / ARI / bacc':>26}" for m in methods)
print(header)
print("-" * len(header))
totals = {m: [] for m in methods}
seen = set()
for key, values in GRID:
    for value in values:
        spec = {**BASE, key: value}
        tag = tuple(sorted(spec.items()))
        if tag in seen:
            continue
        seen.add(tag)
        cells = {m: [] for m in methods}
        for seed in range(args.seeds):
            sim = simulate_clones(args.n_cells, 40, spec["n_clones"], healthy_fraction=0.3, n_germline=8, celltypes=True,
                                  annotation_noise=0.05, celltype_coverage_sd=1.0, n_editing=4,
                                  mean_coverage=spec["mean_coverage"], loh_fraction=spec["loh_fraction"],
                                  allelic_dropout=spec["allelic_dropout"], seed=seed)
            ad = sim.to_anndata()
            for m in methods:
                t0 = time.perf_counter()
                out = clones.call(ad, celltype_key="celltype", healthy=["T cells", "B cells", "NK cells"],
                                  cancer=["Immature", "Early myeloid"], method=_spec(m)[0], **_spec(m)[1])
                call = out.obs["cancer_call"].astype(str).to_numpy()
                bacc = 0.5 * (np.mean(call[sim.is_cancer] == "cancer") + np.mean(call[~sim.is_cancer] == "healthy"))
                ari = adjusted_rand_index(out.obs["clone"].cat.codes.to_numpy(), sim.labels)
                cells[m].append((out.uns["clones"]["n_clones"], ari, bacc, time.perf_counter() - t0))
        label = f"{key}={value}"
        line = f"{label:<22}"
        for m in methods:
            ks = "/".join(str(c[0]) for c in cells[m])
            ari, bacc = np.mean([c[1] for c in cells[m]]), np.mean([c[2] for c in cells[m]])
            totals[m].append((ari, bacc))
            line += f" | {ks:>6} {ari:8.3f} {bacc:9.3f}"
        print(line + f"   (truth K={spec['n_clones'] + 1})", flush=True)
print("-" * len(header))
line = f"{'mean over settings':<22}"
for m in methods:
    a = np.array(totals[m])
    line += f" | {'':>6} {a[:, 0].mean():8.3f} {a[:, 1].mean():9.3f}"
print(line)
print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
