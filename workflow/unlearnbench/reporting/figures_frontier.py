"""The privacy-utility plane of the fair comparison: every method's whole frontier.

One panel per dataset: x = test perplexity relative to the original model's (utility, lower is
better), y = the removed (evaluation) canaries' mean exposure (privacy, lower is more
forgotten). Per method its frontier, grid point by grid point (mean over replicates, weakest
to strongest), with its two operating points marked (matched erasure: a filled circle,
matched utility: a filled square); the retrained model, the target, with a band spanning its
twin's distance (another data order: the noise floor); the original model; the DP-SGD models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import frontiers, loaders
from .plotting import (
    ceiling_line,
    color,
    commits_footer,
    empty_panel,
    linestyle,
    save_figure,
    subplots,
)
from .tables import PRETTY

SELECTION_MARKERS = {"matched_erasure": "o", "matched_utility": "s"}


def _relative(frame: pd.DataFrame, original: pd.Series) -> np.ndarray:
    key = pd.Series(list(zip(frame["dataset"], frame["seed"], strict=True)))
    return frame["test_ppl"].to_numpy() / key.map(original).to_numpy()


def privacy_utility_figure(
    evals: pd.DataFrame, points: pd.DataFrame, selected: pd.DataFrame, methods: Sequence[str]
) -> Figure:
    datasets = sorted(evals["dataset"].unique()) if len(evals) else []
    fig, axes = subplots(1, max(len(datasets), 1), width=4.6, height=3.9)
    original = evals[evals["model"] == "original"].set_index(["dataset", "seed"])["test_ppl"]
    for col, dataset in enumerate(datasets):
        ax = axes[0][col]
        ev = evals[evals["dataset"] == dataset].assign(rel=lambda f: _relative(f, original))
        for method in methods:
            mine = points[(points["dataset"] == dataset) & (points["method"] == method)]
            mine = mine[~mine["diverged"]]
            if mine.empty:
                continue
            mine = mine.assign(rel=_relative(mine, original))
            curve = mine.groupby("point").agg(
                rel=("rel", "mean"),
                exposure=("exposure_removed_mean", "mean"),
                s=("strength", "first"),
            )
            curve = curve.sort_values("s")
            ax.plot(
                curve["rel"],
                curve["exposure"],
                color=color(method),
                linestyle=linestyle(method),
                linewidth=1.2,
                alpha=0.9,
                label=PRETTY.get(method, method),
            )
            chosen = selected[
                (selected["dataset"] == dataset)
                & (selected["method"] == method)
                & selected["reached"]
            ]
            for selection, marker in SELECTION_MARKERS.items():
                at = chosen[chosen["selection"] == selection]
                if at.empty:
                    continue
                ax.scatter(
                    np.mean(_relative(at, original)),
                    at["exposure_removed_mean"].mean(),
                    color=color(method),
                    marker=marker,
                    s=36,
                    edgecolor="black",
                    linewidth=0.5,
                    zorder=3,
                )
        retrained = ev[ev["model"] == "retrained"]
        twin = ev[ev["model"] == "retrained_reorder"]
        if not retrained.empty:
            y = retrained["exposure_removed_mean"].mean()
            spread = abs(twin["exposure_removed_mean"].mean() - y) if not twin.empty else 0.0
            ax.axhspan(y - spread, y + spread, color=color("retrained"), alpha=0.15, lw=0)
            ax.scatter(
                retrained["rel"].mean(),
                y,
                marker="*",
                s=120,
                color=color("retrained"),
                edgecolor="black",
                linewidth=0.5,
                zorder=4,
                label="retrained (target)",
            )
        base = ev[ev["model"] == "original"]
        ax.scatter(
            1.0,
            base["exposure_removed_mean"].mean(),
            marker="X",
            s=60,
            color="black",
            zorder=4,
            label="original",
        )
        dp = ev[ev["family"] == "dp"]
        # DP models of neighbouring epsilons land close together: their labels are stacked
        # one line apart so that they stay readable.
        dp_groups = sorted(dp.groupby("epsilon"), key=lambda kv: kv[0])
        for i, (eps, group) in enumerate(dp_groups):
            ax.scatter(
                group["rel"].mean(),
                group["exposure_removed_mean"].mean(),
                marker="^",
                s=40,
                color="#4292c6",
                edgecolor="#08306b",
                zorder=3,
            )
            ax.annotate(
                "ε=∞" if math.isinf(eps) else f"ε={eps:g}",
                (group["rel"].mean(), group["exposure_removed_mean"].mean()),
                fontsize=6,
                xytext=(4, 3 - 7 * i),
                textcoords="offset points",
            )
        ceiling_line(ax, ev["ceiling_bits"].max())
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(dataset)
        ax.set_xlabel("test perplexity / original's (lower = more useful)")
        ax.set_ylabel("removed-canary exposure (bits)\nlower = more forgotten")
        ax.legend(loc="best", fontsize=6)
    if not datasets:
        empty_panel(axes[0][0], "no evaluations")
    fig.suptitle(
        "Frontiers (mean over replicates): ● matched erasure, ■ matched utility,\n"
        "★ retrained (band: its twin's distance), ▲ DP-SGD"
    )
    return fig


def make_privacy_utility_figure(
    evaluations: Sequence[str | Path],
    frontier_files: Sequence[str | Path],
    methods: Sequence[str],
    png: str | Path,
    pdf: str | Path,
) -> None:
    points, selected = frontiers.load_frontiers(frontier_files)
    fig = privacy_utility_figure(loaders.load_evaluations(evaluations), points, selected, methods)
    commits_footer(fig, [*evaluations, *frontier_files])
    save_figure(fig, png, pdf)
