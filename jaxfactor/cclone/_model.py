"""CCLONE as a fitted-model family (:class:`jaxfactor.Fitted`): ``CCLONEModel.fit(adata,
n_components)`` runs :func:`jaxfactor.cclone.fit` (bootstrapped box-constrained weighted NMF of
the variant call matrix M ≈ C Vᵀ, Marot-Lassauzaie et al., Bioinformatics 2024), optionally after
CCLONE's variant/cell filter. The kernel assigns new cells against the fitted V
(:func:`jaxfactor.cclone._assign.cclone_assign`: each cell's exact box-constrained weighted
least-squares loadings in [0, 1]^k).

With ``celltype_key`` and ``healthy`` / ``cancer`` cell types, each factor and each cell is then
labelled cancer / healthy / undetermined from the cell-type annotation
(:func:`jaxfactor.cclone.annotate`).

A sweep over the filters (``min_maf``, ``filter_germline``) at one rank is one compiled call
(:meth:`CCLONEModel.fit_points`: every filter setting's bootstraps vmapped together, as
:func:`jaxfactor.cclone.sweep` runs them); points compare by ``criterion`` (CCLONE's
orthogonality score, or bootstrap stability).

Keys: ``obsm['X_cclone']`` (C), ``obs['cclone_label']`` (argmax C, categorical),
``varm['cclone_V']``; with an annotation ``obs['cclone_call']`` (cancer / healthy / undetermined)
and ``obs['cclone_cancer_score']``; ``compat=True`` in ``to_anndata`` also writes CCLONE's
published ``obsm['C']`` and ``varm['V']``.
"""

from __future__ import annotations

import warnings
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
    call: np.ndarray | None = None          # per kept cell: cancer / healthy / undetermined (annotate)
    cancer_score: np.ndarray | None = None  # per kept cell: the annotation's cancer-minus-healthy score
    annotation: dict | None = None          # factor_labels, validation_passed, messages


CRITERIA = ("orth_score", "stability")


class CCLONEModel(AlleleFitted):
    family = "cclone"
    embedding_is_loadings = True
    option_types = {"healthy": list, "cancer": list}
    option_help = {"n_components": "number of factors (clones) k", "n_bootstrap": "bootstrap fits over variants",
                   "bootstrap_fraction": "share of the variants in each bootstrap",
                   "mode": "call weights: smartseq | 10x | binary | none",
                   "method": "bcd (exact per-row box QPs) | mu (weighted multiplicative updates)",
                   "l2": "ridge penalty on C and V",
                   "min_allele_reads": "reads that make an allele 'seen' (2 reproduces CCLONE; 1 keeps single reads)",
                   "init": "consensus (CCLONE's) or random starts", "bootstrap_seed": "seed of the bootstrap draws",
                   "criterion": "how sweep points compare: orth_score (CCLONE's rule) | stability",
                   "celltype_key": "obs column of cell types for the cancer / healthy annotation (empty: none)",
                   "healthy": "healthy cell types", "cancer": "cancer cell types",
                   "threshold": "the annotation's confidence threshold"}
    option_choices = {"mode": ("smartseq", "10x", "binary", "none"), "method": ("bcd", "mu"),
                      "init": ("consensus", "random"), "criterion": CRITERIA}
    sweep_together = ("min_maf", "filter_germline")  # filter settings of one rank share a compiled call

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=10, max_iter=100, tol=1e-6, seed=0, mesh=None,
            progress=False, n_bootstrap=50, bootstrap_fraction=0.9, mode="smartseq", method="bcd", l2=0.0,
            min_allele_reads=2, init="consensus", bootstrap_seed=None, filter=False, min_maf=5.0,
            filter_germline=True, min_cell_coverage=10.0, criterion="orth_score", celltype_key="", healthy=(),
            cancer=(), threshold=0.3, **aliases):
        from ..mixture._models import allele_fit_inputs
        from .._protocol import vocabulary as _vocab
        from ._api import fit as cclone_fit

        n_components, n_init, max_iter = _vocab("cclone", n_components, n_init, aliases, max_iter)
        cls._one_device(mesh)
        inp, ad, cells, genes = allele_fit_inputs(data, layer, filter, min_maf, filter_germline, min_cell_coverage)
        annotation = _check_annotation(ad, criterion, celltype_key, healthy, cancer, threshold)
        out = cclone_fit(ad, n_components, n_bootstrap=n_bootstrap, bootstrap_fraction=bootstrap_fraction,
                         max_iter=max_iter, mode=mode, seed=seed, method=method, tol=tol, l2=l2,
                         min_allele_reads=min_allele_reads, init=init, n_init=n_init, bootstrap_seed=bootstrap_seed)
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), n_bootstrap=int(n_bootstrap), bootstrap_fraction=float(bootstrap_fraction),
                        mode=mode, method=method, l2=float(l2), min_allele_reads=int(min_allele_reads), init=init,
                        bootstrap_seed=int(out.uns["cclone"]["bootstrap_seed"]), named_variables=inp.named,
                        **filter_settings(filter, min_maf, filter_germline, min_cell_coverage), **annotation)
        model = cls._from_output(out, inp, settings, cells, genes)
        if model.result.annotation is not None and model.result.annotation["messages"]:
            from ._annotate import AnnotationWarning

            warnings.warn("; ".join(model.result.annotation["messages"]), AnnotationWarning, stacklevel=2)
        return model

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Several points of one rank that differ only in their filters (``min_maf``,
        ``filter_germline``), fitted in one compiled call (:func:`jaxfactor.cclone.sweep`'s plan:
        every setting's bootstraps vmapped over masks of the full matrix). A point whose filters
        leave too few variants or cells for its rank is returned as the reason, a string."""
        from ..mixture._models import allele_fit_inputs
        from ._api import _SweepPlan

        if len(points) == 1:
            return [cls.fit(data, **points[0], **shared)]
        opts = {**shared, **{k: v for k, v in points[0].items() if k not in cls.sweep_together}}
        if not opts.get("filter", False):
            raise ValueError("a sweep over min_maf / filter_germline needs filter = true")
        k = int(opts.pop("n_components"))
        opts.pop("filter")
        opts.pop("mesh", None), opts.pop("progress", None)
        cls._one_device(shared.get("mesh"))
        inp, ad, _, _ = allele_fit_inputs(data, opts.pop("layer", None), False, 0.0, False, 0.0)
        annotation = _check_annotation(ad, opts.pop("criterion", "orth_score"), opts.pop("celltype_key", ""),
                                       opts.pop("healthy", ()), opts.pop("cancer", ()), opts.pop("threshold", 0.3))
        mafs = list(dict.fromkeys(float(p["min_maf"]) for p in points))
        germs = list(dict.fromkeys(bool(p["filter_germline"]) for p in points))
        plan = _SweepPlan.make(ad, [k], mafs, germs, min_cell_coverage=opts["min_cell_coverage"],
                               n_bootstrap=opts.get("n_bootstrap", 50), bootstrap_fraction=opts.get("bootstrap_fraction", 0.9),
                               n_cycles=opts.get("max_iter", 100), mode=opts.get("mode", "smartseq"), seed=opts.get("seed", 0),
                               method=opts.get("method", "bcd"), tol=opts.get("tol", 1e-6), l2=opts.get("l2", 0.0),
                               criterion=annotation["criterion"], min_allele_reads=opts.get("min_allele_reads", 2),
                               init=opts.get("init", "consensus"), n_init=opts.get("n_init", 10),
                               bootstrap_seed=opts.get("bootstrap_seed"))
        rows, fits = plan.fit_k(k)
        where = {(row["min_maf"], row["filter_germline"]): i for i, row in enumerate(rows)}
        obs = {n: i for i, n in enumerate(inp.obs_names)}
        var = {n: j for j, n in enumerate(inp.var_names)}
        out = []
        for p in points:
            i = where[(float(p["min_maf"]), bool(p["filter_germline"]))]
            if fits[i] is None:
                out.append(rows[i]["skipped"])
                continue
            fit_ad = fits[i]
            settings = dict(n_components=k, n_init=int(opts.get("n_init", 10)), max_iter=int(opts.get("max_iter", 100)),
                            tol=float(opts.get("tol", 1e-6)), seed=int(opts.get("seed", 0)),
                            n_bootstrap=int(opts.get("n_bootstrap", 50)),
                            bootstrap_fraction=float(opts.get("bootstrap_fraction", 0.9)), mode=opts.get("mode", "smartseq"),
                            method=opts.get("method", "bcd"), l2=float(opts.get("l2", 0.0)),
                            min_allele_reads=int(opts.get("min_allele_reads", 2)), init=opts.get("init", "consensus"),
                            bootstrap_seed=int(plan.params["bootstrap_seed"]), named_variables=inp.named,
                            **filter_settings(True, p["min_maf"], p["filter_germline"], opts["min_cell_coverage"]),
                            **annotation)
            cells = np.array([obs[n] for n in fit_ad.obs_names])
            genes = np.array([var[n] for n in fit_ad.var_names])
            out.append(cls._from_output(fit_ad, inp, settings, None if len(cells) == len(obs) else cells,
                                        None if len(genes) == len(var) else genes))
        return out

    @classmethod
    def _from_output(cls, out, inp, settings: dict, cells, genes) -> "CCLONEModel":
        """The model of one fit's AnnData (:func:`jaxfactor.cclone.fit`'s keys), annotated when
        the settings name a cell-type column."""
        u = out.uns["cclone"]
        res = CCLONEResult(np.asarray(out.obsm["C"]), np.asarray(out.obsm["C_std"]), np.asarray(out.varm["V"]),
                           np.asarray(out.varm["V_std"]), float(out.uns["orth_score"]), float(u["loss"]),
                           float(u["stability"]))
        if settings.get("celltype_key"):
            from ._annotate import AnnotationWarning, annotate

            with warnings.catch_warnings():  # kept in the result (its verdicts); fit warns once
                warnings.simplefilter("ignore", AnnotationWarning)
                ann = annotate(out, settings["celltype_key"], settings["healthy"], settings["cancer"],
                               threshold=settings["threshold"])
            a = ann.uns["cclone_annotation"]
            res.call = ann.obs["cclone_label"].astype(str).to_numpy()
            res.cancer_score = np.asarray(ann.obs["cclone_score"], np.float32)
            res.annotation = {"factor_labels": [str(x) for x in a["factor_labels"]],
                              "validation_passed": bool(a["validation_passed"]), "messages": [str(m) for m in a["messages"]]}
        return cls(res, inp.obs_names, inp.var_names, settings, cells, genes)

    @classmethod
    def memory(cls, n: int, p: int, points: list[dict], shared: dict, item: int):
        """(bytes, what, how to shrink) of one compiled call, from shapes alone: every bootstrap of
        every filter setting of one rank is one vmapped batch sharing M and W (n × p each); a fit
        holds 4 copies of C (n × k) and V (p × k), its Gram tensors (n + p) k² and masks, and the
        objective's weighted residual (n × p)."""
        k = int(points[0]["n_components"])
        n_boot = int(points[0].get("n_bootstrap", 50))
        per_fit = item * (4 * (n + p) * k + (n + p) * k * k + n * p + n + p)
        what = (f"one compiled CCLONE call (k = {k}: {n_boot} bootstraps x {len(points)} filter setting(s) "
                f"on {n} cells x {p} variants)")
        hint = (f"lower model.n_bootstrap (each bootstrap fit needs about {per_fit / 2**20:.0f} MiB per filter setting) "
                "or sweep fewer min_maf / filter_germline values per run")
        return item * 2 * n * p + n_boot * len(points) * per_fit, what, hint

    def _verdicts(self) -> list[str]:
        a = self.result.annotation
        if a is None:
            return []
        lines = [f"factor labels {a['factor_labels']}; annotation validation "
                 f"{'passed' if a['validation_passed'] else 'FAILED: read the calls with care'}"]
        calls = self.result.call
        if calls is not None:
            kinds, counts = np.unique(np.asarray(calls).astype(str), return_counts=True)
            lines.append("cells called " + ", ".join(f"{c} {n}" for c, n in zip(kinds, counts)))
        return lines + [f"warning: {m}" for m in a["messages"]]

    def selection(self) -> Score:
        """The sweep's rule: the orthogonality score of C (CCLONE's) or bootstrap stability."""
        return self.scores()[self.settings.get("criterion", "orth_score")]

    def truth_metrics(self, truth) -> dict:
        """ARI among the simulated cancer cells alone (how well the cancer clones separate)."""
        from ._metrics import adjusted_rand_index

        labels = getattr(truth, "labels", None)
        if labels is None:
            return {}
        cells = np.arange(len(self.obs_names)) if self.cells is None else np.asarray(self.cells)
        lab = np.asarray(labels)[cells]
        pred = np.asarray(self.result.C).argmax(axis=1)
        if (lab > 0).any() and (lab == 0).any():
            return {"ari_cancer_cells": adjusted_rand_index(pred[lab > 0], lab[lab > 0])}
        return {}

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
        r = self.result
        C = np.asarray(r.C, np.float32)
        out = {"embedding": C, "C_std": np.asarray(r.C_std, np.float32), "label": C.argmax(axis=1)}
        if r.call is not None:
            out.update(call=np.asarray(r.call).astype(str), cancer_score=np.asarray(r.cancer_score, np.float32))
        return out

    def _uns(self):
        return {} if self.result.annotation is None else {"annotation": self.result.annotation}

    def _var_outputs(self):
        return {"V": np.asarray(self.result.V, np.float32), "V_std": np.asarray(self.result.V_std, np.float32)}

    def _compat_outputs(self, rows, cols):
        from .._protocol import _scatter

        return [("obsm", "C", _scatter(np.asarray(self.result.C, np.float32), rows)),
                ("varm", "V", _scatter(np.asarray(self.result.V, np.float32), cols))]


def _check_annotation(ad, criterion, celltype_key, healthy, cancer, threshold) -> dict:
    """The selection and annotation settings, checked before anything is fitted."""
    from .._validate import check_choice, check_probability

    check_choice(criterion, "criterion", CRITERIA)
    healthy, cancer = [str(x) for x in healthy], [str(x) for x in cancer]
    if celltype_key:
        if celltype_key not in ad.obs:
            raise ValueError(f"celltype_key {celltype_key!r} is not an obs column; available: "
                             f"{', '.join(map(str, ad.obs.columns)) or '(none)'}")
        if not healthy and not cancer:
            raise ValueError("celltype_key needs healthy and/or cancer cell types to label the factors")
        if set(healthy) & set(cancer):
            raise ValueError(f"cell types listed as both healthy and cancer: {sorted(set(healthy) & set(cancer))}")
        check_probability(threshold, "threshold")
    elif healthy or cancer:
        raise ValueError("healthy / cancer cell types need celltype_key (the obs column that holds them)")
    return {"criterion": criterion, "celltype_key": celltype_key or "", "healthy": healthy, "cancer": cancer,
            "threshold": float(threshold)}
