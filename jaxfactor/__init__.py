"""jaxfactor: statistical models of single-cell analysis as pure JAX functions.

Public API: every model family through one protocol (``family(name).fit(data, n_components, ...)``
returns a ``Fitted`` model with ``to_anndata``, ``transform`` / ``predict``, ``scores``, ``save``;
``load(path)``; ``families()`` lists them), the algorithm contract (``Algorithm``, ``FitResult``),
the shared fit loop (``fit``, ``fit_fixed``, ``fit_many``, ``hparam_grid``), the model modules
(``jaxfactor.nmf``, ``mixture``, ``models``, ``zinbwave``, ``cclone``, ``clones``), data adapters
and simulators (``jaxfactor.data``).

``import jaxfactor`` is light: it turns on the persistent compilation cache (through JAX's
environment variables when JAX is not imported yet, see ``jaxfactor._cache``) and imports JAX
and the models on first use of a name, so the command line answers a bad config or a missing
file before JAX loads.
"""

import importlib

from ._cache import _enable_on_import, compilation_cache_dir, enable_compilation_cache

_enable_on_import()  # compile once per machine: JAX's persistent compilation cache (see jaxfactor._cache)

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_LAZY = {
    "Algorithm": "._base", "ConvergenceWarning": "._base", "FitResult": "._base",
    "cell_mesh": "._cells",
    "FitManyResult": "._fit", "fit": "._fit", "fit_batch": "._fit", "fit_fixed": "._fit", "fit_many": "._fit",
    "fit_restarts": "._fit", "hparam_grid": "._fit",
    "families": "._families", "family": "._families", "load": "._families",
    "Fitted": "._protocol", "Score": "._protocol",
}
_SUBMODULES = ("data", "mixture", "nmf", "models", "cclone", "clones", "zinbwave", "factorization", "runner")


def _registering() -> None:
    """The algorithm modules register their examples when imported (``registered()``)."""
    for name in ("data", "mixture", "nmf"):
        importlib.import_module(f".{name}", __name__)


def registered(*args, **kwargs):
    """The registered algorithm examples (see ``jaxfactor._registry.registered``)."""
    _registering()
    from ._registry import registered as _registered

    return _registered(*args, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'jaxfactor' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "Fitted", "Score", "families", "family", "load", "Algorithm", "ConvergenceWarning", "cell_mesh", "FitManyResult", "cclone", "clones", "zinbwave", "FitResult", "__version__", "data", "fit", "fit_batch", "fit_fixed", "fit_many", "fit_restarts", "hparam_grid",
    "mixture", "nmf", "registered", "compilation_cache_dir", "enable_compilation_cache",
]
