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


def canonical_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Canonical correlations between the column spaces of A and B (centred), largest first."""
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    if A.shape[1] == 0 or B.shape[1] == 0:
        return np.zeros(0)
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def n_parameters(n: int, J: int, M: int, L: int, K: int, zero_inflation: bool, common_dispersion: bool, *,
                 M_pi: int | None = None, L_pi: int | None = None) -> int:
    """zinbwave's ``nParams``: β (M J), γ (L n), α (K J) for μ and π, W (n K) and the dispersions;
    ``M``, ``L`` count the μ side's covariates and ``M_pi``, ``L_pi`` the π side's (default the same)."""
    M_pi, L_pi = (M if M_pi is None else M_pi), (L if L_pi is None else L_pi)
    pi_side = (M_pi * J + L_pi * n + K * J) if zero_inflation else 0
    return M * J + L * n + K * J + pi_side + n * K + (1 if common_dispersion else J)


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
    data = ZINBData(Ys, jnp.ones((n, 1), dt), p["V"], V_pi=p.get("V_pi"))
    W, gamma_mu, gamma_pi, n_iter = _transform_fn(zero_inflation, max_iter)(gene, data, hp, jnp.asarray(tol, dt))
    keep = nonzero[:, None]
    return {"W": jnp.where(keep, W, 0.0), "gamma_mu": jnp.where(keep, gamma_mu.T, jnp.nan),
            "gamma_pi": jnp.where(keep, gamma_pi.T, jnp.nan), "all_zero": ~nonzero,
            "n_iter": jnp.broadcast_to(n_iter, (n,))}


def _column_names(Z) -> list:
    """The design's column names as given (a name or a list of names); [] for a matrix or None."""
    return [Z] if isinstance(Z, str) else ([str(z) for z in Z] if isinstance(Z, (list, tuple)) else [])


def gene_params(res) -> dict:
    """The gene-level parameters and penalties of a fit, for :func:`cell_kernel`. ``V`` is the
    μ side's gene design (the columns ``which_V_mu`` leaves out set to 0) and, only when the π
    side uses other columns, ``V_pi`` its own."""
    from ._zinb_fit import masked

    V, which = np.asarray(res.V), res.which
    V_mu, V_pi = masked(V, which["which_V_mu"]), masked(V, which["which_V_pi"])
    return {"beta_mu": np.asarray(res.beta_mu), "beta_pi": np.asarray(res.beta_pi), "alpha_mu": np.asarray(res.alpha_mu),
            "alpha_pi": np.asarray(res.alpha_pi), "zeta": np.asarray(res.zeta), "V": V_mu,
            **({} if np.array_equal(V_mu, V_pi) else {"V_pi": V_pi}),
            **{k: np.asarray(v) for k, v in res.hparams._asdict().items()}}


class ZINBWaVEModel(Fitted):
    """A fitted ZINB-WaVE model (``result``: :class:`jaxfactor.zinbwave.ZINBWaVEResult`)."""

    family = "zinbwave"
    inputs = "counts"
    batch_size = 1024
    option_help = {"n_components": "number of unknown cell factors K (0: a ZINB GLM on the covariates)",
                   "X": "obs columns of the cell design (an intercept is always included)",
                   "V": "var columns of the gene design (an intercept is always included)",
                   "common_dispersion": "one θ for all genes instead of gene-wise θ",
                   "zero_inflation": "false: negative-binomial model (π = 0)",
                   "epsilon": "penalty scale ε (0: zinbwave's default, the number of genes)",
                   "subsample": "zinbsurf: fit on this many random cells, then project every cell (0: all cells)"}
    option_types = {"X": list, "V": list}

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=25, tol=1e-4, seed=0, mesh=None,
            progress=False, X=None, V=None, common_dispersion=False, zero_inflation=True, epsilon=0.0, which_X_mu=None,
            which_X_pi=None, which_V_mu=None, which_V_pi=None, subsample=0, **penalties):
        from .._inputs import read
        from .._protocol import vocabulary as _vocab
        from ._zinb_api import _covariates
        from ._zinb_fit import check_rank, fit_zinbwave, zero_rows_cols

        grid = penalties.pop("_epsilon_grid", None)  # fit_points: several ε in one compiled call
        aliases = {k: penalties.pop(k) for k in list(penalties) if not k.startswith("epsilon")}
        n_components, n_init, max_iter = _vocab("zinbwave", n_components, n_init, aliases, max_iter)
        if n_init != 1:
            raise ValueError("zinbwave starts from its deterministic SVD initialisation; n_init must be 1")
        cls._one_device(mesh)
        if epsilon:
            penalties["epsilon"] = float(epsilon)
        X = None if isinstance(X, (list, tuple)) and not X else X  # no columns: the intercept only
        V = None if isinstance(V, (list, tuple)) and not V else V
        inp = read(data, "counts", layer)
        Y = inp.X
        x_names = v_names = ["(Intercept)"]
        x_levels = v_levels = {}
        if inp.adata is not None:
            Xd, x_names, x_levels = _covariates(X, inp.adata.obs, "X")
            Vd, v_names, v_levels = _covariates(V, inp.adata.var, "V")
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
        results = fit_zinbwave(Y, n_components, X=Xd, V=Vd, common_dispersion=common_dispersion,
                               zero_inflation=zero_inflation, max_iter=max_iter, tol=tol, seed=seed, progress=progress,
                               epsilon_grid=grid, which_X_mu=which_X_mu, which_X_pi=which_X_pi, which_V_mu=which_V_mu,
                               which_V_pi=which_V_pi, subsample=subsample or None, **penalties)
        models = []
        for res, eps in zip(results if grid is not None else [results], grid if grid is not None else [None]):
            pen = penalties if eps is None else {**penalties, **({"epsilon": float(eps)} if eps else {})}
            settings = cls._settings(res, n_components, max_iter, tol, seed, common_dispersion, zero_inflation, layer,
                                     inp, X, V, x_names, v_names, x_levels, v_levels, pen)
            models.append(cls(res, inp.obs_names, inp.var_names, settings, cells, genes))
        return models if grid is not None else models[0]

    sweep_together = ("epsilon",)  # the penalty scale: pytree data, one compiled call

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Points that differ only in ``epsilon``: one compiled call vmapped over the values
        (:func:`jaxfactor.factorization._zinb_fit.fit_zinbwave`'s ``epsilon_grid``)."""
        if len(points) == 1:
            return super().fit_points(data, points, **shared)
        static = {k: v for k, v in points[0].items() if k != "epsilon"}
        k = static.pop("n_components")
        return cls.fit(data, k, **shared, **static, _epsilon_grid=[float(p.get("epsilon", 0.0)) or None for p in points])

    @staticmethod
    def _settings(res, n_components, max_iter, tol, seed, common_dispersion, zero_inflation, layer, inp, X, V, x_names,
                  v_names, x_levels, v_levels, penalties) -> dict:
        hp = res.hparams
        return dict(n_components=int(n_components), n_init=1, max_iter=int(max_iter), tol=float(tol), seed=int(seed),
                        common_dispersion=bool(common_dispersion), zero_inflation=bool(zero_inflation), layer=layer,
                        cell_covariates=bool(np.asarray(res.X).shape[1] > 1), named_variables=inp.named,
                        X=_column_names(X), V=_column_names(V),
                        # what jaxfactor.zinbwave.transform reads back from to_anndata's output (as from fit's)
                        X_is_matrix=X is not None and not _column_names(X), V_is_matrix=V is not None and not _column_names(V),
                        X_names=[str(n) for n in x_names], V_names=[str(n) for n in v_names],
                        X_levels={k: [str(x) for x in v] for k, v in x_levels.items()},
                        V_levels={k: [str(x) for x in v] for k, v in v_levels.items()},
                        **{k: np.asarray(getattr(hp, k), np.float64).tolist()
                           for k in ("eps_beta_mu", "eps_beta_pi", "eps_gamma_mu", "eps_gamma_pi")},
                        **{k: float(getattr(hp, k)) for k in ("eps_W", "eps_alpha", "eps_zeta")},
                        **{k: list(v) for k, v in res.which.items()},
                        **{k: float(v) for k, v in penalties.items()})

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
            raise ValueError(f"this ZINB-WaVE model has cell covariates ({', '.join(self.settings.get('X', [])) or 'a design matrix'}); "
                             "predict supports intercept-only cell designs: "
                             "transform new cells with jaxfactor.zinbwave.transform and their obs")
        return gene_params(self.result)

    def static(self):
        return {"zero_inflation": bool(self.result.zero_inflation), "max_iter": 100, "tol": 1e-8}

    @staticmethod
    def kernel(p, Y, *, zero_inflation, max_iter, tol):
        """W of new cells (and γ; all-zero cells get W = 0, γ = NaN and are flagged)."""
        out = cell_kernel(p, Y, zero_inflation=zero_inflation, max_iter=max_iter, tol=tol)
        return {"embedding": out["W"], "gamma_mu": out["gamma_mu"], "gamma_pi": out["gamma_pi"], "all_zero": out["all_zero"]}

    def scores(self):
        """Penalised and plain log-likelihood; zinbwave's ``zinbBIC`` / ``zinbAIC`` (lower is better)."""
        r = self.result
        n, J = np.asarray(r.W).shape[0], np.asarray(r.alpha_mu).shape[1]
        w = r.which
        p = n_parameters(n, J, len(w["which_X_mu"]), len(w["which_V_mu"]), np.asarray(r.W).shape[1],
                         bool(r.zero_inflation), bool(r.common_dispersion), M_pi=len(w["which_X_pi"]),
                         L_pi=len(w["which_V_pi"]))
        ll = float(r.log_likelihood)
        return {"penalized_log_likelihood": Score("penalized_log_likelihood", float(r.penalized_log_likelihood), True),
                "log_likelihood": Score("log_likelihood", ll, True),
                "bic": Score("bic", float(np.log(n) * p - 2.0 * ll), False), "aic": Score("aic", float(2.0 * p - 2.0 * ll), False)}

    def truth_metrics(self, truth) -> dict:
        """Canonical correlations between the fitted and the simulated W (``truth.W``)."""
        W_true = getattr(truth, "W", None)
        if W_true is None or np.asarray(self.result.W).shape[1] == 0:
            return {}
        rows = slice(None) if self.cells is None else np.asarray(self.cells)
        cc = canonical_correlations(np.asarray(self.result.W, np.float64), np.asarray(W_true)[rows])
        return {"cancor_min": float(cc.min()), "cancor_mean": float(cc.mean())}

    def _fitted_counts(self, data, layer):
        """The counts of ``data`` (the data given to ``fit``) restricted to the cells and genes
        the fit kept, as the result's (n, J) matrix."""
        from .._inputs import read

        Y = read(data, "counts", layer if layer is not None else self.settings.get("layer")).X
        Y = np.asarray(Y.toarray() if hasattr(Y, "toarray") else Y, np.float64)
        if self.cells is not None:
            Y = Y[np.ix_(np.asarray(self.cells), np.asarray(self.genes))]
        return Y

    def residuals(self, data, kind: str = "deviance", *, layer=None, ignore_W: bool = False) -> np.ndarray:
        """(n, J) residuals of the fit on ``data`` (the fitted counts; see
        :meth:`jaxfactor.zinbwave.ZINBWaVEResult.residuals`: zinbwave's
        ``computeDevianceResiduals`` for ``"deviance"``, or ``"pearson"``)."""
        return self.result.residuals(self._fitted_counts(data, layer), kind, ignore_W=ignore_W)

    def normalized_values(self, data, *, layer=None) -> np.ndarray:
        """zinbwave's ``normalizedValues``: deviance residuals with W ignored (see
        :meth:`jaxfactor.zinbwave.ZINBWaVEResult.normalized_values`)."""
        return self.result.normalized_values(self._fitted_counts(data, layer))

    def imputed_counts(self, data, *, layer=None) -> np.ndarray:
        """zinbwave's ``imputeZeros`` (see :meth:`jaxfactor.zinbwave.ZINBWaVEResult.imputed_counts`)."""
        return self.result.imputed_counts(self._fitted_counts(data, layer))

    def _layer_outputs(self, Y):
        """Fitted μ, π and the observational weights (zinbwave's ``computeObservationalWeights``)."""
        r = self.result
        return {"mu": np.exp(r.log_mu()).astype(np.float32), "pi": r.pi().astype(np.float32),
                "weights": r.weights(Y).astype(np.float32)}

    def _cell_outputs(self):
        r = self.result
        return {"embedding": np.asarray(r.W, np.float32), "gamma_mu": np.asarray(r.gamma_mu, np.float32).T,
                "gamma_pi": np.asarray(r.gamma_pi, np.float32).T}

    def _var_outputs(self):
        r = self.result
        f32 = lambda a: np.asarray(a, np.float32).T  # noqa: E731
        return {"alpha_mu": f32(r.alpha_mu), "alpha_pi": f32(r.alpha_pi), "beta_mu": f32(r.beta_mu),
                "beta_pi": f32(r.beta_pi), "theta": np.asarray(r.theta, np.float32)}

    def _uns(self):
        """The layout of ``jaxfactor.zinbwave.fit``'s ``uns['zinbwave']`` (so ``zinbwave.transform``
        reads either), and the trace."""
        r, s = self.result, self.settings
        return {"trace": np.asarray(r.trace), "trace_name": "penalised log-likelihood", "n_iter": int(r.n_iter),
                "converged": bool(r.converged), "penalized_log_likelihood": float(r.penalized_log_likelihood),
                "log_likelihood": float(r.log_likelihood), "X_names": s.get("X_names", []), "V_names": s.get("V_names", []),
                "X_columns": s.get("X", []), "V_columns": s.get("V", []), "X_levels": s.get("X_levels", {}),
                "V_levels": s.get("V_levels", {}), "V_matrix": np.asarray(r.V)}
