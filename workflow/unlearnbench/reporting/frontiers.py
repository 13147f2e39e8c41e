"""Frontier files (results/frontier/{dataset}/seed~{seed}/{method}.json) as tidy frames, and
the measurements each claim is judged on.

A model's metrics (a metrics file, or one point of a frontier) flatten into the same columns
(``model_metrics``), so the original, the retrained model, its twin, the DP models and every
frontier point sit on one scale in every table and figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..provenance import read_json
from .loaders import _num, commit_of, exposure_of, locate, model_metrics, weight_delta_rows

SELECTIONS = ("matched_erasure", "matched_utility")


def load_frontiers(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every point: one row, with its knobs and metrics; every operating point: one row per
    dataset, seed, method and selection, NaN metrics where the grid never reached it)."""
    points, selected = [], []
    for path in paths:
        where = locate(path)
        doc = read_json(path)
        base = {"dataset": where["dataset"], "seed": where["seed"], "method": doc["method"]}
        rows = []
        for index, point in enumerate(doc["points"]):
            row = {
                **base,
                "point": index,
                "strength": float(point["strength"]),
                "knobs": ", ".join(f"{k}={v:g}" for k, v in sorted(point["knobs"].items())),
                "diverged": bool(point["diverged"]),
                "unlearning_s": _num((point.get("seconds") or {}).get("unlearning")),
                "commit": commit_of(doc),
            }
            if not point["diverged"]:
                row.update(model_metrics(point["metrics"]))
            rows.append(row)
        points += rows
        for selection in SELECTIONS:
            index = doc["selection"][selection]["index"]
            chosen = rows[index] if index is not None else {"point": None}
            selected.append(
                {
                    **{k: v for k, v in chosen.items() if k not in base},
                    **base,
                    "selection": selection,
                    "reached": index is not None,
                }
            )
    return pd.DataFrame(points), pd.DataFrame(selected)


def weight_deltas_at(
    paths: Iterable[str | Path], selection: str = "matched_utility"
) -> pd.DataFrame:
    """Weight-change histograms of each method at one of its operating points."""
    rows = []
    for path in paths:
        doc = read_json(path)
        index = doc["selection"][selection]["index"]
        if index is not None:
            point = doc["points"][index]
            rows += weight_delta_rows(locate(path), doc["method"], point.get("weight_delta"))
    return pd.DataFrame(rows)


CANARY_COLUMNS = ["dataset", "seed", "model", "selection", "canary_id", "role", "exposure"]


def selected_canaries(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Per canary, its exposure at each method's operating points (for paired claims)."""
    rows = []
    for path in paths:
        where = locate(path)
        doc = read_json(path)
        for selection in SELECTIONS:
            index = doc["selection"][selection]["index"]
            if index is None:
                continue
            for record in doc["points"][index]["metrics"]["canaries"]:
                rows.append(
                    {
                        "dataset": where["dataset"],
                        "seed": where["seed"],
                        "model": doc["method"],
                        "selection": selection,
                        "canary_id": int(record["canary_id"]),
                        "role": record["role"],
                        "exposure": exposure_of(record)[0],
                    }
                )
    return pd.DataFrame(rows, columns=CANARY_COLUMNS)


# What a claim's ``metric`` measures: per canary (removed or control canaries' exposure, paired
# by canary) or per replicate (one value a seed).
CANARY_METRICS = {"removed_exposure": "removed", "control_exposure": "control"}
REPLICATE_METRICS = {
    "test_log_perplexity": lambda row: math.log(row["test_ppl"]),
    "kl_test": lambda row: row["kl_test"],
    "mia_loss_auc": lambda row: row["mia_loss"],
}
METRICS = (*CANARY_METRICS, *REPLICATE_METRICS)


def claim_data(
    rule: Mapping[str, Any], selected: pd.DataFrame, canaries: pd.DataFrame
) -> pd.DataFrame:
    """``seed`` (dataset/seed: every replicate of every verdict dataset), ``unit`` and
    ``value`` = metric under method ``a`` minus under method ``b`` at ``point``, paired by
    canary (canary metrics) or by replicate. Replicates where either method never reached the
    operating point contribute nothing."""
    a, b, point, metric = rule["a"], rule["b"], rule["point"], rule["metric"]
    nothing = pd.DataFrame(columns=["seed", "unit", "value"])
    if metric in CANARY_METRICS:
        if canaries.empty:  # no operating point reached anywhere
            return nothing
        role = CANARY_METRICS[metric]
        mine = canaries[(canaries["selection"] == point) & (canaries["role"] == role)]
        wide = mine.pivot_table(
            index=["dataset", "seed", "canary_id"], columns="model", values="exposure"
        )
        if a not in wide or b not in wide:
            return nothing
        diff = (wide[a] - wide[b]).dropna().reset_index()
        return pd.DataFrame(
            {
                "seed": diff["dataset"] + "/" + diff["seed"].astype(str),
                "unit": diff["canary_id"].astype(str),
                "value": diff[0].to_numpy(),
            }
        )
    measure = REPLICATE_METRICS[metric]
    if selected.empty:  # no frontier file at all
        return nothing
    mine = selected[(selected["selection"] == point) & selected["reached"]]
    values = {(r["dataset"], r["seed"], r["method"]): measure(r) for _, r in mine.iterrows()}
    out = []
    for (dataset, seed, method), value in sorted(values.items()):
        other = values.get((dataset, seed, b))
        if method == a and other is not None and np.isfinite(value) and np.isfinite(other):
            out.append({"seed": f"{dataset}/{seed}", "unit": "replicate", "value": value - other})
    return pd.DataFrame(out, columns=["seed", "unit", "value"])


def restrict(frame: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """Only the verdict datasets' rows (breadth datasets stay out of the claims)."""
    return frame[frame["dataset"].isin(datasets)] if len(frame) else frame
