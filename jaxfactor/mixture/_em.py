"""EM as alternating maximisation, on the algorithm contract.

Neal & Hinton ("A view of the EM algorithm that justifies incremental, sparse, and other
variants", 1998) write EM as coordinate ascent on

    G(Q, θ) = Σ_i Σ_y Q_iy log P_θ(x_i, y) − Σ_i Σ_y Q_iy log Q_iy,

with rows of Q on the simplex: the E-step Q ← argmax_Q G(Q, θ) gives the posterior
responsibilities and makes G(Q, θ) = L(θ); the M-step θ ← argmax_θ G(Q, θ) can only raise G, so
the log-likelihood L never decreases. Mean-field variational Bayes is the same alternation on
the ELBO with Q ranging over factorised posteriors.

An ``EMModel`` is four pure functions; ``em_algorithm`` turns it into an ``Algorithm`` whose state
is the parameter pytree θ, whose ``step`` is one E-step followed by one M-step, and whose
``objective`` is the negative log-likelihood (or negative ELBO), so the shared ``fit`` loop, its
relative tolerance, traces, restarts (``fit_many``) and the conformance suite apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._base import Algorithm
from .._cells import CELLS, REPL, ROWS, cell_sum, check_cell_mesh, over_cells, pad_rows, padded_size, place_rows
from .._fit import _place


class EMModel(NamedTuple):
    init: Callable  # (key, data, hp) -> params
    e_step: Callable  # (params, data, hp) -> posterior (e.g. responsibilities)
    m_step: Callable  # (posterior, data, hp) -> params
    log_likelihood: Callable  # (params, data, hp) -> scalar, higher is better (total over samples)


def em_algorithm(model: EMModel) -> Algorithm:
    """The ``Algorithm`` of an EM model: objective = −log-likelihood, promised monotone."""

    def step(params, data, hp):
        return model.m_step(model.e_step(params, data, hp), data, hp)

    def objective(params, data, hp):
        return -model.log_likelihood(params, data, hp)

    return Algorithm(model.init, step, objective, monotone=True)


# --------------------------------------------------------------------------- cells over a mesh
#
# One large fit can split its cells (rows) over a 1-D device mesh with axis "cells"
# (``jaxfactor.cell_mesh()``). Every sum over cells in the models below goes through
# ``Cells.sum``: ``psum`` over "cells" inside ``shard_map``, the identity on one device; padded rows
# are masked out of every such sum. One implementation serves both cases.


@partial(jax.tree_util.register_dataclass, data_fields=["data"], meta_fields=["n_cells"])
@dataclass(frozen=True)
class CellData:
    """A model's data with its per-cell rows padded for a cell mesh (build it with ``cell_data``).

    ``data``: the model's data pytree. Every leaf with at least one dimension holds one row per
    cell; its rows are zero-padded to a multiple of the mesh size (the padding is masked out of
    every sum) and split over the mesh's "cells" axis. Scalar leaves are replicated.
    ``n_cells``: the number of real cells (static: a new value compiles a new program).
    """

    data: Any
    n_cells: int


def _leaves(tree):
    """Leaves, with array-like objects (e.g. sparse ``BCOO``) kept whole."""
    return jax.tree_util.tree_leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, (np.ndarray, jax.Array)))


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _row_count(tree) -> int:
    rows = {_shape(x)[0] for x in _leaves(tree) if len(_shape(x)) >= 1}
    if len(rows) != 1:
        raise ValueError(f"every per-cell array of the data must have the same number of rows, got {sorted(rows)}")
    return rows.pop()


def data_specs(data):
    """``PartitionSpec`` pytree of a model's data: rows split over "cells", scalars replicated."""
    return jax.tree_util.tree_map(lambda x: ROWS if np.ndim(x) >= 1 else REPL, data)


def cell_data(data, mesh) -> CellData:
    """``CellData`` of ``data`` for ``mesh`` (``jaxfactor.cell_mesh()``): rows zero-padded to a
    multiple of the mesh size and split over its "cells" axis, scalars replicated.

    ``mesh=None`` keeps the rows as they are (one device), which the factories also accept.
    """
    check_cell_mesh(mesh)
    if isinstance(data, CellData):
        raise ValueError("data is already a CellData; pass the model's own data")
    n = _row_count(data)
    if mesh is None:
        return CellData(data, n)
    for x in _leaves(data):
        if hasattr(x, "shape") and not isinstance(x, (np.ndarray, jax.Array, np.generic)):
            raise ValueError(f"cell_data splits dense arrays over a mesh, got {type(x).__name__}; densify it first")
    n_pad = padded_size(n, mesh)
    repl = jax.sharding.NamedSharding(mesh, REPL)

    def put(x):
        if np.ndim(x) == 0:
            return _place(x, repl)
        return place_rows(mesh, pad_rows(np.asarray(x), n_pad))

    return CellData(jax.tree_util.tree_map(put, data), n)


def split_cells(data, mesh):
    """``(model data, n real cells, n rows)`` of plain data or ``CellData``; a one-line error when
    the rows cannot be split evenly over ``mesh`` (plain data must then go through ``cell_data``)."""
    if isinstance(data, CellData):
        inner, n = data.data, data.n_cells
        rows = _row_count(inner)
    else:
        inner = data
        n = rows = _row_count(inner)
    if not 0 < n <= rows:
        raise ValueError(f"CellData.n_cells={n} must be between 1 and the {rows} rows of its data")
    if mesh is not None and rows % mesh.size:
        raise ValueError(f"{rows} rows cannot be split over {mesh.size} devices; pad them with cell_data(data, mesh)")
    return inner, n, rows


class Cells(NamedTuple):
    """Where a function runs: on one row shard (``sharded``) or on all rows.

    ``n``: real cells in total; ``n_rows``: rows in total (real + padding); ``n_local``: rows
    here; ``offset``: index of the first local row; ``mask``: (n_local,) True for real cells,
    ``None`` when no row is padding.
    """

    sharded: bool
    n: int
    n_rows: int
    n_local: int
    offset: Any
    mask: Any

    def sum(self, tree):
        """Total over cells of per-shard partial sums (``psum`` when sharded)."""
        return jax.tree_util.tree_map(lambda x: cell_sum(x, self.sharded), tree)

    def keep(self, x, fill=0.0):
        """``x`` (local rows first) with the padded rows set to ``fill``."""
        if self.mask is None:
            return x
        return jnp.where(self.mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, fill)

    def local_rows(self, x):
        """The local block of a full (n, ...) per-cell array computed on every device."""
        x = pad_rows(x, self.n_rows)
        return lax.dynamic_slice_in_dim(x, self.offset, self.n_local, axis=0) if self.sharded else x


def on_cells(fn, mesh, n_cells: int, n_rows: int, in_specs, out_specs):
    """``fn(*args, cells)`` on the row shards of ``mesh`` (``shard_map``; ``cells.sum`` is a
    ``psum``) or, without a mesh, on every row at once; ``cells`` masks the padded rows."""
    sharded = mesh is not None
    n_local = n_rows // mesh.size if sharded else n_rows

    def local(*args):
        offset = lax.axis_index(CELLS) * n_local if sharded else 0
        mask = None if n_cells == n_rows else (offset + jnp.arange(n_local)) < n_cells
        return fn(*args, Cells(sharded, n_cells, n_rows, n_local, offset, mask))

    return over_cells(local, mesh, in_specs, out_specs)


def all_cells(n: int) -> Cells:
    """``Cells`` of a function that sees all ``n`` rows on one device, none of them padding."""
    return Cells(False, n, n, n, 0, None)
