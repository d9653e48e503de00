"""Data-parallel VAE training (``fit_vae(mesh=cell_mesh())``) on 4 fake CPU devices equals the
one-device fit: parameters, batch-norm statistics, optimiser state, the training-loss history and
the held-out negative ELBO (a subprocess: XLA_FLAGS must be set before JAX starts). Bad meshes and
batch sizes are one-line errors before anything compiles; ``run.shard = "cells"`` reaches
``fit_vae`` as a cell mesh."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax, numpy as np
    import jaxfactor as jf
    from jaxfactor.data import simulate_counts
    from jaxfactor._fit import sweep_mesh
    from jaxfactor.models import _vae_api, fit_vae

    assert jax.device_count() == 4, jax.devices()
    mesh = jf.cell_mesh()
    sim = simulate_counts(n_cells=200, n_genes=30, n_types=3, n_latent=3, mean_library=500.0, seed=0)
    X = sim.counts
    X[7] = 0  # an all-zero cell is dropped: 199 cells, 179 training cells (not a multiple of 4 or of 32)
    warnings.filterwarnings("ignore", "dropped 1 all-zero cells")

    # bad input: one-line errors before anything compiles
    def refuse(*args, **kwargs):
        raise AssertionError("compiled before validating the input")

    init, epoch = _vae_api._init, _vae_api._epoch
    _vae_api._init = _vae_api._epoch = refuse
    for kwargs, message in (({"batch_size": 30, "mesh": mesh}, "batch_size=30 is not a multiple of the 4 devices"),
                            ({"mesh": sweep_mesh()}, "mesh must be a 1-D jax.sharding.Mesh with axis 'cells'"),
                            ({"mesh": "cells"}, "mesh must be a 1-D")):
        try:
            fit_vae(X, max_epochs=1, **kwargs)
        except ValueError as err:
            assert message in str(err) and "\\n" not in str(err), err
        else:
            raise AssertionError(kwargs)
    _vae_api._init, _vae_api._epoch = init, epoch

    # ZINB, batch norm and encoder dropout on, KL warm-up: 5 minibatches of 32 per epoch split
    # 8 cells per device, then the short one of 19 cells padded to 20 (5 per device, one masked
    # row); early stopping on (the held-out loss inside the compiled epoch, best parameters kept).
    # (The likelihood is per cell, so NB shards as ZINB does: one fit pair, one program each.)
    worst = 0.0
    for likelihood, early in (("zinb", True),):
        kw = dict(likelihood=likelihood, n_latent=3, n_hidden=16, batch_size=32, max_epochs=3, seed=1,
                  kl_warmup_epochs=2.0, lr=3e-3, norm="batch", dropout_rate=0.1, early_stopping=early)
        one = fit_vae(X, **kw)
        four = fit_vae(X, mesh=mesh, **kw)
        assert four.config == one.config and np.array_equal(four.val_index, one.val_index)
        leaves_one, tree = jax.tree_util.tree_flatten(one.state)
        leaves_four, tree_four = jax.tree_util.tree_flatten(four.state)
        assert tree == tree_four
        for a, b in zip(leaves_one, leaves_four):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)  # float32, sums in another order
                worst = max(worst, float(np.max(np.abs(b - a) / (1e-5 + 1e-4 * np.abs(a)), initial=0.0)))
            else:
                np.testing.assert_array_equal(b, a)  # counters, the RNG key
        assert len(one.history["train_loss"]) == 3
        np.testing.assert_allclose(four.history["train_loss"], one.history["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(four.history["val_loss"], one.history["val_loss"], rtol=1e-5)  # held-out -ELBO
        # the model is back on one device and predicts as the one-device fit does
        assert len(four.state.params["encoder"]["mean"]["kernel"].devices()) == 1
        np.testing.assert_allclose(four.encode(X[:50]), one.encode(X[:50]), rtol=1e-4, atol=1e-5)
    print("largest state difference, as a fraction of the tolerance:", worst)
    print("OK")
    """
)


def test_data_parallel_vae_equals_one_device(tmp_path):
    script = tmp_path / "vae_sharded.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "CI": "1", "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_runner_shard_cells_passes_a_cell_mesh(monkeypatch):
    """``run.shard = "cells"`` gives ``fit_vae`` ``mesh=jaxfactor.cell_mesh()`` (here one device; no fit is run)."""
    from pathlib import Path

    import jaxfactor.models._vae_api
    from jaxfactor._cells import CELLS
    from jaxfactor.runner._config import load_config

    seen = []

    class Stop(Exception):
        pass

    def spy(*args, mesh=None, **kwargs):
        seen.append(mesh)
        raise Stop

    monkeypatch.setattr(jaxfactor.models._vae_api, "fit_vae", spy)  # what the VAE family's fit calls
    demo = str(Path(__file__).resolve().parents[1] / "experiments" / "vae_demo.toml")
    for shard, sharded in (("cells", True), ("off", False)):
        cfg = load_config(demo, ["data.n_cells=60", "data.n_genes=20", "sweep.n_components=[3]", f"run.shard={shard}"])
        with pytest.raises(Stop):
            cfg.spec.pipeline.execute(cfg, cfg.spec.pipeline.load(cfg))
        mesh = seen.pop()
        assert (mesh is not None) == sharded
        if sharded:
            assert tuple(mesh.axis_names) == (CELLS,) and mesh.size == len(np.asarray(mesh.devices).ravel())
