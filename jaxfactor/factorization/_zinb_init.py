"""ZINB-WaVE initialisation, after zinbwave's ``zinbInitialize`` (Risso et al., Nat. Commun.
9:284, 2018, Methods; R/zinb_fit.R of the Bioconductor package), batched:

1. the non-zero counts are modelled as log-normal: L = log Y − O_μ on the entries Y > 0 (the
   zeros are missing), fitted by ridge regressions on X (per gene, β_μ) and V (per cell, γ_μ),
   alternated twice, each a small weighted least-squares system per row, solved all at once
   (zinbwave fits V first; where a cell covariate in X is absorbable by the per-cell intercept
   of V, X first starts its effect on the covariate, as the fits of earlier versions did);
2. W and α_μ: a rank-K soft-thresholded SVD of the residual with the zeros still missing
   (``softImpute``: fill the missing entries with the current low-rank fit, SVD, shrink the
   singular values by √(ε_W ε_α) (the nuclear-norm form of the W/α penalty), repeat), split
   into W and α_μ by the balancing of the orthogonalisation;
3. every zero is taken for a dropout: ridge logistic regressions of the zero indicator on V (per
   cell, γ_π) and on [X W] (per gene, β_π and α_π), alternated twice, by Newton's method;
4. ζ = 0 (θ = 1); the first outer iteration starts with the dispersion step.

Without zero inflation (zinbwave's ``nbInitialize``) step 1 uses log1p(Y) − O_μ on every entry,
step 2 is the plain soft-thresholded SVD and step 3 is skipped.

Why this start and not a cheaper one: the ZINB likelihood of a gene has separate basins in which
its zeros are explained either by π or by a small dispersion θ. A start that fits log1p of every
count (zeros included) under-estimates μ, so the NB explains the zeros, the first dispersion step
drives θ towards 0 and π towards 0, and the fit settles in the second basin — on simulated
counts with 30–60 % dropouts its penalised log-likelihood ended ~1 % below zinbwave's. Modelling
the positive counts and the zeros apart, as zinbwave does, starts every gene in the first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._zinb import ZINBData, ZINBHparams, ZINBState, _offsets, designs, orthogonalize

NB_REPEAT = 2  # alternations of the cell- and gene-wise regressions (zinbwave's nb.repeat)
LOGIT_STEPS = 4  # Newton steps per logistic regression and alternation
IMPUTE_ITER, IMPUTE_TOL = 100, 1e-5  # softImpute's maxit (zinbInitialize's it.max) and thresh
_STEP_CLIP = 10.0


def _unused(B):
    """1 for an all-zero design column (a covariate a side does not use), else 0: added to the
    diagonal, it keeps the system regular and the coefficient at 0."""
    return jnp.all(B == 0, axis=0).astype(B.dtype)


def _gram(Wt, B):
    """(R, p, p): Σ_e Wt[e, r] B[e]ᵀ B[e] for every column r, as one matrix product."""
    E, p = B.shape
    return (Wt.T @ (B[:, :, None] * B[:, None, :]).reshape(E, p * p)).reshape(-1, p, p)


def _weighted_ridge(T, Wt, B, eps):
    """x (p, R): for every column r of T (E, R), argmin Σ_e Wt[e, r] (T[e, r] − B[e] x_r)² + Σ eps x_r²
    (Wt = 0 marks a missing entry). One p × p system per column."""
    if B.shape[1] == 0:
        return jnp.zeros((0, T.shape[1]), T.dtype)
    G = _gram(Wt, B) + jnp.diag(eps + _unused(B))
    rhs = jnp.einsum("er,ep->rp", Wt * T, B)
    return jnp.linalg.solve(G, rhs[..., None])[..., 0].T


def _logistic_rows(Zr, off, B, eps, x, n_steps):
    """``n_steps`` Newton steps, from x (p, R), of the ridge logistic regressions of every column
    r of Zr (E, R) on B (E, p) with offset ``off`` (E, R): maximise Σ_e [z η − log(1 + e^η)] −
    ½ Σ eps x², η = B x_r + off. Steps are clipped to ±10 per coordinate (a column without
    zeros, or without non-zeros, has its maximum at infinity)."""
    if B.shape[1] == 0:
        return x
    reg = jnp.diag(eps + _unused(B))

    def step(_, x):
        p = jax.nn.sigmoid(B @ x + off)
        H = _gram(p * (1.0 - p), B) + reg
        g = (B.T @ (Zr - p)).T - eps * x.T
        dx = jnp.linalg.solve(H, g[..., None])[..., 0]
        return x + jnp.clip(dx, -_STEP_CLIP, _STEP_CLIP).T

    return lax.fori_loop(0, n_steps, step, x)


def _soft_impute(key, D, P, K: int, lam):
    """Rank-K soft-thresholded SVD of D (n, J) with the entries where P = 0 missing: (U s, Vt).

    Each iteration fills the missing entries with the current fit, takes one step of subspace
    iteration of width K + 5 on the filled matrix (warm-started, so the subspace converges with
    the imputation) and shrinks the leading K singular values by ``lam`` — or by half the K-th
    when that is smaller (zinbwave halves λ until K singular values survive). Stops when the
    fit's relative change is below ``IMPUTE_TOL``."""
    n, J = D.shape
    r = min(K + 5, n, J)
    dt = D.dtype
    V0, _ = jnp.linalg.qr(jax.random.normal(key, (J, r), dt))

    def fit(M, V):
        Zf = jnp.where(P > 0, D, M)
        Q, _ = jnp.linalg.qr(Zf @ V)
        Ub, s, Vt = jnp.linalg.svd(Q.T @ Zf, full_matrices=False)
        shrink = jnp.minimum(lam, 0.5 * s[K - 1])
        sK = jnp.maximum(s[:K] - shrink, 0.0)
        U = Q @ Ub[:, :K]
        return (U * sK) @ Vt[:K], Vt.T, U * sK, Vt[:K]

    def cond(c):
        return (c[0] < IMPUTE_ITER) & (c[1] > IMPUTE_TOL)

    def body(c):
        k, _, M, V, _, _ = c
        M2, V2, Us, Vt = fit(M, V)
        change = jnp.sum((M2 - M) ** 2) / jnp.maximum(jnp.sum(M2 ** 2), jnp.finfo(dt).tiny)
        return k + 1, change, M2, V2, Us, Vt

    init = (jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dt), jnp.zeros_like(D), V0,
            jnp.zeros((n, K), dt), jnp.zeros((K, J), dt))
    out = lax.while_loop(cond, body, init)
    return out[4], out[5]


def make_init(K: int, zi: bool):
    """``init(key, data, hp) -> ZINBState`` for K factors (with or without zero inflation)."""

    def init(key, d: ZINBData, hp: ZINBHparams) -> ZINBState:
        Y = d.Y
        X, X_pi, V, V_pi = designs(d)
        dt = Y.dtype
        n, J = Y.shape
        o_mu, o_pi = _offsets(d)
        o_mu = jnp.broadcast_to(o_mu, (n, J))
        if zi:  # log-normal on the positive counts, the zeros missing
            P = (Y > 0).astype(dt)
            Lg = jnp.where(Y > 0, jnp.log(jnp.maximum(Y, 1.0)), 0.0) - o_mu
        else:
            P = jnp.ones_like(Y)
            Lg = jnp.log1p(Y) - o_mu
        beta_mu = jnp.zeros((X.shape[1], J), dt)
        gamma_mu = jnp.zeros((V.shape[1], n), dt)
        for _ in range(NB_REPEAT):
            beta_mu = _weighted_ridge(Lg - (V @ gamma_mu).T, P, X, hp.eps_beta_mu)
            gamma_mu = _weighted_ridge((Lg - X @ beta_mu).T, P.T, V, hp.eps_gamma_mu)
        W = jnp.zeros((n, K), dt)
        alpha_mu = jnp.zeros((K, J), dt)
        if K:
            D = Lg - X @ beta_mu - (V @ gamma_mu).T
            Us, Vt = _soft_impute(key, D, P, K, jnp.sqrt(hp.eps_W * hp.eps_alpha))
            W, alpha_mu = orthogonalize(Us, Vt, hp.eps_W, hp.eps_alpha)
        beta_pi = jnp.zeros((X_pi.shape[1], J), dt)
        gamma_pi = jnp.zeros((V_pi.shape[1], n), dt)
        alpha_pi = jnp.zeros((K, J), dt)
        if zi:  # every zero a dropout: logistic regressions of the zero indicator
            Zr = 1.0 - P
            o_pi = jnp.broadcast_to(o_pi, (n, J))
            XW = jnp.concatenate([X_pi, W], axis=1)
            eps_gene = jnp.concatenate([hp.eps_beta_pi, jnp.full((K,), hp.eps_alpha, dt)])
            coef = jnp.concatenate([beta_pi, alpha_pi], axis=0)
            for _ in range(NB_REPEAT):
                gamma_pi = _logistic_rows(Zr.T, (XW @ coef + o_pi).T, V_pi, hp.eps_gamma_pi, gamma_pi, LOGIT_STEPS)
                coef = _logistic_rows(Zr, (V_pi @ gamma_pi).T + o_pi, XW, eps_gene, coef, LOGIT_STEPS)
            M = X_pi.shape[1]
            beta_pi, alpha_pi = coef[:M], coef[M:]
        zeta = jnp.zeros((J,), dt)
        return ZINBState(beta_mu, beta_pi, gamma_mu, gamma_pi, W, alpha_mu, alpha_pi, zeta)

    return init
