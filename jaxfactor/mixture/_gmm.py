"""Gaussian mixture models fitted by EM, on the algorithm contract.

Model. ``p(x) = Σ_k w_k N(x | μ_k, Σ_k)`` with ``Σ_k`` full, diagonal, spherical (``σ_k² I``)
or tied (one full ``Σ`` shared by all components). The state is the parameter pytree
``GMMParams(weights, means, covariances, precisions_cholesky)`` where, as in scikit-learn,
``precisions_cholesky`` is the upper-triangular ``U`` with ``Σ⁻¹ = U Uᵀ`` (for diagonal and
spherical types, ``1/σ``); densities are evaluated only through ``U``:

    log N(x | μ, Σ) = −½ (d log 2π + ‖(x − μ) U‖²) + Σ_j log U_jj.

EM (Dempster, Laird & Rubin, JRSS-B 39, 1977). E-step: responsibilities
``r_nk = w_k N(x_n | μ_k, Σ_k) / Σ_j w_j N(x_n | μ_j, Σ_j)`` by log-sum-exp, reduced at once to
the expected sufficient statistics ``R_k = Σ_n r_nk``, ``Σ_n r_nk x_n`` and second moments.
M-step, exactly scikit-learn's (``sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters``):

    n_k = R_k + 10 ε,   w_k = n_k / Σ_j n_j,   μ_k = Σ_n r_nk x_n / n_k,
    Σ_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ / n_k + reg_covar · I                  (full)
    Σ   = (Σ_n x_n x_nᵀ − Σ_k n_k μ_k μ_kᵀ) / Σ_k n_k + reg_covar · I               (tied)
    σ²_kj = Σ_n r_nk x_nj² / n_k − μ_kj² + reg_covar                               (diag)
    σ²_k  = mean_j σ²_kj                                                          (spherical)

and ``U = L⁻ᵀ`` with ``L`` the lower Cholesky factor of ``Σ``. Each step is one pass over the
data in row blocks of ``block_size`` (E-step and the statistics of the M-step fused, so the
(n, k) responsibilities are never materialised). The full-covariance scatter is accumulated about
the previous means ``c_k`` and re-centred exactly,
``Σ r (x − μ)(x − μ)ᵀ = S_c − a δᵀ − δ aᵀ + R δ δᵀ`` with ``a = Σ r (x − c)``, ``δ = μ − c``, which
keeps the one-pass update as accurate as scikit-learn's two-pass one.

Collapse (documented recovery, never NaN): a component that loses its data keeps
``n_k = 10 ε``, a covariance of ``reg_covar · I`` and finite parameters (its weight is ~1e-15,
so it no longer affects the fit; ``fit_gmm`` reports it with a warning). If an updated
covariance is not numerically positive definite (possible only with ``reg_covar = 0`` or in
float32) — a Cholesky factor with ``min L_jj² <= ε · max Σ_jj``, or a variance below the rounding
error of ``E[x²] − μ²`` — that component keeps its previous covariance and precision Cholesky
factor.

Inits: ``"kmeans++"`` (D² seeding, Arthur & Vassilvitskii, SODA 2007; ``jaxfactor._kmeans``) or
``"random_from_data"`` (k distinct samples) choose k centres; every sample is assigned to its
nearest centre and one M-step on those hard responsibilities gives the initial parameters.

Cells over devices (``mesh=jaxfactor.cell_mesh()``): the rows of X are zero-padded to a multiple
of the device count and split over the devices; each computes its rows' responsibilities and
partial statistics (padded rows masked to zero responsibility and zero log-likelihood) and
``psum`` totals them, so the replicated M-step is exactly the one-device one. The init gathers
the real rows and is the one-device init.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from .._base import Algorithm
from .._cells import CELLS, REPL, ROWS, check_cell_mesh
from .._fit import fit as _fit
from .._fit import fit_batch as _fit_batch
from .._fit import fit_many as _fit_many
from .._kmeans import kmeans_plusplus, nearest_centre
from .._registry import register_example
from .._validate import as_matrix, check_choice, check_int, check_nonnegative_float, check_positive_int
from .._cells import cell_data, on_cells, split_cells
from ._em import EMModel, em_algorithm

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INITS = ("kmeans++", "random_from_data")
BLOCK_SIZE = 8192


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture (shapes for k components, d features).

    ``covariances`` / ``precisions_cholesky``: full (k, d, d); tied (d, d); diag (k, d);
    spherical (k,) — scikit-learn's ``covariances_`` / ``precisions_cholesky_`` conventions.
    """

    weights: jax.Array  # (k,)
    means: jax.Array  # (k, d)
    covariances: jax.Array
    precisions_cholesky: jax.Array


class GMMHparams(NamedTuple):
    """Hyperparameters swept as data: ``reg_covar`` is added to every covariance's diagonal."""

    reg_covar: float = 1e-6


class GMMStats(NamedTuple):
    """Expected sufficient statistics from one E-step (the EM "posterior")."""

    resp_sum: jax.Array  # (k,)  R_k = Σ_n r_nk
    sx: jax.Array  # (k, d)  Σ_n r_nk x_n
    sxx: jax.Array  # full (k,d,d) Σ r (x−c)(x−c)ᵀ; tied (d,d) Σ x xᵀ; diag/spherical (k,d) Σ r x²
    log_likelihood: jax.Array  # Σ_n log p(x_n) under ``prev`` (0 from the init's hard assignment)
    prev: GMMParams  # parameters of the E-step (centres c = prev.means; fallback on collapse)


# --------------------------------------------------------------------------- densities


def _log_det_cholesky(U, cov_type, d):
    if cov_type == "full":
        return jnp.sum(jnp.log(jnp.diagonal(U, axis1=-2, axis2=-1)), axis=-1)
    if cov_type == "tied":
        return jnp.sum(jnp.log(jnp.diagonal(U)))
    if cov_type == "diag":
        return jnp.sum(jnp.log(U), axis=1)
    return d * jnp.log(U)


def estimate_log_gaussian_prob(X, means, precisions_cholesky, cov_type):
    """(n, k) matrix of ``log N(x_n | μ_k, Σ_k)`` (scikit-learn's formulas, batched over k)."""
    n, d = X.shape
    k = means.shape[0]
    U = precisions_cholesky
    if cov_type == "full":
        # one (n, d) @ (d, k·d) matmul for every component at once
        Y = (X @ jnp.transpose(U, (1, 0, 2)).reshape(d, k * d)).reshape(n, k, d)
        Y = Y - jnp.einsum("kd,kde->ke", means, U)[None]
        maha = jnp.sum(Y * Y, axis=-1)
    elif cov_type == "tied":
        Y = (X @ U)[:, None, :] - (means @ U)[None]
        maha = jnp.sum(Y * Y, axis=-1)
    elif cov_type == "diag":
        P = U * U
        maha = jnp.sum(means**2 * P, axis=1)[None] - 2.0 * (X @ (means * P).T) + (X * X) @ P.T
    else:
        P = U * U
        maha = (
            jnp.sum(means**2, axis=1)[None] * P[None]
            - 2.0 * (X @ means.T) * P[None]
            + jnp.sum(X * X, axis=1)[:, None] * P[None]
        )
    return -0.5 * (d * math.log(2 * math.pi) + maha) + _log_det_cholesky(U, cov_type, d)[None]


def weighted_log_prob(params: GMMParams, X, cov_type):
    """(n, k): ``log w_k + log N(x_n | μ_k, Σ_k)``."""
    return estimate_log_gaussian_prob(X, params.means, params.precisions_cholesky, cov_type) + jnp.log(params.weights)[None]


def posterior(params: GMMParams, X, cov_type):
    """``(responsibilities (n, k), log p(x_n) (n,))`` by log-sum-exp."""
    wlp = weighted_log_prob(params, X, cov_type)
    lse = logsumexp(wlp, axis=1)
    return jnp.exp(wlp - lse[:, None]), lse


# --------------------------------------------------------------------------- one pass in blocks


def _blocked_sum(fn, rows, block_size):
    """``Σ_blocks fn(*blocks)`` over row blocks of the arrays ``rows`` (same number of rows): a
    scan over the full blocks (sliced in place, no copy), plus the remainder."""
    n = rows[0].shape[0]
    nb = n // block_size
    if nb <= 1:
        return fn(*rows)
    zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *(r[:block_size] for r in rows)))

    def body(acc, i):
        blocks = [lax.dynamic_slice_in_dim(r, i * block_size, block_size, axis=0) for r in rows]
        return jax.tree_util.tree_map(jnp.add, acc, fn(*blocks)), None

    acc, _ = lax.scan(body, zero, jnp.arange(nb))
    if n > nb * block_size:
        acc = jax.tree_util.tree_map(jnp.add, acc, fn(*(r[nb * block_size:] for r in rows)))
    return acc


def _block_stats(Xb, resp, centers, cov_type, keep=None):
    """Sufficient statistics of one block given its responsibilities (rows where ``keep`` is
    False, i.e. padding, must have zero responsibilities and add nothing)."""
    resp_sum = jnp.sum(resp, axis=0)
    sx = resp.T @ Xb
    if cov_type == "full":
        D = (Xb[None, :, :] - centers[:, None, :]) * jnp.sqrt(resp.T)[:, :, None]  # (k, B, d): √r (x − c)
        sxx = jnp.einsum("kbd,kbe->kde", D, D)
    elif cov_type == "tied":
        sxx = Xb.T @ (Xb if keep is None else jnp.where(keep[:, None], Xb, 0.0))
    else:
        sxx = resp.T @ (Xb * Xb)
    return resp_sum, sx, sxx


def _well_conditioned(L, cov):
    """Cholesky factor usable: min L_jj² above ε · max Σ_jj (else Σ is singular in this precision)."""
    dL = jnp.diagonal(L, axis1=-2, axis2=-1)
    dC = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return jnp.min(dL * dL, axis=-1) > jnp.finfo(L.dtype).eps * jnp.max(dC, axis=-1)


def _m_step(stats: GMMStats, X, hp: GMMHparams, cov_type) -> GMMParams:
    del X
    prev = stats.prev
    R, sx, sxx = stats.resp_sum, stats.sx, stats.sxx
    dtype = sx.dtype
    d = sx.shape[1]
    eye = jnp.eye(d, dtype=dtype)
    nk = R + 10 * jnp.finfo(dtype).eps
    means = sx / nk[:, None]
    reg = jnp.asarray(hp.reg_covar, dtype)
    if cov_type == "full":
        c = prev.means
        a = sx - R[:, None] * c
        dm = means - c
        S = (
            sxx
            - a[:, :, None] * dm[:, None, :]
            - dm[:, :, None] * a[:, None, :]
            + R[:, None, None] * dm[:, :, None] * dm[:, None, :]
        )
        cov = S / nk[:, None, None] + reg * eye
        L = jnp.linalg.cholesky(cov)
        U = jnp.swapaxes(jax.vmap(lambda l: solve_triangular(l, eye, lower=True))(L), -1, -2)
        ok = jnp.all(jnp.isfinite(U), axis=(1, 2)) & _well_conditioned(L, cov)
        cov = jnp.where(ok[:, None, None], cov, prev.covariances)
        U = jnp.where(ok[:, None, None], U, prev.precisions_cholesky)
    elif cov_type == "tied":
        cov = (sxx - (nk[:, None] * means).T @ means) / jnp.sum(nk) + reg * eye
        L = jnp.linalg.cholesky(cov)
        U = solve_triangular(L, eye, lower=True).T
        ok = jnp.all(jnp.isfinite(U)) & _well_conditioned(L, cov)
        cov = jnp.where(ok, cov, prev.covariances)
        U = jnp.where(ok, U, prev.precisions_cholesky)
    else:
        avg_x2 = sxx / nk[:, None]
        cov = avg_x2 - means**2 + reg
        if cov_type == "spherical":
            cov, avg_x2 = jnp.mean(cov, axis=1), jnp.mean(avg_x2, axis=1)
        ok = cov > jnp.finfo(dtype).eps * avg_x2  # above the rounding error of E[x²] − μ²
        cov = jnp.where(ok, cov, prev.covariances)
        U = 1.0 / jnp.sqrt(cov)
    return GMMParams(nk / jnp.sum(nk), means, cov, U)


# --------------------------------------------------------------------------- inits


def _make_init(n_components, cov_type, init, block_size):
    check_choice(init, "GMM init", INITS, hint="or pass weights/means/precisions_init")

    def init_fn(key, X, hp):
        n, d = X.shape
        if init == "kmeans++":
            idx = kmeans_plusplus(key, X, n_components)  # shared with jaxfactor's k-means
        else:
            idx = jax.random.choice(key, n, (n_components,), replace=False)
        centers = X[idx]

        def fn(Xb):
            resp = jax.nn.one_hot(nearest_centre(Xb, centers)[0], n_components, dtype=X.dtype)
            return _block_stats(Xb, resp, centers, cov_type)

        R, sx, sxx = _blocked_sum(fn, (X,), block_size)
        # fallback for a degenerate initial cluster (reg_covar = 0): the data's mean variance
        var = jnp.maximum(jnp.mean(jnp.var(X, axis=0)), jnp.finfo(X.dtype).tiny)
        prev = _isotropic(centers, var, cov_type)
        return _m_step(GMMStats(R, sx, sxx, jnp.zeros((), X.dtype), prev), X, hp, cov_type)

    return init_fn


def _isotropic(means, var, cov_type):
    k, d = means.shape
    w = jnp.full((k,), 1.0 / k, means.dtype)
    eye = jnp.eye(d, dtype=means.dtype)
    if cov_type == "full":
        cov = jnp.broadcast_to(var * eye, (k, d, d))
    elif cov_type == "tied":
        cov = var * eye
    elif cov_type == "diag":
        cov = jnp.full((k, d), var, means.dtype)
    else:
        cov = jnp.full((k,), var, means.dtype)
    U = eye / jnp.sqrt(var) if cov_type in ("full", "tied") else 1.0 / jnp.sqrt(cov)
    if cov_type == "full":
        U = jnp.broadcast_to(U, (k, d, d))
    return GMMParams(w, means, cov, U)


# --------------------------------------------------------------------------- factories


def _check_static(n_components, covariance_type, block_size):
    check_choice(covariance_type, "covariance_type", COVARIANCE_TYPES)
    check_int(n_components, "n_components", 1)
    check_int(block_size, "block_size", 1)


@lru_cache(maxsize=None)
def gmm_em(
    n_components: int,
    covariance_type: str = "full",
    init: str = "kmeans++",
    block_size: int = BLOCK_SIZE,
    mesh: jax.sharding.Mesh | None = None,
) -> EMModel:
    """The ``EMModel`` of a k-component Gaussian mixture (cached per arguments).

    ``e_step`` returns ``GMMStats`` (expected sufficient statistics, accumulated over row
    blocks of ``block_size``), ``m_step`` the closed-form update above, ``log_likelihood`` the
    total ``Σ_n log p(x_n)``.

    ``mesh``: optional cell mesh (``jaxfactor.cell_mesh()``, static). The data is then
    ``cell_data(X, mesh)`` (rows zero-padded to a multiple of the mesh size and split over its
    devices; plain X is accepted when its rows divide evenly): the E-step and the log-likelihood
    run with ``shard_map`` on each device's rows, padded rows get zero responsibility and zero
    log-likelihood, and ``psum`` totals R_k, Σ r x, the second moments and Σ log p(x_n), so the
    replicated M-step is the one-device update. ``init`` gathers the real rows and runs the
    one-device init on them (identical starting point). On a CPU,
    ``XLA_FLAGS=--xla_force_host_platform_device_count=C`` with one device per core runs the shards
    on C cores at once (XLA:CPU otherwise runs these small blocked matmuls on one core).
    """
    _check_static(n_components, covariance_type, block_size)
    check_cell_mesh(mesh)
    cov_type = covariance_type
    base_init = _make_init(n_components, cov_type, init, block_size)

    def local_stats(params, X, cells):
        def fn(Xb, keep=None):
            resp, lse = posterior(params, Xb, cov_type)
            if keep is not None:
                resp, lse = jnp.where(keep[:, None], resp, 0.0), jnp.where(keep, lse, 0.0)
            return (*_block_stats(Xb, resp, params.means, cov_type, keep), jnp.sum(lse))

        rows = (X,) if cells.mask is None else (X, cells.mask)
        return cells.sum(_blocked_sum(fn, rows, block_size))

    def local_ll(params, X, cells):
        def fn(Xb, keep=None):
            lse = logsumexp(weighted_log_prob(params, Xb, cov_type), axis=1)
            return jnp.sum(lse if keep is None else jnp.where(keep, lse, 0.0))

        rows = (X,) if cells.mask is None else (X, cells.mask)
        return cells.sum(_blocked_sum(fn, rows, block_size))

    def local_init(key, X, hp, cells):
        X = lax.all_gather(X, CELLS, tiled=True) if cells.sharded else X
        return base_init(key, X[: cells.n] if cells.n < X.shape[0] else X, hp)

    def init_fn(key, data, hp):
        X, n, rows = split_cells(data, mesh)
        return on_cells(local_init, mesh, n, rows, (REPL, ROWS, REPL), REPL)(key, X, hp)

    def e_step(params, data, hp):
        del hp
        X, n, rows = split_cells(data, mesh)
        R, sx, sxx, ll = on_cells(local_stats, mesh, n, rows, (REPL, ROWS), REPL)(params, X)
        return GMMStats(R, sx, sxx, ll, params)

    def m_step(stats, data, hp):
        return _m_step(stats, data, hp, cov_type)

    def log_likelihood(params, data, hp):
        del hp
        X, n, rows = split_cells(data, mesh)
        return on_cells(local_ll, mesh, n, rows, (REPL, ROWS), REPL)(params, X)

    return EMModel(init_fn, e_step, m_step, log_likelihood)


def restart_keys(seed: int, n_init: int):
    """The keys of ``n_init`` restarts: restart ``i`` is the init of a single fit with seed
    ``seed + i`` (scikit-learn draws its restarts from one seeded sequence too), so more restarts
    never give a worse fit than fewer."""
    return jnp.stack([jax.random.PRNGKey(int(seed) + i) for i in range(int(n_init))])


@lru_cache(maxsize=None)
def gmm(
    n_components: int,
    covariance_type: str = "full",
    init: str = "kmeans++",
    block_size: int = BLOCK_SIZE,
    mesh: jax.sharding.Mesh | None = None,
) -> Algorithm:
    """Gaussian-mixture EM as an ``Algorithm`` (objective −Σ log p(x_n), monotone). Cached.

    With ``mesh`` (``jaxfactor.cell_mesh()``) the data is ``cell_data(X, mesh)``; see ``gmm_em``.
    """
    return em_algorithm(gmm_em(n_components, covariance_type, init, block_size, mesh))


def _example(cov_type):
    def make():
        from ..data._simulate_gmm import simulate_gmm

        sim = simulate_gmm(n_samples=150, n_features=3, n_components=3, separation=4.0, covariance_type=cov_type, seed=0)
        return gmm(3, cov_type, "kmeans++"), jnp.asarray(sim.X, jnp.float32), GMMHparams(reg_covar=1e-4)

    return make


for _t in COVARIANCE_TYPES:
    register_example(f"gmm_{_t}", _example(_t))


# --------------------------------------------------------------------------- scikit-learn-style API


class GMMCollapseWarning(UserWarning):
    """Some components ended with less than one sample's worth of responsibility."""


@partial(jax.jit, static_argnames=("cov_type",))
def _posterior_jit(params: GMMParams, X, cov_type):
    return posterior(params, X, cov_type)


def _flip_cholesky(P):
    """Upper-triangular U with P = U Uᵀ (scikit-learn's ``_compute_precision_cholesky_from_precisions``)."""
    return np.linalg.cholesky(P[..., ::-1, ::-1])[..., ::-1, ::-1]


@dataclass(frozen=True)
class GMMResult:
    """A fitted Gaussian mixture (scikit-learn's ``GaussianMixture`` attributes without underscores).

    Attributes:
      weights: (k,) mixing weights.
      means: (k, d) component means.
      covariances: full (k, d, d), tied (d, d), diag (k, d), spherical (k,).
      precisions_cholesky: same shapes; ``Σ⁻¹ = U Uᵀ`` (full/tied), ``1/σ`` (diag/spherical).
      covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
      log_likelihood: mean log-likelihood per sample of the training data (``GaussianMixture.score``).
      n_iter: EM iterations run.
      converged: whether the relative change fell below ``tol``.
      trace: mean log-likelihood per sample at iteration 0 and after every ``chunk_size`` iterations.
      trace_iter: iteration number of each trace entry.
      restart_log_likelihoods: final mean log-likelihood of every restart (the best is kept).
      collapsed: indices of components with less than one sample's worth of responsibility.
      batch_size: rows per compiled call of the prediction functions.

    ``predict_proba`` / ``predict`` / ``score_samples`` / ``score`` run one jitted function on
    fixed-size row batches (``batch_size`` rows, or the next power of two for smaller inputs,
    zero-padded), so new data of any length reuses a handful of compiled programs.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str
    log_likelihood: float
    n_iter: int
    converged: bool
    trace: np.ndarray
    trace_iter: np.ndarray
    restart_log_likelihoods: np.ndarray
    collapsed: np.ndarray
    batch_size: int = 8192

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def precisions(self) -> np.ndarray:
        U = self.precisions_cholesky
        return U @ np.swapaxes(U, -1, -2) if self.covariance_type in ("full", "tied") else U * U

    def _posterior(self, X):
        Xn = as_matrix(X, "X", nonnegative=False)
        d = self.means.shape[1]
        if Xn.shape[1] != d:
            raise ValueError(f"X has {Xn.shape[1]} features but the mixture was fitted on {d}; pass data with {d} columns")
        params = GMMParams(*(jnp.asarray(a) for a in (self.weights, self.means, self.covariances, self.precisions_cholesky)))
        dtype = params.means.dtype
        n = Xn.shape[0]
        size = self.batch_size if n >= self.batch_size else max(16, 1 << (n - 1).bit_length())
        probs, logp = [], []
        for start in range(0, n, size):
            block = Xn[start:start + size]
            m = block.shape[0]
            if m < size:
                block = np.concatenate([block, np.zeros((size - m, d), block.dtype)])
            r, lse = _posterior_jit(params, jnp.asarray(block, dtype), self.covariance_type)
            probs.append(np.asarray(r)[:m])
            logp.append(np.asarray(lse)[:m])
        return np.concatenate(probs), np.concatenate(logp)

    def predict_proba(self, X) -> np.ndarray:
        """(n, k) posterior probability of each component."""
        return self._posterior(X)[0]

    def predict(self, X) -> np.ndarray:
        """(n,) most probable component."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score_samples(self, X) -> np.ndarray:
        """(n,) log p(x_n) under the mixture."""
        return self._posterior(X)[1]

    def score(self, X) -> float:
        """Mean log-likelihood per sample (scikit-learn's ``score``)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(X, labels)``: ``n_samples`` draws from the fitted mixture (scikit-learn's ``sample``:
        component counts ~ Multinomial(n, weights), then each component's Gaussian), grouped by
        component."""
        n = check_positive_int(n_samples, "n_samples")
        rng = np.random.default_rng(seed)
        w = np.asarray(self.weights, np.float64)
        counts = rng.multinomial(n, w / w.sum())
        means, cov = np.asarray(self.means, np.float64), np.asarray(self.covariances, np.float64)
        k, d = means.shape
        draws = []
        for c in range(k):
            if self.covariance_type == "full":
                S = cov[c]
            elif self.covariance_type == "tied":
                S = cov
            elif self.covariance_type == "diag":
                S = np.diag(cov[c])
            else:
                S = np.eye(d) * cov[c]
            draws.append(rng.multivariate_normal(means[c], S, size=counts[c]))
        return np.concatenate(draws), np.repeat(np.arange(k), counts)


def _check_user_init(weights_init, means_init, precisions_init, k, d, cov_type):
    """Validate the user's initial parameters; return them as float64 arrays (or None)."""

    def arr(x, name):
        try:
            a = np.asarray(x, dtype=np.float64)
        except Exception as exc:
            raise ValueError(f"{name} could not be converted to a numeric array ({exc})") from None
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has NaN or infinite entries; pass finite values")
        return a

    w = m = P = None
    if weights_init is not None:
        w = arr(weights_init, "weights_init")
        if w.shape != (k,):
            raise ValueError(f"weights_init has shape {w.shape}; expected ({k},) for n_components={k}")
        if np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights_init must be non-negative and sum to 1 (sum {w.sum():.6g}, min {w.min():.3g})")
        w = w / w.sum()
    if means_init is not None:
        m = arr(means_init, "means_init")
        if m.shape != (k, d):
            raise ValueError(f"means_init has shape {m.shape}; expected {(k, d)} for n_components={k} and {d} features")
    if precisions_init is not None:
        P = arr(precisions_init, "precisions_init")
        shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov_type]
        if P.shape != shape:
            raise ValueError(f"precisions_init has shape {P.shape}; expected {shape} for covariance_type={cov_type!r}")
        if cov_type in ("full", "tied"):
            if not np.allclose(P, np.swapaxes(P, -1, -2)):
                raise ValueError("precisions_init is not symmetric; pass symmetric positive-definite matrices")
            if np.any(np.linalg.eigvalsh(P) <= 0):
                raise ValueError("precisions_init is not positive definite; pass symmetric positive-definite matrices")
        elif np.any(P <= 0):
            raise ValueError("precisions_init must be > 0 for covariance_type diag or spherical")
    return w, m, P


def _override(params: GMMParams, w, m, P, cov_type):
    """Replace the given pieces of a (possibly batched) parameter pytree by the user's values."""
    dtype = params.means.dtype
    lead = params.weights.shape[:-1]

    def put(x):
        return jnp.broadcast_to(jnp.asarray(x, dtype), lead + x.shape)

    if w is not None:
        params = params._replace(weights=put(w))
    if m is not None:
        params = params._replace(means=put(m))
    if P is not None:
        if cov_type in ("full", "tied"):
            U, cov = _flip_cholesky(P), np.linalg.inv(P)
        else:
            U, cov = np.sqrt(P), 1.0 / P
        params = params._replace(covariances=put(cov), precisions_cholesky=put(U))
    return params


def fit_gmm(
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init: str = "kmeans++",
    weights_init=None,
    means_init=None,
    precisions_init=None,
    seed: int = 0,
    chunk_size: int = 10,
    block_size: int = BLOCK_SIZE,
    batch_size: int = 8192,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> GMMResult:
    """Fit a Gaussian mixture to ``X`` (n_samples × n_features) by EM.

    Args:
      X: array-like of finite numbers (any sign).
      n_components: k, ``1 <= k <= n_samples``.
      covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
      max_iter: maximum EM iterations.
      tol: stop when the relative change of the log-likelihood over ``chunk_size`` iterations
        falls below ``tol`` (jaxfactor's shared rule; scikit-learn instead compares the absolute
        change of the mean log-likelihood per iteration with ``tol``). ``tol=0`` runs exactly
        ``max_iter`` iterations.
      reg_covar: added to every covariance's diagonal (keeps them positive definite).
      n_init: independent initialisations (seeds split from ``seed``) run in one vmapped call;
        the one with the highest final log-likelihood is kept.
      init: ``"kmeans++"`` or ``"random_from_data"`` centres, then nearest-centre responsibilities
        and one M-step (see the module docstring).
      weights_init, means_init, precisions_init: user initial parameters (scikit-learn's shapes;
        precisions are inverse covariances). Pieces not given come from ``init``; with all three
        given the fit starts exactly there (scikit-learn's behaviour), and ``n_init`` must be 1.
      seed: PRNG seed of the init.
      chunk_size: iterations between log-likelihood evaluations (static).
      block_size: rows per block of the fused E/M pass (static; memory ~ block_size · k · d).
      batch_size: rows per compiled call of the prediction functions of the result.
      progress: progress bar over iterations (single init; off when CI is set).
      mesh: optional cell mesh (``jaxfactor.cell_mesh()``): the samples are split over its
        devices (any n; padded rows are masked out of every sum) and the sufficient statistics
        summed with ``psum``; the init runs on the real samples as without a mesh. Results equal
        the one-device fit within float tolerance.

    Returns:
      ``GMMResult``. The computation runs in float64 when ``jax_enable_x64`` is on and X is
      float64, else float32.

    Collapse: a component that loses all its samples stays finite (weight ~1e-15, covariance
    ``reg_covar · I``) and is reported in ``result.collapsed`` with a ``GMMCollapseWarning``; a
    covariance that is not numerically positive definite keeps its previous value. Never NaN.
    """
    from .._fit import check_finished, completed_trace

    check_cell_mesh(mesh)
    check_choice(covariance_type, "covariance_type", COVARIANCE_TYPES)
    check_choice(init, "init", INITS, hint="or pass weights_init/means_init/precisions_init")
    Xn = as_matrix(X, "X", nonnegative=False)
    n, d = Xn.shape
    check_int(n_components, "n_components")
    if not 1 <= n_components <= n:
        raise ValueError(f"n_components={n_components} is out of range for {n} samples; choose 1 <= n_components <= n_samples")
    k = int(n_components)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    block_size = check_positive_int(block_size, "block_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    tol = check_nonnegative_float(tol, "tol")
    hp = GMMHparams(check_nonnegative_float(reg_covar, "reg_covar"))
    w0, m0, P0 = _check_user_init(weights_init, means_init, precisions_init, k, d, covariance_type)
    given = sum(x is not None for x in (w0, m0, P0))
    if given == 3 and n_init > 1:
        raise ValueError("n_init > 1 repeats the same fit from fully user-given weights/means/precisions; use n_init=1")

    dtype = jnp.float64 if (jax.config.jax_enable_x64 and Xn.dtype == np.float64) else jnp.float32
    Xj = jnp.asarray(Xn, dtype) if mesh is None else cell_data(np.asarray(Xn, np.dtype(dtype)), mesh)
    alg = gmm(k, covariance_type, init, block_size, mesh)
    key = jax.random.PRNGKey(seed)
    kw = dict(max_iter=max_iter, tol=tol, chunk_size=chunk_size)
    if given == 0:
        if n_init == 1:
            res = _fit(alg, Xj, hp, key, progress=progress, **kw)
            restart_obj = np.asarray(res.trace[-1])[None]
        else:  # restart i is the single fit with seed + i: never worse than any of those
            grid = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], hp)
            many = _fit_many(alg, Xj, grid, restart_keys(seed, n_init), **kw)
            res = jax.tree_util.tree_map(lambda x: x[0], many.best)
            restart_obj = np.asarray(many.objective[0])
    else:
        if given == 3:
            d_params = jax.eval_shape(alg.init, key, Xj, hp)
            zeros = GMMParams(*(jnp.zeros(s.shape, s.dtype) for s in d_params))
            state0 = _override(zeros, w0, m0, P0, covariance_type)
        else:
            keys = jax.random.split(key, n_init) if n_init > 1 else key
            inits = jax.jit(jax.vmap(alg.init, in_axes=(0, None, None)) if n_init > 1 else alg.init)(keys, Xj, hp)
            state0 = _override(inits, w0, m0, P0, covariance_type)
        if n_init == 1:
            res = _fit(alg, Xj, hp, key, state0=state0, progress=progress, **kw)
            restart_obj = np.asarray(res.trace[-1])[None]
        else:
            batch = _fit_batch(alg, Xj, hp, jax.random.split(key, n_init), state0=state0, **kw)
            final = np.asarray(batch.trace[:, -1])
            best = int(np.argmin(np.where(np.isfinite(final), final, np.inf)))
            res = jax.tree_util.tree_map(lambda x: x[best], batch)
            restart_obj = final

    n_iter, converged = int(res.n_iter), bool(res.converged)
    trace, trace_iter = completed_trace(res, chunk_size)
    trace = -trace / n
    check_finished(trace, converged, tol=tol, max_iter=max_iter, name="GMM", hint="scale X or raise reg_covar")
    state = jax.tree_util.tree_map(np.asarray, res.state)
    collapsed = np.flatnonzero(state.weights * n < 1.0)
    if collapsed.size:
        warnings.warn(
            f"GMM components {collapsed.tolist()} collapsed (less than one sample's responsibility); they are kept "
            "finite (weight ~0, covariance reg_covar·I) — lower n_components or try another init/seed",
            GMMCollapseWarning, stacklevel=2,
        )
    return GMMResult(
        weights=state.weights,
        means=state.means,
        covariances=state.covariances,
        precisions_cholesky=state.precisions_cholesky,
        covariance_type=covariance_type,
        log_likelihood=float(trace[-1]),
        n_iter=n_iter,
        converged=converged,
        trace=trace,
        trace_iter=trace_iter,
        restart_log_likelihoods=-np.asarray(restart_obj, dtype=np.float64) / n,
        collapsed=collapsed,
        batch_size=batch_size,
    )
