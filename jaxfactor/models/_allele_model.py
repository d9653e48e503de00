"""The NumPyro allele-count model (:mod:`jaxfactor.models._allele`) as a fitted-model family
(:class:`jaxfactor.Fitted`): ``AlleleModel.fit(adata, n_components)`` fits it by SVI
(:func:`jaxfactor.models.fit_allele_svi`); the kernel gives new cells' posterior clone
probabilities ``r_ik ∝ π_k Π_j p(ALT_ij | DP_ij, f_kj, δ, ε)`` and their marginal log-likelihood,
with every fitted parameter held fixed (:func:`jaxfactor.models.clone_responsibilities`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._protocol import Score
from ..mixture._models import AlleleFitted, filter_settings


@dataclass
class AlleleModelResult:
    """An SVI fit (``fit``: :class:`jaxfactor.models.AlleleFit`, whose attributes this forwards)
    and the 90 % credible intervals of its clone AFs (variants × K; ``ci_method``: ``"guide"`` for
    AutoNormal, ``"beta"`` for the conjugate Beta approximation of a MAP fit; see
    :func:`jaxfactor.models.fit_allele_anndata`)."""

    fit: object
    af_lower: np.ndarray
    af_upper: np.ndarray
    ci_method: str

    def __getattr__(self, name):
        if name.startswith("_") or "fit" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["fit"], name)


def simulate_allele_counts(n_cells: int = 1000, n_variants: int = 100, n_clones: int = 3, *, mean_coverage: float = 5.0,
                           dropout: float = 0.1, error: float = 0.01, likelihood: str = "binomial", seed: int = 0):
    """``jaxfactor.models.simulate_alleles`` with its main knobs as explicit (config) keys."""
    from ._allele import simulate_alleles

    return simulate_alleles(n_cells, n_variants, n_clones, seed=seed, mean_coverage=mean_coverage, dropout=dropout,
                            error=error, likelihood=likelihood)


class AlleleModel(AlleleFitted):
    """A fitted allele-count model (``result``: :class:`jaxfactor.models.AlleleFit`)."""

    family = "allele_model"
    option_help = {"n_components": "number of clones K", "likelihood": "binomial | betabinomial",
                   "guide": "AutoDelta (MAP) or AutoNormal", "lr": "Adam learning rate",
                   "restart_steps": "SVI steps of every start before the best continues",
                   "batch_size": "cells per SVI step (plate subsampling); 0: every cell"}
    option_choices = {"likelihood": ("binomial", "betabinomial"), "guide": ("delta", "normal")}
    batch_size = 8192

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=3, max_iter=2000, tol=None, seed=0, mesh=None,
            progress=False, likelihood="binomial", guide="delta", lr=0.05, restart_steps=200, batch_size=0,
            filter=False, min_maf=5.0, filter_germline=True, min_cell_coverage=10.0, **aliases):
        return cls._fit_lrs(data, n_components, [lr], layer=layer, n_init=n_init, max_iter=max_iter, seed=seed,
                            mesh=mesh, likelihood=likelihood, guide=guide, restart_steps=restart_steps,
                            batch_size=batch_size, filter=filter, min_maf=min_maf, filter_germline=filter_germline,
                            min_cell_coverage=min_cell_coverage, aliases=aliases)[0]

    #: a sweep over the learning rate runs side by side (one vmapped SVI program for all)
    sweep_together = ("lr",)

    @classmethod
    def fit_points(cls, data, points: list[dict], **shared) -> list:
        """Points that differ only in ``lr`` are fitted together: every start of every learning
        rate one row of the same vmapped SVI step (:func:`jaxfactor.models.fit_allele_svi_grid`),
        each equal to its own ``fit``; a diverged point is skipped (a string says why)."""
        rest = [{k: v for k, v in p.items() if k != "lr"} for p in points]
        if len(points) == 1 or any(r != rest[0] for r in rest):
            return super().fit_points(data, points, **shared)
        from .._grid import inspect_defaults

        kw = {**inspect_defaults(cls.fit), **rest[0], **shared}
        lrs = [p.get("lr", kw["lr"]) for p in points]
        kw.pop("lr"), kw.pop("tol", None), kw.pop("progress", None)
        aliases = {k: kw.pop(k) for k in ("k", "n_clones", "n_restarts", "num_steps") if k in kw}
        return cls._fit_lrs(data, kw.pop("n_components", None), lrs, aliases=aliases, **kw)

    @classmethod
    def _fit_lrs(cls, data, n_components, lrs, *, layer, n_init, max_iter, seed, mesh, likelihood, guide, restart_steps,
                 batch_size, filter, min_maf, filter_germline, min_cell_coverage, aliases) -> list:
        from .._inputs import allele_layers
        from .._protocol import vocabulary as _vocab
        from ..mixture._models import allele_fit_inputs
        from ._allele_api import _af_interval, check_svi_losses
        from ._allele_svi import fit_allele_svi_grid

        n_components, n_init, max_iter = _vocab("allele_model", n_components, n_init, aliases, max_iter)
        cls._one_device(mesh)
        inp, ad, cells, genes = allele_fit_inputs(data, layer, filter, min_maf, filter_germline, min_cell_coverage)
        ref, alt = allele_layers(ad)
        dense = lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m)
        ref, alt = dense(ref), dense(alt)
        fits = fit_allele_svi_grid(alt, ref + alt, n_components, lrs, max_iter=max_iter, guide=guide, seed=seed,
                                   likelihood=likelihood, n_init=n_init, restart_steps=restart_steps,
                                   batch_size=batch_size or None)
        out = []
        for lr, res in zip(lrs, fits):
            if isinstance(res, str):
                if len(lrs) == 1:
                    raise FloatingPointError(res)
                out.append(res)
                continue
            check_svi_losses(res.losses)
            lo, hi, ci_method = _af_interval(alt, ref + alt, res, None, (1.0, 1.0))
            settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), seed=int(seed),
                            likelihood=likelihood, guide=guide, lr=float(lr), restart_steps=int(restart_steps),
                            batch_size=int(batch_size or 0), named_variables=inp.named,
                            **filter_settings(filter, min_maf, filter_germline, min_cell_coverage))
            result = AlleleModelResult(res, np.asarray(lo, np.float32), np.asarray(hi, np.float32), ci_method)
            out.append(cls(result, inp.obs_names, inp.var_names, settings, cells, genes))
        return out

    def params(self):
        r = self.result
        p = {"af": np.asarray(r.af, np.float64), "pi": np.asarray(r.pi, np.float64),
             "dropout": np.asarray(float(r.dropout)), "error": np.asarray(float(r.error))}
        if r.concentration is not None:
            p["concentration"] = np.asarray(float(r.concentration))
        return p

    def static(self):
        return {"likelihood": self.settings["likelihood"]}

    @staticmethod
    def kernel(p, ref, alt, *, likelihood):
        from ._allele import clone_responsibilities

        prob, marg = clone_responsibilities(alt, ref + alt, p["af"], p["pi"], p["dropout"], p["error"],
                                            likelihood=likelihood, concentration=p.get("concentration"))
        return {"proba": prob, "log_likelihood": marg}

    def scores(self):
        r = self.result
        return {"elbo": Score("elbo", float(-np.asarray(r.losses)[-1]), True),
                "log_likelihood": Score("log_likelihood", float(r.log_likelihood), True)}

    def _cell_outputs(self):
        q = np.asarray(self.result.clone_prob, np.float32)
        return {"proba": q, "label": q.argmax(axis=1)}

    def _var_outputs(self):
        r = self.result
        return {"af": np.asarray(r.af, np.float32).T, "af_lower": r.af_lower, "af_upper": r.af_upper}

    def _uns(self):
        r = self.result
        return {"pi": np.asarray(r.pi), "dropout": float(r.dropout), "error": float(r.error),
                "concentration": None if r.concentration is None else float(r.concentration),
                "trace": -np.asarray(r.losses), "trace_name": "ELBO", "trace_unit": "SVI step", "ci_method": r.ci_method}
