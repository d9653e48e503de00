"""CCLONE on AnnData: ``fit`` (one k, bootstrapped), ``sweep`` (grid over k and filters) and the
model-selection table.

Input: AnnData cells × variants with integer layers ``REF`` and ``ALT``. Output keys follow the
published CCLONE tool so downstream notebooks keep working: layers ``M`` and ``weights``; obsm
``C`` and ``C_std``; varm ``V`` and ``V_std``; uns ``k`` and ``orth_score``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._protocol import renamed_arguments
from .._validate import check_choice, check_int, check_nonnegative_float, check_positive_int, check_probability
from ..data import check_allele_counts, filter_variants, variant_matrices
from ._engine import INITS, BootstrapSummary, bootstrap_masks, consensus_start, run_batch, summarise

METHODS = ("bcd", "mu")
CRITERIA = ("orth_score", "stability")


def _check_options(n_bootstrap, bootstrap_fraction, n_cycles, method, tol, l2, init="consensus", n_init=10):
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_positive_int(n_init, "n_init")
    check_choice(init, "init", INITS)
    check_positive_int(n_cycles, "n_cycles")
    check_probability(bootstrap_fraction, "bootstrap_fraction", low_open=True)
    check_choice(method, "method", METHODS)
    check_nonnegative_float(tol, "tol")
    check_nonnegative_float(l2, "l2")


def _check_k(k, n_vars: int | None = None, n_cells: int | None = None, where: str = "") -> int:
    """k is an integer >= 1 and, when the data shape is given, below the number of variants."""
    check_int(k, "n_components", 1)
    if n_vars is not None and (k >= n_vars or k > n_cells):
        raise ValueError(
            f"k={k} needs more variants than factors{where}: {n_vars} variants and {n_cells} cells; "
            "choose a smaller k or relax the filters"
        )
    return int(k)


def _factor_labels(C):
    """Each cell's dominant factor (argmax of C) as a categorical of "0", "1", … (so scanpy colours
    it by category, not on a continuous scale)."""
    import pandas as pd

    k = C.shape[1]
    return pd.Categorical(np.asarray(C).argmax(axis=1).astype(str), categories=[str(i) for i in range(k)])


def _result_anndata(adata, M, W, summary: BootstrapSummary, rows, cols, k, params: dict):
    """A copy of ``adata`` (restricted to the used cells/variants) with CCLONE's keys."""
    out = adata[rows][:, cols].copy() if (len(rows) != adata.n_obs or len(cols) != adata.n_vars) else adata.copy()
    out.layers["M"] = np.asarray(M)[np.ix_(rows, cols)].astype(np.float32)
    out.layers["weights"] = np.asarray(W)[np.ix_(rows, cols)].astype(np.float32)
    out.obsm["C"], out.obsm["C_std"] = summary.C.astype(np.float32), summary.C_std.astype(np.float32)
    out.varm["V"], out.varm["V_std"] = summary.V.astype(np.float32), summary.V_std.astype(np.float32)
    out.obs["cclone_factor"] = _factor_labels(summary.C)
    out.uns["k"] = int(k)
    out.uns["orth_score"] = summary.orth_score
    out.uns["cclone"] = {
        **params,
        "loss": summary.loss,
        "stability": summary.stability,
        "bootstrap_losses": summary.boot_losses,
        "n_iter": summary.n_iter,
        "converged": summary.converged,
    }
    return out


def _check_weights(W, mode, min_allele_reads) -> None:
    """A fit needs evidence: with no weighted entry (nothing covered by ``min_allele_reads`` reads)
    every C and V would be an arbitrary start with a loss of 0."""
    if not np.any(np.asarray(W) > 0):
        raise ValueError(f"no cell has a weighted call at any variant (mode={mode!r}, min_allele_reads={min_allele_reads}): "
                         "the coverage is empty; check the REF/ALT layers or lower min_allele_reads")


@renamed_arguments(k="n_components", n_cycles="max_iter")
def fit(adata, n_components: int, *, n_bootstrap: int = 50, bootstrap_fraction: float = 0.9, max_iter: int = 100,
        mode: str = "smartseq", seed: int = 0, method: str = "bcd", tol: float = 1e-6, l2: float = 0.0,
        min_allele_reads: int = 2, init: str = "consensus", n_init: int = 10, bootstrap_seed: int | None = None):
    """Bootstrap-averaged box-constrained weighted NMF M ≈ C Vᵀ (CCLONE) on an AnnData.

    ``n_components`` is CCLONE's rank k (``k=`` still works, deprecated). Each of ``n_bootstrap``
    fits uses a random ``bootstrap_fraction`` of the variants and runs up to ``max_iter``
    alternating cycles (CCLONE's ``n_cycles``, deprecated here), stopping early when the loss
    changes by less than ``tol`` relative over 10 cycles; all bootstraps run in one compiled,
    vmapped call. Factors are aligned across bootstraps and averaged.

    Returns a new AnnData (input untouched, same obs and var order) with layers ``M``,
    ``weights``; obsm ``C``, ``C_std``; varm ``V``, ``V_std``; obs ``cclone_factor`` (categorical)
    (argmax of C); uns ``k``, ``orth_score`` and ``cclone`` (parameters, loss, stability, traces).
    C and V never hold NaN; ``V_std`` is NaN for a variant kept by fewer than two bootstraps.

    ``min_allele_reads`` (default 2) is how many reads make an allele "seen" in M and W; 2
    reproduces CCLONE's published matrices. 1 keeps single-read evidence, which labels cells
    better at low coverage on simulated data (see experiments/benchmarks/cclone_accuracy.py).

    ``init``: ``"consensus"`` (default) starts every bootstrap from the lowest-loss random-start fit
    on all variants (batches of ``n_init`` starts until its partition of the cells recurred from 3
    starts, at most 10 batches), so the average does not depend on the seed beyond the variant
    subsets; ``"random"`` starts each bootstrap from its own Uniform(0, 1) factors, as
    CCLONE does (the average then depends on which local optimum each bootstrap found).

    ``bootstrap_seed`` draws the bootstraps' variant subsets. Default: 0 with the consensus start
    — a fixed resampling design, so equal data give an equal average whatever ``seed`` (which
    then only draws the random starts) —, and ``seed`` itself with ``init="random"``, as CCLONE
    draws everything from one seed. Pass other values to see how the average moves with the
    subsets.
    """
    k, n_cycles = n_components, max_iter  # CCLONE's names: the rank k, alternating cycles
    _check_options(n_bootstrap, bootstrap_fraction, n_cycles, method, tol, l2, init, n_init)
    check_allele_counts(adata)
    k = _check_k(k, adata.n_vars, adata.n_obs)
    M, W = variant_matrices(adata, mode, min_allele_reads=min_allele_reads)
    _check_weights(W, mode, min_allele_reads)
    rng = np.random.default_rng(_bootstrap_seed(bootstrap_seed, seed, init))
    row_mask = np.ones(adata.n_obs, bool)
    col_mask = np.ones(adata.n_vars, bool)
    boots = bootstrap_masks(col_mask, n_bootstrap, bootstrap_fraction, rng)
    start = _start(M, W, k, row_mask, col_mask, n_bootstrap, init=init, n_init=n_init, method=method, n_cycles=n_cycles,
                   tol=tol, seed=seed, l2=l2)
    res = run_batch(M, W, k, np.broadcast_to(row_mask, (n_bootstrap, adata.n_obs)), boots,
                    method=method, n_cycles=n_cycles, tol=tol, seed=seed, l2=l2, start=start)
    summary = summarise(M, W, row_mask, col_mask, boots, res.state.C, res.state.V, res.trace[:, -1], res.n_iter, res.converged)
    params = dict(n_bootstrap=n_bootstrap, bootstrap_fraction=bootstrap_fraction, n_cycles=n_cycles, mode=mode,
                  seed=seed, method=method, tol=tol, l2=l2, min_allele_reads=min_allele_reads, init=init, n_init=n_init,
                  bootstrap_seed=_bootstrap_seed(bootstrap_seed, seed, init))
    return _result_anndata(adata, M, W, summary, np.arange(adata.n_obs), np.arange(adata.n_vars), k, params)


def _bootstrap_seed(bootstrap_seed, seed, init):
    """The seed of the bootstrap subsets (see ``fit``)."""
    if bootstrap_seed is None:
        return seed if init == "random" else 0
    return check_int(bootstrap_seed, "bootstrap_seed", 0, allow_none=True)


def _start(M, W, k, row_mask, col_mask, n_bootstrap, *, init, n_init, method, n_cycles, tol, seed, l2):
    """Starting factors of ``n_bootstrap`` fits: None (random) or the consensus start, repeated."""
    if init == "random":
        return None
    C0, V0 = consensus_start(M, W, k, row_mask, col_mask, n_init=n_init, method=method, n_cycles=n_cycles, tol=tol,
                             seed=seed + 7919, l2=l2)
    return np.broadcast_to(C0, (n_bootstrap,) + C0.shape), np.broadcast_to(V0, (n_bootstrap,) + V0.shape)


@dataclass
class SweepResult:
    """``best``: the chosen fit (AnnData, as from ``fit``); ``table``: one row per grid point;
    ``fits``: every point's AnnData (None where the point was skipped)."""

    best: object
    table: object  # pandas.DataFrame
    fits: list = field(default_factory=list)
    criterion: str = "orth_score"


@renamed_arguments(n_cycles="max_iter")
def sweep(adata, ks=(2, 3, 4, 5), min_mafs=(2, 5, 10), filter_germline=(True, False), *, min_cell_coverage: float = 10,
          n_bootstrap: int = 50, bootstrap_fraction: float = 0.9, max_iter: int = 100, mode: str = "smartseq",
          seed: int = 0, method: str = "bcd", tol: float = 1e-6, l2: float = 0.0, criterion: str = "orth_score",
          min_allele_reads: int = 2, init: str = "consensus", n_init: int = 10, bootstrap_seed: int | None = None):
    """Fit every (k, min_maf, filter_germline) point, each with its bootstraps, and choose one.

    Filters become masks on the unfiltered matrices, so every point of one k — all filter
    settings × all bootstraps — runs in a single compiled call (one compilation per k).
    Points whose filters leave nothing, or fewer variants than k + 1, are listed as skipped.

    ``criterion``: ``"orth_score"`` (CCLONE's: the highest orthogonality score of C) or
    ``"stability"`` (the highest mean adjusted Rand index between each bootstrap's cell labels
    and the consensus labels; ties go to the smaller k). ``init`` / ``n_init`` / ``bootstrap_seed``: as in ``fit``
    (each filter setting gets its own consensus start). Returns a ``SweepResult``.
    """
    plan = _SweepPlan.make(adata, ks, min_mafs, filter_germline, min_cell_coverage=min_cell_coverage,
                           n_bootstrap=n_bootstrap, bootstrap_fraction=bootstrap_fraction, n_cycles=max_iter, mode=mode,
                           seed=seed, method=method, tol=tol, l2=l2, criterion=criterion, min_allele_reads=min_allele_reads,
                           init=init, n_init=n_init, bootstrap_seed=bootstrap_seed)
    return plan.select([plan.fit_k(k) for k in plan.ks])


@dataclass
class _SweepPlan:
    """``sweep`` in parts, so a caller (the runner's resumable sweep) can run one k at a time and
    keep each k's outcome: ``make`` validates and draws the filters and bootstrap masks (shared
    by every k), ``fit_k(k)`` fits all filter settings of one k (it depends on k only: its RNG
    seed is ``seed + k``), ``select`` builds the table and chooses. ``sweep`` is exactly
    ``plan.select([plan.fit_k(k) for k in plan.ks])``."""

    adata: object
    ks: list
    M: np.ndarray
    W: np.ndarray
    filters: list  # (min_maf, germline, row_mask, col_mask, error)
    boots: dict
    params: dict
    criterion: str

    @classmethod
    def make(cls, adata, ks, min_mafs, filter_germline, *, min_cell_coverage, n_bootstrap, bootstrap_fraction, n_cycles,
             mode, seed, method, tol, l2, criterion, min_allele_reads, init="consensus", n_init=10,
             bootstrap_seed=None) -> "_SweepPlan":
        _check_options(n_bootstrap, bootstrap_fraction, n_cycles, method, tol, l2, init, n_init)
        check_choice(criterion, "criterion", CRITERIA)
        ks = [_check_k(k) for k in ks]
        if not ks or not min_mafs or not filter_germline:
            raise ValueError("ks, min_mafs and filter_germline each need at least one value")
        check_allele_counts(adata)
        obs_index = {name: i for i, name in enumerate(adata.obs_names)}
        var_index = {name: j for j, name in enumerate(adata.var_names)}
        if len(obs_index) != adata.n_obs or len(var_index) != adata.n_vars:
            raise ValueError("obs_names and var_names must be unique for a sweep; call adata.obs_names_make_unique() first")

        filters = []  # (min_maf, germline, row_mask, col_mask, error)
        for maf in min_mafs:
            for germ in filter_germline:
                try:
                    f = filter_variants(adata, min_maf=maf, filter_germline=germ, min_cell_coverage=min_cell_coverage)
                    rows = np.zeros(adata.n_obs, bool)
                    rows[[obs_index[n] for n in f.obs_names]] = True
                    cols = np.zeros(adata.n_vars, bool)
                    cols[[var_index[n] for n in f.var_names]] = True
                    filters.append((maf, germ, rows, cols, ""))
                except ValueError as exc:
                    filters.append((maf, germ, None, None, str(exc)))
        # cells and variants that no filter setting keeps are dropped before anything is built or
        # compiled (M and W are elementwise in REF / ALT, so this changes no fit)
        keep_rows = np.logical_or.reduce([f[2] for f in filters if f[2] is not None] or [np.ones(adata.n_obs, bool)])
        keep_cols = np.logical_or.reduce([f[3] for f in filters if f[3] is not None] or [np.ones(adata.n_vars, bool)])
        if not (keep_rows.all() and keep_cols.all()):
            adata = adata[keep_rows][:, keep_cols].copy()
            filters = [(maf, germ, rows if rows is None else rows[keep_rows], cols if cols is None else cols[keep_cols], err)
                       for maf, germ, rows, cols, err in filters]
        M, W = variant_matrices(adata, mode, min_allele_reads=min_allele_reads)

        rng = np.random.default_rng(_bootstrap_seed(bootstrap_seed, seed, init))
        boots = {i: bootstrap_masks(f[3], n_bootstrap, bootstrap_fraction, rng) for i, f in enumerate(filters) if f[2] is not None}
        params = dict(n_bootstrap=n_bootstrap, bootstrap_fraction=bootstrap_fraction, n_cycles=n_cycles, mode=mode,
                      seed=seed, method=method, tol=tol, l2=l2, min_cell_coverage=min_cell_coverage,
                      min_allele_reads=min_allele_reads, init=init, n_init=n_init,
                      bootstrap_seed=_bootstrap_seed(bootstrap_seed, seed, init))
        return cls(adata, ks, M, W, filters, boots, params, criterion)

    def fit_k(self, k: int) -> tuple[list, list]:
        """The table rows and fits (AnnData, None where skipped) of every filter setting at ``k``."""
        adata, M, W, filters, boots, p = self.adata, self.M, self.W, self.filters, self.boots, self.params
        n_bootstrap = p["n_bootstrap"]
        rows_out, fits = [], []
        todo = [i for i, f in enumerate(filters) if f[2] is not None and f[3].sum() > k and f[2].sum() >= k]
        if todo:
            row_masks = np.concatenate([np.broadcast_to(filters[i][2], (n_bootstrap, adata.n_obs)) for i in todo])
            col_masks = np.concatenate([boots[i] for i in todo])
            starts = [_start(M, W, k, filters[i][2], filters[i][3], n_bootstrap, init=p["init"], n_init=p["n_init"],
                             method=p["method"], n_cycles=p["n_cycles"], tol=p["tol"], seed=p["seed"] + k, l2=p["l2"])
                      for i in todo]
            start = None if starts[0] is None else tuple(np.concatenate([s[j] for s in starts]) for j in range(2))
            res = run_batch(M, W, k, row_masks, col_masks, method=p["method"], n_cycles=p["n_cycles"], tol=p["tol"],
                            seed=p["seed"] + k, l2=p["l2"], start=start)
        for i, (maf, germ, rmask, cmask, err) in enumerate(filters):
            row = {"k": k, "min_maf": maf, "filter_germline": germ}
            if i not in todo:
                reason = err or f"k={k} needs more than {int(cmask.sum())} variants"
                rows_out.append({**row, "n_cells": 0 if rmask is None else int(rmask.sum()),
                                 "n_vars": 0 if cmask is None else int(cmask.sum()), "skipped": reason})
                fits.append(None)
                continue
            sl = slice(todo.index(i) * n_bootstrap, (todo.index(i) + 1) * n_bootstrap)
            s = summarise(M, W, rmask, cmask, boots[i], res.state.C[sl], res.state.V[sl], res.trace[sl, -1],
                          res.n_iter[sl], res.converged[sl])
            fit_ad = _result_anndata(adata, M, W, s, np.flatnonzero(rmask), np.flatnonzero(cmask), k,
                                     {**p, "min_maf": maf, "filter_germline": germ})
            fits.append(fit_ad)
            rows_out.append({**row, "n_cells": int(rmask.sum()), "n_vars": int(cmask.sum()), "orth_score": s.orth_score,
                             "loss": s.loss, "loss_per_weight": s.loss / max(float(fit_ad.layers["weights"].sum()), 1e-12),
                             "stability": s.stability, "skipped": ""})
        return rows_out, fits

    def select(self, per_k: list[tuple[list, list]]) -> SweepResult:
        """The table (rows of every k, in order) and the chosen fit, from ``fit_k``'s outcomes."""
        import pandas as pd

        rows_out = [row for rows, _ in per_k for row in rows]
        fits = [f for _, fs in per_k for f in fs]
        table = pd.DataFrame(rows_out)
        ok = table["skipped"] == ""
        if not ok.any():
            raise ValueError(f"every sweep point was skipped (first reason: {table['skipped'].iloc[0]}); relax the filters or lower k")
        cand = table[ok]
        order = cand.sort_values([self.criterion, "k"], ascending=[False, True])
        best = int(order.index[0])
        table["chosen"] = False
        table.loc[best, "chosen"] = True
        return SweepResult(fits[best], table, fits, self.criterion)
