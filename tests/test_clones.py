"""Clone calling: the allele model's MAP-EM, automatic K, annotation, cell calls, stability, bad input,
the ``jaxfactor clones`` command and the runner task."""

import os

import anndata
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import jaxfactor as jf
from jaxfactor import clones
from jaxfactor.cclone import adjusted_rand_index
from jaxfactor.data import simulate_clones
from jaxfactor.mixture import AlleleEMParams, allele_counts, allele_em, allele_em_evidence, allele_em_hparams
from jaxfactor.runner import main

H, C = ["T cells", "B cells", "NK cells"], ["Immature", "Early myeloid"]
SMALL = dict(n_init=4, max_iter=300)  # every call below has the same shapes' buckets: one compilation


@pytest.fixture(scope="module")
def sim():
    """Healthy cells and 2 cancer clones with every confounder of the simulator switched on."""
    return simulate_clones(600, 24, 2, healthy_fraction=0.4, n_germline=6, mean_coverage=4.0, celltypes=True,
                           annotation_noise=0.03, celltype_coverage_sd=0.7, loh_fraction=0.5, n_editing=2, seed=3)


@pytest.fixture(scope="module")
def called(sim):
    return clones.call(sim.to_anndata(), celltype_key="celltype", healthy=H, cancer=C, n_clones=[2, 3, 4], **SMALL)


# ------------------------------------------------------------------------------------------- EM

def test_em_objective_is_the_numpyro_log_joint():
    """MAP-EM's objective equals NumPyro's log density of the allele model (float64), and EM climbs it."""
    from numpyro.infer.util import log_density

    from jaxfactor.models import allele_model

    with jax.enable_x64(True):
        s = simulate_clones(200, 16, 2, n_germline=3, seed=1)
        data = allele_counts(s.alt, s.coverage)
        hp = allele_em_hparams(3)
        res = jf.fit(allele_em(3), data, hp, jax.random.PRNGKey(0), max_iter=60, tol=0.0, chunk_size=1)
        trace = np.asarray(res.trace)
        assert np.all(np.diff(trace) <= 1e-9 * np.abs(trace[:-1]))
        p = res.state
        params = {"pi": p.weights, "af_raw": p.af, "dropout": p.dropout, "error": p.error}
        ld, _ = log_density(allele_model, (jnp.asarray(s.alt, float), jnp.asarray(s.coverage, float)),
                            dict(n_cells=200, n_variants=16, n_clones=3), params)
        np.testing.assert_allclose(-float(res.trace[-1]), float(ld), rtol=1e-10)


def test_inactive_clones_and_buckets_change_nothing():
    """Clones padded out by ``hp.active`` and padded data (bucketed sizes) give the same fit from the
    same start; per-site dropout is monotone too."""
    with jax.enable_x64(True):
        s = simulate_clones(150, 12, 2, n_germline=2, seed=4)
        plain, padded = allele_counts(s.alt, s.coverage), allele_counts(s.alt, s.coverage, buckets=True)
        assert padded.entry_cell.shape[0] > plain.entry_cell.shape[0]
        af = jnp.linspace(0.1, 0.9, 3 * 12).reshape(3, 12)
        for site in (True,):  # (one dropout rate: the NumPyro test above)
            drop = jnp.full((12,) if site else (), 0.1)
            start3 = AlleleEMParams(af, jnp.full(3, 1 / 3), drop, jnp.float64(0.01))
            start5 = AlleleEMParams(jnp.pad(af, ((0, 2), (0, 0)), constant_values=0.5), jnp.pad(jnp.full(3, 1 / 3), (0, 2)),
                                    drop, jnp.float64(0.01))
            a, ta = _iterate(allele_em(3, site), plain, allele_em_hparams(3), start3)
            b, tb = _iterate(allele_em(5, site), padded, allele_em_hparams(5, 3), start5)
            np.testing.assert_allclose(tb, ta, rtol=1e-10)
            np.testing.assert_allclose(b.af[:3], a.af, atol=1e-10)
            assert np.all(np.asarray(b.weights[3:]) == 0)
            assert np.all(np.diff(ta) <= 1e-9 * np.abs(ta[:-1]))
            evidence = jax.jit(allele_em_evidence)
            np.testing.assert_allclose(float(evidence(b, padded, allele_em_hparams(5, 3))),
                                       float(evidence(a, plain, allele_em_hparams(3))), rtol=1e-10)


def _iterate(alg, data, hp, state, n=15):
    step, objective = jax.jit(alg.step), jax.jit(alg.objective)
    trace = [float(objective(state, data, hp))]
    for _ in range(n):
        state = step(state, data, hp)
        trace.append(float(objective(state, data, hp)))
    return state, np.asarray(trace)


def test_occam_factor_is_the_exact_beta_integral():
    """The evidence's Occam factor of a Beta-distributed rate equals log joint at the MAP minus the
    numerically integrated marginal."""
    from scipy import integrate, special

    from jaxfactor.mixture._allele_em import _beta_occam

    for s1, s0, a, b in [(3.0, 7.0, 1.0, 1.0), (0.4, 12.5, 2.0, 18.0), (0.0, 0.0, 2.0, 198.0)]:
        x = (s1 + a - 1) / (s1 + s0 + a + b - 2) if s1 + s0 + a + b > 2 else 0.5
        x = min(max(x, 1e-6), 1 - 1e-6)
        f = lambda t: t ** s1 * (1 - t) ** s0 * t ** (a - 1) * (1 - t) ** (b - 1) / special.beta(a, b)
        marginal = np.log(integrate.quad(f, 0, 1, points=[x], limit=200)[0])
        joint = s1 * np.log(x) + s0 * np.log1p(-x) + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - special.betaln(a, b)
        with jax.enable_x64(True):
            got = float(_beta_occam(jnp.float64(s1), jnp.float64(s0), jnp.float64(x), a, b))
        np.testing.assert_allclose(got, joint - marginal, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------- the call

def test_call_outputs_and_accuracy(sim, called):
    ad = sim.to_anndata()
    out = called
    u = out.uns["clones"]
    assert out.n_obs == ad.n_obs and list(out.obs_names) == list(ad.obs_names)
    assert out.n_vars == ad.n_vars - 2 and u["filter"]["rna_editing"] == 2  # REDIdb sites dropped, germline kept
    k = u["n_clones"]
    assert k == 3  # healthy + 2 cancer clones, chosen automatically
    assert out.obsm["clone_prob"].shape == (ad.n_obs, k)
    np.testing.assert_allclose(out.obsm["clone_prob"].sum(axis=1), 1, atol=1e-5)
    for key in ("clone_af", "clone_af_lower", "clone_af_upper"):
        assert out.varm[key].shape == (out.n_vars, k) and np.isfinite(out.varm[key]).all()
    assert np.all(out.varm["clone_af_lower"] <= out.varm["clone_af"] + 1e-6)
    assert np.all(out.varm["clone_af"] <= out.varm["clone_af_upper"] + 1e-6)
    assert set(out.obs["cancer_call"].cat.categories) == {"cancer", "healthy", "undetermined"}
    np.testing.assert_allclose(out.obs["clone_prob_max"], out.obsm["clone_prob"].max(axis=1), atol=1e-5)
    sel, ann = u["selection"], u["annotation"]
    assert list(sel["n_clones"]) == [2, 3, 4] and sel["chosen"].sum() == 1
    assert int(sel.loc[sel["chosen"], "n_clones"].iloc[0]) == k
    assert sel.loc[sel["chosen"], "evidence"].iloc[0] == sel["evidence"].max()
    assert {"label", "balanced_cancer_share", "mixed", "weak", "n_T cells", "n_Immature"} <= set(ann.columns)
    assert sorted(ann["label"]) == ["cancer", "cancer", "healthy"] and u["validation"]["passed"]
    # against the simulated truth
    assert adjusted_rand_index(out.obs["clone"].cat.codes.to_numpy(), sim.labels) > 0.9
    call = out.obs["cancer_call"].astype(str).to_numpy()
    strict = 0.5 * (np.mean(call[sim.is_cancer] == "cancer") + np.mean(call[~sim.is_cancer] == "healthy"))
    assert strict > 0.9
    # the cancer probability is the posterior mass of the cancer clones
    cancer_clones = np.flatnonzero(ann["label"].to_numpy() == "cancer")
    np.testing.assert_allclose(out.obs["cancer_prob"], out.obsm["clone_prob"][:, cancer_clones].sum(axis=1), atol=1e-5)
    assert "clones: 3" in u["summary"] and "validation: passed" in u["summary"]
    # the input's own obs['clone'] (here the simulated truth) is kept beside ours, and said so
    np.testing.assert_array_equal(out.obs["clone_input"].to_numpy(), ad.obs["clone"].to_numpy())
    assert "clone -> clone_input" in u["summary"]


def test_input_is_untouched_and_other_methods_share_the_layout(sim, called):
    ad = sim.to_anndata()
    before = (ad.layers["ALT"].copy(), ad.obs.copy(), ad.n_vars)
    for method in ("binomial", "cclone"):
        kw = dict(n_init=3, n_bootstrap=6) if method == "cclone" else dict(n_init=3)
        out = clones.call(ad, celltype_key="celltype", healthy=H, cancer=C, method=method, n_clones=3, **kw)
        u = out.uns["clones"]
        assert u["method"] == method and out.n_obs == ad.n_obs
        assert {"clone", "clone_prob_max", "cancer_prob", "cancer_call"} <= set(out.obs.columns)
        assert out.obsm["clone_prob"].shape[1] == u["n_clones"] and "annotation" in u
        assert np.isfinite(out.varm["clone_af_lower"]).all()
    assert (ad.layers["ALT"] != before[0]).nnz == 0 and ad.obs.equals(before[1]) and ad.n_vars == before[2]
    assert "clone" not in ad.obsm and "clones" not in ad.uns


def test_without_annotation_clones_only(sim):
    ad = sim.to_anndata()
    out = clones.call(ad, n_clones=[2, 3, 4], **SMALL)
    assert "cancer_call" not in out.obs and "annotation" not in out.uns["clones"]
    assert out.obsm["clone_prob"].shape == (ad.n_obs, out.uns["clones"]["n_clones"])
    assert "no cell-type annotation" in out.uns["clones"]["summary"]


def test_calls_are_stable_across_seeds(sim, called):
    base = called.obs["clone"].cat.codes.to_numpy()
    for seed in (1, 2):
        out = clones.call(sim.to_anndata(), celltype_key="celltype", healthy=H, cancer=C, n_clones=[2, 3, 4], seed=seed,
                          **SMALL)
        assert adjusted_rand_index(out.obs["clone"].cat.codes.to_numpy(), base) >= 0.99
        assert np.mean(out.obs["cancer_call"].to_numpy() == called.obs["cancer_call"].to_numpy()) >= 0.99


def test_more_starts_until_the_best_optimum_recurs(called):
    """The chosen K gets batches of n_init starts until its best partition was reached from 3 starts
    (or max_init); the table and details say how many were spent, and the summary warns when the
    best optimum stayed unconfirmed."""
    table, d = called.uns["clones"]["selection"], called.uns["clones"]["details"]
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["n_init"] % SMALL["n_init"] == 0 and chosen["n_init"] <= 100
    assert chosen["best_optimum_hits"] >= 3 or chosen["n_init"] == 100
    assert d["n_init_used"] == chosen["n_init"] and d["best_optimum_hits"] == chosen["best_optimum_hits"]
    out = clones.call(called, n_clones=3, n_init=2, max_init=2, max_iter=300)  # one batch of 2: at most 2 hits
    assert out.uns["clones"]["details"]["best_optimum_hits"] <= 2
    assert "did not recur" in out.uns["clones"]["summary"]


def test_figure_and_summary(tmp_path, called):
    path = clones.plot(called, str(tmp_path))
    assert os.path.getsize(path) > 10_000
    text = clones.summary(called)
    assert "clone 0" in text and "cells:" in text and "allelic dropout" in text


# ---------------------------------------------------------------------------------- annotation

def test_annotation_rule_and_validation():
    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.6, 0.4]])
    types = np.array(["T", "T", "Imm", "Imm", "Mono", "T"])
    ann = clones.annotate(P, types, ["T"], ["Imm"], min_annotated=1)
    assert list(ann.labels) == ["healthy", "cancer"] and ann.passed
    np.testing.assert_allclose(ann.cancer_prob, P[:, 1])
    np.testing.assert_allclose(ann.score, P[:, 1] - P[:, 0])
    assert list(ann.call) == ["healthy", "healthy", "cancer", "cancer", "undetermined", "undetermined"]
    assert int(ann.table.loc[0, "n_Mono"]) == 1 and ann.table["n_cells"].sum() == 6
    # a clone holding both kinds fails validation; a thin label is flagged weak
    mixed = clones.annotate(P, np.array(["T", "Imm", "Imm", "T", "T", "Imm"]), ["T"], ["Imm"], min_annotated=1)
    assert not mixed.passed and any("mixed" in m for m in mixed.messages)
    weak = clones.annotate(P, types, ["T"], ["Imm"], min_annotated=10)
    assert not weak.passed and all(weak.table["weak"])
    # a cell without reads is never called
    covered = np.array([True, False, True, True, True, True])
    assert clones.annotate(P, types, ["T"], ["Imm"], covered=covered, min_annotated=1).call[1] == "undetermined"
    # CCLONE's loadings C work the same way (rows need not sum to 1)
    Cm = P * 0.5
    c_ann = clones.annotate(Cm, types, ["T"], ["Imm"], min_annotated=1)
    np.testing.assert_allclose(c_ann.cancer_prob, P[:, 1])
    assert list(c_ann.call[:3]) == ["healthy", "healthy", "cancer"]


# ------------------------------------------------------------------------------------- simulator

def test_simulator_confounders():
    base = simulate_clones(800, 40, 3, n_germline=10, seed=5)
    s = simulate_clones(800, 40, 3, n_germline=10, n_editing=4, celltypes=True, annotation_noise=0.1,
                        celltype_coverage_sd=1.0, loh_fraction=0.5, editing_annotated=0.5, seed=5)
    assert base.celltype is None and not base.loh.any() and not base.redidb.any()
    kinds = s.variant_kind
    assert (kinds == "editing").sum() == 4 and (kinds == "germline").sum() == 10
    assert s.loh.sum() == 5 and set(np.unique(s.clone_af[1:, s.loh])) <= {0.0, 1.0}
    assert np.all(s.clone_af[0, s.loh] == 0.5)  # healthy cells stay heterozygous
    assert s.redidb[kinds == "editing"].sum() in (1, 2, 3) and not s.redidb[kinds != "editing"].any()
    ad = s.to_anndata()
    assert set(ad.obs["celltype"].astype(str)) <= set(H + C + ["Monocytes"])
    healthy_types = np.isin(s.celltype, H + ["Monocytes"])
    assert 0.8 < np.mean(healthy_types == ~s.is_cancer) < 0.98  # 10 % annotation noise
    assert ad.var["loh"].sum() == 5 and ad.var["REDIdb"].sum() == s.redidb.sum()
    # editing follows the cell type: myeloid cells show more ALT at the editing sites
    e = kinds == "editing"
    myeloid = np.isin(s.celltype, ["Monocytes", "Immature", "Early myeloid"])
    frac = lambda rows: s.alt[rows][:, e].sum() / max(s.coverage[rows][:, e].sum(), 1)
    assert frac(myeloid) > frac(~myeloid) + 0.15
    with pytest.raises(ValueError, match="celltypes=True"):
        simulate_clones(100, 20, 2, n_editing=2)


# ------------------------------------------------------------------------------------- bad input

def _bad_inputs(ad):
    no_ref = ad.copy()
    del no_ref.layers["REF"]
    dp = ad.copy()
    dp.layers["DP"] = dp.layers["ALT"].copy()
    del dp.layers["REF"]
    dp.layers["ALT"] = dp.layers["ALT"] + sp.csr_matrix(np.ones(dp.shape, np.int64))  # ALT > DP
    neg = ad.copy()
    neg.layers["REF"] = -neg.layers["REF"].toarray()
    frac = ad.copy()
    frac.layers["ALT"] = frac.layers["ALT"].toarray() + 0.5
    nan = ad.copy()
    nan.layers["ALT"] = nan.layers["ALT"].toarray().astype(float)
    nan.layers["ALT"][0, 0] = np.nan
    edits = ad.copy()
    edits.var["REDIdb"] = True
    return [
        (no_ref, {}, "layer 'REF'"),
        (dp, {}, "ALT exceeds DP"),
        (neg, {}, "negative"),
        (frac, {}, "non-integer|fractional|whole"),
        (nan, {}, "NaN"),
        (ad, {"celltype_key": "nope"}, r"obs\['nope'\] not found"),
        (ad, {"celltype_key": "celltype", "healthy": ["T cells"], "cancer": ["T cells"]}, "both healthy and cancer"),
        (ad, {"celltype_key": "celltype", "healthy": ["T-cells"]}, r"\['T-cells'\] are not in"),
        (ad, {"healthy": ["T cells"]}, "without a cell-type annotation"),
        (edits, {}, "no variant left after filtering"),
        (ad, {"n_clones": 100000}, "more than the .* cells with reads"),
        (ad, {"n_clones": 0}, "n_components must be"),
        (ad, {"method": "vireo"}, "unknown method"),
        (ad, {"screen_iter": 3, "method": "binomial"}, "unknown option"),
        (ad, {"criterion": "elbo"}, "not available for method 'allele'"),
        (ad, {"threshold": 1.5}, "threshold"),
    ]


def test_bad_input_is_one_line_before_compiling(sim, monkeypatch):
    from jaxfactor.clones import _methods

    def never(*args, **kwargs):
        raise AssertionError("a fit started before the input was checked")

    for name in ("fit_allele", "fit_binomial", "fit_cclone"):
        monkeypatch.setattr(_methods, name, never)
    ad = sim.to_anndata()
    for data, kw, message in _bad_inputs(ad):
        with pytest.raises(ValueError, match=message) as info:
            clones.call(data, **kw)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ CLI and runner

def test_clones_command(tmp_path, capsys, sim):
    ad = sim.to_anndata()
    types = ad.obs[["celltype"]].copy()
    ad.obs = ad.obs[["clone"]].rename(columns={"clone": "truth"})
    ad.write_h5ad(tmp_path / "v.h5ad")
    types.iloc[:10].drop(index=types.index[:3]).to_csv(tmp_path / "few.csv")  # only 7 cells annotated
    types.to_csv(tmp_path / "types.csv")
    code = main(["clones", str(tmp_path / "v.h5ad"), "--celltypes", str(tmp_path / "types.csv"), "--healthy",
                 "T cells,B cells,NK cells", "--cancer", "Immature,Early myeloid", "--n-clones", "2,3,4", "--n-init", "4",
                 "--out", str(tmp_path / "o"), "--quiet"])
    out_text = capsys.readouterr().out
    assert code == 0 and "clones: 3" in out_text and "wrote" in out_text
    files = set(os.listdir(tmp_path / "o"))
    assert {"result.h5ad", "calls.csv", "selection.csv", "annotation.csv", "summary.txt", "clones.png"} <= files
    calls = pd.read_csv(tmp_path / "o" / "calls.csv", index_col=0)
    assert len(calls) == ad.n_obs and {"cancer_call", "prob_clone_0"} <= set(calls.columns)
    assert anndata.read_h5ad(tmp_path / "o" / "result.h5ad").uns["clones"]["n_clones"] == 3
    # errors: one line on stderr, exit 2, nothing written
    cases = [
        (["--celltypes", str(tmp_path / "missing.csv")], "cell-type file not found"),
        (["--healthy", "T cells"], "need a cell-type annotation"),
        (["--celltype-key", "celltype"], r"obs\['celltype'\] not found"),
        (["--n-clones", "two"], "--n-clones must be"),
    ]
    for extra, message in cases:
        code = main(["clones", str(tmp_path / "v.h5ad"), *extra, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert code == 2 and message.replace("\\", "") in err.replace("\\", "") or __import__("re").search(message, err), err
        assert err.count("\n") == 1 and not (tmp_path / "bad").exists()
    code = main(["clones", str(tmp_path / "v.h5ad"), "--out", str(tmp_path / "o")])
    assert code == 2 and "already exists" in capsys.readouterr().err
    code = main(["clones", str(tmp_path), "--out", str(tmp_path / "inside")])
    assert code == 2 and "overlap the input" in capsys.readouterr().err
    # a table that matches no barcode says how many matched
    pd.DataFrame({"celltype": ["T cells"]}, index=["nobody"]).to_csv(tmp_path / "none.csv")
    code = main(["clones", str(tmp_path / "v.h5ad"), "--celltypes", str(tmp_path / "none.csv"), "--out", str(tmp_path / "n")])
    assert code == 2 and "0 of 600 barcodes matched" in capsys.readouterr().err


def test_runner_task_compares_methods(tmp_path, capsys):
    """The runner's family task on the clone caller: a sweep over methods compares them side by side
    (no choice between them: their scores differ in kind); each method's calls, tables and page."""
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "experiments" / "clones_demo.toml"
    sets = ["data.n_cells=600", "data.n_variants=24", "data.n_clones=2", "data.n_germline=6", "data.n_editing=2",
            "fit.n_init=4", "model.n_bootstrap=6", "model.n_components=3", "sweep.method=['allele', 'cclone']"]
    code = main(["run", str(cfg), "--out", str(tmp_path / "r"), *[x for s in sets for x in ("--set", s)]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    files = set(os.listdir(tmp_path / "r"))
    assert {"comparison.csv", "clones_allele.png", "clones_cclone.png", "k_selection_allele.csv", "annotation_cclone.csv",
            "result.h5ad", "model"} <= files
    table = pd.read_csv(tmp_path / "r" / "comparison.csv")
    assert list(table["method"]) == ["allele", "cclone"] and "strict_balanced_accuracy" in table.columns
    assert table["strict_balanced_accuracy"].iloc[0] > 0.9 and table["ari_vs_first"].iloc[0] == 1.0
    res = anndata.read_h5ad(tmp_path / "r" / "result.h5ad")
    assert {"clones_call", "clones_call_cclone", "clones_label_cclone"} <= set(res.obs) and "clones_proba_cclone" in res.obsm
    assert "strict_balanced_accuracy=" in captured.out and "side by side (comparison.csv)" in captured.out
    assert "(chosen by" not in captured.out  # methods are compared, not chosen between
