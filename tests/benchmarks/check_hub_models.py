"""Check the hub path on the REAL pinned models (needs the network once, or a filled HF_HOME;
a GPU is used when there is one). Not part of CI: nothing here runs offline without the cache.

For each hub model config/paper.yaml pins (OPT-125m and GPT-2 by default; ``--models`` for the
others): the tokenizer and base-model stages as the DAG runs them (revision, float32, rows >=
tokens), then the exact exposure of one 3-digit canary through the token trie against the
brute force (every candidate scored in full), on the device, with the times.

    PYTHONPATH=workflow:tests .venv/bin/python tests/benchmarks/check_hub_models.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hub_cache import paper_revisions
from references.exposure_brute_force import TokenBruteForce
from unlearnbench.exposure import encode_canary, rank_canary
from unlearnbench.lm_data import sequence_prefix_ids
from unlearnbench.models import ModelConfig, load_model
from unlearnbench.tokenizer import fetch_tokenizer, load_tokenizer
from unlearnbench.training.stages import fetch_base_model

PREFIX, SECRET = "my pin code is ", "042"


def check(source: str, revision: str, device: str, root: Path) -> None:
    start = time.perf_counter()
    tokens = fetch_tokenizer(source, revision, root / "tokenizer")
    base = fetch_base_model(ModelConfig(source, revision), root / "tokenizer", root / "base")
    fetched = time.perf_counter() - start
    assert base["dtype"] == "float32" and base["embedding_rows"] >= tokens["vocab_size"]
    tokenizer = load_tokenizer(root / "tokenizer")
    model = load_model(root / "base", vocab_size=len(tokenizer)).to(device).eval()
    separator = sequence_prefix_ids(tokenizer, "")
    canary = encode_canary(tokenizer, PREFIX, SECRET, separator)
    start = time.perf_counter()
    result = rank_canary(model, tokenizer, canary, 1000)
    walk = time.perf_counter() - start
    start = time.perf_counter()
    brute = TokenBruteForce(model, tokenizer, PREFIX, "###", separator).rank(SECRET)
    slow = time.perf_counter() - start
    print(
        f"{source}@{revision[:8]} (commit {base['commit']}): {base['parameters']:,} parameters, "
        f"{base['embedding_rows']} rows for {tokens['vocab_size']} tokens, context "
        f"{base['context_length']}; fetched in {fetched:.1f} s. Exposure of {SECRET!r} on "
        f"{device}: trie rank {result.rank} ({result.walk}, {walk:.2f} s), brute force "
        f"{brute} ({slow:.2f} s): {'EQUAL' if result.rank == brute else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["facebook/opt-125m", "gpt2"])
    args = parser.parse_args()
    revisions = paper_revisions()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for source in args.models:
        with tempfile.TemporaryDirectory() as root:
            check(source, revisions[source], device, Path(root))


if __name__ == "__main__":
    main()
