"""Sequence losses: skipping padded positions at the output layer changes nothing but speed."""

from __future__ import annotations

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM
from unlearnbench.lm_data import collate, token_losses
from unlearnbench.models import ModelConfig, build_model

VOCAB, EOS = 60, 0


def gpt2():
    return build_model(ModelConfig(n_layer=2, n_embd=16, n_head=2, n_positions=32), VOCAB, EOS, 3)


def opt():
    torch.manual_seed(3)
    config = OPTConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        ffn_dim=32,
        num_attention_heads=2,
        max_position_embeddings=32,
        word_embed_proj_dim=8,
        dropout=0.0,
        pad_token_id=EOS,
    )  # word_embed_proj_dim < hidden_size: the decoder's project_out sits before the head
    return OPTForCausalLM(config).eval()


def ragged_batch():
    gen = torch.Generator().manual_seed(7)
    lengths = [3, 17, 9, 2, 25]  # very different lengths: most of the batch is padding
    return collate(
        [[EOS, *torch.randint(1, VOCAB, (n,), generator=gen).tolist()] for n in lengths], EOS
    )


def reference_losses(model, batch):
    """The obvious computation: full logits at every position, then mask."""
    logits = model(**batch.model_inputs()).logits
    targets = batch.labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )
    return per_token.sum(dim=1), (targets != -100).sum(dim=1)


@pytest.mark.parametrize("make", [gpt2, opt], ids=["gpt2", "opt"])
def test_skipping_padding_equals_full_logits(make):
    model, batch = make(), ragged_batch()
    grads = []
    for skip in (True, False):
        model.zero_grad()
        total, count = token_losses(model, batch, skip_padding=skip)
        want_total, want_count = reference_losses(model, batch)
        torch.testing.assert_close(total, want_total, rtol=1e-5, atol=1e-5)
        assert torch.equal(count, want_count)
        total.sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for fast, full in zip(*grads, strict=True):
        torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-6)


def test_unknown_model_type_takes_the_full_path():
    class Scaled(torch.nn.Module):
        """A causal LM whose logits are NOT the head applied to the base output."""

        def __init__(self):
            super().__init__()
            self.inner = gpt2()
            self.config = self.inner.config.__class__(**self.inner.config.to_dict())
            self.config.model_type = "scaled"

        def forward(self, **inputs):
            out = self.inner(**inputs)
            out.logits = out.logits * 0.5
            return out

    model, batch = Scaled(), ragged_batch()
    total, _ = token_losses(model, batch)
    torch.testing.assert_close(total, reference_losses(model, batch)[0], rtol=1e-5, atol=1e-5)
