"""CCLONE as a fitted-model family (:class:`jaxfactor.Fitted`): ``CCLONEModel.fit(adata,
n_components)`` runs :func:`jaxfactor.cclone.fit` (bootstrapped box-constrained weighted NMF of
the variant call matrix M ≈ C Vᵀ, Marot-Lassauzaie et al., Bioinformatics 2024), optionally after
CCLONE's variant/cell filter. The kernel assigns new cells against the fitted V
(:func:`jaxfactor.cclone._assign.cclone_assign`: each cell's exact box-constrained weighted
least-squares loadings in [0, 1]^k).

Keys: ``obsm['X_cclone']`` (C), ``obs['cclone_label']`` (argmax C, categorical),
``varm['cclone_V']``; ``compat=True`` in ``to_anndata`` also writes CCLONE's published ``obsm['C']``
and ``varm['V']``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._protocol import Score
from ..mixture._models import AlleleFitted, filter_settings


@dataclass
class CCLONEResult:
    """C (cells × k) and V (variants × k), their bootstrap standard deviations, the orthogonality
    score of C, the weighted loss and the bootstraps' stability (see :func:`jaxfactor.cclone.fit`)."""

    C: np.ndarray
    C_std: np.ndarray
    V: np.ndarray
    V_std: np.ndarray
    orth_score: float
    loss: float
    stability: float


class CCLONEModel(AlleleFitted):
    family = "cclone"

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=10, max_iter=100, tol=1e-6, seed=0, mesh=None,
            progress=False, n_bootstrap=50, bootstrap_fraction=0.9, mode="smartseq", method="bcd", l2=0.0,
            min_allele_reads=2, init="consensus", bootstrap_seed=None, filter=False, min_maf=5.0,
            filter_germline=True, min_cell_coverage=10.0, **aliases):
        from ..mixture._models import allele_fit_inputs
        from .._protocol import vocabulary as _vocab
        from ._api import fit as cclone_fit

        n_components, n_init, max_iter = _vocab("cclone", n_components, n_init, aliases, max_iter)
        cls._one_device(mesh)
        inp, ad, cells, genes = allele_fit_inputs(data, layer, filter, min_maf, filter_germline, min_cell_coverage)
        out = cclone_fit(ad, n_components, n_bootstrap=n_bootstrap, bootstrap_fraction=bootstrap_fraction,
                         max_iter=max_iter, mode=mode, seed=seed, method=method, tol=tol, l2=l2,
                         min_allele_reads=min_allele_reads, init=init, n_init=n_init, bootstrap_seed=bootstrap_seed)
        u = out.uns["cclone"]
        res = CCLONEResult(np.asarray(out.obsm["C"]), np.asarray(out.obsm["C_std"]), np.asarray(out.varm["V"]),
                           np.asarray(out.varm["V_std"]), float(out.uns["orth_score"]), float(u["loss"]),
                           float(u["stability"]))
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), n_bootstrap=int(n_bootstrap), bootstrap_fraction=float(bootstrap_fraction),
                        mode=mode, method=method, l2=float(l2), min_allele_reads=int(min_allele_reads), init=init,
                        bootstrap_seed=int(u["bootstrap_seed"]), named_variables=inp.named,
                        **filter_settings(filter, min_maf, filter_germline, min_cell_coverage))
        return cls(res, inp.obs_names, inp.var_names, settings, cells, genes)

    def params(self):
        return {"V": np.asarray(self.result.V, np.float64), "l2": np.asarray(float(self.settings["l2"]))}

    def static(self):
        return {"mode": self.settings["mode"], "min_allele_reads": int(self.settings["min_allele_reads"])}

    @staticmethod
    def kernel(p, ref, alt, *, mode, min_allele_reads):
        from ._assign import cclone_assign

        out = cclone_assign(p["V"].astype(ref.dtype), p["l2"].astype(ref.dtype), ref, alt, mode=mode,
                            min_allele_reads=min_allele_reads)
        return {"embedding": out["C"], "loss": out["loss"], "weight": out["weight"]}

    def scores(self):
        r = self.result
        return {"orth_score": Score("orth_score", r.orth_score, True), "loss": Score("loss", r.loss, False),
                "stability": Score("stability", r.stability, True)}

    def _cell_outputs(self):
        C = np.asarray(self.result.C, np.float32)
        return {"embedding": C, "C_std": np.asarray(self.result.C_std, np.float32), "label": C.argmax(axis=1)}

    def _var_outputs(self):
        return {"V": np.asarray(self.result.V, np.float32), "V_std": np.asarray(self.result.V_std, np.float32)}

    def _compat_outputs(self, rows, cols):
        from .._protocol import _scatter

        return [("obsm", "C", _scatter(np.asarray(self.result.C, np.float32), rows)),
                ("varm", "V", _scatter(np.asarray(self.result.V, np.float32), cols))]
