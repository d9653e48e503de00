"""Benchmark: ``jaxfactor.clones.call`` on the two AML patients CCLONE published (A4, A9), every method.

These files hold CCLONE's kept cells and variants (REF/ALT layers), CCLONE's own bootstrap-mean
factors ``obsm['C']`` and an expression annotation ``obs['celltype']`` — **no independent labels**
(the patients' copy-number clones are kept outside this repository), so what can be measured
here is agreement, not accuracy:

1. with CCLONE's published fit: ARI between our clones and the argmax of CCLONE's C, and agreement
   of the cancer/healthy calls with CCLONE's own C called by the same annotation rule;
2. with the cell types: the AUROC of ``cancer_prob`` for Immature/Early myeloid against T/B/NK
   cells, and how many clones fail validation (mixed);
3. stability: every method on ``--seeds`` seeds; the smallest pairwise ARI of the clones and the
   smallest agreement of the calls;
4. CCLONE's bootstrap average itself, with CCLONE's k (A4: 3, A9: 2): ``cclone.fit`` with
   ``init="random"`` (CCLONE's procedure: each bootstrap from its own random start) against
   ``init="consensus"`` over the same seeds: smallest pairwise ARI of argmax C, largest |ΔC|.

Run:  python experiments/benchmarks/clones_real.py [--seeds 5 --threads 2 --data ../shared/data/cclone]
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                                   "shared", "data", "cclone"))
parser.add_argument("--seeds", type=int, default=5)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--methods", default="allele,binomial,cclone")
args = parser.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import pin_threads  # noqa: E402

settings = pin_threads(args.threads)
os.environ.setdefault("CI", "1")

import itertools  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import anndata  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from jaxfactor import cclone, clones  # noqa: E402
from jaxfactor.cclone import adjusted_rand_index  # noqa: E402

warnings.filterwarnings("ignore")
H, C = ["T cells", "B cells", "NK cells"], ["Immature", "Early myeloid"]
print(f"{settings}; load {os.getloadavg()[0]:.2f}")


def auroc(score, pos, neg):
    return mannwhitneyu(score[pos], score[neg]).statistic / (pos.sum() * neg.sum())


for patient, k_published in (("A4", 3), ("A9", 2)):
    path = os.path.join(args.data, f"{patient}.h5ad")
    if not os.path.exists(path):
        print(f"{patient}: {path} not found, skipped")
        continue
    ad = anndata.read_h5ad(path)
    types = ad.obs["celltype"].astype(str).to_numpy()
    pos, neg = np.isin(types, C), np.isin(types, H)
    published = clones.annotate(np.asarray(ad.obsm["C"]), types, H, C)
    pub_call = published.call
    print(f"\n{patient}: {ad.n_obs} cells × {ad.n_vars} variants; CCLONE's published fit (k={k_published}) called by the "
          f"rule: {', '.join(f'{c} {int(np.sum(pub_call == c))}' for c in ('cancer', 'healthy', 'undetermined'))}; "
          f"AUROC of its cancer share {auroc(published.cancer_prob, pos, neg):.3f}")
    for method in [m for m in args.methods.split(",") if m]:
        outs, secs = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            kw = {"min_maf": 2.0} if method == "cclone" and patient == "A4" else {}
            outs.append(clones.call(ad, celltype_key="celltype", healthy=H, cancer=C, method=method, seed=seed, **kw))
            secs.append(time.perf_counter() - t0)
        out = outs[0]
        u = out.uns["clones"]
        lab = [o.obs["clone"].cat.codes.to_numpy() for o in outs]
        calls = [o.obs["cancer_call"].astype(str).to_numpy() for o in outs]
        pairs = list(itertools.combinations(range(len(outs)), 2))
        ari_seeds = min((adjusted_rand_index(lab[i], lab[j]) for i, j in pairs), default=1.0)
        agree_seeds = min((np.mean(calls[i] == calls[j]) for i, j in pairs), default=1.0)
        cells = out.obs_names
        idx = ad.obs_names.get_indexer(cells)
        ari_pub = adjusted_rand_index(lab[0], np.asarray(ad.obsm["C"]).argmax(1)[idx])
        agree_pub = np.mean(calls[0] == pub_call[idx])
        print(f"  {method:8s}: K={u['n_clones']} (Ks over seeds {[o.uns['clones']['n_clones'] for o in outs]}), "
              f"{len(out.var_names)} variants; calls {', '.join(f'{c} {int(np.sum(calls[0] == c))}' for c in ('cancer', 'healthy', 'undetermined'))}; "
              f"mixed clones {int(u['annotation']['mixed'].sum())}/{u['n_clones']}")
        print(f"            vs CCLONE published: clone ARI {ari_pub:.3f}, call agreement {agree_pub:.3f};  "
              f"AUROC(cancer_prob; Immature/Early myeloid vs T/B/NK) {auroc(out.obs['cancer_prob'].to_numpy()[idx >= 0], pos[idx], neg[idx]):.3f};  "
              f"over {len(outs)} seeds: min ARI {ari_seeds:.3f}, min call agreement {agree_seeds:.3f};  "
              f"{np.median(secs):.1f} s per call (median)")
    print(f"  CCLONE's bootstrap average, k={k_published}, {args.seeds} seeds:")
    for init in ("random", "consensus"):
        Cs = [np.asarray(cclone.fit(ad, k_published, seed=s, init=init).obsm["C"]) for s in range(args.seeds)]
        pairs = list(itertools.combinations(range(len(Cs)), 2))
        aris = [adjusted_rand_index(Cs[i].argmax(1), Cs[j].argmax(1)) for i, j in pairs]
        # |ΔC| after matching the factors of each pair (Hungarian on cosine similarity)
        from scipy.optimize import linear_sum_assignment

        dmax = []
        for i, j in pairs:
            sim = Cs[i].T @ Cs[j] / np.outer(np.linalg.norm(Cs[i], axis=0), np.linalg.norm(Cs[j], axis=0))
            r, c = linear_sum_assignment(-sim)
            dmax.append(np.abs(Cs[i][:, r] - Cs[j][:, c]).max())
        print(f"    init={init:9s}: min pairwise ARI of argmax C {min(aris):.3f} (median {np.median(aris):.3f}), "
              f"max |ΔC| {max(dmax):.3f} (median {np.median(dmax):.3f})")
print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
