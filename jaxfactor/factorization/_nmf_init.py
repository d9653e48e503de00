"""Initial factors for NMF: scaled random, NNDSVD and its variants.

- random: ``|N(0, 1)| * sqrt(mean(X) / k)``, the scaling scikit-learn uses, so that ``WH`` has
  the magnitude of ``X`` from the start.
- NNDSVD: Boutsidis & Gallopoulos, "SVD based initialization: A head start for nonnegative
  matrix factorization", Pattern Recognition 41 (2008), Algorithm on p. 1353: each singular
  triplet (σ_j, u_j, v_j) is replaced by the dominant of its positive and negative parts,
  ``sqrt(σ_j · ‖u±‖‖v±‖) · (u±/‖u±‖, v±/‖v±‖)``. Zeros are kept (``nndsvd``), filled with
  ``mean(X)`` (``nndsvda``, better for MU which cannot move a zero) or with small random values
  (``nndsvdar``).
- The truncated SVD is the randomized range finder of Halko, Martinsson & Tropp, SIAM Review 53
  (2011), Algorithms 4.4 (subspace iteration) and 5.1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INITS = ("random", "nndsvd", "nndsvda", "nndsvdar")


def randomized_svd(key, X, rank: int, *, oversample: int = 10, n_iter: int = 7):
    """Leading ``rank`` singular triplets ``(U, s, Vt)`` of ``X`` by subspace iteration."""
    n, p = X.shape
    width = min(rank + oversample, n, p)
    omega = jax.random.normal(key, (p, width), X.dtype)
    Q, _ = jnp.linalg.qr(X @ omega)

    def power(Q, _):
        Z, _ = jnp.linalg.qr(X.T @ Q)
        Q, _ = jnp.linalg.qr(X @ Z)
        return Q, None

    Q, _ = jax.lax.scan(power, Q, None, length=n_iter)
    Ub, s, Vt = jnp.linalg.svd(Q.T @ X, full_matrices=False)
    return (Q @ Ub)[:, :rank], s[:rank], Vt[:rank]


def _check_public(X, rank: int) -> None:
    """The checks of ``nmf.fit`` for a direct call with concrete data (inside a traced init the
    fit has checked already): non-negative finite X, ``1 <= rank <= min(X.shape)``."""
    if isinstance(X, jax.core.Tracer):
        return
    from .._validate import as_matrix, check_n_components

    check_n_components(rank, as_matrix(X, "X").shape)


def random_init(key, X, rank: int):
    """W, H with |N(0, 1)| entries scaled to the data's mean (scikit-learn's ``init="random"``)."""
    _check_public(X, rank)
    n, p = X.shape
    scale = jnp.sqrt(jnp.mean(X) / rank)
    kw, kh = jax.random.split(key)
    W = scale * jnp.abs(jax.random.normal(kw, (n, rank), X.dtype))
    H = scale * jnp.abs(jax.random.normal(kh, (rank, p), X.dtype))
    return W, H


def nndsvd_init(key, X, rank: int, variant: str = "nndsvda"):
    """NNDSVD and its variants (see the module docstring)."""
    _check_public(X, rank)
    ksvd, kfill = jax.random.split(key)
    U, s, Vt = randomized_svd(ksvd, X, rank)
    x, y = U.T, Vt  # (rank, n), (rank, p): one singular pair per row
    xp, xn = jnp.maximum(x, 0), jnp.maximum(-x, 0)
    yp, yn = jnp.maximum(y, 0), jnp.maximum(-y, 0)
    nrm = lambda a: jnp.linalg.norm(a, axis=1)
    xpn, xnn, ypn, ynn = nrm(xp), nrm(xn), nrm(yp), nrm(yn)
    mp, mn = xpn * ypn, xnn * ynn
    use_pos = mp > mn
    tiny = jnp.finfo(X.dtype).tiny
    u = jnp.where(use_pos[:, None], xp / jnp.maximum(xpn, tiny)[:, None], xn / jnp.maximum(xnn, tiny)[:, None])
    v = jnp.where(use_pos[:, None], yp / jnp.maximum(ypn, tiny)[:, None], yn / jnp.maximum(ynn, tiny)[:, None])
    sigma = jnp.where(use_pos, mp, mn)
    lam = jnp.sqrt(s * sigma)
    # The leading pair of a non-negative matrix is sign-consistent: take |u_0|, |v_0| (Perron–Frobenius).
    lam = lam.at[0].set(jnp.sqrt(s[0]))
    u = u.at[0].set(jnp.abs(x[0]))
    v = v.at[0].set(jnp.abs(y[0]))
    W = (lam[:, None] * u).T
    H = lam[:, None] * v
    eps = jnp.finfo(jnp.float32).eps
    W = jnp.where(W < eps, 0.0, W)
    H = jnp.where(H < eps, 0.0, H)
    if variant == "nndsvda":
        avg = jnp.mean(X)
        W = jnp.where(W == 0, avg, W)
        H = jnp.where(H == 0, avg, H)
    elif variant == "nndsvdar":
        avg = jnp.mean(X)
        kw, kh = jax.random.split(kfill)
        W = jnp.where(W == 0, jnp.abs(avg * jax.random.normal(kw, W.shape, X.dtype) / 100), W)
        H = jnp.where(H == 0, jnp.abs(avg * jax.random.normal(kh, H.shape, X.dtype) / 100), H)
    return W.astype(X.dtype), H.astype(X.dtype)


def initialize(key, X, rank: int, method: str):
    """Dispatch on the (static) init name."""
    if method == "random":
        return random_init(key, X, rank)
    if method in ("nndsvd", "nndsvda", "nndsvdar"):
        return nndsvd_init(key, X, rank, method)
    raise ValueError(f"unknown NMF init {method!r}; choose one of {', '.join(INITS)} or pass (W0, H0)")
