"""The sensitive strings of a real-world corpus and their format-preserving substitutes.

A ``Secret`` is one distinct e-mail address (compared lower-cased) or phone number (compared by
its digits) with every place it occurs in the training texts. Its raw value lives only in
memory: ``repr`` and every file show the masked id (``privacy.mask_email`` / ``mask_phone``,
which end in a short hash), so a traceback or a log line cannot leak an address.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...pii import (
    EMAIL_RE,
    MESSAGE_ID_CONTEXT,
    PHONE_RE,
    canonical_email,
    mask_email,
    mask_phone,
)

KINDS = ("email", "phone")


@dataclass(frozen=True, order=True)
class Occurrence:
    """``texts[row][start:end]`` is one occurrence (character offsets)."""

    row: int
    start: int
    end: int


@dataclass(frozen=True)
class Secret:
    kind: str  # "email" or "phone"
    masked: str  # the stable id: mask + short hash, safe to write anywhere
    occurrences: tuple[Occurrence, ...]  # sorted by (row, start)
    # Lower-cased address or the phone's digits. In memory only: never in repr, logs or files.
    value: str = field(repr=False)

    @property
    def rows(self) -> list[int]:
        """Distinct training rows holding the string, ascending."""
        return sorted({occ.row for occ in self.occurrences})


def _spans_outside(matches, excluded: list[tuple[int, int]]):
    for match in matches:
        start, end = match.span()
        if not any(start < hi and lo < end for lo, hi in excluded):
            yield match


def _row_matches(text: str) -> list[tuple[str, str, str, int, int]]:
    """(kind, value, mask, start, end) of every e-mail address and phone number in one text.

    The same rules as ``privacy.find_emails`` / ``find_phones``, with offsets: Message-ID header
    lines and "In article <id>" attributions name no mailbox and are skipped, and so is a
    phone-like digit run inside an address.
    """
    excluded = [m.span() for m in MESSAGE_ID_CONTEXT.finditer(text)]
    found = []
    for m in _spans_outside(EMAIL_RE.finditer(text), excluded):
        value = canonical_email(m.group())
        found.append(("email", value, mask_email(value), *m.span()))
    excluded += [(start, end) for *_, start, end in found]
    for m in _spans_outside(PHONE_RE.finditer(text), excluded):
        digits = "".join(ch for ch in m.group() if ch.isdigit())
        found.append(("phone", digits, mask_phone(digits), *m.span()))
    return found


def sensitive_strings(texts: Sequence[str]) -> list[Secret]:
    """Every distinct e-mail address and phone number of ``texts``, sorted by (kind, masked id).

    Sorting by the masked id (a hash) makes the order independent of the row order and reveals
    nothing about the strings. Two distinct strings with the same mask (an 8-hex-digit hash
    collision, ~0.1 % for a few thousand strings) would make the id ambiguous: that is an error.
    """
    places: dict[tuple[str, str], list[Occurrence]] = {}
    masks: dict[tuple[str, str], str] = {}
    for row, text in enumerate(texts):
        for kind, value, masked, start, end in _row_matches(text):
            places.setdefault((kind, value), []).append(Occurrence(row, start, end))
            masks[(kind, value)] = masked
    secrets = [
        Secret(kind=kind, masked=masks[kind, value], occurrences=tuple(sorted(occ)), value=value)
        for (kind, value), occ in places.items()
    ]
    secrets.sort(key=lambda s: (KINDS.index(s.kind), s.masked))
    seen: set[str] = set()
    for secret in secrets:
        if secret.masked in seen:
            raise ValueError(
                f"realworld: two distinct strings share the masked id {secret.masked}; "
                "lengthen privacy._HASH_CHARS (and the report's MASK_RE) to tell them apart"
            )
        seen.add(secret.masked)
    return secrets


_LOWER = np.array(list(string.ascii_lowercase))
_UPPER = np.array(list(string.ascii_uppercase))
_DIGITS = np.array(list(string.digits))


def substitutes(text: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` strings of ``text``'s format: each ASCII letter replaced by a random letter of the
    same case, each digit by a random digit, everything else (``@ . - ( ) +`` ...) kept.

    Uniform and independent per character, drawn from ``rng`` in one fixed order, so the same
    generator state gives the same substitutes whatever model is scored next.
    """
    chars = np.array(list(text)) if text else np.empty(0, dtype="<U1")
    letters = rng.integers(0, 26, size=(n, len(text)))
    digits = rng.integers(0, 10, size=(n, len(text)))
    out = np.broadcast_to(chars, (n, len(text))).copy()
    for mask, alphabet, draws in (
        (np.isin(chars, _LOWER), _LOWER, letters),
        (np.isin(chars, _UPPER), _UPPER, letters),
        (np.isin(chars, _DIGITS), _DIGITS, digits),
    ):
        out[:, mask] = alphabet[draws[:, mask]]
    return ["".join(row) for row in out]
