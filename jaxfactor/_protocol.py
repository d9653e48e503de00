"""The protocol every model family answers: ``fit``, ``to_anndata``, ``transform`` / ``predict``,
``scores`` and ``save`` / ``load``, in one vocabulary.

A family's fitted model is a :class:`Fitted` subclass holding the family's native result (its
``NMFResult``, ``GMMResult``...) together with what the data it was fitted on looked like (the
cell and variable names, which cells and variables the fit kept). Underneath, every family stays a
set of pure JAX functions; a family contributes

- ``fit(data, n_components, *, layer, n_init, max_iter, tol, seed, mesh, **options)`` (classmethod),
- ``simulate(seed)`` (classmethod): a small AnnData drawn from the model, truth in ``obs['truth']``,
- ``params()`` / ``static()`` and a pure, batchable ``kernel(params, *blocks, **static) -> dict``
  that maps a block of new cells to per-cell outputs (``embedding``, ``proba``,
  ``log_likelihood``...): what :meth:`Fitted.transform`, :meth:`Fitted.predict` and
  ``jaxfactor predict`` run,
- ``_cell_outputs()`` / ``_var_outputs()`` / ``_uns()``: the fit's per-cell, per-variable and
  unstructured results for :meth:`Fitted.to_anndata`,
- ``scores()``: named :class:`Score` values with their direction declared.

This is blackjax's shape (one kernel per algorithm, one generated user-facing wrapper) with
scikit-learn's estimator vocabulary (``n_components``, ``n_init``, ``max_iter``, ``tol``, a seed)
and scverse's AnnData conventions (never mutate the input; namespaced keys:
``obsm['X_<family>']``, ``obs['<family>_…']``, ``varm['<family>_…']``, ``uns['<family>']``).
"""

from __future__ import annotations

import abc
import importlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

FORMAT_VERSION = 1


class IntOrAuto:
    """Type of an option that is an integer >= 1 or the string ``"auto"`` (``option_types``)."""


class Score(NamedTuple):
    """A named score of a fit and the direction in which it is better."""

    name: str
    value: float
    higher_is_better: bool

    def better(self, other: "Score") -> bool:
        """Whether this score beats ``other`` (same name)."""
        return self.value > other.value if self.higher_is_better else self.value < other.value


# ----------------------------------------------------------------------------------------------
# one vocabulary

ALIASES = {"k": "n_components", "n_clones": "n_components", "n_latent": "n_components", "n_restarts": "n_init",
           "n_cycles": "max_iter", "num_steps": "max_iter", "max_epochs": "max_iter"}


def canonical(options: dict, where: str) -> dict:
    """``options`` with the deprecated names (``k``, ``n_clones``, ``n_latent``, ``n_restarts``,
    ``n_cycles``, ``num_steps``, ``max_epochs``) renamed to the shared vocabulary, warning once
    per name (``DeprecationWarning``); both the old and the new name given is an error."""
    out = dict(options)
    for old, new in ALIASES.items():
        if old in out:
            if out.get(new) is not None:
                raise ValueError(f"{where}: both {old!r} and {new!r} given; pass only {new!r}")
            warnings.warn(f"{where}: {old!r} is deprecated, use {new!r} (accepted until the next release)",
                          DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def renamed_arguments(**old_to_new: str):
    """Decorator: keyword arguments under their deprecated names (``old=new``) are passed on under
    the new ones with a ``DeprecationWarning`` (for one release); old and new both given is a
    one-line ``ValueError``."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ValueError(f"{fn.__name__}: both {old!r} and {new!r} given; pass only {new!r}")
                    warnings.warn(f"{fn.__name__}: {old!r} is deprecated, use {new!r} (accepted until the next release)",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.renamed_arguments = dict(old_to_new)
        return wrapper

    return deco


def vocabulary(where: str, n_components, n_init, aliases: dict, max_iter=None):
    """``(n_components, n_init, max_iter)`` of a family's ``fit`` after the deprecated names in ``aliases``
    (see :func:`canonical`); an alias of the size beside ``n_components`` is an error, and any other
    leftover keyword a ``TypeError`` naming it."""
    if n_components is not None and any(ALIASES.get(k) == "n_components" for k in aliases):
        old = next(k for k in aliases if ALIASES.get(k) == "n_components")
        raise ValueError(f"{where}: both {old!r} and 'n_components' given; pass only 'n_components'")
    a = canonical(aliases, where)
    n_components, n_init = a.pop("n_components", n_components), a.pop("n_init", n_init)
    max_iter = a.pop("max_iter", max_iter)
    if a:
        raise TypeError(f"{where} got unexpected arguments {sorted(a)}")
    return n_components, n_init, max_iter


# ----------------------------------------------------------------------------------------------
# saving a native result: arrays to .npz, the rest to JSON, types by their jaxfactor path


def _type_path(obj) -> str:
    cls = type(obj)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if not cls.__module__.startswith("jaxfactor."):
        raise TypeError(f"cannot save an object of type {path}")
    return path


def _resolve(path: str):
    module, _, name = path.partition(":")
    if not module.startswith("jaxfactor."):
        raise ValueError(f"refusing to load type {path!r}: only jaxfactor types are restored")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def encode(obj, arrays: dict, prefix: str = "r"):
    """A JSON-able description of ``obj``; its arrays go to ``arrays[<path>]``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float, np.integer, np.floating, np.bool_)):
        return obj.item() if isinstance(obj, np.generic) else obj
    if hasattr(obj, "__array__") and not isinstance(obj, (list, tuple, dict)):
        arr = np.asarray(obj)
        arrays[prefix] = arr.astype(str) if arr.dtype == object else arr  # .npz is read without pickle
        return {"__array__": prefix}
    if is_dataclass(obj) or hasattr(obj, "_fields"):
        names = [f.name for f in fields(obj)] if is_dataclass(obj) else list(obj._fields)
        return {"__type__": _type_path(obj), "fields": {n: encode(getattr(obj, n), arrays, f"{prefix}.{n}") for n in names}}
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a pandas DataFrame
        return {"__frame__": [[str(c), encode(obj[c].to_numpy(), arrays, f"{prefix}.{c}")] for c in obj.columns],
                "index": encode(np.asarray(obj.index).astype(str), arrays, f"{prefix}.__index__")}
    if isinstance(obj, dict):
        return {"__dict__": [[str(k), encode(v, arrays, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [encode(v, arrays, f"{prefix}.{i}") for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
    raise TypeError(f"cannot save {prefix} of type {type(obj).__name__}")


def decode(desc, arrays):
    if isinstance(desc, dict):
        if "__array__" in desc:
            return arrays[desc["__array__"]]
        if "__type__" in desc:
            return _resolve(desc["__type__"])(**{n: decode(v, arrays) for n, v in desc["fields"].items()})
        if "__frame__" in desc:
            import pandas as pd

            return pd.DataFrame({c: decode(v, arrays) for c, v in desc["__frame__"]}, index=decode(desc["index"], arrays))
        if "__dict__" in desc:
            return {k: decode(v, arrays) for k, v in desc["__dict__"]}
        if "__list__" in desc:
            items = [decode(v, arrays) for v in desc["__list__"]]
            return tuple(items) if desc["tuple"] else items
    return desc


def _atomic_dir(path: str):
    """A fresh temporary folder beside ``path`` (renamed onto it once complete)."""
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        raise ValueError(f"cannot save to {path}: folder {parent} does not exist; create it first")
    return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)


# ----------------------------------------------------------------------------------------------
# the fitted model


@dataclass
class Fitted(abc.ABC):
    """A fitted model of one family (see the module docstring).

    Attributes:
      result: the family's native result (attribute access falls through to it: ``model.W``).
      obs_names, var_names: the cells and variables of the data given to ``fit``.
      cells, genes: positions (in ``obs_names`` / ``var_names``) the fit kept; ``None``: all.
      settings: the arguments of the fit (JSON-able).
    """

    result: Any
    obs_names: np.ndarray
    var_names: np.ndarray
    settings: dict = field(default_factory=dict)
    cells: np.ndarray | None = None
    genes: np.ndarray | None = None

    family: ClassVar[str] = ""
    inputs: ClassVar[str] = "matrix"      # "matrix" | "counts" | "alleles": what transform reads
    has_labels: ClassVar[bool] = False    # whether predict gives a label per cell
    batch_size: ClassVar[int] = 4096
    trace_higher_is_better: ClassVar[bool] = True  # the direction of uns[<family>]['trace'] (NMF: an objective)
    option_help: ClassVar[dict] = {}      # one line per fit option (the runner's `jaxfactor models`)
    option_choices: ClassVar[dict] = {}   # the allowed values of string options
    embedding_is_loadings: ClassVar[bool] = False  # non-negative loadings per component (drawn as a heatmap)

    @classmethod
    def _one_device(cls, mesh) -> None:
        """Refuse ``mesh=`` for a family that fits on one device."""
        if mesh is not None:
            raise ValueError(f"{cls.family} fits on one device; mesh= (cell sharding) is not supported for it")

    # --- what a family implements (abstract: a family without one of them cannot be built) -----
    @classmethod
    @abc.abstractmethod
    def fit(cls, data, n_components=None, **options) -> "Fitted":
        """Fit the family to ``data`` (see the module docstring for the shared vocabulary)."""

    @classmethod
    @abc.abstractmethod
    def simulate(cls, seed: int = 0):
        """A small AnnData drawn from the model, the truth in ``obs['truth']``."""

    @abc.abstractmethod
    def params(self) -> Any:
        """The arrays ``kernel`` holds fixed (a pytree)."""

    def static(self) -> dict:
        return {}

    @staticmethod
    @abc.abstractmethod
    def kernel(params, *blocks, **static) -> dict:
        """Per-cell outputs of a block of new cells: pure and batchable."""

    @abc.abstractmethod
    def scores(self) -> dict[str, Score]:
        """Named scores of the fit, each with its direction."""

    def _cell_outputs(self) -> dict:
        """Per kept cell: ``embedding`` (→ obsm X_<family>), ``proba`` (→ obsm <family>_proba),
        ``label`` (→ obs <family>_label, categorical), other 1-D arrays (→ obs <family>_<key>)."""
        return {}

    def _var_outputs(self) -> dict:
        """Per kept variable: arrays (→ varm <family>_<key>; 1-D ones → var <family>_<key>)."""
        return {}

    def _uns(self) -> dict:
        return {}

    def _verdicts(self) -> list[str]:
        """Lines the run's summary must show about this fit (a failed validation, a warning that
        changes how to read the result); none by default."""
        return []

    def truth_metrics(self, truth) -> dict:
        """Recovery of a simulation's truth (``truth``: the simulator's result) beyond the labels'
        ARI, as named numbers; none by default."""
        return {}

    # --- the runner's results folder (optional) ------------------------------------------------
    def tables(self) -> dict:
        """Named tables (pandas DataFrames) the runner writes beside the results as ``<name>.csv``."""
        return {}

    def figure(self, folder: str, name: str) -> bool:
        """Draw the family's own figure ``folder/name``; False: the runner's generic one is drawn."""
        return False

    # --- sweeps (optional) ---------------------------------------------------------------------
    #: fit options a sweep compares side by side instead of choosing between them (their
    #: scores are not comparable: e.g. the clone caller's method)
    compared_options: ClassVar[tuple] = ()

    #: fit options whose sweep points are fitted together by one ``fit_points`` call (e.g.
    #: CCLONE's filter settings of one rank share a compiled call); the runner groups points
    #: that differ only in these
    sweep_together: ClassVar[tuple] = ()

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Fit several points (each a dict of options with ``n_components``) sharing ``shared``
        options; one model per point, or a string saying why a point was skipped. By default one
        ``fit`` per point; a grid family (``hparams``) fits points that differ only in those
        numbers in one compiled call, vmapped over points × restarts (:func:`jaxfactor._grid.fit_grid`)."""
        if cls.hparams is None or len(points) == 1 or shared.get("mesh") is not None:
            return [cls.fit(data, **point, **shared) for point in points]
        from ._grid import fit_grid

        return fit_grid(cls, data, points, shared)

    # --- a grid family (optional): numbers a sweep varies inside one compiled, vmapped call ---
    #: the NamedTuple of numeric fit options that are pytree data of the family's Algorithm; a
    #: family that sets it implements ``algorithm``, ``state_arrays`` and ``from_arrays``, and the
    #: runner fits every point of a sweep that differs only in these numbers in one compiled call
    hparams: ClassVar[type | None] = None

    @classmethod
    def algorithm(cls, static: dict, mesh=None):
        """The :class:`~jaxfactor.Algorithm` of one shape point (``static``: the fit options
        that are not ``hparams``); with a cell ``mesh``, its cell-sharded form (``cell_layout``)."""
        raise TypeError(f"{cls.family} is not a grid family (its fitted-model class sets no hparams)")

    @classmethod
    def cell_layout(cls):
        """How a cell mesh splits the data and the state (a ``CellLayout``); None: no cell sharding."""
        return None

    @staticmethod
    def state_arrays(state) -> dict:
        """The named arrays of a fitted state (what a sweep point stores; a grid family's)."""
        raise TypeError("state_arrays belongs to a grid family (a fitted-model class that sets hparams)")

    @staticmethod
    def restart_keys(seed: int, n_init: int):
        """The restart keys the family's own ``fit`` draws: the seed's key for one restart, its
        split for several (``fit_restarts``)."""
        import jax

        key = jax.random.PRNGKey(seed)
        return key[None] if n_init == 1 else jax.random.split(key, n_init)

    @staticmethod
    def algorithm_data(X):
        """The data the Algorithm iterates on, from the checked matrix (PPCA: its moments)."""
        return X

    @classmethod
    def check_grid_data(cls, X, n_components: int) -> None:
        """The family's rules for data and rank, checked before a grid is compiled."""
        if n_components > X.shape[0]:
            raise ValueError(f"n_components={n_components} is more than the {X.shape[0]} cells; "
                             "choose 1 <= n_components <= n_cells")

    @classmethod
    def from_arrays(cls, arrays: dict, info: dict, obs_names, var_names, settings: dict, X=None) -> "Fitted":
        """The fitted model of one sweep point from its ``state_arrays`` and ``info`` (objective,
        n_iter, converged, trace, trace_iter, restart_objectives; ``X``: the data, when the model
        keeps per-cell outputs computed from it)."""
        raise TypeError(f"{cls.family} is not a grid family (its fitted-model class sets no hparams)")

    def heatmaps(self) -> dict:
        """Named matrices drawn for this fit: the cells' embedding or posteriors (cells ordered
        by their label) and the per-variable components."""
        cells, var = self._cell_outputs(), self._var_outputs()
        out = {}
        rep = cells.get("proba", cells.get("embedding"))
        if rep is not None and np.ndim(rep) == 2 and np.shape(rep)[1]:
            rep = np.asarray(rep)
            order = np.lexsort((-rep.max(axis=1), rep.argmax(axis=1)))
            out[f"{self.family}: cells (ordered by dominant component) x components"] = rep[order]
        for key, value in var.items():
            if np.ndim(value) == 2:
                out[f"{self.family} {key}: components x variables"] = np.asarray(value).T
        return out

    def selection(self) -> Score:
        """The score that compares fits of different sizes: BIC where the family has one, else
        its first score."""
        scores = self.scores()
        return scores.get("bic", next(iter(scores.values())))

    # --- generic ----------------------------------------------------------------------------
    def __getattr__(self, name):
        # only reached when normal lookup fails: fall through to the native result (model.W)
        if name.startswith("_") or "result" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["result"], name)

    @property
    def n_components(self) -> int:
        return int(self.settings["n_components"])

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v.value:.6g} ({'higher' if v.higher_is_better else 'lower'} is better)"
                          for k, v in self.scores().items())
        return (f"{type(self).__name__}(family={self.family!r}, n_components={self.n_components}, "
                f"cells={len(self.obs_names)}, variables={len(self.var_names)}, {shown})")

    def apply(self, data, *, layer: str | None = None) -> dict:
        """Every per-cell output of the kernel for new cells (``data``: an AnnData, read by
        variable name, or arrays with the fitted variables in order)."""
        from ._inputs import aligned_blocks

        blocks = aligned_blocks(self, data, layer)
        out = run_kernel(self.kernel, self.params(), blocks, self.static(), self.batch_size)
        return self.decode_outputs({k: v for k, v in out.items() if not k.startswith("_")})  # "_...": diagnostics

    @staticmethod
    def decode_outputs(out: dict) -> dict:
        """The kernel's outputs as users read them (e.g. call codes as names); unchanged by default."""
        return out

    def transform(self, data, *, layer: str | None = None) -> np.ndarray:
        """Each new cell's representation: its embedding (factor loadings, latent position) or,
        for mixtures and clone models, its posterior probabilities."""
        out = self.apply(data, layer=layer)
        return out["embedding"] if "embedding" in out else out["proba"]

    @classmethod
    def fit_predict(cls, data, n_components=None, **options) -> np.ndarray:
        """``fit`` then the fitted cells' labels (scikit-learn's ``fit_predict``), for families
        that give labels."""
        if not cls.has_labels:
            raise ValueError(f"{cls.family} gives no labels; use fit() and transform()")
        model = cls.fit(data, n_components, **options)
        label = model._cell_outputs().get("label")
        return np.asarray(label) if label is not None else model.predict(data, layer=options.get("layer"))

    def predict(self, data, *, layer: str | None = None) -> np.ndarray:
        """Each new cell's label (most probable component / clone, or dominant factor)."""
        if not self.has_labels:
            raise ValueError(f"{self.family} gives no labels; use transform() for the cells' representation")
        out = self.apply(data, layer=layer)
        return np.asarray(out.get("proba", out.get("embedding"))).argmax(axis=1)

    def to_anndata(self, adata=None, *, compat: bool = False):
        """A new AnnData (``adata`` is never modified) with the fit's results under namespaced
        keys: ``obsm['X_<family>']``, ``obsm['<family>_proba']``, ``obs['<family>_label']``
        (categorical), ``obs['<family>_<key>']``, ``varm['<family>_<key>']``, ``uns['<family>']``
        (settings, scores). ``adata``: the data given to ``fit`` (cells and variables matched by
        name; those the fit dropped get NaN / no label); ``None``: an AnnData without X.
        ``compat=True`` also writes a family's published keys (CCLONE's ``obsm['C']`` /
        ``varm['V']``)."""
        import anndata
        import pandas as pd

        if adata is None:
            out = anndata.AnnData(obs=pd.DataFrame(index=pd.Index(self.obs_names.astype(str))),
                                  var=pd.DataFrame(index=pd.Index(self.var_names.astype(str))))
        else:
            if not (hasattr(adata, "obs") and hasattr(adata, "var")):
                raise ValueError(f"to_anndata expects an AnnData or None, got {type(adata).__name__}")
            out = adata.copy()
        rows = _positions(out.obs_names, self.obs_names, self.cells, "cells")
        cols = _positions(out.var_names, self.var_names, self.genes, "variables")
        fam = self.family
        cell_outputs = self._cell_outputs()
        for key, value in cell_outputs.items():
            value = np.asarray(value)
            if key == "label":
                labels = np.full(out.n_obs, None, dtype=object)
                labels[rows >= 0] = value.astype(str)[rows[rows >= 0]]
                rep = cell_outputs.get("proba", cell_outputs.get("embedding"))
                # every component is a category, also one no cell was assigned to
                cats = ([str(c) for c in range(np.shape(rep)[1])] if rep is not None and np.issubdtype(value.dtype, np.integer)
                        else [str(c) for c in sorted(np.unique(value))])
                out.obs[f"{fam}_label"] = pd.Categorical(labels, categories=cats)
                continue
            full = _scatter(value, rows)
            if key == "embedding":
                out.obsm[f"X_{fam}"] = full
            elif full.ndim == 1:
                out.obs[f"{fam}_{key}"] = full
            else:
                out.obsm[f"{fam}_{key}"] = full
        for key, value in self._var_outputs().items():
            full = _scatter(np.asarray(value), cols)
            if full.ndim == 1:
                out.var[f"{fam}_{key}"] = full
            else:
                out.varm[f"{fam}_{key}"] = full
        if adata is not None and hasattr(self, "_layer_outputs"):  # cells x variables results need the data
            kept_r, kept_c = np.flatnonzero(rows >= 0), np.flatnonzero(cols >= 0)
            if len(kept_r) == (len(self.obs_names) if self.cells is None else len(self.cells)):
                order_r = kept_r[np.argsort(rows[kept_r])]
                order_c = kept_c[np.argsort(cols[kept_c])]
                layer = self.settings.get("layer")
                Y = (out.layers[layer] if layer else out.X)[order_r][:, order_c]
                Y = np.asarray(Y.toarray() if hasattr(Y, "toarray") else Y, np.float64)
                for key, value in self._layer_outputs(Y).items():
                    full = np.full(out.shape, np.nan, np.float32)
                    full[np.ix_(order_r, order_c)] = value
                    out.layers[f"{fam}_{key}"] = full
        if compat:
            for slot, key, value in self._compat_outputs(rows, cols):
                getattr(out, slot)[key] = value
        uns = self._uns()
        if "trace" in uns:  # every trace says which way is better
            uns["trace_higher_is_better"] = bool(self.trace_higher_is_better)
        out.uns[fam] = {"settings": _h5_safe(self.settings), **_h5_safe(uns),
                        "scores": {k: {"value": float(s.value), "higher_is_better": bool(s.higher_is_better)}
                                   for k, s in self.scores().items()}}
        return out

    def _compat_outputs(self, rows, cols):
        return []

    def _cached_transform(self, key: str, adata):
        """``transform`` of the fitted cells (in the fit's order), computed once from ``adata`` and
        kept as ``key`` — for families whose result does not store the training cells' outputs
        (and for a loaded model). None when neither is available."""
        if key not in self.__dict__ and adata is not None:
            names = self.obs_names if self.cells is None else self.obs_names[np.asarray(self.cells)]
            where = {str(n): i for i, n in enumerate(adata.obs_names)}
            if all(str(n) in where for n in names):
                rows = [where[str(n)] for n in names]
                self.__dict__[key] = np.asarray(self.transform(adata[rows], layer=self.settings.get("layer")), np.float32)
        return self.__dict__.get(key)

    def save(self, path: str) -> str:
        """Write the model to the folder ``path`` (``model.json`` + ``arrays.npz``), atomically;
        an existing ``path`` is refused. :func:`jaxfactor.load` reads it back."""
        if os.path.exists(path):
            raise ValueError(f"{path} exists; choose another path or remove it first")
        arrays: dict = {}
        meta = {"format": FORMAT_VERSION, "class": _type_path(self), "family": self.family,
                "settings": self.settings}
        arrays["obs_names"] = np.asarray(self.obs_names).astype(str)
        arrays["var_names"] = np.asarray(self.var_names).astype(str)
        for name in ("cells", "genes"):
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        tmp = _atomic_dir(path)
        try:
            meta["result"] = self._encode_result(arrays, tmp)
            np.savez(os.path.join(tmp, "arrays.npz"), **arrays)
            with open(os.path.join(tmp, "model.json"), "w") as fh:
                json.dump(meta, fh, default=_json_default)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _encode_result(self, arrays: dict, folder: str):
        """How ``result`` is saved: by default its arrays into ``arrays`` and the rest into JSON;
        a family may write its own files into ``folder`` instead."""
        return encode(self.result, arrays)

    @classmethod
    def _decode_result(cls, desc, arrays, folder: str):
        return decode(desc, arrays)

    @staticmethod
    def load(path: str) -> "Fitted":
        """A model written by :meth:`save`."""
        meta_path = os.path.join(path, "model.json")
        if not os.path.isfile(meta_path):
            raise ValueError(f"{path} is not a saved jaxfactor model (no model.json); save one with model.save(path)")
        with open(meta_path) as fh:
            meta = json.load(fh)
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} was saved in format {meta.get('format')}; this jaxfactor reads format {FORMAT_VERSION}")
        cls = _resolve(meta["class"])
        if not (isinstance(cls, type) and issubclass(cls, Fitted)):
            raise ValueError(f"{path}: {meta['class']} is not a jaxfactor model")
        with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(result=cls._decode_result(meta["result"], arrays, path), obs_names=arrays["obs_names"],
                   var_names=arrays["var_names"], settings=meta["settings"], cells=arrays.get("cells"),
                   genes=arrays.get("genes"))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in model.json")


def _h5_safe(d):
    """``d`` without None values (h5ad cannot store None), recursively."""
    if isinstance(d, dict):
        return {str(k): _h5_safe(v) for k, v in d.items() if v is not None}
    if isinstance(d, (list, tuple)) and any(isinstance(v, (dict, type(None))) for v in d):
        return {str(i): _h5_safe(v) for i, v in enumerate(d) if v is not None}
    return d


def _positions(names, fitted_names, kept, what: str) -> np.ndarray:
    """For each of ``names``, its row among the fit's kept ``what`` (−1: not fitted)."""
    fitted = np.asarray(fitted_names).astype(str)
    kept = np.arange(len(fitted)) if kept is None else np.asarray(kept)
    index = {n: i for i, n in enumerate(fitted[kept])}
    pos = np.array([index.get(str(n), -1) for n in names], dtype=np.int64)
    if len(fitted) and not (pos >= 0).any():
        raise ValueError(f"none of the AnnData's {what} were fitted (e.g. {fitted[0]!r}); pass the AnnData the model was fitted on")
    return pos


def _scatter(value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    dtype = value.dtype if np.issubdtype(value.dtype, np.floating) else np.float64
    if value.dtype.kind in "USO":
        full = np.full((len(rows),) + value.shape[1:], None, dtype=object)
    elif value.dtype == bool:
        full = np.zeros((len(rows),) + value.shape[1:], bool)
    else:
        full = np.full((len(rows),) + value.shape[1:], np.nan, dtype)
    full[rows >= 0] = value[rows[rows >= 0]]
    return full


# ----------------------------------------------------------------------------------------------
# running a kernel over fixed-size batches


_COMPILED: dict = {}


def run_kernel(kernel, params, blocks, static: dict, batch_size: int) -> dict:
    """``kernel(params, *rows, **static)`` over the cells of ``blocks`` (arrays with the same rows),
    in batches padded to a power of two ≤ ``batch_size`` rows so any number of cells reuses a few
    compiled programs; outputs concatenated, padding dropped."""
    import jax

    n = blocks[0].shape[0]
    size = min(batch_size, 1 << max(int(n - 1).bit_length(), 3))
    key = (kernel, tuple(sorted((k, _hashable(v)) for k, v in static.items())))
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = jax.jit(lambda p, *b: kernel(p, *b, **static))
    outs = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        batch = [np.concatenate([b[start:stop], np.zeros((size - (stop - start),) + b.shape[1:], b.dtype)]) for b in blocks]
        res = fn(params, *batch)
        outs.append({k: np.asarray(v)[: stop - start] for k, v in res.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _hashable(v):
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)
