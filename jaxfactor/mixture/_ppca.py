"""Probabilistic PCA by EM (Tipping & Bishop, "Probabilistic principal component analysis",
J. R. Stat. Soc. B 61(3), 611–622, 1999).

Model: ``x = W z + μ + ε`` with ``z ~ N(0, I_q)`` and ``ε ~ N(0, σ² I_d)``, so marginally
``x ~ N(μ, C)`` with ``C = WWᵀ + σ²I_d`` (W is d × q). Write ``S = (1/n) Σ (x_i − x̄)(x_i − x̄)ᵀ``
for the sample covariance and ``M = WᵀW + σ²I_q`` (q × q).

Log-likelihood (Tipping & Bishop eq. 4), evaluated through the q × q matrix M only::

    L = −(n/2) [ d log 2π + log|C| + tr(C⁻¹ S_μ) ],    S_μ = S + (x̄ − μ)(x̄ − μ)ᵀ
    log|C|      = (d − q) log σ² + log|M|                 (matrix determinant lemma)
    tr(C⁻¹ S_μ) = (tr S_μ − tr(M⁻¹ Wᵀ S_μ W)) / σ²         (Woodbury: C⁻¹ = (I − W M⁻¹ Wᵀ) / σ²)

One step (eqs. 25–30):

- μ ← x̄, the maximum-likelihood mean for every (W, σ²), so this never lowers L;
- E-step, as per-sample averages: ``⟨x zᵀ⟩ = S W M⁻¹`` and ``⟨z zᵀ⟩ = σ² M⁻¹ + M⁻¹ WᵀSW M⁻¹``
  (eqs. 25–26 averaged over i);
- M-step: ``W̃ = ⟨x zᵀ⟩ ⟨z zᵀ⟩⁻¹ = S W (σ²I + M⁻¹WᵀSW)⁻¹`` (eq. 29) and
  ``σ̃² = (1/d) tr(S − S W M⁻¹ W̃ᵀ)`` (eq. 30), floored at ``min_noise_ratio · tr(S)/d``.
  Maximising the expected complete-data log-likelihood in σ² under a lower bound is still an
  M-step (the objective is unimodal in σ²), so L never decreases.

Only ``S W`` and ``tr S`` are needed. The data pytree is either ``PPCAMoments`` (x̄, S, n; one
step costs O(d² q), the choice when n > d) or the raw (n, d) matrix X (one step costs O(n d q),
the choice when d ≥ n); ``ppca_data`` picks. The fixed point is the closed-form maximum-likelihood
solution (eqs. 7–8): W spans the top-q eigenvectors of S and σ² is the mean of the other d − q
eigenvalues (``ppca_closed_form``, the test oracle).

Cells over devices (``mesh=jaxfactor.cell_mesh()``): x̄, S W, Wᵀ S W and tr S are sums over
samples, so each device sums its rows (zero-padded to a multiple of the device count and masked)
and ``psum`` totals them; the q × q algebra is replicated. With moments the sums are taken once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._base import Algorithm
from .._cells import REPL, ROWS, check_cell_mesh
from .._fit import check_finished, completed_trace, fit_restarts
from .._registry import register_example
from .._validate import as_matrix, check_int, check_nonnegative_float, check_positive_int
from .._cells import CellData, Cells, cell_data, on_cells, split_cells
from ._em import EMModel, em_algorithm
from ._select import bic, ppca_n_parameters


class PPCAParams(NamedTuple):
    """EM state: the model parameters."""

    W: jax.Array  # (d, q) loadings
    noise_var: jax.Array  # () σ²
    mean: jax.Array  # (d,) μ


class PPCAMoments(NamedTuple):
    """Sufficient statistics of X for PPCA (build with ``ppca_moments``)."""

    mean: jax.Array  # (d,) sample mean x̄
    cov: jax.Array  # (d, d) biased sample covariance S = (1/n) Σ (x_i − x̄)(x_i − x̄)ᵀ
    n_samples: jax.Array  # () n, as a float (a weight: scaling it scales the log-likelihood)


class PPCAHparams(NamedTuple):
    """``min_noise_ratio``: σ² is kept ≥ ``min_noise_ratio · tr(S)/d`` (relative to the mean
    feature variance, so the floor is scale-free; it only binds for near noiseless data)."""

    min_noise_ratio: float = 1e-6


class PPCAPosterior(NamedTuple):
    """E-step output: per-sample averages of the complete-data sufficient statistics."""

    xz: jax.Array  # (d, q) (1/n) Σ (x_i − x̄) E[z_i]ᵀ = S W M⁻¹
    zz: jax.Array  # (q, q) (1/n) Σ E[z_i z_iᵀ] = σ² M⁻¹ + M⁻¹ WᵀSW M⁻¹
    trS: jax.Array  # () tr S
    mean: jax.Array  # (d,) x̄


def _centred(X, cells: Cells):
    """(x̄, X − x̄ with padded rows 0): the mean is a sum over cells (``psum`` when sharded)."""
    mean = cells.sum(jnp.sum(cells.keep(X), axis=0)) / cells.n
    return mean, cells.keep(X - mean)


def _moments(X, cells: Cells) -> PPCAMoments:
    mean, Xc = _centred(X, cells)
    return PPCAMoments(mean, cells.sum(Xc.T @ Xc) / cells.n, jnp.asarray(cells.n, X.dtype))


@partial(jax.jit, static_argnames=("mesh",))
def _moments_jit(data, mesh) -> PPCAMoments:
    X, n, rows = split_cells(data, mesh)
    return on_cells(_moments, mesh, n, rows, (ROWS,), REPL)(X)


def ppca_moments(X, mesh: jax.sharding.Mesh | None = None) -> PPCAMoments:
    """``PPCAMoments`` of an (n, d) matrix (one O(n d²) pass).

    ``mesh``: optional cell mesh (``jaxfactor.cell_mesh()``): the rows are split over its
    devices (``cell_data``; padded rows masked) and the sums ``psum``'d; the moments come back
    replicated. ``X`` may also be a ``CellData`` already placed on ``mesh``.
    """
    check_cell_mesh(mesh)
    if mesh is not None and not isinstance(X, CellData):
        X = cell_data(X, mesh)
    return _moments_jit(X, mesh)


def ppca_data(X, mesh: jax.sharding.Mesh | None = None):
    """The cheaper data form for the EM steps: moments when n > d, else X itself.

    With a cell ``mesh`` the moments are computed with the rows split over its devices, and raw
    X comes back as ``cell_data(X, mesh)`` (the form ``ppca(q, mesh)`` splits at every step).
    """
    check_cell_mesh(mesh)
    if mesh is None:
        X = jnp.asarray(X)
        return ppca_moments(X) if X.shape[0] > X.shape[1] else X
    data = cell_data(X, mesh)  # host rows straight to their devices
    return ppca_moments(data, mesh) if data.n_cells > data.data.shape[1] else data


def _raw_stats(W, X, cells: Cells):
    mean, Xc = _centred(X, cells)
    n = cells.n
    XcW = Xc @ W
    SW, WtSW, trS = cells.sum((Xc.T @ XcW, XcW.T @ XcW, jnp.sum(Xc * Xc)))
    return mean, SW / n, WtSW / n, trS / n, jnp.asarray(n, X.dtype)


def _stats(W, data, mesh=None):
    """(x̄, S W, Wᵀ S W, tr S, n) from either data form, without forming S from X.

    Raw X (or its ``CellData``) with a cell ``mesh``: every sum over cells runs on the devices'
    row shards and is ``psum``'d; the (replicated) moments need no mesh.
    """
    if isinstance(data, PPCAMoments):
        SW = data.cov @ W
        return data.mean, SW, W.T @ SW, jnp.trace(data.cov), data.n_samples
    X, n, rows = split_cells(data, mesh)
    return on_cells(_raw_stats, mesh, n, rows, (REPL, ROWS), REPL)(W, X)


def _sym(A):
    return 0.5 * (A + A.T)


def _noise_floor(trS, d, hp):
    return jnp.maximum(hp.min_noise_ratio * trS / d, jnp.finfo(trS.dtype).tiny)


def _make_init(n_components: int, mesh=None):
    def init(key, data, hp):
        ref = data.cov if isinstance(data, PPCAMoments) else split_cells(data, mesh)[0]
        d = ref.shape[1]
        W0 = jnp.zeros((d, n_components), ref.dtype)
        mean, _, _, trS, _ = _stats(W0, data, mesh)
        var = jnp.maximum(trS / d, _noise_floor(trS, d, hp))
        # small random loadings (a tenth of the data's scale); σ² starts at the data variance
        W = 0.1 * jnp.sqrt(var) * jax.random.normal(key, W0.shape, W0.dtype)
        return PPCAParams(W, var, mean)

    return init


def e_step(params: PPCAParams, data, hp: PPCAHparams, mesh=None) -> PPCAPosterior:
    """Posterior moments of z around μ = x̄ (the mean's closed-form M-step taken first)."""
    del hp
    W, s2 = params.W, params.noise_var
    q = W.shape[1]
    mean, SW, WtSW, trS, _ = _stats(W, data, mesh)
    cho = jax.scipy.linalg.cho_factor(W.T @ W + s2 * jnp.eye(q, dtype=W.dtype))
    Minv_WtSW = jax.scipy.linalg.cho_solve(cho, WtSW)  # M⁻¹ WᵀSW
    xz = jax.scipy.linalg.cho_solve(cho, SW.T).T  # S W M⁻¹
    zz = _sym(s2 * jax.scipy.linalg.cho_solve(cho, jnp.eye(q, dtype=W.dtype)) + jax.scipy.linalg.cho_solve(cho, Minv_WtSW.T))
    return PPCAPosterior(xz, zz, trS, mean)


def m_step(post: PPCAPosterior, data, hp: PPCAHparams) -> PPCAParams:
    """W̃ = ⟨x zᵀ⟩⟨z zᵀ⟩⁻¹ (eq. 29); σ̃² = (tr S − tr(W̃ᵀ⟨x zᵀ⟩)) / d (eq. 30), floored."""
    del data
    d = post.xz.shape[0]
    cho = jax.scipy.linalg.cho_factor(post.zz)
    W = jax.scipy.linalg.cho_solve(cho, post.xz.T).T
    s2 = (post.trS - jnp.sum(W * post.xz)) / d
    return PPCAParams(W, jnp.maximum(s2, _noise_floor(post.trS, d, hp)), post.mean)


def log_likelihood(params: PPCAParams, data, hp: PPCAHparams, mesh=None) -> jax.Array:
    """Σ_i log N(x_i | μ, WWᵀ + σ²I), through M = WᵀW + σ²I (see the module docstring)."""
    del hp
    W, s2, mu = params
    d, q = W.shape
    mean, SW, WtSW, trS, n = _stats(W, data, mesh)
    delta = mean - mu  # S_μ = S + δδᵀ
    Wd = W.T @ delta
    WtSW = WtSW + jnp.outer(Wd, Wd)
    trS = trS + delta @ delta
    L = jnp.linalg.cholesky(W.T @ W + s2 * jnp.eye(q, dtype=W.dtype))
    logdet_C = (d - q) * jnp.log(s2) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(L)))
    trace = (trS - jnp.trace(jax.scipy.linalg.cho_solve((L, True), WtSW))) / s2
    return -0.5 * n * (d * math.log(2.0 * math.pi) + logdet_C + trace)


@lru_cache(maxsize=None)
def ppca_em(n_components: int, mesh: jax.sharding.Mesh | None = None) -> EMModel:
    """The PPCA ``EMModel`` with q = ``n_components`` latent dimensions (cached per q and mesh).

    Data: ``PPCAMoments`` or an (n, d) array (see ``ppca_data``); hyperparameters:
    ``PPCAHparams``; state: ``PPCAParams``.

    ``mesh``: optional cell mesh (static). Raw data is then ``cell_data(X, mesh)`` (or X with
    rows divisible by the mesh size): x̄, S W, Wᵀ S W and tr S are sums over cells computed on
    each device's rows (padded rows masked) and ``psum``'d, so the replicated q × q updates are
    the one-device ones. ``PPCAMoments`` (``ppca_moments(X, mesh)``) are already totals over
    cells: with them the steps run as without a mesh.
    """
    check_positive_int(n_components, "n_components")
    check_cell_mesh(mesh)
    if mesh is None:
        return EMModel(_make_init(int(n_components)), e_step, m_step, log_likelihood)
    return EMModel(_make_init(int(n_components), mesh), partial(e_step, mesh=mesh), m_step, partial(log_likelihood, mesh=mesh))


@lru_cache(maxsize=None)
def ppca(n_components: int, mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """``em_algorithm(ppca_em(n_components, mesh))``: objective −log-likelihood, monotone."""
    return em_algorithm(ppca_em(n_components, mesh))


def _example(raw: bool):
    def make():
        from ..data._simulate_ppca import simulate_ppca

        sim = simulate_ppca(n_samples=60 if not raw else 12, n_features=8 if not raw else 20, n_components=2,
                            noise_var=0.1, seed=0)
        X = jnp.asarray(sim.X, jnp.float32)
        return ppca(2), (X if raw else ppca_moments(X)), PPCAHparams()

    return make


register_example("ppca", _example(raw=False))
register_example("ppca_data", _example(raw=True))


# --------------------------------------------------------------------------------------------
# scikit-learn-style API


@dataclass(frozen=True)
class PPCAResult:
    """A fitted probabilistic PCA ``x ≈ W z + μ + ε``.

    Attributes:
      components: (n_features, n_components) loadings W (identified up to a rotation
        W → WR; the principal subspace and WWᵀ are unique).
      mean: (n_features,) μ (the sample mean).
      noise_variance: σ².
      log_likelihood: mean log-likelihood per training sample at the fitted parameters.
      n_iter: EM iterations run.
      converged: whether the relative change of the log-likelihood fell below ``tol``.
      trace: mean log-likelihood per sample at iteration 0 and after every ``chunk_size``
        iterations (non-decreasing: EM is monotone).
      trace_iter: iteration number of each trace entry.
      n_samples: number of training samples.
      restart_log_likelihoods: final mean log-likelihood of every restart (the best is kept).
    """

    components: np.ndarray
    mean: np.ndarray
    noise_variance: float
    log_likelihood: float
    n_iter: int
    converged: bool
    trace: np.ndarray
    trace_iter: np.ndarray
    n_samples: int
    restart_log_likelihoods: np.ndarray

    @property
    def n_components(self) -> int:
        return self.components.shape[1]

    @property
    def n_parameters(self) -> int:
        """Free parameters: d q − q(q − 1)/2 + 1 + d (see ``ppca_n_parameters``)."""
        return ppca_n_parameters(*self.components.shape)

    def _check(self, X) -> np.ndarray:
        X = as_matrix(X, "X", nonnegative=False).astype(np.float64, copy=False)
        if X.shape[1] != self.components.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {self.components.shape[0]}")
        return X

    def _posterior(self, X):
        W = self.components.astype(np.float64)
        M = W.T @ W + self.noise_variance * np.eye(W.shape[1])
        Xc = X - self.mean
        return W, M, Xc, np.linalg.solve(M, W.T @ Xc.T).T

    def transform(self, X) -> np.ndarray:
        """Posterior means E[z | x] = M⁻¹ Wᵀ (x − μ), shape (n_samples, n_components)."""
        return self._posterior(self._check(X))[3]

    def score_samples(self, X) -> np.ndarray:
        """log N(x_i | μ, WWᵀ + σ²I) of every row, in float64.

        Uses (x − μ)ᵀC⁻¹(x − μ) = ‖x − μ − Wẑ‖²/σ² + ‖ẑ‖² with ẑ = E[z | x] (no cancellation).
        """
        W, M, Xc, Z = self._posterior(self._check(X))
        d, q = W.shape
        s2 = self.noise_variance
        logdet_C = (d - q) * np.log(s2) + np.linalg.slogdet(M)[1]
        R = Xc - Z @ W.T
        quad = np.sum(R * R, axis=1) / s2 + np.sum(Z * Z, axis=1)
        return -0.5 * (d * np.log(2 * np.pi) + logdet_C + quad)

    def score(self, X) -> float:
        """Mean log-likelihood per sample of X (e.g. held-out data)."""
        return float(np.mean(self.score_samples(X)))

    def bic(self) -> float:
        """−2 · (total training log-likelihood) + n_parameters · log n_samples."""
        return bic(self.log_likelihood * self.n_samples, self.n_parameters, self.n_samples)


class PPCAClosedForm(NamedTuple):
    """Maximum-likelihood PPCA from the eigendecomposition of S (Tipping & Bishop eqs. 7–8)."""

    W: np.ndarray  # (d, q) U_q (Λ_q − σ²I)^{1/2}
    noise_var: float  # mean of the d − q smallest eigenvalues of S
    mean: np.ndarray  # (d,) x̄


def _failure_hint(Xn, q: int, dtype) -> str:
    """Why a PPCA fit went non-finite: most often the data have fewer independent directions than
    ``q + 1`` (the noise variance then has nothing to estimate it from), else the scale."""
    Xc = np.asarray(Xn, np.float64) - np.asarray(Xn, np.float64).mean(axis=0)
    sv = np.linalg.svd(Xc, compute_uv=False)
    rank = int(np.sum(sv > sv[0] * max(Xc.shape) * np.finfo(np.dtype(dtype)).eps)) if sv.size and sv[0] > 0 else 0
    if rank < q:
        return (f"X has numerical rank {rank} in {np.dtype(dtype).name}, fewer directions than n_components={q}; "
                f"choose n_components <= {max(rank, 1)}, raise min_noise_ratio, or fit in float64 "
                "(jax_enable_x64 and float64 data)")
    return "check the scale of X"


def _check_ppca_input(X, n_components) -> np.ndarray:
    Xn = as_matrix(X, "X", nonnegative=False)
    n, d = Xn.shape
    check_int(n_components, "n_components")
    if not 1 <= n_components < d:
        raise ValueError(f"n_components={n_components} is out of range for X with {d} features; PPCA needs 1 <= n_components < n_features")
    if n < n_components + 2:
        raise ValueError(
            f"X has {n} samples; PPCA with n_components={n_components} needs at least {n_components + 2} "
            "(otherwise the maximum-likelihood noise variance is 0)"
        )
    if not np.any(np.ptp(Xn, axis=0) > 0):
        raise ValueError("X has zero variance in every feature; PPCA needs varying data")
    return Xn


def ppca_closed_form(X, n_components: int) -> PPCAClosedForm:
    """The exact maximum-likelihood PPCA solution (R = I), in float64, by an SVD of centred X."""
    X = _check_ppca_input(X, n_components).astype(np.float64)
    n, d = X.shape
    q = int(n_components)
    mean = X.mean(axis=0)
    Xc = X - mean
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    lam = s**2 / n  # eigenvalues of S (the remaining d − min(n, d) are 0)
    noise_var = float((np.sum(Xc * Xc) / n - lam[:q].sum()) / (d - q))
    W = Vt[:q].T * np.sqrt(np.maximum(lam[:q] - noise_var, 0.0))
    return PPCAClosedForm(W, noise_var, mean)


def _result_from_closed_form(cf: PPCAClosedForm, X) -> PPCAResult:
    """A ``PPCAResult`` holding the closed-form solution (n_iter 0) and its log-likelihood on X."""
    res = PPCAResult(cf.W, cf.mean, cf.noise_var, np.nan, 0, True, np.empty(0), np.zeros(0, int), X.shape[0], np.empty(0))
    ll = np.asarray([res.score(X)])
    return dataclasses.replace(res, log_likelihood=float(ll[0]), trace=ll, trace_iter=np.zeros(1, int), restart_log_likelihoods=ll)


def fit_ppca(
    X,
    n_components: int,
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
    n_init: int = 1,
    seed: int = 0,
    min_noise_ratio: float = 1e-6,
    chunk_size: int = 10,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> PPCAResult:
    """Fit probabilistic PCA to ``X`` (n_samples × n_features) by EM.

    Args:
      X: real array-like (dense or scipy sparse; densified); no NaN or inf.
      n_components: latent dimension q, ``1 <= q < n_features`` (and ``q + 2 <= n_samples``).
      max_iter, tol: stop after ``max_iter`` EM iterations or when the relative change of the
        log-likelihood over ``chunk_size`` iterations falls below ``tol`` (``tol=0``: always
        ``max_iter``).
      n_init: random initialisations (from ``seed``), vmapped in one compiled call; the one with
        the highest log-likelihood is returned. The PPCA likelihood has no local maxima other
        than the global one up to rotation (Tipping & Bishop §3.2), so 1 is usually enough.
      min_noise_ratio: floor on σ² relative to the mean feature variance (``PPCAHparams``).
      progress: progress bar over iterations (single init; off when CI is set).
      mesh: optional cell mesh (``jaxfactor.cell_mesh()``): the samples are split over its
        devices (any n; padded rows masked) and every sum over samples is ``psum``'d — once, for
        the moments, when n_samples > n_features; at every step otherwise. Results equal the
        one-device fit within float tolerance.

    The steps run on the sample covariance when n_samples > n_features and on centred X
    otherwise (``ppca_data``), in float64 when ``jax_enable_x64`` is on and X is float64, else
    float32. ``ppca_closed_form`` gives the same maximum directly; EM is the building block for
    larger models and the conformance suite.
    """
    check_cell_mesh(mesh)
    Xn = _check_ppca_input(X, n_components)
    q = int(n_components)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    tol = check_nonnegative_float(tol, "tol")
    hp = PPCAHparams(check_nonnegative_float(min_noise_ratio, "min_noise_ratio"))
    dtype = jnp.float64 if (jax.config.jax_enable_x64 and Xn.dtype == np.float64) else jnp.float32
    n = Xn.shape[0]
    data = ppca_data(jnp.asarray(Xn, dtype) if mesh is None else np.asarray(Xn, np.dtype(dtype)), mesh)

    alg = ppca(q, mesh)
    res, restart = fit_restarts(alg, data, hp, jax.random.PRNGKey(seed), n_init, max_iter=max_iter, tol=tol,
                                chunk_size=chunk_size, progress=progress)
    trace, trace_iter = completed_trace(res, chunk_size)
    trace = -trace / n
    check_finished(trace, bool(res.converged), tol=tol, max_iter=max_iter, name="PPCA", hint=_failure_hint(Xn, q, dtype)
                   if not np.all(np.isfinite(trace)) else "check the scale of X")
    n_iter, converged = int(res.n_iter), bool(res.converged)
    st = res.state
    return PPCAResult(
        components=np.asarray(st.W),
        mean=np.asarray(st.mean),
        noise_variance=float(st.noise_var),
        log_likelihood=float(trace[-1]),
        n_iter=n_iter,
        converged=converged,
        trace=trace,
        trace_iter=trace_iter,
        n_samples=n,
        restart_log_likelihoods=-restart.astype(np.float64) / n,
    )
