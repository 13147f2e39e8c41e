"""What Opacus needs to know about the layers of transformers' GPT-2 and OPT.

Opacus computes per-sample gradients layer by layer, from what a forward hook saw going into a
layer (its positional arguments) and what the backward pass sends out of it; a layer type it has
no rule for falls back to a per-layer functorch pass. Two layer types of our models need help:

- GPT-2's ``Conv1D`` (a linear layer stored as (in, out)): without a rule of its own it takes the
  slow functorch fallback, and ghost clipping would materialise its per-sample gradients. Its
  per-sample gradient is one batched matmul, and its per-sample gradient norm is exactly a linear
  layer's (the Frobenius norm does not see the transpose).
- OPT's ``OPTLearnedPositionalEmbedding`` is called as ``(attention_mask, cache_length: int,
  position_ids=...)``. Every hook-based mode (hooks, functorch, ghost) fails on the int
  ("'int' object has no attribute 'detach'") when it saves the layer's inputs. Past that, the
  indices the layer really embeds (``position_ids + 2``) arrive as a keyword the hook never sees,
  so the embedding rule would read the attention mask's 0/1 values as positions: wrong
  gradients, without an error. ``opacus_ready`` turns each such layer, for the duration, into a
  plain embedding of the indices it looks up, so Opacus sees exactly what it embeds.
- OPT's ``OPTDecoderLayer`` flattens (batch, tokens, width) to (batch x tokens, width) around
  its MLP, so the hooks of fc1, fc2 and final_layer_norm see one "example" per token: hooks and
  functorch then fail at clipping (per-sample gradients of B and of B x T rows), and a route that
  did not check would clip tokens, not examples. ``opacus_ready`` runs the same layer without
  the flattening (Linear and LayerNorm act on the last dimension alone: same outputs, tested).

- An ``nn.Embedding`` with a ``padding_idx`` (OPT's token embedding: id 1) never updates that row
  (torch gives it no gradient), but Opacus's embedding rules scatter into it all the same:
  per-sample gradients that are not the model's. Ours drop those positions first.

Parameters shared by two layers (GPT-2 and OPT tie the token embedding to the output layer)
are found by ``shared_parameters``: Opacus's ghost clipping cannot clip them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from opacus.grad_sample import register_grad_sampler, register_norm_sampler
from opacus.grad_sample.embedding import (
    compute_embedding_grad_sample,
    compute_embedding_norm_sample,
)
from opacus.grad_sample.linear import compute_linear_norm_sample
from transformers.models.opt.modeling_opt import OPTDecoderLayer, OPTLearnedPositionalEmbedding
from transformers.pytorch_utils import Conv1D


@register_grad_sampler(Conv1D)
def conv1d_grad_sample(
    layer: Conv1D, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients of transformers' ``Conv1D`` (GPT-2's linear layers, weight stored
    (in, out)): one batched matmul instead of Opacus's per-layer functorch fallback."""
    inputs = activations[0].to(backprops.dtype)
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.einsum("n...i,n...j->nij", inputs, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = torch.einsum("n...k->nk", backprops)
    return grads


# ||a^T g||_F = ||g^T a||_F: a Conv1D's per-sample gradient norms are a linear layer's.
register_norm_sampler(Conv1D)(compute_linear_norm_sample)


def without_padding_row(layer: torch.nn.Embedding, activations, backprops) -> torch.Tensor:
    """The output gradients with the positions that look up ``padding_idx`` zeroed."""
    if layer.padding_idx is None:
        return backprops
    looked_up_padding = (activations[0] == layer.padding_idx).unsqueeze(-1)
    return backprops.masked_fill(looked_up_padding, 0)


def embedding_grad_sample(layer, activations, backprops):
    return compute_embedding_grad_sample(
        layer, activations, without_padding_row(layer, activations, backprops)
    )


def embedding_norm_sample(layer, activations, backprops):
    return compute_embedding_norm_sample(
        layer, activations, without_padding_row(layer, activations, backprops)
    )


class PositionIndexEmbedding(OPTLearnedPositionalEmbedding):
    """An ``OPTLearnedPositionalEmbedding`` while Opacus watches it: called with the indices it
    looks up (``position_ids + offset``), so hooks save those. Same parameters, same output."""

    def forward(self, indices: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.nn.Embedding.forward(self, indices)


register_grad_sampler([torch.nn.Embedding, PositionIndexEmbedding])(embedding_grad_sample)
register_norm_sampler([torch.nn.Embedding, PositionIndexEmbedding])(embedding_norm_sample)


def _position_indices(module, args, kwargs):
    """Forward pre-hook: OPT's call ``(attention_mask, cache_length, position_ids=...)`` becomes
    a call with the looked-up indices alone. A call that already has them (Opacus's functorch
    fallback replays the layer on its saved input) passes through."""
    if len(args) == 1 and not kwargs:
        return None
    attention_mask, *rest = args
    cache_length = rest[0] if rest else kwargs.get("cache_length", 0)
    position_ids = kwargs.get("position_ids")
    if position_ids is None:  # transformers' own rule (OPTLearnedPositionalEmbedding.forward)
        position_ids = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()
        position_ids = position_ids[:, cache_length:]
    return (position_ids + module.offset,), {}


class BatchFirstOPTDecoderLayer(OPTDecoderLayer):
    """``OPTDecoderLayer.forward`` of transformers 5 without the flattening of (B, T, d) to
    (B*T, d) around the MLP, so that per-sample hooks keep seeing B examples."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        use_cache: bool | None = False,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        dropout = torch.nn.functional.dropout
        residual = hidden_states
        if self.do_layer_norm_before:  # 125m, 1.3b, 2.7b: LayerNorm before attention
            hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            cache=cache,
            position_ids=position_ids,
            attention_mask=attention_mask,
            **kwargs,
        )
        hidden_states = residual + dropout(hidden_states, p=self.dropout, training=self.training)
        if not self.do_layer_norm_before:  # 350m: after
            hidden_states = self.self_attn_layer_norm(hidden_states)
        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
        hidden_states = residual + dropout(hidden_states, p=self.dropout, training=self.training)
        if not self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


# The forward above restates transformers' for these arguments; a layer with other arguments
# is refused rather than run through a stale copy (tests compare the outputs of the two).
_OPT_LAYER_ARGUMENTS = (
    "self",
    "hidden_states",
    "attention_mask",
    "cache",
    "use_cache",
    "position_ids",
    "kwargs",
)


def _check_opt_layer() -> None:
    found = tuple(inspect.signature(OPTDecoderLayer.forward).parameters)
    if found != _OPT_LAYER_ARGUMENTS:
        raise RuntimeError(
            f"transformers' OPTDecoderLayer.forward takes {found}, not {_OPT_LAYER_ARGUMENTS}: "
            "training/dp_layers.BatchFirstOPTDecoderLayer restates the version it was "
            "written for and must be updated before DP-SGD can train OPT"
        )


@contextmanager
def opacus_ready(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with its OPT layers in the forms above, for the duration; the model is
    unchanged in weights, outputs and parameter names, and restored on exit (also after an
    error)."""
    changed: list[tuple[torch.nn.Module, type, object]] = []
    try:
        for module in model.modules():
            if type(module) is OPTLearnedPositionalEmbedding:
                handle = module.register_forward_pre_hook(
                    _position_indices, prepend=True, with_kwargs=True
                )
                module.__class__ = PositionIndexEmbedding
                changed.append((module, OPTLearnedPositionalEmbedding, handle))
            elif type(module) is OPTDecoderLayer:
                _check_opt_layer()
                module.__class__ = BatchFirstOPTDecoderLayer
                changed.append((module, OPTDecoderLayer, None))
        yield model
    finally:
        for module, original, handle in changed:
            if handle is not None:
                handle.remove()
            module.__class__ = original


def shared_parameters(model: torch.nn.Module) -> dict[str, list[str]]:
    """Trainable parameters held by more than one layer: {parameter name: the layers' names}
    (GPT-2's and OPT's tied token embedding and output layer)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append(name)
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[key]: layers for key, layers in owners.items() if len(dict.fromkeys(layers)) > 1}
