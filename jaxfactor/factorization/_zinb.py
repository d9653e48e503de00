"""ZINB-WaVE: zero-inflated negative-binomial factorisation into known and unknown components
(Risso, Perraudeau, Gribkova, Dudoit & Vert, "A general and flexible method for signal
extraction from single-cell RNA-seq data", Nat. Commun. 9:284, 2018; Bioconductor package
``zinbwave``).

Model, for counts Y (n cells × J genes)::

    Y_ij ~ ZINB(μ_ij, θ_j, π_ij)
    log μ   = X β_μ + (V γ_μ)ᵀ + W α_μ + O_μ
    logit π = X β_π + (V γ_π)ᵀ + W α_π + O_π

X (n × M) and V (J × L) are known cell and gene covariates, W (n × K) unknown cell factors,
α (K × J) their loadings, O offsets, ζ = log θ the dispersion (gene-wise or common). The fit
maximises the penalised log-likelihood (paper eq. 3)::

    PLL = Σ log ZINB(Y_ij) − ε_α/2 (‖α_μ‖² + ‖α_π‖²) − Σ_m ε_β,m/2 ‖β_m‖² − Σ_l ε_γ,l/2 ‖γ_l‖²
          − ε_W/2 ‖W‖² − ε_ζ/2 var(ζ)

``objective`` returns −PLL (lower is better). One ``step`` is one outer iteration of zinbwave's
``zinbOptimize``:

1. dispersion: safeguarded Newton iterations on ζ (one scalar, or one per gene with the
   var-penalty written as ``ε_ζ/(2(J−1)) Σ (ζ_j − c)²`` — its minimum over c is at c = mean ζ —
   alternating a shift of every ζ_j together (the penalty's flat direction), c, and each gene
   with c fixed, until ζ settles; see ``_dispersion``);
2. gene-wise block (β_μ, α_μ, β_π, α_π), independent over genes: Fisher-scoring steps, one
   small (2(M+K))² linear system per gene, batched;
3. orthogonalisation of W and [α_μ α_π] (below);
4. cell-wise block (γ_μ, γ_π, W), independent over cells: the same with (2L+K)² systems;
5. orthogonalisation again (and, with intercepts in X and V, ``_balance_intercepts``).

Each Newton/Fisher step is followed by a per-row backtracking line search that keeps a row's
new parameters only if its penalised log-likelihood did not decrease; the blocks are exact
row-separable pieces of PLL (the other block fixed), so PLL never decreases (``monotone``; in
float32 up to the rounding of the sums, ~1e-6 relative).

Why Fisher scoring instead of zinbwave's per-row BFGS (``optim``): the expected information of
the ZINB in (log μ, logit π) has a closed form and is positive semi-definite everywhere
(``_zinb_lik``), so every row's step is a solve of a small positive-definite system built from
three matrix products over all rows at once — the work a BLAS does best — while the observed
Hessian of the ZINB is indefinite wherever zeros are ambiguous. It is a different optimiser of
the same objective: the test suite checks that the fit reaches a PLL above the one at the
simulated truth and agrees with direct per-gene maximum likelihood when K = 0.

Orthogonalisation (zinbwave's ``orthogonalizeTraceNorm``): QR of W and of [α_μ α_π]ᵀ, SVD of the
product of the R factors, ``W ← Q_W U S^½ (ε_α/ε_W)^¼``, ``α ← (ε_W/ε_α)^¼ S^½ Vᵀ Q_αᵀ``. W α is
unchanged, WᵀW and ααᵀ are diagonal and ε_W‖W‖² = ε_α‖α‖²: the factorisation of W α with the
smallest penalty, so this step never lowers PLL either.

Initialisation: ``_zinb_init`` (zinbwave's ``zinbInitialize``, batched).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import gammaln

from ._zinb_lik import log_prob_fast, partial_log_prob, score_fisher, zeta_derivatives, zinb_log_prob

ZETA_RANGE = (-10.0, 20.0)  # log θ is kept in this box (θ from 4.5e-5 to 4.9e8: Poisson for all purposes)
_TAIL = 5.0  # above this log θ (θ ≈ 150) the dispersion step is Newton's in 1/θ


class ZINBData(NamedTuple):
    """Counts and known covariates (float arrays of one dtype)."""

    Y: jax.Array  # (n, J) counts
    X: jax.Array  # (n, M) cell covariates (an all-ones column for an intercept)
    V: jax.Array  # (J, L) gene covariates
    O_mu: jax.Array | None = None  # (n, J) offset of log μ (None: 0)
    O_pi: jax.Array | None = None  # (n, J) offset of logit π (None: 0)
    X_pi: jax.Array | None = None  # (n, M) the π side's cell design (None: X)
    V_pi: jax.Array | None = None  # (J, L) the π side's gene design (None: V)


def designs(d: ZINBData):
    """(X_μ, X_π, V_μ, V_π). zinbwave's ``which_X_mu`` / ``which_X_pi`` / ``which_V_mu`` /
    ``which_V_pi`` (the columns of X and V each regression uses) are data here: the μ side
    fits ``d.X``, ``d.V`` and the π side ``d.X_pi``, ``d.V_pi`` (default the same), all of the
    full width with the unused columns set to 0. A zero column leaves its coefficient's score
    and information at 0 and its coefficient, started at 0, stays exactly 0 (the Newton step
    of a decoupled coordinate is −ε x/(ε + damping) = 0 at x = 0), so the shapes, and the
    compiled program, are those of the full design."""
    return d.X, (d.X if d.X_pi is None else d.X_pi), d.V, (d.V if d.V_pi is None else d.V_pi)


class ZINBHparams(NamedTuple):
    """Ridge penalties (see ``default_hparams`` for zinbwave's defaults)."""

    eps_beta_mu: jax.Array  # (M,)
    eps_beta_pi: jax.Array  # (M,)
    eps_gamma_mu: jax.Array  # (L,)
    eps_gamma_pi: jax.Array  # (L,)
    eps_W: jax.Array  # ()
    eps_alpha: jax.Array  # ()
    eps_zeta: jax.Array  # ()


class ZINBState(NamedTuple):
    """Parameters, in zinbwave's layout."""

    beta_mu: jax.Array  # (M, J)
    beta_pi: jax.Array  # (M, J)
    gamma_mu: jax.Array  # (L, n)
    gamma_pi: jax.Array  # (L, n)
    W: jax.Array  # (n, K)
    alpha_mu: jax.Array  # (K, J)
    alpha_pi: jax.Array  # (K, J)
    zeta: jax.Array  # (J,) log θ (all equal with a common dispersion)


def _is_ones(col) -> bool:
    return col.size > 0 and bool(np.all(np.asarray(col) == 1))


def default_hparams(X, V, *, epsilon=None, epsilon_beta=None, epsilon_gamma=None, epsilon_W=None,
                    epsilon_alpha=None, epsilon_zeta=None, epsilon_min_logit: float = 1e-3) -> ZINBHparams:
    """zinbwave's defaults from ε = J: ε_β = ε_α = ε/J, ε_γ = ε_W = ε/n, ε_ζ = ε; an all-ones
    first column of X (V) is unpenalised on the μ side and gets ``epsilon_min_logit`` on π."""
    X, V = np.asarray(X), np.asarray(V)
    n, J = X.shape[0], V.shape[0]
    eps = float(J if epsilon is None else epsilon)
    pick = lambda v, d: float(d if v is None else v)
    e_beta, e_gamma = pick(epsilon_beta, eps / J), pick(epsilon_gamma, eps / n)
    b_mu, b_pi = np.full(X.shape[1], e_beta), np.full(X.shape[1], e_beta)
    g_mu, g_pi = np.full(V.shape[1], e_gamma), np.full(V.shape[1], e_gamma)
    if X.shape[1] and _is_ones(X[:, 0]):
        b_mu[0], b_pi[0] = 0.0, epsilon_min_logit
    if V.shape[1] and _is_ones(V[:, 0]):
        g_mu[0], g_pi[0] = 0.0, epsilon_min_logit
    return ZINBHparams(b_mu, b_pi, g_mu, g_pi, np.float64(pick(epsilon_W, eps / n)),
                       np.float64(pick(epsilon_alpha, eps / J)), np.float64(pick(epsilon_zeta, eps)))


# --------------------------------------------------------------------------------------------
# model pieces


def _offsets(d: ZINBData):
    z = jnp.zeros((), d.Y.dtype)
    return (z if d.O_mu is None else d.O_mu), (z if d.O_pi is None else d.O_pi)


def predictors(st: ZINBState, d: ZINBData):
    """(log μ, logit π), each (n, J)."""
    o_mu, o_pi = _offsets(d)
    Xm, Xp, Vm, Vp = designs(d)
    a = Xm @ st.beta_mu + (Vm @ st.gamma_mu).T + st.W @ st.alpha_mu + o_mu
    b = Xp @ st.beta_pi + (Vp @ st.gamma_pi).T + st.W @ st.alpha_pi + o_pi
    return a, b


def penalty(st: ZINBState, hp: ZINBHparams, zero_inflation: bool = True):
    """½ε_α(‖α_μ‖² + ‖α_π‖²) + ½Σ ε_β‖β‖² + ½Σ ε_γ‖γ‖² + ½ε_W‖W‖² + ½ε_ζ var(ζ) (var: J − 1)."""
    sq = lambda e, m: jnp.sum(e[:, None] * m * m)
    pen = sq(hp.eps_beta_mu, st.beta_mu) + sq(hp.eps_gamma_mu, st.gamma_mu)
    pen += hp.eps_alpha * jnp.sum(st.alpha_mu ** 2) + hp.eps_W * jnp.sum(st.W ** 2)
    if zero_inflation:
        pen += sq(hp.eps_beta_pi, st.beta_pi) + sq(hp.eps_gamma_pi, st.gamma_pi) + hp.eps_alpha * jnp.sum(st.alpha_pi ** 2)
    J = st.zeta.shape[0]
    if J > 1:
        pen += hp.eps_zeta * jnp.var(st.zeta, ddof=1)
    return 0.5 * pen


def penalized_log_likelihood(st: ZINBState, d: ZINBData, hp: ZINBHparams, zero_inflation: bool = True):
    a, b = predictors(st, d)
    # per-gene sums first: in float32 a single sum over n·J terms carries ~√(nJ)·eps of rounding
    ll = jnp.sum(jnp.sum(zinb_log_prob(d.Y, a, b, st.zeta[None, :], zero_inflation), axis=0))
    return ll - penalty(st, hp, zero_inflation)


def orthogonalize(W, A, eps_W, eps_alpha):
    """(W', A') with W'A' = WA, W'ᵀW' and A'A'ᵀ diagonal, ε_W‖W'‖² = ε_α‖A'‖² (A is K × m).

    Each factor's sign is fixed so that its loading of largest magnitude (in A') is positive
    (scikit-learn's ``svd_flip``): the SVD's own sign convention (Householder reflections) can
    flip under a rounding-size change of its input, which would flip a factor between two runs
    of the same fit (e.g. batched under ``vmap`` and alone)."""
    Qw, Rw = jnp.linalg.qr(W)
    Qa, Ra = jnp.linalg.qr(A.T)
    U, s, Vt = jnp.linalg.svd(Rw @ Ra.T)
    ok = (eps_W > 0) & (eps_alpha > 0)
    scale = jnp.where(ok, (jnp.where(ok, eps_alpha, 1.0) / jnp.where(ok, eps_W, 1.0)) ** 0.25, 1.0)
    r = jnp.sqrt(s)
    W2, A2 = (Qw @ U) * (r * scale), ((Qa @ Vt.T) * (r / scale)).T
    if A2.shape[0] and A2.shape[1]:
        big = jnp.take_along_axis(A2, jnp.argmax(jnp.abs(A2), axis=1)[:, None], axis=1)[:, 0]
        sign = jnp.where(big < 0, -1.0, 1.0).astype(A2.dtype)
        W2, A2 = W2 * sign, A2 * sign[:, None]
    return W2, A2


def _balance_intercepts(st: ZINBState, hp: ZINBHparams, zi: bool, d: ZINBData | None = None) -> ZINBState:
    """With an all-ones first column in both X and V, only β_0j + γ_0i enters the likelihood:
    move a constant c from every γ_0i to every β_0j where it lowers the ridge penalty most,
    ``c = (ε_γ Σ γ_0i − ε_β Σ β_0j) / (ε_β J + ε_γ n)`` (0 when both are unpenalised). Exact and
    monotone: the π intercepts, both penalised by ``epsilon_min_logit``, are put at their best
    split at once instead of creeping towards it through the alternating blocks. With ``d``, a
    side whose X or V intercept column is not used (``which_X_*`` / ``which_V_*``: a zero
    column in ``designs(d)``) is left alone."""
    if d is None:
        on_mu = on_pi = True
    else:
        Xm, Xp, Vm, Vp = designs(d)
        on_mu = jnp.all(Xm[:, 0] == 1) & jnp.all(Vm[:, 0] == 1)
        on_pi = jnp.all(Xp[:, 0] == 1) & jnp.all(Vp[:, 0] == 1)

    def shift(beta, gamma, eb, eg, on):
        J, n = beta.shape[1], gamma.shape[1]
        den = eb * J + eg * n
        c = jnp.where(den > 0, (eg * jnp.sum(gamma[0]) - eb * jnp.sum(beta[0])) / jnp.where(den > 0, den, 1.0), 0.0)
        c = jnp.where(on, c, 0.0)
        return beta.at[0].add(c), gamma.at[0].add(-c)

    bm, gm = shift(st.beta_mu, st.gamma_mu, hp.eps_beta_mu[0], hp.eps_gamma_mu[0], on_mu)
    st = st._replace(beta_mu=bm, gamma_mu=gm)
    if zi:
        bp, gp = shift(st.beta_pi, st.gamma_pi, hp.eps_beta_pi[0], hp.eps_gamma_pi[0], on_pi)
        st = st._replace(beta_pi=bp, gamma_pi=gp)
    return st


def _orth_state(st: ZINBState, hp: ZINBHparams) -> ZINBState:
    J = st.alpha_mu.shape[1]
    W, A = orthogonalize(st.W, jnp.concatenate([st.alpha_mu, st.alpha_pi], axis=1), hp.eps_W, hp.eps_alpha)
    return st._replace(W=W, alpha_mu=A[:, :J], alpha_pi=A[:, J:])


# --------------------------------------------------------------------------------------------
# row-separable Newton (Fisher-scoring) blocks


def _row_sum(f, axis):
    return jnp.sum(f, axis=axis)


def _line_search(x, d, f0, row_f, max_halvings, slope, tiny=None):
    """Per row: the first of x + d, x + d/2, ... whose value is ≥ f0 (else x unchanged); also
    returns, for rows where every trial failed, the shortest step tried (0 elsewhere).

    Rows whose predicted gain ``slope = ∇f·d`` is below the rounding of f0 (16 ε |f0|) are left
    as they are without evaluating anything: there a comparison of f values is noise, and in
    float32 one such row would otherwise run every halving (``tiny``: that rounding, when f0 is
    a difference rather than the value itself)."""
    tiny = 16.0 * jnp.finfo(x.dtype).eps * jnp.abs(f0) if tiny is None else tiny

    def cond(c):
        k, _, _, done = c
        return (k < max_halvings) & ~jnp.all(done)

    def body(c):
        k, t, best, done = c
        trial = x + t[:, None] * d
        f = row_f(trial)
        ok = (f >= f0) & jnp.isfinite(f) & ~done
        best = jnp.where(ok[:, None], trial, best)
        done = done | ok
        return k + 1, jnp.where(done, t, 0.5 * t), best, done

    R = x.shape[0]
    init = (jnp.zeros((), jnp.int32), jnp.ones((R,), x.dtype), x, ~(slope > tiny))
    _, t, best, done = lax.while_loop(cond, body, init)
    return best, jnp.where(done, 0.0, 2.0 * t)  # and, where every trial failed, the shortest one tried


def _newton_rows(x, pen, preds, B_mu, B_pi, i_mu, i_pi, Y, zeta, zi, axis, n_steps, max_halvings):
    """``n_steps`` damped Fisher-scoring steps for R independent rows of parameters ``x`` (R, Q).

    ``preds(x) -> (a, b)`` gives the (n, J) predictors; row r's entries lie along ``axis`` of
    them (0: rows are genes, entries cells; 1: rows are cells). The μ predictor of row r is
    ``B_mu @ x[r, i_mu]`` (+ terms fixed in this block), the π predictor ``B_pi @ x[r, i_pi]``.
    Row objective: Σ entries ``partial_log_prob`` − ½ Σ pen x² (maximised).
    """
    R, Q = x.shape
    c_in = "ij,ip->jp" if axis == 0 else "ij,jp->ip"  # contract the entry axis with a design
    # coordinates whose design column is all zero (covariates a side does not use) stay out of
    # the damping's scale, so a fit with such a column equals the fit without it
    used = jnp.zeros((Q,), x.dtype).at[i_mu].set(jnp.any(B_mu != 0, axis=0).astype(x.dtype))
    if zi:
        used = used.at[i_pi].max(jnp.any(B_pi != 0, axis=0).astype(x.dtype))  # W: used by either side
    n_used = jnp.maximum(jnp.sum(used), 1.0)
    outer = lambda B, C: (B[:, :, None] * C[:, None, :]).reshape(B.shape[0], -1)
    BB_mu = outer(B_mu, B_mu)
    if zi:
        BB_ab, BB_pi = outer(B_mu, B_pi), outer(B_pi, B_pi)
    p_mu, p_pi = len(i_mu), len(i_pi)
    eye = jnp.eye(Q, dtype=x.dtype)

    def one(_, xr):
        a, b = preds(xr)
        f, g_a, g_b, I_aa, I_ab, I_bb = score_fisher(Y, a, b, zeta, zi)
        # the line search compares gains, Σ entries (f_new − f) − ½ Σ pen (x_new² − x²), each
        # entry's difference taken before the sum: a row's sum of f can be 10⁴ times its gain
        # and more (y (a − s) grows like y log θ for large counts), and comparing two such sums
        # in float32 (or the ``tiny`` threshold scaled by their size) would freeze the row long
        # before its optimum. The rounding of the gains is that of the entries, √Σ f² · eps.
        pen_x = 0.5 * jnp.sum(pen * xr * xr, axis=1)
        tiny = 16.0 * jnp.finfo(x.dtype).eps * (jnp.sqrt(_row_sum(f * f, axis)) + pen_x)

        def row_gain(xt):
            at, bt = preds(xt)
            return _row_sum(partial_log_prob(Y, at, bt, zeta, zi) - f, axis) - (0.5 * jnp.sum(pen * xt * xt, axis=1) - pen_x)

        G = jnp.zeros((R, Q), x.dtype).at[:, i_mu].add(jnp.einsum(c_in, g_a, B_mu))
        H = jnp.zeros((R, Q, Q), x.dtype)
        H = H.at[:, i_mu[:, None], i_mu[None, :]].add(jnp.einsum(c_in, I_aa, BB_mu).reshape(R, p_mu, p_mu))
        if zi:
            G = G.at[:, i_pi].add(jnp.einsum(c_in, g_b, B_pi))
            Hab = jnp.einsum(c_in, I_ab, BB_ab).reshape(R, p_mu, p_pi)
            H = H.at[:, i_mu[:, None], i_pi[None, :]].add(Hab)
            H = H.at[:, i_pi[:, None], i_mu[None, :]].add(jnp.swapaxes(Hab, 1, 2))
            H = H.at[:, i_pi[:, None], i_pi[None, :]].add(jnp.einsum(c_in, I_bb, BB_pi).reshape(R, p_pi, p_pi))
        G = G - pen * xr
        diag = jnp.diagonal(H, axis1=1, axis2=2) + pen
        damp = 1e-6 * jnp.sum(diag * used, axis=1) / n_used + jnp.finfo(x.dtype).tiny ** 0.5
        H = H + (pen + damp[:, None])[:, :, None] * eye
        step = jnp.linalg.solve(H, G[..., None])[..., 0]
        fallback = G / (diag + damp[:, None])
        step = jnp.where(jnp.all(jnp.isfinite(step), axis=1, keepdims=True), step, fallback)
        step = jnp.clip(step, -10.0, 10.0)
        return _line_search(xr, step, jnp.zeros((R,), x.dtype), row_gain, max_halvings, jnp.sum(G * step, axis=1), tiny)[0]

    return lax.fori_loop(0, n_steps, one, x)


def _gene_block(st, d, hp, zi, n_steps, max_halvings):
    """(β_μ, α_μ, β_π, α_π) of every gene; entries along cells."""
    M, K = st.beta_mu.shape[0], st.W.shape[1]
    P = M + K
    if P == 0:
        return st
    o_mu, o_pi = _offsets(d)
    Xm, Xp, Vm, Vp = designs(d)
    A = jnp.concatenate([Xm, st.W], axis=1)
    A_pi = jnp.concatenate([Xp, st.W], axis=1)
    off_a = (Vm @ st.gamma_mu).T + o_mu
    off_b = (Vp @ st.gamma_pi).T + o_pi
    ea = jnp.full((K,), hp.eps_alpha, d.Y.dtype)
    u = jnp.concatenate([st.beta_mu, st.alpha_mu], axis=0)
    pen_u = jnp.concatenate([hp.eps_beta_mu, ea])
    if zi:
        x = jnp.concatenate([u, jnp.concatenate([st.beta_pi, st.alpha_pi], axis=0)], axis=0).T
        pen = jnp.concatenate([pen_u, hp.eps_beta_pi, ea])
        preds = lambda x: (A @ x[:, :P].T + off_a, A_pi @ x[:, P:].T + off_b)
    else:
        x, pen = u.T, pen_u
        b0 = jnp.zeros((), d.Y.dtype)
        preds = lambda x: (A @ x.T + off_a, b0)
    i_mu, i_pi = np.arange(P), np.arange(P, 2 * P)
    x = _newton_rows(x, pen, preds, A, A_pi, i_mu, i_pi, d.Y, st.zeta[None, :], zi, 0, n_steps, max_halvings)
    st = st._replace(beta_mu=x[:, :M].T, alpha_mu=x[:, M:P].T)
    if zi:
        st = st._replace(beta_pi=x[:, P:P + M].T, alpha_pi=x[:, P + M:].T)
    return st


def _cell_block(st, d, hp, zi, n_steps, max_halvings):
    """(γ_μ, γ_π, W) of every cell; entries along genes. x = [γ_μ, γ_π, w] (or [γ_μ, w])."""
    L, K = st.gamma_mu.shape[0], st.W.shape[1]
    if L + K == 0:
        return st
    o_mu, o_pi = _offsets(d)
    Xm, Xp, Vm, Vp = designs(d)
    off_a = Xm @ st.beta_mu + o_mu
    off_b = Xp @ st.beta_pi + o_pi
    B_mu = jnp.concatenate([Vm, st.alpha_mu.T], axis=1)
    B_pi = jnp.concatenate([Vp, st.alpha_pi.T], axis=1)
    ew = jnp.full((K,), hp.eps_W, d.Y.dtype)
    if zi:
        x = jnp.concatenate([st.gamma_mu.T, st.gamma_pi.T, st.W], axis=1)
        pen = jnp.concatenate([hp.eps_gamma_mu, hp.eps_gamma_pi, ew])
        i_mu = np.concatenate([np.arange(L), np.arange(2 * L, 2 * L + K)])
        i_pi = np.arange(L, 2 * L + K)
    else:
        x = jnp.concatenate([st.gamma_mu.T, st.W], axis=1)
        pen = jnp.concatenate([hp.eps_gamma_mu, ew])
        i_mu, i_pi = np.arange(L + K), np.arange(0)
    b0 = jnp.zeros((), d.Y.dtype)
    preds = lambda x: (x[:, i_mu] @ B_mu.T + off_a, x[:, i_pi] @ B_pi.T + off_b if zi else b0)
    x = _newton_rows(x, pen, preds, B_mu, B_pi, i_mu, i_pi, d.Y, st.zeta[None, :], zi, 1, n_steps, max_halvings)
    st = st._replace(gamma_mu=x[:, :L].T, W=x[:, i_mu[L:]] if K else st.W)
    if zi:
        st = st._replace(gamma_pi=x[:, L:2 * L].T)
    return st


def dense_gene_sums(d: ZINBData, a, b, zi: bool):
    """``sums(ζ, derivatives)`` over the cells of every gene at fixed predictors (a, b) (n, J):
    Σ_i (log ZINB(y_ij) − log y_ij!) and, with ``derivatives``, also its first and second
    derivatives in ζ_j (``zeta_derivatives``) — what the dispersion step reads of the data."""
    log_yfact = gammaln(d.Y + 1.0)

    def sums(z, derivatives):
        if not derivatives:
            return jnp.sum(log_prob_fast(d.Y, a, b, z[None, :], zi) - log_yfact, axis=0)
        ll, g, h = zeta_derivatives(d.Y, a, b, z[None, :], zi)
        return jnp.sum(ll - log_yfact, axis=0), jnp.sum(g, axis=0), jnp.sum(h, axis=0)

    return sums


def _zeta_newton(sums, base, v, c, kappa, lo, hi, pooled, max_iter, max_halvings, tol):
    """Safeguarded Newton iterations on v (J,), where ζ = base + v, maximising per row
    ``ll_j(ζ_j) − κ/2 (ζ_j − c)²`` (``pooled=False``: every gene on its own) or the sum of
    ``ll_j`` over genes for one shared v (``pooled=True``: v is the same for every gene; κ must
    be 0), v kept in [lo, hi] (per element), until no v moves by more than ``tol``.

    Each row keeps a bracket [lo, hi] of its maximum from the signs of the derivative seen so
    far; a step that would leave it bisects instead, and every step backtracks until the row's
    objective does not decrease. Near the Poisson limit (every ζ of the row > ``_TAIL``) the
    log-likelihood is flat in ζ (an exponential tail on which Newton in ζ moves by about 1 per
    iteration) but smooth in φ = 1/θ = e^{−ζ}: there the step is Newton's in φ (for a pooled
    row, in the common scale e^{−v} of every φ_j), and when the φ-model has no interior
    maximum it goes to the top of the bracket (at first ``hi``).

    ``sums(ζ, derivatives)`` gives every gene's log-likelihood (and its ζ-derivatives) summed over
    cells (``dense_gene_sums``, or streamed over blocks of cells). log y! is subtracted from every
    entry before the sums: without it
    the values compared are lgamma(y + θ) − lgamma(θ) − … ≈ log y! for large counts, so a
    gene's sum can be 10⁴ times its log-likelihood and its float32 rounding (and the line
    search's threshold ``tiny``, proportional to it) swallows real gains in ζ: the dispersion
    step then stops moving far from its optimum."""
    J = v.shape[0]
    reduce = (lambda x: jnp.broadcast_to(jnp.sum(x), (J,))) if pooled else (lambda x: x)
    lowest = (lambda x: jnp.broadcast_to(jnp.min(x), (J,))) if pooled else (lambda x: x)

    def gene_f(vv):
        z = base + vv
        return sums(z, False) - 0.5 * kappa * (z - c) ** 2

    def cond(carry):
        return (carry[0] < max_iter) & (carry[2] > tol)

    def body(carry):
        k, v, _, blo, bhi = carry
        z = base + v
        ll, g, h = sums(z, True)
        f_genes = ll - 0.5 * kappa * (z - c) ** 2
        if pooled:  # compare gains, Σ_j (f_j(new) − f_j(v)): their rounding is that of the genes' values
            f0 = jnp.zeros((J,), v.dtype)  # not of their sum, J times larger
            tiny = 16.0 * jnp.finfo(v.dtype).eps * jnp.sqrt(jnp.sum(f_genes ** 2))
            row_f = lambda vv: reduce(gene_f(vv) - f_genes)  # noqa: E731
        else:
            f0, tiny, row_f = f_genes, None, gene_f
        g = reduce(g - kappa * (z - c))
        H = reduce(-h + kappa)  # minus the second derivative
        blo = jnp.where(g > 0, jnp.maximum(blo, v), blo)
        bhi = jnp.where(g < 0, jnp.minimum(bhi, v), bhi)
        concave = H > 0
        r = g / jnp.where(concave, H, 1.0)  # Newton's step in ζ
        phi_ok = concave & (r < 0.5)
        phi_step = jnp.log((1.0 - r) / jnp.where(phi_ok, 1.0 - 2.0 * r, 1.0))
        to_top = jnp.where(bhi >= hi, hi, 0.5 * (v + bhi)) - v
        up = jnp.where(lowest(z) > _TAIL, jnp.where(phi_ok, phi_step, to_top), jnp.where(concave, jnp.minimum(r, 3.0), 3.0))
        down = jnp.where(concave, jnp.maximum(r, -3.0), jnp.where(blo <= lo, -3.0, 0.5 * (v + blo) - v))
        target = v + jnp.where(g > 0, up, down)
        inside = (target > blo) & (target < bhi) | ((target == hi) & (bhi >= hi))
        target = jnp.clip(jnp.where(inside, target, 0.5 * (blo + bhi)), lo, hi)
        new, t_fail = _line_search(v[:, None], (target - v)[:, None], f0, lambda vv: row_f(vv[:, 0]),
                                   min(max_halvings, 6), g * (target - v), tiny)
        new = new[:, 0]
        # every trial worse than v: the maximum lies between v and the shortest trial (unimodal)
        end = v + t_fail * (target - v)
        blo = jnp.where((t_fail > 0) & (end < v), jnp.maximum(blo, end), blo)
        bhi = jnp.where((t_fail > 0) & (end > v), jnp.minimum(bhi, end), bhi)
        return k + 1, new, jnp.max(jnp.abs(new - v)), blo, bhi

    init = (jnp.zeros((), jnp.int32), v, jnp.asarray(jnp.inf, v.dtype), lo, hi)
    return lax.while_loop(cond, body, init)[1]


def _dispersion(st, d, hp, zi, common, max_iter, max_halvings, tol=1e-3):
    """ζ at fixed (μ, π): one common value, or gene-wise values under ε_ζ var(ζ)/2.

    Common: ``_zeta_newton`` on the pooled log-likelihood. Gene-wise, the penalty is written
    ``κ/2 Σ (ζ_j − c)²`` with κ = ε_ζ/(J − 1), maximised jointly over (ζ, c) (its maximum over c
    is at c = mean ζ, where it equals var(ζ)·ε_ζ/2), by rounds of block-coordinate ascent, each
    monotone:

    1. the common mode: ζ_j + δ for every gene, one δ by ``_zeta_newton`` on the pooled
       log-likelihood (var(ζ), hence the penalty, does not change; δ keeps every ζ_j in
       ``ZETA_RANGE``);
    2. c = mean ζ;
    3. every gene on its own with c fixed (genes decouple).

    Step 1 is what makes the gene-wise fit converge. Without it (steps 2–3 alone), the common
    mode of ζ moves by only ``mean g_j / κ`` per round, g_j the genes' log-likelihood slopes:
    on near-Poisson data the likelihood is nearly flat in ζ and κ ≈ 1, so every ζ crawls towards
    the Poisson limit for hundreds of iterations (1/θ stayed ~1e-3 after zinbwave's 25 outer
    iterations) while the common-dispersion fit is there in one. Rounds stop when no ζ moves
    by more than ``tol`` or after ``max_iter`` rounds."""
    a, b = predictors(st, d)
    return st._replace(zeta=dispersion_with(dense_gene_sums(d, a, b, zi), st.zeta, hp, common, max_iter, max_halvings, tol))


def genewise_zeta(sums, z, c, kappa, max_iter, max_halvings, tol=1e-3):
    """Step 3 of ``_dispersion``: every gene's ζ_j with c fixed (genes decouple), from ``z``."""
    lo, hi = ZETA_RANGE
    full = lambda x: jnp.full(z.shape, x, z.dtype)  # noqa: E731
    return _zeta_newton(sums, jnp.zeros((), z.dtype), z, c, kappa, full(lo), full(hi), False, max_iter, max_halvings, tol)


def dispersion_with(sums, zeta, hp, common, max_iter, max_halvings, tol=1e-3, genewise=None):
    """``_dispersion``'s ζ from the per-gene sums ``sums`` (``dense_gene_sums``, or streamed).
    ``genewise(z, c, κ)``: step 3 (default ``genewise_zeta`` on ``sums``; the streamed fit runs it
    block by block, each block of genes iterating only as long as its own genes need)."""
    J = zeta.shape[0]
    lo, hi = ZETA_RANGE
    full = lambda x: jnp.full((J,), x, zeta.dtype)
    zero = jnp.zeros((), zeta.dtype)
    solve = partial(_zeta_newton, sums, max_iter=max_iter, max_halvings=max_halvings, tol=tol)
    if genewise is None:
        genewise = partial(genewise_zeta, sums, max_iter=max_iter, max_halvings=max_halvings, tol=tol)
    if common or J < 2:
        return solve(zero, zeta, zero, 0.0, full(lo), full(hi), pooled=common)
    kappa = hp.eps_zeta / (J - 1)

    def cond(carry):
        return (carry[0] < max_iter) & (carry[2] > tol)

    def body(carry):
        k, z, _ = carry
        delta = solve(z, jnp.zeros_like(z), zero, 0.0, full(lo - jnp.min(z)), full(hi - jnp.max(z)), pooled=True)
        z1 = z + delta
        z2 = genewise(z1, jnp.mean(z1), kappa)
        return k + 1, z2, jnp.max(jnp.abs(z2 - z))

    _, z, _ = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), zeta, jnp.asarray(jnp.inf, zeta.dtype)))
    return z
