"""The runner's figure of a family's fit: the chosen model's per-cell and per-variable results,
its trace and the selection curve of the sweep (one line per setting of the other swept keys)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heatmap(fig, ax, A, cmap: str, label: str, xlabel: str, ylabel: str) -> None:
    """A [0, 1] heatmap with a colourbar and integer column ticks."""
    im = ax.imshow(A, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xticks(range(A.shape[1]))
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # rows are cells / variants: whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def family_figure(folder: str, name: str, model, table, swept: list, score, X=None, labels=None,
                  label_names=None) -> None:
    """The chosen model's per-cell result (posterior probabilities or factor loadings, cells
    ordered by label, or the first two dimensions of its embedding), the data's first two features
    coloured by label (a mixture of a matrix ``X``) or its per-variable result (clone allele
    frequencies, CCLONE's V), the chosen fit's trace, and the selection curve over the first swept
    key (one line per setting of the others)."""
    plt = _plt()
    key = swept[0]
    cells, var, uns = model._cell_outputs(), model._var_outputs(), model._uns()
    panels = []
    if X is not None and "label" in cells:
        panels.append("data")
    if "proba" in cells:
        panels.append("proba")
    elif "embedding" in cells:
        panels.append("loadings" if model.embedding_is_loadings else "embedding")
    var_key = next((k for k in ("af", "V") if k in var), None)
    if var_key is not None:
        panels.append("var")
    if "trace" in uns and np.size(uns["trace"]) > 1:
        panels.append("trace")
    if len(table) > 1:
        panels.append("selection")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "data":
            X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
            y = X[:, 1] if X.shape[1] > 1 else np.zeros(len(X))
            sc = ax.scatter(X[:, 0], y, c=cells["label"], s=4, cmap="tab10", vmin=0, vmax=9)
            handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(k))) for k in range(model.n_components)]
            ax.legend(handles, [str(k) for k in range(model.n_components)], title="component", fontsize=7, markerscale=0.8)
            ax.set_xlabel(f"feature {model.var_names[0]}")
            ax.set_ylabel(f"feature {model.var_names[1]}" if X.shape[1] > 1 else "")
            ax.set_title("data, first two features, by component", fontsize=9)
        elif panel in ("proba", "loadings"):
            P = np.asarray(cells["proba" if panel == "proba" else "embedding"])
            order = np.lexsort((-P.max(axis=1), P.argmax(axis=1)))
            _heatmap(fig, ax, P[order], "viridis", "posterior probability" if panel == "proba" else "loading", "component",
                     f"cells (ordered by {'most probable' if panel == 'proba' else 'dominant'} component)")
        elif panel == "embedding":
            Z = np.asarray(cells["embedding"])
            y = Z[:, 1] if Z.shape[1] > 1 else np.zeros(len(Z))
            colour = cells.get("label", labels)
            if colour is None:
                ax.scatter(Z[:, 0], y, s=4)
            else:
                known = "label" not in cells  # the data's own labels (named), not the model's
                kinds = np.unique(colour)
                many = kinds.size > 10  # tab20 for up to 20 kinds (tab10 would reuse colours)
                sc = ax.scatter(Z[:, 0], y, s=4, c=colour, cmap="tab20" if many else "tab10", vmin=0, vmax=19 if many else 9)
                kinds = kinds[:20]
                handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(k))) for k in kinds]
                names = [str(label_names[k]) if known and label_names is not None else str(k) for k in kinds]
                ax.legend(handles, names, title="known label" if known else "label", fontsize=7, markerscale=0.8,
                          loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
            ax.set_xlabel(f"{model.family} dimension 1")
            ax.set_ylabel(f"{model.family} dimension 2" if Z.shape[1] > 1 else "")
        elif panel == "var":
            _heatmap(fig, ax, np.asarray(var[var_key]), "magma", "allele frequency" if var_key == "af" else "V (each factor's variant profile)",
                     "clone" if var_key == "af" else "component", "variants")
        elif panel == "trace":
            trace = np.asarray(uns["trace"])
            x = np.asarray(uns["trace_iter"]) if "trace_iter" in uns else np.arange(len(trace))
            ax.plot(x, trace)
            ax.set_xlabel(str(uns.get("trace_unit", "iteration")))
            ax.set_ylabel(f"{uns.get('trace_name', 'objective')} ({'higher' if model.trace_higher_is_better else 'lower'} is better)")
            ax.set_title("the chosen fit's trace", fontsize=9)
        else:
            ok = table[np.isfinite(table[score.name].to_numpy(float))]
            others = [k for k in swept[1:] if k in ok]
            for values, g in (ok.groupby(others, sort=False) if others else [((), ok)]):
                values = values if isinstance(values, tuple) else (values,)
                label = ", ".join(f"{k}={v}" for k, v in zip(others, values)) or None
                ax.plot(g[key].to_numpy(), g[score.name].to_numpy(), marker="o", label=label)
            chosen = table[table["chosen"]].iloc[0]
            ax.scatter([chosen[key]], [chosen[score.name]], s=150, facecolors="none", edgecolors="red", label="chosen")
            x = ok[key].to_numpy()
            if np.issubdtype(np.asarray(x).dtype, np.integer):
                ax.set_xticks(np.unique(x))
            ax.set_xlabel(key)
            ax.set_ylabel(f"{score.name} ({'higher' if score.higher_is_better else 'lower'} is better)")
            if others:
                ax.legend(fontsize=7)
    fig.suptitle(f"{model.family}: n_components = {model.n_components}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)
