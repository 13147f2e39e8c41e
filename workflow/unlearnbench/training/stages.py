"""The study's training stages as plain functions of paths: base (trained from scratch, or a hub
model fetched as it is), original and retrained models (the DP-SGD models: ``dp_stage``).

Rules call these through thin adapters. Each takes texts, a recipe and directories, trains with
``loop.train`` (resumable through ``checkpoint_dir``) and saves the model with
``models.save_model``; the returned dict becomes the rule's manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..compute import place_model
from ..hub_snapshots import commit_of
from ..lm_data import encode_texts
from ..models import (
    ModelConfig,
    build_model,
    context_length,
    fingerprint,
    load_hub_model,
    load_model,
    save_model,
)
from ..texts import retained_texts
from ..tokenizer import load_tokenizer
from .loop import TrainConfig, train


def _fit(model, tokenizer, texts, recipe: TrainConfig, out_dir, checkpoint_dir) -> dict[str, Any]:
    sequences = encode_texts(tokenizer, texts, context_length(model.config))
    history = train(model, sequences, recipe, tokenizer.eos_token_id, checkpoint_dir)
    files = save_model(model, out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "files": files,
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
    device: str = "cpu",
) -> dict[str, Any]:
    """A GPT-2 from scratch trained on ``texts`` (a hub model: ``fetch_base_model``)."""
    if not model_cfg.from_scratch:
        raise ValueError(
            f"model.source: pretrain_base trains a model from scratch, and {model_cfg.source!r} "
            "is a hub model; the workflow fetches it with rule fetch_base_model instead"
        )
    tokenizer = load_tokenizer(tokenizer_dir)
    model = place_model(
        build_model(model_cfg, len(tokenizer), tokenizer.eos_token_id, seed), device
    )
    return _fit(model, tokenizer, texts, recipe, out_dir, checkpoint_dir)


# What a hub base model does not use (they size or train a model built here).
NOT_USED_FOR_HUB = (
    "model.n_layer, n_embd, n_head and n_positions size a model trained from scratch, and "
    "train.pretrain and pretrain.datasets pretrain it; a hub model comes trained, with its own "
    "shape and context, so they are not used"
)


def fetch_base_model(
    model_cfg: ModelConfig, tokenizer_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """The hub model ``model_cfg.source`` at its pinned revision as the study's base model:
    float32, safetensors only, dropout 0 (``models.load_hub_model``), refused if it cannot embed
    every token of the tokenizer in use (``tokenizer_dir``, saved by ``fetch_tokenizer``)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_hub_model(model_cfg, len(tokenizer))
    return {
        "source": model_cfg.source,
        "revision": model_cfg.revision,
        "commit": commit_of(model_cfg.source, model_cfg.revision),
        "model_type": model.config.model_type,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "embedding_rows": model.get_input_embeddings().weight.shape[0],
        "tokenizer_size": len(tokenizer),
        "context_length": context_length(model.config),
        "fingerprint": fingerprint(model),
        "files": save_model(model, out_dir),
        "not_used": NOT_USED_FOR_HUB,
    }


def finetune_from(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    texts: Sequence[str],
    recipe: TrainConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Continue training the base model on ``texts`` (all of train, or D+ only)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    model = place_model(load_model(base_dir, vocab_size=len(tokenizer)), device)
    result = _fit(model, tokenizer, texts, recipe, out_dir, checkpoint_dir)
    return {"base": str(base_dir), **result}


def retrain_from(
    inputs: Any,
    recipe: TrainConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """A gold standard from a retrain rule's named inputs: the base model (``inputs.base``, its
    files) fine-tuned on D+, the rows of the training split ``inputs.train`` that the retain
    manifest ``inputs.retain`` lists, with the tokenizer of ``inputs.tokenizer``."""
    texts = retained_texts(inputs.train, inputs.retain)
    base_dir, tokenizer_dir = Path(inputs.base[0]).parent, Path(inputs.tokenizer).parent
    return finetune_from(base_dir, tokenizer_dir, texts, recipe, out_dir, checkpoint_dir, device)
