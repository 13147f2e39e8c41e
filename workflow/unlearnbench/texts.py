"""Reading the workflow's text tables: a split's rows, and the retained set D+ of a replicate.

Splits are parquet files with a ``text`` column (``corpora.splits`` writes them); a forget or
retain manifest lists row indices into the canary-injected training split. Stages that only
need texts import this leaf module, not the training code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def read_texts(parquet_paths: Sequence[str | Path]) -> list[str]:
    """The ``text`` column of each file, concatenated in the given order."""
    texts: list[str] = []
    for path in parquet_paths:
        texts += pd.read_parquet(path, columns=["text"])["text"].tolist()
    return texts


def retained_texts(train_path: str | Path, retain_path: str | Path) -> list[str]:
    """D+: the rows of the canary-injected training split listed in the retain manifest."""
    texts = read_texts([train_path])
    indices = json.loads(Path(retain_path).read_text())["indices"]
    return [texts[i] for i in indices]
