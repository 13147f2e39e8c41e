"""The damped empirical Fisher of the retained data D+ at the current weights.

``estimate_fisher`` draws a seeded sample of m rows of D+, computes their per-example gradients
in float32 (``per_example_grads``), chunk by chunk straight into one preallocated (m, d) matrix
(peak memory = that matrix plus one chunk's activations, so m = 1024 fits where m copies would
not), and sets up ``WoodburyFisher`` with the chosen block structure. The artifact carries the
model's fingerprint: a consumer refuses a Fisher of other weights.

The sample depends only on the seed (stream ``unlearn``, key ``fisher``), so a Fisher
re-estimated at new weights (refresh, unlearning cycles) sees the same rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..artifacts import describe_files
from ..lm_data import collate, encode_texts
from ..logs import progress
from ..models import context_length, fingerprint, load_model
from ..provenance import peak_memory_mb
from ..replicate import ReplicateFiles
from ..seeding import numpy_rng
from ..texts import retained_texts
from ..tokenizer import load_tokenizer
from .per_example_grads import flat_dim, layout_blocks, parameter_layout, per_example_gradients
from .woodbury import WoodburyFisher, fixed_size_blocks

log = logging.getLogger(__name__)

BLOCKINGS = ("full", "layer", "fixed")
GRADIENT_METHODS = ("auto", "loop", "vmap")
GRADIENT_CHUNK = 32  # sequences per per-example-gradient call: bounds activation memory


@dataclass(frozen=True)
class FisherConfig:
    """``fisher.*`` of the config.

    examples: m, rows of D+ whose per-example gradients form F.
    damping: lambda of F = lambda I + G^T G / m.
    blocks: "full" (one block), "layer" (one block per parameter tensor) or "fixed"
    (consecutive blocks of ``block_size`` coordinates).
    """

    examples: int
    damping: float
    blocks: str = "full"
    block_size: int = 65536
    gradient_method: str = "auto"
    seed: int = 0
    key: str = "fisher"  # config path, for error messages

    def __post_init__(self) -> None:
        if isinstance(self.examples, bool) or not isinstance(self.examples, int):
            raise ValueError(f"{self.key}.examples: must be an integer, got {self.examples!r}")
        if self.examples < 2:
            raise ValueError(f"{self.key}.examples: must be >= 2, got {self.examples}")
        if not (isinstance(self.damping, int | float) and math.isfinite(self.damping)):
            raise ValueError(f"{self.key}.damping: must be a finite number, got {self.damping!r}")
        if self.damping <= 0:
            raise ValueError(f"{self.key}.damping: must be > 0, got {self.damping}")
        if self.blocks not in BLOCKINGS:
            raise ValueError(
                f"{self.key}.blocks: unknown {self.blocks!r}; use one of {', '.join(BLOCKINGS)}"
            )
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int):
            raise ValueError(f"{self.key}.block_size: must be an integer, got {self.block_size!r}")
        if self.block_size < 1:
            raise ValueError(f"{self.key}.block_size: must be >= 1, got {self.block_size}")
        if self.gradient_method not in GRADIENT_METHODS:
            raise ValueError(
                f"{self.key}.gradient_method: unknown {self.gradient_method!r}; use one of "
                f"{', '.join(GRADIENT_METHODS)}"
            )


def fisher_sample(n_retained: int, cfg: FisherConfig) -> list[int]:
    """Sorted positions (into the retained sequences) of the m rows that form F.

    m = ``cfg.examples``, or all of D+ when D+ is smaller: a real-world request's forget set is
    decided by the data (a string repeated in 130 of 320 credits examples takes them all), so a
    fixed m can exceed D+; F then uses every retained row, and the manifest's ``m`` says so.
    """
    if n_retained < 1:
        raise ValueError(
            f"{cfg.key}: the retained set is empty, so there is no Fisher of D+; the forget set "
            "holds every training example (check the request: canaries or realworld.forget_top)"
        )
    if cfg.examples >= n_retained:
        if cfg.examples > n_retained:
            log.warning(
                "%s.examples = %d exceeds the retained set (%d examples): F uses all of them",
                cfg.key,
                cfg.examples,
                n_retained,
            )
        return list(range(n_retained))
    rng = numpy_rng(cfg.seed, "unlearn", "fisher")
    return sorted(rng.choice(n_retained, size=cfg.examples, replace=False).tolist())


def block_ranges(model: torch.nn.Module, cfg: FisherConfig) -> list[tuple[int, int]] | None:
    layout = parameter_layout(model)
    if cfg.blocks == "layer":
        return layout_blocks(layout)
    if cfg.blocks == "fixed":
        return fixed_size_blocks(flat_dim(layout), cfg.block_size)
    return None


def estimate_fisher(
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
) -> WoodburyFisher:
    """Inverse damped empirical Fisher of ``cfg.examples`` seeded rows of D+ at ``model``'s
    current weights (all trainable parameters, tied tensors once). ``cost`` of the result holds
    ``gradient_wall_s`` and ``setup_wall_s``."""
    rows = fisher_sample(len(retain_sequences), cfg)
    layout = parameter_layout(model)
    m, d = len(rows), flat_dim(layout)
    device = next(model.parameters()).device
    log.info("Fisher: m = %d per-example gradients of d = %d parameters", m, d)
    start = time.perf_counter()
    G = torch.empty(m, d, dtype=torch.float32, device=device)
    chunks = range(0, m, GRADIENT_CHUNK)
    for lo in progress(chunks, desc="Fisher gradients", total=len(chunks)):
        hi = min(lo + GRADIENT_CHUNK, m)
        batch = collate([retain_sequences[i] for i in rows[lo:hi]], pad_id)
        per_example_gradients(
            model,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            method=cfg.gradient_method,
            out=G[lo:hi],  # a row slice of a contiguous matrix: written in place
            progress=False,
        )
    gradient_seconds = time.perf_counter() - start
    fisher = WoodburyFisher.from_gradients(
        G,
        cfg.damping,
        block_ranges(model, cfg),
        fingerprint=fingerprint(model),
        parameter_names=[s.name for s in layout],
        progress=False,
    )
    fisher.cost["gradient_wall_s"] = round(gradient_seconds, 3)
    return fisher


def estimate_fisher_stage(
    replicate: ReplicateFiles,
    cfg: FisherConfig,
    tensors_path: str | Path,
    meta_path: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Estimate the Fisher of ``replicate``'s D+ at its original model (on ``device``), save it
    (safetensors + JSON), and return the manifest."""
    replicate.require("original", "retain")
    tokenizer = load_tokenizer(replicate.tokenizer_dir)
    model = load_model(replicate.original, vocab_size=len(tokenizer)).to(device)
    sequences = encode_texts(
        tokenizer, retained_texts(replicate.train, replicate.retain), context_length(model.config)
    )
    fisher = estimate_fisher(model, sequences, cfg, tokenizer.eos_token_id)
    fisher.save(tensors_path, meta_path)
    meta = fisher.metadata()
    return {
        "m": fisher.m,
        "d": fisher.d,
        "lambda": fisher.lam,
        "blocking": cfg.blocks,
        "blocks": len(fisher.blocks),
        "dual_blocks": meta["block_forms"].count("dual"),
        "retained_examples": len(sequences),
        "gradient_method": cfg.gradient_method,
        "gradient_seconds": fisher.cost["gradient_wall_s"],
        "setup_seconds": fisher.cost["setup_wall_s"],
        "gradient_bytes": fisher.m * fisher.d * fisher.gradients.element_size(),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "fingerprint": fisher.fingerprint,
        "files": describe_files([tensors_path, meta_path]),
    }
