"""k-means for the runner's label-recovery metrics (NumPy only: the runner needs no scikit-learn)."""

from __future__ import annotations

import numpy as np


def kmeans(z, k: int, *, n_init: int = 10, n_iter: int = 300, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), the best of
    ``n_init`` starts by inertia (scikit-learn's KMeans defaults, without the dependency)."""
    z = np.asarray(z, np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = [z[rng.integers(len(z))]]
        for _ in range(1, k):
            d2 = np.min(((z[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            centres.append(z[rng.choice(len(z), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(z))])
        c = np.asarray(centres)
        for _ in range(n_iter):
            lab = ((z[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)
            new = np.asarray([z[lab == j].mean(axis=0) if np.any(lab == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((z - c[lab]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = lab, inertia
    return best
