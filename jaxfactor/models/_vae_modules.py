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
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class MLP(nn.Module):
    """``len(features)`` x [Dense -> norm -> ReLU -> Dropout]."""

    features: tuple
    dropout_rate: float = 0.0
    norm: str = "batch"

    @nn.compact
    def __call__(self, x, *, train: bool):
        for width in self.features:
            x = dense(width, x.shape[-1])(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)
            elif self.norm == "layer":
                x = nn.LayerNorm(use_bias=False, use_scale=False)(x)
            x = nn.relu(x)
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        return x


class Encoder(nn.Module):
    """``x_in -> (mean, var)`` (``var`` is ``None`` for the autoencoder)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x_in, *, train: bool):
        c = self.config
        h = MLP((c.n_hidden,) * c.n_layers, c.dropout_rate, c.norm, name="mlp")(x_in, train=train)
        mean = dense(c.n_latent, h.shape[-1], name="mean")(h)
        if not c.variational:
            return mean, None
        var = jnp.exp(dense(c.n_latent, h.shape[-1], name="log_var")(h)) + VAR_EPS
        return mean, var


class Decoder(nn.Module):
    """``(z, log library) -> dict`` of the likelihood's parameters (see ``_likelihoods.log_prob``)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z, log_library, *, train: bool):
        c = self.config
        h = MLP((c.n_hidden,) * c.n_layers, c.decoder_dropout, c.norm, name="mlp")(z, train=train)
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

    ``__call__(x_in, log_library, eps, train)`` returns ``(mean, var, z, p)`` where ``z`` is the
    reparameterised draw ``mean + sqrt(var) * eps`` (VAE) or ``mean`` (AE) and ``p`` the decoder
    output at ``z``. ``encode`` and ``decode`` expose the halves (``decode`` accepts extra leading
    sample axes on ``z``, as importance sampling needs).
    """

    config: VAEConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def encode(self, x_in, *, train: bool = False):
        return self.encoder(x_in, train=train)

    def decode(self, z, log_library, *, train: bool = False):
        return self.decoder(z, log_library, train=train)

    def __call__(self, x_in, log_library, eps, *, train: bool = False):
        mean, var = self.encoder(x_in, train=train)
        z = mean if var is None else mean + jnp.sqrt(var) * eps
        return mean, var, z, self.decoder(z, log_library, train=train)
