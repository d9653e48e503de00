"""k-means: k-means++ seeding and Lloyd's iterations (the one implementation in the package).

Objective (the *inertia*). For samples ``x_1 .. x_n`` in R^d and centres ``c_1 .. c_k``,

    J(c) = Σ_n min_j ‖x_n − c_j‖².

Seeding, k-means++ (Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding",
SODA 2007): the first centre is a uniform draw from the samples; each next one is sample ``x_n``
drawn with probability ``D(x_n)² / Σ_m D(x_m)²``, ``D`` the distance to the nearest centre chosen
so far. This is the paper's plain D² sampling (one candidate per centre), not scikit-learn's
greedy variant that keeps the best of ``2 + ⌊ln k⌋`` candidates.

Lloyd's iteration (Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28, 1982):

    assignment   ℓ_n = argmin_j ‖x_n − c_j‖²
    update       c_j = Σ_{n: ℓ_n = j} x_n / |{n : ℓ_n = j}|

Neither half increases J. Empty clusters: a centre that receives no sample is moved onto the
sample farthest from its own centre (the i-th empty centre onto the i-th farthest sample, as in
scikit-learn). J still cannot increase: every sample's own cluster is non-empty, so its mean is
among the new centres, and the moved centres only add candidates to each ``min``.

Stopping: after ``max_iter`` updates, or once an assignment repeats the previous one (a fixed
point), or once the squared centre shift ``Σ_j ‖c'_j − c_j‖²`` is at most
``tol · mean_f Var(x_·f)`` (scikit-learn's tolerance; ``tol=0`` waits for the fixed point).

Restarts: ``kmeans_fit`` runs ``n_init`` seedings + Lloyd fits under ``vmap`` over PRNG keys and
keeps the lowest inertia (ties: the first). Under ``vmap`` the ``while_loop`` runs until the slowest
restart stops; finished restarts are frozen, so each equals its lone fit. Distances use
``‖x‖² − 2 x·c + ‖c‖²``; ``kmeans_fit`` centres the data at its mean first (distances are
translation invariant; centring keeps the expansion accurate in float32) and shifts the centres
back. Sums over clusters are one-hot matrix products (no scatter-add), so a fixed seed gives the
same labels on every call.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._validate import as_matrix, check_nonnegative_float, check_positive_int


class KMeansResult(NamedTuple):
    """A k-means fit: ``centres`` (k, d); ``labels`` (n,) int32, each sample's nearest final
    centre; ``inertia`` J of the final centres; ``n_iter`` Lloyd updates taken; ``converged``
    whether a stopping rule other than ``max_iter`` fired."""

    centres: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def kmeans_plusplus(key, X, n_clusters):
    """Indices (``n_clusters``,) int32 of k-means++ centres by D² sampling (Arthur & Vassilvitskii,
    SODA 2007).

    The first centre is uniform over the samples; each next one is drawn with probability
    proportional to the squared distance to the nearest centre chosen so far (uniform when every
    sample coincides with a chosen centre).
    """
    n = X.shape[0]
    keys = jax.random.split(key, n_clusters)
    i0 = jax.random.randint(keys[0], (), 0, n)
    d2 = jnp.sum((X - X[i0]) ** 2, axis=1)
    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(i0.astype(jnp.int32))

    def body(j, carry):
        idx, d2 = carry
        logits = jnp.where(jnp.any(d2 > 0), jnp.log(d2), 0.0)  # all duplicates: uniform
        i = jax.random.categorical(keys[j], logits)
        d2 = jnp.minimum(d2, jnp.sum((X - X[i]) ** 2, axis=1))
        return idx.at[j].set(i.astype(jnp.int32)), d2

    idx, _ = lax.fori_loop(1, n_clusters, body, (idx, d2))
    return idx


def nearest_centre(X, centres):
    """``(labels, d2)``: ``ℓ_n = argmin_j ‖x_n − c_j‖²`` (int32, first on ties) and
    ``d2_n = max(0, min_j ‖x_n − c_j‖²)``, with ``‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖²``."""
    d2 = jnp.sum(X * X, axis=1)[:, None] - 2.0 * X @ centres.T + jnp.sum(centres**2, axis=1)[None]
    labels = jnp.argmin(d2, axis=1).astype(jnp.int32)
    return labels, jnp.maximum(jnp.take_along_axis(d2, labels[:, None], axis=1)[:, 0], 0.0)


def inertia(X, centres):
    """``J(c) = Σ_n min_j ‖x_n − c_j‖²``."""
    return jnp.sum(nearest_centre(X, centres)[1])


def _update(X, centres):
    """One Lloyd step: the assignment, then the cluster means (empty clusters onto the farthest
    samples). Returns ``(new centres, labels of the assignment)``."""
    k = centres.shape[0]
    labels, d2 = nearest_centre(X, centres)
    onehot = jax.nn.one_hot(labels, k, dtype=X.dtype)
    counts = jnp.sum(onehot, axis=0)
    means = (onehot.T @ X) / jnp.maximum(counts, 1.0)[:, None]
    empty = counts == 0
    far = lax.top_k(d2, k)[1]  # samples by decreasing distance to their centre
    rank = jnp.cumsum(empty) - 1  # i-th empty cluster -> i-th farthest sample
    moved = X[far[jnp.clip(rank, 0, k - 1)]]
    return jnp.where(empty[:, None], moved, means), labels


def lloyd_step(X, centres):
    """One Lloyd iteration ``c -> c'`` (assignment, then means; see the module docstring).
    ``inertia(X, c') <= inertia(X, c)``."""
    return _update(X, centres)[0]


def lloyd(X, centres, *, max_iter: int = 300, tol=1e-4) -> KMeansResult:
    """Lloyd's iterations from ``centres`` until a stopping rule of the module docstring fires.

    ``max_iter`` is static (a Python int); ``tol`` may be traced. The returned labels and
    inertia belong to the returned centres (one final assignment).
    """
    shift_tol = tol * jnp.mean(jnp.var(X, axis=0))

    def cond(carry):
        _, _, it, done = carry
        return (it < max_iter) & ~done

    def body(carry):
        c, prev_labels, it, _ = carry
        new, labels = _update(X, c)
        done = jnp.all(labels == prev_labels) | (jnp.sum((new - c) ** 2) <= shift_tol)
        return new, labels, it + 1, done

    start = (centres, jnp.full((X.shape[0],), -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    centres, _, it, done = lax.while_loop(cond, body, start)
    labels, d2 = nearest_centre(X, centres)
    return KMeansResult(centres, labels, jnp.sum(d2), it, done)


def _check_clusters(n_clusters, n):
    check_positive_int(n_clusters, "n_clusters")
    if n_clusters > n:
        raise ValueError(f"n_clusters = {n_clusters} exceeds the number of samples ({n})")


@partial(jax.jit, static_argnames=("n_clusters", "n_init", "max_iter"))
def kmeans_fit(key, X, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol=1e-4) -> KMeansResult:
    """k-means by ``n_init`` restarts (k-means++ seeding, then ``lloyd``) vmapped over
    ``jax.random.split(key, n_init)``; the restart of lowest inertia is returned.

    Args:
      key: PRNG key; the same key and data give the same result.
      X: (n, d) samples (integers are cast to the default float dtype).
      n_clusters, n_init, max_iter: static Python ints (``1 <= n_clusters <= n``).
      tol: relative centre-shift tolerance (see the module docstring); traced.
    """
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.result_type(float))
    _check_clusters(n_clusters, X.shape[0])
    check_positive_int(n_init, "n_init")
    check_positive_int(max_iter, "max_iter")
    shift = jnp.mean(X, axis=0)
    Xc = X - shift

    def one(k):
        return lloyd(Xc, Xc[kmeans_plusplus(k, Xc, n_clusters)], max_iter=max_iter, tol=tol)

    runs = jax.vmap(one)(jax.random.split(key, n_init))
    best = jnp.argmin(runs.inertia)
    res = jax.tree_util.tree_map(lambda a: a[best], runs)
    return res._replace(centres=res.centres + shift)


def kmeans(z, k: int, *, n_init: int = 10, max_iter: int = 300, seed: int = 0, tol: float = 1e-4) -> np.ndarray:
    """Host-side k-means labels (NumPy int array of length n) of the rows of ``z``: ``kmeans_fit``
    with ``jax.random.PRNGKey(seed)``, in the default float dtype. Deterministic given ``seed``."""
    arr = as_matrix(z, "z", nonnegative=False)
    _check_clusters(k, arr.shape[0])
    check_positive_int(seed, "seed", minimum=0)
    tol = check_nonnegative_float(tol, "tol")
    X = jnp.asarray(arr, dtype=jnp.result_type(float))
    res = kmeans_fit(jax.random.PRNGKey(seed), X, int(k), n_init=int(n_init), max_iter=int(max_iter), tol=tol)
    return np.asarray(res.labels)
