"""Compile once per machine: JAX's persistent compilation cache, on by default.

Most of a small job's time is XLA compilation (a VAE demo compiles ~45 s for ~8 s of training),
and without a persistent cache every new process compiles every program again. ``import
jaxfactor`` therefore points JAX's compilation cache (``jax_compilation_cache_dir``) at a folder
on this machine, so the second run of any fit or config loads its executables from disk:

- the folder is ``$JAXFACTOR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxfactor/xla`` (by
  default ``~/.cache/jaxfactor/xla``); ``JAXFACTOR_CACHE_DIR=off`` (or ``0``, ``false``, empty)
  turns it off; a config's ``run.cache`` (``"auto"``, ``"off"`` or a folder) does the same for
  ``jaxfactor run``; :func:`enable_compilation_cache` from Python;
- a cache the user configured for JAX already (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.update("jax_compilation_cache_dir", ...)`` before importing jaxfactor) is left
  as it is;
- programs that compile in more than 0.1 s are kept (JAX's default, 1 s, skips most of ours),
  and the folder is capped at 2 GiB (JAX evicts the least recently used entries).

JAX keys each entry on the program, the compiler options, the devices and the jax/jaxlib
versions, so an upgrade or another machine never loads a stale executable. Note that the
setting is JAX's, process-wide: other JAX code in the same process is cached too.
"""

from __future__ import annotations

import os

OFF = ("off", "0", "false", "no", "none", "")
MAX_BYTES = 2 * 1024**3
MIN_COMPILE_SECONDS = 0.1

_state = {"dir": None, "ours": False}


def default_cache_dir() -> str | None:
    """The folder the cache uses by default, or None when ``JAXFACTOR_CACHE_DIR`` turns it off."""
    env = os.environ.get("JAXFACTOR_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in OFF else os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxfactor", "xla")


def enable_compilation_cache(path: str | None = "auto") -> str | None:
    """Point JAX's persistent compilation cache at ``path`` (``"auto"``: :func:`default_cache_dir`;
    ``None`` or ``"off"``: turn jaxfactor's cache off). Returns the folder in use, or None.

    A folder that cannot be created leaves the cache off (a run must not fail for its cache)."""
    import jax

    if path is None or (isinstance(path, str) and path.strip().lower() in OFF):
        if _state["ours"]:
            jax.config.update("jax_compilation_cache_dir", None)
            _state.update(dir=None, ours=False)
        return None
    folder = default_cache_dir() if path == "auto" else os.path.abspath(os.path.expanduser(path))
    if folder is None:
        return enable_compilation_cache(None)
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            return enable_compilation_cache(None)
    except OSError:
        return enable_compilation_cache(None)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    import importlib.util

    if importlib.util.find_spec("filelock") is not None:  # JAX's LRU eviction needs it (a dependency)
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    _state.update(dir=folder, ours=True)
    return folder


def compilation_cache_dir() -> str | None:
    """The folder of JAX's persistent compilation cache now (jaxfactor's or the user's), or None."""
    import jax

    return jax.config.jax_compilation_cache_dir or None


def _enable_on_import() -> None:
    """The default at ``import jaxfactor``: on, unless the user configured JAX's cache already.

    When JAX is not imported yet, the settings go into JAX's environment variables
    (``JAX_COMPILATION_CACHE_DIR``, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``,
    ``JAX_COMPILATION_CACHE_MAX_SIZE``), which JAX reads when it is imported: ``import jaxfactor``
    then costs no JAX import (the command line checks a config before JAX loads). Processes
    started from this one inherit them, so they share the cache."""
    import sys

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if "jax" in sys.modules:
        import jax

        if not jax.config.jax_compilation_cache_dir:
            enable_compilation_cache("auto")
        return
    folder = default_cache_dir()
    if folder is None:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return
    if not os.access(folder, os.W_OK):
        return
    import importlib.util

    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
    if importlib.util.find_spec("filelock") is not None:  # JAX's LRU eviction needs it (a dependency)
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    _state.update(dir=folder, ours=True)
