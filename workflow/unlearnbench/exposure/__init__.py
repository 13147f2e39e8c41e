"""Exposure of Secret Sharer canaries (Carlini et al. 2019): how much better than chance a model
ranks a canary's secret among all candidates.

- ``canary``: ``encode_canary`` (a canary's context and whether its digits are one token each;
  ``canary_token_ids`` checks that, raising ``DigitTokenizationError``).
- ``rank``: ``rank_canary`` (exact, any tokenizer), ``exact_rank`` (all 10^k candidates),
  ``trie_rank`` (the same in a built trie), ``exposure_from_rank``, ``canary_exposures`` (many
  canaries).
- ``tree``: the pruned digit-tree walk behind ``exact_rank`` when every digit is one token.
- ``trie`` and ``trie_walk``: the trie of the candidates' token sequences, for tokenizers that
  merge digits (``build_trie``, ``TrieCache``), and its pruned walk.
- ``sequences``: candidates as token sequences (``candidate_tails``) and the full-sequence
  scorer of token tails (``score_token_sequences``: the reference for any tokenizer).
- ``extrapolated``: the skew-normal estimate for spaces too large to enumerate
  (``sample_candidates`` + ``extrapolate`` for any tokenizer).
- ``extraction``: greedy decoding of the secret from its prefix (``extract_canary``).
- ``scoring``: the log-perplexity primitives they share (cached digit scoring, full sequences).
"""

from .canary import Canary, DigitTokenizationError, canary_token_ids, encode_canary
from .extraction import Extraction, extract_canary, greedy_extract
from .extrapolated import (
    SampledCandidates,
    extrapolate,
    extrapolated_exposure,
    sample_candidates,
)
from .rank import (
    DEFAULT_MAX_EXACT_SPACE,
    ESTIMATORS,
    RankResult,
    canary_exposures,
    check_exact_space,
    exact_rank,
    exposure_from_rank,
    rank_canary,
    trie_rank,
)
from .sequences import score_token_sequences
from .trie import TokenTrie, TrieCache, build_trie

__all__ = [
    "DEFAULT_MAX_EXACT_SPACE",
    "ESTIMATORS",
    "Canary",
    "DigitTokenizationError",
    "Extraction",
    "RankResult",
    "SampledCandidates",
    "TokenTrie",
    "TrieCache",
    "build_trie",
    "canary_exposures",
    "canary_token_ids",
    "check_exact_space",
    "encode_canary",
    "exact_rank",
    "exposure_from_rank",
    "extract_canary",
    "extrapolate",
    "extrapolated_exposure",
    "greedy_extract",
    "rank_canary",
    "sample_candidates",
    "score_token_sequences",
    "trie_rank",
]
