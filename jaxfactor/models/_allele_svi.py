r"""SVI for the allele-count model (:func:`jaxfactor.models._allele.allele_model`).

``fit_allele_svi`` maximises the ELBO with ``optax.adam`` under an ``AutoDelta`` (MAP) or
``AutoNormal`` (mean-field Gaussian in unconstrained space) guide:

.. math::

    \mathrm{ELBO}(\lambda) = \mathbb E_{q_\lambda(\theta)}\big[\log p(\mathrm{ALT} \mid \mathrm{DP}, \theta)
      + \log p(\theta) - \log q_\lambda(\theta)\big],

with the clone labels summed out exactly inside :math:`\log p` (Hoffman et al., JMLR 14, 2013;
Ranganath et al., AISTATS 2014; NumPyro's ``Trace_ELBO``, its terms summed in trace order:
``_TraceOrderELBO``).

Mechanics:

- **One compiled programme per problem shape.** The SVI object, the guide and a jitted
  ``advance(states, ...)`` running ``chunk`` optimiser steps in a ``lax.scan`` are cached on
  (cells, variants, clones, likelihood, guide, minibatch, prior settings); the data, the
  germline mask and the learning rate (``optax.inject_hyperparams``: data of the optimiser
  state) are arguments, so restarts, learning rates, repeated fits and held-out selection reuse it.
- **Restarts and learning rates side by side.** ``advance`` is ``vmap``-ped over a batch of SVI
  states: the likelihood surface is multimodal (two clones can merge while a third splits), so
  ``n_init`` starts, each from the pooled allele frequencies of ``K`` random cells shrunk to
  the population AF, run ``restart_steps`` steps together; the start with the lowest mean loss
  over its last steps continues to ``max_iter``. :func:`fit_allele_svi_grid` adds learning
  rates to the batch (a sweep over ``lr`` in one program). A start whose loss turns non-finite
  is dropped; a fit is refused only when its kept start diverges.
- **Cell minibatches.** ``batch_size`` subsamples cells with ``numpyro.plate(..., subsample_size)``;
  the likelihood term is rescaled by ``N / batch_size`` so the ELBO estimate stays unbiased
  (Hoffman et al. 2013). Clone probabilities and the reported log-likelihood always use all cells.
- **Sparse counts.** With scipy sparse input, or dense input whose covered fraction is below
  ``SPARSE_DENSITY`` or whose covered entries repeat few (variant, ALT, DP) triples (at most one
  distinct triple per 4 entries: low depths), the data go to the model as
  :class:`~jaxfactor.models._allele.SparseAlleleCounts` (covered entries only, their number
  rounded up to a size bucket): every step costs O(nnz · K) and no cells x variants array is
  built; the likelihood is computed once per distinct triple; the objective equals the dense
  one (``sparse=False`` / ``True`` forces a path).
  Minibatches (``batch_size``) are a dense-path option: sparse steps are already proportional
  to the reads, and plate subsampling would need a fixed number of entries per batch.
- **Warm starts.** ``init_af`` gives starting clone AFs (e.g. a binomial mixture's clone AFs at
  the same K, or a K−1 fit with one clone split; :func:`~jaxfactor.models.select_n_clones`
  does both); they take the first rows of the batch of starts, random starts fill the rest.
- **Stopping.** ``tol=None`` runs ``max_iter`` steps; with ``tol`` the kept start stops once the
  mean -ELBO of a chunk of steps changes by less than ``tol`` (relative) from the previous
  chunk (the smoothed objective; with several learning rates, once all have).
- **The data constant** ``sum log C(DP, ALT)`` is left out of the compiled step and added to
  the reported losses once.
- **Divergence.** The loss trace is checked after every chunk; a NaN/inf raises
  ``FloatingPointError`` naming the step — a diverged fit is never returned.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from numpyro.handlers import replay, seed
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density
from numpyro.infer.initialization import init_to_value
from scipy.special import gammaln

from .._protocol import renamed_arguments
from .._validate import check_choice, check_int, check_number
from ._allele import (GUIDES, LIKELIHOODS, SparseAlleleCounts, _check_data, _check_sizes, allele_model,
                      clone_responsibilities, sparse_allele_counts, sparse_entries)

__all__ = ["AlleleFit", "SPARSE_DENSITY", "fit_allele_svi", "fit_allele_svi_grid"]

SPARSE_DENSITY = 0.25  # sparse="auto": covered fraction below which only covered entries are evaluated

_SUPPORTS = {"pi": dist.constraints.simplex, "af_raw": dist.constraints.unit_interval,
             "dropout": dist.constraints.unit_interval, "error": dist.constraints.unit_interval,
             "concentration": dist.constraints.positive}


class AlleleFit(NamedTuple):
    clone_prob: np.ndarray    # (cells, clones) posterior clone probabilities
    labels: np.ndarray        # (cells,) argmax clone
    af: np.ndarray            # (clones, variants) fitted allele frequency (germline at 0.5)
    pi: np.ndarray            # (clones,)
    dropout: float
    error: float
    concentration: float | None
    losses: np.ndarray        # (num_steps,) negative ELBO trace of the kept start
    log_likelihood: float     # sum over cells of the marginal log-likelihood at the fitted point
    params: dict              # fitted guide medians (constrained)
    af_scale: np.ndarray | None = None    # (clones, variants) AutoNormal scale of logit(af); None for MAP
    restart_losses: np.ndarray | None = None  # (n_restarts,) score of every start (mean of its last losses)


class _TraceOrderELBO(ELBO):
    """One-particle ELBO estimate, ``−[log p(x, z) − log q(z)]`` with ``z ~ q``: NumPyro's
    ``Trace_ELBO`` (the same seeds: model key first, guide key second), with the sites summed in
    the order the model and guide traces visit them.

    NumPyro 0.22's ``Trace_ELBO`` sums the sites in the order of a Python ``set`` of their
    names, which changes with every process's string hashing (``PYTHONHASHSEED``): the traced
    program then differs between processes and JAX's persistent compilation cache never served
    the SVI step (the allele demo recompiled it on every run, ~11 s)."""

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, guide_key = jax.random.split(rng_key)
        log_q, guide_trace = log_density(seed(guide, guide_key), args, kwargs, param_map)
        log_p, _ = log_density(replay(seed(model, model_key), guide_trace), args, kwargs, param_map)
        return {"loss": log_q - log_p, "mutable_state": None}


def _freeze(kwargs: dict):
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in kwargs.items()))


@lru_cache(maxsize=16)
def _engine(n_cells, n_variants, n_clones, likelihood, guide, batch_size, chunk, frozen_kwargs, nnz=None):
    """SVI object + jitted functions for one problem shape (see the module docstring).

    The learning rate is data of the optimiser state (``optax.inject_hyperparams``), not part of
    the program: ``start(keys, af0s, lrs, alt, depth, germ)`` builds a batch of SVI states (one
    per start and learning rate) and ``advance(states, alt, depth, germ)`` runs ``chunk`` steps
    of every state of the batch, ``vmap``-ped (restarts and learning rates in one program).
    ``nnz``: sparse data, (entries, distinct triples) of its :class:`SparseAlleleCounts` (``depth=None``)."""
    kw = dict(frozen_kwargs)

    def model(a, d, germ):
        return allele_model(a, d, n_cells=n_cells, n_variants=n_variants, n_clones=n_clones, germline_mask=germ,
                            likelihood=likelihood, subsample_size=batch_size, normalised=False, **kw)

    init = init_to_value(values={"af_raw": jnp.full((n_clones, n_variants), 0.5), "dropout": 0.1, "error": 0.01,
                                 "pi": jnp.full(n_clones, 1.0 / n_clones)})
    g = AutoDelta(model, init_loc_fn=init) if guide == "delta" else AutoNormal(model, init_loc_fn=init, init_scale=0.05)
    svi = SVI(model, g, optax.inject_hyperparams(optax.adam)(learning_rate=0.05), _TraceOrderELBO())

    @jax.jit  # the guide's set-up traces the model (hundreds of tiny ops eagerly); compile it once
    def setup(key, a, d, germ):
        state = svi.init(key, a, d, germ)
        return state, g._init_locs

    if nnz is None:
        zeros = jnp.zeros((n_cells, n_variants), jnp.float32)
        dummy = (zeros, zeros)
    else:
        i, u = jnp.zeros(nnz[0], jnp.int32), jnp.zeros(nnz[1], jnp.int32)
        dummy = (SparseAlleleCounts(i, i, i, i, u, u.astype(jnp.float32), u.astype(jnp.float32), n_cells, n_variants),
                 None)
    state0, locs = setup(jax.random.PRNGKey(0), *dummy, jnp.zeros(n_variants, bool))
    g._init_locs = locs  # concrete values instead of the set-up's tracers
    base_params = svi.get_params(state0)

    def start_one(key, af0, lr, a, d, germ):
        params = dict(base_params)
        loc = af0 if guide == "delta" else jnp.log(af0) - jnp.log1p(-af0)
        params["af_raw_auto_loc"] = loc
        state = svi.init(key, a, d, germ, init_params=params)
        i, (p, opt) = state.optim_state  # numpyro's optax wrapper: (step, (params, optax state))
        opt = opt._replace(hyperparams={**opt.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)})
        return state._replace(optim_state=(i, (p, opt)))

    def advance_one(state, a, d, germ):
        def body(s, _):
            s, loss = svi.update(s, a, d, germ)
            return s, loss

        return jax.lax.scan(body, state, None, length=chunk)

    start = jax.jit(jax.vmap(start_one, in_axes=(0, 0, 0, None, None, None)))
    advance = jax.jit(jax.vmap(advance_one, in_axes=(0, None, None, None)))
    return svi, start, advance


def _initial_afs(alt, depth, n_clones, n_restarts, rng):
    """Starting clone AFs: the pooled AF of ``n_clones`` random cells, shrunk to the population AF.
    ``alt``, ``depth``: dense arrays or scipy CSR (only ``n_clones`` rows are densified)."""
    N = alt.shape[0]
    dense = lambda x: np.asarray(x.toarray() if hasattr(x, "toarray") else x, np.float64)  # noqa: E731
    pop = (np.asarray(alt.sum(0)).ravel() + 0.5) / (np.asarray(depth.sum(0)).ravel() + 1.0)
    w = 5.0  # pseudo-depth of the population AF in the shrinkage
    out = []
    for _ in range(n_restarts):
        idx = np.resize(rng.choice(N, size=min(n_clones, N), replace=False), n_clones)
        out.append(np.clip((dense(alt[idx]) + w * pop) / (dense(depth[idx]) + w), 0.02, 0.98))
    return np.asarray(out, np.float32).reshape(n_restarts, n_clones, -1)


def _run(advance, states, data, n_steps, chunk, bar=None, offset=0, const=0.0, tol=None, previous=None):
    """``n_steps`` steps of every state of the batch; returns the states, the loss traces (batch,
    steps run) and the first non-finite step of each (-1: none). A state whose loss turned
    non-finite is not advanced further (its trace is NaN from there). ``bar`` (a progress bar)
    is told the step (``offset`` + steps done) and the best -ELBO (loss + ``const``) after every chunk.
    ``tol``: stop early once every finite state's chunk-mean -ELBO changed by less than ``tol``
    (relative) from its previous chunk (``previous``: the chunk before the first, (batch, chunk) losses)."""
    losses = []
    first_bad = np.full(jax.tree_util.tree_leaves(states)[0].shape[0], -1)
    for c in range(n_steps // chunk):
        new, loss = advance(states, *data)
        loss = np.array(loss)
        bad = ~np.isfinite(loss)
        rows = bad.any(axis=1) & (first_bad < 0)
        first_bad[rows] = c * chunk + bad[rows].argmax(axis=1)
        keep = jnp.asarray(first_bad < 0)
        states = jax.tree_util.tree_map(lambda n, o: jnp.where(keep.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                                        new, states)
        loss[first_bad >= 0] = np.nan
        losses.append(loss)
        before = losses[-2] if len(losses) > 1 else previous
        if tol is not None and before is not None and before.shape[1]:
            now, before = losses[-1].mean(axis=1) - const, before.mean(axis=1) - const
            ok = first_bad < 0
            change = np.abs(now - before) / np.maximum(np.abs(now), 1e-12)
            if ok.any() and (change[ok] < tol).all():
                if bar is not None:
                    bar.update(offset + (c + 1) * chunk)
                break
        if bar is not None:
            last = loss[:, -1][np.isfinite(loss[:, -1])]
            bar.update(offset + (c + 1) * chunk, **({"neg_elbo": float(last.min() - const)} if last.size else {}))
    return states, (np.concatenate(losses, axis=1) if losses else np.zeros((first_bad.size, 0), np.float32)), first_bad


@renamed_arguments(n_clones="n_components", num_steps="max_iter", n_restarts="n_init")
def fit_allele_svi(alt, depth, n_components, *, max_iter=2000, lr=0.05, guide="delta", seed=0, likelihood="binomial",
                   germline_mask=None, n_init=1, restart_steps=200, batch_size=None, chunk_size=100, tol=None,
                   init_af=None, sparse="auto", **model_kwargs) -> AlleleFit:
    """Fit the allele model by SVI; see the module docstring.

    Args:
      alt, depth: (cells x variants) counts.
      n_components: the number of clones K (``n_clones=`` is deprecated).
      max_iter: optimiser steps of the kept start (``restart_steps`` of them shared with the
        restart phase when ``n_init > 1``; ``num_steps=`` is deprecated).
      lr: Adam learning rate.
      guide: ``"delta"`` (MAP) or ``"normal"`` (mean-field).
      n_init, restart_steps: random starts (``n_restarts=`` is deprecated) and the steps each runs
        before the best is kept.
      batch_size: cells per step (``plate`` subsampling); ``None`` uses every cell.
      chunk_size: steps per compiled call (the loss is checked for NaN between calls).
      tol: ``None`` runs ``max_iter`` steps; else stop when the chunk-mean -ELBO changes by less
        than ``tol`` (relative) between chunks.
      init_af: starting clone AFs, (K, variants) or (starts, K, variants): the first starts
        (random ones fill the rest of ``n_init``; more than ``n_init`` given: all are used).
      sparse: ``"auto"`` (scipy sparse input, or covered fraction below ``SPARSE_DENSITY``),
        ``True`` or ``False``: evaluate only the covered entries (module docstring).
      germline_mask: (variants,) bool, sites fixed at AF 0.5 in every clone.
      model_kwargs: priors of :func:`~jaxfactor.models._allele.allele_model`.

    Raises ``ValueError`` on bad input (before compiling) and ``FloatingPointError`` when the
    ELBO becomes NaN/inf (the message names the step).
    """
    out = _fit_lrs(alt, depth, n_components, [lr], max_iter=max_iter, guide=guide, seed=seed, likelihood=likelihood,
                   germline_mask=germline_mask, n_init=n_init, restart_steps=restart_steps, batch_size=batch_size,
                   chunk_size=chunk_size, tol=tol, init_af=init_af, sparse=sparse, **model_kwargs)[0]
    if isinstance(out, str):
        raise FloatingPointError(out)
    return out


def fit_allele_svi_grid(alt, depth, n_components, lrs, **kwargs) -> list:
    """:func:`fit_allele_svi` once per learning rate of ``lrs`` (other settings as ``kwargs``),
    side by side: every start of every learning rate is one row of the same ``vmap``-ped SVI
    step (one compiled program). Each equals its own ``fit_allele_svi`` up to float32 rounding.
    Returns one :class:`AlleleFit` per learning rate, or a string saying why that one diverged
    (the others go on)."""
    lrs = list(lrs)
    if not lrs:
        raise ValueError("lrs is empty; give at least one learning rate")
    return _fit_lrs(alt, depth, n_components, lrs, **kwargs)


def _few_triples(alt, depth):
    """Whether the covered entries repeat few (variant, ALT, DP) triples (at most a quarter as many
    as entries): the sparse path then computes the likelihood once per triple and is faster than
    the dense one at any density (about 4x at 40 % covered, depth ~3, measured on 4000 x 25)."""
    covered = depth > 0
    nnz = int(covered.sum())
    if nnz == 0 or alt.shape != depth.shape:
        return False
    cols = np.broadcast_to(np.arange(depth.shape[1]), depth.shape)[covered]
    key = np.stack([cols, np.asarray(alt)[covered], depth[covered]], axis=1)
    try:
        key = key.astype(np.int64)
    except (ValueError, OverflowError):
        return False
    return np.unique(key, axis=0).shape[0] * 4 <= nnz


def _as_inputs(alt, depth, sparse):
    """(alt, depth) for the host (dense float64 or CSR float64) and for the model: dense arrays, or
    ``(SparseAlleleCounts, None)``."""
    import scipy.sparse as sp

    if sparse not in ("auto", True, False):
        raise ValueError(f"sparse must be 'auto', True or False, got {sparse!r}")
    either = sp.issparse(alt) or sp.issparse(depth)
    if sparse is False or (sparse == "auto" and not either):
        if sparse == "auto":
            d = np.asarray(depth)
            if d.ndim == 2 and d.size and np.count_nonzero(d) < SPARSE_DENSITY * d.size:
                return _as_inputs(alt, depth, True)
            if d.ndim == 2 and d.size and _few_triples(np.asarray(alt), d):
                return _as_inputs(alt, depth, True)
        if either:
            alt = alt.toarray() if sp.issparse(alt) else alt
            depth = depth.toarray() if sp.issparse(depth) else depth
        alt, depth = _check_data(alt, depth)
        return alt, depth, (np.asarray(alt, np.float32), np.asarray(depth, np.float32))  # on the device later
    entries = sparse_entries(alt, depth)
    rows, cols, a, d = entries
    counts = sparse_allele_counts(alt, depth, entries=entries)
    a_host = sp.csr_matrix((a, (rows, cols)), shape=counts.shape)  # the same structure as d_host
    d_host = sp.csr_matrix((d, (rows, cols)), shape=counts.shape)
    return a_host, d_host, (counts, None)


def _fit_lrs(alt, depth, n_clones, lrs, *, max_iter=2000, guide="delta", seed=0, likelihood="binomial",
             germline_mask=None, n_init=1, restart_steps=200, batch_size=None, chunk_size=100, tol=None, init_af=None,
             sparse="auto", **model_kwargs) -> list:
    num_steps, n_restarts = max_iter, n_init
    alt, depth = (x if hasattr(x, "shape") else np.asarray(x) for x in (alt, depth))
    if sparse == "auto" and batch_size is not None and len(alt.shape) == 2 and batch_size < alt.shape[0]:
        import scipy.sparse as sp

        sparse = "auto" if sp.issparse(alt) or sp.issparse(depth) else False  # minibatches: the dense path
    if len(alt.shape) == 2 and min(alt.shape) > 0:  # the rank is refused before the data are converted
        _check_sizes(*alt.shape, n_clones)
        if n_clones > alt.shape[0]:
            raise ValueError(f"n_clones={n_clones} exceeds the number of cells ({alt.shape[0]}); use fewer clones")
    alt, depth, model_data = _as_inputs(alt, depth, sparse)
    is_sparse = isinstance(model_data[0], SparseAlleleCounts)
    N, J = alt.shape
    _check_sizes(N, J, n_clones)
    if n_clones > N:
        raise ValueError(f"n_clones={n_clones} exceeds the number of cells ({N}); use fewer clones")
    check_choice(guide, "guide", GUIDES)
    check_choice(likelihood, "likelihood", LIKELIHOODS)
    for name, v in (("max_iter", num_steps), ("n_init", n_restarts), ("restart_steps", restart_steps),
                    ("chunk_size", chunk_size)):
        check_int(v, name, 1)
    check_int(batch_size, "batch_size", 1, allow_none=True)
    if tol is not None:
        check_number(tol, "tol", 0)
    if batch_size is not None and (batch_size >= N or is_sparse):
        batch_size = None  # the sparse path evaluates every covered entry (module docstring)
    for lr in lrs:
        check_number(lr, "lr", 0, low_open=True)
    germ = np.zeros(J, bool) if germline_mask is None else np.asarray(germline_mask, bool)
    if germ.shape != (J,):
        raise ValueError(f"germline_mask has shape {germ.shape}, expected {(J,)}")
    unknown = set(model_kwargs) - _MODEL_PRIORS
    if unknown:
        raise ValueError(f"unknown model settings {sorted(unknown)}; valid: {sorted(_MODEL_PRIORS)}")

    starts = None
    if init_af is not None:
        starts = np.asarray(init_af, np.float64)
        starts = starts[None] if starts.ndim == 2 else starts
        if starts.ndim != 3 or starts.shape[1:] != (n_clones, J) or not np.isfinite(starts).all():
            raise ValueError(f"init_af must be (K, variants) or (starts, K, variants) = (.., {n_clones}, {J}) and finite, "
                             f"got shape {starts.shape}")
        starts = np.clip(starts, 0.01, 0.99).astype(np.float32)
        n_restarts = max(n_restarts, starts.shape[0])

    chunk = int(min(chunk_size, num_steps))
    # step counts are rounded up to whole chunks, so one compiled `advance` serves the whole fit
    num_steps = -(-num_steps // chunk) * chunk
    restart_steps = min(-(-restart_steps // chunk) * chunk, num_steps) if n_restarts > 1 else 0
    nnz = (model_data[0].nnz, int(model_data[0].ucols.shape[0])) if is_sparse else None
    svi, start, advance = _engine(N, J, int(n_clones), likelihood, guide, batch_size, chunk, _freeze(model_kwargs), nnz)
    data = (*(jnp.asarray(x) if isinstance(x, np.ndarray) else x for x in model_data), jnp.asarray(germ))
    rng = np.random.default_rng(seed)
    af0s = _initial_afs(alt, depth, n_clones, n_restarts, rng)
    if starts is not None:
        af0s[:starts.shape[0]] = starts
    keys = jax.random.split(jax.random.PRNGKey(seed), n_restarts)
    P, R = len(lrs), n_restarts
    lr_rows = jnp.asarray(np.repeat(np.asarray(lrs, np.float32), R))  # row p * R + r: learning rate p, start r
    states = start(jnp.tile(keys, (P, 1)), jnp.asarray(np.tile(af0s, (P, 1, 1))), lr_rows, *data)

    # the data constant sum_ij log C(DP_ij, ALT_ij), left out of the model, back in every loss
    if is_sparse:
        a_e, d_e = alt.data, depth.data  # the same CSR structure (built from one entry list)
        const = np.float32((gammaln(d_e + 1) - gammaln(a_e + 1) - gammaln(d_e - a_e + 1)).sum())
    else:
        const = np.float32(np.where(depth > 0, gammaln(depth + 1) - gammaln(alt + 1) - gammaln(depth - alt + 1),
                                    0).sum())
    from .._progress import bar as progress_bar

    with progress_bar(num_steps, unit="step") as bar:
        if R > 1:  # every start runs restart_steps; the one with the lowest mean of its last losses continues
            states, first, bad = _run(advance, states, data, restart_steps, chunk, bar, 0, const)
            tail = max(1, min(20, restart_steps // 5))
            scores = np.where(bad < 0, first[:, -tail:].mean(axis=1), np.inf).reshape(P, R)
            best = np.argmin(scores, axis=1)
            rows = np.arange(P) * R + best
            states = jax.tree_util.tree_map(lambda x: x[jnp.asarray(rows)], states)
            first, first_bad = first[rows], np.where(np.isfinite(scores[np.arange(P), best]), -1, bad[rows])
            scores = scores - const
        else:
            first, first_bad, scores = np.zeros((P, 0), np.float32), np.full(P, -1), None
        states, rest, bad = _run(advance, states, data, num_steps - first.shape[1], chunk, bar, first.shape[1], const,
                                 tol, first[:, -chunk:])
    bad = np.where(bad >= 0, bad + first.shape[1], -1)
    out = []
    for p, lr in enumerate(lrs):
        step = first_bad[p] if first_bad[p] >= 0 else bad[p]
        if step >= 0:
            out.append(f"SVI diverged at step {int(step)} with lr={lr:g}; lower lr or check the data")
            continue
        state = jax.tree_util.tree_map(lambda x: x[p], states)
        out.append(_result(svi, state, data, guide, likelihood, np.concatenate([first[p], rest[p]]) - const,
                           None if scores is None else scores[p]))
    return out


def _result(svi, state, data, guide, likelihood, losses, restart_losses) -> AlleleFit | str:
    """The fit of one kept SVI state: guide medians, clone posteriors and marginal likelihood."""
    raw = svi.get_params(state)
    med = _guide_median(raw, guide)
    af = jnp.where(data[2][None, :], 0.5, med["af_raw"])
    kappa = med.get("concentration")
    prob, marginal = clone_responsibilities(data[0], data[1], af, med["pi"], med["dropout"], med["error"],
                                            likelihood=likelihood, concentration=kappa)
    prob = np.asarray(prob)
    if not (np.isfinite(prob).all() and np.isfinite(np.asarray(marginal)).all()):
        return "SVI ended at non-finite clone probabilities; lower lr or check the data"
    af_scale = np.asarray(raw["af_raw_auto_scale"]) if guide == "normal" else None
    return AlleleFit(clone_prob=prob, labels=prob.argmax(1), af=np.asarray(af), pi=np.asarray(med["pi"]),
                     dropout=float(med["dropout"]), error=float(med["error"]),
                     concentration=None if kappa is None else float(kappa), losses=losses,
                     log_likelihood=float(np.asarray(marginal, np.float64).sum()),
                     params={k: np.asarray(v) for k, v in med.items()}, af_scale=af_scale, restart_losses=restart_losses)


_MODEL_PRIORS = {"pi_concentration", "af_prior", "dropout_prior", "error_prior", "concentration_prior"}


def _guide_median(params, guide):
    """Constrained point estimates from the fitted guide parameters: AutoDelta's ``*_auto_loc``
    are constrained already (``get_params``); AutoNormal's are unconstrained locations."""
    out = {}
    for name, support in _SUPPORTS.items():
        key = f"{name}_auto_loc"
        if key in params:
            loc = params[key]
            out[name] = loc if guide == "delta" else dist.transforms.biject_to(support)(loc)
    return out
