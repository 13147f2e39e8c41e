"""E-mail addresses and phone numbers in text: find, count and mask them.

The real-world corpora (``usenet``, ``credits``) hold real people's addresses. The study reports
how often such strings occur and how well a model memorises them, but tables, logs and reports
show them only masked. ``mask_email`` keeps just enough to tell addresses apart when reading a
report (first character, top-level domain, a short hash), never the address itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# Pragmatic, not RFC 5322: the forms that occur in headers, signatures and AUTHORS files.
# The look-behind stops a match from starting in the middle of a longer token.
EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+$-])"
    r"[A-Za-z0-9][A-Za-z0-9._%+-]*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}"
)

# North-American numbers (the 1993 posts are mostly US) and international "+CC ..." numbers.
PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+?1[-.\s])?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4}"
    r"|\+\d{1,3}(?:[-.\s]\(?\d{1,4}\)?){2,5}"
    r")(?!\w)"
)

# 8 hex digits (32 bits): with a few thousand addresses a collision is unlikely (~0.1 %),
# while the prefix stays short enough to read in a table.
_HASH_CHARS = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def canonical_email(address: str) -> str:
    """Lower-cased: ``strom@Watson.Ibm.Com`` and ``strom@watson.ibm.com`` are one person."""
    return address.strip().lower()


def mask_email(address: str) -> str:
    """``jdoe@cs.cmu.edu`` -> ``j***@***.edu#1a2b3c4d`` (same address, same mask)."""
    canonical = canonical_email(address)
    local, at, domain = canonical.rpartition("@")
    if not at or not local or not domain:
        return f"***#{_digest(canonical)}"
    tld = domain.rsplit(".", 1)[-1]
    return f"{local[0]}***@***.{tld}#{_digest(canonical)}"


def mask_phone(number: str) -> str:
    """Phone numbers keep no digit at all: even the last four narrow a person down."""
    digits = re.sub(r"\D", "", number)
    return f"<phone#{_digest(digits)}>"


def mask_pii(text: str) -> str:
    """``text`` with every e-mail address and phone number replaced by its mask."""
    text = EMAIL_RE.sub(lambda m: mask_email(m.group()), text)
    return PHONE_RE.sub(lambda m: mask_phone(m.group()), text)


# Message-IDs look like addresses (<1993Apr5.174537.1496@watson.ibm.com>) but name no mailbox:
# header lines that hold them, and "In article <id>" attributions, are not counted.
# (Masking still covers them: over-masking is harmless.)
MESSAGE_ID_CONTEXT = re.compile(
    r"^(?:message-id|references|in-reply-to|supersedes):.*(?:\n[ \t].*)*"
    r"|\bin article\s+<[^<>\s]*>",
    re.IGNORECASE | re.MULTILINE,
)


def find_emails(text: str) -> list[str]:
    """E-mail addresses (lower-cased) in ``text``, Message-IDs left out."""
    return [canonical_email(m) for m in EMAIL_RE.findall(MESSAGE_ID_CONTEXT.sub(" ", text))]


def find_phones(text: str) -> list[str]:
    return [re.sub(r"\D", "", m.group()) for m in PHONE_RE.finditer(text)]


def count_pii(texts: Iterable[str]) -> dict[str, int]:
    """Total and unique e-mail addresses and phone-number-like strings in ``texts``."""
    emails: list[str] = []
    phones: list[str] = []
    for text in texts:
        emails.extend(find_emails(text))
        phones.extend(find_phones(text))
    return {
        "emails_total": len(emails),
        "emails_unique": len(set(emails)),
        "phones_total": len(phones),
        "phones_unique": len(set(phones)),
    }
