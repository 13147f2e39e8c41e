"""The slow, obvious exact rank: every one of the 10^k candidates scored as a full sequence.

The reference ``unlearnbench.exposure.exact_rank`` (a pruned digit-tree walk) is checked
against in tests and timed against in ``tests/benchmarks/bench_exposure.py``. It is never used
by the workflow: at 10^4 candidates it costs seconds per canary, at 10^6 minutes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from unlearnbench.exposure.rank import RankResult
from unlearnbench.exposure.scoring import (
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    model_device,
    score_full_sequences,
)


def all_candidates(k: int, device: torch.device | None = None) -> torch.Tensor:
    """Every k-digit string as a (10^k, k) tensor of digits, in numeric order."""
    powers = 10 ** torch.arange(k - 1, -1, -1, device=device)
    return (torch.arange(10**k, device=device).unsqueeze(1) // powers) % 10


def brute_force_rank(
    model: torch.nn.Module,
    prefix_ids: Sequence[int],
    secret: str,
    digit_token_ids: Sequence[int],
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> RankResult:
    """The obvious rank: score all 10^k candidates as full sequences, count those below Px(s).

    Px(s) is scored alone, exactly as ``exact_rank`` scores it, so both compare against the
    same number.
    """
    start = time.perf_counter()
    device = model_device(model, device)
    digit_ids = digit_id_tensor(digit_token_ids, device)
    target = digits_tensor(secret, device)
    k = target.shape[1]
    with eval_mode(model):
        threshold = float(score_full_sequences(model, prefix_ids, target, digit_ids)[0])
        scores = score_full_sequences(
            model, prefix_ids, all_candidates(k, device), digit_ids, batch_size
        )
    return RankResult(
        rank=int((scores < threshold).sum()) + 1,
        space_size=10**k,
        secret_log_perplexity=threshold,
        candidates_scored=10**k,
        leaves_scored=10**k,
        rescored=0,
        tolerance=0.0,
        seconds=time.perf_counter() - start,
    )
