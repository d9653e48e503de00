"""The runner's ZINB-WaVE pipeline: simulated counts (``simulate_zinb``, the truth kept) or counts
from a file (``adata.X`` or ``data.layer``), one fit per ``n_components`` (sweepable), the lowest
BIC kept (zinbwave's ``zinbBIC``: log(n)·#parameters − 2·log-likelihood), ``result.h5ad`` with
``obsm['X_zinbwave']`` and the other slots of ``jaxfactor.zinbwave.fit``, ``selection.csv`` and
``zinbwave.png`` (penalised log-likelihood per outer iteration, W coloured by label). Simulated
runs report the canonical correlations between the fitted and the true W; with labels (simulated
clusters or ``model.label_key``), the ARI of k-means on W. ``PREDICTOR`` (end of the module) makes
``jaxfactor predict`` give new cells their W with the fitted gene parameters fixed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._cclone_task import PipelineOutcome, selection_records
from .._kmeans import kmeans
from ._resume import PointCache, fit_sweep
from ._schema import Field

ZINBWAVE_FIELDS = {
    "n_components": Field(int, help="number of unknown cell factors K (0: a ZINB GLM on the covariates)"),
    "X_columns": Field(list, [], help="obs columns of the cell design (an intercept is always included)"),
    "V_columns": Field(list, [], help="var columns of the gene design (an intercept is always included)"),
    "common_dispersion": Field(bool, False, help="one θ for all genes (zinbwave's default) instead of gene-wise θ"),
    "zero_inflation": Field(bool, True, help="false: negative-binomial model (π = 0)"),
    "epsilon": Field(float, 0.0, help="penalty scale ε (0: zinbwave's default, the number of genes)"),
    "label_key": Field(str, "", help="obs column of cell labels: colours the W scatter, ARI of k-means on W"),
}


@dataclass
class ZINBLoaded:
    adata: Any  # counts in X (simulated) or in X / layers[layer]
    layer: str | None
    labels: np.ndarray | None
    truth: Any  # ZINBSimulation or None


def canonical_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Canonical correlations between the column spaces of A and B (centred), largest first."""
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    if A.shape[1] == 0 or B.shape[1] == 0:
        return np.zeros(0)
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def n_parameters(n: int, J: int, M: int, L: int, K: int, zero_inflation: bool, common_dispersion: bool) -> int:
    """zinbwave's ``nParams``: β (M J), γ (L n), α (K J) for μ and π, W (n K) and the dispersions."""
    sides = 2 if zero_inflation else 1
    return sides * (M * J + L * n + K * J) + n * K + (1 if common_dispersion else J)


def kmeans_ari(W: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Adjusted Rand index of k-means on W (k = number of labels) against the labels."""
    from ..cclone import adjusted_rand_index

    return float(adjusted_rand_index(kmeans(W, len(np.unique(labels)), seed=seed, max_iter=100), labels))


class ZINBWaveTask:
    def load(self, cfg) -> ZINBLoaded:
        import anndata

        d = cfg.data
        if "simulator" in d:
            from ..data import simulate_zinb

            sim = simulate_zinb(**{k: v for k, v in d.items() if k != "simulator"})
            adata = anndata.AnnData(X=sim.X.astype(np.float32))
            adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
            adata.var_names = [f"gene{j}" for j in range(adata.n_vars)]
            adata.obs["label"] = sim.labels.astype(str)
            return ZINBLoaded(adata, None, sim.labels, sim)
        from ..data import load_any

        X, adata = load_any(d["path"], fmt=d["format"] or None, layer=d["layer"] or None, key=d["key"] or None,
                            delimiter=d["delimiter"] or None, header=d["header"], index_col=d["index_col"],
                            transpose=d["transpose"])
        if adata is None or d["transpose"]:
            adata = anndata.AnnData(X=np.asarray(X, np.float32))
            layer = None
        else:
            layer = d["layer"] or None
        key = cfg.model["label_key"]
        labels = None
        if key:
            if key not in adata.obs:
                available = ", ".join(map(str, adata.obs.columns)) or "(none)"
                raise ValueError(f"model.label_key {key!r} is not an obs column; available: {available}")
            labels = np.unique(np.asarray(adata.obs[key]).astype(str), return_inverse=True)[1]
        return ZINBLoaded(adata, layer, labels, None)

    def execute(self, cfg, loaded: ZINBLoaded, points: PointCache | None = None) -> PipelineOutcome:
        from .. import zinbwave as zw

        m, f = cfg.model, cfg.fit
        sizes = cfg.sweep.get("n_components", [m["n_components"]])
        extra = {} if m["epsilon"] == 0 else {"epsilon": m["epsilon"]}

        def fit_point(k):
            t0 = time.perf_counter()
            out = zw.fit(loaded.adata, k, X=m["X_columns"] or None, V=m["V_columns"] or None, layer=loaded.layer,
                         common_dispersion=m["common_dispersion"], zero_inflation=m["zero_inflation"],
                         max_iter=f["max_iter"], tol=f["tol"], seed=f["seed"], **extra)
            u = out.uns["zinbwave"]
            n, J = out.n_obs, out.n_vars
            p = n_parameters(n, J, len(u["X_names"]), len(u["V_names"]), k, m["zero_inflation"], m["common_dispersion"])
            ll = float(u["log_likelihood"])
            row = {"n_components": k, "penalized_log_likelihood": float(u["penalized_log_likelihood"]),
                   "log_likelihood": ll, "bic": float(np.log(n) * p - 2.0 * ll), "aic": float(2.0 * p - 2.0 * ll),
                   "n_iter": int(u["n_iter"]), "converged": bool(u["converged"]), "seconds": time.perf_counter() - t0}
            W = np.asarray(out.obsm["X_zinbwave"], np.float64)
            pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}
            rows_kept = np.asarray([pos[name] for name in out.obs_names])
            if loaded.truth is not None and k > 0:
                cc = canonical_correlations(W, loaded.truth.W[rows_kept])
                row.update(cancor_min=float(cc.min()), cancor_mean=float(cc.mean()))
            if loaded.labels is not None and k > 0:
                row["ari"] = kmeans_ari(W, loaded.labels[rows_kept], f["seed"])
            return row, (out, loaded.labels[rows_kept] if loaded.labels is not None else None)

        return _outcome(*fit_sweep(points, "n_components", sizes, fit_point))


def _outcome(rows, results) -> PipelineOutcome:
    table, pick, records = selection_records(rows, "bic")
    for rec in records:
        shown = ", ".join(f"{k}={rec[k]:.6g}" for k in ("penalized_log_likelihood", "bic", "cancor_min", "ari")
                          if k in rec and rec[k] == rec[k])
        chosen = " (chosen by bic)" if rec["chosen"] else ""
        state = "converged" if rec["converged"] else "max_iter"
        rec["summary"] = (f"  {rec['id']}: n_components={rec['n_components']}{chosen}: {shown}; "
                          f"{rec['n_iter']} outer iterations ({state}), {rec['seconds']:.2f} s")
    out, labels = results[pick]
    return PipelineOutcome(records, out, {"selection.csv": table}, lambda folder: _figure(folder, out, labels, table))


def _figure(folder, out, labels, table):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    u = out.uns["zinbwave"]
    W = np.asarray(out.obsm["X_zinbwave"])
    n_panels = 3 if len(table) > 1 else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 4))
    trace = np.asarray(u["trace"])
    axes[0].plot(np.arange(len(trace)), trace, marker="o", ms=3)
    axes[0].set_xlabel("outer iteration")
    axes[0].set_ylabel("penalised log-likelihood")
    axes[0].set_title("ZINB-WaVE objective", fontsize=9)
    if W.shape[1] >= 1:
        y = W[:, 1] if W.shape[1] > 1 else np.zeros(len(W))
        c = labels if labels is not None else "tab:blue"
        axes[1].scatter(W[:, 0], y, c=c, s=4, cmap="tab10")
        axes[1].set_xlabel("W1")
        axes[1].set_ylabel("W2")
    axes[1].set_title("cells in W" + (" (coloured by label)" if labels is not None else ""), fontsize=9)
    if n_panels == 3:
        axes[2].plot(table["n_components"], table["bic"], marker="o")
        chosen = table[table["chosen"]].iloc[0]
        axes[2].scatter([chosen["n_components"]], [chosen["bic"]], s=150, facecolors="none", edgecolors="red")
        axes[2].set_xlabel("n_components")
        axes[2].set_ylabel("BIC")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "zinbwave.png"), dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# ``jaxfactor predict``: W of new cells with every gene-level parameter fixed


def _predict_inputs(config) -> tuple[str, ...]:
    return (config.get("data", {}).get("layer", "") or "X",)


def _predict_vars(fitted, config):
    if config.get("data", {}).get("transpose"):
        raise ValueError("this zinbwave run was fitted on transposed data; predict reads cells as rows")
    return fitted.var_names  # the genes kept by the fit (all-zero genes were dropped)


def _predict_load(run_dir, fitted, config):
    """Gene-level parameters of the fit (``result_from_anndata``: β, α, ζ = log θ, V and the
    penalties), as arrays. Cell designs: intercept only (the new cells' obs are not streamed)."""
    from ..factorization._zinb_api import KEY, result_from_anndata

    res = result_from_anndata(fitted)
    u = fitted.uns[KEY]
    if bool(u["settings"]["X_is_matrix"]) or len(u["X_columns"]) or res.beta_mu.shape[0] != 1:
        cols = ", ".join(map(str, u["X_columns"])) or "a design matrix"
        raise ValueError(f"this zinbwave run has cell covariates ({cols}); predict supports intercept-only cell designs "
                         "(use jaxfactor.zinbwave.transform with the new cells' obs)")
    from ..factorization._zinb_model import gene_params

    params = gene_params(res)
    return params, {"zero_inflation": bool(res.zero_inflation), "max_iter": 100, "tol": 1e-8}


def _predict_kernel(p, Y, *, zero_inflation, max_iter, tol):
    """The family's cell-wise kernel (:func:`jaxfactor.factorization._zinb_model.cell_kernel`)."""
    from ..factorization._zinb_model import cell_kernel

    return cell_kernel(p, Y, zero_inflation=zero_inflation, max_iter=max_iter, tol=tol)


def _predict_write(out, res, params, static):
    from ..factorization._zinb_api import KEY

    out.obsm["X_zinbwave"] = res["W"].astype(np.float32)
    out.obsm[f"{KEY}_gamma_mu"] = res["gamma_mu"].astype(np.float32)
    out.obsm[f"{KEY}_gamma_pi"] = res["gamma_pi"].astype(np.float32)
    out.obs[f"{KEY}_all_zero"] = res["all_zero"].astype(bool)
    n_empty = int(res["all_zero"].sum())
    if n_empty:
        import warnings

        warnings.warn(f"ZINB-WaVE predict: {n_empty} all-zero cells get W = 0 (the penalty's minimum) and γ = NaN; "
                      f"they are flagged in obs['{KEY}_all_zero']", UserWarning, stacklevel=2)
    out.uns[f"{KEY}_predict"] = {"n_components": int(params["alpha_mu"].shape[0]), "n_all_zero": n_empty,
                                 "max_batch_iterations": int(res["n_iter"].max()), **static}


from ._predictor import Predictor  # noqa: E402  (jaxfactor predict finds it here: _predictor.lookup)

PREDICTOR = Predictor(inputs=_predict_inputs, load=_predict_load, kernel=_predict_kernel, write=_predict_write,
                      fitted_vars=_predict_vars, batch_size=1024)
