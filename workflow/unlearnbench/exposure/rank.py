"""Exposure of Secret Sharer canaries (Carlini et al. 2019), exact and extrapolated.

A canary is prefix + secret, the secret k random digits from R = all 10^k digit strings. With
Px(c) the log-perplexity of candidate c after the prefix (``scoring``),

    rank(s) = 1 + #{c in R : Px(c) < Px(s)}      exposure(s) = log2 |R| - log2 rank(s).

Ties count in the secret's favour: only candidates strictly below Px(s) push its rank down, so
a secret tied with others keeps the better rank (the least conservative reading of "rank", and
the only one that is exactly reproducible: it needs no tie-breaking order).

Estimators (every record says which one produced it, and |R|):
- ``exact_rank``: all 10^k candidates through a pruned walk of the digit tree (``tree``);
  equal to the brute-force rank (every candidate scored as a full sequence: the slow reference
  in ``tests/references/exposure_brute_force.py``) and orders of magnitude cheaper.
- ``extrapolated_exposure``: a skew-normal fit to the Px of uniformly sampled candidates
  (Carlini et al. 2019, Sec. 4.3), for spaces too large to enumerate.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..logs import progress_bar
from .extrapolated import extrapolated_exposure
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
    prefix_ids: Sequence[int],
    secret: str,
    digit_token_ids: Sequence[int],
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    tolerance: float | None = None,
    max_space: int = DEFAULT_MAX_EXACT_SPACE,
) -> RankResult:
    """Exact rank of ``secret`` among all 10^k digit strings (tree walk with exact pruning).

    ``batch_size`` is the number of tree nodes per forward (None: as many as a 1 GiB cache
    budget allows, at most 4096 on CPU); ``tolerance`` (nats) the margin within which leaves are
    rescored by full-sequence scoring (None: measured, see ``tree``).
    """
    start = time.perf_counter()
    device = model_device(model, device)
    digit_ids = digit_id_tensor(digit_token_ids, device)
    target = digits_tensor(secret, device)
    k = target.shape[1]
    check_exact_space(10**k, max_space)
    with eval_mode(model):
        threshold = float(score_full_sequences(model, prefix_ids, target, digit_ids)[0])
        scorer = DigitScorer(model, digit_ids)
        prefix = PrefixState.compute(scorer, prefix_ids)
        if tolerance is None:
            tolerance = calibrate_tolerance(scorer, prefix_ids, prefix, target)
        below, counts, rescored = count_below(
            scorer, prefix_ids, prefix, k, threshold, tolerance, batch_size
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
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids from a transformers tokenizer or a raw ``tokenizers.Tokenizer``."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(encoded, "ids", encoded))


def canary_token_ids(tokenizer: Any, prefix: str, secret: str) -> tuple[list[int], list[int]]:
    """(prefix ids, ids of digits '0'..'9') for a canary, checking the one-token-per-digit rule.

    The digit ids are read off the tokenizer in the canary's own context (the secret with every
    digit replaced by d), so separators or word-boundary markers are handled as the tokenizer
    does; any candidate that would not tokenise to exactly k digit tokens is an error.
    """
    prefix_ids = _encode(tokenizer, prefix)
    k = sum(ch.isdigit() for ch in secret)
    digit_ids = []
    for d in range(10):
        ids = _encode(tokenizer, prefix + re.sub(r"\d", str(d), secret))
        tail = ids[len(prefix_ids) :]
        if ids[: len(prefix_ids)] != prefix_ids or len(tail) != k or len(set(tail)) != 1:
            raise ValueError(
                f"exposure: canary {prefix + secret!r} does not tokenise as prefix tokens + "
                f"{k} single-digit tokens; the tokenizer must split digits one per token"
            )
        digit_ids.append(tail[0])
    expected = prefix_ids + [digit_ids[int(ch)] for ch in secret if ch.isdigit()]
    if _encode(tokenizer, prefix + secret) != expected:
        raise ValueError(f"exposure: canary {prefix + secret!r} tokenises inconsistently")
    return prefix_ids, digit_ids


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
    bar only when the log stream is a terminal, keeping logs quiet.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"evaluate.exposure.estimator: unknown estimator {estimator!r}; "
            f"use one of {', '.join(ESTIMATORS)}"
        )
    if estimator != "extrapolated":  # refuse before spending time on the first canaries
        for canary in canaries:
            check_exact_space(10 ** sum(ch.isdigit() for ch in canary["secret"]), max_exact_space)
    records = []
    with progress_bar("exposure", len(canaries), enabled=progress, unit="canary") as bar:
        for index, canary in enumerate(canaries):
            start = time.perf_counter()
            prefix_ids, digit_ids = canary_token_ids(tokenizer, canary["prefix"], canary["secret"])
            k = sum(ch.isdigit() for ch in canary["secret"])
            # Every key in every record (None where the estimator did not run): one table schema.
            record: dict[str, Any] = {
                "canary_id": canary.get("canary_id", canary.get("id", index)),
                "space_size": 10**k,
                "estimator": estimator,
                "rank": None,
                "exposure_exact": None,
                "exposure_extrapolated": None,
                "exposure_extrapolated_unclipped": None,
                "secret_log_perplexity": None,
                "candidates_scored": None,
                "n_samples": None,
                "skewnorm": None,
            }
            if estimator in ("exact", "both"):
                result = exact_rank(
                    model,
                    prefix_ids,
                    canary["secret"],
                    digit_ids,
                    batch_size,
                    device,
                    max_space=max_exact_space,
                )
                record.update(
                    rank=result.rank,
                    exposure_exact=result.exposure,
                    candidates_scored=result.candidates_scored,
                    secret_log_perplexity=result.secret_log_perplexity,
                )
            if estimator in ("extrapolated", "both"):
                generator = torch.Generator().manual_seed(seed + index)
                fit = extrapolated_exposure(
                    model,
                    prefix_ids,
                    canary["secret"],
                    digit_ids,
                    n_samples,
                    generator,
                    device=device,
                )
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
