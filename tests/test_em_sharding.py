"""EM models with their cells split over 4 fake CPU devices (``mesh=cell_mesh()``) equal the
one-device fits: GMM (full, diag), binomial mixture (MAP-EM, VB), PPCA (moments and raw X).

Every n is not a multiple of 4, so the last device holds padded rows that must add nothing.
One subprocess: XLA_FLAGS must be set before JAX starts.
"""

import os
import subprocess
import sys
import textwrap

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")

SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    from numpy.testing import assert_allclose
    import jaxfactor as jf
    from jaxfactor.data import simulate_clones
    from jaxfactor.data._simulate_gmm import simulate_gmm
    from jaxfactor.data._simulate_ppca import simulate_ppca
    from jaxfactor.mixture import (GMMHparams, binomial_data, binomial_mixture_vb, fit_binomial_mixture,
                                   fit_gmm, fit_ppca, gmm, ppca)

    assert jax.device_count() == 4, jax.devices()
    mesh = jf.cell_mesh()
    LL = dict(rtol=3e-5)               # float32 log-likelihoods / ELBOs (sums in another order: up to 1.2e-5 seen)
    PAR = dict(rtol=1e-4, atol=1e-5)   # float32 parameters after tens of EM steps
    warnings.simplefilter("ignore")    # ConvergenceWarning of the short fits

    # GMM, n = 101 -> 104 rows; block_size 8 puts the padded rows in a block of the last device
    for cov in ("full", "diag"):
        X = simulate_gmm(101, 3, 3, separation=3.0, covariance_type=cov, seed=1).X
        kw = dict(covariance_type=cov, max_iter=30, tol=1e-5, block_size=8)
        one, four = fit_gmm(X, 3, **kw), fit_gmm(X, 3, mesh=mesh, **kw)
        assert one.n_iter == four.n_iter, (cov, one.n_iter, four.n_iter)
        assert_allclose(four.trace, one.trace, **LL)
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            assert_allclose(getattr(four, name), getattr(one, name), **PAR, err_msg=name)
        assert_allclose(four.predict_proba(X), one.predict_proba(X), atol=1e-5)

    # binomial mixture, n = 61 -> 64 rows; cell 7 has depth 0 everywhere: a real cell (it counts for
    # the mixing weights), unlike the 3 padded rows
    sim = simulate_clones(n_cells=61, n_variants=30, n_clones=3, healthy_fraction=0.0, n_germline=3, seed=0)
    alt, dp = np.array(sim.alt), np.array(sim.coverage)
    alt[7], dp[7] = 0, 0
    for method, learn in (("em", False), ("vb", True)):
        kw = dict(method=method, learn_weights=learn, max_iter=40, tol=1e-5)
        one, four = fit_binomial_mixture(alt, dp, 3, **kw), fit_binomial_mixture(alt, dp, 3, mesh=mesh, **kw)
        assert one.n_iter == four.n_iter, (method, one.n_iter, four.n_iter)
        assert four.clone_prob.shape == (61, 3)
        assert_allclose(four.trace, one.trace, **LL)
        assert_allclose(four.log_likelihood, one.log_likelihood, **LL)
        assert_allclose(four.clone_prob, one.clone_prob, atol=1e-5)
        assert_allclose(four.clone_af, one.clone_af, **PAR)
        assert_allclose(four.weights, one.weights, **PAR)
    # the Algorithm API: CellData in, q(z) split over the devices with zero padded rows (the same
    # algorithms and static arguments as the last fit_binomial_mixture: nothing new to compile)
    hp = jf.mixture.BinomialMixtureHparams()
    data = binomial_data(alt, dp, sparse=False)
    key = jax.random.PRNGKey(2)
    a = jf.fit(binomial_mixture_vb(3, True), data, hp, key, max_iter=40, tol=1e-5)
    b = jf.fit(binomial_mixture_vb(3, True, mesh), binomial_data(alt, dp, mesh=mesh), hp, key, max_iter=40, tol=1e-5)
    assert int(a.n_iter) == int(b.n_iter)
    assert b.state.prob.shape == (64, 3) and np.all(np.asarray(b.state.prob)[61:] == 0)
    assert_allclose(np.asarray(b.state.prob)[:61], a.state.prob, atol=1e-5)
    assert_allclose(b.trace, a.trace, **LL)

    # PPCA, n = 53 -> 56 rows: moments (n > d: summed once over the devices) and raw X (d >= n: every step)
    for d in (6, 60):
        X = simulate_ppca(n_samples=53, n_features=d, n_components=2, noise_var=0.1, seed=0).X
        kw = dict(max_iter=60, tol=1e-5)
        one, four = fit_ppca(X, 2, **kw), fit_ppca(X, 2, mesh=mesh, **kw)
        assert one.n_iter == four.n_iter, (d, one.n_iter, four.n_iter)
        assert_allclose(four.trace, one.trace, **LL)
        assert_allclose(four.noise_variance, one.noise_variance, **PAR)
        assert_allclose(four.mean, one.mean, **PAR)
        assert_allclose(four.components @ four.components.T, one.components @ one.components.T, **PAR)

    # bad meshes and unsplittable data: one-line ValueErrors before anything is compiled
    X = simulate_gmm(101, 3, 3, seed=1).X
    devs = np.array(jax.devices())
    for bad in (jax.sharding.Mesh(devs, ("rows",)), jax.sharding.Mesh(devs.reshape(2, 2), ("cells", "x")), "cells"):
        for call in (lambda: fit_gmm(X, 3, mesh=bad), lambda: gmm(3, mesh=bad), lambda: ppca(2, mesh=bad),
                     lambda: fit_ppca(X, 2, mesh=bad), lambda: fit_binomial_mixture(alt, dp, 3, mesh=bad)):
            try:
                call()
            except ValueError as e:
                assert "cells" in str(e) and "\\n" not in str(e), e
            else:
                raise AssertionError(f"no error for mesh {bad!r}")
    for call, words in ((lambda: jf.fit(gmm(3, mesh=mesh), jnp.asarray(X), GMMHparams(), key), "cell_data"),
                        (lambda: fit_binomial_mixture(alt, dp, 3, sparse=True, mesh=mesh), "sparse")):
        try:
            call()
        except ValueError as e:
            assert words in str(e), e
        else:
            raise AssertionError("no error")

    # the runner: run.shard = "cells" against "off" for the three EM tasks (small data, 2 sweep points)
    import json, os, sys
    import pandas as pd
    from jaxfactor.runner import run

    root, exp = sys.argv[1], sys.argv[2]
    cases = {
        "gmm_demo.toml": ["data.n_samples=203", "sweep.n_components=[2, 3]", "fit.n_init=1", "fit.max_iter=30"],
        "ppca_demo.toml": ["data.n_samples=101", "data.n_features=6", "sweep.n_components=[1, 2]", "fit.max_iter=50"],
        "binomial_mixture_demo.toml": ["data.n_cells=101", "data.n_variants=20", "sweep.n_components=[2, 3]",
                                       "fit.n_init=1", "fit.max_iter=30"],
    }
    for name, sets in cases.items():
        sets = sets + ["run.figures=false"]
        tables = []
        for shard in ("off", "cells"):
            out = os.path.join(root, f"{name}-{shard}")
            run(os.path.join(exp, name), overrides=sets + [f"run.shard={shard}"], out=out, log=lambda m: None)
            tables.append(pd.read_csv(os.path.join(out, "selection.csv")))
        a, b = tables
        assert_allclose(b["log_likelihood"], a["log_likelihood"], rtol=1e-5, err_msg=name)
        assert (b["n_iter"] == a["n_iter"]).all() and (b["chosen"] == a["chosen"]).all(), name
    print("OK")
    """
)


def test_em_fits_with_cells_over_four_devices_equal_one_device(tmp_path):
    script = tmp_path / "em_sharding.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "CI": "1", "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), EXPERIMENTS], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
