"""Config schema: typed fields per section, and validation with errors that name the key.

A config is a TOML document with the sections ``[data]``, ``[model]``, ``[fit]``, ``[run]`` and an
optional ``[sweep]``. The valid keys of ``[data]`` depend on its ``simulator`` or ``path``; those
of ``[model]`` on its ``name``. Every unknown key or wrong type is a ``ConfigError`` (a
``ValueError``) naming the key and listing the valid ones.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from .._protocol import IntOrAuto as INT_OR_AUTO  # field type: an integer >= 1 or "auto"

REQUIRED = object()


class ConfigError(ValueError):
    """A problem in a run config; the message names the key and the fix."""


@dataclass(frozen=True)
class Field:
    type: type
    default: Any = REQUIRED
    choices: tuple | None = None
    help: str = ""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list of strings",
               INT_OR_AUTO: "an integer >= 1 or \"auto\""}


def check_value(where: str, value: Any, field: Field) -> Any:
    """Return ``value`` coerced to ``field.type`` (int -> float only) or raise ``ConfigError``."""
    t = field.type
    ok = (
        (t is bool and isinstance(value, bool))
        or (t is int and isinstance(value, int) and not isinstance(value, bool))
        or (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (t is str and isinstance(value, str))
        or (t is list and isinstance(value, list) and all(isinstance(v, str) for v in value))
        or (t is INT_OR_AUTO and (value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)))
    )
    if not ok:
        raise ConfigError(f"{where} must be {_TYPE_NAMES[t]}, got {value!r} ({type(value).__name__})")
    if t is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value}")
    if field.choices is not None and value not in field.choices:
        raise ConfigError(f"{where} = {value!r} is not one of: {', '.join(map(repr, field.choices))}")
    return value


def validate_table(section: str, table: dict, fields: dict[str, Field], *, extra_ok: tuple = ()) -> dict:
    """Check every key of ``table`` against ``fields``; fill defaults; raise on unknown/missing keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key in extra_ok:
            continue
        if key not in fields:
            valid = ", ".join(sorted(set(fields) | set(extra_ok)))
            raise ConfigError(f"unknown key '{section}.{key}'; valid keys in [{section}]: {valid}")
        out[key] = check_value(f"{section}.{key}", value, fields[key])
    for key, field in fields.items():
        if key not in out:
            if field.default is REQUIRED:
                raise ConfigError(f"missing key '{section}.{key}' ({field.help or _TYPE_NAMES[field.type]})")
            out[key] = field.default
    return out


def fields_from_signature(fn: Callable, skip: tuple = ()) -> dict[str, Field]:
    """Fields for a function's keyword parameters, typed by their defaults (simulators)."""
    fields = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.default is inspect.Parameter.empty:
            continue
        default = param.default
        fields[name] = Field(bool if isinstance(default, bool) else type(default), default)
    return fields


FIT_FIELDS = {
    "max_iter": Field(int, 200, help="maximum iterations per fit"),
    "tol": Field(float, 1e-4, help="relative objective change that counts as converged (0: run max_iter)"),
    "n_init": Field(int, 1, help="independent seeds per sweep point; the best is kept"),
    "seed": Field(int, 0, help="PRNG seed"),
    "chunk_size": Field(int, 10, help="iterations between objective evaluations"),
}

RUN_FIELDS = {
    "device": Field(str, "auto", choices=("auto", "cpu", "gpu", "tpu")),
    "x64": Field(bool, False, help="compute in float64"),
    "progress": Field(bool, True, help="progress bar over sweep points (always off when CI is set)"),
    "grid_map": Field(str, "vmap", choices=("vmap", "map"), help="how hyperparameter points are batched"),
    "shard": Field(str, "auto", choices=("auto", "off", "cells"),
                   help="auto: split each sweep call's points x restarts over every device of the platform (if more than one); "
                        "cells: split the rows (cells) of one fit over them, one sweep point and restart at a time "
                        "(data too large for one device; NMF, weighted NMF, GMM, PPCA, binomial mixture, VAE); off: one device"),
    "max_points_per_call": Field(int, 0, help="sweep points per compiled call (0: all points sharing static keys); "
                                               "smaller calls need less memory and are resumed at a finer grain"),
    "figures": Field(bool, True, help="write PNG figures"),
    "cache": Field(str, "auto", help="persistent compilation cache: auto (JAXFACTOR_CACHE_DIR, else ~/.cache/jaxfactor/xla), "
                                     "off, or a folder; a second run compiles nothing the first compiled"),
}

DATA_FILE_FIELDS = {
    "path": Field(str, help="a .h5ad, .npy, .npz, .csv or .tsv file"),
    "format": Field(str, "", choices=("", "h5ad", "npy", "npz", "csv", "cellsnp"), help="overrides the suffix"),
    "layer": Field(str, "", help="AnnData layer (empty: X)"),
    "key": Field(str, "", help="array name inside an .npz"),
    "delimiter": Field(str, "", help="CSV delimiter (empty: ',' for .csv, tab for .tsv/.txt)"),
    "header": Field(bool, False, help="CSV has a header row"),
    "index_col": Field(bool, False, help="CSV's first column is a row index"),
    "transpose": Field(bool, False, help="transpose the matrix after reading"),
    "label_key": Field(str, "", help="obs column of known cell labels: the ARI of the fit's labels (or of k-means on its "
                                     "embedding) against them (families run by the runner's family task)"),
}

SECTIONS = ("data", "model", "fit", "run", "sweep")
TOP_LEVEL = ("description",)
