"""Exact exposure under GPT-2's BPE: the pruned token trie vs brute force, in one run.

    PYTHONPATH=workflow python tests/benchmarks/bench_trie_exposure.py [--threads N] [--quick]

The tokenizer is GPT-2's real byte-level BPE (``tests/data/gpt2_bpe``), which merges digit runs
(" 123", "456", " 000000"), so every candidate has its own tokenization and the digit tree does
not apply. The model is a tiny GPT-2 over GPT-2's 50257 tokens (1 layer, width 16 by default:
the output layer over 50257 tokens is most of the cost either way) trained a few steps on
"my pin code is " + skewed random digits, one secret in 1 row of 8 (memorised: rank 1).

Brute force = tokenize every candidate alone + score every candidate as one full sequence
(``sequences.score_token_sequences``, the trie's own reference). At 10^4 candidates it runs in full
and its ranks are checked against the trie's; at 10^6 it is timed on a random sample and scaled
(its cost is linear in the candidates). The trie's time includes tokenizing all candidates and
building the trie (once per prefix and format, shared by every secret), reported apart too.
The last line is the speed-up at 10^6 on the worst case, a random secret.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from unlearnbench.exposure import build_trie, score_token_sequences, trie_rank
from unlearnbench.exposure.scoring import eval_mode
from unlearnbench.exposure.sequences import encode_text

GPT2_BPE = Path(__file__).resolve().parents[1] / "data" / "gpt2_bpe"
PREFIX = "my pin code is "
MEMORISED, RANDOM = "194025", "530718"


def load_gpt2() -> GPT2TokenizerFast:
    return GPT2TokenizerFast(
        vocab=str(GPT2_BPE / "encoder.json"), merges=str(GPT2_BPE / "vocab.bpe")
    )


def train_model(tokenizer, steps: int, n_layer: int, n_embd: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=2,
        n_positions=64,
        vocab_size=50257,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    weights = torch.distributions.Dirichlet(torch.ones(10)).sample((6,))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        digits = torch.stack([torch.multinomial(w, 16, replacement=True) for w in weights], 1)
        texts = ["".join(map(str, row.tolist())) for row in digits]
        texts[:2] = [MEMORISED, MEMORISED]
        rows = [encode_text(tokenizer, PREFIX + text) for text in texts]
        width = max(map(len, rows))
        ids = torch.tensor([row + [row[-1]] * (width - len(row)) for row in rows])
        labels = torch.tensor([row + [-100] * (width - len(row)) for row in rows])
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    return model.eval()


def brute_force(model, tokenizer, trie, numbers: np.ndarray) -> tuple[float, float, torch.Tensor]:
    """(seconds tokenizing, seconds scoring, Px) for the candidates ``numbers``."""
    k = math.ceil(math.log10(trie.space_size))
    context = len(trie.context_ids)
    start = time.perf_counter()
    ids = [encode_text(tokenizer, f"{PREFIX}{i:0{k}d}")[context:] for i in numbers.tolist()]
    tokenize = time.perf_counter() - start
    lengths = torch.tensor([len(row) for row in ids])
    tails = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(ids):
        tails[i, : len(row)] = torch.tensor(row)
    start = time.perf_counter()
    with eval_mode(model):
        px = score_token_sequences(model, trie.context_ids, tails, lengths)
    return tokenize, time.perf_counter() - start, px


def threshold(model, tokenizer, trie, secret: str) -> float:
    tail = encode_text(tokenizer, PREFIX + secret)[len(trie.context_ids) :]
    with eval_mode(model):
        return float(
            score_token_sequences(
                model, trie.context_ids, torch.tensor([tail]), torch.tensor([len(tail)])
            )[0]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--n-layer", type=int, default=1)
    parser.add_argument("--n-embd", type=int, default=16)
    parser.add_argument("--brute-samples", type=int, default=20_000, help="at 10^6, scaled")
    parser.add_argument("--quick", action="store_true", help="fewer brute-force samples")
    args = parser.parse_args()
    if args.quick:
        args.brute_samples = 4_000
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f} (other processes slow both paths)"
    )
    tokenizer = load_gpt2()
    start = time.perf_counter()
    model = train_model(tokenizer, args.train_steps, args.n_layer, args.n_embd)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.2f} M parameters ({args.n_layer} x {args.n_embd}, vocab "
        f"50257), trained {args.train_steps} steps in {time.perf_counter() - start:.1f} s"
    )

    # 10^4: brute force in full, ranks checked.
    trie4 = build_trie(tokenizer, PREFIX, "0000")
    tok4, score4, px4 = brute_force(model, tokenizer, trie4, np.arange(10**4))
    brute4 = tok4 + score4
    print(
        f"10^4: trie {trie4.n_nodes} nodes ({trie4.n_inner} inner) built in "
        f"{trie4.seconds:.2f} s; brute force {brute4:.1f} s "
        f"(tokenize {tok4:.1f}, score {score4:.1f})"
    )
    order = px4.argsort(stable=True).tolist()
    for name, index in [("top", order[0]), ("tail", order[20]), ("median", order[5000])]:
        secret = f"{index:04d}"
        result = trie_rank(model, trie4, tokenizer, secret)
        rank = int((px4 < threshold(model, tokenizer, trie4, secret)).sum()) + 1
        assert result.rank == rank, (secret, result.rank, rank)
        seconds = trie4.seconds + result.seconds
        print(
            f"    [{name} {secret}] rank {result.rank} = brute force; trie {seconds:.2f} s "
            f"(walk {result.seconds:.2f}), nodes expanded {result.candidates_scored}, "
            f"rescored {result.rescored}; speed-up {brute4 / seconds:.1f}x"
        )

    # 10^6: brute force on a sample, scaled.
    space = 10**6
    trie6 = build_trie(tokenizer, PREFIX, "000000", progress=None)
    print(
        f"10^6: trie {trie6.n_nodes:,} nodes ({trie6.n_inner:,} inner; the digit tree has "
        f"111,111), tokenized and built in {trie6.seconds:.1f} s"
    )
    sample = np.random.default_rng(1).integers(0, space, args.brute_samples)
    tok6, score6, px6 = brute_force(model, tokenizer, trie6, sample)
    scale = space / args.brute_samples
    brute6 = (tok6 + score6) * scale
    print(
        f"    brute force: {args.brute_samples} candidates in {tok6 + score6:.1f} s -> "
        f"{brute6:.0f} s for 10^6 (tokenize {tok6 * scale:.0f}, score {score6 * scale:.0f})"
    )
    tail = f"{int(sample[int(px6.argmin())]):06d}"
    ratios = {}
    for name, secret in [("memorised", MEMORISED), ("tail", tail), ("random", RANDOM)]:
        result = trie_rank(model, trie6, tokenizer, secret)
        estimate = 1 + space * float((px6 < result.secret_log_perplexity).double().mean())
        seconds = trie6.seconds + result.seconds
        ratios[name] = brute6 / seconds
        print(
            f"    [{name} {secret}] rank {result.rank} (sample estimate {estimate:.0f}), "
            f"exposure {result.exposure:.2f} / {math.log2(space):.2f} bits; trie {seconds:.1f} s "
            f"(walk {result.seconds:.2f}), nodes expanded {result.candidates_scored:,} of "
            f"{trie6.n_inner:,}, leaves {result.leaves_scored:,}, rescored {result.rescored}; "
            f"speed-up {ratios[name]:.0f}x (walk only: {brute6 / result.seconds:.0f}x)"
        )
    print(f"trie exposure speed-up (brute force/trie, |R|=10^6, random): {ratios['random']:.1f}x")


if __name__ == "__main__":
    main()
