"""jaxfactor: statistical models of single-cell analysis as pure JAX functions.

Public API: every model family through one protocol (``family(name).fit(data, n_components, ...)``
returns a ``Fitted`` model with ``to_anndata``, ``transform`` / ``predict``, ``scores``, ``save``;
``load(path)``; ``families()`` lists them), the algorithm contract (``Algorithm``, ``FitResult``),
the shared fit loop (``fit``, ``fit_fixed``, ``fit_many``, ``hparam_grid``), the model modules
(``jaxfactor.nmf``, ``mixture``, ``models``, ``zinbwave``, ``cclone``, ``clones``), data adapters
and simulators (``jaxfactor.data``).
"""

from ._cache import _enable_on_import, compilation_cache_dir, enable_compilation_cache

_enable_on_import()  # compile once per machine: JAX's persistent compilation cache (see jaxfactor._cache)

from ._base import Algorithm, ConvergenceWarning, FitResult  # noqa: E402
from ._cells import cell_mesh
from ._fit import FitManyResult, fit, fit_batch, fit_fixed, fit_many, fit_restarts, hparam_grid
from ._registry import registered
from ._families import families, family, load
from ._protocol import Fitted, Score
from . import data, mixture, nmf  # noqa: E402  (registers the algorithms)

__version__ = "0.1.0"


def __getattr__(name):
    # jaxfactor.cclone pulls in scipy.optimize; import it (and jaxfactor.zinbwave) on first use, not with jaxfactor.
    if name in ("cclone", "clones", "zinbwave"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxfactor' has no attribute {name!r}")


__all__ = [
    "Fitted", "Score", "families", "family", "load", "Algorithm", "ConvergenceWarning", "cell_mesh", "FitManyResult", "cclone", "clones", "zinbwave", "FitResult", "__version__", "data", "fit", "fit_batch", "fit_fixed", "fit_many", "fit_restarts", "hparam_grid",
    "mixture", "nmf", "registered", "compilation_cache_dir", "enable_compilation_cache",
]
