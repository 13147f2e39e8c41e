"""Figures of the unlearning runs: exposure along the unlearning steps, repeated requests
(cycles), and the distribution of weight changes per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator, SymmetricalLogLocator

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
from .study_claims import gold_standard_models
from .tables import PRETTY

_REPETITION_COLORS = ["#fdae61", "#f46d43", "#d73027", "#a50026", "#67001f", "#3f0010"]


def cycles_figure(canaries: pd.DataFrame, evals: pd.DataFrame, methods: Sequence[str]) -> Figure:
    """Columns: datasets. Rows: test perplexity, exposure of the canaries removed so far
    (requests 1..k), exposure of the controls; x = cycle k (0 = original model)."""
    datasets = sorted(evals["dataset"].unique())
    fig, axes = subplots(3, max(len(datasets), 1), height=2.5, sharex="col")
    for col, dataset in enumerate(datasets):
        ev = evals[evals["dataset"] == dataset]
        ca = canaries[canaries["dataset"] == dataset]
        orig_ev = ev[ev["family"] == "original"]
        orig_ca = ca[ca["family"] == "original"]
        ceiling = np.log2(ca["space_size"].max()) if not ca.empty else float("nan")
        for method in methods:
            cyc = ev[(ev["family"] == "cycle") & (ev["method"] == method)]
            if cyc.empty:
                continue
            style = {"color": color(method), "linestyle": linestyle(method), "marker": "o"}
            ppl = pd.concat([orig_ev.assign(cycle=0), cyc]).groupby("cycle")["test_ppl"]
            axes[0][col].errorbar(
                ppl.mean().index,
                ppl.mean(),
                yerr=ppl.std().fillna(0),
                capsize=2,
                label=PRETTY.get(method, method),
                **style,
            )
            mc = ca[(ca["family"] == "cycle") & (ca["method"] == method)]
            removed = mc[(mc["group"] >= 1) & (mc["group"] <= mc["cycle"])]
            line = removed.groupby("cycle")["exposure"].mean()
            axes[1][col].plot(line.index, line.values, **style)
            control = pd.concat([orig_ca.assign(cycle=0), mc])
            line = control[control["role"] == "control"].groupby("cycle")["exposure"].mean()
            axes[2][col].plot(line.index, line.values, **style)
        _gold_standard(axes, col, ev, ca)
        before = orig_ca[orig_ca["in_forget_set"]]["exposure"].mean()
        axes[1][col].axhline(
            before,
            color="black",
            linewidth=1,
            linestyle="-.",
            label="original model, all forget canaries",
        )
        for row, ylabel in enumerate(
            ["test perplexity", "exposure, removed so far (bits)", "exposure, controls (bits)"]
        ):
            ax = axes[row][col]
            ax.set_xlabel("unlearning cycle k (0 = original)")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row:
                ceiling_line(ax, ceiling, label=row == 1)
                ax.set_ylim(bottom=0)
        axes[0][col].set_title(dataset)
    if not datasets:
        empty_panel(axes[0][0], "no cycle evaluations")
    for row in (0, 1):
        if axes[row][-1].get_legend_handles_labels()[0]:
            axes[row][-1].legend(loc="best")
    fig.suptitle("Sequential unlearning requests: utility and exposure after each cycle")
    return fig


def _gold_standard(axes, col: int, ev: pd.DataFrame, ca: pd.DataFrame) -> None:
    """Each request's retrained model (black crosses): the target of every cycle."""
    gold = gold_standard_models(ev)
    if gold.empty:
        return
    style = {"color": "black", "marker": "x", "linestyle": ":"}
    style["label"] = "retrained on D+ of request k"
    ppl = gold.groupby("cycle")["test_ppl"].mean()
    axes[0][col].plot(ppl.index, ppl.values, **style)
    exposures = []
    for row in gold.itertuples():
        mine = ca[(ca["model"] == row.model) & (ca["seed"] == row.seed)]
        removed = mine[(mine["group"] >= 1) & (mine["group"] <= row.cycle)]
        control = mine[mine["role"] == "control"]
        exposures.append(
            {
                "cycle": row.cycle,
                "removed": removed["exposure"].mean(),
                "control": control["exposure"].mean(),
            }
        )
    lines = pd.DataFrame(exposures).groupby("cycle")[["removed", "control"]].mean()
    axes[1][col].plot(lines.index, lines["removed"].values, **style)
    # The controls stay in every request's D+: the gold standard keeps them memorised.
    axes[2][col].plot(lines.index, lines["control"].values, **style)


def make_cycles_figure(
    evaluations: Sequence[str | Path], methods: Sequence[str], png: str | Path, pdf: str | Path
) -> None:
    fig = cycles_figure(
        loaders.load_canaries(evaluations), loaders.load_evaluations(evaluations), methods
    )
    commits_footer(fig, evaluations)
    save_figure(fig, png, pdf)


def weight_change_figure(deltas: pd.DataFrame, methods: Sequence[str]) -> Figure:
    """Rows: datasets; columns: layer types. Fraction of weights per bin of the change
    theta' − theta, one step line per method (solid = second order, dashed = first order)."""
    datasets = sorted(deltas["dataset"].unique()) if not deltas.empty else []
    layers = sorted(deltas["layer_type"].unique()) if not deltas.empty else []
    fig, axes = subplots(max(len(datasets), 1), max(len(layers), 1))
    for row, dataset in enumerate(datasets):
        for col, layer in enumerate(layers):
            ax = axes[row][col]
            for method in methods:
                mine = deltas[
                    (deltas["dataset"] == dataset)
                    & (deltas["layer_type"] == layer)
                    & (deltas["method"] == method)
                ]
                if mine.empty:
                    continue
                first = mine.iloc[0]
                counts = np.asarray(first["counts"], dtype=float)
                fraction = counts / counts.sum() if counts.sum() > 0 else counts
                ax.stairs(
                    np.where(fraction > 0, fraction, np.nan),
                    np.asarray(first["bins"], dtype=float),
                    color=color(method),
                    linestyle=linestyle(method),
                    label=f"{PRETTY.get(method, method)} (L2 {first['l2']:.2g})",
                )
            ax.set_yscale("log")
            # Changes span many decades on both sides of 0: log-scaled away from 0. Labels on
            # every 4th decade and no minor ticks: the default locator put hundreds of ticks
            # per axis and made this figure take ~30 s to draw.
            ax.set_xscale("symlog", linthresh=1e-8)
            ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=1e-8, base=1e4))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{dataset}: {layer}")
            ax.set_xlabel("weight change θ' − θ")
            ax.set_ylabel("fraction of weights")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper right", fontsize=6)
    if not datasets:
        empty_panel(axes[0][0], "no weight-change histograms")
    seeds = sorted(deltas["seed"].unique()) if not deltas.empty else []
    fig.suptitle(
        "Distribution of weight changes per method and layer type "
        f"(seed {', '.join(map(str, seeds))}; solid = second order, dashed = first order)"
    )
    return fig


def make_weight_change_figure(
    frontier_files: Sequence[str | Path],
    methods: Sequence[str],
    png: str | Path,
    pdf: str | Path,
) -> None:
    """The histograms at each method's matched-utility point (its frontier file)."""
    fig = weight_change_figure(frontiers.weight_deltas_at(frontier_files), methods)
    commits_footer(fig, frontier_files)
    save_figure(fig, png, pdf)
