"""``jaxfactor clones``: the vireo-style one-liner from a cellSNP-lite folder (or an .h5ad with REF/ALT
layers) and a cell-type table to called cells, and the runner task ``clones``.

    jaxfactor clones CELLSNP_DIR_OR_H5AD [--celltypes FILE.csv] [--celltype-key COL]
                     [--healthy "T cells,B cells"] [--cancer "Immature"] [--n-clones auto]
                     [--method allele] --out OUT
    jaxfactor clones --demo --out OUT        # the embedded simulation, scored against its truth

OUT is a folder written under a temporary name and renamed when complete: ``result.h5ad`` (the
AnnData of :func:`jaxfactor.clones.call`), ``calls.csv`` (one row per cell), ``selection.csv``,
``annotation.csv``, ``summary.txt`` and ``clones.png``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The embedded simulation of ``jaxfactor clones --demo`` and ``experiments/clones_demo.toml``: an
#: AML-like sample with healthy cells and three cancer clones, an expression annotation with 5 %
#: errors, cell-type-dependent coverage, loss of heterozygosity at half the germline SNPs and
#: RNA-editing sites (listed in REDIdb).
DEMO = dict(n_cells=4000, n_variants=40, n_clones=3, healthy_fraction=0.3, n_germline=8, mean_coverage=3.0,
            celltypes=True, annotation_noise=0.05, celltype_coverage_sd=1.0, loh_fraction=0.5, n_editing=4, seed=0)
DEMO_HEALTHY = ["T cells", "B cells", "NK cells"]
DEMO_CANCER = ["Immature", "Early myeloid"]


@dataclass
class Truth:
    labels: np.ndarray  # population per cell: 0 healthy, 1.. cancer clones
    is_cancer: np.ndarray


def _truth_renamed(adata):
    """The simulation's true populations as obs ``true_clone`` (``clone`` is the call's own column)."""
    adata.obs = adata.obs.rename(columns={"clone": "true_clone"})
    return adata


def truth_metrics(out, truth: Truth) -> dict:
    """Accuracy of a call against simulated truth: ARI of the clones, and the cancer/healthy calls'
    strict balanced accuracy (undetermined counts as wrong), balanced accuracy over called cells
    and the share of cells called."""
    from ..cclone import adjusted_rand_index

    labels, cancer = truth.labels, truth.is_cancer  # call() keeps every cell, in order
    m = {"ari": adjusted_rand_index(out.obs["clone"].cat.codes.to_numpy(), labels)}
    if "cancer_call" in out.obs and cancer.any() and (~cancer).any():
        call = out.obs["cancer_call"].astype(str).to_numpy()
        called = call != "undetermined"
        right = (call == "cancer") == cancer
        m["strict_balanced_accuracy"] = 0.5 * (np.mean(right[cancer] & called[cancer]) + np.mean(right[~cancer] & called[~cancer]))
        c, h = cancer & called, ~cancer & called
        m["balanced_accuracy_called"] = 0.5 * ((right[c].mean() if c.any() else 0.0) + (right[h].mean() if h.any() else 0.0))
        m["called_share"] = float(called.mean())
    return m


def read_celltypes(path: str, obs_names, key: str | None):
    """Cell types from a CSV/TSV table (first column: barcodes; ``key`` or the only other column: the
    type), aligned to ``obs_names``. Returns (types with None for unmatched cells, column, n matched)."""
    import pandas as pd

    if not os.path.isfile(path):
        raise ValueError(f"cell-type file not found: {path!r}")
    sep = "\t" if path.lower().endswith((".tsv", ".txt", ".tsv.gz")) else ","
    try:
        table = pd.read_csv(path, sep=sep, index_col=0, dtype=str)
    except Exception as exc:
        raise ValueError(f"could not read {path!r} as a table with barcodes in the first column ({exc})") from None
    if key is None:
        if table.shape[1] != 1:
            raise ValueError(f"{path!r} has columns {list(table.columns)}; name the cell-type column with --celltype-key")
        key = str(table.columns[0])
    if key not in table.columns:
        raise ValueError(f"column {key!r} not in {path!r} (columns: {', '.join(map(str, table.columns))})")
    col = table[key]
    col = col[~col.index.duplicated(keep="first")]
    matched = pd.Index(obs_names).isin(col.index)
    n = int(matched.sum())
    if n == 0:
        raise ValueError(f"no cell of the data is in {path!r}: 0 of {len(obs_names)} barcodes matched (data e.g. "
                         f"{list(obs_names[:2])}, table e.g. {list(col.index[:2])}); check the barcode column and suffixes")
    return col.reindex(obs_names).to_numpy(dtype=object), key, n


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _n_clones(text: str):
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--n-clones must be 'auto', an integer or a comma-separated list of integers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _check_out(out: str, inputs: list[str], force: bool) -> None:
    from ._output import check_out_dir

    out_abs = os.path.abspath(out)
    for path in inputs:
        p = os.path.abspath(path)
        if p == out_abs or p.startswith(out_abs + os.sep) or out_abs.startswith(p + os.sep) and os.path.isdir(p):
            raise ValueError(f"--out {out!r} would overlap the input {path!r}; choose a separate output folder "
                             "(inputs are never overwritten)")
    check_out_dir(out, force)


def load_input(path: str):
    """An .h5ad file or a cellSNP-lite folder, as an AnnData."""
    from ..data import read_cellsnp

    if os.path.isdir(path):
        return read_cellsnp(path)
    if not os.path.exists(path):
        raise ValueError(f"input not found: {path!r}; give a cellSNP-lite output folder or an .h5ad with layers REF and ALT")
    if not path.lower().endswith(".h5ad"):
        raise ValueError(f"{path!r} is neither a cellSNP-lite folder nor an .h5ad file")
    import anndata

    try:
        return anndata.read_h5ad(path)
    except Exception as exc:
        raise ValueError(f"could not read {path!r} as .h5ad ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def write_outputs(folder: str, out, *, figures: bool, extra_lines: list[str] = ()) -> None:
    """result.h5ad, calls.csv, selection.csv, annotation.csv, summary.txt and clones.png in ``folder``."""
    import pandas as pd

    from ..clones import plot

    u = out.uns["clones"]
    out.write_h5ad(os.path.join(folder, "result.h5ad"))
    cols = [c for c in ("clone", "clone_prob_max", "cancer_prob", "cancer_call", "n_variants_covered") if c in out.obs]
    calls = out.obs[cols].copy()
    prob = pd.DataFrame(np.asarray(out.obsm["clone_prob"]), index=out.obs_names,
                        columns=[f"prob_clone_{c}" for c in range(u["n_clones"])])
    pd.concat([calls, prob], axis=1).to_csv(os.path.join(folder, "calls.csv"), index_label="barcode")
    u["selection"].to_csv(os.path.join(folder, "selection.csv"), index=False)
    if "annotation" in u:
        u["annotation"].to_csv(os.path.join(folder, "annotation.csv"), index=False)
    with open(os.path.join(folder, "summary.txt"), "w") as fh:
        fh.write(u["summary"] + "".join(f"\n{line}" for line in extra_lines) + "\n")
    if figures:
        plot(out, folder)


def clones_command(args, log) -> int:
    """``jaxfactor clones``; returns the exit status (errors are raised as ValueError)."""
    import sys

    from ..clones import call
    from ._output import atomic_dir

    t0 = time.perf_counter()
    truth = None
    if args.demo:
        if args.input:
            raise ValueError("give either an input or --demo, not both")
        from ..data import simulate_clones

        sim = simulate_clones(**DEMO)
        adata = _truth_renamed(sim.to_anndata())
        truth = Truth(sim.labels, sim.is_cancer)
        key = args.celltype_key or "celltype"
        healthy = _split(args.healthy) or DEMO_HEALTHY
        cancer = _split(args.cancer) or DEMO_CANCER
        _check_out(args.out, [], args.force)
    else:
        if not args.input:
            raise ValueError("give a cellSNP-lite folder or an .h5ad file (or --demo for the embedded simulation)")
        inputs = [args.input] + ([args.celltypes] if args.celltypes else [])
        _check_out(args.out, inputs, args.force)  # before reading anything
        adata = load_input(args.input)
        key, healthy, cancer = args.celltype_key, _split(args.healthy), _split(args.cancer)
    notes = []
    if args.celltypes:
        types, key, n = read_celltypes(args.celltypes, adata.obs_names, args.celltype_key)
        adata = adata.copy()
        adata.obs[key] = types
        if n < adata.n_obs:
            notes.append(f"note: {adata.n_obs - n} of {adata.n_obs} cells have no row in {args.celltypes}; "
                         "they are called but do not vote in the clone labels")
    elif key and key not in adata.obs:
        raise ValueError(f"obs[{key!r}] not found in {args.input}; pass --celltypes FILE.csv or one of: "
                         f"{', '.join(map(str, adata.obs.columns)) or 'no obs columns'}")
    if (healthy or cancer) and not key:
        raise ValueError("--healthy/--cancer need a cell-type annotation: --celltypes FILE.csv or --celltype-key COL")
    if key and adata.obs[key].isna().any():
        adata = adata.copy() if not args.celltypes else adata
        adata.obs[key] = adata.obs[key].astype(object).where(adata.obs[key].notna(), "unknown")
    quiet = args.quiet
    out = call(adata, celltype_key=key or None, healthy=healthy, cancer=cancer, method=args.method,
               n_components=_n_clones(args.n_clones), n_init=args.n_init, seed=args.seed, threshold=args.threshold,
               log=None if quiet else log)
    lines = list(notes)
    if truth is not None:
        m = truth_metrics(out, truth)
        lines.append(f"accuracy against the simulated truth: clones ARI {m['ari']:.3f}; cancer/healthy calls: strict balanced "
                     f"accuracy {m['strict_balanced_accuracy']:.3f} (undetermined counted wrong), "
                     f"{m['balanced_accuracy_called']:.3f} over the {100 * m['called_share']:.1f} % of cells called")
    with atomic_dir(args.out, args.force) as tmp:
        write_outputs(tmp, out, figures=not args.no_figures, extra_lines=lines)
    print(out.uns["clones"]["summary"])
    for line in lines:
        print(line)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    sys.stdout.flush()
    return 0


# ----------------------------------------------------------------------------------------------
# runner task
# ----------------------------------------------------------------------------------------------

def _fields():
    from ._schema import INT_OR_AUTO, Field

    return {
        "method": Field(str, "allele", choices=("allele", "binomial", "cclone"), help="clone model"),
        "n_clones": Field(INT_OR_AUTO, "auto", help="'auto' (2-6) or a number of clones"),
        "n_init": Field(int, 10, help="random starts per candidate number of clones"),
        "max_iter": Field(int, 1000, help="iterations per fit"),
        "tol": Field(float, 1e-6, help="relative objective change per 10 iterations that stops a fit"),
        "criterion": Field(str, "", choices=("", "bic", "aic", "elbo", "orth_score", "stability"),
                           help="how K is chosen (empty: the method's default)"),
        "celltype_key": Field(str, "", help="obs column with cell types (empty: clones only)"),
        "healthy": Field(list, [], help="healthy cell types"),
        "cancer": Field(list, [], help="cancer cell types"),
        "threshold": Field(float, 0.3, help="cancer when P(cancer clones) - P(healthy clones) > threshold"),
        "mixed_fraction": Field(float, 0.2), "min_annotated": Field(int, 10),
        "drop_rna_editing": Field(bool, True, help="drop var['REDIdb'] sites"),
        "drop_germline": Field(bool, False, help="drop var['dbSNP'] sites (kept by default: LOH is signal)"),
        "min_cells": Field(int, 2, help="ALT and REF each seen in at least this many cells"),
        "site_dropout": Field(bool, True, help="allele: one dropout rate per variant"),
        "n_bootstrap": Field(int, 50, help="cclone: bootstraps"),
        "min_maf": Field(float, 5.0, help="cclone: its MAF filter (percent of cells)"),
        "min_cell_coverage": Field(float, 10.0, help="cclone: its cell filter"),
        "filter_germline": Field(bool, True, help="cclone: drop dbSNP sites"),
        "min_allele_reads": Field(int, 2, help="cclone: reads that make an allele seen (2: published files; 1: current code)"),
    }


CLONES_FIELDS = _fields()
_METHOD_KEYS = {"allele": ("site_dropout",), "binomial": (),
                "cclone": ("n_bootstrap", "min_maf", "min_cell_coverage", "filter_germline", "min_allele_reads")}


@dataclass
class ClonesLoaded:
    adata: Any
    truth: Truth | None


class ClonesTask:
    """``[model] name = "clones"``: ``jaxfactor.clones.call`` on simulated clones (scored against the
    truth) or on an .h5ad / cellSNP-lite folder; writes the call's AnnData, tables and figure."""

    def load(self, cfg) -> ClonesLoaded:
        from ..data import simulate_clones
        from ._cclone_task import CcloneTask

        d = cfg.data
        if "simulator" in d:
            sim = simulate_clones(**{k: v for k, v in d.items() if k != "simulator"})
            return ClonesLoaded(_truth_renamed(sim.to_anndata()), Truth(sim.labels, sim.is_cancer))
        return ClonesLoaded(CcloneTask().load(cfg).adata, None)

    def execute(self, cfg, loaded: ClonesLoaded, points=None):
        """One call per method (``[sweep] method = [...]`` compares them on one page: each method is a
        resumable point; ``comparison.csv`` lists them side by side with their agreement)."""
        from ..clones import call
        from ._cclone_task import PipelineOutcome
        from ._resume import fit_sweep

        m = cfg.model
        methods = cfg.sweep.get("method", [m["method"]])

        def fit_point(method):
            t0 = time.perf_counter()
            out = call(loaded.adata, celltype_key=m["celltype_key"] or None, healthy=m["healthy"], cancer=m["cancer"],
                       method=method, n_components=m["n_clones"], n_init=m["n_init"], max_iter=m["max_iter"], tol=m["tol"],
                       seed=cfg.fit["seed"], criterion=(m["criterion"] or None) if len(methods) == 1 else None,
                       threshold=m["threshold"], mixed_fraction=m["mixed_fraction"], min_annotated=m["min_annotated"],
                       drop_rna_editing=m["drop_rna_editing"], drop_germline=m["drop_germline"], min_cells=m["min_cells"],
                       log=_stderr, **{k: m[k] for k in _METHOD_KEYS[method]})
            return _record(out, method, loaded.truth, time.perf_counter() - t0), out

        records, outs = fit_sweep(points, "method", methods, fit_point)
        for i, rec in enumerate(records):
            rec["id"] = f"p{i:03d}"
            rec["params"] = {**m, "method": methods[i]}
        tables = {}
        single = len(methods) == 1
        for method, out in zip(methods, outs):
            suffix = "" if single else f"_{method}"
            tables[f"selection{suffix}.csv"] = out.uns["clones"]["selection"]
            if "annotation" in out.uns["clones"]:
                tables[f"annotation{suffix}.csv"] = out.uns["clones"]["annotation"]
        if not single:
            tables["comparison.csv"] = _comparison(methods, outs, records)
            records[-1]["summary"] += "\n  methods side by side (comparison.csv):\n" + "\n".join(
                "    " + line for line in tables["comparison.csv"].to_string(index=False).splitlines())
        figures = None
        if cfg.run["figures"]:
            from ..clones import plot

            def figures(folder):
                for method, out in zip(methods, outs):
                    plot(out, folder, "clones.png" if single else f"clones_{method}.png")

        adata = outs[0]
        for method, out in zip(methods[1:], outs[1:]):  # the other methods' calls beside the first's
            for col in ("clone", "cancer_prob", "cancer_call"):
                if col in out.obs:
                    adata.obs[f"{col}_{method}"] = out.obs[col].reindex(adata.obs_names).to_numpy()
        return PipelineOutcome(records, adata, tables, figures)


def _record(out, method, truth, seconds):
    u = out.uns["clones"]
    record = {"method": method, "n_clones": int(u["n_clones"]), "n_cells": int(out.n_obs), "n_vars": int(out.n_vars),
              "seconds": seconds, "validation_passed": bool(u["validation"]["passed"]),
              "validation_messages": [str(x) for x in u["validation"]["messages"]]}
    if "cancer_call" in out.obs:
        record["calls"] = {k: int(v) for k, v in out.obs["cancer_call"].value_counts().items()}
    lines = [u["summary"]]
    if truth is not None:
        record["truth"] = t = truth_metrics(out, truth)
        if "strict_balanced_accuracy" in t:
            lines.append(f"accuracy against the simulated truth: clones ARI {t['ari']:.3f}; cancer/healthy calls: strict "
                         f"balanced accuracy {t['strict_balanced_accuracy']:.3f}, {100 * t['called_share']:.1f} % of cells called")
        else:
            lines.append(f"accuracy against the simulated truth: clones ARI {t['ari']:.3f}")
    record["summary"] = "\n".join("  " + line for line in "\n".join(lines).splitlines())
    return record


def _comparison(methods, outs, records):
    """One row per method: clones, calls, truth metrics, time, and agreement with the first method."""
    import pandas as pd

    from ..cclone import adjusted_rand_index

    first = outs[0]
    rows = []
    for method, out, rec in zip(methods, outs, records):
        row = {"method": method, "n_clones": rec["n_clones"], "n_variants": rec["n_vars"], "seconds": rec["seconds"],
               "validation_passed": rec["validation_passed"], **{f"n_{k}": v for k, v in rec.get("calls", {}).items()},
               **rec.get("truth", {})}
        shared = out.obs_names.intersection(first.obs_names)
        row[f"ari_vs_{methods[0]}"] = adjusted_rand_index(first.obs.loc[shared, "clone"].cat.codes.to_numpy(),
                                                          out.obs.loc[shared, "clone"].cat.codes.to_numpy())
        if "cancer_call" in out.obs and "cancer_call" in first.obs:
            row[f"call_agreement_vs_{methods[0]}"] = float(np.mean(first.obs.loc[shared, "cancer_call"].astype(str).to_numpy()
                                                                   == out.obs.loc[shared, "cancer_call"].astype(str).to_numpy()))
        rows.append(row)
    return pd.DataFrame(rows)


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
