"""Labelling CCLONE's factors and cells as cancer / healthy from a cell-type annotation (CCLONE's rule).

The rule is the one every clone model shares (:mod:`jaxfactor.clones._annotate`): a factor is
labelled by the balanced share of cancer-type cells among the cells it holds (argmax of C), a cell
by CCLONE's confidence rule |Σ_cancer C − Σ_healthy C| > 0.3. Validation fails for a factor holding
both kinds (``mixed_fraction < s_f < 1 − mixed_fraction``).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..clones._annotate import AnnotationWarning, annotate as _annotate, check_annotation

__all__ = ["AnnotationWarning", "annotate"]


def annotate(adata, celltype_key: str, healthy, cancer, *, threshold: float = 0.3, mixed_fraction: float = 0.2):
    """Return a copy of a CCLONE result with obs ``cclone_label`` / ``cclone_score`` and uns
    ``cclone_annotation`` (per-factor counts, labels, and whether validation passed)."""
    import pandas as pd

    if "C" not in adata.obsm:
        raise ValueError("obsm['C'] not found; run jaxfactor.cclone.fit first")
    if celltype_key not in adata.obs:
        raise ValueError(f"obs[{celltype_key!r}] not found; available columns: {', '.join(map(str, adata.obs.columns))}")
    healthy, cancer = set(healthy), set(cancer)
    if not healthy and not cancer:
        raise ValueError("give at least one healthy or cancer cell type")
    if healthy & cancer:
        raise ValueError(f"cell types listed as both healthy and cancer: {sorted(healthy & cancer)}")
    types = adata.obs[celltype_key].astype(str).to_numpy()
    unknown = (healthy | cancer) - set(types)
    ann = _annotate(np.asarray(adata.obsm["C"], dtype=np.float64), types, sorted(healthy), sorted(cancer),
                    threshold=threshold, mixed_fraction=mixed_fraction, min_annotated=0)
    t = ann.table
    out = adata.copy()
    out.obs["cclone_score"] = ann.score
    out.obs["cclone_label"] = pd.Categorical(ann.call, categories=["cancer", "healthy", "undetermined"])
    messages = [f"factor {f} holds {t['n_healthy_type'][f]} healthy-type and {t['n_cancer_type'][f]} cancer-type cells "
                f"(balanced cancer share {t['balanced_cancer_share'][f]:.2f})" for f in np.flatnonzero(t["mixed"].to_numpy())]
    labels = [str(x) for x in ann.labels]
    if "cancer" not in labels or "healthy" not in labels:
        messages.append(f"factors are labelled {labels}: no healthy/cancer contrast")
    if unknown:
        messages.append(f"cell types not present in obs[{celltype_key!r}]: {sorted(unknown)}")
    out.uns["cclone_annotation"] = {
        "factor_labels": labels, "n_healthy_type": t["n_healthy_type"].to_numpy(), "n_cancer_type": t["n_cancer_type"].to_numpy(),
        "balanced_cancer_share": t["balanced_cancer_share"].to_numpy(), "mixed": [bool(x) for x in t["mixed"]],
        "validation_passed": not bool(t["mixed"].any()), "messages": messages, "threshold": threshold,
    }
    if messages:
        warnings.warn("; ".join(messages), AnnotationWarning, stacklevel=2)
    return out
