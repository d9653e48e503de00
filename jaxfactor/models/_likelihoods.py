"""Observation models of the autoencoder/VAE decoders: stable log-probabilities and samplers.

Every ``log_prob`` returns the elementwise log-probability (cells x genes); the models sum it over
genes. Count likelihoods are parameterised by the log of the mean, so the library-size offset
of scVI (Lopez et al., Nat. Methods 2018) enters additively: ``log mu = log l + log rho`` with
``rho = softmax(decoder output)`` and ``l`` the observed total count of the cell.

- Poisson:  ``log p(x) = x log mu - mu - log Gamma(x + 1)``.
- Negative binomial, mean ``mu`` and inverse dispersion ``theta`` (variance ``mu + mu^2/theta``):
  ``log Gamma(x + theta) - log Gamma(theta) - log Gamma(x + 1)
  + theta (log theta - log(theta + mu)) + x (log mu - log(theta + mu))``, computed with
  ``s = log(1 + mu/theta) = softplus(log mu - log theta)`` so that no term overflows or cancels.
- Zero-inflated NB with gate logit ``g`` (``pi = sigmoid(g)`` = probability of a structural
  zero): ``log p(0) = logaddexp(log pi, log(1 - pi) + log NB(0))`` and
  ``log p(x > 0) = log(1 - pi) + log NB(x)``, ``log(1 - pi) = -softplus(g)`` (the same density as
  scVI's ``log_zinb_positive``).
- Bernoulli with logit ``l``: ``x l - softplus(l)`` (``x`` in {0, 1}).
- Gaussian with mean ``m`` and log scale ``s``: ``-0.5 log(2 pi) - s - 0.5 ((x - m) e^{-s})^2``.

The NB/ZINB log-pmfs, ``lgamma`` and ``log_factorial`` are :mod:`jaxfactor._count_lik`'s (one
implementation shared with ZINB-WaVE; re-exported here). ``lgamma`` is the branch-free one (the
recurrence to ``z + 6`` and Stirling's series), cheaper than XLA's on the CPU. The training loss
omits the data constant ``-log x!`` of the count likelihoods (``normalized=False``): it has no
gradient and is added back on the host for the reported loss; NB and ZINB train through the
fused kernels of :mod:`jaxfactor.models._count_nll`.

Dispersion ``theta`` (NB, ZINB) and the Gaussian scale are gene-wise parameters (scVI's
``dispersion='gene'``); the ZINB gate is an output of the decoder per cell and gene, as in scVI.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._count_lik import lgamma, log_factorial, nb_log_prob, zinb_log_prob

__all__ = [
    "COUNT_LIKELIHOODS", "LIKELIHOODS", "bernoulli_log_prob", "gaussian_log_prob", "lgamma", "log_factorial",
    "log_prob", "mean", "nb_log_prob", "poisson_log_prob", "sample", "zinb_log_prob",
]

COUNT_LIKELIHOODS = ("poisson", "nb", "zinb")
LIKELIHOODS = ("gaussian", "bernoulli", *COUNT_LIKELIHOODS)

_LOG_2PI = math.log(2.0 * math.pi)


def poisson_log_prob(x, log_mu, normalized: bool = True):
    """``x log mu - mu - log x!`` (``normalized=False``: without ``log x!``)."""
    out = x * log_mu - jnp.exp(log_mu)
    return out - log_factorial(x) if normalized else out


def bernoulli_log_prob(x, logits):
    return x * logits - jax.nn.softplus(logits)


def gaussian_log_prob(x, mean, log_scale):
    return -0.5 * _LOG_2PI - log_scale - 0.5 * jnp.square((x - mean) * jnp.exp(-log_scale))


def log_prob(likelihood: str, x, p: dict, normalized: bool = True):
    """Elementwise ``log p(x | decoder output p)`` for the named likelihood.

    ``p`` holds the decoder's outputs: ``log_mu`` (counts), ``log_theta`` (NB, ZINB; per gene),
    ``gate_logits`` (ZINB), ``logits`` (Bernoulli), ``mean`` and ``log_scale`` (Gaussian).
    ``normalized=False`` leaves out the ``-log x!`` of the count likelihoods.
    """
    if likelihood == "poisson":
        return poisson_log_prob(x, p["log_mu"], normalized)
    if likelihood == "nb":
        return nb_log_prob(x, p["log_mu"], p["log_theta"], normalized)
    if likelihood == "zinb":
        return zinb_log_prob(x, p["log_mu"], p["log_theta"], p["gate_logits"], normalized)
    if likelihood == "bernoulli":
        return bernoulli_log_prob(x, p["logits"])
    if likelihood == "gaussian":
        return gaussian_log_prob(x, p["mean"], p["log_scale"])
    raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")


def mean(likelihood: str, p: dict):
    """``E[x | p]``: ``mu`` (Poisson, NB), ``(1 - pi) mu`` (ZINB), ``sigmoid(l)``, the Gaussian mean."""
    if likelihood in ("poisson", "nb"):
        return jnp.exp(p["log_mu"])
    if likelihood == "zinb":
        return jnp.exp(p["log_mu"]) * jax.nn.sigmoid(-p["gate_logits"])
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(p["logits"])
    return p["mean"]


def sample(likelihood: str, key, p: dict):
    """One draw of ``x ~ p(x | p)`` (counts as float32).

    NB draws use the gamma-Poisson mixture ``lambda ~ Gamma(theta, rate=theta/mu)``,
    ``x ~ Poisson(lambda)``; ZINB then zeroes each entry with probability ``sigmoid(gate)``.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    if likelihood == "gaussian":
        m = p["mean"]
        return m + jnp.exp(p["log_scale"]) * jax.random.normal(k1, m.shape, m.dtype)
    if likelihood == "bernoulli":
        return jax.random.bernoulli(k1, jax.nn.sigmoid(p["logits"])).astype(jnp.float32)
    mu = jnp.exp(p["log_mu"])
    if likelihood == "poisson":
        rate = mu
    else:
        theta = jnp.broadcast_to(jnp.exp(p["log_theta"]), mu.shape)
        rate = jax.random.gamma(k1, theta) * mu / theta
    x = jax.random.poisson(k2, rate).astype(jnp.float32)
    if likelihood == "zinb":
        x = jnp.where(jax.random.bernoulli(k3, jax.nn.sigmoid(p["gate_logits"])), 0.0, x)
    return x
