"""Gaussian mixtures against scikit-learn from the same initial parameters, invariants, bad input."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from jaxfactor.cclone import adjusted_rand_index
from jaxfactor.data._simulate_gmm import simulate_gmm
from jaxfactor.mixture._gmm import GMMCollapseWarning, GMMHparams, fit_gmm, gmm

TYPES = ["full", "tied", "diag", "spherical"]


def rel(a, b):
    return abs(a - b) / abs(b)


def initial_params(X, cov_type, seed=0):
    """Our random_from_data init, as scikit-learn's (weights_init, means_init, precisions_init)."""
    with jax.enable_x64(True):
        p = jax.jit(gmm(3, cov_type, "random_from_data").init)(jax.random.PRNGKey(seed), X, GMMHparams())
        U = np.asarray(p.precisions_cholesky)
    P = U @ np.swapaxes(U, -1, -2) if cov_type in ("full", "tied") else U * U
    return np.asarray(p.weights), np.asarray(p.means), P


@pytest.fixture(scope="module")
def fits():
    """For every covariance type: data, scikit-learn and jaxfactor after 100 EM steps from one init."""
    out = {}
    for t in TYPES:
        X = simulate_gmm(300, 3, 3, separation=2.0, covariance_type=t, seed=1).X
        w, m, P = initial_params(X, t)
        sk = GaussianMixture(3, covariance_type=t, weights_init=w, means_init=m, precisions_init=P, max_iter=100, tol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(X)
        with jax.enable_x64(True):
            ours = fit_gmm(X, 3, covariance_type=t, weights_init=w, means_init=m, precisions_init=P, max_iter=100, tol=0,
                           chunk_size=1)
        out[t] = X, sk, ours
    return out


@pytest.mark.parametrize("cov_type", TYPES)
def test_matches_sklearn_from_same_init(fits, cov_type):
    X, sk, ours = fits[cov_type]
    assert sk.n_iter_ == 100 and ours.n_iter == 100
    assert ours.means.dtype == np.float64
    assert rel(ours.log_likelihood, sk.score(X)) < 1e-5  # the tolerance (float64); observed ~1e-16
    np.testing.assert_allclose(ours.means, sk.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.covariances, sk.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.weights, sk.weights_, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("cov_type", TYPES)
def test_predictions_match_sklearn(fits, cov_type):
    X, sk, ours = fits[cov_type]
    Xnew = simulate_gmm(257, 3, 3, separation=2.0, covariance_type=cov_type, seed=9).X
    with jax.enable_x64(True):
        assert np.mean(ours.predict(Xnew) == sk.predict(Xnew)) > 0.99  # ties at boundaries only
        np.testing.assert_allclose(ours.score_samples(Xnew), sk.score_samples(Xnew), rtol=1e-8)
        np.testing.assert_allclose(ours.predict_proba(Xnew), sk.predict_proba(Xnew), atol=1e-8)
        assert ours.score(Xnew) == pytest.approx(sk.score(Xnew), rel=1e-10)


@pytest.mark.parametrize("cov_type", TYPES)
def test_log_likelihood_never_decreases(fits, cov_type):
    res = fits[cov_type][2]  # chunk_size=1: the log-likelihood after every EM step
    d = np.diff(res.trace)
    assert res.trace.shape == (101,)
    assert np.all(d >= -1e-12 * np.abs(res.trace[:-1])), d.min()  # EM: monotone up to float64 rounding


def test_log_likelihood_never_decreases_overlapping_clusters():
    X = simulate_gmm(200, 3, 4, separation=1.0, seed=4).X
    with jax.enable_x64(True):
        res = fit_gmm(X, 4, max_iter=60, tol=0, chunk_size=1, init="random_from_data", seed=2)
    d = np.diff(res.trace)
    assert np.all(d >= -1e-12 * np.abs(res.trace[:-1])), d.min()


def test_recovers_simulated_clusters():
    sim = simulate_gmm(600, 2, 3, separation=5.0, seed=3)
    res = fit_gmm(sim.X, 3, n_init=3, seed=1)
    assert adjusted_rand_index(res.predict(sim.X), sim.labels) > 0.95
    assert res.converged and np.all(np.isfinite(res.covariances))


def test_n_init_keeps_the_best():
    X = simulate_gmm(300, 2, 5, separation=2.0, seed=5).X
    res = fit_gmm(X, 5, n_init=4, init="random_from_data", max_iter=30, tol=0, seed=5)
    assert res.restart_log_likelihoods.shape == (4,)
    assert res.log_likelihood == pytest.approx(res.restart_log_likelihoods.max(), rel=1e-6)


def test_predict_does_not_recompile_for_new_sizes():
    from jaxfactor.mixture import _gmm

    X = simulate_gmm(300, 2, 3, seed=6).X
    res = fit_gmm(X, 3, batch_size=64)
    res.predict(X[:100])  # 2 batches of 64
    before = _gmm._posterior_jit._cache_size()
    for n in (65, 200, 300):
        assert res.predict_proba(X[:n]).shape == (n, 3)
    assert _gmm._posterior_jit._cache_size() == before


def test_no_retrace_for_new_data_of_same_shape():
    from jaxfactor import _fit

    X = simulate_gmm(300, 2, 3, seed=6).X
    fit_gmm(X, 3, max_iter=20)
    before = _fit._fit_jit._cache_size()
    fit_gmm(X * 2.0 + 1.0, 3, max_iter=20, reg_covar=1e-3, seed=4)
    assert _fit._fit_jit._cache_size() == before


def test_empty_component_stays_finite():
    """A component started far from every sample gets no responsibility: finite, reported."""
    X = simulate_gmm(200, 2, 2, separation=4.0, seed=7).X
    means = np.array([X[0], X[1], [1e3, 1e3]])
    with jax.enable_x64(True), pytest.warns(GMMCollapseWarning, match=r"components \[2\] collapsed"):
        res = fit_gmm(X, 3, means_init=means, max_iter=30, tol=0)
    assert list(res.collapsed) == [2]
    for a in (res.weights, res.means, res.covariances, res.precisions_cholesky, res.trace):
        assert np.all(np.isfinite(a))
    assert res.weights[2] < 1e-12
    np.testing.assert_allclose(res.covariances[2], 1e-6 * np.eye(2), rtol=1e-6)  # reg_covar · I
    assert np.all(np.isfinite(res.predict_proba(X)))


@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_singular_component_without_reg_covar_keeps_previous_covariance(cov_type):
    """reg_covar=0 and a component owning one isolated sample: its covariance would be 0."""
    X = np.concatenate([simulate_gmm(100, 2, 1, seed=8).X, [[50.0, 50.0]]])
    P = np.stack([np.eye(2)] * 2) if cov_type == "full" else np.ones((2, 2))
    with jax.enable_x64(True):
        res = fit_gmm(X, 2, covariance_type=cov_type, weights_init=[0.99, 0.01], means_init=[X[:100].mean(0), [50.0, 50.0]],
                      precisions_init=P, reg_covar=0.0, max_iter=10, tol=0)
    for a in (res.weights, res.means, res.covariances, res.precisions_cholesky, res.trace):
        assert np.all(np.isfinite(a))
    assert res.predict(X)[-1] == 1 and np.all(res.predict(X)[:-1] == 0)
    assert np.all(np.diff(res.trace) >= -1e-12 * np.abs(res.trace[:-1]))
    if cov_type == "full":  # the numerically singular update was refused: the previous value is kept
        np.testing.assert_allclose(res.covariances[1], P[1])
    else:  # E[x²] − μ² = 2500 · 10ε / (1 + 10ε): tiny but above rounding, so accepted (finite, as scikit-learn)
        assert np.all(res.covariances[1] > 0)


def test_simulator_shapes():
    for t, shape in [("full", (3, 4, 4)), ("tied", (4, 4)), ("diag", (3, 4)), ("spherical", (3,))]:
        X, labels, means, cov = simulate_gmm(50, 4, 3, covariance_type=t, seed=0)
        assert X.shape == (50, 4) and labels.shape == (50,) and means.shape == (3, 4) and cov.shape == shape
        assert set(labels) == {0, 1, 2}


X_BAD = simulate_gmm(40, 2, 2, seed=0).X
BAD = [
    (np.where(np.arange(80).reshape(40, 2) == 3, np.nan, X_BAD), {}, "NaN"),
    (np.where(np.arange(80).reshape(40, 2) == 3, np.inf, X_BAD), {}, "infinite"),
    (X_BAD[0], {}, "2-D"),
    (X_BAD[:0], {}, "empty"),
    (X_BAD, {"n_components": 41}, "n_components=41 is out of range for 40 samples"),
    (X_BAD, {"n_components": 0}, "n_components=0 is out of range"),
    (X_BAD, {"covariance_type": "banded"}, "unknown covariance_type"),
    (X_BAD, {"init": "kmeans"}, "unknown init"),
    (X_BAD, {"reg_covar": -1.0}, "reg_covar"),
    (X_BAD, {"max_iter": 0}, "max_iter"),
    (X_BAD, {"tol": -1.0}, "tol"),
    (X_BAD, {"n_init": 0}, "n_init"),
    (X_BAD, {"means_init": np.zeros((3, 2))}, r"means_init has shape \(3, 2\); expected \(2, 2\)"),
    (X_BAD, {"weights_init": [0.5, 0.6]}, "sum to 1"),
    (X_BAD, {"weights_init": [0.5, 0.5, 0.0]}, "weights_init has shape"),
    (X_BAD, {"precisions_init": np.ones((2, 2))}, "precisions_init has shape"),
    (X_BAD, {"precisions_init": np.stack([np.eye(2), -np.eye(2)])}, "not positive definite"),
    (X_BAD, {"precisions_init": np.ones((2, 2)), "covariance_type": "diag", "means_init": [[0, 0], [np.nan, 0]]}, "means_init has NaN"),
    (X_BAD, {"weights_init": [0.5, 0.5], "means_init": np.zeros((2, 2)), "precisions_init": np.stack([np.eye(2)] * 2), "n_init": 2}, "n_init > 1"),
]


@pytest.mark.parametrize("X,kwargs,message", BAD)
def test_bad_input_raises_before_compiling(X, kwargs, message):
    from jaxfactor import _fit

    before = _fit._fit_jit._cache_size()
    args = {"n_components": 2, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        fit_gmm(X, **args)
    assert "\n" not in str(info.value)
    assert _fit._fit_jit._cache_size() == before


def test_negative_data_is_fine():
    X = simulate_gmm(100, 2, 2, separation=5.0, seed=2).X - 100.0
    res = fit_gmm(X, 2)
    assert np.all(np.isfinite(res.means)) and res.means.min() < -90


def test_row_sharded_em_equals_single_device():
    """gmm(..., mesh=...) splits the rows over devices (shard_map + psum): same fit."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        jax.config.update("jax_enable_x64", True)
        import jaxfactor as jf
        from jaxfactor.data._simulate_gmm import simulate_gmm
        from jaxfactor.mixture._gmm import GMMHparams, gmm
        X = jnp.asarray(simulate_gmm(3000, 3, 3, seed=0).X)
        mesh = jf.cell_mesh()
        key = jax.random.PRNGKey(0)
        p0 = jax.jit(gmm(3).init)(key, X, GMMHparams())
        one = jf.fit(gmm(3, block_size=256), X, GMMHparams(), key, max_iter=20, tol=0, state0=p0)
        two = jf.fit(gmm(3, block_size=256, mesh=mesh), jax.device_put(X, NamedSharding(mesh, P("cells"))), GMMHparams(), key,
                     max_iter=20, tol=0, state0=jax.device_put(p0, NamedSharding(mesh, P())))
        np.testing.assert_allclose(np.asarray(two.trace), np.asarray(one.trace), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(two.state.means), np.asarray(one.state.means), rtol=1e-10)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_more_restarts_are_never_worse():
    """Restart i of ``n_init = r`` is the single fit with seed + i (documented, as scikit-learn's
    seeded sequence), so r restarts give the best of those r single fits."""
    from jaxfactor.data import simulate_gmm
    from jaxfactor.mixture import fit_gmm

    X = simulate_gmm(300, 2, 5, seed=3).X
    singles = [fit_gmm(X, 5, n_init=1, seed=7 + i, max_iter=60).log_likelihood for i in range(4)]
    best = fit_gmm(X, 5, n_init=4, seed=7, max_iter=60).log_likelihood
    np.testing.assert_allclose(best, max(singles), rtol=1e-5)


def test_sample_and_fit_predict():
    """scikit-learn's ``sample`` (counts ~ Multinomial(n, weights), then each component's Gaussian)
    and ``fit_predict`` (the fitted cells' labels)."""
    import jaxfactor
    from jaxfactor.data import simulate_gmm
    from jaxfactor.mixture import fit_gmm

    X = simulate_gmm(400, 2, 3, seed=1).X
    for cov in ("full", "tied", "diag", "spherical"):
        res = fit_gmm(X, 3, covariance_type=cov, max_iter=100, seed=0)
        Y, labels = res.sample(20000, seed=0)
        assert Y.shape == (20000, 2) and labels.shape == (20000,)
        np.testing.assert_allclose(np.bincount(labels, minlength=3) / 20000, res.weights, atol=0.02)
        for c in range(3):
            np.testing.assert_allclose(Y[labels == c].mean(axis=0), res.means[c], atol=0.1)
    gmm = jaxfactor.family("gmm").model
    labels = gmm.fit_predict(X, 3, max_iter=100)
    np.testing.assert_array_equal(labels, gmm.fit(X, 3, max_iter=100).predict(X))
    with pytest.raises(ValueError, match="gives no labels"):
        jaxfactor.family("ppca").model.fit_predict(X, 1)
