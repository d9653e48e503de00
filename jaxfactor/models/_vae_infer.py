"""Compiled batch inference of a fitted VAE / autoencoder: encode, decode, sample, evaluate.

Every function runs one jitted program over batches of exactly ``batch_size`` cells: the last
batch is zero-padded and the padding dropped, so a new number of cells never recompiles (only a
new ``batch_size``, gene count or configuration does). Inference runs the network with dropout
off and batch norm on its running statistics, so each cell's output does not depend on the other
cells of its batch (or on the padding).

Evaluation (:func:`evaluate`), per cell, averaged over cells:

- ``neg_elbo``: ``E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))`` (analytic KL, ``n_samples`` draws of
  ``z``); scVI's ``get_elbo`` reports the same quantity (one draw).
- ``log_px``: the importance-weighted bound of Burda et al. (ICLR 2016) with ``k = n_importance``
  samples, ``log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)``, ``z_i ~ q(z|x)``: a lower bound on
  ``log p(x)`` that rises towards it as ``k`` grows (for ``k = 1`` its expectation is the ELBO).
- ``reconstruction_error``: ``-log p(x | z = E_q[z])``; for the autoencoder the whole loss.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax

from ._likelihoods import mean as likelihood_mean
from ._likelihoods import sample as likelihood_sample
from ._vae_input import OBSM_KEY, _int, check_values, read_input
from ._vae_modules import VAE
from ._vae_train import encoder_input, kl_standard_normal, log_library, target
from ._vae_train import nll as cell_nll

if TYPE_CHECKING:  # annotations only: _vae_api calls this module
    from ._vae_api import VAEFit

__all__ = ["decode", "encode", "evaluate", "sample"]

TRACES: Counter = Counter()  # how often each batch function was traced (tests check no retrace)
_LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------------
# compiled batch functions
# ------------------------------------------------------------------------------------------------

def _encode(config, variables, x):
    mean, var = VAE(config).apply(variables, encoder_input(config, x), method=VAE.encode)
    return mean, (jnp.zeros_like(mean) if var is None else var)


def _decode(config, variables, z, log_lib):
    return VAE(config).apply(variables, z, log_lib, method=VAE.decode)


@partial(jax.jit, static_argnames=("config",))
def _encode_batch(variables, x, *, config):
    TRACES["encode"] += 1
    return _encode(config, variables, x)


@partial(jax.jit, static_argnames=("config",))
def _decode_batch(variables, z, log_lib, *, config):
    TRACES["decode"] += 1
    return likelihood_mean(config.likelihood, _decode(config, variables, z, log_lib))


@partial(jax.jit, static_argnames=("config",))
def _sample_batch(variables, x, z, log_lib, key, posterior, *, config):
    """``posterior``: draw ``z ~ q(z|x)`` with the observed library of ``x``; else decode the
    given ``z`` and ``log_lib`` (a traced flag: one compiled program serves both)."""
    TRACES["sample"] += 1
    k_z, k_x = jax.random.split(key)
    mean, var = _encode(config, variables, x)
    z = jnp.where(posterior, mean + jnp.sqrt(var) * jax.random.normal(k_z, mean.shape, mean.dtype), z)
    log_lib = jnp.where(posterior, log_library(x), log_lib)
    return likelihood_sample(config.likelihood, k_x, _decode(config, variables, z, log_lib))


@partial(jax.jit, static_argnames=("config",))
def _evaluate_batch(variables, x, key, n_samples, n_importance, *, config):
    """Per-cell (reconstruction NLL, KL, NLL at the posterior mean, IWAE log p(x)).

    The sample counts are traced (``fori_loop``; the importance weights are combined by a
    running log-sum-exp), so every ``n_samples`` / ``n_importance`` shares one program.
    """
    TRACES["evaluate"] += 1
    mean, var = _encode(config, variables, x)
    log_lib, y = log_library(x), target(config, x)
    nll = lambda z: cell_nll(config, y, _decode(config, variables, z, log_lib))
    k_elbo, k_iw = jax.random.split(key)
    draw = lambda k: jax.random.normal(k, mean.shape, mean.dtype)
    at_mean = nll(mean)
    if not config.variational:
        nan = jnp.full(x.shape[0], jnp.nan, x.dtype)
        return at_mean, jnp.zeros_like(at_mean), at_mean, nan
    total = lax.fori_loop(0, n_samples, lambda i, acc: acc + nll(mean + jnp.sqrt(var) * draw(jax.random.fold_in(k_elbo, i))),
                          jnp.zeros_like(at_mean))
    rec = total / jnp.maximum(n_samples, 1).astype(x.dtype)

    def log_weight(i, carry):
        top, acc = carry
        eps = draw(jax.random.fold_in(k_iw, i))
        z = mean + jnp.sqrt(var) * eps
        log_pz = -0.5 * jnp.sum(jnp.square(z) + _LOG_2PI, axis=-1)
        log_qz = -0.5 * jnp.sum(jnp.square(eps) + _LOG_2PI + jnp.log(var), axis=-1)
        lw = -nll(z) + log_pz - log_qz
        new_top = jnp.maximum(top, lw)
        return new_top, acc * jnp.exp(top - new_top) + jnp.exp(lw - new_top)

    top, acc = lax.fori_loop(0, n_importance, log_weight, (jnp.full_like(at_mean, -jnp.inf), jnp.zeros_like(at_mean)))
    iwae = top + jnp.log(acc) - jnp.log(jnp.maximum(n_importance, 1).astype(x.dtype))
    return rec, kl_standard_normal(mean, var), at_mean, iwae


# ------------------------------------------------------------------------------------------------
# host-side batching
# ------------------------------------------------------------------------------------------------

def _new_cells(fit: VAEFit, data, layer, *, integer: bool):
    """Cells x model genes (float32, still sparse if sparse), the AnnData if any."""
    mat, adata, names = read_input(data, layer)
    check_values(mat, fit.config.likelihood, fit.config.transform, integer=integer)
    g = mat.shape[1]
    if names is not None and fit.gene_names is not None:
        pos = {n: i for i, n in enumerate(names)}
        wanted = [fit.gene_names[j] for j in fit.genes]
        missing = [n for n in wanted if n not in pos]
        if missing:
            raise ValueError(f"{len(missing)} of the model's genes are missing from the data (e.g. {missing[0]!r})")
        cols = np.asarray([pos[n] for n in wanted])
    elif g == fit.n_input_genes:
        cols = fit.genes
    elif g == fit.config.n_genes:
        cols = None
    else:
        raise ValueError(f"the data have {g} genes; the model expects {fit.n_input_genes} (its input) "
                         f"or {fit.config.n_genes} (the genes it kept)")
    if cols is not None and not (len(cols) == g and np.array_equal(cols, np.arange(g))):
        mat = mat[:, cols]
    return mat, adata


def _rows(mat, start, stop, size):
    block = mat[start:stop]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    out = np.zeros((size,) + block.shape[1:], np.float32)
    out[: stop - start] = block
    return out


def _batched(n, batch_size, fn):
    """Run ``fn(start, stop, index)`` over ``[0, n)`` in steps of ``batch_size``; concatenate the
    first ``stop - start`` rows of every output."""
    outs = []
    for i, start in enumerate(range(0, n, batch_size)):
        stop = min(start + batch_size, n)
        res = jax.device_get(fn(start, stop, i))
        res = res if isinstance(res, tuple) else (res,)
        outs.append(tuple(np.asarray(r)[: stop - start] for r in res))
    return tuple(np.concatenate(parts) for parts in zip(*outs))


# ------------------------------------------------------------------------------------------------
# public functions
# ------------------------------------------------------------------------------------------------

def encode(fit: VAEFit, data, *, layer: str | None = None, batch_size: int = 1024, return_var: bool = False,
           obsm_key: str | None = OBSM_KEY):
    """Posterior means ``E_q[z | x]`` (cells x n_latent, float32) of new or training cells.

    ``data``: an array, sparse matrix or AnnData with the model's genes (all input genes, or
    only the kept ones; an AnnData is aligned by gene name). For an AnnData the means are also
    written to ``adata.obsm[obsm_key]`` (``'X_jaxfactor_vae'``; ``None``: do not write), ready for
    ``sc.pp.neighbors(adata, use_rep='X_jaxfactor_vae')``. ``return_var=True`` also returns the
    posterior variances (zeros for the autoencoder).
    """
    B = _int(batch_size, "batch_size")
    mat, adata = _new_cells(fit, data, layer, integer=False)
    variables = fit.variables
    mean, var = _batched(mat.shape[0], B, lambda s, e, i: _encode_batch(variables, _rows(mat, s, e, B), config=fit.config))
    if adata is not None and obsm_key:
        adata.obsm[obsm_key] = mean
    return (mean, var) if return_var else mean


def _log_lib_arg(fit: VAEFit, library_size, n):
    lib = fit.library_median if library_size is None else library_size
    lib = np.broadcast_to(np.asarray(lib, np.float32), (n,))
    if not np.all(np.isfinite(lib)) or lib.min() <= 0:
        raise ValueError("library_size must be finite and > 0")
    return np.log(lib).astype(np.float32)


def decode(fit: VAEFit, z, *, library_size=None, batch_size: int = 1024) -> np.ndarray:
    """Expected data ``E[x | z]`` (cells x model genes) for latent points ``z`` (cells x n_latent).

    Count likelihoods: ``l * rho(z)`` (times ``1 - pi`` for ZINB) with library ``l`` =
    ``library_size`` (scalar or per cell; default: the median training library).
    """
    B = _int(batch_size, "batch_size")
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape[1] != fit.config.n_latent:
        raise ValueError(f"z must have shape (n, {fit.config.n_latent}), got {z.shape}")
    ll = _log_lib_arg(fit, library_size, z.shape[0])
    variables = fit.variables
    return _batched(z.shape[0], B, lambda s, e, i: _decode_batch(
        variables, _rows(z, s, e, B), _rows(ll, s, e, B), config=fit.config))[0]


def sample(fit: VAEFit, n_cells: int | None = None, *, data=None, layer: str | None = None, library_size=None,
           seed: int = 0, batch_size: int = 1024) -> np.ndarray:
    """Simulate cells (float32, cells x model genes).

    Without ``data``: ``n_cells`` draws with ``z ~ N(0, I)`` and library ``library_size``
    (default: the median training library). With ``data``: the posterior predictive of those
    cells, ``z ~ q(z | x)`` with their observed libraries. Deterministic for a seed and
    ``batch_size`` (batch ``i`` uses ``fold_in(PRNGKey(seed), i)``).
    """
    B = _int(batch_size, "batch_size")
    key = jax.random.PRNGKey(seed)
    c, variables = fit.config, fit.variables
    if data is not None:
        mat, _ = _new_cells(fit, data, layer, integer=False)
        zeros_z, zeros_l = np.zeros((B, c.n_latent), np.float32), np.zeros(B, np.float32)
        return _batched(mat.shape[0], B, lambda s, e, i: _sample_batch(
            variables, _rows(mat, s, e, B), zeros_z, zeros_l, jax.random.fold_in(key, i), True, config=c))[0]
    n = _int(n_cells, "n_cells")
    k_prior, key = jax.random.split(key)
    z = np.asarray(jax.random.normal(k_prior, (n, c.n_latent)), np.float32)
    ll = _log_lib_arg(fit, library_size, n)
    zeros_x = np.zeros((B, c.n_genes), np.float32)
    return _batched(n, B, lambda s, e, i: _sample_batch(
        variables, zeros_x, _rows(z, s, e, B), _rows(ll, s, e, B), jax.random.fold_in(key, i), False, config=c))[0]


def evaluate(fit: VAEFit, data, *, layer: str | None = None, n_samples: int = 1, n_importance: int = 0,
             seed: int = 0, batch_size: int = 256, per_cell: bool = False) -> dict:
    """Held-out scores of ``data`` under the fitted model (see the module docstring).

    Returns a dict of per-cell means: ``neg_elbo``, ``reconstruction`` (``E_q[-log p(x|z)]``),
    ``kl``, ``reconstruction_error`` (at the posterior mean) and, when ``n_importance > 0`` (VAE
    only), ``log_px`` (importance-weighted, ``k = n_importance``); with ``per_cell=True`` also the
    per-cell arrays under ``'cells'``. All-zero cells are scored with a library of one count.
    """
    B = _int(batch_size, "batch_size")
    S = _int(n_samples, "n_samples")
    K = _int(n_importance, "n_importance", 0)
    mat, _ = _new_cells(fit, data, layer, integer=True)
    key = jax.random.PRNGKey(seed)
    variables = fit.variables
    rec, kl, at_mean, iwae = _batched(mat.shape[0], B, lambda s, e, i: _evaluate_batch(
        variables, _rows(mat, s, e, B), jax.random.fold_in(key, i), np.int32(S), np.int32(K), config=fit.config))
    mean = lambda a: float(np.mean(a, dtype=np.float64))
    out = {"neg_elbo": mean(rec + kl), "reconstruction": mean(rec), "kl": mean(kl), "reconstruction_error": mean(at_mean),
           "n_cells": int(mat.shape[0])}
    if K and fit.config.variational:
        out["log_px"] = mean(iwae)
    if per_cell:
        out["cells"] = {"neg_elbo": rec + kl, "reconstruction": rec, "kl": kl, "reconstruction_error": at_mean,
                        "log_px": iwae}
    return out
