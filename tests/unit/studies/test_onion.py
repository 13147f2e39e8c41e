"""The onion study's selections: targeted = most exposed; random = other canaries holding as
many training rows, seeded per dataset and replicate."""

from __future__ import annotations

import pandas as pd
import pytest
from unlearnbench.studies.onion import canary_rows, select_canaries

# 16 canaries, 4 per repetition count, as the default inserts them; exposure rises with copies.
ROWS = {i: (2, 4, 8, 16)[i // 4] for i in range(16)}
EXPOSURES = {i: float(ROWS[i]) - 0.1 * (i % 4) for i in range(16)}


def test_targeted_takes_the_most_exposed():
    assert select_canaries(EXPOSURES, ROWS, 3, "targeted", 0, "news") == [12, 13, 14]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dataset", ["news", "python_docs"])
def test_random_set_is_disjoint_and_matched_in_rows(seed, dataset):
    targeted = select_canaries(EXPOSURES, ROWS, 3, "targeted", seed, dataset)
    chosen = select_canaries(EXPOSURES, ROWS, 3, "random", seed, dataset)
    assert not set(chosen) & set(targeted)
    assert sum(ROWS[i] for i in chosen) == sum(ROWS[i] for i in targeted) == 48
    assert chosen == select_canaries(EXPOSURES, ROWS, 3, "random", seed, dataset)  # seeded


def test_random_set_differs_across_datasets_and_replicates():
    draws = {
        (dataset, seed): tuple(select_canaries(EXPOSURES, ROWS, 3, "random", seed, dataset))
        for dataset in ("news", "python_docs", "wikipedia")
        for seed in (0, 1, 2)
    }
    # The old design drew one fixed set ({2, 5, 7}) everywhere; now the draws vary.
    assert len(set(draws.values())) >= 6


def test_closest_match_when_rows_cannot_add_up():
    rows = {0: 5, 1: 4, 2: 3, 3: 3}  # no subset of 1, 2, 3 holds 5 rows: 4 is the closest
    exposures = {0: 9.0, 1: 8.0, 2: 1.0, 3: 0.5}
    assert select_canaries(exposures, rows, 1, "random", 0, "news") == [1]


def test_canary_rows_counts_copies(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": list("abcdef"), "canary_id": [-1, 3, 3, -1, 7, 3]}).to_parquet(path)
    assert canary_rows(path) == {3: 3, 7: 1}


def test_unknown_selection_and_too_many_are_refused():
    with pytest.raises(ValueError, match="unknown selection"):
        select_canaries(EXPOSURES, ROWS, 3, "worst", 0, "news")
    with pytest.raises(ValueError, match=r"onion\.remove"):
        select_canaries(EXPOSURES, ROWS, 16, "targeted", 0, "news")
