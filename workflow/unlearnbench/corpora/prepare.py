"""The data stage in one call: read a source, split it, write parquet, describe it all.

The manifest says where the text came from (package, version, files, sha256, licence) and what
each split holds (sizes, hashes, e-mail and phone counts, a few snippets). Snippets of
real-world datasets are masked: they end up in logs and reports.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..artifacts import describe_files
from ..pii import count_pii, mask_pii
from .base import Document
from .sources import read_source
from .splits import SPLITS, Example, SplitConfig, assign_splits, segment_documents, write_split

log = logging.getLogger(__name__)

KINDS = ("nlp", "realworld", "pretrain")
SNIPPETS = 3
SNIPPET_CHARS = 200


def documents_digest(documents: Sequence[Document]) -> str:
    """sha256 of the extracted text: changes when extraction code or package data change."""
    digest = hashlib.sha256()
    for document in documents:
        for part in (document.doc_id, document.text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: unambiguous
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_stats(texts: Sequence[str]) -> dict[str, int]:
    return {
        "characters": sum(len(t) for t in texts),
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
        "lines": sum(len(t.splitlines()) for t in texts),
    }


def split_summary(examples: Sequence[Example], path: str | Path, kind: str) -> dict[str, Any]:
    texts = [e.text for e in examples]
    # Mask before cutting: a cut address would escape the pattern and leak its start.
    show = mask_pii if kind == "realworld" else (lambda text: text)
    return {
        "examples": len(examples),
        "documents": len({e.doc_id for e in examples}),
        **text_stats(texts),
        "sha256": file_sha256(path),
        "pii": count_pii(texts),
        "snippets": [show(text)[:SNIPPET_CHARS] for text in texts[:SNIPPETS]],
        "snippets_masked": kind == "realworld",
    }


def _kept(documents: Iterable[Document], read: list[Document]) -> Iterator[Document]:
    """``documents``, each appended to ``read`` as it is handed out: the manifest describes the
    documents the data stage actually read (all of them, or a capped hub split's prefix)."""
    for document in documents:
        read.append(document)
        yield document


def prepare_corpus(
    name: str,
    source: Mapping[str, Any],
    split: SplitConfig,
    train_path: str | Path,
    validation_path: str | Path,
    test_path: str | Path,
) -> dict[str, Any]:
    """Write the three parquet splits of dataset ``name`` and return its manifest.

    ``source`` is the dataset's config block, e.g. ``{"source": "wikipedia", "kind": "nlp"}``
    or ``{"source": "hub", "kind": "nlp", "hub": {"path": "wikitext", ...}}``.
    """
    kind = source.get("kind")
    if kind not in KINDS:
        raise ValueError(
            f"datasets.{name}.kind: {kind!r} is not a known kind; use one of {', '.join(KINDS)} "
            "(realworld masks e-mail addresses in the manifest)"
        )
    if "source" not in source:
        raise ValueError(f"datasets.{name}.source: missing; name a text source")
    # A capped hub split is read in a seeded random order of its rows until max_examples
    # examples are kept: memory holds those, never the whole split (corpora.hub). Offline
    # sources are small and read whole, then shuffled and capped (assign_splits).
    capped_hub = source["source"] == "hub" and split.max_examples is not None
    data = read_source(
        source["source"], source.get("hub"), order_seed=split.seed if capped_hub else None
    )
    documents: list[Document] = []
    segmented = segment_documents(
        _kept(data.documents, documents), split, split.max_examples if capped_hub else None
    )
    splits = assign_splits(segmented.examples, split, name)
    paths = dict(zip(SPLITS, (train_path, validation_path, test_path), strict=True))
    for split_name in SPLITS:
        write_split(paths[split_name], splits[split_name])
    log.info(
        "%s: %d documents -> %d examples (%d too short, %d duplicates dropped) -> %s",
        name,
        len(documents),
        segmented.total,
        segmented.too_short,
        segmented.duplicates,
        ", ".join(f"{s} {len(splits[s])}" for s in SPLITS),
    )
    document_texts = [d.text for d in documents]
    return {
        "dataset": name,
        "kind": kind,
        "source": data.info.to_dict(),
        "documents": {
            "count": len(documents),
            **text_stats(document_texts),
            "sha256": documents_digest(documents),
            "pii": count_pii(document_texts),
        },
        "segmentation": {
            "examples": segmented.total,
            "too_short_dropped": segmented.too_short,
            "duplicates_dropped": segmented.duplicates,
            "unique_examples": len(segmented.examples),
            "kept_after_cap": sum(len(v) for v in splits.values()),
        },
        "split_config": split.to_dict(),
        "splits": {s: split_summary(splits[s], paths[s], kind) for s in SPLITS},
        "files": describe_files(paths[s] for s in SPLITS),
    }
