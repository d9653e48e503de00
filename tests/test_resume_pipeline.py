"""Resumable sweeps of pipeline models (PPCA, CCLONE): SIGKILL mid-sweep, rerun, same results as
an uninterrupted run; another config's points refused without --force; corrupt points refitted."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from jaxfactor.runner import main
from jaxfactor.runner import _resume
from jaxfactor.runner._resume import PipelineStore, host_pickle, partial_dir

PPCA = """
[data]
simulator = "ppca"
n_samples = 100
n_features = 6
seed = 0
[model]
name = "ppca"
n_components = 2
[fit]
max_iter = 200
tol = 1e-3
n_init = 1
[run]
figures = false
[sweep]
n_components = [1, 2, 3, 4]
"""
N = 4

CCLONE = """
[data]
simulator = "clones"
n_cells = 150
n_variants = 16
n_clones = 2
n_germline = 2
mean_coverage = 15.0
seed = 2
[model]
name = "cclone"
n_components = 2
n_bootstrap = 4
[fit]
max_iter = 20
[run]
figures = false
[sweep]
n_components = [2, 3]
filter_germline = [true, false]
"""

# The killed run: a real CLI process that blocks after saving point p001 until it is killed.
KILLED = """
import sys, time
from jaxfactor.runner import _resume, main
save = _resume.PipelineStore.save_point
def save_then_block(self, i, params, blob):
    save(self, i, params, blob)
    if i == 1:
        time.sleep(600)  # SIGKILL arrives here: p000 and p001 finished, p002 and p003 not
_resume.PipelineStore.save_point = save_then_block
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2]]))
"""


class Stop(Exception):
    """An interruption raised from inside the sweep (in-process stand-in for a kill)."""


def _stop_after(monkeypatch, last: int):
    save = _resume.PipelineStore.save_point

    def save_then_stop(self, i, params, blob):
        save(self, i, params, blob)
        if i == last:
            raise Stop

    monkeypatch.setattr(_resume.PipelineStore, "save_point", save_then_stop)


def _points(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.endswith(".pkl")) if os.path.isdir(folder) else []


def _check_point_file(path: Path, i: int):
    """A complete point file: JSON header, payload of the stated size and SHA-256, unpickles."""
    with open(path, "rb") as fh:
        head = json.loads(fh.readline())
        blob = fh.read()
    assert head["index"] == i and len(head["config_hash"]) == 16 and json.loads(head["params"]) == {"n_components": i + 1}
    assert len(blob) == head["nbytes"] and hashlib.sha256(blob).hexdigest() == head["sha256"]
    [(row, res)] = pickle.loads(blob)  # one (row, model) per point of the group (here: one)
    assert row["n_components"] == i + 1 and np.all(np.isfinite(res.components))


def _assert_same_results(got: Path, want: Path, table: str, arrays: dict[str, list[str]]):
    """Everything but the timings equals the reference folder's, bitwise."""
    a, b = pd.read_csv(got / table), pd.read_csv(want / table)
    timing = ["seconds", "compile_seconds"]
    pd.testing.assert_frame_equal(a.drop(columns=timing, errors="ignore"), b.drop(columns=timing, errors="ignore"))
    ra, rb = anndata.read_h5ad(got / "result.h5ad"), anndata.read_h5ad(want / "result.h5ad")
    assert list(ra.obs_names) == list(rb.obs_names) and list(ra.var_names) == list(rb.var_names)
    for slot, names in arrays.items():
        for name in names:
            np.testing.assert_array_equal(getattr(ra, slot)[name], getattr(rb, slot)[name])
    ma = json.loads((got / "metrics.json").read_text())["points"]
    mb = json.loads((want / "metrics.json").read_text())["points"]
    drop = lambda p: {k: v for k, v in p.items() if k not in ("seconds", "compile_seconds")}
    assert [drop(p) for p in ma] == [drop(p) for p in mb]


PPCA_ARRAYS = {"obsm": ["X_ppca"], "varm": ["ppca_components"]}


@pytest.fixture(scope="module")
def ppca(tmp_path_factory):
    """The config and the output of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("ppca")
    config = folder / "ppca.toml"
    config.write_text(PPCA)
    ref = folder / "ref"
    assert main(["run", str(config), "--out", str(ref)]) == 0
    assert not Path(partial_dir(str(ref))).exists()  # removed once the output is written
    return config, ref


def test_sigkill_mid_pipeline_sweep_then_resume(tmp_path, ppca, capsys):
    config, ref = ppca
    out = tmp_path / "killed"
    partial = Path(partial_dir(str(out)))
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(config), str(out)], env={**os.environ, "CI": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and "p001.pkl" not in _points(partial):
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and not out.exists()

    # the finished points are complete files (temporary name, then rename), nothing else is left
    assert _points(partial) == ["p000.pkl", "p001.pkl"]
    assert sorted(os.listdir(partial)) == ["manifest.json", "p000.pkl", "p001.pkl"]
    for i in range(2):
        _check_point_file(partial / f"p{i:03d}.pkl", i)

    # a changed config refuses to mix with those points: one line, nothing written or removed
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(out), "--set", "fit.max_iter=201"])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "--force" in err and err.count("\n") == 1
    assert not out.exists() and _points(partial) == ["p000.pkl", "p001.pkl"]

    # the same command resumes: says so, fits only p002 and p003, removes the partial folder
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"resuming: 2 of {N} sweep points already finished in {partial} (p000, p001); fitting the other 2" in captured.err
    assert "2 point(s) resumed from an interrupted run, 2 fitted now" in captured.out
    assert not partial.exists()
    assert json.loads((out / "metrics.json").read_text())["resumed_points"] == ["p000", "p001"]
    _assert_same_results(out, ref, "selection.csv", PPCA_ARRAYS)


def test_changed_config_refuses_without_force(tmp_path, ppca, capsys):
    config, ref = ppca
    out = tmp_path / "o"
    other = PipelineStore(str(out), {"model": {"name": "something else"}}, N)
    other.open(discard=False)
    other.save_point(0, {"n_components": 1}, host_pickle(({"n_components": 1}, None)))
    before = {p: (Path(other.path) / p).read_bytes() for p in os.listdir(other.path)}

    code = main(["run", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "--force" in err and err.count("\n") == 1
    assert not out.exists() and {p: (Path(other.path) / p).read_bytes() for p in os.listdir(other.path)} == before

    code = main(["run", str(config), "--out", str(out), "--force"])
    captured = capsys.readouterr()
    assert code == 0 and "discarding" in captured.err and "resuming" not in captured.err
    assert not Path(other.path).exists()
    _assert_same_results(out, ref, "selection.csv", PPCA_ARRAYS)


def test_single_point_pipeline_writes_no_partial_folder(tmp_path, ppca, monkeypatch):
    config, _ = ppca

    def refuse(self, discard):
        raise AssertionError("a single-point run opened a partial folder")

    monkeypatch.setattr(_resume.PipelineStore, "open", refuse)
    assert main(["run", str(config), "--out", str(tmp_path / "o"), "--set", "sweep.n_components=[2]"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_corrupt_points_are_refitted(tmp_path, ppca, capsys, monkeypatch):
    config, ref = ppca
    out = tmp_path / "o"
    partial = Path(partial_dir(str(out)))
    _stop_after(monkeypatch, N - 1)  # every point saved, then interrupted before the output is written
    with pytest.raises(Stop):
        main(["run", str(config), "--out", str(out)])
    monkeypatch.undo()
    assert _points(partial) == [f"p{i:03d}.pkl" for i in range(N)] and not out.exists()

    # p000: truncated; p001: one payload byte flipped; p002: a valid checksum over a payload that
    # does not unpickle (caught only when loading); a stray temporary of a killed write
    p0 = (partial / "p000.pkl").read_bytes()
    (partial / "p000.pkl").write_bytes(p0[: len(p0) // 2])
    p1 = bytearray((partial / "p001.pkl").read_bytes())
    p1[-10] ^= 0xFF
    (partial / "p001.pkl").write_bytes(bytes(p1))
    head = json.loads((partial / "p002.pkl").read_bytes().split(b"\n", 1)[0])
    junk = b"not a pickle"
    head.update(nbytes=len(junk), sha256=hashlib.sha256(junk).hexdigest())
    (partial / "p002.pkl").write_bytes(json.dumps(head).encode() + b"\n" + junk)
    (partial / "p003.pkl.tmp-12345").write_bytes(b"half a point")

    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"resuming: 2 of {N} sweep points already finished in {partial} (p002, p003)" in captured.err
    assert f"p002 in {partial} is unreadable (UnpicklingError" in captured.err and "fitting it again" in captured.err
    assert "1 point(s) resumed from an interrupted run, 3 fitted now" in captured.out
    assert not partial.exists()
    _assert_same_results(out, ref, "selection.csv", PPCA_ARRAYS)


def test_cclone_sweep_resumes_per_k(tmp_path, capsys, monkeypatch):
    config = tmp_path / "cclone.toml"
    config.write_text(CCLONE)
    ref, out = tmp_path / "ref", tmp_path / "o"
    partial = Path(partial_dir(str(out)))
    assert main(["run", str(config), "--out", str(ref)]) == 0

    _stop_after(monkeypatch, 0)  # k=2 (both filter settings) finished, k=3 not
    with pytest.raises(Stop):
        main(["run", str(config), "--out", str(out)])
    monkeypatch.undo()
    assert _points(partial) == ["p000.pkl"]

    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"resuming: 1 of 2 sweep points already finished in {partial} (p000); fitting the other 1" in captured.err
    assert "p003: n_components=3, filter_germline=False" in captured.out and not partial.exists()
    _assert_same_results(out, ref, "selection.csv", {"obsm": ["X_cclone", "cclone_C_std"], "varm": ["cclone_V", "cclone_V_std"]})
    table = pd.read_csv(out / "selection.csv")
    assert list(table["n_components"]) == [2, 2, 3, 3] and table["chosen"].sum() == 1
