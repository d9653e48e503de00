"""The experiment runner: the only part of jaxfactor that knows about files, configs and devices.

Its names are imported on first use: the command line (``_cli``) loads no JAX until a config
has passed its first checks."""

import importlib

from ._cli import main

_LAZY = {"RunConfig": "._config", "load_config": "._config", "run": "._run", "ConfigError": "._schema"}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxfactor.runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["ConfigError", "RunConfig", "load_config", "main", "run"]
