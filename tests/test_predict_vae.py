"""``jaxfactor predict`` on a VAE run folder: the encoder's posterior means of new cells in
fixed-size padded batches, streamed from an .h5ad (dense X, or sparse CSR with the genes in
another order); they equal ``VAEFit.encode`` of the same cells and give back the run's latent for
its training cells. The model comes from ``result.h5ad`` (written with figures off). Bad inputs
are one-line errors with nothing written.

One tiny runner fit (300 cells x 40 genes, 3 epochs) shared by the file.
"""

import json
import shutil
from pathlib import Path

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from jaxfactor.data import simulate_counts
from jaxfactor.models import load_vae
from jaxfactor.runner import main

EXP = Path(__file__).resolve().parents[1] / "experiments"
B = 64  # 150 new cells: batches of 64, 64 and 22 (+ 42 padded rows)


def sets(*items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    code = main(["run", str(EXP / "vae_demo.toml"), "--out", str(out),
                 *sets("run.figures=false", "data.n_cells=300", "data.n_genes=40", "model.n_hidden=32",
                       "fit.max_iter=3", "model.batch_size=32", "model.n_importance=0", "sweep.n_components=[3]")])
    assert code == 0
    fitted = anndata.read_h5ad(out / "result.h5ad")
    return out, fitted, load_vae(out / "model")


def _new_cells(n=150, seed=11):
    """New simulated cells with the run's gene names (a fresh draw of the same simulator)."""
    return simulate_counts(n_cells=n, n_genes=40, n_types=5, n_latent=5, mean_library=2000.0, zero_inflation=0.1,
                           seed=seed).counts.astype(np.float32)


def _write(path, X, genes, *, sparse=False, extra=False):
    X = np.asarray(X, np.float32)
    genes = list(genes)
    if extra:
        X, genes = np.concatenate([X, np.ones((X.shape[0], 1), np.float32)], axis=1), [*genes, "not_fitted"]
    ad = anndata.AnnData(X=sp.csr_matrix(X) if sparse else X)
    ad.obs_names = [f"new{i}" for i in range(X.shape[0])]
    ad.var_names = genes
    ad.write_h5ad(path)
    return path


def _predict(run_dir, data, out, capsys=None):
    code = main(["predict", str(run_dir), str(data), "--out", str(out), "--batch-size", str(B)])
    assert code == 0
    return anndata.read_h5ad(out)


def test_predict_equals_encode_and_gives_back_the_fitted_latent(run, tmp_path, capsys):
    run_dir, fitted, fit = run
    assert (run_dir / "model" / "checkpoint.msgpack").exists()  # the saved model holds the VAE's checkpoint
    assert fit.n_epochs == 3 and fit.config.n_latent == 3
    X = _new_cells()
    genes = list(fitted.var_names)

    dense = _predict(run_dir, _write(tmp_path / "dense.h5ad", X, genes), tmp_path / "p1.h5ad")
    assert "cells/min" in capsys.readouterr().out
    z = dense.obsm["X_vae"]
    assert z.shape == (150, 3) and z.dtype == np.float32 and list(dense.obs_names) == [f"new{i}" for i in range(150)]
    assert dense.obsm["vae_variance"].shape == (150, 3) and np.all(dense.obsm["vae_variance"] > 0)
    assert dense.uns["jaxfactor_predict"]["batch_size"] == B
    ref, var = fit.encode(X, return_var=True)  # the API's batched encode, one batch of 1024
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)  # float32, other batch shapes
    np.testing.assert_allclose(dense.obsm["vae_variance"], var, rtol=1e-5, atol=1e-6)

    # sparse CSR read from disk batch by batch, genes reversed, one gene the model does not know
    backed = _predict(run_dir, _write(tmp_path / "csr.h5ad", X[:, ::-1], genes[::-1], sparse=True, extra=True),
                      tmp_path / "p2.h5ad")
    np.testing.assert_allclose(backed.obsm["X_vae"], z, rtol=1e-5, atol=1e-6)

    # the run's own cells give back the latent the run wrote
    train = fitted.layers["counts"] if "counts" in fitted.layers else fitted.X
    own = _predict(run_dir, _write(tmp_path / "own.h5ad", train.toarray() if sp.issparse(train) else train, genes),
                   tmp_path / "p3.h5ad")
    np.testing.assert_allclose(own.obsm["X_vae"], fitted.obsm["X_vae"], rtol=1e-5, atol=1e-6)


def _error(run_dir, data, out, capsys):
    code = main(["predict", str(run_dir), str(data), "--out", str(out), "--batch-size", str(B)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxfactor: error: ") and err.count("\n") == 1, err
    assert not Path(out).exists()
    return err


def test_gene_mismatch_and_bad_counts_are_one_line_errors(run, tmp_path, capsys):
    run_dir, fitted, _ = run
    X, genes = _new_cells(), list(fitted.var_names)
    out = tmp_path / "p.h5ad"
    missing = _write(tmp_path / "missing.h5ad", X[:, 2:], genes[2:])
    assert f"DATA lacks 2 of the 40 variables the model was fitted on: {genes[0]}, {genes[1]}" in _error(
        run_dir, missing, out, capsys)

    # each batch is checked as the fit checks its input (here the third batch); nothing is written
    for change, message in ((lambda A: A.__setitem__((140, 5), 0.5), "non-integer entries in 1 cell"),
                            (lambda A: A.__setitem__((140, 5), -1.0), "negative entries in 1 cell"),
                            (lambda A: A.__setitem__((140, 5), np.nan), "NaN or infinite entries in 1 cell")):
        bad = X.copy()
        change(bad)
        err = _error(run_dir, _write(tmp_path / "bad.h5ad", bad, genes, sparse=True), out, capsys)
        assert f"{message} (first: cell 140)" in err, err


def test_run_folders_without_a_vae_model_are_refused(run, tmp_path, capsys):
    run_dir, fitted, _ = run
    data = _write(tmp_path / "d.h5ad", _new_cells(20), list(fitted.var_names))
    out = tmp_path / "p.h5ad"

    other = tmp_path / "other"  # a run of a model without a predictor
    shutil.copytree(run_dir, other)
    meta = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**meta, "model": "foo"}))
    err = _error(other, data, out, capsys)
    assert "holds a 'foo' run, which has no predictor" in err and "vae" in err.split("predict supports:")[1]
    (other / "metrics.json").write_text(json.dumps({**meta, "model": "nmf"}))  # altered: another family's name
    assert "says it holds a 'nmf' run but its saved model (model/) is a 'vae' model" in _error(other, data, out, capsys)

    old = tmp_path / "old"  # a VAE run written before runs saved their model (model/)
    shutil.copytree(run_dir, old)
    shutil.rmtree(old / "model")
    assert "rerun the fit to predict with it" in _error(old, data, out, capsys)
