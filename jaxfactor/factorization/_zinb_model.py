"""ZINB-WaVE as a fitted-model family (:class:`jaxfactor.Fitted`): ``ZINBWaVEModel.fit(data,
n_components)`` runs :func:`jaxfactor.zinbwave.fit_counts` (Risso et al., Nat. Commun. 9:284,
2018) on the counts, all-zero cells and genes dropped first (they carry no information on W and
make the intercepts diverge). The kernel (:func:`cell_kernel`) computes new cells' W (and γ) with
every gene-level parameter fixed — the cell-wise block of the fit — which ``transform`` and
``jaxfactor predict`` run.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from .._protocol import Fitted, Score


def cell_kernel(p, Y, *, zero_inflation, max_iter, tol):
    """The cell-wise block of ``transform`` (ridge start, then Fisher-scoring blocks on γ_μ, γ_π,
    W to a relative change of the batch's PLL below ``tol``) on one fixed-size batch, for an
    intercept-only cell design.

    All-zero rows (padding, or empty cells) are solved as a copy of the batch's last non-empty
    cell, so they neither give NaN nor keep the batch iterating, and their outputs are then
    replaced: W = 0 and γ = NaN. For an all-zero cell the penalised likelihood increases without
    bound as log μ → −∞ (the γ_μ intercept is unpenalised), where W drops out of the likelihood:
    its maximiser is the penalty's, W = 0, and γ has no finite value."""
    from ._zinb import ZINBData, ZINBHparams, ZINBState
    from ._zinb_fit import _transform_fn

    n, J = Y.shape
    dt = Y.dtype
    p = {k: v.astype(dt) for k, v in p.items()}
    L, K = p["V"].shape[1], p["alpha_mu"].shape[0]
    nonzero = jnp.any(Y > 0, axis=1)
    last = n - 1 - jnp.argmax(nonzero[::-1])  # the batch's last non-empty cell (any row if none)
    Ys = jnp.where(nonzero[:, None], Y, Y[last][None, :])
    gene = ZINBState(p["beta_mu"], p["beta_pi"], jnp.zeros((L, 0), dt), jnp.zeros((L, 0), dt), jnp.zeros((0, K), dt),
                     p["alpha_mu"], p["alpha_pi"], p["zeta"])
    hp = ZINBHparams(*(p[k] for k in ZINBHparams._fields))
    data = ZINBData(Ys, jnp.ones((n, 1), dt), p["V"])
    W, gamma_mu, gamma_pi, n_iter = _transform_fn(zero_inflation, max_iter)(gene, data, hp, jnp.asarray(tol, dt))
    keep = nonzero[:, None]
    return {"W": jnp.where(keep, W, 0.0), "gamma_mu": jnp.where(keep, gamma_mu.T, jnp.nan),
            "gamma_pi": jnp.where(keep, gamma_pi.T, jnp.nan), "all_zero": ~nonzero,
            "n_iter": jnp.broadcast_to(n_iter, (n,))}


def gene_params(res) -> dict:
    """The gene-level parameters and penalties of a fit, for :func:`cell_kernel`."""
    return {"beta_mu": np.asarray(res.beta_mu), "beta_pi": np.asarray(res.beta_pi), "alpha_mu": np.asarray(res.alpha_mu),
            "alpha_pi": np.asarray(res.alpha_pi), "zeta": np.asarray(res.zeta), "V": np.asarray(res.V),
            **{k: np.asarray(v) for k, v in res.hparams._asdict().items()}}


class ZINBWaVEModel(Fitted):
    """A fitted ZINB-WaVE model (``result``: :class:`jaxfactor.zinbwave.ZINBWaVEResult`)."""

    family = "zinbwave"
    inputs = "counts"
    batch_size = 1024

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=25, tol=1e-4, seed=0, mesh=None,
            progress=False, X=None, V=None, common_dispersion=False, zero_inflation=True, **penalties):
        from .._inputs import read
        from .._protocol import vocabulary as _vocab
        from ._zinb_api import _covariates
        from ._zinb_fit import check_rank, fit_zinbwave, zero_rows_cols

        aliases = {k: penalties.pop(k) for k in list(penalties) if not k.startswith("epsilon")}
        n_components, n_init, max_iter = _vocab("zinbwave", n_components, n_init, aliases, max_iter)
        if n_init != 1:
            raise ValueError("zinbwave starts from its deterministic SVD initialisation; n_init must be 1")
        cls._one_device(mesh)
        inp = read(data, "counts", layer)
        Y = inp.X
        if inp.adata is not None:
            Xd, _, _ = _covariates(X, inp.adata.obs, "X")
            Vd, _, _ = _covariates(V, inp.adata.var, "V")
        elif isinstance(X, (str, list, tuple)) or isinstance(V, (str, list, tuple)):
            raise ValueError("X= / V= as column names need an AnnData; pass design matrices with arrays")
        else:
            Xd, Vd = X, V
        check_rank(n_components, Y.shape)
        empty_cells, empty_genes = zero_rows_cols(Y)
        cells = genes = None
        if empty_cells.any() or empty_genes.any():
            warnings.warn(f"ZINB-WaVE: dropped {int(empty_cells.sum())} all-zero cells and {int(empty_genes.sum())} "
                          "all-zero genes", UserWarning, stacklevel=2)
            cells, genes = np.flatnonzero(~empty_cells), np.flatnonzero(~empty_genes)
            Y = Y[np.ix_(cells, genes)]
            Xd = None if Xd is None else np.asarray(Xd)[cells]
            Vd = None if Vd is None else np.asarray(Vd)[genes]
        res = fit_zinbwave(Y, n_components, X=Xd, V=Vd, common_dispersion=common_dispersion, zero_inflation=zero_inflation,
                           max_iter=max_iter, tol=tol, seed=seed, progress=progress, **penalties)
        settings = dict(n_components=int(n_components), n_init=1, max_iter=int(max_iter), tol=float(tol), seed=int(seed),
                        common_dispersion=bool(common_dispersion), zero_inflation=bool(zero_inflation), layer=layer,
                        cell_covariates=bool(np.asarray(res.X).shape[1] > 1), named_variables=inp.named,
                        **{k: float(v) for k, v in penalties.items()})
        return cls(res, inp.obs_names, inp.var_names, settings, cells, genes)

    @classmethod
    def simulate(cls, seed: int = 0):
        import anndata
        import pandas as pd

        from ..data import simulate_zinb

        sim = simulate_zinb(150, 60, 2, seed=seed)
        Y = np.asarray(sim.X, np.float32)
        return anndata.AnnData(X=Y, obs=pd.DataFrame({"truth": np.asarray(sim.labels).astype(str)},
                                                     index=[f"cell{i}" for i in range(Y.shape[0])]),
                               var=pd.DataFrame(index=[f"gene{j}" for j in range(Y.shape[1])]))

    def params(self):
        if self.settings.get("cell_covariates"):
            raise ValueError("this ZINB-WaVE model has cell covariates; transform new cells with "
                             "jaxfactor.zinbwave.transform and their obs")
        return gene_params(self.result)

    def static(self):
        return {"zero_inflation": bool(self.result.zero_inflation), "max_iter": 100, "tol": 1e-8}

    @staticmethod
    def kernel(p, Y, *, zero_inflation, max_iter, tol):
        out = cell_kernel(p, Y, zero_inflation=zero_inflation, max_iter=max_iter, tol=tol)
        return {"embedding": out["W"], "all_zero": out["all_zero"]}

    def scores(self):
        r = self.result
        return {"penalized_log_likelihood": Score("penalized_log_likelihood", float(r.penalized_log_likelihood), True),
                "log_likelihood": Score("log_likelihood", float(r.log_likelihood), True)}

    def _cell_outputs(self):
        r = self.result
        return {"embedding": np.asarray(r.W, np.float32), "gamma_mu": np.asarray(r.gamma_mu, np.float32).T,
                "gamma_pi": np.asarray(r.gamma_pi, np.float32).T}

    def _var_outputs(self):
        r = self.result
        return {"alpha_mu": np.asarray(r.alpha_mu, np.float32).T, "alpha_pi": np.asarray(r.alpha_pi, np.float32).T,
                "theta": np.asarray(r.theta, np.float32)}

    def _uns(self):
        r = self.result
        return {"trace": np.asarray(r.trace), "trace_name": "penalised log-likelihood", "n_iter": int(r.n_iter),
                "converged": bool(r.converged)}
