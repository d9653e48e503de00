"""Data adapters and simulators (they load or make data; they never fit models)."""

from ._cellsnp import read_cellsnp
from ._examples import EXAMPLES, example_counts, example_path
from ._io import FORMATS, infer_format, load_any, read_h5ad, read_matrix
from ._simulate import SIMULATORS, NMFSimulation, simulate_nmf
from ._simulate_clones import CloneSimulation, simulate_clones
from ._simulate_counts import CountSimulation, simulate_counts
from ._simulate_gmm import GMMSimulation, simulate_gmm
from ._simulate_ppca import PPCASimulation, simulate_ppca
from ._simulate_zinb import ZINBSimulation, simulate_zinb
from ._variants import (
    WEIGHT_MODES, call_matrix, check_allele_counts, filter_variants, variant_matrices, weight_matrix,
)

__all__ = [
    "EXAMPLES", "example_counts", "example_path",
    "FORMATS", "SIMULATORS", "NMFSimulation", "infer_format", "load_any", "read_h5ad", "read_matrix",
    "simulate_nmf",
    "WEIGHT_MODES", "call_matrix", "check_allele_counts", "filter_variants", "read_cellsnp", "variant_matrices",
    "weight_matrix", "CloneSimulation", "simulate_clones", "PPCASimulation", "simulate_ppca",
    "GMMSimulation", "simulate_gmm", "CountSimulation", "simulate_counts",
    "ZINBSimulation", "simulate_zinb",
]
