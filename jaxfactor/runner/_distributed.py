"""Multi-process runs: ``jax.distributed.initialize`` from CLI flags or environment variables.

    jaxfactor run CONFIG --coordinator HOST:PORT --num-processes N --process-id I

Each flag falls back to ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID``; ``--distributed`` alone lets JAX detect the cluster (SLURM, Open MPI,
Kubernetes, Cloud TPU). Every process runs the same command on the same config and data; the
sweep is sharded over the devices of all processes, and only process 0 writes shared outputs
(the results folder and the resumable-sweep points). Decisions that read files (which points
are finished) are made by process 0 and broadcast, so the processes never disagree.
"""

from __future__ import annotations

import os

import numpy as np

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} must be an integer") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False) -> bool:
    """Call ``jax.distributed.initialize`` if any setting is given (flag or environment) or ``auto``.

    Must run before JAX touches a device. Returns True when a multi-process run was started.
    """
    coordinator = coordinator or os.environ.get(ENV["coordinator"]) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV["num_processes"])
    process_id = process_id if process_id is not None else _env_int(ENV["process_id"])
    if not auto and coordinator is None and num_processes is None and process_id is None:
        return False
    import jax

    if not auto:
        missing = [flag for flag, v in (("--coordinator", coordinator), ("--num-processes", num_processes),
                                        ("--process-id", process_id)) if v is None]
        if missing and not _cluster_detected():
            names = ", ".join(f"{m} ({ENV[m[2:].replace('-', '_')]})" for m in missing)
            raise ValueError(f"a multi-process run needs {names}; give every flag, or --distributed on a cluster JAX detects")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"jax.distributed.initialize failed: {' '.join(str(exc).split())}") from None
    return True


def _cluster_detected() -> bool:
    return any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "KUBERNETES_SERVICE_HOST"))


def process_index() -> int:
    import jax

    return jax.process_index()


def is_writer() -> bool:
    """Only process 0 writes shared outputs."""
    return process_index() == 0


def from_process_0(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process (identity in a one-process run)."""
    import jax

    if jax.process_count() == 1:
        return np.asarray(values)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))
