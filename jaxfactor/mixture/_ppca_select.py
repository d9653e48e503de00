"""Choosing the PPCA latent dimension q: BIC on all rows, or the held-out log-likelihood
(the criteria and splits of :mod:`._select`, the fits of :mod:`._ppca`)."""

from __future__ import annotations

from typing import Iterable

from .._validate import as_matrix
from ._ppca import _check_ppca_input, _result_from_closed_form, fit_ppca, ppca_closed_form
from ._select import CRITERIA, Selection, heldout_split, select_k


def select_ppca_components(
    X,
    ks: Iterable[int],
    *,
    criterion: str = "bic",
    method: str = "em",
    fraction: float = 0.1,
    seed: int = 0,
    **fit_kwargs,
) -> Selection:
    """Choose the PPCA latent dimension q among ``ks``.

    ``criterion="bic"`` fits every q on all of X and minimises ``bic(n · mean LL, p(q), n)``;
    ``criterion="heldout"`` fits on a random ``1 − fraction`` of the rows (``heldout_split``) and
    maximises the mean log-likelihood of the held-out rows. ``method="em"`` fits with
    ``fit_ppca`` (``fit_kwargs`` go there); ``"closed_form"`` uses the exact maximum-likelihood
    solution (``ppca_closed_form``), which EM converges to.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if method not in ("em", "closed_form"):
        raise ValueError(f"unknown method {method!r}; choose 'em' or 'closed_form'")
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty; pass the candidate numbers of components, e.g. range(1, 6)")
    Xn = as_matrix(X, "X", nonnegative=False)
    if criterion == "heldout":
        train, test = heldout_split(Xn.shape[0], fraction, seed)
        X_fit, X_test = Xn[train], Xn[test]
    else:
        X_fit = Xn

    for k in ks:  # every candidate is checked before anything compiles
        _check_ppca_input(X_fit, k)

    def one(k):
        if method == "closed_form":
            return _result_from_closed_form(ppca_closed_form(X_fit, k), X_fit)
        return fit_ppca(X_fit, k, seed=seed, **fit_kwargs)

    fits = {int(k): one(k) for k in ks}
    if criterion == "bic":
        scores = {k: r.bic() for k, r in fits.items()}
        best = select_k(scores, "min")
    else:
        scores = {k: r.score(X_test) for k, r in fits.items()}
        best = select_k(scores, "max")
    return Selection(best, scores, criterion, fits)
