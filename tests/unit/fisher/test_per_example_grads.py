"""Per-example gradients: loop vs vmap vs plain backward passes on a tiny GPT-2."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from unlearnbench.fisher.per_example_grads import (
    layout_blocks,
    parameter_layout,
    per_example_gradients,
)
from unlearnbench.lm_data import IGNORE_INDEX

VOCAB, LENGTH = 64, 12


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=VOCAB,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)  # default dropout 0.1: the code must switch it off


def tokens(m: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (m, LENGTH), generator=torch.Generator().manual_seed(seed))


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Five sequences: full, right-padded (two lengths), left-padded, full."""
    ids = tokens(5)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    mask[3, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


def flat_grad(model, layout) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[s.name].grad.reshape(-1) for s in layout])


def test_layout_counts_tied_embedding_once(model):
    layout = parameter_layout(model)
    unique = sum(p.numel() for p in model.parameters())  # parameters() deduplicates too
    assert layout[-1].stop == unique
    assert "lm_head.weight" not in [s.name for s in layout]
    assert layout_blocks(layout)[0] == (0, layout[0].stop)
    alias = parameter_layout(model, ["lm_head.weight", "transformer.wte.weight"])
    assert [s.name for s in alias] == ["transformer.wte.weight"]
    with pytest.raises(ValueError, match="unknown parameter"):
        parameter_layout(model, ["no.such.weight"])


def test_loop_row_equals_plain_backward(model):
    ids = tokens(3)
    grads = per_example_gradients(model, ids, method="loop", progress=False)
    layout = parameter_layout(model)
    model.eval()
    for i in range(3):
        model.zero_grad()
        model(input_ids=ids[i : i + 1], labels=ids[i : i + 1]).loss.backward()
        torch.testing.assert_close(grads[i], flat_grad(model, layout), rtol=1e-5, atol=1e-7)
    model.zero_grad()


def test_rows_sum_to_m_times_batch_mean_gradient(model):
    ids = tokens(4, seed=1)  # equal lengths: the batch token-mean is the mean of sequence means
    grads = per_example_gradients(model, ids, method="loop", progress=False)
    model.eval()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    expected = 4 * flat_grad(model, parameter_layout(model))
    torch.testing.assert_close(grads.sum(dim=0), expected, rtol=1e-4, atol=1e-6)
    model.zero_grad()


def test_padding_does_not_change_a_gradient(model):
    ids, mask = padded_batch()
    batch = per_example_gradients(model, ids, mask, method="loop", progress=False)
    for i in range(5):
        real = ids[i, mask[i].bool()][None]
        alone = per_example_gradients(model, real, method="loop", progress=False)[0]
        torch.testing.assert_close(batch[i], alone, rtol=1e-5, atol=1e-7)


def test_vmap_equals_loop(model):
    ids, mask = padded_batch()
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[0, 3:6] = IGNORE_INDEX  # labels can drop real tokens too
    names = ["transformer.h.1.mlp.c_fc.weight", "lm_head.weight", "transformer.ln_f.bias"]
    for parameter_names in (None, names):
        kwargs = dict(parameter_names=parameter_names, progress=False)
        loop = per_example_gradients(model, ids, mask, labels, method="loop", **kwargs)
        vmapped = per_example_gradients(
            model, ids, mask, labels, method="vmap", chunk_size=2, **kwargs
        )
        torch.testing.assert_close(vmapped, loop, rtol=1e-4, atol=1e-6)


def test_parameter_subset_is_columns_of_the_full_gradient(model):
    ids = tokens(2)
    full = per_example_gradients(model, ids, progress=False)
    every = {s.name: s for s in parameter_layout(model)}
    names = ["transformer.h.0.attn.c_attn.bias", "lm_head.weight"]
    subset_layout = parameter_layout(model, names)
    with torch.no_grad():  # an evaluation context of the caller must not break it
        subset = per_example_gradients(model, ids, parameter_names=names, progress=False)
    for s in subset_layout:
        source = every[s.name]
        torch.testing.assert_close(subset[:, s.start : s.stop], full[:, source.start : source.stop])


def test_buffer_mode_and_attention_are_restored(model):
    ids = tokens(3)
    out = torch.full((3, parameter_layout(model)[-1].stop), float("nan"))
    model.train()
    attention = model.config._attn_implementation
    result = per_example_gradients(model, ids, method="vmap", out=out, progress=False)
    assert result is out and torch.isfinite(out).all()
    assert model.training and all(m.training for m in model.modules())
    assert model.config._attn_implementation == attention
    model.eval()


def test_bad_arguments(model):
    ids = tokens(2)
    with pytest.raises(ValueError, match="known methods"):
        per_example_gradients(model, ids, method="fast")
    with pytest.raises(ValueError, match="no target token"):
        per_example_gradients(model, ids, torch.tensor([[1] + [0] * (LENGTH - 1)] * 2))
    with pytest.raises(ValueError, match="shape"):
        per_example_gradients(model, ids, out=torch.empty(3, 5))
    model.transformer.ln_f.bias.requires_grad_(False)
    try:
        with pytest.raises(ValueError, match="frozen"):
            per_example_gradients(model, ids, parameter_names=["transformer.ln_f.bias"])
        assert "transformer.ln_f.bias" not in [s.name for s in parameter_layout(model)]
    finally:
        model.transformer.ln_f.bias.requires_grad_(True)
