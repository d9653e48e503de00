"""Grid families' sweeps (:meth:`jaxfactor.Fitted.fit_points`): points that differ only in the
numbers that are pytree data of the family's ``Algorithm`` (its ``hparams``) run as one compiled
``fit_many`` call, vmapped over points × restarts, each point equal to its own ``fit``."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from ._fit import completed_trace, fit_many
from ._inputs import read
from ._validate import check_nonnegative_float, check_positive_int


def fit_grid(cls, data, points: list[dict], shared: dict) -> list:
    """A grid family's points that differ only in its ``hparams``: one ``fit_many`` call (vmapped
    over points × restarts; restart keys as the family's own ``fit`` draws them: the seed's key for
    one restart, its split for several), each point's best restart as the family's model."""
    names = cls.hparams._fields
    static = {k: v for k, v in points[0].items() if k not in names}
    rows = []
    for point in points:
        if {k: v for k, v in point.items() if k not in names} != static:
            raise ValueError("grid points must differ only in " + ", ".join(names))
        defaults = cls.hparams()
        rows.append(cls.hparams(*(check_nonnegative_float(point.get(n, getattr(defaults, n)), n) for n in names)))
    opts = dict(inspect_defaults(cls.fit), **shared)
    inp = read(data, cls.inputs, shared.get("layer"))
    k = check_positive_int(static.get("n_components"), "n_components")
    cls.check_grid_data(inp.X, k)
    n_init = check_positive_int(opts["n_init"], "n_init")
    max_iter = check_positive_int(opts["max_iter"], "max_iter")
    tol = check_nonnegative_float(opts["tol"], "tol")
    chunk = 10
    alg = cls.algorithm({**opts, **static})
    dtype = jnp.float64 if (jax.config.jax_enable_x64 and np.asarray(inp.X).dtype == np.float64) else jnp.float32
    X = cls.algorithm_data(jnp.asarray(inp.X, dtype))
    keys = cls.restart_keys(int(opts["seed"]), n_init)
    grid = jax.tree_util.tree_map(lambda *xs: jnp.asarray(xs, dtype), *rows)
    many = fit_many(alg, X, grid, keys, max_iter=max_iter, tol=tol, chunk_size=chunk)
    out = []
    for j, point in enumerate(points):
        best = jax.tree_util.tree_map(lambda x: np.asarray(x[j]), many.best)
        trace, trace_iter = completed_trace(best, chunk)
        info = {"objective": float(trace[-1]), "n_iter": int(best.n_iter), "converged": bool(best.converged),
                "trace": trace, "trace_iter": trace_iter, "restart_objectives": np.asarray(many.objective[j])}
        settings = {**{k: v for k, v in opts.items() if k not in ("mesh", "progress")}, **point,
                    "named_variables": inp.named}
        out.append(cls.from_arrays(cls.state_arrays(best.state), info, inp.obs_names, inp.var_names, settings, X=inp.X))
    return out


def inspect_defaults(fn) -> dict:
    """The keyword defaults of ``fn`` (a family's ``fit``)."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
