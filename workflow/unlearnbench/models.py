"""Causal LMs: a GPT-2 built from scratch, or a hub model (GPT-2, OPT), saved as safetensors.

The embedded default trains a small GPT-2 from scratch (no weights are reachable offline); the
paper config names a hub model (``load_hub_model``: its pinned revision, safetensors only, in
float32, dropout off). Both become a transformers causal LM that every later stage treats the
same way; ``context_length`` reads how many positions any of them has. Models are written with
``save_pretrained`` (safetensors + config.json) into a temporary directory that is renamed into
place, so a killed job never leaves a half-written model; loading never enables
``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from .artifacts import describe_files
from .seeding import derive_seed

MODEL_FILES = ("config.json", "model.safetensors")


# The smallest model the schema allows (workflow/schemas/config.schema.yaml).
MODEL_MINIMUMS = {"n_layer": 1, "n_embd": 8, "n_head": 1, "n_positions": 16}


@dataclass(frozen=True)
class ModelConfig:
    """``model.*`` of the config: a hub id, or the size of a GPT-2 trained from scratch."""

    source: str = "scratch"
    revision: str | None = None
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128

    def __post_init__(self) -> None:
        for key, minimum in MODEL_MINIMUMS.items():
            if getattr(self, key) < minimum:
                raise ValueError(f"model.{key}: must be >= {minimum}, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd: {self.n_embd} is not divisible by model.n_head = {self.n_head}; "
                "choose a width that is a multiple of the head count"
            )
        if not self.from_scratch and self.revision is None and not Path(self.source).is_dir():
            raise ValueError(
                f"model.revision: the hub model {self.source!r} needs a pinned revision; set "
                "model.revision to a commit of its repository"
            )

    @property
    def from_scratch(self) -> bool:
        return self.source == "scratch"


# Where a model's config keeps its context length: GPT-2 (n_positions), OPT, Llama, GPT-NeoX, ...
# (max_position_embeddings), older GPT-style configs (n_ctx).
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def context_length(config: Any) -> int:
    """Positions a model can attend over, from its config (a transformers config or the dict of
    a saved config.json), whatever the architecture calls it."""
    values = config if isinstance(config, Mapping) else vars(config)
    for key in CONTEXT_KEYS:
        if isinstance(values.get(key), int):
            return values[key]
    raise ValueError(
        f"model config ({values.get('model_type', 'unknown type')}): no context length among "
        f"{', '.join(CONTEXT_KEYS)}; this architecture is not supported"
    )


def build_model(cfg: ModelConfig, vocab_size: int, eos_id: int, seed: int) -> torch.nn.Module:
    """A freshly initialised GPT-2 (seeded ``init`` stream), or the hub model ``cfg.source``
    (``load_hub_model``; ``vocab_size``: the tokenizer's, which it must cover).

    Dropout is 0: per-example gradients and DP-SGD need deterministic forward passes, and
    unlearning is compared at fixed weights.
    """
    if not cfg.from_scratch:
        return load_hub_model(cfg, vocab_size)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return GPT2LMHeadModel(config)


def _no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _dropout_keys(config: Any) -> list[str]:
    """The config's dropout rates (GPT-2: resid_pdrop, ...; OPT: dropout, attention_dropout,
    ...). OPT applies them functionally, not through ``nn.Dropout`` modules, so the rates
    themselves must be 0."""
    return [
        key
        for key, value in vars(config).items()
        if key.endswith(("dropout", "pdrop", "layerdrop")) and isinstance(value, float)
    ]


def load_hub_model(cfg: ModelConfig, vocab_size: int | None = None) -> torch.nn.Module:
    """The hub model ``cfg.source`` (a hub id at ``cfg.revision``, or a local directory) in
    float32, from safetensors only, its own code only (never ``trust_remote_code``), dropout 0.

    transformers 5 would keep the checkpoint's dtype (OPT's is float16), which the Fisher's
    Woodbury set-up and the exposure tolerances are not calibrated for: float32 is asked for.
    A model with fewer embedding rows than the tokenizer (``vocab_size``) has tokens it cannot
    embed and is refused (padding rows, OPT's 50272 for 50265 tokens, are fine).
    """
    common = {"revision": cfg.revision, "trust_remote_code": False}
    config = AutoConfig.from_pretrained(cfg.source, **common)
    for key in _dropout_keys(config):
        setattr(config, key, 0.0)
    check_vocabulary(cfg, config.vocab_size, vocab_size)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.source, config=config, use_safetensors=True, dtype=torch.float32, **common
    )
    rows = model.get_input_embeddings().weight.shape[0]
    check_vocabulary(cfg, rows, vocab_size)
    return _no_dropout(model)


def check_vocabulary(cfg: ModelConfig, rows: int, vocab_size: int | None) -> None:
    if vocab_size is not None and rows < vocab_size:
        raise ValueError(
            f"model.source: {cfg.source!r} (revision {cfg.revision}) has {rows} token "
            f"embeddings but its tokenizer has {vocab_size} tokens, so some token ids have no "
            "embedding; use a revision whose model and tokenizer belong together"
        )


def save_model(model: torch.nn.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """``save_pretrained`` into a temporary sibling, then rename: all or nothing. Returns the
    record of the saved files (``artifacts.describe_files``) for the stage's manifest."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        model.save_pretrained(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return describe_files(sorted(p for p in directory.iterdir() if p.is_file()))


def load_model(directory: str | os.PathLike, vocab_size: int | None = None) -> torch.nn.Module:
    """Load a saved model; a missing, truncated or mismatched model is a clear error."""
    directory = Path(directory)
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: model files missing ({', '.join(missing)}); "
            "delete the directory and rerun the rule that produces it"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(directory)
    except Exception as err:  # safetensors/json raise many types; the fix is the same
        raise ValueError(
            f"{directory}: model files are corrupted or truncated ({type(err).__name__}: {err}); "
            "delete the directory and rerun the rule that produces it"
        ) from None
    # Hub models may pad their embedding (OPT: 50272 rows for 50265 tokens); fewer rows than
    # tokens means the two come from different runs.
    if vocab_size is not None and model.config.vocab_size < vocab_size:
        raise ValueError(
            f"{directory}: the model has {model.config.vocab_size} token embeddings but the "
            f"tokenizer has {vocab_size} tokens; they come from different runs. Rerun the "
            "model's training rule with the current tokenizer (results/tokenizer)"
        )
    return _no_dropout(model.eval())


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 of all parameters (names, shapes, bytes): identifies the exact weights.

    The bytes are read through a uint8 view, so dtypes numpy lacks (bfloat16, float8) hash too;
    for those the dtype's name is hashed as well (a bfloat16 and a float16 tensor can share
    their bytes). Every other dtype hashes exactly as before (numpy's bytes, no dtype), so
    fingerprints already recorded stay valid.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        if flat.dtype in NUMPY_LESS_DTYPES:
            digest.update(str(flat.dtype).encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# torch dtypes without a numpy equivalent (Tensor.numpy() refuses them).
NUMPY_LESS_DTYPES = frozenset(
    getattr(torch, name)
    for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
)
