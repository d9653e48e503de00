"""k-means (jaxfactor._kmeans) against scikit-learn's KMeans inertia on simulated blobs, invariants
(labels in range, inertia never increasing along Lloyd steps, same seed same labels, empty and
duplicate clusters), and the names that reuse it (mixture.kmeans_plusplus, the runner's kmeans)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from jaxfactor._kmeans import inertia, kmeans, kmeans_fit, kmeans_plusplus, lloyd, lloyd_step, nearest_centre
from jaxfactor.cclone import adjusted_rand_index


def blobs(n=600, k=5, d=3, spread=1.0, separation=8.0, offset=0.0, seed=0):
    """n samples around k centres drawn in a cube of side ``separation``, unit-variance noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-separation, separation, (k, d))
    truth = rng.integers(k, size=n)
    return centres[truth] + spread * rng.standard_normal((n, d)) + offset, truth


def sk_inertia(X, k, labels):
    return sum(((X[labels == j] - X[labels == j].mean(0)) ** 2).sum() for j in range(k))


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_matches_sklearn_on_separated_blobs(offset):
    """Well-separated blobs: both find the same partition; inertia equal to float32 accuracy."""
    X, truth = blobs(offset=offset, seed=1)
    sk = KMeans(5, n_init=10, random_state=0).fit(X)
    labels = kmeans(X, 5, seed=0)
    assert adjusted_rand_index(labels, sk.labels_) == pytest.approx(1.0)
    # inertia of our labels, computed in float64 from the data: float32 sums, rtol 1e-5
    np.testing.assert_allclose(sk_inertia(X, 5, labels), sk.inertia_, rtol=1e-5)
    res = kmeans_fit(jax.random.PRNGKey(0), jnp.asarray(X, jnp.float32), 5)
    assert bool(res.converged)
    np.testing.assert_allclose(float(res.inertia), sk.inertia_, rtol=1e-4)  # float32 inertia from the expansion


def test_inertia_close_to_sklearn_on_overlapping_blobs():
    """Overlapping blobs (local optima exist): best of 10 restarts within 1 % of scikit-learn's."""
    X, _ = blobs(n=800, k=6, d=2, separation=3.0, seed=2)
    sk = KMeans(6, n_init=10, random_state=0).fit(X)
    for seed in range(3):
        labels = kmeans(X, 6, seed=seed)
        assert sk_inertia(X, 6, labels) <= sk.inertia_ * 1.01


def test_labels_in_range_and_centres_are_cluster_means():
    X, _ = blobs(n=300, k=4, seed=3)
    with jax.enable_x64(True):
        res = kmeans_fit(jax.random.PRNGKey(1), jnp.asarray(X), 4, tol=0.0)
        labels, centres = np.asarray(res.labels), np.asarray(res.centres)
    assert labels.shape == (300,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 4 and np.unique(labels).size == 4
    assert bool(res.converged) and 1 <= int(res.n_iter) <= 300
    # a fixed point (tol = 0): each centre is the mean of its samples (float64, rtol 1e-10)
    np.testing.assert_allclose(centres, [X[labels == j].mean(0) for j in range(4)], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(res.inertia), sk_inertia(X, 4, labels), rtol=1e-10)


def test_inertia_never_increases_along_lloyd_steps():
    """From a poor start (4 samples of one blob), J(c_{t+1}) <= J(c_t) (float64, slack 1e-12 J)."""
    X, truth = blobs(n=400, k=4, d=2, separation=4.0, seed=4)
    with jax.enable_x64(True):
        Xj = jnp.asarray(X)
        c = Xj[np.flatnonzero(truth == 0)[:4]]
        step = jax.jit(lloyd_step)
        trace = [float(inertia(Xj, c))]
        for _ in range(30):
            c = step(Xj, c)
            trace.append(float(inertia(Xj, c)))
    trace = np.asarray(trace)
    assert np.all(np.diff(trace) <= 1e-12 * trace[:-1])
    assert trace[-1] < trace[0]


def test_same_seed_same_labels():
    X, _ = blobs(n=500, k=8, d=4, separation=3.0, seed=5)
    a = kmeans(X, 8, seed=7)
    b = kmeans(X, 8, seed=7)
    np.testing.assert_array_equal(a, b)
    r1 = kmeans_fit(jax.random.PRNGKey(3), jnp.asarray(X, jnp.float32), 8, n_init=4)
    r2 = kmeans_fit(jax.random.PRNGKey(3), jnp.asarray(X, jnp.float32), 8, n_init=4)
    np.testing.assert_array_equal(np.asarray(r1.labels), np.asarray(r2.labels))
    np.testing.assert_array_equal(np.asarray(r1.centres), np.asarray(r2.centres))


def test_best_restart_is_kept():
    """The result is the restart of lowest inertia: no single restart does better."""
    X, _ = blobs(n=400, k=6, d=2, separation=3.0, seed=6)
    Xj = jnp.asarray(X, jnp.float32)
    best = kmeans_fit(jax.random.PRNGKey(0), Xj, 6, n_init=5)
    Xc = Xj - Xj.mean(0)
    one = jax.jit(lambda key: lloyd(Xc, Xc[kmeans_plusplus(key, Xc, 6)], max_iter=300, tol=1e-4).inertia)
    for key in jax.random.split(jax.random.PRNGKey(0), 5):
        assert float(best.inertia) <= float(one(key)) * (1 + 1e-6)  # float32 rounding


def test_empty_cluster_moves_to_the_farthest_sample():
    X, _ = blobs(n=200, k=2, d=2, seed=7)
    with jax.enable_x64(True):
        Xj = jnp.asarray(X)
        c = jnp.asarray([X[0], X[1], [1e6, 1e6]])  # the third centre is nobody's nearest
        labels, d2 = nearest_centre(Xj, c)
        assert not np.any(np.asarray(labels) == 2)
        new = np.asarray(lloyd_step(Xj, c))
        np.testing.assert_array_equal(new[2], X[int(np.argmax(np.asarray(d2)))])
        assert float(inertia(Xj, new)) <= float(inertia(Xj, c))
        res = lloyd(Xj, c, max_iter=100)
    assert np.all(np.isfinite(np.asarray(res.centres))) and np.unique(np.asarray(res.labels)).size == 3


def test_duplicate_samples_stay_finite():
    """Fewer distinct samples than clusters: finite centres, labels in range, zero inertia."""
    X = np.repeat(np.asarray([[0.0, 1.0], [2.0, 3.0]]), 10, axis=0)
    res = kmeans_fit(jax.random.PRNGKey(0), jnp.asarray(X, jnp.float32), 3)
    labels = np.asarray(res.labels)
    assert np.all(np.isfinite(np.asarray(res.centres))) and labels.min() >= 0 and labels.max() < 3
    assert float(res.inertia) == pytest.approx(0.0, abs=1e-5)


def test_kmeans_plusplus_picks_distinct_samples_and_is_reexported():
    import jaxfactor.mixture as mixture

    X, _ = blobs(n=100, k=5, seed=8)
    idx = np.asarray(kmeans_plusplus(jax.random.PRNGKey(0), jnp.asarray(X, jnp.float32), 10))
    assert idx.shape == (10,) and np.unique(idx).size == 10 and idx.min() >= 0 and idx.max() < 100
    assert mixture.kmeans_plusplus is kmeans_plusplus


def test_one_kmeans_in_the_package():
    """The runner's ARI scoring imports the shared k-means (runner/_cluster.py is gone)."""
    import importlib.util

    from jaxfactor.runner import _family_task

    assert "from .._kmeans import kmeans" in open(_family_task.__file__).read()  # its label recovery
    assert importlib.util.find_spec("jaxfactor.runner._cluster") is None


def test_new_data_of_the_same_shape_does_not_retrace():
    X, _ = blobs(n=150, k=3, seed=10)
    kmeans(X, 3, seed=0)
    size = kmeans_fit._cache_size()
    kmeans(X + 1.0, 3, seed=1)
    assert kmeans_fit._cache_size() == size


@pytest.mark.parametrize("z, k, kw, match", [
    (np.zeros((5, 2)), 6, {}, "exceeds the number of samples"),
    (np.zeros((5, 2)), 0, {}, "n_clusters"),
    (np.where(np.eye(5, 2) == 1, np.nan, 0.0), 2, {}, "NaN"),
    (np.zeros(5), 2, {}, "2-D"),
    (np.zeros((5, 2)), 2, {"n_init": 0}, "n_init"),
    (np.zeros((5, 2)), 2, {"tol": -1.0}, "tol"),
])
def test_bad_input(z, k, kw, match):
    with pytest.raises(ValueError, match=match):
        kmeans(z, k, **kw)
