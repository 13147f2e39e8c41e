"""A one-block GPT-2 without dropout, shared by the evaluation tests (language, membership)."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, PAD = 50, 0  # PAD stands for <|endoftext|>: the pad id is the eos id (ScoringData.pad_id)


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=VOCAB,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=PAD, eos_token_id=PAD,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()
