"""The slow, obvious exact rank: every one of the 10^k candidates scored as a full sequence.

The reference ``unlearnbench.exposure.exact_rank`` (a pruned digit-tree walk) is checked
against in tests and timed against in ``tests/benchmarks/bench_exposure.py``; ``TokenBruteForce``
is the same for a tokenizer that merges digits (the token trie's reference). Never used by the
workflow: at 10^4 candidates it costs seconds per canary, at 10^6 minutes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from typing import Any

import torch
from scipy import stats
from unlearnbench.exposure.rank import RankResult
from unlearnbench.exposure.scoring import (
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    model_device,
    score_full_sequences,
)
from unlearnbench.exposure.sequences import score_token_sequences


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


def fill(layout: str, digits: str) -> str:
    """``layout`` ('#' for each digit) with ``digits`` in order."""
    replacements = iter(digits)
    return re.sub("#", lambda _: next(replacements), layout)


class TokenBruteForce:
    """Every candidate of a secret format tokenized alone (``separator`` + one ``encode`` of its
    canary text, no batch call) and scored as one full sequence; the context is the tokens all
    of them share with ``separator`` + the prefix's own tokens."""

    def __init__(
        self, model, tokenizer: Any, prefix: str, layout: str, separator: Sequence[int] = ()
    ) -> None:
        self.model, self.layout, self.k = model, layout, layout.count("#")
        ids = [
            [*separator, *tokenizer.encode(prefix + fill(layout, f"{i:0{self.k}d}"),
                                           add_special_tokens=False)]
            for i in range(10**self.k)
        ]  # fmt: skip
        context = [*separator, *tokenizer.encode(prefix, add_special_tokens=False)]
        for row in ids:
            n = 0
            while n < min(len(row), len(context)) and row[n] == context[n]:
                n += 1
            context = context[:n]
        self.context = context
        self.lengths = torch.tensor([len(row) - len(context) for row in ids])
        self.tails = torch.zeros(len(ids), int(self.lengths.max()), dtype=torch.long)
        for i, row in enumerate(ids):
            self.tails[i, : len(row) - len(context)] = torch.tensor(row[len(context) :])
        with eval_mode(model):
            self.px = score_token_sequences(model, context, self.tails, self.lengths)
        self.order = self.px.argsort(stable=True).tolist()

    def secret(self, position: int) -> str:
        """The candidate at ``position`` of the ordering by Px (0: the most likely)."""
        return fill(self.layout, f"{self.order[position]:0{self.k}d}")

    def rank(self, secret: str) -> int:
        i = int("".join(ch for ch in secret if ch.isdigit()))
        with eval_mode(self.model):  # Px(s) scored alone, as exact_rank scores it
            threshold = score_token_sequences(
                self.model, self.context, self.tails[i : i + 1], self.lengths[i : i + 1]
            )
        return int((self.px < threshold).sum()) + 1


def token_extrapolation(
    model,
    tokenizer: Any,
    prefix: str,
    secret: str,
    n_samples: int,
    generator: torch.Generator,
    separator: Sequence[int] = (),
) -> dict[str, float]:
    """The skew-normal estimate the obvious way for any tokenizer: draw the samples as digits
    (the estimator's draw), tokenize each candidate's canary text alone, score every one as a
    full sequence after the context they all share, fit, read the CDF at Px(s)."""
    layout = re.sub(r"\d", "#", secret)
    samples = torch.randint(0, 10, (n_samples, layout.count("#")), generator=generator)
    texts = [secret] + [fill(layout, "".join(map(str, row))) for row in samples.tolist()]
    ids = [[*separator, *tokenizer.encode(prefix + t, add_special_tokens=False)] for t in texts]
    context = [*separator, *tokenizer.encode(prefix, add_special_tokens=False)]
    for row in ids:
        while row[: len(context)] != context:
            context = context[:-1]
    tails = [row[len(context) :] for row in ids]
    lengths = torch.tensor([len(t) for t in tails])
    padded = torch.zeros(len(tails), int(lengths.max()), dtype=torch.long)
    for i, tail in enumerate(tails):
        padded[i, : len(tail)] = torch.tensor(tail)
    with eval_mode(model):
        px = score_token_sequences(model, context, padded, lengths).numpy()
    shape, loc, scale = stats.skewnorm.fit(px[1:])
    raw = -float(stats.skewnorm.logcdf(px[0], shape, loc, scale)) / math.log(2)
    ceiling = layout.count("#") * math.log2(10)
    return {"exposure": min(max(raw, 0.0), ceiling), "secret_log_perplexity": float(px[0])}
