"""``jaxfactor clones``: the vireo-style one-liner from a cellSNP-lite folder (or an .h5ad with REF/ALT
layers) and a cell-type table to called cells (the runner's ``[model] name = "clones"`` is the
family task's, :class:`jaxfactor.clones._model.CloneCalls`).

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

import numpy as np

#: The embedded simulation of ``jaxfactor clones --demo`` (as ``experiments/clones_demo.toml``): an
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
    from ._output import check_free_space, check_out_dir, output_estimate

    check_out_dir(out, force, inputs)
    check_free_space(out, output_estimate(inputs))


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
    from ..data._io import write_h5ad

    u = out.uns["clones"]
    write_h5ad(out, os.path.join(folder, "result.h5ad"))
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
        from ..clones._report import call_accuracy

        m = call_accuracy(out, truth)
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
