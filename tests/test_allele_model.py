"""Allele-count NumPyro model: simulation, exact clone marginal vs scipy brute force, SVI recovery,
and bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from jaxfactor.cclone import adjusted_rand_index
from jaxfactor.models import (allele_entry_loglik, allele_loglik, clone_responsibilities, fit_allele_svi,
                              simulate_alleles)

N, J, K = 200, 30, 3


@pytest.fixture(scope="module")
def sim():
    return simulate_alleles(N, J, K, seed=1, mean_coverage=10.0, germline_mask=np.arange(J) < 3)


def test_simulation_shapes_and_truth(sim):
    assert sim.alt.shape == sim.depth.shape == (N, J)
    assert sim.labels.shape == (N,) and set(np.unique(sim.labels)) <= set(range(K))
    assert sim.af.shape == (K, J)
    assert (sim.alt >= 0).all() and (sim.alt <= sim.depth).all()
    np.testing.assert_array_equal(sim.af[:, :3], 0.5)  # germline heterozygous in every clone
    for site in ("pi", "af_raw", "dropout", "error", "size_factor", "expression", "dispersion", "gate", "z",
                 "dropout_event", "kept_alt"):
        assert site in sim.params
    assert 0 < sim.params["dropout"] < 1 and 0 < sim.params["error"] < 0.2
    assert (sim.depth == 0).mean() > 0.05  # zero inflation + NB zeros: uncovered entries exist
    np.testing.assert_array_equal(sim.params["z"][:, 0], sim.labels)


def test_dropout_and_error_visible():
    depth = np.full((300, 20), 40)
    het = np.full((1, 20), 0.5)
    common = dict(depth=depth, af=het, pi=np.ones(1), error=0.01)
    no_do = simulate_alleles(300, 20, 1, seed=3, dropout=0.0, **common)
    with_do = simulate_alleles(300, 20, 1, seed=3, dropout=0.3, **common)
    mono = lambda s: np.mean((s.alt <= 2) | (s.alt >= 38))  # one allele only (up to errors)
    assert mono(no_do) < 0.01
    assert abs(mono(with_do) - 0.3) < 0.03
    np.testing.assert_allclose(with_do.params["dropout_event"].mean(), 0.3, atol=0.02)
    # error: a clone without the mutation (af = 0) still shows ALT reads at rate ~ error
    err = simulate_alleles(300, 20, 1, seed=4, depth=depth, af=np.zeros((1, 20)), pi=np.ones(1), dropout=0.0,
                           error=0.05)
    np.testing.assert_allclose(err.alt.sum() / depth.sum(), 0.05, atol=0.005)


def _brute_force(alt, depth, af, pi, delta, eps, kappa=None):
    """log sum_k pi_k prod_j [(1-d) B(q) + d f B(1-e) + d (1-f) B(e)] with scipy, one entry at a time."""
    n, m = alt.shape
    out = np.zeros(n)
    for i in range(n):
        terms = []
        for k in range(len(pi)):
            s = np.log(pi[k])
            for j in range(m):
                if depth[i, j] == 0:
                    continue
                f = af[k, j]

                def b(p):
                    if kappa is None:
                        return stats.binom.pmf(alt[i, j], depth[i, j], p)
                    return stats.betabinom.pmf(alt[i, j], depth[i, j], p * kappa, (1 - p) * kappa)

                q = f * (1 - eps) + (1 - f) * eps
                s += np.log((1 - delta) * b(q) + delta * f * b(1 - eps) + delta * (1 - f) * b(eps))
            terms.append(s)
        out[i] = logsumexp(terms)
    return out


@pytest.mark.parametrize("kappa", [None, 15.0])
def test_marginal_matches_scipy_bruteforce(kappa):
    rng = np.random.default_rng(0)
    n, m, k = 5, 4, 3
    depth = rng.integers(0, 12, size=(n, m))
    depth[0, 0] = 0
    alt = rng.binomial(depth, 0.4)
    af = rng.uniform(0.05, 0.95, size=(k, m))
    af[:, 1] = 0.5
    af[0, 2] = 0.0  # homozygous reference: dropout has no effect
    pi = np.array([0.2, 0.5, 0.3])
    delta, eps = 0.15, 0.02
    ref = _brute_force(alt, depth, af, pi, delta, eps, kappa)
    lik = "binomial" if kappa is None else "betabinomial"
    with jax.enable_x64(True):
        prob, marg = clone_responsibilities(jnp.asarray(alt, jnp.float64), jnp.asarray(depth, jnp.float64),
                                            jnp.asarray(af), jnp.asarray(pi), delta, eps, likelihood=lik,
                                            concentration=kappa)
        assert marg.dtype == jnp.float64
        # jax's betaln is accurate to ~1e-7 relative, so the beta-binomial check is a little looser
        np.testing.assert_allclose(np.asarray(marg), ref, rtol=0, atol=1e-6 if kappa is None else 1e-5)
        np.testing.assert_allclose(np.asarray(prob).sum(1), 1.0, atol=1e-12)
        # uncovered entries contribute exactly 0
        ll = allele_entry_loglik(0.0, 0.0, 0.3, delta, eps)
        assert float(ll) == 0.0
    # float32 path agrees loosely
    _, marg32 = clone_responsibilities(alt, depth, af.astype(np.float32), pi.astype(np.float32), delta, eps,
                                       likelihood=lik, concentration=kappa)
    np.testing.assert_allclose(np.asarray(marg32), ref, rtol=1e-4, atol=1e-4)
    assert allele_loglik(alt, depth, af, delta, eps, likelihood=lik, concentration=kappa).shape == (n, k)


@pytest.mark.parametrize("guide", ["delta", "normal"])
def test_svi_recovers_clones(sim, guide):
    fit = fit_allele_svi(sim.alt, sim.depth, K, num_steps=400, lr=0.05, guide=guide, seed=0,
                         germline_mask=np.arange(J) < 3)
    assert fit.clone_prob.shape == (N, K) and fit.af.shape == (K, J)
    np.testing.assert_allclose(fit.clone_prob.sum(1), 1.0, atol=1e-5)
    assert adjusted_rand_index(sim.labels, fit.labels) >= 0.9
    np.testing.assert_array_equal(fit.af[:, :3], 0.5)
    assert fit.losses.shape == (400,) and np.isfinite(fit.losses).all()
    assert fit.losses[-20:].mean() < fit.losses[:20].mean() - 100
    assert abs(fit.dropout - sim.params["dropout"]) < 0.1
    assert np.isfinite(fit.log_likelihood)


def test_bad_input(sim):
    a, d = sim.alt, sim.depth
    cases = [
        (-a, d, 2), (a + 0.5, d + 1, 2), (np.where(d > 0, d + 1, 0) + a * 0, d, 2),
        (a[:, :5], d, 2), (a, d, 0), (np.full_like(a, np.nan, dtype=float), d, 2), (a[0], d[0], 2),
    ]
    for alt, depth, k in cases:
        with pytest.raises(ValueError):
            fit_allele_svi(alt, depth, k, num_steps=5)
    with pytest.raises(ValueError, match="likelihood"):
        fit_allele_svi(a, d, 2, num_steps=5, likelihood="poisson")
    with pytest.raises(ValueError, match="guide"):
        fit_allele_svi(a, d, 2, num_steps=5, guide="laplace")
    with pytest.raises(ValueError):
        simulate_alleles(10, 5, 0)
    with pytest.raises(ValueError, match="unknown"):
        simulate_alleles(10, 5, 2, bogus=1.0)
