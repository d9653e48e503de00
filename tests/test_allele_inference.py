"""Inference for the allele model: the hoisted/blocked likelihood against the per-entry reference,
SVI (restarts, minibatches, divergence, compile cache) and NUTS agreeing with SVI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor.cclone import adjusted_rand_index
from jaxfactor.models import allele_entry_loglik, allele_loglik, fit_allele_svi, simulate_alleles
from jaxfactor.models import _allele
from jaxfactor.models._allele_mcmc import fit_allele_nuts
from jaxfactor.models._allele_svi import _engine


@pytest.mark.parametrize("lik,kappa", [("binomial", None), ("betabinomial", 30.0)])
def test_blocked_loglik_equals_entrywise_reference(monkeypatch, lik, kappa):
    rng = np.random.default_rng(0)
    n, j, k = 161, 13, 3  # odd sizes: the last block is padded
    depth = rng.poisson(4, (n, j)) * (rng.random((n, j)) < 0.7)
    depth[:5] = 60  # deep entries: large exponents in the dropout terms
    alt = rng.binomial(depth, rng.random((n, j)))
    af = rng.beta(0.5, 0.5, (k, j))
    af[0, :3] = [0.0, 1.0, 1e-9]  # AF at the boundary
    with jax.enable_x64(True):
        a, d, f = (jnp.asarray(x, jnp.float64) for x in (alt, depth, af))
        ref = allele_entry_loglik(a[:, None, :], d[:, None, :], f[None], 0.2, 0.01, likelihood=lik,
                                  concentration=kappa).sum(-1)
        monkeypatch.setattr(_allele, "_CHUNK_ENTRIES", 40 * j * k)  # several blocks (new shape: new trace)
        got = allele_loglik(a, d, f, 0.2, 0.01, likelihood=lik, concentration=kappa)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-10, atol=1e-8)

        def total(f, fn):
            return jax.nn.logsumexp(fn(f), axis=1).sum()

        f2 = jnp.clip(f, 0.05, 0.95)
        g_ref = jax.grad(total)(f2, lambda f: allele_entry_loglik(a[:, None, :], d[:, None, :], f[None], 0.2, 0.01,
                                                                   likelihood=lik, concentration=kappa).sum(-1))
        g_new = jax.grad(total)(f2, lambda f: allele_loglik(a, d, f, 0.2, 0.01, likelihood=lik, concentration=kappa))
        np.testing.assert_allclose(np.asarray(g_new), np.asarray(g_ref), rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def small():
    return simulate_alleles(200, 30, 2, seed=1, mean_coverage=3.0, dropout=0.1)


def test_svi_minibatch_restarts_and_cache(small):
    sim = small
    full = fit_allele_svi(sim.alt, sim.depth, 2, num_steps=300, seed=0)
    misses = _engine.cache_info().misses
    again = fit_allele_svi(sim.alt, sim.depth, 2, num_steps=300, seed=0)
    assert _engine.cache_info().misses == misses  # same shape: the compiled programme is reused
    np.testing.assert_array_equal(full.losses, again.losses)  # deterministic for a seed
    mb = fit_allele_svi(sim.alt, sim.depth, 2, num_steps=600, seed=0, batch_size=50)
    assert adjusted_rand_index(mb.labels, sim.labels) >= 0.9
    assert mb.clone_prob.shape == (200, 2)
    # the minibatch loss is an unbiased (rescaled) estimate of the full loss: same scale
    assert abs(np.median(mb.losses[-100:]) - full.losses[-1]) < 0.1 * abs(full.losses[-1])
    rs = fit_allele_svi(sim.alt, sim.depth, 2, num_steps=300, seed=0, n_restarts=3, restart_steps=100)
    assert rs.restart_losses.shape == (3,) and rs.losses.shape == (300,)
    assert rs.losses[99] == pytest.approx(rs.restart_losses.min(), rel=0.05)
    assert adjusted_rand_index(rs.labels, sim.labels) >= 0.9


def test_learning_rates_side_by_side_equal_their_own_fits(small):
    """A sweep over lr is one vmapped SVI program (restarts × learning rates in one batch, the
    learning rate data of the optimiser state): each point equals its own fit; a diverging
    learning rate is skipped with the reason, the others go on."""
    from jaxfactor.models import fit_allele_svi_grid

    kw = dict(max_iter=200, seed=0, n_init=2, restart_steps=100)
    grid = fit_allele_svi_grid(small.alt, small.depth, 2, [0.02, 0.05, 1e4], **kw)
    assert isinstance(grid[2], str) and "SVI diverged at step" in grid[2] and "lr=10000" in grid[2]
    for lr, got in zip((0.02, 0.05), grid):
        want = fit_allele_svi(small.alt, small.depth, 2, lr=lr, **kw)
        np.testing.assert_allclose(got.losses, want.losses, rtol=1e-4)
        np.testing.assert_allclose(got.restart_losses, want.restart_losses, rtol=1e-4)
        np.testing.assert_allclose(got.clone_prob, want.clone_prob, atol=1e-4)
    with pytest.raises(ValueError, match="lr"):
        fit_allele_svi_grid(small.alt, small.depth, 2, [0.05, -1.0], **kw)


def test_svi_divergence_names_the_step(small):
    with pytest.raises(FloatingPointError, match=r"SVI diverged at step \d+"):
        fit_allele_svi(small.alt, small.depth, 2, num_steps=100, lr=1e3)


def test_bad_svi_settings(small):
    a, d = small.alt, small.depth
    for kw in ({"batch_size": 0}, {"n_restarts": 0}, {"lr": -1.0}, {"num_steps": 0}, {"pi_prior": 1.0}):
        with pytest.raises(ValueError):
            fit_allele_svi(a, d, 2, **kw)
    with pytest.raises(ValueError, match="exceeds the number of cells"):
        fit_allele_svi(a[:3], d[:3], 4)


def test_nuts_agrees_with_svi():
    """SVI (AutoNormal) and NUTS on a 200-cell x 25-variant problem: same clone probabilities and
    allele-frequency posterior means (within a fraction of the posterior sd)."""
    sim = simulate_alleles(200, 25, 3, seed=1, mean_coverage=3.0, dropout=0.1)
    svi = fit_allele_svi(sim.alt, sim.depth, 3, num_steps=1500, guide="normal", lr=0.02, seed=0)
    nuts = fit_allele_nuts(sim.alt, sim.depth, 3, init=svi, num_warmup=100, num_samples=150, seed=0)
    assert nuts.divergences <= 5
    assert np.abs(nuts.clone_prob - svi.clone_prob).max() < 0.05
    assert (nuts.clone_prob.argmax(1) == svi.labels).mean() >= 0.99
    diff = np.abs(nuts.af_mean - svi.af)
    assert diff.mean() < 0.015 and np.median(diff / nuts.af_sd) < 0.5
    assert abs(nuts.dropout_mean - svi.dropout) < 0.03
    np.testing.assert_allclose(nuts.pi_mean, svi.pi, atol=0.03)
    assert adjusted_rand_index(nuts.clone_prob.argmax(1), sim.labels) >= 0.9
    with pytest.raises(ValueError, match="too large for NUTS"):
        fit_allele_nuts(np.zeros((5000, 200)), np.zeros((5000, 200)), 4)


def test_sparse_loglik_equals_dense():
    """Covered entries only (SparseAlleleCounts: one term per distinct (variant, ALT, DP) triple,
    segment sums over cells) = the dense blocked likelihood, values and gradients (float64:
    rtol 1e-10); input checks name the problem."""
    import scipy.sparse as sp

    from jaxfactor.models._allele import sparse_allele_counts

    rng = np.random.default_rng(3)
    n, j, k = 41, 7, 3
    depth = rng.poisson(3, (n, j)) * (rng.random((n, j)) < 0.4)
    depth[0], depth[1, :] = 0, 50  # an uncovered cell, a deep one
    alt = rng.binomial(depth, rng.random((n, j)))
    af = np.clip(rng.beta(0.5, 0.5, (k, j)), 0.05, 0.95)
    counts = sparse_allele_counts(sp.csr_matrix(alt), sp.csr_matrix(depth))
    assert counts.nnz >= np.count_nonzero(depth) and counts.shape == (n, j)
    with jax.enable_x64(True):
        a, d, f = (jnp.asarray(x, jnp.float64) for x in (alt, depth, af))
        for lik, kappa in (("binomial", None), ("betabinomial", 30.0)):
            def both(f, a, d, counts):  # one compiled programme: values and gradients of both paths
                dense = lambda f: allele_loglik(a, d, f, 0.2, 0.01, likelihood=lik, concentration=kappa)  # noqa: E731
                sparse = lambda f: allele_loglik(counts, None, f, 0.2, 0.01, likelihood=lik,  # noqa: E731
                                                 concentration=kappa)
                total = lambda fn: jax.value_and_grad(lambda f: jax.nn.logsumexp(fn(f), axis=1).sum())(f)  # noqa: E731
                return dense(f), sparse(f), total(dense)[1], total(sparse)[1]

            want, got, g_want, g_got = jax.jit(both)(f, a, d, counts)
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-8, atol=1e-8)
    bad = alt.copy()
    bad[0, 0] = 1  # ALT reads where depth is 0
    with pytest.raises(ValueError, match="alt exceeds depth"):
        sparse_allele_counts(sp.csr_matrix(bad), sp.csr_matrix(depth))
    with pytest.raises(ValueError, match="negative"):
        sparse_allele_counts(-np.ones((2, 2)), np.ones((2, 2)))


def test_sparse_svi_equals_dense_svi(small):
    """The SVI on the sparse path (scipy input, or sparse=True) follows the dense path's ELBO trace
    and ends at the same posteriors (float32: rtol 1e-4 on the losses, 1e-3 on probabilities);
    tol stops early; init_af seeds the first start."""
    import scipy.sparse as sp

    a, d = small.alt, small.depth  # the shapes of the tests above: their compiled sparse programme is reused
    kw = dict(max_iter=100, seed=0)
    dense = fit_allele_svi(a, d, 2, sparse=False, **kw)
    sparse = fit_allele_svi(sp.csr_matrix(a), sp.csr_matrix(d), 2, **kw)
    np.testing.assert_allclose(sparse.losses, dense.losses, rtol=1e-4)
    np.testing.assert_allclose(sparse.clone_prob, dense.clone_prob, atol=1e-3)
    assert sparse.log_likelihood == pytest.approx(dense.log_likelihood, rel=1e-4)
    early = fit_allele_svi(a, d, 2, sparse=True, tol=1e-2, init_af=small.af[None], **{**kw, "max_iter": 500})
    assert len(early.losses) < 500  # stopped on the relative change of the chunk-mean -ELBO
    with pytest.raises(ValueError, match="init_af"):
        fit_allele_svi(a, d, 2, init_af=np.full((3, a.shape[1]), 0.5), sparse=True, **kw)


def _svi_program_digest():
    import hashlib

    from jaxfactor.models._allele_svi import _engine

    _, start, advance = _engine(20, 5, 2, "binomial", "normal", None, 4, ())
    a, germ = jnp.ones((20, 5), jnp.float32), jnp.zeros(5, bool)
    st = start(jax.random.split(jax.random.PRNGKey(0), 1), jnp.full((1, 2, 5), 0.5), jnp.full((1,), 0.05), a, a, germ)
    return hashlib.sha256(advance.lower(st, a, a, germ).as_text().encode()).hexdigest()


_HLO_SCRIPT = "import sys; sys.path.insert(0, sys.argv[1]); from test_allele_inference import _svi_program_digest; " \
              "print(_svi_program_digest())"


def test_svi_program_is_the_same_in_every_process():
    """The SVI step traces to the same program whatever the process's string hashing (NumPyro's
    Trace_ELBO sums its sites in set order, so JAX's persistent cache missed it in every new
    process), and its ELBO equals Trace_ELBO's."""
    import os
    import subprocess
    import sys

    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from jaxfactor.models._allele_svi import _TraceOrderELBO

    # the subprocess hashes strings with another seed than this process (random unless set): the same program
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _HLO_SCRIPT, os.path.dirname(os.path.abspath(__file__))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == _svi_program_digest()

    sim = simulate_alleles(30, 6, 2, seed=0, mean_coverage=3.0)
    a, d = jnp.asarray(sim.alt, jnp.float32), jnp.asarray(sim.depth, jnp.float32)

    def model(a, d):
        return _allele.allele_model(a, d, n_cells=30, n_variants=6, n_clones=2)

    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), a, d))
    for key in jax.random.split(jax.random.PRNGKey(1), 3):
        want = Trace_ELBO().loss(key, params, model, guide, a, d)
        got = _TraceOrderELBO().loss(key, params, model, guide, a, d)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
