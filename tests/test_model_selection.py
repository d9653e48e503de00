"""Model selection helpers: the BIC formula, parameter counts against scikit-learn, choosing the
PPCA dimension on simulated data, held-out splits."""

import math

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from jaxfactor.data._simulate_ppca import simulate_ppca
from jaxfactor.mixture._select import (
    COVARIANCE_TYPES, aic, bic, binomial_mixture_n_parameters, gmm_n_parameters, heldout_split, ppca_n_parameters,
    select_k,
)
from jaxfactor.mixture._ppca_select import select_ppca_components


def test_bic_and_aic_formulas():
    assert bic(-120.5, 7, 50) == pytest.approx(241.0 + 7 * math.log(50), rel=1e-15)
    assert aic(-120.5, 7) == pytest.approx(241.0 + 14, rel=1e-15)
    assert bic(0.0, 0, 1) == 0.0
    with pytest.raises(ValueError, match="n_samples"):
        bic(-1.0, 3, 0)
    with pytest.raises(ValueError, match="n_params"):
        bic(-1.0, -1, 10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("K,d", [(1, 1), (1, 4), (3, 2), (5, 7)])
def test_gmm_counts_match_sklearn(covariance_type, K, d):
    gm = GaussianMixture(n_components=K, covariance_type=covariance_type)
    gm.means_ = np.zeros((K, d))  # _n_parameters reads only the shape of the fitted means
    assert gmm_n_parameters(K, d, covariance_type) == gm._n_parameters()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_matches_sklearn_gaussian_mixture(covariance_type):
    X = np.random.default_rng(0).standard_normal((120, 3)) + np.repeat([[0, 0, 0], [4, 4, 0]], 60, axis=0)
    gm = GaussianMixture(n_components=2, covariance_type=covariance_type, random_state=0).fit(X)
    ll_total = gm.score(X) * X.shape[0]
    assert bic(ll_total, gmm_n_parameters(2, 3, covariance_type), 120) == pytest.approx(gm.bic(X), rel=1e-12)
    assert aic(ll_total, gmm_n_parameters(2, 3, covariance_type)) == pytest.approx(gm.aic(X), rel=1e-12)


def test_other_parameter_counts():
    assert binomial_mixture_n_parameters(1, 10) == 10
    assert binomial_mixture_n_parameters(4, 25) == 3 + 100
    # d q − q(q−1)/2 + 1 + d; equal to Minka's (d q − q(q+1)/2) + q eigenvalues + σ² + mean
    for d, q in [(10, 3), (5, 1), (50, 7)]:
        assert ppca_n_parameters(d, q) == (d * q - q * (q + 1) // 2) + q + 1 + d
    assert ppca_n_parameters(10, 3) == 38
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_n_parameters(2, 3, "banded")
    with pytest.raises(ValueError, match="n_components"):
        gmm_n_parameters(0, 3)


def test_select_k_rules():
    scores = {1: 5.0, 2: 3.0, 3: 3.0, 4: float("nan"), 5: 4.0}
    assert select_k(scores, "min") == 2  # ties go to the smaller K; NaN never wins
    assert select_k(scores, "max") == 1
    assert select_k({3: -np.inf, 4: -2.0}, "max") == 4
    with pytest.raises(ValueError, match="finite"):
        select_k({1: np.nan})
    with pytest.raises(ValueError, match="rule"):
        select_k({1: 1.0}, "median")


@pytest.mark.parametrize("n,fraction", [(100, 0.1), (7, 0.3), (2, 0.01), (10, 0.99)])
def test_heldout_split_properties(n, fraction):
    train, test = heldout_split(n, fraction, seed=3)
    assert len(test) == min(max(round(fraction * n), 1), n - 1) and len(train) == n - len(test)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))  # disjoint cover
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = heldout_split(n, fraction, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)  # deterministic


def test_heldout_split_seeds_and_errors():
    a = heldout_split(1000, 0.2, seed=0)[1]
    b = heldout_split(1000, 0.2, seed=1)[1]
    assert not np.array_equal(a, b)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            heldout_split(10, bad)
    with pytest.raises(ValueError, match="n_samples"):
        heldout_split(1, 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_bic_picks_true_ppca_dimension(seed):
    sim = simulate_ppca(500, 10, 3, noise_var=0.1, seed=seed)
    sel = select_ppca_components(sim.X, range(1, 7), criterion="bic", method="closed_form")
    assert sel.k == 3 and sel.criterion == "bic"
    n = 500
    for k, r in sel.fits.items():  # scores are −2·LL + p log n of each fit
        assert sel.scores[k] == pytest.approx(-2 * n * r.log_likelihood + ppca_n_parameters(10, k) * math.log(n), rel=1e-12)


def test_bic_with_em_agrees_with_closed_form():
    sim = simulate_ppca(500, 10, 3, noise_var=0.1, seed=0)
    em = select_ppca_components(sim.X, [2, 3, 4], criterion="bic")  # fit_ppca defaults, float32
    cf = select_ppca_components(sim.X, [2, 3, 4], criterion="bic", method="closed_form")
    assert em.k == cf.k == 3
    for k in (2, 3, 4):
        assert em.scores[k] == pytest.approx(cf.scores[k], rel=1e-4)  # float32 EM vs exact ML: observed ~1e-5


@pytest.mark.parametrize("seed", range(4))
def test_heldout_likelihood_finds_the_signal(seed):
    """Held-out log-likelihood penalises complexity only weakly: past the true q it is flat,
    so assert the elbow rather than an exact pick."""
    sim = simulate_ppca(500, 10, 3, noise_var=0.1, seed=seed)
    sel = select_ppca_components(sim.X, range(1, 7), criterion="heldout", method="closed_form", fraction=0.2, seed=seed)
    s = sel.scores
    assert sel.k >= 3
    assert s[3] - s[2] > 1.0  # the third signal direction: > 1 nat per held-out sample
    assert max(s[k] for k in (4, 5, 6)) - s[3] < 0.1  # noise directions: observed < 0.06


def test_select_ppca_bad_input_before_fitting():
    from jaxfactor import _fit

    X = simulate_ppca(40, 8, 2, seed=0).X
    before = _fit._fit_jit._cache_size()
    for kwargs, msg in [
        ({"ks": [2, 8]}, "n_components=8 is out of range"),
        ({"ks": []}, "ks is empty"),
        ({"ks": [2], "criterion": "aic"}, "unknown criterion"),
        ({"ks": [2], "method": "svd"}, "unknown method"),
        ({"ks": [2], "criterion": "heldout", "fraction": 1.0}, "fraction"),
    ]:
        with pytest.raises(ValueError, match=msg):
            select_ppca_components(X, **kwargs)
    assert _fit._fit_jit._cache_size() == before
