"""The train_dp rule's stage: the base model fine-tuned with DP-SGD, as a function of paths.

Apart from ``stages`` because it imports Opacus (through ``dp``): the non-private training rules
neither load it nor rerun when the DP code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..lm_data import encode_texts
from ..models import fingerprint, load_model, save_model
from ..tokenizer import load_tokenizer
from .dp import DPConfig, train_dp


def dp_finetune_from(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    recipe: DPConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """The base model fine-tuned with DP-SGD on ``texts`` (the train split with canaries).

    The manifest carries the epsilon the accountant reports as spent beside the target, the
    delta and the calibrated noise multiplier, so tables show what was actually guaranteed.
    """
    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_model(base_dir, vocab_size=len(tokenizer)).to(device)
    sequences = encode_texts(tokenizer, texts, model.config.n_positions)
    result = train_dp(model, sequences, recipe, tokenizer.eos_token_id, checkpoint_dir)
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
