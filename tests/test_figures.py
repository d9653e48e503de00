"""The runner's figures, inspected as matplotlib objects: every panel titled, a colourbar on every
heatmap, a legend on every coloured scatter, integer ticks on discrete axes, a strip of the cells'
known labels beside a per-cell heatmap, and the chosen sweep point explained (issue 17, item 5).
Small fake fits, no fitting: a few seconds."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from jaxfactor._protocol import Score  # noqa: E402
from jaxfactor.runner._figures import family_page, grid_pages, write_figures  # noqa: E402


class FakeFit:
    """What family_page reads of a fitted model: a binomial mixture with 5 clones (4 true)."""

    family = "binomial_mixture"
    embedding_is_loadings = False
    trace_higher_is_better = True
    option_choices = {"method": ("em", "vb")}

    def __init__(self, n_cells=60, k=5, embedding=False, call=False):
        rng = np.random.default_rng(0)
        self.n_components, self.embedding, self.call = k, embedding, call
        self.P = rng.dirichlet(np.ones(k), n_cells).astype(np.float32)
        self.settings = {"n_components": k, "method": "vb"}
        self.var_names = np.array(["v0", "v1"])

    def _cell_outputs(self):
        if self.embedding:
            return {"embedding": self.P[:, :2]}
        out = {"proba": self.P, "label": self.P.argmax(axis=1)}
        if self.call:
            out["call"] = np.array(["cancer", "healthy", "undetermined"])[np.arange(len(self.P)) % 3]
        return out

    def _var_outputs(self):
        return {} if self.embedding else {"af": np.linspace(0, 1, 8 * self.n_components).reshape(8, self.n_components)}

    def _uns(self):
        return {"trace": -np.geomspace(5e5, 3e5, 7), "trace_iter": np.arange(0, 70, 10), "trace_name": "ELBO"}


def _table():
    return pd.DataFrame({"n_components": [2, 3, 4, 5], "elbo": [-450821.1, -378441.7, -327185.7, -326681.3],
                         "chosen": [False, False, False, True]})


def _panels(fig):
    """The figure's panels: its axes less colourbars and label strips (narrow axes of one column)."""
    cbars = {im.colorbar.ax for ax in fig.axes for im in ax.images if im.colorbar is not None}
    return [ax for ax in fig.axes if ax not in cbars and ax.get_xticklabels() and not
            (ax.images and ax.images[0].get_array().shape[1:] == (1,))]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_family_page_titles_colourbars_strip_and_the_choice_explained():
    fit = FakeFit(call=True)
    labels = np.arange(60) % 4
    fig = family_page(fit, _table(), ["n_components"], Score("elbo", -326681.3, True), labels=labels,
                      label_names=["T cells", "B cells", "Immature", "Monocytes"])
    title = fig._suptitle.get_text()
    assert "binomial_mixture" in title and "n_components = 5" in title and "method = vb" in title
    assert "highest elbo" in title
    panels = _panels(fig)
    assert len(panels) == 4 and all(ax.get_title() for ax in panels)  # cells, allele frequencies, trace, selection
    for ax in fig.axes:  # every heatmap of [0, 1] values has its colourbar
        for im in ax.images:
            if isinstance(im, AxesImage) and im.get_array().shape[1] > 1:
                assert im.colorbar is not None, ax.get_title()
    heat = panels[0]
    assert [t.get_text().split("\n")[0] for t in heat.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    strips = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape[1:] == (1,)]
    assert sorted(ax.get_xticklabels()[0].get_text() for ax in strips) == ["call", "label"]
    legends = [a for a in heat.get_children() if isinstance(a, matplotlib.legend.Legend)]
    texts = {t.get_text() for leg in legends for t in leg.get_texts()}
    assert {"T cells", "Monocytes", "cancer", "undetermined"} <= texts
    sel = panels[-1]
    assert "next best n_components = 4: 504 lower" in sel.get_title() and "highest elbo of 4" in sel.get_title()
    notes = [t.get_text() for t in sel.texts]
    assert notes == ["Δ -124,140", "Δ -51,760", "Δ -504"]  # each candidate against the chosen
    assert list(sel.get_xticks()) == [2, 3, 4, 5]
    fig.canvas.draw()
    assert sel.yaxis.get_offset_text().get_text() == ""  # plain numbers, no '1e6' to apply
    trace = panels[2]
    assert all(float(t).is_integer() for t in trace.get_xticks())


def test_family_page_embedding_scatter_has_a_legend_of_label_names():
    fig = family_page(FakeFit(embedding=True), None, ["n_components"], None, labels=np.arange(60) % 3,
                      label_names=["a", "b", "c"])
    ax = _panels(fig)[0]  # the embedding, then the trace
    assert ax.get_title() and ax.get_legend() is not None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (20)", "b (20)", "c (20)"]


def test_write_figures_names_the_model_and_marks_the_chosen_point(tmp_path):
    table = pd.DataFrame({"id": ["p000", "p001", "p002"], "n_components": [2, 3, 4], "objective": [9.0, 5.0, 4.9],
                          "n_iter": [10, 10, 10], "converged": [True] * 3, "chosen": [False, False, True]})
    table.to_csv(tmp_path / "selection.csv", index=False)
    points = [{"id": i, "params": {"name": "nmf", "method": "mu", "n_components": k}} for i, k in zip(table["id"], [2, 3, 4])]
    (tmp_path / "metrics.json").write_text(json.dumps({"model": "nmf", "chosen": "p002", "chosen_by": "objective",
                                                       "higher_is_better": False, "points": points}))
    labels = {f"p00{i} n_components={k}": f"p00{i}" for i, k in enumerate([2, 3, 4])}
    traces = {lab: (np.arange(5), np.linspace(9, 4, 5)) for lab in labels}
    W, H = np.random.default_rng(0).random((30, 4)), np.random.default_rng(1).random((4, 12))
    maps = {lab: {"nmf: cells (ordered by dominant component) x components": W,
                  "nmf components: components x variables": H} for lab in labels}
    pages = dict(grid_pages(str(tmp_path), traces, maps, files=labels))
    trace, factors = pages["trace.png"], pages["factors_p002.png"]
    assert "nmf: non-negative matrix factorisation" in trace._suptitle.get_text()
    assert "chosen p002: n_components = 4; method = mu (lowest objective)" in trace._suptitle.get_text()
    curve, sel = trace.axes
    assert [line.get_linewidth() for line in curve.lines] == [1.0, 1.0, 2.4]  # the chosen trace stands out
    assert "next best n_components = 3: 0.1 higher" in sel.get_title() and list(sel.get_xticks()) == [2, 3, 4]
    assert "sweep point p002: n_components = 4; method = mu (chosen: lowest objective)" in factors._suptitle.get_text()
    w, h = (ax for ax in factors.axes if ax.images)
    assert all(ax.images[0].colorbar is not None and ax.get_title() for ax in (w, h))
    assert [t.get_text() for t in w.get_xticklabels()][0].startswith("0\n") and w.get_xlabel().startswith("factor")
    assert h.get_ylabel() == "factor" and list(h.get_yticks()) == [0, 1, 2, 3]
    written = write_figures(str(tmp_path), traces, maps, files=labels)
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["factors_p000.png", "factors_p001.png", "factors_p002.png",
                                                            "trace.png"]
