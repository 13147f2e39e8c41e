"""Documents -> examples -> deterministic train/validation/test splits, saved as parquet.

Examples are packed from whole paragraphs (then lines, then whitespace-delimited pieces) so
that they read naturally and never cut a word, an e-mail address or a canary in half.
Exact-duplicate examples are dropped before splitting, so no text can sit in two splits (a
duplicated licence header in train and test would otherwise look like memorisation).
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..provenance import atomic_path
from ..seeding import numpy_rng
from .base import Document

SPLITS = ("train", "validation", "test")
# Largest held-out fraction per split (the schema's bound): most examples must train.
MAX_HELD_OUT_FRACTION = 0.5


@dataclass(frozen=True)
class SplitConfig:
    """The ``data`` block of the config. No defaults here: the schema is the one place for them."""

    validation_fraction: float
    test_fraction: float
    max_example_chars: int
    min_example_chars: int
    max_examples: int | None  # None: keep every example
    seed: int

    def __post_init__(self) -> None:
        for key in ("validation_fraction", "test_fraction"):
            value = getattr(self, key)
            if not _is_real(value) or not 0 < value <= MAX_HELD_OUT_FRACTION:
                raise ValueError(
                    f"data.{key}: must be a number in (0, {MAX_HELD_OUT_FRACTION}] (every split "
                    f"needs an example, and training most of them), got {value!r}; use e.g. 0.1"
                )
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "data.validation_fraction + data.test_fraction: "
                f"{self.validation_fraction} + {self.test_fraction} leaves nothing to train on; "
                "keep the sum below 1 (e.g. 0.1 each)"
            )
        if not _is_int(self.max_example_chars) or self.max_example_chars < 16:
            raise ValueError(
                f"data.max_example_chars: must be an integer >= 16, got "
                f"{self.max_example_chars!r}; use e.g. 400"
            )
        if not _is_int(self.min_example_chars) or self.min_example_chars < 1:
            raise ValueError(
                f"data.min_example_chars: must be an integer >= 1, got "
                f"{self.min_example_chars!r}; use e.g. 32"
            )
        if self.min_example_chars > self.max_example_chars:
            raise ValueError(
                f"data.min_example_chars: {self.min_example_chars} exceeds "
                f"data.max_example_chars ({self.max_example_chars}), so every example would be "
                "dropped; lower data.min_example_chars"
            )
        if self.max_examples is not None and (
            not _is_int(self.max_examples) or self.max_examples < len(SPLITS)
        ):
            raise ValueError(
                f"data.max_examples: must be an integer >= {len(SPLITS)} (one example per split) "
                f"or null for no cap, got {self.max_examples!r}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"data.seed: must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Example:
    doc_id: str
    text: str


# ---------------------------------------------------------------- segmentation


def normalise(text: str) -> str:
    """NFC, Unix newlines, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# Whitespace right after a sentence end (optionally closed by a quote or bracket).
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def cut_long_line(line: str, max_chars: int) -> list[str]:
    """Cut ``line`` into pieces of at most ``max_chars`` at whitespace.

    A sentence end in the second half of the window is preferred, so pieces read as sentences;
    a single word longer than ``max_chars`` (a URL, a bang path) is cut hard.
    """
    pieces = []
    while len(line) > max_chars:
        window = line[: max_chars + 1]  # whitespace at index max_chars is a valid cut
        indent = len(window) - len(window.lstrip())
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() >= max_chars // 2]
        spaces = [m.start() for m in re.finditer(r"\s", window) if m.start() > indent]
        cut = ends[-1] if ends else spaces[-1] if spaces else max_chars
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    if line:
        pieces.append(line)
    return pieces


def _units(text: str, max_chars: int) -> Iterator[tuple[str, str]]:
    """(separator, piece) pairs; the separator is what joined the piece to its predecessor."""
    for paragraph in text.split("\n\n"):
        if not paragraph.strip():
            continue
        if len(paragraph) <= max_chars:
            yield "\n\n", paragraph
            continue
        separator = "\n\n"
        for line in paragraph.split("\n"):
            for piece in cut_long_line(line, max_chars):
                yield separator, piece
                separator = " "
            separator = "\n"


def segment(text: str, max_chars: int) -> list[str]:
    """Greedily pack consecutive paragraphs (or pieces of them) into examples <= max_chars."""
    examples: list[str] = []
    current = ""
    for separator, piece in _units(normalise(text), max_chars):
        if current and len(current) + len(separator) + len(piece) <= max_chars:
            current += separator + piece
        else:
            if current:
                examples.append(current)
            current = piece
    if current:
        examples.append(current)
    return examples


@dataclass(frozen=True)
class Segmented:
    examples: list[Example]
    total: int  # before dropping anything
    too_short: int
    duplicates: int


def segment_documents(
    documents: Iterable[Document], config: SplitConfig, limit: int | None = None
) -> Segmented:
    """All examples in corpus order, short ones and exact repeats (after the first) dropped;
    with ``limit``, reading stops once that many examples are kept (``documents`` may then be
    a lazy iterator over a corpus far larger than memory)."""
    examples: list[Example] = []
    seen: set[str] = set()
    total = too_short = duplicates = 0
    for document in documents:
        for text in segment(document.text, config.max_example_chars):
            total += 1
            if len(text.strip()) < config.min_example_chars:
                too_short += 1
            elif text in seen:
                duplicates += 1
            else:
                seen.add(text)
                examples.append(Example(document.doc_id, text))
                if limit is not None and len(examples) >= limit:
                    return Segmented(examples, total, too_short, duplicates)
    return Segmented(examples, total, too_short, duplicates)


# ---------------------------------------------------------------- splitting


def split_sizes(n: int, config: SplitConfig) -> dict[str, int]:
    """Held-out sizes are rounded (half to even) and at least 1; training gets the rest."""
    validation = max(1, round(n * config.validation_fraction))
    test = max(1, round(n * config.test_fraction))
    return {"train": n - validation - test, "validation": validation, "test": test}


def assign_splits(
    examples: Sequence[Example], config: SplitConfig, dataset: str
) -> dict[str, list[Example]]:
    """Seeded shuffle, cap at ``max_examples``, then cut validation and test off the front.

    Inside each split the examples go back to corpus order: which split an example lands in
    is the random part; the training loader shuffles with its own stream, and corpus order
    keeps a document's examples together for whoever reads or diffs the files.
    """
    order = numpy_rng(config.seed, "split", dataset).permutation(len(examples))
    if config.max_examples is not None:
        order = order[: config.max_examples]
    sizes = split_sizes(len(order), config)
    if sizes["train"] < 1:
        raise ValueError(
            f"dataset {dataset!r}: only {len(order)} examples (of {len(examples)} after "
            f"segmentation and de-duplication, data.max_examples={config.max_examples}); with "
            f"data.validation_fraction={config.validation_fraction} and "
            f"data.test_fraction={config.test_fraction} each split needs at least one example. "
            "Raise data.max_examples, lower data.min_example_chars or data.max_example_chars, "
            "or use a larger source"
        )
    held_out = sizes["validation"] + sizes["test"]
    chosen = {
        "validation": order[: sizes["validation"]],
        "test": order[sizes["validation"] : held_out],
        "train": order[held_out:],
    }
    return {split: [examples[i] for i in sorted(chosen[split].tolist())] for split in SPLITS}


def write_split(path: str | Path, examples: Sequence[Example]) -> None:
    """Parquet with columns text, doc_id, example_id (position in the split), written atomically.

    Equal examples give byte-identical files: pyarrow writes no timestamps, and the only
    metadata (``created_by`` and the ``huggingface`` features) depends on package versions.
    """
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "doc_id": datasets.Value("string"),
            "example_id": datasets.Value("int64"),
        }
    )
    table = {
        "text": [e.text for e in examples],
        "doc_id": [e.doc_id for e in examples],
        "example_id": list(range(len(examples))),
    }
    # to_parquet draws a progress bar per file; silence it for this call only (logs stay clean).
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with atomic_path(path) as tmp:
            datasets.Dataset.from_dict(table, features=features).to_parquet(str(tmp))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def read_split(path: str | Path) -> list[Example]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["doc_id", "text"]).to_pydict()
    return [Example(d, t) for d, t in zip(table["doc_id"], table["text"], strict=True)]
