"""What the runner knows about each model: its config keys, how to build the algorithm, and how
to turn a fitted state into named arrays, AnnData slots and figures.

``static`` keys fix shapes or program structure: each distinct combination is its own compiled
call. ``hparams`` keys are numbers: a sweep over them is vmapped inside one compiled call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .._validate import check_n_components
from ._schema import INT_OR_AUTO, Field

if TYPE_CHECKING:
    from .._base import Algorithm


@dataclass(frozen=True)
class ModelSpec:
    """A model the runner can fit.

    A *grid* family (NMF: its fitted-model class sets ``hparams``) gives ``build`` /
    ``make_hparams`` / ``outputs`` / ``model`` (see :func:`grid_spec`) and the runner fits every
    sweep point with ``fit_many``. Every other family (:func:`family_spec`) gives ``pipeline``,
    the runner's :class:`FamilyTask` for it (``load(cfg)``, ``execute(cfg, loaded, points)``
    returning a ``PipelineOutcome``); the runner then only validates, times and writes.
    """

    name: str
    static: dict[str, Field]
    hparams: dict[str, Field]
    simulators: dict[str, Callable]
    fit_keys: tuple = ("max_iter", "tol", "n_init", "seed", "chunk_size")
    sweepable: tuple = ()  # empty: every model key
    hparams_cls: type | None = None
    build: Callable[[dict], Algorithm] | None = None
    check_data: Callable[[np.ndarray], np.ndarray] | None = None
    check_static: Callable[[dict, tuple], None] | None = None
    outputs: Callable[[Any, dict], dict[str, np.ndarray]] | None = None
    pipeline: Any = None
    model: Any = None  # a grid family's fitted-model class (jaxfactor.Fitted)
    aliases: dict = field(default_factory=dict)  # deprecated [model] key -> new key ("fit.<key>"; None: no longer used)
    fit_fields: dict | None = None  # [fit] fields with this model's defaults (None: FIT_FIELDS of fit_keys)

    @property
    def fields(self) -> dict[str, Field]:
        return {"name": Field(str, self.name), **self.static, **self.hparams}

    def make_hparams(self, values: dict) -> Any:
        return self.hparams_cls(**{k: values[k] for k in self.hparams})


def grid_spec(name: str, simulators: dict, aliases: dict | None = None) -> ModelSpec:
    """A grid family (its fitted-model class sets ``hparams``): run by the runner's vmapped sweep.
    ``[model]`` keys from the family's ``fit`` signature: its ``hparams`` are numbers of one
    compiled call, the other keys (rank, method, init) fix the program; outputs, AnnData, figures,
    truth and the saved model come from the family's fitted model."""
    from .._families import family
    from .._inputs import check_matrix
    from ._family_task import option_fields

    model = family(name).model
    fields = option_fields(model)
    hp = model.hparams._fields
    return ModelSpec(
        name=name,
        static={k: f for k, f in fields.items() if k not in hp},
        hparams={k: fields[k] for k in hp},
        simulators=simulators,
        hparams_cls=model.hparams,
        build=model.algorithm,
        check_data=lambda X: check_matrix(X, model.inputs, "the data matrix"),
        check_static=lambda s, shape: check_n_components(s["n_components"], shape),
        outputs=lambda state, static: model.state_arrays(state),
        model=model,
        aliases=aliases or {},
    )


def family_spec(name: str, simulators: dict, aliases: dict | None = None, defaults: dict | None = None) -> ModelSpec:
    """A model run by the runner's one family task: ``[model]`` keys from the family's ``fit``
    signature (``defaults`` overrides a default for configs, e.g. CCLONE's filters on, as the
    published tool runs), ``[fit]`` keys with the family's own defaults, every ``[model]`` key
    sweepable."""
    import inspect

    from .._families import family
    from ._family_task import FamilyTask, option_fields

    model = family(name).model
    static = option_fields(model)
    for key, value in (defaults or {}).items():
        static[key] = replace(static[key], default=value)
    sig = inspect.signature(model.fit).parameters
    fit_fields = {}
    for key, arg in (("max_iter", "max_iter"), ("tol", "tol"), ("n_init", "n_init"), ("seed", "seed")):
        default = sig[arg].default
        if default is not None:
            fit_fields[key] = Field(type(default), default, help=FIT_HELP[key])
        elif key == "n_init":  # None in Python: the family decides (e.g. per method)
            fit_fields[key] = Field(INT_OR_AUTO, "auto", help=FIT_HELP[key] + "; 'auto': the family's default")
    return ModelSpec(name=name, static=static, hparams={}, simulators=simulators, fit_keys=tuple(fit_fields), model=model,
                     sweepable=tuple(static), pipeline=FamilyTask(name), aliases=aliases or {}, fit_fields=fit_fields)


FIT_HELP = {"max_iter": "maximum iterations (EM iterations, SVI steps...) per fit",
            "tol": "relative change of the objective that counts as converged",
            "n_init": "random starts per fit, the best kept", "seed": "PRNG seed"}


def _builders() -> dict[str, Callable[[], ModelSpec]]:
    """How to build each model's spec (each imports only its own family, on first use)."""
    from ..data import simulate_clones, simulate_counts, simulate_gmm, simulate_nmf, simulate_ppca, simulate_zinb

    return {
        "nmf": lambda: grid_spec("nmf", {"nmf": simulate_nmf}),
        "cclone": lambda: family_spec("cclone", {"clones": simulate_clones},
                                      {"k": "n_components", "n_cycles": "fit.max_iter", "tol": "fit.tol"}, {"filter": True}),
        "gmm": lambda: family_spec("gmm", {"gmm": simulate_gmm}),
        "ppca": lambda: family_spec("ppca", {"ppca": simulate_ppca}),
        "binomial_mixture": lambda: family_spec("binomial_mixture", {"clones": simulate_clones}, {"n_clones": "n_components"}),
        "allele_model": lambda: family_spec("allele_model", {"alleles": _allele_simulator()},
                                            {"n_clones": "n_components", "num_steps": "fit.max_iter", "n_restarts": "fit.n_init"}),
        "vae": lambda: family_spec("vae", {"counts": simulate_counts},
                                   {"n_latent": "n_components", "max_epochs": "fit.max_iter", "label_key": "data.label_key",
                                    "checkpoint": None}),
        "zinbwave": lambda: family_spec("zinbwave", {"zinb": simulate_zinb},
                                        {"X_columns": "X", "V_columns": "V", "label_key": "data.label_key"}),
        "clones": lambda: family_spec("clones", {"clones": simulate_clones},
                                      {"n_clones": "n_components", "n_init": "fit.n_init", "max_iter": "fit.max_iter",
                                       "tol": "fit.tol"}, {"site_dropout": True}),
    }


def _allele_simulator():
    from ..models._allele_model import simulate_allele_counts

    return simulate_allele_counts


NAMES = ("nmf", "cclone", "gmm", "ppca", "binomial_mixture", "allele_model", "vae", "zinbwave", "clones")


class _Models(Mapping):
    """The runner's models by name; a model's spec (and its family's modules, JAX, NumPyro, Flax)
    is built on first access, so validating a GMM config never imports the VAE."""

    def __init__(self):
        self._specs: dict[str, ModelSpec] = {}

    def __getitem__(self, name: str) -> ModelSpec:
        if name not in NAMES:
            raise KeyError(name)
        if name not in self._specs:
            self._specs[name] = _builders()[name]()
        return self._specs[name]

    def __iter__(self):
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)


MODELS: Mapping[str, ModelSpec] = _Models()


def get_model(name: Any) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; available models: {', '.join(MODELS)}")
    return MODELS[name]


def to_device_array(X: np.ndarray, x64: bool):
    import jax.numpy as jnp

    return jnp.asarray(X, jnp.float64 if x64 else jnp.float32)


def _together(model) -> list:
    """The options a family fits in one compiled call across sweep points (its ``hparams``, or its
    ``sweep_together``)."""
    if model is None:
        return []
    hp = getattr(model, "hparams", None)
    return list(hp._fields) if hp is not None else list(getattr(model, "sweep_together", ()))


def describe_models(name: str | None = None) -> str:
    """``jaxfactor models``: one line per model; with ``name``, its config keys: section, type,
    default, allowed values, whether a [sweep] may list it, and help."""
    from ._schema import FIT_FIELDS, REQUIRED, _TYPE_NAMES

    if name is None:
        lines = []
        for key, spec in MODELS.items():
            names = list(spec.hparams) or _together(spec.model)
            vmapped = bool(spec.hparams) or getattr(spec.model, "hparams", None) is not None
            hp = (f"; {'vmapped hyperparameters' if vmapped else 'in one compiled call across sweep points:'} "
                  f"{', '.join(names)}") if names else ""
            lines.append(f"{key}: [model] {', '.join(spec.static)}{hp}; data simulators {', '.join(spec.simulators)}")
        return "\n".join(lines + ["(jaxfactor models NAME: a model's keys with types, defaults and help)"])
    spec = get_model(name)
    sweepable = set(spec.sweepable or [k for k in spec.fields if k != "name"])
    fit = spec.fit_fields or {k: FIT_FIELDS[k] for k in spec.fit_keys}

    def row(section, key, f):
        default = "required" if f.default is REQUIRED else repr(f.default)
        choices = f" one of {', '.join(map(repr, f.choices))};" if f.choices else ""
        vmapped = set(spec.hparams) | set(_together(spec.model))
        sweep = (" sweepable (one compiled call across points);" if key in vmapped else " sweepable;") if section == "model" and key in sweepable else ""
        return f"  {section + '.' + key:<28} {_TYPE_NAMES[f.type]}, default {default};{choices}{sweep} {f.help}".rstrip(" ;")

    lines = [f"{name}: data simulators {', '.join(spec.simulators)} (or data.path)"]
    lines += [row("model", k, f) for k, f in {**spec.static, **spec.hparams}.items()]
    lines += [row("fit", k, f) for k, f in fit.items()]
    if spec.aliases:
        lines.append("  deprecated: " + ", ".join(f"{old} -> {new}" if new else f"{old} (no longer used)"
                                                  for old, new in spec.aliases.items()))
    return "\n".join(lines)
