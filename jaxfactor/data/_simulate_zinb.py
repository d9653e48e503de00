"""Simulator for ZINB-WaVE (Risso et al., Nat. Commun. 9:284, 2018) with known parameters."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validate import check_nonnegative_float, check_positive_int


class ZINBSimulation(NamedTuple):
    """Counts drawn from the ZINB-WaVE model with an intercept in X and in V, and the truth.

    Parameters follow zinbwave's layout (β: M × J, γ: L × n, W: n × K, α: K × J, ζ = log θ: J);
    ``mu`` and ``pi`` are the (n, J) means and zero-inflation probabilities. ``labels`` are the
    clusters the rows of W were drawn around.
    """

    X: np.ndarray  # (n_cells, n_genes) counts (float64 integers)
    W: np.ndarray
    alpha_mu: np.ndarray
    alpha_pi: np.ndarray
    beta_mu: np.ndarray
    beta_pi: np.ndarray
    gamma_mu: np.ndarray
    gamma_pi: np.ndarray
    zeta: np.ndarray
    mu: np.ndarray
    pi: np.ndarray
    labels: np.ndarray


def simulate_zinb(
    n_cells: int = 1000,
    n_genes: int = 500,
    n_components: int = 2,
    *,
    n_clusters: int = 3,
    cluster_sep: float = 3.0,
    mean_log_mu: float = 1.5,
    sd_log_mu: float = 1.0,
    loading_sd: float = 0.5,
    mean_logit_pi: float = -1.5,
    sd_logit_pi: float = 0.5,
    library_sd: float = 0.2,
    theta: float = 5.0,
    theta_sd: float = 0.5,
    zero_inflation: bool = True,
    seed: int = 0,
) -> ZINBSimulation:
    """Counts ``Y_ij ~ ZINB(μ_ij, θ_j, π_ij)`` from the ZINB-WaVE model.

    - W (n × K): rows drawn around ``n_clusters`` centres ``~ N(0, cluster_sep²)`` with unit
      noise, so W carries cell types (``labels``);
    - α_μ, α_π (K × J): ``N(0, loading_sd²/K)``, so the spread of W α does not grow with K;
    - gene intercepts β_μ ``~ N(mean_log_mu, sd_log_mu²)``, β_π ``~ N(mean_logit_pi, sd_logit_pi²)``;
    - cell intercepts (library size and cell-level zero inflation) γ_μ, γ_π ``~ N(0, library_sd²)``;
    - dispersion ``log θ_j ~ N(log theta, theta_sd²)`` (``theta_sd = 0``: common θ);
    - ``zero_inflation=False``: π = 0 (negative binomial counts).
    """
    n = check_positive_int(n_cells, "n_cells")
    J = check_positive_int(n_genes, "n_genes")
    K = check_positive_int(n_components, "n_components", minimum=0)
    C = check_positive_int(n_clusters, "n_clusters")
    for name, v in (("cluster_sep", cluster_sep), ("sd_log_mu", sd_log_mu), ("loading_sd", loading_sd),
                    ("sd_logit_pi", sd_logit_pi), ("library_sd", library_sd), ("theta_sd", theta_sd)):
        check_nonnegative_float(v, name)
    if not (np.isfinite(theta) and theta > 0):
        raise ValueError(f"theta must be a positive number, got {theta!r}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    centres = cluster_sep * rng.standard_normal((C, K))
    W = centres[labels] + rng.standard_normal((n, K))
    scale = loading_sd / np.sqrt(max(K, 1))
    alpha_mu = scale * rng.standard_normal((K, J))
    alpha_pi = scale * rng.standard_normal((K, J))
    beta_mu = mean_log_mu + sd_log_mu * rng.standard_normal((1, J))
    beta_pi = mean_logit_pi + sd_logit_pi * rng.standard_normal((1, J))
    gamma_mu = library_sd * rng.standard_normal((1, n))
    gamma_pi = library_sd * rng.standard_normal((1, n))
    zeta = np.log(theta) + theta_sd * rng.standard_normal(J)
    log_mu = beta_mu + gamma_mu.T + W @ alpha_mu
    logit_pi = beta_pi + gamma_pi.T + W @ alpha_pi
    mu = np.exp(log_mu)
    th = np.exp(zeta)[None, :]
    counts = rng.poisson(rng.gamma(th, mu / th)).astype(np.float64)
    if zero_inflation:
        pi = 1.0 / (1.0 + np.exp(-logit_pi))
        counts[rng.random((n, J)) < pi] = 0.0
    else:
        pi = np.zeros((n, J))
        beta_pi, gamma_pi, alpha_pi = np.zeros_like(beta_pi), np.zeros_like(gamma_pi), np.zeros_like(alpha_pi)
    return ZINBSimulation(counts, W, alpha_mu, alpha_pi, beta_mu, beta_pi, gamma_mu, gamma_pi, zeta, mu, pi, labels)
