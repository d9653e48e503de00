"""Binomial mixture of allele counts: MAP-EM and mean-field VB (vireoSNP's BinomMixtureVB)."""

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import gammaln
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from jaxfactor.cclone._metrics import adjusted_rand_index
from jaxfactor.data import simulate_clones
from jaxfactor.mixture._binomial import fit_binomial_mixture, fit_binomial_mixture_anndata


@pytest.fixture(scope="module")
def sim():
    # 4 clones, no healthy cells, mean coverage 4 before 40 % dropout: a moderate-depth problem
    return simulate_clones(n_cells=400, n_variants=60, n_clones=4, healthy_fraction=0.0, mean_coverage=4.0, seed=3)


def _log_coef(alt, depth):
    return float(np.sum(gammaln(depth + 1.0) - gammaln(alt + 1.0) - gammaln(depth - alt + 1.0)))


def test_vb_matches_vireo_binom_mixture_vb(sim):
    vireo = pytest.importorskip("vireoSNP", reason="vireoSNP not installed (pip install vireoSNP; the reference VB)")
    from vireoSNP.utils.vireo_base import get_binom_coeff

    n, p, k = *sim.alt.shape, 4
    P0 = np.random.default_rng(0).random((n, k))
    AD, DP = sp.csc_matrix(sim.alt.T), sp.csc_matrix(sim.coverage.T)  # vireoSNP takes variants x cells
    ref = vireo.BinomMixtureVB(n, p, k, ID_prob_init=P0)  # its default priors: Beta(1, 1) on θ, uniform π
    t1, t2 = 15, X64["max_iter"] - 15
    # n_init=1: one run of t1 iterations from P0, then a re-fit from its end state for t2 more;
    # min_iter > max_iter disables vireoSNP's early stop, so both run to the end.
    ref.fit(AD, DP, n_init=1, max_iter=t2, max_iter_pre=t1, min_iter=10**6, verbose=False)
    # vireoSNP stores ELBO[:it] of each run (the last iteration of each is dropped) and adds the
    # binomial coefficients as a float32 sum; take that constant off and compare our exact ELBO
    # without its (float64) constant.
    vireo_elbo = ref.ELBO_iters - np.sum(get_binom_coeff(AD, DP, is_log=True))
    with jax.enable_x64(True):
        res = fit_binomial_mixture(sim.alt, sim.coverage, k, method="vb", init_prob=P0, **X64)
    ours = res.trace - _log_coef(sim.alt, sim.coverage)  # trace[t] = ELBO after t iterations
    idx = np.r_[1:t1, t1 + 1 : t1 + t2]
    assert vireo_elbo.shape == idx.shape
    np.testing.assert_allclose(ours[idx], vireo_elbo, rtol=1e-6)  # float64; observed ~1e-15
    np.testing.assert_allclose(res.clone_prob, ref.ID_prob, atol=1e-6)  # same final assignments
    np.testing.assert_allclose(res.clone_af, ref.beta_mu, rtol=1e-6)
    # the ELBO never decreases (float64 rounding allowance)
    assert np.all(np.diff(res.trace) >= -1e-9 * np.abs(res.trace[:-1]))


# float64 fits below share one setting (init_prob, 25 steps of 1, tol=0) so each compiles once
X64 = dict(max_iter=25, tol=0.0, chunk_size=1)


def _p0(seed, k=4, n=400):
    return np.random.default_rng(seed).random((n, k))


def test_vb_with_learned_weights_elbo_never_decreases(sim):
    with jax.enable_x64(True):
        res = fit_binomial_mixture(sim.alt, sim.coverage, 4, method="vb", learn_weights=True, dirichlet=2.0,
                                   init_prob=_p0(1), **X64)
    assert np.all(np.diff(res.trace) >= -1e-9 * np.abs(res.trace[:-1]))  # float64 rounding
    np.testing.assert_allclose(res.clone_prob.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.weights.sum(), 1.0, atol=1e-12)


def test_em_log_posterior_never_decreases_and_is_exact(sim):
    a, b, alpha = 1.5, 2.0, 1.2
    with jax.enable_x64(True):
        res = fit_binomial_mixture(sim.alt, sim.coverage, 4, method="em", beta_a=a, beta_b=b, dirichlet=alpha,
                                   init_prob=_p0(1), **X64)
    assert np.all(np.diff(res.trace) >= -1e-9 * np.abs(res.trace[:-1]))  # float64 rounding
    # reference: scipy log-pmfs at the returned parameters
    af, w = res.clone_af, res.weights
    comp = np.stack([binom.logpmf(sim.alt, sim.coverage, af[:, c][None, :]).sum(1) for c in range(4)], 1) + np.log(w)
    m = comp.max(1, keepdims=True)
    loglik = float(np.sum(m[:, 0] + np.log(np.exp(comp - m).sum(1))))
    log_prior = float(beta_dist.logpdf(af, a, b).sum()) + float(
        gammaln(4 * alpha) - 4 * gammaln(alpha) + np.sum((alpha - 1) * np.log(w))
    )
    np.testing.assert_allclose(res.log_likelihood, loglik, rtol=1e-10)
    np.testing.assert_allclose(res.log_posterior, loglik + log_prior, rtol=1e-10)
    np.testing.assert_allclose(res.clone_prob, np.exp(comp - m) / np.exp(comp - m).sum(1, keepdims=True), atol=1e-10)


@pytest.mark.parametrize("method", ["em", "vb"])
def test_recovers_simulated_clones(sim, method):
    res = fit_binomial_mixture(sim.alt, sim.coverage, 4, method=method, n_init=4, seed=0)  # float32
    assert res.converged
    assert adjusted_rand_index(res.labels, sim.labels) > 0.9
    assert np.all(np.isfinite(res.clone_af)) and res.clone_af.shape == (60, 4)
    np.testing.assert_allclose(res.weights.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["em", "vb"])
def test_sparse_input_matches_dense(sim, method):
    kw = dict(method=method, init_prob=_p0(1), **X64)
    with jax.enable_x64(True):
        dense = fit_binomial_mixture(sim.alt, sim.coverage, 4, **kw)
        sparse = fit_binomial_mixture(sp.csr_matrix(sim.alt), sp.csr_matrix(sim.coverage), 4, sparse=True, **kw)
    np.testing.assert_allclose(sparse.trace, dense.trace, rtol=1e-10)  # float64: summation order only
    np.testing.assert_allclose(sparse.clone_prob, dense.clone_prob, atol=1e-8)
    np.testing.assert_allclose(sparse.clone_af, dense.clone_af, atol=1e-8)


def test_collapsed_clone_is_finite_and_reported():
    # two sharply separated groups, deep coverage; a third clone that starts empty cannot win cells
    alt = np.zeros((12, 8), np.int64)
    alt[:6, :4] = 20
    alt[6:, 4:] = 20
    depth = np.full((12, 8), 20)
    P0 = np.zeros((12, 3))
    P0[:6, 0] = P0[6:, 1] = 1.0
    for method in ("em", "vb"):
        with pytest.warns(UserWarning, match=r"clone\(s\) \[2\] collapsed"):
            res = fit_binomial_mixture(depth * 0 + alt, depth, 3, method=method, init_prob=P0, max_iter=20, tol=0.0)
        for arr in (res.clone_prob, res.clone_af, res.weights, res.trace):
            assert np.all(np.isfinite(arr)), method
        assert res.collapsed == (2,)
        np.testing.assert_allclose(res.clone_af[:, 2], 0.5, atol=1e-6)  # prior mean a/(a+b): no data
        assert adjusted_rand_index(res.labels, np.repeat([0, 1], 6)) == 1.0


def test_anndata_entry_point(sim, tmp_path):
    adata = sim.to_anndata()
    before = adata.copy()
    out = fit_binomial_mixture_anndata(adata, 4, method="vb", max_iter=50)
    assert out is not adata and "clone_prob" not in adata.obsm and "clone_af" not in adata.varm
    np.testing.assert_array_equal(adata.layers["ALT"].toarray(), before.layers["ALT"].toarray())
    assert out.obsm["clone_prob"].shape == (400, 4) and out.varm["clone_af"].shape == (60, 4)
    assert out.uns["binomial_mixture"]["method"] == "vb"
    out.write_h5ad(tmp_path / "bmm.h5ad")  # uns is serialisable
    filtered = fit_binomial_mixture_anndata(adata, 3, filter=True, min_maf=1, min_cell_coverage=1, max_iter=20, tol=0.0)
    assert filtered.n_vars <= adata.n_vars and filtered.varm["clone_af"].shape == (filtered.n_vars, 3)
    with pytest.raises(ValueError, match="unknown argument"):
        fit_binomial_mixture_anndata(adata, 3, not_an_option=3)
    with pytest.warns(DeprecationWarning, match="'n_clones' is deprecated"):  # the old name of n_components
        assert fit_binomial_mixture_anndata(adata, n_clones=2, max_iter=5).obsm["clone_prob"].shape[1] == 2


def _bad_cases():
    alt = np.array([[1, 0, 2], [0, 3, 1]])
    dp = np.array([[2, 1, 2], [1, 3, 4]])
    nan = dp.astype(float)
    nan[0, 0] = np.nan
    return [
        (dict(alt=alt, depth=nan, n_clones=2), "NaN"),
        (dict(alt=alt - 2, depth=dp, n_clones=2), "negative"),
        (dict(alt=alt + 0.5, depth=dp + 1, n_clones=2), "non-integer"),
        (dict(alt=alt + 1, depth=dp, n_clones=2), r"alt exceeds depth at 2 entries .*cell 0, variant 2: alt=3 > depth=2"),
        (dict(alt=alt, depth=dp[:, :2], n_clones=2), "shape"),
        (dict(alt=alt, depth=dp, n_clones=3), "n_clones"),
        (dict(alt=alt, depth=dp, n_clones=0), "n_clones"),
        (dict(alt=alt, depth=dp, n_clones=2, method="gibbs"), "unknown method"),
        (dict(alt=alt, depth=dp, n_clones=2, beta_a=0.5), "beta_a"),
        (dict(alt=alt, depth=dp, n_clones=2, method="vb", dirichlet=0.0), "dirichlet"),
        (dict(alt=alt, depth=dp, n_clones=2, init_prob=np.ones((2, 3))), "init_prob"),
        (dict(alt=alt, depth=dp, n_clones=2, init_prob=np.ones((2, 2)), n_init=2), "n_init"),
        (dict(alt=sp.csr_matrix(alt + 1), depth=sp.csr_matrix(dp), n_clones=2), "alt exceeds depth"),
    ]


@pytest.mark.parametrize("kwargs,match", _bad_cases())
def test_bad_inputs_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        fit_binomial_mixture(**kwargs)
    assert "\n" not in str(err.value)


def test_sparse_input_is_never_modified():
    """The fit compacts explicit zeros of its own copies: the caller's CSR arrays stay as they were
    (an in-place eliminate_zeros once left the caller's indptr pointing outside its matrix)."""
    rng = np.random.default_rng(0)
    d = rng.poisson(0.5, (60, 12))
    A, D = sp.csr_matrix(rng.binomial(d, 0.3)), sp.csr_matrix(d)
    A.data[:5] = 0  # explicit zeros
    before = [x.copy() for x in (A.data, A.indices, A.indptr, D.data, D.indices, D.indptr)]
    fit_binomial_mixture(A, D, 2, n_init=1, max_iter=5, tol=0.0)
    for x, y in zip(before, (A.data, A.indices, A.indptr, D.data, D.indices, D.indptr)):
        np.testing.assert_array_equal(x, y)
