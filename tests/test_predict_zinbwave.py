"""``jaxfactor predict`` on a ZINB-WaVE run folder: W of new cells with the gene parameters fixed,
in fixed-size padded batches; it must equal ``jaxfactor.zinbwave.transform`` and give back the
fitted W of the training cells; all-zero cells get W = 0 (flagged); bad inputs are one-line
errors with nothing written.

One tiny runner fit (120 cells x 60 genes, K = 2, float32) shared by the file; ~20 s on two cores.
"""

import json
import shutil
from pathlib import Path

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from jaxfactor import zinbwave as zw
from jaxfactor.runner import main
from jaxfactor.zinbwave import canonical_correlations

EXP = Path(__file__).resolve().parents[1] / "experiments"
B = 50  # 121 cells of DATA: batches of 50, 50 and 21 (+ 29 padded rows)


def sets(*items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zinbwave") / "run"
    code = main(["run", str(EXP / "zinbwave_demo.toml"), "--out", str(out),
                 *sets("run.figures=false", "data.n_cells=120", "data.n_genes=60", "sweep.n_components=[2]", "fit.max_iter=10")])
    assert code == 0
    return out, anndata.read_h5ad(out / "result.h5ad")


def _data(fitted, path, *, drop=()):
    """The training cells as a new file: genes reversed, an extra gene, sparse X, and one all-zero
    cell appended (so the last batch holds 20 training cells, the empty one and the padding)."""
    genes = [g for g in fitted.var_names[::-1] if g not in drop]
    Y = fitted[:, genes].X
    Y = Y.toarray() if sp.issparse(Y) else np.asarray(Y)
    Y = np.concatenate([np.concatenate([Y, np.zeros((1, Y.shape[1]), Y.dtype)]), np.ones((Y.shape[0] + 1, 1), Y.dtype)], axis=1)
    ad = anndata.AnnData(X=sp.csr_matrix(Y))
    ad.obs_names = [*fitted.obs_names, "empty_cell"]
    ad.var_names = [*genes, "not_fitted"]
    ad.write_h5ad(path)
    return ad


def test_predict_equals_transform_and_gives_back_the_fitted_w(run, tmp_path, capsys):
    run_dir, fitted = run
    ad = _data(fitted, tmp_path / "new.h5ad")
    out = tmp_path / "pred.h5ad"
    with pytest.warns(UserWarning, match="1 all-zero cells"):
        assert main(["predict", str(run_dir), str(tmp_path / "new.h5ad"), "--out", str(out), "--batch-size", str(B)]) == 0
    assert "cells/min" in capsys.readouterr().out
    pred = anndata.read_h5ad(out)
    assert list(pred.obs_names) == list(ad.obs_names) and pred.uns["jaxfactor_predict"]["batch_size"] == B
    W = np.asarray(pred.obsm["X_zinbwave"], np.float64)
    assert W.shape == (121, 2) and np.isfinite(W).all()

    # the all-zero cell: W = 0 (the penalty's minimum; see _predict_kernel), γ undefined, flagged
    assert list(pred.obs["zinbwave_all_zero"]) == [False] * 120 + [True]
    assert np.all(W[120] == 0) and np.isnan(pred.obsm["zinbwave_gamma_mu"][120]).all()

    # the same solve as transform (same batch size; the empty cell and the padding are solved as
    # copies of the last training cell, as transform pads): equal up to float32 rounding
    W_t = zw.transform(fitted, ad[:120], batch_size=B)
    np.testing.assert_allclose(W[:120], W_t, atol=1e-5 * np.abs(W_t).max())

    # the training cells give back the fitted W: the fit stopped at a relative PLL change of 1e-4
    # after one cell-wise Fisher step per outer iteration, predict iterates the cell block (gene
    # parameters fixed) to convergence, so W moves by what the fit had left: ~0.7 % of max |W| here
    W_fit = np.asarray(fitted.obsm["X_zinbwave"], np.float64)
    scale = np.abs(W_fit).max()
    assert np.abs(W[:120] - W_fit).max() <= 0.03 * scale
    assert canonical_correlations(W[:120], W_fit).min() > 0.999
    g_fit = np.asarray(fitted.obsm["zinbwave_gamma_mu"], np.float64)
    assert np.abs(pred.obsm["zinbwave_gamma_mu"][:120] - g_fit).max() <= 0.03 * np.abs(g_fit).max()


def test_bad_inputs_are_one_line_errors(run, tmp_path, capsys):
    run_dir, fitted = run
    out = tmp_path / "p.h5ad"

    def error(run_dir, data):
        code = main(["predict", str(run_dir), str(data), "--out", str(out), "--batch-size", str(B)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("jaxfactor: error: ") and err.count("\n") == 1, err
        assert not out.exists()
        return err

    drop = list(fitted.var_names[:2])
    _data(fitted, tmp_path / "missing.h5ad", drop=drop)
    assert f"DATA lacks 2 of the 60 variables the model was fitted on: {', '.join(drop)}" in error(run_dir, tmp_path / "missing.h5ad")

    # a run with obs covariates in the cell design (its saved model edited: nothing is compiled)
    cov = tmp_path / "cov_run"
    shutil.copytree(run_dir, cov)
    meta = json.loads((cov / "model" / "model.json").read_text())
    meta["settings"].update(cell_covariates=True, X=["label"])
    (cov / "model" / "model.json").write_text(json.dumps(meta))
    _data(fitted, tmp_path / "ok.h5ad")
    assert "predict supports intercept-only cell designs" in error(cov, tmp_path / "ok.h5ad")
