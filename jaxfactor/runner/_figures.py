"""The runner's figures. A family's page (:func:`family_figure`): the chosen model's per-cell and
per-variable results, its trace and the selection curve of the sweep; a grid sweep's pages
(:func:`write_figures`): every point's trace beside the selection curve, and each point's factor
heatmaps.

What every page shows: the model and its chosen parameters in the suptitle, a title on every
panel, a colourbar on every heatmap, a legend on every coloured scatter, integer ticks on discrete
axes (component, clone, factor, k), strips beside a per-cell heatmap (the cells' known labels:
``data.label_key``'s values or a simulation's populations; the model's cancer / healthy calls),
plain numbers on the axes (no ``1e6`` offset), and the chosen sweep point circled, each candidate
annotated with its score's difference to the chosen one and the panel's title saying why it won.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._plots import (CALL_COLOURS, _colours, _plt, category_scatter, integer_ticks, panel_title, plain_numbers,
                      selection_curve)


def _strip_panel(fig, ax, strips: list, order) -> None:
    """Narrow columns left of a per-cell heatmap ``ax`` whose rows are the cells in ``order``: each
    strip (tag, legend title, per-cell category, category order, colours), its legend below."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    div = make_axes_locatable(ax)
    first = None
    for tag, title, values, kinds, colours in reversed(strips):
        sax = div.append_axes("left", size="7%", pad=0.04)
        index = {k: i for i, k in enumerate(kinds)}
        codes = np.array([index[v] for v in np.asarray(values)[order]])
        sax.imshow(codes[:, None], aspect="auto", interpolation="nearest", cmap=ListedColormap(colours),
                   vmin=-0.5, vmax=len(kinds) - 0.5)
        sax.set_xticks([0], [tag], rotation=90, fontsize=7)
        sax.set_yticks([])
        first = sax
    ylabel = ax.get_ylabel()
    ax.set_ylabel("")
    ax.set_yticks([])
    first.set_ylabel(ylabel)
    below = -0.85 / (ax.get_position().height * fig.get_figheight())  # under two-line tick labels and the x label
    for i, (tag, title, values, kinds, colours) in enumerate(strips):
        handles = [Patch(color=c, label=str(k)) for k, c in zip(kinds, colours)]
        # one legend: centred; two: side by side, meeting under the middle of the panel
        loc, x = ("upper center", 0.5) if len(strips) == 1 else (("upper right", 0.48) if i == 0 else ("upper left", 0.52))
        leg = ax.legend(handles=handles, title=f"{tag}: {title}", fontsize=7, title_fontsize=7, loc=loc,
                        bbox_to_anchor=(x, below), ncol=min(4 if len(strips) == 1 else 2, len(kinds)),
                        frameon=False, handlelength=1.0, columnspacing=0.8)
        if i < len(strips) - 1:  # ax.legend replaces the axes' legend: keep the earlier one as an artist
            ax.add_artist(leg)
            leg.set_clip_on(False)


def _heatmap(fig, ax, A, cmap: str, label: str, xlabel: str, ylabel: str, title: str, xticks=None,
             vmin=0.0, vmax=1.0) -> None:
    """A heatmap with a colourbar (``label``), integer column ticks (``xticks``: their labels)."""
    from matplotlib.ticker import MaxNLocator

    im = ax.imshow(A, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label=label, fraction=0.06, pad=0.03)
    ax.set_xticks(range(A.shape[1]), xticks if xticks is not None else [str(j) for j in range(A.shape[1])],
                  fontsize=8 if A.shape[1] <= 12 else 6)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # rows are cells / variants: whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    panel_title(ax, title, 9)


def _variant_order(af):
    """Variants grouped by the clone in which their value stands out most, strongest first."""
    from ..clones._report import _variant_order as order

    return order(np.asarray(af, np.float64))


def page_title(model, table, swept: list, score) -> str:
    """'<family>: <description>' and the chosen point: its swept values, the family's other
    string options (method, likelihood, ...) and why it was chosen."""
    from .._families import family

    try:
        description = family(model.family).description
    except ValueError:
        description = ""
    settings = getattr(model, "settings", {}) or {}
    if table is not None and "chosen" in table and table["chosen"].any():
        row = table[table["chosen"].to_numpy(bool)].iloc[0]
        shown = {k: row[k] for k in swept if k in row}
    else:
        shown = {}
    shown.setdefault("n_components", model.n_components)
    for k in getattr(model, "option_choices", {}):
        if k in settings and k not in shown and settings[k] not in ("", None):
            shown[k] = settings[k]
    why = ""
    if table is not None and len(table) > 1 and score is not None:
        why = f" (chosen: {'highest' if score.higher_is_better else 'lowest'} {score.name} of {len(table)} fits)"
    head = f"{model.family}: {description}" if description else model.family
    return head + "\n" + ", ".join(f"{k} = {v}" for k, v in shown.items()) + why


def _known(labels, label_names):
    """The strip / colouring of the cells' known labels: (tag, legend title, per-cell names,
    categories, colours), or None."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    names = np.asarray(label_names, dtype=object)[labels] if label_names is not None else labels
    present = set(names.tolist())
    kinds = [k for k in (label_names if label_names is not None else sorted(present)) if k in present]
    return ("label", "known label" if label_names is not None else "simulated population", names, kinds,
            _colours(len(kinds), known=True))


def _data_panel(fig, ax, model, ctx):
    X = ctx["X"]
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
    y = X[:, 1] if X.shape[1] > 1 else np.zeros(len(X))
    k, unit = model.n_components, ctx["unit"]
    category_scatter(ax, X[:, 0], y, np.asarray(ctx["cells"]["label"]), list(range(k)), _colours(k), unit)
    ax.set_xlabel(f"feature {model.var_names[0]}")
    ax.set_ylabel(f"feature {model.var_names[1]}" if X.shape[1] > 1 else "")
    panel_title(ax, f"the data's first two features, coloured by most probable {unit}", 9)


def _cells_panel(fig, ax, model, ctx):
    """Posterior probabilities or loadings per cell, cells grouped by their dominant column, then
    by known label and call (the strips beside it), then by strength."""
    cells, unit = ctx["cells"], ctx["unit"]
    proba = "proba" in cells
    P = np.asarray(cells["proba" if proba else "embedding"])
    top = P.argmax(axis=1)
    strips = [ctx["known"]] if ctx["known"] is not None else []
    if "call" in cells:
        calls = np.asarray(cells["call"]).astype(str)
        kinds = [c for c in CALL_COLOURS if c in set(calls.tolist())] + sorted(set(calls.tolist()) - set(CALL_COLOURS))
        strips.append(("call", "the model's call", calls, kinds, [CALL_COLOURS.get(c, "0.4") for c in kinds]))
    groups = [np.array([{k: i for i, k in enumerate(st[3])}[v] for v in np.asarray(st[2]).tolist()]) for st in strips]
    order = np.lexsort((-P.max(axis=1), *reversed(groups), top))
    counts = np.bincount(top, minlength=P.shape[1])
    what, word = ("posterior probability", "most probable") if proba else ("loading", "dominant")
    vmax = 1.0 if proba or P.max() <= 1 else float(np.quantile(P, 0.995))
    capped = f"\n(colours capped at the 99.5th percentile, {vmax:.3g})" if vmax < P.max() else ""
    _heatmap(fig, ax, P[order], "viridis", what, f"{unit} (below: cells where it is {word})",
             f"{len(P):,} cells, by {word} {unit}", f"{what} per cell and {unit}{capped}",
             xticks=[f"{j}\n{n:,}" for j, n in enumerate(counts)], vmax=vmax)
    if strips:
        _strip_panel(fig, ax, strips, order)


def _embedding_panel(fig, ax, model, ctx):
    cells, known = ctx["cells"], ctx["known"]
    Z = np.asarray(cells["embedding"])
    y = Z[:, 1] if Z.shape[1] > 1 else np.zeros(len(Z))
    if known is None and "label" in cells:
        names = np.asarray(cells["label"])
        kinds = sorted(np.unique(names).tolist())
        known = ("label", f"the fit's {ctx['unit']}", names, kinds, _colours(len(kinds)))
    if known is None:
        ax.scatter(Z[:, 0], y, s=4, color="0.3", rasterized=True)
        panel_title(ax, f"cells on the first two {model.family} dimensions", 9)
    else:
        _, title, names, kinds, colours = known
        category_scatter(ax, Z[:, 0], y, names, kinds, colours, title)
        panel_title(ax, f"cells on the first two {model.family} dimensions,\ncoloured by {title}", 9)
    ax.set_xlabel(f"{model.family} dimension 1")
    ax.set_ylabel(f"{model.family} dimension 2" if Z.shape[1] > 1 else "")


def _var_panel(fig, ax, model, ctx):
    key, unit = ctx["var_key"], ctx["unit"]
    A = np.asarray(model._var_outputs()[key], np.float64)
    _heatmap(fig, ax, A[_variant_order(A)], "magma", "allele frequency" if key == "af" else "V (variant profile)",
             unit, f"{A.shape[0]} variants, grouped by {unit}",
             "allele frequency per clone and variant" if key == "af" else "V: each factor's variant profile")


def _trace_panel(fig, ax, model, ctx):
    uns, key = ctx["uns"], ctx["key"]
    trace = np.asarray(uns["trace"], np.float64)
    x = np.asarray(uns["trace_iter"]) if "trace_iter" in uns else np.arange(len(trace))
    name = uns.get("trace_name", "objective")
    ax.plot(x, trace, color="0.2")
    ax.set_xlabel(str(uns.get("trace_unit", "iteration")))
    ax.set_ylabel(f"{name} ({'higher' if model.trace_higher_is_better else 'lower'} is better)")
    integer_ticks(ax)
    plain_numbers(ax)
    at = model.settings.get(key)
    panel_title(ax, f"{name} of the chosen fit" + (f" ({key} = {at})" if at is not None else ""), 9)


def _selection_panel(fig, ax, model, ctx):
    table, swept, score = ctx["table"], ctx["swept"], ctx["score"]
    varied = [k for k in swept[1:] if k in table and table[k].astype(str).nunique() > 1]
    selection_curve(ax, table, swept[0], score.name, score.higher_is_better, varied)


PANELS = {"data": _data_panel, "cells": _cells_panel, "embedding": _embedding_panel, "var": _var_panel,
          "trace": _trace_panel, "selection": _selection_panel}


def family_page(model, table, swept: list, score, X=None, labels=None, label_names=None):
    """The Figure of :func:`family_figure` (returned open: the caller saves and closes it)."""
    plt = _plt()
    cells, var, uns = model._cell_outputs(), model._var_outputs(), model._uns()
    var_key = next((k for k in ("af", "V") if k in var), None)
    panels = ["data"] if X is not None and "label" in cells else []
    if "proba" in cells or ("embedding" in cells and model.embedding_is_loadings):
        panels.append("cells")
    elif "embedding" in cells:
        panels.append("embedding")
    panels += ["var"] * (var_key is not None) + ["trace"] * ("trace" in uns and np.size(uns["trace"]) > 1)
    panels += ["selection"] * (table is not None and len(table) > 1)
    ctx = dict(cells=cells, uns=uns, X=X, var_key=var_key, key=swept[0], table=table, swept=swept, score=score,
               known=_known(labels, label_names),
               unit="clone" if var_key == "af" else "factor" if model.embedding_is_loadings else "component")
    tall = (ctx["known"] is not None or "call" in cells) and "cells" in panels  # room for the strips' legends
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 5.6 if tall else 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        PANELS[panel](fig, ax, model, ctx)
    fig.suptitle(page_title(model, table, swept, score), fontsize=10)
    fig.tight_layout()
    return fig


def family_figure(folder: str, name: str, model, table, swept: list, score, X=None, labels=None,
                  label_names=None) -> None:
    """``folder/name``: the chosen model's per-cell result (posterior probabilities or factor
    loadings, cells ordered by their dominant column with a strip of their known labels and the
    model's calls beside it, or the first two dimensions of its embedding coloured by label), the
    data's first two features coloured by component (a mixture of a matrix ``X``), its
    per-variable result (clone allele frequencies, CCLONE's V), the chosen fit's trace, and the
    selection curve over the first swept key (one line per setting of the others)."""
    plt = _plt()
    fig = family_page(model, table, swept, score, X=X, labels=labels, label_names=label_names)
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)


# --- the grid sweep's pages (NMF) ---------------------------------------------------------------
def _run_info(folder: str) -> tuple[dict, object]:
    """(metrics.json, selection.csv as a DataFrame) of the results folder being written, when there."""
    import pandas as pd

    meta, table = {}, None
    try:
        with open(os.path.join(folder, "metrics.json")) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        pass
    try:
        table = pd.read_csv(os.path.join(folder, "selection.csv"))
    except (OSError, ValueError):
        pass
    return meta, table


def _heatmap_axes(title: str, unit: str) -> tuple[str, str, str, str]:
    """(panel title, x label, y label, colourbar label) of one of ``Fitted.heatmaps``'s matrices,
    from its name ('<family>: cells (...) x components' or '<family> <key>: components x variables')."""
    head, _, body = title.partition(": ")
    rows, _, cols = body.partition(" x ")
    key = head.split(" ", 1)[1] if " " in head else ""
    if rows.startswith("cells"):
        return (f"W: each cell's loading on each {unit}", unit, f"cells, ordered by dominant {unit}", "loading")
    if cols.strip() == "variables":
        name = "H" if key == "components" else key
        return (f"{name}: each {unit}'s weight on each feature", "feature", unit, "weight")
    return title, cols, rows, ""


def _grid_context(folder: str, ylabel: str, files: dict | None) -> dict:
    """What a grid sweep's pages say of the run: its model (title, 'factor' or 'component'), the
    chosen point and its score (from ``metrics.json`` and ``selection.csv`` in ``folder``), and
    ``described(label)``: a point's id, swept values and fixed string options."""
    meta, table = _run_info(folder)
    name = meta.get("model", "")
    score, higher = meta.get("chosen_by", ylabel), bool(meta.get("higher_is_better", False))
    try:
        from .._families import family

        fam = family(name)
        head, unit = f"{name}: {fam.description}", "factor" if fam.model.embedding_is_loadings else "component"
    except ValueError:
        head, unit = name or "", "component"
    files = files or {}
    params = {p.get("id"): p.get("params", {}) for p in meta.get("points", [])}

    def described(label: str) -> str:  # 'p004: n_components = 8, l2_H = 0.0; method = mu, init = random'
        fid, _, values = label.partition(" ")
        swept = [v.replace("=", " = ") for v in values.split(" ") if v]
        fixed = [f"{k} = {v}" for k, v in params.get(files.get(label, label), {}).items()
                 if isinstance(v, str) and k != "name" and f"{k} = {v}" not in swept]
        return fid + (": " + ", ".join(swept) if swept else "") + ("; " + ", ".join(fixed) if fixed else "")

    swept = [c for c in (table.columns if table is not None else ()) if c in (meta.get("points") or [{}])[0].get("params", {})]
    return dict(meta=meta, table=table, head=head, unit=unit, chosen=meta.get("chosen"), score=score, higher=higher,
                why=f"{'highest' if higher else 'lowest'} {score}", files=files, described=described, swept=swept)


def _trace_page(traces: dict, ylabel: str, ctx: dict):
    """Every point's trace (the chosen one bold) beside the selection curve over n_components."""
    plt = _plt()
    table, score, higher, files = ctx["table"], ctx["score"], ctx["higher"], ctx["files"]
    sweep = table is not None and "n_components" in table and score in table and len(table) > 1
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(12 if sweep else 6.5, 4.8), squeeze=False)
    ax = axes[0, 0]
    for label, (iters, trace) in traces.items():
        is_chosen = files.get(label, label) == ctx["chosen"]
        ax.plot(iters, trace, marker="." if len(iters) < 30 else None, lw=2.4 if is_chosen else 1.0,
                color="black" if is_chosen else None, zorder=3 if is_chosen else 2,
                label=label + (" (chosen)" if is_chosen else ""))
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{ylabel} ({'higher' if higher else 'lower'} is better)")
    integer_ticks(ax)
    if all(np.all(np.asarray(t) > 0) for _, t in traces.values()):
        ax.set_yscale("log")
    else:
        plain_numbers(ax)
    panel_title(ax, f"{ylabel} per iteration of each sweep point" + (" (log scale)" if ax.get_yscale() == "log" else ""), 9)
    if len(traces) <= 12:
        ax.legend(fontsize=7)
    if sweep:
        others = [k for k in ctx["swept"] if k != "n_components" and table[k].astype(str).nunique() > 1]
        selection_curve(axes[0, 1], table, "n_components", score, higher, others)
        if not higher and score == "objective":
            axes[0, 1].set_xlabel(f"n_components (the {score} falls as the rank grows: look for the elbow)")
    picked = next((label for label in traces if files.get(label, label) == ctx["chosen"]), None)
    fig.suptitle(ctx["head"] + (f"\nchosen {ctx['described'](picked)} ({ctx['why']})" if picked and len(traces) > 1 else ""),
                 fontsize=10)
    fig.tight_layout()
    return fig


def _factor_page(label: str, maps: dict, ctx: dict, n_points: int):
    """One point's heatmaps (``Fitted.heatmaps``: W, cells by dominant factor, and H), each with
    its colourbar, titled with the model, the point and whether it was chosen."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 4.6), squeeze=False)
    for ax, (name, mat) in zip(axes[0], maps.items()):
        mat = np.asarray(mat)
        panel, xlabel, ylabel, cbar = _heatmap_axes(name, ctx["unit"])
        im = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0 if mat.min() >= 0 else None)
        panel_title(ax, panel, 9)
        ax.set_ylabel(ylabel)
        if ylabel.startswith("cells"):  # below each factor: the cells where it dominates
            counts = np.bincount(mat.argmax(axis=1), minlength=mat.shape[1])
            ax.set_xticks(range(mat.shape[1]), [f"{j}\n{n:,}" for j, n in enumerate(counts)], fontsize=8)
            xlabel += " (below: cells where it dominates)"
        elif mat.shape[1] <= 30:  # a component axis: one tick per component
            ax.set_xticks(range(mat.shape[1]))
        else:
            integer_ticks(ax, "x")
        ax.set_xlabel(xlabel)
        if ylabel == ctx["unit"] and mat.shape[0] <= 30:  # one row per factor: one tick each
            ax.set_yticks(range(mat.shape[0]))
        else:
            integer_ticks(ax, "y")
        fig.colorbar(im, ax=ax, label=cbar)
    mark = f" (chosen: {ctx['why']})" if ctx["files"].get(label, label) == ctx["chosen"] and n_points > 1 else ""
    fig.suptitle(f"{ctx['head']}\nsweep point {ctx['described'](label)}{mark}", fontsize=10)
    fig.tight_layout()
    return fig


def grid_pages(folder: str, traces: dict, heatmaps: dict, ylabel: str = "objective", files: dict | None = None):
    """(file name, open Figure) of each page :func:`write_figures` writes."""
    ctx = _grid_context(folder, ylabel, files)
    yield "trace.png", _trace_page(traces, ylabel, ctx)
    for label, maps in heatmaps.items():
        if maps:
            yield f"factors_{ctx['files'].get(label, label)}.png", _factor_page(label, maps, ctx, len(heatmaps))


def write_figures(folder: str, traces: dict[str, tuple[np.ndarray, np.ndarray]], heatmaps: dict[str, dict],
                  ylabel: str = "objective", files: dict[str, str] | None = None) -> list[str]:
    """``trace.png``: every point's trace (the chosen one bold) beside the selection curve over
    ``n_components`` (from ``selection.csv`` and ``metrics.json`` in ``folder``, when written
    first), and one heatmap page per point (``factors_<files[label]>.png``, titled with the model,
    the point's id, swept values and fixed options, and whether it was chosen)."""
    plt = _plt()
    written = []
    for name, fig in grid_pages(folder, traces, heatmaps, ylabel, files):
        path = os.path.join(folder, name)
        fig.savefig(path, dpi=100 if name == "trace.png" else 90)
        plt.close(fig)
        written.append(path)
    return written
