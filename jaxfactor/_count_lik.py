"""Negative-binomial and zero-inflated NB log-pmfs, and the ``log Gamma`` series under them.

Shared by the count VAE (:mod:`jaxfactor.models._likelihoods`, :mod:`jaxfactor.models._count_nll`)
and ZINB-WaVE (:mod:`jaxfactor.factorization._zinb_lik`).

Parametrisation, per entry: ``a = log mu``, ``zeta = log theta`` (``theta`` the NB "size" or
inverse dispersion; variance ``mu + mu^2/theta``) and the gate logit ``g`` (``pi = sigmoid(g)``,
the probability of a structural zero). With ``s = log(1 + mu/theta) = softplus(a - zeta)``::

    log NB(x)   = D(x, theta) + x (a - s) - theta s - log x!,
                  D(x, theta) = lgamma(x + theta) - lgamma(theta) - x log theta
    log NB(0)   = l0 = -theta s
    log ZINB(x) = log(1 - pi) + log NB(x)                              (x > 0)
    log ZINB(0) = logaddexp(log pi, log(1 - pi) + l0)

(Risso et al., "A general and flexible method for signal extraction from single-cell RNA-seq
data", Nat. Commun. 9:284, 2018, eq. 1; the same density as scVI's ``log_zinb_positive``, Lopez et
al., Nat. Methods 15, 2018). This is the usual ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
+ theta log(theta/(theta + mu)) + x log(mu/(theta + mu))`` regrouped so that nothing overflows or
cancels: as ``theta -> inf``, ``theta s -> mu`` and ``D -> 0`` (:func:`log_rising_ratio`, by
Stirling's series for ``theta >= 10``), the Poisson limit; ``log pi = -softplus(-g)`` and
``log(1 - pi) = -softplus(g)`` are exact for every ``g``, including ``g = +-inf``.

``log Gamma`` comes in two forms:

- :func:`lgamma` / :func:`lgamma_digamma`: branch-free and cheap, for the VAE's training
  kernels. The recurrence ``log Gamma(z) = log Gamma(z + 6) - log(z (z+1) ... (z+5))`` below 6,
  then Stirling's series with three correction terms (absolute error below ``2e-9`` for
  ``w >= 6``: float32 grade). XLA's CPU ``lgamma``/``digamma`` pair costs about 4x more per
  element.
- :func:`jax.scipy.special.gammaln` / ``digamma`` (float64 grade) inside :func:`log_rising_ratio`
  below ``theta = 10`` and for ``log x!`` of the log-pmfs, with the four-term series above
  ``theta = 10``.

The series (Abramowitz & Stegun 6.1.41, 6.3.18, 6.4.12; ``B_2k`` the Bernoulli numbers)::

    lgamma(w)  = (w - 1/2) log w - w + log(2 pi)/2 + sum_k B_2k / (2k (2k - 1) w^(2k-1))
    psi(w)     = log w - 1/(2w) - sum_k B_2k / (2k w^2k)
    psi'(w)    = 1/w + 1/(2w^2) + sum_k B_2k / w^(2k+1)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

__all__ = [
    "digamma_diff", "digamma_rest", "lgamma", "lgamma_digamma", "log_factorial", "log_gate", "log_rising_ratio",
    "nb_log_prob", "stirling_rest", "trigamma_diff", "trigamma_rest", "zinb_log_prob",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SHIFT = 6.0  # recurrence shift of the branch-free lgamma
_BIG = 10.0  # theta at and above which log_rising_ratio / digamma_diff / trigamma_diff use the series

# |B_2k| / (2k (2k - 1)), |B_2k| / (2k) and |B_2k| for k = 1..4; the series alternate in sign
_LGAMMA_C = (1.0 / 12, 1.0 / 360, 1.0 / 1260, 1.0 / 1680)
_DIGAMMA_C = (1.0 / 12, 1.0 / 120, 1.0 / 252, 1.0 / 240)
_TRIGAMMA_C = (1.0 / 6, 1.0 / 30, 1.0 / 42, 1.0 / 30)


def _alternating(r2, coef):
    """``c0 - r2 (c1 - r2 (c2 - ...))`` (Horner) for the given leading coefficients."""
    acc = coef[-1]
    for c in reversed(coef[:-1]):
        acc = c - r2 * acc
    return acc


# ------------------------------------------------------------------------------------------------
# Stirling / asymptotic series
# ------------------------------------------------------------------------------------------------

def stirling_rest(w, terms: int = 4):
    """``lgamma(w) - [(w - 1/2) log w - w + log(2 pi)/2]`` by the first ``terms`` (1-4) terms of
    Stirling's series ``1/(12w) - 1/(360w^3) + 1/(1260w^5) - 1/(1680w^7)``; the error is below
    the first omitted term (``1/(1188 w^9)``: < 1e-12 at ``w >= 10`` with four terms)."""
    r = 1.0 / w
    return r * _alternating(r * r, _LGAMMA_C[:terms])


def digamma_rest(w, terms: int = 4):
    """``psi(w) - log w = -1/(2w) - 1/(12w^2) + 1/(120w^4) - 1/(252w^6) + 1/(240w^8)`` (first
    ``terms`` terms of the sum)."""
    r = 1.0 / w
    r2 = r * r
    return -0.5 * r - r2 * _alternating(r2, _DIGAMMA_C[:terms])


def trigamma_rest(w):
    """``psi'(w) - 1/w = 1/(2w^2) + 1/(6w^3) - 1/(30w^5) + 1/(42w^7) - 1/(30w^9)``."""
    r = 1.0 / w
    r2 = r * r
    return 0.5 * r2 + r * r2 * _alternating(r2, _TRIGAMMA_C)


# ------------------------------------------------------------------------------------------------
# branch-free lgamma (float32 grade; the VAE's kernels)
# ------------------------------------------------------------------------------------------------

def _shifted(z):
    """(z < 6, z made safe for the recurrence, w = z + 6 below 6 else z). The unused branch stays
    finite, and so does its gradient."""
    small = z < _SHIFT
    return small, jnp.where(small, z, 1.0), jnp.where(small, z + _SHIFT, z)


def lgamma(z):
    """``log Gamma(z)`` for ``z > 0``: ``log Gamma(z + 6) - log(z (z+1) ... (z+5))`` below 6, then
    Stirling's series with three terms (absolute error < 2e-9). Branch-free, differentiable (its
    derivative, digamma, comes from autodiff)."""
    small, zs, w = _shifted(z)
    P = zs * (zs + 1.0) * (zs + 2.0) * (zs + 3.0) * (zs + 4.0) * (zs + 5.0)
    lg = (w - 0.5) * jnp.log(w) - w + _HALF_LOG_2PI + stirling_rest(w, 3)
    return lg - jnp.where(small, jnp.log(P), 0.0)


def lgamma_digamma(z):
    """``(log Gamma(z), psi(z))`` for ``z > 0`` in one pass: :func:`lgamma` and
    ``psi(w) = log w - 1/(2w) - 1/(12w^2) + 1/(120w^4) - 1/(252w^6)`` with the same recurrence,
    ``psi(z) = psi(z + 6) - P'(z)/P(z)`` where ``P(z) = z (z+1) ... (z+5)``."""
    small, zs, w = _shifted(z)
    P = zs * (zs + 1.0) * (zs + 2.0) * (zs + 3.0) * (zs + 4.0) * (zs + 5.0)
    dP = ((((6.0 * zs + 75.0) * zs + 340.0) * zs + 675.0) * zs + 548.0) * zs + 120.0
    # the series of stirling_rest(w, 3) and digamma_rest(w, 3), written out so that XLA's CPU
    # fusion of the VAE's kernels stays as tight as it was (one reciprocal, no extra temporaries)
    lw, r = jnp.log(w), 1.0 / w
    r2 = r * r
    lg = (w - 0.5) * lw - w + _HALF_LOG_2PI + r * _alternating(r2, _LGAMMA_C[:3])
    dg = lw - 0.5 * r - r2 * _alternating(r2, _DIGAMMA_C[:3])
    return lg - jnp.where(small, jnp.log(P), 0.0), dg - jnp.where(small, dP / P, 0.0)


def log_factorial(x):
    """``log x! = lgamma(x + 1)`` by the branch-free :func:`lgamma` (float32 grade)."""
    return lgamma(x + 1.0)


# ------------------------------------------------------------------------------------------------
# D(y, theta) and its theta-derivatives (float64 grade)
# ------------------------------------------------------------------------------------------------

def _split(theta):
    """(large-theta mask, theta safe for the series branch, theta safe for the direct branch)."""
    big = theta >= _BIG
    return big, jnp.where(big, theta, _BIG), jnp.where(big, 1.0, theta)


def log_rising_ratio(y, theta):
    """``D(y, theta) = lgamma(y + theta) - lgamma(theta) - y log theta``, accurate for every
    ``theta > 0``.

    ``theta >= 10``: ``(y + theta - 1/2) log1p(y/theta) - y + r(y + theta) - r(theta)`` with ``r``
    Stirling's remainder (:func:`stirling_rest`); the terms are O(y) and the result tends to
    ``y (y - 1)/(2 theta)`` as ``theta -> inf``, so no precision is lost. Below: ``gammaln``.
    """
    big, tb, ts = _split(theta)
    asym = (y + tb - 0.5) * jnp.log1p(y / tb) - y + stirling_rest(y + tb) - stirling_rest(tb)
    direct = gammaln(y + ts) - gammaln(ts) - y * jnp.log(ts)
    return jnp.where(big, asym, direct)


def digamma_diff(y, theta):
    """``psi(y + theta) - psi(theta)`` (``theta >= 10``: ``log1p(y/theta)`` plus the series)."""
    big, tb, ts = _split(theta)
    asym = jnp.log1p(y / tb) + digamma_rest(y + tb) - digamma_rest(tb)
    return jnp.where(big, asym, digamma(y + ts) - digamma(ts))


def trigamma_diff(y, theta):
    """``psi'(y + theta) - psi'(theta)``; below ``theta = 10`` by the recurrence
    ``psi'(x) = psi'(x + 4) + sum_{k<4} (x + k)^-2`` and the series at ``x + 4 >= 4`` (relative
    error < 1e-7)."""
    big, tb, ts = _split(theta)

    def asym(t):
        return -y / (t * (y + t)) + trigamma_rest(y + t) - trigamma_rest(t)

    shifted = asym(ts + 4.0)
    for k in range(4):
        shifted = shifted + (1.0 / (y + ts + k) ** 2 - 1.0 / (ts + k) ** 2)
    return jnp.where(big, asym(tb), shifted)


# ------------------------------------------------------------------------------------------------
# log-pmfs
# ------------------------------------------------------------------------------------------------

def log_gate(gate_logit):
    """``(log pi, log(1 - pi))`` for ``pi = sigmoid(g)``: ``(-softplus(-g), -softplus(g))`` from one
    ``exp(-|g|)`` and one ``log1p``; exact for every ``g``, with ``(0, -inf)`` at ``g = +inf``."""
    t = jnp.log1p(jnp.exp(-jnp.abs(gate_logit)))
    return -(jnp.maximum(-gate_logit, 0.0) + t), -(jnp.maximum(gate_logit, 0.0) + t)


def _nb_parts(x, log_mu, log_theta, normalized):
    """``(log NB(x), log NB(0))`` (module docstring); ``x (a - s)`` is 0 for ``x = 0`` even when
    ``mu`` underflows to 0."""
    theta = jnp.exp(log_theta)
    s = jax.nn.softplus(log_mu - log_theta)
    l0 = -theta * s
    lnb = log_rising_ratio(x, theta) + jnp.where(x > 0, x * (log_mu - s), 0.0) + l0
    return (lnb - gammaln(x + 1.0) if normalized else lnb), l0


def nb_log_prob(x, log_mu, log_theta, normalized: bool = True):
    """``log NB(x | mu = e^log_mu, theta = e^log_theta)`` elementwise (broadcasts); see the module
    docstring. ``normalized=False`` leaves out ``-log x!`` (a constant of the data)."""
    return _nb_parts(x, log_mu, log_theta, normalized)[0]


def zinb_log_prob(x, log_mu, log_theta, gate_logit, normalized: bool = True):
    """``log ZINB(x | mu, theta, pi = sigmoid(gate_logit))`` elementwise (broadcasts):
    ``log(1 - pi) + log NB(x)`` for ``x > 0`` and ``logaddexp(log pi, log(1 - pi) + log NB(0))`` at 0
    (Risso et al. 2018, eq. 1). Finite for ``gate_logit = +-inf`` (``pi = 1``: 0 at ``x = 0``,
    ``-inf`` above). ``normalized=False`` leaves out ``-log x!``."""
    lnb, l0 = _nb_parts(x, log_mu, log_theta, normalized)
    log_pi, log_1mpi = log_gate(gate_logit)
    return jnp.where(x > 0, log_1mpi + lnb, jnp.logaddexp(log_pi, log_1mpi + l0))
