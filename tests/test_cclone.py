"""CCLONE pipeline: weighted NMF vs the scipy L-BFGS-B reference, bootstrap outputs, sweep,
annotation, accuracy on simulated clones, real data, and bad input."""

import sys
import warnings

import anndata
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfactor as jf
from jaxfactor import cclone
from jaxfactor.data import simulate_clones, variant_matrices
from jaxfactor.factorization import WNMFHparams, WNMFState, wnmf_bcd, wnmf_data, wnmf_mu
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"))
from cclone_reference import reference_wnmf  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    return simulate_clones(n_cells=300, n_variants=16, n_clones=2, healthy_fraction=0.0, n_germline=0,
                           mean_coverage=20.0, seed=1)


@pytest.fixture(scope="module")
def fitted(sim):
    return cclone.fit(sim.to_anndata(), 2, n_bootstrap=12, n_cycles=60)


@pytest.mark.parametrize("coverage,dropout", [(20.0, 0.4), (2.0, 0.8)])
def test_reaches_reference_loss_from_same_start(coverage, dropout):
    """Dense and sparse coverage: BCD reaches a weighted loss <= the L-BFGS-B reference's."""
    s = simulate_clones(n_cells=120, n_variants=12, n_clones=2, healthy_fraction=0.3, mean_coverage=coverage,
                        coverage_dropout=dropout, seed=3)
    M, W = (a.astype(np.float64) for a in variant_matrices(s.to_anndata()))
    rng = np.random.default_rng(0)
    C0, V0 = rng.random((120, 2)), rng.random((12, 2))
    _, _, ref_losses = reference_wnmf(M, W, C0, V0, 40)
    assert np.all(np.diff(ref_losses) <= 1e-9 * ref_losses[:-1])
    with jax.enable_x64(True):
        start = WNMFState(jnp.asarray(C0), jnp.asarray(V0))
        ours = jf.fit(wnmf_bcd(2), wnmf_data(M, W), WNMFHparams(), jax.random.PRNGKey(0), max_iter=100, tol=0,
                      state0=start)
        mu = jf.fit(wnmf_mu(2), wnmf_data(M, W), WNMFHparams(), jax.random.PRNGKey(0), max_iter=100, tol=0, state0=start)
    assert float(ours.objective) <= ref_losses[-1] * (1 + 1e-9)
    trace = np.asarray(ours.trace)
    assert np.all(np.diff(trace) <= 1e-9 * trace[:-1])  # monotone
    C, V = np.asarray(ours.state.C), np.asarray(ours.state.V)
    assert C.min() >= 0 and C.max() <= 1 and V.min() >= 0 and V.max() <= 1
    assert np.isfinite(float(mu.objective))


def test_bootstrap_output_layout(sim, fitted):
    ad = sim.to_anndata()
    assert fitted.obs_names.tolist() == ad.obs_names.tolist() and fitted.var_names.tolist() == ad.var_names.tolist()
    for key in ("M", "weights", "REF", "ALT"):
        assert key in fitted.layers
    assert fitted.obsm["C"].shape == (300, 2) and fitted.obsm["C_std"].shape == (300, 2)
    assert fitted.varm["V"].shape == (16, 2) and fitted.varm["V_std"].shape == (16, 2)
    assert not np.isnan(fitted.obsm["C"]).any() and not np.isnan(fitted.varm["V"]).any()
    assert fitted.uns["k"] == 2 and -1 <= fitted.uns["orth_score"] <= 0
    assert fitted.uns["cclone"]["n_bootstrap"] == 12 and len(fitted.uns["cclone"]["bootstrap_losses"]) == 12
    M, W = variant_matrices(ad)
    np.testing.assert_array_equal(fitted.layers["M"], M)
    assert "C" not in ad.obsm  # the input is untouched


def test_labels_recover_simulated_clones(sim, fitted):
    labels = fitted.obsm["C"].argmax(axis=1)
    assert cclone.adjusted_rand_index(labels, sim.labels) >= 0.9  # the accuracy bar


def test_every_variant_gets_a_finite_V_with_one_bootstrap(sim):
    res = cclone.fit(sim.to_anndata(), 2, n_bootstrap=1, bootstrap_fraction=0.5, n_cycles=30)
    assert not np.isnan(res.varm["V"]).any()
    assert np.isnan(res.varm["V_std"]).all()  # one bootstrap: no spread, documented as NaN


def test_alignment_undoes_permutations():
    from jaxfactor.cclone._engine import align

    rng = np.random.default_rng(0)
    C = rng.random((50, 3))
    V = rng.random((8, 3))
    perms = [np.array(p) for p in ([0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0])]
    Cs = np.stack([C[:, p] + 0.01 * rng.random((50, 3)) for p in perms])
    Vs = np.stack([V[:, p] for p in perms])
    Ca, Va = align(Cs, Vs, ref=0)
    for b in range(4):
        np.testing.assert_allclose(Va[b], V)


def test_ari_matches_known_values():
    assert cclone.adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # scikit-learn's documented example: adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) = 0.5714...
    assert cclone.adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714285714)


def test_sweep_table_and_choice(sim):
    ad = sim.to_anndata()
    res = cclone.sweep(ad, ks=(2, 3), min_mafs=(5, 60), filter_germline=(True,), n_bootstrap=6, n_cycles=30)
    t = res.table
    assert len(t) == 4 and t["chosen"].sum() == 1
    skipped = t[t["skipped"] != ""]
    assert set(skipped["min_maf"]) == {60}  # no variant has a 60 % minor pattern: listed, not fatal
    ok = t[t["skipped"] == ""]
    assert {"orth_score", "loss", "stability", "n_cells", "n_vars"} <= set(t.columns)
    chosen = t[t["chosen"]].iloc[0]
    assert chosen["orth_score"] == ok["orth_score"].max()
    assert res.best.uns["k"] == chosen["k"]
    by_stability = cclone.sweep(ad, ks=(2, 3), min_mafs=(5,), filter_germline=(True,), n_bootstrap=6, n_cycles=30,
                                criterion="stability")
    assert by_stability.table[by_stability.table["chosen"]].iloc[0]["stability"] == by_stability.table["stability"].max()


def test_annotate(sim, fitted):
    ad = fitted.copy()
    # clone 1 plays the healthy cell type, clone 2 the cancer one
    ad.obs["celltype"] = np.where(sim.labels == 1, "T cells", "Immature")
    out = cclone.annotate(ad, "celltype", healthy=["T cells"], cancer=["Immature"])
    ann = out.uns["cclone_annotation"]
    assert sorted(ann["factor_labels"]) == ["cancer", "healthy"] and ann["validation_passed"]
    lab = out.obs["cclone_label"].astype(str).to_numpy()
    truth = np.where(sim.labels == 1, "healthy", "cancer")
    decided = lab != "undetermined"
    assert (lab[decided] == truth[decided]).mean() > 0.95 and decided.mean() > 0.5
    # a factor that holds both kinds fails validation, with a warning
    ad.obs["celltype"] = np.where(np.arange(ad.n_obs) % 2 == 0, "T cells", "Immature")
    with pytest.warns(cclone.AnnotationWarning, match="holds"):
        bad = cclone.annotate(ad, "celltype", healthy=["T cells"], cancer=["Immature"])
    assert not bad.uns["cclone_annotation"]["validation_passed"]


def test_bad_input(sim):
    ad = sim.to_anndata()
    no_alt = ad.copy()
    del no_alt.layers["ALT"]
    cases = [
        (no_alt, {}, "ALT"),
        (ad, {"k": 16}, "k=16"),
        (ad, {"k": 0}, "n_components must be"),
        (ad, {"n_bootstrap": 0}, "n_bootstrap"),
        (ad, {"bootstrap_fraction": 0.0}, "bootstrap_fraction"),
        (ad, {"method": "lbfgs"}, "unknown method"),
        (ad, {"mode": "bulk"}, "mode"),
        (ad, {"bootstrap_seed": -1}, "bootstrap_seed"),
    ]
    for data, kw, message in cases:
        args = {"k": 2, **kw}
        with pytest.raises(ValueError, match=message):
            cclone.fit(data, **args)
    neg = ad.copy()
    neg.layers["REF"] = -neg.layers["REF"].toarray()
    with pytest.raises(ValueError, match="negative"):
        cclone.fit(neg, 2)
    with pytest.raises(ValueError, match="every sweep point was skipped"):
        cclone.sweep(ad, ks=(2,), min_mafs=(90,), filter_germline=(True,), n_bootstrap=2, n_cycles=5)
    with pytest.raises(ValueError, match="obsm"):
        cclone.annotate(ad, "celltype", healthy=["a"], cancer=["b"])
    small = cclone.fit(ad, 2, n_bootstrap=2, n_cycles=5)
    with pytest.raises(ValueError, match="celltype_x"):
        cclone.annotate(small, "celltype_x", healthy=["a"], cancer=["b"])


def test_consensus_average_does_not_depend_on_the_seed(sim, fitted):
    """With the consensus start the bootstraps' subsets are a fixed design (bootstrap_seed=0):
    another seed draws other random starts but reaches the same basin, so the same labels and
    nearly the same average; CCLONE's own procedure draws the subsets from the seed."""
    other = cclone.fit(sim.to_anndata(), 2, n_bootstrap=12, n_cycles=60, seed=5)
    assert other.uns["cclone"]["bootstrap_seed"] == 0
    C0, C1 = np.asarray(fitted.obsm["C"]), np.asarray(other.obsm["C"])
    if np.abs(C0 - C1).max() > np.abs(C0 - C1[:, ::-1]).max():  # factor order is arbitrary
        C1 = C1[:, ::-1]
    # same subsets, same basin: the averages differ only by where each 60-cycle fit stopped
    assert cclone.adjusted_rand_index(C0.argmax(1), C1.argmax(1)) >= 0.99
    np.testing.assert_allclose(C1, C0, atol=0.1)
    random = cclone.fit(sim.to_anndata(), 2, n_bootstrap=2, n_cycles=5, seed=5, init="random")
    assert random.uns["cclone"]["bootstrap_seed"] == 5


def test_real_patient_agrees_with_published_fit(cclone_dir):
    """A9 (k=2, CCLONE's published bootstrap-mean C): our labels agree with CCLONE's."""
    ad = anndata.read_h5ad(cclone_dir / "A9.h5ad")
    ours = cclone.fit(ad, 2, n_bootstrap=20, n_cycles=60)
    theirs = np.asarray(ad.obsm["C"])
    # factor order is arbitrary: compare the best matching of columns by correlation
    corr = np.corrcoef(ours.obsm["C"].T, theirs.T)[:2, 2:]
    best = max(corr[0, 0] + corr[1, 1], corr[0, 1] + corr[1, 0]) / 2
    assert best > 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not np.isnan(ours.obsm["C"]).any()


def test_single_read_evidence_option(sim):
    res = cclone.fit(sim.to_anndata(), 2, n_bootstrap=4, n_cycles=30, min_allele_reads=1)
    assert res.uns["cclone"]["min_allele_reads"] == 1
    M1, _ = variant_matrices(sim.to_anndata(), min_allele_reads=1)
    np.testing.assert_array_equal(res.layers["M"], M1)


@pytest.mark.parametrize("n_clones", [3, 4])
def test_ari_at_moderate_coverage(n_clones):
    """The issue's bar at moderate coverage (10 reads), with a realistic panel of 100 variants."""
    s = simulate_clones(n_cells=500, n_variants=100, n_clones=n_clones, healthy_fraction=0.0, n_germline=0,
                        mean_coverage=10.0, seed=0)
    res = cclone.fit(s.to_anndata(), n_clones, n_bootstrap=10, n_cycles=60)
    assert cclone.adjusted_rand_index(res.obsm["C"].argmax(axis=1), s.labels) >= 0.9


def test_empty_coverage_is_an_error_not_an_answer():
    """All-zero coverage has no evidence: a one-line error instead of C in [0, 1] with loss 0."""
    import anndata
    import scipy.sparse as sp

    z = sp.csr_matrix((20, 6), dtype=np.int64)
    ad = anndata.AnnData(X=z.astype(np.float32), layers={"REF": z, "ALT": z})
    with pytest.raises(ValueError, match="the coverage is empty") as info:
        cclone.fit(ad, 2, n_bootstrap=2)
    assert "\n" not in str(info.value)
