"""Readers for plain matrices: ``.h5ad`` (X or a layer), ``.npy``, ``.npz``, CSV/TSV.

Readers return the matrix and, for AnnData input, the AnnData object itself so that results can
be written back into ``obsm``/``varm``. They never modify the file they read.

:func:`write_h5ad` writes every ``.h5ad`` output: built in memory, then written with plain file
I/O and renamed into place, so that a full disk is a one-line error (not a crash inside h5py).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

FORMATS = ("h5ad", "npy", "npz", "csv")


def infer_format(path: str) -> str:
    lower = path.lower()
    for suffix, fmt in ((".h5ad", "h5ad"), (".npy", "npy"), (".npz", "npz"), (".csv", "csv"), (".tsv", "csv"), (".txt", "csv")):
        if lower.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r} from its suffix; set data.format to one of {', '.join(FORMATS)}")


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"data file not found: {path!r}; check data.path (relative paths in a config are relative to the config file)")


def anndata_matrix(adata, layer: str | None, source: str = "the AnnData", option: str | None = None):
    """``adata.X`` (``layer=None``) or ``adata.layers[layer]``, as stored (sparse stays sparse).

    A missing X or layer is a one-line error naming ``source`` and the layers there are;
    ``option`` is the setting that picks the layer (e.g. ``data.layer``), named in the fix.
    """
    available = sorted(adata.layers) or "none"
    if layer is None:
        if adata.X is None:
            how = f" with {option}" if option else ""
            raise ValueError(f"{source} has no X matrix; name a layer{how} (available: {available})")
        return adata.X
    if layer not in adata.layers:
        omit = f" (omit {option} to use X)" if option else ""
        raise ValueError(f"layer {layer!r} not in {source}; available layers: {available}{omit}")
    return adata.layers[layer]


def open_h5ad(path: str):
    """``anndata.read_h5ad(path)``, a missing, truncated or non-HDF5 file a one-line ``ValueError``
    naming it."""
    import anndata

    _require_file(path)
    try:
        return anndata.read_h5ad(path)
    except (OSError, KeyError, TypeError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot read {path!r} as .h5ad ({type(exc).__name__}: {why}); is it a complete .h5ad file?") from None


def read_h5ad(path: str, layer: str | None = None, *, transpose: bool = False):
    """Return ``(matrix, adata)`` from an ``.h5ad``; ``layer=None`` reads ``X``."""
    adata = open_h5ad(path)
    mat = anndata_matrix(adata, layer, repr(path), "data.layer")
    if hasattr(mat, "toarray"):
        mat = mat.toarray()
    mat = np.asarray(mat)
    return (mat.T if transpose else mat), adata


def read_matrix(path: str, *, fmt: str | None = None, key: str | None = None, delimiter: str | None = None,
                header: bool = False, index_col: bool = False, transpose: bool = False) -> np.ndarray:
    """Read a numeric matrix from ``.npy``, ``.npz`` (array ``key``, or the only one) or CSV/TSV."""
    _require_file(path)
    fmt = fmt or infer_format(path)
    if fmt == "npy":
        mat = np.load(path, allow_pickle=False)
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path!r} holds arrays {names}; choose one with data.key")
                key = names[0]
            if key not in names:
                raise ValueError(f"array {key!r} not in {path!r}; available: {names}")
            mat = z[key]
    elif fmt == "csv":
        if delimiter is None:
            delimiter = "\t" if path.lower().endswith((".tsv", ".txt")) else ","
        try:
            mat = np.loadtxt(path, delimiter=delimiter, skiprows=1 if header else 0, ndmin=2, dtype=str)
            if header:  # the header names every column: a shorter or longer one means a broken table
                with open(path) as fh:
                    n_names = len(fh.readline().rstrip("\r\n").split(delimiter))
                if n_names not in (mat.shape[1], mat.shape[1] - 1 if index_col else -1):
                    raise ValueError(f"{path!r} has a header of {n_names} names but rows of {mat.shape[1]} fields; "
                                     "fix the table or set data.header / data.index_col / data.delimiter")
            if index_col:
                mat = mat[:, 1:]
            mat = mat.astype(np.float64)
        except ValueError as exc:
            if "has a header of" in str(exc):
                raise
            raise ValueError(
                f"could not parse {path!r} as a numeric {delimiter!r}-separated table ({exc}); "
                "set data.header / data.index_col / data.delimiter"
            ) from None
    elif fmt == "h5ad":
        return read_h5ad(path, transpose=transpose)[0]
    else:
        raise ValueError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return mat.T if transpose else mat


def load_any(path: str, **kw: Any):
    """``(matrix, adata_or_None)`` for any supported format."""
    fmt = kw.pop("fmt", None) or infer_format(path)
    if fmt == "h5ad":
        return read_h5ad(path, kw.get("layer"), transpose=kw.get("transpose", False))
    kw.pop("layer", None)
    return read_matrix(path, fmt=fmt, **kw), None


def space_errnos() -> tuple:
    """The errnos of a full disk, a full quota and a file-size limit (ENOSPC, EDQUOT, EFBIG)."""
    import errno

    return tuple(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))


def write_failed(what: str, exc: OSError, tail: str = "nothing was written there") -> str:
    """The one-line message of a failed write of ``what`` (a path, quoted by the caller)."""
    why = " ".join(str(exc.strerror or exc).split())
    if exc.errno in space_errnos():
        fix = "free space (or raise the file-size limit) or choose another --out"
    else:
        fix = "check the folder's permissions and free space, or choose another --out"
    return f"cannot write {what} ({why}); {fix}; {tail}"


class WriteFailed(ValueError):
    """A write that the OS refused (``errno``, ``filename`` as the ``OSError`` had them), as a
    one-line ``ValueError``."""

    def __init__(self, path: str, exc: OSError):
        super().__init__(write_failed(repr(path), exc))
        self.errno, self.strerror, self.filename = exc.errno, exc.strerror, path


def write_h5ad(adata, path: str) -> str:
    """Write ``adata`` to ``path`` as ``.h5ad``, atomically and with a failed write a one-line
    ``ValueError``; returns ``path``.

    HDF5 never touches the disk: the file is built in memory (h5py on a ``BytesIO``, through
    ``anndata.io.write_elem``, the same encoding ``AnnData.write_h5ad`` writes), then its bytes go
    to ``PATH.tmp-PID`` with plain file I/O and are renamed to ``path`` when complete. A full disk
    or a file-size limit (ENOSPC, EDQUOT, EFBIG) is therefore an ``OSError`` Python sees, not an
    error inside h5py's close path (where it crashed the process); it is raised as
    :class:`WriteFailed` (a ``ValueError``), the temporary is removed and ``path`` is left as it
    was. The cost is one copy of the file in memory while it is written. Like ``AnnData.write_h5ad``, string columns of obs/var become categoricals in ``adata``.
    """
    import io

    import h5py
    from anndata.io import write_elem

    if adata.isbacked:
        adata = adata.to_memory()
    adata.strings_to_categoricals()  # as AnnData.write_h5ad does
    if adata.raw is not None:
        adata.strings_to_categoricals(adata.raw.var)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        write_elem(f, "/", adata)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        view = buf.getbuffer()
        try:
            with open(tmp, "wb") as fh:
                fh.write(view)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            view.release()
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteFailed(path, exc) from None
    finally:
        buf.close()
        try:
            os.remove(tmp)
        except OSError:
            pass
    return path
