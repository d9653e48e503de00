"""Probabilistic PCA by EM against the closed-form maximum-likelihood solution (Tipping & Bishop
1999, eqs. 7–8), a dense Gaussian log-density, monotonicity, recovery and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxfactor as jf
from jaxfactor.data._simulate_ppca import simulate_ppca
from jaxfactor.mixture._ppca import (
    PPCAHparams, PPCAMoments, PPCAParams, fit_ppca, ppca, ppca_closed_form, ppca_data, ppca_em, ppca_moments,
)


def projector(W):
    return W @ np.linalg.solve(W.T @ W, W.T)


def ml_loglik(X, q):
    """Mean log-likelihood at the maximum, from the eigenvalues λ of S (Tipping & Bishop eq. 4 at
    eqs. 7–8): −½ [d log 2π + Σ_{j≤q} log λ_j + (d − q) log σ² + d]."""
    n, d = X.shape
    lam = np.zeros(d)
    lam[: min(n, d)] = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2 / n
    s2 = lam[q:].mean()
    return -0.5 * (d * np.log(2 * np.pi) + np.sum(np.log(lam[:q])) + (d - q) * np.log(s2) + d)


def dense_loglik(X, W, s2, mu):
    C = W @ W.T + s2 * np.eye(W.shape[0])
    return multivariate_normal(mu, C).logpdf(X)


# (n, d, q): n > d runs on the sample covariance, n < d on centred X
SHAPES = [(200, 10, 3), (15, 30, 3)]


@pytest.fixture(scope="module", params=SHAPES, ids=["moments", "data"])
def sim(request):
    n, d, q = request.param
    return simulate_ppca(n, d, q, noise_var=0.1, seed=1)


def test_data_form_follows_shape(sim):
    with jax.enable_x64(True):
        data = ppca_data(sim.X)
    n, d = sim.X.shape
    assert isinstance(data, PPCAMoments) == (n > d)


@pytest.fixture(scope="module")
def fitted(sim):
    """EM run to a tight tolerance in float64 (one compilation per data form)."""
    with jax.enable_x64(True):
        return fit_ppca(sim.X, sim.W.shape[1], max_iter=5000, tol=1e-13)


def test_em_reaches_closed_form_ml(sim, fitted):
    q = sim.W.shape[1]
    cf = ppca_closed_form(sim.X, q)
    res = fitted
    assert res.converged and res.components.dtype == np.float64
    # same principal subspace (observed ~1e-14)
    np.testing.assert_allclose(projector(res.components), projector(cf.W), atol=1e-4)
    # W is unique up to rotation: WWᵀ matches. The column scales converge more slowly than the
    # subspace (a linear rate set by σ²/λ_q); at tol=1e-13 observed ~1e-6 relative.
    C, C_ml = res.components @ res.components.T, cf.W @ cf.W.T
    assert np.linalg.norm(C - C_ml) / np.linalg.norm(C_ml) < 1e-4
    assert abs(res.noise_variance / cf.noise_var - 1) < 1e-5  # observed ~1e-9
    np.testing.assert_allclose(res.mean, sim.X.mean(0), rtol=1e-12, atol=1e-12)
    # log-likelihood equals the closed-form maximum (observed ~1e-13 relative)
    assert res.log_likelihood == pytest.approx(ml_loglik(sim.X, q), rel=1e-9)
    assert res.score(sim.X) == pytest.approx(ml_loglik(sim.X, q), rel=1e-9)


def test_closed_form_is_the_maximum(sim):
    """Eqs. 7–8 against the dense Gaussian density; perturbing σ² or W only lowers it."""
    q = sim.W.shape[1]
    cf = ppca_closed_form(sim.X, q)
    W_ml, s2_ml, mean = cf  # unpacks like the paper's (W_ML, σ²_ML, μ)
    assert W_ml.shape == (sim.X.shape[1], q) and np.allclose(mean, sim.X.mean(0))
    np.testing.assert_allclose(W_ml.T @ W_ml, np.diag(np.diag(W_ml.T @ W_ml)), atol=1e-10)  # R = I: orthogonal columns
    ll = dense_loglik(sim.X, cf.W, cf.noise_var, cf.mean).mean()
    assert ml_loglik(sim.X, q) == pytest.approx(ll, rel=1e-10)
    rng = np.random.default_rng(0)
    for s2, W in [(cf.noise_var * 1.01, cf.W), (cf.noise_var * 0.99, cf.W), (cf.noise_var, cf.W + 1e-2 * rng.standard_normal(cf.W.shape))]:
        assert dense_loglik(sim.X, W, s2, cf.mean).mean() < ll


def test_float32_default_close_to_closed_form():
    sim = simulate_ppca(200, 10, 3, noise_var=0.1, seed=1)
    cf = ppca_closed_form(sim.X, 3)
    res = fit_ppca(sim.X.astype(np.float32), 3, max_iter=3000, tol=1e-7)
    assert res.components.dtype == np.float32 and res.converged
    np.testing.assert_allclose(projector(res.components.astype(np.float64)), projector(cf.W), atol=1e-4)
    assert abs(res.noise_variance / cf.noise_var - 1) < 1e-3  # float32: observed ~1e-5
    # float32 sums over 2000 entries: ~1e-5 with vectorised reductions, 2.3e-5 summed in order
    assert res.log_likelihood == pytest.approx(ml_loglik(sim.X, 3), rel=1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=["moments", "data"])
def test_log_likelihood_matches_dense_gaussian(shape):
    """The Woodbury / determinant-lemma evaluation equals the d × d density, for any μ."""
    n, d, q = shape
    sim = simulate_ppca(n, d, q, seed=2)
    rng = np.random.default_rng(3)
    W, s2, mu = rng.standard_normal((d, q)), 0.37, sim.X.mean(0) + 0.3 * rng.standard_normal(d)
    expected = dense_loglik(sim.X, W, s2, mu).sum()
    with jax.enable_x64(True):
        params = PPCAParams(jnp.asarray(W), jnp.asarray(s2), jnp.asarray(mu))
        for data in (jnp.asarray(sim.X), ppca_moments(jnp.asarray(sim.X))):
            got = float(jax.jit(ppca_em(q).log_likelihood)(params, data, PPCAHparams()))
            assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=["moments", "data"])
def test_log_likelihood_never_decreases(shape):
    n, d, q = shape
    sim = simulate_ppca(n, d, q, noise_var=0.1, seed=4)
    with jax.enable_x64(True):
        res = fit_ppca(sim.X, q, max_iter=400, tol=0, chunk_size=1, seed=7)
    assert res.trace.shape == (401,)
    d_ll = np.diff(res.trace)
    assert np.all(d_ll >= -1e-12 * np.abs(res.trace[:-1])), d_ll.min()  # float64 rounding only
    assert res.trace[-1] > res.trace[0]


def test_monotone_from_random_states():
    """Property test: any data, any start (μ ≠ x̄ included), both data forms, float64."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    alg = ppca(2)

    @settings(max_examples=15, deadline=None, derandomize=True)
    @given(seed=st.integers(0, 2**31 - 1), raw=st.booleans(), scale=st.floats(0.01, 100.0), s2=st.floats(1e-3, 10.0))
    def check(seed, raw, scale, s2):
        rng = np.random.default_rng(seed)
        X = scale * rng.standard_normal((9, 6)) @ rng.standard_normal((6, 6))
        with jax.enable_x64(True):
            data = jnp.asarray(X) if raw else ppca_moments(jnp.asarray(X))
            state0 = PPCAParams(jnp.asarray(scale * rng.standard_normal((6, 2))), jnp.asarray(s2 * scale**2),
                                jnp.asarray(scale * rng.standard_normal(6)))
            res = jf.fit(alg, data, PPCAHparams(), jax.random.PRNGKey(0), max_iter=25, tol=0, chunk_size=1, state0=state0)
        trace = np.asarray(res.trace)  # −log-likelihood
        assert np.all(np.isfinite(trace))
        assert np.all(np.diff(trace) <= 1e-10 * np.abs(trace[:-1])), np.diff(trace).max()

    check()


def test_transform_and_score_formulas(sim, fitted):
    q = sim.W.shape[1]
    res = fitted
    W, s2, mu = res.components, res.noise_variance, res.mean
    M = W.T @ W + s2 * np.eye(q)
    X_new = sim.X[:7] + 0.5
    np.testing.assert_allclose(res.transform(X_new), (np.linalg.inv(M) @ W.T @ (X_new - mu).T).T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.score_samples(X_new), dense_loglik(X_new, W, s2, mu), rtol=1e-10)
    assert res.score(sim.X) == pytest.approx(res.log_likelihood, rel=1e-9)
    with pytest.raises(ValueError, match="features but the model was fitted on"):
        res.transform(sim.X[:, :-1])


def test_recovers_simulated_model():
    sim = simulate_ppca(3000, 10, 3, noise_var=0.1, seed=5)
    # same static arguments and moment shapes as the float32 test above: one compilation
    res = fit_ppca(sim.X.astype(np.float32), 3, max_iter=3000, tol=1e-7)
    W = res.components.astype(np.float64)
    assert np.linalg.norm(projector(W) - projector(sim.W), 2) < 0.05  # sampling error ~ 1/sqrt(n)
    assert res.noise_variance == pytest.approx(0.1, rel=0.05)
    C_true = sim.W @ sim.W.T
    assert np.linalg.norm(W @ W.T - C_true) / np.linalg.norm(C_true) < 0.1
    np.testing.assert_allclose(res.mean, sim.mean, atol=0.15)
    # posterior means track the true latent coordinates up to the rotation
    Z = res.transform(sim.X)
    R, *_ = np.linalg.lstsq(Z, sim.Z, rcond=None)
    assert np.corrcoef((Z @ R).ravel(), sim.Z.ravel())[0, 1] > 0.95


def test_restarts_keep_the_best():
    sim = simulate_ppca(100, 8, 2, seed=6)
    res = fit_ppca(sim.X, 2, n_init=2, max_iter=20, tol=0, seed=1)
    assert res.restart_log_likelihoods.shape == (2,)
    assert res.log_likelihood == pytest.approx(res.restart_log_likelihoods.max(), rel=1e-6)


def test_registered_for_conformance():
    names = jf.registered()
    assert {"ppca", "ppca_data"} <= set(names)
    alg, data, hp = names["ppca"]()
    assert alg.monotone and alg is ppca(2)


BAD = [
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), {}, "NaN"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), {}, "infinite"),
    (lambda X: X[:0], {}, "empty"),
    (lambda X: X[0], {}, "2-D"),
    (lambda X: X, {"n_components": 0}, "n_components=0 is out of range"),
    (lambda X: X, {"n_components": 8}, "n_components=8 is out of range"),
    (lambda X: X, {"n_components": 9}, "n_components=9 is out of range"),
    (lambda X: X, {"n_components": 2.0}, "n_components must be an integer"),
    (lambda X: X[:3], {}, "needs at least 4"),
    (lambda X: np.ones_like(X), {}, "zero variance"),
    (lambda X: X, {"max_iter": 0}, "max_iter"),
    (lambda X: X, {"tol": -1.0}, "tol"),
    (lambda X: X, {"n_init": 0}, "n_init"),
    (lambda X: X, {"min_noise_ratio": -1e-3}, "min_noise_ratio"),
]


@pytest.mark.parametrize("transform,kwargs,message", BAD)
def test_bad_input_raises_before_compiling(transform, kwargs, message):
    from jaxfactor import _fit

    X = simulate_ppca(40, 8, 2, seed=0).X
    before = _fit._fit_jit._cache_size()
    with pytest.raises(ValueError, match=message) as info:
        fit_ppca(transform(X), **{"n_components": 2, **kwargs})
    assert "\n" not in str(info.value)
    assert _fit._fit_jit._cache_size() == before
    if not kwargs:
        with pytest.raises(ValueError, match=message):
            ppca_closed_form(transform(X), 2)


def test_rank_deficient_float32_data_names_the_cause():
    """Rank-1 float32 data: n_components = 1 fits (the noise floor holds σ² > 0); 2 is a one-line
    error that names the rank, not the scale."""
    from jaxfactor.mixture import fit_ppca

    rng = np.random.default_rng(0)
    X = np.outer(rng.normal(size=100), rng.normal(size=5)).astype(np.float32)
    res = fit_ppca(X, 1)
    assert np.isfinite(res.log_likelihood) and res.noise_variance > 0
    with pytest.raises(FloatingPointError, match="numerical rank 1 in float32, fewer directions than n_components=2"):
        fit_ppca(X, 2)
