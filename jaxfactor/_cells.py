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
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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
