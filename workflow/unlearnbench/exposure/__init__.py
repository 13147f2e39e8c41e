"""Exposure of Secret Sharer canaries (Carlini et al. 2019): how much better than chance a model
ranks a canary's secret among all candidates.

- ``rank``: ``exact_rank`` (all 10^k candidates, exact), ``exposure_from_rank``,
  ``canary_token_ids`` (one token per digit, checked), ``canary_exposures`` (many canaries).
- ``tree``: the pruned digit-tree walk behind ``exact_rank``.
- ``extrapolated``: the skew-normal estimate for spaces too large to enumerate.
- ``extraction``: greedy decoding of the secret from its prefix.
- ``scoring``: the log-perplexity primitives they share (cached digit scoring, full sequences).
"""

from .extraction import Extraction, greedy_extract
from .extrapolated import extrapolated_exposure
from .rank import (
    DEFAULT_MAX_EXACT_SPACE,
    ESTIMATORS,
    RankResult,
    canary_exposures,
    canary_token_ids,
    check_exact_space,
    exact_rank,
    exposure_from_rank,
)

__all__ = [
    "DEFAULT_MAX_EXACT_SPACE",
    "ESTIMATORS",
    "Extraction",
    "RankResult",
    "canary_exposures",
    "canary_token_ids",
    "check_exact_space",
    "exact_rank",
    "exposure_from_rank",
    "extrapolated_exposure",
    "greedy_extract",
]
