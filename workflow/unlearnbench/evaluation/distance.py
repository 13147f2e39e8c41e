"""How far a model is from the retrained one, and whether it over-unlearned.

- Forget quality (TOFU, Maini et al. 2024): a two-sample Kolmogorov-Smirnov test of the
  removed canaries' exposures under the model against those under the retrained model; a high
  p-value means the two cannot be told apart (the retrained model is the target).
- Over-unlearning: a model that pushes the removed canaries *below* chance tells an attacker
  which secrets were asked to be forgotten (a Streisand effect). Flagged when the removed
  canaries' exposures are significantly lower than the phantoms' (never inserted, the same
  templates: chance) by a one-sided Mann-Whitney test; such a model is not counted as an
  erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scipy import stats

OVER_UNLEARNING_ALPHA = 0.05


def forget_quality(removed: Sequence[float], reference_removed: Sequence[float]) -> dict[str, Any]:
    if len(removed) == 0 or len(reference_removed) == 0:  # len: arrays are welcome too
        return {"ks_statistic": None, "ks_p_value": None}
    result = stats.ks_2samp(list(removed), list(reference_removed))
    return {"ks_statistic": float(result.statistic), "ks_p_value": float(result.pvalue)}


def over_unlearning(removed: Sequence[float], phantoms: Sequence[float]) -> dict[str, Any]:
    if len(removed) == 0 or len(phantoms) == 0:
        return {"p_value": None, "flag": False, "removed_minus_phantom_mean": None}
    test = stats.mannwhitneyu(list(removed), list(phantoms), alternative="less")
    gap = sum(removed) / len(removed) - sum(phantoms) / len(phantoms)
    return {
        "p_value": float(test.pvalue),
        "flag": bool(test.pvalue < OVER_UNLEARNING_ALPHA),
        "removed_minus_phantom_mean": float(gap),
    }
