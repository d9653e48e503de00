"""The Flax VAE / autoencoder as a fitted-model family (:class:`jaxfactor.Fitted`):
``VAEModel.fit(data, n_components)`` trains it (:func:`jaxfactor.models.fit_vae`; ``n_components``
is the latent size). The kernel is the encoder's posterior mean ``E_q[z | x]`` and variance (dropout
off, batch norm on its running statistics, so a cell's output does not depend on its batch);
scores are the held-out cells' negative ELBO, reconstruction error and importance-weighted log p(x).
Saved as the VAE's own checkpoint (msgpack) inside the model folder.
"""

from __future__ import annotations

import numpy as np

from .._protocol import Fitted, Score


class VAEModel(Fitted):
    """A trained VAE / autoencoder (``result``: :class:`jaxfactor.models.VAEFit`)."""

    family = "vae"
    inputs = "matrix"  # counts for count likelihoods: checked by fit_vae (and by the kernel's caller)
    batch_size = 8192

    option_help = {"n_components": "latent dimension", "kind": "vae (ELBO) | ae (deterministic bottleneck)",
                   "likelihood": "zinb | nb | poisson | bernoulli | gaussian", "n_hidden": "units per hidden layer",
                   "n_layers": "hidden layers", "dropout_rate": "encoder dropout", "norm": "batch | layer | none",
                   "transform": "what the encoder sees: log1p | none", "batch_size": "cells per minibatch",
                   "lr": "Adam(W) learning rate", "weight_decay": "AdamW weight decay",
                   "kl_warmup_epochs": "epochs of linear KL warm-up (scVI: 400)",
                   "validation_fraction": "share of cells held out for the scores", "early_stopping":
                   "stop after patience epochs without a held-out improvement", "patience": "early stopping's patience",
                   "n_importance": "importance samples of the held-out log p(x) (0: skip)"}
    option_choices = {"kind": ("vae", "ae"), "likelihood": ("zinb", "nb", "poisson", "bernoulli", "gaussian"),
                      "norm": ("batch", "layer", "none"), "transform": ("log1p", "none")}

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=0, tol=None, seed=0, mesh=None,
            progress=False, kind="vae", likelihood="zinb", n_hidden=128, n_layers=1, dropout_rate=0.1, norm="batch",
            transform="log1p", batch_size=128, lr=1e-3, weight_decay=1e-6, kl_warmup_epochs=400.0,
            validation_fraction=0.1, early_stopping=False, patience=45, n_importance=100, **options):
        """``max_iter``: epochs (0: scVI's rule ``min(round(20000 / n_cells * 400), 400)``). After
        training, the held-out cells (else the training ones) are scored: negative ELBO,
        reconstruction error, KL and, for a VAE with ``n_importance > 0``, the importance-weighted
        log p(x) (:meth:`jaxfactor.models.VAEFit.evaluate`)."""
        aliases = {k: options.pop(k) for k in ("k", "n_clones", "n_latent", "n_restarts", "max_epochs") if k in options}
        opts = dict(kind=kind, likelihood=likelihood, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate,
                    norm=norm, transform=transform, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    kl_warmup_epochs=kl_warmup_epochs, validation_fraction=validation_fraction,
                    early_stopping=early_stopping, patience=patience, **options)
        return cls._train(data, None, n_components, layer, n_init, max_iter, tol, seed, mesh, progress, n_importance,
                          aliases, opts)[0]

    #: the numbers of the training (``VAEHparams``) that a sweep trains side by side, vmapped
    sweep_together = ("lr", "weight_decay", "adam_eps", "kl_warmup_epochs", "min_delta", "patience")

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Points that differ only in the training's numbers (``sweep_together``: learning rate,
        weight decay, KL warm-up, ...) are trained side by side: one network per point, one
        compiled epoch vmapped over the points (:func:`jaxfactor.models.fit_vae_grid`); each
        point equals its own ``fit`` up to float32 rounding. A point whose loss turns non-finite
        is skipped (a string says why) and the others go on. With a cell ``mesh``, a checkpoint
        or a single point: one ``fit`` per point."""
        if len(points) == 1 or shared.get("mesh") is not None or shared.get("checkpoint_dir") or shared.get("resume"):
            return [cls.fit(data, **point, **shared) for point in points]
        rest = [{k: v for k, v in p.items() if k not in cls.sweep_together} for p in points]
        if any(r != rest[0] for r in rest):
            raise ValueError("points trained together must differ only in " + ", ".join(cls.sweep_together))
        from .._grid import inspect_defaults

        kw = {**inspect_defaults(cls.fit), **rest[0], **shared}
        named = ("layer", "n_init", "max_iter", "tol", "seed", "mesh", "progress", "n_importance")
        aliases = {k: kw.pop(k) for k in ("k", "n_clones", "n_latent", "n_restarts", "max_epochs") if k in kw}
        n_components = kw.pop("n_components", None)
        args = [kw.pop(k) for k in named]
        grid = [{k: v for k, v in p.items() if k in cls.sweep_together} for p in points]
        return cls._train(data, grid, n_components, *args, aliases, kw)

    @classmethod
    def _train(cls, data, grid, n_components, layer, n_init, max_iter, tol, seed, mesh, progress, n_importance,
               aliases, opts) -> list:
        """One model (``grid=None``) or one per grid point (a list of ``sweep_together`` dicts)."""
        from .._inputs import read
        from .._protocol import vocabulary as _vocab
        from ._vae_api import fit_vae, fit_vae_grid

        n_components, n_init, max_iter = _vocab("vae", n_components, n_init, aliases, max_iter)
        if n_init != 1:
            raise ValueError("vae trains one network per fit; n_init must be 1 (sweep seeds for restarts)")
        if tol is not None:
            raise ValueError("vae stops by epochs (max_iter) or early stopping (early_stopping=True, patience, min_delta); "
                             "tol does not apply")
        n_components = 10 if n_components is None else n_components
        inp = read(data, "matrix", layer, sparse_ok=True)  # fit_vae checks what its likelihood needs (counts, >= 0)
        kw = dict(n_components=n_components, max_iter=max_iter or None, seed=seed, progress=progress, **opts)
        if grid is None:
            fits = [fit_vae(inp.X, mesh=mesh, obsm_key=None, **kw)]
        else:
            fits = fit_vae_grid(inp.X, grid, **kw)
        return [f if isinstance(f, str) else cls._from_fit(f, inp, n_components, layer, seed, n_importance)
                for f in fits]

    @classmethod
    def _from_fit(cls, fit, inp, n_components, layer, seed, n_importance) -> "VAEModel":
        """The fitted model of a trained network: its held-out cells (else the training ones)
        scored, the settings recorded and the cells' embedding kept."""
        kind = fit.config.kind
        held = fit.cells[fit.val_index] if fit.val_index.size else fit.cells[fit.train_index]
        ev = fit.evaluate(inp.X[held], n_importance=n_importance if kind == "vae" else 0, seed=seed)
        secs = np.asarray(fit.history["seconds"])
        settings = {**{k: v for k, v in fit.settings.items() if v is not None},
                    **{k: float(v) for k, v in fit.hparams._asdict().items() if k in cls.sweep_together},
                    **dict(n_components=int(n_components), n_init=1, max_iter=int(fit.n_epochs), seed=int(seed),
                           layer=layer, named_variables=inp.named, n_importance=int(n_importance),
                           heldout={k: float(v) for k, v in ev.items()}, n_heldout=int(held.size),
                           stopped_early=bool(fit.state.stopped), compile_seconds=float(fit.compile_seconds),
                           seconds_per_epoch=float(np.median(secs[1:])) if secs.size > 1 else float(secs[0]))}
        cells = None if fit.cells is None or len(fit.cells) == len(inp.obs_names) else np.asarray(fit.cells)
        genes = None if len(fit.genes) == len(inp.var_names) else np.asarray(fit.genes)
        model = cls(fit, inp.obs_names, inp.var_names, settings, cells, genes)
        rows = inp.X if cells is None else inp.X[cells]
        model.__dict__["_z"] = np.asarray(fit.encode(rows), np.float32)
        return model

    @classmethod
    def simulate(cls, seed: int = 0):
        import anndata
        import pandas as pd

        from ..data import simulate_counts

        sim = simulate_counts(200, 50, 3, 4, seed=seed)
        X = np.asarray(sim.counts, np.float32)
        return anndata.AnnData(X=X, obs=pd.DataFrame({"truth": np.asarray(sim.labels).astype(str)},
                                                     index=[f"cell{i}" for i in range(X.shape[0])]),
                               var=pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])]))

    def params(self):
        return self.result.variables

    def static(self):
        return {"config": self.result.config}

    @staticmethod
    def kernel(p, X, *, config):
        """The encoder's posterior mean and variance (zeros for the autoencoder); and, for the
        input checks of ``check_batch``, each cell's smallest and largest entry and largest distance
        to an integer (keys starting with ``_`` are diagnostics, not results)."""
        import jax.numpy as jnp

        from ._vae_infer import _encode

        mean, var = _encode(config, p, X)
        return {"embedding": mean, "variance": var, "_x_min": jnp.min(X, axis=1), "_x_max": jnp.max(X, axis=1),
                "_x_frac": jnp.max(jnp.abs(X - jnp.round(X)), axis=1)}

    @staticmethod
    def check_batch(out, start: int, static: dict, name: str = "X") -> None:
        """A one-line error if a batch of new cells (starting at cell ``start``) holds entries the
        fit would refuse (the rules of ``_vae_input.check_values``), from the kernel's diagnostics."""
        from ._likelihoods import COUNT_LIKELIHOODS

        c = static["config"]

        def fail(bad, what, fix):
            cells = np.flatnonzero(bad)
            if cells.size:
                raise ValueError(f"DATA's {name} has {what} in {cells.size} cell{'s' * (cells.size > 1)} "
                                 f"(first: cell {start + int(cells[0])}); {fix}")

        lo, hi, frac = out["_x_min"], out["_x_max"], out["_x_frac"]
        fail(~(np.isfinite(lo) & np.isfinite(hi) & np.isfinite(frac)), "NaN or infinite entries", "remove or impute them")
        if c.likelihood != "gaussian" or c.transform == "log1p":
            why = f"likelihood={c.likelihood!r}" if c.likelihood != "gaussian" else "transform='log1p'"
            fail(lo < 0, "negative entries", f"this model ({why}) needs non-negative counts")
        if c.likelihood in COUNT_LIKELIHOODS:
            fail(frac > 0, "non-integer entries",
                 f"likelihood={c.likelihood!r} needs raw counts: predict from the matrix the model was fitted on")

    def apply(self, data, *, layer=None):
        from .._inputs import read
        from ._vae_input import check_values

        if layer is None and self.settings.get("layer"):
            layer = self.settings["layer"]
        inp = read(data, "matrix", layer)
        c = self.result.config
        check_values(inp.X, c.likelihood, c.transform)
        return super().apply(data, layer=layer)

    def scores(self):
        """The held-out cells' negative ELBO and reconstruction error per cell (lower is better) and
        importance-weighted log p(x) (higher); a loaded model from before these were stored: the
        last held-out (else training) loss as an ELBO."""
        h = self.settings.get("heldout")
        if h:
            out = {"heldout_neg_elbo": Score("heldout_neg_elbo", h["neg_elbo"], False)}
            if "log_px" in h:
                out["heldout_log_px"] = Score("heldout_log_px", h["log_px"], True)
            out["heldout_reconstruction_error"] = Score("heldout_reconstruction_error", h["reconstruction_error"], False)
            return out
        hist = self.result.history
        val = np.asarray(hist.get("val_loss", []), np.float64)
        val = val[np.isfinite(val)]
        if val.size:
            return {"elbo": Score("elbo", float(-val[-1]), True)}
        return {"elbo_train": Score("elbo_train", float(-np.asarray(hist["train_loss"])[-1]), True)}

    def _cell_outputs(self):
        z = self.__dict__.get("_z")
        return {} if z is None else {"embedding": z}

    def to_anndata(self, adata=None, **kw):
        self._cached_transform("_z", adata)
        return super().to_anndata(adata, **kw)

    def _uns(self):
        h = self.result.history
        val = np.asarray(h["val_loss"], np.float64)
        trace, name = (-val, "held-out ELBO per cell") if np.isfinite(val).all() else \
            (-np.asarray(h["train_loss"], np.float64), "training ELBO per cell (KL-weighted)")
        return {"history": {k: np.asarray(v) for k, v in h.items()}, "config": dict(self.result.config._asdict()),
                "trace": trace, "trace_iter": np.asarray(h["epoch"]), "trace_name": name, "trace_unit": "epoch",
                "n_iter": int(self.result.n_epochs)}

    def _verdicts(self) -> list[str]:
        """Early stopping that never fired: the held-out ELBO may still have been improving."""
        r = self.result
        if r.settings.get("early_stopping") and not bool(np.asarray(r.state.stopped)):
            return [f"early stopping never fired: all {int(r.n_epochs)} epochs ran and the held-out ELBO may "
                    f"still be improving; raise max_iter (or lower patience, now {int(r.hparams.patience)})"]
        return []

    def _encode_result(self, arrays, folder):
        """The VAE's own checkpoint file in the model folder (``jaxfactor.models.load_vae(folder)``
        reads it too)."""
        import os

        from ._vae_api import CHECKPOINT_NAME, save_checkpoint

        save_checkpoint(self.result, os.path.join(folder, CHECKPOINT_NAME))
        return {"__vae_checkpoint__": CHECKPOINT_NAME}

    @classmethod
    def _decode_result(cls, desc, arrays, folder):
        import os

        from ._vae_api import load_checkpoint

        return load_checkpoint(os.path.join(folder, desc["__vae_checkpoint__"]))
