"""The one fit loop shared by every algorithm, its fixed-length variant, and ``fit_many``.

``fit`` runs ``lax.while_loop`` over ``lax.scan`` chunks of ``chunk_size`` steps. After each
chunk the objective is evaluated once, appended to the trace, and the loop stops when the
relative change ``|f_prev - f| / max(|f_prev|, tiny)`` falls below ``tol`` (scikit-learn's NMF
checks every 10 iterations the same way) or after ``max_iter`` steps.

Under ``vmap`` (``fit_many``) a ``while_loop`` runs until its slowest member stops; members that
have stopped are frozen by JAX's batching rule (their carry is selected, not updated), so every
member's result is exactly what a lone ``fit`` would return.

``while_loop`` cannot be reverse-differentiated; ``fit_fixed`` runs a fixed number of steps with
``scan`` so gradients can flow through the whole fit (e.g. to tune a hyperparameter).
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._base import Algorithm, ConvergenceWarning, FitResult, PyTree


class FitManyResult(NamedTuple):
    """Result of ``fit_many`` over G hyperparameter points × S seeds.

    Attributes:
      best: the ``FitResult`` of the best seed (lowest final objective) for each grid point;
        every leaf has a leading axis of size G.
      best_index: (G,) index of the winning seed.
      objective: (G, S) final objective of every restart.
      n_iter: (G, S) steps taken by every restart.
      converged: (G, S) convergence flag of every restart.
    """

    best: FitResult
    best_index: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _canonical_hp(hp: PyTree) -> PyTree:
    """Cast float leaves (Python floats included) to the default float dtype.

    Python floats are weakly typed and ``np.float64`` is not; normalising both means a second
    call with "the same" numbers never retraces.
    """
    ftype = jnp.zeros(()).dtype  # float32, or float64 under x64

    def cast(x):
        if isinstance(x, (bool, np.bool_)):
            return jnp.asarray(x)
        if isinstance(x, (float, int)) or jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            return jnp.asarray(x, dtype=ftype)
        return jnp.asarray(x)

    return jax.tree_util.tree_map(cast, hp)


def _n_chunks(max_iter: int, chunk_size: int) -> int:
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return math.ceil(max_iter / chunk_size)


def _run_chunk(alg: Algorithm, data, hp, state, it, *, chunk_size: int, max_iter: int):
    """``chunk_size`` steps under ``scan``; steps past ``max_iter`` leave the state untouched."""
    ragged = max_iter % chunk_size != 0

    def body(carry, _):
        state, it = carry
        # the state keeps its dtypes (float32 data under x64: hyperparameters are float64 there)
        new = jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype) if hasattr(b, "dtype") else a,
                                     alg.step(state, data, hp), state)
        if ragged:
            active = it < max_iter
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, state)
            it = it + active.astype(it.dtype)
        else:
            it = it + 1
        return (new, it), None

    (state, it), _ = lax.scan(body, (state, it), None, length=chunk_size)
    return state, it


def _rel_change(prev, cur):
    tiny = jnp.finfo(cur.dtype).tiny
    return jnp.abs(prev - cur) / jnp.maximum(jnp.abs(prev), tiny)


def _loop_parts(alg, data, hp, tol, *, max_iter, chunk_size):
    """The pieces of the fit loop: start carry, condition, body (one chunk), and the finish.

    ``fit`` runs them inside one ``lax.while_loop``; ``fit(progress=True)`` runs the same body
    from the host, one compiled chunk at a time, so a progress bar can advance in between.
    """
    n_chunks = _n_chunks(max_iter, chunk_size)
    positions = jnp.arange(n_chunks + 1)

    def start(state):
        f0 = alg.objective(state, data, hp)
        trace = jnp.full((n_chunks + 1,), f0)
        return (state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), trace, jnp.zeros((), bool))

    def cond(carry):
        _, _, c, _, done = carry
        return (c < n_chunks) & ~done

    def body(carry):
        state, it, c, trace, _ = carry
        prev = trace[c]
        state, it = _run_chunk(alg, data, hp, state, it, chunk_size=chunk_size, max_iter=max_iter)
        f = alg.objective(state, data, hp)
        trace = jnp.where(positions > c, f, trace)
        done = (_rel_change(prev, f) < tol) | ~jnp.isfinite(f)
        return state, it, c + 1, trace, done

    def finish(carry):
        state, it, _, trace, done = carry
        # `done` is set by a small relative change or by a non-finite objective
        return FitResult(state, trace, it, done & jnp.isfinite(trace[-1]))

    return start, cond, body, finish


def _fit_core(alg, data, hp, key, state0, tol, *, max_iter, chunk_size):
    start, cond, body, finish = _loop_parts(alg, data, hp, tol, max_iter=max_iter, chunk_size=chunk_size)
    state = alg.init(key, data, hp) if state0 is None else state0
    return finish(lax.while_loop(cond, body, start(state)))


def _member(alg, data, hp, key, state0, tol, carry, *, max_iter, chunk_size, part):
    """One fit's piece of the host-driven loop: ``part`` is 'start' (init and first objective),
    'body' (one chunk; a member that has stopped is frozen, as ``while_loop``'s batching rule
    freezes it) or 'finish' (the ``FitResult``)."""
    start, cond, body, finish = _loop_parts(alg, data, hp, tol, max_iter=max_iter, chunk_size=chunk_size)
    if part == "start":
        return start(alg.init(key, data, hp) if state0 is None else state0)
    if part == "body":
        go = cond(carry)
        return jax.tree_util.tree_map(lambda new, old: jnp.where(go, new, old), body(carry), carry)
    return finish(carry)


@partial(jax.jit, static_argnames=("alg", "max_iter", "chunk_size", "part", "layout"))
def _driven_part(alg, data, hp, keys, state0, tol, carry, *, max_iter, chunk_size, part, layout):
    """A piece of ``fit`` (``layout`` ``("one",)``), ``fit_many`` (``("many", grid_map)``) or
    ``fit_batch`` (``("batch", in_axes)``) for the host-driven loop; the same vmaps as theirs."""
    kw = dict(max_iter=max_iter, chunk_size=chunk_size, part=part)
    if layout[0] == "one":
        return _member(alg, data, hp, keys, state0, tol, carry, **kw)
    if layout[0] == "batch":
        one = lambda d, h, k, s0, c: _member(alg, d, h, k, s0, tol, c, **kw)  # noqa: E731
        return jax.vmap(one, in_axes=(*layout[1], 0))(data, hp, keys, state0, carry)

    def over_seeds(h, c):
        res = jax.vmap(lambda k, cc: _member(alg, data, h, k, state0, tol, cc, **kw))(keys, c)
        if part != "finish":
            return res
        best, idx = _best_of(res)
        return best, idx, res.trace[:, -1], res.n_iter, res.converged

    if layout[1] == "vmap":
        out = jax.vmap(over_seeds)(hp, carry)
    else:
        out = lax.map(lambda a: over_seeds(*a), (hp, carry))
    return FitManyResult(*out) if part == "finish" else out


def _reporting(progress) -> bool:
    from ._progress import reporting

    return reporting(progress)


def _driven(alg, data, hp, keys, state0, tol, *, max_iter, chunk_size, layout):
    """Run a fit loop from the host, one compiled chunk at a time, reporting to a progress bar
    between chunks (iteration of the furthest member, best objective so far). Results equal the
    single compiled ``while_loop``'s (same pieces, members frozen the same way)."""
    from . import _progress

    n_chunks = _n_chunks(max_iter, chunk_size)
    kw = dict(max_iter=max_iter, chunk_size=chunk_size, layout=layout)
    carry = _driven_part(alg, data, hp, keys, state0, tol, None, part="start", **kw)
    with _progress.bar(max_iter, unit="iteration", progress=True) as bar:
        while True:
            c, done = np.asarray(carry[2]), np.asarray(carry[4])
            if not np.any((c < n_chunks) & ~done):
                break
            carry = _driven_part(alg, data, hp, keys, state0, tol, carry, part="body", **kw)
            c, trace = np.asarray(carry[2]), np.asarray(carry[3])
            f = np.take_along_axis(trace, c[..., None], axis=-1)
            f = f[np.isfinite(f)]
            bar.update(int(np.max(carry[1])), **({"objective": float(f.min())} if f.size else {}))
    return _driven_part(alg, data, hp, keys, state0, tol, carry, part="finish", **kw)


@partial(jax.jit, static_argnames=("alg", "max_iter", "chunk_size"))
def _fit_jit(alg, data, hp, key, state0, tol, *, max_iter, chunk_size):
    return _fit_core(alg, data, hp, key, state0, tol, max_iter=max_iter, chunk_size=chunk_size)


def fit(
    alg: Algorithm,
    data: PyTree,
    hp: PyTree,
    key: jax.Array,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    chunk_size: int = 10,
    state0: PyTree | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Run ``alg`` from ``alg.init(key, data, hp)`` (or from ``state0``) until convergence.

    Args:
      alg: the ``Algorithm`` triple (static: its identity is part of the compile cache key, so
        build it once, e.g. through the cached factories, and reuse it).
      data: pytree of arrays the algorithm fits.
      hp: pytree of hyperparameters (traced: changing their values never recompiles).
      key: PRNG key for ``init``.
      max_iter: maximum number of steps (static).
      tol: stop when the relative objective change over one chunk is below ``tol``
        (``tol=0`` runs exactly ``max_iter`` steps).
      chunk_size: steps between objective evaluations (static).
      state0: start from this state instead of calling ``init`` (warm start, user factors).
      progress: drive the same compiled chunks from the host and report between them (a tqdm
        bar or plain lines, see ``jaxfactor._progress``; off when CI is set); a fit inside a
        progress task (what ``jaxfactor run`` opens around every sweep point) always reports.
        Results equal the single compiled loop's.

    Returns:
      ``FitResult(state, trace, n_iter, converged)``.
    """
    if _reporting(progress):
        return _driven(alg, data, _canonical_hp(hp), key, state0, tol, max_iter=int(max_iter), chunk_size=int(chunk_size),
                       layout=("one",))
    return _fit_jit(alg, data, _canonical_hp(hp), key, state0, tol, max_iter=int(max_iter), chunk_size=int(chunk_size))


def _fit_fixed_core(alg, data, hp, key, state0, tol, *, n_steps, chunk_size):
    n_chunks = _n_chunks(n_steps, chunk_size)
    state = alg.init(key, data, hp) if state0 is None else state0
    f0 = alg.objective(state, data, hp)

    def body(carry, _):
        state, it = carry
        state, it = _run_chunk(alg, data, hp, state, it, chunk_size=chunk_size, max_iter=n_steps)
        return (state, it), alg.objective(state, data, hp)

    (state, it), fs = lax.scan(body, (state, jnp.zeros((), jnp.int32)), None, length=n_chunks)
    trace = jnp.concatenate([f0[None], fs])
    converged = _rel_change(trace[-2], trace[-1]) < tol
    return FitResult(state, trace, it, converged)


@partial(jax.jit, static_argnames=("alg", "n_steps", "chunk_size"))
def _fit_fixed_jit(alg, data, hp, key, state0, tol, *, n_steps, chunk_size):
    return _fit_fixed_core(alg, data, hp, key, state0, tol, n_steps=n_steps, chunk_size=chunk_size)


def fit_fixed(
    alg: Algorithm,
    data: PyTree,
    hp: PyTree,
    key: jax.Array,
    *,
    n_steps: int = 100,
    chunk_size: int = 10,
    tol: float = 0.0,
    state0: PyTree | None = None,
    jit: bool = True,
) -> FitResult:
    """Exactly ``n_steps`` steps under ``lax.scan``: reverse-differentiable end to end.

    Same result layout as ``fit``; ``converged`` reports whether the last chunk's relative
    change was below ``tol``. With ``jit=False`` the function can be composed inside a caller's
    own ``jax.grad``/``jit`` (the caller then owns compilation).
    """
    core = _fit_fixed_jit if jit else _fit_fixed_core
    return core(alg, data, _canonical_hp(hp) if jit else hp, key, state0, tol, n_steps=int(n_steps), chunk_size=int(chunk_size))


def _best_of(results: FitResult):
    """Pick the restart with the lowest final objective (non-finite counts as +inf)."""
    final = results.trace[:, -1]
    score = jnp.where(jnp.isfinite(final), final, jnp.inf)
    idx = jnp.argmin(score)
    best = jax.tree_util.tree_map(lambda x: x[idx], results)
    return best, idx


@partial(jax.jit, static_argnames=("alg", "max_iter", "chunk_size", "grid_map"))
def _fit_many_jit(alg, data, hp_grid, keys, state0, tol, *, max_iter, chunk_size, grid_map):
    def over_seeds(hp):
        one = lambda key: _fit_core(alg, data, hp, key, state0, tol, max_iter=max_iter, chunk_size=chunk_size)
        results = jax.vmap(one)(keys)
        best, idx = _best_of(results)
        return best, idx, results.trace[:, -1], results.n_iter, results.converged

    if grid_map == "vmap":
        out = jax.vmap(over_seeds)(hp_grid)
    else:
        out = lax.map(over_seeds, hp_grid)
    return FitManyResult(*out)


SWEEP_AXIS = "sweep"


def _check_many(hp_grid, grid_map, mesh):
    if grid_map not in ("vmap", "map"):
        raise ValueError(f"grid_map must be 'vmap' or 'map', got {grid_map!r}")
    if mesh is not None and len(mesh.axis_names) != 1:
        raise ValueError(f"fit_many shards over a 1-D mesh (see sweep_mesh()); got axes {mesh.axis_names}")
    hp_grid = _canonical_hp(hp_grid)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(hp_grid)}
    if None in sizes or len(sizes) > 1:
        raise ValueError(
            "hp_grid leaves must all share one leading grid axis; build it with jaxfactor.hparam_grid(hp, name=[...])"
        )
    return hp_grid


def sweep_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"sweep"`` over ``devices`` (default: every device, all processes).

    The axis type is chosen explicitly (``jax.make_mesh`` defaults to ``Explicit`` since JAX 0.7,
    older releases to ``Auto``): ``Explicit``, so an array placed on it carries its sharding in
    its type and nothing outside the fit is silently resharded. The fits themselves run inside
    ``shard_map`` (manual on that axis): each device runs its own vmapped ``while_loop`` over its
    slice of the (grid point × seed) pairs, with no collective until the results are gathered.
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (SWEEP_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,), devices=devices)


def _place(x, sharding):
    """Host value -> global array with ``sharding`` (works with several processes: each process
    supplies the slices its own devices hold, from its identical copy of ``x``). An array already
    placed that way is returned as it is (the runner places the data once per run)."""
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _flat_pairs(hp_grid, keys, n_dev: int):
    """(G,) grid × (S,) keys -> G·S pairs (point-major), padded to a multiple of ``n_dev`` by
    repeating the last pair (real numbers, so padded fits are finite; they are dropped after)."""
    G = jax.tree_util.tree_leaves(hp_grid)[0].shape[0]
    S = keys.shape[0]
    n = G * S
    n_pad = -(-n // n_dev) * n_dev
    take = np.minimum(np.arange(n_pad), n - 1)
    hp_flat = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x), S, axis=0)[take], hp_grid)
    key_data = np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys)
    keys_flat = np.tile(key_data, (G,) + (1,) * (key_data.ndim - 1))[take]
    return hp_flat, keys_flat, G, S


def _sharded_args(mesh, data, hp_grid, keys, state0, tol):
    """Place the padded pairs on the mesh's sweep axis and replicate data, start state and tol."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    hp_flat, keys_flat, G, S = _flat_pairs(hp_grid, keys, mesh.size)
    split, repl = NamedSharding(mesh, P(SWEEP_AXIS)), NamedSharding(mesh, P())
    put = lambda tree, sh: jax.tree_util.tree_map(lambda x: _place(x, sh), tree)
    dtype = jnp.zeros(()).dtype
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    args = (put(data, repl), put(hp_flat, split), put(keys_flat, split), put(state0, repl), _place(np.asarray(tol, dtype), repl))
    return args, dict(n_grid=G, n_seeds=S, typed_keys=bool(typed))


@partial(jax.jit, static_argnames=("alg", "max_iter", "chunk_size", "grid_map", "mesh", "n_grid", "n_seeds", "typed_keys"))
def _fit_many_sharded_jit(alg, data, hp_flat, keys_flat, state0, tol, *, max_iter, chunk_size, grid_map, mesh,
                          n_grid, n_seeds, typed_keys):
    from jax.sharding import PartitionSpec as P

    def local(data, hp, keys, state0, tol):
        if typed_keys:
            keys = jax.random.wrap_key_data(keys)
        one = lambda h, k: _fit_core(alg, data, h, k, state0, tol, max_iter=max_iter, chunk_size=chunk_size)
        if grid_map == "vmap":
            res = jax.vmap(one)(hp, keys)
        else:  # one seed-batch at a time on each device, as the unsharded "map" runs one point at a time
            res = lax.map(lambda a: one(*a), (hp, keys), batch_size=min(n_seeds, keys.shape[0]))
        return jax.tree_util.tree_map(lambda x: lax.all_gather(x, SWEEP_AXIS, tiled=True), res)

    rep = P()
    results = jax.shard_map(local, mesh=mesh, in_specs=(rep, P(SWEEP_AXIS), P(SWEEP_AXIS), rep, rep), out_specs=rep,
                            check_vma=False)(data, hp_flat, keys_flat, state0, tol)
    n = n_grid * n_seeds
    results = jax.tree_util.tree_map(lambda x: x[:n].reshape((n_grid, n_seeds) + x.shape[1:]), results)

    def per_point(res):
        best, idx = _best_of(res)
        return best, idx, res.trace[:, -1], res.n_iter, res.converged

    return FitManyResult(*jax.vmap(per_point)(results))


def fit_many(
    alg: Algorithm,
    data: PyTree,
    hp_grid: PyTree,
    keys: jax.Array,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    chunk_size: int = 10,
    state0: PyTree | None = None,
    grid_map: str = "vmap",
    mesh: jax.sharding.Mesh | None = None,
    progress: bool | None = None,
) -> FitManyResult:
    """Fit every (hyperparameter point × seed) pair in one compiled call; keep the best seed.

    Args:
      hp_grid: hyperparameter pytree whose leaves have a leading axis G (see ``hparam_grid``).
      keys: (S,) PRNG keys (``jax.random.split(key, S)``), one restart each.
      grid_map: ``"vmap"`` batches the grid points (fastest), ``"map"`` runs them one after
        another inside the compiled call (``lax.map``: memory of one point at a time). Seeds are
        always vmapped.
      state0: optional common starting state (then seeds only matter if ``step`` uses them).
      mesh: optional 1-D ``jax.sharding.Mesh`` (``sweep_mesh()``): the G·S (point × seed) pairs
        are flattened, padded to a multiple of the mesh size (the padding is dropped) and split
        over its devices, each running its share under ``shard_map``; data and ``state0`` are
        replicated. Every result equals the unsharded one within float tolerance (XLA may fuse
        a different batch size differently). Works across processes after
        ``jax.distributed.initialize`` (the results are gathered to every process).
      progress: report between compiled chunks, as in ``fit`` (unsharded calls only).

    Returns:
      ``FitManyResult``: best restart per point, and every restart's objective / n_iter /
      converged of shape (G, S).
    """
    hp_grid = _check_many(hp_grid, grid_map, mesh)
    if mesh is not None:
        args, static = _sharded_args(mesh, data, hp_grid, keys, state0, tol)
        return _fit_many_sharded_jit(alg, *args, max_iter=int(max_iter), chunk_size=int(chunk_size), grid_map=grid_map,
                                     mesh=mesh, **static)
    if _reporting(progress):
        return _driven(alg, data, hp_grid, keys, state0, tol, max_iter=int(max_iter), chunk_size=int(chunk_size),
                       layout=("many", grid_map))
    return _fit_many_jit(
        alg, data, hp_grid, keys, state0, tol,
        max_iter=int(max_iter), chunk_size=int(chunk_size), grid_map=grid_map,
    )


@partial(jax.jit, static_argnames=("alg", "max_iter", "chunk_size", "in_axes"))
def _fit_batch_jit(alg, data, hp, keys, state0, tol, *, max_iter, chunk_size, in_axes):
    one = lambda d, h, k, s0: _fit_core(alg, d, h, k, s0, tol, max_iter=max_iter, chunk_size=chunk_size)
    return jax.vmap(one, in_axes=in_axes)(data, hp, keys, state0)


def fit_batch(
    alg: Algorithm,
    data: PyTree,
    hp: PyTree,
    keys: jax.Array,
    *,
    data_axes: Any = None,
    hp_axes: Any = None,
    max_iter: int = 200,
    tol: float = 1e-4,
    chunk_size: int = 10,
    state0: PyTree | None = None,
    progress: bool | None = None,
) -> FitResult:
    """B independent fits in one compiled call, paired along a leading axis (no best-of).

    ``keys`` has shape (B, 2); ``data_axes`` / ``hp_axes`` are ``vmap`` ``in_axes`` for the data
    and hyperparameter pytrees (``None`` = shared, ``0`` = batched; a pytree of those batches
    some leaves only, e.g. ``WNMFData(None, None, 0, 0)`` shares the matrices and batches the
    row/column masks — that is how bootstraps and filter grids keep one shape).
    ``state0``, if given, is a batched start state (leading axis B) used instead of ``init``;
    starting states drawn on the host keep the random number generator out of the compiled
    program, which can halve compilation time for small, fast fits.
    Every leaf of the returned ``FitResult`` has a leading axis B. ``progress`` as in ``fit``.
    """
    if _reporting(progress):
        return _driven(alg, data, _canonical_hp(hp), keys, state0, tol, max_iter=int(max_iter), chunk_size=int(chunk_size),
                       layout=("batch", (data_axes, hp_axes, 0, None if state0 is None else 0)))
    return _fit_batch_jit(
        alg, data, _canonical_hp(hp), keys, state0, tol,
        max_iter=int(max_iter), chunk_size=int(chunk_size), in_axes=(data_axes, hp_axes, 0, None if state0 is None else 0),
    )


def hparam_grid(hp: Any, **axes: Sequence[float]) -> tuple[Any, list[dict[str, float]]]:
    """Cartesian grid over named fields of a NamedTuple of hyperparameters.

    ``hparam_grid(NMFHparams(), l2_H=[0, 0.1], l1_W=[0, 1])`` returns the stacked pytree (every
    leaf with a leading axis of 4) and the list of the 4 points as dicts, in the same order
    (the last name varies fastest, like ``itertools.product``).
    """
    fields = getattr(hp, "_fields", None)
    if fields is None:
        raise TypeError("hparam_grid expects a NamedTuple of hyperparameters")
    for name in axes:
        if name not in fields:
            raise ValueError(f"unknown hyperparameter {name!r}; valid: {', '.join(fields)}")
    names = list(axes)
    points = [dict(zip(names, values)) for values in itertools.product(*(list(axes[n]) for n in names))]
    if not points:
        raise ValueError("hparam_grid: every axis needs at least one value")
    rows = [hp._replace(**p) for p in points]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *rows)
    return stacked, points


def compile_fit_many(
    alg: Algorithm,
    data: PyTree,
    hp_grid: PyTree,
    keys: jax.Array,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    chunk_size: int = 10,
    grid_map: str = "vmap",
    mesh: jax.sharding.Mesh | None = None,
):
    """Ahead-of-time compile ``fit_many`` for these shapes (the runner times compilation apart).

    Returns ``(run, seconds)`` where ``run(data, hp_grid, keys) -> FitManyResult`` executes the
    compiled program on arrays of the same shapes and dtypes (placed on ``mesh`` if given).
    """
    import time

    hp_grid = _check_many(hp_grid, grid_map, mesh)
    static = dict(max_iter=int(max_iter), chunk_size=int(chunk_size), grid_map=grid_map)
    t0 = time.perf_counter()
    if mesh is not None:
        args, shape_static = _sharded_args(mesh, data, hp_grid, keys, None, tol)
        compiled = _fit_many_sharded_jit.lower(alg, *args, mesh=mesh, **static, **shape_static).compile()
        seconds = time.perf_counter() - t0

        def run_sharded(data, hp_grid, keys):
            args, _ = _sharded_args(mesh, data, _canonical_hp(hp_grid), keys, None, tol)
            return compiled(*args)

        return run_sharded, seconds
    compiled = _fit_many_jit.lower(alg, data, hp_grid, keys, None, tol, **static).compile()
    seconds = time.perf_counter() - t0

    def run(data, hp_grid, keys):
        return compiled(data, _canonical_hp(hp_grid), keys, None, tol)

    return run, seconds


def fit_restarts(
    alg: Algorithm, data: PyTree, hp: PyTree, key: jax.Array, n_restarts: int = 1, *, max_iter: int = 200,
    tol: float = 1e-4, chunk_size: int = 10, state0: PyTree | None = None, progress: bool | None = None,
) -> tuple[FitResult, np.ndarray]:
    """The restarts the estimator APIs share: one ``fit``, or the best of ``n_restarts`` seeds
    vmapped by ``fit_many`` (either with progress, as in ``fit``). Returns the chosen
    ``FitResult`` and every restart's final objective."""
    kw = dict(max_iter=max_iter, tol=tol, chunk_size=chunk_size, state0=state0)
    if n_restarts == 1:
        res = fit(alg, data, hp, key, progress=progress, **kw)
        return res, np.asarray(res.trace[-1])[None]
    grid = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], hp)
    many = fit_many(alg, data, grid, jax.random.split(key, n_restarts), progress=progress, **kw)
    return jax.tree_util.tree_map(lambda x: x[0], many.best), np.asarray(many.objective[0])


def completed_trace(res: FitResult, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The informative part of ``res.trace`` (float64) and the iteration of each entry."""
    n_iter = int(res.n_iter)
    n_done = -(-n_iter // chunk_size)
    return np.asarray(res.trace[: n_done + 1], np.float64), np.minimum(np.arange(n_done + 1) * chunk_size, n_iter)


def check_finished(trace: np.ndarray, converged: bool, *, tol: float, max_iter: int, name: str, hint: str) -> None:
    """Never hand back a non-finite fit; warn (as scikit-learn does) when ``tol`` was not reached."""
    if not np.all(np.isfinite(trace)):
        raise FloatingPointError(f"{name} produced a non-finite objective; {hint}")
    if tol > 0 and not converged:
        import warnings

        warnings.warn(f"{name} did not converge in max_iter={max_iter} iterations (tol={tol}); raise max_iter",
                      ConvergenceWarning, stacklevel=3)
