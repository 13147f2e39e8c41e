"""Perplexity and KL: batched results against a slow one-sequence-at-a-time reference."""

from __future__ import annotations

import math
import types

import pytest
import torch
from tiny_lm import PAD, VOCAB, tiny_gpt2
from transformers import GPT2LMHeadModel
from unlearnbench.evaluation.language import perplexity, target_log_probs
from unlearnbench.lm_data import HEAD_ON_BASE_OUTPUT, collate

LENGTHS = (2, 7, 3, 12, 5, 5, 9, 1)  # a length-1 sequence predicts nothing


class PlainHead(torch.nn.Module):
    """The same network under a model type outside HEAD_ON_BASE_OUTPUT (full-logits path)."""

    def __init__(self, inner: GPT2LMHeadModel):
        super().__init__()
        self.inner = inner
        self.config = types.SimpleNamespace(model_type="plain")

    def forward(self, **inputs):
        return self.inner(**inputs)


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    return tiny_gpt2(0)


@pytest.fixture(scope="module")
def other() -> GPT2LMHeadModel:
    return tiny_gpt2(1)


@pytest.fixture(scope="module")
def sequences() -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in LENGTHS]
    rows[1][0] = rows[1][-1] = PAD  # the separator is a real token too, not padding
    return rows


@torch.no_grad()
def slow_log_probs(model, sequence) -> torch.Tensor:
    """log p(. | sequence[:t+1]) for t = 0 .. n-2, the sequence run alone, unpadded."""
    logits = model(input_ids=torch.tensor([sequence])).logits[0].double()
    return (logits - logits.exp().sum(dim=-1, keepdim=True).log())[:-1]


def slow_perplexity(model, sequences, reference=None) -> dict:
    loss = kl = 0.0
    tokens = 0
    for seq in sequences:
        logp = slow_log_probs(model, seq)
        ref = slow_log_probs(reference, seq) if reference is not None else None
        for t in range(len(seq) - 1):
            loss -= float(logp[t, seq[t + 1]])
            tokens += 1
            if ref is not None:
                kl += sum(float(logp[t, v].exp() * (logp[t, v] - ref[t, v])) for v in range(VOCAB))
    return {
        "perplexity": math.exp(loss / tokens),
        "loss": loss / tokens,
        "tokens": tokens,
        "examples": len(sequences),
        "kl": kl / tokens if reference is not None else None,
    }


def assert_matches(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert got["tokens"] == want["tokens"]
    assert got["examples"] == want["examples"]
    for key in ("perplexity", "loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-5)
    if want["kl"] is None:
        assert got["kl"] is None
    else:
        assert got["kl"] == pytest.approx(want["kl"], rel=1e-4, abs=1e-8)


def test_gpt2_takes_the_head_on_base_output_path(model):
    assert model.config.model_type in HEAD_ON_BASE_OUTPUT
    assert PlainHead(model).config.model_type not in HEAD_ON_BASE_OUTPUT


def test_perplexity_and_kl_equal_the_one_sequence_at_a_time_reference(model, other, sequences):
    want = slow_perplexity(model, sequences, reference=other)
    assert want["tokens"] == sum(n - 1 for n in LENGTHS)
    assert_matches(perplexity(model, sequences, PAD, 3, "t", reference=other), want)


def test_full_logits_path_equals_the_reference_too(model, other, sequences):
    want = slow_perplexity(model, sequences, reference=other)
    got = perplexity(PlainHead(model), sequences, PAD, 3, "t", reference=PlainHead(other))
    assert_matches(got, want)


def test_target_log_probs_rows_are_the_batch_positions_in_row_major_order(model, sequences):
    rows = sequences[:4]
    batch = collate(rows, PAD)
    want_logp = torch.cat([slow_log_probs(model, seq) for seq in rows])
    want_targets = torch.tensor([tok for seq in rows for tok in seq[1:]])
    for net in (model, PlainHead(model)):
        with torch.no_grad():
            logp, targets = target_log_probs(net, batch)
        assert logp.dtype == torch.float32
        assert torch.equal(targets, want_targets)
        torch.testing.assert_close(logp.double(), want_logp, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
def test_batch_size_does_not_change_the_result(model, other, sequences, batch_size):
    want = perplexity(model, sequences, PAD, 3, "t", reference=other)
    assert_matches(perplexity(model, sequences, PAD, batch_size, "t", reference=other), want)


def test_sequence_order_and_pad_id_do_not_change_the_result(model, other, sequences):
    want = perplexity(model, sequences, PAD, 3, "t", reference=other)
    shuffled = [sequences[i] for i in (5, 0, 7, 2, 6, 1, 4, 3)]
    assert_matches(perplexity(model, shuffled, PAD, 3, "t", reference=other), want)
    assert_matches(perplexity(model, sequences, 17, 3, "t", reference=other), want)


def test_kl_of_a_model_against_itself_is_zero(model, sequences):
    twin = tiny_gpt2(0)  # the same weights, a separate module
    assert perplexity(model, sequences, PAD, 3, "t", reference=twin)["kl"] == pytest.approx(
        0.0, abs=1e-7
    )
    assert perplexity(model, sequences, PAD, 3, "t", reference=model)["kl"] == pytest.approx(
        0.0, abs=1e-7
    )


def test_kl_against_a_different_model_is_positive_and_asymmetric(model, other, sequences):
    forward = perplexity(model, sequences, PAD, 3, "t", reference=other)["kl"]
    backward = perplexity(other, sequences, PAD, 3, "t", reference=model)["kl"]
    assert forward > 1e-4
    assert backward > 1e-4
    assert forward != pytest.approx(backward, rel=1e-6)


def test_kl_is_never_negative_on_single_sequences(model, other, sequences):
    for seq in [s for s in sequences if len(s) > 1]:  # a one-token sequence predicts nothing
        kl = perplexity(model, [seq], PAD, 1, "t", reference=other)["kl"]
        assert kl >= 0.0


def test_without_reference_kl_is_none(model, sequences):
    out = perplexity(model, sequences, PAD, 3, "t")
    assert out["kl"] is None
    assert out["loss"] == pytest.approx(slow_perplexity(model, sequences)["loss"], rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]), rel=1e-12)


def test_empty_input_gives_none_values(model, other):
    empty = {"perplexity": None, "loss": None, "tokens": 0, "examples": 0, "kl": None}
    assert perplexity(model, [], PAD, 3, "t") == empty
    assert perplexity(model, [], PAD, 3, "t", reference=other) == empty


def test_only_one_token_sequences_predict_nothing_and_give_none_values(model, other):
    out = perplexity(model, [[5], [7]], PAD, 3, "t", reference=other)
    assert out == {"perplexity": None, "loss": None, "tokens": 0, "examples": 2, "kl": None}


def test_perplexity_under_bf16_autocast_stays_near_float32(model, other, sequences):
    """The GPU path (compute.precision: bf16), run on the CPU: bf16 keeps ~3 significant digits
    in the forward pass, so the loss agrees to 2e-2 relative (the tolerance a GPU run would
    use: the rounding is bf16's on both); outside the policy nothing changes."""
    from unlearnbench.compute import precision_policy

    want = perplexity(model, sequences, PAD, 3, "t", reference=other)
    with precision_policy("bfloat16", allow_cpu=True):
        got = perplexity(model, sequences, PAD, 3, "t", reference=other)
    assert got["loss"] != want["loss"]  # the forward pass did run in bf16
    assert got["loss"] == pytest.approx(want["loss"], rel=2e-2)
    assert got["kl"] == pytest.approx(want["kl"], rel=0.2, abs=1e-3)
    with precision_policy("bfloat16"):  # the frame's policy on a CPU job: float32 exactly
        assert perplexity(model, sequences, PAD, 3, "t", reference=other) == want
