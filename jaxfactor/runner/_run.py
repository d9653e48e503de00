"""``jaxfactor run``: load data, fit every sweep point, write the results folder.

Sweep points that differ only in numeric hyperparameters share one compiled ``fit_many`` call
(vmapped over points × restarts); points that differ in a static key (rank, method, init) are
separate compiled calls. All input checks run before the first compilation.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import __version__, _progress
from .._fit import _place, compile_fit_many, completed_trace, fit_many
from ..data import SIMULATORS, load_any
from ..data._io import write_h5ad
from ._config import RunConfig, load_config
from ._devices import resolve_device
from ._distributed import from_process_0, is_writer
from ._models import to_device_array
from ._output import (atomic_dir, check_free_space, check_out_dir, out_lock, output_estimate, simulated_bytes, write_figures,
                      write_json, write_toml)
from ._resume import PipelineStore, PointCache, SweepStore
from ._sharding import check_bytes, check_memory, describe, make_mesh
from ._verdicts import selection_verdicts


@dataclass
class LoadedData:
    X: np.ndarray
    adata: object | None
    truth: dict | None
    transposed: bool


def load_data(cfg: RunConfig) -> LoadedData:
    d = cfg.data
    if "simulator" in d:
        params = {k: v for k, v in d.items() if k != "simulator"}
        sim = SIMULATORS[d["simulator"]](**params)
        truth = {name: np.asarray(v) for name, v in sim._asdict().items()}
        return LoadedData(np.asarray(sim.X), None, truth, False)
    X, adata = load_any(
        d["path"], fmt=d["format"] or None, layer=d["layer"] or None, key=d["key"] or None,
        delimiter=d["delimiter"] or None, header=d["header"], index_col=d["index_col"], transpose=d["transpose"],
    )
    return LoadedData(X, adata, None, d["transpose"])


def _groups(cfg: RunConfig) -> list[tuple[dict, list[int]]]:
    """Sweep points grouped by their static keys, in first-seen order."""
    groups: dict[tuple, tuple[dict, list[int]]] = {}
    for i, point in enumerate(cfg.points):
        static = {k: point[k] for k in cfg.spec.static}
        groups.setdefault(tuple(static.values()), (static, []))[1].append(i)
    return list(groups.values())


def _points_bar(cfg: RunConfig, total: int, initial: int = 0) -> _progress.Bar:
    return _progress.Bar(total, "sweep points", unit="point", initial=initial, enabled=cfg.run["progress"] and total > 1)


def _chunks(cfg: RunConfig, idx: list[int]) -> list[list[int]]:
    size = cfg.run["max_points_per_call"] or len(idx)
    return [idx[s:s + size] for s in range(0, len(idx), size)]


def _hp_grid(cfg: RunConfig, idx: list[int]):
    rows = [cfg.spec.make_hparams(cfg.points[i]) for i in idx]
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(xs), *rows)


def _check_cells(cfg: RunConfig, mesh) -> None:
    """A one-line error before anything runs if ``run.shard = "cells"`` meets a model whose fits
    cannot split their cells (its fitted-model class has no ``cell_layout``)."""
    from ._config import ConfigError
    from ._models import MODELS
    from ._sharding import is_cell_mesh

    can = lambda spec: spec.model is not None and spec.model.cell_layout() is not None  # noqa: E731
    if is_cell_mesh(mesh) and not can(cfg.spec):
        raise ConfigError(f"run.shard = \"cells\" is not available for model '{cfg.spec.name}' "
                          f"(available for: {', '.join(k for k, spec in MODELS.items() if can(spec))}); use \"auto\" or \"off\"")


def check_sweep_memory(cfg: RunConfig, X: np.ndarray, device, mesh, available=None) -> None:
    """One-line error before compiling if a compiled call of this sweep would not fit in memory."""
    dtype = jnp.float64 if cfg.run["x64"] else jnp.float32
    data = jax.ShapeDtypeStruct(X.shape, dtype)
    for static, idx in _groups(cfg):
        n_points = len(_chunks(cfg, idx)[0])
        alg = cfg.spec.build(static)
        where = "of " + ", ".join(f"{k}={v}" for k, v in static.items())
        check_memory(alg, data, cfg.spec.make_hparams(cfg.points[idx[0]]), n_points=n_points,
                     n_seeds=cfg.fit["n_init"], grid_map=cfg.run["grid_map"], device=device, mesh=mesh,
                     where=where, available=available)


def _resumed(cfg: RunConfig, store, finished) -> tuple[np.ndarray, list]:
    """(which points are finished, one record per point: the stored ones loaded, else None)."""
    n = len(cfg.points)
    finished = np.zeros(n, bool) if finished is None else np.asarray(finished, bool)
    records: list[dict | None] = [None] * n
    if store is not None and store.writer:
        for i in np.flatnonzero(finished):
            records[i] = store.load(int(i))
    return finished, records


def execute(cfg: RunConfig, X: np.ndarray, device, truth: dict | None = None, *, mesh=None,
            store: SweepStore | None = None, finished: np.ndarray | None = None) -> list[dict]:
    """Fit every sweep point; return one record per point (arrays and metrics).

    Points sharing their static keys run in compiled calls of ``run.max_points_per_call`` points
    (all of them by default), sharded over ``mesh`` if given. With a ``store``, points marked
    ``finished`` are loaded instead of fitted and every newly finished point is saved at once.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    from ._sharding import is_cell_mesh

    if is_cell_mesh(mesh):
        return _execute_cells(cfg, X, device, truth, mesh=mesh, store=store, finished=finished)
    spec, fitc = cfg.spec, cfg.fit
    n = len(cfg.points)
    finished, records = _resumed(cfg, store, finished)
    dtype = jnp.float64 if cfg.run["x64"] else jnp.float32
    keys = jax.random.split(jax.random.PRNGKey(fitc["seed"]), fitc["n_init"])
    if mesh is None:
        Xd = jax.device_put(to_device_array(X, cfg.run["x64"]), device)
        keys = jax.device_put(keys, device)
    else:  # replicated once on every device of the mesh; fit_many splits the points
        Xd = _place(np.asarray(X, dtype), NamedSharding(mesh, PartitionSpec()))
    n_call = 0
    talk = mesh is None and cfg.run["progress"] and _progress.reporting(True)
    with _points_bar(cfg, n, int(finished.sum())) as bar:
        for static, idx in _groups(cfg):
            alg = spec.build(static)
            compiled: dict[int, tuple] = {}  # one compilation per call size within a group
            for chunk in _chunks(cfg, [i for i in idx if not finished[i]]):
                hp_grid = _hp_grid(cfg, chunk)
                if mesh is None:
                    hp_grid = jax.device_put(hp_grid, device)
                kw = dict(max_iter=fitc["max_iter"], tol=fitc["tol"], chunk_size=fitc["chunk_size"], grid_map=cfg.run["grid_map"])
                if talk:  # chunk by chunk from the host, reporting in between (compile time measured apart)
                    desc = f"{spec.name} [{n_call + 1}] " + ", ".join(f"{k}={v}" for k, v in static.items())
                    with _progress.task(desc), _progress.timed() as t:
                        out = jax.block_until_ready(fit_many(alg, Xd, hp_grid, keys, progress=True, **kw))
                    compile_s, seconds = t.compile_seconds, t.run_seconds
                else:
                    if len(chunk) not in compiled:
                        compiled[len(chunk)] = compile_fit_many(alg, Xd, hp_grid, keys, mesh=mesh, **kw)
                        compile_s = compiled[len(chunk)][1]
                    else:
                        compile_s = 0.0
                    t0 = time.perf_counter()
                    out = jax.block_until_ready(compiled[len(chunk)][0](Xd, hp_grid, keys))
                    seconds = time.perf_counter() - t0
                for j, i in enumerate(chunk):
                    records[i] = _record(cfg, i, static, out, j, n_call, len(chunk), seconds, compile_s, truth)
                    if store is not None:
                        store.save(i, records[i])
                n_call += 1
                bar.update(bar.n + len(chunk))
    return records


def _execute_cells(cfg: RunConfig, X: np.ndarray, device, truth: dict | None, *, mesh, store: SweepStore | None,
                   finished: np.ndarray | None) -> list[dict]:
    """``run.shard = "cells"``: every sweep point is fitted on its own, its restarts one after
    another, each fit with the rows of X split over ``mesh`` (``fit_cells``). X is padded and
    placed once; each restart starts from the unsharded init on the unpadded X (on ``device``),
    so the records equal ``run.shard = "off"`` within float tolerance."""
    from .._cells import fit_cells, place_cells

    spec, fitc = cfg.spec, cfg.fit
    n = len(cfg.points)
    finished, records = _resumed(cfg, store, finished)
    Xd = jax.device_put(to_device_array(X, cfg.run["x64"]), device)  # unpadded, for the inits
    keys = jax.device_put(jax.random.split(jax.random.PRNGKey(fitc["seed"]), fitc["n_init"]), device)
    placed = None
    n_call = 0
    with _points_bar(cfg, n, int(finished.sum())) as bar:
        for static, idx in _groups(cfg):
            alg, plain, layout = spec.model.algorithm(static, mesh), spec.model.algorithm(static), spec.model.cell_layout()
            placed = place_cells(np.asarray(Xd), mesh, layout) if placed is None else placed
            first = True
            for i in (i for i in idx if not finished[i]):
                timings = {} if first else None
                t0 = time.perf_counter()
                out = fit_cells(alg, Xd, spec.make_hparams(cfg.points[i]), keys, mesh=mesh, layout=layout, init=plain.init,
                                placed=placed, max_iter=fitc["max_iter"], tol=fitc["tol"], chunk_size=fitc["chunk_size"],
                                timings=timings)
                compile_s = timings["compile_seconds"] if first else 0.0
                seconds = time.perf_counter() - t0 - compile_s
                records[i] = _record(cfg, i, static, out, 0, n_call, 1, seconds, compile_s, truth)
                if store is not None:
                    store.save(i, records[i])
                first = False
                n_call += 1
                bar.update(bar.n + 1)
    return records


def _record(cfg: RunConfig, i: int, static: dict, out, j: int, n_call: int, n_points: int, seconds: float,
            compile_s: float, truth: dict | None) -> dict:
    spec, fitc = cfg.spec, cfg.fit
    best = jax.tree_util.tree_map(lambda x: np.asarray(x[j]), out.best)
    trace, trace_iter = completed_trace(best, fitc["chunk_size"])
    if not np.all(np.isfinite(trace)):
        raise FloatingPointError(
            f"sweep point p{i:03d} ({cfg.points[i]}) produced a non-finite objective; lower the penalties or check the data scale"
        )
    record = {
        "id": f"p{i:03d}",
        "shown": [*spec.static, *(k for k in cfg.sweep if k not in spec.static)],
        "params": cfg.points[i],
        "objective": float(trace[-1]),
        "n_iter": int(best.n_iter),
        "converged": bool(best.converged),
        "best_restart": int(out.best_index[j]),
        "restart_objectives": np.asarray(out.objective[j]).tolist(),
        "group": n_call,
        "group_points": n_points,
        "seconds": seconds,
        "compile_seconds": compile_s,
        "arrays": spec.outputs(best.state, static),
        "trace": trace,
        "trace_iter": trace_iter,
    }
    if truth is not None:
        shape = (len(record["arrays"][next(iter(record["arrays"]))]), 0)
        names = [np.arange(n).astype(str) for n in shape]
        record["truth"] = spec.model.from_arrays(record["arrays"], record, *names, _settings(cfg, record)).truth_metrics(truth)
    return record


def _settings(cfg: RunConfig, record: dict, layer: str | None = None, named: bool = False) -> dict:
    """A sweep point's fit arguments, as the family's own ``fit`` records them."""
    f = cfg.fit
    return {**{k: v for k, v in record["params"].items() if k != "name"}, "n_init": int(f["n_init"]),
            "max_iter": int(f["max_iter"]), "tol": float(f["tol"]), "seed": int(f["seed"]), "layer": layer,
            "named_variables": named}


def point_models(cfg: RunConfig, data: LoadedData, records: list[dict]) -> list:
    """Each sweep point as the family's fitted model (:class:`jaxfactor.Fitted`): what the results
    folder's AnnData, figures and saved model are written from. Cells and variables are named
    as in the data (transposed data: its variables are the fitted rows)."""
    ad = data.adata
    if ad is not None:
        obs, var = (ad.var_names, ad.obs_names) if data.transposed else (ad.obs_names, ad.var_names)
    else:
        obs, var = (np.arange(n).astype(str) for n in data.X.shape)
    layer = (cfg.data.get("layer") or None) if ad is not None and not data.transposed else None
    return [cfg.spec.model.from_arrays(r["arrays"], r, obs, var, _settings(cfg, r, layer, ad is not None)) for r in records]


def _write_results(tmp: str, cfg: RunConfig, data: LoadedData, records: list[dict], meta: dict) -> None:
    """config.toml, metrics.json, one ``pNNN.npz`` per point, ``selection.csv``, ``result.h5ad``
    (``to_anndata`` of the chosen point on the data; with several points, every point's keys
    again with a ``_pNNN`` suffix), ``model/`` (the chosen point, what ``jaxfactor predict``
    loads) and the figures. The point chosen is the best by the family's ``selection()`` score."""
    import pandas as pd

    from ._family_task import MODEL_DIR, add_suffixed

    models = point_models(cfg, data, records)
    score = models[0].selection()
    values = [m.selection().value for m in models]
    pick = int(np.argmax(values) if score.higher_is_better else np.argmin(values))
    for r, v in zip(records, values):
        r["chosen"] = r is records[pick]
        r[score.name] = float(v)
    swept = [k for k in cfg.sweep] or ["n_components"]
    table = pd.DataFrame([{"id": r["id"], **{k: r["params"][k] for k in swept}, score.name: r[score.name], "n_iter": r["n_iter"],
                           "converged": r["converged"], "chosen": r["chosen"], **r.get("truth", {})} for r in records])
    verdicts = selection_verdicts(table, score.name, score.higher_is_better, swept)
    records[-1]["verdicts"] = verdicts  # the summary's verdict lines
    meta = {**meta, "chosen": records[pick]["id"], "chosen_by": score.name, "higher_is_better": score.higher_is_better,
            "compile_seconds": sum({r["group"]: r["compile_seconds"] for r in records}.values()),
            "run_seconds": sum({r["group"]: r["seconds"] for r in records}.values()), "verdicts": verdicts}
    write_toml(os.path.join(tmp, "config.toml"), cfg.raw)
    point_metrics = [{k: v for k, v in r.items() if k not in ("arrays", "trace", "trace_iter", "shown", "verdicts")} for r in records]
    write_json(os.path.join(tmp, "metrics.json"), {**meta, "points": point_metrics})
    table.to_csv(os.path.join(tmp, "selection.csv"), index=False)
    base = data.adata
    if base is not None and data.transposed:
        base = base.T  # the fitted rows are the data's variables
    adata = models[pick].to_anndata(base)
    if len(models) > 1:
        for r, m in zip(records, models):
            add_suffixed(adata, m.to_anndata(None), m.family, f"_{r['id']}")
    if data.transposed and base is not None:
        adata = adata.T
    write_h5ad(adata, os.path.join(tmp, "result.h5ad"))
    models[pick].save(os.path.join(tmp, MODEL_DIR))
    for r in records:
        np.savez(os.path.join(tmp, f"{r['id']}.npz"), **r["arrays"], trace=r["trace"], trace_iter=r["trace_iter"])
    if data.truth is not None:
        np.savez(os.path.join(tmp, "truth.npz"), **data.truth)
    if cfg.run["figures"]:
        label = lambda r: " ".join([r["id"], *(f"{k}={r['params'][k]}" for k in cfg.sweep)])  # noqa: E731
        traces = {label(r): (r["trace_iter"], r["trace"]) for r in records}
        write_figures(tmp, traces, {label(r): m.heatmaps() for r, m in zip(records, models)},
                      ylabel=models[0]._uns().get("trace_name", "objective"),
                      files={label(r): r["id"] for r in records})


def _meta(cfg: RunConfig, dev, shape, seconds, mesh=None) -> dict:
    meta = {
        "model": cfg.spec.name,
        "data_shape": shape,
        "device": str(dev),
        "platform": dev.platform,
        "jax_version": jax.__version__,
        "jaxfactor_version": __version__,
        "python": platform.python_version(),
        "x64": cfg.run["x64"],
        "total_seconds": seconds,
    }
    if mesh is not None:
        meta.update(sharded_devices=int(mesh.size), shard=cfg.run["shard"], processes=jax.process_count())
    return meta


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pipeline_points(cfg: RunConfig) -> int:
    """How many cache points a pipeline's sweep has (its task's ``sweep_points``, else one per
    sweep point)."""
    task = cfg.spec.pipeline
    return int(task.sweep_points(cfg)) if hasattr(task, "sweep_points") else len(cfg.points)


def _run_pipeline(cfg: RunConfig, out: str, force: bool, log=_log):
    """The family task (every family but the grid families) fits; the runner validates and writes.

    A sweep (more than one cache point) is resumable like an algorithm model's: the task's loop
    gets a ``PointCache`` over ``PipelineStore`` (``.NAME.partial`` beside ``out``), removed once
    the results folder is written."""
    import pandas as pd

    task = cfg.spec.pipeline
    with jax.enable_x64(cfg.run["x64"]):
        dev = resolve_device(cfg.run["device"])
        loaded = task.load(cfg)
        estimate = task.memory(cfg, loaded) if hasattr(task, "memory") else None
        if estimate is not None:  # (bytes of the largest compiled call, what it is, how to shrink it)
            need, what, hint = estimate
            check_bytes(need, device=dev, what=what, hint=hint)
        n_points = _pipeline_points(cfg)
        store, points = None, PointCache()
        if n_points > 1:
            store, finished = _open_store(cfg, out, force, log, n_points=n_points, store_type=PipelineStore)
            points = PointCache(store, finished, log)
        t0 = time.perf_counter()
        try:
            with jax.default_device(dev), _progress.quiet(not cfg.run["progress"]), _progress.timed() as timing:
                outcome = task.execute(cfg, loaded, points=points)
        except BaseException:
            if store is not None and not store.finished().any():
                store.remove()  # nothing finished to resume from: leave no empty partial folder
            raise
        shape = list(loaded.X.shape) if hasattr(loaded, "X") else [int(loaded.adata.n_obs), int(loaded.adata.n_vars)]
        meta = _meta(cfg, dev, shape, time.perf_counter() - t0)
        meta.update(compile_seconds=timing.compile_seconds, run_seconds=timing.run_seconds)
        lines = [f"{timing.seconds:.1f} s fitting, of which {timing.compile_seconds:.1f} s compiling"
                 + (" (a second run loads the compiled programs from the cache)" if timing.compile_seconds > 5 else "")]
        if points.resumed:
            meta["resumed_points"] = list(points.resumed)
            lines.append(f"{len(points.resumed)} point(s) resumed from an interrupted run, {n_points - len(points.resumed)} fitted now")
        meta["verdicts"] = list(outcome.verdicts)
        outcome.records[-1]["summary"] += "".join(f"\n  {line}" for line in lines)
        if outcome.verdicts:
            outcome.records[-1]["summary"] += "\nverdict:" + "".join(f"\n  - {line}" for line in outcome.verdicts)
        if not is_writer():
            return out, outcome.records
        with atomic_dir(out, force) as tmp:
            write_toml(os.path.join(tmp, "config.toml"), cfg.raw)
            write_json(os.path.join(tmp, "metrics.json"), {**meta, "points": [{k: v for k, v in r.items() if k != "summary"} for r in outcome.records]})
            write_h5ad(outcome.adata, os.path.join(tmp, "result.h5ad"))
            for name, table in outcome.tables.items():
                pd.DataFrame(table).to_csv(os.path.join(tmp, name), index=False)
            if outcome.files is not None:
                outcome.files(tmp)
            if cfg.run["figures"] and outcome.figures is not None:
                outcome.figures(tmp)
        if store is not None:
            store.remove()
    return out, outcome.records


def _open_store(cfg: RunConfig, out: str, force: bool, log, *, n_points: int | None = None,
                store_type: type[SweepStore] = SweepStore) -> tuple[SweepStore, np.ndarray]:
    """The partial folder of this run: refuse another config's points (unless ``force``), load
    which points are finished. Process 0 decides; every process gets its answer.

    ``n_points`` (default: the sweep's points) and ``store_type`` (``PipelineStore`` for pipeline
    models) let both paths share the folder, the hash and the conflict rules."""
    n_points = len(cfg.points) if n_points is None else n_points
    store = store_type(out, cfg.raw, n_points, writer=is_writer())
    status = np.zeros(1 + n_points, np.int32)
    message = None
    if store.writer:
        message = store.conflict()
        if message is not None and not force:
            status[0] = 1
        else:
            store.open(discard=message is not None)
            if message is not None:
                log(f"discarding {store.path}: its points came from a different config (--force)")
            status[1:] = store.finished()
    status = from_process_0(status)
    if status[0]:
        raise ValueError(message or f"{store.path} holds finished sweep points of a different config; pass --force to discard them")
    finished = status[1:].astype(bool)
    if finished.any() and store.writer:
        ids = [f"p{i:03d}" for i in np.flatnonzero(finished)]
        shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
        log(f"resuming: {finished.sum()} of {len(finished)} sweep points already finished in {store.path} ({shown}); "
            f"fitting the other {len(finished) - finished.sum()}")
    return store, finished


def run(config_path: str, *, overrides: list[str] = (), out: str | None = None, force: bool = False,
        device: str | None = None, log=_log) -> tuple[str, list[dict]]:
    """Run a config end to end. Returns the output folder and the per-point records.

    Sweeps of every model are resumable: finished points are kept in ``.NAME.partial`` beside
    the output folder until the run is written (see ``_resume``); rerunning the same command
    fits only the missing points. In a multi-process run only process 0 writes.
    """
    if device is not None:
        overrides = [*overrides, f"run.device={device}"]
    cfg = load_config(config_path, overrides)
    out = out or os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])
    check_out_dir(out, force, inputs=[config_path, cfg.data.get("path", "")])
    check_free_space(out, output_estimate([cfg.data.get("path", "")], simulated_bytes(cfg.data)))
    if cfg.run["cache"] != "auto":  # "auto": as at import (JAXFACTOR_CACHE_DIR, else the user's cache folder)
        from .._cache import enable_compilation_cache

        enable_compilation_cache(cfg.run["cache"])
    with out_lock(out) if is_writer() else nullcontext():
        if cfg.spec.pipeline is not None:
            return _run_pipeline(cfg, out, force, log)
        return _run_grid(cfg, out, force, log)


def _run_grid(cfg: RunConfig, out: str, force: bool, log) -> tuple[str, list[dict]]:
    """A grid family's sweep: every point by ``fit_many`` (module docstring). Only a sweep keeps
    its finished points in ``.NAME.partial`` (one point has nothing to resume)."""
    with jax.enable_x64(cfg.run["x64"]):
        dev = resolve_device(cfg.run["device"])
        mesh = make_mesh(cfg.run["shard"], dev)
        _check_cells(cfg, mesh)
        data = load_data(cfg)
        X = cfg.spec.check_data(data.X)
        for static, _ in _groups(cfg):
            cfg.spec.check_static(static, X.shape)
        check_sweep_memory(cfg, X, dev, mesh)
        store, finished = _open_store(cfg, out, force, log) if len(cfg.points) > 1 else (None, None)
        if mesh is not None and is_writer():
            log(f"sweep on {describe(dev, mesh)}")
        t0 = time.perf_counter()
        records = execute(cfg, X, dev, data.truth, mesh=mesh, store=store, finished=finished)
        meta = _meta(cfg, dev, list(X.shape), time.perf_counter() - t0, mesh)
        if not is_writer():
            return out, [r for r in records if r is not None]
        with atomic_dir(out, force) as tmp:
            _write_results(tmp, cfg, data, records, meta)
        if store is not None:
            store.remove()
    return out, records
