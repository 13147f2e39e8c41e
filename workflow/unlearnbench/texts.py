"""Reading the workflow's text tables back: a split's rows, a forget or retain set, D+.

Splits are parquet files with a ``text`` column (``corpora.splits`` writes them); a forget or
retain set lists row indices into the canary-injected training split. Every file is checked
against the manifest its stage wrote beside it (``artifacts.check``) before it is used. Stages
that only need texts import this leaf module, not the training code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import check


def read_texts(parquet_paths: Sequence[str | Path]) -> list[str]:
    """The ``text`` column of each file, concatenated in the given order."""
    texts: list[str] = []
    for path in parquet_paths:
        texts += pd.read_parquet(check(path), columns=["text"])["text"].tolist()
    return texts


def read_index_set(path: str | Path) -> dict[str, Any]:
    """A forget or retain set: ``indices`` (rows of the training split) and, for forget sets,
    ``canary_ids`` and ``groups`` (the request each row belongs to)."""
    data = json.loads(check(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("indices"), list):
        raise ValueError(f"{path}: not a forget/retain set (no 'indices' list); rerun its rule")
    return data


def retained_texts(train_path: str | Path, retain_path: str | Path) -> list[str]:
    """D+: the rows of the canary-injected training split listed in the retain manifest."""
    texts = read_texts([train_path])
    return [texts[i] for i in read_index_set(retain_path)["indices"]]
