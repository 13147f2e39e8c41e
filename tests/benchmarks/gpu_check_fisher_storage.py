"""GPU check of the Fisher's storage modes (a few minutes on one 80 GB GPU; never run in CI).

    python tests/benchmarks/gpu_check_fisher_storage.py [--m 64] [--tokens 128] [--out DIR]

On a randomly initialised GPT-2 124M (the hub shape; no download) on CUDA, blocks full:
estimates the Fisher with G on the GPU (device, float32), in pinned host RAM (host), in
bfloat16, and matrix-free; for each, the set-up time, one F^{-1} x and one diag(F^{-1}) time,
the peak GPU memory (torch.cuda.max_memory_allocated) next to the planner's prediction
(fisher.memory.fisher_memory), and the relative error of F^{-1} x and diag(F^{-1}) against the
device float32 result. Writes fisher_storage_gpu.json (to --out, default $OUT or .) and prints
it. With --cpu it runs the same code on a tiny model on the CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from unlearnbench.fisher import memory
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.storage import fit_fisher
from unlearnbench.models import ModelConfig, build_model

MODES = {
    "device": {},
    "host": {"storage": "host"},
    "bfloat16": {"dtype": "bfloat16"},
    "matrix_free": {"storage": "matrix_free", "recompute_rows": 16},
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--cpu", action="store_true", help="a tiny model on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    if args.cpu:
        device, shape = torch.device("cpu"), ModelConfig(n_layer=2, n_embd=32, n_head=2)
        vocab = 1000
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --cpu to check the script")
        device, vocab = torch.device("cuda"), 50257
        shape = ModelConfig(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
    model = build_model(shape, vocab_size=vocab, eos_id=0, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, vocab, (args.tokens,), generator=gen).tolist() for _ in range(args.m)]
    planned_shape = memory.ModelShape("gpt2", "gpt2", shape.n_layer, shape.n_embd, shape.n_head,
                                      vocab, shape.n_positions)  # fmt: skip
    results, reference = {}, {}
    x = None
    for name, kw in MODES.items():
        cfg = FisherConfig(examples=args.m, damping=1e-3, gradient_method="loop", **kw)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        fisher = fit_fisher(model, seqs, cfg, pad_id=0)
        sync(device)
        setup = time.perf_counter() - start
        if x is None:
            x = torch.randn(fisher.d, generator=gen).to(device)
        start = time.perf_counter()
        y = fisher.ihvp(x)
        sync(device)
        product = time.perf_counter() - start
        start = time.perf_counter()
        diag = fisher.diag_inverse()
        sync(device)
        diagonal = time.perf_counter() - start
        if name == "device":
            reference = {"y": y, "diag": diag}
        planned = memory.fisher_memory(
            planned_shape, args.m, args.tokens, gradient_method="loop",
            device="cpu" if args.cpu else "gpu", storage=cfg.storage, dtype=cfg.dtype,
            recompute_rows=cfg.recompute_rows,
        )  # fmt: skip
        results[name] = {
            "setup_s": round(setup, 2),
            "ihvp_s": round(product, 3),
            "diag_inverse_s": round(diagonal, 2),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)
            if device.type == "cuda"
            else None,
            # the planner's peak: per GPU (on --cpu: the process's memory)
            "planned_mb": round(planned.gpu_mb if device.type == "cuda" else planned.host_mb),
            "ihvp_rel_err_vs_device": rel(y, reference["y"]),
            "diag_rel_err_vs_device": rel(diag, reference["diag"]),
            "setup_gradients": fisher.cost.get("setup_gradients", args.m),
        }
        print(name, results[name], flush=True)
        del fisher, y, diag
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": f"GPT-2 {shape.n_layer} x {shape.n_embd}, vocab {vocab}",
        "m": args.m,
        "tokens": args.tokens,
        "torch": torch.__version__,
        "modes": results,
    }
    out = Path(args.out) / "fisher_storage_gpu.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
