"""The fair comparison's tables: every method at its two operating points beside the original,
the retrained model and its twin (main results), and the claims with their verdicts.

Each method appears twice, at the points chosen on the tuning canaries and the validation
split (``unlearning.frontier``): matched erasure and matched utility. Values are mean ± sample
std over the replicates that reached the point (``reached``: of how many).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import claims, frontiers, loaders, study_claims
from .render import Table, fmt, fmt_mean_std
from .tables import PRETTY, _write, aggregate

REFERENCES = {
    "original": "original",
    "retrained": "retrained (the target)",
    "retrained_reorder": "retrained, other data order (noise floor)",
}
SELECTION_LABELS = {"matched_erasure": "matched erasure", "matched_utility": "matched utility"}
METRICS = {
    "exposure_removed_mean": ("removed exposure (bits)", 2),
    "exposure_control_mean": ("control exposure (bits)", 2),
    "exposure_phantom_mean": ("phantom exposure (bits)", 2),
    "test_ppl": ("test perplexity", 1),
    "ppl_change_pct": ("Δ test perplexity (%)", 1),
    "kl_test": ("KL to retrained (nats/token)", 3),
    "mia_loss": ("MIA AUC (loss)", 2),
    "ks_p_value": ("forget quality (KS p)", 2),
    "over_unlearning": ("over-unlearned (share)", 2),
    "unlearning_s": ("unlearning time (s)", 1),
}


def _with_change(frame: pd.DataFrame, original: pd.Series) -> pd.DataFrame:
    key = pd.Series(list(zip(frame["dataset"], frame["seed"], strict=True)))
    base = key.map(original).to_numpy()
    return frame.assign(ppl_change_pct=100.0 * (frame["test_ppl"].to_numpy() / base - 1.0))


def protocol_table(
    evals: pd.DataFrame, selected: pd.DataFrame, methods: Sequence[str] = ()
) -> Table:
    """Per dataset: the references, then every method at each operating point."""
    original = evals[evals["model"] == "original"].set_index(["dataset", "seed"])["test_ppl"]
    refs = evals[evals["model"].isin(REFERENCES)].copy()
    refs["label"] = refs["model"].map(REFERENCES)
    refs["unlearning_s"] = float("nan")
    refs["order"] = refs["model"].map(list(REFERENCES).index)
    points = selected[selected["reached"]].copy()
    rank = {m: i for i, m in enumerate(methods)}
    points["label"] = [
        f"{PRETTY.get(m, m)}, {SELECTION_LABELS[s]}"
        for m, s in zip(points["method"], points["selection"], strict=True)
    ]
    points["order"] = [
        10 + 2 * rank.get(m, len(rank)) + list(SELECTION_LABELS).index(s)
        for m, s in zip(points["method"], points["selection"], strict=True)
    ]
    frame = _with_change(pd.concat([refs, points], ignore_index=True), original)
    agg = aggregate(frame, ["dataset", "order", "label"], list(METRICS))
    replicates = frame.groupby("dataset")["seed"].nunique()
    agg["reached"] = [
        f"{n}/{replicates[d]}" for d, n in zip(agg["dataset"], agg["n_seeds"], strict=True)
    ]
    agg = agg.sort_values(["dataset", "order"], kind="stable").drop(columns="order")
    display = pd.DataFrame(
        {"dataset": agg["dataset"], "model": agg["label"], "replicates": agg["reached"]}
    )
    for metric, (label, digits) in METRICS.items():
        display[label] = [
            fmt_mean_std(m, s, digits)
            for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"], strict=True)
        ]
    notes = [
        "Operating points chosen per method and replicate on the tuning canaries and the "
        "validation split only (never the evaluation canaries or the test split): matched "
        "erasure = the weakest grid point whose tuning canaries reach the retrained model's "
        "exposure, within its distance to its twin (the noise floor); matched utility = the "
        "strongest within the validation-perplexity budget. "
        "'replicates' = how many replicates reached the point.",
        "Exposure in bits of the removed (evaluation) canaries, the controls kept in D+ and the "
        "phantoms (never inserted: chance). KL: per token on the test split. MIA AUC: loss "
        "attack, removed canaries against phantoms (0.5 = indistinguishable, the retrained "
        "model's value is the target). Forget quality: KS test of removed-canary exposures "
        "against the retrained model's. Over-unlearned: removed canaries significantly below "
        "the phantoms. Values: mean ± sample std over replicates.",
        "Code commit(s) of the inputs: " + ", ".join(sorted(set(evals["commit"]))),
    ]
    return Table(
        "Main results: every method at its operating points, beside retraining",
        agg.reset_index(drop=True),
        display,
        notes,
    )


def make_main_table(
    evaluations: Sequence[str | Path],
    frontier_files: Sequence[str | Path],
    methods: Sequence[str],
    outputs: Mapping[str, str],
) -> Table:
    _, selected = frontiers.load_frontiers(frontier_files)
    table = protocol_table(loaders.load_evaluations(evaluations), selected, methods)
    return _write(table, outputs)


def _spec(rule: Mapping[str, Any], pooled: bool = False) -> claims.Claim:
    return claims.Claim(
        id=rule["id"],
        text=rule["claim"],
        direction=rule["direction"],
        threshold=rule["threshold"],
        metric=rule["metric"],
        a=rule["a"],
        b=rule["b"],
        point=rule.get("point"),
        min_seeds=1 if pooled else claims.MIN_SEEDS,
    )


def _scope(rule: Mapping[str, Any] | None, data: pd.DataFrame) -> str:
    """Where a claim's measurements come from: the fair protocol's verdict replicates, or a side
    study's replicates (units pooled: one replicate's units resampled alone)."""
    if rule is None:
        return "fair protocol"
    if rule.get("resample", "replicates") == "units":
        replicates = sorted({u.rsplit("/", 1)[0] for u in data["unit"]}) if len(data) else []
        where = ", ".join(replicates) or "none"
        return f"{rule['study']} study ({where}; units pooled)"
    return f"{rule['study']} study ({', '.join(sorted(set(data['seed']))) or 'none'})"


def _design(seeds: int, pooled: bool, needed: int | None) -> str:
    """ "confirmatory", or "exploratory" with why: the claim rests on fewer replicates than the
    config's claims.confirmatory_replicates (or pools one replicate's units)."""
    if pooled:
        return "exploratory: one replicate"
    if needed is not None and seeds < needed:
        return f"exploratory: {seeds} of {needed} replicates"
    return "confirmatory"


def claims_table(
    rules: Sequence[Mapping[str, Any]],
    selected: pd.DataFrame,
    canaries: pd.DataFrame,
    datasets: Sequence[str],
    bootstrap: Mapping[str, Any],
    study_rules: Sequence[Mapping[str, Any]] = (),
    study_files: study_claims.StudyFiles | None = None,
    confirmatory_replicates: int | None = None,
) -> tuple[Table, pd.DataFrame]:
    """Every claim of the config judged: the fair protocol's on the verdict datasets'
    replicates, the side studies' on their own; Holm corrects across all of them. A claim on
    fewer than ``confirmatory_replicates`` replicates (or on one replicate's pooled units) is
    marked exploratory (column ``design``, and in its scope)."""
    selected = frontiers.restrict(selected, datasets)
    canaries = frontiers.restrict(canaries, datasets)
    study_files = study_files or study_claims.StudyFiles()
    specs = [_spec(r) for r in rules] + [
        _spec(r, pooled=r.get("resample", "replicates") == "units") for r in study_rules
    ]
    data = {r["id"]: frontiers.claim_data(r, selected, canaries) for r in rules}
    data.update({r["id"]: study_claims.study_claim_data(r, study_files) for r in study_rules})
    scopes = [_scope(None, data[r["id"]]) for r in rules] + [
        _scope(r, data[r["id"]]) for r in study_rules
    ]
    result = claims.evaluate_claims(
        specs,
        data,
        n_resamples=bootstrap["resamples"],
        level=bootstrap["level"],
        alpha=bootstrap["alpha"],
        seed=bootstrap["seed"],
    )
    result["design"] = [
        _design(seeds, pooled=spec.min_seeds == 1, needed=confirmatory_replicates)
        for seeds, spec in zip(result["seeds"], specs, strict=True)
    ]
    scopes = [
        scope if design == "confirmatory" else f"{scope}; {design}"
        for scope, design in zip(scopes, result["design"], strict=True)
    ]
    result["scope"] = scopes
    display = pd.DataFrame(
        {
            "claim": result["claim"],
            "scope": scopes,
            "rule": [
                f"{'<' if d == 'below' else '>'} {t:g}"
                for d, t in zip(result["direction"], result["threshold"], strict=True)
            ],
            "estimate [CI]": [
                f"{fmt(e, 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]"
                for e, lo, hi in zip(
                    result["estimate"], result["ci_low"], result["ci_high"], strict=True
                )
            ],
            "p (Holm)": [fmt(p, 3) for p in result["p_holm"]],
            "verdict": [
                v if not r else f"{v} ({r})"
                for v, r in zip(result["verdict"], result["reason"].fillna(""), strict=True)
            ],
            "replicates / units": [
                f"{s} / {u}" for s, u in zip(result["seeds"], result["units"], strict=True)
            ],
        }
    )
    footnote = (
        claims.claims_markdown(result, n_resamples=bootstrap["resamples"], alpha=bootstrap["alpha"])
        .strip()
        .splitlines()[-1]
    )
    notes = [
        f"Fair protocol: verdict datasets {', '.join(datasets)} (replicate = dataset and seed). "
        "Side studies: their own replicates (scope); a study on one replicate resamples its "
        "units only. Exploratory: a claim on one replicate, or on fewer than "
        f"{confirmatory_replicates or 2} replicates (claims.confirmatory_replicates). {footnote}"
    ]
    return Table("Claims of the paper, judged by the DAG", result, display, notes), result


def make_claims_table(
    frontier_files: Sequence[str | Path],
    rules: Sequence[Mapping[str, Any]],
    datasets: Sequence[str],
    bootstrap: Mapping[str, Any],
    outputs: Mapping[str, str],
    study_rules: Sequence[Mapping[str, Any]] = (),
    study_files: study_claims.StudyFiles | None = None,
    confirmatory_replicates: int | None = None,
) -> pd.DataFrame:
    """claims.csv (every column of the judgement) and claims.md (the readable table)."""
    _, selected = frontiers.load_frontiers(frontier_files)
    canaries = frontiers.selected_canaries(frontier_files)
    table, result = claims_table(
        rules,
        selected,
        canaries,
        datasets,
        bootstrap,
        study_rules,
        study_files,
        confirmatory_replicates,
    )
    _write(table, outputs)
    return result
