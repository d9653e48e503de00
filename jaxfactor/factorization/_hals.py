"""Hierarchical alternating least squares (HALS): exact coordinate descent for Frobenius NMF.

With H fixed, the NMF objective is a convex quadratic in W; written for one factor ``F``
(k × m, one row per component: H itself, or Wᵀ) it is

    φ(F) = ½ tr(Fᵀ G F) − tr(Bᵀ F) + l1 ΣF + ½ l2 ‖F‖²_F  (+ a constant),

with ``G = WᵀW, B = WᵀX`` for ``F = H`` and ``G = HHᵀ, B = HXᵀ`` for ``F = Wᵀ``. Its
entries in one row ``F_j`` do not interact, so the row's exact minimiser with the other rows
fixed is one projected Newton step (Cichocki & Phan, "Fast local algorithms for large scale
nonnegative matrix and tensor factorizations", IEICE Trans. Fundamentals E92-A(3):708–721,
2009, the HALS update)::

    F_j ← max(0, F_j − ((G F)_j − B_j + l1 + l2 F_j) / (G_jj + l2))

A sweep applies it to rows j = 0 … k−1 in order (a row whose ``G_jj + l2`` is 0 is left as it
is). This is scikit-learn's ``NMF(solver="cd", shuffle=False)``: its Cython loop updates column
t of W for every row i with the same gradient and curvature (l2 added to the diagonal of HHᵀ,
l1 subtracted from XHᵀ), column by column, W first and then H. Every row update is an exact
block minimisation, so φ, and with it the NMF objective, never increases.

Acceleration (Gillis & Glineur, "Accelerated multiplicative updates and hierarchical alternating
least squares algorithms for nonnegative matrix factorization", Neural Computation
24(4):1085–1105, 2012, Section 3): ``G`` and ``B`` cost a pass over X (2·n·p·k flops) while a
sweep on them costs 2·m·k², so the sweep is repeated on the same ``G, B`` — at most
``1 + ⌊α ρ⌋`` times, ``ρ = 1 + (n·p + m'·k) / (m·(k + 1))`` the ratio of the two costs (m the
rows of the factor updated, m' those of the other one) — and stops once a sweep moves F by at
most ``δ`` times what the first one did, ``‖F_{l+1} − F_l‖_F ≤ δ ‖F_1 − F_0‖_F``. ``α = 0``
is plain HALS (one sweep per factor, scikit-learn's order).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def sweep(F, G, B, l1, l2):
    """One pass of exact HALS row updates over the k rows of ``F`` (k × m), in index order (the
    penalties in F's dtype: float32 data keeps float32 factors under x64)."""
    k = F.shape[0]
    l1, l2 = jnp.asarray(l1, F.dtype), jnp.asarray(l2, F.dtype)

    def row(j, F):
        Gj = lax.dynamic_index_in_dim(G, j, axis=0, keepdims=False)
        Fj = lax.dynamic_index_in_dim(F, j, axis=0, keepdims=False)
        hess = Gj[j] + l2
        grad = Gj @ F - lax.dynamic_index_in_dim(B, j, axis=0, keepdims=False) + l1 + l2 * Fj
        new = jnp.maximum(Fj - grad / jnp.where(hess > 0, hess, 1.0), 0.0)
        return lax.dynamic_update_index_in_dim(F, jnp.where(hess > 0, new, Fj), j, axis=0)

    return lax.fori_loop(0, k, row, F)


def max_sweeps(alpha: float, m: int, m_other: int, k: int) -> int:
    """Gillis & Glineur's bound ``1 + ⌊α ρ⌋`` on the sweeps per factor update (see the module
    docstring; ``m`` rows of the factor updated, ``m_other`` of the other one, dense X)."""
    rho = 1.0 + (m * m_other + m_other * k) / (m * (k + 1.0))
    return 1 + int(alpha * rho)


def update(F, G, B, l1, l2, *, sweeps: int, delta: float, total: Callable = lambda x: x):
    """``F`` after up to ``sweeps`` HALS sweeps on the fixed ``G, B``: stop once a sweep moves F
    by at most ``delta`` times the first one (Frobenius norms). ``total`` turns a sum over this
    device's columns of F into the sum over all of them (``Cells.sum`` for the cell-sharded Wᵀ),
    so every device stops after the same sweep."""
    F1 = sweep(F, G, B, l1, l2)
    if sweeps <= 1:
        return F1
    moved = lambda a, b: total(jnp.sum(jnp.square(a - b)))
    first = moved(F1, F)
    bound = jnp.asarray(delta, first.dtype) ** 2 * first

    def cond(carry):
        l, _, last = carry
        return (l < sweeps) & (last > bound)

    def body(carry):
        l, F, _ = carry
        Fn = sweep(F, G, B, l1, l2)
        return l + 1, Fn, moved(Fn, F)

    return lax.while_loop(cond, body, (jnp.ones((), jnp.int32), F1, first))[1]


def solve_rows(X, H, l1, l2, *, tol: float = 1e-6, max_iter: int = 1000):
    """``argmin_{W ≥ 0} ½‖X − WH‖²_F + l1 ΣW + ½ l2 ‖W‖²_F`` for fixed H by HALS sweeps run to
    convergence, each row of W (a cell) on its own: its sweeps stop once one moves it by at most
    ``tol`` times the first (or after ``max_iter``), so a cell's result does not depend on the
    other cells solved with it (a vmapped ``while_loop`` freezes the rows that have stopped)."""
    G = H @ H.T
    B = X @ H.T  # (m, k): row i is the B of cell i
    start = jnp.maximum(B / jnp.maximum(jnp.diag(G) + l2, jnp.finfo(X.dtype).tiny), 0.0) / H.shape[0]

    def one(w, b):
        return update(w[:, None], G, b[:, None], l1, l2, sweeps=max_iter, delta=tol)[:, 0]

    return jax.vmap(one)(start, B)
