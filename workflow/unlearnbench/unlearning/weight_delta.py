"""How far each method moves the weights, per layer type: theta' - theta as a histogram.

Bins are fixed and symmetric on a log scale of |delta| (edges +-10^e, e = -8, -7.5, ..., 0), the
same for every method, model and cycle, so histograms can be overlaid directly: a noisy method
(Fisher Forgetting) and a Newton step (Fisher Removal) differ by orders of magnitude. The middle
bin (-1e-8, 1e-8] holds unchanged weights; the outer bins are open-ended. Layer types follow
parameter names (GPT-2 and OPT spellings); a tied LM head is its embedding and is counted once.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

EXPONENTS = [e / 2 for e in range(-16, 1)]  # -8.0 .. 0.0 in half decades
MAGNITUDES = [10.0**e for e in EXPONENTS]
BIN_EDGES = [-m for m in reversed(MAGNITUDES)] + MAGNITUDES  # 34 edges, 35 bins
LAYER_TYPES = ("embeddings", "attention", "mlp", "layernorm", "lm_head", "other")
_PATTERNS = (
    ("lm_head", r"(^|\.)(lm_head|embed_out)\."),
    ("layernorm", r"(^|\.)(ln_\w*|\w*layer_?norm\w*|norm)\."),
    ("embeddings", r"(^|\.)(wte|wpe|embed_tokens|embed_positions|embeddings?)\."),
    ("attention", r"(^|\.)(attn|self_attn|attention)\."),
    ("mlp", r"(^|\.)(mlp|fc1|fc2|ffn|feed_forward)\."),
)


def layer_type(name: str) -> str:
    for kind, pattern in _PATTERNS:
        if re.search(pattern, name):
            return kind
    return "other"


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable weights (one entry per tensor: ties once)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _summary(chunks: list[torch.Tensor], edges: torch.Tensor) -> dict[str, Any]:
    counts = torch.zeros(len(edges) + 1, dtype=torch.int64)
    sq, max_abs, abs_sum, numel, zeros = 0.0, 0.0, 0.0, 0, 0
    for delta in chunks:
        delta = delta.reshape(-1).double().cpu()
        counts += torch.bincount(torch.bucketize(delta, edges), minlength=len(edges) + 1)
        sq += float(delta.square().sum())
        max_abs = max(max_abs, float(delta.abs().max()) if delta.numel() else 0.0)
        abs_sum += float(delta.abs().sum())
        numel += delta.numel()
        zeros += int((delta == 0).sum())
    return {
        "parameters": numel,
        "l2": math.sqrt(sq),
        "max_abs": max_abs,
        "mean_abs": abs_sum / max(numel, 1),
        "unchanged": zeros,
        "counts": counts.tolist(),
    }


def weight_delta(before: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """Histogram, l2 and max |delta| of theta' - theta per layer type and overall."""
    after = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if set(after) != set(before):
        raise ValueError("weight_delta: the model's parameters changed names during unlearning")
    edges = torch.tensor(BIN_EDGES, dtype=torch.float64)
    by_type: dict[str, list[torch.Tensor]] = {}
    for name, tensor in after.items():
        delta = tensor.double() - before[name].to(tensor.device).double()
        by_type.setdefault(layer_type(name), []).append(delta)
    out = {
        "bin_edges": BIN_EDGES,
        "overall": _summary([d for deltas in by_type.values() for d in deltas], edges),
        "by_type": {
            kind: _summary(by_type[kind], edges) for kind in LAYER_TYPES if kind in by_type
        },
    }
    for summary in [out["overall"], *out["by_type"].values()]:
        if not math.isfinite(summary["l2"]):
            raise ValueError("weight_delta: the unlearned weights are not finite")
    return out
