"""Cell (row) sharding of one large fit over a 1-D device mesh named ``"cells"``.

A sweep spreads independent fits over devices (:func:`jaxfactor._fit.sweep_mesh`); a single fit
too large for one device instead splits its *rows* (cells) across devices. Every algorithm in
this library is a sum over cells of per-cell terms plus updates of per-cell factors, so the
data-parallel recipe is always the same:

- rows of the data and of every per-cell state array are split across the ``"cells"`` axis
  (``PartitionSpec("cells")``); per-gene / per-component quantities are replicated;
- each device computes its shard's partial sums (Gram matrices, sufficient statistics,
  gradients, log-likelihood terms) and ``lax.psum`` over ``"cells"`` totals them, so every
  device holds the same replicated result and the per-gene updates agree bit for bit;
- ``n`` not a multiple of the device count is padded with rows that contribute nothing (a
  row mask of 0, or rows whose terms vanish identically); the padding is removed from results.

The collectives run inside ``jax.shard_map`` (manual over ``"cells"``), so the placement is
explicit and XLA inserts nothing behind our back. The mesh axis type is chosen deliberately as
``Explicit`` (JAX >= 0.7 defaults to it; older releases to ``Auto``), as for the sweep mesh.

This module is the one place every family shards its cells, with one mechanism — masked rows:
the data is a ``CellData`` (rows padded to a multiple of the mesh size, ``n_cells`` real) and
every function runs through ``on_cells``, which hands it a ``Cells`` (its rows, the padding mask,
``Cells.sum`` = ``psum`` over "cells"). The EM models call ``on_cells`` inside their steps;
NMF and weighted NMF get theirs from ``sharded_algorithm`` (and ``fit_cells`` pads their per-cell
state, unpadded after the fit); the VAE splits every minibatch (``over_cells``, its tail rows
masked). All on the same primitives (``pad_rows``, ``place_rows``, ``cell_sum``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._base import Algorithm

CELLS = "cells"


def cell_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"cells"`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (CELLS,), axis_types=(jax.sharding.AxisType.Explicit,), devices=devices)


def check_cell_mesh(mesh) -> None:
    """One-line error unless ``mesh`` is None or a 1-D mesh whose axis is ``"cells"``."""
    if mesh is None:
        return
    if not isinstance(mesh, jax.sharding.Mesh) or tuple(mesh.axis_names) != (CELLS,):
        raise ValueError(f"mesh must be a 1-D jax.sharding.Mesh with axis 'cells' (jaxfactor.cell_mesh()), got {mesh!r}")


def padded_size(n: int, mesh) -> int:
    """The smallest multiple of the mesh size that is >= ``n`` (``n`` itself without a mesh)."""
    if mesh is None:
        return int(n)
    return -(-int(n) // mesh.size) * mesh.size


def pad_rows(x, n_total: int, value=0):
    """``x`` with rows of ``value`` appended up to ``n_total`` rows (NumPy or JAX arrays)."""
    n = x.shape[0]
    if n == n_total:
        return x
    xp = jnp if isinstance(x, jax.Array) else np
    fill = xp.full((n_total - n,) + tuple(x.shape[1:]), value, dtype=x.dtype)
    return xp.concatenate([x, fill], axis=0)


def row_mask(n: int, n_total: int, dtype=None) -> jax.Array:
    """1 for the ``n`` real rows, 0 for the ``n_total - n`` padded ones."""
    return (jnp.arange(n_total) < n).astype(dtype or jnp.zeros(()).dtype)


def cell_sum(x, sharded: bool):
    """Total over cells of a per-shard partial sum: ``psum`` over ``"cells"`` inside
    :func:`over_cells`, the identity otherwise (one device holds every cell)."""
    return lax.psum(x, CELLS) if sharded else x


def over_cells(fn: Callable, mesh, in_specs, out_specs) -> Callable:
    """``fn`` run with ``shard_map`` over the mesh's ``"cells"`` axis (``None`` mesh: ``fn``).

    ``in_specs`` / ``out_specs`` are pytrees (prefixes) of ``PartitionSpec``: ``P("cells")``
    for per-cell arrays, ``P()`` for replicated ones (see :data:`ROWS`, :data:`REPL`).
    """
    if mesh is None:
        return fn
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


ROWS = jax.sharding.PartitionSpec(CELLS)
REPL = jax.sharding.PartitionSpec()


def place_rows(mesh, x):
    """Put a host or device array on ``mesh`` with its rows split over ``"cells"``."""
    from ._fit import _place

    return _place(x, jax.sharding.NamedSharding(mesh, ROWS))


# --------------------------------------------------------------------------------------------
# an Algorithm whose step and objective run on row shards, and a fit of the unpadded data


class CellLayout(NamedTuple):
    """Which leaves of an algorithm's data and state are per cell (:data:`ROWS`, split over
    ``"cells"``) and which are replicated (:data:`REPL`): pytree prefixes of ``PartitionSpec``,
    e.g. ``CellLayout(data=ROWS, state=NMFState(ROWS, REPL))`` for X ≈ WH with W per cell."""

    data: Any
    state: Any


def _is_spec(x) -> bool:
    return isinstance(x, jax.sharding.PartitionSpec)


def _map_rows(fn, specs, tree):
    """``fn`` applied to every leaf of ``tree`` lying under a :data:`ROWS` leaf of ``specs``."""
    return jax.tree_util.tree_map(
        lambda spec, sub: jax.tree_util.tree_map(fn, sub) if spec == ROWS else sub, specs, tree, is_leaf=_is_spec
    )


def n_rows(specs, tree) -> int:
    """The number of rows (cells) of ``tree``: the leading size of its first per-cell leaf."""
    sizes = []
    _map_rows(lambda x: sizes.append(int(np.shape(x)[0])), specs, tree)
    if not sizes:
        raise ValueError("the layout names no per-cell (ROWS) leaf")
    return sizes[0]


def pad_tree(specs, tree, n_total: int):
    """Every per-cell leaf of ``tree`` padded with zero rows up to ``n_total`` rows."""
    return _map_rows(lambda x: pad_rows(x, n_total), specs, tree)


def place_tree(mesh, specs, tree):
    """``tree`` on ``mesh``: per-cell leaves split over ``"cells"``, the others replicated."""
    from ._fit import _place

    return jax.tree_util.tree_map(
        lambda spec, sub: jax.tree_util.tree_map(lambda x: _place(x, jax.sharding.NamedSharding(mesh, spec)), sub),
        specs, tree, is_leaf=_is_spec,
    )


def sharded_algorithm(init: Callable, step: Callable, objective: Callable, *, monotone: bool, layout: CellLayout,
                      mesh) -> Algorithm:
    """The ``Algorithm`` whose step and objective run on row shards over ``mesh``.

    ``step(state, data, hp, cells=...)`` and ``objective(...)`` are the one implementation of
    the method: ``cells`` (:class:`Cells`; ``None`` on one device, all rows real) says which
    rows are here and which are padding; every sum over cells goes through ``cells.sum`` (a
    ``psum`` over "cells" when sharded) and per-cell results through ``cells.keep`` (padded rows
    masked), the same masked-rows contract as the EM models' :func:`on_cells`. ``mesh=None``
    returns the unsharded triple (the same functions, so the one-device program is unchanged).

    With a mesh the data is a :class:`CellData` (:func:`place_cells`: per-cell leaves of the
    ``layout`` padded to a multiple of the mesh size and split, ``n_cells`` the real rows). The
    sharded ``init`` gathers the data, runs ``init`` on it and splits the per-cell state (the
    padded rows then count in data-dependent inits such as ``mean(X)``; :func:`fit_cells`
    initialises on the unpadded data).
    """
    if mesh is None:
        return Algorithm(init, step, objective, monotone=monotone)
    check_cell_mesh(mesh)
    ins = (layout.state, layout.data, REPL)
    sharding = lambda spec: jax.sharding.NamedSharding(mesh, spec)

    def inner(data):
        if not isinstance(data, CellData):
            raise ValueError("a cell-sharded algorithm takes its data as a CellData (jaxfactor._cells.place_cells)")
        return data.data, data.n_cells, n_rows(layout.data, data.data)

    def sharded_init(key, data, hp):
        data = jax.tree_util.tree_map(lambda x: jax.sharding.reshard(x, sharding(REPL)), inner(data)[0])
        state = init(key, data, hp)
        return jax.tree_util.tree_map(
            lambda spec, sub: jax.tree_util.tree_map(lambda x: jax.sharding.reshard(x, sharding(spec)), sub),
            layout.state, state, is_leaf=_is_spec,
        )

    def on_shards(fn, out_specs):
        def run(state, data, hp):
            rows, n, total = inner(data)
            local = lambda s, d, h, cells: fn(s, d, h, cells=cells)
            return on_cells(local, mesh, n, total, ins, out_specs)(state, rows, hp)

        return run

    return Algorithm(sharded_init, on_shards(step, layout.state), on_shards(objective, REPL), monotone=monotone)


def place_cells(data, mesh, layout: CellLayout) -> "CellData":
    """``data`` as a :class:`CellData` for ``mesh``: the ``layout``'s per-cell leaves padded to a
    multiple of the mesh size and split over "cells", the others replicated (see :func:`fit_cells`)."""
    n = n_rows(layout.data, data)
    return CellData(place_tree(mesh, layout.data, pad_tree(layout.data, data, padded_size(n, mesh))), n)


@partial(jax.jit, static_argnames=("mesh", "specs", "n"))
def _unpad_state(state, *, mesh, specs, n):
    """The first ``n`` rows of every per-cell leaf, replicated on ``mesh`` (other leaves as they are)."""
    full = jax.sharding.NamedSharding(mesh, REPL)
    return _map_rows(lambda x: jax.sharding.reshard(x, full)[:n], specs, state)


def fit_cells(alg: Algorithm, data, hp, keys, *, mesh, layout: CellLayout, init: Callable, state0=None, placed=None,
              max_iter: int = 200, tol: float = 1e-4, chunk_size: int = 10, progress: bool = False,
              timings: dict | None = None):
    """Fit the cell-sharded ``alg`` from each of ``keys``; the best restart, as ``fit_many``.

    The start state is ``init(key, data, hp)`` on the UNPADDED data on one device (or
    ``state0``), so it is the state the unsharded fit starts from; then data and state get
    zero rows up to a multiple of ``mesh.size`` (rows that contribute nothing to any sum of the
    algorithm: see its ``sharded`` step) and their per-cell leaves are split over ``"cells"``.
    The restarts run one after another (each is one ``fit``, one compiled program for all).
    ``placed``: the data already through :func:`place_cells` (reused across calls). ``timings``:
    a dict that receives ``compile_seconds`` (the init's and the fit's, compiled ahead of time
    before the first restart) and ``seconds`` (the fits).

    Returns a ``FitManyResult`` of one grid point (leading axis 1): the per-cell leaves of the
    state have the unpadded ``n`` rows and are replicated (readable from every process).
    """
    import time

    from ._fit import FitManyResult, _canonical_hp, _fit_jit, fit

    check_cell_mesh(mesh)
    n = n_rows(layout.data, data)
    n_total = padded_size(n, mesh)
    placed = place_cells(data, mesh, layout) if placed is None else placed
    hp = _canonical_hp(hp)
    if state0 is not None:
        state0 = jax.tree_util.tree_map(np.asarray, state0)
        start = place_tree(mesh, layout.state, pad_tree(layout.state, state0, n_total))
    else:
        start = None
    init = jax.jit(init)
    kw = dict(max_iter=int(max_iter), chunk_size=int(chunk_size))
    results, seconds, init_compile = [], 0.0, 0.0
    for s, key in enumerate(keys):
        if s == 0 and timings is not None and start is None and not progress:
            t0 = time.perf_counter()
            init.lower(key, data, hp).compile()  # fills the cache (timed as compilation)
            init_compile = time.perf_counter() - t0
        if start is None:  # padded on the host (placing goes through it anyway)
            s0 = jax.tree_util.tree_map(np.asarray, init(key, data, hp))
            s0 = place_tree(mesh, layout.state, pad_tree(layout.state, s0, n_total))
        else:
            s0 = start
        if s == 0 and timings is not None:
            t0 = time.perf_counter()
            if not progress:
                _fit_jit.lower(alg, placed, hp, key, s0, tol, **kw).compile()  # fills the cache the fit uses
            timings["compile_seconds"] = time.perf_counter() - t0 + init_compile
        t0 = time.perf_counter()
        results.append(jax.block_until_ready(fit(alg, placed, hp, key, state0=s0, tol=tol, progress=progress, **kw)))
        seconds += time.perf_counter() - t0
    if timings is not None:
        timings["seconds"] = seconds
    final = np.array([np.asarray(r.trace)[-1] for r in results])
    best = int(np.argmin(np.where(np.isfinite(final), final, np.inf)))
    chosen = results[best]._replace(state=_unpad_state(results[best].state, mesh=mesh, specs=layout.state, n=n))
    # every leaf is now replicated: read it on the host and stack there (no eager ops on the mesh)
    host = lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs]))
    return FitManyResult(
        best=jax.tree_util.tree_map(host, chosen),
        best_index=jnp.asarray([best]),
        objective=host(final.astype(np.asarray(results[0].trace).dtype)),
        n_iter=host(np.stack([np.asarray(r.n_iter) for r in results])),
        converged=host(np.stack([np.asarray(r.converged) for r in results])),
    )


# --------------------------------------------------------------------------------------------
# masked rows: a model's data with its cells padded for a mesh (``CellData``) and where a function
# runs (``Cells``: every sum over cells goes through ``Cells.sum``, a ``psum`` over "cells" inside
# ``shard_map`` and the identity on one device; padded rows are masked out of every such sum).
# The EM models (GMM, PPCA, binomial mixture) and, through ``sharded_algorithm``, NMF and
# weighted NMF use this; the VAE splits each minibatch with ``over_cells``.


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
        from ._fit import _place

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
