"""Scores used to summarise and select CCLONE fits."""

from __future__ import annotations

import numpy as np


def orth_score(C: np.ndarray) -> float:
    """CCLONE's orthogonality score: minus the mean cosine similarity over pairs of columns of C.

    Near 0 when factors claim disjoint cells, near −1 when they overlap. (CCLONE's code compares
    neighbouring columns only; for k = 2 the two agree, for k > 2 we average over all pairs.)
    """
    k = C.shape[1]
    if k < 2:
        return 0.0
    norms = np.maximum(np.linalg.norm(C, axis=0), 1e-12)
    cos = (C.T @ C) / np.outer(norms, norms)
    iu = np.triu_indices(k, 1)
    return float(-cos[iu].mean())


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie, J. Classification 2, 1985)."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    n = a.size
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    comb = lambda x: x * (x - 1) / 2.0
    sum_ij = comb(table).sum()
    sum_a, sum_b = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = sum_a * sum_b / comb(n) if n > 1 else 0.0
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:  # both labelings trivial (one cluster, or all singletons)
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def recurrences(labelings, best: int, min_ari: float = 0.99) -> int:
    """How many of ``labelings`` (one label vector per fit, ``best`` among them) partition the
    cells as ``labelings[best]`` does (ARI >= ``min_ari``, itself included): how often random
    starts reached the best optimum, the stopping rule of the restart searches."""
    ref = labelings[best]
    return sum(adjusted_rand_index(ref, lab) >= min_ari for lab in labelings)
