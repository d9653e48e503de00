"""The verdict lines every run ends with (printed in the summary, stored in metrics.json as
``verdicts``): what was chosen and why, how close the runner-up was, whether the choice sits at
the edge of the range tried, which points did not converge or were skipped, and a chosen fit
that rests on too few variables.

When is a selection "flat"? On a log-likelihood scale (BIC, AIC: twice the log-likelihood), a
difference below 2 is "not worth more than a bare mention" (Kass & Raftery 1995, J. Am. Stat.
Assoc. 90:773, Table in §3.2); for ELBOs and log-likelihoods (nats) that is a difference below
1. For other scores (CCLONE's orthogonality score, bootstrap stability, held-out errors) a
relative difference below 1 % of the best is called flat.
"""

from __future__ import annotations

import numpy as np

FEW_VARIABLES = 10
TWICE_LOG_SCALE = ("bic", "aic")
LOG_SCALE = ("elbo", "elbo_train", "log_likelihood", "log_posterior", "penalized_log_likelihood", "heldout_log_px")
RELATIVE_FLAT = 0.01
UNPENALISED = ("objective", "loss")  # always better with more components: not a choice of n_components


def _point(row, swept: list) -> str:
    return ", ".join(f"{k}={row[k]}" for k in swept)


def _flat(name: str, margin: float, best: float) -> bool:
    if name in TWICE_LOG_SCALE:
        return margin < 2.0
    if name in LOG_SCALE:
        return margin < 1.0
    return margin < RELATIVE_FLAT * max(abs(best), 1e-12)


def selection_verdicts(table, score_name: str, higher_is_better: bool, swept: list, *, what: str | None = None,
                       compared: bool = False) -> list[str]:
    """Verdict lines about a sweep's choice from its table (one row per point: the swept keys,
    ``score_name``, ``chosen``, optionally ``id``, ``converged``, ``skipped``, ``n_vars``).
    ``what`` names the variables whose number must not be small (``"variants"`` for clone
    models, where a handful of filtered variants cannot support clones; None: no such check)."""
    lines = []
    ids = table["id"] if "id" in table else [f"p{i:03d}" for i in range(len(table))]
    ids = list(ids)
    skipped = [i for i in range(len(table)) if "skipped" in table and isinstance(table["skipped"].iloc[i], str)
               and table["skipped"].iloc[i]]
    if skipped:
        shown = ", ".join(ids[i] for i in skipped[:8]) + (", ..." if len(skipped) > 8 else "")
        first = skipped[0]
        lines.append(f"{len(skipped)} of {len(table)} point(s) skipped ({shown}), e.g. {ids[first]} "
                     f"({_point(table.iloc[first], swept)}): {table['skipped'].iloc[first]}"
                     + ("; every reason is in selection.csv" if len(skipped) > 1 else ""))
    if "converged" in table:
        bad = [i for i in range(len(table)) if i not in skipped and table["converged"].iloc[i] is not None
               and not bool(table["converged"].iloc[i]) and table["converged"].iloc[i] == table["converged"].iloc[i]]
        if bad:
            shown = ", ".join(ids[i] for i in bad[:6]) + (", ..." if len(bad) > 6 else "")
            lines.append(f"{len(bad)} of {len(table) - len(skipped)} fit(s) stopped at max_iter without converging ({shown}): "
                         "raise fit.max_iter (or loosen fit.tol)")
    chosen = [i for i in range(len(table)) if bool(table["chosen"].iloc[i])]
    if not chosen:
        return lines
    c = chosen[0]
    row = table.iloc[c]
    if what and "n_vars" in table and np.isfinite(row["n_vars"]) and row["n_vars"] < FEW_VARIABLES:
        lines.append(f"the chosen fit rests on only {int(row['n_vars'])} {what} (fewer than {FEW_VARIABLES}): weak evidence; "
                     "relax the filters or add data")
    values = np.asarray(table[score_name], np.float64)
    ok = [i for i in range(len(table)) if i not in skipped and np.isfinite(values[i])]
    if compared or len(ok) < 2:
        return lines
    direction = "higher" if higher_is_better else "lower"
    ties = [i for i in ok if i != c and values[i] == values[c]]
    others = [i for i in ok if values[i] != values[c]]
    head = [f"chosen {ids[c]} ({_point(row, swept)}): best {score_name} ({direction} is better) {values[c]:.6g}"]
    if ties:
        head.append(f"{', '.join(ids[i] for i in ties[:4])}{', ...' if len(ties) > 4 else ''} tie(s) with it (the same "
                    f"{score_name}; the first in sweep order is kept)")
    if others:
        runner = max(others, key=lambda i: values[i]) if higher_is_better else min(others, key=lambda i: values[i])
        margin = abs(values[c] - values[runner])
        head[0] += f", ahead of {ids[runner]} ({_point(table.iloc[runner], swept)}) by {margin:.3g}"
        if _flat(score_name, margin, values[c]) and not (score_name in UNPENALISED and "n_components" in swept):
            head.append(f"the selection is flat: {ids[c]} and {ids[runner]} are within {margin:.3g} in {score_name}; "
                        "the data do not decide between them")
    lines[:0] = head
    for key in swept:
        if key == "n_components" and score_name in UNPENALISED:
            continue
        tried = table[key].iloc[ok]
        if not np.issubdtype(np.asarray(tried).dtype, np.number) or np.issubdtype(np.asarray(tried).dtype, np.bool_):
            continue
        levels = np.unique(np.asarray(tried, np.float64))
        if len(levels) >= 3 and row[key] in (levels[0], levels[-1]):
            end = "smallest" if row[key] == levels[0] else "largest"
            lines.append(f"the choice is at the edge of the range tried: {key}={row[key]} is the {end} value; "
                         f"extend sweep.{key} to confirm it")
    return lines
