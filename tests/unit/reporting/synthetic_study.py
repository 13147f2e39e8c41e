"""A small synthetic study on disk, with known numbers, in the formats the workflow writes.

Metrics files (results/eval/...), frontier files (results/frontier/...), training manifests,
onion-effect runs: for 2 datasets x 3 seeds. Every number is a function below, so a test
computes what a table or figure must show without reading the files back. The formats follow a
finished smoke run (results/eval/<dataset>/seed~0/original.json, results/frontier/<dataset>/
seed~0/<method>.json). Used by the ``study`` fixture (conftest.py) of the reporting tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = ["news", "wiki"]
SEEDS = [0, 1, 2]
METHODS = ["fisher_removal", "gradient_ascent"]
EPSILONS = ["1", "8"]
REFERENCES = ["original", "retrained", "retrained_reorder"]
K = 2  # unlearning requests (cycles)
SPACE = 10**4
CEILING = math.log2(SPACE)
COMMIT = "abc123def4567890"
ROLES = ("removed", "tuning", "control", "phantom")
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")

# Every model's canaries: (canary_id, role, request group, repetitions), as
# unlearnbench.canaries deals them: removed and tuning canaries are in the forget set (groups
# 1..K), controls stay in D+, phantoms were never inserted (group 0, 0 repetitions).
CANARIES = [
    (0, "removed", 1, 1),
    (1, "removed", 2, 4),
    (2, "tuning", 1, 1),
    (3, "tuning", 2, 4),
    (4, "control", 0, 1),
    (5, "control", 0, 4),
    (6, "phantom", 0, 0),
    (7, "phantom", 0, 0),
]
REMOVED_IDS = [c for c, role, _, _ in CANARIES if role == "removed"]
# The k-th canary of a role has exposure <role value> + SPREAD[k]: role mean = value + 0.1,
# role max = value + 0.2.
SPREAD = (0.0, 0.2)
MEAN_SPREAD = float(np.mean(SPREAD))
CYCLE_DROP = 5.0  # a cycle model's canaries of requests 1..k lose this many bits

BASE = {
    "test_ppl": 100.0,
    "validation_ppl": 95.0,
    "retain_sample_ppl": 90.0,
    "forget_ppl": 80.0,
    "removed": 8.0,
    "tuning": 7.0,
    "control": 3.0,
    "phantom": 1.0,
    "kl_test": 0.2,
    "kl_retain_sample": 0.1,
    "mia": 0.6,
    "ks": 0.3,
}


def value(dataset: str, seed: int, model: str, what: str) -> float:
    """A distinct, known number for every (dataset, seed, model, metric)."""
    scale = 1.0 + 0.2 * DATASETS.index(dataset) + 0.05 * seed
    return BASE[what] * scale + 0.001 * (sum(map(ord, model)) % 97)


# ---- frontiers ------------------------------------------------------------------------------

# Per method, its grid points in file order: knobs, strength, removed-canary exposure (before
# the replicate's shift) and test perplexity as a multiple of the same replicate's original.
# gradient_ascent's points are not in strength order; fisher_removal's last point diverged.
GRID: dict[str, list[tuple[dict[str, float], float, float | None, float | None]]] = {
    "fisher_removal": [
        ({"gamma": 0.001}, 0.001, 6.0, 1.01),
        ({"gamma": 0.01}, 0.01, 4.0, 1.02),
        ({"gamma": 0.1}, 0.1, 2.0, 1.04),
        ({"gamma": 1.0}, 1.0, None, None),
    ],
    "gradient_ascent": [
        ({"lr": 1e-4, "steps": 2}, 2e-4, 7.0, 1.005),
        ({"lr": 1e-4, "steps": 1}, 1e-4, 7.5, 1.002),
        ({"lr": 1e-3, "steps": 1}, 1e-3, 6.0, 1.01),
    ],
}
SELECTION = {
    "fisher_removal": {"matched_erasure": 2, "matched_utility": 1},
    "gradient_ascent": {"matched_erasure": 2, "matched_utility": 0},
}
# The one operating point a replicate never reached (index null in its frontier file).
UNREACHED = ("wiki", 2, "gradient_ascent", "matched_erasure")
OVER_UNLEARNED = ("fisher_removal", 2)  # the one grid point flagged as over-unlearned


def selected_index(dataset: str, seed: int, method: str, selection: str) -> int | None:
    if (dataset, seed, method, selection) == UNREACHED:
        return None
    return SELECTION[method][selection]


def point_label(method: str, index: int) -> str:
    return f"{method}~{index}"


def point_removed(dataset: str, seed: int, method: str, index: int) -> float:
    """Removed-canary exposure of a grid point (before SPREAD). It shifts with the replicate,
    twice as fast for the second method: paired differences vary between replicates."""
    shift = (0.1 * seed + 0.5 * DATASETS.index(dataset)) * (1 + METHODS.index(method))
    return GRID[method][index][2] + shift


def point_ppl(dataset: str, seed: int, method: str, index: int) -> float:
    return value(dataset, seed, "original", "test_ppl") * GRID[method][index][3]


def point_seconds(method: str, index: int) -> float:
    return 0.5 * (index + 1) + METHODS.index(method)


def point_l2(method: str, index: int) -> float:
    return 0.1 * (index + 1) + 0.01 * METHODS.index(method)


# ---- metrics --------------------------------------------------------------------------------


def canary_exposures(
    dataset: str, seed: int, model: str, removed: float | None = None
) -> dict[int, float]:
    """Exposure of every canary of a model (``removed`` replaces the removed canaries' value;
    a cycle~k model's canaries of requests 1..k are CYCLE_DROP bits lower)."""
    cycle = int(model.split("~")[1]) if model.startswith("cycle~") else 0
    seen: Counter[str] = Counter()
    out = {}
    for cid, role, group, _ in CANARIES:
        base = removed if role == "removed" and removed is not None else None
        base = value(dataset, seed, model, role) if base is None else base
        out[cid] = base + SPREAD[seen[role]] - (CYCLE_DROP if 1 <= group <= cycle else 0.0)
        seen[role] += 1
    return out


def metrics(
    dataset: str,
    seed: int,
    model: str,
    removed: float | None = None,
    test_ppl: float | None = None,
    over: bool = False,
) -> dict[str, Any]:
    """A scored model (evaluation.score_model's output): perplexity, canaries, summary,
    membership, forget_quality, over_unlearning, fingerprint."""

    def v(what: str) -> float:
        return value(dataset, seed, model, what)

    exposures = canary_exposures(dataset, seed, model, removed)
    records = []
    seen: Counter[str] = Counter()
    for cid, role, group, reps in CANARIES:
        k = seen[role]
        seen[role] += 1
        records.append(
            {
                "canary_id": cid,
                "candidates_scored": 1111,
                "estimator": "exact",
                "exposure_exact": exposures[cid],
                "extracted": model == "original" and role == "removed" and k == 1,
                "group": group,
                "in_forget_set": role in ("removed", "tuning"),
                "rank": 1,
                "repetitions": reps,
                "role": role,
                "secret_log_perplexity": 20.0,
                "space_size": SPACE,
            }
        )
    ppl = {
        "test": test_ppl if test_ppl is not None else v("test_ppl"),
        "validation": v("validation_ppl"),
        "retain_sample": v("retain_sample_ppl"),
        "forget": v("forget_ppl"),
    }
    kl = {"test": v("kl_test"), "retain_sample": v("kl_retain_sample")}
    perplexity = {
        split: {
            "examples": 5,
            "kl": kl.get(split),
            "loss": math.log(p),
            "perplexity": p,
            "tokens": 100,
        }
        for split, p in ppl.items()
    }
    return {
        "canaries": records,
        "fingerprint": "f" * 64,
        "forget_quality": {"ks_p_value": v("ks"), "ks_statistic": 0.5},
        "membership": {a: v("mia") + 0.01 * i for i, a in enumerate(ATTACKS)},
        "over_unlearning": {"flag": over, "p_value": 0.01 if over else 1.0},
        "perplexity": perplexity,
        "summary": summary(records),
    }


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``summary`` block of a metrics file: per role and for the whole forget set."""
    parts = {role: [r for r in records if r["role"] == role] for role in ROLES}
    parts["forget"] = [r for r in records if r["in_forget_set"]]
    out: dict[str, Any] = {}
    for part, chosen in parts.items():
        values = [r["exposure_exact"] for r in chosen]
        out[f"exposure_exact_{part}_mean"] = float(np.mean(values))
        out[f"exposure_exact_{part}_max"] = float(np.max(values))
        out[f"exposure_extrapolated_{part}_mean"] = None
        out[f"exposure_extrapolated_{part}_max"] = None
        out[f"extraction_rate_{part}"] = float(np.mean([r["extracted"] for r in chosen]))
        out[f"{part}_canaries"] = len(chosen)
    return out


def provenance() -> dict[str, Any]:
    return {"git": {"commit": COMMIT, "dirty": False}, "params": {}, "seeds": {}}


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def write_eval(root: Path, dataset: str, seed: int, model: str) -> Path:
    doc = {
        "dataset": dataset,
        "seed": seed,
        "model_name": model,
        "model": f"results/models/{dataset}/seed~{seed}/{model}",
        **metrics(dataset, seed, model),
        "provenance": provenance(),
        "cost": {"wall_time_s": 1.0, "peak_memory_mb": 10.0},
        "checksum": "0" * 64,
    }
    return _write(root / f"results/eval/{dataset}/seed~{seed}/{model}.json", doc)


def write_manifest(root: Path, dataset: str, seed: int, model: str, **extra: Any) -> Path:
    path = root / f"results/models/{dataset}/seed~{seed}/{model}/train.json"
    cost = {"wall_time_s": 10.0 * (seed + 1), "peak_memory_mb": 100.0 + seed}
    return _write(path, {"cost": cost, "provenance": provenance(), **extra})


def weight_delta(l2: float) -> dict[str, Any]:
    """A weight-change histogram (unlearnbench.unlearning.weight_delta's format)."""
    inner = [-(10.0**e) for e in range(0, -9, -1)] + [10.0**e for e in range(-8, 1)]
    counts = [0] * (len(inner) + 1)
    counts[8:11] = [5, 80, 5]
    hist = {"counts": counts, "l2": l2, "max_abs": 0.1}
    return {"bin_edges": inner, "overall": hist, "by_type": {"attention": hist, "mlp": hist}}


def frontier_point(dataset: str, seed: int, method: str, index: int) -> dict[str, Any]:
    knobs, strength, removed, _ = GRID[method][index]
    hyper = {"iterations": 1, **knobs}
    if removed is None:  # lost to divergence: no metrics, never selected
        return {"hyper": hyper, "knobs": knobs, "strength": strength, "diverged": True,
                "metrics": None}  # fmt: skip
    return {
        "hyper": hyper,
        "knobs": knobs,
        "strength": strength,
        "diverged": False,
        "metrics": metrics(
            dataset,
            seed,
            point_label(method, index),
            removed=point_removed(dataset, seed, method, index),
            test_ppl=point_ppl(dataset, seed, method, index),
            over=(method, index) == OVER_UNLEARNED,
        ),
        "weight_delta": weight_delta(point_l2(method, index)),
        "seconds": {"unlearning": point_seconds(method, index), "scoring": 0.5},
    }


def write_frontier(root: Path, dataset: str, seed: int, method: str) -> Path:
    selection = {}
    for name in ("matched_erasure", "matched_utility"):
        index = selected_index(dataset, seed, method, name)
        selection[name] = {
            "index": index,
            "rule": f"synthetic rule of {name}",
            "reason": None if index is not None else "no grid point reaches the target",
        }
    knob_names = sorted(GRID[method][0][0])
    doc = {
        "method": method,
        "base_hyper": {"iterations": 1, **GRID[method][0][0]},
        "grid": {k: sorted({p[0][k] for p in GRID[method]}) for k in knob_names},
        "strength_knobs": knob_names,
        "points": [frontier_point(dataset, seed, method, i) for i in range(len(GRID[method]))],
        "selection": selection,
        "target": {"tuning_exposure": 5.0, "validation_perplexity_budget": 120.0},
        "seconds": 3.0,
        "provenance": provenance(),
        "cost": {"wall_time_s": 3.5, "peak_memory_mb": 50.0},
        "checksum": "0" * 64,
    }
    return _write(root / f"results/frontier/{dataset}/seed~{seed}/{method}.json", doc)


# The onion study: templates 0..3 with a masker (ids 0..3, sibling 0) and one measured sibling
# each (ids 4..7, sibling 1); templates 0 and 2 treated. A sibling's exposure under an arm is
# ONION_BASE + 0.1 * id plus the arm's shift for its half (treated, control); its secret
# log-perplexity is minus its exposure.
ONION_TREATED = (0, 2)
ONION_BASE = 2.0
ONION_SHIFT = {
    "original": (0.0, 0.0),
    "masked": (1.5, 0.3),
    "random": (0.2, 0.2),
    "reorder": (0.1, 0.1),
    "unlearned": (0.6, 0.0),
}


def onion_canary_table() -> list[dict[str, Any]]:
    return [
        {
            "canary_id": cid,
            "template": f"code {cid % 4} is {{secret}}",
            "prefix": f"code {cid % 4} is ",
            "secret": f"{1000 + cid}",
            "text": f"code {cid % 4} is {1000 + cid}",
            "repetitions": 8 if cid < 4 else 4,
            "group": int(cid < 4 and cid % 4 in ONION_TREATED),
            "in_forget_set": cid < 4 and cid % 4 in ONION_TREATED,
            "randomness_space": SPACE,
            "role": "removed" if cid < 4 and cid % 4 in ONION_TREATED else "control",
            "template_index": cid % 4,
            "sibling": cid // 4,
            "treated": cid % 4 in ONION_TREATED,
        }
        for cid in range(8)
    ]


def onion_exposure(arm: str, cid: int) -> float:
    treated, control = ONION_SHIFT[arm]
    return ONION_BASE + 0.1 * cid + (treated if cid % 4 in ONION_TREATED else control)


def write_onion_canaries(root: Path, dataset: str, seed: int) -> Path:
    import pandas as pd

    path = root / f"results/onion/{dataset}/seed~{seed}/data/canaries.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(onion_canary_table()).to_csv(path, index=False)
    return path


def write_onion_eval(root: Path, dataset: str, seed: int, arm: str) -> Path:
    path = write_eval(root, dataset, seed, f"onion~{arm}")
    doc = json.loads(path.read_text())
    doc["canaries"] = [
        {
            "canary_id": row["canary_id"],
            "exposure_exact": onion_exposure(arm, row["canary_id"]),
            "secret_log_perplexity": -onion_exposure(arm, row["canary_id"]),
            "group": row["group"],
            "in_forget_set": row["in_forget_set"],
            "repetitions": row["repetitions"],
            "role": row["role"],
            "space_size": SPACE,
            "estimator": "exact",
        }
        for row in onion_canary_table()
    ]
    return _write(path, doc)


# ---- the whole study ------------------------------------------------------------------------


@dataclass
class Study:
    root: Path
    references: list[Path] = field(default_factory=list)  # original, retrained, its twin
    dp: list[Path] = field(default_factory=list)  # dp_eps~<eps> metrics files
    cycles: list[Path] = field(default_factory=list)  # cycle~<k>~<method> metrics files
    train: list[Path] = field(default_factory=list)  # train.json of the references
    dp_train: list[Path] = field(default_factory=list)  # train.json of the DP models
    frontiers: list[Path] = field(default_factory=list)
    onion: list[Path] = field(default_factory=list)  # onion~<arm> metrics
    onion_canaries: list[Path] = field(default_factory=list)  # the onion canary tables
    cycle_retrains: list[Path] = field(default_factory=list)  # retrained_request~<k> metrics

    def only(self, paths: list[Path], **where: Any) -> list[Path]:
        """The paths of one dataset and/or seed."""
        keep = []
        for path in paths:
            text = str(path)
            if "dataset" in where and f"/{where['dataset']}/" not in text:
                continue
            if "seed" in where and f"/seed~{where['seed']}/" not in text:
                continue
            keep.append(path)
        return keep


def build_study(root: Path) -> Study:
    study = Study(root)
    for d in DATASETS:
        for s in SEEDS:
            for model in REFERENCES:
                study.references.append(write_eval(root, d, s, model))
                study.train.append(write_manifest(root, d, s, model))
            for eps in EPSILONS:
                model = f"dp_eps~{eps}"
                study.dp.append(write_eval(root, d, s, model))
                study.dp_train.append(
                    write_manifest(root, d, s, model, epsilon=float(eps) * 0.98,
                                   target_epsilon=float(eps), delta=1e-5)
                )  # fmt: skip
            for m in METHODS:
                study.frontiers.append(write_frontier(root, d, s, m))
                for k in range(1, K + 1):
                    study.cycles.append(write_eval(root, d, s, f"cycle~{k}~{m}"))
            for arm in ONION_SHIFT:
                study.onion.append(write_onion_eval(root, d, s, arm))
            study.onion_canaries.append(write_onion_canaries(root, d, s))
            for k in range(1, K):
                study.cycle_retrains.append(write_eval(root, d, s, f"retrained_request~{k}"))
    return study
