r"""NUTS for the allele-count model, for small problems (about 500 cells x 50 variants or fewer).

The clone labels are marginalised inside :func:`~jaxfactor.models._allele.allele_model`, so the
posterior over the continuous parameters (clone AFs, clone weights, dropout, error) is sampled
directly by the No-U-Turn sampler (Hoffman & Gelman, JMLR 15, 2014; NumPyro's ``NUTS``). Clone
probabilities are the posterior mean of the responsibilities,

.. math::  P(z_i = k \mid \mathrm{data}) = \frac{1}{S}\sum_s r_{ik}(\theta^{(s)}),

the exact (Rao–Blackwellised) posterior of the discrete labels given the draws. Its purpose
is to check SVI: AutoNormal's posterior means and clone probabilities should agree with it.

The mixture posterior is invariant to permuting clone labels. The chain starts from
``init`` (typically an SVI fit) and every draw's clones are matched to the starting clones by
``scipy.optimize.linear_sum_assignment`` on allele-frequency distance before averaging, so a label
switch within the chain does not blur the summaries.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.initialization import init_to_value
from scipy.optimize import linear_sum_assignment

from ._allele import GUIDES, LIKELIHOODS, _check_data, _check_sizes, allele_model, clone_responsibilities  # noqa: F401

__all__ = ["AlleleNUTS", "fit_allele_nuts"]

MAX_ENTRIES = 500 * 50 * 4  # cells x variants x clones NUTS is meant for (it runs beyond, slowly)


class AlleleNUTS(NamedTuple):
    clone_prob: np.ndarray     # (cells, clones) posterior mean responsibilities
    af_mean: np.ndarray        # (clones, variants) posterior mean AF
    af_sd: np.ndarray          # (clones, variants)
    pi_mean: np.ndarray
    dropout_mean: float
    error_mean: float
    samples: dict              # aligned draws: af (S, K, J), pi (S, K), dropout (S,), error (S,)
    divergences: int
    n_switched: int            # draws whose clone labels had to be permuted back


def fit_allele_nuts(alt, depth, n_clones, *, init=None, num_warmup=500, num_samples=500, seed=0,
                    germline_mask=None, likelihood="binomial", target_accept=0.8, **model_kwargs) -> AlleleNUTS:
    """Sample the allele model's posterior with NUTS (one chain).

    ``init``: an :class:`~jaxfactor.models.AlleleFit` (or a dict with ``af``, ``pi``, ``dropout``,
    ``error``) to start from; without it the chain starts from the prior median. Raises
    ``ValueError`` on bad input and when the problem exceeds ``MAX_ENTRIES`` by more than 4x
    (use SVI there).
    """
    alt, depth = _check_data(alt, depth)
    N, J = alt.shape
    _check_sizes(N, J, n_clones)
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if N * J * n_clones > 4 * MAX_ENTRIES:
        raise ValueError(f"{N} cells x {J} variants x {n_clones} clones is too large for NUTS "
                         f"(limit {4 * MAX_ENTRIES} entries); use fit_allele_svi")
    germ = np.zeros(J, bool) if germline_mask is None else np.asarray(germline_mask, bool)
    if germ.shape != (J,):
        raise ValueError(f"germline_mask has shape {germ.shape}, expected {(J,)}")
    values = {}
    if init is not None:
        get = (lambda k: init[k]) if isinstance(init, dict) else (lambda k: getattr(init, k))
        values = {"af_raw": jnp.clip(jnp.asarray(get("af"), jnp.float32), 1e-3, 1 - 1e-3),
                  "pi": jnp.asarray(get("pi"), jnp.float32),
                  "dropout": float(np.clip(get("dropout"), 1e-4, 1 - 1e-4)),
                  "error": float(np.clip(get("error"), 1e-5, 0.5))}
        if values["af_raw"].shape != (n_clones, J):
            raise ValueError(f"init af has shape {values['af_raw'].shape}, expected {(n_clones, J)}")
    kernel = NUTS(allele_model, init_strategy=init_to_value(values=values), target_accept_prob=target_accept)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    a, d = jnp.asarray(alt, jnp.float32), jnp.asarray(depth, jnp.float32)
    mcmc.run(jax.random.PRNGKey(seed), a, d, n_cells=N, n_variants=J, n_clones=n_clones,
             germline_mask=jnp.asarray(germ), likelihood=likelihood, extra_fields=("diverging",), **model_kwargs)
    s = mcmc.get_samples()
    af = np.asarray(s["af"], np.float64)
    pi = np.asarray(s["pi"], np.float64)
    ref = af.mean(0) if init is None else np.asarray(values["af_raw"], np.float64)
    switched = 0
    for t in range(af.shape[0]):  # undo label switching draw by draw
        cost = np.abs(af[t][:, None, :] - ref[None, :, :]).sum(-1)
        _, perm = linear_sum_assignment(cost.T)  # perm[k] = draw clone matched to reference clone k
        if (perm != np.arange(n_clones)).any():
            switched += 1
            af[t], pi[t] = af[t][perm], pi[t][perm]
    drop, err = np.asarray(s["dropout"]), np.asarray(s["error"])
    kappa = s.get("concentration")

    @jax.jit
    def resp(af_t, pi_t, drop_t, err_t, kappa_t):
        return clone_responsibilities(a, d, af_t, pi_t, drop_t, err_t, likelihood=likelihood, concentration=kappa_t)[0]

    prob = np.zeros((N, n_clones))
    for t in range(af.shape[0]):
        prob += np.asarray(resp(jnp.asarray(af[t], jnp.float32), jnp.asarray(pi[t], jnp.float32), drop[t], err[t],
                                None if kappa is None else kappa[t]))
    prob /= af.shape[0]
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return AlleleNUTS(clone_prob=prob, af_mean=af.mean(0), af_sd=af.std(0), pi_mean=pi.mean(0),
                      dropout_mean=float(drop.mean()), error_mean=float(err.mean()),
                      samples={"af": af, "pi": pi, "dropout": drop, "error": err}, divergences=div,
                      n_switched=switched)
