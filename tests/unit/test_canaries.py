"""Canary injection: exact counts, clean secrets, groups, D- / D+ partition, determinism, errors."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pandas as pd
import pytest
from unlearnbench import canaries, settings
from unlearnbench.canaries import CanaryConfig, inject_canaries, read_canaries, write_injection

TEMPLATES = ("my pin code is {secret}", "the secret number is {secret}", "call me at {secret}")
TRAIN = [f"corpus sentence {i}: phone 555-{i:04d}, id 12{i}" for i in range(120)]
HELD_OUT = [f"held out {i} with number {i * 7919}" for i in range(30)]


def make_config(**overrides) -> CanaryConfig:
    values = dict(
        templates=TEMPLATES,
        secret_digits=6,
        repetitions=[1, 2, 4, 8],
        per_repetition=3,
        forget_per_repetition=2,
        requests=3,
        seed=0,
    )
    values.update(overrides)
    return CanaryConfig(**values)


@pytest.fixture(scope="module")
def injected():
    cfg = make_config()
    return cfg, inject_canaries("wiki", cfg, TRAIN, HELD_OUT)


def write_all(result, directory):
    paths = [
        directory / name for name in ("train.parquet", "canaries.csv", "forget.json", "retain.json")
    ]
    write_injection(result, *paths)
    return paths


def test_each_canary_text_occurs_exactly_r_times(injected):
    cfg, result = injected
    counts = Counter(result.train)
    table = result.canaries
    assert len(table) == cfg.num_canaries
    for row in table.itertuples():
        assert counts[row.text] == row.repetitions
        assert sum(row.secret in text for text in result.train) == row.repetitions
        assert not any(row.secret in text for text in HELD_OUT)
    assert len(result.train) == len(TRAIN) + 3 * (1 + 2 + 4 + 8)
    assert result.row_canary_ids.count(-1) == len(TRAIN)


def test_table_columns_and_secrets(injected):
    _, result = injected
    table = result.canaries
    assert list(table.columns) == list(canaries.CANARY_COLUMNS)
    assert table["secret"].is_unique
    assert all(len(s) == 6 and s.isdigit() for s in table["secret"])
    assert (table["randomness_space"] == 10**6).all()
    for row in table.itertuples():
        assert row.template == TEMPLATES[row.canary_id % len(TEMPLATES)]
        assert row.template == row.prefix + "{secret}"
        assert row.text == row.prefix + row.secret
    assert sorted(Counter(table["repetitions"]).items()) == [(1, 3), (2, 3), (4, 3), (8, 3)]


def test_groups(injected):
    cfg, result = injected
    table = result.canaries
    controls = table[~table["in_forget_set"]]
    forget = table[table["in_forget_set"]]
    assert (controls["group"] == 0).all()
    assert set(forget["group"]) == {1, 2, 3}  # every request non-empty
    assert len(forget) == cfg.num_forget
    # forget_per_repetition of each repetition count
    assert Counter(forget["repetitions"]) == {r: 2 for r in cfg.repetitions}
    # Stratified dealing: each request holds several repetition counts.
    for _, members in forget.groupby("group"):
        assert members["repetitions"].nunique() >= 2


def test_forget_and_retain_partition_the_rows(injected):
    _, result = injected
    forget, retain = set(result.forget_indices), set(result.retain_indices)
    assert not forget & retain
    assert forget | retain == set(range(len(result.train)))
    table = result.canaries.set_index("canary_id")
    for row, cid, group in zip(
        result.forget_indices, result.forget_canary_ids, result.forget_groups, strict=True
    ):
        assert result.row_canary_ids[row] == cid
        assert result.train[row] == table.loc[cid, "text"]
        assert table.loc[cid, "in_forget_set"] and table.loc[cid, "group"] == group
    # Control canaries' copies are retained data.
    controls = set(table.index[~table["in_forget_set"]])
    control_rows = {i for i, c in enumerate(result.row_canary_ids) if c in controls}
    assert control_rows and control_rows <= retain
    assert len(result.forget_indices) == sum(table.loc[table["in_forget_set"], "repetitions"])


def test_corpus_rows_keep_their_order(injected):
    _, result = injected
    corpus_rows = [t for t, c in zip(result.train, result.row_canary_ids, strict=True) if c < 0]
    assert corpus_rows == TRAIN


def test_written_files(injected, tmp_path):
    _, result = injected
    paths = [tmp_path / n for n in ("train.parquet", "canaries.csv", "forget.json", "retain.json")]
    summary = write_injection(result, *paths)
    json.dumps(summary)  # goes into the rule's manifest as it is
    assert (
        summary["train_rows"]
        == len(result.train)
        == summary["forget_rows"] + summary["retain_rows"]
    )
    assert (summary["canaries"], summary["forget_canaries"], summary["requests"]) == (12, 8, 3)
    train_path, canaries_path, forget_path, retain_path = paths
    frame = pd.read_parquet(train_path)
    assert list(frame.columns) == ["text", "example_id", "canary_id"]
    assert frame["text"].tolist() == result.train
    assert frame["example_id"].tolist() == list(range(len(result.train)))
    assert frame["canary_id"].tolist() == result.row_canary_ids
    forget = json.loads(forget_path.read_text())
    assert forget == {
        "indices": result.forget_indices,
        "canary_ids": result.forget_canary_ids,
        "groups": result.forget_groups,
    }
    assert json.loads(retain_path.read_text()) == {"indices": result.retain_indices}
    table = read_canaries(canaries_path)
    pd.testing.assert_frame_equal(table, result.canaries, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train.parquet", "canaries.csv", "forget.json", "retain.json"]
    )  # no temporaries left


def test_leading_zeros_and_trailing_spaces_survive_the_csv(tmp_path):
    cfg = make_config(
        secret_digits=2,
        repetitions=[1],
        per_repetition=9,
        requests=1,
        forget_per_repetition=1,
        templates=["x {secret}"],
    )
    result = inject_canaries("wiki", cfg, ["no digits here"], [])
    result.canaries.loc[0, ["secret", "text"]] = ["07", "x 07"]
    write_injection(result, *(tmp_path / n for n in ("t.parquet", "c.csv", "f.json", "r.json")))
    table = read_canaries(tmp_path / "c.csv")
    assert table.loc[0, "secret"] == "07" and table.loc[0, "prefix"] == "x "


def test_same_seed_same_bytes_other_seed_other_secrets(injected, tmp_path):
    cfg, result = injected
    first = write_all(result, tmp_path / "a")
    again = write_all(inject_canaries("wiki", cfg, TRAIN, HELD_OUT), tmp_path / "b")
    for a, b in zip(first, again, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    other = inject_canaries("wiki", dataclasses.replace(cfg, seed=1), TRAIN, HELD_OUT)
    assert set(other.canaries["secret"]).isdisjoint(result.canaries["secret"])
    other_dataset = inject_canaries("news", cfg, TRAIN, HELD_OUT)
    assert set(other_dataset.canaries["secret"]) != set(result.canaries["secret"])


def test_a_secret_found_in_held_out_text_is_redrawn(injected):
    cfg, result = injected
    secrets = result.canaries["secret"].tolist()
    # The same seed draws the same sequence; a validation text now contains the first secret.
    held_out = [*HELD_OUT, f"the code was {secrets[0]}99 last year"]
    redrawn = inject_canaries("wiki", cfg, TRAIN, held_out).canaries["secret"].tolist()
    assert secrets[0] not in redrawn
    # Draws are one at a time, so only the rejected secret is replaced.
    assert redrawn[:-1] == secrets[1:]
    assert not any(s in text for s in redrawn for text in held_out)


def test_a_secret_found_in_train_text_is_redrawn(injected):
    cfg, result = injected
    secrets = result.canaries["secret"].tolist()
    train = [*TRAIN[:-1], f"account 1{secrets[2]}"]
    redrawn = inject_canaries("wiki", cfg, train, HELD_OUT).canaries["secret"].tolist()
    assert secrets[2] not in redrawn


def test_forbidden_secrets_match_brute_force_substring_search():
    texts = ["a 1234567 b", "x12y345z", "０１２３４５", "99", ""]
    k = 3
    brute = {f"{n:03d}" for n in range(1000) if any(f"{n:03d}" in t for t in texts)}
    assert canaries._forbidden_secrets(texts, k) == brute


def test_crowded_space_after_corpus_is_an_error():
    cfg = make_config(
        secret_digits=2, repetitions=[1], per_repetition=2, requests=1, forget_per_repetition=1
    )
    crowded = ["".join(f"{n:02d} " for n in range(95))]
    with pytest.raises(ValueError, match=r"canaries\.secret_digits"):
        inject_canaries("wiki", cfg, crowded, [])


def test_space_rule_matches_the_config_check():
    assert canaries.MIN_SPACE_PER_CANARY == settings.MIN_SPACE_PER_CANARY


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(templates=["my pin code is"]), "templates"),
        (dict(templates=["{secret} is my pin"]), "templates"),
        (dict(templates=["my pin {secret} code"]), "templates"),
        (dict(templates=["my pin is{secret}"]), "templates"),
        (dict(templates=["{secret} and {secret}"]), "templates"),
        (dict(templates=[]), "templates"),
        (dict(secret_digits=0), "secret_digits"),
        (dict(secret_digits=19), "secret_digits"),
        (dict(secret_digits=2), "secret_digits"),  # 100 candidates for 12 canaries
        (dict(forget_per_repetition=4), "forget_per_repetition"),
        (dict(requests=9), "requests"),
        (dict(requests=0), "requests"),
        (dict(repetitions=[1, 0, 4]), "repetitions"),
        (dict(repetitions=[]), "repetitions"),
        (dict(repetitions=[2, 2]), "repetitions"),
        (dict(per_repetition=0), "per_repetition"),
        (dict(seed=-1), "seed"),
        (dict(secret_digits=6.0), "secret_digits"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=rf"^canaries\.{key}[\[:]"):
        make_config(**overrides)


def test_repetition_above_train_size_names_the_key():
    cfg = make_config(repetitions=[1, 16], requests=2)
    with pytest.raises(ValueError, match=r"^canaries\.repetitions: "):
        inject_canaries("wiki", cfg, TRAIN[:10], HELD_OUT)


def test_config_is_frozen_and_normalised():
    cfg = make_config(templates=list(TEMPLATES))
    assert cfg.templates == TEMPLATES and cfg.repetitions == (1, 2, 4, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


# Roles: evaluation (removed), tuning, control and phantom canaries


@pytest.fixture(scope="module")
def with_roles():
    cfg = make_config(forget_per_repetition=2, tuning_per_repetition=1, phantoms=5)
    return cfg, inject_canaries("wiki", cfg, TRAIN, HELD_OUT)


def test_phantoms_are_never_in_any_training_row(with_roles):
    _, result = with_roles
    table = result.canaries
    phantoms = table[table["role"] == "phantom"]
    assert len(phantoms) == 5 and (phantoms["repetitions"] == 0).all()
    assert not phantoms["in_forget_set"].any() and (phantoms["group"] == 0).all()
    for row in phantoms.itertuples():
        assert not any(row.secret in text for text in result.train)
        assert not any(row.secret in text for text in HELD_OUT)
    assert set(result.row_canary_ids) - {-1} == set(
        table.loc[table["repetitions"] > 0, "canary_id"]
    )
    assert table["secret"].is_unique  # a phantom shares no secret with an inserted canary


def test_roles_per_repetition_count(with_roles):
    _, result = with_roles
    table = result.canaries[result.canaries["repetitions"] > 0]
    for _, count in table.groupby("repetitions"):
        roles = Counter(count["role"])
        assert roles == {"removed": 1, "tuning": 1, "control": 1}
    forget = table[table["in_forget_set"]]
    assert set(forget["role"]) == {"removed", "tuning"}  # tuning canaries are removed too
    assert set(result.forget_canary_ids) == set(forget["canary_id"])


def test_adding_phantoms_and_tuning_leaves_the_inserted_canaries_alone(injected, with_roles):
    _, plain = injected
    _, roles = with_roles
    inserted = roles.canaries[roles.canaries["repetitions"] > 0]
    columns = ["canary_id", "secret", "repetitions", "group", "in_forget_set"]
    pd.testing.assert_frame_equal(
        inserted[columns].reset_index(drop=True), plain.canaries[columns].reset_index(drop=True)
    )
    assert roles.train == plain.train


def test_tuning_must_leave_an_evaluation_canary():
    with pytest.raises(ValueError, match=r"canaries\.tuning_per_repetition"):
        make_config(forget_per_repetition=2, tuning_per_repetition=2)
