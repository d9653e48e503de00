"""The runner's one task for every family that implements the model protocol
(:class:`jaxfactor.Fitted`): it knows no model by name.

- ``[model]`` keys come from the family's ``fit`` signature (its keyword options, typed by their
  defaults; help from ``Fitted.option_help``), plus ``n_components``; ``[fit]`` gives ``max_iter``,
  ``tol``, ``n_init`` and ``seed``; every ``[model]`` key may be swept.
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

import numpy as np

from dataclasses import dataclass, field
from typing import Any, Callable

from ._schema import REQUIRED, Field
from ._verdicts import selection_verdicts

TIMING_KEYS = ("id", "chosen", "seconds", "compile_seconds", "converged")

@dataclass
class PipelineOutcome:
    records: list[dict]
    adata: Any
    tables: dict[str, Any] = field(default_factory=dict)
    figures: Callable[[str], None] | None = None
    files: Callable[[str], None] | None = None  # writes further files into the results folder (e.g. the saved model)
    verdicts: list[str] = field(default_factory=list)  # the run's verdict lines (runner._verdicts)


def selection_records(rows: list[dict], score_key: str, better: str = "min", pick: int | None = None):
    """A sweep's table (one row per point, a ``chosen`` column marking the point with the
    lowest / highest ``score_key``, or ``pick``), the chosen index, and one record per point
    (``id`` plus the row's values as plain Python numbers); the task adds each record's
    ``summary`` line."""
    import pandas as pd

    table = pd.DataFrame(rows)
    if pick is None:
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
    named: bool = True  # False: a plain matrix (.npy, .csv, transposed) whose variables have no names
    label_names: Any = None  # the names of data.label_key's values (labels are their indices)


SHARED = ("layer", "n_init", "max_iter", "tol", "seed", "mesh", "progress")
MODEL_DIR = "model"


def option_fields(model) -> dict[str, Field]:
    """``[model]`` fields of a family: ``n_components`` and the keyword options of its ``fit``."""
    helps = {}
    for cls in reversed(model.__mro__):  # a base class's help (e.g. the allele filters), overridden by the family's
        helps.update(getattr(cls, "option_help", {}))
    types = getattr(model, "option_types", {})
    rank = inspect.signature(model.fit).parameters["n_components"].default
    fields = {"n_components": Field(types.get("n_components", int), rank if rank not in (None, inspect.Parameter.empty) else REQUIRED,
                                    help=helps.get("n_components", "rank / number of components"))}
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


def read_alleles(path: str, fmt: str = ""):
    """An AnnData of allele counts: an .h5ad with REF/ALT layers or a cellSNP-lite folder, checked."""
    from ..data import check_allele_counts, read_cellsnp

    if fmt == "cellsnp" or os.path.isdir(path):
        adata = read_cellsnp(path)
    elif fmt == "h5ad" or (fmt == "" and path.lower().endswith(".h5ad")):
        from ..data._io import open_h5ad

        if not os.path.isfile(path):
            raise ValueError(f"data file not found: {path!r}; check data.path (relative paths in a config are relative to the config file)")
        adata = open_h5ad(path)
    else:
        raise ValueError(f"allele models read an .h5ad with REF/ALT layers or a cellSNP-lite folder, not {path!r}; set data.format")
    check_allele_counts(adata)
    return adata


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
            loaded = Loaded(read_alleles(d["path"], d["format"]), None)
        else:
            import anndata

            from ..data import load_any

            X, adata = load_any(d["path"], fmt=d["format"] or None, layer=d["layer"] or None, key=d["key"] or None,
                                delimiter=d["delimiter"] or None, header=d["header"], index_col=d["index_col"],
                                transpose=d["transpose"])
            if adata is None or d["transpose"]:
                adata = anndata.AnnData(X=np.asarray(X.toarray() if hasattr(X, "toarray") else X, np.float32))
                loaded = Loaded(adata, None, named=False)
            else:
                loaded = Loaded(adata, None)
        key = d.get("label_key") or ""
        if key:
            if key not in loaded.adata.obs:
                available = ", ".join(map(str, loaded.adata.obs.columns)) or "(none)"
                raise ValueError(f"data.label_key {key!r} is not an obs column; available: {available}")
            names, loaded.labels = np.unique(np.asarray(loaded.adata.obs[key]).astype(str), return_inverse=True)
            loaded.label_names = list(names)
        return loaded

    def _shared(self, cfg) -> dict:
        """The options every point shares: the [fit] section in the family's vocabulary, the
        data's layer and the cell mesh."""
        from .._cells import cell_mesh

        f = cfg.fit
        shared = {"seed": f["seed"]}
        for key, name in (("max_iter", "max_iter"), ("tol", "tol"), ("n_init", "n_init")):
            if key in f and f[key] != "auto":  # "auto": the family's own default
                shared[name] = f[key]
        layer = cfg.data.get("layer") or None
        if layer and not cfg.data.get("transpose") and self.model.inputs != "alleles":
            shared["layer"] = layer
        if cfg.run.get("shard") == "cells":
            shared["mesh"] = cell_mesh()
        return shared

    def groups(self, cfg) -> list[list[int]]:
        """Sweep points fitted together (one ``fit_points`` call, one resumable unit): those that
        differ only in the family's ``sweep_together`` options; else one point each."""
        hp = self.model.hparams
        together = set(self.model.sweep_together) | set(hp._fields if hp is not None else ())
        groups: dict[tuple, list[int]] = {}
        for i, point in enumerate(cfg.points):
            key = tuple((k, v if not isinstance(v, list) else tuple(v)) for k, v in point.items() if k not in together)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def sweep_points(self, cfg) -> int:
        return len(self.groups(cfg))

    def memory(self, cfg, loaded: Loaded):
        """(bytes, what, how to shrink it) of the family's largest compiled call, from shapes alone
        (the family's ``memory`` hook); None when the family gives no estimate."""
        estimate = getattr(self.model, "memory", None)
        if estimate is None:
            return None
        item = 8 if cfg.run["x64"] else 4
        shared = self._shared(cfg)
        need = [estimate(loaded.adata.n_obs, loaded.adata.n_vars, [cfg.points[i] for i in idx], shared, item)
                for idx in self.groups(cfg)]
        return max(need, key=lambda x: x[0])

    def execute(self, cfg, loaded: Loaded, points=None) -> PipelineOutcome:
        from .. import _progress
        from ._resume import PointCache

        points = PointCache() if points is None else points
        swept = sorted(cfg.sweep, key=lambda k: k != "n_components") or ["n_components"]  # the rank first
        pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}
        shared = self._shared(cfg)
        rows, models = [None] * len(cfg.points), [None] * len(cfg.points)
        groups = self.groups(cfg)
        for g, idx in enumerate(groups):
            params = {k: cfg.points[idx[0]][k] if len(idx) == 1 else [cfg.points[i][k] for i in idx] for k in swept}

            fixed = {k: cfg.points[idx[0]][k] for k in swept if len({repr(cfg.points[i][k]) for i in idx}) == 1}
            varied = [k for k in swept if k not in fixed]
            desc = (f"{self.name} [{g + 1}/{len(groups)}] " + ", ".join(f"{k}={v}" for k, v in fixed.items())
                    + (f" ({len(idx)} points over {', '.join(varied)})" if varied else ""))

            def fit_group(idx=idx, desc=desc):
                _progress.note(f"{desc}: fitting on {loaded.adata.n_obs} cells x {loaded.adata.n_vars} "
                               f"{'variants' if self.model.inputs == 'alleles' else 'features'}")
                with _progress.task(desc), _progress.timed() as t:
                    fits = self.model.fit_points(loaded.adata, [{k: v for k, v in cfg.points[i].items() if k != "name"}
                                                                for i in idx], **shared)
                _progress.note(f"{desc}: done in {t.seconds:.1f} s (of which compiling {t.compile_seconds:.1f} s)")
                timing = (t.run_seconds / len(idx), t.compile_seconds / len(idx))
                return [self._row(cfg, loaded, cfg.points[i], model, timing, swept, pos) for i, model in zip(idx, fits)]

            done = points.get_or_fit(g, params, fit_group)
            for i, (row, model) in zip(idx, done):
                rows[i], models[i] = row, model
                if model is not None and not loaded.named:  # default names "0".."p": matched by position only
                    model.settings["named_variables"] = False
        fitted = [m for m in models if m is not None]
        if not fitted:
            raise ValueError(f"every sweep point was skipped (first reason: {rows[0]['skipped']}); relax the filters or lower "
                             "n_components")
        score = fitted[0].selection()
        # options compared side by side (e.g. the clone caller's method): no choice between them
        compared = [k for k in swept if k in self.model.compared_options and len({repr(p[k]) for p in cfg.points}) > 1]
        first = next(i for i, m in enumerate(models) if m is not None)
        table, pick, records = selection_records(rows, score.name, "max" if score.higher_is_better else "min",
                                                 pick=first if compared else None)
        for rec in records:
            point = ", ".join(f"{k}={rec[k]}" for k in swept)
            if rec.get("skipped"):
                rec["summary"] = f"  {rec['id']}: {point}: skipped ({rec['skipped']})"
                continue
            shown = ", ".join(f"{k}={rec[k]:.4g}" for k in rec if k not in swept and k not in TIMING_KEYS
                              and isinstance(rec[k], (int, float)) and not isinstance(rec[k], bool) and rec[k] == rec[k])
            note = (f" (chosen by {score.name}, {'higher' if score.higher_is_better else 'lower'} is better)"
                    if rec["chosen"] and not compared else "")
            warn = "" if rec.get("converged", True) else ", max_iter reached"
            took = f"fit {rec['seconds']:.2f} s" + (f" + compile {rec['compile_seconds']:.2f} s" if rec.get("compile_seconds") else "")
            rec["summary"] = f"  {rec['id']}: {point}{note}: {shown}{warn}; {took}"
        shown_models = {i: m for i, m in enumerate(models) if m is not None} if compared else {pick: models[pick]}
        verdicts = selection_verdicts(table.assign(id=[r["id"] for r in records]), score.name, score.higher_is_better, swept,
                                      what="variants" if self.model.inputs == "alleles" else None, compared=bool(compared))
        for i, m in shown_models.items():
            verdicts += [f"{records[i]['id']}: {line}" if compared else line for line in m._verdicts()]
        suffix = {i: "".join(f"_{cfg.points[i][k]}" for k in compared) for i in shown_models}
        best = models[pick]
        adata = best.to_anndata(loaded.adata)
        tables = {"selection.csv": table}
        for i, m in shown_models.items():
            if i != pick:  # the other compared points' results beside the first's, suffixed
                add_suffixed(adata, m.to_anndata(None), m.family, suffix[i])
            tables.update({f"{name}{suffix[i]}.csv": t for name, t in m.tables().items()})
        if compared:
            tables["comparison.csv"] = _comparison(table, shown_models, first)
            records[-1]["summary"] += "\n  side by side (comparison.csv):\n" + "\n".join(
                "    " + line for line in tables["comparison.csv"].to_string(index=False).splitlines())

        def files(folder):
            best.save(os.path.join(folder, MODEL_DIR))

        def figures(folder):
            from ._figures import family_figure

            for i, m in shown_models.items():
                name = f"{self.name}{suffix[i]}.png"
                if m.figure(folder, name):
                    continue
                X = None
                if m.inputs == "matrix" and m.cells is None and m.genes is None:
                    layer = m.settings.get("layer")
                    X = loaded.adata.layers[layer] if layer else loaded.adata.X
                labels, names = loaded.labels, loaded.label_names
                key = m.settings.get("celltype_key") or ""
                if labels is None and key and key in loaded.adata.obs:  # the annotation's cell types as the strip
                    names, labels = np.unique(np.asarray(loaded.adata.obs[key]).astype(str), return_inverse=True)
                    names = list(names)
                if labels is not None:
                    cells = m.obs_names if m.cells is None else m.obs_names[np.asarray(m.cells)]
                    labels = labels[[pos[c] for c in cells]]
                family_figure(folder, name, m, table, swept, score, X=X, labels=labels, label_names=names)

        return PipelineOutcome(records, adata, tables, figures, files, verdicts)

    def _row(self, cfg, loaded: Loaded, point: dict, model, timing: tuple, swept: list, pos: dict):
        """(a sweep point's row of selection.csv, its model or None): swept values, the cells and
        variables the fit kept, every score, n_iter / converged, its (run, compile) seconds,
        recovery of the truth."""
        row = {k: point[k] for k in swept}
        if isinstance(model, str):  # skipped, and why
            return {**row, "skipped": model}, None
        row["n_cells"] = len(model.obs_names) if model.cells is None else len(model.cells)
        row["n_vars"] = len(model.var_names) if model.genes is None else len(model.genes)
        row.update({name: s.value for name, s in model.scores().items()})
        info = model._uns()
        row.update({k: info[k] for k in ("n_iter", "converged") if k in info})
        row["seconds"], row["compile_seconds"] = timing
        if loaded.truth is not None:
            row.update(model.truth_metrics(loaded.truth))
        if loaded.labels is not None:
            row.update(_label_recovery(model, loaded.labels, pos, cfg.fit.get("seed", 0)))
        if self.model.sweep_together:
            row["skipped"] = ""
        return row, model


def add_suffixed(adata, point, family: str, suffix: str) -> None:
    """One fit's keys (``point``: its ``to_anndata(None)``) into ``adata``, renamed
    ``<key><suffix>``, cells and variables matched by name (those it lacks: NaN / missing)."""
    for slot, names, src in (("obsm", adata.obs_names, point.obs_names), ("varm", adata.var_names, point.var_names)):
        where = src.get_indexer(names)
        for key, value in getattr(point, slot).items():
            value = np.asarray(value, np.float64)
            full = np.full((len(names),) + value.shape[1:], np.nan)
            full[where >= 0] = value[where[where >= 0]]
            getattr(adata, slot)[key + suffix] = full
    for slot in ("obs", "var"):
        frame = getattr(point, slot)
        for col in frame.columns:
            getattr(adata, slot)[col + suffix] = frame[col].reindex(getattr(adata, slot).index).to_numpy()
    adata.uns[family + suffix] = point.uns[family]


def _comparison(table, models: dict, first: int):
    """The compared points side by side: their row of the sweep table, and how each agrees with the
    first: ARI of the labels and the share of equal calls over the cells both fitted."""
    from ..cclone import adjusted_rand_index

    out = table.loc[list(models)].drop(columns=["chosen"]).reset_index(drop=True)
    ref = models[first]

    def by_cell(m, key):
        cells = m.obs_names if m.cells is None else m.obs_names[np.asarray(m.cells)]
        value = m._cell_outputs().get(key)
        return None if value is None else dict(zip(map(str, cells), np.asarray(value)))

    aris, agree = [], []
    for m in models.values():
        a, b = by_cell(ref, "label"), by_cell(m, "label")
        common = [c for c in a if c in b] if a and b else []
        aris.append(adjusted_rand_index(np.array([a[c] for c in common]), np.array([b[c] for c in common])) if common else np.nan)
        a, b = by_cell(ref, "call"), by_cell(m, "call")
        common = [c for c in a if c in b] if a and b else []
        agree.append(float(np.mean([a[c] == b[c] for c in common])) if common else np.nan)
    out["ari_vs_first"] = aris
    if not np.all(np.isnan(agree)):
        out["call_agreement_vs_first"] = agree
    return out


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
