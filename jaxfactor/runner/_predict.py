"""``jaxfactor predict RUN_DIR DATA --out OUT``: apply a fitted run to new cells.

Every run folder of a family holds the model the run chose (``RUN_DIR/model``,
:meth:`jaxfactor.Fitted.save`); its predictor is that model and the family's own kernel — what
``model.transform`` / ``predict`` run in Python. The driver here streams DATA (an .h5ad opened
read-only: obs/var are read, the count matrices are sliced from disk one batch of rows at a time
with anndata's backed sparse datasets or h5py, so a file larger than memory is fine), pads every
batch to exactly ``batch_size`` rows (one compiled program, compiled once before the loop and
timed apart), drops the padding, and writes OUT: an .h5ad with the new cells' obs and the
predictions in obsm/obs (no count matrix), under the keys ``to_anndata`` uses (``X_<family>``,
``<family>_proba``, ``<family>_label``, ``<family>_<key>``).

The kernels: NMF, W for H fixed (HALS); CCLONE, each cell's loadings ``c ∈ [0,1]^k`` against the
fitted V, the exact box-constrained weighted least-squares solve ``min Σ_j W_ij (M_ij − c·v_j)² +
l2‖c‖²`` with M and W built from REF/ALT as in the fit; GMM, posterior probabilities and log p(x);
PPCA, E[z | x] and log p(x); binomial mixture, posterior clones under the MAP (EM) or the Beta /
Dirichlet posteriors (VB); allele model, posterior clones and log p(ALT | DP) with AFs, weights,
dropout and error fixed; ZINB-WaVE, W and γ with every gene-level parameter fixed, all-zero cells
flagged; VAE, the encoder's posterior mean and variance, each batch checked as the fit checks its
input; the clone caller, posterior clones, P(cancer) and the call at the fitted parameters. A model outside the families registers a :class:`Predictor` (:func:`register`).

Checks, all before anything is compiled or written: RUN_DIR is a finished run of a model with a
predictor, written by this jaxfactor version; DATA holds every variable the model was fitted on
(the first missing ones are named); OUT does not exist (unless ``--force``). Every streamed batch
then follows the rules the fit applied to its own data (``jaxfactor._inputs.check_block``: finite;
non-negative and whole counts where the model needs counts): a bad entry is a one-line error naming
the first cell, and nothing is written.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache, partial

import jax
import numpy as np

from .. import __version__
from .._inputs import check_block
from ..data._io import write_h5ad
from ._predictor import PREDICTORS, Predictor, lookup, register


# --------------------------------------------------------------------------------------------
# families run by the runner's family task: the saved model (RUN_DIR/model) and its kernel


def _kernel(family: str):
    """The family's own kernel (:class:`jaxfactor.Fitted`): what ``transform`` / ``predict`` run."""

    def kernel(p, *blocks, **static):
        from .._families import family as get

        return get(family).model.kernel(p, *blocks, **static)

    kernel.__name__ = f"{family}_kernel"
    return kernel


@lru_cache(maxsize=4)
def _saved_model(path: str, mtime: float):
    from .._families import load

    return load(path)


def _model_of(config):
    from ._family_task import MODEL_DIR

    run_dir = config["__run_dir__"]
    path = os.path.join(run_dir, MODEL_DIR)
    if not os.path.isfile(os.path.join(path, "model.json")):
        raise ValueError(f"{run_dir!r} has no saved model ({MODEL_DIR}/); it was written before runs saved their model: "
                         "rerun the fit to predict with it")
    model = _saved_model(os.path.abspath(path), os.path.getmtime(os.path.join(path, "model.json")))
    said = config.get("__model__", model.family)
    if model.family != said:
        raise ValueError(f"{run_dir!r} says it holds a '{said}' run but its saved model ({MODEL_DIR}/) is a "
                         f"'{model.family}' model; the run folder was altered: rerun the fit")
    return model


def _family_inputs(config):
    if _model_of(config).inputs == "alleles":
        return ("REF", "ALT")
    return (config.get("data", {}).get("layer", "") or "X",)


def _family_vars(fitted, config):
    if config.get("data", {}).get("transpose"):
        raise ValueError("this run was fitted on transposed data; predict reads cells as rows")
    m = _model_of(config)
    names = np.asarray(m.var_names).astype(str)
    return names if m.genes is None else names[np.asarray(m.genes)]


def _family_load(run_dir, fitted, config):
    m = _model_of(config)
    return m.params(), m.static()


def _family_write(name):
    def write(out, res, params, static):
        """Namespaced keys, as ``to_anndata`` writes them: obsm ``X_<family>`` / ``<family>_proba``,
        obs ``<family>_label`` (categorical) and ``<family>_<key>``."""
        import pandas as pd

        from .._families import family

        model = family(name).model
        res = model.decode_outputs({k: v for k, v in res.items() if not k.startswith("_")})
        for key, value in res.items():
            value = np.asarray(value)
            if key == "embedding":
                out.obsm[f"X_{name}"] = value.astype(np.float32)
            elif value.ndim == 2:
                out.obsm[f"{name}_{key}"] = value.astype(np.float32)
            elif value.dtype.kind in "USO":  # names (e.g. calls): a categorical
                out.obs[f"{name}_{key}"] = pd.Categorical(value.astype(str))
            else:
                out.obs[f"{name}_{key}"] = value
        rep = res.get("proba", res.get("embedding") if model.has_labels else None)
        if rep is not None:  # the most probable component, or the dominant factor
            labels = np.asarray(rep).argmax(axis=1)
            out.obs[f"{name}_label"] = pd.Categorical(labels.astype(str), categories=[str(i) for i in range(rep.shape[1])])
        n_empty = int(np.sum(res["all_zero"])) if "all_zero" in res else 0
        if n_empty:
            import warnings

            warnings.warn(f"{name} predict: {n_empty} all-zero cells have no information (their embedding is the "
                          f"penalty's minimum, 0); they are flagged in obs['{name}_all_zero']", UserWarning, stacklevel=2)
    return write


def _family_predictor(name: str) -> Predictor:
    from .._families import family

    model = family(name).model
    return Predictor(inputs=_family_inputs, load=_family_load, kernel=_kernel(name), write=_family_write(name),
                     fitted_vars=_family_vars, batch_size=model.batch_size, check=getattr(model, "check_batch", None),
                     input_kind=lambda config: _model_of(config).inputs,
                     named=lambda config: bool(_model_of(config).settings.get("named_variables", True)))


def _register_families() -> None:
    from .._families import families

    for name in families():  # every family's run folder holds its model (model/) and the family has a kernel
        register(name, _family_predictor(name))


_register_families()


# --------------------------------------------------------------------------------------------
# reading the run folder and the data


def _read_run(run_dir: str):
    import tomllib

    import anndata

    if not os.path.isdir(run_dir):
        raise ValueError(f"run folder not found: {run_dir!r}")
    paths = {name: os.path.join(run_dir, name) for name in ("metrics.json", "config.toml", "result.h5ad")}

    def require(*names):
        missing = [name for name in names if not os.path.isfile(paths[name])]
        if missing:
            raise ValueError(f"{run_dir!r} is not a finished jaxfactor run folder (missing {', '.join(missing)})")

    require("metrics.json")
    try:
        with open(paths["metrics.json"]) as fh:
            meta = json.load(fh)
    except ValueError:
        raise ValueError(f"{paths['metrics.json']!r} is not valid JSON; is {run_dir!r} a jaxfactor run folder?") from None
    model = meta.get("model")
    if lookup(model) is None:
        from ._models import MODELS

        supported = [name for name in MODELS if lookup(name) is not None]
        raise ValueError(f"{run_dir!r} holds a '{model}' run, which has no predictor; predict supports: {', '.join(supported)}")
    written = str(meta.get("jaxfactor_version", "unknown"))
    if written.split(".")[:2] != __version__.split(".")[:2]:
        raise ValueError(f"{run_dir!r} was written by jaxfactor {written}, this is {__version__}; refit with this version")
    require("config.toml", "result.h5ad")
    with open(paths["config.toml"], "rb") as fh:
        config = tomllib.load(fh)
    return model, config, anndata.read_h5ad(paths["result.h5ad"])


class BackedCells:
    """Rows of an .h5ad's X or layers read from disk on demand (nothing else is loaded but obs/var)."""

    def __init__(self, path: str):
        import h5py
        from anndata.io import read_elem

        if not os.path.isfile(path):
            raise ValueError(f"data file not found: {path!r}")
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"cannot read {path!r} as .h5ad ({exc})") from None
        self.path = path
        self.obs = read_elem(self.file["obs"])
        self.var_names = read_elem(self.file["var"]).index
        self.n_obs = len(self.obs)

    def matrix(self, name: str):
        from anndata.io import sparse_dataset
        import h5py

        if name == "X":
            elem = self.file.get("X")
        else:
            elem = self.file["layers"].get(name) if "layers" in self.file else None
        if elem is None:
            have = ["X"] if "X" in self.file else []
            have += list(self.file["layers"].keys()) if "layers" in self.file else []
            raise ValueError(f"{self.path!r} has no {'X' if name == 'X' else 'layer ' + repr(name)} (it has: {', '.join(have) or 'nothing'})")
        return sparse_dataset(elem) if isinstance(elem, h5py.Group) else elem

    def close(self):
        self.file.close()


def _rows(mat, start: int, stop: int, cols: np.ndarray | None) -> np.ndarray:
    block = mat[start:stop]
    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    return block if cols is None else block[:, cols]


def _column_index(data_vars, fitted_vars) -> np.ndarray | None:
    """Positions of the fitted variables in DATA; None if DATA has exactly them in order."""
    import pandas as pd

    data_vars, fitted_vars = pd.Index(data_vars), pd.Index(fitted_vars)
    if data_vars.equals(fitted_vars):
        return None
    if data_vars.has_duplicates:
        raise ValueError("DATA has duplicated variable names; make var_names unique")
    idx = data_vars.get_indexer(fitted_vars)
    missing = fitted_vars[idx < 0]
    if len(missing):
        first = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"DATA lacks {len(missing)} of the {len(fitted_vars)} variables the model was fitted on: {first}")
    return idx


# --------------------------------------------------------------------------------------------
# the driver


@partial(jax.jit, static_argnames=("kernel", "static"))
def _batch(params, blocks, *, kernel, static):
    return kernel(params, *blocks, **dict(static))


def _progress(total: int):
    from .._progress import Bar

    return Bar(total, "predict", unit="cells")


def predict(run_dir: str, data: str, out: str, *, batch_size: int | None = None, device: str = "auto",
            force: bool = False, x64: bool = False, log=None) -> dict:
    """Predict for every cell of ``data`` with the model fitted in ``run_dir``; write ``out``.

    Returns a summary dict (cells, seconds, cells_per_minute, compile_seconds, batch_size).
    """
    from ._output import out_lock, overlaps

    log = log or (lambda msg: print(msg, flush=True))
    run_folder = os.path.isfile(os.path.join(run_dir, "metrics.json"))  # else the run folder check says what is wrong
    for path, what in ((data, "DATA"), (run_dir if run_folder else "", "RUN_DIR")):
        if path and overlaps(out, path):
            raise ValueError(f"--out {out!r} would overwrite {what} {path!r}; choose another output file "
                             "(inputs are never overwritten, also not with --force)")
    if os.path.exists(out) and not force:
        raise ValueError(f"output {out!r} already exists; pass --force to replace it")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    with out_lock(out):
        return _predict(run_dir, data, out, batch_size=batch_size, device=device, x64=x64, log=log)


def _predict(run_dir: str, data: str, out: str, *, batch_size, device, x64, log) -> dict:
    import anndata

    from ._devices import resolve_device
    from ._output import FLOOR_BYTES, check_free_space

    t_start = time.perf_counter()
    model, config, fitted = _read_run(run_dir)
    config["__run_dir__"] = run_dir
    config["__model__"] = model
    pred = PREDICTORS[model]
    cells = BackedCells(data)
    try:
        # the output: DATA's obs and a few columns per cell (up to 64 float32 each), before compiling
        check_free_space(out, FLOOR_BYTES + 2 * int(cells.obs.memory_usage(deep=True).sum()) + 256 * cells.n_obs)
        names = pred.inputs(config)
        mats = [cells.matrix(name) for name in names]
        kind = pred.input_kind(config) if pred.input_kind is not None else None
        fitted_vars = pred.fitted_vars(fitted, config)
        if pred.named is not None and not pred.named(config):
            if len(cells.var_names) != len(fitted_vars):
                raise ValueError(f"the model was fitted on a matrix without variable names ({len(fitted_vars)} columns); "
                                 f"DATA must have exactly {len(fitted_vars)} variables in the same order, it has "
                                 f"{len(cells.var_names)}")
            cols = None  # by position
            log(f"variables matched by position: the fit's {len(fitted_vars)} columns had no names")
        else:
            cols = _column_index(cells.var_names, fitted_vars)
        with jax.enable_x64(x64):
            dev = resolve_device(device)
            dtype = np.float64 if x64 else np.float32
            params, static = pred.load(run_dir, fitted, config)
            params = jax.device_put(jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), params), dev)
            B = int(batch_size or pred.batch_size)
            n_obs = cells.n_obs
            p = len(pred.fitted_vars(fitted, config))
            kw = dict(kernel=pred.kernel, static=tuple(sorted(static.items())))
            shapes = tuple(jax.ShapeDtypeStruct((B, p), dtype) for _ in mats)
            t0 = time.perf_counter()
            compiled = _batch.lower(params, shapes, **kw).compile()
            compile_s = time.perf_counter() - t0
            outputs: list[dict] = []
            t0 = time.perf_counter()
            with _progress(n_obs) as bar:
                for start in range(0, n_obs, B):
                    stop = min(start + B, n_obs)
                    blocks = []
                    for name, mat in zip(names, mats):
                        block = np.zeros((B, p), dtype)
                        block[: stop - start] = _rows(mat, start, stop, cols)
                        if kind is not None:  # what the fit refused, refused here too (nothing written yet)
                            check_block(block[: stop - start], kind, name, start)
                        blocks.append(jax.device_put(block, dev))
                    res = compiled(params, tuple(blocks))
                    outputs.append({k: np.asarray(v)[: stop - start] for k, v in res.items()})
                    if pred.check is not None:
                        pred.check(outputs[-1], start, static)
                    bar.update(stop)
            seconds = time.perf_counter() - t0
        res = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]} if outputs else {}
        adata = anndata.AnnData(obs=cells.obs.copy())
        if res:
            pred.write(adata, res, jax.tree_util.tree_map(np.asarray, params), static)
        adata.uns["jaxfactor_predict"] = {"model": model, "run_dir": os.path.abspath(run_dir), "data": os.path.abspath(data),
                                          "jaxfactor_version": __version__, "batch_size": B, "device": str(dev)}
    finally:
        cells.close()
    write_h5ad(adata, out)  # atomically (OUT.tmp-PID, renamed); a full disk is one line, out untouched
    total = time.perf_counter() - t_start
    rate = n_obs / seconds * 60 if seconds > 0 else float("inf")
    log(f"wrote {out}: {model} predictions for {n_obs} cells in {seconds:.2f} s ({rate:,.0f} cells/min on {dev}; "
        f"batches of {B}, compiled once in {compile_s:.2f} s; {total:.2f} s in all with reading and writing)")
    return {"cells": n_obs, "seconds": seconds, "cells_per_minute": rate, "compile_seconds": compile_s, "batch_size": B,
            "total_seconds": total, "cells_per_minute_total": n_obs / total * 60}
