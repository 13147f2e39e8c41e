"""Any ``datasets``-loadable corpus: the paper-scale path (e.g. WikiText-103 from the hub).

One code path serves hub names (``path="wikitext", name="wikitext-103-raw-v1"``) and local files
(``path="text" | "json" | "parquet"`` with ``data_files``), so the offline tests exercise exactly
what a user with network runs. ``trust_remote_code`` is never passed: dataset scripts from the
hub do not run here.

``datasets`` keeps a loaded split as memory-mapped Arrow files, so the split itself costs no
memory; a Python list of all its texts does (WikiText-103: 1.8 M rows, CNN/DailyMail 287 k
articles of ~4 kB). With ``order_seed`` the documents come lazily, in a seeded random order of
the rows, ``ROWS_PER_READ`` rows at a time: the data stage then stops reading once it holds
``data.max_examples`` examples (corpora.prepare), whatever the split's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..seeding import numpy_rng
from .base import Document, SourceData, SourceFile, SourceInfo, package_version, read_file

ROWS_PER_READ = 1000  # rows gathered from the Arrow files per read in seeded order


def _local_files(data_files: str | Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """Every data file given as a plain local path (globs and URLs are left to ``datasets``)."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files] if Path(data_files).is_file() else []
    if isinstance(data_files, Mapping):
        return [f for value in data_files.values() for f in _local_files(value)]
    return [f for value in data_files for f in _local_files(value)]


def load_split(
    *,
    path: str,
    name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """The ``datasets`` split (memory-mapped Arrow files), loaded the one way both the data
    stage and the download target (``unlearnbench.download``) load it, so what the login node
    caches is exactly what a compute node reads."""
    import datasets  # heavy import, needed only here

    if not isinstance(split, str) or not split:
        raise ValueError(f"hub.split: must name one split (e.g. 'train'), got {split!r}")
    return datasets.load_dataset(
        path,
        name=name,
        split=split,
        revision=revision,
        data_files=data_files,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def read_hub(
    *,
    path: str,
    text_field: str = "text",
    name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    order_seed: int | None = None,
) -> SourceData:
    """The split's non-empty texts as documents: all of them in row order (a list), or, with
    ``order_seed``, lazily in a random row order drawn from it (an iterator)."""
    dataset = load_split(
        path=path,
        name=name,
        split=split,
        revision=revision,
        data_files=data_files,
        cache_dir=cache_dir,
    )
    if text_field not in dataset.column_names:
        raise ValueError(
            f"hub.text_field: column {text_field!r} not in {path!r} (columns: "
            f"{', '.join(dataset.column_names)}); set hub.text_field to the text column"
        )
    prefix = "/".join(str(part) for part in ("hub", path, name, split) if part)
    if order_seed is None:
        documents = [
            Document(f"{prefix}/{row}", text)
            # Row numbers stay those of the dataset, so empty rows (WikiText has many) leave gaps.
            for row, text in enumerate(dataset[text_field])
            if isinstance(text, str) and text.strip()
        ]
    else:
        documents = _documents_in_order(dataset, text_field, prefix, order_seed)
    records: list[SourceFile] = [read_file(Path(f), f)[1] for f in _local_files(data_files)]
    details = {
        "path": path,
        "name": name,
        "split": split,
        "revision": revision,
        "data_files": data_files,
        "text_field": text_field,
        "rows": dataset.num_rows,
        "row_order": "as stored" if order_seed is None else "seeded random, read until capped",
    }
    licence = dataset.info.license or f"not stated by the loader; see the dataset card of {path!r}"
    info = SourceInfo(
        "hub", "datasets", package_version("datasets"), licence, tuple(records), details
    )
    return SourceData(documents, info)


def _documents_in_order(dataset, text_field: str, prefix: str, seed: int) -> Iterator[Document]:
    """The split's non-empty texts in a seeded random row order, read a batch of rows at a
    time from the memory-mapped files: only what the consumer keeps stays in memory."""
    texts = dataset.select_columns([text_field])
    order = numpy_rng(seed, "split", "hub_rows", prefix).permutation(dataset.num_rows)
    for start in range(0, len(order), ROWS_PER_READ):
        rows = order[start : start + ROWS_PER_READ].tolist()
        for row, text in zip(rows, texts[rows][text_field], strict=True):
            if isinstance(text, str) and text.strip():
                yield Document(f"{prefix}/{row}", text)
