"""Every registered algorithm honours the contract: jit, no retrace, vmap over seeds, finite
outputs, and a non-increasing objective where it promises one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfactor as jf
from jaxfactor import Algorithm

NAMES = sorted(jf.registered())


def test_registry_is_populated():
    assert {"nmf_hals", "nmf_mu", "nmf_pgd", "nmf_kl"} <= set(NAMES)


def _counting(alg: Algorithm):
    """The same algorithm with a counter of how often its step is traced."""
    calls = {"n": 0}

    def step(state, data, hp):
        calls["n"] += 1
        return alg.step(state, data, hp)

    return alg._replace(step=step), calls


@pytest.mark.parametrize("name", NAMES)
def test_conformance(name):
    alg, data, hp = jf.registered()[name]()
    assert isinstance(alg, Algorithm)
    counted, calls = _counting(alg)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)

    # jit-compiles and returns finite results (the seed is the last restart's below, so this fit
    # is also the lone fit that restart must equal: one compiled program less per algorithm)
    res = jf.fit(counted, data, hp, keys[2], max_iter=30, tol=0.0, chunk_size=1)
    assert int(res.n_iter) == 30
    for leaf in jax.tree_util.tree_leaves(res):
        assert np.all(np.isfinite(np.asarray(leaf, dtype=float)))
    traced = calls["n"]
    assert traced >= 1

    # no retrace for new data of the same shape and new hyperparameter values
    # (index arrays, e.g. the allele model's entry-to-cell map, stay as they are)
    data2 = jax.tree_util.tree_map(lambda x: x * 1.5 if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, data)
    hp2 = jax.tree_util.tree_map(lambda x: x * 0.5, hp)
    jf.fit(counted, data2, hp2, jax.random.PRNGKey(1), max_iter=30, tol=0.0, chunk_size=1)
    assert calls["n"] == traced, "a second call with same-shaped inputs retraced"

    # monotone where promised (float32 rounding allowance: 1e-5 relative, per step)
    trace = np.asarray(res.trace, dtype=np.float64)
    if alg.monotone:
        assert np.all(np.diff(trace) <= 1e-5 * np.abs(trace[:-1])), np.diff(trace).max()

    # vmaps over seeds: each restart equals a lone fit with that key (``res``: the same 30 steps,
    # checked after every step instead of every 10th; tol=0 stops neither early)
    grid = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], hp)
    many = jf.fit_many(alg, data, grid, keys, max_iter=30, tol=0.0, chunk_size=10)
    assert many.objective.shape == (1, 3)
    assert np.all(np.isfinite(np.asarray(many.objective)))
    # float32: the vmapped program sums in another order (1.6e-5 seen on an AVX2 CPU at -O0)
    np.testing.assert_allclose(many.objective[0, 2], res.objective, rtol=5e-5)
    assert int(many.best_index[0]) == int(np.argmin(np.asarray(many.objective[0])))
