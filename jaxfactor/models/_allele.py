r"""A NumPyro generative model of single-cell allele counts with clones marginalised exactly.

For cell :math:`i = 1..N`, variant :math:`j = 1..J` and clone :math:`k = 1..K`:

Coverage (only when ``model_coverage=True``, i.e. when simulating; when fitting the depth is
conditioned on, treated as a given covariate, by default)

.. math::

    s_i \sim \mathrm{LogNormal}(0, \sigma_s), \quad
    \mu_j \sim \mathrm{LogNormal}(\log m, \sigma_e), \quad
    \phi \sim \mathrm{Gamma}, \quad g_j \sim \mathrm{Beta}, \\
    \mathrm{DP}_{ij} \sim \mathrm{ZINB}(\text{mean} = s_i \mu_j, \text{concentration} = \phi,
    \text{gate} = g_j)

(``numpyro.distributions.ZeroInflatedNegativeBinomial2``; the gate is expression dropout).

Clones and allele frequencies

.. math::

    \pi \sim \mathrm{Dirichlet}(\alpha \mathbf 1_K), \quad
    v_{kj} \sim \mathrm{Beta}(a, b), \quad
    f_{kj} = 0.5 \text{ if } j \text{ is germline heterozygous else } v_{kj}, \\
    \delta \sim \mathrm{Beta}(\cdot) \ \text{(allelic dropout)}, \quad
    \varepsilon \sim \mathrm{Beta}(\cdot) \ \text{(error rate, small)}, \quad
    \kappa \sim \mathrm{Gamma} \ \text{(BetaBinomial concentration, if used)}.

ALT counts given clone :math:`k`. Let :math:`q(f) = f(1-\varepsilon) + (1-f)\varepsilon` be the
probability that a read shows ALT, and :math:`B(x \mid n, p)` be ``Binomial(n, p)`` or the
mean-parameterised ``BetaBinomial(p\kappa, (1-p)\kappa, n)``. Allelic dropout loses one of the
two alleles at the site with probability :math:`\delta`; the kept allele is ALT with probability
:math:`f` (the fraction of ALT alleles), so

.. math::

    P(\mathrm{ALT}_{ij} \mid \mathrm{DP}_{ij}, z_i = k)
      = (1-\delta)\, B(\cdot \mid q(f_{kj}))
      + \delta f_{kj}\, B(\cdot \mid 1-\varepsilon)
      + \delta (1-f_{kj})\, B(\cdot \mid \varepsilon).

At a heterozygous site (:math:`f = 1/2`) this is exactly
:math:`(1-\delta)B(q) + \tfrac{\delta}{2}B(\varepsilon) + \tfrac{\delta}{2}B(1-\varepsilon)`;
at a homozygous site (:math:`f \in \{0, 1\}`) dropout has no effect, as it should. Allelic
dropout of one allele at heterozygous sites together with a sequencing/amplification error rate
is the standard single-cell SNV likelihood (e.g. Monovar, Zafar et al., Nature Methods 13, 2016;
SCIPhI, Singer et al., Nature Communications 9, 2018); the clone-level AF with a Beta prior and
a (Beta)binomial read model follows Vireo/cardelino (Huang et al., Genome Biology 20, 2019;
McCarthy et al., Nature Methods 17, 2020). Uncovered entries (:math:`\mathrm{DP}_{ij} = 0`)
contribute 0.

**Sparse counts.** Because an uncovered entry contributes exactly 0 to the ALT likelihood, and
the coverage is conditioned on when fitting (the ZINB depth term above is used only to simulate,
``model_coverage=True``; it is not part of the fitted objective), the fitted log-likelihood only
needs the covered entries. :class:`SparseAlleleCounts` holds them as (cell, variant) index
arrays sorted by cell, with each distinct (variant, ALT, DP) triple stored once;
:func:`allele_loglik` evaluates the per-clone term once per triple, copies it to the entries and
sums over the entries of each cell with a sorted segment sum, so memory and time are
O(nnz · K), never O(N · J · K), and the result equals the dense one.

Clone membership :math:`z_i \sim \mathrm{Categorical}(\pi)` is marginalised exactly:

.. math::

    \log p(\mathrm{ALT}_i \mid \cdot) = \operatorname{logsumexp}_k
      \Big[\log \pi_k + \sum_j \log P(\mathrm{ALT}_{ij} \mid \mathrm{DP}_{ij}, z_i = k)\Big],

added with ``numpyro.factor`` inside ``numpyro.plate("cells")``. With ``alt=None`` the same
function instead samples :math:`z_i`, a per-entry dropout indicator, the kept allele, and
:math:`\mathrm{ALT}_{ij}` explicitly (simulation; see :func:`simulate_alleles`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln, logsumexp
from numpyro import handlers

LIKELIHOODS = ("binomial", "betabinomial")
GUIDES = ("delta", "normal")

__all__ = ["AlleleSimulation", "GUIDES", "LIKELIHOODS", "SparseAlleleCounts", "allele_entry_loglik", "allele_loglik",
           "allele_model", "clone_responsibilities", "simulate_alleles", "sparse_allele_counts",
           "sparse_entries"]


# ----------------------------------------------------------------------------------------------
# likelihood (pure functions)
# ----------------------------------------------------------------------------------------------

def _log_comb(alt, depth):
    """log C(depth, alt), 0 where depth == 0."""
    return jnp.where(depth > 0, gammaln(depth + 1.0) - gammaln(alt + 1.0) - gammaln(depth - alt + 1.0), 0.0)


def _log_b(alt, depth, p, likelihood, concentration):
    """log B(alt | depth, p) - log C(depth, alt): Binomial, or BetaBinomial with mean p and
    concentration kappa, without the binomial coefficient (shared by every component)."""
    if likelihood == "binomial":
        return alt * jnp.log(p) + (depth - alt) * jnp.log1p(-p)
    a, b = p * concentration, (1.0 - p) * concentration
    # log B(x, y) by log-gammas: jax.scipy.special.betaln's gradient came out wrong under jit with a
    # traced error rate here (jax 0.10.2, XLA:CPU; values right, d/d af off by ~5x)
    betaln = lambda x, y: gammaln(x) + gammaln(y) - gammaln(x + y)  # noqa: E731
    return betaln(alt + a, depth - alt + b) - betaln(a, b)


def allele_entry_loglik(alt, depth, af, dropout, error, *, likelihood="binomial", concentration=None, normalised=True):
    """Per-entry log P(ALT | DP, allele frequency) under the dropout/error mixture (module docstring).

    ``alt``, ``depth`` and ``af`` broadcast together; entries with ``depth == 0`` give 0.
    ``normalised=False`` leaves out ``log C(DP, ALT)``, a constant of the data.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if likelihood == "betabinomial" and concentration is None:
        raise ValueError("likelihood='betabinomial' needs a concentration")
    alt, depth, af = jnp.asarray(alt), jnp.asarray(depth), jnp.asarray(af)
    dtype = jnp.result_type(alt.dtype, af.dtype, jnp.float32)
    alt, depth, af = alt.astype(dtype), depth.astype(dtype), af.astype(dtype)
    q = af * (1.0 - error) + (1.0 - af) * error
    tiny = jnp.finfo(dtype).tiny
    comps = jnp.stack([
        jnp.log1p(-dropout) + _log_b(alt, depth, q, likelihood, concentration),
        jnp.log(dropout) + jnp.log(jnp.maximum(af, tiny)) + _log_b(alt, depth, 1.0 - error, likelihood, concentration),
        jnp.log(dropout) + jnp.log(jnp.maximum(1.0 - af, tiny)) + _log_b(alt, depth, error, likelihood, concentration),
    ])
    ll = logsumexp(comps, axis=0) + (_log_comb(alt, depth) if normalised else 0.0)
    return jnp.where(depth > 0, ll, 0.0)


# ----------------------------------------------------------------------------------------------
# sparse counts: covered entries only
# ----------------------------------------------------------------------------------------------

@jax.tree_util.register_pytree_node_class
class SparseAlleleCounts:
    """Covered entries (``DP > 0``) of a cells x variants ALT/DP pair, sorted by cell, with the
    distinct (variant, ALT, DP) triples stored once.

    Entry ``e`` is cell ``rows[e]`` and triple ``code[e]``; triple ``u`` is variant ``ucols[u]``
    with counts ``ualt[u]``, ``udepth[u]``. At single-cell depths most covered entries repeat a
    few (ALT, DP) pairs per variant, so the per-clone log-likelihoods are computed once per
    triple (U x K) and only copied to the entries (nnz x K). ``code_order`` / ``code_sorted``
    sort the entries by triple (the backward pass sums over entries with sorted segment sums).
    Padding (entries on the last cell pointing at a triple with ``DP = 0``) rounds both sizes up
    so data of similar size share a compiled programme. ``n_cells`` and ``n_variants`` are static
    (pytree auxiliary data). Build with :func:`sparse_allele_counts`.
    """

    _fields = ("rows", "code", "code_order", "code_sorted", "ucols", "ualt", "udepth")

    def __init__(self, rows, code, code_order, code_sorted, ucols, ualt, udepth, n_cells, n_variants):
        self.rows, self.code, self.code_order, self.code_sorted = rows, code, code_order, code_sorted
        self.ucols, self.ualt, self.udepth = ucols, ualt, udepth
        self.n_cells, self.n_variants = int(n_cells), int(n_variants)

    @property
    def shape(self):
        return (self.n_cells, self.n_variants)

    @property
    def nnz(self):
        return int(self.rows.shape[0])

    def tree_flatten(self):
        return tuple(getattr(self, f) for f in self._fields), (self.n_cells, self.n_variants)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


def _bucket(n: int) -> int:
    """``n`` rounded up to the next of 2^m, 1.25 * 2^m, 1.5 * 2^m, 1.75 * 2^m (at most 25 % padding)."""
    if n <= 64:
        return 64
    top = 1 << (int(n - 1).bit_length() - 1)
    for f in (1.0, 1.25, 1.5, 1.75, 2.0):
        if n <= int(top * f):
            return int(top * f)
    return 2 * top


def sparse_entries(alt, depth):
    """The covered entries of ALT/DP (cells x variants; NumPy or scipy sparse), sorted by cell then
    variant: ``(rows, cols, alt, depth)`` NumPy arrays. Checks that the counts are finite
    non-negative integers with ``alt <= depth`` (so ``alt == 0`` where ``depth == 0``); never
    builds a dense matrix from sparse input."""
    import scipy.sparse as sp

    if alt.shape != depth.shape or len(alt.shape) != 2:
        raise ValueError(f"alt shape {alt.shape} does not match depth shape {depth.shape} (cells x variants)")
    J = alt.shape[1]
    entries = []
    for x, name in ((alt, "alt"), (depth, "depth")):
        x = sp.coo_matrix(x) if sp.issparse(x) else sp.coo_matrix(np.asarray(x, np.float64))
        x.sum_duplicates()
        v = _check_count_values(np.asarray(x.data, np.float64), name)
        keep = v > 0
        entries.append((x.row[keep].astype(np.int64) * J + x.col[keep], v[keep]))
    (lin_a, va), (lin_d, vd) = entries
    order = np.argsort(lin_d, kind="stable")
    lin_d, vd = lin_d[order], vd[order]
    a = np.zeros_like(vd)
    if lin_a.size:
        pos = np.minimum(np.searchsorted(lin_d, lin_a), max(lin_d.size - 1, 0))
        if lin_d.size == 0 or (lin_d[pos] != lin_a).any():
            raise ValueError("alt exceeds depth in some entries (ALT reads where depth is 0)")
        a[pos] = va
    if (a > vd).any():
        raise ValueError("alt exceeds depth in some entries")
    return lin_d // J, lin_d % J, a, vd


def sparse_allele_counts(alt, depth, *, pad: bool = True, entries=None) -> SparseAlleleCounts:
    """:class:`SparseAlleleCounts` from ALT and DP (cells x variants; NumPy or scipy sparse), or
    from ``entries`` = :func:`sparse_entries`'s output. ``pad`` rounds the entry and triple
    counts up (:func:`_bucket`)."""
    N, J = alt.shape
    rows, cols, a, n = sparse_entries(alt, depth) if entries is None else entries
    key = np.stack([cols, a.astype(np.int64), n.astype(np.int64)], axis=1)
    triples, code = np.unique(key, axis=0, return_inverse=True) if len(key) else (np.zeros((0, 3), np.int64),
                                                                                  np.zeros(0, np.int64))
    code = np.asarray(code).ravel()
    nnz, n_u = rows.size, triples.shape[0]
    size = _bucket(nnz) if pad else max(nnz, 1)
    u_size = _bucket(n_u + 1) if pad else n_u + 1  # at least one padding triple (DP = 0)
    ucols, ualt, udepth = (np.zeros(u_size, t) for t in (np.int32, np.float32, np.float32))
    ucols[:n_u], ualt[:n_u], udepth[:n_u] = triples[:, 0], triples[:, 1], triples[:, 2]
    r = np.full(size, N - 1, np.int32)
    c = np.full(size, n_u, np.int32)
    r[:nnz], c[:nnz] = rows, code
    order = np.argsort(c, kind="stable").astype(np.int32)
    return SparseAlleleCounts(*(jnp.asarray(x) for x in (r, c, order, c[order], ucols, ualt, udepth)), N, J)


@jax.custom_vjp
def _expand(per_code, code, code_order, code_sorted):
    """``per_code[code]`` (entries x K); its transpose sums over the entries of each code with a
    sorted segment sum (XLA's scatter-add with unsorted indices is several times slower on CPU)."""
    return per_code[code]


def _expand_fwd(per_code, code, code_order, code_sorted):
    return per_code[code], (code_order, code_sorted, per_code.shape[0])


def _expand_bwd(res, g):
    order, srt, n = res
    return jax.ops.segment_sum(g[order], srt, num_segments=n, indices_are_sorted=True), None, None, None


_expand.defvjp(_expand_fwd, _expand_bwd)


def _sparse_loglik(data: SparseAlleleCounts, af, dropout, error, likelihood, concentration, normalised=True):
    """``out[i, k] = sum_{e: row_e = i} log P(ALT_e | DP_e, z_i = k)`` over the covered entries:
    :func:`allele_entry_loglik` once per distinct (variant, ALT, DP) triple (U x K), copied to the
    entries and summed per cell with a sorted segment sum (memory and time O(nnz · K + U · K))."""
    per_code = allele_entry_loglik(data.ualt[:, None], data.udepth[:, None], af.T[data.ucols], dropout, error,
                                   likelihood=likelihood, concentration=concentration, normalised=normalised)
    per_entry = _expand(per_code.astype(af.dtype), data.code, data.code_order, data.code_sorted)
    return jax.ops.segment_sum(per_entry, data.rows, num_segments=data.n_cells, indices_are_sorted=True)


_CHUNK_ENTRIES = 1 << 19  # cells x clones x variants evaluated per chunk (a few MB: stays in cache)


def _chunk_loglik(alt, depth, af, dropout, error, likelihood, concentration, normalised=True):
    """``out[i, k] = sum_j log P(ALT_ij | DP_ij, z_i = k)`` for one block of cells.

    For the binomial the clone-independent parts are hoisted: with ``a = ALT``, ``b = DP - ALT``,
    the dropout-free component is ``a log q_kj + b log(1 - q_kj)`` (a matmul over variants) and the
    two dropout components differ from it by ``a A_kj + b B_kj + C_kj`` with (K x J) tables, so
    ``log P = log C(DP, ALT) + log(1-δ) + a log q + b log(1-q) + log(1 + e^u + e^v)`` needs two
    exponentials and one log per (cell, clone, variant), not three binomial log-pmfs.
    """
    dtype = af.dtype
    tiny = jnp.finfo(dtype).tiny
    a, n = alt, depth
    b = n - a
    covered = (n > 0).astype(dtype)
    log_comb = _log_comb(a, n).sum(-1)[:, None] if normalised else 0.0
    if likelihood != "binomial":
        ll = allele_entry_loglik(a[:, None, :], n[:, None, :], af[None], dropout, error, likelihood=likelihood,
                                 concentration=concentration, normalised=False)
        return ll.sum(-1) + log_comb
    le, l1e = jnp.log(error), jnp.log1p(-error)
    q = af * (1.0 - error) + (1.0 - af) * error
    lq, l1q = jnp.log(q), jnp.log1p(-q)
    base = a @ lq.T + b @ l1q.T + (covered.sum(-1) * jnp.log1p(-dropout))[:, None]
    c0 = jnp.log(dropout) - jnp.log1p(-dropout)
    u = a[:, None, :] * (l1e - lq) + b[:, None, :] * (le - l1q) + (c0 + jnp.log(jnp.maximum(af, tiny)))
    v = a[:, None, :] * (le - lq) + b[:, None, :] * (l1e - l1q) + (c0 + jnp.log(jnp.maximum(1.0 - af, tiny)))
    m = jnp.maximum(jnp.maximum(u, v), 0.0)
    corr = m + jnp.log(jnp.exp(-m) + jnp.exp(u - m) + jnp.exp(v - m))
    return base + (corr * covered[:, None, :]).sum(-1) + log_comb


@partial(jax.jit, static_argnames=("likelihood", "normalised"))  # one compiled unit, also when run eagerly
def allele_loglik(alt, depth, af, dropout, error, *, likelihood="binomial", concentration=None, normalised=True):
    """Cell-by-clone log-likelihood: ``out[i, k] = sum_j log P(ALT_ij | DP_ij, z_i = k)``.

    ``alt``, ``depth``: (cells, variants); ``af``: (clones, variants) with germline columns at 0.5.
    Cells are processed in blocks by a ``lax.scan`` whose body is ``jax.checkpoint``-ed, so the
    (cells x clones x variants) intermediates of the forward and backward passes never exist at
    once and each block stays in cache (3-4x faster gradients on a CPU than one big array).
    ``normalised=False`` leaves out the data constant ``sum_j log C(DP_ij, ALT_ij)`` (SVI adds it
    back once instead of recomputing it every step).

    ``alt`` may instead be a :class:`SparseAlleleCounts` (``depth`` then ``None``): only the
    covered entries are evaluated (:func:`_sparse_loglik`), with the same result.
    """
    if isinstance(alt, SparseAlleleCounts):
        af = jnp.asarray(af, jnp.result_type(jnp.asarray(af).dtype, jnp.float32))
        return _sparse_loglik(alt, af, dropout, error, likelihood, concentration, normalised)
    alt, depth = jnp.asarray(alt), jnp.asarray(depth)
    dtype = jnp.result_type(alt.dtype, jnp.asarray(af).dtype, jnp.float32)
    alt, depth, af = alt.astype(dtype), depth.astype(dtype), jnp.asarray(af, dtype)
    N, J = alt.shape
    K = af.shape[0]
    block = int(max(1, min(N, _CHUNK_ENTRIES // max(1, K * J))))
    n_blocks = -(-N // block)
    pad = n_blocks * block - N
    if n_blocks == 1:
        return _chunk_loglik(alt, depth, af, dropout, error, likelihood, concentration, normalised)
    alt_b = jnp.pad(alt, ((0, pad), (0, 0))).reshape(n_blocks, block, J)
    depth_b = jnp.pad(depth, ((0, pad), (0, 0))).reshape(n_blocks, block, J)

    @jax.checkpoint
    def body(_, xs):
        return None, _chunk_loglik(xs[0], xs[1], af, dropout, error, likelihood, concentration, normalised)

    _, out = jax.lax.scan(body, None, (alt_b, depth_b))
    return out.reshape(n_blocks * block, K)[:N]


def clone_responsibilities(alt, depth, af, pi, dropout, error, *, likelihood="binomial", concentration=None,
                           normalised=True):
    """Posterior clone probabilities (cells x clones) and per-cell marginal log-likelihood.

    ``log r_ik = log pi_k + l_ik - logsumexp_k'(log pi_k' + l_ik')`` with ``l`` from
    :func:`allele_loglik`. Returns ``(probabilities, marginal)``.
    """
    joint = jnp.log(jnp.asarray(pi))[None, :] + allele_loglik(alt, depth, af, dropout, error, likelihood=likelihood,
                                                                concentration=concentration, normalised=normalised)
    marginal = logsumexp(joint, axis=1)
    return jnp.exp(joint - marginal[:, None]), marginal


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------

def allele_model(alt=None, depth=None, *, n_cells, n_variants, n_clones, germline_mask=None, likelihood="binomial",
                 model_coverage=False, pi_concentration=2.0, af_prior=(1.0, 1.0), dropout_prior=(2.0, 18.0),
                 error_prior=(2.0, 198.0), concentration_prior=(2.0, 0.02), mean_coverage=10.0,
                 size_factor_scale=0.3, expression_scale=0.5, dispersion_prior=(4.0, 1.0), gate_prior=(2.0, 8.0),
                 subsample_size=None, normalised=True):
    """NumPyro model of ALT/DP counts (cells x variants); maths in the module docstring.

    Fitting: pass ``alt`` and ``depth``; clones are marginalised with ``numpyro.factor``.
    ``subsample_size`` draws that many cells per evaluation (``numpyro.plate`` subsampling; the
    factor is rescaled by ``N / subsample_size``). ``normalised=False`` drops the data constant
    ``log C(DP, ALT)`` from the factor (SVI's loss is then offset by that constant).
    Simulation: ``alt=None`` samples ``z`` and ``alt`` (and ``depth`` too when ``model_coverage``).
    With ``model_coverage=True`` and ``depth`` given, depth is an observed ZINB site.

    Sites: ``pi``, ``af_raw`` (clones x variants), deterministic ``af`` (germline at 0.5),
    ``dropout``, ``error``, ``concentration`` (betabinomial), coverage ``size_factor``,
    ``expression``, ``dispersion``, ``gate``, ``depth``; simulation ``z``, ``dropout_event``,
    ``kept_alt``, ``alt``.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    N, J, K = n_cells, n_variants, n_clones
    germ = jnp.zeros(J, bool) if germline_mask is None else jnp.asarray(germline_mask, bool)

    pi = numpyro.sample("pi", dist.Dirichlet(jnp.full(K, float(pi_concentration))))
    with numpyro.plate("variants", J, dim=-1):
        with numpyro.plate("clones", K, dim=-2):
            v = numpyro.sample("af_raw", dist.Beta(*af_prior))
    af = numpyro.deterministic("af", jnp.where(germ[None, :], 0.5, v))
    delta = numpyro.sample("dropout", dist.Beta(*dropout_prior))
    eps = numpyro.sample("error", dist.Beta(*error_prior))
    kappa = numpyro.sample("concentration", dist.Gamma(*concentration_prior)) if likelihood == "betabinomial" else None

    cells = numpyro.plate("cells", N, dim=-2)
    variants = numpyro.plate("variants", J, dim=-1)
    if model_coverage:
        with cells:
            s = numpyro.sample("size_factor", dist.LogNormal(0.0, size_factor_scale))
        with variants:
            mu = numpyro.sample("expression", dist.LogNormal(jnp.log(mean_coverage), expression_scale))
            gate = numpyro.sample("gate", dist.Beta(*gate_prior))
        phi = numpyro.sample("dispersion", dist.Gamma(*dispersion_prior))
        with cells, variants:
            depth = numpyro.sample("depth", dist.ZeroInflatedNegativeBinomial2(s * mu, phi, gate=gate), obs=depth)
    elif depth is None and not isinstance(alt, SparseAlleleCounts):
        raise ValueError("depth is required unless model_coverage=True")

    if alt is not None:
        if subsample_size is not None and model_coverage:
            raise ValueError("subsample_size needs model_coverage=False (depth conditioned on)")
        if isinstance(alt, SparseAlleleCounts):
            if subsample_size is not None or model_coverage:
                raise ValueError("sparse counts (SparseAlleleCounts) need subsample_size=None and model_coverage=False")
            with numpyro.plate("cells", N, dim=-2):
                _, marginal = clone_responsibilities(alt, None, af, pi, delta, eps, likelihood=likelihood,
                                                     concentration=kappa, normalised=normalised)
                numpyro.factor("alt_marginal", marginal[:, None])
            return
        with numpyro.plate("cells", N, subsample_size=subsample_size, dim=-2) as idx:
            a, d = (alt, depth) if subsample_size is None else (jnp.asarray(alt)[idx], jnp.asarray(depth)[idx])
            _, marginal = clone_responsibilities(a, d, af, pi, delta, eps, likelihood=likelihood, concentration=kappa,
                                                 normalised=normalised)
            numpyro.factor("alt_marginal", marginal[:, None])
        return

    # simulation: explicit clone labels, dropout events, kept allele, ALT counts
    with cells:
        z = numpyro.sample("z", dist.Categorical(pi))  # (N, 1)
    f = af[z[:, 0]]  # (N, J)
    with cells, variants:
        d = numpyro.sample("dropout_event", dist.Bernoulli(delta))
        keep = numpyro.sample("kept_alt", dist.Bernoulli(f))
        q = f * (1.0 - eps) + (1.0 - f) * eps
        p = jnp.where(d > 0, jnp.where(keep > 0, 1.0 - eps, eps), q)
        n = jnp.asarray(depth).astype(jnp.int32)
        if likelihood == "binomial":
            numpyro.sample("alt", dist.Binomial(n, p))
        else:
            numpyro.sample("alt", dist.BetaBinomial(p * kappa, (1.0 - p) * kappa, n))


# ----------------------------------------------------------------------------------------------
# simulation
# ----------------------------------------------------------------------------------------------

class AlleleSimulation(NamedTuple):
    alt: np.ndarray      # (cells, variants) int
    depth: np.ndarray    # (cells, variants) int
    labels: np.ndarray   # (cells,) true clone
    af: np.ndarray       # (clones, variants) true allele frequency (germline columns 0.5)
    params: dict         # every sampled/deterministic site value (ground truth)


_MODEL_KWARGS = ("germline_mask", "likelihood", "pi_concentration", "af_prior", "dropout_prior", "error_prior",
                 "concentration_prior", "mean_coverage", "size_factor_scale", "expression_scale", "dispersion_prior",
                 "gate_prior")


def simulate_alleles(n_cells=500, n_variants=50, n_clones=3, *, seed=0, **params) -> AlleleSimulation:
    """Draw data from :func:`allele_model` (``seed`` + ``substitute`` + ``trace`` handlers).

    ``params`` holds model keyword arguments (``germline_mask``, ``likelihood``, ``mean_coverage``,
    priors...; here ``af_prior`` defaults to the U-shaped ``(0.5, 0.5)``) and/or fixed site values
    substituted into the model (``pi``, ``af`` (clones x variants), ``dropout``, ``error``,
    ``concentration``, ``dispersion``, ``gate``, ``size_factor``, ``expression``). Passing
    ``depth`` (cells x variants) conditions on it instead of drawing coverage.
    """
    _check_sizes(n_cells, n_variants, n_clones)
    kwargs = {k: params.pop(k) for k in list(params) if k in _MODEL_KWARGS}
    kwargs.setdefault("af_prior", (0.5, 0.5))
    depth = params.pop("depth", None)
    if depth is not None:
        depth = _as_counts(depth, "depth")
        if depth.shape != (n_cells, n_variants):
            raise ValueError(f"depth has shape {depth.shape}, expected {(n_cells, n_variants)}")
    if "af" in params:
        params["af_raw"] = params.pop("af")
    known = {"pi", "af_raw", "dropout", "error", "concentration", "dispersion", "gate", "size_factor", "expression"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown simulation parameters {sorted(unknown)}")
    data = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    if "size_factor" in data:
        data["size_factor"] = data["size_factor"].reshape(n_cells, 1)
    germ = kwargs.pop("germline_mask", None)
    germ = np.zeros(n_variants, bool) if germ is None else np.asarray(germ, bool)
    if germ.shape != (n_variants,):
        raise ValueError(f"germline_mask has shape {germ.shape}, expected {(n_variants,)}")

    @jax.jit  # one compilation instead of one per eager primitive
    def draw(key, data, dp, germline_mask):
        model = handlers.substitute(handlers.seed(allele_model, key), data=data)
        tr = handlers.trace(model).get_trace(None, dp, n_cells=n_cells, n_variants=n_variants, n_clones=n_clones,
                                             model_coverage=dp is None, germline_mask=germline_mask, **kwargs)
        return {name: site["value"] for name, site in tr.items() if site["type"] in ("sample", "deterministic")}

    out = draw(jax.random.PRNGKey(seed), data, None if depth is None else jnp.asarray(depth, jnp.float32),
               jnp.asarray(germ))
    values = {name: np.asarray(v) for name, v in out.items()}
    alt = values["alt"].astype(np.int64)
    dp = values["depth"].astype(np.int64) if depth is None else depth.astype(np.int64)
    values["depth"] = dp
    return AlleleSimulation(alt=alt, depth=dp, labels=values["z"][:, 0].astype(np.int64), af=values["af"], params=values)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

def _check_sizes(n_cells, n_variants, n_clones):
    for name, v in (("n_cells", n_cells), ("n_variants", n_variants), ("n_clones", n_clones)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _as_counts(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (cells x variants) array, got {x.ndim}-D")
    return _check_count_values(x, name)


def _check_count_values(x, name):
    """``x`` (any shape, float64) if it holds finite non-negative integers, else ``ValueError``."""
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains inf")
    if (x < 0).any():
        raise ValueError(f"{name} contains negative counts")
    if (x != np.round(x)).any():
        raise ValueError(f"{name} contains non-integer counts")
    return x


def _check_data(alt, depth):
    alt, depth = _as_counts(alt, "alt"), _as_counts(depth, "depth")
    if alt.shape != depth.shape:
        raise ValueError(f"alt shape {alt.shape} does not match depth shape {depth.shape}")
    if (alt > depth).any():
        raise ValueError("alt exceeds depth in some entries")
    return alt, depth
