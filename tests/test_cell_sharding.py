"""One NMF / weighted-NMF fit with its cells (rows) split over 4 fake CPU devices equals the
one-device fit (a subprocess: XLA_FLAGS must be set before JAX starts); n is not a multiple of 4,
so the padding rows are exercised too."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    import jax, jax.numpy as jnp, numpy as np
    import jaxfactor as jf
    from jaxfactor import nmf
    from jaxfactor._cells import pad_tree, place_cells, place_tree
    from jaxfactor._fit import _fit_jit, sweep_mesh
    from jaxfactor.data import simulate_nmf
    from jaxfactor.factorization import NMF_CELLS, WNMFHparams, fit_wnmf, wnmf_bcd, wnmf_data
    from jaxfactor.factorization._nmf import FACTORIES, NMFHparams
    from jaxfactor.runner import run

    warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
    assert jax.device_count() == 4, jax.devices()
    mesh = jf.cell_mesh()
    assert mesh.axis_names == ("cells",) and mesh.axis_types == (jax.sharding.AxisType.Explicit,)
    X = simulate_nmf(n_samples=37, n_features=20, n_components=3, noise=0.05, seed=0).X  # 37 rows: padded to 40

    # NMF: the three update rules, from the init each one is usually paired with
    kw = dict(max_iter=60, tol=1e-4, l1_W=0.01, l2_H=0.1)
    for method, init in (("mu", "random"), ("pgd", "nndsvda"), ("kl", "random")):
        one = nmf.fit(X, 3, method=method, init=init, **kw)
        four = nmf.fit(X, 3, method=method, init=init, mesh=mesh, **kw)
        assert four.W.shape == (37, 3) and four.H.shape == (3, 20), method
        assert four.n_iter == one.n_iter, (method, four.n_iter, one.n_iter)
        np.testing.assert_allclose(four.trace, one.trace, rtol=1e-5, err_msg=method)  # float32, psum order
        np.testing.assert_allclose(four.W, one.W, rtol=1e-4, atol=1e-5, err_msg=method)
        np.testing.assert_allclose(four.H, one.H, rtol=1e-4, atol=1e-5, err_msg=method)
        # the padding rows stay exactly zero under the update (the same compiled fit: no new compilation)
        size = _fit_jit._cache_size()
        start = jax.tree_util.tree_map(np.asarray, FACTORIES[method](3, init).init(jax.random.PRNGKey(0), jnp.asarray(X), NMFHparams()))
        s0 = place_tree(mesh, NMF_CELLS.state, pad_tree(NMF_CELLS.state, start, 40))
        res = jf.fit(FACTORIES[method](3, init, mesh), place_cells(X, mesh, NMF_CELLS), NMFHparams(0.01, 0.0, 0.0, 0.1),
                     jax.random.PRNGKey(0), state0=s0, max_iter=60, tol=1e-4)
        assert np.all(np.asarray(res.state.W)[37:] == 0), method
        np.testing.assert_allclose(float(res.trace[-1]), one.objective, rtol=1e-5)
        assert _fit_jit._cache_size() == size, "the direct fit recompiled"

    # restarts (split seeds, as the one-device fit_many), and a second call on new data does not recompile
    one = nmf.fit(X, 3, init="random", n_restarts=2, **kw)
    four = nmf.fit(X, 3, init="random", n_restarts=2, mesh=mesh, **kw)
    np.testing.assert_allclose(four.restart_objectives, one.restart_objectives, rtol=1e-5)
    np.testing.assert_allclose(four.W, one.W, rtol=1e-4, atol=1e-5)
    size = _fit_jit._cache_size()
    nmf.fit(X * 2.0, 3, init="random", mesh=mesh, **kw)
    assert _fit_jit._cache_size() == size

    # weighted NMF (box-constrained BCD and MU), 30 cells (padded to 32), some cells and a variant masked out
    rng = np.random.default_rng(0)
    M = rng.random((30, 20)).astype(np.float32)
    data = wnmf_data(M, (rng.random((30, 20)) > 0.3).astype(np.float32), row_mask=np.arange(30) % 7 != 3,
                     col_mask=np.arange(20) != 2)
    for method in ("bcd", "mu"):
        args = (data, 2, WNMFHparams(0.01, 0.01), jax.random.PRNGKey(1))
        one = fit_wnmf(*args, method=method, max_iter=40, tol=0.0)
        four = fit_wnmf(*args, method=method, max_iter=40, tol=0.0, mesh=mesh)
        assert four.state.C.shape == (30, 2) and int(four.n_iter) == int(one.n_iter) == 40
        np.testing.assert_allclose(np.asarray(four.trace), np.asarray(one.trace), rtol=1e-5, err_msg=method)
        np.testing.assert_allclose(np.asarray(four.state.C), np.asarray(one.state.C), rtol=1e-4, atol=1e-5, err_msg=method)
        np.testing.assert_allclose(np.asarray(four.state.V), np.asarray(one.state.V), rtol=1e-4, atol=1e-5, err_msg=method)

    # a wrong mesh: one line, before anything compiles
    for call in (lambda: nmf.fit(X, 3, mesh=sweep_mesh()), lambda: wnmf_bcd(2, 2, sweep_mesh()),
                 lambda: fit_wnmf(data, 2, WNMFHparams(), jax.random.PRNGKey(0), mesh="cells")):
        try:
            call()
        except ValueError as exc:
            assert "axis 'cells'" in str(exc) and "\\n" not in str(exc), exc
        else:
            raise AssertionError("no ValueError for a wrong mesh")

    # the runner: run.shard = "cells" against "off" on the demo config (61 cells: padded to 64)
    out = sys.argv[1]
    common = ["data.n_samples=61", "data.n_features=30", "data.n_components=3", "fit.max_iter=30", "fit.n_init=2",
              "run.figures=false", "sweep.n_components=[3]", "sweep.l2_H=[0.0, 0.5]"]
    _, cells = run(sys.argv[2], overrides=common + ["run.shard=cells"], out=os.path.join(out, "cells"))
    _, single = run(sys.argv[2], overrides=common + ["run.shard=off"], out=os.path.join(out, "single"))
    meta = json.load(open(os.path.join(out, "cells", "metrics.json")))
    assert meta["sharded_devices"] == 4 and meta["shard"] == "cells", meta
    assert "sharded_devices" not in json.load(open(os.path.join(out, "single", "metrics.json")))
    for r, s in zip(cells, single):
        assert r["n_iter"] == s["n_iter"] and r["best_restart"] == s["best_restart"]
        assert r["arrays"]["W"].shape == (61, 3)
        np.testing.assert_allclose(r["objective"], s["objective"], rtol=1e-5)
        np.testing.assert_allclose(r["restart_objectives"], s["restart_objectives"], rtol=1e-5)
        np.testing.assert_allclose(r["arrays"]["W"], s["arrays"]["W"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["arrays"]["H"], s["arrays"]["H"], rtol=1e-4, atol=1e-5)
    print("OK")
    """
)


def test_cell_sharded_fits_equal_one_device(tmp_path):
    demo = Path(__file__).resolve().parents[1] / "experiments" / "demo.toml"
    script = tmp_path / "cells.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "CI": "1", "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(demo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
    assert "sweep on 4 cpu devices (cells of each fit sharded)" in proc.stderr


def test_cells_config_value_and_memory_estimate(tmp_path):
    """run.shard = "cells" is a valid value for every model (pipelines get it in cfg.run), an
    unknown value is refused, and the estimate for a cell-sharded fit splits data and state."""
    from jaxfactor.nmf import NMFHparams, nmf_mu
    from jaxfactor.runner._config import ConfigError, build_config
    from jaxfactor.runner._sharding import call_bytes, make_mesh

    gmm = {"data": {"simulator": "gmm"}, "model": {"name": "gmm", "n_components": 2}}
    cfg = build_config({**gmm, "run": {"shard": "cells"}}, config_dir=str(tmp_path))
    assert cfg.run["shard"] == "cells"
    with pytest.raises(ConfigError, match="cells"):
        build_config({**gmm, "run": {"shard": "rows"}}, config_dir=str(tmp_path))
    if jax.device_count() == 1:
        assert make_mesh("cells", jax.devices()[0]) is None  # one device: nothing to split

    data = jax.ShapeDtypeStruct((1000, 500), np.float32)
    need, per_fit, alive = call_bytes(nmf_mu(10), data, NMFHparams(), n_points=16, n_seeds=4, grid_map="vmap",
                                      n_devices=4, cells=True)
    state = (1000 * 10 + 10 * 500) * 4
    assert alive == 1 and per_fit == (4 * state + 2_000_000) // 4 and need == (2_000_000 + 4 * state + 2_000_000) // 4
