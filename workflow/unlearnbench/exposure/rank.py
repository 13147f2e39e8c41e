"""Exposure of Secret Sharer canaries (Carlini et al. 2019), exact and extrapolated.

A canary is prefix + secret, the secret k random digits from R = all 10^k digit strings. With
Px(c) the log-perplexity of candidate c after the prefix (``scoring``),

    rank(s) = 1 + #{c in R : Px(c) < Px(s)}      exposure(s) = log2 |R| - log2 rank(s).

Ties count in the secret's favour: only candidates strictly below Px(s) push its rank down, so
a secret tied with others keeps the better rank (the least conservative reading of "rank", and
the only one that is exactly reproducible: it needs no tie-breaking order).

Estimators (every record says which one produced it, and |R|):
- ``exact_rank``: all 10^k candidates through a pruned walk, equal to the brute-force rank
  (every candidate scored as a full sequence: the slow reference in
  ``tests/references/exposure_brute_force.py``) and orders of magnitude cheaper. The walk is the
  digit tree (``tree``) when every digit is one token (``canary_token_ids``: the project's
  tokenizer), else the trie of the candidates' own token sequences (``trie``: any tokenizer,
  e.g. GPT-2's BPE, which merges digit runs). ``RankResult.walk`` says which.
- ``extrapolated_exposure``: a skew-normal fit to the Px of uniformly sampled candidates
  (Carlini et al. 2019, Sec. 4.3), for spaces too large to enumerate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..logs import progress_bar
from .canary import Canary, DigitTokenizationError, canary_token_ids, encode_canary
from .extrapolated import extrapolate, sample_candidates
from .scoring import (
    DigitScorer,
    PrefixState,
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    model_device,
    score_full_sequences,
)
from .tree import calibrate_tolerance, count_below
from .trie import TokenTrie, TrieCache, build_trie
from .trie_walk import count_below_trie

DEFAULT_MAX_EXACT_SPACE = 10**7
ESTIMATORS = ("exact", "extrapolated", "both")


@dataclass(frozen=True)
class RankResult:
    rank: int
    space_size: int
    secret_log_perplexity: float  # Px(s) in nats, from full-sequence scoring
    candidates_scored: int  # tree nodes expanded (exact) or candidates scored (brute force)
    leaves_scored: int  # candidates whose Px was computed (10^k for brute force)
    rescored: int  # near-tie candidates the tree deferred to full-sequence scoring
    tolerance: float  # the tree's near-tie margin in nats (0 for brute force)
    seconds: float
    # Tree only: expanded nodes and their forward seconds per depth (depth 1 = first digit).
    nodes_by_depth: dict[int, int] = field(default_factory=dict)
    seconds_by_depth: dict[int, float] = field(default_factory=dict)
    walk: str = ""  # the exact walk: "digit_tree" or "token_trie" ("" for other estimators)

    @property
    def exposure(self) -> float:
        return exposure_from_rank(self.rank, self.space_size)


def exposure_from_rank(rank: int, space_size: int) -> float:
    """log2 |R| - log2 rank, in [0, log2 |R|] for 1 <= rank <= |R|."""
    if not 1 <= rank <= space_size:
        raise ValueError(f"exposure: rank {rank} outside 1..{space_size}")
    return math.log2(space_size) - math.log2(rank)


def check_exact_space(space_size: int, max_space: int) -> None:
    if space_size > max_space:
        raise ValueError(
            "evaluate.exposure.estimator: exact enumeration of 10^k candidates exceeds "
            "evaluate.exposure.max_exact_space; use 'extrapolated' or raise the limit"
        )


def exact_rank(
    model: torch.nn.Module,
    prefix: Sequence[int] | str,
    secret: str,
    digit_token_ids: Sequence[int] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    tolerance: float | None = None,
    max_space: int = DEFAULT_MAX_EXACT_SPACE,
    *,
    tokenizer: Any | None = None,
    context_ids: Sequence[int] = (),
    max_trie_bytes: int | None = None,
    progress: bool | None = None,
) -> RankResult:
    """Exact rank of ``secret`` among all 10^k candidates (a walk with exact pruning).

    ``prefix`` is either token ids, with ``digit_token_ids`` (one token per digit): the digit
    tree; or the prefix text, with its ``tokenizer``: the digit tree when every digit is one
    token (``canary_token_ids``, ids ``context_ids`` + prefix tokens), the token trie otherwise
    (``trie``: its tokens follow ``context_ids``; ``max_trie_bytes`` bounds its memory, None:
    half of the available memory). ``batch_size`` is the number of nodes per forward (None: as
    many as a 1 GiB cache budget allows, at most 4096 on CPU); ``tolerance`` (nats) the margin
    within which leaves are rescored by full-sequence scoring (None: measured, see ``tree``).
    """
    start = time.perf_counter()
    if isinstance(prefix, str):
        if tokenizer is None:
            raise ValueError("exposure: exact_rank of a prefix text needs its tokenizer")
        check_exact_space(10 ** sum(ch.isdigit() for ch in secret), max_space)
        try:
            prefix_ids, digit_token_ids = canary_token_ids(tokenizer, prefix, secret)
        except DigitTokenizationError:
            trie = build_trie(tokenizer, prefix, secret, context_ids, max_trie_bytes, progress)
            return trie_rank(
                model, trie, tokenizer, secret, batch_size, device, tolerance, progress, start
            )
        prefix = [*context_ids, *prefix_ids]
    elif digit_token_ids is None:
        raise ValueError("exposure: exact_rank of prefix token ids needs digit_token_ids")
    device = model_device(model, device)
    digit_ids = digit_id_tensor(digit_token_ids, device)
    target = digits_tensor(secret, device)
    k = target.shape[1]
    check_exact_space(10**k, max_space)
    with eval_mode(model):
        threshold = float(score_full_sequences(model, prefix, target, digit_ids)[0])
        scorer = DigitScorer(model, digit_ids)
        state = PrefixState.compute(scorer, prefix)
        if tolerance is None:
            tolerance = calibrate_tolerance(scorer, prefix, state, target)
        below, counts, rescored = count_below(
            scorer, prefix, state, k, threshold, tolerance, batch_size
        )
    return RankResult(
        rank=below + 1,
        space_size=10**k,
        secret_log_perplexity=threshold,
        candidates_scored=counts.nodes_expanded,
        leaves_scored=counts.leaves_scored,
        rescored=rescored,
        tolerance=tolerance,
        seconds=time.perf_counter() - start,
        nodes_by_depth=counts.nodes_by_depth,
        seconds_by_depth=counts.seconds_by_depth,
        walk="digit_tree",
    )


def trie_rank(
    model: torch.nn.Module,
    trie: TokenTrie,
    tokenizer: Any,
    secret: str,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    tolerance: float | None = None,
    progress: bool | None = None,
    start: float | None = None,
) -> RankResult:
    """Exact rank of ``secret`` in a built trie (one trie serves every secret of its format
    and prefix); ``start``: the ``perf_counter`` its time counts from (None: now)."""
    start = time.perf_counter() if start is None else start
    secret_node = trie.locate(tokenizer, secret)
    device = model_device(model, device)
    with eval_mode(model):
        found = count_below_trie(model, trie, secret_node, device, batch_size, tolerance, progress)
    return RankResult(
        rank=found.below + 1,
        space_size=trie.space_size,
        secret_log_perplexity=found.threshold,
        candidates_scored=found.counts.nodes_expanded,
        leaves_scored=found.counts.leaves_scored,
        rescored=found.rescored,
        tolerance=found.tolerance,
        seconds=time.perf_counter() - start,
        nodes_by_depth=found.counts.nodes_by_depth,
        seconds_by_depth=found.counts.seconds_by_depth,
        walk="token_trie",
    )


def rank_canary(
    model: torch.nn.Module,
    tokenizer: Any,
    canary: Canary,
    max_space: int = DEFAULT_MAX_EXACT_SPACE,
    *,
    tries: TrieCache | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> RankResult:
    """Exact rank of ``canary``'s secret: the digit tree with one token per digit, else its
    trie (from ``tries``, built once per prefix and secret format, or built here)."""
    start = time.perf_counter()
    check_exact_space(canary.space_size, max_space)
    if canary.digit_ids is not None:
        return exact_rank(
            model, canary.context_ids, canary.secret, canary.digit_ids, batch_size, device,
            max_space=max_space,
        )  # fmt: skip
    trie = (TrieCache() if tries is None else tries).get(tokenizer, canary, progress)
    return trie_rank(
        model, trie, tokenizer, canary.secret, batch_size, device, progress=progress, start=start
    )


def canary_exposures(
    model: torch.nn.Module,
    tokenizer: Any,
    canaries: Sequence[dict[str, Any]],
    estimator: str = "exact",
    *,
    max_exact_space: int = DEFAULT_MAX_EXACT_SPACE,
    n_samples: int = 10_000,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """One exposure record per canary (``prefix``, ``secret`` and optionally ``canary_id``).

    ``seed`` seeds the extrapolation's sampling (one generator per canary, seed + index, so a
    canary's estimate does not depend on which canaries precede it). ``progress=None`` shows the
    bar only when the log stream is a terminal, keeping logs quiet. Canaries whose digits are
    not one token each are ranked in the token trie, built once per prefix and secret format,
    and extrapolated from their samples' own token sequences.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"evaluate.exposure.estimator: unknown estimator {estimator!r}; "
            f"use one of {', '.join(ESTIMATORS)}"
        )
    if estimator != "extrapolated":  # refuse before spending time on the first canaries
        for canary in canaries:
            check_exact_space(10 ** sum(ch.isdigit() for ch in canary["secret"]), max_exact_space)
    encoded = [encode_canary(tokenizer, c["prefix"], c["secret"]) for c in canaries]
    tries = TrieCache()
    records = []
    with progress_bar("exposure", len(canaries), enabled=progress, unit="canary") as bar:
        for index, (canary, tokens) in enumerate(zip(canaries, encoded, strict=True)):
            start = time.perf_counter()
            # Every key in every record (None where the estimator did not run): one table schema.
            record: dict[str, Any] = {
                "canary_id": canary.get("canary_id", canary.get("id", index)),
                "space_size": tokens.space_size,
                "estimator": estimator,
                "rank": None,
                "exposure_exact": None,
                "exposure_extrapolated": None,
                "exposure_extrapolated_unclipped": None,
                "secret_log_perplexity": None,
                "candidates_scored": None,
                "exact_walk": None,
                "n_samples": None,
                "skewnorm": None,
            }
            if estimator in ("exact", "both"):
                result = rank_canary(
                    model, tokenizer, tokens, max_exact_space, tries=tries,
                    batch_size=batch_size, device=device, progress=progress,
                )  # fmt: skip
                record.update(
                    rank=result.rank,
                    exposure_exact=result.exposure,
                    candidates_scored=result.candidates_scored,
                    secret_log_perplexity=result.secret_log_perplexity,
                    exact_walk=result.walk,
                )
            if estimator in ("extrapolated", "both"):
                generator = torch.Generator().manual_seed(seed + index)
                samples = sample_candidates(tokenizer, tokens, n_samples, generator)
                fit = extrapolate(model, samples, device=device)
                record.update(
                    exposure_extrapolated=fit["exposure"],
                    exposure_extrapolated_unclipped=fit["exposure_unclipped"],
                    skewnorm=fit["skewnorm"],
                    n_samples=fit["n_samples"],
                )
                if record["secret_log_perplexity"] is None:
                    record["secret_log_perplexity"] = fit["secret_log_perplexity"]
            record["seconds"] = time.perf_counter() - start
            records.append(record)
            bar.update(1)
    return records
