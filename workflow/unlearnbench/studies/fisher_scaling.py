"""How the cost of the inverse empirical Fisher grows with m and with model size.

Each point (model width, m) runs in a forked child process, so its peak resident memory is its
own and not the high-water mark of every earlier point. The models are GPT-2s of the study's
shape at several widths, randomly initialised with the study's seed: the cost of per-example
gradients, Woodbury set-up and products does not depend on the weights' values.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch

from ..fisher.per_example_grads import layout_blocks, parameter_layout
from ..fisher.woodbury import WoodburyFisher
from ..lm_data import collate
from ..logs import progress
from ..models import ModelConfig, build_model


@dataclass(frozen=True)
class ScalingConfig:
    """``scaling.*`` of the config."""

    examples: tuple[int, ...]
    widths: tuple[int, ...]
    damping: float
    blocks: str = "layer"
    key: str = "scaling"

    def __post_init__(self) -> None:
        if not self.examples or min(self.examples) < 2:
            raise ValueError(f"{self.key}.examples: list m values >= 2, got {self.examples}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"{self.key}.widths: list widths >= 1, got {self.widths}")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_point(
    model_cfg: ModelConfig,
    vocab_size: int,
    eos_id: int,
    sequences: Sequence[Sequence[int]],
    m: int,
    cfg: ScalingConfig,
    seed: int,
) -> dict[str, Any]:
    """Time gradients, set-up and one product for one model size and m (in this process)."""
    torch.set_num_threads(1)
    baseline = _rss_mb()
    model = build_model(model_cfg, vocab_size, eos_id, seed)
    layout = parameter_layout(model)
    batch = collate([sequences[i % len(sequences)] for i in range(m)], eos_id)
    start = time.perf_counter()
    G = _gradients(model, batch)
    gradient_s = time.perf_counter() - start
    blocks = layout_blocks(layout) if cfg.blocks == "layer" else None
    start = time.perf_counter()
    fisher = WoodburyFisher.from_gradients(G, cfg.damping, blocks, progress=False)
    setup_s = time.perf_counter() - start
    x = torch.ones(G.shape[1], dtype=G.dtype)
    start = time.perf_counter()
    fisher.ihvp(x)
    ihvp_s = time.perf_counter() - start
    return {
        "model_label": f"{model_cfg.n_layer}x{model_cfg.n_embd}",
        "n_embd": model_cfg.n_embd,
        "d": int(G.shape[1]),
        "m": m,
        "gradient_s": gradient_s,
        "setup_s": setup_s,
        "ihvp_s": ihvp_s,
        "peak_memory_mb": _rss_mb() - baseline,
        "gradient_storage_mb": G.numel() * G.element_size() / 2**20,
    }


def _gradients(model: torch.nn.Module, batch) -> torch.Tensor:
    from ..fisher.per_example_grads import per_example_gradients

    return per_example_gradients(
        model, batch.input_ids, batch.attention_mask, method="auto", progress=False
    )


def _child(queue, *args) -> None:
    try:
        queue.put(("ok", measure_point(*args)))
    except Exception as error:  # reported in the parent with the point's coordinates
        queue.put(("error", f"{type(error).__name__}: {error}"))


def fisher_scaling(
    model_cfg: ModelConfig,
    vocab_size: int,
    eos_id: int,
    sequences: Sequence[Sequence[int]],
    cfg: ScalingConfig,
    seed: int,
) -> pd.DataFrame:
    """One row per (width, m): times in seconds, peak memory above the child's start in MB."""
    context = multiprocessing.get_context("fork")
    points = [(w, m) for w in cfg.widths for m in cfg.examples]
    rows = []
    for width, m in progress(points, desc="Fisher scaling", total=len(points)):
        sized = replace(model_cfg, n_embd=width, n_head=_heads(width, model_cfg.n_head))
        queue = context.Queue()
        child = context.Process(
            target=_child, args=(queue, sized, vocab_size, eos_id, sequences, m, cfg, seed)
        )
        child.start()
        status, result = queue.get()
        child.join()
        if status != "ok":
            raise RuntimeError(f"scaling point width={width}, m={m} failed: {result}")
        rows.append(result)
    return pd.DataFrame(rows)


def _heads(width: int, preferred: int) -> int:
    """The configured head count if it divides the width, else the largest one that does."""
    return max(h for h in range(1, preferred + 1) if width % h == 0)
