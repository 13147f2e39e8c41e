"""The study's tables: DP-SGD privacy-utility, cost per stage, real-world case (the main results
and the claims: ``protocol_tables``).

Each ``*_table`` function takes tidy frames (see ``loaders``) and returns a ``render.Table``;
each ``make_*`` function is what a report rule calls: input paths in, four files out.
Aggregates over seeds are mean ± sample standard deviation (ddof = 1, undefined for one seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from . import loaders
from .render import MISSING, Table, fmt, fmt_mean_std, write_table

PRETTY = {
    "original": "original",
    "retrained": "retrained (the target)",
    "retrained_reorder": "retrained, other data order",
    "fisher_removal": "Fisher Removal",
    "fisher_forgetting": "Fisher Forgetting",
    "fisher_removal_identity": "Fisher Removal, F = λI",
    "gradient_ascent": "gradient ascent",
    "grad_diff": "GradDiff",
    "npo": "NPO",
    "finetune_retain": "fine-tune on D+",
}
_FAMILY_ORDER = {
    "original": 0,
    "retrained": 1,
    "retrained_reorder": 2,
    "unlearned": 3,
    "dp": 4,
    "cycle": 5,
}


def model_label(model: str) -> str:
    info = loaders.parse_model(model)
    if info["family"] == "dp":
        if math.isinf(info["epsilon"]):
            return "DP-SGD recipe, no noise (ε=∞)"
        return f"DP-SGD ε={info['epsilon']:g}"
    if info["family"] == "cycle":
        return f"{PRETTY.get(info['method'], info['method'])}, cycle {info['cycle']}"
    return PRETTY.get(info["method"] or model, info["method"] or model)


def model_order(models: Sequence[str], methods: Sequence[str] = ()) -> list[str]:
    """original, retrained, unlearned (in ``methods`` order), DP by epsilon, cycles."""

    def key(model: str) -> tuple:
        info = loaders.parse_model(model)
        method = info["method"]
        rank = list(methods).index(method) if method in methods else len(methods)
        eps = 0.0 if math.isnan(info["epsilon"]) else info["epsilon"]
        return (_FAMILY_ORDER[info["family"]], info["cycle"], rank, method or "", eps)

    return sorted(dict.fromkeys(models), key=key)


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, sample std and count over seeds: columns <metric>_mean, <metric>_std, n_seeds."""
    grouped = frame.groupby(by, sort=False, dropna=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "n_seeds", grouped["seed"].nunique())
    return out.reset_index()


def _display(
    agg: pd.DataFrame, keys: dict[str, str], metrics: dict[str, tuple[str, int]]
) -> pd.DataFrame:
    """Display frame: key columns as given, metrics as 'mean ± std' with fixed digits."""
    out = pd.DataFrame({label: agg[col].astype(str) for col, label in keys.items()})
    for metric, (label, digits) in metrics.items():
        out[label] = [
            fmt_mean_std(m, s, digits)
            for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"], strict=True)
        ]
    return out


def _sorted(agg: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(model_order(agg["model"], methods))}
    agg = agg.assign(_order=agg["model"].map(order))
    return agg.sort_values(["dataset", "_order"], kind="stable").drop(columns="_order")


def _provenance_note(commits: Sequence[str]) -> str:
    return "Code commit(s) of the inputs: " + (", ".join(commits) if commits else "not recorded")


DP_METRICS = {
    "target_epsilon": ("target ε", 1),
    "epsilon_spent": ("spent ε", 2),
    "dp_steps": ("DP steps", 0),
    "dp_lr": ("DP rate (chosen on validation)", 4),
    "test_ppl": ("test perplexity", 1),
    "ppl_change_pct": ("Δ perplexity vs original (%)", 1),
    "exposure_removed_mean": ("removed exposure mean (bits)", 2),
    "exposure_control_mean": ("control exposure mean (bits)", 2),
    "kl_test": ("KL to retrained (nats/token)", 3),
}


def group_epsilons(epsilon: float, repetitions: Sequence[int]) -> str:
    """Group privacy: a canary inserted r times is a group of r examples, covered at r * epsilon
    (and delta grows to r e^((r-1) epsilon) delta): "r=2: 2.0, r=16: 16.0" for epsilon 1."""
    if not math.isfinite(epsilon):
        return MISSING
    return ", ".join(f"r={r}: {fmt(r * epsilon, 1)}" for r in repetitions)


DP_COST_COLUMNS = ("epsilon_spent", "target_epsilon", "dp_steps", "dp_lr")


def dp_table(
    evals: pd.DataFrame,
    dp_costs: pd.DataFrame,
    methods: Sequence[str] = (),
    repetitions: Sequence[int] = (),
) -> Table:
    """DP-SGD at each epsilon beside the unlearning methods: utility and exposure, and for each
    repetition count r of the canaries the epsilon a canary inserted r times is covered at."""
    if dp_costs.empty:  # no DP-SGD model in this config (train_dp.epsilons empty)
        frame = evals.assign(**dict.fromkeys(DP_COST_COLUMNS, float("nan")))
    else:
        frame = evals.merge(
            dp_costs[["dataset", "seed", "model", "epsilon_spent", "target_epsilon"]].join(
                dp_costs.reindex(columns=["dp_steps", "dp_lr"])
            ),
            on=["dataset", "seed", "model"],
            how="left",
        )
    frame["target_epsilon"] = frame["target_epsilon"].fillna(frame["epsilon"])
    original = evals[evals["model"] == "original"].set_index(["dataset", "seed"])["test_ppl"]
    base = pd.Series(list(zip(frame["dataset"], frame["seed"], strict=True))).map(original)
    frame["ppl_change_pct"] = 100.0 * (frame["test_ppl"].to_numpy() / base.to_numpy() - 1.0)
    agg = _sorted(aggregate(frame, ["dataset", "model"], list(DP_METRICS)), methods)
    agg.insert(2, "label", agg["model"].map(model_label))
    agg.insert(3, "family", agg["model"].map(lambda m: loaders.parse_model(m)["family"]))
    display = _display(
        agg, {"dataset": "dataset", "label": "model", "n_seeds": "seeds"}, DP_METRICS
    )
    if repetitions:
        spent = agg["epsilon_spent_mean"].astype(float)
        display["group ε (canary inserted r times)"] = [
            group_epsilons(e, repetitions) if f == "dp" else MISSING
            for e, f in zip(spent, agg["family"], strict=True)
        ]
    notes = [
        "DP-SGD models are trained with Opacus on all of D (canaries included) at the target ε "
        "(δ from the config); spent ε is what the accountant reports; ε=∞ is the same recipe "
        "(Poisson sampling, clipping, steps) without noise, which separates the cost of "
        "clipping from the cost of noise. DP-SGD gets the fine-tune's step budget; its rate is "
        "chosen per ε on the validation split among train_dp.lr, and the noise covers every "
        "step of that sweep, so spent ε includes the choice. The original and the "
        "retrained models are the references (every method at its operating points: the main "
        "results). A good trade-off has low removed exposure and small Δ perplexity. Values "
        "are mean ± sample std over seeds. Group ε: a canary inserted r times is a group of r "
        "examples, which the guarantee covers only at about r·ε (δ grows to r·e^((r−1)ε)·δ): "
        "past ε ≈ 10 it promises little.",
        _provenance_note(sorted(evals["commit"].unique())),
    ]
    return Table(
        "DP-SGD privacy-utility trade-off beside the original and retrained models",
        agg,
        display,
        notes,
    )


def cost_table(benchmarks: pd.DataFrame) -> Table:
    """Wall time and peak memory per rule, from Snakemake's benchmark files."""
    grouped = benchmarks.groupby("rule", sort=False)
    agg = pd.DataFrame(
        {
            "jobs": grouped["job"].nunique(),
            "total_s": grouped["s"].sum(),
            "mean_s": grouped["s"].mean(),
            "max_s": grouped["s"].max(),
            "cpu_time_s": grouped["cpu_time"].sum() if "cpu_time" in benchmarks else math.nan,
            "max_rss_mb": grouped["max_rss"].max() if "max_rss" in benchmarks else math.nan,
        }
    ).reset_index()
    total = agg["total_s"].sum()
    agg["share_pct"] = 100.0 * agg["total_s"] / total if total > 0 else math.nan
    agg = agg.sort_values(["total_s", "rule"], ascending=[False, True], kind="stable")
    columns = {
        "jobs": ("jobs", 0),
        "total_s": ("total wall time (s)", 1),
        "share_pct": ("share of total (%)", 1),
        "mean_s": ("mean per job (s)", 1),
        "max_s": ("slowest job (s)", 1),
        "cpu_time_s": ("CPU time (s)", 1),
        "max_rss_mb": ("peak memory (MB)", 0),
    }
    display = pd.DataFrame({"rule": agg["rule"]})
    for column, (label, digits) in columns.items():
        display[label] = [fmt(v, digits) for v in agg[column].astype(float)]
    notes = [
        f"From Snakemake benchmark files (results/benchmarks/<rule>/...), {len(benchmarks)} "
        f"measured jobs, {total:.1f} s in all. Peak memory = the largest resident set size "
        "of any job of the rule. Sorted by total time: the top rows are where the "
        "study spends its time.",
    ]
    return Table("Cost of every stage, grouped by rule", agg.reset_index(drop=True), display, notes)


def realworld_table(
    secrets: pd.DataFrame,
    threshold_bits: float,
    methods: Sequence[str],
    max_rows: int = 50,
    indelible_margin: float = 1.0,
) -> Table:
    """Memorised real-world strings (masked), ranked by their score in the original model, with
    whether each method removed them and, where the retrained model (the gold standard: trained
    without the requested strings' rows) was scored, its score (and its twin's, another data
    order). "Indelible" = requested, and every method leaves it more than a margin above the
    retrained model's score: ``indelible_margin`` bits, or the noise floor where the twin was
    scored (the largest retrained-vs-twin gap on the corpus's memorised strings), whichever is
    larger (without a retrained model: removed by no method).

    The score is the stages' ``excess`` (bits the model predicts the string better than the
    base model, beyond what held-out strings of the corpus gain), and memorised/removed are the
    stages' own decisions where the files carry them; files without them fall back to exposure
    against ``threshold_bits``."""
    loaders.check_masked(secrets["masked"], "realworld table")
    decided = {"excess", "memorised", "removed"} <= set(secrets)
    score = "excess" if decided else "exposure"
    frame = secrets.copy()
    if not decided:
        frame["memorised"] = (frame["exposure"] >= threshold_bits) | frame["extracted"]
        frame["removed"] = (frame["exposure"] < threshold_bits) & ~frame["extracted"]
    if "over_unlearned" not in frame:  # tables written before the flag existed
        frame["over_unlearned"] = False
    if "in_forget_set" not in frame:
        frame["in_forget_set"] = False
    frame["in_forget_set"] = frame["in_forget_set"].fillna(False).astype(bool)
    frame["over_unlearned"] = frame["over_unlearned"].fillna(False).astype(bool)
    per_model = (
        frame.groupby(["dataset", "masked", "kind", "model"], sort=False)
        .agg(
            score=(score, "mean"),
            extracted=("extracted", "any"),
            memorised=("memorised", "all"),
            removed=("removed", "all"),
            over_unlearned=("over_unlearned", "any"),
            requested=("in_forget_set", "any"),
            occ=("occurrences", "max"),
        )
        .reset_index()
    )
    original = per_model[per_model["model"] == "original"].set_index(["dataset", "masked", "kind"])
    memorised = original[original["memorised"]]
    rows = memorised[["occ", "score", "extracted", "requested"]].rename(
        columns={"occ": "occurrences", "score": "score_original", "extracted": "extracted_original"}
    )
    gold = per_model[per_model["model"] == "retrained"].set_index(["dataset", "masked", "kind"])
    has_gold = not gold.empty
    twin = per_model[per_model["model"] == "retrained_reorder"]
    twin = twin.set_index(["dataset", "masked", "kind"])
    has_twin = has_gold and not twin.empty
    margin = pd.Series(float(indelible_margin), index=rows.index)
    floors: dict[str, float] = {}
    if has_gold:
        rows["score_retrained"] = gold.reindex(rows.index)["score"]
    if has_twin:
        # The noise floor of "as retrained": how far the gold standard and its twin (another
        # data order) lie apart on a corpus's memorised strings, at most.
        rows["score_twin"] = twin.reindex(rows.index)["score"]
        gap = (rows["score_retrained"] - rows["score_twin"]).abs()
        floors = gap.groupby(level="dataset").max().fillna(0.0).to_dict()
        floor = pd.Series(rows.index.get_level_values("dataset").map(floors), index=rows.index)
        margin = margin.clip(lower=floor)
    removed_by, stuck = [], []
    for method in methods:
        after = per_model[per_model["model"] == method].set_index(["dataset", "masked", "kind"])
        after = after.reindex(rows.index)
        rows[f"score_{method}"] = after["score"]
        removed = after["removed"].fillna(False).astype(bool)
        rows[f"removed_{method}"] = removed
        rows[f"over_{method}"] = after["over_unlearned"].fillna(False).astype(bool)
        removed_by.append(removed)
        if has_gold:
            # NaN (a method or the retrained model did not score it) counts as not stuck.
            above = rows[f"score_{method}"] - rows["score_retrained"] > margin
            rows[f"above_retrained_{method}"] = above
            stuck.append(above)
    if has_gold:
        # Only a requested string can be indelible: the others stay in D+, and the retrained
        # model learns them as the original did.
        everywhere = pd.concat(stuck, axis=1).all(axis=1) if stuck else False
        rows["indelible"] = rows["requested"] & everywhere
    else:
        rows["indelible"] = ~pd.concat(removed_by, axis=1).any(axis=1) if removed_by else True
    rows = rows.reset_index().sort_values(
        ["score_original", "dataset", "masked"], ascending=[False, True, True], kind="stable"
    )
    kept = rows.head(max_rows)
    kept = pd.concat([kept, rows.iloc[max_rows:][rows.iloc[max_rows:]["indelible"]]])
    unit = "bits over held-out" if decided else "exposure, bits"
    display = pd.DataFrame(
        {
            "dataset": kept["dataset"],
            "string (masked)": kept["masked"],
            "kind": kept["kind"],
            "occurrences": kept["occurrences"].map(lambda v: fmt(float(v), 0)),
            "requested": kept["requested"].map({True: "yes", False: "no"}),
            f"original ({unit})": kept["score_original"].map(lambda v: fmt(v, 2)),
        }
    )
    if has_gold:
        display[f"retrained ({unit})"] = kept["score_retrained"].map(lambda v: fmt(v, 2))
    if has_twin:
        display[f"retrained twin ({unit})"] = kept["score_twin"].map(lambda v: fmt(v, 2))
    for method in methods:
        display[f"{PRETTY.get(method, method)} ({unit})"] = [
            fmt(e, 2) + (" over-unlearned" if o else " removed" if r else " kept")
            for e, r, o in zip(
                kept[f"score_{method}"],
                kept[f"removed_{method}"],
                kept[f"over_{method}"],
                strict=True,
            )
        ]
    display["indelible"] = kept["indelible"].map({True: "yes", False: "no"})
    n_indelible = int(rows["indelible"].sum())
    n_over = int(sum(rows[f"over_{method}"].sum() for method in methods))
    if decided:
        rule = (
            "A string's score is how many bits better the model predicts it than the base model "
            "(which never saw the corpus), minus the 95th percentile of that gain over held-out "
            "strings of the same corpus (never trained) under the same model. Memorised: score "
            "at or above realworld.memorised_above in the original model; removed: score below "
            "realworld.removed_below and greedy decoding no longer extracts it; over-unlearned "
            "(not removed): predicted worse than the 5th percentile of the held-out strings, "
            "which singles the string out instead of forgetting it."
        )
    else:
        rule = (
            f"Memorised: exposure at least {threshold_bits:g} bits or extracted; removed: "
            f"exposure below {threshold_bits:g} bits and not extracted."
        )
    if has_twin:
        floor_text = ", ".join(f"{d} {v:.2f}" for d, v in sorted(floors.items()))
        margin_text = (
            f"the larger of {indelible_margin:g} bits and the noise floor (the largest gap "
            f"between the retrained model and its twin on a memorised string: {floor_text})"
        )
    else:
        margin_text = f"{indelible_margin:g} bits"
    indelible_rule = (
        f"requested, and every method leaves it more than {margin_text} above the retrained "
        "model, trained without the requested strings' rows"
        if has_gold
        else "removed by no method"
    )
    notes = [
        f"{len(rows)} string{'' if len(rows) == 1 else 's'} memorised by the original model, "
        f"{n_indelible} indelible ({indelible_rule}), {n_over} string-method "
        f"pair{'' if n_over == 1 else 's'} over-unlearned. {rule} Strings are masked (first "
        "character, top-level domain, hash).",
    ]
    if len(rows) > len(kept):
        notes.append(f"Showing the {len(kept)} most memorised and every indelible string.")
    return Table(
        "Real-world case study: memorised strings and what unlearning removes",
        kept.reset_index(drop=True),
        display.reset_index(drop=True),
        notes,
    )


def _write(table: Table, outputs: dict[str, str]) -> Table:
    write_table(table, outputs["csv"], outputs["md"], outputs["tex"], outputs["html"])
    return table


def make_dp_table(
    evaluations: Sequence[str | Path],
    dp_manifests: Sequence[str | Path],
    methods: Sequence[str],
    outputs: Mapping[str, str],
    repetitions: Sequence[int] = (),
) -> Table:
    table = dp_table(
        loaders.load_evaluations(evaluations),
        loaders.load_model_costs(dp_manifests),
        methods,
        repetitions,
    )
    return _write(table, outputs)


def make_cost_table(benchmarks: Sequence[str | Path], outputs: Mapping[str, str]) -> Table:
    return _write(cost_table(loaders.load_benchmarks(benchmarks)), outputs)


def make_realworld_table(
    secrets: Sequence[str | Path],
    threshold_bits: float,
    methods: Sequence[str],
    max_rows: int,
    outputs: Mapping[str, str],
    indelible_margin: float = 1.0,
) -> Table:
    table = realworld_table(
        loaders.load_secrets(secrets), threshold_bits, methods, max_rows, indelible_margin
    )
    return _write(table, outputs)


__all__ = ["MISSING", "aggregate", "cost_table", "dp_table", "realworld_table"]
