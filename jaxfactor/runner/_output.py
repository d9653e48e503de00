"""The results folder: written under a temporary name and renamed into place when complete."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import numpy as np
import tomli_w

from ..data._io import WriteFailed, space_errnos, write_failed
from ._precheck import overlaps

FLOOR_BYTES = 4 << 20  # the least free space a run, predict or clones call asks for (small outputs, figures, lock)


def check_out_dir(out: str, force: bool, inputs=()) -> None:
    """One-line errors before anything runs: ``out`` exists (without ``force``), would overlap an
    input (a config, a data file or folder: inputs are never overwritten, ``--force`` or not), or
    its parent is not a folder."""
    for path in inputs:
        if path and overlaps(out, path):
            raise ValueError(f"--out {out!r} would overlap the input {path!r}; choose a separate output folder "
                             "(inputs are never overwritten, also not with --force)")
    if os.path.exists(out) and not force:
        raise ValueError(f"output folder {out!r} already exists; pass --force to replace it or choose --out")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ValueError(f"cannot create {out!r}: {parent!r} is not a folder")


def path_bytes(path: str) -> int:
    """Size of a file, or of every file under a folder; 0 for what does not exist."""
    if not path or not os.path.exists(path):
        return 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def simulated_bytes(data: dict) -> int:
    """A bound on a simulator's matrices from its config: cells x variables x 8 bytes x 3 layers
    (``n_cells``/``n_samples`` by ``n_features``/``n_variants``/``n_genes``; 0 if it has none)."""
    rows = next((data[k] for k in ("n_cells", "n_samples", "n_obs") if isinstance(data.get(k), int)), 0)
    cols = next((data[k] for k in ("n_features", "n_variants", "n_genes", "n_vars") if isinstance(data.get(k), int)), 0)
    return max(int(rows), 0) * max(int(cols), 0) * 24


def output_estimate(inputs=(), data_bytes: int = 0) -> int:
    """A cheap estimate of what a run writes: the results hold the input's matrices once more plus
    per-point arrays, so twice the inputs' bytes, and never less than :data:`FLOOR_BYTES`."""
    return FLOOR_BYTES + 2 * (sum(path_bytes(p) for p in inputs) + int(data_bytes))


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        up = os.path.dirname(path)
        if up == path:
            break
        path = up
    return path if os.path.isdir(path) else os.path.dirname(path)


def check_free_space(out: str, need: int) -> None:
    """One line before anything is fitted if the place ``out`` would be written has less free space
    than ``need`` bytes (measured at its nearest existing parent folder). An estimate: a write
    that still runs out of space fails cleanly later (:func:`write_h5ad`, :func:`atomic_dir`)."""
    where = _existing_parent(out)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # cannot tell: the write itself reports a full disk
    need = max(int(need), FLOOR_BYTES)
    if free < need:
        mb = lambda n: f"{n / 2**20:,.0f}" if n >= 2**20 else f"{n / 2**20:.2f}"  # noqa: E731
        raise ValueError(f"not enough free space at {where!r}: need ~{mb(need)} MB, {mb(free)} MB free; "
                         f"free space or choose another --out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(out: str) -> list[str]:
    """Remove what dead processes left beside ``out``: ``.NAME.tmp-PID`` / ``.NAME.old-PID``
    folders and ``NAME.tmp-PID.h5ad`` files whose process no longer runs. Returns their names."""
    parent, name = os.path.split(os.path.abspath(out))
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in os.listdir(parent):
        for prefix in (f".{name}.tmp-", f".{name}.old-", f"{name}.tmp-"):
            if entry.startswith(prefix):
                pid = entry[len(prefix):].split(".")[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    path = os.path.join(parent, entry)
                    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
                    removed.append(entry)
    return removed


@contextmanager
def out_lock(out: str):
    """Hold ``.NAME.lock`` beside ``out`` while a run writes it: a second run to the same ``out``
    fails at once (one line naming the other process); a lock left by a dead process is taken
    over, and so are its temporary leftovers (:func:`remove_stale`). Creating the parent folder or
    the lock is where an unwritable place is found, before any fit."""
    parent, name = os.path.split(os.path.abspath(out))
    path = os.path.join(parent, f".{name}.lock")
    try:
        os.makedirs(parent, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                try:
                    with open(path) as fh:
                        pid = int(fh.read().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise ValueError(f"another jaxfactor process (pid {pid}) is writing {out!r}; wait for it to finish "
                                     f"or choose another --out") from None
                os.remove(path)  # left by a dead process
        else:
            raise ValueError(f"cannot take the lock {path!r}; remove it if no jaxfactor process is writing {out!r}")
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
    except OSError as exc:
        raise ValueError(f"cannot write beside {out!r} ({exc.strerror or exc}); choose a writable --out") from None
    remove_stale(out)
    try:
        yield
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


@contextmanager
def atomic_dir(out: str, force: bool):
    """Yield a temporary sibling folder; on success move it to ``out`` (replacing it if ``force``).

    On failure the temporary folder is removed and ``out`` is left as it was.
    """
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except (OSError, WriteFailed) as exc:  # a full disk, a file-size limit: one line, nothing left behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, WriteFailed) or exc.errno in space_errnos():
            file = os.path.basename(exc.filename) if isinstance(exc.filename, str) else "a file"
            kept = f"{out!r} is left as it was" if os.path.exists(out) else "nothing was written"
            raise ValueError(write_failed(f"{out!r}", exc, f"{file} was being written; {kept}")) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    check_out_dir(out, force)
    if os.path.exists(out):
        old = os.path.join(parent, f".{name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(_jsonable(obj), fh, indent=2)
        fh.write("\n")


def write_toml(path: str, obj: dict) -> None:
    with open(path, "wb") as fh:
        tomli_w.dump(obj, fh)


def write_figures(folder: str, traces: dict[str, tuple[np.ndarray, np.ndarray]], heatmaps: dict[str, dict],
                  ylabel: str = "objective", files: dict[str, str] | None = None) -> list[str]:
    """``trace.png`` (every point's trace beside the selection curve) and one heatmap page per
    point (``factors_<files[label]>.png``): drawn by :func:`jaxfactor.runner._figures.write_figures`."""
    from ._figures import write_figures as draw

    return draw(folder, traces, heatmaps, ylabel, files)
