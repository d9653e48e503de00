"""The fitted-model protocol (:class:`jaxfactor.Fitted`) for the EM families: Gaussian mixture,
probabilistic PCA and the binomial mixture of allele counts.

Kernels (pure, batchable; what ``transform`` / ``predict`` / ``jaxfactor predict`` run):

- GMM: posterior component probabilities ``r_ik ∝ π_k N(x_i | μ_k, Σ_k)`` and ``log p(x_i)``;
- PPCA: ``E[z | x] = M⁻¹Wᵀ(x − μ)``, ``M = WᵀW + σ²I``, and ``log N(x | μ, WWᵀ + σ²I)``
  (Tipping & Bishop, J. R. Stat. Soc. B 61, 1999, eqs. 12 and 4);
- binomial mixture: ``q_ik ∝ exp(log w_k + Σ_j ALT_ij log θ_jk + REF_ij log(1 − θ_jk))`` with
  the MAP (EM) or ``E[log θ]``, ``E[log(1 − θ)]`` under the Beta posteriors (VB; Huang et al.,
  Genome Biol. 20:273, 2019, vireoSNP's model).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._protocol import Fitted, Score, vocabulary as _vocab
from ._gmm import GMMHparams
from ._ppca import PPCAHparams


def _named(X, **obs):
    import anndata
    import pandas as pd

    X = np.asarray(X)
    return anndata.AnnData(X=X.astype(np.float32), obs=pd.DataFrame(obs, index=[f"cell{i}" for i in range(X.shape[0])]),
                           var=pd.DataFrame(index=[f"f{j}" for j in range(X.shape[1])]))


class GMMModel(Fitted):
    """A fitted Gaussian mixture (``result``: :class:`jaxfactor.mixture.GMMResult`)."""

    family = "gmm"
    inputs = "matrix"
    has_labels = True
    option_help = {"n_components": "number of mixture components", "covariance_type": "full | tied | diag | spherical",
                   "reg_covar": "added to the covariances' diagonal", "init": "kmeans++ | random_from_data"}
    option_choices = {"covariance_type": ("full", "tied", "diag", "spherical"), "init": ("kmeans++", "random_from_data")}

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=100, tol=1e-3, seed=0, mesh=None,
            progress=False, covariance_type="full", reg_covar=1e-6, init="kmeans++", **aliases):
        from .._inputs import read
        from ._gmm import fit_gmm

        n_components, n_init, max_iter = _vocab("gmm", n_components, n_init, aliases, max_iter)
        inp = read(data, "matrix", layer)
        res = fit_gmm(inp.X, n_components, covariance_type=covariance_type, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                      n_init=n_init, init=init, seed=seed, progress=progress, mesh=mesh)
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), covariance_type=covariance_type, reg_covar=float(reg_covar), init=init,
                        layer=layer, named_variables=inp.named, n_samples=int(inp.X.shape[0]))
        model = cls(res, inp.obs_names, inp.var_names, settings)
        model.__dict__["_proba"] = np.asarray(res.predict_proba(inp.X), np.float32)
        return model

    @classmethod
    def simulate(cls, seed: int = 0):
        from ..data import simulate_gmm

        sim = simulate_gmm(300, 2, 3, seed=seed)
        return _named(sim.X, truth=np.asarray(sim.labels).astype(str))

    def params(self):
        r = self.result
        return {k: np.asarray(getattr(r, k), np.float64) for k in ("weights", "means", "covariances", "precisions_cholesky")}

    def static(self):
        return {"cov_type": self.result.covariance_type}

    @staticmethod
    def kernel(p, X, *, cov_type):
        from ._gmm import GMMParams, posterior

        params = GMMParams(*(p[k].astype(X.dtype) for k in ("weights", "means", "covariances", "precisions_cholesky")))
        prob, logp = posterior(params, X, cov_type)
        return {"proba": prob, "log_likelihood": logp}

    def scores(self):
        from ._select import bic, gmm_n_parameters

        r, n = self.result, self.settings["n_samples"]
        k, d = np.asarray(r.means).shape
        return {"log_likelihood": Score("log_likelihood", float(r.log_likelihood), True),
                "bic": Score("bic", bic(float(r.log_likelihood) * n, gmm_n_parameters(k, d, r.covariance_type), n), False)}

    def _cell_outputs(self):
        q = self.__dict__.get("_proba")
        return {} if q is None else {"proba": q, "label": q.argmax(axis=1)}

    def _uns(self):
        r = self.result
        return {"weights": np.asarray(r.weights), "means": np.asarray(r.means), "covariances": np.asarray(r.covariances),
                "covariance_type": r.covariance_type, "trace": np.asarray(r.trace), "trace_iter": np.asarray(r.trace_iter),
                "trace_name": "mean log-likelihood per cell", "n_iter": int(r.n_iter), "converged": bool(r.converged)}

    def to_anndata(self, adata=None, **kw):
        self._cached_transform("_proba", adata)
        return super().to_anndata(adata, **kw)

    # --- a grid family: reg_covar is pytree data, a sweep over it is one compiled call ----------
    hparams = GMMHparams

    @staticmethod
    def restart_keys(seed: int, n_init: int):
        from ._gmm import restart_keys

        return restart_keys(seed, n_init)

    @classmethod
    def algorithm(cls, static: dict, mesh=None):
        from ._gmm import gmm

        return gmm(int(static["n_components"]), static["covariance_type"], static["init"], mesh=mesh)

    @staticmethod
    def state_arrays(state) -> dict:
        return {k: np.asarray(getattr(state, k)) for k in ("weights", "means", "covariances", "precisions_cholesky")}

    @classmethod
    def from_arrays(cls, arrays: dict, info: dict, obs_names, var_names, settings: dict, X=None) -> "GMMModel":
        """One point of a vmapped sweep as the fit would have returned it (the objective −Σ log p
        as the mean log-likelihood per cell, collapsed components listed)."""
        from ._gmm import GMMResult

        n = len(obs_names)
        trace = -np.asarray(info["trace"], np.float64) / n
        res = GMMResult(weights=arrays["weights"], means=arrays["means"], covariances=arrays["covariances"],
                        precisions_cholesky=arrays["precisions_cholesky"], covariance_type=settings["covariance_type"],
                        log_likelihood=float(trace[-1]), n_iter=int(info["n_iter"]), converged=bool(info["converged"]),
                        trace=trace, trace_iter=np.asarray(info["trace_iter"]),
                        restart_log_likelihoods=-np.asarray(info["restart_objectives"], np.float64) / n,
                        collapsed=np.flatnonzero(np.asarray(arrays["weights"]) * n < 1.0))
        keep = ("n_components", "n_init", "max_iter", "tol", "seed", "covariance_type", "reg_covar", "init", "layer",
                "named_variables")
        model = cls(res, np.asarray(obs_names).astype(str), np.asarray(var_names).astype(str),
                    {**{k: settings.get(k) for k in keep}, "n_samples": n})
        if X is not None:
            model.__dict__["_proba"] = np.asarray(res.predict_proba(X), np.float32)
        return model


class PPCAModel(Fitted):
    """A fitted probabilistic PCA (``result``: :class:`jaxfactor.mixture.PPCAResult`)."""

    family = "ppca"
    inputs = "matrix"
    option_help = {"n_components": "latent dimension q",
                   "min_noise_ratio": "floor of the noise variance relative to the mean feature variance"}

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=500, tol=1e-6, seed=0, mesh=None,
            progress=False, min_noise_ratio=1e-6, **aliases):
        from .._inputs import read
        from ._ppca import fit_ppca

        n_components, n_init, max_iter = _vocab("ppca", n_components, n_init, aliases, max_iter)
        inp = read(data, "matrix", layer)
        res = fit_ppca(inp.X, n_components, max_iter=max_iter, tol=tol, n_init=n_init, seed=seed,
                       min_noise_ratio=min_noise_ratio, progress=progress, mesh=mesh)
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), min_noise_ratio=float(min_noise_ratio), layer=layer, named_variables=inp.named)
        model = cls(res, inp.obs_names, inp.var_names, settings)
        model.__dict__["_z"] = res.transform(inp.X).astype(np.float32)
        return model

    @classmethod
    def simulate(cls, seed: int = 0):
        from ..data import simulate_ppca

        sim = simulate_ppca(200, 8, 2, seed=seed)
        return _named(sim.X, truth=(np.asarray(sim.Z)[:, 0] > 0).astype(str))

    def params(self):
        r = self.result
        return {"W": np.asarray(r.components, np.float64), "mean": np.asarray(r.mean, np.float64),
                "s2": np.asarray(float(r.noise_variance))}

    @staticmethod
    def kernel(p, X):
        W, mu, s2 = p["W"].astype(X.dtype), p["mean"].astype(X.dtype), p["s2"].astype(X.dtype)
        d, q = W.shape
        M = W.T @ W + s2 * jnp.eye(q, dtype=X.dtype)
        Xc = X - mu
        Z = jnp.linalg.solve(M, W.T @ Xc.T).T
        R = Xc - Z @ W.T
        quad = jnp.sum(R * R, axis=1) / s2 + jnp.sum(Z * Z, axis=1)
        logdet = (d - q) * jnp.log(s2) + jnp.linalg.slogdet(M)[1]
        return {"embedding": Z, "log_likelihood": -0.5 * (d * jnp.log(2 * jnp.pi) + logdet + quad)}

    def scores(self):
        r = self.result
        return {"log_likelihood": Score("log_likelihood", float(r.log_likelihood), True), "bic": Score("bic", float(r.bic()), False)}

    def _cell_outputs(self):
        z = self.__dict__.get("_z")
        return {} if z is None else {"embedding": z}

    def _var_outputs(self):
        return {"components": np.asarray(self.result.components, np.float32)}

    def _uns(self):
        r = self.result
        return {"mean": np.asarray(r.mean), "noise_variance": float(r.noise_variance), "trace": np.asarray(r.trace),
                "trace_iter": np.asarray(r.trace_iter), "trace_name": "mean log-likelihood per cell", "n_iter": int(r.n_iter),
                "converged": bool(r.converged)}

    def to_anndata(self, adata=None, **kw):
        self._cached_transform("_z", adata)
        return super().to_anndata(adata, **kw)

    # --- a grid family: min_noise_ratio is pytree data, a sweep over it is one compiled call ----
    hparams = PPCAHparams

    @classmethod
    def algorithm(cls, static: dict, mesh=None):
        from ._ppca import ppca

        return ppca(int(static["n_components"]), mesh)

    @staticmethod
    def algorithm_data(X):
        from ._ppca import ppca_data

        return ppca_data(X)

    @classmethod
    def check_grid_data(cls, X, n_components: int) -> None:
        from ._ppca import _check_ppca_input

        _check_ppca_input(X, n_components)

    @staticmethod
    def state_arrays(state) -> dict:
        return {"W": np.asarray(state.W), "noise_var": np.asarray(state.noise_var), "mean": np.asarray(state.mean)}

    @classmethod
    def from_arrays(cls, arrays: dict, info: dict, obs_names, var_names, settings: dict, X=None) -> "PPCAModel":
        """One point of a vmapped sweep as the fit would have returned it (−log-likelihood as the
        mean log-likelihood per cell)."""
        from ._ppca import PPCAResult

        n = len(obs_names)
        trace = -np.asarray(info["trace"], np.float64) / n
        res = PPCAResult(components=arrays["W"], mean=arrays["mean"], noise_variance=float(arrays["noise_var"]),
                         log_likelihood=float(trace[-1]), n_iter=int(info["n_iter"]), converged=bool(info["converged"]),
                         trace=trace, trace_iter=np.asarray(info["trace_iter"]), n_samples=n,
                         restart_log_likelihoods=-np.asarray(info["restart_objectives"], np.float64) / n)
        keep = ("n_components", "n_init", "max_iter", "tol", "seed", "min_noise_ratio", "layer", "named_variables")
        model = cls(res, np.asarray(obs_names).astype(str), np.asarray(var_names).astype(str),
                    {k: settings.get(k) for k in keep})
        if X is not None:
            model.__dict__["_z"] = res.transform(X).astype(np.float32)
        return model


def allele_fit_inputs(data, layer, filter, min_maf, filter_germline, min_cell_coverage):
    """``(inputs, filtered AnnData, kept cells, kept variants)`` of allele counts, after CCLONE's
    filter when asked (:func:`jaxfactor.data.filter_variants`)."""
    from .._inputs import read

    inp = read(data, "alleles", layer)  # layer= is refused: allele counts are read from REF/ALT
    ad, cells, genes = inp.X, None, None
    if filter:
        from ..data import filter_variants

        ad = filter_variants(inp.X, min_maf, filter_germline, min_cell_coverage)
        if ad.n_obs == 0 or ad.n_vars == 0:
            raise ValueError(f"the variant filter left {ad.n_obs} cells x {ad.n_vars} variants; lower min_maf "
                             "/ min_cell_coverage or fit with filter=False")
        cells, genes = _index(ad.obs_names, inp.obs_names), _index(ad.var_names, inp.var_names)
    return inp, ad, cells, genes


def _index(names, within) -> np.ndarray:
    """Positions of ``names`` in ``within``."""
    where = {n: i for i, n in enumerate(within)}
    return np.array([where[str(n)] for n in names], dtype=np.int64)


def filter_settings(filter, min_maf, filter_germline, min_cell_coverage) -> dict:
    """The settings of CCLONE's variant/cell filter, as stored with a fit."""
    return dict(filter=bool(filter), min_maf=float(min_maf), filter_germline=bool(filter_germline),
                min_cell_coverage=float(min_cell_coverage))


class AlleleFitted(Fitted):
    """Base of the families fitted to allele counts (REF/ALT): labels per cell, the same simulation."""

    inputs = "alleles"
    has_labels = True
    option_help = {"filter": "apply CCLONE's variant and cell filters first",
                   "min_maf": "filter: percent of cells showing the rarer allele pattern",
                   "filter_germline": "filter: drop var['dbSNP'] variants",
                   "min_cell_coverage": "filter: percent of variants a cell must cover"}

    @classmethod
    def simulate(cls, seed: int = 0):
        return simulate_allele_anndata(seed)


class BinomialModel(AlleleFitted):
    """A fitted binomial mixture of allele counts (``result``: :class:`jaxfactor.mixture.BinomialMixtureResult`)."""

    family = "binomial_mixture"
    option_help = {"n_components": "number of clones K", "method": "MAP-EM (em) or mean-field variational Bayes (vb)",
                   "learn_weights": "VB: Dirichlet posterior on the weights (else fixed uniform)",
                   "beta_a": "Beta(a, b) prior on each clone's allele frequency: a", "beta_b": "the prior's b",
                   "dirichlet": "symmetric Dirichlet prior on the clone weights"}
    option_choices = {"method": ("em", "vb")}

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=200, tol=1e-6, seed=0, mesh=None,
            progress=False, method="em", beta_a=1.0, beta_b=1.0, dirichlet=1.0, learn_weights=False,
            filter=False, min_maf=5.0, filter_germline=True, min_cell_coverage=10.0, **aliases):
        from .._inputs import allele_layers
        from ._binomial import fit_binomial_mixture

        n_components, n_init, max_iter = _vocab("binomial_mixture", n_components, n_init, aliases, max_iter)
        inp, ad, cells, genes = allele_fit_inputs(data, layer, filter, min_maf, filter_germline, min_cell_coverage)
        ref, alt = allele_layers(ad)
        res = fit_binomial_mixture(alt, ref + alt, n_components, method=method, max_iter=max_iter, tol=tol, n_init=n_init,
                                   seed=seed, beta_a=beta_a, beta_b=beta_b, dirichlet=dirichlet,
                                   learn_weights=learn_weights, progress=progress, mesh=mesh)
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), method=method, beta_a=float(beta_a), beta_b=float(beta_b),
                        dirichlet=float(dirichlet), learn_weights=bool(learn_weights), named_variables=inp.named,
                        **filter_settings(filter, min_maf, filter_germline, min_cell_coverage),
                        n_cells=int(ad.n_obs), n_variants=int(ad.n_vars))
        return cls(res, inp.obs_names, inp.var_names, settings, cells, genes)

    sweep_together = ("beta_a", "beta_b", "dirichlet")  # the priors: pytree data, one compiled call

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Points that differ only in their priors: one compiled call vmapped over priors ×
        restarts (:func:`jaxfactor.mixture._binomial.fit_binomial_grid`), each equal to its own fit."""
        from .._inputs import allele_layers
        from .._grid import inspect_defaults
        from ._binomial import fit_binomial_grid

        if len(points) == 1 or shared.get("mesh") is not None:
            return super().fit_points(data, points, **shared)
        names = cls.sweep_together
        o = {**inspect_defaults(cls.fit), **shared, **{k: v for k, v in points[0].items() if k not in names}}
        k, n_init, max_iter = _vocab("binomial_mixture", o.pop("n_components"), o["n_init"], {}, o["max_iter"])
        inp, ad, cells, genes = allele_fit_inputs(data, o["layer"], o["filter"], o["min_maf"], o["filter_germline"],
                                                  o["min_cell_coverage"])
        ref, alt = allele_layers(ad)
        priors = [tuple(p.get(n, o[n]) for n in names) for p in points]
        results = fit_binomial_grid(alt, ref + alt, k, priors, method=o["method"], max_iter=max_iter, tol=o["tol"],
                                    n_init=n_init, seed=o["seed"], learn_weights=o["learn_weights"])
        out = []
        for prior, res in zip(priors, results):
            settings = dict(n_components=int(k), n_init=int(n_init), max_iter=int(max_iter), tol=float(o["tol"]),
                            seed=int(o["seed"]), method=o["method"], **{n: float(v) for n, v in zip(names, prior)},
                            learn_weights=bool(o["learn_weights"]), named_variables=inp.named,
                            **filter_settings(o["filter"], o["min_maf"], o["filter_germline"], o["min_cell_coverage"]),
                            n_cells=int(ad.n_obs), n_variants=int(ad.n_vars))
            out.append(cls(res, inp.obs_names, inp.var_names, settings, cells, genes))
        return out

    def params(self):
        from jax.scipy.special import digamma

        from ._binomial import AF_FLOOR

        r, s = self.result, self.settings
        k = np.asarray(r.clone_prob).shape[1]
        if r.method == "em":
            af = np.clip(np.asarray(r.clone_af, np.float64), AF_FLOOR, 1 - AF_FLOOR)
            return {"log_af": np.log(af), "log_1maf": np.log1p(-af), "log_w": np.log(np.asarray(r.weights, np.float64))}
        s1, s2 = np.asarray(r.af_alpha, np.float64), np.asarray(r.af_beta, np.float64)
        d12 = np.asarray(digamma(s1 + s2))
        if s["learn_weights"]:
            alpha = np.asarray(r.clone_prob, np.float64).sum(axis=0) + s["dirichlet"]
            log_w = np.asarray(digamma(alpha) - digamma(alpha.sum()))
        else:
            log_w = np.full(k, -np.log(k))
        return {"log_af": np.asarray(digamma(s1)) - d12, "log_1maf": np.asarray(digamma(s2)) - d12, "log_w": log_w}

    @staticmethod
    def kernel(p, ref, alt):
        from jax.scipy.special import logsumexp

        joint = p["log_w"].astype(ref.dtype) + alt @ p["log_af"].astype(ref.dtype) + ref @ p["log_1maf"].astype(ref.dtype)
        norm = logsumexp(joint, axis=1, keepdims=True)
        return {"proba": jnp.exp(joint - norm)}

    def scores(self):
        from ._select import bic, binomial_mixture_n_parameters

        r, s = self.result, self.settings
        out = {"log_likelihood": Score("log_likelihood", float(r.log_likelihood), True)}
        if r.method == "vb":
            out["elbo"] = Score("elbo", float(r.elbo), True)
        else:
            out["log_posterior"] = Score("log_posterior", float(r.log_posterior), True)
        n_par = binomial_mixture_n_parameters(s["n_components"], s["n_variants"])
        out["bic"] = Score("bic", bic(float(r.log_likelihood), n_par, s["n_cells"]), False)
        return out

    def selection(self):
        """The ELBO for variational fits (it bounds the evidence), BIC for MAP-EM."""
        scores = self.scores()
        return scores["elbo"] if self.result.method == "vb" else scores["bic"]

    def _cell_outputs(self):
        q = np.asarray(self.result.clone_prob, np.float32)
        return {"proba": q, "label": q.argmax(axis=1)}

    def _var_outputs(self):
        return {"af": np.asarray(self.result.clone_af, np.float32)}

    def _uns(self):
        r = self.result
        return {"weights": np.asarray(r.weights), "trace": np.asarray(r.trace), "trace_iter": np.asarray(r.trace_iter),
                "trace_name": "ELBO" if r.method == "vb" else "log posterior", "n_iter": int(r.n_iter),
                "converged": bool(r.converged), "collapsed": np.asarray(r.collapsed, np.int64)}


def simulate_allele_anndata(seed: int = 0, n_cells: int = 300, n_variants: int = 30):
    """A small AnnData of allele counts (``jaxfactor.data.simulate_clones``: healthy cells and three
    cancer clones, layers REF/ALT, ``obs['celltype']``); the true population in ``obs['truth']``."""
    from ..data import simulate_clones

    sim = simulate_clones(n_cells, n_variants, 3, mean_coverage=4.0, seed=seed, celltypes=True)
    ad = sim.to_anndata()
    ad.obs["truth"] = np.asarray(sim.labels).astype(str)
    return ad
