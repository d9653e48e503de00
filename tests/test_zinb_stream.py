"""ZINB-WaVE streamed over blocks of cells and genes (``_zinb_stream``) and zinbsurf-style
subsampling: the blocked step equals the whole-matrix step, the sparse per-gene sums equal the
dense ones, the streamed fit is monotone and reaches the whole-matrix fit, and bad input is
refused in one line before anything is compiled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from jaxfactor.data._simulate_zinb import simulate_zinb
from jaxfactor.factorization import _zinb_fit
from jaxfactor.factorization._zinb import ZINBState, default_hparams
from jaxfactor.factorization._zinb_alg import zinbwave_algorithm
from jaxfactor.factorization._zinb_model import canonical_correlations
from jaxfactor.factorization._zinb_stream import (
    block_counts, covering_subsample, zinbwave_stream_algorithm,
)


@pytest.fixture(scope="module")
def counts():
    sim = simulate_zinb(n_cells=150, n_genes=40, n_components=2, mean_log_mu=0.0, seed=3)
    Y = np.asarray(sim.X)
    keep_g = Y.sum(0) > 0
    keep_c = Y[:, keep_g].sum(1) > 0
    return Y[keep_c][:, keep_g], sim.W[keep_c]


@pytest.fixture(scope="module")
def whole(counts):
    return _zinb_fit.fit_zinbwave(counts[0], 2, max_iter=30)


def test_blocked_step_equals_the_whole_matrix_step(counts):
    """One outer iteration on blocks of 64 cells and 16 genes (both padded) from the same state,
    with a cell covariate the π side does not use: every parameter and the PLL to 1e-10."""
    Y, _ = counts
    n, J = Y.shape
    X = np.c_[np.ones(n), np.random.default_rng(0).integers(0, 2, n)]
    V = np.ones((J, 1))
    which = {"which_X_mu": (0, 1), "which_X_pi": (0,), "which_V_mu": (0,), "which_V_pi": (0,)}
    with jax.enable_x64(True):
        cast = lambda a: None if a is None else jnp.asarray(a, jnp.float64)  # noqa: E731
        hp = jax.tree_util.tree_map(cast, default_hparams(X, V))
        whole = _zinb_fit.model_data(Y, X, V, None, None, which, cast)
        dense = zinbwave_algorithm(2, intercepts=True, n_inner=2)
        rng = np.random.default_rng(1)  # a generic state (compiling the initialisation here would add nothing)
        s0 = ZINBState(jnp.asarray(np.r_[np.log(Y.mean(0) + 0.1)[None], np.zeros((1, J))]), jnp.full((2, J), -1.0),
                       jnp.zeros((1, n)), jnp.zeros((1, n)), jnp.asarray(0.3 * rng.normal(size=(n, 2))),
                       jnp.asarray(0.3 * rng.normal(size=(2, J))), jnp.asarray(0.3 * rng.normal(size=(2, J))),
                       jnp.zeros(J))
        s1 = jax.jit(dense.step)(s0, whole, hp)
        d = _zinb_fit.model_data(None, X, V, None, None, which, cast)
        blocks = block_counts(sp.csr_matrix(Y), d.X, d.V, d.X_pi, d.V_pi, covering_subsample(Y, 50, 0), 64, 16, cast)
        alg, loglik = zinbwave_stream_algorithm(2, intercepts=True, n_inner=2, block_cells=64, block_genes=16,
                                                local_dispersion=False)
        t1 = jax.jit(alg.step)(s0, blocks, hp)
        for name in s1._fields:
            a, b = np.asarray(getattr(s1, name)), np.asarray(getattr(t1, name))
            assert np.max(np.abs(a - b)) <= 1e-10 * max(np.max(np.abs(a)), 1.0), name
        assert np.isclose(float(jax.jit(alg.objective)(t1, blocks, hp)), float(dense.objective(s1, whole, hp)), rtol=1e-12)
        a, b = _zinb_fit._predictors_jit(s1, whole)
        ll_whole = float(jnp.sum(_zinb_fit._loglik_jit(whole.Y, a, b, s1.zeta, True)))
        assert np.isclose(float(jnp.sum(loglik(t1, blocks))), ll_whole, rtol=1e-12)


def test_streamed_fit_is_monotone_and_reaches_the_whole_fit(counts, whole):
    Y, _ = counts
    streamed = _zinb_fit.fit_zinbwave(sp.csr_matrix(Y), 2, max_iter=30, batch_size=64)
    assert np.all(np.diff(streamed.trace) >= -1e-5 * np.abs(streamed.trace[1:]))
    assert streamed.penalized_log_likelihood >= whole.penalized_log_likelihood - 1e-3 * abs(whole.penalized_log_likelihood)
    assert canonical_correlations(streamed.W, whole.W).min() > 0.99
    assert np.isfinite(streamed.log_likelihood) and streamed.W.shape == (Y.shape[0], 2)  # the streamed start included
    # a grid of penalty scales, streamed: one fit per value (the same compiled program), in order
    grid = _zinb_fit.fit_zinbwave(sp.csr_matrix(Y), 2, max_iter=30, batch_size=64, epsilon_grid=[None, 4.0 * Y.shape[1]])
    assert len(grid) == 2 and grid[0].penalized_log_likelihood == streamed.penalized_log_likelihood
    assert grid[1].hparams.eps_alpha == 4.0 and grid[1].penalized_log_likelihood < streamed.penalized_log_likelihood


def test_subsample_fits_part_and_projects_the_rest(counts, whole):
    Y, _ = counts
    part = _zinb_fit.fit_zinbwave(sp.csr_matrix(Y), 2, max_iter=30, subsample=100, seed=1)
    assert part.subsample is not None and 100 <= part.subsample.size < Y.shape[0]
    assert (np.asarray((sp.csr_matrix(Y)[part.subsample] > 0).sum(0)) > 0).all()  # every gene seen
    assert part.W.shape == whole.W.shape and part.gamma_mu.shape == whole.gamma_mu.shape
    # the PLL of every cell, at most the whole fit's (it maximises that PLL), and not far below
    assert part.penalized_log_likelihood <= whole.penalized_log_likelihood + 1e-4 * abs(whole.penalized_log_likelihood)
    assert part.penalized_log_likelihood >= whole.penalized_log_likelihood - 0.05 * abs(whole.penalized_log_likelihood)
    assert canonical_correlations(part.W, whole.W).min() > 0.9


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(subsample=0), "subsample"),
    (dict(batch_size=32, O_mu=np.zeros((5, 4))), "offsets"),
])
def test_bad_settings_are_one_line_errors(kw, match):
    Y = sp.csr_matrix(np.arange(1, 21, dtype=float).reshape(5, 4))
    with pytest.raises(ValueError, match=match) as err:
        _zinb_fit.fit_zinbwave(Y, 1, **kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value, match", [(-1.0, "negative"), (np.nan, "NaN"), (0.5, "non-integer")])
def test_bad_sparse_counts_are_refused(value, match):
    Y = sp.csr_matrix(np.arange(1, 21, dtype=float).reshape(5, 4))
    Y.data[3] = value
    with pytest.raises(ValueError, match=match):
        _zinb_fit.fit_zinbwave(Y, 1, batch_size=2)


def test_anndata_fit_keeps_sparse_counts_and_subsamples(counts):
    """``jaxfactor.zinbwave.fit`` on sparse counts with ``subsample`` (the same shapes as the test
    above: its compiled programs), and the runner's model with ``subsample``."""
    import anndata

    import jaxfactor as jf

    Y, _ = counts
    adata = anndata.AnnData(X=sp.csr_matrix(Y))
    out = jf.zinbwave.fit(adata, 2, max_iter=30, subsample=100, seed=1)
    assert out.obsm["X_zinbwave"].shape == (Y.shape[0], 2) and sp.issparse(adata.X)
    assert np.isfinite(out.uns["zinbwave"]["penalized_log_likelihood"])
    model = jf.family("zinbwave").fit(adata, n_components=2, max_iter=30, subsample=100, seed=1)
    np.testing.assert_allclose(model.result.W, out.obsm["X_zinbwave"], rtol=1e-4, atol=1e-5)
