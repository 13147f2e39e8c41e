"""The train_dp rule's stage: the base model fine-tuned with DP-SGD, as a function of paths.

Apart from ``stages`` because it imports Opacus (through ``dp``): the non-private training rules
neither load it nor rerun when the DP code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..compute import place_model
from ..lm_data import encode_texts
from ..models import context_length, fingerprint, load_model, save_model
from ..tokenizer import load_tokenizer
from .dp import DPConfig
from .dp_sweep import DPSweep, sweep_dp


def dp_finetune_from(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    validation_texts: Sequence[str],
    recipe: DPConfig,
    sweep: DPSweep,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """The base model fine-tuned with DP-SGD on ``texts`` (the train split with canaries), at
    the rate of ``sweep`` that scores best on ``validation_texts`` (dp_sweep).

    The manifest carries the epsilon the accountant reports as spent (the whole sweep's) beside
    the target, the delta, the calibrated noise multiplier and every candidate's validation
    loss, so tables show what was actually guaranteed and chosen.
    """
    tokenizer = load_tokenizer(tokenizer_dir)

    def fresh_model():
        return place_model(load_model(base_dir, vocab_size=len(tokenizer)), device)

    context = context_length(fresh_model().config)
    sequences = encode_texts(tokenizer, texts, context)
    validation = encode_texts(tokenizer, validation_texts, context)
    model, result = sweep_dp(
        fresh_model,
        sequences,
        validation,
        recipe,
        sweep,
        tokenizer.eos_token_id,
        checkpoint_dir,
    )
    files = save_model(model, out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "files": files,
        "base": str(base_dir),
        "examples": len(sequences),
        "parameters": params,
        "fingerprint": fingerprint(model),
        **result,
        "achieved_gflops": 6 * params * result["tokens_per_second"] / 1e9,
    }
