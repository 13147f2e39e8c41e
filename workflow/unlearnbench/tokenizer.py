"""The study's tokenizer: a byte-level BPE (GPT-2 style) whose digits are one token each, trained
here (``train_tokenizer``), or a hub model's own tokenizer (``fetch_tokenizer``).

Exposure (Carlini et al. 2019) ranks a canary's secret among all 10^k candidates by the model's
log-perplexity of ``prefix + candidate``. That computation is only cheap and exact if every
candidate is k tokens long and the prefix tokenizes the same whatever digits follow, i.e.

    encode(prefix + "481903") == encode(prefix) + [id("4"), id("8"), ..., id("3")]

A plain GPT-2 BPE breaks this (it merges " 48", "1903", ...). Splitting digits off before the
byte-level regex makes it hold for any prefix: each digit becomes its own pre-token, so no merge
can cross a digit boundary. ``train_tokenizer`` checks the invariant on the saved artifact and
refuses to publish a tokenizer that violates it. A hub model's tokenizer (GPT-2's and OPT's BPE
merge digit runs) is used as it is: exposure then ranks each candidate's own tokens
(``exposure.canary``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .hub_snapshots import commit_of

# GPT-2's single special token serves as bos, eos, pad and unk: a byte-level BPE never needs
# unk, and one shared token keeps the embedding matrix and the model config simple.
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = {
    "bos_token": ENDOFTEXT,
    "eos_token": ENDOFTEXT,
    "pad_token": ENDOFTEXT,
    "unk_token": ENDOFTEXT,
}
DIGITS = "0123456789"
# The files save_pretrained writes for a tokenizers-backed tokenizer; both are needed to load.
REQUIRED_FILES = ("tokenizer.json", "tokenizer_config.json")
MIN_VOCAB_SIZE = 256 + 1  # every byte symbol plus <|endoftext|>

# Prefixes the invariant is checked on besides the caller's canary prefixes: typical templates,
# and awkward ends (no prefix, no trailing space, punctuation, newline, non-ASCII).
_PROBE_PREFIXES = (
    "my pin code is ",
    "the secret number is ",
    "my credit card number is ",
    "call me at ",
    "",
    "x",
    "id:",
    "(",
    "line\n",
    "café ",
)
_PROBE_SECRETS = ("0", "481903", "000000", "0123456789", "9876543210", "55")


class TokenizerInvariantError(RuntimeError):
    """The trained tokenizer does not split digits one per token (exposure would be wrong)."""


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Digits first: they become single-character pre-tokens, so the byte-level regex (GPT-2's
    # word splitting) and the BPE merges never see a digit next to anything else.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _counting(texts: Iterable[str], counter: dict[str, int]) -> Iterator[str]:
    """Pass texts through while counting them, so a one-shot iterator is read only once."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        counter["texts"] += 1
        counter["characters"] += len(text)
        yield text


def _train_backend(
    texts: Iterable[str], vocab_size: int, min_frequency: int
) -> tuple[Tokenizer, dict[str, int]]:
    backend = Tokenizer(models.BPE(unk_token=None))  # byte-level: every string is encodable
    backend.pre_tokenizer = _pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    # Offsets only (adds no tokens), as in GPT-2's tokenizer.json.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[ENDOFTEXT],
        # All 256 byte symbols, seen or not: any text (and every digit) is representable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    counter = {"texts": 0, "characters": 0}
    backend.train_from_iterator(_counting(texts, counter), trainer=trainer)
    return backend, counter


def digit_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token id of each digit 0..9 (index d holds the id of str(d)).

    Raises TokenizerInvariantError when a digit is not exactly one token.
    """
    ids = []
    for digit in DIGITS:
        encoded = tokenizer.encode(digit, add_special_tokens=False)
        if len(encoded) != 1:
            raise TokenizerInvariantError(
                f"digit {digit!r} encodes to {len(encoded)} tokens {encoded}, expected exactly 1; "
                "the tokenizer must split digits one per token (rerun the train_tokenizer rule)"
            )
        ids.append(encoded[0])
    return ids


def check_digit_invariant(
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Iterable[str] = (),
    secrets: Iterable[str] = _PROBE_SECRETS,
) -> list[int]:
    """Check encode(prefix + secret) == encode(prefix) + one token per digit, and round trips.

    ``prefixes`` are checked in addition to built-in probes (pass the canary templates' prefixes).
    Returns the digit token ids; raises TokenizerInvariantError naming the failing string.
    """
    ids = digit_token_ids(tokenizer)
    secrets = list(secrets)
    for prefix in (*_PROBE_PREFIXES, *prefixes):
        # Default special-token handling on purpose: that is what training and exposure call.
        prefix_ids = tokenizer.encode(prefix) if prefix else []
        for secret in secrets:
            text = prefix + secret
            got = tokenizer.encode(text)
            want = prefix_ids + [ids[int(d)] for d in secret]
            if got != want:
                raise TokenizerInvariantError(
                    f"encode({text!r}) = {got}, but encode(prefix) + digit ids = {want}: the "
                    f"{len(secret)}-digit secret after prefix {prefix!r} is not {len(secret)} "
                    "digit tokens; exposure needs digits split one per token (check the "
                    "pre-tokenizer: Digits(individual_digits=True) before ByteLevel)"
                )
            decoded = tokenizer.decode(got)
            if decoded != text:
                raise TokenizerInvariantError(
                    f"decode(encode({text!r})) = {decoded!r}: the tokenizer does not round-trip"
                )
    return ids


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int,
    out_dir: str | os.PathLike,
    canary_prefixes: Sequence[str] = (),
) -> dict[str, Any]:
    """Train the BPE on ``texts`` (the pretraining corpus), save it to ``out_dir``, verify it.

    The tokenizer is written in transformers format (``AutoTokenizer.from_pretrained(out_dir)``
    loads it, no remote code). ``canary_prefixes`` are extra prefixes the digit invariant is
    checked on. Returns a manifest: vocabulary size reached, training size, special tokens and
    digit token ids. Same texts and settings give byte-identical files.
    """
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or vocab_size < MIN_VOCAB_SIZE
    ):
        raise ValueError(
            f"tokenizer.vocab_size: {vocab_size!r} cannot hold the 256 byte symbols "
            f"and {ENDOFTEXT}; use at least {MIN_VOCAB_SIZE}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(
            f"tokenizer.min_frequency: {min_frequency!r} is not a positive integer; "
            "use 1 or more (2 is usual)"
        )

    backend, counter = _train_backend(texts, vocab_size, min_frequency)
    if counter["characters"] == 0:
        raise ValueError(
            "tokenizer: no training text (the pretraining corpus is empty); "
            "check pretrain.datasets and that prepare_corpus produced examples"
        )

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build and verify in a sibling temporary directory: a failed check or a killed job never
    # leaves a tokenizer under the final name.
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
        wrapped.save_pretrained(tmp_dir)
        # Verify what consumers will load, not the in-memory object.
        reloaded = AutoTokenizer.from_pretrained(tmp_dir)
        digit_ids = check_digit_invariant(reloaded, canary_prefixes)
        manifest = {
            "vocab_size": len(reloaded),
            "requested_vocab_size": vocab_size,
            "min_frequency": min_frequency,
            "training_texts": counter["texts"],
            "training_characters": counter["characters"],
            "special_tokens": dict(SPECIAL_TOKENS),
            "special_token_id": reloaded.convert_tokens_to_ids(ENDOFTEXT),
            "digit_token_ids": digit_ids,
        }
        _publish(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


# The tokenizer.* settings configure a tokenizer trained here; a hub model brings its own.
NOT_USED_FOR_HUB = (
    "tokenizer.vocab_size and tokenizer.min_frequency configure a tokenizer trained here; "
    "the hub model's own tokenizer is used instead, so they are not used"
)


def fetch_tokenizer(
    source: str, revision: str | None, out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Save the tokenizer of the hub model ``source`` (at ``revision``; or a local directory)
    into ``out_dir`` in the format ``train_tokenizer`` writes, so every later stage reads it
    alike. Its end-of-text token separates sequences (``lm_data``), so it must have one.
    Returns the manifest (vocabulary size, special tokens, what was not used and why)."""
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"model.source: the tokenizer of {source!r} has no end-of-text token, which this "
            "study puts between sequences; choose a causal LM whose tokenizer has one"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(tmp_dir)
        missing = [name for name in REQUIRED_FILES if not (tmp_dir / name).is_file()]
        if missing:
            raise ValueError(
                f"model.source: the tokenizer of {source!r} saved without {', '.join(missing)} "
                "(not a fast tokenizer); choose a model with a tokenizers-backed tokenizer"
            )
        reloaded = load_tokenizer(tmp_dir)  # what consumers will load, checked the same way
        manifest = {
            "source": source,
            "revision": revision,
            "commit": commit_of(source, revision),
            "vocab_size": len(reloaded),
            "special_tokens": {
                name: getattr(reloaded, name) for name in SPECIAL_TOKENS if getattr(reloaded, name)
            },
            "eos_token_id": reloaded.eos_token_id,
            "not_used": NOT_USED_FOR_HUB,
        }
        _publish(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def _publish(tmp_dir: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp_dir, out_dir)  # atomic: the directory appears complete or not at all
        return
    # Snakemake removes a directory() output before the job, so this is a manual rerun: replace
    # our files one by one and leave anything else in the directory alone.
    for path in sorted(tmp_dir.iterdir()):
        os.replace(path, out_dir / path.name)


def load_tokenizer(directory: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer written by ``train_tokenizer`` and re-check that digits are single tokens.

    Raises FileNotFoundError / ValueError naming the directory and the fix.
    """
    directory = Path(directory)
    fix = (
        "rerun the rule that writes it, train_tokenizer (fetch_tokenizer for a hub model); "
        "delete the directory first if it is corrupted"
    )
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: not a trained tokenizer (missing {', '.join(missing)}); {fix}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as err:  # tokenizers and transformers raise many unrelated types here
        raise ValueError(
            f"{directory}: cannot load the tokenizer ({type(err).__name__}: {err}); {fix}"
        ) from err
    try:
        digit_token_ids(tokenizer)
    except TokenizerInvariantError as err:
        raise ValueError(f"{directory}: {err}") from None
    return tokenizer
