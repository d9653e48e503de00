"""The shared NB / ZINB log-pmfs and log Gamma series (:mod:`jaxfactor._count_lik`): against
scipy.stats.nbinom and scipy.special in float64 and float32, against mpmath where scipy itself
cancels (large theta, large counts), ZINB against the mixture formula, the certain gate
(logit = +-inf), and the re-exports of the VAE and ZINB-WaVE modules.

Tolerances are written next to each assertion. float32 errors are measured against the size of
the terms that are summed (rounding of each term, not of the result, sets the error).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxfactor import _count_lik as CL

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _grid(n, seed, max_count=1e5):
    """Counts log-uniform in [0, max_count), log mu in [-10, 12], log theta in [-7, 12]."""
    rng = np.random.default_rng(seed)
    x = np.floor(np.exp(rng.uniform(0.0, math.log(max_count), n))) - 1.0
    return x, rng.uniform(-10.0, 12.0, n), rng.uniform(-7.0, 12.0, n)


def _scale(x, log_mu, log_theta, ref):
    """Size of the summed terms of log NB: log x!, x log mu, theta log(1 + mu/theta), and below theta = 10
    lgamma(x + theta) (D is a difference of two gammaln there). Rounding each to a few eps bounds the
    error whatever the formula: the result can be much smaller than its terms (x ~ mu, both large)."""
    theta = np.exp(log_theta)
    return (1.0 + np.abs(ref) + special.gammaln(x + 1.0) + x * np.abs(log_mu) + theta * np.log1p(np.exp(log_mu) / theta)
            + np.abs(special.gammaln(x + theta)) * (theta < 10))


def _nb_ref(x, log_mu, log_theta):
    mu, theta = np.exp(log_mu), np.exp(log_theta)
    return stats.nbinom.logpmf(x, theta, theta / (theta + mu))


def _zinb_ref(x, nb, gate):
    """log(pi 1{x = 0} + (1 - pi) NB(x)) with pi = sigmoid(gate), from NB's log-pmf."""
    log_pi, log_1mpi = -np.logaddexp(0.0, -gate), -np.logaddexp(0.0, gate)
    return np.where(x == 0, np.logaddexp(log_pi, log_1mpi + nb), log_1mpi + nb)


# ------------------------------------------------------------------------------------------------
# log-pmfs
# ------------------------------------------------------------------------------------------------

def test_nb_matches_scipy_in_float64():
    x, a, t = _grid(20000, 0)
    with jax.enable_x64(True):
        got = np.asarray(CL.nb_log_prob(jnp.asarray(x), jnp.asarray(a), jnp.asarray(t)))
        unnorm = np.asarray(CL.nb_log_prob(jnp.asarray(x), jnp.asarray(a), jnp.asarray(t), normalized=False))
    ref = _nb_ref(x, a, t)
    # scipy computes gammaln(x + theta) - gammaln(theta), which cancels for large theta (it drifts
    # by ~1e-8 relative at theta = 1e5); below theta = 1e3 it is good to ~1e-10 (large counts)
    small = np.exp(t) < 1e3
    err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
    assert err[small].max() < 1e-9, err[small].max()
    assert err.max() < 1e-7, err.max()
    # normalized=False drops exactly log x! (up to rounding of the terms)
    assert np.all(np.abs(got - unnorm + special.gammaln(x + 1.0)) <= 4 * EPS64 * _scale(x, a, t, ref))


def test_nb_against_mpmath_for_large_counts_and_large_theta():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50

    def ref(x, mu, theta):
        x, mu, theta = (mp.mpf(v) for v in (x, mu, theta))
        return float(mp.loggamma(x + theta) - mp.loggamma(theta) - mp.loggamma(x + 1)
                     + theta * mp.log(theta / (theta + mu)) + x * mp.log(mu / (theta + mu)))

    cases = [(1e5, 1e5, 1e8), (3e4, 2.0e4, 1e6), (0, 1e-8, 1e12), (50, 40.0, 1e10), (1e5, 9e4, 3.0),
             (7, 1e-3, 1e-4), (2e5, 1.5e5, 0.05), (1, 1e-10, 1e15), (12, 11.0, 9.999), (12, 11.0, 10.0)]
    for x, mu, theta in cases:
        want = ref(x, mu, theta)
        with jax.enable_x64(True):
            got = float(CL.nb_log_prob(jnp.float64(x), math.log(mu), math.log(theta)))
        scale = float(_scale(x, math.log(mu), math.log(theta), want))
        # float64: a few eps of the largest term (x = mu = 1e5: log x! ~ x log mu ~ 1e6, the result
        # -6.7) and the truncation of Stirling's series at theta = 10 (< 1/(1188 theta^9) < 1e-12)
        assert abs(got - want) <= 4 * EPS64 * scale + 1e-12, (x, mu, theta, got, want, scale)
        # float32 at the float32-rounded parameters
        lm32, lt32 = np.float32(math.log(mu)), np.float32(math.log(theta))
        want32 = ref(x, math.exp(float(lm32)), math.exp(float(lt32)))
        got32 = float(CL.nb_log_prob(jnp.float32(x), lm32, lt32))
        assert abs(got32 - want32) <= 8 * EPS32 * scale, (x, mu, theta, got32, want32)


def test_nb_matches_scipy_in_float32():
    x, a, t = _grid(20000, 1)
    f = lambda v: jnp.asarray(v, jnp.float32)
    got = np.asarray(CL.nb_log_prob(f(x), f(a), f(t)), np.float64)
    # reference at the float32-rounded parameters, so only the arithmetic is measured
    a32, t32 = np.asarray(f(a), np.float64), np.asarray(f(t), np.float64)
    ref = _nb_ref(x, a32, t32)
    ratio = np.abs(got - ref) / (EPS32 * _scale(x, a32, t32, ref))
    assert ratio.max() < 16.0, ratio.max()  # observed: 4.0


def test_zinb_matches_the_mixture_formula():
    x, a, t = _grid(20000, 2, max_count=3000.0)
    x[::3] = 0.0  # plenty of zeros
    gate = np.random.default_rng(3).uniform(-30.0, 30.0, x.size)
    gate[:4] = [np.inf, -np.inf, np.inf, -np.inf]
    x[:4] = [0.0, 0.0, 5.0, 5.0]
    nb = _nb_ref(x, a, t)
    ref = _zinb_ref(x, nb, gate)
    with jax.enable_x64(True):
        args = (jnp.asarray(x), jnp.asarray(a), jnp.asarray(t), jnp.asarray(gate))
        got = np.asarray(CL.zinb_log_prob(*args))
        unnorm = np.asarray(CL.zinb_log_prob(*args, normalized=False))
    np.testing.assert_array_equal(got[[0, 2]], [0.0, -np.inf])  # pi = 1: exactly
    np.testing.assert_allclose(got[[1, 3]], nb[[1, 3]], rtol=1e-13, atol=1e-14)  # pi = 0: the NB
    fin = np.isfinite(ref)
    assert np.array_equal(np.isfinite(got), fin)
    small = np.exp(t) < 1e3  # scipy's own accuracy (see test_nb_matches_scipy_in_float64)
    err = np.abs(got[fin] - ref[fin]) / np.maximum(1.0, np.abs(ref[fin]))
    assert err[small[fin]].max() < 1e-9 and err.max() < 1e-7, err.max()
    lf = special.gammaln(x + 1.0)
    assert np.all(np.abs(got[fin] - unnorm[fin] + lf[fin]) <= 4 * EPS64 * _scale(x, a, t, ref)[fin])
    # float32: the gate adds |log pi|, |log(1 - pi)| to the terms (each computed to a few eps)
    f = lambda v: jnp.asarray(v, jnp.float32)
    got32 = np.asarray(CL.zinb_log_prob(f(x), f(a), f(t), f(gate)), np.float64)
    a32, t32, g32 = (np.asarray(f(v), np.float64) for v in (a, t, gate))
    ref32 = _zinb_ref(x, _nb_ref(x, a32, t32), g32)
    scale = _scale(x, a32, t32, ref32) + np.where(np.isinf(g32), 0.0, np.abs(g32))
    fin = np.isfinite(ref32)
    assert np.array_equal(np.isfinite(got32), fin)
    assert (np.abs(got32[fin] - ref32[fin]) / (EPS32 * scale[fin])).max() < 16.0


def test_certain_gate_is_finite_with_finite_gradients():
    """pi = 1 (logit +inf): log ZINB(0) = 0, log ZINB(x > 0) = -inf; the gradient at x = 0 is 0."""
    x = jnp.asarray([0.0, 4.0])
    out = np.asarray(CL.zinb_log_prob(x, 2.0, 0.5, jnp.inf))
    np.testing.assert_array_equal(out, [0.0, -np.inf])
    g = jax.grad(lambda a, t, h: CL.zinb_log_prob(0.0, a, t, h), (0, 1, 2))(2.0, 0.5, jnp.inf)
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    log_pi, log_1mpi = CL.log_gate(jnp.asarray([jnp.inf, -jnp.inf, 0.0]))
    np.testing.assert_allclose(np.asarray(log_pi), [0.0, -np.inf, -math.log(2.0)], rtol=1e-7)  # float32
    np.testing.assert_allclose(np.asarray(log_1mpi), [-np.inf, 0.0, -math.log(2.0)], rtol=1e-7)


def test_mu_underflow_gives_the_zero_mass():
    """mu = 0 (log mu = -inf): NB(0) = 1 (no 0 * inf)."""
    out = np.asarray(CL.nb_log_prob(jnp.asarray([0.0, 2.0]), -jnp.inf, 0.3, normalized=False))
    assert out[0] == 0.0 and out[1] == -np.inf
    out = np.asarray(CL.nb_log_prob(jnp.asarray([0.0, 2.0]), -jnp.inf, 0.3))
    assert abs(out[0]) < 1e-6 and out[1] == -np.inf  # float32 gammaln(1) is ~5e-7, not 0


# ------------------------------------------------------------------------------------------------
# log Gamma and its series
# ------------------------------------------------------------------------------------------------

def test_series_against_mpmath():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    w = np.concatenate([np.logspace(1, 7, 40), np.linspace(6.0, 10.0, 9)])
    W = [mp.mpf(float(v)) for v in w]
    rest = np.array([float(mp.loggamma(v) - ((v - 0.5) * mp.log(v) - v + mp.log(2 * mp.pi) / 2)) for v in W])
    psi = np.array([float(mp.psi(0, v) - mp.log(v)) for v in W])
    tri = np.array([float(mp.psi(1, v) - 1 / v) for v in W])
    big = w >= 10
    with jax.enable_x64(True):
        Wj = jnp.asarray(w)
        # four terms from w = 10: error below the fifth, 1/(1188 w^9) < 1e-12
        np.testing.assert_allclose(np.asarray(CL.stirling_rest(Wj))[big], rest[big], rtol=1e-13,
                                   atol=1.0 / (1188 * 10.0 ** 9))
        np.testing.assert_allclose(np.asarray(CL.digamma_rest(Wj))[big], psi[big], rtol=1e-13,
                                   atol=1.0 / (132 * 10.0 ** 10))  # next term: B_10 / (10 w^10)
        np.testing.assert_allclose(np.asarray(CL.trigamma_rest(Wj))[big], tri[big], rtol=1e-13,
                                   atol=5.0 / (66 * 10.0 ** 11))  # next term: B_10 / w^11
        # three terms (the branch-free lgamma) from w = 6: error below the fourth term, 1/(1680 w^7)
        err = np.abs(np.asarray(CL.stirling_rest(Wj, 3)) - rest)
        assert np.all(err <= 1.0 / (1680 * w ** 7) + 1e-15), err.max()


def test_branch_free_lgamma_and_digamma():
    z = np.concatenate([np.logspace(-4, 6, 500), np.arange(1, 60) + 0.5])
    Z = jnp.asarray(z, jnp.float32)
    lg, dg = CL.lgamma_digamma(Z)
    tol = lambda ref: 1e-5 * np.maximum(1.0, np.abs(ref))  # float32 rounding of z and of the sums
    assert np.all(np.abs(np.asarray(lg, np.float64) - special.gammaln(z)) <= tol(special.gammaln(z)))
    assert np.all(np.abs(np.asarray(dg, np.float64) - special.digamma(z)) <= 1e-4 * np.maximum(1.0, np.abs(special.digamma(z))))
    np.testing.assert_array_equal(np.asarray(lg), np.asarray(CL.lgamma(Z)))  # the same arithmetic
    np.testing.assert_array_equal(np.asarray(CL.log_factorial(Z)), np.asarray(CL.lgamma(Z + 1.0)))
    # psi is the derivative of the branch-free lgamma (up to float32 rounding)
    auto = jax.vmap(jax.grad(CL.lgamma))(Z)
    np.testing.assert_allclose(np.asarray(auto), np.asarray(dg), rtol=1e-4, atol=1e-4)


def test_rising_ratio_and_its_derivatives_against_mpmath():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    for y in (0.0, 1.0, 7.0, 300.0, 1e5):
        for theta in (1e-3, 0.7, 9.99, 10.0, 55.0, 1e4, 1e9):
            Y, T = mp.mpf(y), mp.mpf(theta)
            D = float(mp.loggamma(Y + T) - mp.loggamma(T) - Y * mp.log(T))
            d1 = float(mp.psi(0, Y + T) - mp.psi(0, T))
            d2 = float(mp.psi(1, Y + T) - mp.psi(1, T))
            with jax.enable_x64(True):
                yy, tt = jnp.float64(y), jnp.float64(theta)
                got = [float(f(yy, tt)) for f in (CL.log_rising_ratio, CL.digamma_diff, CL.trigamma_diff)]
            # theta >= 10 subtracts y from (y + theta) log1p(y/theta) ~ y: a few eps of y are lost
            assert abs(got[0] - D) <= 1e-12 * max(1.0, abs(D)) + 4 * EPS64 * y, (y, theta, got[0], D)
            assert abs(got[1] - d1) <= 1e-11 * max(1.0, abs(d1)), (y, theta, got[1], d1)
            assert abs(got[2] - d2) <= 1e-7 * abs(d2) + 1e-300, (y, theta, got[2], d2)  # documented: 1e-7 relative


def test_modules_reexport_the_shared_functions():
    from jaxfactor.factorization import _zinb_lik as Z
    from jaxfactor.models import _count_nll as C
    from jaxfactor.models import _likelihoods as L

    assert L.nb_log_prob is CL.nb_log_prob and L.zinb_log_prob is CL.zinb_log_prob
    assert L.lgamma is CL.lgamma and L.log_factorial is CL.log_factorial
    assert C.lgamma_digamma is CL.lgamma_digamma
    assert Z.log_rising_ratio is CL.log_rising_ratio and Z.digamma_diff is CL.digamma_diff
    assert Z.trigamma_diff is CL.trigamma_diff
    # ZINB-WaVE's argument order (y, log mu, logit pi, log theta, zero_inflation) over the shared one
    with jax.enable_x64(True):
        y = jnp.arange(6.0)
        np.testing.assert_array_equal(Z.zinb_log_prob(y, 1.2, -0.4, 0.7), CL.zinb_log_prob(y, 1.2, 0.7, -0.4))
        np.testing.assert_array_equal(Z.zinb_log_prob(y, 1.2, -0.4, 0.7, False, log_factorial=False),
                                      CL.nb_log_prob(y, 1.2, 0.7, normalized=False))
