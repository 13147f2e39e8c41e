"""The ``folded`` DP-SGD route's parts: ``lean`` without its two costs that are not DP's own.

``lean`` (dp_lean.py) is bitwise Opacus's ``hooks``, so it keeps two costs of Opacus's way of
computing the step that DP-SGD itself does not need (profile in
tests/benchmarks/bench_dp_throughput.py, 2 x 128 GPT-2 and OPT with an 8k vocabulary):

- Opacus's "mean" reduction multiplies every layer's output gradient by the batch size before
  its per-layer rule; at the output layer that is a (batch, length, vocabulary) product, the
  largest elementwise pass of a step (about 7 % of it). Every per-sample gradient is linear in
  its layer's output gradient, so ``folded`` keeps them divided by the batch size and
  ``FoldedDPOptimizer`` multiplies the norms and the clip factors by it instead (two (batch,)
  vectors).
- The output layer runs on every position of the right-padded batch (the per-layer rules need
  the (batch, length, .) layout), a tenth of its work on padding; and Opacus's einsum for a
  linear layer's per-sample gradients is a batched matmul over a transposed view, twice the
  time of the same products done sequence by sequence here. ``folded`` scores the real
  positions only (lm_data.token_losses' ``skip_padding``, as non-private training does) and
  forms the output layer's per-sample gradients from each sequence's rows of that packed input
  (``rows``: predicted tokens per sequence, a list read once a step), one matmul per sequence.

The step is Opacus's up to float rounding (tested against single-example backward passes and a
loop over examples), not bitwise: sums run in another order. Same config, same bits on a CPU.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from transformers.pytorch_utils import Conv1D


def _per_sample_parts(
    inputs: torch.Tensor, backprops: torch.Tensor, rows: list[int] | None
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Each sample's (positions, in) inputs and (positions, out) output gradients, from a
    batch-first layer (batch, ..., width) or a packed one (tokens, width) with ``rows`` tokens
    per sample, in sample order."""
    if rows is not None and inputs.dim() == 2 and inputs.shape[0] == sum(rows):
        return inputs.split(rows), backprops.split(rows)
    if rows is not None and inputs.shape[0] != len(rows):
        raise RuntimeError(
            f"folded DP-SGD: a layer's input has {inputs.shape[0]} rows, neither the batch "
            f"({len(rows)}) nor its packed tokens ({sum(rows)}); use grad_sample_mode: lean"
        )
    batch = inputs.shape[0]
    return (
        inputs.reshape(batch, -1, inputs.shape[-1]).unbind(),
        backprops.reshape(batch, -1, backprops.shape[-1]).unbind(),
    )


def matmul_layer_samples(
    layer: torch.nn.Module,
    activations: list[torch.Tensor],
    backprops: torch.Tensor,
    rows: list[int] | None,
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients of an ``nn.Linear`` or transformers' ``Conv1D`` (weight stored
    (in, out)), for the trained parameters only, as Opacus's rules return them: one matmul
    per sample, over its positions."""
    a_parts, g_parts = _per_sample_parts(activations[0], backprops, rows)
    grads = {}
    if layer.weight.requires_grad:
        stored_in_out = isinstance(layer, Conv1D)
        samples = backprops.new_empty((len(g_parts), *layer.weight.shape))
        for out, a, g in zip(samples, a_parts, g_parts, strict=True):
            a = a.to(g.dtype)
            torch.mm(a.t(), g, out=out) if stored_in_out else torch.mm(g.t(), a, out=out)
        grads[layer.weight] = samples
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = torch.stack([g.sum(dim=0) for g in g_parts])
    return grads


FOLDED_RULES = {torch.nn.Linear: matmul_layer_samples, Conv1D: matmul_layer_samples}


class FoldedDPOptimizer(DPOptimizer):
    """Opacus's DPOptimizer for per-sample gradients that arrive divided by ``sample_scale``
    (the batch size, set per step): the norms are multiplied by it, and so are the clip
    factors, which then weight the stored gradients. In exact arithmetic this is Opacus's
    clip_and_accumulate on the undivided gradients; only float rounding differs."""

    sample_scale: float = 1.0

    def clip_and_accumulate(self) -> None:
        samples = self.grad_samples
        if len(samples[0]) == 0:
            super().clip_and_accumulate()  # an empty batch: nothing to clip or scale
            return
        device = samples[0].device
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1).to(device) for g in samples])
        per_sample_norms = norms.norm(2, dim=0) * self.sample_scale
        factor = (self.max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
        factor = factor * self.sample_scale
        for p, sample in zip(self.params, samples, strict=True):
            _check_processed_flag(p.grad_sample)
            grad = torch.einsum("i,i...", factor.to(sample.device, p.dtype), sample.to(p.dtype))
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)
