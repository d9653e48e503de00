"""The runner's NumPyro allele-count model: simulated clones or REF/ALT data, SVI fit per number
of clones (sweepable), the highest final ELBO kept (``jaxfactor.models.select_n_clones`` offers
the held-out rule in Python), AnnData written with clone probabilities and allele frequencies."""

from __future__ import annotations

import time

import numpy as np

from ._cclone_task import CcloneTask, Loaded, PipelineOutcome
from ._resume import PointCache, fit_sweep
from ._schema import Field

ALLELE_FIELDS = {
    "n_clones": Field(int, help="number of clones K"),
    "likelihood": Field(str, "binomial", choices=("binomial", "betabinomial")),
    "guide": Field(str, "delta", choices=("delta", "normal"), help="AutoDelta (MAP) or AutoNormal"),
    "num_steps": Field(int, 2000, help="SVI steps"),
    "lr": Field(float, 0.05, help="Adam learning rate"),
    "n_restarts": Field(int, 3, help="random starts, each run restart_steps before the best continues"),
    "restart_steps": Field(int, 200, help="SVI steps of every start"),
    "batch_size": Field(int, 0, help="cells per SVI step (plate subsampling); 0: every cell"),
    "filter": Field(bool, False, help="CCLONE's variant/cell filters first"),
    "min_maf": Field(float, 5.0), "filter_germline": Field(bool, True), "min_cell_coverage": Field(float, 10.0),
}


def simulate_allele_counts(n_cells: int = 1000, n_variants: int = 100, n_clones: int = 3, *, mean_coverage: float = 5.0,
                           dropout: float = 0.1, error: float = 0.01, likelihood: str = "binomial", seed: int = 0):
    """``jaxfactor.models.simulate_alleles`` with its main knobs as explicit config keys."""
    from ..models import simulate_alleles

    return simulate_alleles(n_cells, n_variants, n_clones, seed=seed, mean_coverage=mean_coverage, dropout=dropout,
                            error=error, likelihood=likelihood)


class AlleleTask:
    def load(self, cfg) -> Loaded:
        if "simulator" not in cfg.data:
            return CcloneTask().load(cfg)
        import anndata
        import scipy.sparse as sp

        sim = simulate_allele_counts(**{k: v for k, v in cfg.data.items() if k != "simulator"})
        alt, depth = np.asarray(sim.alt, np.int64), np.asarray(sim.depth, np.int64)
        adata = anndata.AnnData(X=sp.csr_matrix(depth), layers={"REF": sp.csr_matrix(depth - alt), "ALT": sp.csr_matrix(alt)})
        adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
        adata.var_names = [f"var{j}" for j in range(adata.n_vars)]
        adata.obs["clone_true"] = np.asarray(sim.labels).astype(str)
        return Loaded(adata, np.asarray(sim.labels))

    def execute(self, cfg, loaded: Loaded, points: PointCache | None = None) -> PipelineOutcome:
        from ..cclone import adjusted_rand_index
        from ..models import fit_allele_anndata
        from ._mixture_tasks import _finish

        m, f = cfg.model, cfg.fit
        sizes = cfg.sweep.get("n_clones", [m["n_clones"]])
        pos = {name: i for i, name in enumerate(loaded.adata.obs_names)}

        def fit_point(k):
            t0 = time.perf_counter()
            out = fit_allele_anndata(loaded.adata, k, filter=m["filter"], min_maf=m["min_maf"],
                                     filter_germline=m["filter_germline"], min_cell_coverage=m["min_cell_coverage"],
                                     num_steps=m["num_steps"], lr=m["lr"], guide=m["guide"], likelihood=m["likelihood"],
                                     n_restarts=m["n_restarts"], restart_steps=m["restart_steps"],
                                     batch_size=m["batch_size"] or None, seed=f["seed"])
            losses = np.asarray(out.uns["allele_model"]["losses"], np.float64)
            row = {"n_clones": k, "elbo": float(-losses[-1]), "seconds": time.perf_counter() - t0}
            if loaded.labels is not None:
                truth = loaded.labels[[pos[n] for n in out.obs_names]]
                row["ari"] = adjusted_rand_index(np.asarray(out.obsm["clone_prob"]).argmax(axis=1), truth)
            return row, out

        rows, results = fit_sweep(points, "n_clones", sizes, fit_point)

        def figure(folder, out, table):
            from ._mixture_tasks import clone_figure

            def elbo_trace(ax):
                ax.plot(np.asarray(out.uns["allele_model"]["losses"]))
                ax.set_xlabel("SVI step")
                ax.set_ylabel("-ELBO")
                ax.set_yscale("symlog")

            clone_figure(folder, "allele_model.png", out, table, "n_clones", "elbo", extra=elbo_trace)

        return _finish(cfg, rows, results, lambda out: out, figure, "elbo", "max")
