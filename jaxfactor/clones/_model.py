"""The clone caller as a fitted-model family (:class:`jaxfactor.Fitted`): ``CloneCalls.fit(adata,
n_components="auto", celltype_key=..., healthy=[...], cancer=[...], method=...)`` runs
:func:`jaxfactor.clones.call`; the kernel calls new cells with every fitted parameter fixed:

- ``allele``: posterior clone probabilities under the allele-count model (allelic dropout δ, read
  error ε; :func:`jaxfactor.models.clone_responsibilities`) at the fitted AFs, weights, δ, ε;
- ``binomial``: ``q_ik ∝ w_k exp(Σ_j ALT_ij E[log θ_jk] + REF_ij E[log(1 − θ_jk)])`` under the
  fit's Beta posteriors (the VB update of q(z));
- ``cclone``: CCLONE's box-constrained loadings against V, normalised per cell;

then ``cancer_prob = Σ_{k cancer} P_ik / Σ_k P_ik`` and the call rule of the fit
(cancer above ``threshold`` of ``cancer mass − healthy mass``, healthy below −``threshold``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .._protocol import IntOrAuto, Score
from ..mixture._models import AlleleFitted


@dataclass
class CloneCallResult:
    """The calls of :func:`jaxfactor.clones.call` (``adata``: the AnnData it returned, kept whole)."""

    adata: object

    @property
    def clone_prob(self) -> np.ndarray:
        return np.asarray(self.adata.obsm["clone_prob"])

    @property
    def uns(self) -> dict:
        return self.adata.uns["clones"]


CALLS = ("cancer", "healthy", "undetermined")
#: the fit options that belong to one method (passed to :func:`jaxfactor.clones.call` for it only)
METHOD_OPTIONS = {"allele": ("site_dropout",), "binomial": (),
                  "cclone": ("n_bootstrap", "min_maf", "min_cell_coverage", "filter_germline", "min_allele_reads")}


class CloneCalls(AlleleFitted):
    family = "clones"
    batch_size = 1024
    option_types = {"n_components": IntOrAuto, "healthy": list, "cancer": list}
    option_help = {"n_components": "'auto' (chosen among 2-6) or the number of clones",
                   "method": "clone model: allele (allele counts with dropout) | binomial (vireoSNP's mixture) | cclone",
                   "criterion": "how K is chosen (empty: the method's default; allele evidence/bic/aic, binomial elbo/bic, "
                                "cclone orth_score/stability)",
                   "celltype_key": "obs column with cell types (empty: clones only, no cancer calls)",
                   "healthy": "healthy cell types", "cancer": "cancer cell types",
                   "threshold": "cancer when P(cancer clones) - P(healthy clones) > threshold",
                   "mixed_fraction": "a clone is mixed when its balanced cancer share is inside (f, 1 - f)",
                   "min_annotated": "annotated cells a clone needs for its label",
                   "drop_rna_editing": "drop var['REDIdb'] sites", "drop_germline": "drop var['dbSNP'] sites (LOH is signal)",
                   "min_cells": "ALT and REF each seen in at least this many cells",
                   "site_dropout": "allele: one dropout rate per variant", "n_bootstrap": "cclone: bootstraps",
                   "min_maf": "cclone: its MAF filter (percent of cells)", "min_cell_coverage": "cclone: its cell filter",
                   "filter_germline": "cclone: drop dbSNP sites",
                   "min_allele_reads": "cclone: reads that make an allele seen (2: published files; 1: current code)"}
    option_choices = {"method": ("allele", "binomial", "cclone"),
                      "criterion": ("", "evidence", "bic", "aic", "elbo", "orth_score", "stability")}
    compared_options = ("method",)  # a sweep over methods compares them side by side

    @classmethod
    def fit(cls, data, n_components="auto", *, layer=None, n_init=None, max_iter=1000, tol=1e-6, seed=0, mesh=None,
            progress=False, method="allele", criterion="", celltype_key="", healthy=(), cancer=(), threshold=0.3,
            mixed_fraction=0.2, min_annotated=10, drop_rna_editing=True, drop_germline=False, min_cells=2,
            site_dropout=False, n_bootstrap=50, min_maf=5.0, min_cell_coverage=10.0, filter_germline=True,
            min_allele_reads=2, **options):
        """:func:`jaxfactor.clones.call` on ``data`` (REF/ALT): the options of ``method`` are passed
        to it (``site_dropout`` for the allele model, CCLONE's filters and bootstraps for cclone);
        further method options (``screen_iter``, ``max_init``, ...) pass through ``options``."""
        from .._inputs import read
        from .._protocol import vocabulary as _vocab
        from ._call import call

        aliases = {k: options.pop(k) for k in ("k", "n_clones", "n_latent", "n_restarts") if k in options}
        n_components, n_init, max_iter = _vocab("clones", n_components, n_init, aliases, max_iter)
        cls._one_device(mesh)
        own = dict(site_dropout=site_dropout, n_bootstrap=n_bootstrap, min_maf=min_maf,
                   min_cell_coverage=min_cell_coverage, filter_germline=filter_germline, min_allele_reads=min_allele_reads)
        if method in METHOD_OPTIONS:
            options = {**{k: own[k] for k in METHOD_OPTIONS[method]}, **options}
        inp = read(data, "alleles", layer)
        out = call(inp.X, n_components="auto" if n_components is None else n_components, n_init=n_init, max_iter=max_iter,
                   tol=tol, seed=seed, log=print if progress else None, method=method, criterion=criterion or None,
                   celltype_key=celltype_key or None, healthy=healthy, cancer=cancer, threshold=threshold,
                   mixed_fraction=mixed_fraction, min_annotated=min_annotated, drop_rna_editing=drop_rna_editing,
                   drop_germline=drop_germline, min_cells=min_cells, **options)
        genes = np.array([i for i, n in enumerate(inp.var_names) if n in set(map(str, out.var_names))])
        s = out.uns["clones"]["settings"]
        settings = {"n_components": int(out.uns["clones"]["n_clones"]), "candidates": np.asarray(s["n_clones"]).tolist()
                    if not isinstance(s["n_clones"], str) else s["n_clones"], "n_init": int(s["n_init"]),
                    "max_iter": int(max_iter), "tol": float(tol), "seed": int(seed), "method": out.uns["clones"]["method"],
                    "threshold": float(s["threshold"]), "named_variables": inp.named}
        return cls(CloneCallResult(out), inp.obs_names, inp.var_names, settings, None,
                   None if len(genes) == len(inp.var_names) else genes)

    def _labels(self) -> np.ndarray:
        u = self.result.uns
        k = self.result.clone_prob.shape[1]
        if "annotation" in u and "label" in u["annotation"]:
            return np.asarray(u["annotation"]["label"]).astype(str)
        return np.full(k, "undetermined")

    def params(self):
        ad, u = self.result.adata, self.result.uns
        af = np.asarray(ad.varm["clone_af"], np.float64)
        labels = self._labels()
        p = {"af": af, "cancer": (labels == "cancer").astype(np.float64), "healthy": (labels == "healthy").astype(np.float64)}
        d = u["details"]
        if self.settings["method"] == "allele":
            p.update(weights=np.asarray(d["weights"], np.float64), error=np.asarray(float(d["error"])),
                     dropout=np.asarray(d.get("dropout_per_variant", float(d["dropout"])), np.float64))
        elif self.settings["method"] == "binomial":
            from jax.scipy.special import digamma

            # the variational posteriors of the fit: E[log θ], E[log(1 − θ)] under Beta(s1, s2)
            s1, s2 = np.asarray(d["af_alpha"], np.float64), np.asarray(d["af_beta"], np.float64)
            d12 = np.asarray(digamma(s1 + s2))
            k = s1.shape[1]  # the fit's q(z) update uses the uniform prior weights (learn_weights=False)
            p.update(weights=np.full(k, 1.0 / k), log_af=np.asarray(digamma(s1)) - d12,
                     log_1maf=np.asarray(digamma(s2)) - d12)
        else:
            p.update(l2=np.asarray(0.0))
        return p

    def static(self):
        return {"method": self.settings["method"], "threshold": float(self.settings["threshold"]),
                "min_allele_reads": int(self.result.uns["settings"].get("min_allele_reads", 2))}

    @staticmethod
    def kernel(p, ref, alt, *, method, threshold, min_allele_reads):
        from jax.scipy.special import logsumexp

        dt = ref.dtype
        af = jnp.clip(p["af"].astype(dt), 1e-6, 1 - 1e-6)
        if method == "allele":
            from ..models._allele import allele_entry_loglik

            # entry-wise, so a per-variant dropout rate (site_dropout=True) broadcasts over variants
            ll = allele_entry_loglik(alt[:, None, :], (ref + alt)[:, None, :], af.T[None], p["dropout"].astype(dt),
                                     p["error"].astype(dt)).sum(-1)
            joint = jnp.log(jnp.maximum(p["weights"].astype(dt), 1e-12)) + ll
            P = jnp.exp(joint - logsumexp(joint, axis=1, keepdims=True))
        elif method == "binomial":
            joint = (jnp.log(jnp.maximum(p["weights"].astype(dt), 1e-12)) + alt @ p["log_af"].astype(dt)
                     + ref @ p["log_1maf"].astype(dt))
            P = jnp.exp(joint - logsumexp(joint, axis=1, keepdims=True))
        else:
            from ..cclone._assign import cclone_assign

            P = cclone_assign(p["af"].astype(dt), p["l2"].astype(dt), ref, alt, mode="smartseq",
                              min_allele_reads=min_allele_reads)["C"]
        total = P.sum(axis=1)
        cancer, healthy = P @ p["cancer"].astype(dt), P @ p["healthy"].astype(dt)
        cancer_prob = jnp.where(total > 1e-9, cancer / jnp.maximum(total, 1e-9), 0.5)
        score = cancer - healthy
        covered = jnp.any(ref + alt > 0, axis=1)
        call = jnp.where(~covered, 2, jnp.where(score > threshold, 0, jnp.where(score < -threshold, 1, 2)))
        return {"proba": P, "cancer_prob": cancer_prob, "call": call}

    @staticmethod
    def decode_outputs(out: dict) -> dict:
        """The kernel's call codes as names: 0 cancer, 1 healthy, 2 undetermined."""
        if "call" in out:
            out = {**out, "call": np.array(CALLS)[np.asarray(out["call"])]}
        return out

    def scores(self):
        table = self.result.uns["selection"]
        crit = str(self.result.uns["criterion"])
        chosen = table[np.asarray(table["chosen"], bool)] if "chosen" in table else table
        higher = crit not in ("bic", "aic", "loss")
        return {crit: Score(crit, float(np.asarray(chosen[crit])[0]), higher)}

    def _cell_outputs(self):
        ad = self.result.adata
        P = self.result.clone_prob.astype(np.float32)
        out = {"proba": P, "label": P.argmax(axis=1)}
        for key in ("cancer_prob", "clone_prob_max", "n_variants_covered"):
            if key in ad.obs:
                out[key] = ad.obs[key].to_numpy()
        if "cancer_call" in ad.obs:
            out["call"] = ad.obs["cancer_call"].astype(str).to_numpy()
        return out

    def _var_outputs(self):
        ad = self.result.adata
        return {k: np.asarray(ad.varm[f"clone_{k}"]) for k in ("af", "af_lower", "af_upper")}

    def _uns(self):
        u = self.result.uns
        return {"summary": str(u["summary"]), "method": str(u["method"])}

    def _verdicts(self) -> list[str]:
        """The call's own summary (clones, labels, validation, calls)."""
        return [line for line in str(self.result.uns["summary"]).splitlines() if line.strip()]

    def tables(self) -> dict:
        u = self.result.uns
        out = {"k_selection": u["selection"]}
        if "annotation" in u:
            out["annotation"] = u["annotation"]
        return out

    def figure(self, folder: str, name: str) -> bool:
        """The clone caller's own page (:func:`jaxfactor.clones.plot`)."""
        from ._report import plot

        plot(self.result.adata, folder, name)
        return True

    def truth_metrics(self, truth) -> dict:
        """Against a simulation (``truth``: labels per cell, 0 healthy; ``is_cancer``): the cancer /
        healthy calls' strict balanced accuracy (undetermined counted wrong), balanced accuracy
        over the called cells, and the share of cells called."""
        from ._report import call_accuracy

        return call_accuracy(self.result.adata, truth)

    def to_anndata(self, adata=None, **kw):
        out = super().to_anndata(adata, **kw)
        key = f"{self.family}_call"
        if key in out.obs:  # a categorical with the three calls, cells outside the fit missing
            import pandas as pd

            out.obs[key] = pd.Categorical(out.obs[key].where(out.obs[key].notna(), None), categories=list(CALLS))
        return out

    def _encode_result(self, arrays, folder):
        from ..data._io import write_h5ad

        write_h5ad(self.result.adata, os.path.join(folder, "calls.h5ad"))  # a full disk: one line, no crash in h5py
        return {"__h5ad__": "calls.h5ad"}

    @classmethod
    def _decode_result(cls, desc, arrays, folder):
        import anndata

        return CloneCallResult(anndata.read_h5ad(os.path.join(folder, desc["__h5ad__"])))
