"""What a clone call tells its user: a short text summary and one page of figures."""

from __future__ import annotations

import os

import numpy as np

METHOD_NAMES = {"allele": "allele-count model with allelic dropout, MAP-EM",
                "binomial": "binomial mixture, variational Bayes (vireoSNP's model)",
                "cclone": "CCLONE, bootstrapped weighted NMF"}
CRITERION_NAMES = {"evidence": "approximate log evidence (higher is better)", "bic": "BIC (lower is better)", "aic": "AIC (lower is better)", "elbo": "ELBO (higher is better)",
                   "orth_score": "orthogonality score (higher is better)", "stability": "bootstrap stability (higher is better)"}
EMBEDDINGS = ("X_umap", "umap", "X_tsne", "tsne", "X_pca")


def _runner_up(table, criterion):
    chosen = table[table["chosen"]].iloc[0]
    rest = table[~table["chosen"]]
    if rest.empty:
        return ""
    lower = criterion in ("bic", "aic")
    other = rest.sort_values(criterion, ascending=lower).iloc[0]
    gap = abs(float(other[criterion] - chosen[criterion]))
    word = ("higher" if lower else "lower") if gap > 0 else "equal"
    return f"; runner-up K={int(other['n_clones'])} ({criterion} {gap:.4g} {word})"


def call_accuracy(out, truth) -> dict:
    """Accuracy of :func:`call`'s output ``out`` (every cell, in order) against a simulation
    (``truth.labels``: population per cell, 0 healthy; ``truth.is_cancer``): ARI of the clones,
    and the cancer/healthy calls' strict balanced accuracy (undetermined counts as wrong), balanced
    accuracy over called cells and the share of cells called."""
    from ..cclone import adjusted_rand_index

    labels, cancer = np.asarray(truth.labels), np.asarray(truth.is_cancer, bool)
    m = {"ari": adjusted_rand_index(out.obs["clone"].cat.codes.to_numpy(), labels)}
    if "cancer_call" in out.obs and cancer.any() and (~cancer).any():
        call = out.obs["cancer_call"].astype(str).to_numpy()
        called = call != "undetermined"
        right = (call == "cancer") == cancer
        m["strict_balanced_accuracy"] = 0.5 * (np.mean(right[cancer] & called[cancer]) + np.mean(right[~cancer] & called[~cancer]))
        c, h = cancer & called, ~cancer & called
        m["balanced_accuracy_called"] = 0.5 * ((right[c].mean() if c.any() else 0.0) + (right[h].mean() if h.any() else 0.0))
        m["called_share"] = float(called.mean())
    return m


def summary(out) -> str:
    """Verdict lines of a ``jaxfactor.clones.call`` result (also stored in ``uns['clones']['summary']``)."""
    u = out.uns["clones"]
    table = u["selection"]
    filt = u["filter"]
    dropped = [f"{filt[k]} {name}" for k, name in (("rna_editing", "RNA-editing"), ("germline", "germline"), ("uninformative", "uninformative")) if filt.get(k)]
    lines = [f"method '{u['method']}' ({METHOD_NAMES[u['method']]}): {out.n_obs} cells x {out.n_vars} variants used"
             + (f" ({', '.join(dropped)} variants dropped)" if dropped else "")]
    ks = ", ".join(str(int(k)) for k in table["n_clones"])
    lines.append(f"clones: {u['n_clones']}, chosen by {CRITERION_NAMES[u['criterion']]} among K = {ks}"
                 + _runner_up(table, u["criterion"]))
    sizes = out.obs["clone"].value_counts().reindex(out.obs["clone"].cat.categories).to_numpy()
    ann = u.get("annotation")
    for c in range(u["n_clones"]):
        line = f"  clone {c}: {sizes[c]} cells"
        if ann is not None:
            row = ann.iloc[c]
            types = {col[2:]: int(row[col]) for col in ann.columns if col.startswith("n_") and col not in
                     ("n_cells", "n_healthy_type", "n_cancer_type") and row[col] > 0}
            top = ", ".join(f"{t} {n}" for t, n in sorted(types.items(), key=lambda x: -x[1])[:4])
            if "label" in ann.columns and "cancer_call" in out.obs:
                flags = [f for f in ("mixed", "weak") if row[f]]
                line += f", {row['label']} (balanced cancer share {row['balanced_cancer_share']:.2f}"
                line += f"; {', '.join(flags).upper()})" if flags else ")"
            line += f": {top}" if top else ""
        lines.append(line)
    if "cancer_call" in out.obs:
        calls = out.obs["cancer_call"].value_counts()
        thr = u["settings"]["threshold"]
        lines.append(f"cells: {calls.get('cancer', 0)} cancer, {calls.get('healthy', 0)} healthy, "
                     f"{calls.get('undetermined', 0)} undetermined (cancer when P(cancer clones) - P(healthy clones) > {thr:g})")
        v = u["validation"]
        if v["passed"]:
            lines.append("validation: passed (no mixed clone; every label rests on enough annotated cells)")
        else:
            lines.extend(f"WARNING: {m}" for m in v["messages"])
    elif "annotation" in u:
        lines.append("cells: no cancer/healthy calls (give healthy and cancer cell types to label the clones)")
    else:
        lines.append("cells: no cancer/healthy calls (no cell-type annotation given: clones and posteriors only)")
    if u["details"].get("dropout") is not None:
        d = u["details"]
        per = d.get("dropout_per_variant")
        spread = f" (median over variants; range {np.min(per):.3f}-{np.max(per):.3f})" if per is not None and np.ptp(per) > 0 else ""
        lines.append(f"allelic dropout {d['dropout']:.3f}{spread}, read error rate {d['error']:.4f}")
    hits = u["details"].get("best_optimum_hits")
    if hits is not None and hits < u["details"].get("hits_needed", 3):
        lines.append(f"WARNING: the best fit with {u['n_clones']} clones did not recur within "
                     f"{u['details']['n_init_used']} random starts: near-equal optima, so the clones may change with "
                     "the seed (compare a few seeds, or raise max_init)")
    n_empty = int((out.obs["n_variants_covered"] == 0).sum())
    if n_empty:
        lines.append(f"{n_empty} cells have no read at the variants used: their clone is the prior, their call undetermined")
    if "renamed_input_columns" in u:
        lines.append(f"note: the input's own obs columns were kept as {', '.join(map(str, u['renamed_input_columns']))}")
    t = u["timings"]
    compiling = f", of which compiling {t['compile']:.1f} s" if "compile" in t else ""
    lines.append(f"time: {t['total']:.1f} s (fit {t['fit']:.1f} s{compiling})")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clone_ticks(u, k):
    ann = u.get("annotation")
    if ann is not None and "label" in ann.columns and any(lbl != "undetermined" for lbl in ann["label"]):
        return [f"{c}\n{ann['label'].iloc[c]}" for c in range(k)]
    return [str(c) for c in range(k)]


def _celltype_panel(ax, fig, out, u):
    k = u["n_clones"]
    ann = u.get("annotation")
    if ann is None:
        sizes = out.obs["clone"].value_counts().reindex(out.obs["clone"].cat.categories).to_numpy()
        ax.bar(np.arange(k), sizes, color="0.5")
        ax.set_xticks(np.arange(k), _clone_ticks(u, k))
        ax.set_ylabel("cells")
        ax.set_title("cells per clone (no cell-type annotation)", fontsize=10)
        return
    cols = [c for c in ann.columns if c.startswith("n_") and c not in ("n_cells", "n_healthy_type", "n_cancer_type")]
    counts = ann[cols].to_numpy(np.float64).T  # types x clones
    names = [c[2:] for c in cols]
    frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(frac, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(k):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.6 else "black")
    healthy = set(u["settings"].get("healthy", []))
    cancer = set(u["settings"].get("cancer", []))
    ax.set_yticks(np.arange(len(names)), [f"{n} ({'H' if n in healthy else 'C' if n in cancer else '-'})" for n in names],
                  fontsize=8)
    ax.set_xticks(np.arange(k), _clone_ticks(u, k), fontsize=8)
    ax.set_xlabel("clone")
    ax.set_title("cell types per clone (share of each type's cells; H healthy, C cancer)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the cell type")


def _variant_order(af):
    """Variants grouped by the clone in which their AF stands out most, strongest first."""
    k = af.shape[1]
    if k == 1:
        return np.argsort(-af[:, 0])
    others = (af.sum(axis=1, keepdims=True) - af) / (k - 1)
    lift = af - others
    owner = lift.argmax(axis=1)
    return np.lexsort((-lift.max(axis=1), owner))


def _af_panel(ax, fig, out, u):
    af = np.asarray(out.varm["clone_af"], np.float64)
    order = _variant_order(af)
    k = af.shape[1]
    im = ax.imshow(af[order].T, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(np.arange(k), _clone_ticks(u, k), fontsize=8)
    ax.set_ylabel("clone")
    n = af.shape[0]
    if n <= 40:
        ax.set_xticks(np.arange(n), np.asarray(out.var_names)[order], rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"{n} variants, grouped by the clone in which their allele fraction stands out")
    ax.set_title("allele fraction per clone and variant", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="ALT allele fraction")


def _embedding(out):
    for key in EMBEDDINGS:
        if key in out.obsm and np.asarray(out.obsm[key]).shape[1] >= 2:
            return key, np.asarray(out.obsm[key])[:, :2]
    return None, None


def _cell_panel(ax, fig, out, u):
    key, xy = _embedding(out)
    has_calls = "cancer_prob" in out.obs
    if has_calls:
        name = "cancer share of C" if u["method"] == "cclone" else "P(cancer clone)"
        value, cmap, label = out.obs["cancer_prob"].to_numpy(), "coolwarm", name
    else:
        value, cmap, label = out.obs["clone"].cat.codes.to_numpy(), "tab10", "clone"
    if xy is not None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=value, cmap=cmap, s=4, vmin=0, vmax=1 if has_calls else None,
                        rasterized=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{key} 1")
        ax.set_ylabel(f"{key} 2")
        ax.set_title(f"{label} per cell on obsm['{key}']", fontsize=10)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label=label)
        return
    if not has_calls:
        P = np.asarray(out.obsm["clone_prob"], np.float64)
        order = np.lexsort((-P.max(axis=1), P.argmax(axis=1)))
        im = ax.imshow(P[order].T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(np.arange(P.shape[1]), [str(c) for c in range(P.shape[1])])
        ax.set_ylabel("clone")
        ax.set_xlabel(f"{P.shape[0]} cells, ordered by clone")
        ax.set_title("clone membership per cell", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="membership")
        return
    order = np.argsort(value, kind="stable")
    calls = out.obs["cancer_call"].astype(str).to_numpy()[order]
    colours = {"cancer": "tab:red", "healthy": "tab:blue", "undetermined": "0.6"}
    x = np.arange(value.size)
    for name, colour in colours.items():
        sel = calls == name
        ax.scatter(x[sel], value[order][sel], s=3, color=colour, label=f"{name} ({sel.sum()})", rasterized=True)
    thr = u["settings"]["threshold"]
    if u["method"] != "cclone":  # posteriors: the call is a threshold on cancer_prob itself
        for y in ((1 + thr) / 2, (1 - thr) / 2):
            ax.axhline(y, color="0.3", lw=0.6, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"cells, sorted by {label}")
    ax.set_ylabel(label)
    lines = f" (dashed: cancer above {(1 + thr) / 2:g}, healthy below {(1 - thr) / 2:g})" if u["method"] != "cclone" else ""
    ax.set_title(f"{label} per cell{lines}", fontsize=10)
    ax.legend(fontsize=7, markerscale=3, loc="upper left")


def _selection_panel(ax, u):
    from .._plots import selection_curve

    crit = u["criterion"]
    selection_curve(ax, u["selection"], "n_clones", crit, crit not in ("bic", "aic"), xlabel="number of clones K")


def plot(out, folder: str, name: str = "clones.png") -> str:
    """One page: cell types per clone, allele fractions per clone × variant, cancer probability per
    cell (on obsm's 2-D embedding when there is one), and the selection curve. Returns the path."""
    plt = _plt()
    u = out.uns["clones"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    _celltype_panel(axes[0, 0], fig, out, u)
    _af_panel(axes[0, 1], fig, out, u)
    _cell_panel(axes[1, 0], fig, out, u)
    _selection_panel(axes[1, 1], u)
    verdict = "" if u["validation"]["passed"] else "  —  VALIDATION FAILED (see summary)"
    score = "cancer − healthy membership" if u["method"] == "cclone" else "P(cancer) − P(healthy)"
    t = u["settings"]["threshold"]
    thr = f"\ncalls: cancer where {score} > {t:g}, healthy where < −{t:g}" if "cancer_call" in out.obs else ""
    fig.suptitle(f"jaxfactor clones: method '{u['method']}' ({METHOD_NAMES[u['method']]})\n{u['n_clones']} clones, chosen by "
                 f"{CRITERION_NAMES[u['criterion']]}; {out.n_obs:,} cells x {out.n_vars} variants{thr}{verdict}", fontsize=12)
    fig.tight_layout()
    path = os.path.join(folder, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
