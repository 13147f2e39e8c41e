"""Which parameters DP-SGD trains: all of them, or a small subset that lifts its signal-to-noise.

DP-SGD adds noise of the same norm per coordinate to every trained parameter, while the clipped
signal has norm at most C in total: over d coordinates the noise's norm grows as sqrt(d) and the
signal's does not. Training fewer parameters is therefore the standard lever of DP fine-tuning of
LMs (Yu et al. 2022, "Differentially private fine-tuning of language models"; Bu et al. 2022,
DP-BiTFiT): the privacy guarantee is the same, the noise is spread over far fewer coordinates.

- ``all``: every parameter (the embeddings included; GPT-2 ties them to the output layer).
- ``norms_biases``: every LayerNorm's scale and shift and every bias (DP-BiTFiT with norms),
  about 1 % of a small GPT-2.
- ``last_block``: the last transformer block and the final LayerNorm; the backward pass then
  stops at that block, so it is also the cheapest.

The subset is found by module type and position, not by parameter names, so GPT-2 and OPT
(``transformer.h`` / ``model.decoder.layers``) need no table of names.
"""

from __future__ import annotations

import torch

TRAINABLE = ("all", "norms_biases", "last_block")


def _blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer's block list: the longest ModuleList (GPT-2's ``h``, OPT's ``layers``)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks")
    return max(lists, key=len)


def _final_norms(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> list[torch.nn.Module]:
    """LayerNorms outside every block (GPT-2's ``ln_f``, OPT's ``final_layer_norm``)."""
    inside = {id(m) for block in blocks for m in block.modules()}
    return [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm) and id(m) not in inside]


def trainable_parameters(model: torch.nn.Module, subset: str) -> list[torch.nn.Parameter]:
    """The parameters ``subset`` trains (each once, in ``model.parameters()`` order)."""
    if subset not in TRAINABLE:
        raise ValueError(f"train_dp.trainable: must be one of {TRAINABLE}, got {subset!r}")
    if subset == "all":
        return list(model.parameters())
    chosen: set[int] = set()
    if subset == "norms_biases":
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                chosen.update(id(p) for p in module.parameters(recurse=False))
        chosen.update(id(p) for name, p in model.named_parameters() if name.endswith(".bias"))
    else:
        blocks = _blocks(model)
        chosen.update(id(p) for p in blocks[-1].parameters())
        for norm in _final_norms(model, blocks):
            chosen.update(id(p) for p in norm.parameters())
    return [p for p in model.parameters() if id(p) in chosen]


def freeze_all_but(model: torch.nn.Module, subset: str) -> int:
    """Leave only ``subset`` trainable (requires_grad); return its number of coordinates."""
    keep = {id(p) for p in trainable_parameters(model, subset)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
