"""``jaxfactor predict``: fitted runs applied to new cells in fixed-size compiled batches, streamed
from disk; bad run folders and data are one-line errors with nothing written."""

import json
import os
import shutil

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from jaxfactor.runner import main
from jaxfactor.runner._config import load_config
from jaxfactor.runner._predict import PREDICTORS

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXP = REPO / "experiments"


def sets(*items):
    return [a for item in items for a in ("--set", item)]


def _fit(tmp_path_factory, config, *overrides):
    """Run ``config`` through the CLI; return the run folder and the AnnData it was fitted on."""
    base = tmp_path_factory.mktemp(Path(config).stem)
    out = base / "run"
    assert main(["run", str(EXP / config), "--out", str(out), *sets("run.figures=false", *overrides)]) == 0
    cfg = load_config(str(EXP / config), [*overrides])
    loaded = cfg.spec.pipeline.load(cfg)
    return out, loaded


@pytest.fixture(scope="module")
def cclone_run(tmp_path_factory):
    return _fit(tmp_path_factory, "cclone_demo.toml", "data.n_cells=300", "model.n_bootstrap=4", "fit.max_iter=30")


def _as_new_data(adata, path, *, reverse=True, extra=True, drop=()):
    """The cells again, as a new file: variables reordered, an extra one, some dropped; sparse layers."""
    ad = adata.copy()
    keep = [v for v in ad.var_names if v not in drop]
    ad = ad[:, keep[::-1] if reverse else keep].copy()
    for name in ("REF", "ALT"):
        ad.layers[name] = sp.csr_matrix(np.asarray(ad.layers[name].todense() if sp.issparse(ad.layers[name]) else ad.layers[name]))
    if extra:
        more = anndata.AnnData(X=sp.csr_matrix((ad.n_obs, 1), dtype=np.float32), layers={n: sp.csr_matrix((ad.n_obs, 1), dtype=np.int64) for n in ("REF", "ALT")})
        more.var_names = ["not_fitted"]
        more.obs_names = ad.obs_names
        ad = anndata.concat([ad, more], axis=1, merge="same")
    ad.write_h5ad(path)
    return path


def test_cclone_assignment_is_the_exact_box_solve(cclone_run, tmp_path, capsys):
    import jaxfactor
    from jaxfactor.cclone import adjusted_rand_index
    from jaxfactor.data import variant_matrices

    run_dir, loaded = cclone_run
    data = _as_new_data(loaded.adata, tmp_path / "new.h5ad")
    out = tmp_path / "pred.h5ad"
    assert main(["predict", str(run_dir), str(data), "--out", str(out), "--batch-size", "128"]) == 0  # 3 batches, last padded
    assert "cells/min" in capsys.readouterr().out
    pred = anndata.read_h5ad(out)
    model = jaxfactor.load(str(run_dir / "model"))
    kept = model.var_names[model.genes]  # the variants the fit kept after its filters
    assert list(pred.obs_names) == list(loaded.adata.obs_names) and pred.obsm["X_cclone"].shape == (300, model.n_components)

    # KKT conditions of min_c Σ_j W_ij (M_ij - c·v_j)² over [0,1]^k, in float64 from the reference M, W
    M, W = variant_matrices(loaded.adata[:, kept], "smartseq")
    V = np.asarray(model.result.V, np.float64)
    C = np.asarray(pred.obsm["X_cclone"], np.float64)
    grad = 2 * np.einsum("ij,jk->ik", W * (C @ V.T - M), V)  # d/dc of the weighted loss
    covered = W.sum(axis=1) > 0
    inner = (C > 1e-4) & (C < 1 - 1e-4)
    scale = np.abs(grad).max()
    assert np.all(np.abs(grad[inner & covered[:, None]]) < 1e-3 * scale)
    assert np.all(grad[(C <= 1e-4) & covered[:, None]] > -1e-3 * scale)
    assert np.all(grad[(C >= 1 - 1e-4) & covered[:, None]] < 1e-3 * scale)
    np.testing.assert_allclose(pred.obs["cclone_weight"], W.sum(axis=1), rtol=1e-6)
    # the clones come out as in the fit
    lab = loaded.labels
    assert adjusted_rand_index(C.argmax(axis=1), lab) > 0.8


def test_bad_inputs_are_one_line_errors(cclone_run, tmp_path, capsys, small_nmf):
    import jaxfactor

    run_dir, loaded = cclone_run
    model = jaxfactor.load(str(run_dir / "model"))
    fitted_vars = model.var_names[model.genes]
    drop = list(fitted_vars[:7])
    data = _as_new_data(loaded.adata, tmp_path / "missing.h5ad", drop=drop)
    out = tmp_path / "p.h5ad"

    def error(*args):
        code = main(["predict", *map(str, args), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("jaxfactor: error: ") and err.count("\n") == 1, err
        assert not out.exists()
        return err

    err = error(run_dir, data)
    assert f"DATA lacks 7 of the {len(fitted_vars)} variables the model was fitted on: {', '.join(drop[:5])}, ..." in err
    # a run folder of a model without a predictor, of another version, or not a run folder at all
    nmf_cfg = tmp_path / "nmf.toml"
    np.save(tmp_path / "x.npy", small_nmf.X)
    nmf_cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 2\n[fit]\nmax_iter = 5\n[run]\nfigures = false\n')
    assert main(["run", str(nmf_cfg), "--out", str(tmp_path / "nmf_run")]) == 0
    capsys.readouterr()
    foreign = tmp_path / "foreign_run"
    shutil.copytree(tmp_path / "nmf_run", foreign)
    meta = json.loads((foreign / "metrics.json").read_text())
    (foreign / "metrics.json").write_text(json.dumps({**meta, "model": "foo"}))
    assert "holds a 'foo' run, which has no predictor; predict supports: nmf, cclone" in error(foreign, data)
    # an NMF run predicts (its saved model's HALS kernel), but not from other data: fitted on a
    # plain matrix, it needs exactly as many variables, matched by position
    assert "fitted on a matrix without variable names (25 columns)" in error(tmp_path / "nmf_run", data)
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    meta = json.loads((old / "metrics.json").read_text())
    (old / "metrics.json").write_text(json.dumps({**meta, "jaxfactor_version": "0.0.9"}))
    assert "was written by jaxfactor 0.0.9" in error(old, data)
    assert "is not a finished jaxfactor run folder (missing metrics.json" in error(tmp_path, data)
    assert "data file not found" in error(run_dir, tmp_path / "nope.h5ad")
    nolayers = tmp_path / "nolayers.h5ad"
    anndata.AnnData(X=np.ones((3, 2), np.float32)).write_h5ad(nolayers)
    assert "has no layer 'REF'" in error(run_dir, nolayers)
    out.write_text("x")
    assert main(["predict", str(run_dir), str(data), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "x"


@pytest.mark.parametrize("config,overrides,key", [
    ("binomial_mixture_demo.toml", ["data.n_cells=300", "data.n_variants=40", "sweep.n_components=[3]", "fit.n_init=1",
                                    "model.method=em"], "binomial_mixture_proba"),
    ("binomial_mixture_demo.toml", ["data.n_cells=300", "data.n_variants=40", "sweep.n_components=[3]", "fit.n_init=1",
                                    "model.method=vb", "fit.tol=0.0", "fit.max_iter=300"], "binomial_mixture_proba"),
    ("ppca_demo.toml", ["data.n_samples=300", "data.n_features=6", "sweep.n_components=[2]", "fit.max_iter=100"], "X_ppca"),
    ("gmm_demo.toml", ["data.n_samples=400", "sweep.n_components=[3]", "fit.n_init=1", "fit.max_iter=50"], "gmm_proba"),
])
def test_posteriors_of_the_training_cells_match_the_fit(tmp_path_factory, tmp_path, config, overrides, key):
    """Predicting the cells a mixture was fitted on gives back its posteriors (same parameters)."""
    run_dir, loaded = _fit(tmp_path_factory, config, *overrides)
    fitted = anndata.read_h5ad(run_dir / "result.h5ad")
    data = tmp_path / "d.h5ad"
    ad = loaded.adata if hasattr(loaded, "adata") and loaded.adata is not None else anndata.AnnData(X=loaded.X.astype(np.float32))
    ad.write_h5ad(data)
    from jaxfactor.runner._predict import predict

    summary = predict(str(run_dir), str(data), str(tmp_path / "p.h5ad"), batch_size=96, log=lambda m: None)
    assert summary["cells"] == ad.n_obs and summary["batch_size"] == 96
    pred = anndata.read_h5ad(tmp_path / "p.h5ad")
    rows = [list(ad.obs_names).index(n) for n in fitted.obs_names]  # a filtered fit may drop cells
    np.testing.assert_allclose(pred.obsm[key][rows], fitted.obsm[key], atol=2e-4)  # float32 posteriors


@pytest.mark.parametrize("likelihood", ["binomial"])  # the beta-binomial compiles for ~5 s: see the load check below
def test_allele_model_matches_assign_cells(tmp_path, likelihood):
    """A run folder as the runner writes it for the allele model (its saved model built from known
    parameters, so no SVI fit is needed here); predict must equal the model's own ``assign_cells``."""
    import tomli_w

    from jaxfactor import __version__
    from jaxfactor.models import assign_cells
    from jaxfactor.models._allele_model import AlleleModel, AlleleModelResult
    from jaxfactor.models._allele_svi import AlleleFit
    from jaxfactor.runner._predict import predict

    rng = np.random.default_rng(1)
    af = rng.beta(0.5, 0.5, (3, 25))
    labels = rng.integers(0, 3, 150)
    depth = rng.poisson(4.0, (150, 25))
    alt = rng.binomial(depth, af[labels])
    conc = 20.0 if likelihood == "betabinomial" else None
    fit = AlleleFit(None, None, af, np.array([0.5, 0.3, 0.2]), 0.1, 0.01, conc, None, 0.0, {})
    prob, marg = assign_cells(alt, depth, fit, batch_size=64)
    ad = anndata.AnnData(X=sp.csr_matrix(depth), layers={"REF": sp.csr_matrix(depth - alt), "ALT": sp.csr_matrix(alt)})
    ad.var_names = [f"var{j}" for j in range(ad.n_vars)]
    ad.obs_names = [f"cell{i}" for i in range(ad.n_obs)]
    model = AlleleModel(AlleleModelResult(fit, af.T, af.T, "beta"), np.asarray(ad.obs_names), np.asarray(ad.var_names),
                        {"n_components": 3, "likelihood": likelihood})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(str(run_dir / "model"))
    ad.write_h5ad(run_dir / "result.h5ad")
    (run_dir / "metrics.json").write_text(json.dumps({"model": "allele_model", "jaxfactor_version": __version__}))
    (run_dir / "config.toml").write_text(tomli_w.dumps({"model": {"name": "allele_model", "n_components": 3}}))
    ad.write_h5ad(tmp_path / "d.h5ad")
    predict(str(run_dir), str(tmp_path / "d.h5ad"), str(tmp_path / "p.h5ad"), batch_size=64, log=lambda m: None)
    pred = anndata.read_h5ad(tmp_path / "p.h5ad")
    np.testing.assert_allclose(pred.obsm["allele_model_proba"], prob, atol=1e-5)  # float32, same formula
    np.testing.assert_allclose(pred.obs["allele_model_log_likelihood"], marg, rtol=1e-5)
    assert list(pred.obs["allele_model_label"].cat.categories) == ["0", "1", "2"]


def test_registry_covers_the_fitted_models(tmp_path):
    from jaxfactor.models._allele_model import AlleleModel, AlleleModelResult
    from jaxfactor.models._allele_svi import AlleleFit
    from jaxfactor.runner._predictor import lookup

    assert all(lookup(name) is not None for name in ("nmf", "cclone", "clones", "gmm", "ppca", "binomial_mixture", "allele_model", "vae", "zinbwave"))
    af = np.full((2, 3), 0.5)
    fit = AlleleFit(None, None, af, np.array([0.5, 0.5]), 0.1, 0.01, 7.0, None, 0.0, {})
    model = AlleleModel(AlleleModelResult(fit, af.T, af.T, "beta"), np.array(["a", "b"]), np.array(["x", "y", "z"]),
                        {"n_components": 2, "likelihood": "betabinomial"})
    model.save(str(tmp_path / "model"))
    params, static = PREDICTORS["allele_model"].load(str(tmp_path), None, {"__run_dir__": str(tmp_path)})
    assert static == {"likelihood": "betabinomial"} and float(params["concentration"]) == 7.0 and params["af"].shape == (2, 3)
    with pytest.raises(ValueError, match="no saved model"):
        PREDICTORS["gmm"].load("x", None, {"__run_dir__": str(tmp_path / "old")})


def test_predict_refuses_what_the_fit_refuses(tmp_path_factory, tmp_path, capsys):
    """Every streamed batch follows the fit's input rules (counts for allele models): NaN,
    negative or non-integer entries are one-line errors naming the first cell; nothing is written."""
    run_dir, loaded = _fit(tmp_path_factory, "binomial_mixture_demo.toml", "data.n_cells=120", "data.n_variants=20",
                           "sweep.n_components=[2]", "fit.max_iter=20")
    out = tmp_path / "p.h5ad"
    for value, words in ((np.nan, "NaN or infinite entries"), (-1.0, "negative entries"), (0.5, "non-integer entries")):
        ad = loaded.adata.copy()
        alt = ad.layers["ALT"].toarray().astype(np.float64)
        alt[70, 3] = value
        ad.layers["ALT"] = sp.csr_matrix(alt)
        ad.write_h5ad(tmp_path / "bad.h5ad")
        assert main(["predict", str(run_dir), str(tmp_path / "bad.h5ad"), "--out", str(out), "--batch-size", "32"]) == 2
        err = capsys.readouterr().err
        assert f"DATA's ALT has {words} in 1 cell (first: cell 70)" in err and err.count("\n") == 1, err
        assert not out.exists()


def test_nmf_run_predicts_with_its_saved_model(tmp_path, small_nmf):
    """An NMF run saves its chosen point (model/); predict streams new cells through the family's
    kernel (W for H fixed, by HALS): the same numbers as the loaded model's transform, and the
    dominant factor as a categorical label."""
    import jaxfactor

    np.save(tmp_path / "x.npy", small_nmf.X)
    cfg = tmp_path / "nmf.toml"
    cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 3\n[fit]\nmax_iter = 50\n'
                   '[sweep]\nl2_H = [0.0, 0.5]\n[run]\nfigures = false\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    new = tmp_path / "new.h5ad"
    anndata.AnnData(X=np.asarray(small_nmf.X[:17], np.float32)).write_h5ad(new)
    assert main(["predict", str(tmp_path / "run"), str(new), "--out", str(tmp_path / "p.h5ad")]) == 0
    pred = anndata.read_h5ad(tmp_path / "p.h5ad")
    model = jaxfactor.load(str(tmp_path / "run" / "model"))
    W = model.transform(np.asarray(small_nmf.X[:17], np.float32))
    np.testing.assert_allclose(pred.obsm["X_nmf"], W, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(pred.obs["nmf_label"].astype(int), W.argmax(axis=1))
    chosen = json.loads((tmp_path / "run" / "metrics.json").read_text())["chosen"]
    assert chosen == "p000" and model.settings["l2_H"] == 0.0  # the lowest objective: no penalty


def test_clone_caller_run_predicts_its_calls(tmp_path_factory, tmp_path):
    """A clone-caller run predicts new cells at its fitted parameters: the training cells get back
    the fit's clones and cancer / healthy calls (names, categorical)."""
    run_dir, loaded = _fit(tmp_path_factory, "clones_demo.toml", "data.n_cells=600", "data.n_variants=24", "data.n_clones=2",
                           "fit.n_init=4", "model.n_components=3")
    fitted = anndata.read_h5ad(run_dir / "result.h5ad")
    new = tmp_path / "new.h5ad"
    loaded.adata.write_h5ad(new)
    assert main(["predict", str(run_dir), str(new), "--out", str(tmp_path / "p.h5ad")]) == 0
    pred = anndata.read_h5ad(tmp_path / "p.h5ad")
    assert set(pred.obs["clones_call"].cat.categories) <= {"cancer", "healthy", "undetermined"}
    same = pred.obs["clones_call"].astype(str).to_numpy() == fitted.obs["clones_call"].astype(str).to_numpy()
    assert same.mean() > 0.99
    assert np.mean(pred.obs["clones_label"].astype(str).to_numpy() == fitted.obs["clones_label"].astype(str).to_numpy()) > 0.99


def test_unnamed_variables_match_by_position_only(tmp_path, capsys):
    """A model fitted on a plain matrix (.npy) has no variable names: predict matches DATA's columns
    by position and needs exactly as many (an unrelated .h5ad whose default names "0".."p" happen to
    match is refused when its width differs), and says so."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(5, 1, (60, 3))]).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    cfg = tmp_path / "g.toml"
    cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "gmm"\nn_components = 2\n[fit]\nmax_iter = 20\n[run]\nfigures = false\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    wide = tmp_path / "wide.h5ad"
    anndata.AnnData(X=np.zeros((4, 5), np.float32)).write_h5ad(wide)  # var names "0".."4" include "0".."2"
    assert main(["predict", str(tmp_path / "run"), str(wide), "--out", str(tmp_path / "p.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "fitted on a matrix without variable names (3 columns); DATA must have exactly 3 variables" in err
    same = tmp_path / "same.h5ad"
    ad = anndata.AnnData(X=X[:10])
    ad.var_names = ["c", "b", "a"]  # names are not looked at
    ad.write_h5ad(same)
    assert main(["predict", str(tmp_path / "run"), str(same), "--out", str(tmp_path / "p.h5ad")]) == 0
    assert "variables matched by position" in capsys.readouterr().out
    pred = anndata.read_h5ad(tmp_path / "p.h5ad")
    assert pred.obsm["gmm_proba"].shape == (10, 2)
