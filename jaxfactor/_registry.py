"""Registry of every algorithm, with a small example problem for the conformance suite.

Each model module registers ``name -> make()`` where ``make()`` returns ``(alg, data, hp)`` of a
small problem. ``tests/test_conformance.py`` runs every entry through the contract checks (jit,
no retrace, vmap over seeds, finite output, monotone objective where ``alg.monotone``).
"""

from __future__ import annotations

from typing import Callable

EXAMPLES: dict[str, Callable] = {}


def register_example(name: str, make: Callable) -> None:
    if name in EXAMPLES:
        raise ValueError(f"algorithm {name!r} is registered twice")
    EXAMPLES[name] = make


def registered() -> dict[str, Callable]:
    """Name -> ``make() -> (Algorithm, data, hp)`` for every registered algorithm."""
    return dict(EXAMPLES)


def _lazy(module: str, attr: str) -> Callable:
    """A ``make`` that imports ``module`` only when called (for models whose imports are heavy,
    such as the Flax VAE, which ``import jaxfactor`` does not load)."""

    def make():
        import importlib

        return getattr(importlib.import_module(module), attr)()

    return make


register_example("vae_nb", _lazy("jaxfactor.models._vae_train", "example"))
