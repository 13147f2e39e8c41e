"""Exposure of Secret Sharer canaries (Carlini et al. 2019): how much better than chance a model
ranks a canary's secret among all candidates.

- ``rank``: ``exact_rank`` (all 10^k candidates, exact), ``trie_rank`` (the same in a built
  trie), ``exposure_from_rank``, ``canary_token_ids`` (one token per digit, checked; raises
  ``DigitTokenizationError``), ``canary_exposures`` (many canaries).
- ``tree``: the pruned digit-tree walk behind ``exact_rank`` when every digit is one token.
- ``trie``: the pruned walk of the trie of the candidates' token sequences, for tokenizers
  that merge digits (``build_trie``, ``score_token_sequences``: the full-sequence reference).
- ``extrapolated``: the skew-normal estimate for spaces too large to enumerate.
- ``extraction``: greedy decoding of the secret from its prefix.
- ``scoring``: the log-perplexity primitives they share (cached digit scoring, full sequences).
"""

from .extraction import Extraction, greedy_extract
from .extrapolated import extrapolated_exposure
from .rank import (
    DEFAULT_MAX_EXACT_SPACE,
    ESTIMATORS,
    DigitTokenizationError,
    RankResult,
    canary_exposures,
    canary_token_ids,
    check_exact_space,
    exact_rank,
    exposure_from_rank,
    trie_rank,
)
from .trie import TokenTrie, build_trie, score_token_sequences

__all__ = [
    "DEFAULT_MAX_EXACT_SPACE",
    "ESTIMATORS",
    "DigitTokenizationError",
    "Extraction",
    "RankResult",
    "TokenTrie",
    "build_trie",
    "canary_exposures",
    "canary_token_ids",
    "check_exact_space",
    "exact_rank",
    "exposure_from_rank",
    "extrapolated_exposure",
    "greedy_extract",
    "score_token_sequences",
    "trie_rank",
]
