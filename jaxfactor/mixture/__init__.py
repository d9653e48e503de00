"""EM as alternating maximisation: Gaussian mixtures, binomial mixtures of allele counts, the
allele-count model with allelic dropout (exact MAP-EM), PPCA.

Every model can split the cells (rows) of one large fit over a cell mesh (``mesh=jaxfactor.cell_mesh()``;
the data then goes through ``cell_data``).
"""

from ._allele_em import (
    AlleleCounts, AlleleEMHparams, AlleleEMParams, allele_counts, allele_em, allele_em_evidence, allele_em_hparams, allele_em_loglik,
    allele_em_model, allele_em_posterior, allele_em_stats,
)
from ._binomial import (
    BinomialData, BinomialEMParams, BinomialMixtureHparams, BinomialMixtureResult, BinomialVBState, binomial_data,
    binomial_log_likelihood, binomial_log_posterior, binomial_mixture_em, binomial_mixture_em_model, binomial_mixture_vb,
    fit_binomial_mixture, fit_binomial_mixture_anndata,
)
from .._cells import CellData, cell_data
from ._em import EMModel, em_algorithm
from .._kmeans import kmeans_plusplus
from ._gmm import (
    GMMCollapseWarning, GMMHparams, GMMParams, GMMResult, GMMStats, estimate_log_gaussian_prob, fit_gmm, gmm, gmm_em,
    posterior,
)
from ._ppca import (
    PPCAClosedForm, PPCAHparams, PPCAMoments, PPCAParams, PPCAResult, fit_ppca, ppca, ppca_closed_form, ppca_data,
    ppca_em, ppca_moments,
)
from ._select import (
    COVARIANCE_TYPES, Selection, aic, bic, binomial_mixture_n_parameters, gmm_n_parameters, heldout_split,
    ppca_n_parameters, select_k,
)
from ._ppca_select import select_ppca_components

__all__ = [
    "AlleleCounts", "AlleleEMHparams", "AlleleEMParams", "allele_counts", "allele_em", "allele_em_hparams",
    "allele_em_evidence", "allele_em_loglik", "allele_em_model", "allele_em_posterior", "allele_em_stats",
    "BinomialData", "BinomialEMParams", "BinomialMixtureHparams", "BinomialMixtureResult", "BinomialVBState",
    "binomial_data", "binomial_log_likelihood", "binomial_log_posterior", "binomial_mixture_em",
    "binomial_mixture_em_model", "binomial_mixture_vb", "fit_binomial_mixture", "fit_binomial_mixture_anndata",
    "GMMCollapseWarning", "GMMHparams", "GMMParams", "GMMResult", "GMMStats", "estimate_log_gaussian_prob", "fit_gmm",
    "gmm", "gmm_em", "kmeans_plusplus", "posterior",
    "CellData", "cell_data", "COVARIANCE_TYPES", "EMModel", "PPCAClosedForm", "PPCAHparams", "PPCAMoments", "PPCAParams", "PPCAResult", "Selection",
    "aic", "bic", "binomial_mixture_n_parameters", "em_algorithm", "fit_ppca", "gmm_n_parameters", "heldout_split",
    "ppca", "ppca_closed_form", "ppca_data", "ppca_em", "ppca_moments", "ppca_n_parameters", "select_k",
    "select_ppca_components",
]
