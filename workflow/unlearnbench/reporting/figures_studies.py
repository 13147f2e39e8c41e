"""Figures of the side studies: the onion effect, real-world memorisation against the
retrained model and how Fisher estimation scales (the privacy-utility plane:
``figures_frontier``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..study_names import ONION_ARMS
from . import loaders, study_claims
from .plotting import (
    color,
    commits_footer,
    empty_panel,
    footer,
    save_figure,
    subplots,
)
from .tables import PRETTY

# The arms shown (the original is the zero every shift is measured from).
ONION_SHOWN = [arm for arm in ONION_ARMS if arm != "original"]
READOUTS = {
    "change": "Δ exposure (bits)",
    "log_perplexity_change": "Δ secret log-perplexity (nats)",
}


def onion_figure(shifts: pd.DataFrame) -> Figure:
    """Rows: the readouts (exposure, the secret's log-perplexity); columns: datasets. For each
    arm, every sibling's shift from the study's original model: treated templates (their masker
    removed, red) beside control templates (masker kept, blue), with the within-run contrast
    (mean treated minus mean control) under the arm's name."""
    datasets = sorted(shifts["dataset"].unique()) if not shifts.empty else []
    fig, axes = subplots(len(READOUTS), max(len(datasets), 1), width=4.4, height=3.2)
    jitter = np.random.default_rng(0)  # fixed: the figure is deterministic
    for row, (value, label) in enumerate(READOUTS.items()):
        for col, dataset in enumerate(datasets):
            ax = axes[row][col]
            mine = shifts[shifts["dataset"] == dataset]
            arms = [a for a in ONION_SHOWN if a in set(mine["arm"])]
            labels = []
            for x, arm in enumerate(arms):
                here = mine[mine["arm"] == arm]
                means = {}
                for offset, treated, hue in ((-0.17, True, "#d62728"), (0.17, False, "#1f77b4")):
                    vals = here.loc[here["treated"].astype(bool) == treated, value].to_numpy()
                    means[treated] = vals.mean() if len(vals) else np.nan
                    xs = x + offset + jitter.uniform(-0.06, 0.06, len(vals))
                    ax.scatter(xs, vals, s=12, alpha=0.7, color=hue)
                    ax.plot(x + offset, means[treated], marker="D", color="black", markersize=5)
                labels.append(f"{arm}\n{means[True] - means[False]:+.2f}")
            ax.set_xticks(range(len(arms)))
            ax.set_xticklabels(labels)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(dataset, fontsize=9)
            ax.set_ylabel(label)
    if not datasets:
        empty_panel(axes[0][0], "no onion-effect runs")
    fig.suptitle(
        "Onion effect: each sibling's shift from the study's original model\n"
        "red: its template's masker removed, blue: kept; ◆ mean; under each arm: red − blue",
        fontsize=9,
    )
    return fig


def make_onion_figure(
    evaluations: Sequence[str | Path],
    canaries: Sequence[str | Path],
    png: str | Path,
    pdf: str | Path,
) -> None:
    """The onion models' evaluations against the study's original, by its canary tables."""
    files = study_claims.StudyFiles(evaluations=evaluations, onion_canaries=canaries)
    fig = onion_figure(study_claims.onion_sibling_shifts(files))
    commits_footer(fig, evaluations)
    save_figure(fig, png, pdf)


def realworld_figure(
    secrets: pd.DataFrame, methods: Sequence[str], memorised_above: float, removed_below: float
) -> Figure:
    """One panel per real-world dataset and seed: each string the original model memorised
    (requested first, then by the original's score), its score under the original, the
    retrained model and every method."""
    secrets = secrets.copy()
    score = "excess" if "excess" in secrets else "exposure"
    groups = sorted({(d, s) for d, s in zip(secrets["dataset"], secrets["seed"], strict=True)})
    fig, axes = subplots(1, max(len(groups), 1), width=6.0, height=3.4)
    models = ["original", "retrained", *methods]
    for col, (dataset, seed) in enumerate(groups):
        ax = axes[0][col]
        mine = secrets[(secrets["dataset"] == dataset) & (secrets["seed"] == seed)]
        original = mine[mine["model"] == "original"]
        memorised = (
            original[original["memorised"].astype(bool)] if "memorised" in mine else original
        )
        if "in_forget_set" in memorised:
            requested = memorised["in_forget_set"].fillna(False).astype(bool)
        else:
            requested = pd.Series(False, index=memorised.index)
        order = memorised.assign(requested=requested).sort_values(
            ["requested", score, "masked"], ascending=[False, False, True], kind="stable"
        )
        strings = order["masked"].tolist()
        if not strings:
            empty_panel(ax, f"{dataset}: no memorised string")
            continue
        x = {m: i for i, m in enumerate(strings)}
        for k, model in enumerate(models):
            rows = mine[(mine["model"] == model) & mine["masked"].isin(x)]
            if rows.empty:
                continue
            offset = (k - (len(models) - 1) / 2) * 0.8 / len(models)
            style = (
                {"color": "black", "marker": "s"}
                if model == "original"
                else {"color": "black", "marker": "x"}
                if model == "retrained"
                else {"color": color(model), "marker": "o"}
            )
            ax.scatter(
                [x[m] + offset for m in rows["masked"]],
                rows[score],
                s=18,
                label=PRETTY.get(model, model),
                **style,
            )
        n_requested = int(order["requested"].sum())
        if 0 < n_requested < len(strings):
            ax.axvline(n_requested - 0.5, color="grey", linewidth=0.8)
        ax.axhline(memorised_above, color="black", linestyle="--", linewidth=0.8)
        ax.axhline(removed_below, color="black", linestyle=":", linewidth=0.8)
        ax.set_xticks(range(len(strings)))
        ax.set_xticklabels(
            [
                f"{'*' if r else ''}{m.split('#')[-1][:4]}"
                for m, r in zip(strings, order["requested"], strict=True)
            ],
            rotation=90,
            fontsize=6,
        )
        ax.set_title(
            f"{dataset}, seed {seed}: {n_requested} requested (*), {len(strings)} memorised"
        )
        ax.set_ylabel("score (bits over held-out)" if score == "excess" else "exposure (bits)")
        ax.legend(loc="best", fontsize=6)
    if not groups:
        empty_panel(axes[0][0], "no real-world study")
    fig.suptitle("Real-world memorisation: unlearned vs retrained without the requested strings")
    return fig


def make_realworld_figure(
    secrets_files: Sequence[str | Path],
    methods: Sequence[str],
    memorised_above: float,
    removed_below: float,
    png: str | Path,
    pdf: str | Path,
) -> None:
    secrets = loaders.load_secrets(secrets_files)
    secrets["model"] = secrets["model"].str.removeprefix("unlearned~")
    fig = realworld_figure(secrets, methods, memorised_above, removed_below)
    footer(fig, "from results/realworld/<dataset>/seed~<s>/secrets_<model>.csv (strings masked)")
    save_figure(fig, png, pdf)


def scaling_figure(scaling: pd.DataFrame) -> Figure:
    """Fisher estimation cost: time and peak memory against the number of gradients m (one
    line per model) and against the parameter count d (one line per m); log-log axes."""
    fig, axes = subplots(2, 2, width=4.2, height=3.2)
    frame = scaling.assign(total_s=scaling["gradient_s"] + scaling["setup_s"])
    # One line per model (grouped by d, so the legend runs from the smallest model up), then one
    # line per m.
    for row, (x, group_by) in enumerate([("m", "d"), ("d", "m")]):
        for key, group in frame.sort_values([group_by, x]).groupby(group_by, sort=True):
            name = group["model_label"].iloc[0]
            group = group.groupby(x, as_index=False).mean(numeric_only=True)
            label = f"m = {key}" if group_by == "m" else f"{name} (d = {key / 1e3:.0f} k)"
            time_ax, mem_ax = axes[row]
            line = time_ax.plot(group[x], group["total_s"], marker="o", label=f"{label}: total")
            time_ax.plot(
                group[x],
                group["setup_s"],
                marker=".",
                linestyle="--",
                color=line[0].get_color(),
                label=f"{label}: Woodbury set-up",
            )
            mem_ax.plot(group[x], group["peak_memory_mb"], marker="o", label=label)
        xlabel = "number of gradients m" if x == "m" else "parameters d"
        for ax, ylabel in zip(axes[row], ("time (s)", "peak memory (MB)"), strict=True):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # no overlapping 2x10^1 labels
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(loc="best", fontsize=6)
        axes[row][0].set_title(f"Fisher estimation time vs {x}")
        axes[row][1].set_title(f"Fisher estimation memory vs {x}")
    fig.suptitle("Scalability of the Woodbury inverse-Fisher estimate (gradients + set-up)")
    return fig


def make_scaling_figure(scaling_csv: str | Path, png: str | Path, pdf: str | Path) -> None:
    fig = scaling_figure(loaders.load_scaling(scaling_csv))
    footer(fig, "from results/scaling/fisher_scaling.csv")
    save_figure(fig, png, pdf)
