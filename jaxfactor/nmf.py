"""Non-negative matrix factorisation: ``jaxfactor.nmf.fit(X, n_components, ...)``.

See :mod:`jaxfactor.factorization._nmf` for the maths and the update rules. ``fit(..., mesh=
jaxfactor.cell_mesh())`` splits the cells (rows of X and W) of one large fit over devices.
"""

from .factorization import (  # noqa: F401  (public re-exports)
    INITS,
    METHODS,
    ConvergenceWarning,
    NMFHparams,
    NMFResult,
    NMFState,
    fit,
    frobenius_objective,
    kl_objective,
    nmf_hals,
    nmf_kl,
    nmf_mu,
    nmf_pgd,
    nndsvd_init,
    random_init,
    randomized_svd,
)

__all__ = [
    "INITS", "METHODS", "ConvergenceWarning", "NMFHparams", "NMFResult", "NMFState", "fit", "frobenius_objective",
    "kl_objective", "nmf_hals", "nmf_kl", "nmf_mu", "nmf_pgd",
    "nndsvd_init", "random_init", "randomized_svd",
]
