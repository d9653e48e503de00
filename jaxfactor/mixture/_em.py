"""EM as alternating maximisation, on the algorithm contract.

Neal & Hinton ("A view of the EM algorithm that justifies incremental, sparse, and other
variants", 1998) write EM as coordinate ascent on

    G(Q, θ) = Σ_i Σ_y Q_iy log P_θ(x_i, y) − Σ_i Σ_y Q_iy log Q_iy,

with rows of Q on the simplex: the E-step Q ← argmax_Q G(Q, θ) gives the posterior
responsibilities and makes G(Q, θ) = L(θ); the M-step θ ← argmax_θ G(Q, θ) can only raise G, so
the log-likelihood L never decreases. Mean-field variational Bayes is the same alternation on
the ELBO with Q ranging over factorised posteriors.

An ``EMModel`` is four pure functions; ``em_algorithm`` turns it into an ``Algorithm`` whose state
is the parameter pytree θ, whose ``step`` is one E-step followed by one M-step, and whose
``objective`` is the negative log-likelihood (or negative ELBO), so the shared ``fit`` loop, its
relative tolerance, traces, restarts (``fit_many``) and the conformance suite apply unchanged.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from .._base import Algorithm


class EMModel(NamedTuple):
    init: Callable  # (key, data, hp) -> params
    e_step: Callable  # (params, data, hp) -> posterior (e.g. responsibilities)
    m_step: Callable  # (posterior, data, hp) -> params
    log_likelihood: Callable  # (params, data, hp) -> scalar, higher is better (total over samples)


def em_algorithm(model: EMModel) -> Algorithm:
    """The ``Algorithm`` of an EM model: objective = −log-likelihood, promised monotone."""

    def step(params, data, hp):
        return model.m_step(model.e_step(params, data, hp), data, hp)

    def objective(params, data, hp):
        return -model.log_likelihood(params, data, hp)

    return Algorithm(model.init, step, objective, monotone=True)


# The cells of one large fit split over a cell mesh (masked rows: ``CellData``, ``Cells``,
# ``on_cells``) live with every other family's cell sharding in :mod:`jaxfactor._cells`.
