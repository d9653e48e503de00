"""Weighted NMF with box constraints: M ≈ C Vᵀ, C ∈ [0,1]^{n×k}, V ∈ [0,1]^{p×k}.

Objective (CCLONE's loss; Marot-Lassauzaie et al., Bioinformatics 2024, Methods)::

    L(C, V) = Σ_ij W_ij (M_ij − c_i · v_j)²  +  l2_C ‖C‖²_F + l2_V ‖V‖²_F

where W ≥ 0 are certainty weights (0 = unobserved). ``data.row_mask`` (n,) and
``data.col_mask`` (p,) multiply the weights, so filtering cells/variants and bootstrapping
variants change numbers, not shapes: a whole grid of filters × bootstraps shares one compiled
program.

Updates (each ``step`` updates every row of C, then every row of V — CCLONE's alternation):

- ``wnmf_bcd`` — exact block minimisation. With V fixed, L separates over cells into k-dim box
  QPs ``min_{c ∈ [0,1]^k} cᵀQ_i c − 2 b_iᵀc`` with ``Q_i = Σ_j W_ij v_j v_jᵀ + l2_C I`` and
  ``b_i = Σ_j W_ij M_ij v_j`` — the problem CCLONE hands to L-BFGS-B row by row. We solve them
  all at once by ``inner_sweeps`` sweeps of exact coordinate minimisation with clipping
  (``c_a ← clip((b_a − Σ_{b≠a} Q_ab c_b) / Q_aa, 0, 1)``), which never increases the objective
  and converges to the box-QP minimiser (Luo & Tseng, J. Optim. Theory Appl. 72, 1992). For
  k ≤ 10 a sweep costs O(n k²) after the O(n p k²) Gram tensors. Monotone.
- ``wnmf_mu`` — weighted multiplicative updates (Lee & Seung 2001 with weights; e.g. Mao &
  Saul / Blondel et al. 2008) followed by clipping at 1:
  ``C ← min(1, C ∘ ((W∘M)V) / ((W∘CVᵀ)V + l2_C C))``. Cheap, but known to stall where
  coverage is sparse; kept for comparison. The clip makes it not provably monotone.

Cell sharding (``mesh=``, a :func:`jaxfactor.cell_mesh`): M, W, ``row_mask`` and C are split by
rows (cells) over devices; V and ``col_mask`` are replicated. The C update of a cell reads only
its own row (its QP inputs ``Q_i``, ``b_i`` are sums over variants); the V update needs the sums
over cells ``Σ_i W_ij r_i c_i c_iᵀ`` and ``Σ_i r_i W_ij M_ij c_i`` (or, for ``wnmf_mu``,
``(W∘M)ᵀC`` and ``(W∘CVᵀ)ᵀC``), formed per device and ``psum``'d, so every device solves the same
V. The loss is the ``psum`` of per-shard sums plus ``l2_V ‖V‖²``. Padding rows have
``row_mask = 0`` and ``M = W = 0`` and start at C = 0, which both updates keep.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._base import Algorithm
from .._cells import REPL, ROWS, CellLayout, Cells, all_cells, sharded_algorithm
from .._registry import register_example
from ..numerics import safe_div


class WNMFData(NamedTuple):
    M: jax.Array  # (n, p) targets in [0, 1]
    W: jax.Array  # (n, p) weights >= 0
    row_mask: jax.Array  # (n,) 1 = cell used
    col_mask: jax.Array  # (p,) 1 = variant used


class WNMFState(NamedTuple):
    C: jax.Array  # (n, k)
    V: jax.Array  # (p, k)


#: M, W, row_mask and C are split by rows (cells) over a cell mesh; col_mask and V are replicated.
WNMF_CELLS = CellLayout(data=WNMFData(ROWS, ROWS, ROWS, REPL), state=WNMFState(ROWS, REPL))


class WNMFHparams(NamedTuple):
    l2_C: float = 0.0
    l2_V: float = 0.0


def wnmf_data(M, W, row_mask=None, col_mask=None) -> WNMFData:
    M = jnp.asarray(M)
    W = jnp.asarray(W, M.dtype)
    n, p = M.shape
    row_mask = jnp.ones((n,), M.dtype) if row_mask is None else jnp.asarray(row_mask, M.dtype)
    col_mask = jnp.ones((p,), M.dtype) if col_mask is None else jnp.asarray(col_mask, M.dtype)
    return WNMFData(M, W, row_mask, col_mask)


def effective_weights(data: WNMFData):
    return data.W * data.row_mask[:, None] * data.col_mask[None, :]


def _here(data: WNMFData, cells: Cells | None) -> Cells:
    """``cells`` inside ``sharded_algorithm`` (this device's rows, padding masked, sums psum'd),
    else every row on one device."""
    return all_cells(data.M.shape[0]) if cells is None else cells


def weighted_loss(state: WNMFState, data: WNMFData, hp: WNMFHparams, *, cells: Cells | None = None):
    """Σ W∘(M − CVᵀ)² over used cells and variants, plus the ridge terms (``cells``: the
    per-cell sums are over this device's rows and psum'd, padded rows masked)."""
    c = _here(data, cells)
    R = data.M - state.C @ state.V.T
    return (
        c.sum(jnp.sum(c.keep(effective_weights(data) * R * R)) + hp.l2_C * jnp.sum(c.keep(state.C)**2))
        + hp.l2_V * jnp.sum(state.V**2)
    )


def box_qp_rows(Q, b, x, sweeps: int):
    """Minimise xᵀQx − 2bᵀx over x ∈ [0,1]^k for a batch of rows by exact coordinate descent.

    Rows run along the LAST axis: Q: (k, k, r) PSD, b: (k, r), x: (k, r) start. A coordinate
    with Q_aa = 0 (no information) keeps its value. Each coordinate is a contiguous (r,) vector
    and the sweeps are unrolled, so XLA fuses the whole solve into one elementwise pass.
    """
    k = x.shape[0]
    diag = [jnp.where(Q[a, a] > 0, Q[a, a], 1.0) for a in range(k)]
    informed = [Q[a, a] > 0 for a in range(k)]
    xs = [x[a] for a in range(k)]
    for _ in range(sweeps):
        for a in range(k):
            r = b[a]
            for c in range(k):
                if c != a:
                    r = r - Q[a, c] * xs[c]
            xs[a] = jnp.where(informed[a], jnp.clip(r / diag[a], 0.0, 1.0), xs[a])
    return jnp.stack(xs)


def gram_cols(Wt, V, v_weight):
    """Q[:, :, i] = Σ_j W_ij ω_j v_j v_jᵀ for every row i of W (given as Wᵀ, p × n): one matmul."""
    p, k = V.shape
    VV = (v_weight[:, None, None] * V[:, :, None] * V[:, None, :]).reshape(p, k * k)
    return (VV.T @ Wt).reshape(k, k, -1)


def _bcd_step(sweeps):
    def step(state: WNMFState, data: WNMFData, hp: WNMFHparams, *, cells: Cells | None = None) -> WNMFState:
        # Rows of the factor being solved run along the last axis (contiguous per coordinate).
        # The masks are folded into the small factor-side terms, so the (n × p) matrices stay
        # shared across a vmapped batch of masks (bootstraps, filters) and are never copied.
        C, V = state
        k = C.shape[1]
        ridge = jnp.eye(k, dtype=C.dtype)[:, :, None]
        rm, cm = data.row_mask, data.col_mask
        WM = data.W * data.M
        Q = gram_cols(data.W.T, V, cm) + hp.l2_C * ridge
        c = _here(data, cells)
        C = c.keep(box_qp_rows(Q, (cm[:, None] * V).T @ WM.T, C.T, sweeps).T)
        Q, b = c.sum((gram_cols(data.W, C, rm), (rm[:, None] * C).T @ WM))  # sums over cells
        V = box_qp_rows(cm * Q + hp.l2_V * ridge, cm * b, V.T, sweeps).T
        return WNMFState(C, V)

    return step


def _mu_step(state: WNMFState, data: WNMFData, hp: WNMFHparams, *, cells: Cells | None = None) -> WNMFState:
    c = _here(data, cells)
    Weff = effective_weights(data)
    WM = Weff * data.M
    C, V = state
    C = c.keep(jnp.minimum(1.0, C * safe_div(WM @ V, (Weff * (C @ V.T)) @ V + hp.l2_C * C)))
    num, den = c.sum((WM.T @ C, (Weff * (C @ V.T)).T @ C))  # sums over cells
    V = jnp.minimum(1.0, V * safe_div(num, den + hp.l2_V * V))
    return WNMFState(C, V)


def _init(n_components: int):
    def init(key, data: WNMFData, hp):
        del hp
        n, p = data.M.shape
        kc, kv = jax.random.split(key)
        dt = data.M.dtype
        return WNMFState(jax.random.uniform(kc, (n, n_components), dt), jax.random.uniform(kv, (p, n_components), dt))

    return init


@lru_cache(maxsize=None)
def wnmf_bcd(n_components: int, inner_sweeps: int = 2, mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Box-constrained weighted NMF by exact per-row block minimisation (monotone).

    ``mesh``: a cell mesh (:func:`jaxfactor.cell_mesh`): step and loss run on row shards (see
    the module docstring); :func:`fit_wnmf` pads, places and initialises for you.
    """
    return sharded_algorithm(_init(n_components), _bcd_step(inner_sweeps), weighted_loss, monotone=True,
                             layout=WNMF_CELLS, mesh=mesh)


@lru_cache(maxsize=None)
def wnmf_mu(n_components: int, mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Box-constrained weighted NMF by weighted multiplicative updates with clipping. ``mesh``: as ``wnmf_bcd``."""
    return sharded_algorithm(_init(n_components), _mu_step, weighted_loss, monotone=False, layout=WNMF_CELLS, mesh=mesh)


WNMF_METHODS = {"bcd": wnmf_bcd, "mu": wnmf_mu}


def fit_wnmf(data: WNMFData, n_components: int, hp: WNMFHparams, key: jax.Array, *, method: str = "bcd",
             inner_sweeps: int = 2, max_iter: int = 200, tol: float = 1e-4, chunk_size: int = 10,
             state0: WNMFState | None = None, mesh: jax.sharding.Mesh | None = None):
    """One weighted-NMF fit (``jaxfactor.fit`` of ``wnmf_bcd`` / ``wnmf_mu``), optionally with
    its cells sharded over ``mesh`` (:func:`jaxfactor.cell_mesh`).

    With a mesh the start state is drawn on the unpadded data (the one-device fit's start), the
    rows are padded to a multiple of the mesh size (``row_mask = 0``) and split over devices; the
    returned ``FitResult`` has the unpadded C. Equal to the one-device fit within float tolerance.
    """
    from .._cells import check_cell_mesh, fit_cells
    from .._fit import fit

    if method not in WNMF_METHODS:
        raise ValueError(f"unknown weighted NMF method {method!r}; choose one of {', '.join(WNMF_METHODS)}")
    check_cell_mesh(mesh)
    make = (lambda m: wnmf_bcd(n_components, inner_sweeps, m)) if method == "bcd" else (lambda m: wnmf_mu(n_components, m))
    kw = dict(max_iter=max_iter, tol=tol, chunk_size=chunk_size, state0=state0)
    if mesh is None:
        return fit(make(None), data, hp, key, **kw)
    out = fit_cells(make(mesh), data, hp, jnp.asarray(key)[None], mesh=mesh, layout=WNMF_CELLS, init=make(None).init, **kw)
    return jax.tree_util.tree_map(lambda x: x[0], out.best)


def _example(factory):
    def make():
        import numpy as np

        rng = np.random.default_rng(0)
        C = (rng.random((30, 2)) > 0.5).astype(np.float32)
        V = (rng.random((12, 2)) > 0.5).astype(np.float32)
        M = np.clip(C @ V.T, 0, 1)
        W = (rng.random(M.shape) > 0.4).astype(np.float32)
        return factory(2), wnmf_data(M, W, col_mask=(np.arange(12) != 3)), WNMFHparams(l2_C=0.01)

    return make


register_example("wnmf_bcd", _example(wnmf_bcd))
register_example("wnmf_mu", _example(wnmf_mu))
