"""Exposure: the fast exact rank against brute force, the extrapolation against the exact value."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from references.exposure_brute_force import all_candidates, brute_force_rank
from transformers import GPT2Config, GPT2LMHeadModel
from unlearnbench.exposure import (
    DEFAULT_MAX_EXACT_SPACE,
    canary_exposures,
    canary_token_ids,
    exact_rank,
    exposure_from_rank,
    extrapolated_exposure,
    greedy_extract,
)
from unlearnbench.exposure.scoring import DigitScorer, eval_mode, score_full_sequences

VOCAB = 64
DIGITS = list(range(10, 20))  # token ids standing for '0'..'9'
PREFIX = [1, 5, 9, 33, 2]
MEMORISED = "2718"


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
        # Wider than GPT-2's 0.02 so candidates' log-perplexities spread like a trained model's.
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    return _tiny_model()


@pytest.fixture(scope="module")
def memorised() -> GPT2LMHeadModel:
    """The tiny model fine-tuned on prefix + MEMORISED until the secret is its top continuation."""
    trained = copy.deepcopy(_tiny_model())
    trained.train()
    ids = torch.tensor([PREFIX + [DIGITS[int(c)] for c in MEMORISED]])
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        trained(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return trained.eval()


@pytest.fixture(scope="module")
def ordering(model) -> list[str]:
    """All 4-digit candidates of the tiny model, by increasing full-sequence log-perplexity."""
    candidates = all_candidates(4)
    with eval_mode(model):
        scores = score_full_sequences(model, PREFIX, candidates, torch.tensor(DIGITS))
    return ["".join(map(str, candidates[i].tolist())) for i in scores.argsort().tolist()]


@pytest.mark.parametrize("secret", ["000", "507", "999", "4096"])
def test_exact_rank_equals_brute_force(model, secret):
    fast = exact_rank(model, PREFIX, secret, DIGITS)
    slow = brute_force_rank(model, PREFIX, secret, DIGITS)
    assert fast.rank == slow.rank
    assert fast.space_size == slow.space_size == 10 ** len(secret)
    assert fast.secret_log_perplexity == slow.secret_log_perplexity


def test_exact_rank_equals_brute_force_in_the_tail(model, ordering):
    secret = ordering[20]  # strongly exposed but not rank 1: pruning bites
    fast = exact_rank(model, PREFIX, secret, DIGITS)
    slow = brute_force_rank(model, PREFIX, secret, DIGITS)
    assert fast.rank == slow.rank
    assert fast.candidates_scored < 1111  # fewer than all 1 + 10 + 100 + 1000 inner nodes


def test_memorised_secret_has_rank_one_and_full_exposure(memorised):
    fast = exact_rank(memorised, PREFIX, MEMORISED, DIGITS)
    slow = brute_force_rank(memorised, PREFIX, MEMORISED, DIGITS)
    assert fast.rank == slow.rank == 1
    assert fast.exposure == pytest.approx(math.log2(10**4))
    # Pruning: only the secret's own path (plus near misses) survives below its Px.
    assert fast.candidates_scored < 100
    # The fit puts the secret far below any sample: the estimate is clipped at log2 |R|.
    fit = extrapolated_exposure(memorised, PREFIX, MEMORISED, DIGITS, 500)
    assert fit["exposure"] == pytest.approx(math.log2(10**4))
    assert fit["exposure_unclipped"] >= fit["exposure"]


class ScaledLogits(GPT2LMHeadModel):
    """Logits that are not ``lm_head(hidden)`` (like soft-capped or scaled models)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 1.5
        return out


def test_a_model_whose_logits_are_not_the_plain_head_falls_back(model):
    scaled = ScaledLogits(model.config).eval()
    scaled.load_state_dict(model.state_dict())
    scorer = DigitScorer(scaled, torch.tensor(DIGITS))
    with eval_mode(scaled):
        scorer.verify(torch.tensor([PREFIX]))
    assert scorer.head is None
    secret = "4096"
    assert exact_rank(scaled, PREFIX, secret, DIGITS).rank == (
        brute_force_rank(scaled, PREFIX, secret, DIGITS).rank
    )


def test_small_chunks_and_plain_head_give_the_same_rank(model):
    """Depth-first chunking and the model's own forward (no blocked head) change nothing."""
    secret = "4096"
    reference = exact_rank(model, PREFIX, secret, DIGITS).rank
    assert exact_rank(model, PREFIX, secret, DIGITS, batch_size=50).rank == reference
    scorer = DigitScorer(model, torch.tensor(DIGITS))
    ids = torch.tensor([PREFIX])
    with eval_mode(model):
        blocked, _ = scorer.step(ids, None, 0)
        scorer.head, scorer.base = None, model
        plain, _ = scorer.step(ids, None, 0)
    torch.testing.assert_close(blocked, plain, rtol=0, atol=1e-5)


def test_exposure_bounds(model):
    assert exposure_from_rank(1, 1000) == pytest.approx(math.log2(1000))
    assert exposure_from_rank(1000, 1000) == 0.0
    with pytest.raises(ValueError):
        exposure_from_rank(0, 1000)
    result = exact_rank(model, PREFIX, "999", DIGITS)
    assert 0.0 <= result.exposure <= math.log2(result.space_size)


def test_extrapolation_is_close_to_exact_for_four_digits(model, ordering):
    for secret in [ordering[5000], ordering[200]]:  # exposure ~1 and ~5.6 bits
        exact = exact_rank(model, PREFIX, secret, DIGITS).exposure
        generator = torch.Generator().manual_seed(0)
        fit = extrapolated_exposure(model, PREFIX, secret, DIGITS, 4000, generator)
        assert abs(fit["exposure"] - exact) < 1.5, (secret, exact, fit)
        assert fit["space_size"] == 10**4 and fit["n_samples"] == 4000
        assert set(fit["skewnorm"]) == {"shape", "loc", "scale"}


def test_extrapolation_handles_spaces_too_large_to_enumerate(model):
    secret = "314159265"
    fit = extrapolated_exposure(
        model, PREFIX, secret, DIGITS, 1000, torch.Generator().manual_seed(1)
    )
    assert math.isfinite(fit["exposure"]) and 0.0 <= fit["exposure"] <= 9 * math.log2(10)
    assert fit["space_size"] == 10**9
    again = extrapolated_exposure(
        model, PREFIX, secret, DIGITS, 1000, torch.Generator().manual_seed(1)
    )
    assert again["exposure"] == fit["exposure"]  # seeded sampling is reproducible


def test_exact_enumeration_is_refused_above_the_limit(model):
    with pytest.raises(ValueError, match="max_exact_space"):
        exact_rank(model, PREFIX, "12345678", DIGITS)  # 10^8 > 10^7
    assert DEFAULT_MAX_EXACT_SPACE == 10**7
    with pytest.raises(ValueError, match="max_exact_space"):
        exact_rank(model, PREFIX, "1234", DIGITS, max_space=1000)


def test_greedy_extraction(memorised, model):
    found = greedy_extract(memorised, PREFIX, 4, DIGITS, secret=MEMORISED)
    assert found.text == MEMORISED and found.matches
    other = greedy_extract(model, PREFIX, 4, DIGITS, secret=MEMORISED)
    assert len(other.token_ids) == 4 and not other.matches


class CharTokenizer:
    """One token per character: digits map to DIGITS, letters and space to other ids."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [DIGITS[int(c)] if c.isdigit() else 20 + (ord(c) % 40) for c in text]


def test_canary_exposures_records(memorised):
    tokenizer = CharTokenizer()
    prefix = "my pin is "
    canaries = [
        {"canary_id": 7, "prefix": prefix, "secret": "271"},
        {"prefix": prefix, "secret": "99"},
    ]
    records = canary_exposures(
        memorised, tokenizer, canaries, "both", n_samples=200, progress=False
    )
    assert [r["canary_id"] for r in records] == [7, 1]
    for record, canary in zip(records, canaries, strict=True):
        k = len(canary["secret"])
        brute = brute_force_rank(memorised, tokenizer.encode(prefix), canary["secret"], DIGITS)
        assert record["space_size"] == 10**k and record["estimator"] == "both"
        assert record["rank"] == brute.rank
        assert record["exposure_exact"] == pytest.approx(exposure_from_rank(brute.rank, 10**k))
        assert 0.0 <= record["exposure_extrapolated"] <= k * math.log2(10)
        assert record["candidates_scored"] >= 1 and record["seconds"] > 0
    with pytest.raises(ValueError, match="max_exact_space"):
        canary_exposures(
            memorised, tokenizer, canaries, "exact", max_exact_space=10, progress=False
        )
    with pytest.raises(ValueError, match="unknown estimator"):
        canary_exposures(memorised, tokenizer, canaries, "sampled", progress=False)


def test_canary_token_ids_rejects_a_tokenizer_that_merges_digits():
    class Merging(CharTokenizer):
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return super().encode(text.replace("11", "1"))

    assert canary_token_ids(CharTokenizer(), "pin ", "123")[1] == DIGITS
    with pytest.raises(ValueError, match="single-digit tokens"):
        canary_token_ids(Merging(), "pin ", "123")
