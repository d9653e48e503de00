"""Input checks shared by the Python API and the runner.

Every check raises a one-line ``ValueError`` that names the problem and the fix, before anything
is compiled. NumPy only, and nothing from the rest of the package, so every module can use it.

- ``as_matrix``: a finite 2-D float array; ``check_n_components``: ``1 <= n <= min(shape)``.
- ``check_int(value, name, minimum, maximum, allow_none=)``: Python/NumPy integers, never ``bool``;
  ``check_positive_int`` is ``check_int`` with a lower bound (1 unless given).
- ``check_number(value, name, low, high, low_open=, high_open=, what=)``: a finite int/float in a
  range, never ``bool``; ``check_nonnegative_float`` (``>= 0``) and ``check_probability``
  (``[0, 1]``, either end open) are special cases.
- ``check_choice(value, name, choices, hint=)``: ``unknown NAME 'x'; choose one of 'a', 'b'``.
"""

from __future__ import annotations

import numpy as np


def as_matrix(X, name: str = "X", *, nonnegative: bool = True) -> np.ndarray:
    """Return ``X`` as a finite 2-D float NumPy array, or raise ``ValueError`` saying what is wrong.

    Scipy sparse matrices are densified; AnnData objects are refused with a pointer to the layer
    accessor (pass ``adata.X`` or ``adata.layers[name]``).
    """
    if hasattr(X, "obs") and hasattr(X, "var"):
        raise ValueError(f"{name} is an AnnData object; pass an array such as adata.X or adata.layers['counts']")
    if hasattr(X, "toarray"):
        X = X.toarray()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to a numeric array ({exc})") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} is complex (dtype {arr.dtype}); pass real values (e.g. np.abs(X) or X.real, "
                         "whichever your data mean)")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}; convert it with np.asarray(..., dtype=float)")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features), got shape {arr.shape}; reshape it")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs at least one row and one column")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        raise ValueError(
            f"{name} has {n_nan} NaN and {n_bad - n_nan} infinite entries; impute or drop them before fitting"
        )
    if nonnegative and arr.min() < 0:
        raise ValueError(
            f"{name} has {int(np.count_nonzero(arr < 0))} negative entries (min {arr.min():.4g}); "
            "NMF needs non-negative data: use counts or shift/clip the matrix"
        )
    return arr


def _fmt(x) -> str:
    """A bound as written in a message: ints as they are, floats shortest (0.0 -> 0, 1e-06)."""
    return str(int(x)) if isinstance(x, (int, np.integer)) else f"{float(x):g}"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    """The allowed range as message text: ``" >= 1"``, ``" in (0, 1]"`` or ``""`` (no bound)."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_fmt(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_fmt(high)}"
    return ""


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None, *,
              allow_none: bool = False) -> int | None:
    """``value`` as a Python ``int`` with ``minimum <= value <= maximum`` (either bound optional).

    Python and NumPy integers pass; ``bool``, floats (even ``2.0``) and strings do not. With
    ``allow_none``, ``None`` passes through unchanged.
    """
    if allow_none and value is None:
        return None
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            rng = f" with {minimum} <= {name} <= {maximum}"
        else:
            rng = _bounds(minimum, maximum, False, False)
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}an integer{rng}, got {value!r}")
    return int(value)


def check_number(value, name: str, low=None, high=None, *, low_open: bool = False, high_open: bool = False,
                 what: str | None = None) -> float:
    """``value`` as a finite Python ``float`` within ``[low, high]`` (``low_open``/``high_open``
    make that end exclusive; either bound optional).

    Python and NumPy ints and floats pass; ``bool``, strings, NaN and ±inf do not. ``what`` names
    the quantity in the message (``"min_maf is a percentage of cells and must be ..."``).
    """
    lead = f"{name} is {what} and must be" if what else f"{name} must be"
    if not _is_number(value):
        raise ValueError(f"{lead} a number{_bounds(low, high, low_open, high_open)}, got {value!r}")
    bad = (not np.isfinite(value)
           or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise ValueError(f"{lead} a finite number{_bounds(low, high, low_open, high_open)}, got {value!r}")
    return float(value)


def check_probability(value, name: str, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (``low_open``/``high_open`` exclude 0 or 1)."""
    return check_number(value, name, 0, 1, low_open=low_open, high_open=high_open)


def check_choice(value, name: str, choices, *, hint: str = ""):
    """``value`` unchanged if it is one of ``choices``; else ``unknown NAME 'x'; choose one of ...``.

    When every choice is a string, a non-string value is refused (no elementwise ``==`` on arrays).
    ``hint`` is appended to the message (e.g. ``"or pass means_init"``).
    """
    choices = tuple(choices)
    if all(isinstance(c, str) for c in choices) and not isinstance(value, str):
        ok = False
    else:
        try:
            ok = bool(value in choices)
        except Exception:  # an array's ambiguous truth value and the like
            ok = False
    if not ok:
        listed = ", ".join(map(repr, choices))
        raise ValueError(f"unknown {name} {value!r}; choose one of {listed}{' ' + hint if hint else ''}")
    return value


def check_n_components(n_components, shape: tuple[int, int]) -> int:
    """``1 <= n_components <= min(n_samples, n_features)``."""
    check_int(n_components, "n_components")
    limit = min(shape)
    if not 1 <= n_components <= limit:
        raise ValueError(
            f"n_components={n_components} is out of range for data of shape {tuple(shape)}; "
            f"choose 1 <= n_components <= {limit}"
        )
    return int(n_components)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (``check_int`` with a lower bound; kept for its many callers)."""
    return check_int(value, name, minimum)


def check_nonnegative_float(value, name: str) -> float:
    """A finite number ``>= 0``, as a float."""
    return check_number(value, name, 0)
