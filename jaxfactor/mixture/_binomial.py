"""Binomial mixture of allele counts: the count-level clone model, by MAP-EM or mean-field VB.

Data: for cells i and variants j, ``ALT_ij`` alternative-allele reads out of a depth
``DP_ij = REF_ij + ALT_ij``. Each cell belongs to one of K clones (``z_i``); clone k has an
allele frequency ``θ_jk`` at every variant, and

    ALT_ij | z_i = k  ~  Binomial(DP_ij, θ_jk),      θ_jk ~ Beta(a, b),      π ~ Dirichlet(α 1_K).

An entry with ``DP_ij = 0`` (uncovered) contributes nothing. Summed over variants the
log-likelihood of cell i under clone k is two matrix products,

    ℓ_ik = Σ_j ALT_ij log θ_jk + REF_ij log(1 − θ_jk) + log C(DP_ij, ALT_ij),

``ℓ = ALT @ log θ + REF @ log(1 − θ) + const``. With scipy sparse input the products run on
``jax.experimental.sparse.BCOO`` matrices, so a large cells × variants matrix is never densified
(memory O(nnz + (cells + variants)·K)).

**MAP-EM** (``binomial_mixture_em``). E-step: responsibilities ``r_ik ∝ π_k exp(ℓ_ik)``.
M-step (exact maximiser of the expected complete log posterior)::

    θ_jk = (Σ_i r_ik ALT_ij + a − 1) / (Σ_i r_ik DP_ij + a + b − 2),   clipped to [1e-6, 1 − 1e-6]
    π_k ∝ Σ_i r_ik + α − 1

The objective is the negative log posterior ``−(log p(ALT | θ, π) + log p(θ) + log p(π))`` with
every normalising constant kept (binomial coefficients, Beta and Dirichlet normalisers), so
``−objective − log prior`` is a true log-likelihood; EM never increases it (needs a, b, α ≥ 1:
the M-step is then the maximiser of a concave function on the clipped box). With the defaults
a = b = α = 1 it is maximum likelihood.

**Mean-field VB** (``binomial_mixture_vb``): the model of vireoSNP's ``BinomMixtureVB``
(Huang, McCarthy & Stegle, "Vireo: Bayesian demultiplexing of pooled single-cell RNA-seq data
without genotype reference", Genome Biology 20:273, 2019). Factorised posterior
``q(z_i) = Categorical(r_i)``, ``q(θ_jk) = Beta(s1_jk, s2_jk)``; one step is, in vireoSNP's order,

    s1 = ALTᵀ r + a,   s2 = REFᵀ r + b                                    (Beta posteriors)
    E_ik = ALT @ (ψ(s1) − ψ(s1 + s2)) + REF @ (ψ(s2) − ψ(s1 + s2))      (E_q log-likelihood)
    r_ik ∝ exp(E_ik + log π_k)                                           (assignments)

and the objective is the negative ELBO

    ELBO = Σ_ik r_ik (E_ik + log π_k − log r_ik) − Σ_jk KL(Beta(s1, s2) ‖ Beta(a, b)) + Σ log C(DP, ALT),

which coordinate ascent never decreases. ``π`` is fixed and uniform as in vireoSNP
(``learn_weights=False``), or, with ``learn_weights=True``, gets a Dirichlet posterior
``q(π) = Dir(α + Σ_i r_i)``: ``log π_k`` above becomes ``E_q log π_k = ψ(w_k) − ψ(Σ w)`` and the
ELBO loses ``KL(Dir(w) ‖ Dir(α))``.

**Collapse.** A clone that loses all its cells never produces NaN: its θ falls back on the prior
mean ``a/(a+b)`` where no read supports it (EM) or on the prior Beta (VB), and EM floors its weight
at 1e-8·n_cells pseudo-cells; the Python API reports such clones (expected size < 0.5 cell) in
``BinomialMixtureResult.collapsed`` and warns. It does not re-seed them (use ``n_init``).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.scipy.special import digamma, gammaln, logsumexp
from scipy.special import gammaln as sp_gammaln

from .._base import Algorithm
from .._protocol import renamed_arguments
from .._cells import REPL, ROWS, check_cell_mesh, pad_rows, padded_size, place_rows
from .._registry import register_example
from .._validate import check_choice, check_int, check_nonnegative_float, check_number, check_positive_int
from .._cells import CellData, Cells, all_cells, cell_data, data_specs, on_cells, split_cells
from ._em import EMModel, em_algorithm

AF_FLOOR = 1e-6  # allele frequencies are kept in [AF_FLOOR, 1 - AF_FLOOR] by MAP-EM
WEIGHT_FLOOR = 1e-8  # MAP-EM mixing weights are floored at WEIGHT_FLOOR * n_cells pseudo-cells


class BinomialData(NamedTuple):
    """Allele counts, cells × variants, dense arrays or ``BCOO`` (build with ``binomial_data``)."""

    alt: Any  # (n_cells, n_variants) ALT reads
    ref: Any  # (n_cells, n_variants) REF reads = DP - ALT
    log_coef: jax.Array  # scalar Σ_ij log C(DP_ij, ALT_ij), the binomial coefficients


class BinomialMixtureHparams(NamedTuple):
    """Prior strengths (pytree data: sweeping them never recompiles).

    ``beta_a``, ``beta_b``: Beta(a, b) prior of every allele frequency (vireoSNP's default
    ``beta_mu_prior = 0.5, beta_sum_prior = 2`` is a = b = 1). ``dirichlet``: symmetric Dirichlet
    concentration α of the mixing weights (MAP-EM, and VB with ``learn_weights=True``).
    MAP-EM needs all three >= 1; VB needs them > 0.
    """

    beta_a: float = 1.0
    beta_b: float = 1.0
    dirichlet: float = 1.0


class BinomialEMParams(NamedTuple):
    af: jax.Array  # (n_variants, K) allele frequency θ per variant and clone
    weights: jax.Array  # (K,) mixing weights π


class BinomialVBState(NamedTuple):
    prob: jax.Array  # (n_cells, K) q(z_i = k)
    af_alpha: jax.Array  # (n_variants, K) Beta posterior s1
    af_beta: jax.Array  # (n_variants, K) Beta posterior s2
    weights_alpha: jax.Array  # (K,) Dirichlet posterior of π (α + Σ_i r_ik; unused when weights are fixed)


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------

def _cross(data: BinomialData, A, B):
    """``ALT @ A + REF @ B`` for (n_variants, K) matrices A, B: (n_cells, K)."""
    return data.alt @ A + data.ref @ B


def _suff(data: BinomialData, R):
    """Expected ALT and REF read counts per variant and clone: ``ALTᵀ R``, ``REFᵀ R`` (n_variants, K)."""
    return data.alt.T @ R, data.ref.T @ R


def _random_prob(key, n: int, n_clones: int, dtype):
    """Random assignment probabilities of n cells: rows drawn from a flat Dirichlet."""
    e = -jnp.log(jax.random.uniform(key, (n, n_clones), dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0))
    return e / jnp.sum(e, axis=1, keepdims=True)


def _betaln(a, b):
    """log B(a, b) as gammaln(a) + gammaln(b) − gammaln(a + b).

    ``jax.scipy.special.betaln`` (jax 0.10) is off by up to ~1e-6 in float64 for moderate
    arguments (e.g. a ≈ 8.1, b ≈ 2.7, against scipy); the gammaln form is accurate to ~1e-12 here.
    """
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def _xlogx(p):
    return jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)


# ---------------------------------------------------------------------------------------------
# MAP-EM
# ---------------------------------------------------------------------------------------------

def _em_joint(params: BinomialEMParams, data: BinomialData):
    """log π_k + Σ_j log Binomial(ALT_ij | DP_ij, θ_jk) without the coefficients: (n_cells, K)."""
    return jnp.log(params.weights) + _cross(data, jnp.log(params.af), jnp.log1p(-params.af))


def em_m_step(prob, data: BinomialData, hp: BinomialMixtureHparams) -> BinomialEMParams:
    """MAP M-step from responsibilities ``prob`` (n_cells, K); see the module docstring."""
    return _em_m_step(prob, hp, data, all_cells(prob.shape[0]))


def _em_m_step(prob, hp, data, cells: Cells) -> BinomialEMParams:
    """The M-step on this device's cells; ``cells.sum`` totals over devices, padding masked."""
    prob = cells.keep(prob)
    sa, sr = cells.sum(_suff(data, prob))
    num = sa + hp.beta_a - 1.0
    den = sa + sr + hp.beta_a + hp.beta_b - 2.0
    prior_mean = hp.beta_a / (hp.beta_a + hp.beta_b)
    af = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), prior_mean)
    af = jnp.clip(af, AF_FLOOR, 1.0 - AF_FLOOR)
    counts = cells.sum(jnp.sum(prob, axis=0)) + hp.dirichlet - 1.0
    counts = jnp.maximum(counts, WEIGHT_FLOOR * cells.n)
    return BinomialEMParams(af, counts / jnp.sum(counts))


def _em_e_step(params, data, cells: Cells):
    """Responsibilities of this device's cells (padded rows: 0)."""
    return cells.keep(jax.nn.softmax(_em_joint(params, data), axis=1))


def _log_likelihood(params: BinomialEMParams, data: BinomialData, cells: Cells):
    return cells.sum(jnp.sum(cells.keep(logsumexp(_em_joint(params, data), axis=1)))) + data.log_coef


def binomial_log_likelihood(params: BinomialEMParams, data: BinomialData):
    """log p(ALT | DP, θ, π) = Σ_i log Σ_k π_k Π_j Binomial(ALT_ij | DP_ij, θ_jk) (all constants kept)."""
    return _log_likelihood(params, data, all_cells(data.alt.shape[0]))


def _log_prior(params: BinomialEMParams, hp: BinomialMixtureHparams):
    af, w = params
    n_var, k = af.shape
    beta = jnp.sum((hp.beta_a - 1.0) * jnp.log(af) + (hp.beta_b - 1.0) * jnp.log1p(-af)) - n_var * k * _betaln(hp.beta_a, hp.beta_b)
    dirichlet = jnp.sum((hp.dirichlet - 1.0) * jnp.log(w)) + gammaln(k * hp.dirichlet) - k * gammaln(hp.dirichlet)
    return beta + dirichlet


def binomial_log_posterior(params: BinomialEMParams, data: BinomialData, hp: BinomialMixtureHparams):
    """log p(ALT | θ, π) + log Beta(θ | a, b) + log Dirichlet(π | α): what MAP-EM never decreases."""
    return binomial_log_likelihood(params, data) + _log_prior(params, hp)


def _on_cells(fn, mesh, data, in_specs, out_specs):
    """``run(*args)`` = ``fn(*args, data, cells)`` on the cells of ``data`` (``BinomialData``, or
    its ``CellData`` with a mesh); ``in_specs`` are the specs of ``args``."""
    if mesh is None and not isinstance(data, CellData):  # one device, every row real (dense or BCOO)
        cells = all_cells(data.alt.shape[0])
        return lambda *args: fn(*args, data, cells)
    inner, n, rows = split_cells(data, mesh)
    run = on_cells(fn, mesh, n, rows, (*in_specs, data_specs(inner)), out_specs)
    return lambda *args: run(*args, inner)


def _em_init(key, hp, data, cells, *, n_clones):
    prob = cells.local_rows(_random_prob(key, cells.n, n_clones, data.log_coef.dtype))
    return _em_m_step(prob, hp, data, cells)


@lru_cache(maxsize=None)
def binomial_mixture_em_model(n_clones: int, mesh: jax.sharding.Mesh | None = None) -> EMModel:
    """The ``EMModel`` of MAP-EM; its ``log_likelihood`` slot holds the log *posterior*.

    ``mesh``: optional cell mesh (static); the data is then ``binomial_data(..., mesh=mesh)``
    (dense): the E-step gives each device its cells' responsibilities (rows split over "cells",
    padded rows 0) and the M-step and the log posterior total their sums with ``psum``.
    """
    n_clones = int(n_clones)
    check_cell_mesh(mesh)

    def init(key, data, hp):
        return _on_cells(partial(_em_init, n_clones=n_clones), mesh, data, (REPL, REPL), REPL)(key, hp)

    def e_step(params, data, hp):
        del hp
        return _on_cells(_em_e_step, mesh, data, (REPL,), ROWS)(params)

    def m_step(prob, data, hp):
        return _on_cells(_em_m_step, mesh, data, (ROWS, REPL), REPL)(prob, hp)

    def log_posterior(params, data, hp):
        return _on_cells(_log_likelihood, mesh, data, (REPL,), REPL)(params) + _log_prior(params, hp)

    return EMModel(init, e_step, m_step, log_posterior)


@lru_cache(maxsize=None)
def binomial_mixture_em(n_clones: int, mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """MAP-EM for the binomial mixture with K = ``n_clones`` clones (monotone; cached).

    State ``BinomialEMParams(af (n_variants, K), weights (K,))``; ``init`` draws random
    responsibilities (flat Dirichlet rows) and takes one M-step; objective = −log posterior.
    ``mesh``: split the cells over a cell mesh (see ``binomial_mixture_em_model``).
    """
    return em_algorithm(binomial_mixture_em_model(int(n_clones), mesh))


# ---------------------------------------------------------------------------------------------
# mean-field VB
# ---------------------------------------------------------------------------------------------

def vb_update_params(prob, data: BinomialData, hp: BinomialMixtureHparams) -> BinomialVBState:
    """Beta (and Dirichlet) posteriors given assignment probabilities ``prob``."""
    return _vb_update_params(prob, hp, data, all_cells(prob.shape[0]))


def _vb_update_params(prob, hp, data, cells: Cells) -> BinomialVBState:
    prob = cells.keep(prob)
    sa, sr = cells.sum(_suff(data, prob))
    return BinomialVBState(prob, sa + hp.beta_a, sr + hp.beta_b, cells.sum(jnp.sum(prob, axis=0)) + hp.dirichlet)


def _vb_expected_loglik(state: BinomialVBState, data: BinomialData):
    d12 = digamma(state.af_alpha + state.af_beta)
    return _cross(data, digamma(state.af_alpha) - d12, digamma(state.af_beta) - d12)


def _vb_log_weights(state: BinomialVBState, learn_weights: bool):
    k = state.weights_alpha.shape[0]
    if learn_weights:
        return digamma(state.weights_alpha) - digamma(jnp.sum(state.weights_alpha))
    return jnp.full((k,), -jnp.log(k), state.prob.dtype)


def _kl_beta(s1, s2, a, b):
    """KL(Beta(s1, s2) ‖ Beta(a, b)), elementwise."""
    return (
        _betaln(a, b) - _betaln(s1, s2)
        + (s1 - a) * digamma(s1) + (s2 - b) * digamma(s2) - (s1 + s2 - a - b) * digamma(s1 + s2)
    )


def _kl_dirichlet(w, alpha):
    """KL(Dir(w) ‖ Dir(alpha·1))."""
    k = w.shape[0]
    w0 = jnp.sum(w)
    return (
        gammaln(w0) - jnp.sum(gammaln(w)) - gammaln(k * alpha) + k * gammaln(alpha)
        + jnp.sum((w - alpha) * (digamma(w) - digamma(w0)))
    )


def _vb_elbo(state: BinomialVBState, hp: BinomialMixtureHparams, data: BinomialData, cells: Cells, *, learn_weights: bool):
    E = _vb_expected_loglik(state, data)
    logw = _vb_log_weights(state, learn_weights)
    prob = cells.keep(state.prob)
    elbo = cells.sum(jnp.sum(prob * (E + logw))) - cells.sum(jnp.sum(_xlogx(prob)))
    elbo = elbo - jnp.sum(_kl_beta(state.af_alpha, state.af_beta, hp.beta_a, hp.beta_b))
    if learn_weights:
        elbo = elbo - _kl_dirichlet(state.weights_alpha, hp.dirichlet)
    return elbo + data.log_coef


VB_STATE_SPECS = BinomialVBState(ROWS, REPL, REPL, REPL)  # q(z) rows split over "cells"


def _vb_init(key, hp, data, cells, *, n_clones):
    prob = cells.local_rows(_random_prob(key, cells.n, n_clones, data.log_coef.dtype))
    return _vb_update_params(prob, hp, data, cells)


def _vb_step(state, hp, data, cells, *, learn_weights):
    state = _vb_update_params(state.prob, hp, data, cells)
    logits = _vb_expected_loglik(state, data) + _vb_log_weights(state, learn_weights)
    return state._replace(prob=cells.keep(jax.nn.softmax(logits, axis=1)))


@lru_cache(maxsize=None)
def binomial_mixture_vb(n_clones: int, learn_weights: bool = False, mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Mean-field VB (vireoSNP's ``BinomMixtureVB``) with K = ``n_clones`` clones (monotone; cached).

    State ``BinomialVBState``; ``init`` draws random assignment probabilities and sets the
    posteriors from them (``vb_update_params``); a step updates the posteriors then the
    assignments; objective = −ELBO. ``learn_weights`` (static) adds a Dirichlet posterior on π;
    without it π is uniform and fixed, as in vireoSNP.

    ``mesh``: optional cell mesh (static); the data is then ``binomial_data(..., mesh=mesh)``
    (dense) and ``state.prob`` has its (padded) rows split over "cells" (padded rows 0); every
    sum over cells (Beta/Dirichlet posteriors, the ELBO's cell terms) is totalled with ``psum``.
    """
    n_clones, learn_weights = int(n_clones), bool(learn_weights)
    check_cell_mesh(mesh)

    def init(key, data, hp):
        return _on_cells(partial(_vb_init, n_clones=n_clones), mesh, data, (REPL, REPL), VB_STATE_SPECS)(key, hp)

    def step(state, data, hp):
        fn = partial(_vb_step, learn_weights=learn_weights)
        return _on_cells(fn, mesh, data, (VB_STATE_SPECS, REPL), VB_STATE_SPECS)(state, hp)

    def objective(state, data, hp):
        fn = partial(_vb_elbo, learn_weights=learn_weights)
        return -_on_cells(fn, mesh, data, (VB_STATE_SPECS, REPL), REPL)(state, hp)

    return Algorithm(init, step, objective, monotone=True)


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

METHODS = ("em", "vb")
DENSE_LIMIT = 1 << 24  # sparse="auto" keeps sparse input sparse (BCOO) above this many cells x variants


@dataclass(frozen=True)
class BinomialMixtureResult:
    """A fitted binomial mixture.

    Attributes:
      clone_prob: (n_cells, K) posterior clone probabilities (EM: responsibilities at the final
        parameters; VB: q(z)).
      clone_af: (n_variants, K) allele frequency per variant and clone (EM: MAP estimate; VB:
        posterior mean ``s1 / (s1 + s2)``).
      weights: (K,) mixing weights (EM: MAP; VB: Dirichlet posterior mean with
        ``learn_weights=True``, else the mean of ``clone_prob`` — the prior stays uniform).
      log_likelihood: log p(ALT | DP, clone_af, weights), binomial coefficients included.
      log_posterior: EM: log_likelihood + log prior (the quantity EM never decreases); VB: None.
      elbo: VB: the evidence lower bound (never decreases); EM: None.
      trace: log posterior (EM) or ELBO (VB) at iteration 0 and after every ``chunk_size``
        iterations (non-decreasing).
      trace_iter: iteration number of each trace entry.
      n_iter, converged: iterations run; whether the relative change fell below ``tol``.
      method: ``"em"`` or ``"vb"``.
      clone_sizes: (K,) expected number of cells per clone (column sums of ``clone_prob``).
      collapsed: clones whose expected size is below half a cell (reported, not re-seeded).
      restart_scores: final log posterior / ELBO of every restart (the best is kept).
      af_alpha, af_beta: VB only, (n_variants, K) Beta posterior parameters ``s1``, ``s2``.
    """

    clone_prob: np.ndarray
    clone_af: np.ndarray
    weights: np.ndarray
    log_likelihood: float
    log_posterior: float | None
    elbo: float | None
    trace: np.ndarray
    trace_iter: np.ndarray
    n_iter: int
    converged: bool
    method: str
    clone_sizes: np.ndarray
    collapsed: tuple
    restart_scores: np.ndarray
    af_alpha: np.ndarray | None = None
    af_beta: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """Most probable clone of every cell (argmax of ``clone_prob``)."""
        return np.argmax(self.clone_prob, axis=1)


def _check_alt_ref(alt, depth):
    """Validate ALT and depth counts; return ``(alt, ref)`` as int64 CSR (if either is sparse) or ndarrays."""
    from ..data._variants import _as_counts

    alt = _as_counts(alt, "alt")
    depth = _as_counts(depth, "depth")
    if alt.shape != depth.shape:
        raise ValueError(f"alt has shape {alt.shape} but depth has shape {depth.shape}; both must be cells x variants of the same size")
    if sp.issparse(alt) or sp.issparse(depth):
        alt, depth = sp.csr_matrix(alt, copy=True), sp.csr_matrix(depth)  # copies: the caller's arrays stay as they are
        ref = (depth - alt).tocsr()
        ref.eliminate_zeros()
        alt.eliminate_zeros()
        neg = ref.data < 0
        if neg.any():
            coo = ref.tocoo()
            i, j = int(coo.row[coo.data < 0][0]), int(coo.col[coo.data < 0][0])
    else:
        ref = depth - alt
        neg = ref < 0
        if neg.any():
            i, j = (int(x[0]) for x in np.nonzero(neg))
    if neg.any():
        a = alt[i, j]
        raise ValueError(
            f"alt exceeds depth at {int(np.count_nonzero(neg))} entries (e.g. cell {i}, variant {j}: alt={a} > "
            f"depth={a + ref[i, j]}); depth must be the total REF + ALT reads"
        )
    return alt, ref


def _log_coef(alt, ref) -> float:
    """Σ log C(DP, ALT) in float64 (zeros contribute log C(0, 0) = 0)."""
    if sp.issparse(alt):
        dp = (alt + ref).tocsr()
        values = (dp.data, alt.data, ref.data)
        return float(np.sum(sp_gammaln(values[0] + 1.0)) - np.sum(sp_gammaln(values[1] + 1.0)) - np.sum(sp_gammaln(values[2] + 1.0)))
    return float(np.sum(sp_gammaln(alt + ref + 1.0) - sp_gammaln(alt + 1.0) - sp_gammaln(ref + 1.0)))


def _build_data(alt, ref, sparse, mesh=None) -> BinomialData | CellData:
    check_choice(sparse, "sparse", ("auto", True, False))
    check_cell_mesh(mesh)
    if mesh is not None and sparse is True:
        raise ValueError("sparse=True (BCOO) cannot be split over a cell mesh; use sparse='auto' or False with mesh")
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    n, p = alt.shape
    use_bcoo = sparse is True or (sparse == "auto" and sp.issparse(alt) and n * p > DENSE_LIMIT)
    coef = jnp.asarray(_log_coef(alt, ref), dtype)
    if mesh is not None:  # dense on the host, then each device gets its rows
        host = lambda m: np.asarray(m.toarray() if sp.issparse(m) else m, np.dtype(dtype))
        return cell_data(BinomialData(host(alt), host(ref), coef), mesh)
    if use_bcoo:
        from jax.experimental.sparse import BCOO

        conv = lambda m: BCOO.from_scipy_sparse(sp.csr_matrix(m).astype(np.dtype(dtype)))
        return BinomialData(conv(alt), conv(ref), coef)
    dense = lambda m: jnp.asarray(m.toarray() if sp.issparse(m) else m, dtype)
    return BinomialData(dense(alt), dense(ref), coef)


def binomial_data(alt, depth, *, sparse="auto", mesh: jax.sharding.Mesh | None = None) -> BinomialData | CellData:
    """Validated ``BinomialData`` from ALT and depth counts (cells × variants), for the Algorithm API.

    ``sparse``: ``True`` stores BCOO matrices, ``False`` dense ones, ``"auto"`` keeps scipy sparse
    input sparse when cells × variants exceeds ``DENSE_LIMIT``. float64 under ``jax_enable_x64``,
    else float32. ``mesh``: a cell mesh; the result is then ``cell_data(dense data, mesh)`` (the
    cells zero-padded to a multiple of the mesh size and split over it), the data of
    ``binomial_mixture_em(k, mesh)`` / ``binomial_mixture_vb(k, ..., mesh)``.
    """
    alt, ref = _check_alt_ref(alt, depth)
    return _build_data(alt, ref, sparse, mesh)


def _check_prior(value, name, method):
    value = check_nonnegative_float(value, name)
    if method == "em" and value < 1:
        raise ValueError(f"{name}={value:g} < 1 makes the MAP M-step ill-posed; use {name} >= 1 with method='em', or method='vb'")
    return check_number(value, name, 0, low_open=True)


def _check_init_prob(init_prob, n, k):
    arr = np.asarray(init_prob, dtype=np.float64)
    if arr.shape != (n, k):
        raise ValueError(f"init_prob has shape {arr.shape}; expected (n_cells, n_clones) = {(n, k)}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise ValueError("init_prob must be finite and non-negative (rows are assignment probabilities)")
    zero = np.flatnonzero(arr.sum(axis=1) <= 0)
    if zero.size:
        raise ValueError(f"init_prob has {zero.size} all-zero rows (e.g. cell {zero[0]}); every cell needs a positive entry")
    return arr / arr.sum(axis=1, keepdims=True)


def _summary(state, data, cells, *, method, learn_weights):
    if method == "em":
        prob = _em_e_step(state, data, cells)
        params = state
    else:
        prob = cells.keep(state.prob)
        af = state.af_alpha / (state.af_alpha + state.af_beta)
        w = state.weights_alpha / jnp.sum(state.weights_alpha) if learn_weights else cells.sum(jnp.sum(prob, axis=0)) / cells.n
        params = BinomialEMParams(af, w)
    return prob, params, _log_likelihood(params, data, cells)


@partial(jax.jit, static_argnames=("method", "learn_weights", "mesh"))
def _summaries(state, data, *, method, learn_weights, mesh):
    """(clone probabilities (rows, K), point-estimate parameters, log-likelihood)."""
    fn = partial(_summary, method=method, learn_weights=learn_weights)
    specs = REPL if method == "em" else VB_STATE_SPECS
    return _on_cells(fn, mesh, data, (specs,), (ROWS, REPL, REPL))(state)


def _fit_counts(alt, ref, n_clones, *, method, max_iter, tol, n_init, seed, beta_a, beta_b, dirichlet, learn_weights,
                init_prob, sparse, chunk_size, progress, mesh) -> BinomialMixtureResult:
    return _fit_grid(alt, ref, n_clones, [(beta_a, beta_b, dirichlet)], method=method, max_iter=max_iter, tol=tol,
                     n_init=n_init, seed=seed, learn_weights=learn_weights, init_prob=init_prob, sparse=sparse,
                     chunk_size=chunk_size, progress=progress, mesh=mesh)[0]


def fit_binomial_grid(alt, depth, n_components: int, priors, *, method: str = "em", max_iter: int = 200, tol: float = 1e-6,
                      n_init: int = 1, seed: int = 0, learn_weights: bool = False, sparse="auto",
                      chunk_size: int = 10) -> list:
    """``fit_binomial_mixture`` at several priors ``[(beta_a, beta_b, dirichlet), ...]`` in one
    compiled call (the priors are pytree data, vmapped over priors × restarts); one
    ``BinomialMixtureResult`` per prior, each equal to its own fit (same restart keys)."""
    alt, ref = _check_alt_ref(alt, depth)
    return _fit_grid(alt, ref, n_components, list(priors), method=method, max_iter=max_iter, tol=tol, n_init=n_init,
                     seed=seed, learn_weights=learn_weights, init_prob=None, sparse=sparse, chunk_size=chunk_size,
                     progress=False, mesh=None)


def _fit_grid(alt, ref, n_clones, priors, *, method, max_iter, tol, n_init, seed, learn_weights, init_prob, sparse,
              chunk_size, progress, mesh) -> list:
    from .._fit import check_finished, completed_trace, fit_many, fit_restarts

    check_cell_mesh(mesh)
    check_choice(method, "method", METHODS)
    n, p = alt.shape
    k = check_int(n_clones, "n_clones", 1)
    if k > n:
        raise ValueError(f"n_clones={k} exceeds the number of cells ({n}); choose 1 <= n_clones <= {n}")
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    tol = check_nonnegative_float(tol, "tol")
    hps = [BinomialMixtureHparams(*(_check_prior(v, nm, method) for v, nm in zip(prior, ("beta_a", "beta_b", "dirichlet"))))
           for prior in priors]
    if not isinstance(learn_weights, (bool, np.bool_)):
        raise ValueError(f"learn_weights must be True or False, got {learn_weights!r}")
    learn_weights = bool(learn_weights) if method == "vb" else False
    prob0 = None if init_prob is None else _check_init_prob(init_prob, n, k)
    if prob0 is not None and n_init > 1:
        raise ValueError("n_init > 1 repeats the same fit from init_prob; use n_init=1 or drop init_prob")

    data = _build_data(alt, ref, sparse, mesh)  # with a mesh: cells padded and split over it
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    alg = binomial_mixture_em(k, mesh) if method == "em" else binomial_mixture_vb(k, learn_weights, mesh)
    hps = [BinomialMixtureHparams(*(jnp.asarray(v, dtype) for v in hp)) for hp in hps]
    if len(hps) > 1:  # one compiled call for every prior (the keys fit_restarts would draw)
        key = jax.random.PRNGKey(seed)
        keys = key[None] if n_init == 1 else jax.random.split(key, n_init)
        grid = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *hps)
        many = fit_many(alg, data, grid, keys, max_iter=max_iter, tol=tol, chunk_size=chunk_size)
        fits = [(jax.tree_util.tree_map(lambda x: x[j], many.best), np.asarray(many.objective[j])) for j in range(len(hps))]
    else:
        state0 = None
        if prob0 is not None:
            prob0 = jnp.asarray(prob0, dtype)
            if mesh is not None:
                prob0 = place_rows(mesh, pad_rows(np.asarray(prob0), padded_size(n, mesh)))
            update = _em_m_step if method == "em" else _vb_update_params
            state0 = _on_cells(update, mesh, data, (ROWS, REPL), REPL if method == "em" else VB_STATE_SPECS)(prob0, hps[0])
        fits = [fit_restarts(alg, data, hps[0], jax.random.PRNGKey(seed), n_init, max_iter=max_iter, tol=tol,
                             chunk_size=chunk_size, state0=state0 if n_init == 1 else None, progress=progress)]
    out = []
    for res, restart in fits:
        restart = -np.asarray(restart)
        trace, trace_iter = completed_trace(res, chunk_size)
        trace = -trace
        check_finished(trace, bool(res.converged), tol=tol, max_iter=max_iter, name=f"binomial mixture ({method})",
                       hint="please report this with the input")
        n_iter, converged = int(res.n_iter), bool(res.converged)
        prob, params, loglik = _summaries(res.state, data, method=method, learn_weights=learn_weights, mesh=mesh)
        prob = np.asarray(prob, np.float64)[:n]
        sizes = prob.sum(axis=0)
        collapsed = tuple(int(c) for c in np.flatnonzero(sizes < 0.5))
        if collapsed:
            warnings.warn(f"clone(s) {list(collapsed)} collapsed (expected size < 0.5 cell); they keep finite prior parameters. "
                          "Lower n_clones or raise n_init", UserWarning, stacklevel=4)
        vb = method == "vb"
        out.append(BinomialMixtureResult(
            clone_prob=prob,
            clone_af=np.asarray(params.af, np.float64),
            weights=np.asarray(params.weights, np.float64),
            log_likelihood=float(loglik),
            log_posterior=None if vb else float(trace[-1]),
            elbo=float(trace[-1]) if vb else None,
            trace=trace,
            trace_iter=trace_iter,
            n_iter=n_iter,
            converged=converged,
            method=method,
            clone_sizes=sizes,
            collapsed=collapsed,
            restart_scores=restart,
            af_alpha=np.asarray(res.state.af_alpha, np.float64) if vb else None,
            af_beta=np.asarray(res.state.af_beta, np.float64) if vb else None,
        ))
    return out


@renamed_arguments(n_clones="n_components")
def fit_binomial_mixture(
    alt,
    depth,
    n_components: int,
    *,
    method: str = "em",
    max_iter: int = 200,
    tol: float = 1e-6,
    n_init: int = 1,
    seed: int = 0,
    beta_a: float = 1.0,
    beta_b: float = 1.0,
    dirichlet: float = 1.0,
    learn_weights: bool = False,
    init_prob=None,
    sparse="auto",
    chunk_size: int = 10,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> BinomialMixtureResult:
    """Cluster cells into ``n_components`` clones from allele counts (binomial mixture).

    Args:
      alt: (n_cells, n_variants) ALT read counts; non-negative integers (float storage of whole
        numbers is accepted), dense or scipy sparse.
      depth: same shape, total reads REF + ALT (``alt <= depth``); 0 = uncovered (ignored).
      n_components: the number of clones K, ``1 <= K <= n_cells`` (``n_clones=`` is deprecated).
      method: ``"em"`` (MAP-EM, objective the log posterior) or ``"vb"`` (mean-field VB, vireoSNP's
        ``BinomMixtureVB``, objective the ELBO). See the module docstring for the updates.
      max_iter, tol, chunk_size: stop after ``max_iter`` iterations or when the objective's relative
        change over ``chunk_size`` iterations falls below ``tol`` (``tol=0``: always ``max_iter``).
      n_init: random restarts (vmapped in one compiled call); the highest final log posterior /
        ELBO wins.
      seed: PRNG seed of the random initial assignment probabilities (flat-Dirichlet rows).
      beta_a, beta_b: Beta prior of every allele frequency (vireoSNP's default is 1, 1).
      dirichlet: symmetric Dirichlet prior of the mixing weights (EM, and VB with
        ``learn_weights``). EM needs all three >= 1.
      learn_weights: VB only; learn the mixing weights (Dirichlet posterior) instead of keeping them
        uniform as vireoSNP does.
      init_prob: optional (n_cells, K) initial assignment probabilities (rows are normalised); the
        first iteration then starts from the parameters they imply (vireoSNP's ``ID_prob_init``).
      sparse: ``"auto"`` (scipy sparse input larger than ``DENSE_LIMIT`` entries stays sparse, as
        BCOO), ``True`` (always BCOO) or ``False`` (densify).
      progress: progress bar over iterations (n_init=1; off when CI is set).
      mesh: optional cell mesh (``jaxfactor.cell_mesh()``): the cells are split over its devices
        (any number of cells: padded rows are masked out of every sum, the mixing weights
        included) and every sum over cells is totalled with ``psum``; counts are densified
        (``sparse=True`` is refused). The random init is the one-device one. Results equal the
        one-device fit within float tolerance.

    Bad input (NaN, negative or fractional counts, alt > depth, mismatched shapes, K out of range)
    raises a one-line ``ValueError`` before anything is compiled. A clone that collapses stays
    finite and is listed in ``result.collapsed`` with a warning. Runs in float64 when
    ``jax_enable_x64`` is on, else float32.
    """
    alt, ref = _check_alt_ref(alt, depth)
    return _fit_counts(alt, ref, n_components, method=method, max_iter=max_iter, tol=tol, n_init=n_init, seed=seed,
                       beta_a=beta_a, beta_b=beta_b, dirichlet=dirichlet, learn_weights=learn_weights,
                       init_prob=init_prob, sparse=sparse, chunk_size=chunk_size, progress=progress, mesh=mesh)


@renamed_arguments(n_clones="n_components")
def fit_binomial_mixture_anndata(
    adata,
    n_components: int,
    *,
    filter: bool = False,
    min_maf: float = 5,
    filter_germline: bool = True,
    min_cell_coverage: float = 10,
    max_other_reads: int = 2,
    **kwargs,
):
    """``fit_binomial_mixture`` on ``adata.layers['REF']`` / ``['ALT']`` (cells × variants; CCLONE's input).

    With ``filter=True`` CCLONE's variant/cell filter (``jaxfactor.data.filter_variants`` with
    ``min_maf``, ``filter_germline``, ``min_cell_coverage``, ``max_other_reads``) runs first.
    ``kwargs`` go to ``fit_binomial_mixture`` (method, n_init, priors, ...).

    Returns a new AnnData (``adata`` is not modified; filtered if asked) with
    ``obsm['clone_prob']`` (cells × K), ``varm['clone_af']`` (variants × K), ``obs['clone']``
    (most probable clone, categorical) and ``uns['binomial_mixture']`` (method, parameters,
    weights, trace, log-likelihood, ELBO or log posterior, n_iter, converged, collapsed clones).
    """
    import pandas as pd

    from ..data._variants import check_allele_counts, filter_variants

    ref, alt = check_allele_counts(adata)
    if filter:
        out = filter_variants(adata, min_maf, filter_germline, min_cell_coverage, max_other_reads=max_other_reads)
        ref, alt = check_allele_counts(out)
    else:
        out = adata.copy()
    if sp.issparse(ref) or sp.issparse(alt):
        ref, alt = sp.csr_matrix(ref, copy=True), sp.csr_matrix(alt, copy=True)  # never compact the user's layers in place
        ref.eliminate_zeros()
        alt.eliminate_zeros()
    unknown = set(kwargs) - set(inspect.signature(fit_binomial_mixture).parameters) - {"alt", "depth", "n_components"}
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for fit_binomial_mixture_anndata")
    res = _fit_counts(alt, ref, n_components, **{**_API_DEFAULTS, **kwargs})
    k = res.clone_prob.shape[1]
    out.obsm["clone_prob"] = res.clone_prob
    out.varm["clone_af"] = res.clone_af
    out.obs["clone"] = pd.Categorical(res.labels, categories=np.arange(k))
    settings = {**_API_DEFAULTS, **kwargs}
    out.uns["binomial_mixture"] = {
        "method": res.method, "n_clones": k,
        "params": {name: settings[name] for name in ("max_iter", "tol", "n_init", "seed", "beta_a", "beta_b", "dirichlet", "learn_weights")},
        "weights": res.weights, "trace": res.trace, "trace_iter": res.trace_iter,
        "log_likelihood": res.log_likelihood, "score": res.trace[-1],
        "score_name": "elbo" if res.method == "vb" else "log_posterior",
        "n_iter": res.n_iter, "converged": res.converged, "collapsed": np.asarray(res.collapsed, dtype=np.int64),
        "filtered": bool(filter),
    }
    return out


_API_DEFAULTS = {
    name: prm.default for name, prm in inspect.signature(fit_binomial_mixture).parameters.items()
    if prm.default is not inspect.Parameter.empty
}


# ---------------------------------------------------------------------------------------------
# conformance examples
# ---------------------------------------------------------------------------------------------

def _example(method):
    def make():
        from ..data import simulate_clones

        sim = simulate_clones(n_cells=60, n_variants=24, n_clones=3, healthy_fraction=0.0, n_germline=3, seed=0)
        data = binomial_data(sim.alt, sim.coverage, sparse=False)
        hp = BinomialMixtureHparams(beta_a=2.0, beta_b=2.0, dirichlet=2.0)  # halved by the suite: still >= 1
        alg = binomial_mixture_em(3) if method == "em" else binomial_mixture_vb(3, method == "vb_weights")
        return alg, data, hp

    return make


register_example("binomial_mixture_em", _example("em"))
register_example("binomial_mixture_vb", _example("vb"))
register_example("binomial_mixture_vb_weights", _example("vb_weights"))
