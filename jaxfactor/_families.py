"""The one registry of model families: name → :class:`Family` (its fitted-model class, whose
``fit`` / ``simulate`` / ``kernel`` the runner, ``jaxfactor predict`` and the tests use; and,
where the family is an :class:`~jaxfactor.Algorithm`, the factory a vmapped sweep compiles).

Adding a family: its own modules (maths, a :class:`~jaxfactor.Fitted` subclass) and one line in
``_ENTRIES`` below. Modules are imported on first use, so ``import jaxfactor`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple


class Family(NamedTuple):
    """A registered family. ``model`` is its :class:`~jaxfactor.Fitted` subclass: ``fit`` and
    ``simulate`` are its classmethods; ``algorithm`` (or None) builds its ``Algorithm``."""

    name: str
    model: type
    algorithm: Callable | None
    description: str

    @property
    def fit(self):
        return self.model.fit

    @property
    def simulate(self):
        return self.model.simulate


# name: (fitted-model class, Algorithm factory or None, one line)
_ENTRIES = {
    "nmf": ("jaxfactor.factorization._nmf_model:NMFModel", "jaxfactor.factorization._nmf:nmf_mu",
            "non-negative matrix factorisation X ≈ WH (Frobenius MU / PGD, or KL)"),
    "cclone": ("jaxfactor.cclone._model:CCLONEModel", "jaxfactor.factorization._wnmf:wnmf_bcd",
               "CCLONE: bootstrapped box-constrained weighted NMF of variant calls"),
    "gmm": ("jaxfactor.mixture._models:GMMModel", "jaxfactor.mixture._gmm:gmm", "Gaussian mixture by EM"),
    "ppca": ("jaxfactor.mixture._models:PPCAModel", "jaxfactor.mixture._ppca:ppca", "probabilistic PCA by EM"),
    "binomial_mixture": ("jaxfactor.mixture._models:BinomialModel", "jaxfactor.mixture._binomial:binomial_mixture_em",
                         "binomial mixture of allele counts (vireoSNP's model), EM or VB"),
    "allele_model": ("jaxfactor.models._allele_model:AlleleModel", None,
                     "NumPyro allele-count model with allelic dropout, by SVI"),
    "vae": ("jaxfactor.models._vae_model:VAEModel", "jaxfactor.models._vae_train:vae_training",
            "Flax VAE / autoencoder for counts (ELBO)"),
    "zinbwave": ("jaxfactor.factorization._zinb_model:ZINBWaVEModel", "jaxfactor.factorization._zinb_alg:zinbwave_algorithm",
                 "ZINB-WaVE: zero-inflated negative-binomial factorisation"),
    "clones": ("jaxfactor.clones._model:CloneCalls", None,
               "clone calling: every cell cancer / healthy and its clone, with a posterior"),
}


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def families() -> list[str]:
    """Names of the registered families."""
    return list(_ENTRIES)


def family(name: str) -> Family:
    """The registered family ``name``."""
    if name not in _ENTRIES:
        raise ValueError(f"unknown model family {name!r}; available: {', '.join(_ENTRIES)}")
    model, alg, doc = _ENTRIES[name]
    return Family(name, _load(model), _load(alg) if alg else None, doc)


def fit(name: str, data, n_components=None, **options):
    """``family(name).fit(data, n_components, **options)``: every family in one vocabulary
    (``n_components``, ``layer``, ``n_init``, ``max_iter``, ``tol``, ``seed``, ``mesh``)."""
    return family(name).fit(data, n_components, **options)


def load(path: str):
    """A fitted model saved with ``model.save(path)``, of any family."""
    from ._protocol import Fitted

    return Fitted.load(path)
