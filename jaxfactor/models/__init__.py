"""Probabilistic models: the NumPyro allele-count model and the Flax VAE / autoencoder for counts."""

from ._allele_api import assign_cells, check_svi_losses, fit_allele_anndata, select_n_clones
from ._allele import (
    GUIDES, LIKELIHOODS, AlleleSimulation, allele_entry_loglik, allele_loglik, allele_model, clone_responsibilities,
    simulate_alleles,
)
from ._allele_mcmc import AlleleNUTS, fit_allele_nuts
from ._allele_svi import AlleleFit, fit_allele_svi, fit_allele_svi_grid
from ._likelihoods import LIKELIHOODS as VAE_LIKELIHOODS
from ._vae_api import VAEFit, fit_vae, fit_vae_grid
from ._vae_api import load_checkpoint as load_vae
from ._vae_api import save_checkpoint as save_vae
from ._vae_infer import decode as vae_decode
from ._vae_infer import encode as vae_encode
from ._vae_infer import evaluate as vae_evaluate
from ._vae_infer import sample as vae_sample
from ._vae_modules import VAE, VAEConfig
from ._vae_train import VAEData, VAEHparams, VAEState, vae_training

__all__ = [
    "GUIDES", "LIKELIHOODS", "AlleleFit", "AlleleSimulation", "allele_entry_loglik", "allele_loglik", "allele_model",
    "clone_responsibilities", "fit_allele_svi", "fit_allele_svi_grid", "simulate_alleles", "assign_cells", "check_svi_losses",
    "fit_allele_anndata", "select_n_clones", "AlleleNUTS", "fit_allele_nuts",
    "VAE", "VAEConfig", "VAEData", "VAEFit", "VAEHparams", "VAEState", "VAE_LIKELIHOODS", "fit_vae", "fit_vae_grid", "load_vae",
    "save_vae", "vae_decode", "vae_encode", "vae_evaluate", "vae_sample", "vae_training",
]
