"""score_model on the tiny replicate: its keys, determinism, and KL 0 to an identical reference."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from unlearnbench.evaluation.canary_scores import exposures_of, summarise
from unlearnbench.evaluation.config import EvalConfig
from unlearnbench.evaluation.distance import over_unlearning
from unlearnbench.evaluation.model_scores import KL_SPLITS, load_scoring_data, score_model
from unlearnbench.models import ModelConfig, build_model, fingerprint, load_model
from unlearnbench.texts import read_index_set

CFG = EvalConfig(
    batch_size=4, retain_sample=8, estimator="exact", max_exact_space=1000,
    extrapolation_samples=100, seed=0,
)  # fmt: skip
KEYS = {
    "fingerprint", "perplexity", "canaries", "summary", "over_unlearning", "forget_quality",
    "membership",
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(replicate_files, one_thread):
    """The original model scored against itself as the retrained model and as the base."""
    replicate = dataclasses.replace(
        replicate_files, retrained=replicate_files.original, base=replicate_files.original
    )
    data = load_scoring_data(replicate, CFG)
    model = load_model(replicate_files.original, vocab_size=len(data.tokenizer))
    return replicate, data, model, score_model(model, data, CFG)


def test_score_model_returns_the_documented_keys(setup):
    replicate, data, model, out = setup
    assert set(out) == KEYS
    assert set(out["perplexity"]) == {"test", "validation", "retain_sample", "forget"}
    assert out["fingerprint"] == fingerprint(model)
    assert out["perplexity"]["test"]["examples"] == 4
    assert out["perplexity"]["validation"]["examples"] == 4
    retain = read_index_set(replicate.retain)["indices"]
    assert out["perplexity"]["retain_sample"]["examples"] == min(CFG.retain_sample, len(retain))
    assert out["perplexity"]["forget"]["examples"] == len(
        read_index_set(replicate.forget)["indices"]
    )
    assert len(out["canaries"]) == len(data.probes)
    assert out["summary"] == summarise(out["canaries"])
    records = out["canaries"]
    assert out["over_unlearning"] == over_unlearning(
        exposures_of(records, "removed"), exposures_of(records, "phantom")
    )
    # No retrained metrics in the bundle: no forget quality.
    assert out["forget_quality"] == {"ks_statistic": None, "ks_p_value": None}
    assert set(out["membership"]) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}


def test_scoring_the_same_model_twice_gives_identical_results(setup):
    _, data, model, out = setup
    again = score_model(model, data, CFG)
    assert again == out
    twin = score_model(copy.deepcopy(model), data, CFG)
    assert twin == out


def test_kl_to_an_identical_reference_is_zero_on_the_kl_splits_only(setup):
    _, _, _, out = setup
    for split, ppl in out["perplexity"].items():
        if split in KL_SPLITS:
            assert ppl["kl"] == pytest.approx(0.0, abs=1e-7)
        else:
            assert ppl["kl"] is None
    assert set(KL_SPLITS) == {"test", "retain_sample"}


def test_base_model_equal_to_the_model_makes_the_reference_attack_chance(setup):
    assert setup[3]["membership"]["reference"] == 0.5


def test_forget_quality_against_its_own_records_is_perfect(setup):
    _, data, model, out = setup
    own = dataclasses.replace(data, reference_records=out["canaries"])
    quality = score_model(model, own, CFG)["forget_quality"]
    assert quality == {"ks_statistic": 0.0, "ks_p_value": 1.0}


def test_kl_to_a_different_reference_is_positive(setup):
    _, data, model, out = setup
    tokenizer = data.tokenizer
    other = build_model(
        ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32),
        vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id, seed=1,
    ).eval()  # fmt: skip
    scored = score_model(model, dataclasses.replace(data, reference=other), CFG)
    for split in KL_SPLITS:
        assert scored["perplexity"][split]["kl"] > 1e-6
        assert scored["perplexity"][split]["loss"] == out["perplexity"][split]["loss"]
