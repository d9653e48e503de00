"""The runner's one task for every family that implements the model protocol
(:class:`jaxfactor.Fitted`): it knows no model by name.

- ``[model]`` keys come from the family's ``fit`` signature (its keyword options, typed by their
  defaults; help from ``Fitted.option_help``), plus ``n_components``; ``[fit]`` gives ``max_iter``,
  ``tol``, ``n_restarts`` (the family's ``n_init``) and ``seed``; every ``[model]`` key may be swept.
- Data: the family's simulator (its result turned into an AnnData, the truth kept for an ARI), or a
  file (an .h5ad / matrix for matrix families; an .h5ad with REF/ALT or a cellSNP-lite folder for
  allele families).
- Every sweep point is ``family.fit(...)``; the points are compared by ``Fitted.selection()`` (BIC
  where the family has one, else its first score, in its declared direction); the chosen model is
  written with ``to_anndata`` (``result.h5ad``) and saved with ``save`` (``model/``, what
  ``jaxfactor predict`` loads and streams through the family's kernel).
"""

from __future__ import annotations

import inspect
import os
import time

import numpy as np

from ._cclone_task import Loaded, PipelineOutcome, selection_records
from ._schema import Field

SHARED = ("layer", "n_init", "max_iter", "tol", "seed", "mesh", "progress")
MODEL_DIR = "model"


def option_fields(model) -> dict[str, Field]:
    """``[model]`` fields of a family: ``n_components`` and the keyword options of its ``fit``."""
    helps = {}
    for cls in reversed(model.__mro__):  # a base class's help (e.g. the allele filters), overridden by the family's
        helps.update(getattr(cls, "option_help", {}))
    fields = {"n_components": Field(int, help=helps.get("n_components", "rank / number of components"))}
    types = getattr(model, "option_types", {})
    for name, p in inspect.signature(model.fit).parameters.items():
        if p.kind is not p.KEYWORD_ONLY or name in SHARED or (p.default is None and name not in types):
            continue
        if name in types:  # e.g. a list of column names, None in Python meaning "none"
            fields[name] = Field(types[name], [] if types[name] is list else p.default, help=helps.get(name, ""))
            continue
        t = bool if isinstance(p.default, bool) else type(p.default)
        if t in (bool, int, float, str):
            choices = model.option_choices.get(name)
            fields[name] = Field(t, p.default, choices=choices, help=helps.get(name, ""))
    return fields


def _simulated(sim):
    """(AnnData, true labels or None) of a simulator's result."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    labels = getattr(sim, "labels", None)
    if hasattr(sim, "to_anndata"):
        return sim.to_anndata(), labels
    if hasattr(sim, "alt") and hasattr(sim, "depth"):
        alt, depth = np.asarray(sim.alt, np.int64), np.asarray(sim.depth, np.int64)
        ad = anndata.AnnData(X=sp.csr_matrix(depth), layers={"REF": sp.csr_matrix(depth - alt), "ALT": sp.csr_matrix(alt)},
                             obs=pd.DataFrame(index=[f"cell{i}" for i in range(alt.shape[0])]),
                             var=pd.DataFrame(index=[f"var{j}" for j in range(alt.shape[1])]))
        return ad, labels
    X = np.asarray(sim.counts if hasattr(sim, "counts") else sim.X)
    ad = anndata.AnnData(X=X.astype(np.float32), obs=pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])]),
                         var=pd.DataFrame(index=[f"f{j}" for j in range(X.shape[1])]))
    return ad, labels


class FamilyTask:
    """``load`` / ``execute`` of the runner's pipeline interface for one registered family."""

    def __init__(self, name: str):
        self.name = name

    @property
    def model(self):
        from .._families import family

        return family(self.name).model

    def load(self, cfg) -> Loaded:
        d = cfg.data
        if "simulator" in d:
            sim = cfg.spec.simulators[d["simulator"]](**{k: v for k, v in d.items() if k != "simulator"})
            adata, labels = _simulated(sim)
            return Loaded(adata, None if labels is None else np.asarray(labels), sim)
        if self.model.inputs == "alleles":
            from ._cclone_task import CcloneTask

            loaded = CcloneTask().load(cfg)
        else:
            import anndata

            from ..data import load_any

            X, adata = load_any(d["path"], fmt=d["format"] or None, layer=d["layer"] or None, key=d["key"] or None,
                                delimiter=d["delimiter"] or None, header=d["header"], index_col=d["index_col"],
                                transpose=d["transpose"])
            if adata is None or d["transpose"]:
                adata = anndata.AnnData(X=np.asarray(X.toarray() if hasattr(X, "toarray") else X, np.float32))
            loaded = Loaded(adata, None)
        key = d.get("label_key") or ""
        if key:
            if key not in loaded.adata.obs:
                available = ", ".join(map(str, loaded.adata.obs.columns)) or "(none)"
                raise ValueError(f"data.label_key {key!r} is not an obs column; available: {available}")
            loaded.labels = np.unique(np.asarray(loaded.adata.obs[key]).astype(str), return_inverse=True)[1]
        return loaded

    def _fit(self, cfg, loaded: Loaded, point: dict):
        from .._cells import cell_mesh

        f = cfg.fit
        options = {k: v for k, v in point.items() if k != "name"}
        shared = {"seed": f["seed"]}
        for key, name in (("max_iter", "max_iter"), ("tol", "tol"), ("n_restarts", "n_init")):
            if key in f:
                shared[name] = f[key]
        layer = cfg.data.get("layer") or None
        if layer and not cfg.data.get("transpose") and self.model.inputs != "alleles":
            shared["layer"] = layer
        if cfg.run.get("shard") == "cells":
            shared["mesh"] = cell_mesh()
        n = options.pop("n_components")
        return self.model.fit(loaded.adata, n, **shared, **options)

    def execute(self, cfg, loaded: Loaded, points=None) -> PipelineOutcome:
        from ._resume import PointCache

        points = PointCache() if points is None else points
        swept = list(cfg.sweep) or ["n_components"]
        pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}
        rows, models = [], []
        for i, point in enumerate(cfg.points):
            def fit_point(point=point):
                t0 = time.perf_counter()
                model = self._fit(cfg, loaded, point)
                row = {k: point[k] for k in swept}
                row.update({name: s.value for name, s in model.scores().items()})
                info = model._uns()
                row.update({k: info[k] for k in ("n_iter", "converged") if k in info})
                row["seconds"] = time.perf_counter() - t0
                if loaded.truth is not None:
                    row.update(model.truth_metrics(loaded.truth))
                if loaded.labels is not None:
                    row.update(_label_recovery(model, loaded.labels, pos, cfg.fit.get("seed", 0)))
                return row, model

            row, model = points.get_or_fit(i, {k: point[k] for k in swept}, fit_point)
            rows.append(row)
            models.append(model)
        score = models[0].selection()
        table, pick, records = selection_records(rows, score.name, "max" if score.higher_is_better else "min")
        for rec in records:
            shown = ", ".join(f"{k}={rec[k]:.4g}" for k in rec if k not in swept and k not in ("id", "chosen", "seconds", "converged")
                              and isinstance(rec[k], (int, float)) and not isinstance(rec[k], bool))
            point = ", ".join(f"{k}={rec[k]}" for k in swept)
            note = f" (chosen by {score.name}, {'higher' if score.higher_is_better else 'lower'} is better)" if rec["chosen"] else ""
            warn = "" if rec.get("converged", True) else ", max_iter reached"
            rec["summary"] = f"  {rec['id']}: {point}{note}: {shown}{warn}, {rec['seconds']:.2f} s"
        best = models[pick]

        def files(folder):
            best.save(os.path.join(folder, MODEL_DIR))

        def figures(folder):
            X = None
            if best.inputs == "matrix" and best.cells is None and best.genes is None:
                layer = best.settings.get("layer")
                X = loaded.adata.layers[layer] if layer else loaded.adata.X
            labels = None
            if loaded.labels is not None:
                cells = best.obs_names if best.cells is None else best.obs_names[np.asarray(best.cells)]
                labels = loaded.labels[[pos[c] for c in cells]]
            family_figure(folder, f"{self.name}.png", best, table, swept[0], score, X=X, labels=labels)

        return PipelineOutcome(records, best.to_anndata(loaded.adata), {"selection.csv": table}, figures, files)


def _label_recovery(model, labels: np.ndarray, pos: dict, seed: int) -> dict:
    """ARI of the fit's labels against known ones; for a family without labels, of k-means on its
    embedding (k = the number of known labels)."""
    from .._kmeans import kmeans
    from ..cclone import adjusted_rand_index

    cells = model.obs_names if model.cells is None else model.obs_names[np.asarray(model.cells)]
    truth = labels[[pos[c] for c in cells]]
    out = model._cell_outputs()
    if "label" in out:
        return {"ari": adjusted_rand_index(np.asarray(out["label"]), truth)}
    Z = out.get("embedding")
    k = len(np.unique(truth))
    if Z is None or np.asarray(Z).shape[1] == 0 or not 1 < k <= len(truth):
        return {}
    return {"ari": adjusted_rand_index(kmeans(np.asarray(Z, np.float64), k, seed=seed, max_iter=100), truth)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heatmap(fig, ax, A, cmap: str, label: str, xlabel: str, ylabel: str) -> None:
    """A [0, 1] heatmap with a colourbar and integer column ticks."""
    im = ax.imshow(A, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xticks(range(A.shape[1]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def family_figure(folder: str, name: str, model, table, key: str, score, X=None, labels=None) -> None:
    """The chosen model's per-cell result (posterior probabilities, cells ordered by label, or the
    first two dimensions of its embedding), the data's first two features coloured by label (a
    mixture of a matrix ``X``) or its per-variable result (clone allele frequencies), the chosen
    fit's trace, and the selection curve."""
    plt = _plt()
    cells, var, uns = model._cell_outputs(), model._var_outputs(), model._uns()
    panels = []
    if X is not None and "label" in cells:
        panels.append("data")
    if "proba" in cells:
        panels.append("proba")
    elif "embedding" in cells:
        panels.append("embedding")
    if "af" in var:
        panels.append("af")
    if "trace" in uns and np.size(uns["trace"]) > 1:
        panels.append("trace")
    if len(table) > 1:
        panels.append("selection")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "data":
            X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
            y = X[:, 1] if X.shape[1] > 1 else np.zeros(len(X))
            sc = ax.scatter(X[:, 0], y, c=cells["label"], s=4, cmap="tab10", vmin=0, vmax=9)
            handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(k))) for k in range(model.n_components)]
            ax.legend(handles, [str(k) for k in range(model.n_components)], title="component", fontsize=7, markerscale=0.8)
            ax.set_xlabel(f"feature {model.var_names[0]}")
            ax.set_ylabel(f"feature {model.var_names[1]}" if X.shape[1] > 1 else "")
            ax.set_title("data, first two features, by component", fontsize=9)
        elif panel == "proba":
            P = np.asarray(cells["proba"])
            order = np.lexsort((-P.max(axis=1), P.argmax(axis=1)))
            _heatmap(fig, ax, P[order], "viridis", "posterior probability", "component",
                     "cells (ordered by most probable component)")
        elif panel == "embedding":
            Z = np.asarray(cells["embedding"])
            y = Z[:, 1] if Z.shape[1] > 1 else np.zeros(len(Z))
            colour = cells.get("label", labels)
            if colour is None:
                ax.scatter(Z[:, 0], y, s=4)
            else:
                sc = ax.scatter(Z[:, 0], y, s=4, c=colour, cmap="tab10", vmin=0, vmax=9)
                kinds = np.unique(colour)[:10]
                handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(k))) for k in kinds]
                title = "label" if "label" in cells else "known label"
                ax.legend(handles, [str(k) for k in kinds], title=title, fontsize=7, markerscale=0.8)
            ax.set_xlabel(f"{model.family} dimension 1")
            ax.set_ylabel(f"{model.family} dimension 2" if Z.shape[1] > 1 else "")
        elif panel == "af":
            _heatmap(fig, ax, np.asarray(var["af"]), "magma", "allele frequency", "clone", "variants")
        elif panel == "trace":
            trace = np.asarray(uns["trace"])
            x = np.asarray(uns["trace_iter"]) if "trace_iter" in uns else np.arange(len(trace))
            ax.plot(x, trace)
            ax.set_xlabel(str(uns.get("trace_unit", "iteration")))
            ax.set_ylabel(f"{uns.get('trace_name', 'objective')} ({'higher' if model.trace_higher_is_better else 'lower'} is better)")
            ax.set_title("the chosen fit's trace", fontsize=9)
        else:
            x, y = table[key].to_numpy(), table[score.name].to_numpy()
            ax.plot(x, y, marker="o")
            chosen = table[table["chosen"]].iloc[0]
            ax.scatter([chosen[key]], [chosen[score.name]], s=150, facecolors="none", edgecolors="red")
            if np.issubdtype(np.asarray(x).dtype, np.integer):
                ax.set_xticks(x)
            ax.set_xlabel(key)
            ax.set_ylabel(f"{score.name} ({'higher' if score.higher_is_better else 'lower'} is better)")
    fig.suptitle(f"{model.family}: n_components = {model.n_components}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)
