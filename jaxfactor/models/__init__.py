"""Probabilistic models: the NumPyro allele-count model (the Flax VAE will land here too)."""

from ._allele_api import assign_cells, check_svi_losses, fit_allele_anndata, select_n_clones
from ._allele import (
    GUIDES, LIKELIHOODS, AlleleSimulation, allele_entry_loglik, allele_loglik, allele_model, clone_responsibilities,
    simulate_alleles,
)
from ._allele_mcmc import AlleleNUTS, fit_allele_nuts
from ._allele_svi import AlleleFit, fit_allele_svi

__all__ = [
    "GUIDES", "LIKELIHOODS", "AlleleFit", "AlleleSimulation", "allele_entry_loglik", "allele_loglik", "allele_model",
    "clone_responsibilities", "fit_allele_svi", "simulate_alleles", "assign_cells", "check_svi_losses",
    "fit_allele_anndata", "select_n_clones", "AlleleNUTS", "fit_allele_nuts",
]
