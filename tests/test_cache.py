"""The persistent compilation cache: on by default at import (JAXFACTOR_CACHE_DIR or the user's
cache folder), off on request, a user's own JAX cache left alone, and used: a fit in a new
process writes executables that the next process loads."""

import os
import subprocess
import sys

PROBE = "import jax, jaxfactor; print(jax.config.jax_compilation_cache_dir)"


def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("JAXFACTOR_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_default_off_and_the_users_own_cache(tmp_path):
    assert _python(PROBE, XDG_CACHE_HOME=str(tmp_path / "xdg")) == str(tmp_path / "xdg" / "jaxfactor" / "xla")
    assert _python(PROBE, JAXFACTOR_CACHE_DIR="off") == "None"
    assert _python(PROBE, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine")) == str(tmp_path / "mine")


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    fit = ("import numpy as np, jaxfactor; X = np.abs(np.random.default_rng(0).normal(size=(30, 8))).astype('float32'); "
           "jaxfactor.family('nmf').fit(X, 2, max_iter=20); import os; d = jaxfactor.compilation_cache_dir(); "
           "print(len(os.listdir(d)))")
    first = int(_python(fit, JAXFACTOR_CACHE_DIR=str(tmp_path / "c")))
    assert first > 0  # the fit's programs were written
    assert int(_python(fit, JAXFACTOR_CACHE_DIR=str(tmp_path / "c"))) == first  # and loaded, not compiled again
