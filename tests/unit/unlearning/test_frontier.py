"""Frontiers: grids ordered by strength, a progressive knob read off one run equals fresh runs,
and operating points chosen blind to the evaluation canaries and the test split."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from unlearnbench.evaluation.canary_scores import exposures_of
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.unlearning.frontier import (
    erasure_target,
    grid_points,
    select_operating_points,
    strength,
)
from unlearnbench.unlearning.frontier_stage import frontier_stage

EVALUATE = {
    "batch_size": 16,
    "retain_sample": 8,
    "exposure": {"estimator": "exact", "max_exact_space": 10**4, "extrapolation_samples": 100},
}
FISHER = FisherConfig(examples=8, damping=1e-2, blocks="layer", seed=0)


def test_grid_points_cover_the_product_weakest_first():
    points = grid_points(("lr", "max_steps"), {"lr": 0.1, "max_steps": 1, "x": 0},
                         {"max_steps": [4, 1], "lr": [0.02, 0.01], "x": None})  # fmt: skip
    assert [(p["lr"], p["max_steps"]) for p in points] == [
        (0.01, 1), (0.02, 1), (0.01, 4), (0.02, 4)
    ]  # fmt: skip
    assert all(p["x"] == 0 for p in points)  # a null knob keeps the base setting
    assert strength(("lr", "max_steps"), points[-1]) == pytest.approx(0.08)
    with pytest.raises(ValueError, match=r"unlearn\.frontier\.gama: not a hyperparameter"):
        grid_points(("gamma",), {"gamma": 1.0}, {"gama": [1.0]})
    with pytest.raises(ValueError, match=r"unlearn\.frontier\.gamma: empty list"):
        grid_points(("gamma",), {"gamma": 1.0}, {"gamma": []})
    with pytest.raises(ValueError, match="names no knob"):
        grid_points(("gamma",), {"gamma": 1.0}, {"gamma": None})


def test_selection_rule_takes_the_weakest_erasure_and_the_strongest_utility():
    tuning = [3.0, 2.5, 1.9, None, 0.5]  # a point with a missing value never qualifies
    validation = [100.0, 104.0, 109.0, 115.0, None]
    chosen = select_operating_points(tuning, validation, 2.0, 110.0)
    assert chosen["matched_erasure"]["index"] == 2
    assert chosen["matched_utility"]["index"] == 2
    none = select_operating_points([3.0, 2.5], [120.0, 130.0], 1.0, 110.0)
    assert none["matched_erasure"]["index"] is None and none["matched_utility"]["index"] is None
    assert "erases" in none["matched_erasure"]["reason"]


def test_erasure_target_is_the_retrained_level_plus_the_noise_floor():
    assert erasure_target(0.5, 1.25) == {
        "tuning_exposure": 1.25,
        "retrained_tuning_exposure": 0.5,
        "twin_tuning_exposure": 1.25,
        "noise_floor": 0.75,
    }
    assert erasure_target(1.25, 0.5)["tuning_exposure"] == 2.0  # the floor is a distance
    assert erasure_target(0.5, None)["tuning_exposure"] == 0.5  # no twin: the bare level


def sweep(replicate, original, method, grid, hyper=None):
    return frontier_stage(method, hyper or {}, grid, replicate, FISHER, EVALUATE, 1.5, original)


def test_a_progressive_knob_read_off_one_run_equals_fresh_runs(targets):
    replicate, original = targets
    hyper = {"lr": 0.05, "batch_size": 4}
    one_run = sweep(replicate, original, "gradient_ascent", {"max_steps": [1, 2, 3]}, hyper)
    fresh = sweep(replicate, original, "gradient_ascent", {"max_steps": [2]}, hyper)
    assert [p["knobs"]["max_steps"] for p in one_run["points"]] == [1, 2, 3]
    assert [p["strength"] for p in one_run["points"]] == sorted(
        p["strength"] for p in one_run["points"]
    )
    assert one_run["points"][1]["metrics"] == fresh["points"][0]["metrics"]  # bitwise on CPU
    first = one_run["points"][0]["metrics"]["perplexity"]["validation"]["perplexity"]
    last = one_run["points"][2]["metrics"]["perplexity"]["validation"]["perplexity"]
    assert first != last  # each point is a different model


def test_operating_points_are_blind_to_evaluation_canaries_and_the_test_split(targets, tmp_path):
    replicate, original = targets
    grid = {"gamma": [0.001, 0.01, 0.1]}
    before = sweep(replicate, original, "fisher_removal", grid)
    # Another test split and other secrets for the evaluation (removed) canaries: what they
    # measure changes; the selection, which may not see them, must not.
    test = tmp_path / "test.parquet"
    pd.DataFrame({"text": ["a wholly different test text"] * 6}).to_parquet(test)
    table = pd.read_csv(replicate.canaries, dtype={"secret": str, "prefix": str})
    removed = table["role"] == "removed"
    table.loc[removed, "secret"] = ["987", "654", "321", "210"][: int(removed.sum())]
    table.loc[removed, "text"] = table.loc[removed, "prefix"] + table.loc[removed, "secret"]
    canaries = tmp_path / "canaries.csv"
    table.to_csv(canaries, index=False)
    after = sweep(
        dataclasses.replace(replicate, test=test, canaries=canaries), original,
        "fisher_removal", grid,
    )  # fmt: skip
    assert after["selection"] == before["selection"]

    def evaluation(point):
        metrics = point["metrics"]
        test = metrics["perplexity"]["test"]["perplexity"]
        return test, exposures_of(metrics["canaries"], "removed")

    pairs = list(zip(before["points"], after["points"], strict=True))
    assert all(evaluation(b)[0] != evaluation(a)[0] for b, a in pairs)  # the test split moved
    assert any(evaluation(b)[1] != evaluation(a)[1] for b, a in pairs)  # so did the canaries
    tuning = [exposures_of(p["metrics"]["canaries"], "tuning") for p in before["points"]]
    assert tuning == [exposures_of(p["metrics"]["canaries"], "tuning") for p in after["points"]]


def test_the_twin_widens_the_erasure_target_by_its_distance(targets, tmp_path):
    replicate, original = targets
    table = pd.read_csv(replicate.canaries)
    twin = tmp_path / "retrained_reorder.json"
    twin.write_text(json.dumps({"canaries": [
        {"canary_id": int(c), "role": "tuning", "exposure_exact": 4.5}
        for c in table[table["role"] == "tuning"].canary_id
    ]}))  # fmt: skip
    grid = {"gamma": [0.001, 0.01]}
    alone = sweep(replicate, original, "fisher_removal", grid)
    paired = frontier_stage(
        "fisher_removal", {}, grid, replicate, FISHER, EVALUATE, 1.5, original, twin_metrics=twin
    )
    assert alone["target"]["tuning_exposure"] == 3.5
    assert paired["target"]["noise_floor"] == 1.0
    assert paired["target"]["tuning_exposure"] == 4.5
    assert [p["metrics"] for p in paired["points"]] == [p["metrics"] for p in alone["points"]]


def test_matched_utility_on_the_validation_split_alone_agrees_with_the_frontier(targets):
    """The real-world study's point: every grid point scored on the validation split only; the
    same validation perplexities as the full frontier, the choice of its matched-utility rule
    at the same budget, and the weakest point (flagged unreached) where none stays within."""
    from unlearnbench.unlearning.frontier_stage import matched_utility_stage

    replicate, original = targets
    grid = {"gamma": [0.001, 0.01, 0.1]}
    frontier = sweep(replicate, original, "fisher_removal", grid)
    validation = [
        p["metrics"]["perplexity"]["validation"]["perplexity"] for p in frontier["points"]
    ]

    def choose(factor):
        return matched_utility_stage(
            "fisher_removal", {}, grid, replicate, FISHER, factor, EVALUATE["batch_size"]
        )

    _, record = choose(1e9)
    assert record["validation_perplexity"]["points"] == pytest.approx(validation, rel=1e-9)
    assert record["reached"] and record["index"] == 2  # everything within: the strongest
    start = record["validation_perplexity"]["original"]
    factor = (sorted(validation)[1] + 1e-6) / start  # between the points
    hyper, record = choose(factor)
    expected = select_operating_points([None] * 3, validation, 0.0, factor * start)
    assert record["reached"] and record["index"] == expected["matched_utility"]["index"]
    assert hyper["gamma"] == grid["gamma"][record["index"]]
    hyper, record = choose(1e-6)  # nothing within the budget: the weakest point, flagged
    assert not record["reached"] and record["index"] == 0 and hyper["gamma"] == 0.001
