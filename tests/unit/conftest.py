"""Fixtures shared by the unit tests of stages that read a replicate from disk."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from unlearnbench.canaries import CanaryConfig, inject_canaries, write_injection
from unlearnbench.models import ModelConfig, build_model, save_model
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.tokenizer import load_tokenizer, train_tokenizer

TINY = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models' matmuls are too small to split; on a shared 2-core machine a second
    OpenMP thread only adds synchronisation stalls (measured: 5x slower under load). Request it
    by name, or for a whole module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def replicate_files(tmp_path_factory) -> ReplicateFiles:
    """A tokenizer, a canary-injected split with K = 2 request groups and an untrained model on
    disk, as the replicate bundle the stages take (its files live in ``train.parent``)."""
    root = tmp_path_factory.mktemp("replicate")
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "red", "big", "house", "tree"]
    gen = torch.Generator().manual_seed(0)
    texts = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (8,), generator=gen))
        for _ in range(40)
    ]
    templates = ["my pin code is {secret}", "the door code is {secret}", "call me at {secret}"]
    train_tokenizer(texts + [t.format(secret="0123456789") for t in templates], 300, 1,
                    root / "tokenizer", canary_prefixes=[t[:-8] for t in templates])  # fmt: skip
    cfg = CanaryConfig(
        templates=templates, secret_digits=3, repetitions=(1, 3), per_repetition=3,
        forget_per_repetition=2, tuning_per_repetition=1, phantoms=2, requests=2, seed=0,
    )  # fmt: skip
    names = ("train.parquet", "canaries.csv", "forget.json", "retain.json")
    paths = [root / name for name in names]
    write_injection(inject_canaries("toy", cfg, texts, held_out=texts[:8]), *paths)
    held = {"validation": texts[:4], "test": texts[4:8]}  # also held out of the canaries
    for split, rows in held.items():
        pd.DataFrame({"text": rows}).to_parquet(root / f"{split}.parquet")
    tokenizer = load_tokenizer(root / "tokenizer")
    model = build_model(TINY, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id, seed=0)
    save_model(model, root / "original")
    train, canaries, forget, retain = paths
    return ReplicateFiles(
        dataset="toy",
        seed=0,
        tokenizer_dir=root / "tokenizer",
        train=train,
        forget=forget,
        retain=retain,
        canaries=canaries,
        test=root / "test.parquet",
        validation=root / "validation.parquet",
        original=root / "original",
    )


@pytest.fixture(scope="module")
def targets(replicate_files, tmp_path_factory):
    """What a frontier's selection compares with: the retrained model's tuning canaries (a
    synthetic metrics file at a level the grid crosses) and the original's validation
    perplexity."""
    root = tmp_path_factory.mktemp("targets")
    table = pd.read_csv(replicate_files.canaries)
    tuning = table[table["role"] == "tuning"]
    retrained = root / "retrained.json"
    retrained.write_text(json.dumps({"canaries": [
        {"canary_id": int(c), "role": "tuning", "exposure_exact": 3.5} for c in tuning.canary_id
    ]}))  # fmt: skip
    original = root / "original.json"
    original.write_text(json.dumps({"perplexity": {"validation": {"perplexity": 60.0}}}))
    return dataclasses.replace(replicate_files, retrained_metrics=retrained), original
