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
* ``onion``: two arms of the onion study (``studies.onion``: ``original``, ``masked``,
  ``random``, ``reorder``, ``unlearned``); a sibling's shift is its exposure (or secret
  log-perplexity) under the arm's model minus under the study's original model (0 for arm
  ``original``). ``masking_*_contrast`` = a treated template's sibling's shift minus a control
  template's sibling's of the same rank (the within-run contrast), paired by that unit;
  ``sibling_*_shift`` = a treated template's sibling's shift, paired by canary.
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

from ..canaries import read_canaries
from ..study_names import METRICS, ONION_ARMS, RESAMPLING, STUDIES
from . import loaders

COLUMNS = ["seed", "unit", "value"]


@dataclass(frozen=True)
class StudyFiles:
    """What the side studies wrote: evaluation files (results/eval/...), the onion study's
    canary tables (which sibling of which template, treated or not), the case study's scored
    tables."""

    evaluations: Sequence[str | Path] = ()
    onion_canaries: Sequence[str | Path] = ()
    secrets: Sequence[str | Path] = ()
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        """Loaded once per table: evals, canaries, onion_shifts, secrets."""
        if name not in self._cache:
            load = {
                "evals": lambda: loaders.load_evaluations(self.evaluations),
                "canaries": lambda: loaders.load_canaries(self.evaluations),
                "onion_shifts": lambda: onion_sibling_shifts(self),
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
    if study == "onion" and not {rule.get("a"), rule.get("b")} <= set(ONION_ARMS):
        raise ValueError(
            f"claim {rule.get('id')!r}: onion arms {rule.get('a')!r}, {rule.get('b')!r}"
        )
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


def sibling_shifts(canaries: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Per arm and non-masker sibling: exposure and log-perplexity under the arm's model minus
    under the study's original model (``change``, ``log_perplexity_change``).

    ``canaries``: the study's canary table (with ``template_index``, ``sibling``, ``treated``);
    ``scores``: one row per (arm, canary_id) with ``exposure`` and ``log_perplexity``, arm
    ``original`` included."""
    siblings = canaries[(canaries["sibling"] > 0)].set_index("canary_id")
    original = scores[scores["arm"] == "original"].set_index("canary_id")
    rows = []
    for r in scores[scores["arm"] != "original"].itertuples(index=False):
        if r.canary_id not in siblings.index or r.canary_id not in original.index:
            continue
        sibling = siblings.loc[r.canary_id]
        base = original.loc[r.canary_id]
        rows.append(
            {
                "arm": r.arm,
                "canary_id": int(r.canary_id),
                "template_index": int(sibling["template_index"]),
                "sibling": int(sibling["sibling"]),
                "treated": bool(sibling["treated"]),
                "change": float(r.exposure - base["exposure"]),
                "log_perplexity_change": float(r.log_perplexity - base["log_perplexity"]),
            }
        )
    columns = ["arm", "canary_id", "template_index", "sibling", "treated", "change"]
    return pd.DataFrame(rows, columns=[*columns, "log_perplexity_change"])


def masking_contrasts(shifts: pd.DataFrame, value: str) -> pd.DataFrame:
    """The within-run contrast of each arm: a treated template's sibling's shift minus a
    control template's sibling's of the same rank, pairing the k-th treated template with the
    k-th control template (both in index order). With equal halves the mean over the pairs is
    the difference of the two groups' means, and resampling the pairs resamples both groups.
    Columns ``arm``, ``unit`` ("pair<k>/sibling<r>"), ``value``."""
    rows = []
    for arm, mine in shifts.groupby("arm", sort=True):
        for rank, group in mine.groupby("sibling", sort=True):
            treated = group[group["treated"]].sort_values("template_index")[value].tolist()
            control = group[~group["treated"]].sort_values("template_index")[value].tolist()
            for k, (t, c) in enumerate(zip(treated, control, strict=False)):
                rows.append({"arm": arm, "unit": f"pair{k}/sibling{rank}", "value": t - c})
    return pd.DataFrame(rows, columns=["arm", "unit", "value"])


def onion_sibling_shifts(files: StudyFiles) -> pd.DataFrame:
    """Per replicate, arm and non-masker sibling of the onion study: its shift under the arm's
    model (``studies.onion.sibling_shifts``), with ``dataset`` and ``seed``."""
    canaries = files.table("canaries")
    frames = []
    if not canaries.empty:
        onion = canaries[canaries["family"] == "onion"].rename(columns={"method": "arm"})
        for path in files.onion_canaries:
            where = loaders.locate(path)
            scores = onion[
                (onion["dataset"] == where["dataset"]) & (onion["seed"] == where["seed"])
            ]
            shifts = sibling_shifts(read_canaries(path), scores)
            frames.append(shifts.assign(dataset=where["dataset"], seed=where["seed"]))
    if not frames:
        return pd.DataFrame(columns=["dataset", "seed", "arm", "canary_id", "change"])
    return pd.concat(frames, ignore_index=True)


def _with_original(long: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The study's original model as an arm of its own: every unit's shift is 0 under it."""
    zero = long.drop_duplicates(["dataset", "seed", unit]).assign(arm="original", value=0.0)
    return pd.concat([long, zero], ignore_index=True)


def _onion(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    shifts = files.table("onion_shifts")
    if shifts.empty:
        return _frame([])
    metric = rule["metric"]
    value = "log_perplexity_change" if "log_perplexity" in metric else "change"
    if metric.startswith("masking_"):
        long = pd.concat(
            [
                masking_contrasts(mine, value).assign(dataset=dataset, seed=seed)
                for (dataset, seed), mine in shifts.groupby(["dataset", "seed"], sort=True)
            ],
            ignore_index=True,
        )
        unit = "unit"
    else:
        long = shifts[shifts["treated"].astype(bool)].rename(columns={value: "value"})
        unit = "canary_id"
    if long.empty:
        return _frame([])
    return _paired(_with_original(long, unit), "arm", unit, "value", rule["a"], rule["b"])


def _realworld(rule: Mapping[str, Any], files: StudyFiles) -> pd.DataFrame:
    secrets = files.table("secrets")
    if secrets.empty or "excess" not in secrets or "in_forget_set" not in secrets:
        return _frame([])
    a = rule["a"].removeprefix("unlearned~")
    b = rule["b"].removeprefix("unlearned~")
    requested = secrets[secrets["in_forget_set"].astype(bool)]
    return _paired(requested, "model", "masked", "excess", a, b)
