"""Candidates as token sequences, for any tokenizer: tokenizing them, and scoring them whole.

A tokenizer that merges digits (GPT-2's byte-level BPE: " 123", "45") gives each candidate
secret its own token sequence. Every estimator then works on *tails*: the tokens of
``separator + encode(prefix + candidate)`` after the context that every scored candidate shares
with the prefix's own tokens (tokens shared by all add the same cost to each, so where exactly
the context ends never changes a rank). Here: ``encode_text`` / ``encode_batch`` (one
tokenization, whatever the tokenizer object), ``candidate_tails`` (a set of candidates as padded
tails after their shared context) and ``score_token_sequences`` (Px of tails, each context +
tail scored as one sequence: the reference the trie walk is checked against, the arbiter of its
near-ties, and the scorer of the extrapolation's samples).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .scoring import digit_log_probs, gather_log_perplexity

# Full-sequence scoring: logits of one batch. Above ~32 MiB every batch's fresh tensors are
# mapped and page-faulted anew (measured: 64 MiB 2x slower than 16 MiB).
# Rows are bounded too: a batch is filled up to its full size even for one tail.
SEQUENCE_LOGITS_BYTES, MIN_SEQUENCE_BATCH, MAX_SEQUENCE_BATCH = 16 << 20, 8, 512


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids from a transformers tokenizer or a raw ``tokenizers.Tokenizer``."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(encoded, "ids", encoded))


def encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """``encode_text`` of each text, through the fast tokenizer's batch call when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    batch = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if batch is None:
        return [encode_text(tokenizer, text) for text in texts]
    return [encoding.ids for encoding in batch(texts, add_special_tokens=False)]


def shared_length(ids: Sequence[int], prefix_ids: Sequence[int]) -> int:
    """How many leading tokens ``ids`` shares with ``prefix_ids``."""
    n = 0
    while n < min(len(ids), len(prefix_ids)) and ids[n] == prefix_ids[n]:
        n += 1
    return n


def candidate_tails(
    tokenizer: Any, separator: Sequence[int], prefix: str, texts: Sequence[str]
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(context, tails, lengths) of candidate ``texts`` (each the secret part after ``prefix``).

    Each candidate is tokenized as the canary text is in training (``separator`` + one encode of
    prefix + candidate); the context is the tokens every one of them shares with ``separator +
    encode(prefix)``; ``tails`` (n, longest) int64 holds the rest, padded with 0.
    """
    prefix_ids = [*separator, *encode_text(tokenizer, prefix)]
    ids = [[*separator, *row] for row in encode_batch(tokenizer, [prefix + t for t in texts])]
    n_context = min(shared_length(row, prefix_ids) for row in ids)
    if not n_context:
        raise ValueError("exposure: the canary prefix is empty; a secret needs a context")
    lengths = torch.tensor([len(row) - n_context for row in ids], dtype=torch.long)
    if bool((lengths <= 0).any()):
        raise ValueError(f"exposure: a candidate after {prefix!r} adds no token")
    tails = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(ids):
        tails[i, : len(row) - n_context] = torch.as_tensor(row[n_context:])
    return prefix_ids[:n_context], tails, lengths


def score_token_sequences(
    model: torch.nn.Module,
    context_ids: Sequence[int],
    sequences: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Px of each tail (row of ``sequences``, its first ``lengths`` tokens) after the context,
    scoring context + tail as one sequence: no cache, no pruning; the reference and the arbiter
    of near-ties, with ``scoring.score_full_sequences``' arithmetic (the same numbers for digit
    tokens). Call it inside ``eval_mode``.

    A tail's Px must not depend on which tails it is scored with (Px(s) alone, near-ties in a
    few, the brute force in all): the matmul kernels round differently for few rows (measured:
    one row, or one to three tails of one token, ~3e-7 nats off). So every forward has the same
    shape for a given tail length: tails of one length are batched together (no padding token
    enters a forward) and the last batch is filled up with copies of its last tail.
    """
    device = next(model.parameters()).device
    context = torch.tensor(list(context_ids), dtype=torch.long, device=device)
    sequences, lengths = torch.as_tensor(sequences), torch.as_tensor(lengths)
    n_context = len(context)
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    vocab = model.config.vocab_size
    out = torch.empty(len(sequences), dtype=torch.float64, device=device)
    for length in torch.unique(lengths).tolist():
        index = torch.nonzero(lengths == length).squeeze(1)
        positions = length if keep else n_context + length
        predicting = torch.arange(n_context - 1, n_context + length - 1, device=device)
        rows_fitting = SEQUENCE_LOGITS_BYTES // (4 * vocab * positions)
        batch = batch_size or min(MAX_SEQUENCE_BATCH, max(MIN_SEQUENCE_BATCH, rows_fitting))
        for start in range(0, len(index), batch):
            rows = index[start : start + batch]
            tail = sequences[rows.cpu(), :length].to(device)
            filled = torch.cat([tail, tail[-1:].expand(batch - len(tail), -1)])
            ids = torch.cat([context.expand(batch, -1), filled], dim=1)
            if keep:  # the output layer only where it predicts a tail token
                step_logits = model(input_ids=ids, logits_to_keep=predicting).logits
            else:
                step_logits = model(input_ids=ids).logits[:, n_context - 1 : -1]
            columns = torch.unique(tail)
            step = digit_log_probs(step_logits, columns)[: len(tail)]
            out[rows.to(device)] = gather_log_perplexity(step, torch.searchsorted(columns, tail))
    return out
