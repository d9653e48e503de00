"""Every registered family answers the same five calls — fit, to_anndata, transform/predict, scores,
save/load — in one vocabulary, and rejects the same bad inputs the same way (one-line ValueError
before anything is compiled)."""

import warnings

import numpy as np
import pytest

import jaxfactor
from jaxfactor.cclone import adjusted_rand_index

HEALTHY = ["T cells", "B cells", "NK cells", "Monocytes"]
CANCER = ["Immature", "Early myeloid"]

# small, quick settings per family: (n_components, options); the grid families' n_init and
# max_iter (and ZINB-WaVE's) are test_grid_points_equal_single_fits's, so its single fits reuse the
# fitted fixture's compiled programs (tol and the seed are traced)
SETTINGS = {
    "nmf": (3, dict(max_iter=60, n_init=2)),
    "cclone": (3, dict(n_bootstrap=4, max_iter=30, n_init=2)),
    "gmm": (3, dict(n_init=2, max_iter=60)),
    "ppca": (2, dict(n_init=2, max_iter=60)),
    "binomial_mixture": (4, dict(n_init=2, max_iter=60)),
    "allele_model": (4, dict(max_iter=300, n_init=2)),
    "vae": (4, dict(max_iter=5, likelihood="nb", n_importance=0)),
    "zinbwave": (2, dict(max_iter=8)),
    "clones": (4, dict(celltype_key="celltype", healthy=HEALTHY, cancer=CANCER, n_init=4)),
}

# how well a fit must find the simulated truth (ARI of its labels), where the family gives labels
MIN_ARI = {"gmm": 0.9, "binomial_mixture": 0.6, "allele_model": 0.6, "clones": 0.6, "nmf": 0.5}


def test_every_family_is_registered_with_settings():
    assert set(jaxfactor.families()) == set(SETTINGS)
    for name in jaxfactor.families():
        fam = jaxfactor.family(name)
        assert fam.name == name and issubclass(fam.model, jaxfactor.Fitted) and fam.model.family == name


@pytest.fixture(scope="module", params=list(SETTINGS))
def fitted(request):
    name = request.param
    fam = jaxfactor.family(name)
    adata = fam.simulate(0)
    k, options = SETTINGS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fam.fit(adata, k, seed=0, **options)
    return name, adata, model


def test_five_calls(fitted, tmp_path):
    name, adata, model = fitted
    before = adata.copy()
    # scores: named, finite, with a declared direction
    scores = model.scores()
    assert scores and all(isinstance(s, jaxfactor.Score) and np.isfinite(s.value) for s in scores.values())
    assert all(isinstance(s.higher_is_better, bool) for s in scores.values())
    # to_anndata: a new AnnData with namespaced keys, the input untouched
    out = model.to_anndata(adata)
    assert out is not adata and out.n_obs == adata.n_obs
    assert list(adata.obs.columns) == list(before.obs.columns) and set(adata.obsm) == set(before.obsm)
    assert name in out.uns and "scores" in out.uns[name] and "settings" in out.uns[name]
    if "trace" in out.uns[name]:  # every trace declares its direction (and it holds: monotone fits)
        trace, up = np.asarray(out.uns[name]["trace"], float), bool(out.uns[name]["trace_higher_is_better"])
        assert (trace[-1] >= trace[0]) == up or np.isclose(trace[-1], trace[0])
    new_obs = set(out.obs.columns) - set(adata.obs.columns)
    assert all(c.startswith(f"{name}_") for c in new_obs)
    assert all(k == f"X_{name}" or k.startswith(f"{name}_") for k in set(out.obsm) - set(adata.obsm))
    assert all(k.startswith(f"{name}_") for k in set(out.varm) - set(adata.varm))
    if model.has_labels:
        col = out.obs[f"{name}_label"]
        assert col.dtype == "category" and all(isinstance(c, str) for c in col.cat.categories)
    # transform / predict on the training cells (read by variable name), finite, one row per cell
    rep = model.transform(adata)
    assert rep.shape[0] == adata.n_obs and np.all(np.isfinite(rep))
    if model.has_labels:
        labels = model.predict(adata)
        assert labels.shape == (adata.n_obs,)
        if name in MIN_ARI:
            assert adjusted_rand_index(labels, adata.obs["truth"].astype(str).to_numpy()) >= MIN_ARI[name]
    else:
        with pytest.raises(ValueError, match="gives no labels"):
            model.predict(adata)
    # variables in another order: matched by name, same answer
    perm = adata[:, ::-1].copy()
    assert np.allclose(model.transform(perm), rep, atol=1e-4)
    # save / load: the same model back
    path = str(tmp_path / "model")
    model.save(path)
    with pytest.raises(ValueError, match="exists"):
        model.save(path)
    back = jaxfactor.load(path)
    assert type(back) is type(model) and back.settings["n_components"] == model.settings["n_components"]
    assert {k: s.value for k, s in back.scores().items()} == pytest.approx({k: s.value for k, s in scores.items()})
    assert np.allclose(back.transform(adata), rep, atol=1e-5)
    # a loaded model writes the same AnnData, also for cells in another order
    order = np.random.default_rng(0).permutation(adata.n_obs)
    again = back.to_anndata(adata[order].copy())
    for key in set(out.obsm) - set(adata.obsm):
        assert np.allclose(again.obsm[key], out.obsm[key][order], atol=1e-4, equal_nan=True), key


def test_deprecated_names_warn(fitted):
    name, adata, model = fitted
    if name in ("vae", "zinbwave", "cclone", "clones", "allele_model"):
        pytest.skip("covered by the quicker families")
    k, options = SETTINGS[name]
    old = {"nmf": "n_restarts", "gmm": "n_restarts", "ppca": "n_restarts", "binomial_mixture": "n_clones"}[name]
    value = 1 if old == "n_restarts" else k
    kwargs = {**options, old: value}
    if old == "n_restarts":
        kwargs.pop("n_init", None)
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
        jaxfactor.family(name).fit(adata, None if old != "n_restarts" else k, **kwargs)
    with pytest.raises(ValueError, match="both"):
        jaxfactor.family(name).fit(adata, k, **{"n_clones" if old != "n_clones" else "k": k})


def _bad_inputs(name, adata):
    """(description, data, options, expected message) of bad inputs for family ``name``."""
    fam = jaxfactor.family(name)
    bad = []
    if fam.model.inputs == "alleles":
        ad = adata.copy()
        alt = ad.layers["ALT"].toarray().astype(float)
        for what, value, msg in (("NaN", np.nan, "NaN"), ("negative", -1.0, "negative"), ("inf", np.inf, "infinite"),
                                 ("fractional", 0.5, "non-integer")):
            a = alt.copy()
            a[0, 0] = value
            x = adata.copy()
            x.layers["ALT"] = a
            bad.append((what, x, {}, msg))
        x = adata.copy()
        del x.layers["REF"]
        bad.append(("missing layer", x, {}, "REF"))
        bad.append(("empty", adata[:0].copy(), {}, "empty"))
        bad.append(("wrong dtype", (np.array([["a"]]), np.array([["b"]])), {}, "integer read counts|dtype"))
        bad.append(("layer given", adata, {"layer": "counts"}, "does not apply"))
    else:
        X = np.asarray(adata.X, float)
        for what, value, msg in (("NaN", np.nan, "NaN"), ("inf", np.inf, "infinite")):
            x = X.copy()
            x[0, 0] = value
            bad.append((what, x, {}, msg))
        if fam.model.inputs in ("nonnegative", "counts") or name == "vae":
            x = X.copy()
            x[0, 0] = -1.0
            bad.append(("negative", x, {}, "negative"))
        bad.append(("empty", X[:0], {}, "empty"))
        bad.append(("wrong dtype", np.array([["a", "b"], ["c", "d"]]), {}, "numeric"))
        bad.append(("missing layer", adata, {"layer": "nope"}, "layer 'nope' not in adata.layers"))
    return bad


@pytest.mark.parametrize("name", list(SETTINGS))
def test_bad_input_one_line_before_compiling(name):
    import jax.monitoring

    fam = jaxfactor.family(name)
    adata = fam.simulate(0)
    k, options = SETTINGS[name]
    compiled = []

    def listener(event, duration, **kw):  # every XLA compilation (and jaxpr trace) reports here
        if event.startswith("/jax/core/compile/"):
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for what, data, extra, msg in _bad_inputs(name, adata):
            with pytest.raises(ValueError, match=msg) as err:
                fam.fit(data, k, **{**options, **extra})
            assert "\n" not in str(err.value), (name, what)
            assert not compiled, f"{name}: compiled before refusing {what} input"
        if name != "clones":  # the clone caller drops K above the cells with reads and says so
            with pytest.raises(ValueError) as err:
                fam.fit(adata, 10_000, **options)
            assert "\n" not in str(err.value)
            assert not compiled, f"{name}: compiled before refusing n_components=10000"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_transform_refuses_bad_new_data():
    fam = jaxfactor.family("gmm")
    adata = fam.simulate(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fam.fit(adata, 3)
    X = np.asarray(adata.X, float)
    with pytest.raises(ValueError, match="2 variables|fitted on 2"):
        model.transform(X[:, :1])
    x = X.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(x)
    renamed = adata.copy()
    renamed.var_names = ["a", "b"]
    with pytest.raises(ValueError, match="not in the data"):
        model.transform(renamed)


@pytest.mark.parametrize("call,old", [
    (lambda **kw: jaxfactor.nmf.fit(np.full((4, 3), np.nan), 2, **kw), {"n_restarts": 1}),
    (lambda **kw: jaxfactor.cclone.fit(np.zeros((2, 2)), **kw), {"k": 2}),
    (lambda **kw: jaxfactor.cclone.fit(np.zeros((2, 2)), 2, **kw), {"n_cycles": 10}),
    (lambda **kw: jaxfactor.mixture.fit_binomial_mixture(-np.ones((3, 2)), np.ones((3, 2)), **kw), {"n_clones": 2}),
    (lambda **kw: jaxfactor.models.fit_allele_svi(-np.ones((3, 2)), np.ones((3, 2)), 2, **kw), {"num_steps": 10}),
    (lambda **kw: jaxfactor.models.fit_allele_svi(-np.ones((3, 2)), np.ones((3, 2)), **kw), {"n_clones": 2}),
    (lambda **kw: jaxfactor.models.fit_vae(np.full((4, 3), np.nan), **kw), {"n_latent": 2}),
    (lambda **kw: jaxfactor.models.fit_vae(np.full((4, 3), np.nan), **kw), {"max_epochs": 2}),
    (lambda **kw: jaxfactor.clones.call(np.zeros((2, 2)), **kw), {"n_clones": 2}),
])
def test_per_module_functions_take_the_old_names_with_a_warning(call, old):
    """The old names still reach the function (a DeprecationWarning, then the usual one-line error
    for the bad data given here); old and new together are refused."""
    import jaxfactor.models  # noqa: F401

    with pytest.warns(DeprecationWarning, match="is deprecated"):
        with pytest.raises(ValueError):
            call(**old)
    (name, value), = old.items()
    new = {"k": "n_components", "n_clones": "n_components", "n_latent": "n_components", "n_restarts": "n_init",
           "n_cycles": "max_iter", "num_steps": "max_iter", "max_epochs": "max_iter"}[name]
    with pytest.raises(ValueError, match="both"):
        call(**old, **{new: value})


@pytest.mark.parametrize("name,key,values", [("gmm", "reg_covar", (1e-6, 1e-2, 0.5)), ("nmf", "l2_H", (0.0, 0.5)),
                                             ("ppca", "min_noise_ratio", (1e-6, 0.05)), ("binomial_mixture", "beta_a", (1.0, 3.0)),
                                             ("zinbwave", "epsilon", (0.0, 5.0))])
def test_grid_points_equal_single_fits(name, key, values):
    """A grid family's points that differ only in its numeric hyperparameters are one compiled,
    vmapped call (``fit_points``, what the runner's sweeps run): each point equals its own fit."""
    import warnings

    model = jaxfactor.family(name).model
    adata = model.simulate(0)
    k = {"ppca": 2, "binomial_mixture": 4, "zinbwave": 2}.get(name, 3)
    points = [{"n_components": k, key: v} for v in values]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short fits: convergence warnings
        n_init = 1 if name == "zinbwave" else 2  # ZINB-WaVE starts from its deterministic SVD
        iters = 8 if name == "zinbwave" else 60
        assert (SETTINGS[name][1].get("n_init", 1), SETTINGS[name][1]["max_iter"]) == (n_init, iters)  # shared programs
        grid = model.fit_points(adata, points, n_init=n_init, max_iter=iters, tol=0.0, seed=1)
        for point, got in zip(points, grid):
            want = model.fit(adata, k, n_init=n_init, max_iter=iters, tol=0.0, seed=1, **{key: point[key]})
            assert got.settings.get(key, 0.0) == point[key]  # ZINB-WaVE stores ε only when set
            for score, s in want.scores().items():
                np.testing.assert_allclose(got.scores()[score].value, s.value, rtol=1e-5)
            a, b = got.transform(adata), want.transform(adata)
            if name == "zinbwave":
                # ZINB-WaVE's transform re-solves each cell's W in float32 from fits that agree to
                # ~1e-6: most cells move by ~2e-3, but a cell whose W is poorly determined moved by
                # 0.04 (|W| up to 2.7) on an AVX2 CPU at -O0. All but one cell in a hundred agree
                # to 1e-2, every cell to 0.1, and the whole embedding correlates to 1 - 1e-5.
                moved = np.abs(a - b).max(axis=1)
                assert np.mean(moved <= 1e-2) >= 0.99 and moved.max() <= 0.1, np.sort(moved)[-5:]
                assert np.corrcoef(np.ravel(a), np.ravel(b))[0, 1] >= 1 - 1e-5
            else:
                np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match=key):
        model.fit_points(adata, [{"n_components": k, key: -1.0}, {"n_components": k, key: 1.5}])
