"""ZINB-WaVE on count matrices: input checks, the fit, and W for new cells.

``fit_zinbwave(Y, n_components, X=..., V=...)`` returns a ``ZINBWaVEResult`` (NumPy arrays);
``jaxfactor.zinbwave.fit`` wraps it for AnnData. Every input check raises a one-line
``ValueError`` before anything is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._fit import check_finished, fit, fit_many
from .._validate import as_matrix, check_int, check_nonnegative_float, check_positive_int
from ._zinb import ZINBData, ZINBHparams, ZINBState, _cell_block, default_hparams, penalized_log_likelihood, predictors
from ._zinb_alg import zinbwave_algorithm
from ._zinb_lik import zinb_log_prob


# --------------------------------------------------------------------------------------------
# checks


def check_counts(Y, name: str = "counts", *, keep_sparse: bool = False):
    """Finite, non-negative, integer-valued 2-D counts as float64 (sparse is densified unless
    ``keep_sparse``: then a CSR matrix, its stored values checked)."""
    if keep_sparse and hasattr(Y, "tocsr") and not (hasattr(Y, "obs") and hasattr(Y, "var")):
        import scipy.sparse as sp

        Y = sp.csr_matrix(Y)
        if Y.shape[0] == 0 or Y.shape[1] == 0:
            as_matrix(np.zeros(Y.shape), name)  # the empty-matrix message
        if Y.nnz:
            check_counts(Y.data[None, :], name)
        return Y.astype(np.float64, copy=False)
    Y = as_matrix(Y, name, nonnegative=False)
    if Y.min() < 0:
        raise ValueError(f"{name} has {int(np.count_nonzero(Y < 0))} negative entries; ZINB-WaVE needs non-negative counts")
    n_frac = np.count_nonzero(Y != np.round(Y))
    if n_frac:
        raise ValueError(f"{name} has {n_frac} non-integer entries; ZINB-WaVE models raw counts (not normalised or log values)")
    return Y.astype(np.float64, copy=False)


def zero_rows_cols(Y) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the all-zero cells (rows) and genes (columns) (dense or scipy sparse)."""
    if hasattr(Y, "tocsr"):
        P = Y.tocsr() > 0
        return np.asarray(P.sum(axis=1)).ravel() == 0, np.asarray(P.sum(axis=0)).ravel() == 0
    return ~np.any(Y > 0, axis=1), ~np.any(Y > 0, axis=0)


def check_design(Z, n: int, name: str, what: str, *, full_rank: bool = True) -> np.ndarray:
    """A finite (n, p) covariate matrix of full column rank (p may be 0)."""
    try:
        Z = np.asarray(Z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric matrix ({exc})") from None
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2 or Z.shape[0] != n:
        raise ValueError(f"{name} must have one row per {what} ({n}), got shape {Z.shape}")
    bad = np.count_nonzero(~np.isfinite(Z))
    if bad:
        raise ValueError(f"{name} has {bad} NaN or infinite entries; impute or drop them before fitting")
    if full_rank and Z.shape[1] and np.linalg.matrix_rank(Z) < Z.shape[1]:
        raise ValueError(f"{name} is rank-deficient (rank {np.linalg.matrix_rank(Z)} < {Z.shape[1]} columns); drop collinear columns")
    return Z


def check_columns(which, p: int, name: str, design: str) -> tuple:
    """Column indices (0-based) of a p-column design: None is every column; otherwise integers in
    0..p−1 without repeats (zinbwave's ``which_X_mu`` etc., there 1-based)."""
    if which is None:
        return tuple(range(p))
    idx = np.atleast_1d(np.asarray(which))
    if idx.ndim != 1 or (idx.size and not (np.issubdtype(idx.dtype, np.integer) and idx.dtype != np.bool_)):
        raise ValueError(f"{name} must be integer column indices of {design} (0-based), got {which!r}")
    bad = [int(i) for i in idx if not 0 <= i < p]
    if bad:
        raise ValueError(f"{name} has indices {bad[:5]} out of range for {design} with {p} columns; use 0..{p - 1}")
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"{name} repeats column indices ({sorted(idx.tolist())}); give each column once")
    return tuple(sorted(int(i) for i in idx))


def masked(Z: np.ndarray, cols: tuple) -> np.ndarray:
    """Z with the columns not in ``cols`` set to 0 (an unused covariate: its coefficient stays 0)."""
    keep = np.zeros(Z.shape[1], bool)
    keep[list(cols)] = True
    return np.where(keep[None, :], Z, 0.0)


def _check_side_rank(Z: np.ndarray, cols: tuple, name: str):
    """The columns a regression uses (all-zero ones aside) must be linearly independent."""
    sub = Z[:, list(cols)]
    sub = sub[:, np.any(sub != 0, axis=0)]
    if sub.shape[1] and np.linalg.matrix_rank(sub) < sub.shape[1]:
        raise ValueError(f"{name} is rank-deficient (rank {np.linalg.matrix_rank(sub)} < {sub.shape[1]} columns); "
                         "drop collinear columns")


def check_offset(O, shape, name: str):
    if O is None:
        return None
    O = as_matrix(O, name, nonnegative=False)
    if O.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of the counts {tuple(shape)}, got {O.shape}")
    return O


def check_rank(n_components, shape) -> int:
    check_int(n_components, "n_components")
    if not 0 <= n_components < min(shape):
        raise ValueError(f"n_components={n_components} is out of range for {shape[0]} cells x {shape[1]} genes; "
                         f"choose 0 <= n_components < {min(shape)}")
    return int(n_components)


def _dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def observational_weights(y, log_mu, logit_pi, zeta, floor: float = 1e-15) -> np.ndarray:
    """``(1 − π) NB(y) / (π 1{y=0} + (1 − π) NB(y))`` in float64 NumPy: 1 where y > 0 and
    ``σ(l0 − logit π)`` at zeros (l0 = log NB(0) = −θ log(1 + μ/θ)), floored at ``floor``
    (zinbwave's ``computeObservationalWeights``)."""
    from scipy.special import expit

    theta = np.exp(zeta)
    l0 = -theta * np.logaddexp(0.0, log_mu - zeta)
    return np.maximum(np.where(y > 0, 1.0, expit(l0 - logit_pi)), floor)


# --------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True)
class ZINBWaVEResult:
    """A fitted ZINB-WaVE model (zinbwave's layout: β M × J, γ L × n, W n × K, α K × J).

    Attributes:
      W, alpha_mu, alpha_pi, beta_mu, beta_pi, gamma_mu, gamma_pi: parameters (module ``_zinb``).
      zeta: (J,) log θ; ``theta`` is e^ζ (``dispersion`` = 1/θ).
      X, V, O_mu, O_pi: the designs and offsets the model was fitted with.
      penalized_log_likelihood: PLL at the fit (the maximised quantity).
      log_likelihood: the ZINB log-likelihood alone.
      trace: PLL at the start and after every outer iteration (non-decreasing).
      n_iter, converged: outer iterations run; whether the relative change fell below ``tol``.
      hparams: the penalties used (``ZINBHparams`` of NumPy arrays).
      zero_inflation, common_dispersion: the model variant.
      which_X_mu, which_X_pi, which_V_mu, which_V_pi: the columns of X and V the μ and π
        regressions use (None: all; the others' coefficients are 0).
      subsample: with ``fit_zinbwave(subsample=m)``, the cells every parameter was fitted on
        (the others got their γ and W by ``transform``); None otherwise.

    Derived matrices (zinbwave's ``computeDevianceResiduals``, ``imputeZeros`` and the
    ``normalizedValues`` of ``zinbwave()``; R/normalized_values.R of the Bioconductor package):
    ``log_likelihood_matrix``, ``residuals``, ``normalized_values``, ``imputed_counts``.
    """

    W: np.ndarray
    alpha_mu: np.ndarray
    alpha_pi: np.ndarray
    beta_mu: np.ndarray
    beta_pi: np.ndarray
    gamma_mu: np.ndarray
    gamma_pi: np.ndarray
    zeta: np.ndarray
    X: np.ndarray
    V: np.ndarray
    O_mu: np.ndarray | None
    O_pi: np.ndarray | None
    penalized_log_likelihood: float
    log_likelihood: float
    trace: np.ndarray
    n_iter: int
    converged: bool
    hparams: ZINBHparams = field(repr=False)
    zero_inflation: bool = True
    common_dispersion: bool = False
    which_X_mu: tuple | None = None
    which_X_pi: tuple | None = None
    which_V_mu: tuple | None = None
    which_V_pi: tuple | None = None
    subsample: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_components(self) -> int:
        return self.W.shape[1]

    @property
    def which(self) -> dict:
        """The columns of X and V used by each side (every column where the field is None)."""
        M, L = np.asarray(self.X).shape[1], np.asarray(self.V).shape[1]
        cols = lambda v, p: tuple(range(p)) if v is None else tuple(int(i) for i in v)  # noqa: E731
        return {"which_X_mu": cols(self.which_X_mu, M), "which_X_pi": cols(self.which_X_pi, M),
                "which_V_mu": cols(self.which_V_mu, L), "which_V_pi": cols(self.which_V_pi, L)}

    @property
    def theta(self) -> np.ndarray:
        return np.exp(self.zeta)

    @property
    def state(self) -> ZINBState:
        return ZINBState(self.beta_mu, self.beta_pi, self.gamma_mu, self.gamma_pi, self.W, self.alpha_mu, self.alpha_pi, self.zeta)

    def log_mu(self) -> np.ndarray:
        out = self.X @ self.beta_mu + (self.V @ self.gamma_mu).T + self.W @ self.alpha_mu
        return out if self.O_mu is None else out + self.O_mu

    def logit_pi(self) -> np.ndarray:
        if not self.zero_inflation:
            return np.full((self.X.shape[0], self.V.shape[0]), -np.inf)
        out = self.X @ self.beta_pi + (self.V @ self.gamma_pi).T + self.W @ self.alpha_pi
        return out if self.O_pi is None else out + self.O_pi

    def mu(self) -> np.ndarray:
        """(n, J) fitted means μ."""
        return np.exp(self.log_mu())

    def pi(self) -> np.ndarray:
        """(n, J) fitted zero-inflation probabilities π (0 without zero inflation)."""
        return 1.0 / (1.0 + np.exp(-self.logit_pi()))

    def weights(self, Y) -> np.ndarray:
        """Observational weights ``(1 − π) NB(y) / P(y)`` (1 where y > 0), floored at 1e-15:
        the posterior probability that an entry comes from the negative binomial (zinbwave's
        ``computeObservationalWeights``, used by weighted differential-expression tests)."""
        Y = np.asarray(Y, np.float64)
        if not self.zero_inflation:
            return np.ones_like(Y)
        return observational_weights(Y, self.log_mu(), self.logit_pi(), self.zeta[None, :])

    def _check_Y(self, Y) -> np.ndarray:
        Y = check_counts(Y)
        shape = (self.W.shape[0], self.V.shape[0])
        if Y.shape != shape:
            raise ValueError(f"counts have shape {Y.shape} but the model was fitted on {shape}; pass the fitted counts")
        return Y

    def _predictors(self, ignore_W: bool):
        a, b = self.log_mu(), self.logit_pi()
        if ignore_W and self.n_components:
            a = a - self.W @ self.alpha_mu
            if self.zero_inflation:
                b = b - self.W @ self.alpha_pi
        return a, b

    def log_likelihood_matrix(self, Y, *, ignore_W: bool = False) -> np.ndarray:
        """(n, J) log ZINB(y_ij | μ_ij, θ_j, π_ij) in float64 (``ignore_W``: with W = 0). An
        entry of likelihood 0 (y > 0 where π = 1) gets the smallest finite value, as zinbwave's
        ``zinb.loglik.matrix`` does, so nothing downstream is infinite."""
        Y = self._check_Y(Y)
        a, b = self._predictors(ignore_W)
        with jax.enable_x64(True):
            ll = np.asarray(zinb_log_prob(jnp.asarray(Y, jnp.float64), jnp.asarray(a, jnp.float64),
                                          jnp.asarray(b, jnp.float64), jnp.asarray(self.zeta, jnp.float64)[None, :],
                                          bool(self.zero_inflation)), np.float64)
        finite = np.isfinite(ll)
        return ll if finite.all() else np.where(finite, ll, ll[finite].min() if finite.any() else -745.0)

    def residuals(self, Y, kind: str = "deviance", *, ignore_W: bool = False) -> np.ndarray:
        """(n, J) residuals of the fit (``ignore_W``: of the model with W = 0).

        ``"deviance"`` — zinbwave's ``computeDevianceResiduals``:
        ``sign(y − (1 − π) μ) √(−2 log ZINB(y))`` (the sign is −1 where y equals the mean), so
        the sum of squares is −2 × the log-likelihood (zinbwave's deviance has no
        saturated-model term). ``"pearson"``: ``(y − E y)/√Var y`` with the ZINB moments
        ``E y = (1 − π) μ`` and ``Var y = (1 − π) μ (1 + μ (π + 1/θ))``."""
        if kind not in ("deviance", "pearson"):
            raise ValueError(f"kind must be 'deviance' or 'pearson', got {kind!r}")
        Y = self._check_Y(Y)
        a, b = self._predictors(ignore_W)
        mu = np.exp(a)
        pi = 1.0 / (1.0 + np.exp(-b))
        mean = (1.0 - pi) * mu
        if kind == "pearson":
            var = mean * (1.0 + mu * (pi + np.exp(-self.zeta)[None, :]))
            return (Y - mean) / np.sqrt(np.maximum(var, np.finfo(np.float64).tiny))
        ll = self.log_likelihood_matrix(Y, ignore_W=ignore_W)
        return np.where(Y - mean > 0, 1.0, -1.0) * np.sqrt(np.maximum(-2.0 * ll, 0.0))

    def normalized_values(self, Y) -> np.ndarray:
        """zinbwave's ``normalizedValues`` (``zinbwave(normalizedValues = TRUE)``): the deviance
        residuals of the model with W ignored, ``residuals(Y, "deviance", ignore_W=True)`` — the
        counts adjusted for the known cell and gene covariates (X, V, offsets) only, so the
        structure W captured stays in them (zinbwave's documentation: "for visualization …
        please use the normalized values")."""
        return self.residuals(Y, "deviance", ignore_W=True)

    def imputed_counts(self, Y) -> np.ndarray:
        """zinbwave's ``imputeZeros``: the counts, with every zero replaced by
        ``μ π / (π + (1 − π) NB(0))`` = μ × P(the zero is a dropout | y = 0) = μ (1 − w), w the
        observational weight (``weights``, unfloored); NB(0) = (1 + μ/θ)^(−θ). Non-zero counts are
        kept; without zero inflation (π = 0) zeros stay 0."""
        Y = self._check_Y(Y)
        if not self.zero_inflation:
            return Y.copy()
        a, b = self._predictors(False)
        l0 = -np.exp(self.zeta)[None, :] * np.logaddexp(0.0, a - self.zeta[None, :])  # log NB(0)
        from scipy.special import expit

        return np.where(Y > 0, Y, np.exp(a) * expit(b - l0))

    def transform(self, Y, X=None, *, O_mu=None, O_pi=None, batch_size: int = 1024, max_iter: int = 100,
                  tol: float = 1e-8) -> np.ndarray:
        """W (n_new × K) for new cells with every gene-level parameter fixed: the cell-wise block
        alone (γ_μ, γ_π, W per cell), iterated to a relative change below ``tol``, compiled once
        per ``batch_size`` and run batch by batch (the last batch is padded)."""
        return transform_counts(self, Y, X, O_mu=O_mu, O_pi=O_pi, batch_size=batch_size, max_iter=max_iter, tol=tol)[0]


# --------------------------------------------------------------------------------------------
# fit


def fit_zinbwave(
    Y,
    n_components: int = 2,
    *,
    X=None,
    V=None,
    O_mu=None,
    O_pi=None,
    common_dispersion: bool = False,
    zero_inflation: bool = True,
    epsilon: float | None = None,
    epsilon_beta: float | None = None,
    epsilon_gamma: float | None = None,
    epsilon_W: float | None = None,
    epsilon_alpha: float | None = None,
    epsilon_zeta: float | None = None,
    epsilon_min_logit: float = 1e-3,
    max_iter: int = 25,
    tol: float = 1e-4,
    seed: int = 0,
    n_inner: int = 2,
    progress: bool = False,
    epsilon_grid=None,
    which_X_mu=None,
    which_X_pi=None,
    which_V_mu=None,
    which_V_pi=None,
    batch_size: int | None = None,
    subsample: int | None = None,
) -> ZINBWaVEResult:
    """Fit ZINB-WaVE to counts Y (n cells × J genes).

    ``epsilon_grid``: several values of ``epsilon`` fitted in one compiled call (vmapped; the
    other penalties as given); returns one result per value, each equal to its own fit (streamed
    or subsampled: fitted one after another).

    Args:
      Y: integer counts (dense or scipy sparse), no all-zero cell or gene.
      n_components: K, the number of unknown cell factors W (0 fits a ZINB GLM on X and V).
      X: (n, M) cell covariates; default an intercept column. V: (J, L) gene covariates;
        default an intercept column. Either may have 0 columns.
      O_mu, O_pi: (n, J) offsets of log μ and logit π (default 0).
      which_X_mu, which_X_pi, which_V_mu, which_V_pi: the columns (0-based indices) of X and V
        that the μ and the π regressions use (zinbwave's arguments of these names, 1-based
        there); default all. The unused coefficients are fixed at 0 (``_zinb.designs``), so
        every choice shares one compiled program. An all-zero column of X or V is allowed
        (its coefficients stay 0, as in zinbwave); the columns a side uses must otherwise be
        linearly independent.
      common_dispersion: one θ for every gene (zinbwave's default) instead of gene-wise θ_j
        shrunk towards their mean by ε_ζ var(ζ).
      zero_inflation: False fits the negative-binomial model (π = 0).
      epsilon...: penalties (``default_hparams``: from ε = J, ε_β = ε_α = ε/J, ε_γ = ε_W = ε/n,
        ε_ζ = ε; intercepts unpenalised on μ and ``epsilon_min_logit`` on π).
      max_iter, tol: outer iterations; stop when the relative change of PLL is below ``tol``
        (zinbwave's ``maxiter.optimize = 25`` and ``stop.epsilon.optimize = 1e-4``; within an
        iteration the dispersion is iterated until no log θ moves by more than 1e-3).
      n_inner: Fisher-scoring steps per block and outer iteration. zinbwave solves each block to
        convergence (BFGS) in every outer iteration; with one step the relative change of PLL
        falls below ``tol`` while the fit is still further from its optimum than zinbwave's
        when it stops (measured against zinbwave 1.25.2 on the same counts,
        experiments/benchmarks/zinbwave_speed.py); two steps match it at about the same time.
      progress: a progress bar over outer iterations (off when CI is set).
      batch_size: cells per block of the streamed fit (``_zinb_stream``: the same updates, the
        counts kept sparse and made dense a block at a time, so memory stays flat in the number
        of cells). Default: streamed, with blocks of about 4 million entries, when Y has more
        than 5·10⁷ entries; otherwise the whole matrix at once.
      subsample: zinbsurf (zinbwave ≥ 1.6): fit every parameter on this many random cells
        (topped up so that every gene has a count), then give every cell its own γ and W with
        the gene parameters fixed (``transform``). The result's ``subsample`` holds the cells
        fitted; its PLL is that of all cells, its ``trace`` that of the subsample's fit.

    Computes in float64 when ``jax_enable_x64`` is on, else float32.
    """
    Yn = check_counts(Y, keep_sparse=True)
    n, J = Yn.shape
    empty_cells, empty_genes = zero_rows_cols(Yn)
    if empty_cells.any() or empty_genes.any():
        raise ValueError(f"counts have {int(empty_cells.sum())} all-zero cells and {int(empty_genes.sum())} all-zero genes; "
                         "drop them first (jaxfactor.zinbwave.fit drops them from an AnnData)")
    K = check_rank(n_components, (n, J))
    Xd = np.ones((n, 1)) if X is None else check_design(X, n, "X", "cell", full_rank=False)
    Vd = np.ones((J, 1)) if V is None else check_design(V, J, "V", "gene", full_rank=False)
    which = {"which_X_mu": check_columns(which_X_mu, Xd.shape[1], "which_X_mu", "X"),
             "which_X_pi": check_columns(which_X_pi, Xd.shape[1], "which_X_pi", "X"),
             "which_V_mu": check_columns(which_V_mu, Vd.shape[1], "which_V_mu", "V"),
             "which_V_pi": check_columns(which_V_pi, Vd.shape[1], "which_V_pi", "V")}
    for key, Z, name in (("which_X_mu", Xd, "X"), ("which_X_pi", Xd, "X"), ("which_V_mu", Vd, "V"), ("which_V_pi", Vd, "V")):
        full = which[key] == tuple(range(Z.shape[1]))
        _check_side_rank(Z, which[key], name if full else f"{name}[:, {key}]")
    Om, Op = check_offset(O_mu, (n, J), "O_mu"), check_offset(O_pi, (n, J), "O_pi")
    max_iter = check_positive_int(max_iter, "max_iter")
    n_inner = check_positive_int(n_inner, "n_inner")
    tol = check_nonnegative_float(tol, "tol")
    for name, v in (("epsilon", epsilon), ("epsilon_beta", epsilon_beta), ("epsilon_gamma", epsilon_gamma),
                    ("epsilon_W", epsilon_W), ("epsilon_alpha", epsilon_alpha), ("epsilon_zeta", epsilon_zeta)):
        if v is not None:
            check_nonnegative_float(v, name)
    check_nonnegative_float(epsilon_min_logit, "epsilon_min_logit")
    grid = [epsilon] if epsilon_grid is None else [None if e is None else check_nonnegative_float(e, "epsilon")
                                                   for e in epsilon_grid]
    hp_nps = [default_hparams(Xd, Vd, epsilon=e, epsilon_beta=epsilon_beta, epsilon_gamma=epsilon_gamma,
                              epsilon_W=epsilon_W, epsilon_alpha=epsilon_alpha, epsilon_zeta=epsilon_zeta,
                              epsilon_min_logit=epsilon_min_logit) for e in grid]

    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if subsample is not None:
        subsample = check_positive_int(subsample, "subsample")
    stream = batch_size is not None or n * J > STREAM_ENTRIES
    if (stream or (subsample is not None and subsample < n)) and (Om is not None or Op is not None):
        raise ValueError("offsets O_mu / O_pi (dense cells x genes matrices) are not streamed or subsampled; "
                         "fit without batch_size and subsample")
    if (stream or (subsample is not None and subsample < n)) and epsilon_grid is not None:
        # streamed or subsampled: one fit per value, one after another (the same compiled program)
        return [fit_zinbwave(Yn, K, X=Xd, V=Vd, common_dispersion=common_dispersion, zero_inflation=zero_inflation,
                             epsilon=e, epsilon_beta=epsilon_beta, epsilon_gamma=epsilon_gamma, epsilon_W=epsilon_W,
                             epsilon_alpha=epsilon_alpha, epsilon_zeta=epsilon_zeta, epsilon_min_logit=epsilon_min_logit,
                             max_iter=max_iter, tol=tol, seed=seed, n_inner=n_inner, progress=progress,
                             which_X_mu=which_X_mu, which_X_pi=which_X_pi, which_V_mu=which_V_mu, which_V_pi=which_V_pi,
                             batch_size=batch_size, subsample=subsample) for e in grid]
    if subsample is not None and subsample < n:
        per_cell = float(J if epsilon is None else epsilon) / n  # the cell penalties of all n cells, not of the subsample
        return _fit_subsample(Yn, K, subsample, Xd, Vd, hp_nps[0], dict(
            common_dispersion=common_dispersion, zero_inflation=zero_inflation, max_iter=max_iter, tol=tol, seed=seed,
            n_inner=n_inner, progress=progress, batch_size=batch_size, epsilon=epsilon, epsilon_beta=epsilon_beta,
            epsilon_alpha=epsilon_alpha, epsilon_zeta=epsilon_zeta, epsilon_min_logit=epsilon_min_logit,
            epsilon_gamma=per_cell if epsilon_gamma is None else epsilon_gamma,
            epsilon_W=per_cell if epsilon_W is None else epsilon_W, which_X_mu=which_X_mu, which_X_pi=which_X_pi,
            which_V_mu=which_V_mu, which_V_pi=which_V_pi), which)

    dt = _dtype()
    cast = lambda a: None if a is None else jnp.asarray(a, dt)
    ones = lambda Z: Z.shape[1] > 0 and bool(np.all(Z[:, 0] == 1))
    if stream:
        return _fit_stream(Yn, K, Xd, Vd, hp_nps[0], which, cast, batch_size, zero_inflation, common_dispersion,
                           ones(Xd) and ones(Vd), n_inner, max_iter, tol, seed, progress)
    if hasattr(Yn, "toarray"):
        Yn = Yn.toarray()
    data = model_data(Yn, Xd, Vd, Om, Op, which, cast)
    alg = zinbwave_algorithm(K, bool(zero_inflation), bool(common_dispersion), intercepts=ones(Xd) and ones(Vd),
                             n_inner=n_inner)
    key = jax.random.PRNGKey(seed)
    if epsilon_grid is None:
        fits = [fit(alg, data, jax.tree_util.tree_map(cast, hp_nps[0]), key, max_iter=max_iter, tol=tol, chunk_size=1,
                    progress=progress)]
    else:  # every ε in one compiled call, vmapped (the penalties are pytree data)
        hps = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x, dt) for x in xs]), *hp_nps)
        many = fit_many(alg, data, hps, key[None], max_iter=max_iter, tol=tol, chunk_size=1)
        fits = [jax.tree_util.tree_map(lambda x: x[j], many.best) for j in range(len(grid))]
    out = [_result(res, data, hp_np, Xd, Vd, Om, Op, zero_inflation, common_dispersion, tol, max_iter, which)
           for res, hp_np in zip(fits, hp_nps)]
    return out if epsilon_grid is not None else out[0]


def model_data(Y, X, V, O_mu, O_pi, which: dict, cast) -> ZINBData:
    """``ZINBData`` with the μ side's designs in X, V and, where the π side uses other columns,
    its own in X_pi, V_pi (None otherwise: one pytree structure for the common case)."""
    cast = (lambda a, c=cast: None if a is None else c(a))
    Xm, Xp = masked(X, which["which_X_mu"]), masked(X, which["which_X_pi"])
    Vm, Vp = masked(V, which["which_V_mu"]), masked(V, which["which_V_pi"])
    same = np.array_equal(Xm, Xp) and np.array_equal(Vm, Vp)
    return ZINBData(cast(Y), cast(Xm), cast(Vm), cast(O_mu), cast(O_pi), None if same else cast(Xp), None if same else cast(Vp))


def _result(res, data, hp_np, Xd, Vd, Om, Op, zero_inflation, common_dispersion, tol, max_iter, which,
            ll: float | None = None) -> "ZINBWaVEResult":
    """The fitted state as a ``ZINBWaVEResult`` (trace as the penalised log-likelihood; ``ll``:
    the log-likelihood, computed here from ``data`` when None)."""
    n_iter = int(res.n_iter)
    trace = -np.asarray(res.trace[: n_iter + 1], np.float64)
    check_finished(trace, bool(res.converged), tol=tol, max_iter=max_iter, name="ZINB-WaVE",
                   hint="check the counts and the covariates' scale")
    st = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res.state)
    if ll is None:
        a, b = (np.asarray(v, np.float64) for v in _predictors_jit(res.state, data))
        ll = float(np.sum(np.asarray(_loglik_jit(data.Y, a, b, res.state.zeta, bool(zero_inflation)), np.float64)))
    return ZINBWaVEResult(
        W=st.W, alpha_mu=st.alpha_mu, alpha_pi=st.alpha_pi, beta_mu=st.beta_mu, beta_pi=st.beta_pi,
        gamma_mu=st.gamma_mu, gamma_pi=st.gamma_pi, zeta=st.zeta, X=Xd, V=Vd, O_mu=Om, O_pi=Op,
        penalized_log_likelihood=float(trace[-1]), log_likelihood=ll, trace=trace, n_iter=n_iter,
        converged=bool(res.converged), hparams=hp_np, zero_inflation=bool(zero_inflation),
        common_dispersion=bool(common_dispersion), **which,
    )


_predictors_jit = jax.jit(predictors)

STREAM_ENTRIES = 50_000_000  # above this many entries (n x J) the fit is streamed by default
BLOCK_ENTRIES = 4_000_000  # entries per dense block of the streamed fit
INIT_CELLS = 4000  # cells of the streamed fit's starting subsample
# Newton iterations (and rounds) of the streamed fit's dispersion step per outer iteration: the
# dispersion is the costliest step (each iteration a pass over every count), and with ζ
# warm-started from the last outer iteration 3 reach the same fit as solving it to 1e-3 each
# time (5000 x 2000 simulated, K = 10: the same PLL after 7 outer iterations, in a fraction of the time)
STREAM_DISPERSION_ITER = 3


def _blocked(Yn, Xd, Vd, which, cast, batch_size, seed):
    """``BlockedCounts`` of sparse counts, with the block sizes: (data, block_cells, block_genes)."""
    from ._zinb_stream import block_counts, covering_subsample

    n, J = Yn.shape
    Bc = batch_size or max(256, min(n, BLOCK_ENTRIES // J))
    Bg = max(8, min(J, BLOCK_ENTRIES // n))
    d = model_data(None, Xd, Vd, None, None, which, cast)
    data = block_counts(Yn, d.X, d.V, d.X_pi, d.V_pi, covering_subsample(Yn, INIT_CELLS, seed), min(Bc, n), Bg, cast)
    return data, min(Bc, n), Bg


def _fit_stream(Yn, K, Xd, Vd, hp_np, which, cast, batch_size, zero_inflation, common_dispersion, intercepts,
                n_inner, max_iter, tol, seed, progress) -> "ZINBWaVEResult":
    """The streamed fit (``_zinb_stream``) of sparse or dense counts."""
    from ._zinb_stream import zinbwave_stream_algorithm

    data, Bc, Bg = _blocked(Yn, Xd, Vd, which, cast, batch_size, seed)
    alg, loglik = zinbwave_stream_algorithm(K, bool(zero_inflation), bool(common_dispersion), intercepts=intercepts,
                                            n_inner=n_inner, block_cells=Bc, block_genes=Bg,
                                            max_dispersion_iter=STREAM_DISPERSION_ITER)
    hp = jax.tree_util.tree_map(cast, hp_np)
    res = fit(alg, data, hp, jax.random.PRNGKey(seed), max_iter=max_iter, tol=tol, chunk_size=1, progress=progress)
    ll = float(np.sum(np.asarray(loglik(res.state, data), np.float64)))
    return _result(res, None, hp_np, Xd, Vd, None, None, zero_inflation, common_dispersion, tol, max_iter, which, ll)


def _fit_subsample(Yn, K, size, Xd, Vd, hp_np, kw, which) -> "ZINBWaVEResult":
    """zinbsurf: every parameter fitted on ``size`` covering cells (the penalties of all n cells),
    then every cell's γ and W by the cell-wise block with the gene parameters fixed."""
    import dataclasses

    from ._zinb import penalty
    from ._zinb_stream import covering_subsample, zinbwave_stream_algorithm

    idx = covering_subsample(Yn, size, kw["seed"])
    part = fit_zinbwave(Yn[idx], K, X=Xd[idx], V=Vd, **kw)
    W, gm, gp = transform_counts(part, Yn, Xd, batch_size=kw["batch_size"] or 1024)
    st = part.state._replace(W=W, gamma_mu=gm, gamma_pi=gp)
    dt = _dtype()
    cast = lambda a: None if a is None else jnp.asarray(a, dt)  # noqa: E731
    data, Bc, Bg = _blocked(Yn, Xd, Vd, which, cast, kw["batch_size"], kw["seed"])
    _, loglik = zinbwave_stream_algorithm(K, bool(part.zero_inflation), bool(part.common_dispersion), block_cells=Bc,
                                          block_genes=Bg)
    st_dev = jax.tree_util.tree_map(cast, st)
    ll = float(np.sum(np.asarray(loglik(st_dev, data), np.float64)))
    pen = float(penalty(jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), st),
                        jax.tree_util.tree_map(cast, hp_np), bool(part.zero_inflation)))
    return dataclasses.replace(part, W=W, gamma_mu=gm, gamma_pi=gp, X=Xd, log_likelihood=ll,
                               penalized_log_likelihood=ll - pen, subsample=idx)


@partial(jax.jit, static_argnums=4)
def _loglik_jit(Y, a, b, zeta, zi):
    return jnp.sum(zinb_log_prob(Y, a, b, zeta[None, :], zi), axis=0)


# --------------------------------------------------------------------------------------------
# new cells


@lru_cache(maxsize=None)
def _transform_fn(zi: bool, max_iter: int):
    @jax.jit
    def run(gene: ZINBState, data: ZINBData, hp: ZINBHparams, tol):
        """γ and W of a batch of cells: a ridge start from log1p counts, then cell-wise blocks."""
        n, J = data.Y.shape
        K = gene.alpha_mu.shape[0]
        L = data.V.shape[1]
        dt = data.Y.dtype
        o_mu = 0.0 if data.O_mu is None else data.O_mu
        R = jnp.log1p(data.Y) - data.X @ gene.beta_mu - o_mu
        B = jnp.concatenate([data.V, gene.alpha_mu.T], axis=1)  # (J, L + K)
        pen = jnp.concatenate([hp.eps_gamma_mu, jnp.full((K,), hp.eps_W, dt)])
        coef = jnp.linalg.solve(B.T @ B + jnp.diag(pen) + 1e-8 * jnp.eye(L + K, dtype=dt), B.T @ R.T)  # (L + K, n)
        st = ZINBState(gene.beta_mu, gene.beta_pi, coef[:L], jnp.zeros((L, n), dt), coef[L:].T, gene.alpha_mu,
                       gene.alpha_pi, gene.zeta)

        def obj(st):
            return penalized_log_likelihood(st, data, hp, zi)

        def cond(c):
            k, _, f_prev, f = c
            return (k < max_iter) & (jnp.abs(f - f_prev) > tol * jnp.abs(f_prev))

        def body(c):
            k, st, _, f = c
            st = _cell_block(st, data, hp, zi, 1, 12)
            return k + 1, st, f, obj(st)

        f0 = obj(st)
        k, st, _, _ = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), st, f0 - 1.0 - jnp.abs(f0), f0))
        return st.W, st.gamma_mu, st.gamma_pi, k

    return run


def transform_counts(result: ZINBWaVEResult, Y, X=None, *, O_mu=None, O_pi=None, batch_size: int = 1024,
                     max_iter: int = 100, tol: float = 1e-8):
    """(W, γ_μ, γ_π) for new cells (see ``ZINBWaVEResult.transform``); γ are (L, n_new). Sparse
    counts are made dense one batch at a time."""
    Yn = check_counts(Y, keep_sparse=True)
    J = result.V.shape[0]
    if Yn.shape[1] != J:
        raise ValueError(f"counts have {Yn.shape[1]} genes but the model was fitted on {J}; pass counts of the same genes, in the same order")
    n = Yn.shape[0]
    M = result.X.shape[1]
    if X is None:
        if not (M == 1 and np.all(result.X == 1)):
            raise ValueError("the model has cell covariates beyond an intercept; pass X for the new cells")
        X = np.ones((n, 1))
    Xd = check_design(X, n, "X", "cell", full_rank=False)
    if Xd.shape != (n, M):
        raise ValueError(f"X must have shape {(n, M)}, got {Xd.shape}")
    Om, Op = check_offset(O_mu, Yn.shape, "O_mu"), check_offset(O_pi, Yn.shape, "O_pi")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_nonnegative_float(tol, "tol")
    dt = _dtype()
    cast = lambda a: jnp.asarray(a, dt)
    gene = jax.tree_util.tree_map(cast, result.state._replace(gamma_mu=np.zeros((result.V.shape[1], 0)),
                                                              gamma_pi=np.zeros((result.V.shape[1], 0)),
                                                              W=np.zeros((0, result.n_components))))
    hp = jax.tree_util.tree_map(cast, result.hparams)
    run = _transform_fn(result.zero_inflation, max_iter)
    B = min(batch_size, n)
    outs = []
    for start in range(0, n, B):
        idx = np.minimum(np.arange(start, start + B), n - 1)  # pad the last batch with its last cell
        Yb = Yn[idx].toarray() if hasattr(Yn, "toarray") else Yn[idx]
        data = model_data(Yb, Xd[idx], result.V, None if Om is None else Om[idx], None if Op is None else Op[idx],
                          result.which, cast)
        W, gm, gp, _ = run(gene, data, hp, jnp.asarray(tol, dt))
        keep = min(B, n - start)
        outs.append((np.asarray(W, np.float64)[:keep], np.asarray(gm, np.float64)[:, :keep], np.asarray(gp, np.float64)[:, :keep]))
    return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs], axis=1),
            np.concatenate([o[2] for o in outs], axis=1))
