"""The Fisher a config asks for, on this process or process group: estimated, saved, loaded.

``fisher.storage`` picks where the m x d gradient matrix G lives and ``fisher.dtype`` its
precision; the process group (``launch.py`` runs a rule once per GPU under torchrun) picks
whether its columns are sharded:

| storage     | one process                          | W processes (one per GPU)              |
|-------------|--------------------------------------|----------------------------------------|
| device      | ``WoodburyFisher``, G on the GPU     | ``ShardedWoodburyFisher``, G's columns  |
| host        | the same, G in host RAM, streamed    | the same, each rank's columns in RAM    |
| matrix_free | ``MatrixFreeFisher``, G recomputed   | refused (nothing to shard)             |

What the artifact holds (``estimate_fisher`` writes it, the unlearning jobs read it):

- one process, device or host: G and the factors, as before storage modes existed (the CPU
  default's artifact is bit for bit the same; 0.25 GB at its size). A consumer reads G back.
- matrix_free, or W processes: the factors and the sample record (rows of D+, a digest of their
  tokens, the gradient method), never G: O(m^2) per block, where G would be 127 GB for GPT-2
  124M at m = 256. A consumer recomputes what it needs from its own copy of D+ at the same
  weights (both checked): matrix_free recomputes rows for every product; device or host storage
  recompute G (their columns, on W ranks) in one gradient pass, then reuse the factors.

Every returned Fisher has ``WoodburyFisher``'s interface for the unlearning methods (whole
d-vectors in and out; ``GatheredFisher`` wraps the sharded one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..artifacts import describe_files
from ..compute import place_model
from ..lm_data import encode_texts
from ..models import context_length, fingerprint, load_model
from ..provenance import peak_memory_mb
from ..replicate import ReplicateFiles
from ..texts import retained_texts
from ..tokenizer import load_tokenizer
from .estimation import FisherConfig, estimate_fisher, gradient_matrix, sampled_sequences
from .matrix_free import MatrixFreeFisher
from .sharded import GatheredFisher, estimate_sharded_fisher, load_sharded_fisher, rank_world
from .woodbury import Artifact, WoodburyFisher, read_artifact

log = logging.getLogger(__name__)
Fisher = WoodburyFisher | MatrixFreeFisher | GatheredFisher


def world_size() -> int:
    """Processes sharing this job (torchrun's ranks; 1 without a process group)."""
    return rank_world(None)[1]


def fit_fisher(
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
) -> Fisher:
    """The Fisher of ``cfg.examples`` seeded rows of D+ at ``model``'s weights, stored as
    ``cfg`` says, sharded over the process group if there is one."""
    if world_size() > 1:
        return GatheredFisher(estimate_sharded_fisher(model, retain_sequences, cfg, pad_id))
    if cfg.storage == "matrix_free":
        return MatrixFreeFisher.estimate(model, retain_sequences, cfg, pad_id)
    return estimate_fisher(model, retain_sequences, cfg, pad_id)


def save_fisher(fisher: Fisher, tensors_path: str | Path, meta_path: str | Path) -> None:
    """The artifact (module docstring: G only where one process holds all of it)."""
    if isinstance(fisher, WoodburyFisher):
        fisher.save(tensors_path, meta_path, gradients=True)
    else:
        fisher.save(tensors_path, meta_path)


def load_fisher(
    tensors_path: str | Path,
    meta_path: str | Path,
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    pad_id: int,
) -> Fisher:
    """A stored Fisher for ``model`` (refused, naming the file and the fix, if it belongs to
    other weights) in the storage it was estimated with, on this process or process group;
    ``retain_sequences`` (D+ in the retain manifest's order) give the rows a consumer must
    recompute."""
    art = read_artifact(tensors_path, meta_path, expected_fingerprint=fingerprint(model))
    cfg = stored_config(art)
    device = next(model.parameters()).device
    if world_size() > 1:
        if cfg.storage == "matrix_free":
            raise ValueError(
                f"{meta_path}: a matrix_free Fisher runs in one process; give this rule one "
                "GPU, or use fisher.storage device or host"
            )
        sharded = load_sharded_fisher(art, model, retain_sequences, cfg, pad_id)
        return GatheredFisher(sharded)
    if cfg.storage == "matrix_free":
        return MatrixFreeFisher.from_artifact(art, model, retain_sequences, pad_id)
    G = art.gradients
    if G is None:  # estimated on several GPUs: recompute G here in one gradient pass
        sample = art.meta["sample"]
        sequences = sampled_sequences(sample, retain_sequences, str(art.path))
        G = gradient_matrix(model, sequences, cfg, pad_id, sample["gradient_method"])
    elif cfg.storage == "device":
        G = G.to(device)
    elif device.type == "cuda":
        G = G.pin_memory()  # host storage: column chunks stream to the GPU
    return WoodburyFisher.from_artifact(art, G, device)


def stored_config(art: Artifact) -> FisherConfig:
    """How the artifact's G was stored (an artifact from before storage modes: device,
    float32), as the ``FisherConfig`` a consumer recomputes G with."""
    sample = art.meta.get("sample") or {}
    return FisherConfig(
        examples=max(2, art.meta["m"]),
        damping=art.meta["lambda"],
        storage=art.meta.get("storage", "device"),
        dtype=art.meta["dtype"],
        recompute_rows=sample.get("recompute_rows", 16),
    )


def estimate_fisher_stage(
    replicate: ReplicateFiles,
    cfg: FisherConfig,
    tensors_path: str | Path,
    meta_path: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Estimate the Fisher of ``replicate``'s D+ at its original model (on ``device``; on every
    rank of a process group, each with its columns), save it (safetensors + JSON), and return
    the manifest."""
    replicate.require("original", "retain")
    tokenizer = load_tokenizer(replicate.tokenizer_dir)
    model = place_model(load_model(replicate.original, vocab_size=len(tokenizer)), device)
    sequences = encode_texts(
        tokenizer, retained_texts(replicate.train, replicate.retain), context_length(model.config)
    )
    fisher = fit_fisher(model, sequences, cfg, tokenizer.eos_token_id)
    save_fisher(fisher, tensors_path, meta_path)
    meta = fisher.metadata()
    stored = isinstance(fisher, WoodburyFisher)
    return {
        "m": fisher.m,
        "d": fisher.d,
        "lambda": fisher.lam,
        "blocking": cfg.blocks,
        "blocks": len(fisher.blocks),
        "dual_blocks": meta["block_forms"].count("dual"),
        "retained_examples": len(sequences),
        "gradient_method": cfg.gradient_method,
        "gradient_seconds": fisher.cost.get("gradient_wall_s"),
        "setup_seconds": fisher.cost["setup_wall_s"],
        "gradient_bytes": fisher.m * fisher.d * fisher.gradients.element_size() if stored else 0,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "fingerprint": fisher.fingerprint,
        "files": describe_files([tensors_path, meta_path]),
        "storage": cfg.storage,
        "dtype": cfg.dtype,
        "processes": world_size(),
        "gradients_in_artifact": stored,
        # matrix_free: per-example gradients the set-up recomputed (m when G is stored)
        "setup_gradients": fisher.cost.get("setup_gradients", fisher.m),
    }
