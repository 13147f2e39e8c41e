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
  (``rows``: predicted tokens per sequence), one matmul per sequence.

The step is Opacus's up to float rounding (tested against single-example backward passes and a
loop over examples), not bitwise: sums run in another order. Same config, same bits on a CPU.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from transformers.pytorch_utils import Conv1D


def _matmul_samples(
    inputs: torch.Tensor, backprops: torch.Tensor, rows: torch.Tensor | None, stored_in_out: bool
) -> torch.Tensor:
    """Per-sample sums over positions of outer products: (batch, out, in), or (batch, in, out)
    for a weight stored (in, out). Batch-first inputs (batch, ..., in), or packed (tokens, in)
    with ``rows`` tokens per sample, in sample order."""
    if rows is not None and inputs.dim() == 2 and inputs.shape[0] == int(rows.sum()):
        a_parts, g_parts = inputs.split(rows.tolist()), backprops.split(rows.tolist())
    elif rows is None or inputs.shape[0] == len(rows):
        batch = inputs.shape[0]
        a_parts = inputs.reshape(batch, -1, inputs.shape[-1]).unbind()
        g_parts = backprops.reshape(batch, -1, backprops.shape[-1]).unbind()
    else:
        raise RuntimeError(
            f"folded DP-SGD: a layer's input has {inputs.shape[0]} rows, neither the batch "
            f"({len(rows)}) nor its packed tokens ({int(rows.sum())}); use grad_sample_mode: lean"
        )
    shape = (inputs.shape[-1], backprops.shape[-1]) if stored_in_out else None
    shape = shape or (backprops.shape[-1], inputs.shape[-1])
    samples = inputs.new_empty((len(a_parts), *shape), dtype=backprops.dtype)
    for out, a, g in zip(samples, a_parts, g_parts, strict=True):
        a = a.to(g.dtype)
        torch.mm(a.t(), g, out=out) if stored_in_out else torch.mm(g.t(), a, out=out)
    return samples


def _bias_samples(backprops: torch.Tensor, rows: torch.Tensor | None, batch: int) -> torch.Tensor:
    if rows is not None and backprops.dim() == 2 and backprops.shape[0] == int(rows.sum()):
        owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), rows)
        sums = backprops.new_zeros(len(rows), backprops.shape[-1])
        return sums.index_add_(0, owner.to(backprops.device), backprops)
    return backprops.reshape(batch, -1, backprops.shape[-1]).sum(dim=1)


def matmul_layer_samples(
    layer: torch.nn.Module,
    activations: list[torch.Tensor],
    backprops: torch.Tensor,
    rows: torch.Tensor | None,
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients of an ``nn.Linear`` or transformers' ``Conv1D`` (weight stored
    (in, out)), for the trained parameters only, as Opacus's rules return them."""
    inputs = activations[0]
    grads = {}
    if layer.weight.requires_grad:
        in_out = isinstance(layer, Conv1D)
        grads[layer.weight] = _matmul_samples(inputs, backprops, rows, stored_in_out=in_out)
    if layer.bias is not None and layer.bias.requires_grad:
        batch = len(rows) if rows is not None else inputs.shape[0]
        grads[layer.bias] = _bias_samples(backprops, rows, batch)
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
