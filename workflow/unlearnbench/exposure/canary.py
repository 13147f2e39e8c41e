"""A canary as a model sees it: the context its secret follows and how its digits tokenize.

Training puts ``separator`` (the sequence separator, ``lm_data``) before every text, so the
secret follows ``separator + encode(prefix)``: the canary's context. With one token per digit
(``canary_token_ids``: the project's tokenizer) every candidate is k digit tokens after that
context and the digit tree, the digit scorer and the digit extraction apply; a tokenizer that
merges digits (GPT-2's and OPT's BPE) gives each candidate its own tokens, and the estimators
take the trie and token-sequence paths (``Canary.digit_ids`` is None). ``encode_canary`` decides
once per canary; every estimator and the extraction take the result.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .sequences import encode_text


class DigitTokenizationError(ValueError):
    """A canary whose digits are not one token each: the digit tree does not apply to it."""


@dataclass(frozen=True)
class Canary:
    """One canary's text and tokens (``encode_canary``)."""

    prefix: str
    secret: str
    separator: tuple[int, ...]  # tokens before the prefix in training (the sequence separator)
    context_ids: tuple[int, ...]  # separator + prefix tokens: what the secret follows
    digit_ids: tuple[int, ...] | None  # ids of '0'..'9' when each digit is one token, else None

    @property
    def k(self) -> int:
        return sum(ch.isdigit() for ch in self.secret)

    @property
    def space_size(self) -> int:
        return 10**self.k

    @property
    def layout(self) -> str:
        """The secret's format, digits as '#': candidates are every filling of it."""
        return re.sub(r"\d", "#", self.secret)


def encode_canary(
    tokenizer: Any, prefix: str, secret: str, separator: Sequence[int] = ()
) -> Canary:
    """The canary ``prefix + secret`` under ``tokenizer``, its secret after ``separator``."""
    try:
        prefix_ids, digit_ids = canary_token_ids(tokenizer, prefix, secret)
    except DigitTokenizationError:
        prefix_ids, digit_ids = encode_text(tokenizer, prefix), None
    return Canary(
        prefix=prefix,
        secret=secret,
        separator=tuple(separator),
        context_ids=(*separator, *prefix_ids),
        digit_ids=None if digit_ids is None else tuple(digit_ids),
    )


def with_digits(secret: str, digits: str) -> str:
    """``secret`` with its digits replaced by ``digits``, in order (separators kept)."""
    replacements = iter(digits)
    return re.sub(r"\d", lambda _: next(replacements), secret)


def canary_token_ids(tokenizer: Any, prefix: str, secret: str) -> tuple[list[int], list[int]]:
    """(prefix ids, ids of digits '0'..'9') for a canary, checking the one-token-per-digit rule.

    The digit ids are read off the tokenizer in the canary's own context (the secret with every
    digit replaced by d), so separators or word-boundary markers are handled as the tokenizer
    does; the secret with alternating digit pairs (every ordered pair, "1212...") catches pair
    merges that runs of one digit do not. Any candidate that would not tokenise to exactly k
    digit tokens raises ``DigitTokenizationError`` (the digit tree does not apply; ``trie`` does).
    """
    prefix_ids = encode_text(tokenizer, prefix)
    k = sum(ch.isdigit() for ch in secret)
    digit_ids = []
    for d in range(10):
        ids = encode_text(tokenizer, prefix + re.sub(r"\d", str(d), secret))
        tail = ids[len(prefix_ids) :]
        if ids[: len(prefix_ids)] != prefix_ids or len(tail) != k or len(set(tail)) != 1:
            raise DigitTokenizationError(
                f"exposure: canary {prefix + secret!r} does not tokenise as prefix tokens + "
                f"{k} single-digit tokens; the tokenizer must split digits one per token"
            )
        digit_ids.append(tail[0])
    for a, b in itertools.permutations(range(10), 2) if k > 1 else ():
        probe = with_digits(secret, (f"{a}{b}" * k)[:k])
        expected = prefix_ids + [digit_ids[int(ch)] for ch in probe if ch.isdigit()]
        if encode_text(tokenizer, prefix + probe) != expected:
            raise DigitTokenizationError(
                f"exposure: canary {prefix + probe!r} does not tokenise as prefix tokens + "
                f"{k} single-digit tokens; the tokenizer must split digits one per token"
            )
    expected = prefix_ids + [digit_ids[int(ch)] for ch in secret if ch.isdigit()]
    if encode_text(tokenizer, prefix + secret) != expected:
        raise DigitTokenizationError(
            f"exposure: canary {prefix + secret!r} tokenises inconsistently"
        )
    return prefix_ids, digit_ids
