"""Benchmark: the NumPyro allele model on the two real AML patients CCLONE published (A4, A9).

For each patient (``../shared/data/cclone/{A4,A9}.h5ad``: CCLONE's kept cells and variants, REF/ALT
layers, CCLONE's bootstrap-mean factors ``obsm['C']`` and expression cell types ``obs['celltype']``):

1. ``fit_allele_svi`` with CCLONE's number of factors (A4: 3, A9: 2), MAP guide, 2000 steps,
   5 restarts (``--restarts``), every cell per step;
2. agreement with CCLONE: adjusted Rand index between our most probable clone and CCLONE's
   argmax factor, and the share of cells on which the two agree after matching labels
   (Hungarian on the contingency table);
3. agreement with the cell types: the *healthy* clone is the one with the lowest mean allele
   frequency over the variants (no somatic mutation); printed: the share of T, B and NK cells
   assigned to it (should be high) and the share of Immature and Early myeloid cells assigned to
   a leukaemic clone (should be high: "mostly leukaemic");
   and, threshold-free, the AUROC of every clone probability (ours) and every factor loading
   (CCLONE's ``C``) for telling Immature/Early myeloid cells from T/B/NK cells;
4. a signal check: how many variants differ in pooled AF between the two cell-type groups at all;
5. the number of clones chosen by held-out log predictive density
   (``select_n_clones(ks=(1, 2, 3, 4, 5), holdout=0.2)``; rule in its docstring).

Run:  python experiments/benchmarks/allele_real.py [--threads 2] [--data ../shared/data/cclone]
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                                   "shared", "data", "cclone"))
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--restarts", type=int, default=5)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--skip-selection", action="store_true")
args = parser.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import pin_threads  # noqa: E402

settings = pin_threads(args.threads)
os.environ.setdefault("CI", "1")

import time  # noqa: E402

import anndata  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from jaxfactor.cclone import adjusted_rand_index  # noqa: E402
from jaxfactor.data import check_allele_counts  # noqa: E402
from jaxfactor.models import fit_allele_svi, select_n_clones  # noqa: E402

HEALTHY = ("T", "B", "NK")
LEUKAEMIC = ("Immature", "Early myeloid")
print(f"threads: {settings}; load average {os.getloadavg()[0]:.2f}")


def matched_agreement(a, b):
    ka, kb = a.max() + 1, b.max() + 1
    table = np.zeros((ka, kb))
    np.add.at(table, (a, b), 1)
    r, c = linear_sum_assignment(-table)
    return table[r, c].sum() / a.size


def auroc(score, pos, neg):
    """Area under the ROC curve of ``score`` for telling ``pos`` cells from ``neg`` cells."""
    return mannwhitneyu(score[pos], score[neg]).statistic / (pos.sum() * neg.sum())


def is_type(types, names):
    low = np.char.lower(types.astype(str))
    return np.array([any(t == n.lower() or t.startswith(n.lower() + " ") for n in names) for t in low])


for patient, k in (("A4", 3), ("A9", 2)):
    path = os.path.join(args.data, f"{patient}.h5ad")
    if not os.path.exists(path):
        print(f"{patient}: {path} not found, skipped")
        continue
    ad = anndata.read_h5ad(path)
    ref, alt = check_allele_counts(ad)
    ref, alt = ref.toarray(), alt.toarray()
    depth = ref + alt
    t0 = time.perf_counter()
    fit = fit_allele_svi(alt, depth, k, max_iter=args.steps, n_init=args.restarts, seed=0)
    secs = time.perf_counter() - t0
    cclone = np.asarray(ad.obsm["C"]).argmax(1)
    ours = fit.labels
    types = ad.obs["celltype"].astype(str).to_numpy()
    healthy_clone = int(np.argmin(fit.af.mean(1)))
    print(f"\n{patient}: {ad.n_obs} cells × {ad.n_vars} variants, K = {k}, mean depth {depth.mean():.2f}, "
          f"{100 * (depth > 0).mean():.1f}% covered; fit {secs:.1f} s; δ̂ {fit.dropout:.3f}, ε̂ {fit.error:.4f}")
    print(f"  vs CCLONE argmax factor: ARI {adjusted_rand_index(ours, cclone):.3f}, "
          f"agreement after label matching {100 * matched_agreement(ours, cclone):.1f}%")
    print(f"  clone mean AF: " + ", ".join(f"{i}: {m:.3f}" for i, m in enumerate(fit.af.mean(1)))
          + f"  -> healthy clone {healthy_clone}")
    h, lk = is_type(types, HEALTHY), is_type(types, LEUKAEMIC)
    print(f"  T/B/NK cells ({h.sum()}) in the healthy clone: {100 * (ours[h] == healthy_clone).mean():.1f}%; "
          f"Immature/Early myeloid ({lk.sum()}) in a leukaemic clone: {100 * (ours[lk] != healthy_clone).mean():.1f}%")
    auc_ours = [auroc(fit.clone_prob[:, j], lk, h) for j in range(k)]
    auc_cc = [auroc(np.asarray(ad.obsm["C"])[:, j], lk, h) for j in range(k)]
    print("  AUROC, Immature/Early myeloid vs T/B/NK (0.5 = no separation), per clone probability: "
          + ", ".join(f"{a:.3f}" for a in auc_ours) + "; per CCLONE factor: " + ", ".join(f"{a:.3f}" for a in auc_cc))
    cc_healthy = int(np.argmax([(cclone[h] == j).mean() for j in range(k)]))
    print(f"  (CCLONE's own factors: T/B/NK in its healthy factor {100 * (cclone[h] == cc_healthy).mean():.1f}%, "
          f"Immature/Early myeloid elsewhere {100 * (cclone[lk] != cc_healthy).mean():.1f}%)")
    print("  cell type          n  " + " ".join(f"clone{j:>2}" for j in range(k)))
    for t in sorted(set(types), key=lambda t: -(types == t).sum()):
        sel = types == t
        print(f"  {t[:16]:<16} {sel.sum():4d}  " + " ".join(f"{100 * (ours[sel] == j).mean():6.1f}%" for j in range(k)))
    # is there a genetic signal to find? pooled AF per variant in the two cell-type groups
    dl, dh = depth[lk].sum(0), depth[h].sum(0)
    af_l, af_h = alt[lk].sum(0) / np.maximum(dl, 1), alt[h].sum(0) / np.maximum(dh, 1)
    both = (dl >= 50) & (dh >= 50)
    gap = np.abs(af_l - af_h)[both]
    print(f"  signal check: {both.sum()} variants with >= 50 reads in both groups; pooled-AF gap between "
          f"Immature/Early myeloid and T/B/NK: max {gap.max() if gap.size else float('nan'):.3f}, "
          f"> 0.15 in {(gap > 0.15).sum()} (a clonal somatic variant would show ~0.3-0.5)")
    if not args.skip_selection:
        t0 = time.perf_counter()
        best, table = select_n_clones(alt, depth, ks=(1, 2, 3, 4, 5), holdout=0.2, seed=0, max_iter=args.steps,
                                      n_init=args.restarts)
        print(f"  held-out selection ({time.perf_counter() - t0:.0f} s): best K = {best} (CCLONE used {k}); "
              + ", ".join(f"K={r.k}: {r.heldout_loglik:.1f}" for r in table.itertuples()))
