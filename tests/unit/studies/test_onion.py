"""The onion study: sibling canaries on shared templates, half the templates treated (drawn per
dataset and replicate), the requests each arm trains on, and the within-run contrast."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from unlearnbench.studies.onion import (
    OnionConfig,
    inject_siblings,
    random_rows,
    treated_templates,
    write_onion_data,
)

TEMPLATES = [f"code number {i} is {{secret}}" for i in range(6)]
CORPUS = [f"corpus row {i} with words" for i in range(120)]


def config(seed=0, **kw):
    values = {"templates": TEMPLATES, "siblings": [16, 8, 4], "secret_digits": 4, "seed": seed}
    return OnionConfig(**{**values, **kw})


def test_siblings_share_templates_and_counts():
    result = inject_siblings("news", config(), CORPUS, ["held out"])
    table = result.canaries
    assert len(table) == 18
    for index in range(6):
        mine = table[table["template_index"] == index].sort_values("sibling")
        assert mine["sibling"].tolist() == [0, 1, 2]
        assert mine["repetitions"].tolist() == [16, 8, 4]
        assert mine["template"].nunique() == 1 and mine["secret"].nunique() == 3
    copies = pd.Series(result.row_canary_ids).value_counts()
    pairs = zip(table["canary_id"], table["repetitions"], strict=True)
    assert all(copies[cid] == r for cid, r in pairs)
    assert result.row_canary_ids.count(-1) == len(CORPUS)


def test_half_the_templates_are_treated_and_their_maskers_form_the_forget_set():
    result = inject_siblings("news", config(), CORPUS, [])
    table = result.canaries
    treated = sorted(table.loc[table["treated"], "template_index"].unique())
    assert treated == treated_templates(config(), "news") and len(treated) == 3
    maskers = table[table["treated"] & (table["sibling"] == 0)]
    assert set(table.loc[table["role"] == "removed", "canary_id"]) == set(maskers["canary_id"])
    assert (table.loc[~table["canary_id"].isin(maskers["canary_id"]), "role"] == "control").all()
    # The forget rows are exactly the treated maskers' copies; every other row is retained.
    rows = np.asarray(result.row_canary_ids)
    assert (
        sorted(result.forget_indices)
        == np.flatnonzero(np.isin(rows, maskers["canary_id"])).tolist()
    )
    assert sorted(result.forget_indices + result.retain_indices) == list(range(len(rows)))
    assert len(result.forget_indices) == 3 * 16


def test_treated_draw_is_seeded_per_dataset_and_replicate():
    draws = {
        (dataset, seed): tuple(treated_templates(config(seed), dataset))
        for dataset in ("news", "python_docs", "wikipedia")
        for seed in (0, 1, 2)
    }
    assert draws[("news", 0)] == tuple(treated_templates(config(0), "news"))
    assert len(set(draws.values())) >= 5  # 20 possible halves; not one fixed draw


def test_onion_secrets_are_not_the_main_studys():
    from unlearnbench.canaries import CanaryConfig, inject_canaries

    main = inject_canaries(
        "news",
        CanaryConfig(
            templates=TEMPLATES,
            secret_digits=4,
            repetitions=(16, 8, 4),
            per_repetition=6,
            forget_per_repetition=1,
            requests=1,
            seed=0,
        ),
        CORPUS,
        [],
    )
    onion = inject_siblings("news", config(), CORPUS, [])
    assert not set(main.canaries["secret"]) & set(onion.canaries["secret"])


def test_random_arm_removes_as_many_corpus_rows_seeded(tmp_path):
    result = inject_siblings("news", config(), CORPUS, [])
    rows = random_rows(result, 48, 0, "news")
    assert len(rows) == len(set(rows)) == 48
    assert all(result.row_canary_ids[i] == -1 for i in rows)
    assert rows == random_rows(result, 48, 0, "news")
    assert rows != random_rows(result, 48, 1, "news")
    with pytest.raises(ValueError, match=r"onion\.siblings"):
        random_rows(result, len(CORPUS) + 1, 0, "news")


def test_write_onion_data_writes_every_request(tmp_path):
    cfg = config()
    result = inject_siblings("news", cfg, CORPUS, [])
    requests = {
        name: {"forget": tmp_path / name / "f.json", "retain": tmp_path / name / "r.json"}
        for name in ("full", "masked", "random")
    }
    data = {"train": tmp_path / "train.parquet", "canaries": tmp_path / "canaries.csv"}
    manifest = write_onion_data(result, cfg, "news", data, requests)
    n = len(result.train)
    read = {k: {s: json.loads(p.read_text()) for s, p in v.items()} for k, v in requests.items()}
    assert read["full"]["forget"]["indices"] == [] and read["full"]["retain"]["indices"] == list(
        range(n)
    )
    assert read["masked"]["forget"]["indices"] == result.forget_indices
    assert len(read["random"]["forget"]["indices"]) == len(result.forget_indices)
    for name in requests:
        both = read[name]["forget"]["indices"] + read[name]["retain"]["indices"]
        assert sorted(both) == list(range(n))
    assert manifest["removed_rows"] == {"masked": 48, "full": 0, "random": 48}
    # Every recorded file resolves from the manifest's folder (where verify looks for them).
    assert len(manifest["files"]) == 8
    assert all((tmp_path / name).is_file() for name in manifest["files"])
    table = pd.read_csv(data["canaries"])
    assert {"template_index", "sibling", "treated"} <= set(table.columns)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"templates": TEMPLATES[:3]}, "even number"),
        ({"siblings": [16]}, "at least one sibling"),
        ({"siblings": [4, 8]}, "decrease"),
        ({"templates": ["no placeholder here"] * 2}, r"onion\.templates\[0\]"),
        ({"secret_digits": 1}, r"canaries\.secret_digits"),
    ],
)
def test_bad_designs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        config(**kw)
