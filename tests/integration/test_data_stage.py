"""The data stage of the smoke study, checked on its outputs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from snakemake_runner import SMOKE, config_of, job_counts, run_snakemake

# Canaries of a replicate on the smoke config: every role, phantoms included.
_CANARIES = config_of("config.yaml", "smoke.yaml")["canaries"]
N_CANARIES = len(_CANARIES["repetitions"]) * _CANARIES["per_repetition"] + _CANARIES["phantoms"]

pytestmark = pytest.mark.slow


def test_manifests_show_real_package_text(smoke_study):
    for name in ("news", "python_docs", "usenet"):
        manifest = json.loads((smoke_study / f"results/data/{name}/manifest.json").read_text())
        assert manifest["provenance"]["git"]["commit"]
        assert manifest["cost"]["wall_time_s"] >= 0
        for split in ("train", "validation", "test"):
            frame = pd.read_parquet(smoke_study / f"results/data/{name}/{split}.parquet")
            assert len(frame) > 0 and frame["text"].str.len().min() > 0
    usenet = pd.read_parquet(smoke_study / "results/data/usenet/train.parquet")
    assert usenet["text"].str.contains(r"\w@\w", regex=True).any()


def test_canaries_inserted_exactly_and_nowhere_else(smoke_study):
    for name in ("news", "python_docs"):
        out = smoke_study / f"results/canaries/{name}/seed~0"
        train = pd.read_parquet(out / "train.parquet")["text"].tolist()
        held_out = [
            text
            for split in ("validation", "test")
            for text in pd.read_parquet(smoke_study / f"results/data/{name}/{split}.parquet")[
                "text"
            ]
        ]
        table = pd.read_csv(out / "canaries.csv", dtype={"secret": str})
        assert len(table) == N_CANARIES
        for row in table.itertuples():
            assert re.fullmatch(r"\d{4}", row.secret)
            assert sum(text.count(row.text) for text in train) == row.repetitions
            assert not any(row.secret in text for text in held_out)
        forget = json.loads((out / "forget_set.json").read_text())["indices"]
        retain = json.loads((out / "retain_set.json").read_text())["indices"]
        assert sorted(forget + retain) == list(range(len(train)))


def test_tokenizer_splits_secret_digits(smoke_study):
    from unlearnbench.tokenizer import load_tokenizer

    tok = load_tokenizer(smoke_study / "results/tokenizer")
    table = pd.read_csv(smoke_study / "results/canaries/news/seed~0/canaries.csv", dtype=str)
    for row in table.itertuples():
        prefix_ids = tok.encode(row.prefix, add_special_tokens=False)
        full_ids = tok.encode(row.text, add_special_tokens=False)
        assert full_ids[: len(prefix_ids)] == prefix_ids
        assert [tok.decode([i]) for i in full_ids[len(prefix_ids) :]] == list(row.secret)


def test_completed_study_reruns_nothing(smoke_study):
    proc = run_snakemake(smoke_study, "all", "-n", "--cores", "2", *SMOKE)
    assert job_counts(proc.stdout) == {}
    assert "Nothing to be done" in proc.stdout + proc.stderr
