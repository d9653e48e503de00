"""The progress and timing layer: host-driven loops equal the compiled ones (fit, fit_many,
fit_batch), lines mode talks in plain lines, CI and quiet silence it, compile time is measured
apart from run time."""

import jax
import numpy as np
import pytest

import jaxfactor as jf
from jaxfactor import _progress
from jaxfactor.nmf import NMFHparams, nmf_mu


@pytest.fixture
def lines(monkeypatch):
    """Plain-lines mode with no rate limit (every chunk prints a line)."""
    monkeypatch.setenv("JAXFACTOR_PROGRESS", "lines")
    monkeypatch.setattr(_progress, "FIRST_LINE_AFTER", 0.0)
    monkeypatch.setattr(_progress, "LINE_EVERY", 0.0)


@pytest.fixture(scope="module")
def X(small_nmf):
    return jax.numpy.asarray(small_nmf.X)


def test_modes(monkeypatch):
    monkeypatch.delenv("JAXFACTOR_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert _progress.mode() == "off" and not _progress.reporting(True)
    monkeypatch.delenv("CI")
    assert _progress.mode() in ("bar", "lines")
    with _progress.quiet():
        assert _progress.mode() == "off"
    assert not _progress.reporting(None)  # outside a task, nothing asked
    with _progress.task("p000"):
        assert _progress.reporting(None) and _progress.reporting(False)  # the runner's task decides
    monkeypatch.setenv("JAXFACTOR_PROGRESS", "lines")
    monkeypatch.setenv("CI", "true")
    assert _progress.mode() == "lines"  # forced, even under CI


def test_driven_fit_many_and_batch_equal_compiled(X, lines, capsys):
    alg = nmf_mu(3, "random")
    grid, _ = jf.hparam_grid(NMFHparams(), l2_H=[0.0, 0.5])
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    kw = dict(max_iter=60, tol=1e-3, chunk_size=10)
    a = jf.fit_many(alg, X, grid, keys, **kw)
    with _progress.task("p001 (l2_H)"):
        b = jf.fit_many(alg, X, grid, keys, **kw)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-6)
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    np.testing.assert_array_equal(a.best_index, b.best_index)
    np.testing.assert_allclose(a.best.state.W, b.best.state.W, rtol=1e-5, atol=1e-7)
    err = capsys.readouterr().err
    assert "p001 (l2_H): iteration 10/60, objective" in err and "left" in err and err.rstrip().endswith(": done")
    hp = NMFHparams(l2_H=jax.numpy.asarray([0.0, 0.1, 0.2]))
    c = jf.fit_batch(alg, X, hp, keys, hp_axes=NMFHparams(None, None, None, 0), **kw)
    d = jf.fit_batch(alg, X, hp, keys, hp_axes=NMFHparams(None, None, None, 0), progress=True, **kw)
    np.testing.assert_allclose(c.trace, d.trace, rtol=1e-6)
    np.testing.assert_array_equal(c.n_iter, d.n_iter)


def test_quiet_silences_a_task(X, monkeypatch, capsys):
    monkeypatch.delenv("JAXFACTOR_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with _progress.quiet(), _progress.task("p000"):
        jf.fit(nmf_mu(3), X, NMFHparams(), jax.random.PRNGKey(0), max_iter=20, tol=0.0)
        _progress.note("a note")
    assert capsys.readouterr().err == ""


def test_timed_splits_compile_from_run(X):
    alg = nmf_mu(4)  # a rank no other test here compiles
    with _progress.timed() as first:
        jax.block_until_ready(jf.fit(alg, X, NMFHparams(), jax.random.PRNGKey(0), max_iter=30, tol=0.0, chunk_size=3))
    with _progress.timed() as second:
        jax.block_until_ready(jf.fit(alg, X, NMFHparams(), jax.random.PRNGKey(1), max_iter=30, tol=0.0, chunk_size=3))
    assert 0 < first.compile_seconds <= first.seconds
    assert second.compile_seconds < 0.5 * first.compile_seconds  # compiled once, in this process
    assert first.run_seconds == pytest.approx(first.seconds - first.compile_seconds)


def test_union_of_nested_spans():
    assert _progress._union_seconds([(0, 4), (1, 2), (3, 6), (8, 9)], 0, 10) == 7
    assert _progress._union_seconds([(0, 4)], 2, 10) == 2


def test_verdicts_say_what_was_chosen_and_what_to_doubt():
    import pandas as pd

    from jaxfactor.runner._verdicts import selection_verdicts

    table = pd.DataFrame({"n_components": [2, 3, 4, 4], "min_maf": [2.0, 2.0, 2.0, 5.0], "bic": [100.0, 90.5, 90.0, np.nan],
                          "n_vars": [40, 40, 6, 0], "converged": [True, False, True, None],
                          "skipped": ["", "", "", "k=4 needs more than 3 variants"], "chosen": [False, False, True, False]})
    lines = selection_verdicts(table, "bic", False, ["n_components", "min_maf"], what="variants")
    text = "\n".join(lines)
    assert lines[0].startswith("chosen p002 (n_components=4, min_maf=2.0): best bic (lower is better) 90, ahead of p001")
    assert "the selection is flat: p002 and p001 are within 0.5 in bic" in text  # ΔBIC < 2 (Kass & Raftery)
    assert "1 of 4 point(s) skipped (p003)" in text and "1 of 3 fit(s) stopped at max_iter" in text
    assert "only 6 variants" in text
    assert "n_components=4 is the largest value" in text
    clear = table.assign(bic=[100.0, 80.0, 60.0, np.nan], chosen=[False, False, True, False])
    assert "flat" not in "\n".join(selection_verdicts(clear, "bic", False, ["n_components"]))
    tie = pd.DataFrame({"k": [2, 2], "orth_score": [-0.4, -0.4], "chosen": [True, False]})
    assert "p001 tie(s) with it" in "\n".join(selection_verdicts(tie, "orth_score", True, ["k"]))


def test_a_run_talks_and_ends_with_verdicts(tmp_path, lines, capsys):
    """The runner in lines mode: one line per sweep point, progress lines from inside the fits,
    and a summary whose verdicts and compile / run seconds are in metrics.json too."""
    import json

    from jaxfactor.runner import run
    from jaxfactor.runner._cli import _summary

    import pathlib

    config = str(pathlib.Path(__file__).resolve().parent.parent / "experiments" / "gmm_demo.toml")
    out, records = run(config, out=str(tmp_path / "out"), overrides=[
        "data.n_samples=300", "sweep.n_components=[2, 3, 4]", "fit.n_init=2", "fit.max_iter=40"])
    err = capsys.readouterr().err
    assert "gmm [1/3] n_components=2: fitting on 300 cells x 2 features" in err
    assert "gmm [3/3] n_components=4: iteration" in err and "done in" in err
    summary = _summary(out, records)
    assert "of which" in summary and "compiling" in summary and "\nverdict:\n  - chosen p00" in summary
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["verdicts"][0].startswith("chosen p00") and metrics["compile_seconds"] >= 0
    assert all("compile_seconds" in p for p in metrics["points"])
