"""The results folder: written under a temporary name and renamed into place when complete."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import numpy as np
import tomli_w


def overlaps(out: str, path: str) -> bool:
    """Whether writing (or replacing) ``out`` would touch ``path``: the same path, ``path`` inside
    the folder ``out``, or ``out`` inside the folder ``path``."""
    a, b = os.path.realpath(out), os.path.realpath(path)
    return a == b or b.startswith(a + os.sep) or (a.startswith(b + os.sep) and os.path.isdir(b))


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
    """``trace.png`` with every point's trace, and one heatmap figure per point
    (``factors_<files[label]>.png``, titled with the point's label: its id and swept values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for pid, (iters, trace) in traces.items():
        ax.plot(iters, trace, marker="." if len(iters) < 30 else None, label=pid)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if all(np.all(t > 0) for _, t in traces.values()):
        ax.set_yscale("log")
    ax.set_title(f"{ylabel} trace")
    if len(traces) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(folder, "trace.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    for pid, maps in heatmaps.items():
        if not maps:
            continue
        fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4))
        for ax, (title, mat) in zip(np.atleast_1d(axes), maps.items()):
            im = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_title(title, fontsize=9)
            if mat.shape[1] <= 30:  # integer ticks on a component axis
                ax.set_xticks(range(mat.shape[1]))
            fig.colorbar(im, ax=ax)
        fig.suptitle(pid)
        fig.tight_layout()
        path = os.path.join(folder, f"factors_{(files or {}).get(pid, pid)}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
