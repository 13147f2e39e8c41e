"""Shared figure style and deterministic saving (PNG and PDF).

Reruns of a figure from the same inputs give byte-identical files: the non-interactive Agg
backend, a fixed style, no timestamps or software versions in the metadata, a fixed SVG hash
salt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..provenance import atomic_path
from .loaders import input_commits

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "unlearnbench",
    "pdf.fonttype": 42,
}

METHOD_COLORS = {
    "fisher_removal": "#1f77b4",
    "fisher_forgetting": "#2ca02c",
    "fisher_removal_identity": "#17becf",
    "gradient_ascent": "#d62728",
    "grad_diff": "#e377c2",
    "npo": "#8c564b",
    "finetune_retain": "#9467bd",
    "original": "#000000",
    "retrained": "#ff7f0e",
    "retrained_reorder": "#ffbb78",
}
SECOND_ORDER = ("fisher_removal", "fisher_forgetting")
_FALLBACK = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CEILING_STYLE = {"color": "#b22222", "linestyle": ":", "linewidth": 1.2}


def color(name: str) -> str:
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def linestyle(method: str) -> str:
    """Solid for second-order (Fisher) methods, dashed for first-order baselines."""
    return "-" if method in SECOND_ORDER else "--"


def subplots(
    nrows: int, ncols: int, width: float = 3.6, height: float = 2.8, **kwargs: Any
) -> tuple[Figure, Any]:
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs
    )
    return fig, axes


def ceiling_line(ax: Axes, bits: float, label: bool = True) -> None:
    """The exposure ceiling log2|R| (a fully memorised canary ranks first)."""
    if bits == bits:  # not NaN
        ax.axhline(
            bits, **CEILING_STYLE, label=f"ceiling log2|R| = {bits:.1f} bits" if label else None
        )


def commits_footer(fig: Figure, paths: Sequence[str | Path]) -> None:
    """A small footer naming the code commit(s) recorded in the inputs' provenance."""
    commits = input_commits(paths)
    footer(fig, "unlearnbench " + (", ".join(c[:12] for c in commits) if commits else "commit n/a"))


def footer(fig: Figure, text: str) -> None:
    fig.text(0.005, 0.005, text, fontsize=6, color="#666666", ha="left", va="bottom")


def save_figure(fig: Figure, png: str | Path, pdf: str | Path) -> None:
    """Write PNG and PDF without timestamps or versions, atomically; close the figure."""
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    for path, fmt, metadata in (
        (png, "png", {"Software": None}),
        (pdf, "pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=metadata)
            tmp.chmod(0o644)  # mkstemp creates 0600; figures are for everyone to read
    plt.close(fig)


def empty_panel(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])
