"""The ZINB-WaVE ``Algorithm``: the outer iteration of :mod:`._zinb` (dispersion, gene block,
cell block, orthogonalisation, intercept balance) with the initialisation of :mod:`._zinb_init`
(Risso et al., Nat. Commun. 9, 284, 2018)."""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .._base import Algorithm
from .._registry import register_example
from ._zinb import (
    ZINBData, _balance_intercepts, _cell_block, _dispersion, _gene_block, _orth_state, default_hparams,
    penalized_log_likelihood,
)
from ._zinb_init import make_init


@lru_cache(maxsize=None)
def zinbwave_algorithm(n_components: int, zero_inflation: bool = True, common_dispersion: bool = False, *,
                       intercepts: bool = False, n_inner: int = 1, max_dispersion_iter: int = 10,
                       max_halvings: int = 10) -> Algorithm:
    """The ZINB-WaVE ``Algorithm`` (cached per static choice).

    Data ``ZINBData``; hyperparameters ``ZINBHparams``; state ``ZINBState``. ``step`` is one
    outer iteration (module docstring) with ``n_inner`` Fisher-scoring steps per block;
    ``intercepts=True`` promises that the first columns of X and V are all ones, and adds the
    exact intercept re-balancing ``_balance_intercepts`` to every step;
    ``objective`` is −PLL; ``monotone=True``. Use ``chunk_size=1`` with ``jaxfactor.fit`` to test
    convergence after every outer iteration as zinbwave does.
    """
    K, zi, common = int(n_components), bool(zero_inflation), bool(common_dispersion)
    if K < 0:
        raise ValueError(f"n_components must be >= 0, got {n_components}")

    def step(st, d, hp):
        st = _dispersion(st, d, hp, zi, common, max_dispersion_iter, max_halvings)
        st = _gene_block(st, d, hp, zi, n_inner, max_halvings)
        if K:
            st = _orth_state(st, hp)
        st = _cell_block(st, d, hp, zi, n_inner, max_halvings)
        if K:
            st = _orth_state(st, hp)
        if intercepts:
            st = _balance_intercepts(st, hp, zi, d)
        return st

    def objective(st, d, hp):
        return -penalized_log_likelihood(st, d, hp, zi)

    return Algorithm(make_init(K, zi), step, objective, monotone=True)


def _example():
    from ..data._simulate_zinb import simulate_zinb

    sim = simulate_zinb(n_cells=40, n_genes=30, n_components=2, seed=0)
    X, V = np.ones((40, 1)), np.ones((30, 1))
    data = ZINBData(jnp.asarray(sim.X, jnp.float32), jnp.asarray(X, jnp.float32), jnp.asarray(V, jnp.float32))
    hp = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), default_hparams(X, V))
    return zinbwave_algorithm(2, intercepts=True), data, hp


register_example("zinbwave", _example)
