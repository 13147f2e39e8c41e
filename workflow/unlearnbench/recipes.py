"""The study's training stages as plain functions of paths: base, original and retrained models.

Rules call these through thin adapters. Each takes texts, a recipe and directories, trains with
``training.train`` (resumable through ``checkpoint_dir``) and saves the model with
``models.save_model``; the returned dict becomes the rule's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .lm_data import encode_texts
from .models import ModelConfig, build_model, fingerprint, load_model, save_model
from .tokenizer import load_tokenizer
from .training import TrainConfig, train

if TYPE_CHECKING:
    from .dp import DPConfig


def read_texts(parquet_paths: Sequence[str | Path]) -> list[str]:
    texts: list[str] = []
    for path in parquet_paths:
        texts += pd.read_parquet(path, columns=["text"])["text"].tolist()
    return texts


def retained_texts(train_path: str | Path, retain_path: str | Path) -> list[str]:
    """D+: the rows of the canary-injected training split listed in the retain manifest."""
    texts = read_texts([train_path])
    indices = json.loads(Path(retain_path).read_text())["indices"]
    return [texts[i] for i in indices]


def _fit(model, tokenizer, texts, recipe: TrainConfig, out_dir, checkpoint_dir) -> dict[str, Any]:
    sequences = encode_texts(tokenizer, texts, model.config.n_positions)
    history = train(model, sequences, recipe, tokenizer.eos_token_id, checkpoint_dir)
    save_model(model, out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "examples": len(sequences),
        "parameters": params,
        "fingerprint": fingerprint(model),
        "history": history,
        # Training costs ~6 FLOPs per parameter per token (forward + backward); comparing with
        # the machine's matmul rate (tests/benchmarks) tells how close to the bound we run.
        "achieved_gflops": 6 * params * history["tokens_per_second"] / 1e9,
    }


def pretrain_base(
    model_cfg: ModelConfig,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    recipe: TrainConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    seed: int,
) -> dict[str, Any]:
    """A GPT-2 from scratch trained on ``texts``; a hub model is saved as it comes."""
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(model_cfg, len(tokenizer), tokenizer.eos_token_id, seed)
    if not model_cfg.from_scratch:
        save_model(model, out_dir)
        return {"source": model_cfg.source, "fingerprint": fingerprint(model)}
    return _fit(model, tokenizer, texts, recipe, out_dir, checkpoint_dir)


def finetune_from(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    recipe: TrainConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
) -> dict[str, Any]:
    """Continue training the base model on ``texts`` (all of train, or D+ only)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_model(base_dir, vocab_size=len(tokenizer))
    result = _fit(model, tokenizer, texts, recipe, out_dir, checkpoint_dir)
    return {"base": str(base_dir), **result}


def dp_finetune_from(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    recipe: DPConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
) -> dict[str, Any]:
    """The base model fine-tuned with DP-SGD on ``texts`` (the train split with canaries).

    The manifest carries the epsilon the accountant reports as spent beside the target, the
    delta and the calibrated noise multiplier, so tables show what was actually guaranteed.
    """
    from .dp import train_dp  # Opacus is imported only by the rule that needs it

    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_model(base_dir, vocab_size=len(tokenizer))
    sequences = encode_texts(tokenizer, texts, model.config.n_positions)
    result = train_dp(model, sequences, recipe, tokenizer.eos_token_id, checkpoint_dir)
    save_model(model, out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "base": str(base_dir),
        "examples": len(sequences),
        "parameters": params,
        "fingerprint": fingerprint(model),
        **result,
        "achieved_gflops": 6 * params * result["tokens_per_second"] / 1e9,
    }
