"""ZINB-WaVE: the log-pmf against scipy/mpmath, the R package's sanity checks, orthogonalisation
invariants, recovery of simulated factors, K = 0 against per-gene maximum likelihood, new cells,
the AnnData entry point, the runner config, and one-line errors before compiling.

Compiled programs are shared where shapes allow (1000 x 500 float32 for the simulation and the
runner; 100 x 100 float64 for the sanity checks), to keep the file near a minute on two cores.
"""

import json
import math
from pathlib import Path

import anndata
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

import jaxfactor as jf
from jaxfactor import zinbwave as zw
from jaxfactor.factorization import _zinb_fit
from jaxfactor.factorization._zinb_lik import score_fisher, zeta_derivatives, zinb_log_prob
from jaxfactor.runner._cli import main
from jaxfactor.zinbwave import canonical_correlations

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "experiments" / "zinbwave_demo.toml")


def _ref_logpmf(y, mu, theta, pi):
    """log ZINB from scipy.stats (negative binomial with n = θ, p = θ/(θ + μ))."""
    lnb = stats.nbinom.logpmf(y, theta, theta / (theta + mu))
    if pi == 0:
        return lnb
    return np.where(y == 0, np.logaddexp(np.log(pi), np.log1p(-pi) + lnb), np.log1p(-pi) + lnb)


def test_log_prob_matches_scipy_on_edge_grid():
    y = np.arange(0.0, 60.0)
    with jax.enable_x64(True):
        for mu in (1e-6, 1e-3, 0.5, 7.0, 50.0, 3e3):  # μ = 1e-10 and below: mpmath (scipy drifts)
            for theta in (1e-3, 0.3, 9.99, 10.0, 150.0, 1e4):
                for pi in (0.0, 1e-12, 0.3, 1.0 - 1e-10):
                    logit = -np.inf if pi == 0 else math.log(pi) - math.log1p(-pi)
                    got = np.asarray(zinb_log_prob(jnp.asarray(y), math.log(mu), logit, math.log(theta), pi > 0))
                    ref = _ref_logpmf(y, mu, theta, pi)
                    # scipy itself loses ~1e-8 relative where p = θ/(θ + μ) is within 1e-10 of 1
                    # (mpmath below checks those corners to 1e-12)
                    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9, err_msg=f"mu={mu} theta={theta} pi={pi}")
        # θ → ∞: the Poisson limit (the NB − Poisson gap is O(y²/θ))
        for mu in (1e-8, 3.0, 50.0):
            got = np.asarray(zinb_log_prob(jnp.asarray(y), math.log(mu), -np.inf, math.log(1e13), False))
            np.testing.assert_allclose(got, stats.poisson.logpmf(y, mu), rtol=1e-10, atol=1e-9)


def test_log_prob_against_mpmath_and_in_float32():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40

    def ref(y, mu, theta, pi):
        y, mu, theta, pi = (mp.mpf(v) for v in (y, mu, theta, pi))
        nb = (mp.loggamma(y + theta) - mp.loggamma(theta) - mp.loggamma(y + 1) + theta * mp.log(theta / (theta + mu))
              + y * mp.log(mu / (theta + mu)))
        return float(mp.log(pi * (y == 0) + (1 - pi) * mp.exp(nb)))

    cases = [(30, 1e-8, 1e5, 0.3), (0, 1e-8, 1e5, 0.3), (1, 1e-10, 0.3, 0.2), (5, 1e-10, 0.3, 1e-12),
             (50, 1e4, 1e10, 0.3), (5, 50, 1e12, 1e-12),
             (0, 3.0, 1e-3, 1 - 1e-9), (7, 2.0, 1e8, 0.5), (0, 80.0, 1e9, 1e-30), (1000, 900.0, 3.0, 0.1)]
    for y, mu, theta, pi in cases:
        args = (float(y), math.log(mu), math.log(pi) - math.log1p(-pi), math.log(theta))
        with jax.enable_x64(True):
            got = float(zinb_log_prob(*args))
        want = ref(y, mu, theta, pi)
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (y, mu, theta, pi, got, want)
        got32 = float(zinb_log_prob(*(np.float32(a) for a in args)))  # float32 stays finite and close
        assert np.isfinite(got32) and abs(got32 - want) <= 2e-5 * max(10.0, abs(want)), (y, mu, theta, pi, got32, want)


def test_log_prob_is_finite_when_the_gate_is_certain():
    """π = 1 (logit +inf): log ZINB(0) = log π = 0 exactly and log ZINB(y > 0) = −inf, with finite
    gradients; π = 0 (logit −inf): the negative binomial."""
    for x64 in (False, True):
        with jax.enable_x64(x64):
            y = jnp.asarray([0.0, 0.0, 3.0])
            for log_mu, log_theta in ((1.0, 0.5), (-30.0, 8.0), (6.0, -3.0)):
                for lf in (True, False):
                    got = np.asarray(zinb_log_prob(y, log_mu, np.inf, log_theta, log_factorial=lf))
                    np.testing.assert_array_equal(got, [0.0, 0.0, -np.inf])
                    nb = np.asarray(zinb_log_prob(y, log_mu, 0.0, log_theta, False, log_factorial=lf))
                    np.testing.assert_allclose(zinb_log_prob(y, log_mu, -np.inf, log_theta, log_factorial=lf), nb,
                                               rtol=1e-6 if not x64 else 1e-14, atol=1e-6 if not x64 else 0.0)
                    # (float32: gammaln(1) of log 0! is ~5e-7, not 0, in the NB's y = 0 entry)
                grads = jax.grad(lambda a, b, z: zinb_log_prob(y[0], a, b, z), (0, 1, 2))(log_mu, np.inf, log_theta)
                np.testing.assert_array_equal(np.asarray(grads), 0.0)  # d/d(a, b, ζ) of log π = 0


def test_block_derivatives_match_autodiff_and_fisher_is_the_expected_information():
    with jax.enable_x64(True):
        ll = lambda a, b, z, y: zinb_log_prob(y, a, b, z)
        grid = np.array(np.meshgrid([0.0, 1.0, 7.0, 40.0], [-3.0, 0.5, 3.0], [-4.0, 0.3, 2.0], [-1.0, 1.5, 8.0])).reshape(4, -1)
        y, a, b, z = (jnp.asarray(v) for v in grid)

        @jax.jit
        def check(y, a, b, z):
            auto = jax.vmap(jax.grad(ll, (0, 1, 2)), (0, 0, 0, 0))(a, b, z, y)
            h_auto = jax.vmap(jax.grad(jax.grad(ll, 2), 2))(a, b, z, y)
            _, g_a, g_b, *_ = score_fisher(y, a, b, z, True)
            _, g_z, h_z = zeta_derivatives(y, a, b, z, True)
            return auto, h_auto, (g_a, g_b, g_z), h_z

        auto, h_auto, ours, h_z = check(y, a, b, z)
        for got, want in zip(ours, auto):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(h_z, h_auto, rtol=1e-6, atol=1e-10)  # ψ' by a 4-term recurrence below θ = 10

        ys = jnp.arange(0.0, 4000.0)

        @jax.jit
        def expected(a, b, z):
            P = jnp.exp(ll(a, b, z, ys))
            sa = jax.vmap(jax.grad(ll, 0), (None, None, None, 0))(a, b, z, ys)
            sb = jax.vmap(jax.grad(ll, 1), (None, None, None, 0))(a, b, z, ys)
            return jnp.sum(P * sa * sa), jnp.sum(P * sa * sb), jnp.sum(P * sb * sb)

        for a, b, z in ((-1.0, -2.0, 0.5), (3.0, -1.0, 2.0), (0.2, 1.5, -0.5)):
            _, _, _, I_aa, I_ab, I_bb = score_fisher(jnp.float64(0.0), a, b, z, True)
            np.testing.assert_allclose([I_aa, I_ab, I_bb], expected(a, b, z), rtol=1e-9, atol=1e-12)


def test_orthogonalisation_invariants():
    rng = np.random.default_rng(0)
    W, A = rng.normal(size=(50, 3)), rng.normal(size=(3, 40))
    with jax.enable_x64(True):
        for eps_W, eps_a in ((0.3, 1.0), (2.0, 0.05)):
            W2, A2 = (np.asarray(v) for v in zw.orthogonalize(jnp.asarray(W), jnp.asarray(A), eps_W, eps_a))
            np.testing.assert_allclose(W2 @ A2, W @ A, rtol=0, atol=1e-8 * np.abs(W @ A).max())
            for G in (W2.T @ W2, A2 @ A2.T):
                off = G - np.diag(np.diag(G))
                assert np.abs(off).max() <= 1e-8 * np.abs(G).max()
            assert abs(eps_W * np.sum(W2**2) - eps_a * np.sum(A2**2)) <= 1e-8 * eps_a * np.sum(A2**2)
            # the balanced factorisation has the smallest penalty of all with the same product
            assert eps_W * np.sum(W2**2) + eps_a * np.sum(A2**2) <= eps_W * np.sum(W**2) + eps_a * np.sum(A**2)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_r_package_sanity_poisson_and_negative_binomial(x64):
    """zinbwave's tests/testthat/test_value.R (zinbFit with its default K = 0): on Poisson counts
    every 1/θ < 1e-4 with a common and with gene-wise dispersions, and the two fits' μ agree to
    2 decimals; on negative-binomial counts θ, μ and π are recovered."""
    rng = np.random.default_rng(13124)
    fit = _zinb_fit.fit_zinbwave
    Y = rng.poisson(50, (100, 100))
    res = fit(Y, 0, common_dispersion=True)
    assert np.all(1.0 / res.theta < 1e-4)
    assert abs(res.mu().mean() - 50) < 1 and res.pi().mean() < 0.01
    # gene-wise: the common mode of ζ is solved for (``_zinb._dispersion``); before, 1/θ stopped
    # at up to 1.4e-3 after 3 outer iterations and μ differed by 0.013
    gw = fit(Y, 0, common_dispersion=False)
    assert np.all(1.0 / gw.theta < 1e-4), (1.0 / gw.theta).max()
    np.testing.assert_array_almost_equal(gw.mu(), res.mu(), decimal=2)  # |Δμ| < 1.5e-2 (measured ~1e-10)
    assert gw.converged and gw.n_iter <= 10
    res = fit(rng.negative_binomial(10, 10 / 60, (100, 100)), 0, common_dispersion=True)
    assert abs(res.theta.mean() - 10) < 1 and abs(res.mu().mean() - 50) < 1 and res.pi().mean() < 0.01


def _per_gene_mle(y, X, eps_beta, eps_min_logit):
    """Direct ZINB fit of one gene with scipy (log-pmf from scipy.stats; same penalties)."""
    M = X.shape[1]
    pen_mu = np.r_[0.0, np.full(M - 1, eps_beta)]
    pen_pi = np.r_[eps_min_logit, np.full(M - 1, eps_beta)]

    def nll(p):
        bm, bp, z = p[:M], p[M:2 * M], p[-1]
        mu, theta = np.exp(X @ bm), np.exp(z)
        pi = 1.0 / (1.0 + np.exp(-(X @ bp)))
        lnb = stats.nbinom.logpmf(y, theta, theta / (theta + mu))
        ll = np.where(y == 0, np.logaddexp(np.log(pi), np.log1p(-pi) + lnb), np.log1p(-pi) + lnb)
        return -(ll.sum() - 0.5 * (pen_mu @ bm**2 + pen_pi @ bp**2))

    p0 = np.r_[np.log(y.mean() + 0.1), np.zeros(M - 1), -1.0, np.zeros(M - 1), 1.0]
    out = optimize.minimize(nll, p0, method="BFGS", options={"gtol": 1e-7, "maxiter": 2000})
    return X @ out.x[:M], X @ out.x[M:2 * M], out.x[-1]


def test_k0_agrees_with_per_gene_maximum_likelihood(x64):
    rng = np.random.default_rng(5)
    n, J = 400, 4
    X = np.c_[np.ones(n), rng.normal(size=n)]
    log_mu = np.log([3.0, 8.0, 20.0, 6.0])[None, :] + 0.6 * X[:, 1:] * np.array([1.0, -0.5, 0.3, 0.8])
    logit_pi = np.array([-1.0, -0.5, -1.5, -0.8])[None, :] + 0.5 * X[:, 1:]
    theta = np.array([2.0, 5.0, 1.0, 3.0])  # overdispersed enough that the MLE of θ is finite
    Y = rng.poisson(rng.gamma(theta, np.exp(log_mu) / theta))
    Y[rng.random((n, J)) < 1 / (1 + np.exp(-logit_pi))] = 0
    keep = Y.sum(axis=1) > 0  # an all-zero cell is refused
    Y, X = Y[keep], X[keep]
    # no gene covariates and no dispersion penalty: the genes decouple into per-gene ZINB GLMs
    res = _zinb_fit.fit_zinbwave(Y, 0, X=X, V=np.zeros((J, 0)), epsilon_zeta=0.0, max_iter=500, tol=1e-13)
    for j in range(J):
        a, b, z = _per_gene_mle(Y[:, j].astype(float), X, eps_beta=1.0, eps_min_logit=1e-3)
        np.testing.assert_allclose(res.log_mu()[:, j], a, atol=2e-4)
        np.testing.assert_allclose(res.logit_pi()[:, j], b, atol=2e-3)
        assert abs(res.zeta[j] - z) < 2e-3


def _small_counts():
    """50 x 30 simulated counts (K = 2) without their all-zero cells and genes."""
    sim = zw.simulate(50, 30, 2, seed=2)
    Y = sim.X[sim.X.sum(axis=1) > 0]
    return Y[:, Y.sum(axis=0) > 0].astype(np.float64)


def test_small_fit_is_monotone_and_orthogonal_in_float64(x64):
    # the small_fit fixture's counts, K and max_iter: its compiled program (tol is traced)
    res = _zinb_fit.fit_zinbwave(_small_counts(), 2, tol=0.0)
    assert res.n_iter == 25
    assert np.all(np.diff(res.trace) >= -1e-10 * np.abs(res.trace[1:])), np.diff(res.trace).min()
    A = np.concatenate([res.alpha_mu, res.alpha_pi], axis=1)
    eps_W, eps_a = float(res.hparams.eps_W), float(res.hparams.eps_alpha)
    for G in (res.W.T @ res.W, A @ A.T):
        assert abs(G[0, 1]) <= 1e-8 * np.abs(G).max()
    assert abs(eps_W * np.sum(res.W**2) - eps_a * np.sum(A**2)) <= 1e-8 * eps_a * np.sum(A**2)


def test_anndata_fit_drops_empty_cells_and_genes(x64, tmp_path):
    Y0 = _small_counts()  # same shapes as above after the drop: no new compilation
    n, J = Y0.shape
    Y = np.zeros((n + 1, J + 1))
    Y[1:, 1:] = Y0
    ad = anndata.AnnData(X=Y)
    with pytest.warns(UserWarning, match="dropped 1 all-zero cells and 1 all-zero genes"):
        out = zw.fit(ad, 2, tol=0.0)
    assert out.shape == (n, J)
    assert out.obsm["X_zinbwave"].shape == (n, 2) and out.varm["zinbwave_alpha_mu"].shape == (J, 2)
    assert {"zinbwave_mu", "zinbwave_pi", "zinbwave_weights"} <= set(out.layers) and "zinbwave_theta" in out.var
    w, y = np.asarray(out.layers["zinbwave_weights"]), np.asarray(out.X)
    assert np.all(w[y > 0] == 1) and w.min() >= 1e-15 and np.all(w <= 1)
    u = out.uns["zinbwave"]
    assert np.isclose(u["penalized_log_likelihood"], u["trace"][-1]) and u["n_iter"] == 25
    out.write_h5ad(tmp_path / "z.h5ad")
    back = anndata.read_h5ad(tmp_path / "z.h5ad")
    # the original AnnData (genes matched by name), in two batches, the last one padded
    W_new = zw.transform(back, ad, batch_size=32)
    # the fit's last cell-wise block took one Fisher step; transform iterates it to convergence
    np.testing.assert_allclose(W_new[1:], out.obsm["X_zinbwave"], atol=1e-2 * np.abs(out.obsm["X_zinbwave"]).max())


def test_design_from_obs_columns():
    import pandas as pd

    df = pd.DataFrame({"batch": ["a", "b", "c", "a"], "depth": [1.0, 2.0, 3.0, 4.0]})
    Z, names, levels = zw.design_matrix(df, ["batch", "depth"])
    assert names == ["intercept", "batch[b]", "batch[c]", "depth"] and levels == {"batch": ["a", "b", "c"]}
    np.testing.assert_array_equal(Z[:, 1], [0, 1, 0, 0])
    Z2, _, _ = zw.design_matrix(df.iloc[[2, 0]], ["batch", "depth"], levels=levels)  # new cells, same columns
    np.testing.assert_array_equal(Z2, Z[[2, 0]])


def test_genewise_dispersion_on_small_poisson_data(x64):
    """Gene-wise dispersion on 50 cells x 30 genes of Poisson counts at the default settings:
    1/θ < 1e-4 for every gene and μ equal to the common-dispersion fit's to 2 decimals."""
    fit = _zinb_fit.fit_zinbwave
    for seed, lam in ((1, 5), (0, 20)):
        Y = np.random.default_rng(seed).poisson(lam, (50, 30))
        common, genewise = fit(Y, 0, common_dispersion=True), fit(Y, 0, common_dispersion=False)
        assert np.all(1.0 / genewise.theta < 1e-4), (1.0 / genewise.theta).max()
        np.testing.assert_array_almost_equal(genewise.mu(), common.mu(), decimal=2)  # measured ≤ 2.2e-3
        assert genewise.penalized_log_likelihood >= common.penalized_log_likelihood - 1e-6 * abs(common.penalized_log_likelihood)


def _zinbwave_cases():
    """zinbwave's own small test inputs (tests/testthat/test_design.R, test_zinbwave.R; R's
    genes x cells matrices transposed to cells x genes): Poisson(5) counts of 6 cells x 10 genes
    with X = ~bio (two groups of 3) or an intercept, K = 0 or 2, a common dispersion (zinbwave's
    default), and a 50 x 30 zinbSim-like simulation with K = 2 and gene-wise dispersion (ours).
    One compiled program each (float32)."""
    rng = np.random.default_rng(13124)
    bio = np.c_[np.ones(6), np.repeat([0.0, 1.0], 3)]
    sim = zw.simulate(50, 30, 2, seed=2)
    Y = sim.X[sim.X.sum(axis=1) > 0]
    return [(rng.poisson(5, (6, 10)), 0, dict(X=bio, common_dispersion=True)),
            (rng.poisson(5, (6, 10)), 2, dict(common_dispersion=True)),
            (Y[:, Y.sum(axis=0) > 0], 2, dict())]


def test_defaults_converge_without_warnings_on_zinbwave_cases():
    """At the default settings (float32, max_iter=25, tol=1e-4) every case converges, with no
    ConvergenceWarning; measured: 3 to 16 outer iterations (zinbwave's default
    maxiter.optimize = 25 and stop.epsilon.optimize = 1e-4, the same criterion)."""
    import warnings

    for Y, K, kw in _zinbwave_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("error", jf.ConvergenceWarning)
            res = _zinb_fit.fit_zinbwave(Y, K, **kw)
        assert res.converged and res.n_iter < 25, (Y.shape, K, kw, res.n_iter)
        assert np.all(np.isfinite(res.log_mu())) and np.isfinite(res.penalized_log_likelihood)


@pytest.fixture(scope="module")
def small_fit():
    """50 x 30 simulated counts, K = 2, gene-wise dispersion, float64 (one compiled program for
    the residual tests, the AnnData layers and the fitted-model methods)."""
    Y = _small_counts()
    with jax.enable_x64(True):
        return Y, _zinb_fit.fit_zinbwave(Y, 2)


def _closed_form(res, Y, W_on=True):
    """Per-entry μ, π, θ and log ZINB from scipy.stats (float64)."""
    log_mu = res.X @ res.beta_mu + (res.V @ res.gamma_mu).T + (res.W @ res.alpha_mu if W_on else 0.0)
    logit_pi = res.X @ res.beta_pi + (res.V @ res.gamma_pi).T + (res.W @ res.alpha_pi if W_on else 0.0)
    mu, pi, theta = np.exp(log_mu), 1.0 / (1.0 + np.exp(-logit_pi)), res.theta[None, :]
    lnb = stats.nbinom.logpmf(Y, theta, theta / (theta + mu))
    ll = np.where(Y == 0, np.logaddexp(np.log(pi), np.log1p(-pi) + lnb), np.log1p(-pi) + lnb)
    return mu, pi, theta, ll


def test_residuals_normalized_values_and_imputed_counts_closed_forms(small_fit):
    """zinbwave's computeDevianceResiduals, normalizedValues (deviance residuals with W ignored)
    and imputeZeros (R/normalized_values.R), and Pearson residuals, against closed forms."""
    Y, res = small_fit
    mu, pi, theta, ll = _closed_form(res, Y)
    dev = res.residuals(Y)
    # sign(y − (1 − π) μ) √(−2 ll): sum of squares = −2 × log-likelihood (zinbwave's deviance)
    np.testing.assert_allclose(dev, np.where(Y > (1 - pi) * mu, 1.0, -1.0) * np.sqrt(-2 * ll), rtol=1e-7, atol=1e-9)
    assert np.isclose(np.sum(dev**2), -2 * res.log_likelihood, rtol=1e-10)
    pearson = res.residuals(Y, "pearson")
    np.testing.assert_allclose(pearson, (Y - (1 - pi) * mu) / np.sqrt((1 - pi) * mu * (1 + mu * (pi + 1 / theta))), rtol=1e-9)
    # normalized values: the same residuals of the model without W α (X, V effects only)
    mu0, pi0, _, ll0 = _closed_form(res, Y, W_on=False)
    norm = res.normalized_values(Y)
    np.testing.assert_allclose(norm, np.where(Y > (1 - pi0) * mu0, 1.0, -1.0) * np.sqrt(-2 * ll0), rtol=1e-7, atol=1e-9)
    assert not np.allclose(norm, dev)
    # imputed: observed where y > 0; at zeros μ π / (π + (1 − π)(1 + μ/θ)^−θ) = μ (1 − weight)
    imp = res.imputed_counts(Y)
    np.testing.assert_array_equal(imp[Y > 0], Y[Y > 0])
    want = mu * pi / (pi + (1 - pi) * (1 + mu / theta) ** (-theta))
    np.testing.assert_allclose(imp[Y == 0], want[Y == 0], rtol=1e-9)
    np.testing.assert_allclose(imp[Y == 0], (mu * (1 - res.weights(Y)))[Y == 0], rtol=1e-6, atol=1e-12)
    assert np.all(np.isfinite(dev)) and np.all(np.isfinite(norm)) and np.all(imp >= 0)
    with pytest.raises(ValueError, match="kind must be 'deviance' or 'pearson'"):
        res.residuals(Y, "raw")
    with pytest.raises(ValueError, match="pass the fitted counts"):
        res.residuals(Y[:, 1:])


def test_residual_layers_and_model_methods(small_fit, x64):
    Y, res = small_fit
    ad = anndata.AnnData(X=Y)
    out = zw.fit(ad, 2, normalized_values=True, residuals=True, imputed_values=True)  # the fixture's program
    np.testing.assert_allclose(out.layers["zinbwave_residuals"], res.residuals(Y).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(out.layers["zinbwave_normalized_values"], res.normalized_values(Y).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(out.layers["zinbwave_imputed"], res.imputed_counts(Y).astype(np.float32), rtol=1e-6)
    assert "zinbwave_residuals" not in zw.fit(ad, 2).layers  # only on request, as zinbwave()
    model = zw.ZINBWaVEModel.fit(Y, 2)
    np.testing.assert_allclose(model.residuals(Y, "pearson"), res.residuals(Y, "pearson"), rtol=1e-10)
    np.testing.assert_allclose(model.normalized_values(Y), res.normalized_values(Y), rtol=1e-10)
    np.testing.assert_allclose(model.imputed_counts(Y), res.imputed_counts(Y), rtol=1e-10)


def test_which_columns_for_mu_and_pi(x64):
    """zinbwave's which_X_mu / which_X_pi (and V): an excluded covariate's coefficient is exactly
    0 on that side; an all-zero column (zinbwave's "works without X and V") has coefficients 0
    and gives the fit without it; excluding a column from both sides is the same fit again."""
    rng = np.random.default_rng(3)
    n, J = 50, 30  # the gene-wise Poisson test's shapes: ``plain`` is its compiled program
    x = rng.normal(size=n)
    Y = rng.poisson(np.exp(1.0 + 0.5 * x)[:, None] * np.ones(J))
    assert Y.sum(axis=1).min() > 0 and Y.sum(axis=0).min() > 0
    fit = lambda **kw: _zinb_fit.fit_zinbwave(Y, 0, **kw)  # noqa: E731
    X = np.c_[np.ones(n), x]
    res = fit(X=X, which_X_pi=[0])
    assert np.all(res.beta_pi[1] == 0) and np.abs(res.beta_mu[1]).min() > 0.1
    assert res.which["which_X_pi"] == (0,) and res.which["which_X_mu"] == (0, 1)
    plain = fit()
    zero = fit(X=np.c_[np.ones(n), np.zeros(n)])
    assert np.all(zero.beta_mu[1] == 0) and np.all(zero.beta_pi[1] == 0)
    np.testing.assert_allclose(zero.log_mu(), plain.log_mu(), atol=1e-8)
    np.testing.assert_allclose(zero.logit_pi(), plain.logit_pi(), atol=1e-6)
    both = fit(X=X, which_X_mu=[0], which_X_pi=[0])
    assert np.all(both.beta_mu[1] == 0) and np.all(both.beta_pi[1] == 0)
    np.testing.assert_allclose(both.log_mu(), plain.log_mu(), atol=1e-8)
    np.testing.assert_allclose(both.penalized_log_likelihood, plain.penalized_log_likelihood, rtol=1e-12)


@pytest.mark.parametrize("kw,match", [
    (dict(which_X_pi=[2]), r"which_X_pi has indices \[2\] out of range for X with 2 columns; use 0..1"),
    (dict(which_V_mu=[0, 0]), "which_V_mu repeats column indices"),
    (dict(which_X_mu=[0.5]), "which_X_mu must be integer column indices of X"),
    (dict(which_X_mu=[-1]), "out of range"),
])
def test_which_columns_are_checked_before_compiling(no_fit, kw, match):
    Y = np.random.default_rng(0).poisson(3, (20, 10)) + 1
    with pytest.raises(ValueError, match=match) as err:
        _zinb_fit.fit_zinbwave(Y, 1, X=np.c_[np.ones(20), np.arange(20.0)], **kw)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def simulated():
    """n = 1000, J = 500, K = 2 in float32 (the runner demo's shapes, so its test reuses the program)."""
    sim = zw.simulate(1000, 500, 2, seed=0)
    res = _zinb_fit.fit_zinbwave(sim.X, 2, max_iter=50, tol=1e-4)
    return sim, res


def test_simulated_recovery_and_objective_at_truth(simulated):
    sim, res = simulated
    cc = canonical_correlations(res.W, sim.W)
    assert cc.min() >= 0.95, cc
    # penalised log-likelihood at the truth (W, α balanced, which only raises it), in float64
    with jax.enable_x64(True):
        n, J = sim.X.shape
        data = zw.ZINBData(jnp.asarray(sim.X), jnp.ones((n, 1)), jnp.ones((J, 1)))
        hp = jax.tree_util.tree_map(jnp.asarray, res.hparams)
        truth = zw.ZINBState(*(jnp.asarray(getattr(sim, k)) for k in
                               ("beta_mu", "beta_pi", "gamma_mu", "gamma_pi", "W", "alpha_mu", "alpha_pi", "zeta")))
        Wt, At = zw.orthogonalize(truth.W, jnp.concatenate([truth.alpha_mu, truth.alpha_pi], 1), hp.eps_W, hp.eps_alpha)
        truth = truth._replace(W=Wt, alpha_mu=At[:, :J], alpha_pi=At[:, J:])
        pll_truth = float(zw.penalized_log_likelihood(truth, data, hp))
        pll_fit = float(zw.penalized_log_likelihood(jax.tree_util.tree_map(jnp.asarray, res.state), data, hp))
    assert pll_fit >= pll_truth - 1e-5 * abs(pll_truth), (pll_fit, pll_truth)
    assert np.isclose(pll_fit, res.penalized_log_likelihood, rtol=1e-5)
    assert np.all(np.diff(res.trace) >= -1e-5 * np.abs(res.trace[1:]))  # monotone up to float32 rounding
    assert np.corrcoef(res.log_mu().ravel(), np.log(sim.mu).ravel())[0, 1] > 0.98


def test_new_cells_reproduce_training_w(simulated):
    sim, res = simulated
    W_new = res.transform(sim.X[:300], batch_size=128)  # three batches, the last one padded
    scale = np.abs(res.W).max()
    assert np.abs(W_new - res.W[:300]).max() <= 0.05 * scale
    assert canonical_correlations(W_new, res.W[:300]).min() > 0.999


def test_runner_demo_config(simulated, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["run", DEMO, "--out", str(out), "--set", "sweep.n_components=[2]"])
    assert code == 0, capsys.readouterr().err
    assert "chosen by bic" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    point = metrics["points"][0]
    assert point["cancor_min"] >= 0.95 and point["ari"] > 0.8
    res = anndata.read_h5ad(out / "result.h5ad")
    assert res.obsm["X_zinbwave"].shape == (1000, 2) and "zinbwave_mu" in res.layers
    assert (out / "zinbwave.png").exists() and (out / "selection.csv").exists()


@pytest.fixture
def no_fit(monkeypatch):
    """Any call into the compiled fit fails the test: errors must come before compiling."""

    def boom(*a, **k):
        raise AssertionError("the fit was reached")

    monkeypatch.setattr(_zinb_fit, "fit", boom)


@pytest.mark.parametrize("case,match", [
    ("negative", "negative entries"),
    ("non_integer", "non-integer entries"),
    ("empty_gene", "all-zero genes"),
    ("rank_too_big", "n_components=10 is out of range"),
    ("nan_covariate", "NaN or infinite"),
    ("rank_deficient", "rank-deficient"),
    ("bad_rows", "one row per cell"),
    ("nan_counts", "NaN"),
])
def test_bad_input_is_a_one_line_error_before_compiling(no_fit, case, match):
    rng = np.random.default_rng(0)
    Y = rng.poisson(3, (20, 10)).astype(float)
    Y[0, :] = 1
    kw = {}
    if case == "negative":
        Y[2, 3] = -1
    elif case == "non_integer":
        Y[2, 3] = 0.5
    elif case == "empty_gene":
        Y[:, 4] = 0
    elif case == "nan_counts":
        Y[1, 1] = np.nan
    elif case == "nan_covariate":
        kw["X"] = np.c_[np.ones(20), np.r_[np.nan, np.zeros(19)]]
    elif case == "rank_deficient":
        kw["X"] = np.c_[np.ones(20), np.full(20, 2.0)]
    elif case == "bad_rows":
        kw["X"] = np.ones((19, 1))
    n_components = 10 if case == "rank_too_big" else 2
    with pytest.raises(ValueError, match=match) as err:
        _zinb_fit.fit_zinbwave(Y, n_components, **kw)
    assert "\n" not in str(err.value)


def test_anndata_errors(no_fit):
    ad = anndata.AnnData(X=np.ones((5, 4)))
    with pytest.raises(ValueError, match="layer 'counts' not in the AnnData; available layers: none"):
        zw.fit(ad, 1, layer="counts")
    with pytest.raises(ValueError, match="column 'batch' not found"):
        zw.fit(ad, 1, X=["batch"])
    with pytest.raises(ValueError, match="n_components=-1 is out of range"):
        zw.fit(ad, -1)


def test_registered_for_conformance():
    assert "zinbwave" in jf.registered()
    alg, data, hp = jf.registered()["zinbwave"]()
    assert alg.monotone and data.Y.shape == (40, 30)
