"""The side studies' claims as measurements for ``claims.evaluate_claims``.

Each rule of ``claims.studies`` names a study, a metric and the two arms ``a`` and ``b`` it
contrasts; this module turns the files that study wrote into a frame of ``seed`` (the
replicate, ``dataset/seed``), ``unit`` and ``value`` = metric under ``a`` minus under ``b``,
paired by unit wherever the study pairs them:

* ``models``: two models of the same replicate (e.g. ``dp_eps~8`` and ``retrained``), from
  their evaluation files: ``test_log_perplexity`` (one unit per replicate) or a canary
  exposure of one role (``removed_exposure``, ``control_exposure``; paired by canary).
* ``cycles``: two methods of the multi-request study; ``cumulative_utility_gap`` = the sum over
  requests k of (test log-perplexity after request k minus that of request k's retrained
  model, trained on D minus groups 1..k; the retrained model itself after the last request).
* ``onion``: two selections (``targeted``, ``random``) of the onion study, by ``point``
  ``retrain`` (the retrained models on D minus S, exact exposure) or ``unlearn`` (the
  unlearning arm, the trajectory's estimate); ``control_exposure_shift`` or
  ``control_log_perplexity_shift`` (exact arm only) = exposure after minus before, paired by
  canary over the canaries in neither selection's S.
* ``realworld``: two scored models of the case study (e.g. ``unlearned~fisher_removal`` and
  ``retrained``); ``requested_excess`` = excess memorisation (bits) of each requested string.

``resample: units`` (a study run on one replicate) pools every replicate's units under one
seed label, so the bootstrap resamples units only: the interval ignores training noise, and
the table marks such a claim exploratory. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..provenance import read_json
from ..study_names import METRICS, ONION_POINTS, RESAMPLING, STUDIES
from . import loaders

COLUMNS = ["seed", "unit", "value"]


@dataclass(frozen=True)
class StudyFiles:
    """What the side studies wrote: evaluation files (results/eval/...), the onion study's
    request manifests and unlearning results, the case study's scored tables."""

    evaluations: Sequence[str | Path] = ()
    onion_requests: Sequence[str | Path] = ()
    onion_unlearned: Sequence[str | Path] = ()
    secrets: Sequence[str | Path] = ()
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        """Loaded once per table: evals, canaries, onion_unlearned, secrets."""
        if name not in self._cache:
            load = {
                "evals": lambda: loaders.load_evaluations(self.evaluations),
                "canaries": lambda: loaders.load_canaries(self.evaluations),
                "onion_unlearned": lambda: loaders.load_onion(self.onion_unlearned),
                "secrets": lambda: loaders.load_secrets(self.secrets),
            }[name]
            self._cache[name] = load()
        return self._cache[name]


def check_rule(rule: Mapping[str, Any]) -> None:
    """Raise ValueError for a rule this module cannot compute (the config check,
    ``settings.rules``, gives the user-facing message before any job runs)."""
    study, metric = rule.get("study"), rule.get("metric")
    if study not in STUDIES or metric not in METRICS[study]:
        raise ValueError(f"claim {rule.get('id')!r}: no metric {metric!r} in study {study!r}")
    if study == "onion" and rule.get("point") not in ONION_POINTS:
        raise ValueError(f"claim {rule.get('id')!r}: onion point {rule.get('point')!r}")
    if rule.get("resample", "replicates") not in RESAMPLING:
        raise ValueError(f"claim {rule.get('id')!r}: resample {rule.get('resample')!r}")


def study_claim_data(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    """The rule's measurements (``COLUMNS``); empty where the study wrote nothing for it."""
    check_rule(rule)
    data = {
        "models": _models,
        "cycles": _cycles,
        "onion": _onion,
        "realworld": _realworld,
    }[rule["study"]](rule, files)
    if rule.get("resample", "replicates") == "units" and len(data):
        data = data.assign(unit=data["seed"] + "/" + data["unit"], seed="pooled")
    return data.reset_index(drop=True)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def _replicate(dataset: Any, seed: Any) -> str:
    return f"{dataset}/{seed}"


def _paired(long: pd.DataFrame, arm: str, unit: str, value: str, a: str, b: str) -> pd.DataFrame:
    """a - b of ``value`` per (dataset, seed, ``unit``) where both arms (column ``arm``) have
    it: the units both arms measured, paired."""
    wide = long.pivot_table(index=["dataset", "seed", unit], columns=arm, values=value)
    if a not in wide or b not in wide:
        return _frame([])
    diff = (wide[a] - wide[b]).dropna().rename("value").reset_index()
    return _frame(
        [
            {"seed": _replicate(d, s), "unit": str(u), "value": v}
            for d, s, u, v in diff[["dataset", "seed", unit, "value"]].itertuples(index=False)
        ]
    )


def _models(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    a, b, metric = rule["a"], rule["b"], rule["metric"]
    if metric == "test_log_perplexity":
        evals = files.table("evals")
        if evals.empty:
            return _frame([])
        per_replicate = evals.assign(unit="replicate", log_ppl=np.log(evals["test_ppl"]))
        return _paired(per_replicate, "model", "unit", "log_ppl", a, b)
    role = metric.removesuffix("_exposure")
    canaries = files.table("canaries")
    if canaries.empty:
        return _frame([])
    return _paired(canaries[canaries["role"] == role], "model", "canary_id", "exposure", a, b)


def gold_standard_models(evals: pd.DataFrame) -> pd.DataFrame:
    """Request k's retrained model per cycle k (column ``cycle``): retrained_request~k for
    k < K, the retrained model (every group gone) for the last request K."""
    cycles = evals[evals["family"] == "cycle"]["cycle"] if len(evals) else pd.Series([])
    if cycles.empty:
        return evals.iloc[0:0]
    last = int(cycles.max())
    gold = evals[(evals["family"] == "retrained_request") & (evals["cycle"] < last)]
    final = evals[evals["family"] == "retrained"].assign(cycle=last)
    return pd.concat([gold, final], ignore_index=True)


def cumulative_utility_gaps(evals: pd.DataFrame) -> pd.DataFrame:
    """Per replicate and cycle method: the sum over requests of (test log-perplexity after the
    request minus its retrained model's), and the requests counted (only replicates with every
    request's gold standard count)."""
    gold = gold_standard_models(evals)
    if gold.empty:
        return pd.DataFrame(columns=["dataset", "seed", "method", "gap", "requests"])
    target = {(r.dataset, r.seed, r.cycle): np.log(r.test_ppl) for r in gold.itertuples()}
    cyc = evals[evals["family"] == "cycle"]
    last = int(cyc["cycle"].max())
    rows = []
    for (dataset, seed, method), mine in cyc.groupby(["dataset", "seed", "method"], sort=True):
        gaps = [
            np.log(r.test_ppl) - target[(dataset, seed, r.cycle)]
            for r in mine.itertuples()
            if (dataset, seed, r.cycle) in target
        ]
        if len(gaps) == last == len(mine):
            rows.append(
                {
                    "dataset": dataset,
                    "seed": seed,
                    "method": method,
                    "gap": float(np.sum(gaps)),
                    "requests": last,
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "seed", "method", "gap", "requests"])


def _cycles(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    evals = files.table("evals")
    if evals.empty:
        return _frame([])
    gaps = cumulative_utility_gaps(evals).assign(unit="replicate")
    return _paired(gaps, "method", "unit", "gap", rule["a"], rule["b"])


def onion_retrain_shifts(files: StudyFiles) -> pd.DataFrame:
    """Per replicate, selection and canary outside that selection's S (``removed``: its size):
    exact exposure and log-perplexity of the secret under the original model and the model
    retrained on D minus S, and their changes (``change``, ``log_perplexity_change``)."""
    canaries = files.table("canaries")
    columns = [
        "dataset",
        "seed",
        "selection",
        "removed",
        "canary_id",
        "before",
        "after",
        "change",
        "log_perplexity_change",
    ]
    if canaries.empty:
        return pd.DataFrame(columns=columns)
    removed = {}
    for path in files.onion_requests:
        where = loaders.locate(path)
        request = read_json(path)
        key = (where["dataset"], where["seed"], request["selection"])
        removed[key] = {int(i) for i in request["removed_canary_ids"]}
    inserted = canaries[canaries["role"] != "phantom"]
    original = inserted[inserted["family"] == "original"].set_index(
        ["dataset", "seed", "canary_id"]
    )
    rows = []
    for r in inserted[inserted["family"] == "onion"].itertuples():
        key = (r.dataset, r.seed, r.method)
        if key not in removed or r.canary_id in removed[key]:
            continue
        base = original.loc[(r.dataset, r.seed, r.canary_id)]
        rows.append(
            {
                "dataset": r.dataset,
                "seed": r.seed,
                "selection": r.method,
                "removed": len(removed[key]),
                "canary_id": r.canary_id,
                "before": base["exposure"],
                "after": r.exposure,
                "change": r.exposure - base["exposure"],
                "log_perplexity_change": r.log_perplexity - base["log_perplexity"],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _onion(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    if rule["point"] == "retrain":
        shifts = onion_retrain_shifts(files)
        value = "change" if rule["metric"] == "control_exposure_shift" else "log_perplexity_change"
    else:
        shifts = files.table("onion_unlearned")
        value = "change"
    if shifts.empty:
        return _frame([])
    # Canaries in neither selection's S: each is a control of both requests (paired).
    return _paired(shifts, "selection", "canary_id", value, rule["a"], rule["b"])


def _realworld(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    secrets = files.table("secrets")
    if secrets.empty or "excess" not in secrets or "in_forget_set" not in secrets:
        return _frame([])
    a = rule["a"].removeprefix("unlearned~")
    b = rule["b"].removeprefix("unlearned~")
    requested = secrets[secrets["in_forget_set"].astype(bool)]
    return _paired(requested, "model", "masked", "excess", a, b)
