"""The fair comparison's tables (reporting.protocol_tables) from the synthetic study: the main
results (every method at its two operating points beside the references) and the claims."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_study import (
    COMMIT,
    DATASETS,
    GRID,
    MEAN_SPREAD,
    METHODS,
    OVER_UNLEARNED,
    REMOVED_IDS,
    SEEDS,
    SELECTION,
    point_label,
    point_ppl,
    point_removed,
    point_seconds,
    selected_index,
    value,
)
from unlearnbench.pii import EMAIL_RE, PHONE_RE
from unlearnbench.reporting import claims, frontiers, loaders, protocol_tables

LABELS = [
    "original",
    "retrained (the target)",
    "retrained, other data order (noise floor)",
    "Fisher Removal, matched erasure",
    "Fisher Removal, matched utility",
    "gradient ascent, matched erasure",
    "gradient ascent, matched utility",
]
BOOTSTRAP = {"resamples": 400, "level": 0.95, "alpha": 0.05, "seed": 0}


def outputs(root: Path, stem: str) -> dict[str, str]:
    return {ext: str(root / f"tables/{stem}.{ext}") for ext in ("csv", "md", "tex", "html")}


def _row(data: pd.DataFrame, dataset: str, label: str) -> pd.Series:
    rows = data[(data["dataset"] == dataset) & (data["label"] == label)]
    assert len(rows) == 1, (dataset, label)
    return rows.iloc[0]


def _reached(dataset: str, method: str, selection: str) -> list[int]:
    return [s for s in SEEDS if selected_index(dataset, s, method, selection) is not None]


def test_main_table_references_then_operating_points(study, tmp_path):
    out = outputs(tmp_path, "main_results")
    table = protocol_tables.make_main_table(study.references, study.frontiers, METHODS, out)
    data, display = table.data, table.display
    # Per dataset: original, retrained, its twin, then each method at matched erasure and at
    # matched utility, in the order of ``methods``.
    assert list(data["dataset"]) == [d for d in DATASETS for _ in LABELS]
    for dataset in DATASETS:
        assert list(data.loc[data["dataset"] == dataset, "label"]) == LABELS
        assert list(display.loc[display["dataset"] == dataset, "model"]) == LABELS
    # Replicates that reached the point: all 3 but one (wiki, seed 2, gradient ascent, erasure).
    replicates = display.set_index(["dataset", "model"])["replicates"]
    assert replicates[("wiki", "gradient ascent, matched erasure")] == "2/3"
    assert (replicates.drop(("wiki", "gradient ascent, matched erasure")) == "3/3").all()
    assert _row(data, "wiki", "gradient ascent, matched erasure")["n_seeds"] == 2

    # References: mean and sample std over the seeds of the numbers in their metrics files.
    row = _row(data, "wiki", "retrained (the target)")
    ppl = [value("wiki", s, "retrained", "test_ppl") for s in SEEDS]
    assert row["test_ppl_mean"] == pytest.approx(np.mean(ppl))
    assert row["test_ppl_std"] == pytest.approx(np.std(ppl, ddof=1))
    removed = [value("wiki", s, "retrained", "removed") + MEAN_SPREAD for s in SEEDS]
    assert row["exposure_removed_mean_mean"] == pytest.approx(np.mean(removed))
    assert row["exposure_removed_mean_std"] == pytest.approx(np.std(removed, ddof=1))
    phantom = [value("wiki", s, "retrained", "phantom") + MEAN_SPREAD for s in SEEDS]
    assert row["exposure_phantom_mean_mean"] == pytest.approx(np.mean(phantom))
    kl = [value("wiki", s, "retrained", "kl_test") for s in SEEDS]
    assert row["kl_test_mean"] == pytest.approx(np.mean(kl))
    assert row["mia_loss_mean"] == pytest.approx(
        np.mean([value("wiki", s, "retrained", "mia") for s in SEEDS])
    )
    originals = [value("wiki", s, "original", "test_ppl") for s in SEEDS]
    change = [100 * (r / o - 1) for r, o in zip(ppl, originals, strict=True)]
    assert row["ppl_change_pct_mean"] == pytest.approx(np.mean(change))
    assert math.isnan(row["unlearning_s_mean"])  # references were not unlearned
    original = _row(data, "news", "original")
    assert original["ppl_change_pct_mean"] == pytest.approx(0.0)
    assert original["ppl_change_pct_std"] == pytest.approx(0.0)

    # Operating points: the metrics of the grid point each replicate selected.
    pretty = {"fisher_removal": "Fisher Removal", "gradient_ascent": "gradient ascent"}
    words = {"matched_erasure": "matched erasure", "matched_utility": "matched utility"}
    for dataset in DATASETS:
        for method in METHODS:
            for selection in words:
                row = _row(data, dataset, f"{pretty[method]}, {words[selection]}")
                seeds = _reached(dataset, method, selection)
                index = SELECTION[method][selection]
                removed = [point_removed(dataset, s, method, index) + MEAN_SPREAD for s in seeds]
                assert row["exposure_removed_mean_mean"] == pytest.approx(np.mean(removed))
                assert row["exposure_removed_mean_std"] == pytest.approx(np.std(removed, ddof=1))
                ppl = [point_ppl(dataset, s, method, index) for s in seeds]
                assert row["test_ppl_mean"] == pytest.approx(np.mean(ppl))
                # Δ perplexity: against the original of the same replicate. The originals
                # differ by 5% between seeds; every point is a fixed multiple of its own.
                factor = GRID[method][index][3]
                assert row["ppl_change_pct_mean"] == pytest.approx(100 * (factor - 1))
                assert row["ppl_change_pct_std"] == pytest.approx(0.0, abs=1e-9)
                label = point_label(method, index)
                kl = [value(dataset, s, label, "kl_test") for s in seeds]
                assert row["kl_test_mean"] == pytest.approx(np.mean(kl))
                assert row["unlearning_s_mean"] == pytest.approx(point_seconds(method, index))
                assert row["over_unlearning_mean"] == float((method, index) == OVER_UNLEARNED)
    # The unreached replicate is left out, not counted as NaN: the mean of seeds 0 and 1.
    row = _row(data, "wiki", "gradient ascent, matched erasure")
    assert row["exposure_removed_mean_mean"] == pytest.approx(6.0 + 1.0 + 0.1 + MEAN_SPREAD)

    # The four files; the CSV holds the numbers, the others the display.
    for ext, path in out.items():
        assert Path(path).stat().st_size > 0, ext
        text = Path(path).read_text()
        assert not EMAIL_RE.search(text), ext
        assert not PHONE_RE.search(text), ext
    csv = pd.read_csv(out["csv"])
    assert len(csv) == len(data)
    assert csv["exposure_removed_mean_mean"].to_numpy() == pytest.approx(
        data["exposure_removed_mean_mean"].to_numpy(), rel=1e-5
    )
    md = Path(out["md"]).read_text()
    fr = _row(data, "news", "Fisher Removal, matched utility")
    assert (
        f"| news | Fisher Removal, matched utility | 3/3 | "
        f"{fr['exposure_removed_mean_mean']:.2f} ± {fr['exposure_removed_mean_std']:.2f} |"
    ) in md
    assert "| news | original | 3/3 |" in md
    assert COMMIT in md
    assert "\\toprule" in Path(out["tex"]).read_text()
    assert "<table" in Path(out["html"]).read_text()


def test_main_table_one_replicate_shows_means_without_std(study):
    evals = loaders.load_evaluations(study.only(study.references, seed=0))
    _, selected = frontiers.load_frontiers(study.only(study.frontiers, seed=0))
    table = protocol_tables.protocol_table(evals, selected, METHODS)
    assert (table.data["n_seeds"] == 1).all()
    assert (table.display["replicates"] == "1/1").all()
    metric_columns = [label for label, _ in protocol_tables.METRICS.values()]
    assert not table.display[metric_columns].apply(lambda c: c.str.contains("±")).any().any()
    # Methods outside ``methods`` still appear, after the listed ones.
    table = protocol_tables.protocol_table(evals, selected, ["gradient_ascent"])
    news = list(table.data.loc[table.data["dataset"] == "news", "label"])
    assert news.index("gradient ascent, matched utility") < news.index(
        "Fisher Removal, matched erasure"
    )


RULES = [
    {
        "id": "fr_erases_more",
        "claim": "Fisher Removal erases more than gradient ascent at matched utility",
        "metric": "removed_exposure",
        "a": "fisher_removal",
        "b": "gradient_ascent",
        "point": "matched_utility",
        "direction": "below",
        "threshold": 0.0,
    },
    {
        "id": "fr_keeps_utility",
        "claim": "Fisher Removal costs less utility than gradient ascent at matched erasure",
        "metric": "test_log_perplexity",
        "a": "fisher_removal",
        "b": "gradient_ascent",
        "point": "matched_erasure",
        "direction": "below",
        "threshold": 0.0,
    },
    {
        "id": "no_such_method",
        "claim": "Fisher Removal is closer to retraining than NPO",
        "metric": "kl_test",
        "a": "fisher_removal",
        "b": "npo",
        "point": "matched_utility",
        "direction": "below",
        "threshold": 0.0,
    },
]


def _claim_diff(dataset: str, seed: int) -> float:
    """Removed exposure, Fisher Removal minus gradient ascent at matched utility (every canary
    of a replicate has the same difference: SPREAD is shared)."""
    return point_removed(dataset, seed, "fisher_removal", 1) - point_removed(
        dataset, seed, "gradient_ascent", 0
    )


def test_claims_table_verdicts_from_the_frontiers(study, tmp_path):
    out = outputs(tmp_path, "claims")
    result = protocol_tables.make_claims_table(
        study.frontiers, RULES, DATASETS, BOOTSTRAP, out, confirmatory_replicates=6
    )
    assert list(result.columns) == [*claims.COLUMNS, "design", "scope"]
    # 6 replicates where both methods reached their points, 5 where one did not: below the
    # confirmatory count, the claim is marked exploratory in its scope.
    by_design = result.set_index("id")["design"]
    assert by_design["fr_erases_more"] == "confirmatory"
    assert by_design["fr_keeps_utility"] == "exploratory: 5 of 6 replicates"
    assert result.set_index("id").loc["fr_keeps_utility", "scope"] == (
        "fair protocol; exploratory: 5 of 6 replicates"
    )
    by = result.set_index("id")
    # A clear effect (Fisher Removal's removed canaries 3+ bits lower on every replicate).
    held = by.loc["fr_erases_more"]
    assert held["verdict"] == "held"
    assert held["seeds"] == len(DATASETS) * len(SEEDS)
    assert held["units"] == len(DATASETS) * len(SEEDS) * len(REMOVED_IDS)
    expected = np.mean([_claim_diff(d, s) for d in DATASETS for s in SEEDS])
    assert held["estimate"] == pytest.approx(expected)
    assert held["estimate"] == pytest.approx(-3.35)
    assert held["ci_low"] <= held["estimate"] <= held["ci_high"] < 0
    assert held["p_holm"] < BOOTSTRAP["alpha"]
    # The opposite effect: Fisher Removal costs more perplexity at matched erasure (x1.04 of
    # the original against x1.01), on the 5 replicates where both reached the point.
    against = by.loc["fr_keeps_utility"]
    assert against["verdict"] == "not held"
    assert (against["seeds"], against["units"]) == (5, 5)
    assert against["estimate"] == pytest.approx(math.log(1.04) - math.log(1.01))
    assert against["ci_low"] > 0
    # A method that is not in the frontiers: no measurements.
    missing = by.loc["no_such_method"]
    assert (missing["verdict"], missing["reason"]) == ("inconclusive", "no measurements")
    assert math.isnan(missing["p_holm"])

    for ext, path in out.items():
        assert Path(path).stat().st_size > 0, ext
    csv = pd.read_csv(out["csv"])
    assert list(csv.columns) == [*claims.COLUMNS, "design", "scope"]
    assert list(csv["verdict"]) == ["held", "not held", "inconclusive"]
    md = Path(out["md"]).read_text()
    row = "| Fisher Removal erases more than gradient ascent at matched utility | fair protocol |"
    assert f"{row} \\< 0 |" in md
    assert "inconclusive (no measurements)" in md
    assert f"{held['seeds']} / {held['units']}" in md
    assert "Fair protocol: verdict datasets news, wiki" in md


def test_claims_use_only_the_verdict_datasets(study, tmp_path):
    result = protocol_tables.make_claims_table(
        study.frontiers, RULES[:1], ["news"], BOOTSTRAP, outputs(tmp_path, "claims")
    )
    row = result.iloc[0]
    assert (row["seeds"], row["units"]) == (len(SEEDS), len(SEEDS) * len(REMOVED_IDS))
    assert row["estimate"] == pytest.approx(np.mean([_claim_diff("news", s) for s in SEEDS]))
    assert row["estimate"] == pytest.approx(-3.1)
    # Same inputs, same numbers: each claim resamples with its own generator.
    again = protocol_tables.make_claims_table(
        study.frontiers, RULES[:1], ["news"], BOOTSTRAP, outputs(tmp_path, "again")
    )
    pd.testing.assert_frame_equal(result, again)


def test_claims_without_any_reached_point_are_inconclusive(study, tmp_path):
    """No frontier of the verdict datasets reached an operating point: every claim is
    inconclusive (no measurements), the table is still written."""
    path = tmp_path / "results/frontier/news/seed~0/fisher_removal.json"
    path.parent.mkdir(parents=True)
    doc = json.loads(study.only(study.frontiers, dataset="news", seed=0)[0].read_text())
    for selection in doc["selection"].values():
        selection["index"] = None
    path.write_text(json.dumps(doc))
    result = protocol_tables.make_claims_table(
        [path], RULES[:1], ["news"], BOOTSTRAP, outputs(tmp_path, "claims")
    )
    assert list(result["reason"]) == ["no measurements"]
