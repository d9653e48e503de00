"""What ``jaxfactor predict`` needs from a model: a :class:`Predictor` (inputs, load, a pure
batchable kernel, write), and the registry that finds one by model name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Predictor:
    """How one model predicts.

    ``inputs(config) -> tuple of matrix names`` in DATA ("X" or a layer name), streamed per batch;
    ``load(run_dir, fitted, config) -> (params, static)``: arrays held fixed (a pytree) and
    hashable settings passed to ``kernel`` as keywords;
    ``kernel(params, *blocks, **static) -> dict`` of (batch, ...) arrays, pure and jittable;
    ``write(out_adata, outputs, params, static)`` stores the concatenated outputs;
    ``check(outputs, start, static)``, if given, sees each batch's outputs (padding dropped; the
    batch starts at cell ``start``) as soon as they are computed and raises a one-line
    ``ValueError`` if they flag bad input (so the kernel validates its block on the device);
    ``input_kind(config)``, if given, names the rules every streamed block must follow
    (``jaxfactor._inputs.check_block``: ``"matrix"``, ``"nonnegative"``, ``"counts"`` or
    ``"alleles"``), the rules the fit applied to its own data; ``named(config)``, if given and
    False, says the fit's variables had no names: DATA must then have exactly as many, in order.
    """

    inputs: Callable[[dict], tuple[str, ...]]
    load: Callable[[str, Any, dict], tuple[Any, dict]]
    kernel: Callable
    write: Callable
    batch_size: int = 16384
    fitted_vars: Callable[[Any, dict], Any] = field(default=lambda fitted, config: fitted.var_names)
    check: Callable | None = None
    input_kind: Callable[[dict], str] | None = None
    named: Callable[[dict], bool] | None = None  # False: the fit's variables had no names (match by position)


PREDICTORS: dict[str, Predictor] = {}


def register(name: str, predictor: Predictor) -> None:
    """Make ``jaxfactor predict`` work for run folders of model ``name``."""
    PREDICTORS[name] = predictor


def lookup(name: str) -> Predictor | None:
    """The predictor of model ``name`` (every registered family has one, see ``_predict``)."""
    return PREDICTORS.get(name)
