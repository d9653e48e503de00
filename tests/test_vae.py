"""The Flax count VAE / autoencoder: likelihoods, bounds, training, determinism, checkpoints,
compiled batch inference, bad input, the runner configs.

Shapes are small and shared (one network configuration for most tests) so compiled programs are
reused; the file runs in well under a minute on 2 cores.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxfactor.data import simulate_counts
from jaxfactor.models import _likelihoods as L
from jaxfactor.models import _vae_api, _vae_infer, fit_vae, load_vae
from jaxfactor.models._vae_train import kl_standard_normal

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(n_latent=3, n_hidden=32, batch_size=32, kl_warmup_epochs=5.0, lr=3e-3, val_every=1)


@pytest.fixture(scope="module")
def sim():
    return simulate_counts(n_cells=300, n_genes=40, n_types=3, n_latent=3, mean_library=800.0, separation=2.5, seed=3)


@pytest.fixture(scope="module")
def trained(sim):
    return fit_vae(sim.to_anndata(), layer="counts", max_epochs=30, seed=0, **SMALL)


# ------------------------------------------------------------------------------------------------
# likelihoods (float32, against scipy in float64; tolerances relative to max(1, |reference|))
# ------------------------------------------------------------------------------------------------

def _close(got, ref, tol):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.abs(got - ref) <= tol * np.maximum(1.0, np.abs(ref))), np.max(np.abs(got - ref) / np.maximum(1, np.abs(ref)))


def test_lgamma_and_its_derivative_match_scipy():
    z = np.concatenate([np.logspace(-4, 5, 400), np.arange(1, 60) + 0.5])
    _close(L.lgamma(jnp.asarray(z, jnp.float32)), special.gammaln(z), 1e-5)  # float32 rounding
    dz = jax.vmap(jax.grad(L.lgamma))(jnp.asarray(z, jnp.float32))
    _close(dz, special.digamma(z), 1e-4)


def test_count_log_probs_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=500).astype(np.float64)
    mu = rng.uniform(0.05, 40, size=500)
    theta = rng.uniform(0.1, 20, size=500)
    gate = rng.normal(size=500)
    pi = special.expit(gate)
    f = lambda a: jnp.asarray(a, jnp.float32)
    _close(L.poisson_log_prob(f(x), f(np.log(mu))), stats.poisson.logpmf(x, mu), 2e-5)
    nb_ref = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    _close(L.nb_log_prob(f(x), f(np.log(mu)), f(np.log(theta))), nb_ref, 2e-5)
    zinb_ref = np.log(pi * (x == 0) + (1 - pi) * np.exp(nb_ref))
    _close(L.zinb_log_prob(f(x), f(np.log(mu)), f(np.log(theta)), f(gate)), zinb_ref, 2e-5)
    b = (x > 5).astype(np.float64)
    _close(L.bernoulli_log_prob(f(b), f(gate)), stats.bernoulli.logpmf(b, pi), 1e-6)
    m, s = rng.normal(size=500), rng.uniform(0.2, 3, size=500)
    _close(L.gaussian_log_prob(f(x / 10), f(m), f(np.log(s))), stats.norm.logpdf(x / 10, m, s), 1e-6)
    # the unnormalised forms drop exactly log x!
    _close(L.nb_log_prob(f(x), f(np.log(mu)), f(np.log(theta)), normalized=False) - nb_ref, special.gammaln(x + 1), 2e-5)


def test_fused_count_nll_matches_autodiff():
    """The hand-written NB/ZINB gradients (softmax mean, library offset, gene-wise dispersion,
    gate) equal autodiff through the elementwise log-pmfs."""
    from jaxfactor.models import _count_nll as C

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.poisson(2.0, (16, 30)).astype(np.float32)).at[0, :5].set(0.0)
    u, h = (jnp.asarray(rng.normal(size=(16, 30)).astype(np.float32)) for _ in range(2))
    lib, b = jnp.log(x.sum(1) + 1.0), jnp.asarray(rng.normal(size=30).astype(np.float32))
    w = jnp.asarray(rng.uniform(size=16).astype(np.float32))  # per-cell cotangents
    log_mu = lambda u, lib: jax.nn.log_softmax(u, -1) + lib[:, None]
    pairs = [
        (lambda u, lib, b: -(L.nb_log_prob(x, log_mu(u, lib), b, False).sum(-1) * w).sum(),
         lambda u, lib, b: (C.nb_nll(x, u, lib, b) * w).sum(), (u, lib, b)),
        (lambda u, lib, b, h: -(L.zinb_log_prob(x, log_mu(u, lib), b, h, False).sum(-1) * w).sum(),
         lambda u, lib, b, h: (C.zinb_nll(x, u, lib, b, h) * w).sum(), (u, lib, b, h)),
    ]
    for ref, new, args in pairs:
        argnums = tuple(range(len(args)))
        (v1, g1), (v2, g2) = (jax.jit(jax.value_and_grad(f, argnums))(*args) for f in (ref, new))
        assert float(v2) == pytest.approx(float(v1), rel=1e-5)
        for a, c in zip(g1, g2):  # float32; the dispersion gradient sums digamma differences
            np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))


def test_nb_is_stable_for_extreme_means():
    x = jnp.asarray([0.0, 0.0, 3.0, 1000.0])
    out = np.asarray(L.zinb_log_prob(x, jnp.asarray([-80.0, 30.0, -80.0, 6.9]), jnp.zeros(4), jnp.zeros(4)))
    assert np.all(np.isfinite(out[[0, 1, 3]])) and out[2] < -100
    g = jax.grad(lambda a: L.nb_log_prob(x, a, jnp.zeros(4)).sum())(jnp.asarray([-80.0, 30.0, 0.0, 6.9]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_analytic_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=4), rng.uniform(0.2, 2.0, size=4)
    z = mean + np.sqrt(var) * rng.standard_normal((200_000, 4))
    log_q = stats.norm.logpdf(z, mean, np.sqrt(var)).sum(1)
    log_p = stats.norm.logpdf(z).sum(1)
    mc, se = np.mean(log_q - log_p), np.std(log_q - log_p) / np.sqrt(len(z))
    kl = float(kl_standard_normal(jnp.asarray(mean), jnp.asarray(var)))
    assert abs(kl - mc) < 4 * se


# ------------------------------------------------------------------------------------------------
# training, bounds, determinism
# ------------------------------------------------------------------------------------------------

def test_batch_norm_is_pytorchs_with_a_row_mask():
    """Training mode normalises with the biased variance of the real rows; the running variance
    averages the unbiased one (PyTorch's BatchNorm1d, momentum 0.01 there = 0.99 here)."""
    from jaxfactor.models._vae_modules import BatchNorm

    x = np.random.default_rng(0).normal(2.0, 3.0, (7, 4)).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0, 0], bool)
    x[~mask] = 1e3  # padding rows must not reach the moments
    bn = BatchNorm()
    variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    y, mutated = bn.apply(variables, jnp.asarray(x), train=True, mask=jnp.asarray(mask), mutable=["batch_stats"])
    real = x[mask].astype(np.float64)
    mean, var = real.mean(0), real.var(0)
    np.testing.assert_allclose(np.asarray(y)[mask], (real - mean) / np.sqrt(var + 1e-3), rtol=1e-5, atol=1e-5)
    stats = mutated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.01 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.99 + 0.01 * real.var(0, ddof=1), rtol=1e-5)
    y_eval = bn.apply({**variables, "batch_stats": stats}, jnp.asarray(x), train=False)
    np.testing.assert_allclose(y_eval, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-3), rtol=1e-5, atol=1e-5)


def test_epoch_ends_with_a_short_minibatch_as_scvi():
    """floor(n / B) full minibatches and one of the remaining cells, unless fewer than 3 remain."""
    from jaxfactor.models._vae_train import batch_plan, steps_per_epoch

    assert batch_plan(2705, 128) == (21, 17) and steps_per_epoch(2705, 128) == 22
    assert batch_plan(2562, 128) == (20, 0) and steps_per_epoch(2562, 128) == 20  # 2 left over: unused
    assert batch_plan(256, 128) == (2, 0) and steps_per_epoch(256, 128) == 2


def test_cpu_compiler_options_keep_the_arithmetic():
    """The epoch compiled with jaxfactor's CPU options (``jaxfactor._xla``: YNNPACK for the dots
    alone) computes what plain ``jax.jit`` computes; a jaxlib without the option gets none."""
    from jaxfactor import _xla
    from jaxfactor.models._vae_modules import VAEConfig
    from jaxfactor.models._vae_train import VAEHparams, make_data, vae_training

    assert _xla.cpu_options() in ((), tuple(sorted(_xla.CPU_OPTIONS.items())))
    x = np.random.default_rng(0).poisson(3.0, (300, 200)).astype(np.float32)
    alg = vae_training(VAEConfig(n_genes=200, n_hidden=64, likelihood="nb"), batch_size=64, eval_chunk=64)
    data, hp = make_data(x[:250], x[250:], eval_chunk=64), VAEHparams(kl_warmup_epochs=2.0)
    state = jax.jit(alg.init)(jax.random.PRNGKey(0), data, hp)
    plain = jax.jit(alg.step)(state, data, hp)
    tuned = _vae_api._epoch(alg, state, data, hp)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(tuned)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)


def test_training_improves_heldout_elbo_and_separates_types(sim, trained):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    held = sim.counts[trained.cells[trained.val_index]]
    early = fit_vae(sim.counts, max_epochs=1, seed=0, **SMALL)
    assert trained.evaluate(held)["neg_elbo"] < early.evaluate(held)["neg_elbo"] - 10
    val = trained.history["val_loss"]
    assert val[-1] < val[0] and np.all(np.isfinite(trained.history["train_loss"]))
    z = trained.encode(sim.counts)
    ari = adjusted_rand_score(sim.labels, KMeans(3, n_init=10, random_state=0).fit_predict(z))
    assert ari > 0.8, ari


def test_elbo_below_importance_weighted_bounds(sim, trained):
    held = sim.counts[trained.cells[trained.val_index]]
    elbo = -trained.evaluate(held, n_samples=64)["neg_elbo"]
    iw = [trained.evaluate(held, n_importance=k, seed=1)["log_px"] for k in (1, 8, 64)]
    # k = 1 is the ELBO in expectation (MC error of a 30-cell average), then rising in k
    assert abs(iw[0] - elbo) < 2.0
    assert elbo <= iw[1] <= iw[2], (elbo, iw)


def test_deterministic_for_a_seed(sim):
    a = fit_vae(sim.counts, max_epochs=2, seed=5, **SMALL)
    b = fit_vae(sim.counts, max_epochs=2, seed=5, **SMALL)
    c = fit_vae(sim.counts, max_epochs=2, seed=6, **SMALL)
    same = jax.tree_util.tree_map(lambda u, v: np.array_equal(np.asarray(u), np.asarray(v)), a.state, b.state)
    assert all(jax.tree_util.tree_leaves(same))
    assert not np.array_equal(np.asarray(a.state.params["decoder"]["scale"]["kernel"]),
                              np.asarray(c.state.params["decoder"]["scale"]["kernel"]))


def test_checkpoint_resume_is_bit_identical(sim, tmp_path):
    straight = fit_vae(sim.counts, max_epochs=4, seed=2, **SMALL)
    first = fit_vae(sim.counts, max_epochs=2, seed=2, checkpoint_dir=str(tmp_path), checkpoint_every=1, **SMALL)
    loaded = load_vae(tmp_path)
    assert loaded.n_epochs == 2 and loaded.config == first.config and np.array_equal(loaded.val_index, first.val_index)
    resumed = fit_vae(sim.counts, max_epochs=4, resume=str(tmp_path / "checkpoint.msgpack"))
    equal = jax.tree_util.tree_map(lambda u, v: np.array_equal(np.asarray(u), np.asarray(v)), straight.state, resumed.state)
    assert all(jax.tree_util.tree_leaves(equal))
    np.testing.assert_array_equal(straight.history["train_loss"], resumed.history["train_loss"])
    assert not any(name.startswith("checkpoint.msgpack.tmp") for name in os.listdir(tmp_path))  # atomic write


@pytest.fixture(scope="module")
def holes(sim):
    """160 cells with one all-zero cell and two all-zero genes (shared by two tests: one compile)."""
    X = sim.counts[:160].copy()
    X[3] = 0
    X[:, [1, 2]] = 0
    return X


ES = dict(early_stopping=True, patience=2, min_delta=50.0)


def test_all_zero_cells_and_genes_are_dropped_with_a_count(holes):
    with pytest.warns(UserWarning, match="dropped 1 all-zero cells and 2 all-zero genes"):
        fit = fit_vae(holes, max_epochs=1, **ES, **SMALL)
    assert fit.config.n_genes == 38 and 3 not in fit.cells
    assert fit.encode(holes).shape == (160, 3)  # new data with all input genes: the same columns are used


@pytest.mark.filterwarnings("ignore:dropped")
def test_early_stopping_freezes_and_restores_best(holes):
    fit = fit_vae(holes, max_epochs=40, seed=0, **ES, **SMALL)
    assert bool(fit.state.stopped) and fit.n_epochs < 40
    best, be, bad = np.inf, -1, 0  # the rule: stop after 2 epochs without a 50-nat improvement
    for e, v in enumerate(fit.history["val_loss"]):
        best, be, bad = (v, e, 0) if v < best - 50.0 else (best, be, bad + 1)
        if bad >= 2:
            break
    assert fit.n_epochs == e + 1 and float(fit.state.best_val) == pytest.approx(fit.history["val_loss"][be])
    assert fit.variables["params"] is fit.state.best_params


def test_gaussian_autoencoder_with_layer_norm_trains(sim):
    fit = fit_vae(sim.counts[:160], kind="ae", likelihood="gaussian", norm="layer", max_epochs=3, seed=0, **SMALL)
    assert np.all(np.isfinite(fit.history["val_loss"])) and fit.history["val_loss"][-1] < fit.history["val_loss"][0]
    ev = fit.evaluate(sim.counts[:20], n_importance=5)
    assert np.isfinite(ev["neg_elbo"]) and ev["kl"] == 0.0 and "log_px" not in ev  # no KL, no IWAE for the AE


# ------------------------------------------------------------------------------------------------
# compiled batch inference
# ------------------------------------------------------------------------------------------------

def test_batched_encode_equals_unbatched_without_retracing(sim, trained):
    X = sim.counts
    whole = trained.encode(X, batch_size=X.shape[0])
    trained.encode(X[:5], batch_size=64)
    before = _vae_infer.TRACES["encode"]
    parts = trained.encode(X, batch_size=64)  # 300 cells: 4 full batches and a padded one
    trained.encode(X[:77], batch_size=64)
    assert _vae_infer.TRACES["encode"] == before
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)  # float32, different batch shapes


def test_encode_writes_obsm_for_scanpy(sim, trained):
    adata = sim.to_anndata()
    z = trained.encode(adata, layer="counts")  # sc.pp.neighbors(adata, use_rep="X_jaxfactor_vae") reads it
    assert np.array_equal(z, adata.obsm["X_jaxfactor_vae"]) and z.shape == (300, 3) and z.dtype == np.float32
    shuffled = adata[:, ::-1].copy()  # genes are aligned by name
    np.testing.assert_allclose(trained.encode(shuffled, layer="counts", obsm_key=None), z, rtol=1e-5, atol=1e-6)


def test_decode_and_sample(sim, trained):
    z = trained.encode(sim.counts[:10])
    mean = trained.decode(z, library_size=1000.0)
    assert mean.shape == (10, 40) and np.allclose(mean.sum(1) / 1000.0, mean.sum(1)[0] / 1000.0, rtol=0.5)
    a = trained.sample(50, seed=1)
    b = trained.sample(50, seed=1)
    assert a.shape == (50, 40) and np.array_equal(a, b) and np.all(a == np.round(a)) and a.min() >= 0
    post = trained.sample(data=sim.counts[:10], seed=0)
    assert post.shape == (10, 40)


# ------------------------------------------------------------------------------------------------
# bad input: one-line errors before anything compiles
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def no_compile(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled before validating the input")

    monkeypatch.setattr(_vae_api, "_init", refuse)
    monkeypatch.setattr(_vae_api, "_epoch", refuse)


@pytest.mark.parametrize("change,kwargs,message", [
    (lambda X: X + 0.5, {}, "non-integer entries"),
    (lambda X: X - 1, {}, "negative entries"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), {}, "1 NaN"),
    (lambda X: X, {"n_latent": 50}, "n_components=50 (the latent size) is larger than the number of genes (40)"),
    (lambda X: X, {"batch_size": 1000}, "batch_size=1000 exceeds"),
    (lambda X: X, {"likelihood": "tweedie"}, "likelihood='tweedie' is not one of"),
    (lambda X: X[:, :0], {}, "non-empty"),
])
def test_bad_input_is_a_one_line_error(sim, no_compile, change, kwargs, message):
    with pytest.raises(ValueError) as err:
        fit_vae(change(sim.counts.astype(np.float64)), max_epochs=1, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nan_loss_stops_naming_the_step_and_last_checkpoint(sim, tmp_path):
    fit_vae(sim.counts, max_epochs=1, seed=0, checkpoint_dir=str(tmp_path), **SMALL)
    good = load_vae(tmp_path)
    good.hparams = good.hparams._replace(lr=1e30)  # diverges on the next update
    with pytest.raises(FloatingPointError) as err:
        fit_vae(sim.counts, max_epochs=3, resume=good, checkpoint_dir=str(tmp_path / "again"))
    msg = str(err.value)
    assert "not finite at step" in msg and "epoch 2" in msg and str(tmp_path / "checkpoint.msgpack") in msg
    assert "(epoch 1)" in msg


# ------------------------------------------------------------------------------------------------
# the runner configs, shrunk
# ------------------------------------------------------------------------------------------------

def test_vae_demo_config(tmp_path, capsys):
    import anndata

    from jaxfactor.runner import main

    out = tmp_path / "o"
    # three lr points on 300 x 40 counts, n_hidden 32, batch 32: the vmapped epoch of
    # test_grid_trains_points_side_by_side_each_equal_to_its_own_fit (one compiled program for both)
    sets = ["data.n_cells=300", "data.n_genes=40", "model.n_hidden=32", "fit.max_iter=4", "model.batch_size=32",
            "model.n_importance=5", "sweep.n_components=[3]", "sweep.lr=[0.001, 0.003, 0.01]"]
    code = main(["run", str(REPO / "experiments" / "vae_demo.toml"), "--out", str(out), *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    assert "chosen by heldout_neg_elbo" in capsys.readouterr().out
    rows = json.loads((out / "metrics.json").read_text())["points"]  # the lr points trained side by side (one group)
    assert [r["lr"] for r in rows] == [0.001, 0.003, 0.01] and all(np.isfinite(r["heldout_neg_elbo"]) for r in rows)
    res = anndata.read_h5ad(out / "result.h5ad")
    assert res.obsm["X_vae"].shape == (300, 3) and "vae" in res.uns
    metrics = json.loads((out / "metrics.json").read_text())["points"][0]
    assert np.isfinite(metrics["heldout_neg_elbo"]) and metrics["heldout_log_px"] >= -metrics["heldout_neg_elbo"] - 5
    assert 0 <= metrics["ari"] <= 1 and (out / "vae.png").exists()
    assert load_vae(out / "model").n_epochs == 4  # the saved model folder holds the VAE's checkpoint


def test_vae_h5ad_config_reads_a_layer_and_labels(tmp_path, capsys, sim):
    from jaxfactor.runner import main

    adata = sim.to_anndata()
    adata.X = adata.X.multiply(0.5).tocsr()  # X is not counts: the layer must be used
    adata.write_h5ad(tmp_path / "c.h5ad")
    # the trained fixture's network, batch size and (no) early stopping: its compiled epoch
    sets = ["data.path=" + str(tmp_path / "c.h5ad"), "data.layer=counts", "data.label_key=cell_type", "model.n_components=3",
            "model.n_hidden=32", "fit.max_iter=3", "model.batch_size=32", "model.early_stopping=false", "run.figures=false"]
    code = main(["run", str(REPO / "experiments" / "vae_h5ad.toml"), "--out", str(tmp_path / "o"),
                 *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    code = main(["run", str(REPO / "experiments" / "vae_h5ad.toml"), "--out", str(tmp_path / "p"),
                 *sum((["--set", s] for s in sets[:1] + sets[3:]), [])])
    assert code == 2 and "non-integer entries" in capsys.readouterr().err


def test_simulator_truth_is_consistent():
    sim = simulate_counts(n_cells=200, n_genes=30, n_types=4, zero_inflation=0.0, dispersion=1e6, seed=1)
    assert sim.counts.shape == (200, 30) and set(np.unique(sim.labels)) == {0, 1, 2, 3}
    # nearly Poisson without zero inflation: counts scatter around the true mean
    assert abs(sim.counts.sum() / sim.mean.sum() - 1) < 0.02
    assert math.isclose(sim.library.mean(), sim.mean.sum(1).mean(), rel_tol=1e-9)


def test_trains_under_x64():
    """``jax_enable_x64`` (the runner's ``run.x64 = true``): the float64 hyperparameters no longer
    promote the float32 training carry; the fit is finite."""
    import jaxfactor

    with jax.enable_x64(True):
        model = jaxfactor.family("vae").fit(jaxfactor.family("vae").model.simulate(0), 2, max_iter=2)
    assert all(np.isfinite(s.value) for s in model.scores().values())


def test_grid_trains_points_side_by_side_each_equal_to_its_own_fit(sim):
    """``fit_points`` over the training's numbers (what a runner sweep over ``lr`` runs): one
    vmapped epoch for all points, each equal to its own ``fit`` up to float32 rounding; a point
    whose loss diverges is skipped with the reason and the others go on."""
    import jaxfactor

    model = jaxfactor.family("vae").model
    kw = dict(max_iter=4, n_importance=0, seed=1, n_hidden=32, batch_size=32, kl_warmup_epochs=5.0)
    points = [{"n_components": 3, "lr": 3e-3}, {"n_components": 3, "lr": 1e-2, "weight_decay": 1e-4},
              {"n_components": 3, "lr": 1e30}]
    grid = model.fit_points(sim.counts, points, **kw)
    assert isinstance(grid[2], str) and "not finite" in grid[2] and "lr=1e+30" in grid[2]
    for point, got in zip(points[:2], grid[:2]):
        want = model.fit(sim.counts, **point, **kw)
        assert got.settings["lr"] == point["lr"] and got.result.n_epochs == 4
        for name, s in want.scores().items():
            np.testing.assert_allclose(got.scores()[name].value, s.value, rtol=1e-5)
        np.testing.assert_allclose(got.transform(sim.counts), want.transform(sim.counts), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="differ only in"):
        model.fit_points(sim.counts, [{"n_components": 3, "lr": 1e-3}, {"n_components": 3, "n_hidden": 8}], **kw)
    with pytest.raises(ValueError, match="lr"):
        model.fit_points(sim.counts, [{"n_components": 3, "lr": -1.0}, {"n_components": 3, "lr": 1e-3}], **kw)
