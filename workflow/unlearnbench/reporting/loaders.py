"""Result files of the workflow -> tidy pandas frames (one row per observation).

Every loader takes the exact list of paths a report rule declares as inputs, so a table or
figure reads nothing its rule does not list. Where a file names its dataset and replicate only
through its path, the path is parsed: ``.../{dataset}/seed~{seed}/{leaf}[/{file}]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..provenance import read_json

# Model names of results/eval/{dataset}/seed~{seed}/{model}.json.
_MODEL_RE = re.compile(
    r"^(?:(?P<reference>original|retrained|retrained_reorder)"
    r"|dp_eps~(?P<eps>[0-9.e+-]+|inf)"
    r"|unlearned~(?P<method>[a-z0-9_]+)"
    r"|cycle~(?P<cycle>\d+)~(?P<cycle_method>[a-z0-9_]+)"
    r"|retrained_request~(?P<request>\d+)"
    r"|onion~(?P<onion>original|masked|random|reorder|unlearned))$"
)
# What a masked secret looks like (unlearnbench.corpora.privacy.mask_email / mask_phone):
# "j***@***.edu#1a2b3c4d", "***#1a2b3c4d", "<phone#1a2b3c4d>".
MASK_RE = re.compile(
    r"^(?:<phone#[0-9a-f]{8}>"
    r"|(?:[^\s@*]\*\*\*@[^\s@*]?\*\*\*\.[A-Za-z]{2,}|\*\*\*)#[0-9a-f]{8})$"
)


def parse_model(name: str) -> dict[str, Any]:
    """``dp_eps~4`` -> family dp, epsilon 4.0; ``cycle~2~fisher_removal`` -> cycle 2;
    ``retrained_request~1`` -> family retrained_request, cycle 1 (the gold standard of cycle
    request 1); ``onion~masked`` -> family onion, method masked (an arm of the onion study)."""
    match = _MODEL_RE.match(name)
    if not match:
        raise ValueError(
            f"model name {name!r}: not one of original, retrained, retrained_reorder, "
            "dp_eps~<eps>, unlearned~<method>, cycle~<k>~<method>, retrained_request~<k>, "
            "onion~<arm>"
        )
    g = match.groupdict()
    if g["request"]:
        cycle = int(g["request"])
        return {"family": "retrained_request", "method": None, "epsilon": math.nan, "cycle": cycle}
    if g["onion"]:
        return {"family": "onion", "method": g["onion"], "epsilon": math.nan, "cycle": 0}
    if g["reference"]:
        return {"family": g["reference"], "method": None, "epsilon": math.nan, "cycle": 0}
    if g["eps"]:
        return {"family": "dp", "method": None, "epsilon": float(g["eps"]), "cycle": 0}
    if g["method"]:
        return {"family": "unlearned", "method": g["method"], "epsilon": math.nan, "cycle": 1}
    return {
        "family": "cycle",
        "method": g["cycle_method"],
        "epsilon": math.nan,
        "cycle": int(g["cycle"]),
    }


def locate(path: str | Path) -> dict[str, Any]:
    """Dataset, seed and what follows them, from ``.../{dataset}/seed~{seed}/...``."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.startswith("seed~") and i > 0:
            return {"dataset": parts[i - 1], "seed": int(part[5:]), "rest": parts[i + 1 :]}
    raise ValueError(f"{path}: expected .../<dataset>/seed~<seed>/... in the path")


def commit_of(document: dict[str, Any]) -> str:
    git = document.get("provenance", {}).get("git", {})
    commit = str(git.get("commit", "unknown"))
    return commit + ("+dirty" if git.get("dirty") else "")


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def exposure_of(record: dict[str, Any]) -> tuple[float, str]:
    """Exact exposure where computed, else the skew-normal extrapolation; and which one."""
    if record.get("exposure_exact") is not None:
        return float(record["exposure_exact"]), "exact"
    if record.get("exposure_extrapolated") is not None:
        return float(record["exposure_extrapolated"]), "extrapolated"
    return math.nan, "none"


ROLES = ("removed", "tuning", "control", "phantom")
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")


def model_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar columns of one scored model (``evaluation.score_model``'s output)."""
    ppl = metrics["perplexity"]
    records = metrics.get("canaries", [])
    out: dict[str, Any] = {}
    for split in ("test", "validation", "retain_sample", "forget"):
        entry = ppl.get(split) or {}
        out[f"{split}_ppl"] = _num(entry.get("perplexity"))
        if split in ("test", "retain_sample"):
            out[f"kl_{split}"] = _num(entry.get("kl"))
    for role in ROLES:
        values = [exposure_of(r)[0] for r in records if r.get("role") == role]
        out[f"exposure_{role}_mean"] = float(np.mean(values)) if values else math.nan
        out[f"exposure_{role}_max"] = float(np.max(values)) if values else math.nan
        extracted = [bool(r.get("extracted")) for r in records if r.get("role") == role]
        out[f"extraction_{role}"] = float(np.mean(extracted)) if extracted else math.nan
    membership = metrics.get("membership") or {}
    for attack in ATTACKS:
        out[f"mia_{attack}"] = _num(membership.get(attack))
    quality = metrics.get("forget_quality") or {}
    out["ks_p_value"] = _num(quality.get("ks_p_value"))
    over = metrics.get("over_unlearning") or {}
    # No test (no phantoms, or no removed canaries scored) is unknown, not "not over-unlearned".
    out["over_unlearning"] = (
        math.nan if over.get("p_value") is None else float(bool(over.get("flag")))
    )
    return out


def load_evaluations(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per evaluated model (results/eval/.../{model}.json)."""
    rows = []
    for path in paths:
        doc = read_json(path)
        summary, ppl = doc["summary"], doc["perplexity"]
        estimator = "exact" if summary.get("exposure_exact_forget_mean") is not None else None
        estimator = estimator or "extrapolated"
        key = f"exposure_{estimator}"
        spaces = [c["space_size"] for c in doc.get("canaries", []) if c.get("space_size")]
        rows.append(
            {
                "dataset": doc["dataset"],
                "seed": int(doc["seed"]),
                "model": doc["model_name"],
                **parse_model(doc["model_name"]),
                "test_ppl": _num(ppl["test"]["perplexity"]),
                "retain_ppl": _num(ppl["retain_sample"]["perplexity"]),
                "forget_ppl": _num(ppl["forget"]["perplexity"]),
                "exposure_forget_mean": _num(summary.get(f"{key}_forget_mean")),
                "exposure_forget_max": _num(summary.get(f"{key}_forget_max")),
                "exposure_control_mean": _num(summary.get(f"{key}_control_mean")),
                "exposure_control_max": _num(summary.get(f"{key}_control_max")),
                "extraction_forget": _num(summary.get("extraction_rate_forget")),
                "extraction_control": _num(summary.get("extraction_rate_control")),
                "estimator": estimator,
                "ceiling_bits": math.log2(max(spaces)) if spaces else math.nan,
                "commit": commit_of(doc),
                **model_metrics(doc),
            }
        )
    return pd.DataFrame(rows)


def load_canaries(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per canary per evaluated model."""
    rows = []
    for path in paths:
        doc = read_json(path)
        for record in doc.get("canaries", []):
            exposure, estimator = exposure_of(record)
            rows.append(
                {
                    "dataset": doc["dataset"],
                    "seed": int(doc["seed"]),
                    "model": doc["model_name"],
                    **parse_model(doc["model_name"]),
                    "canary_id": int(record["canary_id"]),
                    "group": int(record.get("group", 0)),
                    "in_forget_set": bool(record["in_forget_set"]),
                    "role": record.get("role", "removed" if record["in_forget_set"] else "control"),
                    "repetitions": int(record["repetitions"]),
                    "space_size": int(record["space_size"]),
                    "exposure": exposure,
                    "estimator": estimator,
                    "log_perplexity": _num(record.get("secret_log_perplexity")),
                    "extracted": bool(record.get("extracted", False)),
                }
            )
    return pd.DataFrame(rows)


def load_model_costs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Cost (and DP accounting) of the stage that produced each model, from its manifest
    (results/models/{dataset}/seed~{seed}/{model}/train.json or unlearn.json)."""
    rows = []
    for path in paths:
        where = locate(path)
        doc = read_json(path)
        cost = doc.get("cost", {})
        rows.append(
            {
                "dataset": where["dataset"],
                "seed": where["seed"],
                "model": where["rest"][0],
                "wall_time_s": _num(cost.get("wall_time_s")),
                "peak_memory_mb": _num(cost.get("peak_memory_mb")),
                "epsilon_spent": _num(doc.get("epsilon")),
                "target_epsilon": _num(doc.get("target_epsilon")),
                "delta": _num(doc.get("delta")),
                "noise_multiplier": _num(doc.get("noise_multiplier")),
                "dp_lr": _num(doc.get("lr")),  # the rate the sweep chose (DP models only)
                "dp_steps": _num(doc.get("steps")),
                "commit": commit_of(doc),
            }
        )
    return pd.DataFrame(rows)


def histogram_edges(inner_edges: list[float], max_abs: float) -> list[float]:
    """The unlearning manifests bin theta' - theta at fixed inner edges with two open-ended
    outer bins; close those at the largest change (at least one decade past the last edge)."""
    outer = max(abs(inner_edges[-1]) * 10, max_abs)
    return [-outer, *inner_edges, outer]


def weight_delta_rows(where: Mapping[str, Any], method: str, delta: Mapping) -> list[dict]:
    """One row per layer type (incl. "all") of a weight-change histogram: bins and counts."""
    if not delta:
        return []
    inner = [float(b) for b in delta["bin_edges"]]
    kinds = {"all": delta["overall"], **delta.get("by_type", {})}
    return [
        {
            "dataset": where["dataset"],
            "seed": where["seed"],
            "method": method,
            "layer_type": layer_type,
            "bins": histogram_edges(inner, float(hist.get("max_abs") or 0.0)),
            "counts": [float(c) for c in hist["counts"]],
            "l2": _num(hist.get("l2")),
            "max_abs": _num(hist.get("max_abs")),
        }
        for layer_type, hist in kinds.items()
    ]


def load_benchmarks(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Snakemake benchmark TSVs (results/benchmarks/<rule>/<wildcards...>.tsv): one row per
    measured run, with the rule and the job's wildcards taken from the path."""
    frames = []
    for path in paths:
        parts = Path(path).with_suffix("").parts
        if "benchmarks" in parts:
            parts = parts[parts.index("benchmarks") + 1 :]
        frame = pd.read_csv(path, sep="\t")
        frame.insert(0, "job", "/".join(parts[1:]) or "-")
        frame.insert(0, "rule", parts[0])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["rule", "job", "s", "max_rss", "cpu_time"])
    out = pd.concat(frames, ignore_index=True)
    for column in ("s", "max_rss", "max_vms", "cpu_time", "mean_load"):
        if column in out:
            out[column] = pd.to_numeric(out[column], errors="coerce")
    return out


def check_masked(values: Iterable[Any], source: str) -> None:
    """Raise unless every value has the mask format (never echoing the offending value)."""
    for i, value in enumerate(values):
        if not isinstance(value, str) or not MASK_RE.match(value):
            raise ValueError(
                f"{source}: row {i} of column 'masked' is not a masked secret "
                "(expected e.g. 'j***@***.edu#1a2b3c4d' or '<phone#1a2b3c4d>'); "
                "regenerate the file with unlearnbench.corpora.privacy masking"
            )


def load_secrets(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Memorised real-world strings (results/realworld/{dataset}/seed~{seed}/secrets_{model}.csv),
    masked; the mask format is checked for every row."""
    frames = []
    for path in paths:
        where = locate(path)
        # secrets_original.csv, secrets_retrained.csv, secrets_unlearned~<method>.csv
        model = Path(path).stem.removeprefix("secrets_").removeprefix("unlearned~")
        frame = pd.read_csv(path, dtype={"masked": str, "kind": str})
        check_masked(frame["masked"], str(path))
        for flag in ("extracted", "memorised", "removed", "over_unlearned", "in_forget_set"):
            if flag in frame:
                frame[flag] = frame[flag].astype(str).str.lower().isin(["true", "1"])
        frame.insert(0, "model", model)
        frame.insert(0, "seed", where["seed"])
        frame.insert(0, "dataset", where["dataset"])
        frames.append(frame)
    columns = ["dataset", "seed", "model", "masked", "kind", "occurrences", "exposure", "extracted"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    # find_secrets/unlearn_realworld also write their own decisions (score over the held-out
    # baseline, memorised, removed, over-unlearned); keep them when present.
    decisions = (
        "memorisation",
        "excess",
        "memorised",
        "removed",
        "over_unlearned",
        "in_forget_set",
    )
    optional = [c for c in decisions if c in table]
    return table[columns + optional]


def load_scaling(path: str | Path) -> pd.DataFrame:
    """Fisher scaling measurements (results/scaling/fisher_scaling.csv)."""
    frame = pd.read_csv(path)
    missing = {"model_label", "d", "m", "gradient_s", "setup_s", "peak_memory_mb"} - set(frame)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return frame


def input_commits(paths: Iterable[str | Path]) -> list[str]:
    """Distinct code commits recorded in the provenance of JSON inputs (sorted)."""
    commits = set()
    for path in paths:
        if str(path).endswith(".json"):
            try:
                commits.add(commit_of(json.loads(Path(path).read_text())))
            except (OSError, ValueError):
                continue
    return sorted(commits)
