"""The runner's count VAE / autoencoder: simulated ZINB counts with known cell types, or counts
from a file (an ``.h5ad``'s ``X`` or a named layer, or any matrix format), trained by
``jaxfactor.models.fit_vae`` for each ``n_latent`` (sweepable; the lowest held-out negative ELBO
is kept), scored on the held-out cells (negative ELBO, importance-weighted ``log p(x)``,
reconstruction error) and, when labels are known, by the ARI of k-means on the latent. Writes
``result.h5ad`` with the latent in ``obsm['X_jaxfactor_vae']``, ``vae.png`` (loss curves and a
2-D PCA of the latent coloured by label; UMAP is not a dependency) and, with
``model.checkpoint = true``, ``checkpoint.msgpack`` beside the figures. ``result.h5ad`` always
holds the chosen model's checkpoint too (``uns['vae']['checkpoint']``: the same msgpack bytes as
a uint8 array, read back by ``jaxfactor.models._vae_api.checkpoint_from_bytes``), which is what
``jaxfactor predict`` uses (``PREDICTOR``, end of the module: the encoder's posterior means of
new cells). ``run.shard = "cells"`` trains each VAE data-parallel over every device
(``fit_vae(mesh=jaxfactor.cell_mesh())``: each minibatch split over the devices).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._kmeans import kmeans as kmeans_labels
from ._cclone_task import PipelineOutcome, selection_records
from ._resume import PointCache, fit_sweep
from ._schema import Field

VAE_FIELDS = {
    "kind": Field(str, "vae", choices=("vae", "ae"), help="variational or deterministic autoencoder"),
    "likelihood": Field(str, "zinb", choices=("zinb", "nb", "poisson", "bernoulli", "gaussian")),
    "n_latent": Field(int, 10, help="latent dimension"),
    "n_hidden": Field(int, 128), "n_layers": Field(int, 1),
    "dropout_rate": Field(float, 0.1, help="encoder dropout"),
    "norm": Field(str, "batch", choices=("batch", "layer", "none")),
    "batch_size": Field(int, 128),
    "max_epochs": Field(int, 0, help="0: scVI's rule min(round(20000 / n_cells * 400), 400)"),
    "lr": Field(float, 1e-3), "weight_decay": Field(float, 1e-6),
    "kl_warmup_epochs": Field(float, 400.0, help="epochs of linear KL warm-up (scVI: 400)"),
    "validation_fraction": Field(float, 0.1),
    "early_stopping": Field(bool, False), "patience": Field(int, 45),
    "n_importance": Field(int, 100, help="importance samples of the held-out log p(x) (0: skip)"),
    "label_key": Field(str, "", help="obs column with cell labels (colours, ARI); simulated data: cell_type"),
    "checkpoint": Field(bool, False, help="write checkpoint.msgpack with the figures"),
}
VAE_SWEEPABLE = ("n_latent",)


@dataclass
class VAELoaded:
    adata: Any  # AnnData written back with the results
    X: Any  # cells x genes counts (dense or scipy sparse)
    labels: np.ndarray | None
    label_names: np.ndarray | None


def _labels(adata, key):
    if key not in adata.obs:
        raise ValueError(f"label_key {key!r} is not an obs column; available: {', '.join(map(str, adata.obs.columns)) or 'none'}")
    names, codes = np.unique(np.asarray(adata.obs[key]).astype(str), return_inverse=True)
    return codes, names


class VAETask:
    def load(self, cfg) -> VAELoaded:
        import anndata

        d, key = cfg.data, cfg.model["label_key"]
        if "simulator" in d:
            from ..data import simulate_counts

            sim = simulate_counts(**{k: v for k, v in d.items() if k != "simulator"})
            adata = sim.to_anndata()
            labels, names = _labels(adata, key or "cell_type")
            return VAELoaded(adata, adata.layers["counts"], labels, names)
        path, fmt, layer = d["path"], d["format"] or None, d["layer"] or None
        from ..data import infer_format, load_any
        from ..data._io import anndata_matrix

        if (fmt or infer_format(path)) == "h5ad":
            if not os.path.isfile(path):
                raise ValueError(f"data file not found: {path!r}")
            adata = anndata.read_h5ad(path)
            X = anndata_matrix(adata, layer, repr(path), "data.layer")
            if d["transpose"]:
                raise ValueError("data.transpose is not supported for .h5ad input to the VAE; store cells as rows")
        else:
            X, _ = load_any(path, fmt=fmt, key=d["key"] or None, delimiter=d["delimiter"] or None, header=d["header"],
                            index_col=d["index_col"], transpose=d["transpose"])
            adata = anndata.AnnData(X=np.asarray(X, np.float32))
        labels, names = _labels(adata, key) if key else (None, None)
        return VAELoaded(adata, X, labels, names)

    def execute(self, cfg, loaded: VAELoaded, points: PointCache | None = None) -> PipelineOutcome:
        import pandas as pd

        from ..models import fit_vae
        from ..models._vae_api import OBSM_KEY, checkpoint_bytes

        m, seed = cfg.model, cfg.fit["seed"]
        sizes = cfg.sweep.get("n_latent", [m["n_latent"]])
        mesh = None
        if cfg.run.get("shard") == "cells":  # one VAE at a time, each minibatch split over the devices
            from .._cells import cell_mesh

            mesh = cell_mesh()

        def fit_point(k):
            t0 = time.perf_counter()
            fit = fit_vae(loaded.X, kind=m["kind"], likelihood=m["likelihood"], n_components=k, n_hidden=m["n_hidden"],
                          n_layers=m["n_layers"], dropout_rate=m["dropout_rate"], norm=m["norm"], batch_size=m["batch_size"],
                          max_iter=m["max_epochs"] or None, lr=m["lr"], weight_decay=m["weight_decay"],
                          kl_warmup_epochs=m["kl_warmup_epochs"], validation_fraction=m["validation_fraction"],
                          early_stopping=m["early_stopping"], patience=m["patience"], seed=seed, mesh=mesh)
            seconds = time.perf_counter() - t0
            held = fit.cells[fit.val_index] if fit.val_index.size else fit.cells[fit.train_index]
            ev = fit.evaluate(loaded.X[held], n_importance=m["n_importance"] if m["kind"] == "vae" else 0, seed=seed)
            z = fit.encode(loaded.X)
            secs = np.asarray(fit.history["seconds"])
            row = {"n_latent": k, "heldout_neg_elbo": ev["neg_elbo"], "heldout_reconstruction_error": ev["reconstruction_error"],
                   "heldout_kl": ev["kl"], "n_heldout": int(held.size), "n_epochs": fit.n_epochs,
                   "stopped_early": bool(fit.state.stopped), "final_train_loss": float(fit.history["train_loss"][-1]),
                   "seconds": seconds, "seconds_per_epoch": float(np.median(secs[1:])) if secs.size > 1 else float(secs[0]),
                   "compile_seconds": float(fit.compile_seconds)}
            if "log_px" in ev:
                row["heldout_log_px"] = ev["log_px"]
            kmeans = None
            if loaded.labels is not None:
                from ..cclone import adjusted_rand_index

                kmeans = kmeans_labels(z, int(np.unique(loaded.labels).size), seed=seed, max_iter=300)
                row["ari"] = adjusted_rand_index(kmeans, loaded.labels)
            return row, (fit, z, kmeans)

        rows, fits = fit_sweep(points, "n_latent", sizes, fit_point)

        table, pick, records = selection_records(rows, "heldout_neg_elbo")
        for rec in records:
            extra = ", ".join(f"{name}={rec[name]:.4g}" for name in ("heldout_neg_elbo", "heldout_log_px", "ari") if name in rec
                              and rec[name] == rec[name])
            rec["summary"] = (f"  {rec['id']}: n_latent={rec['n_latent']}{' (chosen by heldout_neg_elbo)' if rec['chosen'] else ''}: "
                              f"{extra}, {rec['n_epochs']} epochs, {rec['seconds']:.2f} s ({rec['seconds_per_epoch']:.3f} s/epoch)")
        fit, z, kmeans = fits[pick]
        out = loaded.adata.copy()
        out.obsm[OBSM_KEY] = z
        if kmeans is not None:
            out.obs["vae_kmeans"] = pd.Categorical(kmeans.astype(str))
        out.uns["vae"] = {"config": dict(fit.config._asdict()), "history": dict(fit.history),
                          "metrics": {k: v for k, v in records[pick].items() if k not in ("summary", "id")},
                          "checkpoint": np.frombuffer(checkpoint_bytes(fit), np.uint8)}  # for jaxfactor predict

        def figures(folder):
            if m["checkpoint"]:
                fit.save(os.path.join(folder, "checkpoint.msgpack"))
            vae_figure(os.path.join(folder, "vae.png"), fit.history, z, loaded.labels, loaded.label_names, table)

        return PipelineOutcome(records, out, {"selection.csv": table}, figures)


def vae_figure(path, history, z, labels, label_names, table):
    """Loss curves (train, held-out), the latent's first two principal components coloured by
    label, and the held-out negative ELBO per ``n_latent`` when there is a sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 3 if len(table) > 1 else 2
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4))
    ep = np.asarray(history["epoch"])
    axes[0].plot(ep, history["train_loss"], label="train (KL-weighted)")
    val = np.asarray(history["val_loss"])
    ok = np.isfinite(val)
    if ok.any():
        axes[0].plot(ep[ok], val[ok], label="held-out -ELBO")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss per cell")
    axes[0].legend(fontsize=8)
    zc = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    pcs = zc @ vt[:2].T if z.shape[1] > 1 else np.column_stack([zc[:, 0], np.zeros(len(zc))])
    if labels is None:
        axes[1].scatter(pcs[:, 0], pcs[:, 1], s=3, c="grey")
    else:
        cmap = plt.get_cmap("tab20")
        for j in np.unique(labels):
            sel = labels == j
            axes[1].scatter(pcs[sel, 0], pcs[sel, 1], s=3, color=cmap(j % 20), label=str(label_names[j]))
        if len(np.unique(labels)) <= 20:
            axes[1].legend(fontsize=6, markerscale=3, loc="best")
    axes[1].set_title("latent (PCA of the posterior means)", fontsize=9)
    if n == 3:
        axes[2].plot(table["n_latent"], table["heldout_neg_elbo"], marker="o")
        axes[2].set_xlabel("n_latent")
        axes[2].set_ylabel("held-out -ELBO per cell")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# ``jaxfactor predict``: the encoder's posterior means of new cells


def _predict_fit(fitted):
    """The chosen model, from the checkpoint that ``result.h5ad`` holds."""
    from ..models._vae_api import checkpoint_from_bytes

    u = fitted.uns.get("vae", {})
    if "checkpoint" not in u:
        raise ValueError("this vae run was written before VAE runs stored their model in result.h5ad; "
                         "rerun the fit to predict with it")
    return checkpoint_from_bytes(u["checkpoint"], source="result.h5ad's uns['vae']['checkpoint']")


def _predict_inputs(config) -> tuple[str, ...]:
    return (config.get("data", {}).get("layer", "") or "X",)


def _predict_vars(fitted, config):
    """The genes the encoder reads: the fitted run's genes less those dropped as all-zero."""
    if config.get("data", {}).get("transpose"):
        raise ValueError("this vae run was fitted on transposed data; predict reads cells as rows")
    genes = np.asarray(_predict_fit(fitted).genes)
    return fitted.var_names[genes]


def _predict_load(run_dir, fitted, config):
    """The inference weights (parameters and batch-norm running statistics) and the network."""
    fit = _predict_fit(fitted)
    return fit.variables, {"config": fit.config, "matrix": _predict_inputs(config)[0]}


def _predict_kernel(p, X, *, config, matrix):
    """``E_q[z | x]`` and the posterior variances (zeros for the autoencoder) of one batch: the
    encoder with dropout off and batch norm on its running statistics (each cell's output does
    not depend on its batch or the padding): ``_vae_infer``'s batch encode.

    Also, per cell, what validating the input as the fit does (``_vae_api.check_values``) needs:
    the smallest and largest entry (NaN or infinite ones, negative ones) and the largest
    distance of an entry to an integer; ``_predict_check`` turns them into a one-line error.
    (Three row reductions: per-row counts of bad entries cost XLA on CPU several times more.)"""
    import jax.numpy as jnp

    from ..models._vae_infer import _encode

    mean, var = _encode(config, p, X)
    return {"mean": mean, "var": var, "x_min": jnp.min(X, axis=1), "x_max": jnp.max(X, axis=1),
            "x_frac": jnp.max(jnp.abs(X - jnp.round(X)), axis=1)}


def _predict_check(res, start, static):
    """A one-line error, before anything is written, if the batch starting at cell ``start`` has
    entries the fit would refuse (the rules of ``_vae_api.check_values``)."""
    from ..models._likelihoods import COUNT_LIKELIHOODS

    c, name = static["config"], static["matrix"]

    def fail(bad, what, fix):
        cells = np.flatnonzero(bad)
        if cells.size:
            raise ValueError(f"DATA's {name} has {what} in {cells.size} cell{'s' * (cells.size > 1)} "
                             f"(first: cell {start + int(cells[0])}); {fix}")

    fail(~(np.isfinite(res["x_min"]) & np.isfinite(res["x_max"]) & np.isfinite(res["x_frac"])), "NaN or infinite entries",
         "remove or impute them")
    if c.likelihood != "gaussian" or c.transform == "log1p":
        why = f"likelihood={c.likelihood!r}" if c.likelihood != "gaussian" else "transform='log1p'"
        fail(res["x_min"] < 0, "negative entries", f"this model ({why}) needs non-negative counts")
    if c.likelihood in COUNT_LIKELIHOODS:
        fail(res["x_frac"] > 0, "non-integer entries",
             f"likelihood={c.likelihood!r} needs raw counts: predict from the matrix the model was fitted on")


def _predict_write(out, res, params, static):
    from ..models._vae_api import OBSM_KEY

    c = static["config"]
    out.obsm[OBSM_KEY] = res["mean"].astype(np.float32)
    if c.variational:
        out.obsm[f"{OBSM_KEY}_var"] = res["var"].astype(np.float32)
    out.uns["vae_predict"] = {"n_latent": int(c.n_latent), "kind": c.kind, "likelihood": c.likelihood,
                              "obsm_key": OBSM_KEY}


from ._predictor import Predictor  # noqa: E402  (jaxfactor predict finds it here: _predictor.lookup)

PREDICTOR = Predictor(inputs=_predict_inputs, load=_predict_load, kernel=_predict_kernel, write=_predict_write,
                      fitted_vars=_predict_vars, batch_size=8192, check=_predict_check)
