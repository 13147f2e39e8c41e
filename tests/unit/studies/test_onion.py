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


def test_onion_request_writes_the_subset_as_a_request(tmp_path):
    """Rule onion_request: the forget set is exactly S's copies, the retain set (what the onion
    retrain trains on) every other row, the canary table marks S removed and the rest
    controls; the random S is the same draw select_canaries makes."""
    import json

    from unlearnbench.replicate import ReplicateFiles
    from unlearnbench.studies.onion import onion_request_stage

    ids = [-1, 0, 1, 1, 2, 2, 2, -1, 3, 3, 3, 3]
    train = tmp_path / "train.parquet"
    pd.DataFrame({"text": [f"t{i}" for i in range(len(ids))], "canary_id": ids}).to_parquet(train)
    canaries = tmp_path / "canaries.csv"
    pd.DataFrame(
        {
            "canary_id": [0, 1, 2, 3, 4],
            "role": ["control", "removed", "removed", "control", "phantom"],
            "in_forget_set": [False, True, True, False, False],
            "group": [0, 1, 1, 0, 0],
            "template": "my pin code is {secret}",
            "prefix": "my pin code is",
            "secret": ["1111", "2222", "3333", "4444", "5555"],
            "text": [f"my pin code is {d * 4}" for d in "12345"],
            "repetitions": [1, 2, 3, 4, 0],
            "randomness_space": 10000,
        }
    ).to_csv(canaries, index=False)
    exposures = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    original = tmp_path / "original.json"
    records = [
        {"canary_id": c, "role": "control", "exposure_exact": e} for c, e in exposures.items()
    ]
    original.write_text(json.dumps({"canaries": records}))
    replicate = ReplicateFiles(
        dataset="news", seed=0, tokenizer_dir=tmp_path, train=train, canaries=canaries
    )
    for selection in ("targeted", "random"):
        out = {n: tmp_path / selection / f"{n}.json" for n in ("forget", "retain")}
        out["canaries"] = tmp_path / selection / "canaries.csv"
        result = onion_request_stage(selection, 1, replicate, original, out)
        rows = {c: sum(i == c for i in ids) for c in exposures}
        removed = select_canaries(exposures, rows, 1, selection, 0, "news")
        assert result["removed_canary_ids"] == removed
        forget = json.loads(out["forget"].read_text())["indices"]
        retain = json.loads(out["retain"].read_text())["indices"]
        assert forget == [i for i, c in enumerate(ids) if c in removed]
        assert retain == [i for i, c in enumerate(ids) if c not in removed]
        table = pd.read_csv(out["canaries"]).set_index("canary_id")
        assert set(table.index[table["role"] == "removed"]) == set(removed)
        assert table.loc[4, "role"] == "phantom"
        assert result["controls"] == [c for c in exposures if c not in removed]
