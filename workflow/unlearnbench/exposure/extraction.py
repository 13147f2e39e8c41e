"""Greedy extraction: does plain decoding after the prefix reproduce the secret?

With one token per digit, k tokens are decoded after the canary's context and compared with the
secret's digit tokens (``greedy_extract``); when the tokenizer merges digits, as many tokens as
the secret's own tokenization has are decoded after the tokens it shares with the prefix's own,
and compared with those tokens (``extract_canary`` picks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .canary import Canary
from .scoring import (
    digit_id_tensor,
    digits_tensor,
    eval_mode,
    forward_with_cache,
    model_device,
)
from .sequences import encode_text, shared_length


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
    generated = _greedy(model, prefix_ids, k, device)
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


def _greedy(
    model: torch.nn.Module, context_ids: Sequence[int], n_tokens: int, device: torch.device
) -> list[int]:
    """``n_tokens`` tokens decoded greedily (full-vocabulary argmax) after ``context_ids``."""
    ids = torch.tensor([list(context_ids)], dtype=torch.long, device=device)
    generated: list[int] = []
    with eval_mode(model):
        past, position = None, 0
        for _ in range(n_tokens):
            logits, past = forward_with_cache(model, ids, past, position)
            position += ids.shape[1]
            ids = logits[:, -1].argmax(dim=-1, keepdim=True)
            generated.append(int(ids))
    return generated


def extract_canary(
    model: torch.nn.Module,
    tokenizer: Any,
    canary: Canary,
    device: torch.device | str | None = None,
) -> Extraction:
    """Greedy extraction of ``canary``'s secret under any tokenizer (see the module)."""
    if canary.digit_ids is not None:
        return greedy_extract(
            model, canary.context_ids, canary.k, canary.digit_ids, canary.secret, tokenizer, device
        )
    ids = [*canary.separator, *encode_text(tokenizer, canary.prefix + canary.secret)]
    n_context = shared_length(ids, canary.context_ids)
    wanted = ids[n_context:]
    generated = _greedy(model, ids[:n_context], len(wanted), model_device(model, device))
    return Extraction(tokenizer.decode(generated), generated, generated == wanted)
