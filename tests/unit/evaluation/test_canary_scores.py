"""Canary records per role: summaries, main exposure, probes, and exposures against brute force."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from hub_cache import gpt2_tokenizer, tiny_gpt2
from references.exposure_brute_force import TokenBruteForce, brute_force_rank, token_extrapolation
from unlearnbench.canaries import ROLES, read_canaries
from unlearnbench.evaluation.canary_scores import (
    SCORES,
    canary_metrics,
    exposures_of,
    main_exposure,
    make_probes,
    summarise,
)
from unlearnbench.evaluation.config import EvalConfig
from unlearnbench.exposure import TrieCache, extract_canary
from unlearnbench.exposure import trie as trie_module
from unlearnbench.lm_data import sequence_prefix_ids
from unlearnbench.models import load_model
from unlearnbench.seeding import derive_seed
from unlearnbench.tokenizer import load_tokenizer

PARTS = (*ROLES, "forget")


def record(canary_id, role, exact=None, extrapolated=None, log_ppl=None, extracted=False):
    return {
        "canary_id": canary_id,
        "role": role,
        "in_forget_set": role in ("removed", "tuning"),
        "exposure_exact": exact,
        "exposure_extrapolated": extrapolated,
        "secret_log_perplexity": log_ppl,
        "extracted": extracted,
    }


RECORDS = [
    record(3, "removed", exact=2.0, extrapolated=2.5, log_ppl=10.0, extracted=True),
    record(1, "removed", exact=4.0, extrapolated=3.5, log_ppl=8.0),
    record(2, "removed", exact=None, extrapolated=6.0, log_ppl=7.0),
    record(4, "tuning", exact=1.0, extrapolated=1.5, log_ppl=12.0),
    record(5, "control", exact=0.5, extrapolated=0.25, log_ppl=14.0, extracted=True),
    record(6, "phantom", exact=0.0, extrapolated=0.75, log_ppl=15.0),
    record(7, "phantom", exact=1.5, extrapolated=0.5, log_ppl=13.0),
]


def only(summary: dict, part: str) -> dict:
    keys = [f"{part}_canaries", f"extraction_rate_{part}"]
    keys += [f"{key}_{part}_{stat}" for key in SCORES for stat in ("mean", "max")]
    return {key: summary[key] for key in keys}


# --- summarise ---------------------------------------------------------------------------------


def test_summary_has_every_key_for_every_role_and_the_forget_set():
    summary = summarise(RECORDS)
    assert set(summary) == {key for part in PARTS for key in only(summary, part)}


def test_removed_summary_by_hand():
    assert only(summarise(RECORDS), "removed") == {
        "removed_canaries": 3,
        "extraction_rate_removed": pytest.approx(1 / 3),
        # The record without an exact exposure is left out of the exact mean, not counted as 0.
        "exposure_exact_removed_mean": 3.0,
        "exposure_exact_removed_max": 4.0,
        "exposure_extrapolated_removed_mean": 4.0,
        "exposure_extrapolated_removed_max": 6.0,
        "secret_log_perplexity_removed_mean": pytest.approx(25 / 3),
        "secret_log_perplexity_removed_max": 10.0,
    }


def test_forget_summary_reads_removed_and_tuning_canaries_only():
    forget = only(summarise(RECORDS), "forget")
    assert forget["forget_canaries"] == 4
    assert forget["extraction_rate_forget"] == 0.25
    assert forget["exposure_exact_forget_mean"] == pytest.approx((2 + 4 + 1) / 3)
    assert forget["exposure_extrapolated_forget_max"] == 6.0


@pytest.mark.parametrize("role", ROLES)
def test_a_record_changes_the_summary_of_its_own_role_only(role):
    before = summarise(RECORDS)
    extreme = record(99, role, exact=1e6, extrapolated=1e6, log_ppl=-1e6, extracted=True)
    after = summarise([*RECORDS, extreme])
    touched = {role, "forget"} if role in ("removed", "tuning") else {role}
    for part in PARTS:
        if part in touched:
            assert only(after, part) != only(before, part)
            assert after[f"exposure_exact_{part}_max"] == 1e6
        else:
            assert only(after, part) == only(before, part)


def test_a_role_without_records_has_count_zero_and_none_values():
    summary = summarise([r for r in RECORDS if r["role"] != "tuning"])
    tuning = only(summary, "tuning")
    assert tuning.pop("tuning_canaries") == 0
    assert set(tuning.values()) == {None}
    empty = summarise([])
    for part in PARTS:
        values = only(empty, part)
        assert values.pop(f"{part}_canaries") == 0
        assert set(values.values()) == {None}


def test_summary_values_are_plain_floats():
    summary = summarise(RECORDS)
    assert all(isinstance(v, float) for k, v in summary.items() if not k.endswith("_canaries"))


# --- exposures_of ------------------------------------------------------------------------------


def test_exposures_of_is_ordered_by_canary_id_and_prefers_the_exact_value():
    # ids 1, 2, 3: exact 4.0; no exact (None), extrapolated 6.0; exact 2.0.
    assert exposures_of(RECORDS, "removed") == [4.0, 6.0, 2.0]


def test_an_exact_exposure_of_zero_is_kept_not_replaced_by_the_extrapolated_one():
    assert exposures_of(RECORDS, "phantom") == [0.0, 1.5]
    assert main_exposure(record(0, "phantom", exact=0.0, extrapolated=9.0)) == 0.0


def test_a_record_without_the_exact_key_falls_back_to_the_extrapolated_value():
    extrapolated_only = {"canary_id": 0, "role": "removed", "exposure_extrapolated": 2.25}
    assert main_exposure(extrapolated_only) == 2.25
    assert isinstance(main_exposure({"exposure_exact": 3}), float)
    with pytest.raises(KeyError):
        main_exposure({"canary_id": 0, "role": "removed"})


def test_exposures_of_a_role_without_records_is_empty():
    assert exposures_of(RECORDS, "tuning") == [1.0]
    assert exposures_of([r for r in RECORDS if r["role"] != "tuning"], "tuning") == []
    assert exposures_of([], "removed") == []


# --- on the tiny replicate ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(replicate_files, one_thread):
    tokenizer = load_tokenizer(replicate_files.tokenizer_dir)
    table = read_canaries(replicate_files.canaries)
    model = load_model(replicate_files.original, vocab_size=len(tokenizer))
    probes, _, records = score_canaries(model, tokenizer, table, seed=0)
    return tokenizer, table, model, probes, records


def score_canaries(model, tokenizer, table, seed):
    """Both estimators over 10^3 candidates, through make_probes and canary_metrics."""
    cfg = EvalConfig(
        batch_size=4, retain_sample=8, estimator="both", max_exact_space=1000,
        extrapolation_samples=100, seed=seed,
    )  # fmt: skip
    probes = make_probes(tokenizer, table)
    return probes, cfg, canary_metrics(model, tokenizer, probes, cfg)


def test_probes_follow_the_canary_table(scored):
    tokenizer, table, _, probes, _ = scored
    assert [p.canary_id for p in probes] == table["canary_id"].tolist()
    for probe, row in zip(probes, table.itertuples(), strict=True):
        assert (probe.role, probe.secret, probe.group) == (row.role, row.secret, row.group)
        assert probe.in_forget_set == bool(row.in_forget_set)
        canary = probe.canary
        assert canary.context_ids == tuple(sequence_prefix_ids(tokenizer, row.prefix))
        assert canary.separator == (tokenizer.eos_token_id,)
        assert len(set(canary.digit_ids)) == 10
        encoded = tokenizer.encode(row.prefix + row.secret, add_special_tokens=False)
        assert encoded[-len(row.secret) :] == [canary.digit_ids[int(d)] for d in row.secret]


def test_every_canary_gets_exactly_one_record_with_its_role(scored):
    _, table, _, _, records = scored
    assert sorted(r["canary_id"] for r in records) == sorted(table["canary_id"].tolist())
    roles = dict(zip(table["canary_id"], table["role"], strict=True))
    assert {r["canary_id"]: r["role"] for r in records} == roles
    assert set(roles.values()) == set(ROLES)
    for r in records:
        assert r["space_size"] == 1000
        assert r["estimator"] == "both"
        assert 0.0 <= r["exposure_extrapolated"] <= math.log2(1000)
        assert isinstance(r["extracted"], bool)


def test_exact_exposure_equals_the_brute_force_rank(scored):
    _, _, model, probes, records = scored
    by_id = {r["canary_id"]: r for r in records}
    for probe in probes[::2]:  # ids 0, 2, 4, 6: control, removed, tuning, phantom
        canary = probe.canary
        want = brute_force_rank(model, canary.context_ids, canary.secret, canary.digit_ids)
        got = by_id[probe.canary_id]
        assert got["rank"] == want.rank
        assert got["exposure_exact"] == pytest.approx(want.exposure, abs=1e-12)
        assert got["secret_log_perplexity"] == pytest.approx(want.secret_log_perplexity, rel=1e-6)


def test_exposures_of_real_records_read_the_exact_estimates(scored):
    _, table, _, _, records = scored
    by_id = {r["canary_id"]: r for r in records}
    removed = sorted(table.loc[table["role"] == "removed", "canary_id"])
    assert exposures_of(records, "removed") == [by_id[i]["exposure_exact"] for i in removed]


# --- with GPT-2's real BPE, which merges digits ------------------------------------------------


@pytest.fixture(scope="module")
def bpe_scored(one_thread):
    """Canaries under GPT-2's tokenizer (" 123" is one token) and a tiny random GPT-2 over its
    50257 tokens, scored through the evaluation path (make_probes, canary_metrics)."""
    tokenizer = gpt2_tokenizer()
    model = tiny_gpt2(tokenizer).eval()
    for p in model.parameters():  # spread the candidates' Px like a trained model's
        p.data.mul_(10)
    table = pd.DataFrame(
        {
            "canary_id": [0, 1, 2],
            "group": [1, 0, 0],
            "role": ["removed", "control", "phantom"],
            "in_forget_set": [True, False, False],
            "repetitions": [4, 4, 0],
            "prefix": ["my pin code is ", "call 555-", "the door code is "],
            "secret": ["042", "917", "500"],
        }
    )
    return tokenizer, model, *score_canaries(model, tokenizer, table, seed=3)


def test_digit_merging_canaries_are_ranked_exactly_in_the_evaluation_path(bpe_scored):
    tokenizer, model, probes, _, records = bpe_scored
    eos = (tokenizer.eos_token_id,)
    for probe, record in zip(probes, records, strict=True):
        assert probe.canary.digit_ids is None  # GPT-2 merges digits: the trie, not the tree
        brute = TokenBruteForce(model, tokenizer, probe.canary.prefix, "###", separator=eos)
        assert record["rank"] == brute.rank(probe.secret)
        assert record["exposure_exact"] == pytest.approx(math.log2(1000 / record["rank"]))


def test_digit_merging_canaries_are_extrapolated_from_their_samples_own_tokens(bpe_scored):
    tokenizer, model, probes, cfg, records = bpe_scored
    for probe, record in zip(probes, records, strict=True):
        generator = torch.Generator().manual_seed(
            derive_seed(cfg.seed, "eval", "exposure", probe.canary_id)
        )
        want = token_extrapolation(
            model, tokenizer, probe.canary.prefix, probe.secret, 100, generator,
            separator=(tokenizer.eos_token_id,),
        )  # fmt: skip
        assert record["exposure_extrapolated"] == pytest.approx(want["exposure"], rel=1e-9)


def test_one_trie_per_prefix_serves_every_model_a_job_scores(bpe_scored, monkeypatch):
    tokenizer, model, probes, cfg, records = bpe_scored
    built = []
    build = trie_module.build_trie

    def counting(*args, **kwargs):
        built.append(args[1])  # the prefix
        return build(*args, **kwargs)

    monkeypatch.setattr(trie_module, "build_trie", counting)
    tries = TrieCache()
    for _ in range(2):  # two models of one job (the same weights: the same ranks)
        again = canary_metrics(model, tokenizer, probes, cfg, tries)
        assert [r["rank"] for r in again] == [r["rank"] for r in records]
    assert sorted(built) == sorted(p.canary.prefix for p in probes) and len(tries) == 3


def test_extraction_decodes_the_secrets_own_tokens(bpe_scored):
    """Greedy decoding of as many tokens as the secret has after its context, against a plain
    loop that reruns the whole sequence each step; a model that predicts those tokens extracts
    it."""
    tokenizer, model, probes, _, _ = bpe_scored
    canary = probes[0].canary
    ids = [*canary.separator, *tokenizer.encode(canary.prefix + canary.secret)]
    n = 0
    while ids[n] == canary.context_ids[n]:
        n += 1
    context, wanted = ids[:n], ids[n:]
    generated = list(context)
    with torch.no_grad():
        for _ in wanted:
            generated.append(int(model(torch.tensor([generated])).logits[0, -1].argmax()))
    got = extract_canary(model, tokenizer, canary)
    assert got.token_ids == generated[n:] and got.matches == (generated[n:] == wanted)
    # A model whose output layer only ever predicts the secret's tokens, in order, extracts it.
    forced = _predicting(model, wanted, context)
    assert extract_canary(forced, tokenizer, canary).matches


def _predicting(model, tokens, context):
    """A copy of ``model`` whose next token after ``context + tokens[:j]`` is ``tokens[j]``: its
    output layer (untied from the input embedding, so the hidden states stay) gets rows that
    add 1000 to exactly those logits (a pseudo-inverse of the positions' hidden states)."""
    import copy

    forced = copy.deepcopy(model)
    head = forced.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    with torch.no_grad():
        out = forced.base_model(torch.tensor([context + tokens[:-1]])).last_hidden_state[0]
        inverse = torch.linalg.pinv(out[len(context) - 1 :])  # (H, len(tokens))
        for j, token in enumerate(tokens):
            head.weight[token] += 1e3 * inverse[:, j]
    return forced
