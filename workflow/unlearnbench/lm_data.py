"""Examples as language-model sequences: one text = one sequence, the same everywhere.

Training, per-example gradients (Fisher), perplexity and exposure must all see a text as the
same token sequence, or a canary's exposure would be measured on a context it was never
trained in. Every sequence is ``<|endoftext|> + tokens(text) + <|endoftext|>``, cut to the
model's context. The leading separator matters for canaries: the model learns the secret after
"<|endoftext|> my pin code is", so exposure conditions on ``sequence_prefix_ids(prefix)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # label value that cross-entropy skips (padding)


@dataclass(frozen=True)
class Batch:
    """Right-padded sequences with explicit positions (Opacus needs per-sample position_ids)."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real token
    labels: torch.Tensor  # (B, T) int64, IGNORE_INDEX on padding

    @property
    def position_ids(self) -> torch.Tensor:
        batch, length = self.input_ids.shape
        return torch.arange(length, device=self.input_ids.device).repeat(batch, 1)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels)))


def sequence_ids(tokenizer, text: str, max_length: int) -> list[int]:
    eos = tokenizer.eos_token_id
    ids = [eos, *tokenizer.encode(text, add_special_tokens=False), eos]
    return ids[:max_length]


def sequence_prefix_ids(tokenizer, prefix: str) -> list[int]:
    """The context a canary's secret follows in training: separator + prefix tokens."""
    return [tokenizer.eos_token_id, *tokenizer.encode(prefix, add_special_tokens=False)]


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return [sequence_ids(tokenizer, text, max_length) for text in texts]


def collate(sequences: Sequence[Sequence[int]], pad_id: int) -> Batch:
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    labels = input_ids.masked_fill(attention == 0, IGNORE_INDEX)
    return Batch(input_ids, attention, labels)


# Model types whose logits are exactly ``get_output_embeddings()(base_model(...)[0])`` (no
# logit scaling or soft-capping between the two), so the head may skip padded positions.
HEAD_ON_BASE_OUTPUT = frozenset({"gpt2", "opt"})


def _skips_padding(model) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in HEAD_ON_BASE_OUTPUT


def token_losses(
    model, batch: Batch, skip_padding: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed next-token loss (nats) and predicted-token counts, shape (B,).

    With ``skip_padding`` (and a model type in HEAD_ON_BASE_OUTPUT) the output layer and the
    softmax run on real positions only: at a 4k vocabulary they are most of a small model's
    step, and right-padding to the longest sequence wastes a third of them. The result equals
    the full computation up to float rounding. Opacus's per-sample hooks need the (B, T, .)
    layout at every layer, so DP-SGD passes ``skip_padding=False``.
    """
    # Position t predicts token t+1; the last position predicts nothing (ignored).
    ignore = torch.full_like(batch.labels[:, :1], IGNORE_INDEX)
    targets = torch.cat([batch.labels[:, 1:], ignore], dim=1)
    mask = targets != IGNORE_INDEX
    if skip_padding and _skips_padding(model):
        hidden = model.base_model(**batch.model_inputs()).last_hidden_state
        logits = model.get_output_embeddings()(hidden[mask])
        losses = torch.nn.functional.cross_entropy(logits.float(), targets[mask], reduction="none")
        rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)
        total = torch.zeros(mask.shape[0], dtype=losses.dtype, device=losses.device)
        return total.index_add(0, rows[mask], losses), mask.sum(dim=1)
    logits = model(**batch.model_inputs()).logits
    # Scoring the logits in place as (tokens, vocab) avoids copying them: a sliced or
    # transposed (B, V, T) layout made the loss half of a CPU training step.
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return (losses * mask).sum(dim=1), mask.sum(dim=1)


def mean_loss(model, batch: Batch) -> torch.Tensor:
    """Mean next-token loss over all real tokens of the batch (the training objective)."""
    total, count = token_losses(model, batch)
    return total.sum() / count.sum().clamp(min=1)
