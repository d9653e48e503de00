import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("CI", "1")  # no progress bars in tests
# compile without LLVM's optimisations (-O0) and with XLA:CPU's classic elemental emitters instead
# of its MLIR fusion emitters: the same XLA programs (same HLO, same passes), built in about half
# the time, and most of the suite's time is compilation. (-O0 alone: 0.7x the compile time, but
# the fusion emitters' code runs slowly without LLVM's clean-up: the NUTS check took 72 s instead
# of 31 s.) Numbers are the same up to float32 summation order (no vectorised reductions), which
# the float32 tolerances allow for. Subprocesses inherit it (they append their device count).
# JAXFACTOR_TEST_OPT=default keeps XLA's default build.
if os.environ.get("JAXFACTOR_TEST_OPT", "O0") == "O0" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_cpu_use_fusion_emitters=false").strip()
# one persistent compilation cache for the whole session (its subprocesses too), fresh each
# session: a program compiled by one test module loads from disk in the next (the fixture below
# drops the in-memory executables after every module), as a clean CI machine sees it
# (created by the first process, inherited by pytest-xdist's workers, removed by its creator)
if "JAXFACTOR_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="jaxfactor-test-xla-")
    os.environ["JAXFACTOR_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled programme after each test module. XLA:CPU maps each executable's code
    into memory and a process may hold at most vm.max_map_count (65 530) mappings; a whole-suite
    run that keeps every programme of every module alive crosses it (a segfault inside the
    compiler of a later test). Programmes shared within a module stay cached."""
    yield
    import jax

    jax.clear_caches()


# the slowest modules first (their seconds on a 2-core machine, most first), so that the workers,
# which take whole modules, finish together instead of one waiting for a long module started last
SLOW_FIRST = ("test_zinbwave", "test_conformance", "test_allele_inference", "test_protocol", "test_vae", "test_clones",
              "test_runner", "test_zinb_stream", "test_allele_api", "test_nmf", "test_gmm", "test_em_sharding",
              "test_predict", "test_allele_model", "test_resume", "test_cclone", "test_sharding", "test_cell_sharding",
              "test_binomial_mixture", "test_kmeans", "test_vae_sharding", "test_progress", "test_predict_zinbwave")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each module's own order kept


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_nmf():
    """A small simulated NMF problem shared across tests (shapes fixed so compiled code is reused)."""
    from jaxfactor.data import simulate_nmf

    return simulate_nmf(n_samples=40, n_features=25, n_components=3, noise=0.05, seed=1)


def _shared(name: str, probe: str):
    path = SHARED / name
    if not (path / probe).exists():
        pytest.skip(f"shared data not found at {path} (expected ../shared/data/{name} beside the repo)")
    return path


@pytest.fixture(scope="session")
def cclone_dir():
    return _shared("cclone", "A9.h5ad")


@pytest.fixture(scope="session")
def cellsnp_dir():
    return _shared("cellsnp_example", "cellSNP.tag.AD.mtx")
