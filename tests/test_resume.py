"""Resumable sweeps: SIGKILL in the middle of a sweep, rerun, same results as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxfactor.runner import main
from jaxfactor.runner._resume import SweepStore, partial_dir

CONFIG = """
[data]
simulator = "nmf"
n_samples = 200
n_features = 120
n_components = 3
seed = 0
[model]
name = "nmf"
n_components = 3
init = "random"
[fit]
max_iter = 3000
tol = 0.0
n_init = 2
[run]
figures = false
max_points_per_call = 1
[sweep]
l2_H = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
"""
N_POINTS = 10


def _point_files(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith("p") and p.endswith(".npz")) if os.path.isdir(folder) else []


def _load_points(out):
    return {p: dict(np.load(os.path.join(out, p))) for p in _point_files(out)}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG)
    return path


def test_sigkill_mid_sweep_then_resume(tmp_path, config, capsys):
    out = tmp_path / "killed"
    partial = Path(partial_dir(str(out)))
    proc = subprocess.Popen([sys.executable, "-m", "jaxfactor", "run", str(config), "--out", str(out)],
                            env={**os.environ, "CI": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(_point_files(partial)) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and not out.exists()

    # every point file left behind is complete (temporary names, then rename); it names its config
    done = _point_files(partial)
    assert 2 <= len(done) < N_POINTS, done
    for name in done:
        with np.load(partial / name) as z:
            meta = json.loads(str(z["__record__"]))
            assert np.all(np.isfinite(z["array__W"])) and meta["id"] == name[:-4] and len(meta["config_hash"]) == 16

    # a changed config refuses to mix with those points: one line, nothing written
    code = main(["run", str(config), "--out", str(out), "--set", "fit.max_iter=2999"])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "--force" in err and err.count("\n") == 1
    assert not out.exists() and _point_files(partial) == done

    # the same command resumes: says so, fits only the rest, removes the partial folder
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"resuming: {len(done)} of {N_POINTS} sweep points already finished" in captured.err
    assert f"{len(done)} point(s) resumed" in captured.out
    assert not partial.exists()

    # an uninterrupted run gives the same numbers
    ref = tmp_path / "ref"
    assert main(["run", str(config), "--out", str(ref)]) == 0
    capsys.readouterr()
    got, want = _load_points(out), _load_points(ref)
    assert sorted(got) == sorted(want) == [f"p{i:03d}.npz" for i in range(N_POINTS)]
    for name in want:
        for key in ("W", "H", "trace"):
            np.testing.assert_array_equal(got[name][key], want[name][key])  # same compiled program: bitwise
    m_got = json.loads((out / "metrics.json").read_text())["points"]
    m_want = json.loads((ref / "metrics.json").read_text())["points"]
    assert sum(p.get("resumed", False) for p in m_got) == len(done)
    for a, b in zip(m_got, m_want):
        assert a["objective"] == b["objective"] and a["restart_objectives"] == b["restart_objectives"]


def test_force_discards_points_of_another_config(tmp_path, config, capsys):
    out = tmp_path / "o"
    other = SweepStore(str(out), {"model": {"name": "something else"}}, N_POINTS)
    other.open(discard=False)
    other.save(0, {"id": "p000", "objective": 1.0, "arrays": {"W": np.zeros(2)}, "trace": np.zeros(1), "trace_iter": np.zeros(1)})
    code = main(["run", str(config), "--out", str(out), "--set", "fit.max_iter=10", "--set", "run.max_points_per_call=0"])
    assert code == 2 and "different config" in capsys.readouterr().err
    code = main(["run", str(config), "--out", str(out), "--set", "fit.max_iter=10", "--set", "run.max_points_per_call=0", "--force"])
    captured = capsys.readouterr()
    assert code == 0 and "discarding" in captured.err and "resuming" not in captured.err
    assert not Path(partial_dir(str(out))).exists() and len(_point_files(out)) == N_POINTS


def test_resume_ignores_how_keys_and_stray_temporaries(tmp_path, config, capsys):
    """Device/sharding/points-per-call are not part of the hash; a half-written temp file is ignored."""
    out = tmp_path / "o"
    tiny = ["--set", "fit.max_iter=20", "--set", "sweep.l2_H=[0.0, 0.5, 1.0]"]
    ref = tmp_path / "ref"
    assert main(["run", str(config), "--out", str(ref), *tiny]) == 0
    # pretend a killed run finished p001 and was writing p002
    from jaxfactor.runner._config import load_config

    cfg = load_config(str(config), [tiny[1], tiny[3]])
    store = SweepStore(str(out), cfg.raw, 3)
    store.open(discard=False)
    with np.load(ref / "p001.npz") as z:
        arrays = {"W": z["W"], "H": z["H"]}
        trace, trace_iter = z["trace"], z["trace_iter"]
    metrics = json.loads((ref / "metrics.json").read_text())["points"][1]
    store.save(1, {**metrics, "shown": ["n_components", "method", "init", "l2_H"], "arrays": arrays, "trace": trace,
                   "trace_iter": trace_iter})
    (Path(store.path) / "p002.npz.tmp-12345").write_bytes(b"PK\x03\x04 half a zip")
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(out), *tiny, "--set", "run.max_points_per_call=2", "--set", "run.shard=off"])
    assert code == 0
    assert "resuming: 1 of 3 sweep points already finished" in capsys.readouterr().err
    for i in range(3):
        a, b = np.load(out / f"p{i:03d}.npz"), np.load(ref / f"p{i:03d}.npz")
        np.testing.assert_allclose(a["W"] @ a["H"], b["W"] @ b["H"], rtol=1e-4, atol=1e-5)  # float32, other batch size (6e-5 seen)
