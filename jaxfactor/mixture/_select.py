"""Choosing the number of components K: information criteria, parameter counts, held-out splits.

The helpers take log-likelihood *numbers* (total over samples) and sizes, so they serve every
model (GMM, binomial mixture, PPCA) without importing any of them:

- ``bic(LL, p, n) = −2 LL + p log n`` (Schwarz, "Estimating the dimension of a model",
  Ann. Statist. 6(2), 1978); ``aic(LL, p) = −2 LL + 2p`` (Akaike 1974). Lower is better.
- Free-parameter counts ``p``: ``gmm_n_parameters`` (scikit-learn's
  ``GaussianMixture._n_parameters``), ``binomial_mixture_n_parameters`` and
  ``ppca_n_parameters``.
- ``heldout_split`` and ``select_k`` for choosing K by the mean log-likelihood of held-out
  samples (higher is better).
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np

from .._validate import check_choice, check_int, check_probability

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
CRITERIA = ("bic", "heldout")


def bic(log_likelihood_total: float, n_params: int, n_samples: int) -> float:
    """Bayesian information criterion ``−2 LL + p log n`` (lower is better).

    ``log_likelihood_total`` is the log-likelihood summed over the n samples (not the mean).
    """
    n_params = check_int(n_params, "n_params", 0)
    n_samples = check_int(n_samples, "n_samples", 1)
    return -2.0 * float(log_likelihood_total) + n_params * math.log(n_samples)


def aic(log_likelihood_total: float, n_params: int) -> float:
    """Akaike information criterion ``−2 LL + 2p`` (lower is better)."""
    return -2.0 * float(log_likelihood_total) + 2.0 * check_int(n_params, "n_params", 0)


def gmm_n_parameters(n_components: int, n_features: int, covariance_type: str = "full") -> int:
    """Free parameters of a K-component Gaussian mixture in d dimensions.

    ``K − 1`` weights + ``K d`` means + covariances: ``K d(d+1)/2`` (full), ``K d`` (diag),
    ``K`` (spherical) or ``d(d+1)/2`` (tied) — scikit-learn's ``GaussianMixture._n_parameters``.
    """
    K = check_int(n_components, "n_components", 1)
    d = check_int(n_features, "n_features", 1)
    check_choice(covariance_type, "covariance_type", COVARIANCE_TYPES)
    cov = {
        "full": K * d * (d + 1) // 2,
        "diag": K * d,
        "spherical": K,
        "tied": d * (d + 1) // 2,
    }[covariance_type]
    return (K - 1) + K * d + cov


def binomial_mixture_n_parameters(n_components: int, n_variants: int) -> int:
    """Free parameters of a K-component binomial mixture over V variants: ``K − 1 + K V``
    (mixing weights on the simplex, one success probability per component and variant)."""
    K = check_int(n_components, "n_components", 1)
    return (K - 1) + K * check_int(n_variants, "n_variants", 1)


def ppca_n_parameters(n_features: int, n_components: int) -> int:
    """Free parameters of probabilistic PCA: ``d q − q(q − 1)/2 + 1 + d``.

    W (d × q) is identified only up to a rotation W → WR, which removes q(q − 1)/2 degrees of
    freedom (Tipping & Bishop 1999, §2.2; Minka, "Automatic choice of dimensionality for PCA",
    NIPS 2000, counts ``d q − q(q + 1)/2`` for the orthonormal basis plus q eigenvalues); plus
    σ² and the mean μ (d).
    """
    d = check_int(n_features, "n_features", 1)
    q = check_int(n_components, "n_components", 1)
    return d * q - q * (q - 1) // 2 + 1 + d


def heldout_split(n_samples: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint (train_idx, test_idx), each sorted, covering ``range(n_samples)``.

    The test set has ``round(fraction · n_samples)`` samples, at least 1 and at most
    ``n_samples − 1``.
    """
    n = check_int(n_samples, "n_samples", 2)
    check_probability(fraction, "fraction", low_open=True, high_open=True)
    n_test = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def select_k(scores: Mapping[int, float], rule: str = "min") -> int:
    """The K with the lowest (``rule="min"``, e.g. BIC) or highest (``"max"``, e.g. held-out
    log-likelihood) score; ties go to the smallest K, non-finite scores never win."""
    check_choice(rule, "rule", ("min", "max"))
    finite = {int(k): float(v) for k, v in dict(scores).items() if np.isfinite(v)}
    if not finite:
        raise ValueError("select_k needs at least one finite score")
    sign = 1.0 if rule == "min" else -1.0
    return min(finite, key=lambda k: (sign * finite[k], k))


class Selection(NamedTuple):
    """Result of a model-selection sweep.

    Attributes:
      k: the selected number of components.
      scores: K -> score (BIC: lower is better; held-out mean log-likelihood: higher is better).
      criterion: ``"bic"`` or ``"heldout"``.
      fits: K -> fitted model (on all samples for BIC, on the training split for held-out).
    """

    k: int
    scores: dict
    criterion: str
    fits: dict
