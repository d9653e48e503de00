"""Simulated single-cell counts with known cell types, from a zero-inflated negative binomial.

The generative model mirrors the one the VAE fits (Lopez et al., Nat. Methods 2018), so the
truth is known at every level:

1. cell type ``c_i`` uniform over ``n_types`` (every type gets at least one cell);
2. latent ``z_i = centre[c_i] + within_sd * N(0, I)`` in ``n_latent`` dimensions, type centres
   ``N(0, separation^2 I)``;
3. a random decoder: ``h_i = tanh(z_i A)`` (``A``: n_latent x 2 n_latent), gene proportions
   ``rho_i = softmax(h_i W + b)`` with ``W ~ N(0, 1)``, baseline log expression ``b ~ N(0, 1)``;
4. library size ``l_i ~ LogNormal(log mean_library, library_sd)``; mean ``mu_ig = l_i rho_ig``;
5. ``x_ig ~ NB(mu_ig, theta_g)`` as a gamma-Poisson mixture, gene-wise inverse dispersion
   ``theta_g ~ LogNormal(log dispersion, 0.5)``, then set to 0 with the gene's zero-inflation
   probability ``pi_g ~ Uniform(0, 2 zero_inflation)`` (mean ``zero_inflation``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validate import check_nonnegative_float, check_positive_int


class CountSimulation(NamedTuple):
    """Counts and the truth behind them; ``X`` is an alias of ``counts`` (the runner's name)."""

    counts: np.ndarray  # (n_cells, n_genes) int64
    labels: np.ndarray  # (n_cells,) int64 cell type
    latent: np.ndarray  # (n_cells, n_latent) float64 true z
    mean: np.ndarray  # (n_cells, n_genes) float64 NB mean l_i rho_ig (before zero inflation)
    library: np.ndarray  # (n_cells,) float64 l_i
    dispersion: np.ndarray  # (n_genes,) float64 theta_g
    zero_inflation: np.ndarray  # (n_genes,) float64 pi_g

    @property
    def X(self) -> np.ndarray:
        return self.counts

    def to_anndata(self):
        """AnnData with the counts in ``X`` and ``layers['counts']`` (CSR, float32), ``obs['cell_type']``
        (categorical 'type_<k>'), the true latent in ``obsm['X_true_latent']``."""
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        n, g = self.counts.shape
        X = sp.csr_matrix(self.counts.astype(np.float32))
        obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{k}" for k in self.labels])},
                           index=pd.Index([f"cell_{i}" for i in range(n)]))
        var = pd.DataFrame({"dispersion": self.dispersion, "zero_inflation": self.zero_inflation},
                           index=pd.Index([f"gene_{j}" for j in range(g)]))
        adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": X.copy()})
        adata.obsm["X_true_latent"] = self.latent.astype(np.float32)
        return adata


def simulate_counts(
    n_cells: int = 2000,
    n_genes: int = 500,
    n_types: int = 5,
    n_latent: int = 5,
    *,
    separation: float = 2.0,
    within_sd: float = 0.5,
    mean_library: float = 2000.0,
    library_sd: float = 0.3,
    dispersion: float = 2.0,
    zero_inflation: float = 0.1,
    seed: int = 0,
) -> CountSimulation:
    """Draw ``n_cells`` x ``n_genes`` ZINB counts from ``n_types`` cell types (see the module
    docstring for the model). ``dispersion`` is the typical inverse dispersion ``theta`` (larger:
    closer to Poisson); ``zero_inflation`` the mean probability of a structural zero."""
    n = check_positive_int(n_cells, "n_cells")
    g = check_positive_int(n_genes, "n_genes")
    k = check_positive_int(n_types, "n_types")
    d = check_positive_int(n_latent, "n_latent")
    if k > n:
        raise ValueError(f"n_types={k} exceeds n_cells={n}; choose n_types <= n_cells")
    separation = check_nonnegative_float(separation, "separation")
    within_sd = check_nonnegative_float(within_sd, "within_sd")
    library_sd = check_nonnegative_float(library_sd, "library_sd")
    if not 0 <= zero_inflation < 0.5:
        raise ValueError(f"zero_inflation must be in [0, 0.5), got {zero_inflation!r}")
    for name, value in (("mean_library", mean_library), ("dispersion", dispersion)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    rng = np.random.default_rng(seed)

    labels = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    rng.shuffle(labels)
    centres = separation * rng.standard_normal((k, d))
    latent = centres[labels] + within_sd * rng.standard_normal((n, d))
    A = rng.standard_normal((d, 2 * d)) / np.sqrt(d)
    W = rng.standard_normal((2 * d, g))
    b = rng.standard_normal(g)
    eta = np.tanh(latent @ A) @ W + b
    rho = np.exp(eta - eta.max(axis=1, keepdims=True))
    rho /= rho.sum(axis=1, keepdims=True)
    library = np.exp(np.log(mean_library) + library_sd * rng.standard_normal(n))
    mean = library[:, None] * rho
    theta = np.exp(np.log(dispersion) + 0.5 * rng.standard_normal(g))
    pi = rng.uniform(0.0, 2.0 * zero_inflation, size=g)
    rate = rng.gamma(theta[None, :], mean / theta[None, :])
    counts = rng.poisson(rate)
    counts[rng.random((n, g)) < pi[None, :]] = 0
    return CountSimulation(counts.astype(np.int64), labels.astype(np.int64), latent, mean, library, theta, pi)
