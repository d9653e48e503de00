"""ZINB-WaVE at atlas scale: the outer iteration of :mod:`._zinb` with the counts kept sparse and
streamed through the compiled step block by block (Risso et al., Nat. Commun. 9:284, 2018).

The model, the penalised log-likelihood (PLL) and every update are those of ``_zinb``; what
changes is only which part of the counts is dense at any moment. Every update of the outer
iteration is separable over rows of one kind:

- the cell-wise block (γ_μ, γ_π, W) over cells: it runs on blocks of ``block_cells`` cells × all
  genes, each the dense ``_zinb._cell_block`` of those cells;
- the gene-wise block (β_μ, α_μ, β_π, α_π) over genes: blocks of all cells × ``block_genes``
  genes, each ``_zinb._gene_block``;
- the dispersion step reads the data only through per-gene sums over cells of the log-likelihood
  and its ζ-derivatives (``_zinb.dispersion_with``); they are gathered block of genes by block;
- orthogonalisation and the intercept balance touch W (n × K) and α (K × J) only.

So a step here equals ``zinbwave_algorithm``'s step up to float rounding (the row updates are the
same functions on the same rows), the PLL still never decreases, and the largest dense arrays
are blocks of about ``block_cells × J`` and ``n × block_genes`` entries (a few tens of MB),
however many cells there are. The counts live on the device twice as padded coordinate lists
(one per kind of block: CSR of the cells, CSC of the genes), each about 12 bytes per non-zero;
a block is made dense by one scatter when it is used.

Initialisation: zinbwave's ``zinbInitialize`` (``_zinb_init.make_init``) on a subsample of
cells that covers every gene (dense; ``init_cells`` of them), then every cell's own γ_μ and W by
the same ridge regression of its log positive counts (the zeros missing) on [V, α_μᵀ], and its
γ_π by the same logistic regressions of its zero indicator, block by block.

zinbsurf (Risso et al.'s subsample-then-project, zinbwave ≥ 1.6): ``fit_zinbwave(...,
subsample=m)`` fits m cells and projects the others with the cell-wise block, gene parameters
fixed (``transform``); see ``_zinb_fit``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._base import Algorithm
from ._zinb import (
    ZINBData, ZINBState, _balance_intercepts, _cell_block, _gene_block, _orth_state, dense_gene_sums, designs,
    dispersion_with, genewise_zeta, penalty, predictors,
)
from ._zinb_init import LOGIT_STEPS, _logistic_rows, _weighted_ridge, make_init
from ._zinb_lik import zinb_log_prob


class BlockedCounts(NamedTuple):
    """Counts Y (n × J) as two padded coordinate lists, and the designs.

    ``c_*[i]``: the non-zeros of cells ``i·Bc … (i+1)·Bc − 1`` (row within the block, gene,
    value); ``g_*[j]``: those of genes ``j·Bg …`` (cell, gene within the block, value). Padding
    entries have value 0 at (0, 0). ``Y_sub``: the dense counts of the cells ``sub_idx`` that
    start the fit. X (n, M), V (J, L); X_pi, V_pi the π side's designs (None: X, V)."""

    c_rows: jax.Array
    c_cols: jax.Array
    c_vals: jax.Array
    g_rows: jax.Array
    g_cols: jax.Array
    g_vals: jax.Array
    X: jax.Array
    V: jax.Array
    Y_sub: jax.Array
    sub_idx: jax.Array
    X_pi: jax.Array | None = None
    V_pi: jax.Array | None = None


def _coo_blocks(major, minor, vals, n_major: int, block: int, dtype):
    """Padded (n_blocks, capacity) lists of (major index within its block, minor, value), from
    entries sorted by ``major``."""
    n_blocks = -(-n_major // block)
    which = major // block
    counts = np.bincount(which, minlength=n_blocks)
    cap = max(int(counts.max()) if counts.size else 0, 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(major.size) - np.repeat(starts, counts)
    R = np.zeros((n_blocks, cap), np.int32)
    C = np.zeros((n_blocks, cap), np.int32)
    Vv = np.zeros((n_blocks, cap), dtype)
    R[which, slot] = major - which * block
    C[which, slot] = minor
    Vv[which, slot] = vals
    return R, C, Vv


def block_counts(Y, X, V, X_pi, V_pi, sub_idx, block_cells: int, block_genes: int, cast) -> BlockedCounts:
    """``BlockedCounts`` from scipy sparse (or dense) non-negative counts Y (host NumPy work)."""
    import scipy.sparse as sp

    Yc = sp.csr_matrix(Y)
    Yc.sum_duplicates()
    Yc.eliminate_zeros()
    n, J = Yc.shape
    dt = np.dtype(cast(np.zeros(0)).dtype)
    coo = Yc.tocoo()  # row-major (CSR order)
    cr, cc, cv = _coo_blocks(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, n, block_cells, dt)
    csc = Yc.tocsc()
    cols = np.repeat(np.arange(J), np.diff(csc.indptr))
    gc, gr, gv = _coo_blocks(cols, csc.indices.astype(np.int64), csc.data, J, block_genes, dt)
    sub = np.asarray(Yc[sub_idx].toarray())
    put = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731
    return BlockedCounts(put(cr), put(cc), cast(cv), put(gr), put(gc), cast(gv), cast(X), cast(V), cast(sub),
                         jnp.asarray(sub_idx, jnp.int32), None if X_pi is None else cast(X_pi),
                         None if V_pi is None else cast(V_pi))


def covering_subsample(Y, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` random cells (all if ``size`` ≥ n), topped up with one cell
    per gene that has no count in them, so every gene has a positive count in the subsample."""
    import scipy.sparse as sp

    Yc = sp.csr_matrix(Y)
    n = Yc.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if size >= n else np.sort(rng.choice(n, size, replace=False))
    seen = np.asarray((Yc[idx] > 0).sum(axis=0)).ravel() > 0
    if not seen.all():
        csc = Yc.tocsc()
        extra = [int(csc.indices[csc.indptr[j]]) for j in np.flatnonzero(~seen)]
        idx = np.unique(np.concatenate([idx, extra]))
    return idx


def _dense(rows, cols, vals, shape):
    return jnp.zeros(shape, vals.dtype).at[rows, cols].add(vals)


def _split(A, n_blocks: int, block: int, axis: int):
    """A padded along ``axis`` to n_blocks · block and split into a leading block axis."""
    pad = n_blocks * block - A.shape[axis]
    widths = [(0, 0)] * A.ndim
    widths[axis] = (0, pad)
    A = jnp.pad(A, widths)
    A = jnp.moveaxis(A, axis, 0).reshape((n_blocks, block) + tuple(np.delete(A.shape, axis)))
    return jnp.moveaxis(A, 1, axis + 1)


def _join(A, size: int, axis: int):
    """Inverse of ``_split``: the block axis merged back into ``axis`` and cut to ``size``."""
    A = jnp.moveaxis(A, axis + 1, 1)
    A = A.reshape((-1,) + A.shape[2:])[:size]
    return jnp.moveaxis(A, 0, axis)


class _Blocks:
    """The block views of one ``BlockedCounts`` for a fixed (block_cells, block_genes)."""

    def __init__(self, d: BlockedCounts, Bc: int, Bg: int):
        self.d, self.Bc, self.Bg = d, Bc, Bg
        self.n, self.J = d.X.shape[0], d.V.shape[0]
        self.nc, self.ng = d.c_rows.shape[0], d.g_rows.shape[0]
        self.Xm, self.Xp, self.Vm, self.Vp = designs(ZINBData(None, d.X, d.V, None, None, d.X_pi, d.V_pi))
        self.same_X, self.same_V = d.X_pi is None, d.V_pi is None

    def cell_map(self, fn, st: ZINBState):
        """``fn(state of the block's cells, ZINBData of the block, valid-row mask)`` for every
        block of cells (lax.map); returns its outputs stacked along a leading block axis."""
        sc = lambda A, axis: _split(A, self.nc, self.Bc, axis)  # noqa: E731
        xs = (self.d.c_rows, self.d.c_cols, self.d.c_vals, sc(self.Xm, 0), None if self.same_X else sc(self.Xp, 0),
              sc(st.gamma_mu, 1), sc(st.gamma_pi, 1), sc(st.W, 0),
              sc(jnp.ones((self.n,), self.d.c_vals.dtype), 0))

        def body(x):
            r, c, v, Xb, Xpb, gm, gp, Wb, valid = x
            db = ZINBData(_dense(r, c, v, (self.Bc, self.J)), Xb, self.Vm, None, None, Xpb, None if self.same_V else self.Vp)
            return fn(st._replace(gamma_mu=gm, gamma_pi=gp, W=Wb), db, valid)

        return lax.map(body, xs)

    def gene_map(self, fn, st: ZINBState, zeta=None):
        """``fn(state with the block's genes, ZINBData of the block, its (rows, cols, values))``
        for every block of genes."""
        sg = lambda A, axis: _split(A, self.ng, self.Bg, axis)  # noqa: E731
        z = st.zeta if zeta is None else zeta
        xs = (self.d.g_rows, self.d.g_cols, self.d.g_vals, sg(self.Vm, 0), None if self.same_V else sg(self.Vp, 0),
              sg(st.beta_mu, 1), sg(st.beta_pi, 1), sg(st.alpha_mu, 1), sg(st.alpha_pi, 1), sg(z, 0))

        def body(x):
            r, c, v, Vb, Vpb, bm, bp, am, ap, zb = x
            db = ZINBData(_dense(r, c, v, (self.n, self.Bg)), self.Xm, Vb, None, None,
                          None if self.same_X else self.Xp, Vpb)
            return fn(st._replace(beta_mu=bm, beta_pi=bp, alpha_mu=am, alpha_pi=ap, zeta=zb), db, (r, c, v))

        return lax.map(body, xs)

    def shell(self) -> ZINBData:
        """The designs alone (for ``_balance_intercepts``)."""
        return ZINBData(None, self.d.X, self.d.V, None, None, self.d.X_pi, self.d.V_pi)


@lru_cache(maxsize=None)
def zinbwave_stream_algorithm(n_components: int, zero_inflation: bool = True, common_dispersion: bool = False, *,
                              intercepts: bool = False, n_inner: int = 2, block_cells: int = 4096,
                              block_genes: int = 64, max_dispersion_iter: int = 10, max_halvings: int = 10,
                              local_dispersion: bool = True) -> Algorithm:
    """``zinbwave_algorithm`` on ``BlockedCounts`` (module docstring): the same outer iteration,
    block by block; cached per static choice (the block sizes are shapes). Returns the
    ``Algorithm`` and a jitted ``loglik_by_gene(state, data)``.

    ``local_dispersion``: the gene-wise ζ step (``_zinb.dispersion_with``'s step 3, where genes
    decouple) iterates block of genes by block, each as long as its own genes need, instead of
    every block as long as the slowest gene of all; each gene still stops within the same
    tolerance. False gives exactly ``zinbwave_algorithm``'s step (tests)."""
    K, zi, common = int(n_components), bool(zero_inflation), bool(common_dispersion)
    Bc, Bg = int(block_cells), int(block_genes)

    def block_sums(sb, db, entries):
        a, b = predictors(sb, db)
        return dense_gene_sums(db, a, b, zi)

    def gene_sums(blk: _Blocks, st: ZINBState):
        def sums(z, derivatives):
            out = blk.gene_map(lambda sb, db, e: block_sums(sb, db, e)(sb.zeta, derivatives), st, z)
            return jax.tree_util.tree_map(lambda o: _join(o, blk.J, 0), out)

        return sums

    def genewise(blk: _Blocks, st: ZINBState):
        def solve(z, c, kappa):
            def one(sb, db, e):
                return genewise_zeta(block_sums(sb, db, e), sb.zeta, c, kappa, max_dispersion_iter, max_halvings)

            return _join(blk.gene_map(one, st, z), blk.J, 0)

        return solve if local_dispersion else None

    def step(st, d, hp):
        blk = _Blocks(d, Bc, Bg)
        zeta = dispersion_with(gene_sums(blk, st), st.zeta, hp, common, max_dispersion_iter, max_halvings,
                               genewise=genewise(blk, st))
        st = st._replace(zeta=zeta)

        def genes(sb, db, _):
            out = _gene_block(sb, db, hp, zi, n_inner, max_halvings)
            return out.beta_mu, out.beta_pi, out.alpha_mu, out.alpha_pi

        bm, bp, am, ap = blk.gene_map(genes, st)
        st = st._replace(beta_mu=_join(bm, blk.J, 1), beta_pi=_join(bp, blk.J, 1), alpha_mu=_join(am, blk.J, 1),
                         alpha_pi=_join(ap, blk.J, 1))
        if K:
            st = _orth_state(st, hp)

        def cells(sb, db, _):
            out = _cell_block(sb, db, hp, zi, n_inner, max_halvings)
            return out.gamma_mu, out.gamma_pi, out.W

        gm, gp, W = blk.cell_map(cells, st)
        st = st._replace(gamma_mu=_join(gm, blk.n, 1), gamma_pi=_join(gp, blk.n, 1), W=_join(W, blk.n, 0))
        if K:
            st = _orth_state(st, hp)
        if intercepts:
            st = _balance_intercepts(st, hp, zi, blk.shell())
        return st

    def loglik_by_gene(st, d):
        """Σ over cells of log ZINB(y_ij), per gene (J,)."""
        blk = _Blocks(d, Bc, Bg)

        def one(sb, db, valid):
            a, b = predictors(sb, db)
            ll = zinb_log_prob(db.Y, a, b, sb.zeta[None, :], zi)
            return jnp.sum(jnp.where(valid[:, None] > 0, ll, 0.0), axis=0)

        return jnp.sum(blk.cell_map(one, st), axis=0)

    def objective(st, d, hp):
        return -(jnp.sum(loglik_by_gene(st, d)) - penalty(st, hp, zi))

    def init(key, d, hp):
        blk = _Blocks(d, Bc, Bg)
        take = lambda A: None if A is None else A[d.sub_idx]  # noqa: E731
        sub = ZINBData(d.Y_sub, d.X[d.sub_idx], d.V, None, None, take(d.X_pi), d.V_pi)
        g = make_init(K, zi)(key, sub, hp)
        dt = d.c_vals.dtype
        zero_cells = ZINBState(g.beta_mu, g.beta_pi, jnp.zeros((d.V.shape[1], blk.n), dt),
                               jnp.zeros((blk.Vp.shape[1], blk.n), dt), jnp.zeros((blk.n, K), dt), g.alpha_mu,
                               g.alpha_pi, g.zeta)
        L = blk.Vm.shape[1]
        pen = jnp.concatenate([hp.eps_gamma_mu, jnp.full((K,), hp.eps_W, dt)])
        B = jnp.concatenate([blk.Vm, g.alpha_mu.T], axis=1)  # (J, L + K)

        def cells(sb, db, _):
            Xm, Xp, _, Vp = designs(db)
            pos = (db.Y > 0).astype(dt)
            Lg = jnp.where(db.Y > 0, jnp.log(jnp.maximum(db.Y, 1.0)), 0.0) - Xm @ g.beta_mu
            coef = _weighted_ridge(Lg.T, pos.T, B, pen)  # (L + K, cells)
            W = coef[L:].T
            gp = sb.gamma_pi
            if zi:
                off = (Xp @ g.beta_pi + W @ g.alpha_pi).T
                gp = _logistic_rows(1.0 - pos.T, off, Vp, hp.eps_gamma_pi, gp, LOGIT_STEPS)
            return coef[:L], gp, W

        gm, gp, W = blk.cell_map(cells, zero_cells)
        st = zero_cells._replace(gamma_mu=_join(gm, blk.n, 1), gamma_pi=_join(gp, blk.n, 1), W=_join(W, blk.n, 0))
        return _orth_state(st, hp) if K else st

    alg = Algorithm(init, step, objective, monotone=True)
    return alg, jax.jit(loglik_by_gene)
