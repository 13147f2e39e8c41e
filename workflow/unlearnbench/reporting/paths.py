"""Paths the report rules read and write (used by workflow/rules/report.smk at parse time).

Kept out of the rule file because ``snakemake --lint`` wants no function definitions beside
rules, and pure so that it is unit-testable. Imports nothing heavy: the DAG builds in a second.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import study_names

EVALUATION = "results/eval/{dataset}/seed~{seed}/{model}.json"
TRAIN_MANIFEST = "results/models/{dataset}/seed~{seed}/{model}/train.json"
UNLEARN_MANIFEST = "results/models/{dataset}/seed~{seed}/{model}/unlearn.json"
FRONTIER = "results/frontier/{dataset}/seed~{seed}/{method}.json"
FISHER_MANIFEST = "results/fisher/{dataset}/seed~{seed}/manifest.json"
SECRETS = "results/realworld/{dataset}/seed~{seed}/secrets_{model}.csv"
SCALING = "results/scaling/fisher_scaling.csv"
ONION_ARMS = list(study_names.ONION_ARMS)
# The onion study's own data (training split with sibling canaries, canary table, manifest)
# and its requests: the rows each arm's model trains on (studies.onion.REQUESTS).
ONION_DATA = "results/onion/{dataset}/seed~{seed}/data"
ONION_REQUEST = "results/onion/{dataset}/seed~{seed}/request~{request}"
# A study's request folders: the retained set after the first k requests of the cycle study.
CYCLE_REQUEST = "results/unlearn_cycles/{dataset}/seed~{seed}/request~{request}"
# Rules of report.smk: light, without a benchmark, and not part of the study's cost.
REPORT_RULE_PREFIXES = ("tabulate_", "plot_", "tables_and_figures")


def expand_grid(pattern: str, **values: Sequence[Any]) -> list[str]:
    """``pattern`` formatted with every combination of ``values`` (in order, no duplicates)."""
    names = sorted(set(re.findall(r"{(\w+)", pattern)))
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"{pattern}: no values for wildcards {missing}")
    combos = itertools.product(*(values[n] for n in names))
    return list(dict.fromkeys(pattern.format(**dict(zip(names, c, strict=True))) for c in combos))


def table_outputs(name: str, report: Callable[..., Any]) -> dict[str, Any]:
    """CSV, Markdown, LaTeX and HTML of a table; the HTML one flagged for the report."""
    base = f"results/tables/{name}"
    return {
        "csv": f"{base}.csv",
        "md": f"{base}.md",
        "tex": f"{base}.tex",
        "html": report(
            f"{base}.html",
            caption=f"../report/{name}.rst",
            category="Tables",
            labels={"table": name.replace("_", " ")},
        ),
    }


def figure_outputs(name: str, report: Callable[..., Any]) -> dict[str, Any]:
    """PNG (flagged for the report) and PDF of a figure."""
    base = f"results/figures/{name}"
    return {
        "png": report(
            f"{base}.png",
            caption=f"../report/{name}.rst",
            category="Figures",
            labels={"figure": name.replace("_", " ")},
        ),
        "pdf": f"{base}.pdf",
    }


def stage_benchmarks(
    rules: Iterable[Any],
    values_of: Callable[[str], Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]],
) -> list[str]:
    """The benchmark file of every job of every rule with ``benchmark:`` (report rules aside).

    ``values_of(rule_name)`` gives the values of each wildcard of that rule's benchmark path
    (its jobs are all their combinations), or a list of such value sets (the union of their
    jobs: a rule that runs on some seeds for one kind of dataset and all for another). An
    unknown wildcard is an error naming the rule, raised while the DAG is built.
    """
    from snakemake.io import strip_wildcard_constraints  # {dataset,news|wiki} -> {dataset}

    files: list[str] = []
    for rule in rules:
        if rule.name.startswith(REPORT_RULE_PREFIXES) or not rule.benchmark:
            continue
        try:
            pattern = strip_wildcard_constraints(str(rule.benchmark))
            sets = values_of(rule.name)
            for values in [sets] if isinstance(sets, Mapping) else sets:
                files += expand_grid(pattern, **values)
        except ValueError as err:
            raise ValueError(
                f"report.smk: rule {rule.name}'s benchmark path has a wildcard the cost table "
                f"does not know ({err}); add its values to COST_WILDCARDS"
            ) from None
    return list(dict.fromkeys(files))
