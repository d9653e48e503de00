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
