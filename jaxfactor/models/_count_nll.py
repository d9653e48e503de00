"""Per-cell negative log-likelihood of counts under scVI's decoder, with hand-written gradients.

The decoder's mean is ``mu_ig = l_i softmax(u_i)_g`` (logits ``u``, observed library ``l``) and
the likelihood is NB(``mu``, ``theta_g = exp(b_g)``), optionally zero-inflated with gate logits
``h_ig``. Differentiating that chain with autodiff produces dozens of elementwise passes over the
cells x genes arrays (each transcendental with several users is materialised on its own), which
dominates an epoch on the CPU. Here the forward pass computes the loss and the few derivative
arrays in one sweep and the backward pass only rescales them:

    r_ig   = d log NB / d log mu_ig = x - (x + theta) p,      p = mu / (theta + mu)
    s_ig   = d log NB / d b_g       = theta (psi(x + theta) - psi(theta))
                                      + theta (b - log(theta + mu)) + theta p - x (1 - p)
    d/du_ig (sum_g log p_ig) = r_ig - softmax(u_i)_g sum_g' r_ig'      (softmax Jacobian)
    d/d log l_i             = sum_g r_ig

ZINB (``pi = sigmoid(h)``): for ``x > 0`` the NB derivatives stand and ``d/dh = -pi``; for
``x = 0`` with ``w = sigmoid(log NB(0) - h)`` (the posterior weight of the NB zero) both NB
derivatives are multiplied by ``w`` and ``d/dh = (1 - w) - pi``. ``log Gamma`` and ``psi`` are
:func:`jaxfactor._count_lik.lgamma_digamma` (branch-free: recurrence + Stirling's series;
re-exported here). The values equal :func:`jaxfactor._count_lik.nb_log_prob` / ``zinb_log_prob``
summed over genes (``normalized=False``: without ``log x!``); the tests compare both values and
gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._count_lik import lgamma_digamma

__all__ = ["lgamma_digamma", "nb_nll", "zinb_nll"]


def _nb_sweep(x, u, log_lib, b):
    """Elementwise log NB (unnormalised), ``r``, ``s``, ``log NB(0)`` and ``softmax(u)``."""
    shift = jnp.max(u, axis=-1, keepdims=True)
    e = jnp.exp(u - shift)
    total = jnp.sum(e, axis=-1, keepdims=True)
    rho = e / total
    log_mu = u - shift - jnp.log(total) + log_lib[..., None]
    theta = jnp.exp(b)
    lg_t, dg_t = lgamma_digamma(theta)
    mu = rho * jnp.exp(log_lib)[..., None]
    log_s = jnp.log(theta + mu)
    p = mu / (theta + mu)
    lg_z, dg_z = lgamma_digamma(x + theta)
    nb0 = theta * (b - log_s)
    ll = lg_z - lg_t + nb0 + x * (log_mu - log_s)
    r = x - (x + theta) * p
    s = theta * (dg_z - dg_t) + nb0 + theta * p - x * (1.0 - p)
    return ll, r, s, nb0, rho


def _finish(rho, r, s, g):
    """Cotangents of (u, log_lib, b) from the per-cell cotangent ``g`` of the NLL."""
    R = jnp.sum(r, axis=-1)
    du = -g[..., None] * (r - rho * R[..., None])
    return du, -g * R, -jnp.einsum("...g,...->g", s, g)


@jax.custom_vjp
def nb_nll(x, u, log_lib, b):
    """Per-cell ``-sum_g log NB(x | l softmax(u), exp(b))`` without ``log x!``."""
    return -jnp.sum(_nb_sweep(x, u, log_lib, b)[0], axis=-1)


def _nb_fwd(x, u, log_lib, b):
    ll, r, s, _, rho = _nb_sweep(x, u, log_lib, b)
    return -jnp.sum(ll, axis=-1), (rho, r, s)


def _nb_bwd(res, g):
    rho, r, s = res
    return (None, *_finish(rho, r, s, g))


nb_nll.defvjp(_nb_fwd, _nb_bwd)


def _zinb_sweep(x, u, log_lib, b, h):
    ll, r, s, nb0, rho = _nb_sweep(x, u, log_lib, b)
    pos = x > 0
    norm = jax.nn.softplus(h)
    ll = jnp.where(pos, ll, jnp.logaddexp(h, nb0)) - norm
    w = jnp.where(pos, 1.0, jax.nn.sigmoid(nb0 - h))
    dh = jnp.where(pos, 0.0, 1.0 - w) - jax.nn.sigmoid(h)
    return ll, w * r, w * s, dh, rho


@jax.custom_vjp
def zinb_nll(x, u, log_lib, b, h):
    """Per-cell ``-sum_g log ZINB(x | l softmax(u), exp(b), sigmoid(h))`` without ``log x!``."""
    return -jnp.sum(_zinb_sweep(x, u, log_lib, b, h)[0], axis=-1)


def _zinb_fwd(x, u, log_lib, b, h):
    ll, r, s, dh, rho = _zinb_sweep(x, u, log_lib, b, h)
    return -jnp.sum(ll, axis=-1), (rho, r, s, dh)


def _zinb_bwd(res, g):
    rho, r, s, dh = res
    return (None, *_finish(rho, r, s, g), -g[..., None] * dh)


zinb_nll.defvjp(_zinb_fwd, _zinb_bwd)
