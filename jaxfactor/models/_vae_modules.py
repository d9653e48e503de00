"""Flax (Linen) modules of the count autoencoder and variational autoencoder.

Linen keeps parameters as explicit pytrees (``{'params': ..., 'batch_stats': ...}``), which is
what the pure-function :class:`~jaxfactor.Algorithm` contract needs: the training state is a
plain pytree and every function is jit/vmap-able.

Architecture (scVI's, Lopez et al., Nat. Methods 2018, with its defaults):

- encoder: ``log1p(x)`` -> ``n_layers`` x [Dense(n_hidden) -> BatchNorm -> ReLU -> Dropout]
  -> Dense(n_latent) for the mean and, for the VAE, Dense(n_latent) for ``v``, the variance
  being ``exp(v) + 1e-4`` (scVI's ``var_eps``);
- decoder: ``z`` -> ``n_layers`` x [Dense(n_hidden) -> BatchNorm -> ReLU] (no dropout, as scVI)
  -> the likelihood's parameters (:mod:`jaxfactor.models._likelihoods`). Count likelihoods use
  ``log mu = log l + log_softmax(Dense(n_genes))`` with ``l`` the observed library size and a
  gene-wise log inverse dispersion; the ZINB gate is a second Dense(n_genes) head.

The VAE (Kingma & Welling, ICLR 2014) has ``q(z|x) = N(mean, diag(var))``, prior ``N(0, I)`` and
draws ``z = mean + sqrt(var) * eps`` (reparameterisation); the autoencoder (``kind='ae'``) uses
``z = mean`` and no KL term. Batch-norm momentum 0.99 / epsilon 1e-3 are PyTorch's 0.01 / 1e-3
as scVI sets them (the two libraries define momentum the other way round), and every Dense
layer is initialised as PyTorch's ``nn.Linear``, so both tools start from the same distribution.
Batch norm (:class:`BatchNorm`) is PyTorch's ``BatchNorm1d`` (Ioffe & Szegedy, ICML 2015):
training normalises with the minibatch's biased variance, the running variance used at
inference averages the unbiased one (``m / (m - 1)`` times it for ``m`` cells), and a row mask
leaves padding rows out of the moments (a minibatch shorter than the others, padded to a
multiple of the device count).

Data-parallel training (``axis_name``): inside ``jax.shard_map`` over a ``"cells"`` mesh each
device runs the network on its contiguous share of the minibatch's rows. Batch norm then averages
its moments over the whole minibatch (``lax.pmean`` over the axis), and every random draw per
cell (dropout masks, the reparameterisation noise) is made for the whole minibatch from the same
key and sliced to the device's rows (:func:`local_rows`), so a sharded step computes what the
one-device step computes, up to the order of floating-point sums. ``axis_name=None`` (the
default) is the ordinary single-device network; no parameter depends on it.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ._likelihoods import COUNT_LIKELIHOODS

KINDS = ("vae", "ae")
NORMS = ("batch", "layer", "none")
TRANSFORMS = ("log1p", "none")
VAR_EPS = 1e-4


class VAEConfig(NamedTuple):
    """Static choices of the network (hashable: part of the compile cache key).

    ``transform`` is applied to the data before the encoder (and is the target of the Gaussian
    likelihood); count likelihoods always score the raw counts. ``dropout_rate`` applies to the
    encoder, ``decoder_dropout`` to the decoder (scVI: 0.1 and 0).
    """

    n_genes: int
    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.1
    decoder_dropout: float = 0.0
    norm: str = "batch"
    likelihood: str = "zinb"
    kind: str = "vae"
    transform: str = "log1p"

    @property
    def variational(self) -> bool:
        return self.kind == "vae"


def dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    """``nn.Dense`` initialised as PyTorch's ``nn.Linear`` (what scVI starts from): weights and
    biases uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``."""
    bound = 1.0 / float(fan_in) ** 0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                    bias_init=bias_init, name=name)


def local_rows(full, n_local: int, axis_name: str | None):
    """The ``n_local`` rows of ``full`` (drawn for the whole minibatch) that this device holds:
    rows ``[i n_local, (i + 1) n_local)`` on device ``i`` of ``axis_name``; ``full`` itself
    without an axis."""
    if axis_name is None:
        return full
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axis_name) * n_local, n_local, axis=0)


def global_rows(n_local: int, axis_name: str | None) -> int:
    """Rows of the whole minibatch: ``n_local`` times the size of ``axis_name``."""
    return n_local if axis_name is None else n_local * lax.axis_size(axis_name)


class RowDropout(nn.Module):
    """Inverted dropout, ``x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` per entry.

    Without ``axis_name`` this is ``nn.Dropout`` draw for draw (the same key from
    ``make_rng('dropout')``, the same mask shape). With it, the mask is drawn for the rows of the
    whole minibatch and sliced to this device's rows, so a cell gets the same mask wherever it is
    computed. (``MLP`` names these modules ``Dropout_<i>`` as ``nn.Dropout`` would be auto-named,
    which keeps the keys, derived from the module path, of fits made before this class.)
    """

    rate: float
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        shape = (global_rows(x.shape[0], self.axis_name),) + tuple(x.shape[1:])
        mask = local_rows(jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=shape), x.shape[0], self.axis_name)
        return lax.select(mask, x / keep, jnp.zeros_like(x))


class BatchNorm(nn.Module):
    """Batch normalisation over the rows, as PyTorch's ``BatchNorm1d`` (what scVI uses).

    Training: ``y = (x - m) / sqrt(v + epsilon) * scale + bias`` with ``m``, ``v`` the mean and
    biased variance (two-pass) over the rows where ``mask`` is true (all rows without a mask;
    with ``axis_name``, over the rows of every device of that axis), and the running moments
    updated as ``r <- momentum r + (1 - momentum) new`` with the *unbiased* variance
    ``v c / (c - 1)`` for ``c`` counted rows (PyTorch's rule; ``flax.linen.BatchNorm`` keeps the
    biased one). Inference: the running moments. Variables are named as ``flax.linen.BatchNorm``'s
    (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``).
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        f = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (f,))
        bias = self.param("bias", nn.initializers.zeros, (f,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((f,), x.dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((f,), x.dtype))
        if not train:
            mean, var = ra_mean.value, ra_var.value
        else:
            total = lambda a: a if self.axis_name is None else lax.psum(a, self.axis_name)
            if mask is None:
                count = jnp.asarray(global_rows(x.shape[0], self.axis_name), x.dtype)
                keep = lambda a: a
            else:
                count = total(jnp.sum(mask.astype(x.dtype)))
                keep = lambda a: jnp.where(mask[:, None], a, 0.0)
            mean = total(jnp.sum(keep(x), axis=0)) / count
            var = total(jnp.sum(keep(jnp.square(x - mean)), axis=0)) / count
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * var * (count / jnp.maximum(count - 1.0, 1.0))
        return (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias


class MLP(nn.Module):
    """``len(features)`` x [Dense -> norm -> ReLU -> Dropout]; ``mask`` marks the real rows for
    batch norm (see :class:`BatchNorm`)."""

    features: tuple
    dropout_rate: float = 0.0
    norm: str = "batch"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        for i, width in enumerate(self.features):
            x = dense(width, x.shape[-1])(x)
            if self.norm == "batch":
                x = BatchNorm(momentum=0.99, epsilon=1e-3, axis_name=self.axis_name)(x, train=train, mask=mask)
            elif self.norm == "layer":
                x = nn.LayerNorm(use_bias=False, use_scale=False)(x)
            x = nn.relu(x)
            if self.dropout_rate > 0:
                x = RowDropout(self.dropout_rate, self.axis_name, name=f"Dropout_{i}")(x, deterministic=not train)
        return x


class Encoder(nn.Module):
    """``x_in -> (mean, var)`` (``var`` is ``None`` for the autoencoder)."""

    config: VAEConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x_in, *, train: bool, mask=None):
        c = self.config
        h = MLP((c.n_hidden,) * c.n_layers, c.dropout_rate, c.norm, self.axis_name, name="mlp")(x_in, train=train, mask=mask)
        mean = dense(c.n_latent, h.shape[-1], name="mean")(h)
        if not c.variational:
            return mean, None
        var = jnp.exp(dense(c.n_latent, h.shape[-1], name="log_var")(h)) + VAR_EPS
        return mean, var


class Decoder(nn.Module):
    """``(z, log library) -> dict`` of the likelihood's parameters (see ``_likelihoods.log_prob``)."""

    config: VAEConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, log_library, *, train: bool, mask=None):
        c = self.config
        h = MLP((c.n_hidden,) * c.n_layers, c.decoder_dropout, c.norm, self.axis_name, name="mlp")(z, train=train, mask=mask)
        if c.likelihood in COUNT_LIKELIHOODS:
            logits = dense(c.n_genes, h.shape[-1], name="scale")(h)
            out = {"log_mu": nn.log_softmax(logits, axis=-1) + log_library[..., None], "scale_logits": logits,
                   "log_library": log_library}
            if c.likelihood != "poisson":
                out["log_theta"] = self.param("log_theta", nn.initializers.normal(1.0), (c.n_genes,))
            if c.likelihood == "zinb":
                out["gate_logits"] = dense(c.n_genes, h.shape[-1], name="gate")(h)
            return out
        if c.likelihood == "bernoulli":
            return {"logits": dense(c.n_genes, h.shape[-1], name="logits")(h)}
        return {"mean": dense(c.n_genes, h.shape[-1], name="mean")(h),
                "log_scale": self.param("log_scale", nn.initializers.zeros, (c.n_genes,))}


class VAE(nn.Module):
    """Encoder + decoder; ``__call__`` runs the whole reconstruction for training.

    ``__call__(x_in, log_library, eps, train, mask=None)`` returns ``(mean, var, z, p)`` where
    ``z`` is the reparameterised draw ``mean + sqrt(var) * eps`` (VAE) or ``mean`` (AE) and ``p``
    the decoder output at ``z``; ``mask`` (rows) keeps padding out of batch norm's moments.
    ``encode`` and ``decode`` expose the halves (``decode`` accepts extra leading
    sample axes on ``z``, as importance sampling needs). ``axis_name``: the mesh axis of
    data-parallel training (see the module docstring).
    """

    config: VAEConfig
    axis_name: str | None = None

    def setup(self):
        self.encoder = Encoder(self.config, self.axis_name)
        self.decoder = Decoder(self.config, self.axis_name)

    def encode(self, x_in, *, train: bool = False):
        return self.encoder(x_in, train=train)

    def decode(self, z, log_library, *, train: bool = False):
        return self.decoder(z, log_library, train=train)

    def __call__(self, x_in, log_library, eps, *, train: bool = False, mask=None):
        mean, var = self.encoder(x_in, train=train, mask=mask)
        z = mean if var is None else mean + jnp.sqrt(var) * eps
        return mean, var, z, self.decoder(z, log_library, train=train, mask=mask)
