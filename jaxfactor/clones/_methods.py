"""The three clone models behind :func:`jaxfactor.clones.call`, each fitted for every candidate
number of clones and scored, in one common shape (:class:`MethodFit`).

- ``"allele"``: the allele-count model (NumPyro's :func:`jaxfactor.models.allele_model`: binomial
  reads, allelic dropout, read errors) by exact MAP-EM (:func:`jaxfactor.mixture.allele_em`).
  Every K and start runs in one compiled programme (clones padded to the largest K,
  ``hp.active`` says which are in use); restarts by successive halving ("short runs of EM",
  Biernacki, Celeux & Govaert 2003), then more batches of starts for the K that decide the answer
  until their best optimum recurs. K by an approximate log evidence (conjugate Occam factors,
  :func:`jaxfactor.mixture.allele_em_evidence`), or BIC / AIC. One allelic-dropout rate by default
  (``site_dropout=True``: one per variant). Credible intervals of the clone AFs: Beta posteriors
  of the E-step's expected allele units, ``Beta(a_f + S¹_kj, b_f + S⁰_kj)``.
- ``"binomial"``: the binomial mixture by mean-field VB (vireoSNP's ``BinomMixtureVB``,
  :func:`jaxfactor.mixture.fit_binomial_mixture`), ``n_init`` restarts per K, K by the ELBO as in
  vireoSNP (or BIC); intervals from the Beta posteriors of q(θ).
- ``"cclone"``: CCLONE (:mod:`jaxfactor.cclone`): its variant/cell filter, bootstrapped box-
  constrained weighted NMF per K, K by the orthogonality score (CCLONE's rule). Cells the filter
  dropped get their loadings by the exact per-cell solve against the fitted V (what
  ``jaxfactor predict`` does for a CCLONE run). The membership is C itself; intervals are
  V ± 1.645 · V's bootstrap standard deviation, clipped to [0, 1].
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._progress import subtask

CI_LEVEL = 0.9
_Z90 = 1.6448536269514722


@dataclass
class MethodFit:
    membership: np.ndarray  # (cells, K): posterior probabilities, or CCLONE's C
    af: np.ndarray  # (variants, K)
    af_lower: np.ndarray
    af_upper: np.ndarray
    table: object  # pandas DataFrame, one row per candidate K, column 'chosen'
    criterion: str
    details: dict = field(default_factory=dict)
    variants: np.ndarray | None = None  # indices of the variants used (None: all given)
    cells_fitted: np.ndarray | None = None  # bool per cell: fitted (False: assigned afterwards)

    @property
    def n_clones(self) -> int:
        return int(self.membership.shape[1])


def _beta_interval(point, alpha, beta):
    """90 % credible interval of Beta(alpha, beta) posteriors: equal-tailed, or, where that misses the
    point estimate (a posterior piled against 0 or 1, whose mode lies outside its central 90 %), the
    one-sided interval from that boundary."""
    from scipy import stats

    post = stats.beta(alpha, beta)
    lo, hi = post.ppf((1 - CI_LEVEL) / 2), post.ppf(1 - (1 - CI_LEVEL) / 2)
    low_side, high_side = point < lo, point > hi
    lo = np.where(low_side, 0.0, np.where(high_side, post.ppf(1 - CI_LEVEL), lo))
    hi = np.where(high_side, 1.0, np.where(low_side, post.ppf(CI_LEVEL), hi))
    return lo, hi


def _choose(rows, score, better):
    import pandas as pd

    table = pd.DataFrame(rows)
    values = table[score].to_numpy(np.float64)
    pick = int(np.nanargmin(values) if better == "min" else np.nanargmax(values))
    table["chosen"] = np.arange(len(table)) == pick
    return table, pick


def _deciding(rows, criterion: str, done: set, margin: float = 10.0) -> list:
    """Candidates whose score is within ``margin`` nats of the best (BIC/AIC halved to the log
    scale) and not yet in ``done``: the K whose restarts decide the answer."""
    sign = -0.5 if criterion in ("bic", "aic") else 1.0
    score = np.array([sign * row[criterion] for row in rows])
    return [int(g) for g in np.flatnonzero(score >= score.max() - margin) if g not in done]


def _order_by_size(prob):
    """Clone order: largest first (so labels do not depend on which start won)."""
    return np.argsort(-prob.sum(axis=0), kind="stable")


# ----------------------------------------------------------------------------------------------
# allele model, MAP-EM
# ----------------------------------------------------------------------------------------------

@jax.jit
def _posterior(params, data, hp):
    from ..mixture._allele_em import allele_em_evidence, allele_em_posterior, allele_em_stats

    r, ll = allele_em_posterior(params, data, hp)
    s1, s0 = allele_em_stats(params, data, hp)
    return r, ll, s1, s0, allele_em_evidence(params, data, hp)


def fit_allele(alt, depth, ks, *, n_init: int, seed: int, max_iter: int, tol: float, screen_iter: int = 30,
               screen_cells: int = 2000, n_converge: int = 3, max_init: int = 100, site_dropout: bool = False, criterion: str = "bic",
               log=None) -> MethodFit:
    """MAP-EM of the allele model for every K in ``ks``; see the module docstring.

    Screening (successive halving): a batch of ``n_init`` starts of a K runs ``screen_iter`` EM
    iterations each on at most ``screen_cells`` cells (a random subset of the cells with reads when
    there are more; the parameters carry over to all cells since none of them is per cell), the
    best quarter (at least 2) runs ``2 * screen_iter`` more, and the best ``n_converge`` of those
    run to convergence there by SQUAREM-accelerated EM (``allele_em(..., accelerate=True)``, still
    monotone); the best then converges on all cells. Every K gets one batch; the chosen K, and any
    K within 10 nats of it, get further batches until their best optimum (the same partition of the
    cells, ARI >= 0.99) was reached from 3 starts, or ``max_init`` starts were spent. Measured on
    the real patients: 10-20 % of random starts end in the best basin, and near-equal optima a
    fraction of a nat apart partition the cells differently (A4, K = 3: ARI 0.4-0.5 between
    them), so one batch gave a different answer for every seed; with the recurrence rule 5 seeds
    agree (ARI 1.0 on A4 and A9). Fits run one after another (batching them with ``vmap`` turns the
    entry gathers into batched gathers, slower per fit)."""
    from .. import fit
    from ..cclone._metrics import recurrences
    from ..mixture._allele_em import allele_counts, allele_em, allele_em_hparams, allele_em_posterior

    t0 = time.perf_counter()
    alt, depth = sp.csr_matrix(alt), sp.csr_matrix(depth)  # only covered entries are used
    with_reads = np.flatnonzero(np.diff(depth.indptr) > 0)
    n_cells = int(with_reads.size)
    data = allele_counts(alt, depth, buckets=True)  # bucketed sizes: similar data share compiled programmes
    rng = np.random.default_rng(seed)
    if n_cells > screen_cells:
        sub = np.sort(rng.choice(with_reads, screen_cells, replace=False))
        screen_data = allele_counts(alt[sub], depth[sub], buckets=True)
    else:
        screen_data = data
    J = alt.shape[1]
    kmax = max(ks)
    alg = allele_em(kmax, bool(site_dropout))
    fast = allele_em(kmax, bool(site_dropout), True)  # SQUAREM steps for the runs to convergence
    hps = [allele_em_hparams(kmax, k) for k in ks]
    keys = jax.random.split(jax.random.PRNGKey(seed), n_init)
    init = jax.jit(alg.init)
    # one compiled programme for every screening run: screen_iter iterations from a given state
    short = lambda hp, state: fit(alg, screen_data, hp, keys[0], state0=state, max_iter=screen_iter, tol=0.0,  # noqa: E731
                                  chunk_size=screen_iter)
    n_screen = len(sub) if screen_data is not data else alt.shape[0]  # real cells (the data may be padded)
    _labels = jax.jit(lambda st, hp: jnp.argmax(allele_em_posterior(st, screen_data, hp)[0], axis=1))
    labels = lambda st, hp: np.asarray(_labels(st, hp))[:n_screen]  # noqa: E731
    n_used = np.zeros(len(ks), int)
    pools = [[] for _ in ks]
    objs = [[] for _ in ks]

    def batch(g):
        """One batch of n_init starts for candidate g, by successive halving: screen_iter iterations
        each, the best quarter (>= 2) 2 * screen_iter more, the best n_converge of those to
        convergence (on the subsample when there is one: all cells then need few iterations)."""
        key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), int(n_used[g] // n_init)), n_init)
        runs = [short(hps[g], init(key[s], screen_data, hps[g])) for s in range(n_init)]
        o = [float(r.trace[-1]) for r in runs]
        objs[g].extend(o)
        keep = np.argsort(o)[:max(2, -(-n_init // 4))] if n_init > 1 else [0]
        second = [short(hps[g], short(hps[g], runs[s].state).state) for s in keep]
        order = np.argsort([float(r.trace[-1]) for r in second])[:max(1, int(n_converge))]
        for s in order:
            r = fit(fast, screen_data, hps[g], keys[0], state0=second[s].state, max_iter=max_iter, tol=tol, chunk_size=10)
            pools[g].append((float(r.trace[-1]), r, labels(r.state, hps[g])))
        pools[g].sort(key=lambda e: e[0])
        n_used[g] += n_init

    def hits(g):
        """How many converged starts reached the best optimum's partition of the cells."""
        return recurrences([e[2] for e in pools[g]], 0)

    def refit(g, k):
        t1 = time.perf_counter()
        with subtask(f"K={k} on all cells"):
            res = fit(fast, data, hps[g], keys[0], state0=pools[g][0][1].state, max_iter=max_iter, tol=tol, chunk_size=10)
        r, ll, s1, s0, evidence = _posterior(res.state, data, hps[g])
        ll = float(ll)
        n_par = k * J + (k - 1) + (J if site_dropout else 1) + 1
        row = {"n_clones": int(k), "log_likelihood": ll, "n_parameters": n_par, "bic": -2 * ll + n_par * np.log(max(n_cells, 1)),
               "aic": -2 * ll + 2 * n_par, "evidence": float(evidence), "log_posterior": -float(res.trace[-1]),
               "n_iter": 3 * screen_iter + 3 * int(res.n_iter), "converged": bool(res.converged),
               "n_init": int(n_used[g]), "best_optimum_hits": int(hits(g)),
               "restart_spread": float(np.ptp(objs[g])), "seconds": time.perf_counter() - t1}
        return row, (res.state, r, s1, s0)

    if criterion not in ("evidence", "bic", "aic"):
        raise ValueError(f"criterion {criterion!r} is not available for method 'allele'; use 'evidence', 'bic' or 'aic'")
    for g in range(len(ks)):
        with subtask(f"screening K={ks[g]}"):
            batch(g)
    t_screen = time.perf_counter() - t0
    if log:
        where = f"a random {screen_cells} of the cells" if screen_data is not data else "all cells"
        log(f"  {len(ks)} candidate K x {n_init} starts screened on {where} ({screen_iter} EM iterations each, "
            f"{t_screen:.1f} s)")
    rows, fits = map(list, zip(*[refit(g, k) for g, k in enumerate(ks)]))
    # more starts where the answer depends on them: the chosen K and any K within `margin` nats of
    # it, until its best optimum (same partition of the cells) was reached from 3 starts or max_init
    # starts were spent. Flat likelihoods with near-equal optima (real data) otherwise give a
    # different partition for every seed; clear structure stops after the first batch.
    done = set()
    while todo := _deciding(rows, criterion, done):
        for g in todo:
            before = n_used[g]
            while hits(g) < 3 and n_used[g] < max(max_init, n_init):
                batch(g)
            done.add(g)
            if n_used[g] > before:
                rows[g], fits[g] = refit(g, ks[g])
                if log:
                    log(f"  K={ks[g]}: {n_used[g]} starts until its best optimum was reached 3 times"
                        f"{'' if hits(g) >= 3 else ' (max_init reached: near-equal optima, the partition may depend on the seed)'}")
    for row in rows if log else ():
        log(f"  K={row['n_clones']}: log-likelihood {row['log_likelihood']:.1f}, evidence {row['evidence']:.1f}, "
            f"BIC {row['bic']:.1f}, {row['n_init']} starts, {row['n_iter']} EM iterations"
            f"{'' if row['converged'] else ' (max_iter reached)'}")
    table, pick = _choose(rows, criterion, "max" if criterion == "evidence" else "min")
    state, r, s1, s0 = fits[pick]
    k = ks[pick]
    r = np.asarray(r, np.float64)[:alt.shape[0], :k]
    order = _order_by_size(r)
    hp = hps[pick]
    a1 = np.asarray(s1, np.float64)[:k][order].T + float(hp.af_a)  # (J, K)
    a0 = np.asarray(s0, np.float64)[:k][order].T + float(hp.af_b)
    af = np.clip(np.asarray(state.af, np.float64)[:k][order].T, 0.0, 1.0)
    lo, hi = _beta_interval(af, a1, a0)
    weights = np.asarray(state.weights, np.float64)[:k][order]
    dropout = np.asarray(state.dropout, np.float64)
    details = {"dropout": float(np.median(dropout)), "dropout_per_variant": np.broadcast_to(dropout, (J,)).copy(),
               "error": float(state.error), "weights": weights,
               "screen_seconds": t_screen, "n_init": int(n_init), "n_init_used": int(n_used[pick]),
               "screen_iter": int(screen_iter), "best_optimum_hits": int(rows[pick]["best_optimum_hits"]),
               "n_cells_with_reads": n_cells}
    return MethodFit(r[:, order], af, lo, hi, table, criterion, details)


# ----------------------------------------------------------------------------------------------
# binomial mixture, VB (vireoSNP's model)
# ----------------------------------------------------------------------------------------------

def fit_binomial(alt, depth, ks, *, n_init: int, seed: int, max_iter: int, tol: float, criterion: str = "elbo",
                 max_init: int = 100, log=None) -> MethodFit:
    """vireoSNP's binomial mixture by VB for every K in ``ks`` (``n_init`` restarts vmapped in one
    compiled call), K by the ELBO (or BIC). As for the allele model, the K that decide the answer
    (the chosen one and any within 10 nats of it) get more batches of ``n_init`` restarts until
    the best fit's partition of the cells (ARI >= 0.99) was the best of 2 batches, or ``max_init``
    restarts were spent (patient A4: one batch of 10 gave a different partition for every seed)."""
    import warnings

    from ..cclone._metrics import recurrences
    from ..mixture import fit_binomial_mixture

    if criterion not in ("elbo", "bic"):
        raise ValueError(f"criterion {criterion!r} is not available for method 'binomial'; use 'elbo' or 'bic'")
    n_cells = int(np.count_nonzero(np.asarray((depth > 0).sum(axis=1)).ravel()))
    J = alt.shape[1]

    def run(k, batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collapsed clones are reported in the table
            return fit_binomial_mixture(alt, depth, int(k), method="vb", n_init=n_init, seed=seed + 7919 * batch,
                                        max_iter=max_iter, tol=tol)

    def row(k, res, n_used, hits, seconds):
        n_par = k * J
        return {"n_clones": int(k), "elbo": res.elbo, "log_likelihood": res.log_likelihood, "n_parameters": n_par,
                "bic": -2 * res.log_likelihood + n_par * np.log(max(n_cells, 1)), "n_iter": res.n_iter,
                "converged": res.converged, "collapsed": len(res.collapsed), "n_init": int(n_used),
                "best_optimum_hits": int(hits), "restart_spread": float(np.ptp(res.restart_scores)), "seconds": seconds}

    rows, fits, bests = [], [], []
    for k in ks:
        t1 = time.perf_counter()
        res = run(k, 0)
        fits.append([res])
        bests.append(res)
        rows.append(row(k, res, n_init, 1, time.perf_counter() - t1))
        if log:
            log(f"  K={k}: ELBO {res.elbo:.1f}, log-likelihood {res.log_likelihood:.1f}, {res.n_iter} iterations, "
                f"{rows[-1]['seconds']:.2f} s")
    done = set()
    while todo := _deciding(rows, criterion, done):
        for g in todo:
            done.add(g)
            t1 = time.perf_counter()
            while True:
                i = int(np.argmax([r.elbo for r in fits[g]]))
                best = fits[g][i]
                hits = recurrences([r.clone_prob.argmax(axis=1) for r in fits[g]], i)
                if hits >= 2 or len(fits[g]) * n_init >= max(max_init, n_init):
                    break
                fits[g].append(run(ks[g], len(fits[g])))
            bests[g] = best
            if len(fits[g]) > 1:
                rows[g] = row(ks[g], best, len(fits[g]) * n_init, hits, rows[g]["seconds"] + time.perf_counter() - t1)
                if log:
                    log(f"  K={ks[g]}: {len(fits[g]) * n_init} restarts until its best partition was the best of 2 "
                        f"batches{'' if hits >= 2 else ' (max_init reached)'}; ELBO {best.elbo:.1f}")
    table, pick = _choose(rows, criterion, "max" if criterion == "elbo" else "min")
    res = bests[pick]
    order = _order_by_size(res.clone_prob)
    af = res.clone_af[:, order]
    lo, hi = _beta_interval(af, res.af_alpha[:, order], res.af_beta[:, order])
    return MethodFit(res.clone_prob[:, order], af, lo, hi, table, criterion,
                     {"weights": res.weights[order], "af_alpha": res.af_alpha[:, order], "af_beta": res.af_beta[:, order],
                      "n_init": int(n_init), "n_init_used": int(rows[pick]["n_init"]),
                      "best_optimum_hits": int(rows[pick]["best_optimum_hits"]), "hits_needed": 2})


# ----------------------------------------------------------------------------------------------
# CCLONE
# ----------------------------------------------------------------------------------------------

def fit_cclone(adata, ks, *, seed: int, criterion: str = "orth_score", n_bootstrap: int = 50, min_maf: float = 5,
               filter_germline: bool = True, min_cell_coverage: float = 10, min_allele_reads: int = 2,
               n_init: int = 10, init: str = "consensus", log=None) -> MethodFit:
    """CCLONE on ``adata`` (REF/ALT layers; all cells) for every k in ``ks``; see the module docstring."""
    from .. import cclone
    from ..data import filter_variants
    from ..cclone._assign import cclone_assign

    if criterion not in ("orth_score", "stability"):
        raise ValueError(f"criterion {criterion!r} is not available for method 'cclone'; use 'orth_score' or 'stability'")
    filtered = filter_variants(adata, min_maf=min_maf, filter_germline=filter_germline, min_cell_coverage=min_cell_coverage)
    ks = [k for k in ks if k < filtered.n_vars and k <= filtered.n_obs]
    if not ks:
        raise ValueError(f"CCLONE's filter left {filtered.n_vars} variants and {filtered.n_obs} cells: too few for any "
                         "candidate number of clones; lower min_maf / min_cell_coverage or use method='allele'")
    rows, fits = [], []
    for k in ks:
        t1 = time.perf_counter()
        res = cclone.fit(filtered, k, n_bootstrap=n_bootstrap, seed=seed, min_allele_reads=min_allele_reads,
                         n_init=n_init, init=init)
        u = res.uns["cclone"]
        rows.append({"n_clones": int(k), "orth_score": float(res.uns["orth_score"]), "stability": float(u["stability"]),
                     "loss": float(u["loss"]), "seconds": time.perf_counter() - t1})
        fits.append(res)
        if log:
            log(f"  k={k}: orth_score {rows[-1]['orth_score']:.3f}, stability {rows[-1]['stability']:.3f}, "
                f"{rows[-1]['seconds']:.2f} s")
    table, pick = _choose(rows, criterion, "max")
    res = fits[pick]
    V = np.asarray(res.varm["V"], np.float64)
    V_std = np.nan_to_num(np.asarray(res.varm["V_std"], np.float64), nan=0.0)
    fitted = np.isin(adata.obs_names, res.obs_names)
    C = np.zeros((adata.n_obs, V.shape[1]))
    C[fitted] = np.asarray(res.obsm["C"], np.float64)
    if (~fitted).any():  # cells CCLONE's filter dropped: exact per-cell solve against V
        from ..data import check_allele_counts

        sub = adata[~fitted][:, res.var_names]
        ref, alt = check_allele_counts(sub)
        dense = lambda x: jnp.asarray(x.toarray() if sp.issparse(x) else np.asarray(x), jnp.float32)
        out = cclone_assign(jnp.asarray(V, jnp.float32), 0.0, dense(ref), dense(alt), mode="smartseq",
                            min_allele_reads=min_allele_reads)
        C[~fitted] = np.asarray(out["C"], np.float64)
    order = np.argsort(-np.bincount(C.argmax(axis=1), minlength=C.shape[1]), kind="stable")
    variants = np.flatnonzero(np.isin(adata.var_names, res.var_names))
    lo, hi = np.clip(V - _Z90 * V_std, 0, 1), np.clip(V + _Z90 * V_std, 0, 1)
    return MethodFit(C[:, order], V[:, order], lo[:, order], hi[:, order], table, criterion,
                     {"n_bootstrap": int(n_bootstrap), "min_maf": float(min_maf), "filter_germline": bool(filter_germline),
                      "min_cell_coverage": float(min_cell_coverage), "min_allele_reads": int(min_allele_reads),
                      "init": init, "n_init": int(n_init), "n_cells_fitted": int(fitted.sum())},
                     variants=variants, cells_fitted=fitted)
