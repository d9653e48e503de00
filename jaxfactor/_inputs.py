"""One way in for every family's data: arrays or AnnData (``layer=``), checked by one layer of
validators (:mod:`jaxfactor._validate`, :func:`jaxfactor.data.check_allele_counts`) before anything
is compiled, for fits and for predictions alike.

Kinds of input:

- ``"matrix"``: a real matrix (cells × features), finite;
- ``"nonnegative"``: the same, ≥ 0 (NMF);
- ``"counts"``: non-negative whole numbers (VAE, ZINB-WaVE);
- ``"alleles"``: read counts per cell and variant — an AnnData with layers ``REF`` and ``ALT``
  (or ``ALT``/``AD`` with ``DP``), or a pair ``(REF, ALT)`` of matrices; returned as an AnnData.

Cells and variables are named by the AnnData; plain arrays get positional names ("0", "1", …),
and new data for a model fitted on positional names must have the same number of columns.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

KINDS = ("matrix", "nonnegative", "counts", "alleles")


class Inputs(NamedTuple):
    X: Any                  # the checked matrix (kinds matrix/nonnegative/counts) or the allele AnnData
    obs_names: np.ndarray
    var_names: np.ndarray
    adata: Any              # the AnnData given (None for arrays)
    named: bool             # whether the variables carry names (AnnData) or positions (arrays)


def is_anndata(x) -> bool:
    return hasattr(x, "obs") and hasattr(x, "var") and hasattr(x, "layers")


def _positional(n: int) -> np.ndarray:
    return np.arange(n).astype(str)


def _matrix_of(adata, layer: str | None):
    if layer is None:
        if adata.X is None:
            raise ValueError(f"adata.X is empty; pass layer= one of {sorted(adata.layers.keys()) or 'none'}")
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"layer {layer!r} not in adata.layers (available: {sorted(adata.layers.keys()) or 'none'}); "
                         "pass layer=None to use adata.X")
    return adata.layers[layer]


def check_matrix(X, kind: str, name: str = "X") -> np.ndarray:
    """``X`` checked as ``kind`` (see the module docstring), as a dense float NumPy array."""
    from ._validate import as_matrix

    if kind not in KINDS[:3]:
        raise ValueError(f"unknown input kind {kind!r}")
    arr = as_matrix(X, name, nonnegative=False)
    if kind in ("nonnegative", "counts") and arr.min() < 0:
        raise ValueError(f"{name} has {int(np.count_nonzero(arr < 0))} negative entries (min {arr.min():.4g}); "
                         "this model needs non-negative data (counts)")
    if kind == "counts":
        frac = arr != np.round(arr)
        if frac.any():
            raise ValueError(f"{name} has {int(frac.sum())} non-integer entries (e.g. {arr[frac].flat[0]:.4g}); "
                             "this model needs raw counts, not normalised values")
    return arr


def check_block(block: np.ndarray, kind: str, name: str, start: int) -> None:
    """The rules of ``kind`` (module docstring) on a block of new cells' rows that starts at cell
    ``start`` of the data (what ``jaxfactor predict`` streams): a one-line error naming the problem,
    how many cells have it and the first of them, before anything is written."""

    def fail(bad_rows, what, fix):
        cells = np.flatnonzero(bad_rows)
        if cells.size:
            raise ValueError(f"DATA's {name} has {what} in {cells.size} cell{'s' * (cells.size > 1)} "
                             f"(first: cell {start + int(cells[0])}); {fix}")

    finite = np.isfinite(block)
    fail(~finite.all(axis=1), "NaN or infinite entries", "remove or impute them")
    if kind in ("nonnegative", "counts", "alleles"):
        fail((block < 0).any(axis=1), "negative entries", "this model needs non-negative counts")
    if kind in ("counts", "alleles"):
        fail((block != np.round(block)).any(axis=1), "non-integer entries",
             "this model needs raw counts: predict from the matrix the model was fitted on")


def allele_layers(adata):
    """(REF, ALT) of an AnnData: layers REF/ALT, or ALT (or AD) with DP (REF = DP − ALT); validated
    counts (sparse stays sparse), the AnnData untouched."""
    from .data import check_allele_counts
    from .data._variants import _as_counts

    if not is_anndata(adata):
        raise ValueError(f"expected an AnnData (cells x variants) with layers 'REF' and 'ALT', got {type(adata).__name__}")
    layers = set(adata.layers.keys())
    alt_name = "ALT" if "ALT" in layers else ("AD" if "AD" in layers else None)
    if "REF" not in layers and alt_name and "DP" in layers:
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ValueError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} variants)")
        alt = _as_counts(adata.layers[alt_name], alt_name)
        dp = _as_counts(adata.layers["DP"], "DP")
        a, d = (sp.csr_matrix(alt), sp.csr_matrix(dp)) if sp.issparse(alt) or sp.issparse(dp) else (alt, dp)
        ref = d - a
        neg = (ref.data < 0).sum() if sp.issparse(ref) else (ref < 0).sum()
        if neg:
            raise ValueError(f"{alt_name} exceeds DP in {int(neg)} entries; DP must be the total REF + ALT reads per cell and variant")
        if sp.issparse(ref):
            ref = sp.csr_matrix(ref)
            ref.eliminate_zeros()
        return ref, a
    return check_allele_counts(adata)


def _allele_anndata(data):
    """An AnnData with integer layers REF and ALT from an AnnData or a pair ``(REF, ALT)``."""
    import anndata

    if is_anndata(data):
        ref, alt = allele_layers(data)
        if "REF" in data.layers and "ALT" in data.layers:
            return data, True
        out = data.copy()
        out.layers["REF"], out.layers["ALT"] = ref, alt
        return out, True
    if isinstance(data, (tuple, list)) and len(data) == 2:
        from .data._variants import _check_pair

        ref, alt = _check_pair(*data)
        X = sp.csr_matrix(ref + alt) if sp.issparse(ref) else np.asarray(ref + alt)
        ad = anndata.AnnData(X=X, layers={"REF": ref, "ALT": alt})
        ad.obs_names, ad.var_names = _positional(ad.n_obs), _positional(ad.n_vars)
        return ad, False
    raise ValueError(f"allele counts must be an AnnData with layers REF and ALT (or ALT and DP) or a pair (REF, ALT) "
                     f"of cells x variants matrices, got {type(data).__name__}")


def _checked_sparse(M, name: str):
    """A scipy sparse matrix checked (numeric, non-empty, finite stored values) without densifying."""
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {M.shape}); it needs at least one row and one column")
    if not (np.issubdtype(M.dtype, np.number) or M.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {M.dtype}; convert it with .astype(float)")
    bad = ~np.isfinite(M.data)
    if bad.any():
        n_nan = int(np.isnan(M.data).sum())
        raise ValueError(f"{name} has {n_nan} NaN and {int(bad.sum()) - n_nan} infinite entries; impute or drop them before fitting")
    return sp.csr_matrix(M)


def read(data, kind: str, layer: str | None = None, *, sparse_ok: bool = False) -> Inputs:
    """``data`` (array, sparse matrix, AnnData, or for alleles a (REF, ALT) pair) checked as ``kind``;
    ``sparse_ok`` keeps a scipy sparse matrix sparse (kind ``"matrix"``; the model checks the rest)."""
    if kind == "alleles":
        if layer is not None:
            raise ValueError("layer= does not apply to allele counts; they are read from layers REF and ALT (or ALT and DP)")
        ad, named = _allele_anndata(data)
        return Inputs(ad, np.asarray(ad.obs_names).astype(str), np.asarray(ad.var_names).astype(str),
                      data if is_anndata(data) else None, named)
    keep = lambda M, name: _checked_sparse(M, name) if sparse_ok and sp.issparse(M) else check_matrix(M, kind, name)  # noqa: E731
    if is_anndata(data):
        X = keep(_matrix_of(data, layer), f"layer {layer!r}" if layer else "adata.X")
        return Inputs(X, np.asarray(data.obs_names).astype(str), np.asarray(data.var_names).astype(str), data, True)
    if layer is not None:
        raise ValueError(f"layer={layer!r} was given but the data is a {type(data).__name__}, not an AnnData")
    X = keep(data, "X")
    return Inputs(X, _positional(X.shape[0]), _positional(X.shape[1]), None, False)


def aligned_blocks(model, data, layer: str | None) -> list[np.ndarray]:
    """New cells' blocks for ``model.kernel``: the fitted variables (those the fit kept), matched by
    name for an AnnData fitted on an AnnData, by position otherwise (same number of columns)."""
    inp = read(data, model.inputs, layer)
    fitted = np.asarray(model.var_names).astype(str)
    named = bool(model.settings.get("named_variables", True))
    if inp.named and named:
        index = {n: i for i, n in enumerate(inp.var_names)}
        missing = [n for n in fitted if n not in index]
        if missing:
            raise ValueError(f"{len(missing)} of the {len(fitted)} fitted variables are not in the data (first: "
                             f"{', '.join(missing[:3])}); pass data with the variables the model was fitted on")
        cols = np.array([index[n] for n in fitted])
    else:
        if len(inp.var_names) != len(fitted):
            raise ValueError(f"the data has {len(inp.var_names)} variables but the model was fitted on {len(fitted)}"
                             f"{' (without names, so they are matched by position)' if not named or not inp.named else ''}; "
                             "pass data with the same variables in the same order")
        cols = np.arange(len(fitted))
    if model.genes is not None:
        cols = cols[np.asarray(model.genes)]
    if model.inputs == "alleles":
        ref, alt = allele_layers(inp.X)
        dense = lambda m: (m[:, cols].toarray() if sp.issparse(m) else np.asarray(m)[:, cols]).astype(np.float32)
        return [dense(ref), dense(alt)]
    return [np.asarray(inp.X[:, cols], np.float32)]
