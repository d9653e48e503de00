"""User-facing entry points around the NumPyro allele-count model (:mod:`jaxfactor.models._allele`).

- :func:`assign_cells`: compiled batch inference of clone probabilities for *new* cells given a fit.
- :func:`fit_allele_anndata`: :func:`~jaxfactor.models._allele.fit_allele_svi` on
  ``adata.layers['REF'/'ALT']``, returning a new annotated AnnData.
- :func:`check_svi_losses`: raise ``FloatingPointError`` on a diverged (NaN/inf) ELBO trace.
- :func:`select_n_clones`: choose the number of clones by held-out log predictive density,
  each K warm-started from the binomial mixture at that K and from the K−1 fit with one clone
  split (:func:`split_clone`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy import stats

from .._protocol import renamed_arguments
from .._validate import check_int, check_probability
from ._allele import clone_responsibilities
from ._allele_svi import AlleleFit, fit_allele_svi

__all__ = ["assign_cells", "check_svi_losses", "fit_allele_anndata", "select_n_clones"]

CI_LEVEL = 0.9


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

def _as_count_matrix(x, name):
    """Validate counts; return scipy CSR (int64) for sparse input, else a 2-D int64 ndarray."""
    from ..data._variants import _as_counts

    return _as_counts(x, name)


def _check_alt_depth(alt, depth):
    alt, depth = _as_count_matrix(alt, "alt"), _as_count_matrix(depth, "depth")
    if alt.shape != depth.shape:
        raise ValueError(f"alt shape {alt.shape} does not match depth shape {depth.shape}")
    if sp.issparse(alt) or sp.issparse(depth):
        diff = sp.csr_matrix(alt) - sp.csr_matrix(depth)
        bad = diff.nnz and diff.data.max() > 0
    else:
        bad = (alt > depth).any()
    if bad:
        raise ValueError("alt exceeds depth in some entries")
    return alt, depth


def _dense_rows(x, start, stop):
    block = x[start:stop]
    return block.toarray() if sp.issparse(block) else np.asarray(block)


# ----------------------------------------------------------------------------------------------
# batch inference for new cells
# ----------------------------------------------------------------------------------------------

@partial(jax.jit, static_argnames=("likelihood",))
def _assign_batch(alt, depth, af, pi, dropout, error, concentration, *, likelihood):
    return clone_responsibilities(alt, depth, af, pi, dropout, error, likelihood=likelihood,
                                  concentration=concentration)


def assign_cells(alt, depth, fit: AlleleFit, *, batch_size: int = 4096):
    """Clone probabilities and marginal log-likelihood of (new) cells under a fitted model.

    ``alt``, ``depth``: cells x variants counts (NumPy or scipy sparse; sparse input is densified
    one batch at a time only), with the same variants, in the same order, as the fit. The fitted
    ``af``, ``pi``, ``dropout``, ``error`` (and ``concentration`` for the beta-binomial) are held
    fixed and :func:`~jaxfactor.models._allele.clone_responsibilities` is evaluated by one jitted
    function over batches of exactly ``batch_size`` cells: the last batch is padded with
    zero-depth rows (which contribute nothing) and the padding is dropped, so a different number
    of cells never triggers a recompilation (only a new ``batch_size``, variant count, clone
    count or likelihood does).

    Returns ``(clone_prob, log_likelihood)``: (cells x clones) float32 and (cells,) float32,
    the latter ``log p(ALT_i | DP_i)`` with the clone marginalised.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    alt, depth = _check_alt_depth(alt, depth)
    af = np.asarray(fit.af, np.float32)
    n_cells, n_var = alt.shape
    if n_var != af.shape[1]:
        raise ValueError(f"alt/depth have {n_var} variants but the fit has {af.shape[1]}; pass the fitted variants")
    likelihood = "binomial" if fit.concentration is None else "betabinomial"
    conc = None if fit.concentration is None else jnp.float32(fit.concentration)
    consts = (jnp.asarray(af), jnp.asarray(fit.pi, jnp.float32), jnp.float32(fit.dropout), jnp.float32(fit.error),
              conc)
    B = int(batch_size)
    probs, margs = [], []
    for start in range(0, n_cells, B):
        stop = min(start + B, n_cells)
        a = np.zeros((B, n_var), np.float32)
        d = np.zeros((B, n_var), np.float32)
        a[: stop - start] = _dense_rows(alt, start, stop)
        d[: stop - start] = _dense_rows(depth, start, stop)
        p, m = _assign_batch(a, d, *consts, likelihood=likelihood)
        probs.append(np.asarray(p)[: stop - start])
        margs.append(np.asarray(m)[: stop - start])
    return np.concatenate(probs), np.concatenate(margs)


# ----------------------------------------------------------------------------------------------
# divergence check
# ----------------------------------------------------------------------------------------------

def check_svi_losses(losses):
    """Raise ``FloatingPointError`` if the SVI loss trace holds NaN or inf; return it otherwise.

    The message names the first bad step as its 0-based index into ``losses``
    (``fit.losses``): ``"SVI diverged at step N; lower lr ..."``.
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        i = int(bad[0])
        raise FloatingPointError(f"SVI diverged at step {i}; lower lr (loss {losses[i]} of {losses.size} steps)")
    return losses


# ----------------------------------------------------------------------------------------------
# AnnData entry point
# ----------------------------------------------------------------------------------------------

def _af_interval(alt, depth, fit: AlleleFit, germline_mask, af_prior, level=CI_LEVEL):
    """Equal-tailed ``level`` credible interval for the clone AFs (variants x K each) and its method.

    - AutoNormal fit (``fit.af_scale`` set): the variational posterior itself,
      ``logit f_kj ~ Normal(loc_kj, scale_kj)``, so the bounds are
      ``sigmoid(loc ± z_{(1+level)/2} scale)`` (``"guide"``).
    - MAP fit: a conjugate Beta approximation: with the clone responsibilities ``r_ik`` held
      fixed and ignoring allelic dropout and error,
      ``f_kj ~ Beta(a + sum_i r_ik ALT_ij, b + sum_i r_ik (DP_ij - ALT_ij))`` where ``(a, b)`` is the
      model's ``af_prior`` (``"beta_approximation"``).

    Germline columns are fixed at 0.5 (a zero-width interval).
    """
    if fit.af_scale is not None:
        af = np.clip(np.asarray(fit.params["af_raw"], np.float64), 1e-12, 1 - 1e-12)
        loc = np.log(af) - np.log1p(-af)
        z = stats.norm.ppf(1 - (1 - level) / 2)
        lo, hi = (1 / (1 + np.exp(-(loc + s * z * np.asarray(fit.af_scale)))) for s in (-1, 1))
        method = "guide"
    else:
        r = np.asarray(fit.clone_prob, np.float64)
        a0, b0 = af_prior
        post = stats.beta(a0 + r.T @ np.asarray(alt, np.float64), b0 + r.T @ np.asarray(depth - alt, np.float64))
        lo, hi = post.ppf((1 - level) / 2), post.ppf(1 - (1 - level) / 2)
        method = "beta_approximation"
    if germline_mask is not None:
        g = np.asarray(germline_mask, bool)
        lo[:, g], hi[:, g] = 0.5, 0.5
    return lo.T.astype(np.float32), hi.T.astype(np.float32), method


@renamed_arguments(n_clones="n_components")
def fit_allele_anndata(adata, n_components: int, *, filter: bool = False, min_maf: float = 5,
                       filter_germline: bool = True, min_cell_coverage: float = 10, **fit_kwargs):
    """:func:`~jaxfactor.models._allele.fit_allele_svi` on ``adata.layers['REF']`` / ``['ALT']``.

    ``adata`` is cells x variants; the model's depth is ``REF + ALT`` (sparse layers are
    densified for the fit). With ``filter=True`` CCLONE's filter
    (:func:`jaxfactor.data.filter_variants` with ``min_maf``, ``filter_germline``,
    ``min_cell_coverage``) runs first. ``fit_kwargs`` go to ``fit_allele_svi`` (``max_iter``,
    ``lr``, ``guide``, ``seed``, ``likelihood``, ``germline_mask``, priors...).

    A NaN/inf in the ELBO trace raises ``FloatingPointError`` (:func:`check_svi_losses`); a
    diverged fit is never returned.

    Returns a new AnnData (``adata`` is not modified; filtered if asked) with

    - ``obsm['clone_prob']`` (cells x K), ``obs['clone']`` (most probable clone, categorical);
    - ``varm['clone_af']`` (variants x K) point estimates (germline columns 0.5);
    - ``varm['clone_af_lower']`` / ``varm['clone_af_upper']``: a 90 % credible interval:
      ``guide="normal"``: the quantiles of the fitted AutoNormal posterior of ``logit f``;
      ``guide="delta"`` (MAP): a conjugate Beta approximation of each clone AF given the fitted
      responsibilities (``Beta(a + sum_i r_ik ALT_ij, b + sum_i r_ik REF_ij)``, dropout/error
      ignored); the method is in ``uns['allele_model']['settings']['ci_method']``;
    - ``uns['allele_model']``: ``losses`` (negative ELBO per step), ``dropout``, ``error``,
      ``pi``, ``concentration`` (beta-binomial only), ``log_likelihood``, ``settings``.
    """
    import pandas as pd

    from ..data._variants import check_allele_counts, filter_variants

    ref, alt = check_allele_counts(adata)
    if filter:
        out = filter_variants(adata, min_maf, filter_germline, min_cell_coverage)
        ref, alt = check_allele_counts(out)
    else:
        out = adata.copy()
    ref = ref.toarray() if sp.issparse(ref) else np.asarray(ref)
    alt = alt.toarray() if sp.issparse(alt) else np.asarray(alt)
    depth = ref + alt
    n_clones = n_components
    fit = fit_allele_svi(alt, depth, n_clones, **fit_kwargs)
    check_svi_losses(fit.losses)

    guide = fit_kwargs.get("guide", "delta")
    af = np.asarray(fit.af, np.float32).T  # variants x K
    lo, hi, ci_method = _af_interval(alt, depth, fit, fit_kwargs.get("germline_mask"),
                                     fit_kwargs.get("af_prior", (1.0, 1.0)))
    k = fit.clone_prob.shape[1]
    out.obsm["clone_prob"] = np.asarray(fit.clone_prob, np.float32)
    out.obs["clone"] = pd.Categorical(np.asarray(fit.labels), categories=np.arange(k))
    out.varm["clone_af"] = af
    out.varm["clone_af_lower"] = lo
    out.varm["clone_af_upper"] = hi
    settings = {"n_clones": int(n_clones), "guide": guide, "filtered": bool(filter), "ci_level": CI_LEVEL,
                "ci_method": ci_method}
    for name, value in fit_kwargs.items():
        if value is None:  # h5ad cannot store None; an absent setting means the default
            continue
        if name == "germline_mask":
            value = np.asarray(value, bool)
        settings[name] = value
    uns = {"losses": np.asarray(fit.losses), "dropout": fit.dropout, "error": fit.error,
           "pi": np.asarray(fit.pi), "log_likelihood": fit.log_likelihood, "settings": settings}
    if fit.concentration is not None:
        uns["concentration"] = fit.concentration
    out.uns["allele_model"] = uns
    return out


# ----------------------------------------------------------------------------------------------
# model selection
# ----------------------------------------------------------------------------------------------

def _csr(x):
    return sp.csr_matrix(x, dtype=np.float64)


def split_clone(af, clone_prob, alt, depth, *, shrink: float = 5.0, n_iter: int = 30, seed: int = 0):
    """Clone AFs for K + 1 clones from a K-clone fit, by splitting one clone in two.

    Bisecting k-means in spirit (Steinbach, Karypis & Kumar, KDD workshop on text mining, 2000):
    the clone to split is the one with the largest within-clone sum of squares of the shrunk
    residuals ``R_ij = (ALT_ij - DP_ij f_kj) / (DP_ij + w)`` over its cells (``w = shrink``;
    uncovered entries give 0, so ``R`` is as sparse as the counts); its cells are divided by the
    sign of their projection on ``R``'s leading right singular vector (power iteration), and each
    half gets its pooled AF shrunk towards the clone's, ``(Σ ALT + w f_k) / (Σ DP + w)``.

    ``af``: (K, variants); ``clone_prob``: (cells, K); ``alt``, ``depth``: dense or scipy sparse.
    Returns (K + 1, variants): the split clone's two halves replace it (at its index and at the end).
    """
    af = np.asarray(af, np.float64)
    z = np.asarray(clone_prob).argmax(axis=1)
    A, D = _csr(alt), _csr(depth)
    best = None
    for c in range(af.shape[0]):
        idx = np.flatnonzero(z == c)
        if idx.size < 2:
            continue
        Ac, Dc = A[idx], D[idx]
        inv = Dc.copy()
        inv.data = 1.0 / (inv.data + shrink)
        R = sp.csr_matrix((Ac - Dc.multiply(af[c][None, :])).multiply(inv))
        ss = float(R.multiply(R).sum())
        if best is None or ss > best[0]:
            best = (ss, c, idx, R)
    out = np.concatenate([af, af[-1:]])
    if best is None:  # no clone has two cells: duplicate, nudged
        out[-1] = np.clip(out[-1] + 0.05, 0.01, 0.99)
        return out
    _, c, idx, R = best
    v = np.random.default_rng(seed).standard_normal(R.shape[1])
    for _ in range(n_iter):
        v = R.T @ (R @ v)
        norm = np.linalg.norm(v)
        if norm == 0:
            break
        v /= norm
    score = R @ v
    side = score > 0
    if side.all() or not side.any():
        side = score > np.median(score)
    if side.all() or not side.any():
        side = np.arange(idx.size) < idx.size // 2
    for pos, cells in ((c, idx[side]), (-1, idx[~side])):
        a_sum = np.asarray(A[cells].sum(axis=0)).ravel()
        d_sum = np.asarray(D[cells].sum(axis=0)).ravel()
        out[pos] = (a_sum + shrink * af[c]) / (d_sum + shrink)
    return out


def _binomial_start(alt, depth, k, seed, n_init):
    """Clone AFs (k, variants) of vireoSNP's binomial mixture (VB) at ``k`` clones."""
    import warnings

    from ..mixture._binomial import fit_binomial_mixture

    if sp.issparse(alt) or sp.issparse(depth):  # copies: fit_binomial_mixture compacts shared CSR arrays in place
        alt, depth = sp.csr_matrix(alt, copy=True), sp.csr_matrix(depth, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapsed clones: a start like any other
        res = fit_binomial_mixture(alt, depth, int(k), method="vb", n_init=int(n_init), seed=seed, max_iter=200,
                                   tol=1e-5)
    return np.asarray(res.clone_af, np.float64).T


def warm_starts(alt, depth, k, previous=None, *, init="warm", seed=0, n_init=3):
    """Starting clone AFs (starts, k, variants) for a K = ``k`` fit, reusing earlier work:
    ``init="warm"``: the binomial mixture's clone AFs at ``k`` and, when ``previous`` (an
    :class:`AlleleFit` with fewer clones, fitted on the same cells) is given, that fit with clones
    split (:func:`split_clone`) until it has ``k``; ``"binomial"`` / ``"split"``: one of the two;
    ``"random"``: none (``None``)."""
    if init not in ("warm", "binomial", "split", "random"):
        raise ValueError(f"init must be 'warm', 'binomial', 'split' or 'random', got {init!r}")
    out = []
    if init in ("warm", "binomial"):
        out.append(_binomial_start(alt, depth, k, seed, n_init))
    if init in ("warm", "split") and previous is not None and previous.af.shape[0] < k:
        af, prob = np.asarray(previous.af, np.float64), np.asarray(previous.clone_prob, np.float64)
        while af.shape[0] < k:
            af = split_clone(af, prob, alt, depth, seed=seed)
            prob = np.concatenate([prob, np.zeros((prob.shape[0], 1))], axis=1)  # halves share the cells: re-split the largest next
        out.append(af)
    return np.asarray(out) if out else None


def select_n_clones(alt, depth, ks=(2, 3, 4, 5), *, holdout: float = 0.1, seed: int = 0, init: str = "warm",
                    return_fits: bool = False, **fit_kwargs):
    """Choose the number of clones by held-out log predictive density.

    Rule: a random ``holdout`` fraction of the cells (at least one; drawn once with ``seed``, the
    same split for every ``k``) is held out; for each ``k`` in ``ks`` the model is fitted on the
    remaining cells (``fit_allele_svi(..., seed=seed, **fit_kwargs)``) and the held-out cells are
    scored by :func:`assign_cells`: the sum over held-out cells of the plug-in marginal
    log-likelihood ``log sum_k pi_k p(ALT_i | DP_i, z_i = k)`` at the fitted parameters. The
    selected ``k`` is the one with the highest score (the smallest such ``k`` on ties). A
    diverged fit raises ``FloatingPointError``.

    Reusing work (``init``): the ``ks`` are fitted in increasing order and each fit's first starts
    are :func:`warm_starts`: the binomial mixture's clone AFs at that K (a fast EM/VB fit) and the
    previous K's fit with its most heterogeneous clone split in two; the rest of ``n_init`` are
    random starts, all ``vmap``-ped in one SVI batch (the best continues). ``init="random"``:
    every K from random starts only (the former behaviour). Sparse input stays sparse (the SVI
    evaluates covered entries only). Unless given in ``fit_kwargs``, the fits stop on a relative
    change of the chunk-mean -ELBO below ``tol=1e-4`` between chunks of ``chunk_size=50`` steps,
    and starts compete for ``restart_steps=100`` steps (warm starts need no long restart phase;
    4000 cells x 25 variants, K = 2..6, 3 starts: 4.7 s, against 7.2 s for random starts with
    the same settings and 48 s from random starts with the former dense path, under load 7 on 2
    cores, ``experiments/benchmarks/allele_scale.py``).

    Returns ``(best_k, table)`` where ``table`` is a ``pandas.DataFrame`` with one row per ``k``
    (in the order of ``ks``): ``k``, ``heldout_loglik``, ``train_loglik``, ``final_loss``, ``steps``,
    ``seconds``; with ``return_fits=True`` also a dict ``{k: AlleleFit}`` (fitted on the training
    cells) as a third element.
    """
    import pandas as pd

    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty; pass a non-empty sequence of integers >= 1 such as (2, 3, 4)")
    ks = tuple(check_int(k, f"ks[{i}]", 1) for i, k in enumerate(ks))
    check_probability(holdout, "holdout", low_open=True, high_open=True)
    alt, depth = _check_alt_depth(alt, depth)
    if init not in ("warm", "binomial", "split", "random"):
        raise ValueError(f"init must be 'warm', 'binomial', 'split' or 'random', got {init!r}")
    n = alt.shape[0]
    n_hold = max(1, int(round(holdout * n)))
    if n - n_hold < 1:
        raise ValueError(f"holdout={holdout} of {n} cells leaves no cell to fit on")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    import time

    for name, value in (("tol", 1e-4), ("chunk_size", 50), ("restart_steps", 100)):
        fit_kwargs.setdefault(name, value)
    a_tr, d_tr = alt[train], depth[train]
    rows, fits, previous = {}, {}, None
    for k in sorted(set(ks)):
        t0 = time.perf_counter()
        starts = warm_starts(a_tr, d_tr, int(k), previous, init=init, seed=seed,
                             n_init=max(3, int(fit_kwargs.get("n_init", 1))))
        fit = fit_allele_svi(a_tr, d_tr, int(k), seed=seed, init_af=starts, **fit_kwargs)
        check_svi_losses(fit.losses)
        previous = fits[k] = fit
        _, marg = assign_cells(alt[test], depth[test], fit)
        rows[k] = {"k": int(k), "heldout_loglik": float(np.sum(marg, dtype=np.float64)),
                   "train_loglik": fit.log_likelihood, "final_loss": float(fit.losses[-1]),
                   "steps": int(len(fit.losses)), "seconds": time.perf_counter() - t0}
    table = pd.DataFrame([rows[k] for k in ks])
    top = table["heldout_loglik"].max()
    best = int(table.loc[table["heldout_loglik"] == top, "k"].min())
    return (best, table, fits) if return_fits else (best, table)
