"""The runner's mixture pipelines: Gaussian mixture, probabilistic PCA, binomial mixture of
allele counts. Each fits one model per value of its size key (``n_components`` / ``n_clones``,
sweepable), scores every point by BIC (and held-out-free ARI against simulated truth), keeps the
BIC-best (the highest ELBO for variational fits) and writes it with a selection table.
Restarts (``fit.n_restarts``) run vmapped inside each fit.
"""

from __future__ import annotations

import os
import time

import numpy as np

from dataclasses import dataclass
from typing import Any

from ._cclone_task import Loaded, PipelineOutcome, selection_records
from ._resume import PointCache, fit_sweep
from ._schema import Field


@dataclass
class MatrixLoaded:
    X: np.ndarray
    labels: np.ndarray | None  # simulated truth
    adata: Any  # the AnnData read, if the input was .h5ad (results are written into a copy)

SIZE_KEYS = {"gmm": "n_components", "ppca": "n_components", "binomial_mixture": "n_clones", "allele_model": "n_clones"}

GMM_FIELDS = {
    "n_components": Field(int, help="number of mixture components"),
    "covariance_type": Field(str, "full", choices=("full", "tied", "diag", "spherical")),
    "init": Field(str, "kmeans++", choices=("kmeans++", "random_from_data")),
    "reg_covar": Field(float, 1e-6),
}
PPCA_FIELDS = {
    "n_components": Field(int, help="latent dimension q"),
    "min_noise_ratio": Field(float, 1e-6, help="floor of the noise variance relative to the mean feature variance"),
}
BINOMIAL_FIELDS = {
    "n_clones": Field(int, help="number of clones K"),
    "method": Field(str, "em", choices=("em", "vb"), help="MAP-EM or mean-field variational Bayes"),
    "beta_a": Field(float, 1.0), "beta_b": Field(float, 1.0), "dirichlet": Field(float, 1.0),
    "learn_weights": Field(bool, False, help="VB: Dirichlet posterior on the weights (else fixed uniform)"),
    "filter": Field(bool, False, help="CCLONE's variant/cell filters first"),
    "min_maf": Field(float, 5.0), "filter_germline": Field(bool, True), "min_cell_coverage": Field(float, 10.0),
}


def _matrix(cfg, simulate):
    from .._validate import as_matrix
    from ..data import load_any

    d = cfg.data
    if "simulator" in d:
        sim = simulate(**{k: v for k, v in d.items() if k != "simulator"})
        return as_matrix(sim.X, "data matrix", nonnegative=False), getattr(sim, "labels", None), None
    X, adata = load_any(d["path"], fmt=d["format"] or None, layer=d["layer"] or None, key=d["key"] or None,
                        delimiter=d["delimiter"] or None, header=d["header"], index_col=d["index_col"], transpose=d["transpose"])
    return as_matrix(X, "data matrix", nonnegative=False), None, adata


def _mesh(cfg):
    """``run.shard = "cells"``: each fit's cells split over every device (``jaxfactor.cell_mesh``)."""
    if cfg.run.get("shard") != "cells":
        return None
    from .._cells import cell_mesh

    return cell_mesh()


def _sizes(cfg):
    key = SIZE_KEYS[cfg.spec.name]
    return key, cfg.sweep.get(key, [cfg.model[key]])


def _ari(pred, labels):
    from ..cclone import adjusted_rand_index

    return {"ari": adjusted_rand_index(pred, labels)} if labels is not None else {}


def _finish(cfg, rows, results, adata_out, figure, score_key, better):
    table, pick, records = selection_records(rows, score_key, better)
    key = SIZE_KEYS[cfg.spec.name]
    for rec in records:
        extra = ", ".join(f"{k}={rec[k]:.4g}" for k in ("log_likelihood", "elbo", "bic", "ari") if k in rec and rec[k] is not None and rec[k] == rec[k])
        rec["summary"] = f"  {rec['id']}: {key}={rec[key]}{' (chosen by ' + score_key + ')' if rec['chosen'] else ''}: {extra}, {rec['seconds']:.2f} s"
    return PipelineOutcome(records, adata_out(results[pick]), {"selection.csv": table}, lambda folder: figure(folder, results[pick], table))


def _selection_plot(ax, table, key, score_key):
    ax.plot(table[key], table[score_key], marker="o")
    chosen = table[table["chosen"]].iloc[0]
    ax.scatter([chosen[key]], [chosen[score_key]], s=150, facecolors="none", edgecolors="red")
    ax.set_xlabel(key)
    ax.set_ylabel(score_key)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def clone_figure(folder, name, out, table, key, score_key, extra=None):
    """clone_prob (cells ordered by clone) and clone_af heatmaps, an optional extra panel drawn by
    ``extra(ax)``, and the selection curve; saved as ``name``."""
    plt = _plt()
    P, A = np.asarray(out.obsm["clone_prob"]), np.asarray(out.varm["clone_af"])
    order = np.lexsort((-P.max(axis=1), P.argmax(axis=1)))
    n = 4 if extra else 3
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4))
    axes[0].imshow(P[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    axes[0].set_title("clone_prob (cells ordered by clone)", fontsize=9)
    axes[1].imshow(A, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    axes[1].set_title("clone_af (variants x clones)", fontsize=9)
    if extra:
        extra(axes[2])
    _selection_plot(axes[-1], table, key, score_key)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)


def _two_panels(folder, name, draw_left, table, key, score_key):
    """A data panel drawn by ``draw_left(ax)`` beside the selection curve; saved as ``name``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    draw_left(axes[0])
    _selection_plot(axes[1], table, key, score_key)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)


def _base_anndata(loaded: MatrixLoaded):
    import anndata

    return loaded.adata.copy() if loaded.adata is not None else anndata.AnnData(X=loaded.X.astype(np.float32))


class GMMTask:
    def load(self, cfg) -> MatrixLoaded:
        from ..data import simulate_gmm

        return MatrixLoaded(*_matrix(cfg, simulate_gmm))

    def execute(self, cfg, loaded: MatrixLoaded, points: PointCache | None = None) -> PipelineOutcome:
        from ..mixture import bic, fit_gmm, gmm_n_parameters

        X = loaded.X
        m, f = cfg.model, cfg.fit
        key, sizes = _sizes(cfg)

        def fit_point(k):
            t0 = time.perf_counter()
            res = fit_gmm(X, k, covariance_type=m["covariance_type"], init=m["init"], reg_covar=m["reg_covar"],
                          max_iter=f["max_iter"], tol=f["tol"], n_init=f["n_restarts"], seed=f["seed"], chunk_size=f["chunk_size"], mesh=_mesh(cfg))
            labels = res.predict(X)
            total = res.log_likelihood * X.shape[0]
            return ({key: k, "log_likelihood": res.log_likelihood, "n_iter": res.n_iter, "converged": res.converged,
                     "bic": bic(total, gmm_n_parameters(k, X.shape[1], m["covariance_type"]), X.shape[0]),
                     "seconds": time.perf_counter() - t0, **_ari(labels, loaded.labels)}, (res, labels))

        rows, results = fit_sweep(points, key, sizes, fit_point)

        def adata_out(best):
            res, labels = best
            out = _base_anndata(loaded)
            out.obsm["gmm_proba"] = res.predict_proba(X).astype(np.float32)
            out.obs["gmm_label"] = labels.astype(str)
            out.uns["gmm"] = {"weights": res.weights, "means": res.means, "covariance_type": res.covariance_type,
                              "covariances": res.covariances, "precisions_cholesky": res.precisions_cholesky,
                              "log_likelihood": res.log_likelihood, "trace": res.trace}
            return out

        def figure(folder, best, table):
            res, labels = best
            j = 1 if X.shape[1] > 1 else 0

            def draw(ax):
                ax.scatter(X[:, 0], X[:, j], c=labels, s=4, cmap="tab10")
                ax.scatter(res.means[:, 0], res.means[:, j], c="black", marker="x", s=60)
                ax.set_title("first two features, coloured by component")

            _two_panels(folder, "gmm.png", draw, table, key, "bic")

        return _finish(cfg, rows, results, adata_out, figure, "bic", "min")


class PPCATask:
    def load(self, cfg) -> MatrixLoaded:
        from ..data import simulate_ppca

        X, _, adata = _matrix(cfg, simulate_ppca)
        return MatrixLoaded(X, None, adata)

    def execute(self, cfg, loaded: MatrixLoaded, points: PointCache | None = None) -> PipelineOutcome:
        from ..mixture import fit_ppca

        X = loaded.X
        m, f = cfg.model, cfg.fit
        key, sizes = _sizes(cfg)

        def fit_point(q):
            t0 = time.perf_counter()
            res = fit_ppca(X, q, max_iter=f["max_iter"], tol=f["tol"], n_init=f["n_restarts"], seed=f["seed"],
                           min_noise_ratio=m["min_noise_ratio"], chunk_size=f["chunk_size"], mesh=_mesh(cfg))
            return ({key: q, "log_likelihood": res.log_likelihood, "noise_variance": res.noise_variance,
                     "n_iter": res.n_iter, "converged": res.converged, "bic": res.bic(), "seconds": time.perf_counter() - t0}, res)

        rows, results = fit_sweep(points, key, sizes, fit_point)

        def adata_out(res):
            out = _base_anndata(loaded)
            out.obsm["X_ppca"] = res.transform(X).astype(np.float32)
            out.varm["ppca_components"] = res.components.astype(np.float32)
            out.uns["ppca"] = {"noise_variance": res.noise_variance, "log_likelihood": res.log_likelihood, "trace": res.trace}
            return out

        def figure(folder, res, table):
            Z = res.transform(X)

            def draw(ax):
                ax.scatter(Z[:, 0], Z[:, 1] if Z.shape[1] > 1 else np.zeros(len(Z)), s=4)
                ax.set_title("posterior mean of the latent (first two dimensions)")

            _two_panels(folder, "ppca.png", draw, table, key, "bic")

        return _finish(cfg, rows, results, adata_out, figure, "bic", "min")


class BinomialTask:
    def load(self, cfg) -> Loaded:
        from ._cclone_task import CcloneTask

        return CcloneTask().load(cfg)

    def execute(self, cfg, loaded: Loaded, points: PointCache | None = None) -> PipelineOutcome:
        from ..mixture import bic, binomial_mixture_n_parameters, fit_binomial_mixture_anndata

        m, f = cfg.model, cfg.fit
        key, sizes = _sizes(cfg)
        pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}

        def fit_point(k):
            t0 = time.perf_counter()
            out = fit_binomial_mixture_anndata(
                loaded.adata, k, filter=m["filter"], min_maf=m["min_maf"], filter_germline=m["filter_germline"],
                min_cell_coverage=m["min_cell_coverage"], method=m["method"], beta_a=m["beta_a"], beta_b=m["beta_b"],
                dirichlet=m["dirichlet"], learn_weights=m["learn_weights"], max_iter=f["max_iter"], tol=f["tol"],
                n_init=f["n_restarts"], seed=f["seed"], chunk_size=f["chunk_size"], mesh=_mesh(cfg),
            )
            u = out.uns["binomial_mixture"]
            pred = np.asarray(out.obsm["clone_prob"]).argmax(axis=1)
            truth = loaded.labels[[pos[n] for n in out.obs_names]] if loaded.labels is not None else None
            row = {key: k, "log_likelihood": float(u["log_likelihood"]), "n_iter": int(u["n_iter"]),
                   "converged": bool(u["converged"]), "seconds": time.perf_counter() - t0, **_ari(pred, truth)}
            row["bic"] = bic(row["log_likelihood"], binomial_mixture_n_parameters(k, out.n_vars), out.n_obs)
            if m["method"] == "vb":
                row["elbo"] = float(u["score"])  # the ELBO for variational fits
            return row, out

        rows, results = fit_sweep(points, key, sizes, fit_point)

        def figure(folder, out, table):
            clone_figure(folder, "binomial_mixture.png", out, table, key, "elbo" if m["method"] == "vb" else "bic")

        if m["method"] == "vb":
            return _finish(cfg, rows, results, lambda out: out, figure, "elbo", "max")
        return _finish(cfg, rows, results, lambda out: out, figure, "bic", "min")
