"""The zero-inflated negative binomial (ZINB) in a numerically stable form, with the derivatives
ZINB-WaVE's block updates need (Risso et al., "A general and flexible method for signal
extraction from single-cell RNA-seq data", Nat. Commun. 9:284, 2018, eq. 1).

Parametrisation, per entry: ``a = log μ``, ``b = logit π``, ``ζ = log θ`` (θ the NB "size";
variance μ + μ²/θ). With ``s = log(1 + μ/θ) = softplus(a − ζ)`` and ``p = μ/(μ + θ) = σ(a − ζ)``::

    log NB(y)   = D(y, θ) + y (a − s) − θ s − log y!,     D(y, θ) = lgamma(y+θ) − lgamma(θ) − y log θ
    log NB(0)   = l0 = −θ s
    log ZINB(y) = log(1 − π) + log NB(y)          (y > 0),   log(1 − π) = −softplus(b)
    log ZINB(0) = logaddexp(b, l0) − softplus(b)

No term overflows or cancels catastrophically: as θ → ∞, ``θ s → μ`` and ``D → 0`` (computed
from Stirling's series for θ ≥ 10, not as a difference of two huge ``lgamma``), giving the
Poisson limit; π → 0 or 1 are the limits of ``softplus``/``logaddexp``; μ → 0 gives
``l0 → 0``. The log-pmf itself, D(y, θ) and its θ-derivatives (``log_rising_ratio``,
``digamma_diff``, ``trigamma_diff``) are :mod:`jaxfactor._count_lik`'s, shared with the count
VAE and re-exported here; this module keeps the block updates' fused kernels.

Block updates (gene-wise and cell-wise Newton steps on the linear predictors) use the score in
(a, b) and the *expected* (Fisher) information, which is positive semi-definite for every
(μ, π, θ) and has a closed form. With ``q = P(structural zero | y = 0) = σ(b − l0)`` and
``f0 = e^{l0}``::

    ∂ℓ/∂a = (1 − p)(y − μ)  (y > 0),     −(1 − q) μ (1 − p)   (y = 0)
    ∂ℓ/∂b = −π              (y > 0),      q − π               (y = 0)
    I_aa  = (1 − π) μ (1 − p) (1 − q μ (1 − p) f0)
    I_ab  = −(1 − π) μ (1 − p) f0 q
    I_bb  = π (1 − π) q (1 − f0)

(derived from E[score scoreᵀ] with Σ_{y>0} NB(y)(y − μ) = μ f0 and Σ_{y>0} NB(y)(y − μ)² =
μ/(1 − p) − μ² f0). The dispersion step is a one-dimensional Newton step in ζ with the observed
derivatives (``zeta_derivatives``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .._count_lik import digamma_diff, log_rising_ratio, nb_log_prob, trigamma_diff
from .._count_lik import zinb_log_prob as _zinb_log_prob

__all__ = ["digamma_diff", "log_prob_fast", "log_rising_ratio", "partial_log_prob", "score_fisher", "trigamma_diff",
           "zeta_derivatives", "zinb_log_prob"]


def _nb_core(a, zeta):
    """(θ, μ, s = log(1 + μ/θ), 1 − p, l0 = −θ s, p) from exp(−|a − ζ|), log1p and exp(a):
    exact for every a − ζ (μ itself overflows to inf only where the likelihood is −inf anyway)."""
    theta = jnp.exp(zeta)
    x = a - zeta
    t = jnp.exp(-jnp.abs(x))
    s = jnp.maximum(x, 0.0) + jnp.log1p(t)
    omp = jnp.where(x >= 0, t, 1.0) / (1.0 + t)
    p = jnp.where(x >= 0, 1.0, t) / (1.0 + t)
    return theta, jnp.exp(a), s, omp, -theta * s, p


def _y_log_p(y, a, zeta):
    """y log p, p = μ/(μ + θ) = σ(a − ζ), as y (min(x, 0) − log1p(e^{−|x|})), x = a − ζ: the
    y (a − s) of the log-pmf without its y ζ (a term of y and θ only). For large counts y (a − s)
    is about y ζ plus a part of order θ; in float32 its rounding (ulp of y ζ: ~2 at y = 10⁷)
    would drown the part the block updates compare."""
    x = a - zeta
    return y * (jnp.minimum(x, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(x))))


def _zi_core(b, l0):
    """(softplus(b), π, 1 − π, q = σ(b − l0), 1 − q, logaddexp(b, l0)) from exp(−|b|) and
    exp(−|b − l0|): two exp and two log1p per entry, no overflow for any b or l0."""
    tb = jnp.exp(-jnp.abs(b))
    pos = b >= 0
    sp = jnp.maximum(b, 0.0) + jnp.log1p(tb)
    pi = jnp.where(pos, 1.0, tb) / (1.0 + tb)
    omp_i = jnp.where(pos, tb, 1.0) / (1.0 + tb)
    u = b - l0
    tu = jnp.exp(-jnp.abs(u))
    upos = u >= 0
    q = jnp.where(upos, 1.0, tu) / (1.0 + tu)
    omq = jnp.where(upos, tu, 1.0) / (1.0 + tu)
    lse0 = l0 + jnp.maximum(u, 0.0) + jnp.log1p(tu)
    return sp, pi, omp_i, q, omq, lse0


def zinb_log_prob(y, log_mu, logit_pi, log_theta, zero_inflation: bool = True, *, log_factorial: bool = True):
    """log ZINB(y | μ = e^{log_mu}, π = σ(logit_pi), θ = e^{log_theta}), elementwise (broadcasts):
    :func:`jaxfactor._count_lik.zinb_log_prob` in ZINB-WaVE's argument order. Finite for
    ``logit_pi = ±inf`` (π = 1: 0 at y = 0, −inf above).

    ``zero_inflation=False`` gives the negative binomial (π = 0; ``logit_pi`` is ignored).
    ``log_factorial=False`` leaves out −log y! (a constant of the fit).
    """
    if not zero_inflation:
        return nb_log_prob(y, log_mu, log_theta, log_factorial)
    return _zinb_log_prob(y, log_mu, log_theta, logit_pi, log_factorial)


def partial_log_prob(y, a, b, zeta, zero_inflation: bool):
    """``zinb_log_prob`` without the terms that depend on y and θ only (D(y, θ) + y ζ =
    lgamma(y + θ) − lgamma(θ), and log y!): y log p − θ s (+ the zero-inflation terms), the
    quantity the gene- and cell-wise line searches compare (θ fixed there)."""
    _, _, _, _, l0, _ = _nb_core(a, zeta)
    f = _y_log_p(y, a, zeta) + l0
    if not zero_inflation:
        return f
    sp, _, _, _, _, lse0 = _zi_core(b, l0)
    return jnp.where(y > 0, f, lse0) - sp


def log_prob_fast(y, a, b, zeta, zero_inflation: bool):
    """``zinb_log_prob`` without log y!, with the arithmetic of ``zeta_derivatives`` (the
    dispersion step's line search compares the two, so they must round identically)."""
    theta, _, s, _, l0, _ = _nb_core(a, zeta)
    lnb = log_rising_ratio(y, theta) + y * (a - s) + l0
    if not zero_inflation:
        return lnb
    sp, _, _, _, _, lse0 = _zi_core(b, l0)
    return jnp.where(y > 0, lnb, lse0) - sp


def score_fisher(y, a, b, zeta, zero_inflation: bool):
    """Per entry: ``(f, g_a, g_b, I_aa, I_ab, I_bb)`` — ``partial_log_prob``, the score
    in (a, b) and the Fisher information (module docstring). Without zero inflation the π
    entries are ``None``. The shared intermediates pass an optimisation barrier so that XLA
    computes them once instead of once per output."""
    theta, mu, s, omp, l0, _ = _nb_core(a, zeta)
    muo = mu * omp  # μ (1 − p)
    f = _y_log_p(y, a, zeta) + l0  # as partial_log_prob
    g_nb = omp * (y - mu)
    if not zero_inflation:
        return f, g_nb, None, muo, None, None
    sp, pi, omp_i, q, omq, lse0 = _zi_core(b, l0)
    f0 = jnp.exp(l0)
    muo, f, g_nb, sp, pi, omp_i, q, omq, lse0, f0 = lax.optimization_barrier((muo, f, g_nb, sp, pi, omp_i, q, omq, lse0, f0))
    zero = y <= 0
    f = jnp.where(zero, lse0, f) - sp
    g_a = jnp.where(zero, -omq * muo, g_nb)
    g_b = jnp.where(zero, q, 0.0) - pi
    I_aa = omp_i * muo * (1.0 - q * muo * f0)
    I_ab = -omp_i * muo * f0 * q
    I_bb = pi * omp_i * q * (1.0 - f0)
    return f, g_a, g_b, I_aa, I_ab, I_bb


def zeta_derivatives(y, a, b, zeta, zero_inflation: bool):
    """Per entry: ``(log ZINB(y) + log y!, ∂/∂ζ, ∂²/∂ζ²)`` at fixed (a, b) (observed, not expected).

    NB part: ``∂ℓ/∂ζ = θ F + (1 − p)(μ − y)`` with ``F = ψ(y + θ) − ψ(θ) − s``, and
    ``∂²ℓ/∂ζ² = θ F + θ² [ψ'(y + θ) − ψ'(θ)] + μ (1 − p) + p (1 − p)(μ − y)``. For a zero with
    zero inflation, ``ℓ = logaddexp(b, l0) − softplus(b)`` so ``∂ℓ = (1 − q) ∂l0`` and
    ``∂²ℓ = (1 − q) ∂²l0 + q (1 − q) (∂l0)²`` (``∂l0``, ``∂²l0``: the NB formulas at y = 0).
    """
    theta, mu, s, omp, l0, p = _nb_core(a, zeta)
    lnb = log_prob_fast(y, a, b, zeta, False)
    thF = theta * (digamma_diff(y, theta) - s)
    g = thF + omp * (mu - y)
    h = thF + theta * theta * trigamma_diff(y, theta) + mu * omp + p * omp * (mu - y)
    if not zero_inflation:
        return lnb, g, h
    lnb, g, h, mu, p, omp, s, l0 = lax.optimization_barrier((lnb, g, h, mu, p, omp, s, l0))
    sp, _, _, q, omq, lse0 = _zi_core(b, l0)
    dl0 = -theta * s + mu * omp
    d2l0 = dl0 + mu * p * omp
    zero = y <= 0
    ll = log_prob_fast(y, a, b, zeta, True)
    g = jnp.where(zero, omq * dl0, g)
    h = jnp.where(zero, omq * d2l0 + q * omq * dl0 * dl0, h)
    return ll, g, h
