"""The paper config's hub path end to end, offline: config/paper_smoke.yaml over
config/paper.yaml, on tiny random hub-format models (tests/hub_cache.py) with GPT-2's real BPE.

OPT runs the whole DAG (every study, DP-SGD and the report). GPT-2 runs the model, tokenizer
and evaluation stages of one replicate (the rest of its path is the same code as OPT's).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hub_cache import build_hub_cache, offline_env
from snakemake_runner import config_of, copy_workflow, run_snakemake
from unlearnbench.models import fingerprint, load_model

pytestmark = pytest.mark.slow

PAPER_SMOKE = ("--configfile", "config/paper.yaml", "config/paper_smoke.yaml")
CANARIES = config_of("config.yaml", "paper.yaml", "paper_smoke.yaml")["canaries"]
N_CANARIES = len(CANARIES["repetitions"]) * CANARIES["per_repetition"] + CANARIES["phantoms"]
SPACE = 10 ** CANARIES["secret_digits"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("hf")
    return home, build_hub_cache(home)


def run(study: Path, hf_home: Path, target: str, *overlays: str) -> None:
    env = {**os.environ, **offline_env(hf_home)}
    args = (target, "--cores", "2", *PAPER_SMOKE, *overlays)
    run_snakemake(study, *args, env=env, timeout=600)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def check_hub_base(study: Path, source: str, revision: str) -> None:
    tokenizer = read(study / "results/tokenizer/manifest.json")
    base = read(study / "results/models/base/train.json")
    assert tokenizer["source"] == base["source"] == source
    assert tokenizer["commit"] == base["commit"] == revision
    assert base["dtype"] == "float32" and base["embedding_rows"] >= tokenizer["vocab_size"]
    assert fingerprint(load_model(study / "results/models/base")) == base["fingerprint"]


def check_canary_scores(metrics: dict) -> None:
    """Every canary ranked exactly over all candidates and extrapolated."""
    records = metrics["canaries"]
    assert len(records) == N_CANARIES
    for r in records:
        assert r["space_size"] == SPACE and 1 <= r["rank"] <= SPACE
        assert r["exposure_exact"] == pytest.approx(math.log2(SPACE / r["rank"]))
        assert 0.0 <= r["exposure_extrapolated"] <= math.log2(SPACE)
        assert isinstance(r["extracted"], bool)
    assert math.isfinite(metrics["perplexity"]["test"]["perplexity"])


def test_the_paper_smoke_runs_end_to_end_on_opt(hub, tmp_path):
    home, revisions = hub
    study = copy_workflow(tmp_path / "wf")
    run(study, home, "all")
    check_hub_base(study, "facebook/opt-125m", revisions["facebook/opt-125m"])
    check_canary_scores(read(study / "results/eval/news/seed~0/original.json"))
    assert (study / "results/tables/claims.csv").stat().st_size > 0
    dp = read(study / "results/models/news/seed~0/dp_eps~8/train.json")
    assert 0 < dp["epsilon"] <= 8.0 + 1e-6  # the accountant's epsilon, within the target


def test_the_paper_smoke_fetches_and_evaluates_gpt2(hub, tmp_path):
    home, revisions = hub
    study = copy_workflow(tmp_path / "wf")
    (study / "gpt2.yaml").write_text(f"model:\n  source: gpt2\n  revision: {revisions['gpt2']}\n")
    run(study, home, "results/eval/news/seed~0/original.json", "gpt2.yaml")
    check_hub_base(study, "gpt2", revisions["gpt2"])
    for model in ("original", "retrained"):
        check_canary_scores(read(study / f"results/eval/news/seed~0/{model}.json"))
