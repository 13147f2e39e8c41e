"""Greedy extraction: does plain decoding after the prefix reproduce the secret?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .scoring import (
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    forward_with_cache,
    model_device,
)


@dataclass(frozen=True)
class Extraction:
    text: str  # the k generated tokens, decoded
    token_ids: list[int]
    matches: bool | None  # generated tokens == the secret's digit tokens (None: no secret given)


def greedy_extract(
    model: torch.nn.Module,
    prefix_ids: Sequence[int],
    k: int,
    digit_token_ids: Sequence[int],
    secret: str | None = None,
    tokenizer: Any | None = None,
    device: torch.device | str | None = None,
) -> Extraction:
    """Greedy decoding (argmax over the FULL vocabulary) of k tokens after the prefix.

    Unrestricted on purpose: this is what a user querying the model gets, so a match means the
    secret is extractable by plain decoding. Restricting to digits would tell the attacker the
    format and ask a different question, how high the secret ranks among digit strings, which
    exposure already answers. Non-digit tokens are decoded with the tokenizer when given, else
    shown as ``<id>``; ``matches`` compares token ids, not text.
    """
    device = model_device(model, device)
    digit_ids = digit_id_tensor(digit_token_ids, device)
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    generated: list[int] = []
    with eval_mode(model):
        past, position = None, 0
        for _ in range(k):
            logits, past = forward_with_cache(model, ids, past, position)
            position += ids.shape[1]
            ids = logits[:, -1].argmax(dim=-1, keepdim=True)
            generated.append(int(ids))
    digit_of = {int(t): str(d) for d, t in enumerate(digit_ids.tolist())}
    if all(t in digit_of for t in generated):
        text = "".join(digit_of[t] for t in generated)
    elif tokenizer is not None:
        text = tokenizer.decode(generated)
    else:
        text = "".join(digit_of.get(t, f"<{t}>") for t in generated)
    matches = None
    if secret is not None:
        wanted = [int(digit_ids[d]) for d in digits_tensor(secret)[0].tolist()]
        matches = generated == wanted
    return Extraction(text=text, token_ids=generated, matches=matches)
