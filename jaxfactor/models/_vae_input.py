"""Input checks of the VAE: reading a matrix or AnnData layer, value checks for the chosen
likelihood, and small argument validators, shared by training (:mod:`._vae_api`) and batch
inference (:mod:`._vae_infer`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import check_int, check_number
from ..data._io import anndata_matrix
from ._likelihoods import COUNT_LIKELIHOODS

OBSM_KEY = "X_jaxfactor_vae"


def read_input(data, layer: str | None = None, name: str = "X"):
    """``(matrix, adata or None, gene names or None)``; the matrix stays sparse if it is."""
    if hasattr(data, "obs") and hasattr(data, "var"):
        return anndata_matrix(data, layer), data, [str(v) for v in data.var_names]
    if layer is not None:
        raise ValueError(f"layer={layer!r} needs an AnnData input; pass the matrix itself otherwise")
    if not sp.issparse(data):
        try:
            data = np.asarray(data)
        except Exception as exc:
            raise ValueError(f"{name} could not be converted to a numeric array ({exc})") from None
    return data, None, None


def check_values(mat, likelihood: str, transform: str, name: str = "X", *, integer: bool = True) -> None:
    """Finite; non-negative unless Gaussian without log1p; integer for count likelihoods."""
    if mat.ndim != 2 or 0 in mat.shape:
        raise ValueError(f"{name} must be a non-empty 2-D cells x genes matrix, got shape {mat.shape}")
    if not (np.issubdtype(mat.dtype, np.number) or mat.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {mat.dtype}")
    vals = np.asarray(mat.data if sp.issparse(mat) else mat)
    n_bad = int(vals.size - np.count_nonzero(np.isfinite(vals)))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(vals)))
        raise ValueError(f"{name} has {n_nan} NaN and {n_bad - n_nan} infinite entries; remove or impute them before fitting")
    needs_nonneg = likelihood != "gaussian" or transform == "log1p"
    if needs_nonneg and vals.size and vals.min() < 0:
        why = f"likelihood={likelihood!r}" if likelihood != "gaussian" else "transform='log1p'"
        raise ValueError(f"{name} has {int(np.count_nonzero(vals < 0))} negative entries (min {vals.min():.4g}); "
                         f"{why} needs non-negative counts")
    if integer and likelihood in COUNT_LIKELIHOODS and np.issubdtype(vals.dtype, np.floating):
        frac = vals != np.round(vals)
        if frac.any():
            raise ValueError(f"{name} has {int(np.count_nonzero(frac))} non-integer entries (e.g. {vals[frac][0]:.4g}); "
                             f"likelihood={likelihood!r} needs raw counts: pass the counts layer or use likelihood='gaussian'")


def dense32(mat, rows=None, cols=None) -> np.ndarray:
    if rows is not None:
        mat = mat[rows]
    if cols is not None:
        mat = mat[:, cols]
    return np.asarray(mat.toarray() if sp.issparse(mat) else mat, dtype=np.float32)


def _int(value, name, minimum=1):
    return check_int(value, name, minimum)


def _num(value, name, lo=0.0, hi=None, hi_open=False):
    return check_number(value, name, lo, hi, high_open=hi_open)


def _choice(value, name, choices):
    # not check_choice: "likelihood='tweedie' is not one of" is this message's documented form
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(map(repr, choices))}")
    return value
