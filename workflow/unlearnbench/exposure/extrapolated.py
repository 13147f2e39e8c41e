"""Extrapolated exposure (Carlini et al. 2019, Sec. 4.3) for spaces too large to enumerate.

The log-perplexities of candidates drawn uniformly from R are fitted with a skew-normal
distribution; the secret's exposure is read off the fitted CDF at Px(s). Nothing is enumerated,
so any k works; the price is a model assumption about the distribution's lower tail, where a
memorised secret sits.

The samples are drawn as digit strings whatever the tokenizer (the same draw for the same
generator), then scored as the canary tokenizes them (``SampledCandidates``): k digit tokens on
the prefix's cache with one token per digit, or each candidate's own token sequence
(``sequences.score_token_sequences``) when the tokenizer merges digits. A trajectory scores the
same ``SampledCandidates`` under every model it visits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from .canary import Canary, with_digits
from .scoring import (
    DigitScorer,
    PrefixState,
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    model_device,
    score_with_prefix,
)
from .sequences import candidate_tails, score_token_sequences

MIN_SAMPLES = 10


@dataclass(frozen=True)
class SampledCandidates:
    """A secret and ``n_samples`` uniform candidates, row 0 the secret, as the model scores them:
    digits on a digit context (``digit_ids`` set) or token tails after ``context_ids``."""

    k: int
    n_samples: int
    context_ids: tuple[int, ...]
    digits: torch.Tensor  # (1 + n, k) int64 digit values
    digit_ids: tuple[int, ...] | None = None
    tails: torch.Tensor | None = None  # (1 + n, L) int64 tokens after the context
    lengths: torch.Tensor | None = None  # (1 + n,)

    def log_perplexities(
        self, model: torch.nn.Module, batch_size: int = 1024, device: Any = None
    ) -> np.ndarray:
        """Px of the secret and of every sample under ``model`` (row 0: the secret). Both are
        scored in the same call, so they share every rounding."""
        device = model_device(model, device)
        with eval_mode(model):
            if self.digit_ids is not None:
                scorer = DigitScorer(model, digit_id_tensor(self.digit_ids, device))
                prefix = PrefixState.compute(scorer, self.context_ids)
                px = score_with_prefix(scorer, prefix, self.digits, batch_size)
            else:
                px = score_token_sequences(model, self.context_ids, self.tails, self.lengths)
        return px.cpu().numpy()


def _draw(secret: str, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    if n_samples < MIN_SAMPLES:
        raise ValueError(f"extrapolated_exposure: n_samples={n_samples} is too few to fit")
    target = digits_tensor(secret)
    samples = torch.randint(0, 10, (n_samples, target.shape[1]), generator=generator)
    return torch.cat([target, samples])


def digit_candidates(
    context_ids: Sequence[int],
    secret: str,
    digit_token_ids: Sequence[int],
    n_samples: int,
    generator: torch.Generator | None = None,
) -> SampledCandidates:
    """Samples for a tokenizer with one token per digit (``digit_token_ids``)."""
    digit_id_tensor(digit_token_ids, torch.device("cpu"))  # refuse bad ids before drawing
    digits = _draw(secret, n_samples, generator)
    return SampledCandidates(
        k=digits.shape[1],
        n_samples=n_samples,
        context_ids=tuple(context_ids),
        digits=digits,
        digit_ids=tuple(digit_token_ids),
    )


def sample_candidates(
    tokenizer: Any, canary: Canary, n_samples: int, generator: torch.Generator | None = None
) -> SampledCandidates:
    """Samples for ``canary`` under any tokenizer (the digit path where it applies)."""
    if canary.digit_ids is not None:
        return digit_candidates(
            canary.context_ids, canary.secret, canary.digit_ids, n_samples, generator
        )
    digits = _draw(canary.secret, n_samples, generator)
    texts = [with_digits(canary.secret, "".join(map(str, row))) for row in digits.tolist()]
    context, tails, lengths = candidate_tails(tokenizer, canary.separator, canary.prefix, texts)
    return SampledCandidates(
        k=canary.k,
        n_samples=n_samples,
        context_ids=tuple(context),
        digits=digits,
        tails=tails,
        lengths=lengths,
    )


def fit_exposure(px: np.ndarray, k: int, start: float | None = None) -> dict[str, Any]:
    """The skew-normal estimate from Px of the secret (``px[0]``) and the samples (the rest).

    Carlini et al. 2019, Sec. 4.3: exposure ~ -log2 Pr_{c in R}[Px(c) <= Px(s)], the probability
    read off the fitted CDF. The estimate of rank is |R| * CDF, which can fall below 1 for a
    memorised secret; ``exposure`` is therefore clipped to [0, log2 |R|] like the exact one, and
    ``exposure_unclipped`` keeps the fit's raw value.
    """
    start = time.perf_counter() if start is None else start
    secret_px, sample_px = float(px[0]), px[1:]
    shape, loc, scale = stats.skewnorm.fit(sample_px)
    log_cdf = float(stats.skewnorm.logcdf(secret_px, shape, loc, scale))
    raw = -log_cdf / math.log(2)
    ceiling = k * math.log2(10)
    return {
        "exposure": min(max(raw, 0.0), ceiling),
        "exposure_unclipped": raw,
        "space_size": 10**k,
        "n_samples": len(sample_px),
        "secret_log_perplexity": secret_px,
        "skewnorm": {"shape": float(shape), "loc": float(loc), "scale": float(scale)},
        "sample_log_perplexity": {
            "mean": float(np.mean(sample_px)),
            "std": float(np.std(sample_px)),
            "min": float(np.min(sample_px)),
        },
        "seconds": time.perf_counter() - start,
    }


def extrapolate(
    model: torch.nn.Module,
    candidates: SampledCandidates,
    batch_size: int = 1024,
    device: Any = None,
) -> dict[str, Any]:
    """The estimate for ``candidates`` under ``model`` (``fit_exposure`` of their Px)."""
    start = time.perf_counter()
    px = candidates.log_perplexities(model, batch_size, device)
    return fit_exposure(px, candidates.k, start)


def extrapolated_exposure(
    model: torch.nn.Module,
    prefix_ids: Sequence[int],
    secret: str,
    digit_token_ids: Sequence[int],
    n_samples: int = 10_000,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Exposure from a skew-normal fit to the Px of ``n_samples`` uniform candidates, one token
    per digit (``digit_token_ids``) after ``prefix_ids``; any tokenizer: ``sample_candidates``
    then ``extrapolate``. Samples are drawn with replacement and may include the secret itself
    (as in the paper)."""
    candidates = digit_candidates(prefix_ids, secret, digit_token_ids, n_samples, generator)
    return extrapolate(model, candidates, batch_size, device)
