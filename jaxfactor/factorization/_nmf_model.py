"""NMF and its fitted-model protocol (:class:`jaxfactor.Fitted`): ``NMFModel.fit(data, n_components)``.

``transform`` solves the W half of the problem for new cells with H fixed,
``min_{W ≥ 0} ½‖X − WH‖²_F + l1_W ΣW + ½ l2_W ‖W‖²_F`` (every Frobenius method: hals, mu,
pgd), by hierarchical alternating least squares run to convergence (HALS: exact coordinate
updates of one column of W at a time, Cichocki & Phan, IEICE Trans. Fundamentals 92(3), 2009;
:func:`._hals.solve_rows`): ``W[:, j] ← max(0, W[:, j] − ((W HHᵀ − XHᵀ)[:, j] + l1_W + l2_W
W[:, j]) / ((HHᵀ)_jj + l2_W))``, each cell's sweeps stopping on their own; for the KL objective,
the W half of Lee & Seung's multiplicative update (``TRANSFORM_SWEEPS`` of them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._protocol import Fitted, Score, vocabulary
from ._hals import solve_rows
from ._nmf import NMFHparams

TRANSFORM_SWEEPS = 200


def _anndata(X, **obs):
    import anndata
    import pandas as pd

    X = np.asarray(X, np.float32)
    return anndata.AnnData(X=X, obs=pd.DataFrame(obs, index=[f"cell{i}" for i in range(X.shape[0])]),
                           var=pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])]))


def _kl_W(X, H, l1, l2, sweeps: int):
    from ..numerics import safe_div

    W = jnp.full((X.shape[0], H.shape[0]), jnp.maximum(jnp.mean(X), 1e-3) / H.shape[0], X.dtype)
    colsum = jnp.sum(H, axis=1)[None, :]

    def body(_, W):
        ratio = safe_div(X, W @ H)
        return W * safe_div(ratio @ H.T, colsum + l1 + l2 * W)

    return jax.lax.fori_loop(0, sweeps, body, W)


class NMFModel(Fitted):
    """A fitted NMF ``X ≈ W H`` (``result``: :class:`jaxfactor.nmf.NMFResult`)."""

    family = "nmf"
    embedding_is_loadings = True
    inputs = "nonnegative"
    has_labels = True  # the dominant factor of each cell
    trace_higher_is_better = False  # the objective, minimised

    @classmethod
    def fit(cls, data, n_components=None, *, layer=None, n_init=1, max_iter=200, tol=1e-4, seed=0, mesh=None,
            progress=False, method="hals", init="nndsvda", l1_W=0.0, l2_W=0.0, l1_H=0.0, l2_H=0.0, **aliases):
        from .._inputs import read
        from ._nmf_api import fit as nmf_fit

        n_components, n_init, max_iter = vocabulary("nmf", n_components, n_init, aliases, max_iter)
        inp = read(data, "nonnegative", layer)
        res = nmf_fit(inp.X, n_components, method=method, init=init, max_iter=max_iter, tol=tol, n_init=n_init,
                      seed=seed, l1_W=l1_W, l2_W=l2_W, l1_H=l1_H, l2_H=l2_H, progress=progress, mesh=mesh)
        settings = dict(n_components=int(n_components), n_init=int(n_init), max_iter=int(max_iter), tol=float(tol),
                        seed=int(seed), method=method, init=init, l1_W=l1_W, l2_W=l2_W, l1_H=l1_H, l2_H=l2_H,
                        layer=layer, named_variables=inp.named)
        return cls(res, inp.obs_names, inp.var_names, settings)

    @classmethod
    def simulate(cls, seed: int = 0):
        from ..data import simulate_nmf

        sim = simulate_nmf(120, 40, 3, seed=seed)
        return _anndata(sim.X, truth=np.asarray(sim.W).argmax(axis=1).astype(str))

    def params(self):
        s = self.settings
        return {"H": np.asarray(self.result.H), "l1": np.asarray(float(s["l1_W"])), "l2": np.asarray(float(s["l2_W"]))}

    def static(self):
        return {"kl": self.settings["method"] == "kl"}

    @staticmethod
    def kernel(p, X, *, kl: bool):
        H = p["H"].astype(X.dtype)
        W = _kl_W(X, H, p["l1"], p["l2"], TRANSFORM_SWEEPS) if kl else solve_rows(X, H, p["l1"], p["l2"])
        return {"embedding": W}

    def scores(self):
        return {"objective": Score("objective", float(self.result.objective), False)}

    def _cell_outputs(self):
        W = np.asarray(self.result.W, np.float32)
        return {"embedding": W, "label": W.argmax(axis=1)}

    def _var_outputs(self):
        return {"components": np.asarray(self.result.H, np.float32).T}

    def _uns(self):
        r = self.result
        return {"trace": np.asarray(r.trace), "trace_iter": np.asarray(r.trace_iter), "trace_name": "objective",
                "n_iter": int(r.n_iter),
                "converged": bool(r.converged), "restart_objectives": np.asarray(r.restart_objectives)}

    # --- a grid family: the runner's vmapped sweep (numbers in one compiled call) ---------------
    hparams = NMFHparams  # l1_W, l2_W, l1_H, l2_H: numbers a sweep varies inside one compiled call

    option_help = {"n_components": "rank k",
                   "method": "hals (coordinate descent, default) | mu (Lee-Seung multiplicative) | pgd (projected gradient) | kl",
                   "init": "initialisation (NNDSVD variants or random)", "l1_W": "L1 penalty on W", "l2_W": "L2 penalty on W",
                   "l1_H": "L1 penalty on H", "l2_H": "L2 penalty on H"}
    option_choices = {"method": ("hals", "mu", "pgd", "kl"), "init": ("nndsvda", "nndsvd", "nndsvdar", "random")}

    @classmethod
    def algorithm(cls, static: dict, mesh=None):
        """The :class:`~jaxfactor.Algorithm` of one shape point (``n_components``, ``method``,
        ``init``); with a cell ``mesh``, the cell-sharded one (rows of X and W split)."""
        from ._nmf import FACTORIES

        return FACTORIES[static["method"]](static["n_components"], static["init"], mesh)

    @classmethod
    def cell_layout(cls):
        from ._nmf import NMF_CELLS

        return NMF_CELLS

    @staticmethod
    def state_arrays(state) -> dict:
        return {"W": np.asarray(state.W), "H": np.asarray(state.H)}

    @classmethod
    def from_arrays(cls, arrays: dict, info: dict, obs_names, var_names, settings: dict, X=None) -> "NMFModel":
        """The fitted model of one sweep point (``arrays``: :meth:`state_arrays`; ``info``: its
        objective, n_iter, converged, trace, trace_iter and restart objectives)."""
        from ._nmf_api import NMFResult

        res = NMFResult(W=np.asarray(arrays["W"]), H=np.asarray(arrays["H"]), objective=float(info["objective"]),
                        n_iter=int(info["n_iter"]), converged=bool(info["converged"]), trace=np.asarray(info["trace"]),
                        trace_iter=np.asarray(info["trace_iter"]), method=settings["method"],
                        restart_objectives=np.asarray(info["restart_objectives"]))
        return cls(res, np.asarray(obs_names).astype(str), np.asarray(var_names).astype(str), settings)

    def truth_metrics(self, truth) -> dict:
        """Recovery of simulated components: rows of H matched to the true H by cosine similarity
        (Hungarian matching, scipy's ``linear_sum_assignment``); mean similarity of matched pairs."""
        from scipy.optimize import linear_sum_assignment

        H_true = truth.get("H") if isinstance(truth, dict) else getattr(truth, "H", None)
        if H_true is None:
            return {}
        unit = lambda M: M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)  # noqa: E731
        sim = unit(np.asarray(self.result.H)) @ unit(np.asarray(H_true)).T
        rows, cols = linear_sum_assignment(-sim)
        return {"H_cosine_matched": float(sim[rows, cols].mean()), "n_matched": int(len(rows))}
