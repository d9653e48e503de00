"""``jaxfactor.nmf.fit``: NMF in scikit-learn's vocabulary on top of the algorithm triples."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .._base import ConvergenceWarning  # noqa: F401  (re-exported)
from .._cells import check_cell_mesh, fit_cells
from .._fit import check_finished, completed_trace, fit_restarts
from .._protocol import renamed_arguments
from .._validate import as_matrix, check_n_components, check_nonnegative_float, check_positive_int
from ._nmf import FACTORIES, METHODS, NMF_CELLS, NMFHparams, NMFState
from ._nmf_init import INITS


@dataclass(frozen=True)
class NMFResult:
    """A fitted factorisation ``X ≈ W @ H``.

    Attributes:
      W: (n_samples, n_components) sample loadings.
      H: (n_components, n_features) components (scikit-learn's ``components_``).
      objective: final objective (½‖X − WH‖²_F + penalties, or the KL divergence + penalties).
      n_iter: iterations run.
      converged: whether the relative change fell below ``tol``.
      trace: objective at iteration 0 and after every ``chunk_size`` iterations.
      trace_iter: iteration number of each trace entry.
      method: ``"hals"``, ``"mu"``, ``"pgd"`` or ``"kl"``.
      restart_objectives: final objective of every restart (the best is kept).
    """

    W: np.ndarray
    H: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    trace: np.ndarray
    trace_iter: np.ndarray
    method: str
    restart_objectives: np.ndarray

    @property
    def components_(self) -> np.ndarray:
        return self.H

    @property
    def reconstruction_err_(self) -> float:
        """‖X − WH‖_F as scikit-learn reports it (Frobenius methods without penalties)."""
        return float(np.sqrt(2.0 * self.objective))


def _check_custom(init, shape, k, dtype):
    if len(init) != 2:
        raise ValueError("a custom init must be a pair (W0, H0)")
    n, p = shape
    W0 = as_matrix(init[0], "W0")
    H0 = as_matrix(init[1], "H0")
    if W0.shape != (n, k) or H0.shape != (k, p):
        raise ValueError(
            f"custom init shapes W0 {W0.shape}, H0 {H0.shape} do not match X {shape} and n_components={k}; "
            f"expected W0 {(n, k)} and H0 {(k, p)}"
        )
    for name, M in (("W0", W0), ("H0", H0)):
        if not M.any():  # multiplicative updates keep zeros; for the others it is a degenerate start
            raise ValueError(f"the custom init {name} is all zeros (multiplicative updates cannot leave it, the other "
                             "methods start from a degenerate point): give positive entries or use init='nndsvda'")
    return NMFState(jnp.asarray(W0, dtype), jnp.asarray(H0, dtype))


@renamed_arguments(n_restarts="n_init")
def fit(
    X,
    n_components: int,
    *,
    method: str = "hals",
    init="nndsvda",
    max_iter: int = 200,
    tol: float = 1e-4,
    n_init: int = 1,
    seed: int = 0,
    l1_W: float = 0.0,
    l2_W: float = 0.0,
    l1_H: float = 0.0,
    l2_H: float = 0.0,
    chunk_size: int = 10,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> NMFResult:
    """Factorise a non-negative matrix ``X`` (n_samples × n_features) as ``W @ H``.

    Args:
      X: non-negative array-like (dense or scipy sparse; densified).
      n_components: rank k, ``1 <= k <= min(X.shape)``.
      method: ``"hals"`` (the default: accelerated hierarchical alternating least squares, exact
        coordinate descent as scikit-learn's ``solver="cd"``, Frobenius), ``"mu"`` (Lee–Seung
        multiplicative updates, Frobenius), ``"pgd"`` (alternating projected gradient with
        Lipschitz steps, Frobenius) or ``"kl"`` (KL multiplicative updates).
      init: ``"nndsvda"``, ``"nndsvd"``, ``"nndsvdar"``, ``"random"``, or a pair ``(W0, H0)``.
      max_iter, tol: stop after ``max_iter`` iterations or when the objective's relative change
        over ``chunk_size`` iterations falls below ``tol`` (``tol=0``: always ``max_iter``).
      n_init: independent inits (seeds ``seed`` split; ``n_restarts=`` is deprecated), vmapped in
        one compiled call; the one with the lowest final objective is returned.
      seed: PRNG seed (random init; the randomized SVD behind NNDSVD).
      l1_W, l2_W, l1_H, l2_H: penalty weights (see ``NMFHparams``).
      progress: show a progress bar over iterations (single restart; off when CI is set).
      mesh: a cell mesh (``jaxfactor.cell_mesh()``, 1-D with axis ``"cells"``): the rows of X
        and W are split over its devices and the sums over cells (WᵀW, WᵀX, the objective) are
        ``psum``'d, for a single fit too large for one device. The init is computed on the
        unpadded X (on one device), so the result equals the unsharded fit within float
        tolerance; restarts run one after another.

    The computation runs in float64 when ``jax_enable_x64`` is on and X is float64, else float32.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_cell_mesh(mesh)
    Xn = as_matrix(X, "X")
    k = check_n_components(n_components, Xn.shape)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_restarts = check_positive_int(n_init, "n_init")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    tol = check_nonnegative_float(tol, "tol")
    hp = NMFHparams(*(check_nonnegative_float(v, n) for v, n in ((l1_W, "l1_W"), (l2_W, "l2_W"), (l1_H, "l1_H"), (l2_H, "l2_H"))))
    dtype = jnp.float64 if (jax.config.jax_enable_x64 and Xn.dtype == np.float64) else jnp.float32
    Xj = jnp.asarray(Xn, dtype)

    custom = not isinstance(init, str)
    if custom:
        state0 = _check_custom(init, Xn.shape, k, dtype)
        if n_restarts > 1:
            raise ValueError("n_init > 1 repeats the same fit from a custom (W0, H0); use n_init=1 or a random init")
        alg_init = "random"  # unused: the fit starts from state0
    else:
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)} or pass (W0, H0)")
        state0, alg_init = None, init
    if method == "kl" and not custom and init == "nndsvd":
        warnings.warn("init='nndsvd' leaves exact zeros that multiplicative updates cannot move; prefer 'nndsvda'", stacklevel=2)

    alg = FACTORIES[method](k, alg_init)
    key = jax.random.PRNGKey(seed)
    if mesh is None:
        res, restart_obj = fit_restarts(alg, Xj, hp, key, n_restarts, max_iter=max_iter, tol=tol,
                                        chunk_size=chunk_size, state0=state0, progress=progress)
    else:  # the same seeds as fit_restarts: the key itself, or its split for several restarts
        keys = key[None] if n_restarts == 1 else jax.random.split(key, n_restarts)
        many = fit_cells(FACTORIES[method](k, alg_init, mesh), Xj, hp, keys, mesh=mesh, layout=NMF_CELLS, init=alg.init,
                         state0=state0, max_iter=max_iter, tol=tol, chunk_size=chunk_size, progress=progress)
        res, restart_obj = jax.tree_util.tree_map(lambda x: x[0], many.best), np.asarray(many.objective[0])
    trace, trace_iter = completed_trace(res, chunk_size)
    check_finished(trace, bool(res.converged), tol=tol, max_iter=max_iter, name="NMF",
                   hint="check the scale of X and the penalties")
    return NMFResult(
        W=np.asarray(res.state.W),
        H=np.asarray(res.state.H),
        objective=float(trace[-1]),
        n_iter=int(res.n_iter),
        converged=bool(res.converged),
        trace=trace,
        trace_iter=trace_iter,
        method=method,
        restart_objectives=restart_obj,
    )
