"""Simulated per-cell REF/ALT read counts at single-nucleotide variants, with known clones.

The ground truth that CCLONE-style clonal tracing tries to recover (Marot-Lassauzaie et al.,
"Identifying cancer cells from calling single-nucleotide variants in scRNA-seq data",
Bioinformatics 2024): which cells are cancer, which clone they belong to, and which variants are
somatic (clone-specific) or germline (in every cell).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validate import check_nonnegative_float, check_positive_int

#: Log-scale spread of the per-cell size factor and of the per-variant expression (lognormal σ).
CELL_SIZE_SD = 0.5
VARIANT_EXPRESSION_SD = 1.0
_BASES = np.array(list("ACGT"))
#: Cell types of the simulated annotation (``celltypes=True``): healthy cells are drawn from
#: HEALTHY_TYPES with probabilities HEALTHY_SHARES, cancer cells from CANCER_TYPES (an AML-like
#: sample: lymphocytes and monocytes healthy, immature myeloid cells leukaemic).
HEALTHY_TYPES = ("T cells", "B cells", "NK cells", "Monocytes")
HEALTHY_SHARES = (0.5, 0.2, 0.1, 0.2)
CANCER_TYPES = ("Immature", "Early myeloid")
CANCER_SHARES = (0.7, 0.3)
#: RNA editing is expressed in myeloid cells (Monocytes and the cancer types) at ``editing_level``
#: and in lymphocytes at a tenth of it.
MYELOID_TYPES = ("Monocytes", "Immature", "Early myeloid")


class CloneSimulation(NamedTuple):
    """Simulated allele counts with the true clone structure.

    Populations are numbered ``0..n_clones``: label 0 is the healthy population, labels
    ``1..n_clones`` are the cancer clones (so ``is_cancer == labels > 0``). Label 0 is kept even
    when ``healthy_fraction == 0`` (it then has no cells), so ``clone_af[label]`` always works.
    """

    ref: np.ndarray  # (n_cells, n_variants) int64 REF read counts
    alt: np.ndarray  # (n_cells, n_variants) int64 ALT read counts
    labels: np.ndarray  # (n_cells,) int64 population: 0 healthy, 1..n_clones cancer clone
    is_cancer: np.ndarray  # (n_cells,) bool, labels > 0
    clone_af: np.ndarray  # (n_clones + 1, n_variants) float64 true genotype VAF per population (0, 0.5 or 1)
    variant_kind: np.ndarray  # (n_variants,) str: 'somatic', 'germline' or 'editing'
    celltype: np.ndarray | None = None  # (n_cells,) str annotation (celltypes=True), else None
    loh: np.ndarray | None = None  # (n_variants,) bool: germline sites that lost heterozygosity in cancer
    redidb: np.ndarray | None = None  # (n_variants,) bool: editing sites listed in var['REDIdb']

    @property
    def coverage(self) -> np.ndarray:
        """REF + ALT reads per cell × variant."""
        return self.ref + self.alt

    def to_anndata(self):
        """AnnData in the layout of CCLONE's processed files (cells × variants).

        ``X`` is the coverage REF+ALT and ``layers['REF']``, ``layers['ALT']`` the read counts (all
        int64 ``scipy.sparse.csr_matrix``); ``obs`` has ``clone`` (categorical label),
        ``is_cancer``, ``celltype`` (the simulated annotation with ``celltypes=True``, else
        'healthy' or 'cancer_<label>'); ``var`` has ``chr``, ``pos``, ``ref``, ``mut``, ``dbSNP``
        (True for germline variants), ``REDIdb`` (the annotated RNA-editing sites), ``kind``
        ('somatic', 'germline' or 'editing') and ``loh``; ``uns['clone_af']`` holds the true VAF
        matrix.
        """
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        n_cells, n_variants = self.ref.shape
        n_pops = self.clone_af.shape[0]
        if self.celltype is None:
            celltype = pd.Categorical(np.where(self.is_cancer, np.char.add("cancer_", self.labels.astype(str)), "healthy"),
                                      categories=["healthy"] + [f"cancer_{k}" for k in range(1, n_pops)])
        else:
            celltype = pd.Categorical(self.celltype, categories=[*HEALTHY_TYPES, *CANCER_TYPES])
        obs = pd.DataFrame(
            {
                "clone": pd.Categorical(self.labels, categories=np.arange(n_pops)),
                "is_cancer": self.is_cancer.astype(bool),
                "celltype": celltype,
            },
            index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
        )
        ref_base = np.arange(n_variants) % 4  # placeholder alleles (A>C, C>G, G>T, T>A, ...)
        mut_base = (ref_base + 1) % 4
        var = pd.DataFrame(
            {
                "chr": pd.Categorical(["chrS"] * n_variants),
                "pos": np.arange(n_variants, dtype=np.int64),
                "ref": pd.Categorical(_BASES[ref_base], categories=list("ACGT")),
                "mut": pd.Categorical(_BASES[mut_base], categories=list("ACGT")),
                "REDIdb": np.zeros(n_variants, dtype=bool) if self.redidb is None else self.redidb.astype(bool),
                "dbSNP": self.variant_kind == "germline",
                "kind": pd.Categorical(self.variant_kind, categories=["somatic", "germline", "editing"]),
                "loh": np.zeros(n_variants, dtype=bool) if self.loh is None else self.loh.astype(bool),
            },
            index=pd.Index([f"snv_{j}" for j in range(n_variants)]),
        )
        ref = sp.csr_matrix(self.ref.astype(np.int64))
        alt = sp.csr_matrix(self.alt.astype(np.int64))
        return ad.AnnData(
            X=sp.csr_matrix(self.coverage.astype(np.int64)),
            obs=obs,
            var=var,
            layers={"REF": ref, "ALT": alt},
            uns={"clone_af": np.asarray(self.clone_af)},
        )


def _check_fraction(value, name: str) -> float:
    value = check_nonnegative_float(value, name)
    if value > 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return value


def _populations(rng, n_cells, n_variants, n_clones, healthy_fraction, n_trunk, n_private):
    """Labels (0 healthy, 1..n_clones) and the somatic genotype VAFs (trunk, then private by clone;
    other columns 0) shared by the simulators."""
    p = np.concatenate([[healthy_fraction], np.full(n_clones, (1.0 - healthy_fraction) / n_clones)])
    labels = rng.choice(n_clones + 1, size=n_cells, p=p / p.sum()).astype(np.int64)
    af = np.zeros((n_clones + 1, n_variants))
    af[1:, :n_trunk] = 0.5
    af[1 + np.arange(n_private) % n_clones, n_trunk + np.arange(n_private)] = 0.5
    return labels, af


def simulate_clones(
    n_cells: int = 2000,
    n_variants: int = 30,
    n_clones: int = 3,
    *,
    healthy_fraction: float = 0.3,
    n_germline: int = 5,
    trunk_fraction: float = 0.3,
    mean_coverage: float = 3.0,
    coverage_dispersion: float = 0.5,
    coverage_dropout: float = 0.4,
    allelic_dropout: float = 0.2,
    error_rate: float = 0.01,
    seed: int = 0,
    celltypes: bool = False,
    annotation_noise: float = 0.0,
    celltype_coverage_sd: float = 0.0,
    loh_fraction: float = 0.0,
    n_editing: int = 0,
    editing_level: float = 0.4,
    editing_annotated: float = 1.0,
) -> CloneSimulation:
    """REF/ALT read counts of healthy cells and cancer clones at somatic and germline SNVs.

    **Populations.** Each cell is healthy (label 0) with probability ``healthy_fraction``, else it
    belongs to cancer clone ``k ∈ {1..n_clones}`` with probability ``(1 − healthy_fraction) /
    n_clones`` (independent categorical draws).

    **Variants.** ``n_germline`` germline variants are heterozygous in every cell (VAF 0.5). The
    ``S = n_variants − n_germline`` somatic variants form a two-level tree: a trunk of
    ``round(trunk_fraction · S)`` variants heterozygous in every cancer clone, and the rest
    private, dealt round-robin to clones ``1..n_clones`` (heterozygous in that clone only).
    Somatic variants have VAF 0 in healthy cells. With ``n_clones == 1`` the trunk/private split
    is immaterial. Column order is a random permutation; ``variant_kind`` and ``clone_af`` say
    which is which.

    **Coverage.** ``n_ij = 0`` with probability ``coverage_dropout`` (zero inflation), otherwise
    ``n_ij ~ NB(μ_ij, φ)`` with mean ``μ_ij`` and variance ``μ_ij + φ μ_ij²`` (``φ =
    coverage_dispersion``; ``φ = 0`` is Poisson), drawn as the Gamma–Poisson mixture
    ``λ ~ Gamma(1/φ, φ μ_ij)``, ``n ~ Poisson(λ)``. The mean is ``μ_ij = c · s_i e_j`` with cell
    size factors ``s_i ~ LogNormal(0, 0.5²)``, variant expression ``e_j ~ LogNormal(0, 1²)`` and
    ``c`` chosen so the mean of ``μ`` over the matrix is ``mean_coverage`` (the mean coverage
    before zero inflation; after it the mean is ``(1 − coverage_dropout) · mean_coverage``).

    **Alleles.** At a heterozygous site (true VAF ``a = 0.5``) the cell shows one allele only with
    probability ``allelic_dropout`` (monoallelic expression / allelic dropout), REF or ALT with
    probability 1/2 each, i.e. its effective VAF becomes 0 or 1. Each read then carries the ALT
    allele with probability ``a_eff``, and a sequencing error flips its allele with probability
    ``ε = error_rate``, so ``ALT_ij ~ Binomial(n_ij, a_eff (1 − ε) + (1 − a_eff) ε)`` and
    ``REF_ij = n_ij − ALT_ij``.

    **Confounders of real data** (all off by default; drawn from a second generator seeded by
    ``(seed, 1)``, so the default output does not change):

    - ``celltypes=True``: an expression annotation ``celltype``: healthy cells are T / B / NK cells
      or Monocytes (shares 0.5 / 0.2 / 0.1 / 0.2), cancer cells Immature or Early myeloid
      (0.7 / 0.3); ``annotation_noise`` is the fraction of cells whose annotation is replaced by
      a uniformly drawn other type (annotation is a proxy, not truth).
    - ``celltype_coverage_sd``: coverage depends on the cell type, as expression does: the mean
      of cell i at variant j is multiplied by ``m[type_i, j] ~ LogNormal(0, sd²)`` (then rescaled
      to keep ``mean_coverage``), so some variants are seen mostly in some cell types.
    - ``loh_fraction``: that share of the germline heterozygous sites lose heterozygosity in every
      cancer clone (a trunk event): their cancer VAF is 0 or 1 (the lost allele drawn per site),
      while healthy cells stay at 0.5 — real signal that a germline filter throws away.
    - ``n_editing``: RNA-editing sites (A>G, part of ``n_variants``) whose ALT fraction depends on
      the cell type, not the clone: ``editing_level`` in myeloid types (Monocytes, Immature, Early
      myeloid), a tenth of it in lymphocytes (needs ``celltypes=True``); ``editing_annotated`` is
      the share of them listed in ``var['REDIdb']`` (the rest look like somatic variants that
      follow the cell type). Editing acts on transcripts, so there is no allelic dropout there.

    Returns a :class:`CloneSimulation` of NumPy arrays; ``.to_anndata()`` builds the AnnData.
    Deterministic given ``seed`` (``numpy.random.default_rng``).
    """
    n_cells = check_positive_int(n_cells, "n_cells")
    n_variants = check_positive_int(n_variants, "n_variants")
    n_clones = check_positive_int(n_clones, "n_clones")
    n_germline = check_positive_int(n_germline, "n_germline", minimum=0)
    if n_germline >= n_variants:
        raise ValueError(
            f"n_germline={n_germline} leaves no somatic variants out of n_variants={n_variants}; "
            "choose n_germline < n_variants"
        )
    healthy_fraction = _check_fraction(healthy_fraction, "healthy_fraction")
    trunk_fraction = _check_fraction(trunk_fraction, "trunk_fraction")
    coverage_dropout = _check_fraction(coverage_dropout, "coverage_dropout")
    allelic_dropout = _check_fraction(allelic_dropout, "allelic_dropout")
    error_rate = _check_fraction(error_rate, "error_rate")
    coverage_dispersion = check_nonnegative_float(coverage_dispersion, "coverage_dispersion")
    mean_coverage = check_nonnegative_float(mean_coverage, "mean_coverage")
    if mean_coverage == 0:
        raise ValueError("mean_coverage must be > 0 (reads per cell and variant); got 0")
    annotation_noise = _check_fraction(annotation_noise, "annotation_noise")
    celltype_coverage_sd = check_nonnegative_float(celltype_coverage_sd, "celltype_coverage_sd")
    loh_fraction = _check_fraction(loh_fraction, "loh_fraction")
    n_editing = check_positive_int(n_editing, "n_editing", minimum=0)
    editing_level = _check_fraction(editing_level, "editing_level")
    editing_annotated = _check_fraction(editing_annotated, "editing_annotated")
    if not isinstance(celltypes, (bool, np.bool_)):
        raise ValueError(f"celltypes must be True or False, got {celltypes!r}")
    if not celltypes and (n_editing or celltype_coverage_sd or annotation_noise):
        raise ValueError("n_editing, celltype_coverage_sd and annotation_noise act through cell types; set celltypes=True")
    if n_germline + n_editing >= n_variants:
        raise ValueError(
            f"n_germline={n_germline} and n_editing={n_editing} leave no somatic variants out of n_variants={n_variants}; "
            "raise n_variants"
        )
    n_somatic = n_variants - n_germline - n_editing
    n_trunk = int(round(trunk_fraction * n_somatic)) if n_clones > 1 else n_somatic
    n_private = n_somatic - n_trunk
    if n_clones > 1 and n_private < n_clones:
        raise ValueError(
            f"{n_somatic} somatic variants with trunk_fraction={trunk_fraction} leave {n_private} private "
            f"variants for n_clones={n_clones}; raise n_variants or lower n_germline / trunk_fraction"
        )
    rng = np.random.default_rng(seed)
    # populations; variant structure, before the column permutation: [trunk | private by clone | germline | editing]
    labels, af = _populations(rng, n_cells, n_variants, n_clones, healthy_fraction, n_trunk, n_private)
    af[:, n_somatic:n_somatic + n_germline] = 0.5
    kind = np.array(["somatic"] * n_somatic + ["germline"] * n_germline + ["editing"] * n_editing)
    perm = rng.permutation(n_variants)
    af, kind = af[:, perm], kind[perm]

    # confounders, from a second generator (the default stream above and below is unchanged)
    extra = np.random.default_rng([seed, 1])
    types = type_index = None
    all_types = np.array([*HEALTHY_TYPES, *CANCER_TYPES])
    if celltypes:
        h = extra.choice(len(HEALTHY_TYPES), n_cells, p=HEALTHY_SHARES)
        c = len(HEALTHY_TYPES) + extra.choice(len(CANCER_TYPES), n_cells, p=CANCER_SHARES)
        type_index = np.where(labels > 0, c, h)
    loh = np.zeros(n_variants, bool)
    germ_cols = np.flatnonzero(kind == "germline")
    n_loh = int(round(loh_fraction * germ_cols.size))
    if n_loh:
        loh[extra.choice(germ_cols, n_loh, replace=False)] = True
        if n_clones:
            af[1:, loh] = extra.integers(0, 2, n_loh).astype(np.float64)  # the lost allele, per site
    edit_cols = np.flatnonzero(kind == "editing")
    redidb = np.zeros(n_variants, bool)
    if edit_cols.size:
        redidb[edit_cols[extra.random(edit_cols.size) < editing_annotated]] = True

    # coverage: zero-inflated negative binomial
    size = rng.lognormal(0.0, CELL_SIZE_SD, n_cells)
    expr = rng.lognormal(0.0, VARIANT_EXPRESSION_SD, n_variants)
    mu = np.outer(size, expr)
    if celltype_coverage_sd > 0:
        mu = mu * extra.lognormal(0.0, celltype_coverage_sd, (all_types.size, n_variants))[type_index]
    mu = (mean_coverage / mu.mean()) * mu if celltype_coverage_sd > 0 else (mean_coverage / (size.mean() * expr.mean())) * mu
    if coverage_dispersion > 0:
        lam = rng.gamma(1.0 / coverage_dispersion, coverage_dispersion * mu)
    else:
        lam = mu
    cov = rng.poisson(lam)
    cov[rng.random(cov.shape) < coverage_dropout] = 0

    # alleles: allelic dropout at heterozygous sites, then reads with symmetric errors
    a = af[labels]
    drop = (a == 0.5) & (rng.random(a.shape) < allelic_dropout)
    a = np.where(drop, rng.integers(0, 2, a.shape).astype(np.float64), a)
    if edit_cols.size:  # editing: a per-transcript ALT fraction that follows the cell type
        level = np.where(np.isin(all_types[type_index], MYELOID_TYPES), editing_level, 0.1 * editing_level)
        a[:, edit_cols] = level[:, None]
    p_alt = a * (1.0 - error_rate) + (1.0 - a) * error_rate
    alt = rng.binomial(cov, p_alt)
    ref = cov - alt
    if celltypes:
        noisy = extra.random(n_cells) < annotation_noise
        other = (type_index + extra.integers(1, all_types.size, n_cells)) % all_types.size
        types = all_types[np.where(noisy, other, type_index)]
    return CloneSimulation(
        ref=ref.astype(np.int64),
        alt=alt.astype(np.int64),
        labels=labels,
        is_cancer=labels > 0,
        clone_af=af,
        variant_kind=kind,
        celltype=types,
        loh=loh,
        redidb=redidb,
    )


class SparseCloneSimulation(NamedTuple):
    """:func:`simulate_clones_sparse`: counts as scipy CSR matrices (cells × variants)."""

    alt: object  # scipy.sparse.csr_matrix int64 ALT reads
    depth: object  # scipy.sparse.csr_matrix int64 REF + ALT reads
    labels: np.ndarray  # (n_cells,) int64 population: 0 healthy, 1..n_clones cancer clone
    clone_af: np.ndarray  # (n_clones + 1, n_variants) float64 true genotype VAF per population


def simulate_clones_sparse(n_cells: int = 100_000, n_variants: int = 1000, n_clones: int = 3, *,
                           density: float = 0.01, mean_depth: float = 3.0, healthy_fraction: float = 0.0,
                           n_germline: int = 5, trunk_fraction: float = 0.3, allelic_dropout: float = 0.2,
                           error_rate: float = 0.01, seed: int = 0) -> SparseCloneSimulation:
    """Large, sparsely covered allele counts, built as sparse matrices (never cells × variants dense).

    The populations, variant structure (trunk / private / germline), allelic dropout and read
    errors are those of :func:`simulate_clones`; the coverage is simpler: each cell × variant entry
    is covered with probability ``density`` (positions drawn uniformly; a repeated position is kept
    once, so the realised density is a hair lower), with depth ``1 + Poisson(mean_depth − 1)``.
    Memory O(nnz)."""
    import scipy.sparse as sp

    n_cells = check_positive_int(n_cells, "n_cells")
    n_variants = check_positive_int(n_variants, "n_variants")
    n_clones = check_positive_int(n_clones, "n_clones")
    density = _check_fraction(density, "density")
    if mean_depth < 1:
        raise ValueError(f"mean_depth must be >= 1 (reads per covered entry), got {mean_depth}")
    n_somatic = n_variants - n_germline
    n_trunk = int(round(trunk_fraction * n_somatic)) if n_clones > 1 else n_somatic
    n_private = n_somatic - n_trunk
    if n_somatic < 1 or (n_clones > 1 and n_private < n_clones):
        raise ValueError(f"n_variants={n_variants} is too few for n_germline={n_germline} and n_clones={n_clones}")
    rng = np.random.default_rng(seed)
    labels, af = _populations(rng, n_cells, n_variants, n_clones, healthy_fraction, n_trunk, n_private)
    af[:, n_somatic:] = 0.5
    af = af[:, rng.permutation(n_variants)]
    nnz = rng.binomial(n_cells * n_variants, density)
    lin = np.unique(rng.integers(0, n_cells * n_variants, nnz, dtype=np.int64))
    rows, cols = lin // n_variants, lin % n_variants
    depth = 1 + rng.poisson(mean_depth - 1.0, lin.size)
    a = af[labels[rows], cols]
    drop = (a == 0.5) & (rng.random(lin.size) < allelic_dropout)
    a = np.where(drop, rng.integers(0, 2, lin.size).astype(np.float64), a)
    alt = rng.binomial(depth, a * (1.0 - error_rate) + (1.0 - a) * error_rate)
    shape = (n_cells, n_variants)
    return SparseCloneSimulation(sp.csr_matrix((alt.astype(np.int64), (rows, cols)), shape=shape),
                                 sp.csr_matrix((depth.astype(np.int64), (rows, cols)), shape=shape), labels, af)
