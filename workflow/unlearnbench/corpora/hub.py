"""Any ``datasets``-loadable corpus: the paper-scale path (e.g. WikiText-103 from the hub).

One code path serves hub names (``path="wikitext", name="wikitext-103-raw-v1"``) and local files
(``path="text" | "json" | "parquet"`` with ``data_files``), so the offline tests exercise exactly
what a user with network runs. ``trust_remote_code`` is never passed: dataset scripts from the
hub do not run here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Document, SourceData, SourceFile, SourceInfo, package_version, read_file


def _local_files(data_files: str | Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """Every data file given as a plain local path (globs and URLs are left to ``datasets``)."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files] if Path(data_files).is_file() else []
    if isinstance(data_files, Mapping):
        return [f for value in data_files.values() for f in _local_files(value)]
    return [f for value in data_files for f in _local_files(value)]


def read_hub(
    *,
    path: str,
    text_field: str = "text",
    name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> SourceData:
    import datasets  # heavy import, needed only here

    if not isinstance(split, str) or not split:
        raise ValueError(f"hub.split: must name one split (e.g. 'train'), got {split!r}")
    dataset = datasets.load_dataset(
        path,
        name=name,
        split=split,
        revision=revision,
        data_files=data_files,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    if text_field not in dataset.column_names:
        raise ValueError(
            f"hub.text_field: column {text_field!r} not in {path!r} (columns: "
            f"{', '.join(dataset.column_names)}); set hub.text_field to the text column"
        )
    prefix = "/".join(str(part) for part in ("hub", path, name, split) if part)
    documents = [
        Document(f"{prefix}/{row}", text)
        # Row numbers stay those of the dataset, so empty rows (WikiText has many) leave gaps.
        for row, text in enumerate(dataset[text_field])
        if isinstance(text, str) and text.strip()
    ]
    records: list[SourceFile] = [read_file(Path(f), f)[1] for f in _local_files(data_files)]
    details = {
        "path": path,
        "name": name,
        "split": split,
        "revision": revision,
        "data_files": data_files,
        "text_field": text_field,
        "rows": dataset.num_rows,
    }
    licence = dataset.info.license or f"not stated by the loader; see the dataset card of {path!r}"
    info = SourceInfo(
        "hub", "datasets", package_version("datasets"), licence, tuple(records), details
    )
    return SourceData(documents, info)
