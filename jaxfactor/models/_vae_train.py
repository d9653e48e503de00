"""Training of the autoencoder / VAE as an :class:`~jaxfactor.Algorithm`: one step is one epoch.

Objective. For a cell ``x`` with library ``l = sum_g x_g`` the VAE maximises the evidence lower
bound (Kingma & Welling, ICLR 2014)

    ELBO(x) = E_{q(z|x)}[log p(x | z, l)] - KL(q(z|x) || N(0, I)),
    KL = 1/2 sum_j (var_j + mean_j^2 - 1 - log var_j)            (analytic, diagonal Gaussians),

a lower bound on ``log p(x | l)``: maximising it over the decoder is approximate maximum
likelihood. The reconstruction term is estimated with one reparameterised draw
``z = mean + sqrt(var) * eps`` per cell and minibatch. The minibatch loss is scVI's (Lopez et
al., Nat. Methods 2018): ``mean_cells[-log p(x|z) + beta_t KL]`` with the KL warm-up
``beta_t = min_kl + (max_kl - min_kl) * min(1, epoch / kl_warmup_epochs)`` held fixed within an
epoch (scVI: 400 warm-up epochs). The autoencoder (``kind='ae'``) minimises the reconstruction
term at ``z = mean`` alone.

Step. One call of ``step`` is one epoch: a permutation of the training cells drawn from the key
in the state is cut into ``floor(n / batch_size)`` minibatches of ``batch_size`` cells and, as
scVI's data loader does, one last shorter minibatch of the ``r = n mod batch_size`` cells left
over (its loss is the mean over those ``r`` cells, its batch-norm moments theirs). As scVI, a
remainder of fewer than 3 cells (too few for batch norm) is not used: those cells, different
ones each epoch, wait for the next epoch. The rows are gathered on the device, ``lax.scan``
runs one optax AdamW update per full minibatch and the short one follows (a second shape in
the same program). The whole epoch is one compiled program: no host round trip per minibatch.
All randomness (split, shuffles, dropout, reparameterisation noise) comes
from ``jax.random`` keys derived from the seed, so a fit is deterministic for a seed.

Non-finite loss. The global index of the first minibatch whose loss is not finite is recorded
in ``state.nan_step`` and every later ``step`` leaves the state as it is (the objective is then
NaN too, which also ends the shared ``fit`` loop). Updates are not masked inside the epoch (a
per-update select of parameters and optimiser state costs as much memory traffic as AdamW
itself): the caller keeps the state of the last finished epoch, as ``fit_vae`` does, and
stops with an error naming the step. A non-finite gradient with a finite loss shows up as a
non-finite loss one step later.

Early stopping (``early_stopping=True``). The shared ``fit`` loop stops on a relative change of
the objective, which suits monotone solvers; a stochastic fit needs patience. The state carries
the best validation loss, the parameters that reached it, and a counter of epochs without an
improvement larger than ``min_delta``; after ``patience`` such epochs ``state.stopped`` is set
and later steps leave the state unchanged (as ``fit`` freezes finished members under ``vmap``).

``objective`` is the held-out negative ELBO per cell (full KL weight; reconstruction loss for
the AE) of the current parameters on ``data.x_val``, with a fixed key, dropout off and batch norm
in inference mode: a deterministic function of the state. It is not monotone along ``step``.

Data parallelism (``vae_training(..., mesh=jaxfactor.cell_mesh(), n_train=n)``). One VAE, every
minibatch of ``B`` cells split over the ``D`` devices of a ``"cells"`` mesh (``B`` a multiple of
``D``): ``data.x`` is held with its rows split over the devices (padded to a multiple of ``D``
with rows that are never drawn, ``n_train`` being the real count), so each device stores ``n/D``
cells. The permutation, the minibatch keys and the optimiser are computed identically on every
device. The short last minibatch is padded to a multiple of ``D`` rows with cells that a row
mask leaves out of the loss and of batch norm's moments (random draws are prefixes of the
padded minibatch's, so they equal the one-device draws). Per minibatch, each device collects its
``B/D`` rows of the minibatch (device ``i``:
positions ``[i B/D, (i + 1) B/D)`` of the permuted batch) from whichever device holds them (a
masked gather plus ``psum_scatter``: exact, each row is a sum of itself and zeros), computes
``sum_{its cells} loss / B`` and its gradient, and ``psum`` over ``"cells"`` makes both the
global minibatch mean on every device. Batch norm averages its moments over the devices and the
per-cell noise is drawn for the whole minibatch and sliced (:mod:`._vae_modules`), so the sharded
epoch is the one-device epoch up to the order of floating-point sums. The held-out objective runs
on the replicated ``x_val`` (each device computes it whole).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from .._base import Algorithm
from .._cells import CELLS, REPL, ROWS, check_cell_mesh, over_cells, padded_size
from ._count_nll import nb_nll, zinb_nll
from ._likelihoods import COUNT_LIKELIHOODS, log_factorial, log_prob
from ._vae_modules import VAE, VAEConfig, global_rows, local_rows

_EVAL_KEY = 0  # seed of the fixed noise of the objective
MIN_TAIL = 3  # a last minibatch of fewer cells is not used (scVI's rule: batch norm needs a few)


class VAEData(NamedTuple):
    """``x``: training cells x genes (raw values, float); ``x_val``: held-out cells (padded to a
    multiple of the evaluation chunk); ``val_weight``: 1 for real held-out rows, 0 for padding."""

    x: jax.Array
    x_val: jax.Array
    val_weight: jax.Array


class VAEHparams(NamedTuple):
    """Numbers of the fit (traced: changing them never recompiles). Defaults are scVI's."""

    lr: float = 1e-3
    weight_decay: float = 1e-6
    adam_eps: float = 0.01
    kl_warmup_epochs: float = 400.0
    min_kl_weight: float = 0.0
    max_kl_weight: float = 1.0
    patience: float = 45.0
    min_delta: float = 0.0


class VAEState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    epoch: jax.Array  # epochs completed
    step: jax.Array  # minibatch updates applied
    train_loss: jax.Array  # mean loss per training cell in the last epoch, without the constant sum_g log x_g!
    val_loss: jax.Array  # held-out loss after the last epoch (early stopping only)
    best_val: jax.Array
    best_params: Any  # None unless early stopping
    best_batch_stats: Any
    bad_epochs: jax.Array
    stopped: jax.Array
    nan_step: jax.Array  # global step of the first non-finite minibatch, -1 if none


# ------------------------------------------------------------------------------------------------
# per-cell terms shared by training, the objective and the evaluation API
# ------------------------------------------------------------------------------------------------

def encoder_input(config: VAEConfig, x):
    return jnp.log1p(x) if config.transform == "log1p" else x


def target(config: VAEConfig, x):
    """What the likelihood scores: raw counts, detection ``x > 0`` (Bernoulli), or the encoder
    input (Gaussian)."""
    if config.likelihood in COUNT_LIKELIHOODS:
        return x
    if config.likelihood == "bernoulli":
        return (x > 0).astype(x.dtype)
    return encoder_input(config, x)


def log_library(x):
    """Observed log library size, floored at one count (all-zero rows are padding)."""
    return jnp.log(jnp.maximum(jnp.sum(x, axis=-1), 1.0))


def kl_standard_normal(mean, var):
    """``KL(N(mean, diag var) || N(0, I))`` summed over the latent axis."""
    return 0.5 * jnp.sum(var + jnp.square(mean) - 1.0 - jnp.log(var), axis=-1)


def nll(config: VAEConfig, y, p: dict, normalized: bool = True):
    """Per-cell ``-sum_g log p(y_g | decoder output p)``. NB and ZINB go through the fused
    loss-and-gradient of :mod:`jaxfactor.models._count_nll`; ``normalized=False`` leaves out the
    count likelihoods' ``sum_g log y_g!``."""
    if config.likelihood == "nb":
        out = nb_nll(y, p["scale_logits"], p["log_library"], p["log_theta"])
    elif config.likelihood == "zinb":
        out = zinb_nll(y, p["scale_logits"], p["log_library"], p["log_theta"], p["gate_logits"])
    else:
        return -jnp.sum(log_prob(config.likelihood, y, p, normalized), axis=-1)
    return out + jnp.sum(log_factorial(y), axis=-1) if normalized else out


def variables_of(params, batch_stats):
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def cell_terms(config: VAEConfig, variables, x, key, *, train: bool, normalized: bool = True,
               axis_name: str | None = None, mask=None):
    """Per-cell ``(-log p(x|z), KL, new batch stats)`` at one draw of ``z`` (``z = mean`` for the AE);
    ``normalized=False`` leaves out the count likelihoods' data constant ``sum_g log x_g!``.
    ``axis_name``: ``x`` is this device's share of a minibatch split over that mesh axis;
    ``mask``: its real rows (batch norm's moments leave the others out)."""
    model = VAE(config, axis_name)
    k_noise, k_drop = jax.random.split(key)
    eps = jax.random.normal(k_noise, (global_rows(x.shape[0], axis_name), config.n_latent), x.dtype)
    eps = local_rows(eps, x.shape[0], axis_name)
    args = (encoder_input(config, x), log_library(x), eps)
    if train:
        (mean, var, _, p), mutated = model.apply(variables, *args, train=True, mask=mask, rngs={"dropout": k_drop},
                                                 mutable=["batch_stats"])
        stats = mutated.get("batch_stats", {})
    else:
        mean, var, _, p = model.apply(variables, *args, train=False)
        stats = variables.get("batch_stats", {})
    rec = nll(config, target(config, x), p, normalized)
    kl = jnp.zeros_like(rec) if var is None else kl_standard_normal(mean, var)
    return rec, kl, stats


def heldout_loss(config: VAEConfig, variables, x_val, weight, key, chunk: int):
    """Weighted mean of ``-log p(x|z) + KL`` over held-out rows, ``chunk`` rows at a time."""
    m = x_val.shape[0]
    chunk = chunk if m % chunk == 0 else m
    xs = x_val.reshape(m // chunk, chunk, x_val.shape[1])
    ws = weight.reshape(m // chunk, chunk)
    keys = jax.random.split(key, m // chunk)

    def one(args):
        xb, kb = args
        rec, kl, _ = cell_terms(config, variables, xb, kb, train=False)
        return rec + kl

    losses = lax.map(one, (xs, keys))
    return jnp.sum(losses * ws) / jnp.maximum(jnp.sum(ws), 1e-12)


def kl_weight(epoch, hp: VAEHparams):
    frac = jnp.where(hp.kl_warmup_epochs > 0, jnp.minimum(epoch / jnp.maximum(hp.kl_warmup_epochs, 1e-12), 1.0), 1.0)
    return hp.min_kl_weight + (hp.max_kl_weight - hp.min_kl_weight) * frac


def optimizer(hp: VAEHparams) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019) with scVI's settings: lr 1e-3, eps 0.01, decay 1e-6."""
    return optax.adamw(learning_rate=hp.lr, b1=0.9, b2=0.999, eps=hp.adam_eps, weight_decay=hp.weight_decay)


# ------------------------------------------------------------------------------------------------
# the algorithm
# ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def vae_training(config: VAEConfig, batch_size: int = 128, early_stopping: bool = False,
                 eval_chunk: int = 1024, mesh=None, n_train: int | None = None) -> Algorithm:
    """The epoch-step training algorithm of ``config`` (cached per arguments).

    Static: the network (``config``), ``batch_size``, whether early stopping is tracked, and the
    row chunk of the held-out evaluation. ``hp`` (:class:`VAEHparams`) holds the numbers.
    ``mesh``: a ``"cells"`` mesh (:func:`jaxfactor.cell_mesh`) to split every minibatch over
    (see the module docstring); then ``data.x`` has its rows split over the mesh, padded to a
    multiple of its size, and ``n_train`` is the number of real rows.
    """
    model = VAE(config)
    B = int(batch_size)
    check_cell_mesh(mesh)
    if mesh is not None:
        if B % mesh.size:
            raise ValueError(f"batch_size={B} is not a multiple of the {mesh.size} devices of the mesh; "
                             f"use a multiple of {mesh.size} (e.g. {-(-B // mesh.size) * mesh.size})")
        if n_train is None or int(n_train) < 1:
            raise ValueError("a mesh needs n_train, the number of real (unpadded) training rows")
    sharded = mesh is not None
    axis = CELLS if sharded else None

    def init(key, data: VAEData, hp: VAEHparams) -> VAEState:
        k_init, k_state = jax.random.split(key)
        g = data.x.shape[1]
        x0 = jnp.zeros((1, g), data.x.dtype)
        variables = model.init({"params": k_init}, x0, jnp.zeros((1,), data.x.dtype),
                               jnp.zeros((1, config.n_latent), data.x.dtype), train=False)
        params, stats = variables["params"], variables.get("batch_stats", {})
        big = jnp.asarray(jnp.finfo(data.x.dtype).max, data.x.dtype)
        zero = jnp.zeros((), data.x.dtype)
        return VAEState(
            params, stats, optimizer(hp).init(params), k_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
            zero, zero, big, params if early_stopping else None, stats if early_stopping else None,
            jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.full((), -1, jnp.int32))

    def minibatch_loss(params, stats, xb, key, beta, mask):
        """Mean loss of the minibatch's real cells (sharded: this device's part of it, psum'd with
        the gradient); ``mask`` marks the real rows of a padded minibatch (``None``: all)."""
        rec, kl, new_stats = cell_terms(config, variables_of(params, stats), xb, key, train=True, normalized=False,
                                        axis_name=axis, mask=mask)
        cell_loss = rec + beta * kl
        if mask is not None:
            cell_loss = jnp.where(mask, cell_loss, 0.0)
            count = jnp.sum(mask.astype(cell_loss.dtype))
            loss = jnp.sum(cell_loss) / (lax.psum(count, CELLS) if sharded else count)
        else:
            loss = jnp.sum(cell_loss) / global_rows(xb.shape[0], axis) if sharded else jnp.mean(cell_loss)
        return loss, (new_stats, cell_loss)

    grad_fn = jax.value_and_grad(minibatch_loss, has_aux=True)

    def gather(x, ib):
        """The minibatch rows ``ib`` of ``x`` (sharded: this device's ``B/D`` of them, collected
        from the devices that hold them)."""
        if not sharded:
            return jnp.take(x, ib, axis=0)
        n_local = x.shape[0]
        local = ib - lax.axis_index(CELLS) * n_local
        mine = (local >= 0) & (local < n_local)
        rows = jnp.where(mine[:, None], jnp.take(x, jnp.clip(local, 0, n_local - 1), axis=0), jnp.zeros((), x.dtype))
        return lax.psum_scatter(rows, CELLS, scatter_dimension=0, tiled=True)

    def train_pass(params, stats, opt_state, step, nan_step, x, idx, keys, tail_idx, tail_mask, beta, hp):
        """One epoch: ``lax.scan`` over the full minibatches ``idx`` (nf, B), then the short one
        ``tail_idx`` (none if it has no rows; ``tail_mask`` marks its real rows)."""
        tx = optimizer(hp)

        def update(carry, ib, kb, mask):
            params, stats, opt_state, step, nan_step, loss_sum = carry
            (loss, (stats, cell_loss)), grads = grad_fn(params, stats, gather(x, ib), kb, beta, mask)
            if sharded:
                loss, grads = lax.psum((loss, grads), CELLS)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            nan_step = jnp.where((nan_step < 0) & ~jnp.isfinite(loss), step, nan_step)
            new = params, stats, opt_state, step + 1, nan_step, loss_sum + jnp.sum(cell_loss)
            # keep the carry's dtypes: under x64 the float64 hyperparameters would promote float32 data's
            return jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), new, carry)

        nf = idx.shape[0]
        carry = (params, stats, opt_state, step, nan_step, jnp.zeros((), x.dtype))
        carry, _ = lax.scan(lambda c, a: (update(c, a[0], a[1], None), None), carry, (idx, keys[:nf]))
        if tail_idx.shape[0]:
            # one device: the short minibatch is all real rows; sharded: padded, the mask sliced
            mask = local_rows(tail_mask, tail_idx.shape[0] // mesh.size, CELLS) if sharded else None
            carry = update(carry, tail_idx, keys[nf], mask)
        params, stats, opt_state, step, nan_step, loss_sum = carry
        if sharded:
            loss_sum = lax.psum(loss_sum, CELLS)
        return params, stats, opt_state, step, nan_step, loss_sum

    # state, minibatch plan and hyperparameters replicated; the training rows split over the mesh
    run_pass = over_cells(train_pass, mesh, in_specs=(REPL,) * 5 + (ROWS,) + (REPL,) * 6, out_specs=REPL)

    def objective(state: VAEState, data: VAEData, hp: VAEHparams):
        return heldout_loss(config, variables_of(state.params, state.batch_stats), data.x_val, data.val_weight,
                            jax.random.PRNGKey(_EVAL_KEY), eval_chunk)

    def epoch(state: VAEState, data: VAEData, hp: VAEHparams) -> VAEState:
        n = int(n_train) if sharded else data.x.shape[0]
        if sharded and data.x.shape[0] != padded_size(n, mesh):
            raise ValueError(f"data.x has {data.x.shape[0]} rows; a mesh of {mesh.size} with n_train={n} needs "
                             f"{padded_size(n, mesh)} (the training rows padded to a multiple of the mesh size)")
        nf, r = batch_plan(n, B)
        r_pad = -(-r // mesh.size) * mesh.size if sharded else r  # the short minibatch split over the mesh
        key, k_perm, k_batches = jax.random.split(state.key, 3)
        perm = jax.random.permutation(k_perm, n)
        idx = perm[:nf * B].reshape(nf, B)
        tail_idx = perm[(nf * B + jnp.arange(r_pad)) % n]  # padding rows (masked) wrap to the start
        tail_mask = jnp.arange(r_pad) < r
        beta = kl_weight(state.epoch.astype(data.x.dtype), hp).astype(data.x.dtype)
        params, stats, opt_state, step, nan_step, loss_sum = run_pass(
            state.params, state.batch_stats, state.opt_state, state.step, state.nan_step, data.x, idx,
            jax.random.split(k_batches, nf + (r > 0)), tail_idx, tail_mask, beta, hp)
        new = state._replace(params=params, batch_stats=stats, opt_state=opt_state, key=key, epoch=state.epoch + 1,
                             step=step, train_loss=loss_sum / (nf * B + r), nan_step=nan_step)
        if early_stopping:
            val = objective(new, data, hp)
            better = (val < new.best_val - hp.min_delta) & (nan_step < 0)
            keep = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(better, u, v), a, b)
            bad = jnp.where(better, 0, new.bad_epochs + 1)
            new = new._replace(val_loss=val, best_val=jnp.where(better, val, new.best_val),
                               best_params=keep(params, new.best_params), best_batch_stats=keep(stats, new.best_batch_stats),
                               bad_epochs=bad, stopped=bad >= hp.patience)
        return new

    def step(state: VAEState, data: VAEData, hp: VAEHparams) -> VAEState:
        frozen = state.stopped | (state.nan_step >= 0)
        return lax.cond(frozen, lambda s: s, lambda s: epoch(s, data, hp), state)

    return Algorithm(init, step, objective, monotone=False)


def data_constant(config: VAEConfig, x) -> float:
    """Mean over cells of ``sum_g log x_g!`` (count likelihoods; 0 otherwise), in float64 on the
    host: what the training loss leaves out."""
    import numpy as np
    from scipy.special import gammaln

    if config.likelihood not in COUNT_LIKELIHOODS:
        return 0.0
    x = np.asarray(x, np.float64)
    return float(np.mean(np.sum(gammaln(x + 1.0), axis=1)))


def batch_plan(n_train: int, batch_size: int) -> tuple[int, int]:
    """``(full minibatches, cells of the short last one)`` of an epoch; the remainder
    ``n_train mod batch_size`` is dropped for that epoch when below ``MIN_TAIL`` (as scVI)."""
    nf, r = divmod(int(n_train), int(batch_size))
    return nf, (r if r >= MIN_TAIL else 0)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    nf, r = batch_plan(n_train, batch_size)
    return nf + (r > 0)


def make_data(x_train, x_val, eval_chunk: int = 1024) -> VAEData:
    """``VAEData`` with the held-out rows zero-padded to a multiple of ``eval_chunk`` (or kept
    whole when there are fewer)."""
    import numpy as np

    x_train = np.asarray(x_train, np.float32)
    x_val = np.asarray(x_val, np.float32)
    m = x_val.shape[0]
    size = m if m <= eval_chunk else -(-m // eval_chunk) * eval_chunk
    xv = np.zeros((max(size, 1), x_train.shape[1]), np.float32)
    xv[:m] = x_val
    w = np.zeros(max(size, 1), np.float32)
    w[:m] = 1.0
    return VAEData(jnp.asarray(x_train), jnp.asarray(xv), jnp.asarray(w))


def example():
    """The conformance-suite problem: 96 simulated cells x 24 genes, a small NB VAE (no batch norm
    and no early stopping, to keep its three compilations short)."""
    from ..data import simulate_counts

    sim = simulate_counts(n_cells=96, n_genes=24, n_types=3, n_latent=2, mean_library=300.0, seed=0)
    x = sim.counts.astype("float32")
    config = VAEConfig(n_genes=24, n_latent=2, n_hidden=16, likelihood="nb", norm="none")
    alg = vae_training(config, batch_size=32, early_stopping=False, eval_chunk=16)
    return alg, make_data(x[:80], x[80:], eval_chunk=16), VAEHparams(lr=3e-3, kl_warmup_epochs=10.0, patience=20.0)
