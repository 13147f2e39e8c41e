"""The LM objective over a set of sequences: its value and its gradient, in bounded batches.

L(S) is the mean next-token loss over all real tokens of S (``lm_data.mean_loss`` over the
whole set, the training objective), computed batch by batch so that a large forget set or
retain sample never has to fit in one forward pass. Batches are taken in the given order and
summed in that order: the result is a deterministic function of the weights and the sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..fisher.per_example_grads import flat_dim, parameter_layout
from ..lm_data import collate, token_losses

BATCH = 32


def _batches(sequences: Sequence[Sequence[int]], batch_size: int):
    for lo in range(0, len(sequences), batch_size):
        yield sequences[lo : lo + batch_size]


def predicted_tokens(sequences: Sequence[Sequence[int]]) -> int:
    return sum(max(len(s) - 1, 0) for s in sequences)


def _check(sequences: Sequence[Sequence[int]], what: str) -> int:
    count = predicted_tokens(sequences)
    if count == 0:
        raise ValueError(f"{what}: no sequence with a token to predict (the set is empty)")
    return count


def mean_lm_loss(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = BATCH,
    what: str = "loss",
) -> float:
    """L(S) in nats at the current weights (no autograd; the model's mode is restored)."""
    count = _check(sequences, what)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for rows in _batches(sequences, batch_size):
                loss, _ = token_losses(model, collate(rows, pad_id).to(_device(model)))
                total += float(loss.double().sum())
    finally:
        model.train(was_training)
    return total / count


def lm_loss_gradient(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = BATCH,
    what: str = "forget set",
) -> tuple[torch.Tensor, float]:
    """(grad L(S) flattened in ``parameter_layout`` order as float32, L(S)) at the current
    weights. Each batch contributes grad(sum of its token losses) / (tokens of all of S)."""
    count = _check(sequences, what)
    layout = parameter_layout(model)
    named = dict(model.named_parameters())
    tensors = [named[s.name] for s in layout]
    grad = torch.zeros(flat_dim(layout), dtype=torch.float32, device=_device(model))
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for rows in _batches(sequences, batch_size):
                loss, _ = token_losses(model, collate(rows, pad_id).to(_device(model)))
                summed = loss.sum()
                total += float(summed.detach().double())
                parts = torch.autograd.grad(summed / count, tensors)
                for s, g in zip(layout, parts, strict=True):
                    grad[s.start : s.stop] += g.reshape(-1).float()
    finally:
        model.train(was_training)
    return grad, total / count


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class BatchCycle:
    """Rows of a set in batches, cycling through it in a fresh seeded order every pass (the
    order of gradient ascent's Algorithm 1); ``order_of(pass)`` gives the permutation."""

    def __init__(self, n: int, batch_size: int, order_of) -> None:
        if n < 1:
            raise ValueError("unlearn: a set to draw batches from is empty")
        self.n, self.batch_size, self.order_of = n, batch_size, order_of
        self.order: list[int] = []
        self.position = 0
        self.passes = 0

    def next(self) -> list[int]:
        if self.position >= len(self.order):
            self.order = self.order_of(self.passes)
            self.position, self.passes = 0, self.passes + 1
        rows = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return rows


def sequence_log_probs(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """log p(sequence) (summed token log-probabilities) of each sequence, with autograd."""
    loss, _ = token_losses(model, collate(list(sequences), pad_id).to(_device(model)))
    return -loss


def flat_gradient(model: torch.nn.Module, scalar: torch.Tensor) -> torch.Tensor:
    """d scalar / d theta, flattened in ``parameter_layout`` order (float32)."""
    layout = parameter_layout(model)
    named = dict(model.named_parameters())
    parts = torch.autograd.grad(scalar, [named[s.name] for s in layout])
    return torch.cat([g.reshape(-1).float() for g in parts])
