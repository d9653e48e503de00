"""Labelling clones (or CCLONE factors) cancer / healthy from a cell-type annotation, and calling cells.

One rule for every method, CCLONE's (Marot-Lassauzaie et al., Bioinformatics 2024), applied to a
cells × clones *membership* matrix ``P``: posterior clone probabilities (rows sum to 1) for the
count models, CCLONE's loadings ``C`` (in [0, 1]) for CCLONE.

**Clones.** Each cell is assigned to its most probable clone (argmax of its row). Known healthy
types (T, B, NK cells in AML) usually outnumber known cancer types, so each kind is weighted by
the inverse of its total: clone k's *balanced cancer share* is

    s_k = (n_ck / N_c) / (n_ck / N_c + n_hk / N_h),

with n_ck, n_hk the cancer-type and healthy-type cells assigned to k and N_c, N_h their totals.
The clone is ``cancer`` if s_k > 0.5, ``healthy`` if s_k < 0.5, ``undetermined`` if it holds no
annotated cell (or s_k = 0.5). Validation flags a clone as **mixed** when
``mixed_fraction < s_k < 1 − mixed_fraction`` (both kinds in it), and as **weak** when its label
rests on fewer than ``min_annotated`` annotated cells.

**Cells.** ``cancer_prob_i = Σ_{k cancer} P_ik / Σ_k P_ik`` (for posteriors: the probability that
the cell belongs to a cancer clone; 0.5 for a CCLONE cell whose loadings are all 0); the score ``s_i = Σ_{k cancer} P_ik − Σ_{k healthy} P_ik``
calls the cell ``cancer`` if s_i > ``threshold``, ``healthy`` if s_i < −``threshold``, else
``undetermined`` — CCLONE's confidence rule (threshold 0.3). With posteriors and every clone
labelled, s_i = 2 cancer_prob_i − 1, i.e. cancer above cancer_prob 0.65 and healthy below 0.35.
A cell without a single read at the variants used is ``undetermined`` whatever its prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("cancer", "healthy", "undetermined")
CALLS = ("cancer", "healthy", "undetermined")


class AnnotationWarning(UserWarning):
    """Validation failed: a clone (factor) holds both healthy and cancer cell types, or its label
    rests on too few annotated cells."""


@dataclass
class Annotation:
    """Per clone: ``table`` (pandas DataFrame, one row per clone: cells of every type, n_healthy_type,
    n_cancer_type, balanced_cancer_share, label, mixed, weak); per cell: ``cancer_prob``,
    ``score``, ``call``; ``messages`` (validation failures, one line each) and ``passed``."""

    table: object
    labels: np.ndarray
    cancer_prob: np.ndarray
    score: np.ndarray
    call: np.ndarray
    messages: list
    passed: bool


def check_annotation(celltypes, healthy, cancer, *, where: str = "the annotation") -> tuple[list, list]:
    """Validate the healthy / cancer lists against the cell types present; one-line errors."""
    healthy = [healthy] if isinstance(healthy, str) else list(healthy or ())
    cancer = [cancer] if isinstance(cancer, str) else list(cancer or ())
    for name, values in (("healthy", healthy), ("cancer", cancer)):
        bad = [v for v in values if not isinstance(v, str) or not v]
        if bad:
            raise ValueError(f"{name} must list cell-type names (strings), got {bad[0]!r}")
    both = sorted(set(healthy) & set(cancer))
    if both:
        raise ValueError(f"cell types listed as both healthy and cancer: {both}; each type belongs to one list")
    if celltypes is None:
        if healthy or cancer:
            raise ValueError("healthy/cancer cell types were given without a cell-type annotation; "
                             "pass celltype_key (an obs column) or drop healthy/cancer")
        return healthy, cancer
    present = set(map(str, celltypes))
    missing = sorted((set(healthy) | set(cancer)) - present)
    if missing:
        shown = ", ".join(repr(t) for t in sorted(present)[:12]) + (", ..." if len(present) > 12 else "")
        raise ValueError(f"cell types {missing} are not in {where} (present: {shown}); check the spelling")
    return healthy, cancer


def annotate(membership, celltypes, healthy, cancer, *, covered=None, threshold: float = 0.3,
             mixed_fraction: float = 0.2, min_annotated: int = 10) -> Annotation:
    """Label every clone and call every cell (module docstring).

    ``membership``: (cells, K) non-negative; ``celltypes``: (cells,) strings; ``healthy``,
    ``cancer``: lists of type names (validated by :func:`check_annotation`); ``covered``:
    optional (cells,) bool, False for cells without reads (called ``undetermined``).
    """
    import pandas as pd

    P = np.asarray(membership, np.float64)
    n, k = P.shape
    types = np.asarray(celltypes).astype(str)
    assign = P.argmax(axis=1)
    is_h, is_c = np.isin(types, list(healthy)), np.isin(types, list(cancer))
    n_h = np.bincount(assign[is_h], minlength=k)
    n_c = np.bincount(assign[is_c], minlength=k)
    rate_h = n_h / max(int(is_h.sum()), 1)
    rate_c = n_c / max(int(is_c.sum()), 1)
    denom = rate_h + rate_c
    share = np.where(denom > 0, rate_c / np.where(denom > 0, denom, 1.0), 0.5)
    labels = np.where(share > 0.5, "cancer", np.where(share < 0.5, "healthy", "undetermined"))
    labels = np.where(denom > 0, labels, "undetermined")
    mixed = (denom > 0) & (share > mixed_fraction) & (share < 1 - mixed_fraction)
    weak = (labels != "undetermined") & (n_h + n_c < min_annotated)

    total = P.sum(axis=1)
    cancer_mass = P[:, labels == "cancer"].sum(axis=1)
    healthy_mass = P[:, labels == "healthy"].sum(axis=1)
    # a cell with no membership at all (CCLONE's C ≈ 0) has no evidence either way: 0.5
    cancer_prob = np.where(total > 1e-9, cancer_mass / np.maximum(total, 1e-9), 0.5)
    score = cancer_mass - healthy_mass
    call = np.where(score > threshold, "cancer", np.where(score < -threshold, "healthy", "undetermined"))
    if covered is not None:
        call = np.where(np.asarray(covered, bool), call, "undetermined")

    kinds = sorted(set(types))
    counts = {f"n_{t}": np.bincount(assign[types == t], minlength=k) for t in kinds}
    table = pd.DataFrame({"clone": np.arange(k), "n_cells": np.bincount(assign, minlength=k), **counts,
                          "n_healthy_type": n_h, "n_cancer_type": n_c, "balanced_cancer_share": share,
                          "label": labels, "mixed": mixed, "weak": weak})
    messages = []
    for c in np.flatnonzero(mixed):
        messages.append(f"clone {c} is mixed: {n_h[c]} healthy-type and {n_c[c]} cancer-type cells "
                        f"(balanced cancer share {share[c]:.2f}); its label '{labels[c]}' is not reliable")
    for c in np.flatnonzero(weak):
        messages.append(f"clone {c} is labelled '{labels[c]}' from only {n_h[c] + n_c[c]} annotated cells")
    if (healthy or cancer) and not ({"cancer", "healthy"} <= set(labels)):
        messages.append(f"clones are labelled {sorted(set(labels))}: no healthy/cancer contrast, so the cell calls rest on "
                        "the annotation alone")
    return Annotation(table, labels, cancer_prob, score, call, messages, not bool(mixed.any() or weak.any()))
