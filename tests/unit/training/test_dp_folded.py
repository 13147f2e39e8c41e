"""The folded DP-SGD route's parts (training/dp_folded.py): per-sample gradients of linear
layers from batch-first or packed inputs against a loop of single-example products, and its
optimizer's clip factors against Opacus's on the undivided gradients."""

from __future__ import annotations

import pytest
import torch
from opacus.optimizers import DPOptimizer
from transformers.pytorch_utils import Conv1D
from unlearnbench.training.dp_folded import FoldedDPOptimizer, matmul_layer_samples

LENGTHS = [2, 5, 1, 7]  # predicted tokens per sequence: real rows of a (4, 7, .) padded batch


def padded_and_packed(width: int, gen: torch.Generator):
    """A right-padded (batch, 7, width) tensor, zero on padding, and its real rows packed."""
    padded = torch.zeros(len(LENGTHS), max(LENGTHS), width)
    for b, n in enumerate(LENGTHS):
        padded[b, :n] = torch.randn(n, width, generator=gen)
    return padded, torch.cat([padded[b, :n] for b, n in enumerate(LENGTHS)])


def loop_reference(layer, inputs, backprops):
    """Each sequence's gradient by autograd on that sequence alone: sum_t g_t . d out_t."""
    grads = []
    for a, g in zip(inputs, backprops, strict=True):
        layer.zero_grad()
        (layer(a) * g).sum().backward()
        grads.append({p: p.grad.clone() for p in layer.parameters()})
    return grads


@pytest.mark.parametrize("layer_type", ["linear", "conv1d"])
@pytest.mark.parametrize("packed", [False, True])
def test_per_sample_gradients_equal_a_loop_over_sequences(layer_type, packed):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 5) if layer_type == "linear" else Conv1D(5, 3)
    gen = torch.Generator().manual_seed(1)
    a_padded, a_packed = padded_and_packed(3, gen)
    g_padded, g_packed = padded_and_packed(5, gen)
    rows = LENGTHS
    if packed:
        got = matmul_layer_samples(layer, [a_packed], g_packed, rows)
    else:
        got = matmul_layer_samples(layer, [a_padded], g_padded, None)
    expected = loop_reference(layer, a_padded, g_padded)
    for p in layer.parameters():
        assert got[p].shape == (len(LENGTHS), *p.shape)
        for b, reference in enumerate(expected):
            assert torch.allclose(got[p][b], reference[p], atol=1e-6), (p.shape, b)


def test_frozen_parameters_get_no_per_sample_gradient():
    layer = torch.nn.Linear(3, 5)
    layer.weight.requires_grad_(False)
    got = matmul_layer_samples(layer, [torch.randn(2, 4, 3)], torch.randn(2, 4, 5), None)
    assert list(got) == [layer.bias]


def test_an_input_of_neither_layout_is_refused():
    rows = LENGTHS
    with pytest.raises(RuntimeError, match=r"neither the batch \(4\) nor its packed tokens \(15\)"):
        matmul_layer_samples(torch.nn.Linear(3, 5), [torch.randn(9, 3)], torch.randn(9, 5), rows)


def clipped_sum(optimizer_class, samples, scale):
    param = torch.nn.Parameter(torch.zeros(samples.shape[1:]))
    optimizer = optimizer_class(
        torch.optim.SGD([param], lr=1.0), noise_multiplier=0.0, max_grad_norm=0.5,
        expected_batch_size=len(samples), loss_reduction="mean",
    )  # fmt: skip
    if optimizer_class is FoldedDPOptimizer:
        optimizer.sample_scale = scale
    param.grad_sample = samples
    optimizer.clip_and_accumulate()
    return param.summed_grad


def test_folded_clipping_equals_opacus_on_the_undivided_gradients():
    """Some examples above the clipping bound, some below: the factors differ per example."""
    gen = torch.Generator().manual_seed(2)
    samples = (
        torch.randn(6, 4, 3, generator=gen)
        * torch.tensor([0.01, 0.05, 1, 2, 0.02, 3])[:, None, None]
    )
    batch = 6.0
    folded = clipped_sum(FoldedDPOptimizer, samples / batch, batch)
    opacus = clipped_sum(DPOptimizer, samples, 1.0)
    assert torch.allclose(folded, opacus, rtol=1e-6, atol=1e-7)
