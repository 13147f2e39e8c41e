"""Training throughput of the default model as a fraction of this machine's matmul rate.

Training costs about 6 FLOPs per parameter per token (2 forward, 4 backward), so
6 * params * tokens/s is the useful work rate; a dense fp32 matmul of similar size, measured in
the same run, is the bound it is compared with. Prints the fraction last.

    PYTHONPATH=workflow python tests/benchmarks/bench_training_throughput.py
"""

from __future__ import annotations

import time

import torch
from unlearnbench.lm_data import collate, mean_loss
from unlearnbench.models import ModelConfig, build_model
from unlearnbench.training.loop import TrainConfig, make_optimizer

VOCAB, EOS, BATCH, LENGTH, STEPS = 8192, 0, 32, 100, 12


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_tokens_per_second() -> tuple[float, int]:
    model = build_model(ModelConfig(), VOCAB, EOS, seed=0)
    params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, seed=0))
    gen = torch.Generator().manual_seed(0)
    batches = [
        collate(torch.randint(1, VOCAB, (BATCH, LENGTH), generator=gen).tolist(), EOS)
        for _ in range(STEPS)
    ]
    model.train()
    tokens, start = 0, None
    for step, batch in enumerate(batches):
        if step == 2:  # the first steps allocate; time the steady state
            start, tokens = time.perf_counter(), 0
        loss = mean_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += int(batch.attention_mask.sum())
    return tokens / (time.perf_counter() - start), params


def main() -> None:
    threads = torch.get_num_threads()
    bound = matmul_gflops()
    rate, params = training_tokens_per_second()
    achieved = 6 * params * rate / 1e9
    print(f"threads: {threads}; dense fp32 matmul: {bound:.1f} GFLOP/s")
    print(
        f"training: {rate:,.0f} tokens/s x 6 x {params / 1e6:.2f} M params = {achieved:.1f} GFLOP/s"
    )
    print(f"training throughput / matmul bound: {achieved / bound:.2f}")


if __name__ == "__main__":
    main()
