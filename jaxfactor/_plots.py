"""Plot helpers shared by the runner's pages and the clone caller's page (matplotlib, Agg):
plain numbers instead of offsets, integer ticks on discrete axes, wrapped panel titles, a
legend with counts on every categorical scatter, and the selection curve that circles the chosen
candidate and labels every other one with its difference to it."""

from __future__ import annotations

import numpy as np

#: colours of the cancer / healthy calls (as on the clone caller's page)
CALL_COLOURS = {"cancer": "tab:red", "healthy": "tab:blue", "undetermined": "0.7"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(v: float) -> str:
    """A score for a label: thousands separated when large, three significant digits otherwise."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def plain_numbers(ax, axis: str = "y") -> None:
    """Tick labels as plain numbers (thousands separated when large): no ``1e6`` offset or
    scientific factor a reader has to apply. Call after the data are drawn."""
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if max(abs(lo), abs(hi)) >= 1e4:
        fmt = FuncFormatter(lambda v, _: f"{v:,.0f}")
    else:
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def panel_title(ax, text: str, size: float = 9) -> None:
    """``ax``'s title, each line wrapped to the panel's width (no title runs past its panel)."""
    import textwrap

    inches = ax.get_position().width * ax.figure.get_figwidth()
    width = max(24, int(inches * 72 / (0.58 * size)))
    ax.set_title("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=size)


def integer_ticks(ax, axis: str = "x") -> None:
    """Only whole numbers on a discrete axis (iterations, epochs, k)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _colours(n: int, known: bool = False) -> list:
    """``n`` distinct categorical colours: the model's components tab10, then tab20 without its
    greys; known labels Set2 (up to 7), then tab20 without its greys and the calls' red and blue
    (grey, red and blue mean undetermined, cancer and healthy in a call strip); hsv beyond."""
    plt = _plt()
    if known and n <= 7:
        return [plt.get_cmap("Set2")(i) for i in range(n)]
    if n <= 10 and not known:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    keep = (2, 4, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19) if known else [i for i in range(20) if i not in (14, 15)]
    if n <= len(keep):
        return [plt.get_cmap("tab20")(i) for i in keep[:n]]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def category_scatter(ax, x, y, names, kinds, colours, legend_title: str) -> None:
    """Points coloured by category (drawn in a shuffled order, so no category hides another) and a
    legend beside the axes naming each category with its number of cells."""
    from matplotlib.lines import Line2D

    names = np.asarray(names)
    index = {k: i for i, k in enumerate(kinds)}
    codes = np.array([index.get(v, -1) for v in names.tolist()])
    order = np.random.default_rng(0).permutation(len(names))
    palette = np.array([*colours, (0.6, 0.6, 0.6, 1.0)], dtype=object)
    ax.scatter(x[order], y[order], s=4, c=[palette[c] for c in codes[order]], rasterized=True)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=f"{k} ({(codes == i).sum():,})")
               for i, (k, c) in enumerate(zip(kinds, colours))]
    ax.legend(handles=handles, title=f"{legend_title} (cells)", fontsize=7, title_fontsize=8, loc="center left",
              bbox_to_anchor=(1.0, 0.5), frameon=False)


def _point(row, keys) -> str:
    return ", ".join(f"{k} = {row[k]}" for k in keys)


def choice_note(table, key: str, score: str, higher: bool, others=()) -> str:
    """Why the chosen row of ``table`` (a ``chosen`` column) won: 'chosen <key> = x: highest
    <score> of n' and 'next best <key> = y: <gap> lower (<gap> %)' (``others``: further swept
    keys, named with the points)."""
    keys = [key, *(k for k in others if k in table)]
    ok = table[np.isfinite(table[score].to_numpy(float))]
    chosen = ok[ok["chosen"].to_numpy(bool)]
    if chosen.empty:
        return ""
    c = chosen.iloc[0]
    note = f"chosen {_point(c, keys)}: {'highest' if higher else 'lowest'} {score} of {len(ok)}"
    rest = ok[~ok["chosen"].to_numpy(bool)]
    if rest.empty:
        return note
    best = rest.sort_values(score, ascending=not higher).iloc[0]
    gap = abs(float(best[score]) - float(c[score]))
    rel = gap / max(abs(float(c[score])), 1e-300) * 100
    word = ("lower" if higher else "higher") if gap > 0 else "equal"
    return note + f"\nnext best {_point(best, keys)}: {_num(gap)} {word} ({rel:.2g} %)"


def selection_curve(ax, table, key: str, score: str, higher: bool, others=(), xlabel: str | None = None) -> None:
    """The sweep's score over ``key`` (one line per setting of ``others``), the chosen row of
    ``table`` (its ``chosen`` column) circled, each point of the chosen one's line annotated with
    its difference Δ to the chosen score, and a title saying why the chosen one won."""
    ok = table[np.isfinite(table[score].to_numpy(float))]
    others = [k for k in others if k in ok]
    chosen = ok[ok["chosen"].to_numpy(bool)]
    best = float(chosen[score].iloc[0]) if not chosen.empty else None
    groups = list(ok.groupby(others, sort=False)) if others else [((), ok)]
    for values, g in groups:
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{k} = {v}" for k, v in zip(others, values)) or None
        ax.plot(g[key].to_numpy(), g[score].to_numpy(float), marker="o", label=label,
                color=None if others else "0.25")
        if best is None or not g["chosen"].any():
            continue  # only the chosen one's line is annotated: the other lines' labels would overlap it
        for x, v, is_chosen in zip(g[key], g[score].to_numpy(float), g["chosen"].to_numpy(bool)):
            if not is_chosen:
                d = v - best
                ax.annotate(f"Δ {d:+,.0f}" if abs(d) >= 1000 else f"Δ {d:+.3g}", (x, v), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=7, color="0.25")
    if not chosen.empty:
        ax.scatter(chosen[key], chosen[score].to_numpy(float), s=170, facecolors="none", edgecolors="red", lw=1.6,
                   label=f"chosen ({_point(chosen.iloc[0], [key, *others])})", zorder=3)
    x = np.asarray(ok[key].to_numpy())
    if np.issubdtype(x.dtype, np.number) and np.all(np.mod(x.astype(float), 1) == 0):
        ax.set_xticks(np.unique(x))  # a discrete key (k): one tick per value, no fractions
    ax.set_xlabel(xlabel or key)
    ax.set_ylabel(f"{score} ({'higher' if higher else 'lower'} is better)")
    note = choice_note(table, key, score, higher, others)
    panel_title(ax, f"choosing {key} by {score}\n{note}" if note else f"{score} per {key}", 8)
    ax.margins(x=0.1, y=0.15)
    plain_numbers(ax)
    ax.legend(fontsize=7, loc="best", title="Δ: difference to the chosen", title_fontsize=7)
