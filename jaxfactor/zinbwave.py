"""ZINB-WaVE: ``jaxfactor.zinbwave.fit(adata, n_components=2, X=..., V=...)``.

Zero-inflated negative-binomial factorisation of counts into known (X, V) and unknown (W, α)
components (Risso et al., Nat. Commun. 9:284, 2018; Bioconductor ``zinbwave``). See
:mod:`jaxfactor.factorization._zinb` for the model and the fitting procedure.

- ``fit(adata, ...)``: AnnData in, AnnData out (``obsm['X_zinbwave']``, loadings, fitted μ/π,
  observational weights, the penalised log-likelihood trace).
- ``fit_counts(Y, ...)``: the same on a count matrix, returning a ``ZINBWaVEResult``.
- ``transform(fitted, adata_new)`` / ``ZINBWaVEResult.transform(Y)``: W for new cells.
- ``ZINBWaVEResult.residuals(Y)`` / ``normalized_values(Y)`` / ``imputed_counts(Y)``: zinbwave's
  ``computeDevianceResiduals``, ``normalizedValues`` and ``imputeZeros`` (also on
  ``ZINBWaVEModel``, and as layers from ``fit(..., residuals=True, ...)``).
- ``which_X_mu``, ``which_X_pi``, ``which_V_mu``, ``which_V_pi``: the covariates each side uses.
- Atlas scale: sparse counts stay sparse and the fit is streamed over blocks of cells and genes
  (``batch_size``; automatic above 5·10⁷ entries, :mod:`jaxfactor.factorization._zinb_stream`);
  ``subsample=m`` fits m cells and projects the rest (zinbsurf).
- ``simulate(...)``: counts from the model with the true parameters.
"""

from .data._simulate_zinb import ZINBSimulation, simulate_zinb as simulate
from .factorization._zinb import (
    ZINBData, ZINBHparams, ZINBState, default_hparams, orthogonalize, penalized_log_likelihood, predictors,
)
from .factorization._zinb_alg import zinbwave_algorithm
from .factorization._zinb_api import design_matrix, fit, result_from_anndata, transform
from .factorization._zinb_fit import ZINBWaVEResult, fit_zinbwave as fit_counts, observational_weights
from .factorization._zinb_lik import zinb_log_prob
from .factorization._zinb_model import ZINBWaVEModel, canonical_correlations

__all__ = [
    "ZINBWaVEModel", "canonical_correlations", "ZINBData", "ZINBHparams", "ZINBSimulation", "ZINBState", "ZINBWaVEResult", "default_hparams", "design_matrix", "fit",
    "fit_counts", "observational_weights", "orthogonalize", "penalized_log_likelihood", "predictors",
    "result_from_anndata", "simulate", "transform", "zinb_log_prob", "zinbwave_algorithm",
]
