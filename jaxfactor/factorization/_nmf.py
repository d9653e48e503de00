"""Non-negative matrix factorisation X ≈ WH as ``Algorithm`` triples.

Objective (Frobenius, with optional elastic-net penalties on each factor)::

    f(W, H) = ½‖X − WH‖²_F + l1_W Σ W + ½ l2_W ‖W‖²_F + l1_H Σ H + ½ l2_H ‖H‖²_F

and, for ``nmf_kl``, the generalised Kullback–Leibler divergence
``D(X‖WH) = Σ X log(X / WH) − X + WH`` in place of the squared error.

Update rules (each step updates W then H, the order scikit-learn uses):

- ``nmf_hals`` (the default) — hierarchical alternating least squares, exact coordinate descent
  over the columns of W and the rows of H (Cichocki & Phan, IEICE Trans. Fundamentals
  E92-A(3), 2009; scikit-learn's ``solver="cd"``), each factor's sweep repeated on the same Gram
  matrices while it still moves (Gillis & Glineur, Neural Computation 24(4), 2012); every
  update is an exact block minimisation, so f never increases. See :mod:`._hals`.
- ``nmf_mu`` — Lee & Seung, "Algorithms for non-negative matrix factorization", NIPS 13
  (2001), Theorem 1: ``W ← W ∘ XHᵀ / (WHHᵀ + l1_W + l2_W W)``,
  ``H ← H ∘ WᵀX / (WᵀWH + l1_H + l2_H H)``; each is a majorise–minimise step, so f never
  increases. Denominators are floored at float32 epsilon.
- ``nmf_pgd`` — alternating projected gradient: ``W ← [W − ∇_W f / L_W]₊`` with
  ``L_W = λ_max(HHᵀ) + l2_W`` the Lipschitz constant of ∇_W f (and likewise for H with
  ``L_H = λ_max(WᵀW) + l2_H``). A ``1/L`` step on an L-smooth convex block followed by a
  projection onto the non-negative orthant cannot increase f (descent lemma), so f is monotone.
- ``nmf_kl`` — Lee & Seung (2001), Theorem 2: ``H ← H ∘ Wᵀ(X / WH) / (Wᵀ1 + l1_H + l2_H H)``
  and symmetrically for W; monotone for the KL objective.

Cell sharding (``mesh=``, a :func:`jaxfactor.cell_mesh`): the rows of X and W (cells) are split
over devices, H is replicated. Every W update only reads its own rows of X and W (and the
replicated H, HHᵀ); every H update needs sums over all cells — ``WᵀW``, ``WᵀX``,
``Wᵀ(X / WH)``, ``Wᵀ1`` — which each device forms on its rows and ``psum``s (``Cells.sum``), so
the k × k and k × p totals, the Lipschitz constant ``λ_max(WᵀW)`` and the new H are identical
on every device. The objective is the ``psum`` of per-shard sums plus the H penalties. Padding
rows (n not a multiple of the device count) are zero rows of X and W: they stay exactly zero
under every update (MU and KL multiply a zero; PGD's and HALS's gradient there is ``l1_W >= 0``,
so the projection returns 0) and add 0 to every sum, including the KL objective, whose linear term
uses the unfloored ``WH`` (the floor only guards the logarithm).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._base import Algorithm
from .._cells import REPL, ROWS, CellLayout, Cells, all_cells, sharded_algorithm
from .._registry import register_example
from ..numerics import eps, safe_div
from . import _hals
from ._nmf_init import INITS, initialize

METHODS = ("hals", "mu", "pgd", "kl")


class NMFState(NamedTuple):
    W: jax.Array  # (n_samples, k)
    H: jax.Array  # (k, n_features)


#: X and W are split by rows (cells) over a cell mesh; H is replicated.
NMF_CELLS = CellLayout(data=ROWS, state=NMFState(ROWS, REPL))


class NMFHparams(NamedTuple):
    """Penalty weights (swept as data; all 0 gives plain NMF).

    Unlike scikit-learn's ``alpha_W``/``l1_ratio``, these weights enter the objective directly
    (no rescaling by the number of samples or features).
    """

    l1_W: float = 0.0
    l2_W: float = 0.0
    l1_H: float = 0.0
    l2_H: float = 0.0


def _penalty_W(W, hp: NMFHparams):
    return hp.l1_W * jnp.sum(W) + 0.5 * hp.l2_W * jnp.sum(W * W)


def _penalty_H(H, hp: NMFHparams):
    return hp.l1_H * jnp.sum(H) + 0.5 * hp.l2_H * jnp.sum(H * H)


def _here(X, cells: Cells | None) -> Cells:
    """Where a step runs: ``cells`` inside ``sharded_algorithm`` (this device's rows of X and W,
    padding masked, sums psum'd), else every row of X on one device."""
    return all_cells(X.shape[0]) if cells is None else cells


def frobenius_objective(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None):
    """½‖X − WH‖²_F plus penalties (``cells``: X and W are this device's rows; psum'd)."""
    c = _here(X, cells)
    R = c.keep(X - state.W @ state.H)
    return c.sum(0.5 * jnp.sum(R * R) + _penalty_W(state.W, hp)) + _penalty_H(state.H, hp)


def kl_objective(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None):
    """Generalised KL divergence D(X‖WH) (with 0 log 0 = 0) plus penalties.

    ``WH`` is floored at epsilon inside the logarithm only (where X > 0); the linear term is
    the exact Σ WH. ``cells``: X and W are this device's rows; the sum is psum'd.
    """
    WH = state.W @ state.H
    xlogx = jnp.where(X > 0, X * jnp.log(jnp.where(X > 0, X, 1.0) / jnp.maximum(WH, eps(X.dtype))), 0.0)
    c = _here(X, cells)
    return c.sum(jnp.sum(c.keep(xlogx - X + WH)) + _penalty_W(state.W, hp)) + _penalty_H(state.H, hp)


def _make_init(n_components: int, init: str):
    if init not in INITS:
        raise ValueError(f"unknown NMF init {init!r}; choose one of {', '.join(INITS)} or pass (W0, H0)")

    def init_fn(key, X, hp):
        del hp
        return NMFState(*initialize(key, X, n_components, init))

    return init_fn


# Each step takes ``cells``: None on one device; inside ``shard_map`` over a cell mesh X and W hold
# this device's rows, ``c.sum`` psums the sums over cells and ``c.keep`` masks the padded rows.


def _mu_step(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None) -> NMFState:
    c = _here(X, cells)
    W, H = state
    HHt = H @ H.T
    W = c.keep(W * safe_div(X @ H.T, W @ HHt + hp.l1_W + hp.l2_W * W))
    WtW = c.sum(W.T @ W)
    H = H * safe_div(c.sum(W.T @ X), WtW @ H + hp.l1_H + hp.l2_H * H)
    return NMFState(W, H)


def _lipschitz(G):
    """Largest eigenvalue of the small symmetric PSD Gram matrix G (k × k)."""
    return jnp.linalg.eigvalsh(G)[-1]


def _pgd_step(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None) -> NMFState:
    c = _here(X, cells)
    W, H = state
    floor = eps(X.dtype)
    HHt = H @ H.T
    grad_W = W @ HHt - X @ H.T + hp.l1_W + hp.l2_W * W
    W = c.keep(jnp.maximum(W - grad_W / jnp.maximum(_lipschitz(HHt) + hp.l2_W, floor), 0.0))
    WtW = c.sum(W.T @ W)
    grad_H = WtW @ H - c.sum(W.T @ X) + hp.l1_H + hp.l2_H * H
    H = jnp.maximum(H - grad_H / jnp.maximum(_lipschitz(WtW) + hp.l2_H, floor), 0.0)
    return NMFState(W, H)


def _hals_step(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None, alpha: float = 0.0,
               delta: float = 0.0) -> NMFState:
    """W's columns then H's rows by (accelerated) HALS; ``alpha = 0``: one sweep each (scikit-learn's cd).

    The sweep bounds use the real number of cells (``c.n``), so the sharded fit sweeps as the
    unsharded one does; the W sweeps' stopping rule sums its movement over every shard.
    """
    c = _here(X, cells)
    W, H = state
    k, (n, p) = H.shape[0], (c.n, X.shape[1])
    # HXᵀ as (XHᵀ)ᵀ: XLA:CPU's kernel for X @ Hᵀ is the faster of the two (~20 % at 20000 × 2000, k = 20)
    Wt = _hals.update(W.T, H @ H.T, (X @ H.T).T, hp.l1_W, hp.l2_W, sweeps=_hals.max_sweeps(alpha, n, p, k), delta=delta,
                      total=c.sum)
    W = c.keep(Wt.T)
    WtW, WtX = c.sum((W.T @ W, W.T @ X))
    H = _hals.update(H, WtW, WtX, hp.l1_H, hp.l2_H, sweeps=_hals.max_sweeps(alpha, p, n, k), delta=delta)
    return NMFState(W, H)


def _kl_step(state: NMFState, X, hp: NMFHparams, *, cells: Cells | None = None) -> NMFState:
    c = _here(X, cells)
    W, H = state
    floor = eps(X.dtype)
    ratio = X / jnp.maximum(W @ H, floor)
    W = c.keep(W * safe_div(ratio @ H.T, jnp.sum(H, axis=1)[None, :] + hp.l1_W + hp.l2_W * W))
    ratio = X / jnp.maximum(W @ H, floor)
    num, colsum = c.sum((W.T @ ratio, jnp.sum(W, axis=0)))
    H = H * safe_div(num, colsum[:, None] + hp.l1_H + hp.l2_H * H)
    return NMFState(W, H)


#: Gillis & Glineur's acceleration of HALS: at most 1 + ⌊α ρ⌋ sweeps per factor update, stopping
#: once a sweep moves the factor by at most δ times the first one did (``nmf_hals``).
HALS_ALPHA, HALS_DELTA = 0.5, 0.1


@lru_cache(maxsize=None)
def nmf_hals(n_components: int, init: str = "nndsvda", mesh: jax.sharding.Mesh | None = None, *,
             alpha: float = HALS_ALPHA, delta: float = HALS_DELTA) -> Algorithm:
    """Frobenius NMF by accelerated HALS (exact coordinate descent; monotone). Cached per arguments.

    ``alpha``, ``delta``: Gillis & Glineur's inner-sweep rule (module :mod:`._hals`); ``alpha=0``
    sweeps each factor once per step, scikit-learn's ``NMF(solver="cd", shuffle=False)`` update
    for update. ``mesh``: as ``nmf_mu``.
    """
    step = partial(_hals_step, alpha=float(alpha), delta=float(delta))
    return sharded_algorithm(_make_init(n_components, init), step, frobenius_objective, monotone=True,
                             layout=NMF_CELLS, mesh=mesh)


@lru_cache(maxsize=None)
def nmf_mu(n_components: int, init: str = "nndsvda", mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Frobenius NMF by Lee–Seung multiplicative updates (monotone). Cached per arguments.

    ``mesh``: a cell mesh (:func:`jaxfactor.cell_mesh`): step and objective run on row shards of
    X and W (the data a ``CellData``: X padded to a multiple of the mesh size and split by rows, the
    padded rows masked; :func:`jaxfactor._cells.place_cells`; see the module docstring). ``jaxfactor.nmf.fit(mesh=)``
    does the padding, placement and the init on the unpadded data for you.
    """
    return sharded_algorithm(_make_init(n_components, init), _mu_step, frobenius_objective, monotone=True,
                             layout=NMF_CELLS, mesh=mesh)


@lru_cache(maxsize=None)
def nmf_pgd(n_components: int, init: str = "nndsvda", mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Frobenius NMF by alternating projected gradient with 1/L steps (monotone). ``mesh``: as ``nmf_mu``."""
    return sharded_algorithm(_make_init(n_components, init), _pgd_step, frobenius_objective, monotone=True,
                             layout=NMF_CELLS, mesh=mesh)


@lru_cache(maxsize=None)
def nmf_kl(n_components: int, init: str = "nndsvda", mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """KL-divergence NMF by Lee–Seung multiplicative updates (monotone). ``mesh``: as ``nmf_mu``."""
    return sharded_algorithm(_make_init(n_components, init), _kl_step, kl_objective, monotone=True,
                             layout=NMF_CELLS, mesh=mesh)


FACTORIES = {"hals": nmf_hals, "mu": nmf_mu, "pgd": nmf_pgd, "kl": nmf_kl}


def _example(factory, init="random"):
    def make():
        from ..data import simulate_nmf

        sim = simulate_nmf(n_samples=30, n_features=20, n_components=3, noise=0.05, seed=0)
        return factory(3, init), jnp.asarray(sim.X), NMFHparams(l2_H=0.01)

    return make


register_example("nmf_hals", _example(nmf_hals, "nndsvd"))
register_example("nmf_mu", _example(nmf_mu))
register_example("nmf_pgd", _example(nmf_pgd, "nndsvda"))
register_example("nmf_kl", _example(nmf_kl, "nndsvdar"))
