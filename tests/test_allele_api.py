"""Allele model entry points: batch assignment of new cells, AnnData wrapper, divergence check,
choice of the number of clones."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from jaxfactor.models import _allele_api as api
from jaxfactor.models import clone_responsibilities, fit_allele_svi, simulate_alleles
from jaxfactor.models._allele_api import (_assign_batch, assign_cells, check_svi_losses, fit_allele_anndata,
                                          select_n_clones)

N, J, K = 150, 25, 3
STEPS = 300


@pytest.fixture(scope="module")
def sim():
    return simulate_alleles(N, J, K, seed=2, mean_coverage=15.0)


@pytest.fixture(scope="module")
def fit(sim):
    return fit_allele_svi(sim.alt, sim.depth, K, num_steps=STEPS, guide="normal")


@pytest.fixture(scope="module")
def adata(sim):
    a = ad.AnnData(np.zeros((N, J), np.float32))
    a.layers["REF"] = sp.csr_matrix(sim.depth - sim.alt)
    a.layers["ALT"] = sp.csr_matrix(sim.alt)
    return a


def test_assign_matches_training_responsibilities(sim, fit):
    prob, marg = assign_cells(sim.alt, sim.depth, fit, batch_size=64)
    ref_p, ref_m = clone_responsibilities(sim.alt.astype(np.float32), sim.depth.astype(np.float32), fit.af, fit.pi,
                                          fit.dropout, fit.error)
    assert prob.shape == (N, K) and marg.shape == (N,)
    np.testing.assert_allclose(prob, np.asarray(ref_p), atol=1e-5)
    np.testing.assert_allclose(marg, np.asarray(ref_m), rtol=1e-5)
    np.testing.assert_allclose(prob, fit.clone_prob, atol=1e-4)
    np.testing.assert_allclose(marg.sum(), fit.log_likelihood, rtol=1e-4)


def test_padding_and_sparse_independent_of_batch_size(sim, fit):
    p1, m1 = assign_cells(sim.alt, sim.depth, fit, batch_size=7)    # 150 = 21 * 7 + 3: padded tail
    p2, m2 = assign_cells(sim.alt, sim.depth, fit, batch_size=500)  # one batch, mostly padding
    p3, m3 = assign_cells(sp.csr_matrix(sim.alt), sp.csr_matrix(sim.depth), fit, batch_size=7)
    # float32: another batch shape may sum a cell's terms in another order (1.6e-6 seen with
    # XLA_FLAGS=--xla_cpu_max_isa=AVX)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(m1, m2, rtol=1e-5)
    np.testing.assert_array_equal(p1, p3)
    np.testing.assert_array_equal(m1, m3)


def test_no_recompilation_for_new_cell_counts(sim, fit):
    assign_cells(sim.alt[:10], sim.depth[:10], fit, batch_size=32)
    size = _assign_batch._cache_size()
    for n in (1, 31, 33, 77, 150):
        p, m = assign_cells(sim.alt[:n], sim.depth[:n], fit, batch_size=32)
        assert p.shape == (n, K) and m.shape == (n,)
    assert _assign_batch._cache_size() == size


def test_assign_bad_inputs(sim, fit):
    with pytest.raises(ValueError, match="24 variants but the fit has 25"):
        assign_cells(sim.alt[:, :-1], sim.depth[:, :-1], fit)
    with pytest.raises(ValueError, match="does not match"):
        assign_cells(sim.alt, sim.depth[:5], fit)
    bad = sim.alt.copy()
    bad[0, 0] = sim.depth[0, 0] + 1
    with pytest.raises(ValueError, match="exceeds depth"):
        assign_cells(bad, sim.depth, fit)
    with pytest.raises(ValueError, match="exceeds depth"):
        assign_cells(sp.csr_matrix(bad), sp.csr_matrix(sim.depth), fit)
    with pytest.raises(ValueError, match="negative"):
        assign_cells(-sim.alt, sim.depth, fit)
    with pytest.raises(ValueError, match="batch_size"):
        assign_cells(sim.alt, sim.depth, fit, batch_size=0)


def test_fit_allele_anndata_outputs(sim, adata):
    before = {k: v.copy() for k, v in adata.layers.items()}
    out = fit_allele_anndata(adata, K, num_steps=STEPS, guide="normal")
    assert out is not adata
    assert not adata.obsm and not adata.varm and not adata.uns and list(adata.obs.columns) == []
    for k, v in before.items():
        assert (adata.layers[k] != v).nnz == 0
    assert out.obsm["clone_prob"].shape == (N, K)
    np.testing.assert_allclose(out.obsm["clone_prob"].sum(1), 1, atol=1e-5)
    assert list(out.obs["clone"].cat.categories) == list(range(K))
    for key in ("clone_af", "clone_af_lower", "clone_af_upper"):
        assert out.varm[key].shape == (J, K)
    lo, hi = out.varm["clone_af_lower"], out.varm["clone_af_upper"]
    assert (lo >= 0).all() and (hi <= 1).all() and (lo < hi).all()
    u = out.uns["allele_model"]
    assert u["losses"].shape == (STEPS,) and np.isfinite(u["losses"]).all()
    assert u["pi"].shape == (K,) and 0 < u["dropout"] < 1 and 0 < u["error"] < 1
    assert u["settings"]["guide"] == "normal" and u["settings"]["ci_method"] == "guide"
    assert u["settings"]["num_steps"] == STEPS
    # the clones are recovered (up to label switching)
    from jaxfactor.cclone import adjusted_rand_index

    assert adjusted_rand_index(sim.labels, out.obs["clone"].to_numpy().astype(int)) > 0.9


@pytest.mark.parametrize("kind", ["guide", "beta_approximation"])
def test_af_interval_and_germline(sim, fit, kind):
    germ = np.arange(J) < 2
    f = fit if kind == "guide" else fit._replace(af_scale=None)
    lo, hi, method = api._af_interval(sim.alt, sim.depth, f, germ, (1.0, 1.0))
    assert method == kind
    assert lo.shape == hi.shape == (J, K)
    np.testing.assert_array_equal(lo[:2], 0.5)
    np.testing.assert_array_equal(hi[:2], 0.5)
    assert (lo[2:] < hi[2:]).all()
    # the interval is centred near the point estimate for well-covered clones
    inside = (fit.af.T[2:] >= lo[2:] - 0.05) & (fit.af.T[2:] <= hi[2:] + 0.05)
    assert inside.mean() > 0.9


def test_delta_guide_interval_is_beta_approximation(monkeypatch, adata, fit):
    map_fit = fit._replace(af_scale=None)  # what a MAP (AutoDelta) fit carries
    monkeypatch.setattr(api, "fit_allele_svi", lambda *a, **k: map_fit)  # reuse the fixture fit: no new compile
    out = fit_allele_anndata(adata, K, guide="delta")
    lo, hi = out.varm["clone_af_lower"], out.varm["clone_af_upper"]
    assert (lo <= hi).all() and (lo < hi).mean() > 0.9
    assert out.uns["allele_model"]["settings"]["ci_method"] == "beta_approximation"


def test_nan_loss_detection(monkeypatch, adata, fit):
    check_svi_losses(np.arange(5.0))
    with pytest.raises(FloatingPointError, match="SVI diverged at step 3; lower lr"):
        check_svi_losses([1.0, 2.0, 3.0, np.nan, np.inf])
    with pytest.raises(FloatingPointError, match="step 0"):
        check_svi_losses([np.inf, 1.0])
    losses = fit.losses.copy()
    losses[42] = np.nan
    monkeypatch.setattr(api, "fit_allele_svi", lambda *a, **k: fit._replace(losses=losses))
    with pytest.raises(FloatingPointError, match="SVI diverged at step 42"):
        fit_allele_anndata(adata, K)


def test_anndata_bad_inputs(adata):
    with pytest.raises(ValueError, match="layer 'ALT'"):
        fit_allele_anndata(ad.AnnData(np.zeros((5, 4)), layers={"REF": np.zeros((5, 4))}), 2)
    with pytest.raises(ValueError, match="expected an AnnData"):
        fit_allele_anndata(np.zeros((5, 4)), 2)


def test_select_n_clones(sim):
    best, table = select_n_clones(sim.alt, sim.depth, ks=(2, 3), holdout=0.2, num_steps=STEPS)
    assert list(table["k"]) == [2, 3]
    assert set(table.columns) >= {"k", "heldout_loglik", "train_loglik", "final_loss"}
    assert np.isfinite(table["heldout_loglik"]).all()
    assert best == 3
    with pytest.raises(ValueError, match="holdout"):
        select_n_clones(sim.alt, sim.depth, holdout=1.0)
    with pytest.raises(ValueError, match="ks"):
        select_n_clones(sim.alt, sim.depth, ks=())


def test_split_clone_recovers_the_two_halves():
    """Bisecting one clone of a K-1 fit: the clone holding two true populations is the one split,
    and the halves' AFs land near the two populations' (pooled counts, 0.1)."""
    rng = np.random.default_rng(0)
    truth = np.array([[0.05] * 10, [0.95] * 5 + [0.05] * 5, [0.05] * 5 + [0.95] * 5])
    labels = np.repeat([0, 1, 2], 60)
    depth = rng.poisson(4, (180, 10))
    alt = rng.binomial(depth, truth[labels])
    merged = np.where(labels == 0, 0, 1)  # a K = 2 fit that merged populations 1 and 2
    prob = np.eye(2)[merged]
    af2 = np.stack([truth[0], truth[1:].mean(0)])
    out = api.split_clone(af2, prob, sp.csr_matrix(alt), sp.csr_matrix(depth))
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out[0], af2[0])  # the homogeneous clone is kept
    halves = out[1:][np.argsort(-out[1:, 0])]
    np.testing.assert_allclose(halves, truth[1:], atol=0.1)


def test_select_n_clones_warm_starts_not_worse(sim):
    """K selection reusing work (binomial-mixture start at each K, the K-1 fit split) reaches an
    ELBO at every K no worse than random starts with the same settings, and the same K and ARI."""
    from jaxfactor.cclone import adjusted_rand_index

    kw = dict(ks=(2, 3), holdout=0.2, max_iter=200, n_init=2, seed=1)
    out = {init: select_n_clones(sim.alt, sim.depth, init=init, return_fits=True, **kw) for init in ("warm", "random")}
    (bw, tw, fw), (br, tr, fr) = out["warm"], out["random"]
    assert (tw["final_loss"].to_numpy() <= tr["final_loss"].to_numpy() * (1 + 1e-4)).all()
    assert bw == br == 3
    ari = {name: adjusted_rand_index(assign_cells(sim.alt, sim.depth, f[3])[0].argmax(1), sim.labels)
           for name, f in (("warm", fw), ("random", fr))}
    assert ari["warm"] >= ari["random"] - 1e-9
    assert (tw["steps"] <= 200).all()
    with pytest.raises(ValueError, match="init"):
        select_n_clones(sim.alt, sim.depth, init="bogus")
