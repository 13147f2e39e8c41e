"""Frontier files as frames (reporting.frontiers): every point, the operating points, the
canaries at them, the paired data each claim is judged on, the weight changes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from synthetic_study import (
    CANARIES,
    DATASETS,
    GRID,
    MEAN_SPREAD,
    METHODS,
    REMOVED_IDS,
    SEEDS,
    SPREAD,
    UNREACHED,
    canary_exposures,
    point_l2,
    point_label,
    point_ppl,
    point_removed,
    point_seconds,
    selected_index,
    value,
)
from unlearnbench.reporting import frontiers

N_POINTS = sum(len(points) for points in GRID.values())


@pytest.fixture(scope="module")
def loaded(study):
    return frontiers.load_frontiers(study.frontiers)


def test_every_point_in_file_order_with_its_metrics(loaded):
    points, _ = loaded
    assert len(points) == len(DATASETS) * len(SEEDS) * N_POINTS
    mine = points[(points["dataset"] == "wiki") & (points["seed"] == 1)]
    ga = mine[mine["method"] == "gradient_ascent"]
    # As in the file, not sorted by strength.
    assert list(ga["point"]) == [0, 1, 2]
    assert list(ga["strength"]) == [2e-4, 1e-4, 1e-3]
    assert list(ga["knobs"]) == ["lr=0.0001, steps=2", "lr=0.0001, steps=1", "lr=0.001, steps=1"]
    for _, row in ga.iterrows():
        i = row["point"]
        assert row["exposure_removed_mean"] == pytest.approx(
            point_removed("wiki", 1, "gradient_ascent", i) + MEAN_SPREAD
        )
        assert row["exposure_removed_max"] == pytest.approx(
            point_removed("wiki", 1, "gradient_ascent", i) + max(SPREAD)
        )
        label = point_label("gradient_ascent", i)
        assert row["exposure_control_mean"] == pytest.approx(
            value("wiki", 1, label, "control") + MEAN_SPREAD
        )
        assert row["test_ppl"] == pytest.approx(point_ppl("wiki", 1, "gradient_ascent", i))
        assert row["validation_ppl"] == pytest.approx(value("wiki", 1, label, "validation_ppl"))
        assert row["unlearning_s"] == pytest.approx(point_seconds("gradient_ascent", i))
        assert not row["diverged"]
    # The diverged point: listed, flagged, without metrics.
    fr = mine[mine["method"] == "fisher_removal"].set_index("point")
    assert list(fr["diverged"]) == [False, False, False, True]
    assert math.isnan(fr.loc[3, "test_ppl"]) and math.isnan(fr.loc[3, "exposure_removed_mean"])
    assert math.isnan(fr.loc[3, "unlearning_s"])
    assert (points["commit"] == "abc123def4567890").all()


def test_operating_points_and_the_one_never_reached(loaded):
    points, selected = loaded
    assert len(selected) == len(DATASETS) * len(SEEDS) * len(METHODS) * 2
    assert selected.duplicated(["dataset", "seed", "method", "selection"]).sum() == 0
    unreached = selected[~selected["reached"]]
    assert len(unreached) == 1
    row = unreached.iloc[0]
    assert (row["dataset"], row["seed"], row["method"], row["selection"]) == UNREACHED
    assert math.isnan(row["exposure_removed_mean"]) and math.isnan(row["test_ppl"])
    # Every reached one is its grid point's row of ``points``.
    key = ["dataset", "seed", "method", "point"]
    reached = selected[selected["reached"]]
    merged = reached.merge(points, on=key, suffixes=("", "_grid"))
    assert len(merged) == len(reached)
    for column in ("exposure_removed_mean", "test_ppl", "kl_test", "strength"):
        assert merged[column].to_numpy() == pytest.approx(merged[f"{column}_grid"].to_numpy())
    for _, row in reached.iterrows():
        index = selected_index(row["dataset"], row["seed"], row["method"], row["selection"])
        assert row["point"] == index


def test_canaries_at_each_operating_point(study):
    canaries = frontiers.selected_canaries(study.frontiers)
    n_reached = len(DATASETS) * len(SEEDS) * len(METHODS) * 2 - 1
    assert len(canaries) == n_reached * len(CANARIES)
    assert set(canaries["role"]) == {"removed", "tuning", "control", "phantom"}
    gone = canaries[
        (canaries["dataset"] == UNREACHED[0])
        & (canaries["seed"] == UNREACHED[1])
        & (canaries["model"] == UNREACHED[2])
        & (canaries["selection"] == UNREACHED[3])
    ]
    assert gone.empty
    at = canaries[
        (canaries["dataset"] == "news")
        & (canaries["seed"] == 2)
        & (canaries["model"] == "fisher_removal")
        & (canaries["selection"] == "matched_utility")
    ].set_index("canary_id")
    expected = canary_exposures(
        "news", 2, point_label("fisher_removal", 1), point_removed("news", 2, "fisher_removal", 1)
    )
    assert at["exposure"].to_dict() == pytest.approx(expected)
    assert at["role"].to_dict() == {cid: role for cid, role, _, _ in CANARIES}


def _claim(metric: str, point: str, a: str = "fisher_removal", b: str = "gradient_ascent"):
    return {"metric": metric, "point": point, "a": a, "b": b}


def test_claim_data_pairs_canaries_a_minus_b(study, loaded):
    _, selected = loaded
    canaries = frontiers.selected_canaries(study.frontiers)
    data = frontiers.claim_data(_claim("removed_exposure", "matched_utility"), selected, canaries)
    assert list(data.columns) == ["seed", "unit", "value"]
    assert len(data) == len(DATASETS) * len(SEEDS) * len(REMOVED_IDS)
    assert sorted(set(data["seed"])) == [f"{d}/{s}" for d in DATASETS for s in SEEDS]
    assert sorted(set(data["unit"])) == [str(c) for c in REMOVED_IDS]
    for _, row in data.iterrows():
        dataset, seed = row["seed"].split("/")
        seed = int(seed)
        a = point_removed(dataset, seed, "fisher_removal", 1)
        b = point_removed(dataset, seed, "gradient_ascent", 0)
        assert row["value"] == pytest.approx(a - b)  # the canary's SPREAD cancels
    # b - a: the same pairs, negated.
    swapped = frontiers.claim_data(
        _claim("removed_exposure", "matched_utility", "gradient_ascent", "fisher_removal"),
        selected,
        canaries,
    )
    assert swapped["value"].to_numpy() == pytest.approx(-data["value"].to_numpy())
    # Control canaries: paired too (their exposure differs by the model label only).
    control = frontiers.claim_data(
        _claim("control_exposure", "matched_utility"), selected, canaries
    )
    first = control.iloc[0]
    assert first["seed"] == "news/0" and first["unit"] == "4"
    assert first["value"] == pytest.approx(
        value("news", 0, point_label("fisher_removal", 1), "control")
        - value("news", 0, point_label("gradient_ascent", 0), "control")
    )


def test_claim_data_drops_replicates_where_a_method_missed_the_point(study, loaded):
    _, selected = loaded
    canaries = frontiers.selected_canaries(study.frontiers)
    # Canary metric at matched erasure: gradient ascent never reached it on wiki/2.
    data = frontiers.claim_data(_claim("removed_exposure", "matched_erasure"), selected, canaries)
    assert "wiki/2" not in set(data["seed"])
    assert len(data) == (len(DATASETS) * len(SEEDS) - 1) * len(REMOVED_IDS)
    # Replicate metric: one value per replicate, log perplexity of a minus b.
    data = frontiers.claim_data(
        _claim("test_log_perplexity", "matched_erasure"), selected, canaries
    )
    assert list(data["unit"].unique()) == ["replicate"]
    assert list(data["seed"]) == ["news/0", "news/1", "news/2", "wiki/0", "wiki/1"]
    for _, row in data.iterrows():
        dataset, seed = row["seed"].split("/")
        expected = math.log(point_ppl(dataset, int(seed), "fisher_removal", 2)) - math.log(
            point_ppl(dataset, int(seed), "gradient_ascent", 2)
        )
        assert row["value"] == pytest.approx(expected)
    # Where both reached it, every replicate counts.
    data = frontiers.claim_data(_claim("kl_test", "matched_utility"), selected, canaries)
    assert len(data) == len(DATASETS) * len(SEEDS)
    assert data["value"].iloc[0] == pytest.approx(
        value("news", 0, point_label("fisher_removal", 1), "kl_test")
        - value("news", 0, point_label("gradient_ascent", 0), "kl_test")
    )
    # A method absent from the frontiers: no data, both kinds.
    for metric in ("removed_exposure", "mia_loss_auc"):
        rule = _claim(metric, "matched_utility", b="npo")
        assert frontiers.claim_data(rule, selected, canaries).empty


def test_restrict_keeps_the_verdict_datasets(study, loaded):
    _, selected = loaded
    canaries = frontiers.selected_canaries(study.frontiers)
    for frame in (selected, canaries):
        kept = frontiers.restrict(frame, ["wiki"])
        assert set(kept["dataset"]) == {"wiki"}
        assert len(kept) == (frame["dataset"] == "wiki").sum()
        assert frontiers.restrict(frame, []).empty
    empty = pd.DataFrame()
    assert frontiers.restrict(empty, ["wiki"]) is empty


def test_weight_deltas_at_an_operating_point(study):
    seed0 = study.only(study.frontiers, seed=0)
    deltas = frontiers.weight_deltas_at(seed0)  # matched utility by default
    assert len(deltas) == len(DATASETS) * len(METHODS) * 3  # all, attention, mlp
    assert set(deltas["layer_type"]) == {"all", "attention", "mlp"}
    by = deltas.set_index(["dataset", "method", "layer_type"])
    assert by.loc[("news", "fisher_removal", "all"), "l2"] == pytest.approx(
        point_l2("fisher_removal", 1)
    )
    assert by.loc[("wiki", "gradient_ascent", "mlp"), "l2"] == pytest.approx(
        point_l2("gradient_ascent", 0)
    )
    row = by.loc[("news", "fisher_removal", "all")]
    assert len(row["bins"]) == len(row["counts"]) + 1
    assert np.all(np.diff(row["bins"]) > 0)
    # At matched erasure, the replicate that never reached it has no histogram.
    seed2 = study.only(study.frontiers, dataset="wiki", seed=2)
    erasure = frontiers.weight_deltas_at(seed2, "matched_erasure")
    assert set(erasure["method"]) == {"fisher_removal"}
    assert erasure["l2"].iloc[0] == pytest.approx(point_l2("fisher_removal", 2))
