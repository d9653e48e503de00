"""The Flax VAE / autoencoder as a fitted-model family (:class:`jaxfactor.Fitted`):
``VAEModel.fit(data, n_components)`` trains it (:func:`jaxfactor.models.fit_vae`; ``n_components``
is the latent size). The kernel is the encoder's posterior mean ``E_q[z | x]`` and variance (dropout
off, batch norm on its running statistics, so a cell's output does not depend on its batch);
scores are the held-out (else training) negative ELBO per cell, as an ELBO (higher is better).
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

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=None, tol=None, seed=0, mesh=None,
            progress=False, **options):
        from .._inputs import read
        from .._protocol import vocabulary as _vocab
        from ._vae_api import fit_vae

        aliases = {k: options.pop(k) for k in ("k", "n_clones", "n_latent", "n_restarts", "max_epochs") if k in options}
        n_components, n_init, max_iter = _vocab("vae", n_components, n_init, aliases, max_iter)
        if n_init != 1:
            raise ValueError("vae trains one network per fit; n_init must be 1 (sweep seeds for restarts)")
        if tol is not None:
            raise ValueError("vae stops by epochs (max_iter) or early stopping (early_stopping=True, patience, min_delta); "
                             "tol does not apply")
        n_components = 10 if n_components is None else n_components
        inp = read(data, "matrix", layer)  # fit_vae checks what its likelihood needs (counts, >= 0)
        fit = fit_vae(inp.X, n_components=n_components, max_iter=max_iter, seed=seed, progress=progress, mesh=mesh,
                      obsm_key=None, **options)
        settings = {**{k: v for k, v in fit.settings.items() if v is not None},
                    **dict(n_components=int(n_components), n_init=1, max_iter=int(fit.n_epochs), seed=int(seed),
                           layer=layer, named_variables=inp.named)}
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
        from ._vae_infer import _encode

        mean, var = _encode(config, p, X)
        return {"embedding": mean, "variance": var}

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
        h = self.result.history
        val = np.asarray(h.get("val_loss", []), np.float64)
        val = val[np.isfinite(val)]
        if val.size:
            return {"elbo": Score("elbo", float(-val[-1]), True)}
        return {"elbo_train": Score("elbo_train", float(-np.asarray(h["train_loss"])[-1]), True)}

    def _cell_outputs(self):
        z = self.__dict__.get("_z")
        return {} if z is None else {"embedding": z}

    def to_anndata(self, adata=None, **kw):
        self._cached_transform("_z", adata)
        return super().to_anndata(adata, **kw)

    def _uns(self):
        h = self.result.history
        return {"history": {k: np.asarray(v) for k, v in h.items()}, "config": dict(self.result.config._asdict())}

    def _encode_result(self, arrays, folder):
        from ._vae_api import checkpoint_bytes

        arrays["checkpoint"] = np.frombuffer(checkpoint_bytes(self.result), np.uint8)
        return {"__vae_checkpoint__": "checkpoint"}

    @classmethod
    def _decode_result(cls, desc, arrays, folder):
        from ._vae_api import checkpoint_from_bytes

        return checkpoint_from_bytes(arrays[desc["__vae_checkpoint__"]], source=folder)
