"""Extrapolated exposure (Carlini et al. 2019, Sec. 4.3) for spaces too large to enumerate.

The log-perplexities of candidates drawn uniformly from R are fitted with a skew-normal
distribution; the secret's exposure is read off the fitted CDF at Px(s). Nothing is enumerated,
so any k works; the price is a model assumption about the distribution's lower tail, where a
memorised secret sits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from .scoring import (
    DigitScorer,
    PrefixState,
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    model_device,
    score_with_prefix,
)


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
    """Exposure from a skew-normal fit to the Px of ``n_samples`` uniform candidates.

    Carlini et al. 2019, Sec. 4.3: exposure ~ -log2 Pr_{c in R}[Px(c) <= Px(s)], the probability
    read off the fitted CDF. Works for any k: nothing is enumerated. The estimate of rank is
    |R| * CDF, which can fall below 1 for a memorised secret; ``exposure`` is therefore clipped
    to [0, log2 |R|] like the exact one, and ``exposure_unclipped`` keeps the fit's raw value.
    Samples are drawn with replacement and may include the secret itself (as in the paper).
    """
    start = time.perf_counter()
    device = model_device(model, device)
    digit_ids = digit_id_tensor(digit_token_ids, device)
    target = digits_tensor(secret, device)
    k = target.shape[1]
    if n_samples < 10:
        raise ValueError(f"extrapolated_exposure: n_samples={n_samples} is too few to fit")
    samples = torch.randint(0, 10, (n_samples, k), generator=generator)
    with eval_mode(model):
        scorer = DigitScorer(model, digit_ids)
        prefix = PrefixState.compute(scorer, prefix_ids)
        # The secret is scored in the same call as the samples, so both share every rounding.
        candidates = torch.cat([target.cpu(), samples])
        px = score_with_prefix(scorer, prefix, candidates, batch_size).cpu().numpy()
    secret_px, sample_px = float(px[0]), px[1:]
    shape, loc, scale = stats.skewnorm.fit(sample_px)
    log_cdf = float(stats.skewnorm.logcdf(secret_px, shape, loc, scale))
    raw = -log_cdf / math.log(2)
    ceiling = k * math.log2(10)
    return {
        "exposure": min(max(raw, 0.0), ceiling),
        "exposure_unclipped": raw,
        "space_size": 10**k,
        "n_samples": n_samples,
        "secret_log_perplexity": secret_px,
        "skewnorm": {"shape": float(shape), "loc": float(loc), "scale": float(scale)},
        "sample_log_perplexity": {
            "mean": float(np.mean(sample_px)),
            "std": float(np.std(sample_px)),
            "min": float(np.min(sample_px)),
        },
        "seconds": time.perf_counter() - start,
    }
