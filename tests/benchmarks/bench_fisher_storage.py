"""Benchmark: the Fisher's storage modes against the device mode, in one run on one machine.

    python tests/benchmarks/bench_fisher_storage.py [--width 64] [--layers 2] [--m 64]

On a GPT-2 from scratch (random weights, the default's shape unless told otherwise; real
per-example gradients of random token sequences), for blocks full and layer:

- bfloat16 G against float32 G: the relative error of F^{-1} x (x: random directions and the
  mean gradient of a held-out batch, the kind of vector Fisher Removal applies F^{-1} to) and of
  diag(F^{-1}), plus the float32 result's own distance to a float64 reference (G computed in
  float32, Woodbury in float64), so the bf16 error reads against float32's rounding;
- matrix_free against device: the same errors, the gradients its set-up recomputed, and the
  set-up and product times as ratios to the device mode's (one process, one thread).

Timings are ratios measured in this run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from unlearnbench.fisher.estimation import FisherConfig, estimate_fisher
from unlearnbench.fisher.matrix_free import MatrixFreeFisher
from unlearnbench.fisher.woodbury import WoodburyFisher
from unlearnbench.models import ModelConfig, build_model
from unlearnbench.unlearning.objectives import lm_loss_gradient

VOCAB = 2048


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def timed(call, *args):
    start = time.perf_counter()
    out = call(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--recompute-rows", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = ModelConfig(n_layer=args.layers, n_embd=args.width, n_head=4, n_positions=128)
    model = build_model(cfg, vocab_size=VOCAB, eos_id=0, seed=0)
    gen = torch.Generator().manual_seed(0)
    seqs = [
        torch.randint(1, VOCAB, (args.tokens,), generator=gen).tolist() for _ in range(2 * args.m)
    ]
    sample, held_out = seqs[: args.m], seqs[args.m :]
    grad, _ = lm_loss_gradient(model, held_out[:16], 0)
    xs = {"random": torch.randn(grad.numel(), generator=gen), "held-out gradient": grad}
    print(f"GPT-2 {args.layers} x {args.width}, vocab {VOCAB}, m = {args.m}, {args.tokens} tokens")
    for blocks in ("full", "layer"):
        base = dict(examples=args.m, damping=1e-3, blocks=blocks, gradient_method="loop")
        full, t_full = timed(estimate_fisher, model, sample, FisherConfig(**base), 0)
        print(f"\nblocks {blocks}: d = {full.d:,}")
        exact = WoodburyFisher.from_gradients(full.gradients.double(), 1e-3, full.blocks)
        half = estimate_fisher(model, sample, FisherConfig(**base, dtype="bfloat16"), 0)
        free_cfg = FisherConfig(**base, storage="matrix_free", recompute_rows=args.recompute_rows)
        free, t_free = timed(MatrixFreeFisher.estimate, model, sample, free_cfg, 0)
        for name, x in xs.items():
            ref = exact.ihvp(x.double())
            y32, t32 = timed(full.ihvp, x)
            y16 = half.ihvp(x)
            yfree, tfree = timed(free.ihvp, x)
            print(
                f"  F^-1 x ({name}): float32 vs float64 {rel(y32, ref):.1e}; "
                f"bfloat16 vs float32 {rel(y16, y32):.1e}; matrix_free vs float32 "
                f"{rel(yfree, y32):.1e}; product time matrix_free / device {tfree / t32:.0f}x"
            )
        d32, d16, dfree = full.diag_inverse(), half.diag_inverse(), free.diag_inverse()
        print(
            f"  diag(F^-1): float32 vs float64 {rel(d32, exact.diag_inverse()):.1e}; "
            f"bfloat16 vs float32 {rel(d16, d32):.1e}; matrix_free vs float32 {rel(dfree, d32):.1e}"
        )
        print(
            f"  set-up (gradients included): matrix_free / device {t_free / t_full:.1f}x, "
            f"{free.cost['setup_gradients']} per-example gradients against {args.m}"
        )


if __name__ == "__main__":
    main()
