"""Training and evaluation stages of the smoke study, checked on their outputs."""

from __future__ import annotations

import json
import math

import pytest
from snakemake_runner import config_of
from unlearnbench.models import fingerprint, load_model

# Canaries of a replicate on the smoke config: every role, phantoms included.
_CANARIES = config_of("config.yaml", "smoke.yaml")["canaries"]
N_CANARIES = len(_CANARIES["repetitions"]) * _CANARIES["per_repetition"] + _CANARIES["phantoms"]

pytestmark = pytest.mark.slow

RUNS = [(d, m) for d in ("news", "python_docs") for m in ("original", "retrained")]


@pytest.mark.parametrize(("dataset", "model"), RUNS)
def test_models_saved_as_safetensors_with_history(smoke_study, dataset, model):
    directory = smoke_study / f"results/models/{dataset}/seed~0/{model}"
    manifest = json.loads((directory / "train.json").read_text())
    assert (directory / "model.safetensors").stat().st_size > 0
    assert fingerprint(load_model(directory)) == manifest["fingerprint"]
    assert manifest["history"]["steps"] > 0 and manifest["history"]["tokens_per_second"] > 0
    assert manifest["cost"]["peak_memory_mb"] > 0


def test_retrained_model_never_saw_the_forget_set(smoke_study):
    for dataset in ("news", "python_docs"):
        base = smoke_study / f"results/models/{dataset}/seed~0"
        original = json.loads((base / "original/train.json").read_text())
        retrained = json.loads((base / "retrained/train.json").read_text())
        forget = json.loads(
            (smoke_study / f"results/canaries/{dataset}/seed~0/forget_set.json").read_text()
        )
        assert original["examples"] - retrained["examples"] == len(forget["indices"])


@pytest.mark.parametrize(("dataset", "model"), RUNS)
def test_metrics_cover_every_canary(smoke_study, dataset, model):
    metrics = json.loads((smoke_study / f"results/eval/{dataset}/seed~0/{model}.json").read_text())
    for split in ("test", "retain_sample", "forget"):
        assert math.isfinite(metrics["perplexity"][split]["perplexity"])
    assert len(metrics["canaries"]) == N_CANARIES
    for record in metrics["canaries"]:
        assert record["space_size"] == 10**4
        assert 0 <= record["exposure_exact"] <= math.log2(10**4)
        assert record["exposure_extrapolated"] is not None
        assert record["estimator"] == "both"
    assert metrics["provenance"]["params"]["evaluate"]["exposure"]["estimator"] == "both"
