"""Loading a run config: TOML -> ``--set`` overrides -> validation -> resolved paths and sweep.

Relative paths written in the TOML file are relative to that file; paths given with ``--set``
are relative to the current directory (where the user typed them).
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field

from ._models import ModelSpec, get_model
from ._precheck import load_toml, parse_override
from ._schema import (
    DATA_FILE_FIELDS, FIT_FIELDS, RUN_FIELDS, SECTIONS, TOP_LEVEL, ConfigError, Field, check_value,
    fields_from_signature, validate_table,
)


@dataclass
class RunConfig:
    """A validated config. ``raw`` is the resolved dict written to the output folder."""

    data: dict
    model: dict
    fit: dict
    run: dict
    sweep: dict[str, list]
    spec: ModelSpec
    raw: dict
    points: list[dict] = field(default_factory=list)  # one dict of model values per sweep point


def _data_fields(data: dict, spec: ModelSpec) -> dict[str, Field]:
    if sum(k in data for k in ("simulator", "path", "example")) > 1:
        raise ConfigError("[data] takes one of 'simulator', 'path' or 'example', not several")
    simulators = spec.simulators
    if "simulator" in data:
        name = data["simulator"]
        if name not in simulators:
            raise ConfigError(f"unknown data.simulator {name!r} for model '{spec.name}'; available: {', '.join(simulators)}")
        return {"simulator": Field(str, choices=tuple(simulators)), **fields_from_signature(simulators[name])}
    if "path" in data:
        return DATA_FILE_FIELDS
    if "example" in data:  # real counts shipped through PyPI (jaxfactor.data.example_counts)
        from ..data import EXAMPLES

        return {"example": Field(str, choices=tuple(EXAMPLES), help="a real data set, fetched once and cached"),
                **{k: v for k, v in DATA_FILE_FIELDS.items() if k in ("layer", "label_key")}}
    raise ConfigError("[data] needs 'simulator' (e.g. simulator = \"nmf\"), 'path' (a .h5ad/.npy/.npz/.csv file) "
                      "or 'example' (e.g. example = \"cbmc\")")


def _rename_aliases(raw: dict, spec: ModelSpec) -> None:
    """Deprecated [model] / [sweep] key names of a model (``spec.aliases``: old -> new key, or
    ``"fit.<key>"``) renamed in place, with a warning; old and new both given is an error."""
    import warnings

    for old, new in spec.aliases.items():
        section, _, key = (new or "").rpartition(".")
        for where in ("model", "sweep"):
            table = raw.get(where, {})
            if old not in table:
                continue
            if new is None:
                warnings.warn(f"{where}.{old} is no longer used by model '{spec.name}' (ignored)", DeprecationWarning,
                              stacklevel=3)
                table.pop(old)
                continue
            target = raw.setdefault(section, {}) if section else table
            if where == "sweep" and section:
                raise ConfigError(f"sweep.{old} cannot be swept any more: it is {new} (one value per run)")
            if key in target:
                raise ConfigError(f"both {where}.{old} and {section or where}.{key} given; keep only {section or where}.{key}")
            warnings.warn(f"{where}.{old} is deprecated for model '{spec.name}'; use {section or where}.{key}",
                          DeprecationWarning, stacklevel=3)
            if target is table:  # renamed where it stood: a sweep's key order is its points' order
                items = [(key if k == old else k, v) for k, v in table.items()]
                table.clear()
                table.update(items)
            else:
                target[key] = table.pop(old)


def build_config(raw: dict, *, config_dir: str, overrides: list[str] = ()) -> RunConfig:
    raw = copy.deepcopy(raw)
    for key in raw:
        if key not in SECTIONS + TOP_LEVEL:
            raise ConfigError(f"unknown section or key '{key}'; valid: {', '.join(SECTIONS + TOP_LEVEL)}")
    for section in SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"'{section}' must be a table ([{section}])")
    data_path = raw.get("data", {}).get("path")
    if isinstance(data_path, str):
        raw["data"]["path"] = os.path.abspath(os.path.join(config_dir, os.path.expanduser(data_path)))
    for item in overrides:
        (section, key), value = parse_override(item)
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section '{section}'; valid: {', '.join(SECTIONS)}")
        if section == "data" and key == "path" and isinstance(value, str):
            value = os.path.abspath(os.path.expanduser(value))
        if section == "data" and key in ("path", "simulator"):  # your own data replaces a config's example
            raw.get("data", {}).pop("example", None)
        raw.setdefault(section, {})[key] = value
    swept_here = {parse_override(item)[0][1] for item in overrides if parse_override(item)[0][0] == "sweep"}
    for item in overrides:  # a --set of a [model] key the config's sweep also sets would be silently overridden
        (section, key), _ = parse_override(item)
        if section == "model" and key in raw.get("sweep", {}) and key not in swept_here:
            raise ConfigError(f"--set {item!r}: model.{key} is swept (sweep.{key} = {raw['sweep'][key]!r}), so this value "
                              f"would be ignored; set sweep.{key} = [...] instead")

    if "data" not in raw:
        raise ConfigError("the config needs a [data] table")
    if "model" not in raw or "name" not in raw["model"]:
        raise ConfigError("the config needs [model] with a name (e.g. name = \"nmf\")")
    try:
        spec = get_model(raw["model"]["name"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    _rename_aliases(raw, spec)
    fit_raw = raw.get("fit", {})
    if "n_restarts" in fit_raw:  # the [fit] name before the one vocabulary (n_init, as scikit-learn)
        import warnings

        if "n_init" in fit_raw:
            raise ConfigError("both fit.n_restarts and fit.n_init given; keep only fit.n_init")
        warnings.warn("fit.n_restarts is deprecated; use fit.n_init", DeprecationWarning, stacklevel=2)
        fit_raw["n_init"] = fit_raw.pop("n_restarts")
    sweep_raw = raw.get("sweep", {})
    model_fields = spec.fields
    sweepable = spec.sweepable or [k for k in model_fields if k != "name"]
    sweep = {}
    for key, values in sweep_raw.items():
        if key not in sweepable:
            raise ConfigError(f"unknown key 'sweep.{key}'; a sweep runs over [model] keys: {', '.join(sweepable)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key} must be a non-empty list, got {values!r}")
        sweep[key] = [check_value(f"sweep.{key}[{i}]", v, model_fields[key]) for i, v in enumerate(values)]
    # A swept key needs no value in [model]; fill it with the first sweep value for validation.
    model_table = {**{k: v[0] for k, v in sweep.items() if k not in raw["model"]}, **raw["model"]}

    data = validate_table("data", raw["data"], _data_fields(raw["data"], spec))
    model = validate_table("model", model_table, model_fields)
    fit_fields = spec.fit_fields or {k: FIT_FIELDS[k] for k in spec.fit_keys}
    fit = validate_table("fit", raw.get("fit", {}), fit_fields)
    run = validate_table("run", raw.get("run", {}), RUN_FIELDS)
    for key in ("max_iter", "n_init", "chunk_size"):
        rule = key in fit_fields and fit_fields[key].default == 0  # 0 is the family's own rule (the VAE's epochs)
        if key in fit and fit[key] != "auto" and fit[key] < (0 if rule else 1):
            raise ConfigError(f"fit.{key} must be >= {0 if rule else 1}{' (0: the family rule)' if rule else ''}, "
                              f"got {fit[key]}")
    if run["max_points_per_call"] < 0:
        raise ConfigError(f"run.max_points_per_call must be >= 0 (0: all points of a group in one call), got {run['max_points_per_call']}")
    if fit.get("tol", 0) < 0:
        raise ConfigError(f"fit.tol must be >= 0, got {fit['tol']}")

    names = list(sweep)
    points = [{**model, **dict(zip(names, combo))} for combo in itertools.product(*(sweep[n] for n in names))]
    hp = getattr(spec.model, "hparams", None)
    for key in set(spec.hparams) | set(hp._fields if hp is not None else ()):  # penalties, priors: numbers >= 0
        if model[key] < 0:
            raise ConfigError(f"model.{key} must be >= 0, got {model[key]}")
        bad = sorted({p[key] for p in points if p[key] < 0})
        if bad:
            raise ConfigError(f"sweep.{key} must be >= 0, got {bad[0]}")
    if "example" in data:  # fetched (first use) only once the whole config is valid; then a data file like any other
        from ..data import example_path

        try:
            example = {"path": example_path(data.pop("example")), "format": "h5ad"}
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        data = {**{k: f.default for k, f in DATA_FILE_FIELDS.items() if k != "path"}, **data, **example}
    resolved = {"data": data, "model": model, "fit": fit, "run": run}
    if sweep:
        resolved["sweep"] = sweep
    if "description" in raw:
        resolved["description"] = str(raw["description"])
    return RunConfig(data, model, fit, run, sweep, spec, resolved, points)


def load_config(path: str, overrides: list[str] = ()) -> RunConfig:
    return build_config(load_toml(path), config_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)
