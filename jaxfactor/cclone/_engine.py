"""Array-level bootstrap engine for CCLONE: masks, one compiled batch of fits, alignment, summary.

Every fit of a grid (filter settings × bootstraps) runs on the same full M and W: a filter is a
row/column mask and a bootstrap is a column mask keeping ``bootstrap_fraction`` of the filter's
variants. All masks go through one ``fit_batch`` call per rank k (``WNMFData(None, None, 0, 0)``:
the matrices are shared, the masks batched), so the grid compiles once per k.

Factors of different bootstraps are only defined up to a permutation of the k columns; they are
aligned to the lowest-loss bootstrap, then to the running mean, by maximum total cosine
similarity of C's columns (``scipy.optimize.linear_sum_assignment``) before averaging, as CCLONE
does before reporting mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from .._fit import fit_batch
from ..factorization._wnmf import WNMF_METHODS, WNMFData, WNMFHparams, WNMFState, box_qp_rows
from ._metrics import adjusted_rand_index, orth_score


@dataclass
class BootstrapSummary:
    """Aligned bootstrap averages for one grid point (cells/variants outside the masks excluded)."""

    C: np.ndarray  # (n_used_cells, k)
    C_std: np.ndarray
    V: np.ndarray  # (n_used_variants, k); no NaN
    V_std: np.ndarray  # NaN where a variant was in fewer than 2 bootstraps
    loss: float  # weighted loss of the mean factors on the used entries
    boot_losses: np.ndarray  # (n_bootstrap,)
    orth_score: float
    stability: float  # mean ARI of each bootstrap's argmax(C) labels vs the consensus labels
    n_iter: np.ndarray
    converged: np.ndarray


def bootstrap_masks(col_mask: np.ndarray, n_bootstrap: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n_bootstrap, p) masks, each keeping round(fraction · kept) of the variants in ``col_mask``."""
    kept = np.flatnonzero(col_mask)
    n_keep = max(1, int(round(fraction * kept.size)))
    masks = np.zeros((n_bootstrap, col_mask.size), dtype=bool)
    for b in range(n_bootstrap):
        masks[b, rng.choice(kept, size=n_keep, replace=False)] = True
    return masks


def run_batch(M, W, k: int, row_masks: np.ndarray, col_masks: np.ndarray, *, method: str, n_cycles: int, tol: float,
              seed: int, l2: float = 0.0, inner_sweeps: int = 2, start=None):
    """Fit one box-constrained weighted NMF per (row_mask, col_mask) pair in one compiled call.

    ``start``: optional (C0 (B, n, k), V0 (B, p, k)) starting factors; default Uniform(0, 1)."""
    alg = WNMF_METHODS[method](k, inner_sweeps) if method == "bcd" else WNMF_METHODS[method](k)
    dt = jnp.zeros(()).dtype
    data = WNMFData(jnp.asarray(M, dt), jnp.asarray(W, dt), jnp.asarray(row_masks, dt), jnp.asarray(col_masks, dt))
    B, (n, p) = row_masks.shape[0], M.shape
    # Uniform(0, 1) starting factors, as the algorithm's own init draws them, but drawn on the
    # host: this keeps the PRNG out of the compiled program (about a second less compilation).
    rng = np.random.default_rng(seed)
    if start is None:
        start = (rng.random((B, n, k)), rng.random((B, p, k)))
    state0 = WNMFState(jnp.asarray(start[0], dt), jnp.asarray(start[1], dt))
    keys = jax.random.split(jax.random.PRNGKey(seed), B)
    res = fit_batch(alg, data, WNMFHparams(l2, l2), keys, data_axes=WNMFData(None, None, 0, 0),
                    max_iter=n_cycles, tol=tol, chunk_size=min(10, n_cycles), state0=state0)
    return jax.tree_util.tree_map(np.asarray, res)


INITS = ("consensus", "random")


def consensus_start(M, W, k: int, row_mask: np.ndarray, col_mask: np.ndarray, *, n_init: int, method: str,
                    n_cycles: int, tol: float, seed: int, l2: float = 0.0, max_init: int | None = None, hits: int = 3):
    """The lowest-loss fit from Uniform(0, 1) starts on every variant of the filter: ``(C, V)``,
    the common start of every bootstrap with ``init="consensus"``.

    CCLONE starts each bootstrap from its own random factors; the weighted NMF has local optima,
    so the bootstrap average then depends on the seed (which optimum each bootstrap fell into).
    Starting every bootstrap from the best full-data fit makes the bootstraps measure what they are
    meant to — the variability due to the variants. Fits run in batches of ``n_init`` (one compiled
    call each) until the lowest-loss partition of the cells (argmax C, ARI >= 0.99) was reached from
    ``hits`` starts, or ``max_init`` (default 10 · n_init) starts were spent: near-equal optima
    (patient A4 at k = 3) otherwise give a different start, and average, for every seed."""
    from ._metrics import recurrences

    max_init = 10 * n_init if max_init is None else max_init
    rows = np.flatnonzero(row_mask)
    Cs, Vs, losses = [], [], []
    for b in range(max(1, -(-max_init // n_init))):
        res = run_batch(M, W, k, np.broadcast_to(row_mask, (n_init, row_mask.size)),
                        np.broadcast_to(col_mask, (n_init, col_mask.size)), method=method, n_cycles=n_cycles, tol=tol,
                        seed=seed + 104729 * b, l2=l2)
        last = res.trace[:, -1]
        ok = np.isfinite(last)
        Cs += list(res.state.C[ok]); Vs += list(res.state.V[ok]); losses += list(last[ok])  # noqa: E702
        if not losses:
            continue
        if recurrences([C[rows].argmax(axis=1) for C in Cs], int(np.argmin(losses))) >= hits:
            break
    if not losses:
        raise FloatingPointError("every weighted-NMF start diverged; check M and W for NaN/inf")
    best = int(np.argmin(losses))
    return Cs[best], Vs[best]


def _cosine(A, B):
    An = A / np.maximum(np.linalg.norm(A, axis=0, keepdims=True), 1e-12)
    Bn = B / np.maximum(np.linalg.norm(B, axis=0, keepdims=True), 1e-12)
    return An.T @ Bn


def align(Cs: np.ndarray, Vs: np.ndarray, ref: int) -> tuple[np.ndarray, np.ndarray]:
    """Permute the k columns of every bootstrap to match bootstrap ``ref``, then the mean."""
    Cs, Vs = Cs.copy(), Vs.copy()
    target = Cs[ref]
    for _ in range(2):
        for b in range(Cs.shape[0]):
            _, perm = linear_sum_assignment(-_cosine(target, Cs[b]))
            Cs[b], Vs[b] = Cs[b][:, perm], Vs[b][:, perm]
        target = Cs.mean(axis=0)
    return Cs, Vs


def summarise(M, W, row_mask, col_mask, boot_masks, C_all, V_all, losses, n_iter, converged) -> BootstrapSummary:
    """Align and average the bootstraps of one grid point.

    Returned C covers the cells in ``row_mask`` and V the variants in ``col_mask``. A variant's V
    averages the bootstraps that kept it (CCLONE's NaN-for-left-out convention, then ``nanmean``);
    a filtered-in variant that no bootstrap kept is solved exactly against the mean C, so V has
    no NaN. ``V_std`` is NaN where fewer than two bootstraps kept the variant.
    """
    rows, cols = np.flatnonzero(row_mask), np.flatnonzero(col_mask)
    Cs, Vs = align(C_all[:, rows, :], V_all[:, cols, :], int(np.argmin(losses)))
    kept = boot_masks[:, cols]
    counts = kept.sum(axis=0)
    Vs = np.where(kept[:, :, None], Vs, np.nan)
    C, C_std = Cs.mean(axis=0), Cs.std(axis=0)
    V = np.full((cols.size, C.shape[1]), np.nan)
    V_std = np.full_like(V, np.nan)
    some, many = counts >= 1, counts >= 2
    V[some] = np.nanmean(Vs[:, some], axis=0)
    V_std[many] = np.nanstd(Vs[:, many], axis=0)
    Mr, Wr = np.asarray(M)[np.ix_(rows, cols)], np.asarray(W)[np.ix_(rows, cols)]
    missing = np.flatnonzero(~some)
    if missing.size:
        Q = np.einsum("ij,ik,il->klj", Wr[:, missing], C, C)
        b = C.T @ (Wr[:, missing] * Mr[:, missing])
        x0 = jnp.full((C.shape[1], missing.size), 0.5)
        V[missing] = np.asarray(box_qp_rows(jnp.asarray(Q), jnp.asarray(b), x0, 50)).T
    labels = C.argmax(axis=1)
    stability = float(np.mean([adjusted_rand_index(Cb.argmax(axis=1), labels) for Cb in Cs]))
    loss = float(np.sum(Wr * (Mr - C @ V.T) ** 2))
    return BootstrapSummary(C, C_std, V, V_std, loss, np.asarray(losses), orth_score(C), stability, n_iter, converged)
