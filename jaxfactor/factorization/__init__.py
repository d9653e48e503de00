"""Matrix factorisations (NMF; weighted NMF and ZINB-WaVE as they land)."""

from ._nmf import (
    METHODS, NMF_CELLS, NMFHparams, NMFState, frobenius_objective, kl_objective, nmf_hals, nmf_kl, nmf_mu,
    nmf_pgd,
)
from ._nmf_api import ConvergenceWarning, NMFResult, fit
from ._nmf_init import INITS, nndsvd_init, random_init, randomized_svd
from ._wnmf import (
    WNMF_CELLS, WNMF_METHODS, WNMFData, WNMFHparams, WNMFState, box_qp_rows, fit_wnmf, weighted_loss, wnmf_bcd,
    wnmf_data, wnmf_mu,
)
from ._zinb import ZINBData, ZINBHparams, ZINBState
from ._zinb_alg import zinbwave_algorithm
from ._zinb_fit import ZINBWaVEResult, fit_zinbwave

__all__ = [
    "INITS", "METHODS", "NMF_CELLS", "ConvergenceWarning", "NMFHparams", "NMFResult", "NMFState", "fit", "frobenius_objective",
    "kl_objective", "nmf_hals", "nmf_kl", "nmf_mu", "nmf_pgd", "nndsvd_init", "random_init", "randomized_svd",
    "WNMF_CELLS", "WNMF_METHODS", "WNMFData", "fit_wnmf", "WNMFHparams", "WNMFState", "box_qp_rows", "weighted_loss", "wnmf_bcd", "wnmf_data",
    "wnmf_mu", "ZINBData", "ZINBHparams", "ZINBState", "ZINBWaVEResult", "fit_zinbwave", "zinbwave_algorithm",
]
