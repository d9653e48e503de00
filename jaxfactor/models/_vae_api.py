"""Fitting the count autoencoder / VAE from arrays or AnnData, and checkpoints.

- :func:`fit_vae`: validate the input (one-line ``ValueError`` before anything compiles), split
  cells into training and validation sets, train with the epoch-step algorithm of
  :mod:`jaxfactor.models._vae_train` (one compiled program per epoch, the same executable for every
  epoch), record loss curves, checkpoint, stop on a non-finite loss naming the step.
- :class:`VAEFit`: the fitted model (configuration, training state, history, gene selection,
  split); its methods call the batch inference of :mod:`jaxfactor.models._vae_infer`.
- :func:`save_checkpoint` / :func:`load_checkpoint`: parameters, optimiser state, RNG key,
  counters, configuration, hyperparameters, gene selection (the data normalisation: which input
  columns, ``log1p`` transform, observed library size) and the split, in one msgpack file
  (``flax.serialization``) written atomically (temporary file + ``os.replace``). Training resumed
  from a checkpoint (``fit_vae(..., resume=path)``) runs the same compiled epoch on the same
  state, so it continues bit-identically. :func:`checkpoint_bytes` / :func:`checkpoint_from_bytes`
  are the same file's contents in memory (the runner stores them in ``result.h5ad``).
- ``fit_vae(..., mesh=jaxfactor.cell_mesh())``: one VAE trained data-parallel, every minibatch
  split over the devices (see :mod:`jaxfactor.models._vae_train`); the fit equals the one-device
  fit up to float32 rounding and can be resumed with or without a mesh.
"""

from __future__ import annotations

import inspect
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._fit import _canonical_hp
from .._xla import cpu_jit
from .._protocol import renamed_arguments
from ._likelihoods import LIKELIHOODS
from ._vae_input import OBSM_KEY, _choice, _int, _num, check_values, dense32, read_input
from ._vae_modules import KINDS, NORMS, TRANSFORMS, VAEConfig
from ._vae_train import VAEData, VAEHparams, VAEState, data_constant, make_data, steps_per_epoch, vae_training

FORMAT = "jaxfactor-vae-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.msgpack"

__all__ = ["VAEFit", "fit_vae", "fit_vae_grid", "load_checkpoint", "save_checkpoint", "checkpoint_bytes", "checkpoint_from_bytes",
           "OBSM_KEY"]


# ------------------------------------------------------------------------------------------------
# the fitted model
# ------------------------------------------------------------------------------------------------

@dataclass
class VAEFit:
    """A trained autoencoder / VAE.

    ``state`` is the training state after the last epoch (what a resumed fit continues from);
    ``variables`` are the weights used for inference: the best validation epoch's when early
    stopping ran with ``restore_best``, otherwise the last. ``genes`` are the input columns
    the model uses (all-zero genes dropped), ``cells`` the input rows it trained on (all-zero
    cells dropped) and ``train_index`` / ``val_index`` the split, as positions in ``cells`` (so
    ``cells[val_index]`` are the held-out rows of the input). ``history`` has one entry per epoch:
    ``epoch``, ``train_loss`` (mean loss per training cell with the KL weight of that epoch; the
    data constant ``sum log x!`` left out of the compiled loss is added back), ``val_loss``
    (held-out negative ELBO per cell; NaN where not computed) and ``seconds``.
    """

    config: VAEConfig
    hparams: VAEHparams
    settings: dict
    state: VAEState
    history: dict
    genes: np.ndarray
    n_input_genes: int
    gene_names: list | None
    train_index: np.ndarray
    val_index: np.ndarray
    library_median: float
    cells: np.ndarray | None = None
    compile_seconds: float = float("nan")
    extra: dict = field(default_factory=dict)

    @property
    def algorithm(self):
        s = self.settings
        return vae_training(self.config, s["batch_size"], s["early_stopping"], s["eval_chunk"])

    @property
    def variables(self) -> dict:
        from ._vae_train import variables_of

        st = self.state
        if self.settings["early_stopping"] and self.settings.get("restore_best", True) and st.best_params is not None:
            return variables_of(st.best_params, st.best_batch_stats)
        return variables_of(st.params, st.batch_stats)

    @property
    def n_epochs(self) -> int:
        return int(self.state.epoch)

    def encode(self, data, **kwargs):
        from ._vae_infer import encode

        return encode(self, data, **kwargs)

    def decode(self, z, **kwargs):
        from ._vae_infer import decode

        return decode(self, z, **kwargs)

    def sample(self, n_cells=None, **kwargs):
        from ._vae_infer import sample

        return sample(self, n_cells, **kwargs)

    def evaluate(self, data, **kwargs):
        from ._vae_infer import evaluate

        return evaluate(self, data, **kwargs)

    def save(self, path: str) -> str:
        return save_checkpoint(self, path)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------

@partial(jax.jit, static_argnums=0)
def _init(alg, key, data, hp):
    return alg.init(key, data, hp)


@partial(cpu_jit, static_argnums=0)  # the CPU's faster fusion of dots and elementwise work (.._xla)
def _epoch(alg, state, data, hp):
    return alg.step(state, data, hp)


@partial(cpu_jit, static_argnums=0)
def _objective(alg, state, data, hp):
    return alg.objective(state, data, hp)


@renamed_arguments(n_latent="n_components", max_epochs="max_iter")
def fit_vae(
    data, *, layer: str | None = None, kind: str = "vae", likelihood: str = "zinb", n_components: int = 10,
    n_hidden: int = 128, n_layers: int = 1, dropout_rate: float = 0.1, norm: str = "batch", transform: str = "log1p",
    batch_size: int = 128, max_iter: int | None = None, lr: float = 1e-3, weight_decay: float = 1e-6,
    adam_eps: float = 0.01, kl_warmup_epochs: float = 400.0, validation_fraction: float = 0.1,
    early_stopping: bool = False, patience: int = 45, min_delta: float = 0.0, restore_best: bool = True,
    seed: int = 0, val_every: int = 1, checkpoint_dir: str | None = None, checkpoint_every: int = 10,
    resume=None, progress: bool = False, obsm_key: str | None = None, eval_chunk: int = 1024, mesh=None,
) -> VAEFit:
    """Train a count VAE (or autoencoder, ``kind='ae'``) on cells x genes data.

    The defaults are scVI's ``SCVI`` (Lopez et al., Nat. Methods 2018): one hidden layer of 128,
    latent 10, encoder dropout 0.1, batch norm, ZINB likelihood with gene-wise dispersion and the
    observed library size as offset, minibatches of 128, Adam(W) with lr 1e-3, eps 0.01, weight
    decay 1e-6, KL warm-up over 400 epochs, 90 % / 10 % train / validation split, and
    ``max_iter = min(round(20000 / n_cells * 400), 400)`` epochs. ``n_components`` is the latent
    size (``n_latent=`` and ``max_epochs=`` are deprecated names).

    Args:
      data: counts as an array, a scipy sparse matrix or an AnnData (``X`` or ``layer``). The
        encoder sees ``log1p(x)``; count likelihoods score the raw counts (non-negative integers
        required), ``'bernoulli'`` scores ``x > 0``, ``'gaussian'`` the transformed data.
        All-zero cells and genes are dropped with a warning that counts them.
      kind: ``'vae'`` (ELBO) or ``'ae'`` (deterministic bottleneck, reconstruction loss).
      likelihood: ``'zinb'``, ``'nb'``, ``'poisson'``, ``'bernoulli'`` or ``'gaussian'``.
      norm: ``'batch'``, ``'layer'`` or ``'none'`` after each hidden Dense layer.
      validation_fraction: share of cells held out (0: the objective uses the training cells).
      early_stopping: stop after ``patience`` epochs without a held-out improvement larger than
        ``min_delta``; ``restore_best`` makes the best epoch's weights the model's.
      val_every: compute the held-out loss every ``val_every`` epochs for the history (0: never;
        early stopping evaluates every epoch anyway).
      checkpoint_dir: write ``checkpoint.msgpack`` there every ``checkpoint_every`` epochs and at
        the end (atomically; the last good one is named if the loss turns non-finite).
      resume: a checkpoint path or a ``VAEFit`` to continue from; configuration, hyperparameters,
        gene selection and split come from it, ``max_iter`` is the new total of epochs.
      obsm_key: ``None`` (default): ``data`` is never modified; get the latent with
        ``fit.encode(adata)`` (which writes ``adata.obsm['X_jaxfactor_vae']`` for scanpy) or a new
        AnnData from ``jaxfactor.family("vae").fit(...).to_anndata(adata)``. A name: the posterior
        means of all cells of an AnnData ``data`` are written to ``data.obsm[obsm_key]``.
      mesh: a 1-D ``"cells"`` mesh (:func:`jaxfactor.cell_mesh`): data-parallel training, every
        minibatch of ``batch_size`` cells (a multiple of the mesh size) split over its devices,
        the training cells stored split over them too, gradients, losses and batch-norm moments
        summed over the devices, per-cell noise drawn as on one device; the result equals the
        one-device fit up to float32 rounding. The held-out loss is computed whole on every
        device. The returned model lives on the default device.

    Returns:
      :class:`VAEFit`. Raises ``ValueError`` on bad input (before compiling) and
      ``FloatingPointError`` naming the step when a minibatch loss is not finite.
    """
    prep = _prepare(data, layer, kind, likelihood, n_components, n_hidden, n_layers, dropout_rate, norm, transform,
                    batch_size, max_iter, lr, weight_decay, adam_eps, kl_warmup_epochs, validation_fraction, early_stopping,
                    patience, min_delta, restore_best, seed, val_every, checkpoint_every, resume, eval_chunk, mesh)
    fit, alg, vd, hpc, fit_const, prev = prep
    ckpt = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir else None
    resumed_from = None
    if prev is not None and prev.extra.get("path"):
        resumed_from = (prev.extra["path"], prev.n_epochs)
    try:
        _train_loop(fit, alg, vd, hpc, fit.settings["max_epochs"], val_every, ckpt, checkpoint_every, progress,
                    resumed_from, fit_const)
    finally:
        if mesh is not None:  # inference and checkpoints work on one device
            fit.state = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), fit.state)
    if obsm_key and hasattr(data, "obsm"):
        fit.encode(data, layer=layer, obsm_key=obsm_key)
    return fit


#: the fit_vae arguments that are numbers of the training (``VAEHparams``): a grid varies them
GRID_OPTIONS = ("lr", "weight_decay", "adam_eps", "kl_warmup_epochs", "min_delta", "patience")


def fit_vae_grid(data, grid, *, progress: bool = False, **kwargs) -> list:
    """One network per point of ``grid`` (dicts of :data:`GRID_OPTIONS`: learning rate, weight
    decay, Adam's eps, KL warm-up epochs, early stopping's ``min_delta`` and ``patience``), all
    else as :func:`fit_vae` with ``kwargs``, trained side by side: every epoch is one compiled
    call of the epoch step ``vmap``-ped over the points (the hyperparameters are pytree data of
    the algorithm, so one program serves the grid). Every point starts from the same initial
    weights and minibatch order as its own ``fit_vae`` and equals it up to float32 rounding.

    Returns one :class:`VAEFit` per point, or a string for a point whose training loss turned
    non-finite (that point stops; the others go on). No mesh, checkpoint or resume (train those
    one by one with :func:`fit_vae`). A point's ``history['seconds']`` is its share of the epoch.
    """
    grid = [dict(g) for g in grid]
    if not grid:
        raise ValueError("grid is empty; give at least one dict of " + ", ".join(GRID_OPTIONS))
    for g in grid:
        bad = sorted(set(g) - set(GRID_OPTIONS))
        if bad:
            raise ValueError(f"grid point option(s) {bad} cannot be trained side by side; vary only "
                             + ", ".join(GRID_OPTIONS) + " (train other settings one by one)")
        for k, v in g.items():
            _int(v, k) if k == "patience" else _num(v, k)
    for k in ("mesh", "checkpoint_dir", "resume"):
        if kwargs.get(k) is not None:
            raise ValueError(f"fit_vae_grid trains on one device without checkpoints; {k} is for fit_vae, one point at a time")
    from .._grid import inspect_defaults

    kw = {**inspect_defaults(fit_vae), **kwargs}
    renamed = {"n_latent": "n_components", "max_epochs": "max_iter"}  # _prepare's names -> fit_vae's
    order = [renamed.get(n, n) for n in inspect.signature(_prepare).parameters]
    unknown = sorted(set(kwargs) - set(order) - {"obsm_key"})
    if unknown:
        raise ValueError(f"unknown fit_vae_grid option(s) {unknown}")
    kw["data"] = data
    base, alg, vd, _, constant, _ = _prepare(*(kw[k] for k in order))
    hps = [base.hparams._replace(**{k: float(v) for k, v in g.items()}) for g in grid]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(_canonical_hp(h) for h in hps))
    key = jax.random.PRNGKey(base.settings["seed"])
    states = _init_many(alg, key, vd, stacked)
    return _train_many(base, alg, vd, hps, stacked, states, int(kw["val_every"]), progress, constant)


@partial(jax.jit, static_argnums=0)
def _init_many(alg, key, data, hps):
    return jax.vmap(alg.init, in_axes=(None, None, 0))(key, data, hps)


@partial(cpu_jit, static_argnums=0)
def _epoch_many(alg, states, data, hps):
    return jax.vmap(alg.step, in_axes=(0, None, 0))(states, data, hps)


@partial(cpu_jit, static_argnums=0)
def _objective_many(alg, states, data, hps):
    return jax.vmap(alg.objective, in_axes=(0, None, 0))(states, data, hps)


def _train_many(base: VAEFit, alg, vd: VAEData, hps, stacked, states, val_every, progress, constant) -> list:
    """The epochs of a grid (see :func:`fit_vae_grid`): until every point has run ``max_epochs``,
    stopped early or turned non-finite."""
    from .._progress import bar as progress_bar

    max_epochs = base.settings["max_epochs"]
    es = base.settings["early_stopping"]
    nb = steps_per_epoch(base.train_index.size, base.settings["batch_size"])
    P = len(hps)
    hist = [{"epoch": [], "train_loss": [], "val_loss": [], "seconds": []} for _ in range(P)]
    done = np.zeros(P, np.int64)
    live = np.ones(P, bool)
    epoch_seconds = []
    with progress_bar(max_epochs, unit="epoch", progress=progress) as bar:
        while live.any():
            t0 = time.perf_counter()
            new = _epoch_many(alg, states, vd, stacked)
            ep, nan_step, loss, stopped, val = jax.device_get((new.epoch, new.nan_step, new.train_loss, new.stopped,
                                                               new.val_loss))
            if not es:
                val = (np.asarray(jax.device_get(_objective_many(alg, new, vd, stacked)))
                       if val_every and int(ep.max()) % val_every == 0 else np.full(P, np.nan))
            secs = time.perf_counter() - t0
            epoch_seconds.append(secs)
            ran = live & (ep > done)
            for p in np.flatnonzero(ran):
                for k, v in (("epoch", int(ep[p])), ("train_loss", float(loss[p]) + constant), ("val_loss", float(val[p])),
                             ("seconds", secs / ran.sum())):
                    hist[p][k].append(v)
            done = np.asarray(ep)
            live = live & (done < max_epochs) & ~np.asarray(stopped) & (np.asarray(nan_step) < 0)
            states = new
            finite = np.asarray(loss, np.float64)[ran]
            finite = finite[np.isfinite(finite)]
            bar.update(int(np.max(ep)), **({"loss": float(finite.min()) + constant} if finite.size else {}))
    compile_seconds = max(epoch_seconds[0] - float(np.median(epoch_seconds[1:])), 0.0) if len(epoch_seconds) > 1 \
        else float("nan")
    out = []
    for p, hp in enumerate(hps):
        if int(nan_step[p]) >= 0:
            s = int(nan_step[p])
            out.append(f"training loss is not finite at step {s} (epoch {s // nb + 1}, minibatch {s % nb + 1} of {nb}) "
                       "with " + ", ".join(f"{k}={getattr(hp, k):g}" for k in GRID_OPTIONS) + "; lower lr")
            continue
        fit = VAEFit(base.config, hp, dict(base.settings), jax.tree_util.tree_map(lambda x: x[p], states),
                     {k: np.asarray(v, np.int64 if k == "epoch" else np.float64) for k, v in hist[p].items()},
                     base.genes, base.n_input_genes, base.gene_names, base.train_index, base.val_index,
                     base.library_median, base.cells)
        fit.compile_seconds = compile_seconds
        out.append(fit)
    return out


def _prepare(data, layer, kind, likelihood, n_latent, n_hidden, n_layers, dropout_rate, norm, transform, batch_size,
             max_epochs, lr, weight_decay, adam_eps, kl_warmup_epochs, validation_fraction, early_stopping, patience,
             min_delta, restore_best, seed, val_every, checkpoint_every, resume, eval_chunk, mesh):
    """Everything of ``fit_vae`` before the epochs: the checked input, the cells and genes kept,
    the split, the network, the algorithm, its data and the initial state (in a ``VAEFit``);
    returns ``(fit, algorithm, data, canonical hparams, data constant, resumed checkpoint)``."""
    from .._cells import check_cell_mesh

    check_cell_mesh(mesh)
    mat, _, names = read_input(data, layer)
    prev = load_checkpoint(resume) if isinstance(resume, (str, os.PathLike)) else resume
    if prev is not None:
        config, hp = prev.config, prev.hparams
        settings = dict(prev.settings)
        if mat.shape[1] != prev.n_input_genes:
            raise ValueError(f"the data have {mat.shape[1]} genes but the checkpoint was trained on {prev.n_input_genes}")
    else:
        _choice(kind, "kind", KINDS)
        _choice(likelihood, "likelihood", LIKELIHOODS)
        _choice(norm, "norm", NORMS)
        _choice(transform, "transform", TRANSFORMS)
        for v, nm in ((n_latent, "n_components"), (n_hidden, "n_hidden"), (n_layers, "n_layers"), (batch_size, "batch_size"),
                      (patience, "patience"), (eval_chunk, "eval_chunk")):
            _int(v, nm)
        _num(dropout_rate, "dropout_rate", 0.0, 1.0, hi_open=True)
        _num(validation_fraction, "validation_fraction", 0.0, 1.0, hi_open=True)
        for v, nm in ((lr, "lr"), (weight_decay, "weight_decay"), (adam_eps, "adam_eps"),
                      (kl_warmup_epochs, "kl_warmup_epochs"), (min_delta, "min_delta")):
            _num(v, nm)
        settings = {"batch_size": int(batch_size), "early_stopping": bool(early_stopping), "eval_chunk": int(eval_chunk),
                    "restore_best": bool(restore_best), "seed": int(seed), "validation_fraction": float(validation_fraction)}
    _int(val_every, "val_every", 0)
    _int(checkpoint_every, "checkpoint_every")
    lik = prev.config.likelihood if prev is not None else likelihood
    tf = prev.config.transform if prev is not None else transform
    check_values(mat, lik, tf)

    # drop all-zero cells and genes (they carry no information; a zero library has no offset)
    nz = mat != 0
    cell_nnz = np.asarray(nz.sum(axis=1)).ravel()
    gene_nnz = np.asarray(nz.sum(axis=0)).ravel()
    cells = np.flatnonzero(cell_nnz > 0)
    genes = prev.genes if prev is not None else np.flatnonzero(gene_nnz > 0)
    if cells.size == 0 or genes.size == 0:
        raise ValueError("every cell (or every gene) of X is all-zero; nothing to fit")
    n_drop_c, n_drop_g = mat.shape[0] - cells.size, mat.shape[1] - genes.size
    if prev is None and (n_drop_c or n_drop_g):
        warnings.warn(f"dropped {n_drop_c} all-zero cells and {n_drop_g} all-zero genes before training", UserWarning,
                      stacklevel=4)
    if prev is None:
        config = VAEConfig(n_genes=int(genes.size), n_latent=int(n_latent), n_hidden=int(n_hidden), n_layers=int(n_layers),
                           dropout_rate=float(dropout_rate), norm=norm, likelihood=likelihood, kind=kind, transform=transform)
        if n_latent > genes.size:
            raise ValueError(f"n_components={n_latent} (the latent size) is larger than the number of genes ({genes.size}); "
                             f"choose n_components <= {genes.size}")
        hp = VAEHparams(lr=float(lr), weight_decay=float(weight_decay), adam_eps=float(adam_eps),
                        kl_warmup_epochs=float(kl_warmup_epochs), patience=float(patience), min_delta=float(min_delta))
        rng = np.random.default_rng(seed)
        perm = rng.permutation(cells.size)
        n_val = int(round(validation_fraction * cells.size)) if validation_fraction > 0 else 0
        if validation_fraction > 0:
            n_val = min(max(n_val, 1), cells.size - 1)
        val_index, train_index = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    else:
        train_index, val_index = prev.train_index, prev.val_index
    if train_index.size < settings["batch_size"]:
        raise ValueError(f"batch_size={settings['batch_size']} exceeds the {train_index.size} training cells; "
                         "lower batch_size or validation_fraction")
    if mesh is not None and settings["batch_size"] % mesh.size:
        b, d = settings["batch_size"], mesh.size
        raise ValueError(f"batch_size={b} is not a multiple of the {d} devices of the mesh; use a multiple of {d} "
                         f"(e.g. {-(-b // d) * d}) or no mesh")
    if max_epochs is None:
        max_epochs = max(1, min(round(20000 / cells.size * 400), 400)) if prev is None else prev.settings["max_epochs"]
    max_epochs = _int(max_epochs, "max_epochs")
    settings["max_epochs"] = max_epochs

    x = dense32(mat, cells, genes)
    x_train = x[train_index]
    library_median = float(np.median(x_train.sum(axis=1)))
    fit_const = data_constant(config, x_train)
    if mesh is None:
        vd = make_data(x_train, x[val_index] if val_index.size else x_train, settings["eval_chunk"])
        alg = vae_training(config, settings["batch_size"], settings["early_stopping"], settings["eval_chunk"])
    else:
        vd = _mesh_data(mesh, x_train, x[val_index] if val_index.size else x_train, settings["eval_chunk"])
        alg = vae_training(config, settings["batch_size"], settings["early_stopping"], settings["eval_chunk"], mesh,
                           int(train_index.size))
    del x, x_train
    hpc = _canonical_hp(hp)
    if prev is not None:
        state = jax.tree_util.tree_map(jnp.asarray, prev.state)
        history = {k: list(np.asarray(v)) for k, v in prev.history.items()}
    else:
        state = _init(alg, jax.random.PRNGKey(seed), vd, hpc)
        history = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    if mesh is not None:
        state = _replicate(mesh, state)
    fit = VAEFit(config, hp, settings, state, history, genes, int(mat.shape[1]), names, train_index, val_index,
                 library_median, cells)
    return fit, alg, vd, hpc, fit_const, prev


def _mesh_data(mesh, x_train, x_val, eval_chunk: int) -> VAEData:
    """``make_data`` placed on ``mesh``: the training rows padded to a multiple of the mesh size
    and split over ``"cells"``, the held-out rows and weights replicated."""
    from .._cells import REPL, pad_rows, padded_size, place_rows
    from .._fit import _place

    vd = make_data(np.zeros((1, x_train.shape[1]), np.float32), x_val, eval_chunk)
    repl = jax.sharding.NamedSharding(mesh, REPL)
    x = place_rows(mesh, pad_rows(np.asarray(x_train, np.float32), padded_size(x_train.shape[0], mesh)))
    return VAEData(x, _place(np.asarray(vd.x_val), repl), _place(np.asarray(vd.val_weight), repl))


def _replicate(mesh, tree):
    from .._cells import REPL
    from .._fit import _place

    repl = jax.sharding.NamedSharding(mesh, REPL)
    return jax.tree_util.tree_map(lambda a: _place(a, repl), tree)


def _train_loop(fit: VAEFit, alg, vd: VAEData, hp, max_epochs, val_every, ckpt, checkpoint_every, progress, last_good,
                constant):
    from .._progress import bar as progress_bar

    nb = steps_per_epoch(fit.train_index.size, fit.settings["batch_size"])
    es = fit.settings["early_stopping"]
    h = fit.history
    state = fit.state
    done, stopped = jax.device_get((state.epoch, state.stopped))
    epoch_seconds = []
    with progress_bar(max_epochs, unit="epoch", initial=int(done), progress=progress) as bar:
        while int(done) < max_epochs and not bool(stopped):
            t0 = time.perf_counter()
            new = _epoch(alg, state, vd, hp)
            done, nan_step, loss, stopped, val = jax.device_get((new.epoch, new.nan_step, new.train_loss, new.stopped,
                                                                 new.val_loss))
            secs = time.perf_counter() - t0
            if nan_step >= 0:
                fit.state = state
                where = (f"last good checkpoint: {last_good[0]} (epoch {last_good[1]})" if last_good else
                         "no checkpoint was written yet" if ckpt else "no checkpoint was written (pass checkpoint_dir)")
                raise FloatingPointError(
                    f"training loss is not finite at step {int(nan_step)} (epoch {int(nan_step) // nb + 1}, minibatch "
                    f"{int(nan_step) % nb + 1} of {nb}); training stopped, {where}; lower lr or check the data")
            state = new
            if not es:
                val = float(_objective(alg, state, vd, hp)) if val_every and int(done) % val_every == 0 else float("nan")
            epoch_seconds.append(secs)
            for k, v in (("epoch", int(done)), ("train_loss", float(loss) + constant), ("val_loss", float(val)),
                         ("seconds", secs)):
                h[k].append(v)
            bar.update(int(done), loss=float(loss) + constant)
            fit.state = state
            if ckpt and (int(done) % checkpoint_every == 0 or int(done) >= max_epochs or bool(stopped)):
                save_checkpoint(fit, ckpt)
                last_good = (ckpt, int(done))
    fit.history = {k: np.asarray(v, np.int64 if k == "epoch" else np.float64) for k, v in h.items()}
    if len(epoch_seconds) > 1:  # the first call of this process compiles the epoch
        fit.compile_seconds = max(epoch_seconds[0] - float(np.median(epoch_seconds[1:])), 0.0)


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------

def save_checkpoint(fit: VAEFit, path: str) -> str:
    """Write ``fit`` to ``path`` (one msgpack file) atomically; returns the path."""
    data = checkpoint_bytes(fit)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def checkpoint_bytes(fit: VAEFit) -> bytes:
    """The contents of ``fit``'s checkpoint file (msgpack): what :func:`save_checkpoint` writes."""
    from flax import serialization

    meta = {"format": FORMAT, "config": fit.config._asdict(), "hparams": fit.hparams._asdict(), "settings": fit.settings,
            "n_input_genes": fit.n_input_genes, "gene_names": fit.gene_names, "library_median": fit.library_median}
    payload = {
        "meta": json.dumps(meta),
        "state": serialization.to_state_dict(jax.device_get(fit.state)),
        "history": {k: np.asarray(v) for k, v in fit.history.items()},
        "genes": np.asarray(fit.genes, np.int64),
        "train_index": np.asarray(fit.train_index, np.int64),
        "val_index": np.asarray(fit.val_index, np.int64),
        "cells": np.asarray(fit.cells if fit.cells is not None else [], np.int64),
    }
    return serialization.msgpack_serialize(payload)


def load_checkpoint(path: str) -> VAEFit:
    """Read a checkpoint written by :func:`save_checkpoint` (or ``fit_vae(checkpoint_dir=...)``:
    pass the folder or the file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path!r}")
    with open(path, "rb") as fh:
        fit = checkpoint_from_bytes(fh.read(), source=path)
    fit.extra["path"] = path  # where a resumed fit says its last good checkpoint is
    return fit


def checkpoint_from_bytes(data, source: str | None = None) -> VAEFit:
    """The model in checkpoint contents (``bytes`` or a uint8 array, as :func:`checkpoint_bytes`
    returns); ``source`` names them in errors."""
    from flax import serialization

    what = repr(source) if source else "the data"
    try:
        payload = serialization.msgpack_restore(data if isinstance(data, bytes) else np.asarray(data, np.uint8).tobytes())
        meta = json.loads(payload["meta"])
    except Exception:
        raise ValueError(f"{what} is not a jaxfactor VAE checkpoint (cannot be decoded)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{what} is not a jaxfactor VAE checkpoint (format {fmt!r})")
    config, hp, settings = VAEConfig(**meta["config"]), VAEHparams(**meta["hparams"]), meta["settings"]
    alg = vae_training(config, settings["batch_size"], settings["early_stopping"], settings["eval_chunk"])
    shape = jax.ShapeDtypeStruct((1, config.n_genes), jnp.float32)
    like = VAEData(shape, shape, jax.ShapeDtypeStruct((1,), jnp.float32))
    template = jax.eval_shape(alg.init, jax.random.PRNGKey(0), like, _canonical_hp(hp))
    restored = serialization.from_state_dict(template, payload["state"])
    state = jax.tree_util.tree_map(lambda t, v: jnp.asarray(v, t.dtype), template, restored)
    history = {k: np.asarray(v) for k, v in payload["history"].items()}
    return VAEFit(config, hp, settings, state, history, np.asarray(payload["genes"]), int(meta["n_input_genes"]),
                  meta["gene_names"], np.asarray(payload["train_index"]), np.asarray(payload["val_index"]),
                  float(meta["library_median"]), np.asarray(payload["cells"]))
