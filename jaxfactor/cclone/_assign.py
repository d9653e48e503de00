"""CCLONE's per-cell assignment against fitted variant factors: the exact box-constrained solve
of one cell's loadings C_i in [0, 1]^k given V, minimising Σ_j W_ij (M_ij − C_i·V_j)² (+ l2‖C_i‖²)
— the C half of CCLONE's alternating fit (Marot-Lassauzaie et al., Bioinformatics 2024), as a
pure batchable kernel. ``jaxfactor predict`` streams it over new cells; ``jaxfactor.clones``
uses it for the cells CCLONE's filter dropped."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cclone_matrices(ref, alt, mode: str, min_allele_reads: int):
    """M and W of ``jaxfactor.data.variant_matrices`` in jnp (same rules), from dense counts."""
    n = ref + alt
    covered = n >= 2
    both = covered & (ref >= min_allele_reads) & (alt >= min_allele_reads)
    only_alt = covered & (alt >= min_allele_reads) & (ref < min_allele_reads)
    dt = ref.dtype
    M = 0.5 * both.astype(dt) + only_alt.astype(dt)
    if mode == "none":
        W = jnp.ones_like(M)
    elif mode == "binary":
        W = covered.astype(dt)
    else:
        w = jnp.where(covered, 0.5, 0.0) if mode == "smartseq" else jnp.where(covered, 1.0 - jnp.exp2(-n), 0.0)
        W = jnp.where(both, 1.0, w).astype(dt)
    return M, W


def cclone_assign(V, l2, ref, alt, *, mode: str, min_allele_reads: int, sweeps: int = 100):
    """(B, k) loadings in [0, 1]^k of B cells against V (p, k), their weighted loss and weight."""
    from ..factorization._wnmf import box_qp_rows, gram_cols

    M, W = cclone_matrices(ref, alt, mode, min_allele_reads)
    k = V.shape[1]
    Q = gram_cols(W.T, V, jnp.ones(V.shape[0], V.dtype)) + l2 * jnp.eye(k, dtype=V.dtype)[:, :, None]
    b = V.T @ (W * M).T
    x = lax_fori(sweeps, lambda x: box_qp_rows(Q, b, x, 1), jnp.full(b.shape, 0.5, V.dtype))
    C = x.T
    R = M - C @ V.T
    return {"C": C, "loss": jnp.sum(W * R * R, axis=1), "weight": jnp.sum(W, axis=1)}


def lax_fori(n: int, body, x):
    return jax.lax.fori_loop(0, n, lambda _, x: body(x), x)
