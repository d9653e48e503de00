"""Per-program XLA compiler options for the CPU, passed through ``jax.jit(compiler_options=...)``.

XLA:CPU (jaxlib 0.10) hands dot products to the YNNPACK library and, by default, fuses the
elementwise operations around them into the same YNNPACK call. For the count VAE's epoch (dense
layers whose inputs and outputs feed long elementwise chains: batch norm, the negative-binomial
likelihood and its hand-written gradient) keeping YNNPACK for the dots alone
(``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``) and XLA's own loop fusion for the elementwise work is
about 15 % faster on a 2-core AVX-512 CPU (an NB epoch of Zeisel's 4000 genes: 0.16 s instead of
0.19 s), with the same arithmetic: the dots are YNNPACK's either way, and the tests compare both.

The option is given to the programs that benefit (``cpu_jit``), never set globally, so other JAX
code in the user's process compiles as before. It is used only when JAX's default backend is the
CPU and only if this jaxlib accepts it (probed once with a tiny program; XLA rejects unknown
options, and the name is experimental), so an upgrade that drops it falls back to the defaults.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def cpu_options() -> tuple:
    """``CPU_OPTIONS`` as ``(name, value)`` pairs when the default backend is the CPU and this
    jaxlib compiles with them; ``()`` otherwise."""
    if jax.default_backend() != "cpu":
        return ()
    try:
        probe = jax.jit(lambda a: a @ a + 1.0, compiler_options=dict(CPU_OPTIONS))
        jax.block_until_ready(probe(jnp.ones((4, 4), jnp.float32)))
    except Exception:  # unknown option or value in this jaxlib: compile without it
        return ()
    return tuple(sorted(CPU_OPTIONS.items()))


def cpu_jit(fun=None, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`cpu_options`.

    The options are looked up at the first call, not at import (asking for the backend then would
    start it before the user could configure devices). Usable as ``cpu_jit(f, ...)`` or as
    ``@partial(cpu_jit, static_argnums=0)``.
    """
    if fun is None:
        return functools.partial(cpu_jit, **jit_kwargs)
    jitted = None

    @functools.wraps(fun)
    def call(*args, **kwargs):
        nonlocal jitted
        if jitted is None:
            jitted = jax.jit(fun, compiler_options=dict(cpu_options()) or None, **jit_kwargs)
        return jitted(*args, **kwargs)

    return call
