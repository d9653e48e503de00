"""Sharded sweeps on 4 fake CPU devices equal the one-device results (a subprocess: XLA_FLAGS must be
set before JAX starts), and the memory estimate refuses a sweep that cannot fit."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import jax, jax.numpy as jnp, numpy as np
    import jaxfactor as jf
    from jaxfactor._fit import sweep_mesh
    from jaxfactor.data import simulate_nmf
    from jaxfactor.factorization._wnmf import WNMFHparams, wnmf_bcd, wnmf_data
    from jaxfactor.nmf import NMFHparams, nmf_mu
    from jaxfactor.runner import run

    assert jax.device_count() == 4, jax.devices()
    mesh = sweep_mesh()
    assert mesh.axis_types == (jax.sharding.AxisType.Explicit,) and mesh.axis_names == ("sweep",)
    X = jnp.asarray(simulate_nmf(n_samples=40, n_features=25, n_components=3, noise=0.05, seed=1).X)

    # 3 x 2 grid x 3 seeds = 18 pairs: not a multiple of 4, padded to 20
    alg = nmf_mu(3, "random")
    grid, _ = jf.hparam_grid(NMFHparams(), l2_H=[0.0, 0.5, 1.0], l1_W=[0.0, 0.1])
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    one = jf.fit_many(alg, X, grid, keys, max_iter=60, tol=1e-4)
    for grid_map in ("vmap", "map"):
        four = jf.fit_many(alg, X, grid, keys, max_iter=60, tol=1e-4, mesh=mesh, grid_map=grid_map)
        np.testing.assert_allclose(four.objective, one.objective, rtol=1e-5)  # float32
        np.testing.assert_array_equal(four.n_iter, one.n_iter)
        np.testing.assert_array_equal(four.best_index, one.best_index)
        np.testing.assert_allclose(four.best.state.W, one.best.state.W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(four.best.trace, one.best.trace, rtol=1e-5)

    # weighted NMF (CCLONE's box-constrained BCD): 5 points x 1 seed = 5 pairs on 4 devices
    rng = np.random.default_rng(0)
    M = rng.random((30, 20)).astype(np.float32)
    data = wnmf_data(M, (rng.random((30, 20)) > 0.3).astype(np.float32))
    wgrid, _ = jf.hparam_grid(WNMFHparams(), l2_C=[0.0, 0.01, 0.1, 1.0, 10.0])
    wkeys = jax.random.split(jax.random.PRNGKey(0), 1)
    a = jf.fit_many(wnmf_bcd(2), data, wgrid, wkeys, max_iter=50, tol=0.0)
    b = jf.fit_many(wnmf_bcd(2), data, wgrid, wkeys, max_iter=50, tol=0.0, mesh=mesh)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5)
    np.testing.assert_allclose(b.best.state.C, a.best.state.C, rtol=1e-4, atol=1e-5)

    # the runner: run.shard = "auto" (4 devices) against "off" (one device), 7 points x 2 restarts
    out = sys.argv[1]
    common = ["data.n_samples=60", "data.n_features=30", "data.n_components=3", "fit.max_iter=30", "fit.n_init=2",
              "run.figures=false", "sweep.n_components=[3]", "sweep.l2_H=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"]
    _, sharded = run(sys.argv[2], overrides=common, out=os.path.join(out, "sharded"))
    _, single = run(sys.argv[2], overrides=common + ["run.shard=off"], out=os.path.join(out, "single"))
    meta = json.load(open(os.path.join(out, "sharded", "metrics.json")))
    assert meta["sharded_devices"] == 4 and "sharded_devices" not in json.load(open(os.path.join(out, "single", "metrics.json")))
    for r, s in zip(sharded, single):
        np.testing.assert_allclose(r["objective"], s["objective"], rtol=1e-5)
        np.testing.assert_allclose(r["restart_objectives"], s["restart_objectives"], rtol=1e-5)
        # HALS carries float32 rounding through its coordinate updates: entries near 0 of a W whose
        # largest entries are ~1 moved by 1.1e-6 under another code generation
        np.testing.assert_allclose(r["arrays"]["W"], s["arrays"]["W"], rtol=1e-4, atol=1e-5)
    print("OK")
    """
)


def test_sharded_sweeps_equal_one_device(tmp_path):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "experiments" / "demo.toml"
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "CI": "1", "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(demo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
    assert "sweep on 4 cpu devices (sweep sharded)" in proc.stderr


# ----------------------------------------------------------------------------------------------
# memory estimate before compiling


def test_memory_estimate_refuses_with_a_hint(tmp_path, capsys, monkeypatch):
    from jaxfactor.runner import _sharding, main

    cfg = tmp_path / "big.toml"
    cfg.write_text('[data]\nsimulator = "nmf"\nn_samples = 200\nn_features = 100\nn_components = 3\n'
                   '[model]\nname = "nmf"\nn_components = 3\n[fit]\nn_init = 4\n[sweep]\nl2_H = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]\n')
    # data 80 kB; one fit 4 x state (200x3 + 3x100 floats) + data = 94.4 kB; 32 fits ~ 3 MB
    monkeypatch.setattr(_sharding, "available_bytes", lambda device: (1_000_000, True))
    code = main(["run", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "needs about 3 MiB (8 point(s) x 4 restart(s)" in err and "run.max_points_per_call = 2" in err
    assert not (tmp_path / "o").exists() and not any(p.startswith(".o") for p in os.listdir(tmp_path))
    # following the hint fits
    code = main(["run", str(cfg), "--out", str(tmp_path / "o"), "--set", "run.max_points_per_call=2", "--set", "fit.max_iter=5",
                 "--set", "run.figures=false"])
    assert code == 0, capsys.readouterr().err


def test_memory_estimate_numbers():
    from jaxfactor.nmf import NMFHparams, nmf_mu
    from jaxfactor.runner._sharding import call_bytes, check_memory

    data = jax.ShapeDtypeStruct((1000, 500), np.float32)
    need, per_fit, alive = call_bytes(nmf_mu(10), data, NMFHparams(), n_points=16, n_seeds=4, grid_map="vmap", n_devices=4)
    state = (1000 * 10 + 10 * 500) * 4
    assert per_fit == 4 * state + 2_000_000 and alive == 16 and need == 2_000_000 + 16 * per_fit
    _, _, alive_map = call_bytes(nmf_mu(10), data, NMFHparams(), n_points=16, n_seeds=4, grid_map="map")
    assert alive_map == 4
    dev = jax.devices()[0]
    check_memory(nmf_mu(10), data, NMFHparams(), n_points=16, n_seeds=4, grid_map="vmap", device=dev, mesh=None,
                 where="x", available=(10**10, True))  # fits: no error
    with pytest.raises(ValueError, match="lower fit.n_init to 2"):
        check_memory(nmf_mu(10), data, NMFHparams(), n_points=16, n_seeds=4, grid_map="map", device=dev, mesh=None,
                     where="x", available=(int(2_000_000 + 2.5 * per_fit), True))
    with pytest.raises(ValueError, match="one fit alone does not fit"):
        check_memory(nmf_mu(10), data, NMFHparams(), n_points=1, n_seeds=1, grid_map="vmap", device=dev, mesh=None,
                     where="x", available=(1_000_000, True))


# ----------------------------------------------------------------------------------------------
# device selection and precision


def test_device_selection_and_x64(tmp_path, capsys, small_nmf):
    from jaxfactor.runner import main

    np.save(tmp_path / "x.npy", small_nmf.X)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 3\n[fit]\nmax_iter = 10\n[run]\nfigures = false\n')
    # float32 by default, float64 with run.x64 = true; "cpu" and "auto" both land on this CPU
    assert main(["run", str(cfg), "--out", str(tmp_path / "f32"), "--device", "cpu"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "f64"), "--set", "run.x64=true"]) == 0
    capsys.readouterr()
    assert np.load(tmp_path / "f32" / "p000.npz")["W"].dtype == np.float32
    assert np.load(tmp_path / "f64" / "p000.npz")["W"].dtype == np.float64
    meta = json.loads((tmp_path / "f64" / "metrics.json").read_text())
    assert meta["x64"] is True and meta["platform"] == "cpu"
    # a platform that is not present: one line naming what is, nothing written
    present = sorted({d.platform for d in jax.devices()})
    for name in ({"gpu", "tpu"} - set(present)):
        code = main(["run", str(cfg), "--out", str(tmp_path / name), "--device", name])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert f"device '{name}' requested but not present (available: {', '.join(present)})" in err
        assert not (tmp_path / name).exists() and not (tmp_path / f".{name}.partial").exists()


def test_cclone_sweep_memory_estimate_refuses_before_fitting(tmp_path, capsys, monkeypatch):
    """A pipeline (CCLONE) sweep too large for memory: one line naming the call and the fix, nothing written."""
    from jaxfactor.runner import _sharding, main

    here = os.path.dirname(os.path.abspath(__file__))
    # 400 cells x 60 variants (cclone_demo's simulator, shrunk); 50 bootstraps x 6 filters at k = 4
    monkeypatch.setattr(_sharding, "available_bytes", lambda device: (2_000_000, True))
    args = ["run", os.path.join(here, "..", "experiments", "cclone_demo.toml"), "--out", str(tmp_path / "o"),
            "--set", "data.n_cells=400", "--set", "data.n_variants=60", "--set", "model.n_bootstrap=50",
            "--set", "sweep.k=[2, 4]", "--set", "sweep.min_maf=[2.0, 5.0, 10.0]", "--set", "sweep.filter_germline=[true, false]"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "one compiled CCLONE call (k = 4: 50 bootstraps x 6 filter setting(s)" in err and "lower model.n_bootstrap" in err
    assert not os.listdir(tmp_path)
