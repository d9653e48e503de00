"""How a sweep is laid out on devices: the mesh (``run.shard``), and whether it fits in memory.

``run.shard = "auto"`` puts the (point × restart) axis of every compiled ``fit_many`` call on a
1-D mesh over all devices of the chosen platform (every process's devices after
``jax.distributed.initialize``) when there is more than one; ``"off"`` runs on one device.
``"cells"`` instead splits the rows (cells) of ONE fit over those devices (a 1-D mesh named
``"cells"``, :func:`jaxfactor.cell_mesh`): sweep points and restarts then run one at a time,
each with the cell-sharded algorithm (the family's ``algorithm(static, mesh)`` and ``cell_layout()``).
Pipeline models receive the value in ``cfg.run["shard"]`` and decide themselves.

Before anything is compiled, ``check_memory`` estimates the bytes one compiled call needs and
compares them with what the device has free; a sweep that cannot fit is a one-line error that
says how to shrink it.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from .._cells import CELLS, cell_mesh
from .._fit import sweep_mesh


def make_mesh(shard: str, device: jax.Device) -> jax.sharding.Mesh | None:
    """The mesh for ``run.shard`` on ``device``'s platform (a sweep mesh for "auto", a cell mesh
    for "cells"), or None for one device."""
    if shard == "off":
        return None
    devices = jax.devices(device.platform)
    if len(devices) < 2:
        return None
    return cell_mesh(devices) if shard == "cells" else sweep_mesh(devices)


def is_cell_mesh(mesh) -> bool:
    return mesh is not None and tuple(mesh.axis_names) == (CELLS,)


def describe(device: jax.Device, mesh) -> str:
    if mesh is None:
        return str(device)
    procs = jax.process_count()
    where = f" in {procs} processes" if procs > 1 else ""
    how = "cells of each fit sharded" if is_cell_mesh(mesh) else "sweep sharded"
    return f"{mesh.size} {device.platform} devices{where} ({how})"


# --------------------------------------------------------------------------------------------
# memory


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _host_available() -> int:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages (os.sysconf)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def available_bytes(device: jax.Device) -> tuple[int, bool]:
    """(free bytes, per_device): an accelerator's own free memory from ``memory_stats()``, or
    the host's available RAM for CPU devices (shared by every forced CPU device)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # CPU backends may not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), True
    return _host_available(), False


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))


def fit_bytes(alg, data, hp) -> int:
    """Working bytes of one fit: 4 copies of the state (current, proposed, the chunk's carry,
    the frozen copy a vmapped while_loop selects) plus one data-sized temporary (the
    reconstruction an objective or update forms). Shapes only: nothing is run or compiled."""
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    state = jax.eval_shape(alg.init, key, data, hp)
    return 4 * _nbytes(state) + _nbytes(data)


def call_bytes(alg, data, hp, *, n_points: int, n_seeds: int, grid_map: str, n_devices: int = 1,
               cells: bool = False) -> tuple[int, int, int]:
    """(bytes per device, bytes per fit, fits alive at once per device) for one compiled call.

    ``cells``: one fit at a time with its rows split over the ``n_devices`` (the state's
    replicated parts, e.g. H, are counted as split too: an estimate for n >> p)."""
    per_fit = fit_bytes(alg, data, hp)
    if cells:
        return math.ceil((_nbytes(data) + per_fit) / n_devices), math.ceil(per_fit / n_devices), 1
    pairs = n_points * n_seeds
    alive = n_seeds if grid_map == "map" else pairs
    alive = min(alive, math.ceil(pairs / n_devices))
    return _nbytes(data) + alive * per_fit, per_fit, alive


def check_memory(alg, data, hp, *, n_points: int, n_seeds: int, grid_map: str, device: jax.Device, mesh,
                 where: str, available: tuple[int, bool] | None = None, headroom: float = 0.9) -> None:
    """Raise a one-line ``ValueError`` when one compiled call would not fit in memory."""
    n_dev = 1 if mesh is None else mesh.size
    cells = is_cell_mesh(mesh)
    need, per_fit, alive = call_bytes(alg, data, hp, n_points=n_points, n_seeds=n_seeds, grid_map=grid_map, n_devices=n_dev,
                                      cells=cells)
    free, per_device = available if available is not None else available_bytes(device)
    if free <= 0:
        return  # unknown: do not guess
    total = need if per_device else need * n_dev  # forced CPU devices share the host's memory
    if total <= headroom * free:
        return
    data_b = _nbytes(data)
    if cells:
        raise ValueError(
            f"one fit {where} with its cells split over {n_dev} devices needs about {_gib(total)} "
            f"({_gib(need)} per device) but {device.platform} has about {_gib(free)} free; use more devices or a smaller data set"
        )
    budget = headroom * free / (1 if per_device else n_dev) - data_b
    fits_ok = int(budget // per_fit) if budget > 0 else 0
    hints = []
    if fits_ok >= n_seeds and grid_map == "vmap":
        hints.append(f"set run.max_points_per_call = {max(1, fits_ok * n_dev // n_seeds)}")
        hints.append('or run.grid_map = "map" (one point at a time)')
    elif fits_ok >= 1:
        hints.append(f"lower fit.n_init to {fits_ok}")
    else:
        hints.append("use a smaller data set (one fit alone does not fit)")
    raise ValueError(
        f"the sweep {where} needs about {_gib(total)} ({n_points} point(s) x {n_seeds} restart(s), {alive} fit(s) "
        f"at once per device of {_gib(per_fit)} each, plus {_gib(data_b)} of data) but {device.platform} has about "
        f"{_gib(free)} free; {', '.join(hints)}"
    )


def check_bytes(need: int, *, device: jax.Device, what: str, hint: str, available: tuple[int, bool] | None = None,
                headroom: float = 0.9) -> None:
    """One-line ``ValueError`` when ``need`` bytes (a pipeline's largest compiled call, estimated
    from shapes before compiling) exceed ``headroom`` of the device's free memory."""
    free, _ = available if available is not None else available_bytes(device)
    if free <= 0 or need <= headroom * free:
        return
    raise ValueError(f"{what} needs about {_gib(need)} but {device.platform} has about {_gib(free)} free; {hint}")

