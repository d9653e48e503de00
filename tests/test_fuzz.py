"""Fuzz: every public entry point × the bad inputs, and the CLI's output rules under hostile places.

The one place that sweeps entry points × bad inputs. Every registered family's
``jaxfactor.family(name).fit`` gets, drawn by hypothesis (derandomised, so CI sees the same
examples every time): a bad value (NaN, ±inf, negative, non-integer where counts are required)
at a random cell and variable, ALT > DP, an empty matrix, a wrong dtype, a missing layer, a
``layer=`` that cannot apply, and a rank out of range — in each container the family takes (array,
sparse matrix, AnnData X or layer; for allele counts layers REF/ALT, ALT/DP or a (REF, ALT) pair).
Each must be a one-line ``ValueError`` naming the problem, raised before anything is compiled, with
nothing written. (``tests/test_protocol.py`` keeps one fixed example per kind; its ``SETTINGS`` are
reused here.)

The CLI: ``--out`` on or around an input (``--force`` or not) for run, predict and clones; a full
disk (a file-size limit, ``ulimit -f``, in a subprocess) and a too-small disk (free space checked
before fitting); two runs to the same ``--out`` at once; a read-only output folder (skipped as
root, who writes anywhere). Each is exit 2, one line on stderr, nothing written, inputs intact.
"""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections import namedtuple

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxfactor
from jaxfactor.runner import main
from test_protocol import SETTINGS

FAMILIES = sorted(jaxfactor.families())
FUZZ = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_DATA: dict = {}

# what a refused rank may name: n_components, or (clones, vae) the old name -- see test_rank_error_names_n_components
RANK_NAMES = r"n_components|n_clones|n_latent|\bk\b"


def simulated(name):
    """Each family's own small simulation (as tests/test_protocol.py fits), made once."""
    if name not in _DATA:
        _DATA[name] = jaxfactor.family(name).simulate(0)
    return _DATA[name]


def _kinds(name):
    """The bad inputs that apply to family ``name``'s kind of data."""
    inputs = jaxfactor.family(name).model.inputs
    common = ["NaN", "inf", "empty", "wrong dtype", "missing layer", "layer on an array", "rank"]
    if inputs == "alleles":
        return common + ["negative", "non-integer", "ALT > DP"]
    if inputs in ("nonnegative", "counts") or name == "vae":
        common.append("negative")
    if inputs == "counts":
        common.append("non-integer")
    return common


@st.composite
def bad_inputs(draw, name, what):
    """(what, data, options, message regex) for family ``name``: bad input ``what`` drawn (where,
    which value, which layer) in a drawn container."""
    adata = simulated(name)
    n, p = adata.shape
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, p - 1))
    value = {"NaN": np.nan, "inf": draw(st.sampled_from([np.inf, -np.inf])),
             "negative": -draw(st.sampled_from([1.0, 3.0, 1e6])),
             "non-integer": draw(st.sampled_from([0.5, 1.25, 7.999]))}.get(what)
    message = {"NaN": "NaN", "inf": "infinite", "negative": "negative", "non-integer": "non-integer",
               "empty": "empty", "wrong dtype": "numeric|dtype|integer", "ALT > DP": "exceeds DP",
               "missing layer": "layer", "layer on an array": "layer", "rank": RANK_NAMES}[what]
    options = {}
    if what == "rank":
        # K = 0 is a ZINB GLM (as in the R package); the clone caller drops K above the cells with reads and says so
        options["n_components"] = draw(st.sampled_from([-1, -7] + [0] * (name != "zinbwave") + [10 ** 6] * (name != "clones")))
        return what, adata, options, message
    if jaxfactor.family(name).model.inputs == "alleles":
        ref = np.asarray(adata.layers["REF"].todense(), float)
        alt = np.asarray(adata.layers["ALT"].todense(), float)
        form = draw(st.sampled_from(["REF/ALT", "pair", "ALT/DP"]))
        dp = None  # the depth layer of form ALT/DP (default REF + ALT)
        if value is not None:
            target = draw(st.sampled_from(["REF", "ALT"]))
            (ref if target == "REF" else alt)[i, j] = value
        elif what == "ALT > DP":
            form = "ALT/DP"
            dp = ref + alt
            alt[i, j] = dp[i, j] + draw(st.integers(1, 50))  # one entry above its depth
        elif what == "empty":
            ref, alt = ref[:0], alt[:0]
        elif what == "wrong dtype":
            ref, alt = ref.astype(str), alt.astype(str)
            form = "pair"
        elif what == "layer on an array":
            options["layer"] = draw(st.sampled_from(["counts", "REF", "X"]))
        elif what == "missing layer":
            form = "REF/ALT"
        wrap = (lambda m: m) if what == "wrong dtype" or draw(st.booleans()) else sp.csr_matrix
        if form == "pair":
            return what, (wrap(ref), wrap(alt)), options, message
        import anndata

        x = anndata.AnnData(X=wrap(ref + alt), obs=adata.obs.iloc[: ref.shape[0]], var=adata.var)
        if form == "REF/ALT":
            x.layers["REF"], x.layers["ALT"] = wrap(ref), wrap(alt)
        else:
            x.layers["ALT"], x.layers["DP"] = wrap(alt), wrap(ref + alt if dp is None else dp)
        if what == "missing layer":
            del x.layers[draw(st.sampled_from(["REF", "ALT"]))]
        return what, x, options, message
    X = np.asarray(adata.X, float).copy()
    form = draw(st.sampled_from(["array", "AnnData X", "AnnData layer", "sparse"]))
    if value is not None:
        X[i, j] = value
    elif what == "empty":
        X = X[:0] if draw(st.booleans()) else X[:, :0]
    elif what == "wrong dtype":
        X = draw(st.sampled_from([X.astype(str), np.full(X.shape, None, object), X.astype("datetime64[s]")]))
        form = "array"
    elif what == "layer on an array":
        options["layer"] = "counts"
        form = "array"
    elif what == "missing layer":
        options["layer"] = draw(st.sampled_from(["nope", "counts ", "X"]))
        form = "AnnData X"
    if form == "array":
        return what, X, options, message
    if form == "sparse":
        return what, sp.csr_matrix(X) if X.size else X, options, message
    import anndata

    x = anndata.AnnData(X=X if form == "AnnData X" else None, obs=adata.obs.iloc[: X.shape[0]],
                        var=adata.var.iloc[: X.shape[1]])
    if form == "AnnData layer":
        x.layers["counts"] = X
        options["layer"] = "counts"
    return what, x, options, message


@pytest.fixture
def compiled():
    """Every XLA compilation while the test runs (jax.monitoring's compile events)."""
    import jax.monitoring

    events = []

    def listener(event, duration, **kw):
        if event.startswith("/jax/core/compile/"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


CASES = [(name, what) for name in FAMILIES for what in _kinds(name)]


@pytest.mark.parametrize("name,what", CASES)
@FUZZ
@given(data=st.data())
def test_fit_refuses_bad_input_in_one_line_before_compiling(name, what, data, compiled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fit writes nothing: the folder it runs in stays empty
    compiled.clear()  # one hypothesis example at a time
    what, x, options, message = data.draw(bad_inputs(name, what), label="bad input")
    k, settings_ = SETTINGS[name]
    kw = {**settings_, "n_components": k, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message) as err:
            jaxfactor.family(name).fit(x, **kw)
    assert "\n" not in str(err.value), (name, what, str(err.value))
    assert not compiled, f"{name}: compiled {compiled} before refusing {what}"
    assert not os.listdir(tmp_path), f"{name}: wrote {os.listdir(tmp_path)} refusing {what}"


@pytest.mark.parametrize("kind", ["matrix", "nonnegative", "counts"])
@pytest.mark.filterwarnings("ignore:Casting complex values")
def test_complex_input_is_refused(kind):
    """The check every matrix family's fit (and predict) goes through; calling it directly keeps
    this case from compiling a fit."""
    from jaxfactor._inputs import check_matrix

    X = np.abs(np.asarray(simulated("zinbwave").X, float)).astype(complex) + 1j
    with pytest.raises(ValueError, match="numeric|complex"):
        check_matrix(X, kind)


@pytest.mark.parametrize("name", ["cclone", "clones", "vae"])
def test_rank_error_names_n_components(name):
    k, options = SETTINGS[name]
    with pytest.raises(ValueError, match="n_components"):
        jaxfactor.family(name).fit(simulated(name), **{**options, "n_components": 0})


# ---------------------------------------------------------------------------------------------
# the CLI: where outputs go
# ---------------------------------------------------------------------------------------------

TINY = """[data]
simulator = "gmm"
n_samples = 400
n_features = 2
n_components = 2
seed = 0

[model]
name = "gmm"
n_components = 2

[fit]
max_iter = 30

[run]
figures = false
"""


def _snapshot(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    from pathlib import Path

    return {os.path.relpath(os.path.join(root, f), folder): Path(root, f).read_bytes()
            for root, _, files in os.walk(folder) for f in files}


def _one_line(err):
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def _cli(*args, ulimit_kb=None):
    """``python -m jaxfactor ARGS`` in a subprocess, optionally under ``ulimit -f`` (KiB)."""
    cmd = [sys.executable, "-m", "jaxfactor", *map(str, args)]
    if ulimit_kb is not None:
        cmd = ["bash", "-c", f'ulimit -f {ulimit_kb} && exec "$@"', "bash", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CI": "true", "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A tiny run to ``full`` in a subprocess under a 16 KiB file-size limit (a full disk when it
    writes); while it fits, holding ``full``'s lock, a second run to ``full`` in this process, then
    an ordinary run to ``o`` here (a finished run folder for predict). Returns what each did."""
    if not shutil.which("bash"):
        pytest.skip("needs bash for ulimit -f")
    base = tmp_path_factory.mktemp("cli")
    cfg = base / "tiny.toml"
    cfg.write_text(TINY)
    first = _cli("run", cfg, "--out", base / "full", ulimit_kb=16)
    lock = base / ".full.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()) as second_err:
        second = main(["run", str(cfg), "--out", str(base / "full")])
    second_seconds = time.perf_counter() - t0
    out = base / "o"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    _, first_err = first.communicate(timeout=300)
    return dict(base=base, cfg=cfg, out=out, first=(first.returncode, first_err), first_pid=first.pid,
                second=(second, second_err.getvalue()), second_seconds=second_seconds)


def test_two_runs_to_one_out(two_runs, capsys):
    """The second writer to an --out fails at once: exit 2, one line naming the other process."""
    r = two_runs
    code, err = r["second"]
    assert code == 2 and r["second_seconds"] < 5, err
    assert f"another jaxfactor process (pid {r['first_pid']}) is writing '{r['base'] / 'full'}'" in _one_line(err)


def test_full_disk_is_one_line_and_writes_nothing(two_runs):
    """A file-size limit hit while writing result.h5ad (what a full disk does to a write): exit 2,
    one line naming the place and the fix, no crash inside h5py, nothing left (no folder, no
    temporary, no lock). Before: a segfault (exit 139) in h5py's close path."""
    code, err = two_runs["first"]
    assert code == 2, err
    _one_line(err.splitlines(keepends=True)[-1])
    assert "cannot write" in err and "(File too large)" in err and "choose another --out" in err, err
    assert "Traceback" not in err and "h5py" not in err
    assert not [p for p in os.listdir(two_runs["base"]) if p.startswith(("full", ".full"))]


def _new_cells(path, n=50):
    import anndata

    ad = anndata.AnnData(X=np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32))
    ad.var_names = ["f0", "f1"]  # the simulator's variable names
    ad.write_h5ad(path)
    return path


def test_predict_on_a_full_disk(two_runs, tmp_path, capsys, monkeypatch):
    """predict's output written in memory then with plain file I/O: a full disk is one line, and
    neither OUT nor a temporary is left (an earlier OUT, with --force, is kept as it was)."""
    import errno

    import jaxfactor.data._io as io_module

    data = _new_cells(tmp_path / "new.h5ad")
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            fh.write(b"partial")
            fh.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return fh

    monkeypatch.setattr(io_module, "open", full_disk, raising=False)
    out = tmp_path / "p.h5ad"
    assert main(["predict", str(two_runs["out"]), str(data), "--out", str(out)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"cannot write '{out}' (No space left on device); free space" in err
    assert sorted(os.listdir(tmp_path)) == ["new.h5ad"]
    out.write_bytes(b"earlier")
    assert main(["predict", str(two_runs["out"]), str(data), "--out", str(out), "--force"]) == 2
    assert out.read_bytes() == b"earlier" and sorted(os.listdir(tmp_path)) == ["new.h5ad", "p.h5ad"]


def test_too_little_free_space_is_refused_before_fitting(two_runs, tmp_path, capsys, monkeypatch, compiled):
    """Free space is checked at the output place (its nearest existing parent) before anything is
    read or compiled: run, predict and clones all refuse in one line, writing nothing."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 9 << 20, 1 << 20))
    data = _new_cells(tmp_path / "new.h5ad")
    before = _snapshot(tmp_path)
    compiled.clear()
    for args in (["run", str(two_runs["cfg"]), "--out", str(tmp_path / "a" / "b" / "o")],
                 ["predict", str(two_runs["out"]), str(data), "--out", str(tmp_path / "p.h5ad")],
                 ["clones", "--demo", "--out", str(tmp_path / "c")]):
        assert main(args) == 2, args
        err = _one_line(capsys.readouterr().err)
        assert f"not enough free space at '{tmp_path}': need ~" in err and "MB free; free space or choose another --out" in err
    assert _snapshot(tmp_path) == before and not compiled


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(two_runs, tmp_path, capsys):
    """predict and clones into a folder without write permission: one line before anything runs
    (run is tested in tests/test_runner.py)."""
    data = _new_cells(tmp_path / "new.h5ad")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for args in (["predict", str(two_runs["out"]), str(data), "--out", str(ro / "p.h5ad")],
                     ["clones", "--demo", "--out", str(ro / "c")]):
            assert main(args) == 2
            assert "cannot write beside" in _one_line(capsys.readouterr().err)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: allele counts (X, REF, ALT), a config reading them, a run folder."""
    from jaxfactor.data import simulate_clones

    root = tmp_path_factory.mktemp("project")
    folder = root / "data"
    folder.mkdir()
    simulate_clones(n_cells=40, n_variants=12, n_clones=2, n_germline=2, seed=0).to_anndata().write_h5ad(folder / "x.h5ad")
    (folder / "c.toml").write_text('[data]\npath = "x.h5ad"\n[model]\nname = "gmm"\nn_components = 2\n')
    (folder / "run").mkdir()
    (folder / "run" / "metrics.json").write_text("{}")
    return root


# for each command: the places --out may not be (they are or hold an input)
ONTO = {"run": ["data/x.h5ad", "data/c.toml", "data", "."],
        "predict": ["data/x.h5ad", "data", ".", "data/run", "data/run/p.h5ad"],
        "clones": ["data/x.h5ad", "data", "."]}


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_out_onto_an_input_is_refused(project, data, capsys):
    """--out on an input, or on a folder holding one, with --force or not: exit 2, one line, every
    input intact."""
    command = data.draw(st.sampled_from(sorted(ONTO)), label="command")
    out = str(project / data.draw(st.sampled_from(ONTO[command]), label="out"))
    force = data.draw(st.booleans(), label="--force")
    before = _snapshot(project)
    args = {"run": ["run", str(project / "data" / "c.toml")],
            "predict": ["predict", str(project / "data" / "run"), str(project / "data" / "x.h5ad")],
            "clones": ["clones", str(project / "data" / "x.h5ad")]}[command]
    assert main([*args, "--out", out, *(["--force"] if force else [])]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "overlap" in err or "overwrite" in err, err
    assert _snapshot(project) == before
