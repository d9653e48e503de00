"""The runner's CCLONE pipeline: load REF/ALT data, filter, fit or sweep, annotate, write.

Config keys of ``[model]`` (name = "cclone") mirror ``jaxfactor.cclone.fit`` / ``sweep`` and
``jaxfactor.data.filter_variants``; ``[sweep]`` may list ``k``, ``min_maf`` and
``filter_germline`` (the grid then runs as ``cclone.sweep`` does, one compiled call per k; each
k is a resumable point of the run, so an interrupted sweep refits only the missing k).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._resume import PointCache
from ._schema import Field

CCLONE_SWEEPABLE = ("k", "min_maf", "filter_germline")

CCLONE_FIELDS = {
    "k": Field(int, help="number of factors (clones)"),
    "mode": Field(str, "smartseq", choices=("smartseq", "10x", "binary", "none"), help="weight mode"),
    "min_allele_reads": Field(int, 2, help="reads that make an allele 'seen' (2 reproduces CCLONE; 1 keeps single reads)"),
    "n_bootstrap": Field(int, 50),
    "bootstrap_fraction": Field(float, 0.9),
    "n_cycles": Field(int, 100, help="alternating cycles per bootstrap fit"),
    "method": Field(str, "bcd", choices=("bcd", "mu")),
    "tol": Field(float, 1e-6, help="relative loss change over 10 cycles that stops a fit early"),
    "l2": Field(float, 0.0, help="ridge penalty on C and V"),
    "filter": Field(bool, True, help="apply CCLONE's variant and cell filters before fitting"),
    "min_maf": Field(float, 5.0, help="percent of cells showing the rarer allele pattern"),
    "filter_germline": Field(bool, True, help="drop var['dbSNP'] variants"),
    "min_cell_coverage": Field(float, 10.0, help="percent of variants a cell must cover"),
    "criterion": Field(str, "orth_score", choices=("orth_score", "stability"), help="sweep selection rule"),
    "celltype_key": Field(str, "", help="obs column for annotate (empty: no annotation)"),
    "healthy": Field(list, [], help="healthy cell types for annotate"),
    "cancer": Field(list, [], help="cancer cell types for annotate"),
    "threshold": Field(float, 0.3, help="annotate's confidence threshold"),
}


@dataclass
class PipelineOutcome:
    records: list[dict]
    adata: Any
    tables: dict[str, Any] = field(default_factory=dict)
    figures: Callable[[str], None] | None = None
    files: Callable[[str], None] | None = None  # writes further files into the results folder (e.g. the saved model)


def selection_records(rows: list[dict], score_key: str, better: str = "min"):
    """A sweep's table (one row per point, a ``chosen`` column marking the point with the
    lowest / highest ``score_key``), the chosen index, and one record per point (``id`` plus the
    row's values as plain Python numbers); the tasks add each record's ``summary`` line."""
    import pandas as pd

    table = pd.DataFrame(rows)
    pick = int(table[score_key].idxmin() if better == "min" else table[score_key].idxmax())
    table["chosen"] = False
    table.loc[pick, "chosen"] = True
    records = [{"id": f"p{i:03d}", **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}}
               for i, row in table.iterrows()]
    return table, pick, records


@dataclass
class Loaded:
    adata: Any
    labels: np.ndarray | None  # simulated truth per obs_name (population index)
    truth: Any = None  # the simulator's result (what a family's truth_metrics compares with)


class CcloneTask:
    def load(self, cfg) -> Loaded:
        from ..data import check_allele_counts, read_cellsnp, simulate_clones

        d = cfg.data
        if "simulator" in d:
            sim = simulate_clones(**{k: v for k, v in d.items() if k != "simulator"})
            adata = sim.to_anndata()
            labels = sim.labels
        else:
            path, fmt = d["path"], d["format"]
            if fmt == "cellsnp" or os.path.isdir(path):
                adata = read_cellsnp(path)
            elif fmt in ("", "h5ad") and path.lower().endswith(".h5ad") or fmt == "h5ad":
                import anndata

                if not os.path.isfile(path):
                    raise ValueError(f"data file not found: {path!r}; check data.path (relative paths in a config are relative to the config file)")
                adata = anndata.read_h5ad(path)
            else:
                raise ValueError(f"cclone reads an .h5ad with REF/ALT layers or a cellSNP-lite folder, not {path!r}; set data.format")
            labels = None
        check_allele_counts(adata)
        return Loaded(adata, labels)

    def sweep_points(self, cfg) -> int:
        """Cache points of a sweep: one per value of k (every filter setting of one k shares a
        compiled call)."""
        return len(cfg.sweep.get("k", [cfg.model["k"]])) if cfg.sweep else 1

    def memory(self, cfg, loaded: Loaded) -> tuple[int, str, str]:
        """Bytes of the largest compiled call, from shapes alone: every bootstrap of every filter
        setting of one k is one vmapped batch sharing M and W (n x p each); a fit holds 4 copies
        of C (n x k) and V (p x k), its Gram tensors (n + p) x k^2 and masks, and the objective's
        weighted residual (n x p)."""
        m = cfg.model
        n, p = int(loaded.adata.n_obs), int(loaded.adata.n_vars)
        k = max(cfg.sweep.get("k", [m["k"]])) if cfg.sweep else m["k"]
        n_filters = len(cfg.sweep.get("min_maf", [m["min_maf"]])) * len(cfg.sweep.get("filter_germline", [m["filter_germline"]])) if cfg.sweep else 1
        item = 8 if cfg.run["x64"] else 4
        per_fit = item * (4 * (n + p) * k + (n + p) * k * k + n * p + n + p)
        fits = m["n_bootstrap"] * n_filters
        what = (f"one compiled CCLONE call (k = {k}: {m['n_bootstrap']} bootstraps x {n_filters} filter setting(s) "
                f"on {n} cells x {p} variants)")
        hint = (f"lower model.n_bootstrap (each bootstrap fit needs about {per_fit / 2**20:.0f} MiB per filter setting) "
                "or sweep fewer min_maf / filter_germline values per run")
        return item * 2 * n * p + fits * per_fit, what, hint

    def execute(self, cfg, loaded: Loaded, points: PointCache | None = None) -> PipelineOutcome:
        from .. import cclone
        from ..cclone._api import _SweepPlan
        from ..data import filter_variants

        m, seed = cfg.model, cfg.fit["seed"]
        common = dict(n_bootstrap=m["n_bootstrap"], bootstrap_fraction=m["bootstrap_fraction"], n_cycles=m["n_cycles"],
                      mode=m["mode"], seed=seed, method=m["method"], tol=m["tol"], l2=m["l2"],
                      min_allele_reads=m["min_allele_reads"])
        t0 = time.perf_counter()
        table = None
        if cfg.sweep:
            grid = {key: cfg.sweep.get(key, [m[key]]) for key in CCLONE_SWEEPABLE}
            if not m["filter"]:
                raise ValueError("a sweep over filters needs model.filter = true")
            # cclone.sweep one k at a time, each k a resumable point (see _resume.PointCache)
            plan = _SweepPlan.make(loaded.adata, grid["k"], grid["min_maf"], grid["filter_germline"],
                                   min_cell_coverage=m["min_cell_coverage"], criterion=m["criterion"], **common)
            points = PointCache() if points is None else points
            res = plan.select([points.get_or_fit(i, {"k": k}, lambda: plan.fit_k(k)) for i, k in enumerate(plan.ks)])
            result, table = res.best, res.table
        else:
            adata = loaded.adata
            if m["filter"]:
                adata = filter_variants(adata, min_maf=m["min_maf"], filter_germline=m["filter_germline"],
                                        min_cell_coverage=m["min_cell_coverage"])
            result = cclone.fit(adata, m["k"], max_iter=common["n_cycles"], **{k: v for k, v in common.items() if k != "n_cycles"})
        seconds = time.perf_counter() - t0
        if m["celltype_key"]:
            result = cclone.annotate(result, m["celltype_key"], m["healthy"], m["cancer"], threshold=m["threshold"])

        truth = {}
        if loaded.labels is not None:
            pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}
            lab = loaded.labels[[pos[n] for n in result.obs_names]]
            pred = result.obsm["C"].argmax(axis=1)
            truth["ari"] = cclone.adjusted_rand_index(pred, lab)
            if (lab > 0).any() and (lab == 0).any():
                truth["ari_cancer_cells"] = cclone.adjusted_rand_index(pred[lab > 0], lab[lab > 0])
        u = result.uns["cclone"]
        record = {
            "id": "p000", "params": {**m, "seed": seed}, "k": int(result.uns["k"]), "n_cells": int(result.n_obs),
            "n_vars": int(result.n_vars), "orth_score": float(result.uns["orth_score"]), "loss": float(u["loss"]),
            "stability": float(u["stability"]), "seconds": seconds, "truth": truth,
        }
        if "cclone_annotation" in result.uns:
            record["annotation"] = {k: v for k, v in result.uns["cclone_annotation"].items() if k in ("factor_labels", "validation_passed", "messages")}
            record["labels"] = result.obs["cclone_label"].value_counts().to_dict()
        line = (f"  k={record['k']} on {record['n_cells']} cells x {record['n_vars']} variants: orth_score {record['orth_score']:.3f}, "
                f"stability {record['stability']:.3f}, loss {record['loss']:.4g}, {seconds:.2f} s")
        if truth:
            line += "; vs truth: " + ", ".join(f"{k}={v:.3f}" for k, v in truth.items())
        if table is not None:
            line = f"  sweep of {len(table)} points ({(table['skipped'] != '').sum()} skipped), chosen by {m['criterion']}:\n" + line
        record["summary"] = line
        tables = {"sweep_table.csv": table} if table is not None else {}
        return PipelineOutcome([record], result, tables, lambda folder: _figures(folder, result, table, loaded, truth))


def _figures(folder, result, table, loaded, truth):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C, V = np.asarray(result.obsm["C"]), np.asarray(result.varm["V"])
    order = np.lexsort((-C.max(axis=1), C.argmax(axis=1)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [1, 1]})
    im = axes[0].imshow(C[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    axes[0].set_title(f"C: {C.shape[0]} cells (ordered by factor) x {C.shape[1]} factors", fontsize=9)
    axes[0].set_xlabel("factor")
    fig.colorbar(im, ax=axes[0])
    im = axes[1].imshow(V, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"V: {V.shape[0]} variants x {V.shape[1]} factors", fontsize=9)
    axes[1].set_xlabel("factor")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "factors.png"), dpi=90)
    plt.close(fig)
    if table is not None:
        ok = table[table["skipped"] == ""]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for (maf, germ), g in ok.groupby(["min_maf", "filter_germline"]):
            label = f"MAF {maf}, germline {'dropped' if germ else 'kept'}"
            axes[0].plot(g["k"], g["orth_score"], marker="o", label=label)
            axes[1].plot(g["k"], g["stability"], marker="o", label=label)
        chosen = table[table["chosen"]].iloc[0]
        for ax, col in zip(axes, ("orth_score", "stability")):
            ax.scatter([chosen["k"]], [chosen[col]], s=150, facecolors="none", edgecolors="red", label="chosen")
            ax.set_xlabel("k")
            ax.set_ylabel(col)
        axes[0].legend(fontsize=7)
        fig.suptitle("sweep: orthogonality score and bootstrap stability")
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "sweep.png"), dpi=90)
        plt.close(fig)
