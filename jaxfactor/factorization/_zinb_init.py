"""ZINB-WaVE initialisation, after zinbwave's ``zinbInitialize`` (Risso et al., Nat. Commun.
9:284, 2018, Methods), simplified:

1. ridge regressions of L = log1p(Y) − O_μ on X (per gene, β_μ) and V (per cell, γ_μ),
   alternating, with the μ-side penalties;
2. a rank-K truncated SVD of the residual L − Xβ_μ − (Vγ_μ)ᵀ (randomised range finder), its
   singular values soft-thresholded by √(ε_W ε_α) (the nuclear-norm form of the W/α penalty), split
   into W and α_μ by the same balancing as the orthogonalisation; then β_μ, γ_μ again;
3. a common dispersion by the method of moments, E(y − μ)² = μ + μ²/θ over all entries;
4. π_j from the excess of zeros over the fitted negative binomial's, clipped to [0.01, 0.9], its
   logit regressed on X and V with the π-side penalties; α_π = 0.

zinbwave fits log1p counts on the positive entries only and a logistic regression of the zero
indicator; this version needs no masks and no iterations beyond three ridge sweeps, and the
Fisher-scoring blocks take over from there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._nmf_init import randomized_svd
from ._zinb import ZINBData, ZINBHparams, ZINBState, _offsets, designs, orthogonalize


def _ridge_projector(Z, eps):
    """(ZᵀZ + diag eps)⁻¹ Zᵀ, or an empty matrix when Z has no column. An all-zero column (a
    covariate the side does not use, or given as zeros) gets a zero row: 1 is added to its
    diagonal, so an unpenalised zero column does not make the system singular."""
    if Z.shape[1] == 0:
        return jnp.zeros((0, Z.shape[0]), Z.dtype)
    unused = jnp.all(Z == 0, axis=0).astype(Z.dtype)
    return jnp.linalg.solve(Z.T @ Z + jnp.diag(eps + unused), Z.T)


def _two_way_ridge(T, X, V, Px, Pv, sweeps=3):
    """Alternating ridge fits of T (n, J) ≈ X β + (V γ)ᵀ."""
    beta = Px @ T
    gamma = Pv @ (T - X @ beta).T
    for _ in range(sweeps - 1):
        beta = Px @ (T - (V @ gamma).T)
        gamma = Pv @ (T - X @ beta).T
    return beta, gamma


def make_init(K: int, zi: bool):
    """``init(key, data, hp) -> ZINBState`` for K factors (with or without zero inflation)."""

    def init(key, d: ZINBData, hp: ZINBHparams) -> ZINBState:
        Y = d.Y
        X, X_pi, V, V_pi = designs(d)
        dt = Y.dtype
        n, J = Y.shape
        o_mu, o_pi = _offsets(d)
        Lg = jnp.log1p(Y) - o_mu
        Px, Pv = _ridge_projector(X, hp.eps_beta_mu), _ridge_projector(V, hp.eps_gamma_mu)
        beta_mu, gamma_mu = _two_way_ridge(Lg, X, V, Px, Pv)
        W = jnp.zeros((n, K), dt)
        alpha_mu = jnp.zeros((K, J), dt)
        if K:
            D = Lg - X @ beta_mu - (V @ gamma_mu).T
            U, s, Vt = randomized_svd(key, D, K)
            s = jnp.maximum(s - jnp.sqrt(hp.eps_W * hp.eps_alpha), 0.0)
            W, alpha_mu = orthogonalize(U * s, Vt, hp.eps_W, hp.eps_alpha)
            beta_mu, gamma_mu = _two_way_ridge(Lg - W @ alpha_mu, X, V, Px, Pv)
        log_mu = X @ beta_mu + (V @ gamma_mu).T + W @ alpha_mu + o_mu
        mu = jnp.exp(log_mu)
        # moments: E(y − μ)² = μ + μ²/θ, common over all entries
        phi = jnp.sum((Y - mu) ** 2 - mu) / jnp.sum(mu * mu)
        zeta0 = jnp.clip(-jnp.log(jnp.clip(phi, 1e-2, 1e2)), -2.0, 4.0)
        zeta = jnp.full((J,), zeta0, dt)
        beta_pi = jnp.zeros_like(beta_mu)
        gamma_pi = jnp.zeros_like(gamma_mu)
        if zi:
            f0 = jnp.exp(-jnp.exp(zeta0) * jax.nn.softplus(log_mu - zeta0))
            p_nb, p_obs = jnp.mean(f0, axis=0), jnp.mean(Y <= 0, axis=0)
            pi = jnp.clip((p_obs - p_nb) / jnp.maximum(1.0 - p_nb, 1e-3), 0.01, 0.9)
            T = jnp.broadcast_to(jnp.log(pi) - jnp.log1p(-pi), (n, J)) - o_pi
            Px, Pv = _ridge_projector(X_pi, hp.eps_beta_pi), _ridge_projector(V_pi, hp.eps_gamma_pi)
            beta_pi, gamma_pi = _two_way_ridge(T, X_pi, V_pi, Px, Pv, sweeps=2)
        return ZINBState(beta_mu, beta_pi, gamma_mu, gamma_pi, W, alpha_mu, jnp.zeros((K, J), dt), zeta)

    return init
