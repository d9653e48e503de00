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

Pipeline models (CCLONE, GMM, PPCA, binomial mixture, allele model, VAE, ZINB-WaVE) loop over
their sweep values themselves; their loops go through a ``PointCache`` (``get_or_fit`` /
``get`` + ``put``), one cache point per sweep value (per value of ``k`` for CCLONE, whose
filter settings of one k share a compiled call), kept in the same partial folder under the same
hash, conflict and ``--force`` rules as ``pNNN.pkl``: one JSON header line (config hash, point
index, the point's sweep values, payload size and SHA-256) followed by a pickle of the point's
result. The result is a Python object (NamedTuples/dataclasses of arrays, AnnData, dicts,
floats), so it is pickled, with every ``jax.Array`` replaced by a NumPy copy (typed PRNG keys
by their key data): the file needs no device to read and loads on any backend. Trade-off:
pickle stores any object without a per-model schema (an npz+json format would need one per
result type), but it is tied to the Python and library versions that wrote it and runs code on
load, so it is only ever read back from the run's own partial folder, written by this process
or an earlier run of the same config and jaxfactor version (both in the hash). A point whose
header, size, checksum, sweep values or unpickling do not check out is fitted again, never
trusted and never a crash. With a cache, a freshly fitted point is also returned as its host
copy (the object a resumed run would load), so a resumed run and an uninterrupted one continue
from identical objects. A result that cannot be pickled is used as is and not saved (a log line
says so). In a multi-process run every process reads finished points from the partial folder
(put it on a filesystem they share); if any process cannot read one, all of them refit it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
from typing import Any, Callable

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

    def _complete(self, i: int) -> bool:
        """Whether point ``i``'s file is of this config (raises if it is unreadable)."""
        with np.load(self._file(i)) as z:
            meta = json.loads(str(z[_META]))
        return meta.get("config_hash") == self.hash

    def finished(self) -> np.ndarray:
        """(n_points,) bool: which points have a complete file with this config's hash."""
        done = np.zeros(self.n_points, bool)
        if not os.path.isdir(self.path):
            return done
        for i in range(self.n_points):
            if os.path.exists(self._file(i)):
                try:
                    done[i] = self._complete(i)
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


# -- pipeline models: one pickled Python object per finished point -------------------------------

_POINT_FORMAT = "jaxfactor-point/1"


def _typed_key(data: np.ndarray, impl: str):
    import jax

    return jax.random.wrap_key_data(data, impl=impl)


class _HostPickler(pickle.Pickler):
    """Pickles ``jax.Array`` leaves as NumPy arrays (typed PRNG keys as their key data)."""

    def reducer_override(self, obj):
        jax = sys.modules.get("jax")
        if jax is None or not isinstance(obj, jax.Array):
            return NotImplemented
        if jax.numpy.issubdtype(obj.dtype, jax.dtypes.prng_key):
            return _typed_key, (np.asarray(jax.random.key_data(obj)), str(jax.random.key_impl(obj)))
        return np.asarray, (np.asarray(obj),)


def host_pickle(value: Any) -> bytes:
    """``value`` pickled with every ``jax.Array`` as a NumPy copy."""
    buf = io.BytesIO()
    _HostPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buf.getvalue()


def _params_json(params: dict) -> str:
    return json.dumps(_jsonable(params), sort_keys=True, default=str)


class PipelineStore(SweepStore):
    """The finished points of a pipeline sweep: ``pNNN.pkl`` files in the partial folder."""

    def _file(self, i: int) -> str:
        return os.path.join(self.path, f"p{i:03d}.pkl")

    def _read(self, i: int, params: dict | None) -> bytes:
        """The payload of point ``i`` after every check (header, hash, index, params, size, SHA-256)."""
        with open(self._file(i), "rb") as fh:
            head = json.loads(fh.readline())
            blob = fh.read()
        if head.get("format") != _POINT_FORMAT or head.get("config_hash") != self.hash or head.get("index") != i:
            raise ValueError("written by another config or format")
        if params is not None and head.get("params") != _params_json(params):
            raise ValueError(f"holds the point {head.get('params')}, not {_params_json(params)}")
        if len(blob) != head.get("nbytes") or hashlib.sha256(blob).hexdigest() != head.get("sha256"):
            raise ValueError("truncated or corrupt (size or checksum mismatch)")
        return blob

    def _complete(self, i: int) -> bool:
        """Point files are complete when their header, size and checksum verify (else raises)."""
        self._read(i, None)
        return True

    def save_point(self, i: int, params: dict, blob: bytes) -> None:
        if not self.writer:
            return
        head = {"format": _POINT_FORMAT, "config_hash": self.hash, "index": i, "params": _params_json(params),
                "nbytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        line = (json.dumps(head) + "\n").encode()
        _atomic_write(self._file(i), lambda fh: (fh.write(line), fh.write(blob)))

    def load_point(self, i: int, params: dict) -> Any:
        return pickle.loads(self._read(i, params))


def _everywhere(ok: bool) -> bool:
    """True if ``ok`` on every process (identity in a one-process run)."""
    import jax

    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


class PointCache:
    """Per-point cache of a pipeline's sweep loop (``PointCache()``: no cache, every point fitted).

    ``get_or_fit(i, params, fit)`` returns point ``i``'s result: loaded from the partial folder if
    it was finished by an earlier run (and still checks out), else ``fit()``, saved at once.
    ``get`` / ``put`` split the same for loops whose body stays in place::

        for i, k in enumerate(sizes):
            row, result = points.get_or_fit(i, {"n_components": k}, lambda: fit_point(k))

    ``params`` (the point's sweep values) are stored with the point and must match on load.
    ``resumed`` lists the ids of the points loaded.
    """

    def __init__(self, store: PipelineStore | None = None, finished: np.ndarray | None = None, log=None):
        self.store = store
        self.finished = np.zeros(0 if store is None else store.n_points, bool) if finished is None else np.asarray(finished, bool)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.resumed: list[str] = []

    def get(self, i: int, params: dict) -> Any | None:
        """Point ``i``'s finished result, or None if it has to be fitted."""
        if self.store is None or i >= len(self.finished) or not self.finished[i]:
            return None
        why = ""
        try:
            value, ok = self.store.load_point(i, params), True
        except Exception as exc:
            value, ok, why = None, False, " ".join(f"{type(exc).__name__}: {exc}".split())
        if not _everywhere(ok):
            if self.store.writer:
                self.log(f"p{i:03d} in {self.store.path} is unreadable ({why or 'on another process'}); fitting it again")
            return None
        self.resumed.append(f"p{i:03d}")
        return value

    def put(self, i: int, params: dict, value: Any) -> Any:
        """Save a freshly fitted point; return its host copy (what a resumed run would load)."""
        if self.store is None:
            return value
        try:
            blob = host_pickle(value)
            copy = pickle.loads(blob)
        except Exception as exc:
            if self.store.writer:
                self.log(f"p{i:03d} cannot be saved for resuming ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                         "it would be fitted again after an interruption")
            return value
        self.store.save_point(i, params, blob)
        return copy

    def get_or_fit(self, i: int, params: dict, fit: Callable[[], Any]) -> Any:
        value = self.get(i, params)
        return self.put(i, params, fit()) if value is None else value


def fit_sweep(points: PointCache | None, key: str, values: list, fit_point: Callable[[Any], tuple]) -> tuple[list, list]:
    """``fit_point(value) -> (row, result)`` for every value of the sweep key ``key``, one cache
    point each (``points=None``: no cache). Returns the rows and the results, in order."""
    points = PointCache() if points is None else points
    rows, results = [], []
    for i, value in enumerate(values):
        row, result = points.get_or_fit(i, {key: value}, lambda: fit_point(value))
        rows.append(row)
        results.append(result)
    return rows, results
