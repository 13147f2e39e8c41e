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


def retained_after(
    retain_rows: Sequence[int],
    forget_rows: Sequence[int],
    forget_groups: Sequence[int],
    removed_groups: Sequence[int] | None,
) -> list[int]:
    """D+ after the requests ``removed_groups`` (None: every request): the retained rows plus
    the forget rows whose request group is still pending.

    In a sequence of requests the rows of the groups still pending are in the model's training
    data until their own request comes, so they belong to the retained set of every earlier
    request (its Fisher, and the retrained model that is that request's gold standard)."""
    if len(forget_rows) != len(forget_groups):
        raise ValueError(
            f"{len(forget_rows)} forget rows but {len(forget_groups)} request groups; "
            "rerun inject_canaries"
        )
    if removed_groups is None:
        return sorted(retain_rows)
    gone = set(removed_groups)
    pending = [r for r, g in zip(forget_rows, forget_groups, strict=True) if g not in gone]
    return sorted([*retain_rows, *pending])


def request_retain_set(
    retain_path: str | Path, forget_path: str | Path, removed_groups: Sequence[int]
) -> dict[str, Any]:
    """The retain manifest of the request that has removed ``removed_groups`` so far (a
    retain set in the format ``read_index_set`` reads)."""
    forget = read_index_set(forget_path)
    groups = forget.get("groups") or [1] * len(forget["indices"])
    unknown = sorted(set(removed_groups) - set(groups))
    if unknown:
        raise ValueError(
            f"{forget_path}: request groups {unknown} are not in the forget set (its groups: "
            f"{sorted(set(groups))}); set canaries.requests and rerun inject_canaries"
        )
    rows = retained_after(
        read_index_set(retain_path)["indices"], forget["indices"], groups, removed_groups
    )
    return {"indices": rows, "removed_groups": sorted(set(removed_groups))}
