"""What ``jaxfactor run`` checks before JAX is imported (a second or more of start-up), so a
mistyped config, a missing data file or an existing output folder answers at once: the config
file exists and is TOML, its sections are known, ``--set`` items are well formed, ``data.path``
(relative to the config, or as given by ``--set data.path=``) exists, and ``--out`` does not
(without ``--force``). Everything else is validated by ``_config.build_config`` after the model
family is known, still before anything is compiled."""

from __future__ import annotations

import os
import tomllib
from typing import Any

from ._schema import SECTIONS, TOP_LEVEL, ConfigError


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value``; the value is read as TOML, or as a bare string if that fails."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like section.key=value (e.g. model.n_components=8)")
    path, text = item.split("=", 1)
    keys = path.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"--set {item!r}: the key must be section.key (e.g. fit.max_iter=500)")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return keys, value


def load_toml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def precheck(config_path: str, overrides=(), out: str | None = None, force: bool = False) -> None:
    """The checks of the module docstring; a one-line ``ConfigError`` / ``ValueError``."""
    raw = load_toml(config_path)
    for key in raw:
        if key not in SECTIONS + TOP_LEVEL:
            raise ConfigError(f"unknown section or key '{key}'; valid: {', '.join(SECTIONS + TOP_LEVEL)}")
    data = dict(raw.get("data", {})) if isinstance(raw.get("data", {}), dict) else {}
    path = data.get("path")
    if isinstance(path, str):
        path = os.path.join(os.path.dirname(os.path.abspath(config_path)), os.path.expanduser(path))
    for item in overrides:
        (section, key), value = parse_override(item)
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section '{section}'; valid: {', '.join(SECTIONS)}")
        if section == "data":
            if key in ("path", "simulator"):  # your own data replaces a config's example
                data.pop("example", None)
            data[key] = value
            if key == "path":
                path = os.path.expanduser(value) if isinstance(value, str) else None
    if out is not None:
        for given in (config_path, path):
            if isinstance(given, str) and overlaps(out, given):
                raise ValueError(f"--out {out!r} would overlap the input {given!r}; choose a separate output folder "
                                 "(inputs are never overwritten, also not with --force)")
    sources = sum(k in data for k in ("simulator", "path", "example"))
    if isinstance(path, str) and sources <= 1 and not os.path.exists(path):
        raise ValueError(f"data file not found: {path!r}; check data.path (relative paths in a config are relative to "
                         "the config file)")
    if out is not None and os.path.exists(out) and not force:
        raise ValueError(f"output folder {out!r} already exists; pass --force to replace it or choose --out")


def overlaps(out: str, path: str) -> bool:
    """Whether writing (or replacing) ``out`` would touch ``path``: the same path, ``path`` inside
    the folder ``out``, or ``out`` inside the folder ``path``."""
    a, b = os.path.realpath(out), os.path.realpath(path)
    return a == b or b.startswith(a + os.sep) or (a.startswith(b + os.sep) and os.path.isdir(b))
