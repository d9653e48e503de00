"""``jaxfactor.clones.call``: every cell called cancer / healthy (and its clone) with a posterior.

From per-cell REF/ALT read counts at single-nucleotide variants (an AnnData with layers ``REF`` and
``ALT`` — or ``ALT``/``AD`` and ``DP`` — cells × variants, e.g. from
:func:`jaxfactor.data.read_cellsnp`) and, optionally, an expression cell-type annotation:

1. **Variants.** Known RNA-editing sites (``var['REDIdb']``) are dropped (as CCLONE does);
   germline heterozygous SNPs (``var['dbSNP']``) are *kept*: a loss of heterozygosity moves
   their allele fraction in cancer cells to 0 or 1, which is signal, and the allele model's
   allelic dropout keeps a healthy heterozygous site from looking clonal. Variants where the ALT or
   the REF allele is seen in fewer than ``min_cells`` cells carry no clone information and are
   dropped. (``method="cclone"`` applies CCLONE's own filter instead.)
2. **Clones.** The chosen model (:mod:`jaxfactor.clones._methods`) is fitted for every candidate
   number of clones, with restarts, and the number is chosen automatically (BIC for the allele
   model, the ELBO for the binomial mixture, CCLONE's orthogonality score for CCLONE).
3. **Calls.** Clones are labelled cancer / healthy from the cell types and every cell is called
   by :mod:`jaxfactor.clones._annotate` (CCLONE's rule on the posterior).

The input is never modified; all checks run before anything is compiled.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np

from .._protocol import renamed_arguments
from .._validate import check_choice, check_int, check_number, check_positive_int, check_probability

METHODS = ("allele", "binomial", "cclone")
DEFAULT_CANDIDATES = (2, 3, 4, 5, 6)
CRITERIA = {"allele": ("evidence", "bic", "aic"), "binomial": ("elbo", "bic"), "cclone": ("orth_score", "stability")}
#: method-specific settings accepted by ``call(..., **options)`` and their defaults
OPTIONS = {
    "allele": {"screen_iter": 30, "screen_cells": 2000, "n_converge": 3, "max_init": 100, "site_dropout": False},
    "binomial": {"max_init": 100},
    "cclone": {"n_bootstrap": 50, "min_maf": 5.0, "filter_germline": True, "min_cell_coverage": 10.0,
               "min_allele_reads": 2, "init": "consensus"},
}
DEFAULT_N_INIT = {"allele": 20, "binomial": 10, "cclone": 10}


def _layers(adata):
    """(ref, alt) from layers REF/ALT, or ALT (or AD) with DP; validated counts, input untouched."""
    from .._inputs import allele_layers

    return allele_layers(adata)


def _candidates(n_clones) -> list[int]:
    if isinstance(n_clones, str):
        if n_clones != "auto":
            raise ValueError(f"n_components must be an integer, a list of integers or 'auto', got {n_clones!r}")
        return list(DEFAULT_CANDIDATES)
    values = [n_clones] if np.isscalar(n_clones) else list(n_clones)
    try:
        ints = {check_int(v, "n_components", 1) for v in values}
    except ValueError:
        ints = set()
    if not ints:
        raise ValueError(f"n_components must be 'auto', an integer >= 1 or a list of them, got {n_clones!r}") from None
    return sorted(ints)


def _count_cells(x, axis):
    return np.asarray((x > 0).sum(axis=axis)).ravel()


def prefilter(adata, ref, alt, *, drop_rna_editing: bool, drop_germline: bool, min_cells: int):
    """Indices of the variants the count models use, and what was dropped (a dict of counts)."""
    from ..data._variants import _flag_column

    n = adata.n_vars
    redi = _flag_column(adata.var, "REDIdb") if drop_rna_editing else np.zeros(n, bool)
    germ = _flag_column(adata.var, "dbSNP") if drop_germline else np.zeros(n, bool)
    alt_cells, ref_cells = _count_cells(alt, 0), _count_cells(ref, 0)
    flat = (alt_cells < min_cells) | (ref_cells < min_cells)
    keep = ~redi & ~germ & ~flat
    dropped = {"rna_editing": int(redi.sum()), "germline": int((germ & ~redi).sum()),
               "uninformative": int((flat & ~redi & ~germ).sum())}
    if not keep.any():
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in dropped.items() if v]
        raise ValueError(f"no variant left after filtering {n} variants ({', '.join(parts)} dropped; uninformative = ALT or "
                         f"REF seen in fewer than min_cells={min_cells} cells); lower min_cells or check the input")
    return np.flatnonzero(keep), dropped


@renamed_arguments(n_clones="n_components")
def call(adata, *, celltype_key: str | None = None, healthy=(), cancer=(), method: str = "allele", n_components="auto",
         n_init: int | None = None, max_iter: int = 1000, tol: float = 1e-6, seed: int = 0, criterion: str | None = None,
         threshold: float = 0.3, mixed_fraction: float = 0.2, min_annotated: int = 10, drop_rna_editing: bool = True,
         drop_germline: bool = False, min_cells: int = 2, log=None, **options):
    """Call every cell cancer / healthy and assign its clone, with posteriors (module docstring).

    Args:
      adata: AnnData, cells × variants, with integer layers ``REF`` and ``ALT`` (or ``ALT``/``AD``
        and ``DP``); sparse layers stay sparse for the count models.
      celltype_key: obs column with an expression cell-type annotation (None: clones and their
        posteriors only, no cancer calls).
      healthy, cancer: cell types known to be healthy / cancer (e.g. ``["T cells", "B cells",
        "NK cells"]`` and ``["Immature"]`` in AML); other types are counted but do not vote.
      method: ``"allele"`` (the allele-count model with dropout and errors, MAP-EM; default),
        ``"binomial"`` (the binomial mixture, VB as vireoSNP) or ``"cclone"`` (CCLONE).
      n_components: the number of clones: ``"auto"`` (choose among 2–6), an integer, or a list of
        candidates (``n_clones=`` is the deprecated name).
        (``n_components`` is accepted as a synonym.)
      n_init: random starts per candidate (default 20 for the allele model, 10 otherwise). The
        allele model adds batches of n_init starts for the chosen K (and any K within 10 nats of it)
        until its best optimum was reached from 3 starts (at most ``max_init``).
      max_iter, tol: iterations per fit and the relative change (per 10 iterations) that stops it.
      seed: seed of the random starts (and CCLONE's bootstraps).
      criterion: how K is chosen: allele ``"bic"`` (default) / ``"aic"``; binomial ``"elbo"``
        (default) / ``"bic"``; cclone ``"orth_score"`` (default) / ``"stability"``.
      threshold: a cell is ``cancer`` when P(cancer clones) − P(healthy clones) > threshold,
        ``healthy`` when < −threshold, else ``undetermined`` (CCLONE's rule; 0.3).
      mixed_fraction, min_annotated: a clone is flagged *mixed* when its balanced cancer share lies
        in (mixed_fraction, 1 − mixed_fraction), *weak* when fewer than ``min_annotated``
        annotated cells decide its label; either fails validation (a warning and a flag).
      drop_rna_editing, drop_germline, min_cells: the variant filter of the count models.
      log: a callable receiving progress lines (e.g. ``print``); None is silent.
      options: method-specific settings (``OPTIONS``): allele ``screen_iter`` (30),
        ``screen_cells`` (2000), ``n_converge`` (3), ``max_init`` (100), ``site_dropout`` (False:
        one allelic-dropout rate; True: one per variant — it can absorb a clone carried by a single
        variant, see README); cclone ``n_bootstrap``, ``min_maf``,
        ``filter_germline``, ``min_cell_coverage``, ``min_allele_reads``, ``init``.

    Returns a new AnnData (all cells; the variants used) with obs ``clone`` (most probable, a
    category), ``clone_prob_max``, ``n_variants_covered`` and, with an annotation, ``cancer_prob``,
    ``cancer_call`` (an input column of one of these names is kept as ``<name>_input``); obsm ``clone_prob`` (cells × K; CCLONE: its loadings C); varm ``clone_af``
    with a 90 % interval ``clone_af_lower`` / ``clone_af_upper``; uns ``clones``: ``selection``
    (one row per candidate K), ``annotation`` (one row per clone), ``validation``, ``settings``,
    ``timings``, ``details``, ``filter`` and ``summary`` (the text :func:`summary` prints).

    Bad input — missing layers, ALT > depth, negative/non-integer/NaN counts, an unknown
    ``celltype_key``, types listed as both healthy and cancer or absent from the data, nothing
    left after filtering, more clones than cells — raises a one-line ``ValueError`` before anything
    is compiled.
    """
    import pandas as pd

    from ._annotate import annotate, check_annotation

    timings = {}
    t0 = time.perf_counter()
    check_choice(method, "method", METHODS)
    n_clones = n_components
    candidates = _candidates(n_clones)
    unknown = set(options) - set(OPTIONS[method])
    if unknown:
        valid = ", ".join(sorted(OPTIONS[method])) or "none"
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method '{method}'; valid: {valid}")
    opts = {**OPTIONS[method], **options}
    criterion = CRITERIA[method][0] if criterion is None else criterion
    if criterion not in CRITERIA[method]:
        raise ValueError(f"criterion {criterion!r} is not available for method '{method}'; use one of {CRITERIA[method]}")
    n_init = DEFAULT_N_INIT[method] if n_init is None else check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    min_cells = check_positive_int(min_cells, "min_cells")
    min_annotated = check_positive_int(min_annotated, "min_annotated", minimum=0)
    tol = check_number(tol, "tol", 0, 1, high_open=True)
    threshold = check_probability(threshold, "threshold", high_open=True)
    mixed_fraction = check_number(mixed_fraction, "mixed_fraction", 0, 0.5, high_open=True)
    check_positive_int(seed, "seed", minimum=0)

    ref, alt = _layers(adata)
    types = None
    if celltype_key is not None:
        if celltype_key not in adata.obs:
            raise ValueError(f"obs[{celltype_key!r}] not found; obs columns: {', '.join(map(str, adata.obs.columns)) or 'none'}")
        col = adata.obs[celltype_key]
        types = col.astype(str).to_numpy()
        n_missing = int(col.isna().sum())
        if n_missing == adata.n_obs:
            raise ValueError(f"obs[{celltype_key!r}] holds no cell type (all {n_missing} values missing)")
        types = np.where(col.isna().to_numpy(), "unknown", types)
    healthy, cancer = check_annotation(types, healthy, cancer, where=f"obs[{celltype_key!r}]")

    if method == "cclone":
        used = None
        dropped = {}
    else:
        used, dropped = prefilter(adata, ref, alt, drop_rna_editing=drop_rna_editing, drop_germline=drop_germline,
                                  min_cells=min_cells)
        ref, alt = ref[:, used], alt[:, used]
    depth = ref + alt
    covered = _count_cells(depth, 1)
    n_with = int(np.count_nonzero(covered))
    too_many = [k for k in candidates if k > n_with]
    if too_many and (not isinstance(n_clones, str) or len(too_many) == len(candidates)):
        raise ValueError(f"n_clones={too_many[0]} is more than the {n_with} cells with reads at the variants used; "
                         "choose fewer clones")
    candidates = [k for k in candidates if k <= n_with]
    timings["validate_filter"] = time.perf_counter() - t0

    from . import _methods

    t1 = time.perf_counter()
    if log:
        log(f"fitting method '{method}' for n_clones in {candidates} ({n_init} starts each)")
    from .._progress import task, timed

    with task(f"clones ({method})") if log else nullcontext(), timed() as clock:  # the fits report between chunks
        if method == "allele":
            fit = _methods.fit_allele(alt, depth, candidates, n_init=n_init, seed=seed, max_iter=max_iter, tol=tol,
                                      criterion=criterion, log=log, **opts)
        elif method == "binomial":
            fit = _methods.fit_binomial(alt, depth, candidates, n_init=n_init, seed=seed, max_iter=max_iter, tol=tol,
                                        criterion=criterion, log=log, **opts)
        else:
            fit = _methods.fit_cclone(adata, candidates, seed=seed, criterion=criterion, n_init=n_init, log=log, **opts)
    if method == "cclone":
        used = fit.variants
        covered = _count_cells(ref[:, used] + alt[:, used], 1)
    timings["fit"] = time.perf_counter() - t1
    timings["compile"] = clock.compile_seconds

    t2 = time.perf_counter()
    out = adata[:, used].copy()
    kept = []
    for key in ("clone", "clone_prob_max", "n_variants_covered", "cancer_prob", "cancer_call", "clone_fitted"):
        if key in out.obs:  # the input's own column of that name is kept beside ours, renamed
            out.obs[f"{key}_input"] = out.obs.pop(key)
            kept.append(key)
    k = fit.n_clones
    P = fit.membership
    prob = P / np.maximum(P.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    names = [str(i) for i in range(k)]
    out.obs["clone"] = pd.Categorical(np.asarray(names)[P.argmax(axis=1)], categories=names)
    out.obs["clone_prob_max"] = prob.max(axis=1).astype(np.float32)
    out.obs["n_variants_covered"] = covered.astype(np.int64)
    out.obsm["clone_prob"] = P.astype(np.float32)
    out.varm["clone_af"] = fit.af.astype(np.float32)
    out.varm["clone_af_lower"] = fit.af_lower.astype(np.float32)
    out.varm["clone_af_upper"] = fit.af_upper.astype(np.float32)
    uns = {"method": method, "n_clones": k, "criterion": criterion, "selection": fit.table,
           "details": {key: v for key, v in fit.details.items() if v is not None},
           "filter": {"n_variants_in": int(adata.n_vars), "n_variants_used": int(out.n_vars), **dropped},
           "settings": {"n_clones": n_clones if isinstance(n_clones, str) else np.asarray(candidates),
                        "n_init": n_init, "max_iter": max_iter, "tol": tol, "seed": seed, "threshold": threshold,
                        "mixed_fraction": mixed_fraction, "min_annotated": min_annotated,
                        "drop_rna_editing": bool(drop_rna_editing), "drop_germline": bool(drop_germline),
                        "min_cells": min_cells, **opts}}
    if celltype_key is not None:
        uns["settings"].update(celltype_key=celltype_key, healthy=np.asarray(healthy, dtype=object).astype(str),
                               cancer=np.asarray(cancer, dtype=object).astype(str))
    if fit.cells_fitted is not None:
        out.obs["clone_fitted"] = fit.cells_fitted
    validation = {"passed": True, "messages": []}
    if types is not None and (healthy or cancer):
        ann = annotate(P, types, healthy, cancer, covered=covered > 0, threshold=threshold,
                       mixed_fraction=mixed_fraction, min_annotated=min_annotated)
        out.obs["cancer_prob"] = ann.cancer_prob.astype(np.float32)
        out.obs["cancer_call"] = pd.Categorical(ann.call, categories=["cancer", "healthy", "undetermined"])
        uns["annotation"] = ann.table
        validation = {"passed": ann.passed, "messages": ann.messages}
        if ann.messages:
            import warnings

            from ._annotate import AnnotationWarning

            warnings.warn("clone annotation: " + "; ".join(ann.messages), AnnotationWarning, stacklevel=2)
    elif types is not None:
        uns["annotation"] = annotate(P, types, [], [], min_annotated=0).table
    uns["validation"] = {"passed": bool(validation["passed"]), "messages": np.asarray(validation["messages"], dtype=object).astype(str)}
    if kept:
        uns["renamed_input_columns"] = np.asarray([f"{key} -> {key}_input" for key in kept])
    timings["annotate"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    uns["timings"] = timings
    out.uns["clones"] = uns
    from ._report import summary

    uns["summary"] = summary(out)
    return out
