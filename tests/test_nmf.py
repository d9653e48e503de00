"""NMF against scikit-learn from the same initial factors, invariants, inits and bad input."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _beta_divergence, _initialize_nmf

import jaxfactor as jf
from jaxfactor import nmf
from jaxfactor.data import simulate_nmf
from jaxfactor.factorization import nmf_hals


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def problem():
    sim = simulate_nmf(n_samples=60, n_features=40, n_components=4, noise=0.1, seed=3)
    rng = np.random.default_rng(0)
    X = sim.X.astype(np.float64)
    return X, rng.random((60, 4)) + 0.1, rng.random((4, 40)) + 0.1


@pytest.mark.parametrize("beta,method", [("frobenius", "mu"), ("kullback-leibler", "kl")])
def test_matches_sklearn_mu_from_same_init(problem, beta, method):
    X, W0, H0 = problem
    sk = NMF(4, solver="mu", beta_loss=beta, init="custom", tol=0, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(X, W=W0.copy(), H=H0.copy())
    obj_sk = _beta_divergence(X, W_sk, sk.components_, beta)  # ½‖X−WH‖² for frobenius
    with jax.enable_x64(True):
        res = nmf.fit(X, 4, method=method, init=(W0, H0), max_iter=200, tol=0)
    assert res.W.dtype == np.float64 and res.n_iter == 200
    assert rel(res.objective, obj_sk) < 1e-4  # the tolerance (float64); observed ~1e-15
    np.testing.assert_allclose(res.W, W_sk, rtol=1e-6, atol=1e-9)


def _sklearn_cd_sweeps(X, W, H, n, **penalties):
    """scikit-learn's ``solver="cd"`` iterates from (W, H), one fit of one sweep at a time (cd
    carries nothing from one sweep to the next but W and H, so these are its iterates)."""
    out = []
    for _ in range(n):
        sk = NMF(W.shape[1], solver="cd", init="custom", shuffle=False, tol=0, max_iter=1, **penalties)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = sk.fit_transform(X, W=W.copy(), H=H.copy())
        H = sk.components_
        out.append((W, H))
    return out, sk


@pytest.mark.parametrize("penalties", [{}, {"alpha_W": 0.01, "l1_ratio": 0.3}, {"alpha_W": 0.02, "alpha_H": 0.005, "l1_ratio": 1.0}])
def test_hals_matches_sklearn_cd_sweep_by_sweep(problem, penalties):
    """Plain HALS (``alpha=0``: one sweep per factor) is scikit-learn's coordinate descent update
    for update: W's columns then H's rows in index order, l1 / l2 as its scaled regularisation."""
    X, W0, H0 = problem
    iterates, sk = _sklearn_cd_sweeps(X, W0, H0, 25, **penalties)
    l1_W, l1_H, l2_W, l2_H = sk._compute_regularization(X)  # sklearn's weights, ½ l2 ‖·‖² like ours
    hp = nmf.NMFHparams(l1_W=l1_W, l2_W=l2_W, l1_H=l1_H, l2_H=l2_H)
    with jax.enable_x64(True):
        res = jf.fit(nmf_hals(4, alpha=0.0), X, hp, jax.random.PRNGKey(0), max_iter=25, tol=0, chunk_size=1,
                     state0=nmf.NMFState(W0, H0))
        ref = np.array([float(nmf.frobenius_objective(nmf.NMFState(W, H), X, hp)) for W, H in iterates])
    np.testing.assert_allclose(np.asarray(res.trace)[1:], ref, rtol=1e-10)  # float64; observed ~1e-14
    np.testing.assert_allclose(res.state.W, iterates[-1][0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.state.H, iterates[-1][1], rtol=1e-8, atol=1e-12)


def test_accelerated_hals_is_default_and_beats_plain_hals(problem):
    """``method="hals"`` is the default; Gillis–Glineur's repeated sweeps reach a lower objective
    than one sweep per factor after the same number of iterations (same start)."""
    X, W0, H0 = problem
    with jax.enable_x64(True):
        res = nmf.fit(X, 4, init=(W0, H0), max_iter=20, tol=0)
        plain = jf.fit(nmf_hals(4, alpha=0.0), X, nmf.NMFHparams(), jax.random.PRNGKey(0), max_iter=20, tol=0,
                       state0=nmf.NMFState(W0, H0))
    assert res.method == "hals"
    assert res.objective < float(plain.trace[-1])


@pytest.mark.parametrize("method", ["hals", "mu", "pgd", "kl"])
def test_objective_never_increases(problem, method):
    X, W0, H0 = problem
    with jax.enable_x64(True):
        res = nmf.fit(X, 4, method=method, init=(W0, H0), max_iter=300, tol=0, chunk_size=1, l1_W=0.01, l2_H=0.1)
    d = np.diff(res.trace)
    assert np.all(d <= 1e-12 * np.abs(res.trace[:-1])), d.max()


def test_pgd_and_hals_reach_a_stationary_fit(problem):
    X, _, _ = problem
    mu = nmf.fit(X.astype(np.float32), 4, method="mu", max_iter=2000, tol=0)
    for method in ("pgd", "hals"):
        other = nmf.fit(X.astype(np.float32), 4, method=method, max_iter=2000, tol=0)
        assert rel(other.objective, mu.objective) < 0.02, method  # solvers of the same problem


def test_random_init_scale_like_sklearn():
    X = np.random.default_rng(0).gamma(2.0, 1.0, size=(2500, 2500))
    W, H = nmf.random_init(jax.random.PRNGKey(0), X.astype(np.float32), 4)
    W_sk, H_sk = _initialize_nmf(X, 4, init="random", random_state=0)
    expected = np.sqrt(X.mean() / 4) * np.sqrt(2 / np.pi)  # E|N(0,1)| * sqrt(mean(X)/k), sklearn's scaling
    for ours, theirs in ((W, W_sk), (H, H_sk)):
        assert rel(float(ours.mean()), expected) < 0.05  # 10000 draws: sd of the mean 0.75 %
        assert rel(theirs.mean(), expected) < 0.05


@pytest.mark.parametrize("variant", ["nndsvd", "nndsvda"])
def test_nndsvd_matches_sklearn(variant):
    sim = simulate_nmf(n_samples=80, n_features=50, n_components=3, noise=0.01, seed=7, sparsity=0.0)
    X = sim.X.astype(np.float64)
    W_sk, H_sk = _initialize_nmf(X, 3, init=variant, random_state=0)
    with jax.enable_x64(True):
        W, H = nmf.nndsvd_init(jax.random.PRNGKey(0), X, 3, variant)
    # both use a randomized SVD; with a clear spectral gap they agree to high precision
    np.testing.assert_allclose(np.asarray(W) @ np.asarray(H), W_sk @ H_sk, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(W) >= 0) and np.all(np.asarray(H) >= 0)


def test_recovers_simulated_factors():
    from scipy.optimize import linear_sum_assignment

    sim = simulate_nmf(n_samples=300, n_features=80, n_components=4, noise=0.02, seed=2)
    res = nmf.fit(sim.X, 4, init="nndsvda", max_iter=1000, tol=0)
    unit = lambda M: M / np.linalg.norm(M, axis=1, keepdims=True)
    sim_mat = unit(res.H) @ unit(sim.H).T
    r, c = linear_sum_assignment(-sim_mat)
    assert sim_mat[r, c].min() > 0.95


def test_restarts_keep_the_best(small_nmf):
    res = nmf.fit(small_nmf.X, 3, init="random", n_restarts=4, max_iter=50, tol=0, seed=5)
    assert res.restart_objectives.shape == (4,)
    assert res.objective == pytest.approx(res.restart_objectives.min(), rel=1e-6)


def test_sparse_input_and_warning(small_nmf):
    import scipy.sparse as sp

    with pytest.warns(nmf.ConvergenceWarning):
        res = nmf.fit(sp.csr_matrix(small_nmf.X), 3, max_iter=10, tol=1e-12)
    assert res.W.shape == (40, 3) and res.H.shape == (3, 25)
    assert np.isfinite(res.reconstruction_err_)


BAD = [
    (lambda X: -X, {}, "negative entries"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), {}, "NaN"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), {}, "infinite"),
    (lambda X: X[:0], {}, "empty"),
    (lambda X: X[0], {}, "2-D"),
    (lambda X: X, {"n_components": 0}, "n_components=0 is out of range"),
    (lambda X: X, {"n_components": 26}, "n_components=26 is out of range"),
    (lambda X: X, {"method": "als"}, "unknown method"),
    (lambda X: X, {"init": "svd"}, "unknown init"),
    (lambda X: X, {"init": (np.ones((40, 2)), np.ones((2, 25)))}, "custom init shapes"),
    (lambda X: X, {"max_iter": 0}, "max_iter"),
    (lambda X: X, {"tol": -1.0}, "tol"),
    (lambda X: X, {"l2_H": -0.1}, "l2_H"),
]


@pytest.mark.parametrize("transform,kwargs,message", BAD)
def test_bad_input_raises_before_compiling(small_nmf, transform, kwargs, message):
    from jaxfactor import _fit

    before = _fit._fit_jit._cache_size()
    args = {"n_components": 3, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        nmf.fit(transform(small_nmf.X), **args)
    assert "\n" not in str(info.value)
    assert _fit._fit_jit._cache_size() == before


@pytest.mark.parametrize("method", ["hals", "mu", "pgd", "kl"])
def test_monotone_on_random_problems(method):
    """Property test: any non-negative matrix (with exact zeros), any penalties, any seed."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=12, deadline=None, derandomize=True)
    @given(seed=st.integers(0, 2**31 - 1), l1=st.floats(0.0, 1.0), l2=st.floats(0.0, 1.0), zeros=st.floats(0.0, 0.6))
    def check(seed, l1, l2, zeros):
        rng = np.random.default_rng(seed)
        X = rng.gamma(0.5, 1.0, size=(12, 9)) * (rng.random((12, 9)) >= zeros)
        if not X.any():
            X[0, 0] = 1.0
        with jax.enable_x64(True):  # fixed shapes: one compilation serves every example
            res = nmf.fit(X, 3, method=method, init="random", seed=seed % 1000, max_iter=30, tol=0, chunk_size=1,
                          l1_W=l1, l2_H=l2)
        assert np.all(np.isfinite(res.W)) and np.all(res.W >= 0) and np.all(res.H >= 0)
        assert np.all(np.diff(res.trace) <= 1e-10 * np.abs(res.trace[:-1]))

    check()


def test_float32_data_under_x64_and_all_zero_inits():
    """float32 data under ``jax_enable_x64`` (penalties are float64 there) fits in float32 and
    agrees with the float64 fit; an all-zero custom W0 or H0 is refused (updates keep zeros)."""
    X = np.random.default_rng(0).random((30, 10)).astype(np.float32)
    with jax.enable_x64(True):
        for method in ("hals", "mu", "pgd", "kl"):
            r32 = nmf.fit(X, 3, method=method, l2_H=0.1, l1_W=0.01, max_iter=50, tol=0)
            r64 = nmf.fit(X.astype(np.float64), 3, method=method, l2_H=0.1, l1_W=0.01, max_iter=50, tol=0)
            assert r32.W.dtype == np.float32 and r64.W.dtype == np.float64
            np.testing.assert_allclose(r32.objective, r64.objective, rtol=1e-4)
    W0, H0 = np.ones((30, 3)), np.ones((3, 10))
    for init, name in (((np.zeros_like(W0), H0), "W0"), ((W0, np.zeros_like(H0)), "H0")):
        with pytest.raises(ValueError, match=f"the custom init {name} is all zeros"):
            nmf.fit(X, 3, init=init)


def test_public_init_helpers_validate_like_fit():
    """``nndsvd_init`` / ``random_init`` called directly refuse what ``fit`` refuses (a rank above
    min(X.shape) used to come back silently cut to that size; negative data gave negative W)."""
    X = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    for init in (nmf.nndsvd_init, nmf.random_init):
        with pytest.raises(ValueError, match="n_components=6 is out of range"):
            init(key, X, 6)
        with pytest.raises(ValueError, match="negative entries"):
            init(key, -X, 2)
        W, H = init(key, X, 3)
        assert W.shape == (6, 3) and H.shape == (3, 4) and float(W.min()) >= 0


def _kkt_violation(W, H, X, l1, l2):
    """Largest violation of the optimality conditions of min_{W ≥ 0} ½‖X − WH‖² + l1 ΣW + ½ l2 ‖W‖²:
    the gradient is ≥ 0 everywhere and 0 where W > 0 (relative to the gradient's scale)."""
    grad = W @ (H @ H.T) - X @ H.T + l1 + l2 * W
    scale = np.abs(X @ H.T).max()
    return max(np.maximum(-grad, 0).max(), np.abs(np.where(W > 0, grad, 0)).max()) / scale


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.0, 0.5), (0.05, 0.2)])
def test_transform_solves_the_W_problem(l1, l2):
    """HALS for H fixed, each cell's sweeps run to convergence: the optimum (scipy's NNLS on the
    problem with its ridge as extra rows, and the KKT conditions with an l1 term)."""
    from scipy.optimize import nnls

    from jaxfactor.factorization._hals import solve_rows

    rng = np.random.default_rng(1)
    H = rng.random((4, 30))
    X = rng.random((50, 4)) @ H + 0.2 * rng.random((50, 30))
    with jax.enable_x64(True):
        W = np.asarray(solve_rows(X, H, l1, l2))
    assert _kkt_violation(W, H, X, l1, l2) < 1e-6  # float64; the sweeps stop at 1e-6 of the first move
    if l1 == 0:
        A = np.vstack([H.T, np.sqrt(l2) * np.eye(4)])
        ref = np.array([nnls(A, np.concatenate([x, np.zeros(4)]))[0] for x in X])
        np.testing.assert_allclose(W, ref, rtol=1e-5, atol=1e-7)


def test_model_transform_by_hals_is_per_cell(small_nmf):
    """The fitted model's transform (float32): the W problem's optimum for its own H and l1 / l2,
    and a cell's loadings do not depend on the other cells of its batch."""
    from jaxfactor.factorization._nmf_model import NMFModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NMFModel.fit(np.asarray(small_nmf.X), 3, max_iter=100, l1_W=0.01, l2_W=0.1)
    assert model.settings["method"] == "hals"
    X = np.asarray(small_nmf.X, np.float32)
    W = model.transform(X)
    assert _kkt_violation(W.astype(np.float64), np.asarray(model.result.H, np.float64), X.astype(np.float64), 0.01, 0.1) < 1e-4
    np.testing.assert_allclose(model.transform(X[5:12]), W[5:12], rtol=1e-5, atol=1e-6)


def test_transform_bad_input_is_one_line(small_nmf):
    from jaxfactor.factorization._nmf_model import NMFModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NMFModel.fit(np.asarray(small_nmf.X), 3, max_iter=20)
    X = np.asarray(small_nmf.X, np.float32)
    nan = np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X)
    for bad, message in ((X[:, :20], "the data has 20 variables but the model was fitted on 25"),
                         (-X, "negative entries"), (nan, "1 NaN")):
        with pytest.raises(ValueError, match=message) as info:
            model.transform(bad)
        assert "\n" not in str(info.value)


def test_hals_cell_sharded_equals_one_device():
    """HALS with its cells split over 4 fake CPU devices (37 rows: 3 padded) equals the one-device
    fit: the W sweeps' stopping rule sums over shards, so both sweep the same number of times."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import warnings
        import jax, numpy as np
        import jaxfactor as jf
        from jaxfactor import nmf
        from jaxfactor.data import simulate_nmf
        warnings.simplefilter("ignore")
        assert jax.device_count() == 4
        X = simulate_nmf(n_samples=37, n_features=20, n_components=3, noise=0.05, seed=0).X
        kw = dict(method="hals", max_iter=60, tol=1e-4, l1_W=0.01, l2_H=0.1, l2_W=0.05, l1_H=0.02)
        one = nmf.fit(X, 3, **kw)
        four = nmf.fit(X, 3, mesh=jf.cell_mesh(), **kw)
        assert four.n_iter == one.n_iter, (four.n_iter, one.n_iter)
        np.testing.assert_allclose(four.trace, one.trace, rtol=1e-5)  # float32, psum order
        np.testing.assert_allclose(four.W, one.W, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(four.H, one.H, rtol=1e-4, atol=1e-5)
        print("OK")
    """)
    env = {**__import__("os").environ, "XLA_FLAGS": (__import__("os").environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
