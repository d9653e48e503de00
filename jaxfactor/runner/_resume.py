"""Resumable sweeps: every finished sweep point is kept on disk until the whole run is written.

While ``jaxfactor run`` works on ``runs/NAME`` it keeps a sibling folder ``runs/.NAME.partial``
holding ``manifest.json`` (the config hash, the number of points) and one ``pNNN.npz`` per
finished sweep point. Each point file is written under a temporary name in that folder,
flushed to disk and renamed into place (``os.replace`` is atomic on POSIX), so a run killed at
any moment leaves only complete point files (and perhaps a stray ``*.tmp-PID`` file, ignored
and removed on the next run). Rerunning the same command loads the finished points, says so,
and fits only the rest; the final folder is then written exactly as by an uninterrupted run and
the partial folder removed.

The config hash covers everything that decides the numbers: the data (and the size and
modification time of a data file), the model, the fit settings, the sweep, ``run.x64`` and
the jaxfactor version. Keys that only decide *how* the work is run (device, sharding, points
per call, progress, figures) are left out, so a sweep started on one device can be finished on
four. A partial folder whose hash differs is refused unless ``--force`` (which discards it); one
with the same hash is always resumed, with or without ``--force`` (delete it to refit from
scratch).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import numpy as np

from .. import __version__
from ._output import _jsonable

_HOW_KEYS = ("device", "progress", "figures", "shard", "max_points_per_call", "grid_map")


def config_hash(raw: dict) -> str:
    """SHA-256 (first 16 hex digits) of the result-deciding part of a resolved config."""
    keep = {k: v for k, v in raw.items() if k not in ("run", "description")}
    keep["run"] = {k: v for k, v in raw.get("run", {}).items() if k not in _HOW_KEYS}
    keep["jaxfactor_version"] = __version__
    path = raw.get("data", {}).get("path")
    if isinstance(path, str) and os.path.exists(path):
        st = os.stat(path)
        keep["data_file"] = [st.st_size, st.st_mtime_ns]
    text = json.dumps(keep, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def partial_dir(out: str) -> str:
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    return os.path.join(parent, f".{name}.partial")


def _atomic_write(path: str, write) -> None:
    """``write(fh)`` into ``path`` under a temporary name in the same folder, fsync, rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_META = "__record__"
_ARRAY = "array__"


class SweepStore:
    """The finished points of one run (``writer=False`` on processes other than 0: read-only)."""

    def __init__(self, out: str, raw: dict, n_points: int, *, writer: bool = True):
        self.path = partial_dir(out)
        self.hash = config_hash(raw)
        self.n_points = n_points
        self.writer = writer

    # -- opening -------------------------------------------------------------------------------
    def conflict(self) -> str | None:
        """An error message if the partial folder holds points of another config, else None."""
        try:
            with open(os.path.join(self.path, "manifest.json")) as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            return None  # no folder, or no readable manifest: nothing we could reuse
        if old.get("config_hash") != self.hash or old.get("n_points") != self.n_points:
            return (f"{self.path} holds finished sweep points of a different config (hash {old.get('config_hash')}, "
                    f"this config {self.hash}); refusing to mix results: pass --force to discard them, or restore the config")
        return None

    def open(self, discard: bool) -> None:
        """Create the folder and its manifest (first discarding an old one if ``discard``) and
        remove temporary files a killed run left behind."""
        if not self.writer:
            return
        if discard and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)
        for stray in glob.glob(os.path.join(self.path, "*.tmp-*")):
            os.remove(stray)
        manifest = {"config_hash": self.hash, "n_points": self.n_points, "jaxfactor_version": __version__}
        _atomic_write(os.path.join(self.path, "manifest.json"), lambda fh: fh.write(json.dumps(manifest, indent=2).encode()))

    # -- points --------------------------------------------------------------------------------
    def _file(self, i: int) -> str:
        return os.path.join(self.path, f"p{i:03d}.npz")

    def finished(self) -> np.ndarray:
        """(n_points,) bool: which points have a complete file with this config's hash."""
        done = np.zeros(self.n_points, bool)
        if not os.path.isdir(self.path):
            return done
        for i in range(self.n_points):
            if os.path.exists(self._file(i)):
                try:
                    with np.load(self._file(i)) as z:
                        meta = json.loads(str(z[_META]))
                    done[i] = meta.get("config_hash") == self.hash
                except Exception:  # unreadable: fit the point again (the rename makes this unlikely)
                    done[i] = False
        return done

    def save(self, i: int, record: dict) -> None:
        if not self.writer:
            return
        meta = {k: v for k, v in record.items() if k not in ("arrays", "trace", "trace_iter")}
        meta["config_hash"] = self.hash
        payload = {f"{_ARRAY}{k}": np.asarray(v) for k, v in record["arrays"].items()}
        payload.update(trace=np.asarray(record["trace"]), trace_iter=np.asarray(record["trace_iter"]))
        payload[_META] = np.asarray(json.dumps(_jsonable(meta)))
        _atomic_write(self._file(i), lambda fh: np.savez(fh, **payload))

    def load(self, i: int) -> dict:
        with np.load(self._file(i)) as z:
            meta = json.loads(str(z[_META]))
            arrays = {k[len(_ARRAY):]: z[k] for k in z.files if k.startswith(_ARRAY)}
            record = {k: v for k, v in meta.items() if k != "config_hash"}
            record.update(arrays=arrays, trace=z["trace"], trace_iter=z["trace_iter"], resumed=True)
        return record

    def remove(self) -> None:
        if self.writer:
            shutil.rmtree(self.path, ignore_errors=True)
