"""AnnData entry points of ZINB-WaVE: ``jaxfactor.zinbwave.fit`` and ``transform``."""

from __future__ import annotations

import warnings

import numpy as np

from ..data._io import anndata_matrix
from ._zinb_fit import ZINBWaVEResult, check_counts, check_rank, fit_zinbwave, transform_counts, zero_rows_cols

KEY = "zinbwave"
_WHICH = ("which_X_mu", "which_X_pi", "which_V_mu", "which_V_pi")


def design_matrix(frame, columns, *, levels: dict | None = None, intercept: bool = True):
    """(matrix, column names, levels) from DataFrame columns: an intercept, numeric columns as
    they are, every other column one-hot with its first level dropped (treatment coding).
    ``levels`` (from a previous call) fixes the categories, so new cells get the same columns."""
    import pandas as pd

    if isinstance(columns, str):
        columns = [columns]
    parts, names, found = [], [], {}
    if intercept:
        parts.append(np.ones((len(frame), 1)))
        names.append("intercept")
    for col in columns:
        if col not in frame.columns:
            raise ValueError(f"column {col!r} not found; available: {', '.join(map(str, frame.columns))}")
        s = frame[col]
        known = None if levels is None else levels.get(col)
        if known is None and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            parts.append(np.asarray(s, np.float64)[:, None])
            names.append(str(col))
            continue
        if s.isna().any():
            raise ValueError(f"column {col!r} has {int(s.isna().sum())} missing values; fill or drop them before fitting")
        cats = list(known) if known is not None else [str(c) for c in pd.Categorical(s.astype(str)).categories]
        values = s.astype(str).to_numpy()
        unknown = sorted(set(values) - set(cats))
        if unknown:
            raise ValueError(f"column {col!r} has levels not seen in the fit: {', '.join(unknown[:5])}")
        found[col] = cats
        for c in cats[1:]:
            parts.append((values == c).astype(np.float64)[:, None])
            names.append(f"{col}[{c}]")
    Z = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
    return Z, names, found


def _covariates(Z, frame, what):
    """A design from ``None`` (intercept), column names, or a matrix; returns (Z, names, levels)."""
    if Z is None:
        return None, ["intercept"], {}
    if isinstance(Z, str) or (isinstance(Z, (list, tuple)) and all(isinstance(c, str) for c in Z)):
        return design_matrix(frame, Z)
    Z = np.asarray(Z, dtype=np.float64)
    Z = Z[:, None] if Z.ndim == 1 else Z
    return Z, [f"{what}{i}" for i in range(Z.shape[1] if Z.ndim == 2 else 0)], {}


def fit(adata, n_components: int = 2, *, X=None, V=None, layer: str | None = None, O_mu=None, O_pi=None,
        common_dispersion: bool = False, zero_inflation: bool = True, max_iter: int = 25, tol: float = 1e-4,
        seed: int = 0, progress: bool = False, which_X_mu=None, which_X_pi=None, which_V_mu=None, which_V_pi=None,
        normalized_values: bool = False, residuals: bool = False, imputed_values: bool = False,
        batch_size: int | None = None, subsample: int | None = None, **penalties):
    """ZINB-WaVE on ``adata`` (cells × genes; counts in ``adata.X`` or ``adata.layers[layer]``).

    ``X``: obs column names (an intercept plus numeric columns and one-hot categories) or an
    (n_obs, M) design matrix used as is; default an intercept. ``V``: var column names or a
    (n_vars, L) matrix; default an intercept. All-zero cells and genes are dropped with a
    warning that counts them (the result then has fewer obs/vars). ``penalties``: ``epsilon``,
    ``epsilon_beta``, ``epsilon_gamma``, ``epsilon_W``, ``epsilon_alpha``, ``epsilon_zeta``,
    ``epsilon_min_logit`` (see ``fit_zinbwave``); other keywords as in ``fit_zinbwave``.
    ``which_X_mu``, ``which_X_pi``, ``which_V_mu``, ``which_V_pi``: the design columns (0-based,
    the intercept first) each regression uses, as in zinbwave (default all).
    ``batch_size``, ``subsample``: the streamed fit and zinbsurf (``fit_zinbwave``); sparse counts
    stay sparse for the fit (the fitted μ, π and weights layers below are dense n × J).
    ``normalized_values``, ``residuals``, ``imputed_values``: also write zinbwave's assays of
    these names (``zinbwave()``'s arguments; see ``ZINBWaVEResult.normalized_values``,
    ``residuals``, ``imputed_counts``) as ``layers['zinbwave_normalized_values']``,
    ``layers['zinbwave_residuals']`` (deviance) and ``layers['zinbwave_imputed']``.

    Returns a new AnnData (``adata`` is not modified) with

    - ``obsm['X_zinbwave']`` (n × K) the cell factors W; ``obsm['zinbwave_gamma_mu' / '_pi']`` (n × L);
    - ``varm['zinbwave_alpha_mu' / '_pi']`` (J × K) loadings, ``varm['zinbwave_beta_mu' / '_pi']`` (J × M);
    - ``var['zinbwave_theta']`` the dispersion θ_j;
    - ``layers['zinbwave_mu']``, ``layers['zinbwave_pi']`` the fitted μ and π, and
      ``layers['zinbwave_weights']`` the observational weights (1 where y > 0, floored at 1e-15);
    - ``uns['zinbwave']``: ``penalized_log_likelihood``, ``log_likelihood``, ``trace`` (PLL per
      outer iteration), ``n_iter``, ``converged``, the designs' column names and ``settings``.
    """
    if not (hasattr(adata, "obs") and hasattr(adata, "var")):
        raise ValueError("fit expects an AnnData; for a count matrix use jaxfactor.zinbwave.fit_counts")
    Y = check_counts(anndata_matrix(adata, layer), "counts" if layer is None else f"layers[{layer!r}]", keep_sparse=True)
    Xd, x_names, x_levels = _covariates(X, adata.obs, "X")
    Vd, v_names, v_levels = _covariates(V, adata.var, "V")
    n, J = Y.shape
    for Z, m, name in ((Xd, n, "X"), (Vd, J, "V")):
        if Z is not None and (Z.ndim != 2 or Z.shape[0] != m):
            raise ValueError(f"{name} must have {m} rows, got shape {Z.shape}")
    check_rank(n_components, (n, J))
    empty_cells, empty_genes = zero_rows_cols(Y)
    out = adata
    if empty_cells.any() or empty_genes.any():
        warnings.warn(f"ZINB-WaVE: dropped {int(empty_cells.sum())} all-zero cells and {int(empty_genes.sum())} all-zero genes",
                      UserWarning, stacklevel=2)
        keep_c, keep_g = ~empty_cells, ~empty_genes
        out = adata[keep_c, keep_g]
        Y = Y[keep_c][:, keep_g]
        Xd = None if Xd is None else Xd[keep_c]
        Vd = None if Vd is None else Vd[keep_g]
        O_mu = None if O_mu is None else np.asarray(O_mu)[np.ix_(keep_c, keep_g)]
        O_pi = None if O_pi is None else np.asarray(O_pi)[np.ix_(keep_c, keep_g)]
    out = out.copy()
    res = fit_zinbwave(Y, n_components, X=Xd, V=Vd, O_mu=O_mu, O_pi=O_pi, common_dispersion=common_dispersion,
                       zero_inflation=zero_inflation, max_iter=max_iter, tol=tol, seed=seed, progress=progress,
                       which_X_mu=which_X_mu, which_X_pi=which_X_pi, which_V_mu=which_V_mu, which_V_pi=which_V_pi,
                       batch_size=batch_size, subsample=subsample, **penalties)
    Y = Y.toarray() if hasattr(Y, "toarray") else Y  # the layers below are dense
    write_result(out, res, Y, x_names, x_levels, v_names, v_levels, layer=layer, X_given=X, V_given=V)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    if normalized_values:
        out.layers[f"{KEY}_normalized_values"] = f32(res.normalized_values(Y))
    if residuals:
        out.layers[f"{KEY}_residuals"] = f32(res.residuals(Y))
    if imputed_values:
        out.layers[f"{KEY}_imputed"] = f32(res.imputed_counts(Y))
    return out


def write_result(out, res: ZINBWaVEResult, Y, x_names, x_levels, v_names, v_levels, *, layer=None, X_given=None,
                 V_given=None):
    """Store a ``ZINBWaVEResult`` in the AnnData slots listed in ``fit``."""
    f32 = lambda a: np.asarray(a, np.float32)
    out.obsm["X_zinbwave"] = f32(res.W)
    out.obsm[f"{KEY}_gamma_mu"] = f32(res.gamma_mu.T)
    out.obsm[f"{KEY}_gamma_pi"] = f32(res.gamma_pi.T)
    out.varm[f"{KEY}_alpha_mu"] = f32(res.alpha_mu.T)
    out.varm[f"{KEY}_alpha_pi"] = f32(res.alpha_pi.T)
    out.varm[f"{KEY}_beta_mu"] = f32(res.beta_mu.T)
    out.varm[f"{KEY}_beta_pi"] = f32(res.beta_pi.T)
    out.var[f"{KEY}_theta"] = res.theta
    out.layers[f"{KEY}_mu"] = f32(np.exp(res.log_mu()))
    out.layers[f"{KEY}_pi"] = f32(res.pi())
    out.layers[f"{KEY}_weights"] = f32(res.weights(Y))
    hp = res.hparams
    columns = lambda given: list(given) if isinstance(given, (list, tuple)) else ([given] if isinstance(given, str) else [])
    out.uns[KEY] = {
        "penalized_log_likelihood": res.penalized_log_likelihood,
        "log_likelihood": res.log_likelihood,
        "trace": res.trace,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "X_names": list(x_names),
        "V_names": list(v_names),
        "X_columns": columns(X_given),
        "V_columns": columns(V_given),
        "X_levels": {k: list(v) for k, v in x_levels.items()},
        "V_levels": {k: list(v) for k, v in v_levels.items()},
        "settings": {
            "n_components": int(res.n_components), "zero_inflation": res.zero_inflation,
            "common_dispersion": res.common_dispersion, "layer": layer or "",
            "X_is_matrix": X_given is not None and not columns(X_given),
            "V_is_matrix": V_given is not None and not columns(V_given),
            "eps_beta_mu": np.asarray(hp.eps_beta_mu), "eps_beta_pi": np.asarray(hp.eps_beta_pi),
            "eps_gamma_mu": np.asarray(hp.eps_gamma_mu), "eps_gamma_pi": np.asarray(hp.eps_gamma_pi),
            "eps_W": float(hp.eps_W), "eps_alpha": float(hp.eps_alpha), "eps_zeta": float(hp.eps_zeta),
            **{k: np.asarray(v, np.int64) for k, v in res.which.items()},
        },
    }
    out.uns[KEY]["V_matrix"] = res.V
    return out


def result_from_anndata(fitted) -> ZINBWaVEResult:
    """The gene-level parameters of a ``fit`` output (cell-level fields are those of its cells)."""
    from ._zinb import ZINBHparams

    if KEY not in fitted.uns or "X_zinbwave" not in fitted.obsm:
        raise ValueError("the AnnData has no ZINB-WaVE fit (uns['zinbwave'] / obsm['X_zinbwave']); run jaxfactor.zinbwave.fit first")
    u, s = fitted.uns[KEY], fitted.uns[KEY]["settings"]
    g = lambda k: np.asarray(fitted.varm[f"{KEY}_{k}"], np.float64).T
    hp = ZINBHparams(*(np.asarray(s[k], np.float64) for k in ("eps_beta_mu", "eps_beta_pi", "eps_gamma_mu", "eps_gamma_pi")),
                     np.float64(s["eps_W"]), np.float64(s["eps_alpha"]), np.float64(s["eps_zeta"]))
    n = fitted.n_obs
    W = np.asarray(fitted.obsm["X_zinbwave"], np.float64)
    V = np.asarray(u["V_matrix"], np.float64)
    zi = bool(s["zero_inflation"])
    return ZINBWaVEResult(
        W=W, alpha_mu=g("alpha_mu"), alpha_pi=g("alpha_pi"), beta_mu=g("beta_mu"), beta_pi=g("beta_pi"),
        gamma_mu=np.asarray(fitted.obsm[f"{KEY}_gamma_mu"], np.float64).T,
        gamma_pi=np.asarray(fitted.obsm[f"{KEY}_gamma_pi"], np.float64).T,
        zeta=np.log(np.asarray(fitted.var[f"{KEY}_theta"], np.float64)), X=np.ones((n, g("beta_mu").shape[0])),
        V=V, O_mu=None, O_pi=None, penalized_log_likelihood=float(u["penalized_log_likelihood"]),
        log_likelihood=float(u["log_likelihood"]), trace=np.asarray(u["trace"]), n_iter=int(u["n_iter"]),
        converged=bool(u["converged"]), hparams=hp, zero_inflation=zi, common_dispersion=bool(s["common_dispersion"]),
        **{k: tuple(int(i) for i in np.atleast_1d(s[k])) for k in _WHICH if k in s},
    )


def transform(fitted, adata_new, *, layer: str | None = None, X=None, O_mu=None, O_pi=None, batch_size: int = 1024,
              max_iter: int = 100, tol: float = 1e-8) -> np.ndarray:
    """W (n_new × K) for the cells of ``adata_new`` with the gene parameters of ``fitted`` (a
    ``fit`` output) fixed: the cell-wise block alone, compiled once per ``batch_size``.

    ``adata_new`` must contain every gene of the fit (they are taken in the fit's order). The
    cell design is rebuilt from the same obs columns (with the fit's categories) unless the fit
    used a matrix, in which case pass ``X``.
    """
    res = result_from_anndata(fitted)
    missing = fitted.var_names.difference(adata_new.var_names)
    if len(missing):
        raise ValueError(f"adata_new lacks {len(missing)} genes of the fit (e.g. {missing[0]!r}); it needs all of them")
    new = adata_new[:, fitted.var_names]
    Y = check_counts(anndata_matrix(new, layer, "adata_new"), "counts")
    s = fitted.uns[KEY]
    if X is None:
        if bool(s["settings"]["X_is_matrix"]):
            raise ValueError("the fit used a cell design matrix; pass X for the new cells")
        cols = list(s["X_columns"])
        X = design_matrix(new.obs, cols, levels={k: list(v) for k, v in dict(s["X_levels"]).items()})[0] if cols else None
    return transform_counts(res, Y, X, O_mu=O_mu, O_pi=O_pi, batch_size=batch_size, max_iter=max_iter, tol=tol)[0]
