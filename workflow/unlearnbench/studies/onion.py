"""The onion effect (Carlini et al. 2022, "The Privacy Onion Effect"): removing the most exposed
points exposes the layer beneath them.

We remove a subset S of the canaries from the original model with one unlearning method and
measure how the exposure of every other canary (the controls of this study) changes. S is either
the ``n`` canaries the original model exposes most ("targeted") or a seeded random draw
("random") of other canaries matched to it in training rows removed: a random set of ``n``
canaries would mostly hold fewer copies, so Fisher Removal's step (scaled by |D-|/|D+|) and any
method's work would differ for that reason alone. The draw is seeded per dataset and replicate.
If targeted removal raises the controls' exposure more than random removal, the onion effect is
there. Fisher-based methods estimate the Fisher of the onion request's own D+ (the main study's
keeps some of S and drops canaries that stay here).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..artifacts import describe_files
from ..canaries import read_canaries
from ..provenance import read_json
from ..replicate import ReplicateFiles
from ..seeding import numpy_rng
from ..study_names import ONION_SELECTIONS

SELECTIONS = ONION_SELECTIONS


def original_exposures(eval_path: str | Path) -> dict[int, float]:
    """Exposure of every canary under the original model (exact rank where it was computed)."""
    records = read_json(eval_path)["canaries"]
    exposures = {}
    for record in records:
        if record.get("role") == "phantom":
            continue  # never inserted: neither removable nor a control of this study
        value = record.get("exposure_exact")
        if value is None:
            value = record.get("exposure_extrapolated")
        exposures[int(record["canary_id"])] = float(value)
    return exposures


def canary_rows(train_path: str | Path) -> dict[int, int]:
    """Training rows per inserted canary (its copies in the training split)."""
    ids = pd.read_parquet(train_path, columns=["canary_id"])["canary_id"]
    counts = ids[ids >= 0].value_counts()
    return {int(i): int(n) for i, n in counts.items()}


def select_canaries(
    exposures: dict[int, float],
    rows: dict[int, int],
    n: int,
    selection: str,
    seed: int,
    dataset: str,
    key: str = "onion",
    tries: int = 2000,
) -> list[int]:
    """The canaries to remove: the ``n`` most exposed (ties by id), or a random set of the
    others holding as many training rows as those ``n`` (as close as the row counts allow),
    drawn from a stream seeded by ``seed`` and ``dataset``."""
    if selection not in SELECTIONS:
        raise ValueError(f"{key}: unknown selection {selection!r}; use one of {SELECTIONS}")
    if not 1 <= n < len(exposures):
        raise ValueError(
            f"{key}.remove: {n} must be between 1 and the number of canaries minus one "
            f"({len(exposures) - 1}), so that some canaries stay as controls; change onion.remove"
        )
    ids = sorted(exposures)
    targeted = sorted(sorted(ids, key=lambda i: (-exposures[i], i))[:n])
    if selection == "targeted":
        return targeted
    taken = set(targeted)
    pool = [i for i in ids if i not in taken]
    goal = sum(rows.get(i, 0) for i in targeted)
    rng = numpy_rng(seed, "unlearn", "onion", "random", dataset)
    best, best_gap = [], None
    for _ in range(tries):
        # A random order, each canary taken while it does not overshoot the goal: every subset
        # that hits the goal can come out, none is favoured by id.
        chosen, total = [], 0
        for i in rng.permutation(pool).tolist():
            if total + rows.get(i, 0) <= goal:
                chosen.append(int(i))
                total += rows.get(i, 0)
        if best_gap is None or goal - total < best_gap:
            best, best_gap = chosen, goal - total
        if total == goal:
            break
    return sorted(best)


def write_request(
    removed: list[int], canaries: pd.DataFrame, train_path: str | Path, folder: Path
) -> dict[str, Path]:
    """Forget/retain manifests and a canary table in which exactly ``removed`` are forgotten."""
    rows = pd.read_parquet(train_path, columns=["canary_id"])["canary_id"].to_numpy()
    in_forget = np.isin(rows, removed)
    forget = np.flatnonzero(in_forget).tolist()
    paths = {
        "forget": folder / "forget_set.json",
        "retain": folder / "retain_set.json",
        "canaries": folder / "canaries.csv",
    }
    paths["forget"].write_text(
        json.dumps(
            {
                "indices": forget,
                "canary_ids": [int(rows[i]) for i in forget],
                "groups": [1] * len(forget),
            }
        )
    )
    paths["retain"].write_text(json.dumps({"indices": np.flatnonzero(~in_forget).tolist()}))
    table = canaries.copy()
    table["in_forget_set"] = table["canary_id"].isin(removed)
    table["group"] = table["in_forget_set"].astype(int)
    phantom = table["role"] == "phantom"
    table["role"] = np.where(
        phantom, "phantom", np.where(table["in_forget_set"], "removed", "control")
    )
    table.to_csv(paths["canaries"], index=False)
    return paths


REQUEST_FILES = ("forget", "retain", "canaries")


def onion_request_stage(
    selection: str,
    n_remove: int,
    replicate: ReplicateFiles,
    original_eval_path: str | Path,
    out_paths: dict[str, str | Path],
) -> dict[str, Any]:
    """Choose the ``selection`` set S of ``replicate`` and write its request: forget/retain
    manifests and a canary table with S removed (``out_paths`` keys ``REQUEST_FILES``). The
    onion study's retrained model trains on that retain set, its unlearning arm removes that
    forget set: both see exactly the same S."""
    replicate.require("canaries")
    exposures = original_exposures(original_eval_path)
    rows = canary_rows(replicate.train)
    removed = select_canaries(
        exposures, rows, n_remove, selection, replicate.seed, replicate.dataset
    )
    with tempfile.TemporaryDirectory(prefix="onion-") as tmp:
        written = write_request(
            removed, read_canaries(replicate.canaries), replicate.train, Path(tmp)
        )
        for name in REQUEST_FILES:
            Path(out_paths[name]).parent.mkdir(parents=True, exist_ok=True)
            Path(written[name]).replace(out_paths[name])
    return {
        "selection": selection,
        "removed_canary_ids": removed,
        "removed_rows": sum(rows.get(i, 0) for i in removed),
        "removed_original_exposure": {str(i): exposures[i] for i in removed},
        "controls": [i for i in sorted(exposures) if i not in removed],
        "files": describe_files([out_paths[name] for name in REQUEST_FILES]),
    }


def onion_stage(
    request_manifest: str | Path,
    method: str,
    hyper: dict[str, Any],
    replicate: ReplicateFiles,
    fisher_cfg: Any,
    trajectory: dict[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Remove the set of an onion request (``request_manifest``, written by
    ``onion_request_stage``; ``replicate`` carries its forget/retain/canary files) with
    ``method``; the controls' exposure before and after.

    Exposures come from the unlearning trajectory (skew-normal estimate over a fixed candidate
    sample, the same candidates before and after), so the change is measured on one scale.
    Fisher-based methods estimate the Fisher of this request's D+ (``replicate.fisher``, the
    main study's, is not read).
    """
    from ..unlearning import unlearn_stage  # torch-heavy; keeps selection importable alone

    request = read_json(request_manifest)
    removed = [int(i) for i in request["removed_canary_ids"]]
    with tempfile.TemporaryDirectory(prefix="onion-") as tmp:
        manifest = unlearn_stage(
            method,
            hyper,
            dataclasses.replace(replicate, fisher=None),
            fisher_cfg=fisher_cfg,
            trajectory=trajectory,
            out_dir=Path(tmp) / "model",
            device=device,
        )
    before, after = (_by_canary(manifest["trajectory"][i]) for i in (0, -1))
    controls = [int(i) for i in request["controls"]]
    return {
        "selection": request["selection"],
        "method": method,
        "estimator": "extrapolated",
        "removed_canary_ids": removed,
        "removed_rows": request["removed_rows"],
        "removed_original_exposure": request["removed_original_exposure"],
        "control_before": {str(i): before[i] for i in controls},
        "control_after": {str(i): after[i] for i in controls},
        "steps": manifest.get("steps"),
    }


def _by_canary(point: dict[str, Any]) -> dict[int, float]:
    """Exposure per canary id at one trajectory point."""
    return {int(c["canary_id"]): float(c["exposure"]) for c in point["canaries"]}
