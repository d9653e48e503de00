"""Per-cell allele counts at variants: validation, CCLONE's call and weight matrices, CCLONE's filter.

CCLONE (Marot-Lassauzaie et al., "Identifying cancer cells from calling single-nucleotide variants
in scRNA-seq data", Bioinformatics 2024) labels cancer and healthy cells by a weighted NMF of a
*call matrix* ``M`` (cells x variants) under a *weight matrix* ``W`` that encodes how much a call
can be trusted::

    min_{C, V in [0, 1]}  sum_{c,v} W[c,v] * (M[c,v] - (C V)[c,v])**2

This module builds ``M`` and ``W`` from the read counts ``REF`` and ``ALT`` and implements the
variant/cell filter CCLONE applies first. Everything here is NumPy/SciPy (no fitting); the
matrices are float32 ready for the JAX solvers. The definitions were re-derived from the published
CCLONE code and checked against the call and weight layers of CCLONE's own outputs (two AML
patients, see ``tests/test_variants.py``).

Notation: ``n = REF + ALT`` is the coverage of one cell at one variant; a call needs ``n >= 2``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import check_choice, check_int, check_number

WEIGHT_MODES = ("smartseq", "10x", "binary", "none")

_MIN_READS = 2          # CCLONE calls a genotype only from 2+ reads
_CHUNK_ENTRIES = 4_000_000  # dense entries per block when counting over a sparse matrix


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _as_counts(X, name: str):
    """Return ``X`` as integer counts: scipy CSR (int64) if sparse, else a 2-D int64 ndarray.

    Integer input is not copied; float input is accepted when every value is a whole number.
    """
    if hasattr(X, "obs") and hasattr(X, "var"):
        raise ValueError(f"{name} is an AnnData object; pass a matrix such as adata.layers[{name!r}]")
    if sp.issparse(X):
        mat = X if X.format == "csr" else sp.csr_matrix(X)
        if not isinstance(mat, sp.csr_matrix):  # csr_array -> csr_matrix, same buffers
            mat = sp.csr_matrix(mat)
        values = mat.data
    else:
        try:
            mat = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name} could not be converted to a numeric array ({exc}); pass a 2-D count matrix") from None
        values = mat
    if mat.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells x variants), got shape {mat.shape}; reshape it")
    if mat.shape[0] == 0 or mat.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {mat.shape}); it needs at least one cell and one variant")
    dtype = values.dtype
    if dtype == bool or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} must hold integer read counts, got dtype {dtype}; convert it with .astype(np.int64)")
    if np.issubdtype(dtype, np.floating):
        n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if n_bad:
            n_nan = int(np.count_nonzero(np.isnan(values)))
            raise ValueError(
                f"{name} has {n_nan} NaN and {n_bad - n_nan} infinite entries; read counts must be finite "
                "integers (set missing counts to 0)"
            )
        n_frac = int(np.count_nonzero(values != np.round(values)))
        if n_frac:
            raise ValueError(
                f"{name} has {n_frac} non-integer entries (e.g. {values[values != np.round(values)].flat[0]:.4g}); "
                "it must hold raw read counts, not normalised values"
            )
    n_neg = int(np.count_nonzero(values < 0))
    if n_neg:
        raise ValueError(f"{name} has {n_neg} negative entries (min {values.min()}); read counts must be >= 0")
    if dtype != np.int64:
        mat = mat.astype(np.int64)
    return mat


def _check_pair(ref, alt):
    ref = _as_counts(ref, "REF")
    alt = _as_counts(alt, "ALT")
    if ref.shape != alt.shape:
        raise ValueError(f"REF has shape {ref.shape} but ALT has shape {alt.shape}; both must be cells x variants of the same size")
    return ref, alt


def check_allele_counts(adata):
    """Validate ``adata.layers['REF']`` and ``adata.layers['ALT']`` and return ``(ref, alt)``.

    ``adata`` is cells x variants; ``REF[c, v]`` and ``ALT[c, v]`` are the reads of cell ``c``
    supporting the reference and the alternative allele at variant ``v``. Both must be
    non-negative whole numbers (float storage is accepted when the values are integral) of the
    shape of ``adata``. Sparse layers come back as scipy CSR (int64), dense ones as int64 arrays;
    integer input is returned without copying, and ``adata`` is never modified.

    Raises a one-line ``ValueError`` for a missing layer, disagreeing shapes, an empty matrix,
    a non-numeric dtype, NaN/inf, fractional or negative values.
    """
    if not (hasattr(adata, "obs") and hasattr(adata, "var") and hasattr(adata, "layers")):
        raise ValueError(
            f"expected an AnnData object (cells x variants) with layers 'REF' and 'ALT', got {type(adata).__name__}; "
            "for plain matrices call call_matrix(ref, alt) directly"
        )
    available = sorted(adata.layers.keys())
    for key, what in (("REF", "reference"), ("ALT", "alternative")):
        if key not in adata.layers:
            raise ValueError(
                f"layer {key!r} not in adata.layers (available: {available or 'none'}); store the {what}-allele "
                f"read counts as adata.layers[{key!r}] (read_cellsnp builds both)"
            )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} variants); it needs at least one of each")
    ref, alt = _check_pair(adata.layers["REF"], adata.layers["ALT"])
    if ref.shape != tuple(adata.shape):
        raise ValueError(f"layers REF/ALT have shape {ref.shape} but adata has shape {tuple(adata.shape)}; rebuild the layers")
    return ref, alt


# --------------------------------------------------------------------------------------------
# call and weight matrices
# --------------------------------------------------------------------------------------------

def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _call_from_dense(ref: np.ndarray, alt: np.ndarray, k: int) -> np.ndarray:
    covered = (ref + alt) >= _MIN_READS
    alt_seen, ref_seen = alt >= k, ref >= k
    both = covered & alt_seen & ref_seen
    only_alt = covered & alt_seen & ~ref_seen
    return (0.5 * both + 1.0 * only_alt).astype(np.float32)


def _check_min_allele_reads(k) -> int:
    return check_int(k, "min_allele_reads", 1)


def call_matrix(ref, alt, *, min_allele_reads: int = 2) -> np.ndarray:
    """CCLONE's discretised call matrix ``M`` (dense float32, cells x variants).

    An allele is *seen* in a cell when it has at least ``k = min_allele_reads`` reads. With
    ``n = REF + ALT``::

        M = 0    if n < 2                          (uncovered: no call)
        M = 0.5  if REF >= k and ALT >= k          (both alleles seen: heterozygous)
        M = 1    if ALT >= k and REF < k           (only the alternative allele seen)
        M = 0    otherwise                         (only the reference allele seen, or neither)

    i.e. the variant allele frequency of a diploid genotype (0, 1/2, 1). Uncovered entries are 0
    as in CCLONE; their weight is 0 in every mode except ``"none"``, so they do not enter the fit.

    Source: CCLONE's ``get_varcall`` (Marot-Lassauzaie et al., Bioinformatics 2024). The public
    code tests ``ALT >= 1`` / ``REF >= 1`` (``k = 1``), but the ``M`` layers CCLONE published for
    its AML patients are reproduced exactly only with ``k = 2`` (e.g. REF=5, ALT=1 is 0 there, and
    REF=1, ALT=2 is 1): a single read of an allele is treated as a possible error. ``k = 2`` is the
    default; pass ``min_allele_reads=1`` for the code's literal rule.
    """
    k = _check_min_allele_reads(min_allele_reads)
    ref, alt = _check_pair(ref, alt)
    return _call_from_dense(_dense(ref), _dense(alt), k)


def _weights_from_dense(ref: np.ndarray, alt: np.ndarray, mode: str, k: int) -> np.ndarray:
    n = ref + alt
    covered = n >= _MIN_READS
    both = covered & (ref >= k) & (alt >= k)
    if mode == "none":
        return np.ones(n.shape, np.float32)
    if mode == "binary":
        return covered.astype(np.float32)
    if mode == "smartseq":
        w = np.where(covered, 0.5, 0.0)
    else:  # "10x"
        # P(at least one ALT read | heterozygous, n reads) = 1 - P(Binomial(n, 1/2) = 0) = 1 - 2**-n
        w = np.where(covered, 1.0 - np.exp2(-n.astype(np.float64)), 0.0)
    w[both] = 1.0
    return w.astype(np.float32)


def _check_mode(mode) -> str:
    if isinstance(mode, str) and mode.lower() in WEIGHT_MODES:
        return mode.lower()
    return check_choice(mode, "weight mode", WEIGHT_MODES)  # raises, naming the value as given


def weight_matrix(ref, alt, mode: str = "smartseq", *, min_allele_reads: int = 2) -> np.ndarray:
    """CCLONE's confidence weights ``W`` for the call matrix (dense float32, cells x variants).

    With ``n = REF + ALT`` and "both alleles seen" meaning ``REF >= k and ALT >= k`` with
    ``k = min_allele_reads`` (exactly the entries where ``M == 0.5``, see :func:`call_matrix`):

    - ``"smartseq"`` (CCLONE's default): ``W = 0`` if ``n < 2``, ``1`` if both alleles are seen,
      else ``0.5``. A homozygous-looking call may be a heterozygous site whose other allele was
      missed, so it counts half; seeing both alleles is certain.
    - ``"10x"``: ``W = 1 - P(Binomial(n, 1/2) = 0) = 1 - 0.5**n``, the chance that ``n`` reads of a
      heterozygous site show the second allele at all; ``1`` if both alleles are seen; ``0`` if
      ``n < 2`` (CCLONE zeroes these last, so a single read never counts).
    - ``"binary"``: ``W = 1`` if ``n >= 2`` else ``0``.
    - ``"none"``: ``W = 1`` everywhere (CCLONE's ``"no_weight"``).

    The mode is case-insensitive (CCLONE spells it ``"10X"``). Definitions follow CCLONE's
    ``get_weights`` (Marot-Lassauzaie et al., Bioinformatics 2024), which sets weight 1 where
    ``M == 0.5``; smartseq weights equal CCLONE's published ``weights`` layers with ``k = 2``.
    """
    mode = _check_mode(mode)
    k = _check_min_allele_reads(min_allele_reads)
    ref, alt = _check_pair(ref, alt)
    return _weights_from_dense(_dense(ref), _dense(alt), mode, k)


def variant_matrices(adata, mode: str = "smartseq", *, min_allele_reads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(M, W)`` = ``(call_matrix, weight_matrix)`` from ``adata.layers['REF'/'ALT']``.

    See :func:`call_matrix` and :func:`weight_matrix`; ``adata`` is validated with
    :func:`check_allele_counts` and not modified.
    """
    mode = _check_mode(mode)
    k = _check_min_allele_reads(min_allele_reads)
    ref, alt = check_allele_counts(adata)
    ref, alt = _dense(ref), _dense(alt)
    return _call_from_dense(ref, alt, k), _weights_from_dense(ref, alt, mode, k)


# --------------------------------------------------------------------------------------------
# filter
# --------------------------------------------------------------------------------------------

def _row_blocks(ref, alt):
    """Yield dense ``(ref, alt)`` row blocks, so sparse input is never densified as a whole."""
    n_rows, n_cols = ref.shape
    step = max(1, _CHUNK_ENTRIES // max(n_cols, 1))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        yield _dense(ref[start:stop]), _dense(alt[start:stop])


def _maf_support(ref, alt, max_other_reads: int) -> np.ndarray:
    """Per variant, the number of cells supporting each side of the MAF rule (4 x n_vars).

    Rows: only-REF cells (REF >= 2, ALT <= max_other_reads), only-ALT cells (ALT >= 2,
    REF <= max_other_reads), cells with REF present (REF >= 2 and REF / n > 0.3), cells with ALT
    present (ALT >= 2 and ALT / n > 0.3).
    """
    counts = np.zeros((4, ref.shape[1]), np.int64)
    for r, a in _row_blocks(ref, alt):
        n = r + a
        with np.errstate(divide="ignore", invalid="ignore"):
            ref_frac = np.where(n > 0, r / np.maximum(n, 1), 0.0)
            alt_frac = np.where(n > 0, a / np.maximum(n, 1), 0.0)
        counts[0] += np.count_nonzero((r >= _MIN_READS) & (a <= max_other_reads), axis=0)
        counts[1] += np.count_nonzero((a >= _MIN_READS) & (r <= max_other_reads), axis=0)
        counts[2] += np.count_nonzero((r >= _MIN_READS) & (ref_frac > 0.3), axis=0)
        counts[3] += np.count_nonzero((a >= _MIN_READS) & (alt_frac > 0.3), axis=0)
    return counts


def _maf_pass(ref, alt, n_required: float, max_other_reads: int) -> np.ndarray:
    only_ref, only_alt, any_ref, any_alt = _maf_support(ref, alt, max_other_reads)
    return ((only_alt >= n_required) & (any_ref >= n_required)) | ((only_ref >= n_required) & (any_alt >= n_required))


def _cell_coverage(ref, alt) -> np.ndarray:
    """Fraction of variants each cell covers with >= 2 reads."""
    covered = np.concatenate([np.count_nonzero((r + a) >= _MIN_READS, axis=1) for r, a in _row_blocks(ref, alt)])
    return covered / ref.shape[1]


def _flag_column(var, name: str) -> np.ndarray:
    """``var[name]`` as a boolean mask; a missing column flags nothing, missing values are False."""
    if name not in var.columns:
        return np.zeros(len(var), bool)
    col = var[name]
    if col.dtype == bool:
        return col.to_numpy()
    values = col.to_numpy(dtype=object)
    out = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[i] = bool(np.isfinite(v) and v != 0)
        elif isinstance(v, str):
            out[i] = v.strip().lower() in ("true", "t", "1", "yes")
    return out


def _check_percent(value, name: str) -> float:
    return check_number(value, name, 0, 100, what="a percentage of cells")


def filter_variants(adata, min_maf: float = 5, filter_germline: bool = True, min_cell_coverage: float = 10,
                    *, max_other_reads: int = 2):
    """CCLONE's variant and cell filter; returns a filtered copy (``adata`` is not modified).

    With ``N`` the number of cells of the input and ``t = min_maf / 100 * N`` (fixed once, as in
    CCLONE, and reused in step 4), per variant count the cells that are

    - only-REF: ``REF >= 2`` and ``ALT <= max_other_reads``;
    - only-ALT: ``ALT >= 2`` and ``REF <= max_other_reads``;
    - REF-present: ``REF >= 2`` and ``REF / n > 0.3``;  ALT-present: ``ALT >= 2`` and ``ALT / n > 0.3``

    (``n = REF + ALT``). The MAF rule keeps a variant if
    ``(only-ALT >= t and REF-present >= t) or (only-REF >= t and ALT-present >= t)``: its rarer
    pattern must be seen in at least ``min_maf`` % of *all* cells (uncovered cells count in the
    denominator), against the other allele being clearly present in as many. "Mutated" is thus
    a read-count rule, not ``M > 0``. Steps:

    1. MAF rule.
    2. Drop ``var['dbSNP'] == True`` (common germline SNPs) if ``filter_germline``; always drop
       ``var['REDIdb'] == True`` (known RNA edits). A missing column drops nothing.
    3. Keep the cells that cover (>= 2 reads) *more than* ``min_cell_coverage`` % of the
       remaining variants (CCLONE's ``>``; a cell at exactly the threshold is dropped).
    4. MAF rule again on the kept cells, with the same ``t``.

    ``max_other_reads=2`` (default) is the tolerance of the CCLONE version that produced the
    published AML outputs: it reproduces their variant sets, whereas the stricter ``0`` (an
    "only-REF" cell has no ALT read at all, as in a later CCLONE revision) would drop some of them.
    Coverage is ``REF + ALT`` (CCLONE reads ``adata.X``, which holds the same there). The result
    keeps obs/var order and every column, layer and ``obsm``/``varm`` entry of the kept cells and
    variants; the settings are recorded in ``uns['filter_variants']``.

    Raises ``ValueError`` naming the step that left no variant or no cell.
    """
    min_maf = _check_percent(min_maf, "min_maf")
    min_cell_coverage = _check_percent(min_cell_coverage, "min_cell_coverage")
    max_other_reads = check_int(max_other_reads, "max_other_reads", 0)
    ref, alt = check_allele_counts(adata)
    n_cells0, n_vars0 = ref.shape
    n_required = min_maf / 100 * n_cells0

    keep_var = _maf_pass(ref, alt, n_required, max_other_reads)
    if not keep_var.any():
        raise ValueError(
            f"no variant passes the MAF filter (min_maf={min_maf:g}% of {n_cells0} cells, both alleles); lower min_maf"
        )
    dbsnp = _flag_column(adata.var, "dbSNP") if filter_germline else np.zeros(n_vars0, bool)
    redi = _flag_column(adata.var, "REDIdb")
    keep_var &= ~dbsnp & ~redi
    if not keep_var.any():
        raise ValueError(
            "every variant passing min_maf is flagged in var['dbSNP'] (germline) or var['REDIdb'] (RNA edit); "
            "lower min_maf or set filter_germline=False"
        )
    var_idx = np.flatnonzero(keep_var)
    ref_v, alt_v = ref[:, var_idx], alt[:, var_idx]
    keep_cell = _cell_coverage(ref_v, alt_v) > min_cell_coverage / 100
    if not keep_cell.any():
        raise ValueError(
            f"no cell covers (>= 2 reads) more than min_cell_coverage={min_cell_coverage:g}% of the "
            f"{var_idx.size} variants left after the MAF/annotation filters; lower min_cell_coverage or min_maf"
        )
    cell_idx = np.flatnonzero(keep_cell)
    again = _maf_pass(ref_v[cell_idx], alt_v[cell_idx], n_required, max_other_reads)
    if not again.any():
        raise ValueError(
            f"no variant passes the MAF filter again after dropping {n_cells0 - cell_idx.size} poorly covered cells "
            f"(min_maf={min_maf:g}% of {n_cells0} cells); lower min_maf or min_cell_coverage"
        )
    out = adata[cell_idx, var_idx[again]].copy()
    out.uns["filter_variants"] = {
        "min_maf": min_maf, "filter_germline": bool(filter_germline), "min_cell_coverage": min_cell_coverage,
        "max_other_reads": int(max_other_reads), "n_cells_in": int(n_cells0), "n_variants_in": int(n_vars0),
    }
    return out
