"""Exact exposure: pruned digit tree vs naive full-sequence scoring, on a 2 x 128 GPT-2.

    PYTHONPATH=workflow python tests/benchmarks/bench_exposure.py [--threads N] [--quick]

A GPT-2 of 2 layers, width 128, 4 heads, block 128, vocab 8192 (four times the embedded default;
1.46 M parameters) is trained for a few seconds on canary-shaped rows, prefix (6 tokens) +
6 digits, whose digits follow skewed per-position distributions (as digits in text do), and one
secret inserted in 1 row of 8 (memorised: rank 1). Two more secrets are never inserted: the most
likely of the naive path's random sample (the tail: a low rank, like a partly memorised canary)
and a fixed random one (median rank, where pruning helps least). |R| = 10^6.

The naive path (``naive_rank``'s scorer: prefix + candidate as one sequence, batched, no cache)
is timed on a random sample of candidates and scaled to 10^6. The tree is timed on each secret.
The last line is the speed-up on the worst case, the random secret.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from unlearnbench.exposure import exact_rank
from unlearnbench.exposure.scoring import eval_mode, score_full_sequences

K = 6
SPACE = 10**K
PREFIX = [301, 302, 303, 304, 305, 306]
DIGITS = list(range(16, 26))
MEMORISED, RANDOM = "194025", "530718"


def train_model(steps: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=128,
        vocab_size=8192,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    # Skewed digit distributions per position (Dirichlet(1)): candidates' log-perplexities
    # spread as in a trained LM instead of all sitting at 6 log 10.
    weights = torch.distributions.Dirichlet(torch.ones(10)).sample((K,))
    digit_ids = torch.tensor(DIGITS)
    prefix = torch.tensor(PREFIX)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        digits = torch.stack([torch.multinomial(w, 32, replacement=True) for w in weights], 1)
        digits[0:4] = torch.tensor([int(c) for c in MEMORISED])  # 1 row in 8
        ids = torch.cat([prefix.expand(32, -1), digit_ids[digits]], dim=1)
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return model.eval()


def time_naive(
    model: torch.nn.Module, n_samples: int, batch_size: int
) -> tuple[float, torch.Tensor]:
    """Seconds to score n_samples random candidates as full sequences, and their Px."""
    candidates = torch.randint(0, 10, (n_samples, K), generator=torch.Generator().manual_seed(1))
    digit_ids = torch.tensor(DIGITS)
    with eval_mode(model):
        score_full_sequences(model, PREFIX, candidates[:batch_size], digit_ids, batch_size)  # warm
        start = time.perf_counter()
        scores = score_full_sequences(model, PREFIX, candidates, digit_ids, batch_size)
    return time.perf_counter() - start, scores


def time_naive_digit_logits(model: torch.nn.Module, n_samples: int, batch_size: int) -> float:
    """Full sequences again, but output-layer logits only at the k positions that predict
    digits (``logits_to_keep``): a less naive baseline, to show what the tree wins beyond it."""
    candidates = torch.randint(0, 10, (n_samples, K), generator=torch.Generator().manual_seed(2))
    digit_ids = torch.tensor(DIGITS)
    prefix = torch.tensor(PREFIX)
    start = time.perf_counter()
    with eval_mode(model):
        for first in range(0, n_samples, batch_size):
            batch = candidates[first : first + batch_size]
            ids = torch.cat([prefix.expand(len(batch), -1), digit_ids[batch]], dim=1)
            logits = model(input_ids=ids, logits_to_keep=K + 1).logits[:, :-1]
            torch.log_softmax(logits.float(), dim=-1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--naive-samples", type=int, default=20_000)
    parser.add_argument("--naive-batch", type=int, default=512)
    parser.add_argument("--tree-batch", type=int, default=None, help="default: exact_rank's")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="fewer naive samples")
    args = parser.parse_args()
    if args.quick:
        args.naive_samples = 4_000
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f} (other processes slow both paths, the tree more)"
    )

    start = time.perf_counter()
    model = train_model(args.train_steps)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.2f} M parameters, trained {args.train_steps} steps "
        f"in {time.perf_counter() - start:.1f} s; prefix {len(PREFIX)} tokens, k = {K}"
    )

    naive_seconds, sample_px = time_naive(model, args.naive_samples, args.naive_batch)
    naive_scaled = naive_seconds * SPACE / args.naive_samples
    tokens = args.naive_samples * (len(PREFIX) + K)
    print(
        f"naive: {args.naive_samples} candidates in {naive_seconds:.2f} s "
        f"({tokens / naive_seconds:,.0f} tok/s) -> {naive_scaled:.1f} s for 10^{K}"
    )
    lean_samples = max(args.naive_batch, args.naive_samples // 4)
    lean_scaled = time_naive_digit_logits(model, lean_samples, args.naive_batch) * (
        SPACE / lean_samples
    )
    print(
        f"naive with logits at the {K} digit positions only: {lean_samples} candidates -> "
        f"{lean_scaled:.1f} s for 10^{K} (reference only; speed-ups use the plain naive path)"
    )

    sample = torch.randint(
        0, 10, (args.naive_samples, K), generator=torch.Generator().manual_seed(1)
    )  # the candidates time_naive scored, in the same order
    tail = "".join(map(str, sample[int(sample_px.argmin())].tolist()))
    exact_rank(model, PREFIX, "000", DIGITS)  # warm-up (first-call kernel set-up), not timed
    ratios = {}
    for name, secret in [("memorised", MEMORISED), ("tail", tail), ("random", RANDOM)]:
        result = exact_rank(model, PREFIX, secret, DIGITS, batch_size=args.tree_batch)
        estimate = 1 + SPACE * float((sample_px < result.secret_log_perplexity).float().mean())
        per_depth = ", ".join(
            f"d{d}: {n} in {result.seconds_by_depth[d]:.2f}s"
            for d, n in sorted(result.nodes_by_depth.items())
        )
        ratios[name] = naive_scaled / result.seconds
        print(
            f"tree [{name} {secret}]: rank {result.rank} (sample estimate {estimate:.0f}), "
            f"exposure {result.exposure:.2f} / {math.log2(SPACE):.2f} bits, "
            f"{result.seconds:.2f} s, nodes expanded {result.candidates_scored} "
            f"(of {sum(10**j for j in range(K))}), leaves {result.leaves_scored}, "
            f"rescored {result.rescored} (tolerance {result.tolerance:.1e} nats), "
            f"speed-up {ratios[name]:.1f}x"
        )
        print(f"    forwards per depth (nodes, seconds): {per_depth}")
    print(
        f"tree vs naive with digit-position logits, random secret: "
        f"{lean_scaled * ratios['random'] / naive_scaled:.1f}x"
    )
    # The headline is the worst case: the random secret, where pruning removes least.
    print(f"exposure speed-up (naive/tree, |R|=10^{K}): {ratios['random']:.1f}x")


if __name__ == "__main__":
    main()
