"""Per-sample gradients without the gradients nobody reads: ``train_dp.grad_sample_mode: lean``.

In Opacus's ``hooks`` mode the backward pass computes every parameter's batch gradient, then
the hooks compute every parameter's per-sample gradients from the layer's saved input and output
gradient, and DP-SGD overwrites the batch gradient with the clipped, noised sum: the batch
gradient (a third of the backward pass's matmuls) is computed for nothing. Here the trained
parameters are frozen while the forward pass builds the graph, so autograd records no edge to
them and the backward pass computes only the gradients flowing between layers; plain tensor
hooks on each layer's output collect those, and Opacus's own per-layer rules (the same
functions its hooks call, in the same order, on the same inputs scaled the same way) turn them
into per-sample gradients. The result is bitwise Opacus's ``hooks`` mode (tested), faster.

A tied embedding (GPT-2's and OPT's token embedding is the output layer's weight) gets the
output layer's per-sample gradient first, (batch, vocabulary, width); Opacus then builds the
embedding's own as another tensor of that size, all zeros but the rows of the tokens each
sequence holds, and adds the two. Here those rows are summed in a compact tensor, by the same
scatter in the same order, and added to the output layer's rows alone: the same numbers,
without two passes over the largest tensor of the step.

``folded=True`` (the ``folded`` route, dp_folded.py) skips Opacus's "mean" reduction (the
stored per-sample gradients are the true ones divided by the batch size; the route's optimizer
puts the factor into the clip factors), forms linear layers' per-sample gradients sequence by
sequence, and accepts an output layer run on the real positions only (``rows``).

A layer whose output would not require a gradient (an embedding of frozen weights) is given
a leaf output that does, so the backward pass starts there and reaches every layer above.
Layer types without an Opacus rule are refused (``hooks`` and ``functorch`` fall back to a
per-layer functorch pass for those).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from opacus.grad_sample import GradSampleModule

from .dp_folded import FOLDED_RULES
from .dp_layers import without_padding_row  # importing dp_layers registers GPT-2's/OPT's rules


def _layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The layers that hold trained parameters directly (Opacus's unit of per-sample work)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if any(p.requires_grad for p in module.parameters(recurse=False))
    ]


class LeanGradSampler:
    """Attach to ``model``; then per step: ``with sampler.forward(): loss = ...``, then
    ``loss.backward()`` and ``sampler.collect()`` to set each trained parameter's
    ``grad_sample`` (batch, *shape). ``remove()`` detaches it. With ``folded=True`` each
    ``grad_sample`` is the per-sample gradient divided by ``batch_size`` (the last step's), as
    the batch loss's mean leaves it, and ``rows`` (predicted tokens per sequence) may be set
    during the step for a layer that sees the packed real positions."""

    def __init__(self, model: torch.nn.Module, key: str = "train_dp", folded: bool = False) -> None:
        rules = GradSampleModule.GRAD_SAMPLERS
        layers = _layers(model)
        unknown = sorted({type(m).__name__ for _, m in layers if type(m) not in rules})
        if unknown:
            raise ValueError(
                f"{key}.grad_sample_mode: 'lean' has no per-sample gradient rule for the "
                f"layer types {unknown}; use 'hooks' or 'vmap', which handle any layer"
            )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.folded = folded
        self.batch_size = 0
        self.rows: list[int] | None = None
        self._capturing = False
        self._inputs: dict[torch.nn.Module, list[list[torch.Tensor]]] = {}
        self._samples: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._save) for _, module in layers]

    @contextmanager
    def forward(self) -> Iterator[None]:
        """The forward pass of one step: trained parameters frozen, layer inputs saved."""
        self._inputs.clear()
        self._samples.clear()
        self.rows = None
        self._capturing = True
        for p in self.params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            self._capturing = False
            # The graph is built without edges to the parameters; restoring the flag now lets
            # the per-layer rules (which skip frozen parameters) see them as trained.
            for p in self.params:
                p.requires_grad_(True)

    def _save(self, module, inputs, output):
        if not self._capturing:
            return None
        self._inputs.setdefault(module, []).append([t.detach() for t in inputs])
        if not output.requires_grad:
            output = output.detach().requires_grad_()  # the backward pass starts here
        output.register_hook(functools.partial(self._per_sample, module))
        return output

    def _per_sample(self, module, grad_output: torch.Tensor) -> None:
        inputs = self._inputs[module].pop()
        backprops = grad_output.detach()
        if self.folded:
            self.batch_size = len(self.rows) if self.rows is not None else backprops.shape[0]
        else:
            # Opacus's "mean" reduction (GradSampleHooks.rearrange_grad_samples): the loss is
            # a mean over the batch, so each row's gradient is scaled back by the batch size.
            self.batch_size = backprops.shape[0]
            backprops = backprops * self.batch_size
        if isinstance(module, torch.nn.Embedding) and module.weight in self._samples:
            _add_embedding_rows(self._samples[module.weight], module, inputs[0], backprops)
            return
        if self.folded and type(module) in FOLDED_RULES:
            samples = FOLDED_RULES[type(module)](module, inputs, backprops, self.rows)
        else:
            samples = GradSampleModule.GRAD_SAMPLERS[type(module)](module, inputs, backprops)
        for param, sample in samples.items():
            if param in self._samples:  # a tied parameter: summed as Opacus sums it
                self._samples[param] += sample
            else:
                self._samples[param] = sample

    def collect(self) -> None:
        """After ``loss.backward()``: each trained parameter's ``grad_sample``."""
        missing = [i for i, p in enumerate(self.params) if p not in self._samples]
        if missing:
            raise RuntimeError(
                f"no per-sample gradient for {len(missing)} trained parameters (indices "
                f"{missing[:5]}): the loss does not depend on them"
            )
        for p in self.params:
            p.grad_sample = self._samples.pop(p)
        self._inputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()
        self._samples.clear()


def _add_embedding_rows(
    samples: torch.Tensor, layer: torch.nn.Embedding, ids: torch.Tensor, backprops: torch.Tensor
) -> None:
    """Add an embedding's per-sample gradients to ``samples`` (batch, vocabulary, width) in
    place, exactly as Opacus's rule would (dp_layers.embedding_grad_sample, then +=), touching
    only the rows each sequence looks up."""
    batch, vocab, width = samples.shape
    backprops = without_padding_row(layer, [ids], backprops).reshape(batch, -1, width)
    ids = ids.reshape(batch, -1)
    keys = ids + vocab * torch.arange(batch, device=ids.device).unsqueeze(1)
    unique, inverse = torch.unique(keys, return_inverse=True)  # sorted: sequence by sequence
    first = torch.searchsorted(unique, vocab * torch.arange(batch, device=ids.device))
    slot = inverse - first.unsqueeze(1)  # a token's place among its sequence's distinct tokens
    # Opacus's scatter (dim 1, the same sources in the same order), into one slot per distinct
    # token instead of one row per vocabulary entry: each row's sum is bitwise the same.
    sums = torch.zeros(batch, ids.shape[1], width, dtype=backprops.dtype, device=ids.device)
    sums.scatter_add_(1, slot.unsqueeze(-1).expand(-1, -1, width), backprops)
    owner = torch.div(unique, vocab, rounding_mode="floor")
    place = torch.arange(len(unique), device=ids.device) - first[owner]
    rows = sums[owner, place].to(samples.dtype)
    # One addition per (sequence, token): samples[b, token] + its sum, as Opacus's += gives.
    samples.index_put_((owner, unique - owner * vocab), rows, accumulate=True)
