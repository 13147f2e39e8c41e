"""The prepared GPU check: the paper-scale stages on one GPU, with no network, in a few minutes.

    PYTHONPATH=workflow:tests python tests/gpu/check_gpu.py --out gpu_check.json
    PYTHONPATH=workflow:tests python tests/gpu/check_gpu.py --cpu-smoke --out smoke.json

Each item runs the project's own code (nothing here re-implements a stage) on a GPT-2
124M-shaped model, randomly initialised from a ``GPT2Config`` (no download), with the real GPT-2
BPE of ``tests/data/gpt2_bpe``:

- ``train_step``: one training step (``training.loop.accumulate_gradient``: micro-batches) in
  float32 and under bf16 autocast (``compute.precision: bf16``);
- ``scoring``: perplexity (``evaluation.language.perplexity``) in float32 and bf16;
- ``fisher``: m = 256 per-example gradients and the block-diagonal Woodbury set-up (one block
  per tensor, ``fisher.blocks: layer``) on as many of the last transformer blocks' tensors as
  half the free GPU memory holds (all of G at m = 256 is 127 GB: README "Memory and time at
  scale"), one product F^-1 x, and one block checked against a dense float64 solve;
- ``exposure``: the exact trie rank (``exposure.trie``) over 10^6 candidates, and at 10^4
  checked against brute force (every candidate scored as a full sequence);
- ``dp_step``: DP-SGD steps through ``training.dp.train_dp`` (Opacus), beside non-private
  steps on the same batch.

Every item runs at the full size on the GPU and at the smoke size on the CPU and the GPU, so
the table shows the GPU figures next to CPU figures measured in the same run (README "Memory
and time at scale" has the 2-core machine's). Checks, with the tolerances a GPU needs: bf16
loss within 2e-2 relative of float32 (bf16 keeps ~3 significant digits), the Woodbury block
within 1e-3 relative of the dense solve (float32 G, float64 accumulation), exposure ranks equal
to brute force (exact: the trie rescores near-ties). An item that fails records its error and
the others still run; the exit status is 1 if anything failed.

``--cpu-smoke`` runs only the smoke size on the CPU (a unit test does, so this cannot rot).
Without ``--cpu-smoke`` and without CUDA it stops at once with a clear message.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2TokenizerFast
from unlearnbench.compute import place_model, precision_policy
from unlearnbench.evaluation.language import perplexity
from unlearnbench.exposure import build_trie, score_token_sequences, trie_rank
from unlearnbench.exposure.scoring import eval_mode
from unlearnbench.exposure.trie import encode_text
from unlearnbench.fisher.per_example_grads import (
    flat_dim,
    layout_blocks,
    parameter_layout,
    per_example_gradients,
)
from unlearnbench.fisher.woodbury import WoodburyFisher
from unlearnbench.lm_data import collate
from unlearnbench.models import ModelConfig, build_model
from unlearnbench.training.dp import DPConfig, train_dp
from unlearnbench.training.loop import accumulate_gradient

GPT2_BPE = Path(__file__).resolve().parents[1] / "data" / "gpt2_bpe"
PREFIX = "my pin code is "
BF16_RTOL = 2e-2  # bf16 keeps ~3 significant digits of the forward pass
WOODBURY_RTOL = 1e-3  # float32 G, float64 accumulation; the CPU smoke measures ~1e-7
DAMPING = 1e-3  # fisher.damping of the default


@dataclass(frozen=True)
class Size:
    """One scale of every item: the model and the work each item does."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    train_batch: int
    micro_batch: int
    train_tokens: int
    score_sequences: int
    score_tokens: int
    fisher_m: int
    fisher_tokens: int
    exposure_digits: int  # the trie's space is 10^k
    check_digits: int  # brute force checks the trie at 10^k
    dp_batch: int
    dp_tokens: int


FULL = Size("full (GPT-2 124M)", 12, 768, 12, 1024, 16, 8, 512, 64, 512, 256, 128, 6, 4, 8, 128)
SMOKE = Size("smoke", 2, 64, 2, 128, 4, 2, 32, 8, 32, 16, 16, 3, 2, 4, 16)


def tokenizer() -> GPT2TokenizerFast:
    # transformers 5: vocab_file= would silently build an empty vocabulary; vocab= does not.
    return GPT2TokenizerFast(
        vocab=str(GPT2_BPE / "encoder.json"), merges=str(GPT2_BPE / "vocab.bpe")
    )


def gpt2(size: Size, device: str) -> torch.nn.Module:
    """The project's GPT-2 (``models.build_model``: seeded init, dropout off) of ``size`` over
    GPT-2's 50257 tokens, placed on ``device`` in float32 as every stage places its model."""
    cfg = ModelConfig(
        n_layer=size.n_layer, n_embd=size.n_embd, n_head=size.n_head, n_positions=size.n_positions
    )
    return place_model(build_model(cfg, vocab_size=50257, eos_id=50256, seed=0), device).eval()


def random_sequences(n: int, length: int, vocab: int = 50257, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab - 1, (n, length), generator=gen).tolist()


# ---------------------------------------------------------------- items


def train_step(size: Size, device: str) -> dict[str, Any]:
    model = gpt2(size, device).train()
    rows = random_sequences(size.train_batch, size.train_tokens)
    out = {}
    for precision, dtype in (("float32", None), ("bf16", "bfloat16")):
        with precision_policy(dtype, allow_cpu=True):
            accumulate_gradient(model, rows, 50256, size.micro_batch)  # warm-up (kernels, cache)
            model.zero_grad(set_to_none=True)
            start = _sync_time(device)
            loss, tokens = accumulate_gradient(model, rows, 50256, size.micro_batch)
            seconds = _sync_time(device) - start
        model.zero_grad(set_to_none=True)
        out[precision] = {"seconds": seconds, "loss": float(loss), "tokens_per_s": tokens / seconds}
    relative = abs(out["bf16"]["loss"] - out["float32"]["loss"]) / out["float32"]["loss"]
    return {
        "seconds": out["float32"]["seconds"],
        "seconds_bf16": out["bf16"]["seconds"],
        "tokens_per_s": out["float32"]["tokens_per_s"],
        "tokens_per_s_bf16": out["bf16"]["tokens_per_s"],
        "bf16_loss_relative_difference": relative,
        "check": f"bf16 loss within {BF16_RTOL} of float32",
        "passed": relative < BF16_RTOL,
        "detail": f"{size.train_batch} x {size.train_tokens} tokens, micro-batches of "
        f"{size.micro_batch}",
    }


def scoring(size: Size, device: str) -> dict[str, Any]:
    model = gpt2(size, device)
    rows = random_sequences(size.score_sequences, size.score_tokens, seed=1)
    out = {}
    for precision, dtype in (("float32", None), ("bf16", "bfloat16")):
        with precision_policy(dtype, allow_cpu=True):
            perplexity(model, rows[:2], 50256, 32, "warm-up")
            start = _sync_time(device)
            result = perplexity(model, rows, 50256, 32, precision)
            out[precision] = (_sync_time(device) - start, result["loss"])
    relative = abs(out["bf16"][1] - out["float32"][1]) / out["float32"][1]
    return {
        "seconds": out["float32"][0],
        "seconds_bf16": out["bf16"][0],
        "bf16_loss_relative_difference": relative,
        "check": f"bf16 perplexity loss within {BF16_RTOL} of float32",
        "passed": relative < BF16_RTOL,
        "detail": f"{size.score_sequences} x {size.score_tokens} tokens",
    }


def fisher_parameters(model: torch.nn.Module, m: int, budget_bytes: float) -> list[str]:
    """The last transformer blocks' tensors, newest first, while m x d float32 fits the budget
    (the whole model's G does not fit one GPU at m = 256)."""
    layout = parameter_layout(model)
    chosen, used = [], 0
    for piece in reversed(layout):
        if ".h." not in piece.name:  # embeddings and the final LayerNorm: left out
            continue
        size = 4 * m * (piece.stop - piece.start)
        if used + size > budget_bytes:
            break
        chosen.append(piece.name)
        used += size
    if not chosen:
        raise RuntimeError(f"fisher: not even one tensor's m x d gradients fit {budget_bytes} B")
    return chosen


def fisher(size: Size, device: str) -> dict[str, Any]:
    model = gpt2(size, device)
    m = size.fisher_m
    # Half the free GPU memory; the smoke's 64 MiB still leaves some tensors out.
    budget = 0.5 * torch.cuda.mem_get_info()[0] if device == "cuda" else 64 * 2**20
    names = fisher_parameters(model, m, budget)
    layout = parameter_layout(model, names)
    d, d_model = flat_dim(layout), flat_dim(parameter_layout(model))
    batch = collate(random_sequences(m, size.fisher_tokens, seed=2), 50256)
    start = _sync_time(device)
    G = per_example_gradients(
        model, batch.input_ids, batch.attention_mask, batch.labels, parameter_names=names
    )
    gradients = _sync_time(device) - start
    blocks = layout_blocks(layout)
    start = _sync_time(device)
    inverse = WoodburyFisher.from_gradients(G, DAMPING, blocks, progress=False)
    setup = _sync_time(device) - start
    x = torch.randn(d, generator=torch.Generator().manual_seed(3)).to(device)
    start = _sync_time(device)
    y = inverse.ihvp(x)
    product = _sync_time(device) - start
    error = _dense_block_error(G, blocks, m, x, y)
    return {
        "seconds": gradients + setup,
        "gradients_s": gradients,
        "setup_s": setup,
        "product_s": product,
        # The set-up is linear in d at fixed m (2 m^2 d flops): the whole model's, scaled.
        "setup_s_whole_model_estimate": setup * d_model / d,
        "woodbury_block_relative_error": error,
        "check": f"one Woodbury block within {WOODBURY_RTOL} of a dense float64 solve",
        "passed": error < WOODBURY_RTOL and bool(torch.isfinite(y).all()),
        "detail": f"m = {m} x {size.fisher_tokens} tokens, {len(names)} tensors, d = {d:,} of "
        f"{d_model:,} ({4 * m * d / 2**30:.1f} GiB of G), blocks per tensor",
    }


def _dense_block_error(G, blocks, m, x, y) -> float:
    """F^-1 x of the first dual-form block of width <= 4096 against a dense float64 solve."""
    a, b = next((a, b) for a, b in blocks if m < b - a <= 4096)
    g = G[:, a:b].double()
    dense = DAMPING * torch.eye(b - a, dtype=torch.float64, device=g.device) + g.T @ g / m
    want = torch.linalg.solve(dense, x[a:b].double())
    return float((y[a:b].double() - want).norm() / want.norm())


def exposure(size: Size, device: str) -> dict[str, Any]:
    model = gpt2(size, device)
    tok = tokenizer()
    # 10^check_digits: every candidate scored as a full sequence; the trie's ranks must match.
    k = size.check_digits
    small = build_trie(tok, PREFIX, "0" * k)
    shared = len(small.context_ids)  # the prefix tokens every candidate starts with
    tails = [encode_text(tok, f"{PREFIX}{i:0{k}d}")[shared:] for i in range(10**k)]
    with eval_mode(model):
        px = _score_tails(model, small.context_ids, tails)
    mismatches = []
    for index in (int(px.argmin()), int(px.argsort()[len(px) // 2])):
        result = trie_rank(model, small, tok, f"{index:0{k}d}")
        if result.rank != int((px < result.secret_log_perplexity).sum()) + 1:
            mismatches.append(f"{index:0{k}d}")
    # 10^exposure_digits: the trie alone, timed (tokenizing and building, then the walk).
    k = size.exposure_digits
    start = time.perf_counter()
    trie = build_trie(tok, PREFIX, "0" * k)
    built = time.perf_counter() - start
    secret = f"{int(np.random.default_rng(4).integers(10**k)):0{k}d}"
    start = _sync_time(device)
    result = trie_rank(model, trie, tok, secret)
    walk = _sync_time(device) - start
    return {
        "seconds": built + walk,
        "trie_build_s": built,
        "walk_s": walk,
        "rank": result.rank,
        "nodes_expanded": result.candidates_scored,
        "trie_inner_nodes": trie.n_inner,
        "check": f"trie ranks equal brute force at 10^{size.check_digits}",
        "passed": not mismatches,
        "mismatches": mismatches,
        "detail": f"10^{k} candidates ({trie.n_inner:,} inner nodes; tokenizing and building "
        f"{built:.1f} s on the CPU), ranks checked at 10^{size.check_digits}",
    }


def _score_tails(model, context_ids, tails) -> torch.Tensor:
    """Px of every tail after the context, each scored as one full sequence (no pruning)."""
    lengths = torch.tensor([len(t) for t in tails])
    padded = torch.zeros(len(tails), int(lengths.max()), dtype=torch.long)
    for i, tail in enumerate(tails):
        padded[i, : len(tail)] = torch.tensor(tail)
    return score_token_sequences(model, context_ids, padded, lengths).cpu()


def dp_step(size: Size, device: str) -> dict[str, Any]:
    rows = random_sequences(2 * size.dp_batch, size.dp_tokens, seed=5)
    cfg = DPConfig(
        epochs=1, batch_size=size.dp_batch, lr=1e-4, target_epsilon=8.0, seed=0, delta=1e-5
    )
    model = gpt2(size, device)
    result = train_dp(model, rows, cfg, pad_id=50256)  # two Poisson steps of ~dp_batch rows
    dp_seconds = result["seconds"] / max(1, result["steps_done"])
    plain = gpt2(size, device).train()
    accumulate_gradient(plain, rows[: size.dp_batch], 50256, None)  # warm-up
    start = _sync_time(device)
    accumulate_gradient(plain, rows[: size.dp_batch], 50256, None)
    plain_seconds = _sync_time(device) - start
    return {
        "seconds": dp_seconds,
        "non_private_step_s": plain_seconds,
        "epsilon": result["epsilon"],
        "check": "a DP-SGD step completes with finite weights",
        "passed": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
        "detail": f"{result['steps_done']} steps of ~{size.dp_batch} x {size.dp_tokens} tokens "
        f"(Opacus {cfg.grad_sample_mode}); the non-private step is forward and backward only",
    }


ITEMS: dict[str, Callable[[Size, str], dict[str, Any]]] = {
    "train_step": train_step,
    "scoring": scoring,
    "fisher": fisher,
    "exposure": exposure,
    "dp_step": dp_step,
}


# ---------------------------------------------------------------- running and reporting


def _sync_time(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_item(name: str, size: Size, device: str) -> dict[str, Any]:
    """One item at one size on one device: its figures, peak GPU memory, or its error."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        record = ITEMS[name](size, device)
    except Exception as err:  # one broken item must not hide the others' figures
        record = {
            "passed": False,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=8),
        }
    record.update(item=name, size=size.name, device=device)
    record["wall_s"] = time.perf_counter() - start
    if device == "cuda":
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(_line(record), flush=True)
    return record


def _line(record: dict[str, Any]) -> str:
    status = "ok" if record["passed"] else "FAILED"
    figures = f"{record['seconds']:.3f} s" if "seconds" in record else record.get("error", "")
    peak = f", peak {record['peak_gpu_mb'] / 1024:.2f} GiB" if "peak_gpu_mb" in record else ""
    where = f"{record['item']:<10} {record['size']:<18} {record['device']:<5}"
    return f"  {where} {figures}{peak} [{status}]"


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: per item, the full size on the GPU beside the smoke size on CPU and GPU."""
    cell: dict[tuple[str, str, str], dict[str, Any]] = {
        (r["item"], r["size"], r["device"]): r for r in records
    }

    def seconds(key) -> str:
        r = cell.get(key)
        if r is None:
            return "-"
        return f"{r['seconds']:.3g}" if "seconds" in r else "error"

    def peak(key) -> str:
        r = cell.get(key)
        return f"{r['peak_gpu_mb'] / 1024:.2f}" if r and "peak_gpu_mb" in r else "-"

    lines = [
        "| item | full: GPU s | full: peak GPU GiB | smoke: CPU s | smoke: GPU s | checks "
        "| full size |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ITEMS:
        full, smoke = (name, FULL.name, "cuda"), (name, SMOKE.name)
        checks = [r for r in records if r["item"] == name]
        passed = "pass" if checks and all(r["passed"] for r in checks) else "FAIL"
        detail = cell.get(full, cell.get((*smoke, "cpu"), {})).get("detail", "")
        lines.append(
            f"| {name} | {seconds(full)} | {peak(full)} | {seconds((*smoke, 'cpu'))} | "
            f"{seconds((*smoke, 'cuda'))} | {passed} | {detail} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--cpu-smoke", action="store_true", help="smoke size on the CPU only")
    parser.add_argument("--items", nargs="*", choices=list(ITEMS), default=list(ITEMS))
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit(
            "check_gpu: CUDA is not available here (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda}); run it on a GPU machine "
            "with a CUDA build of torch, or pass --cpu-smoke for the scaled-down CPU run"
        )
    runs = [(SMOKE, "cpu")] if args.cpu_smoke else [(SMOKE, "cpu"), (SMOKE, "cuda"), (FULL, "cuda")]
    print(f"torch {torch.__version__}, {_device_name(args.cpu_smoke)}", flush=True)
    records = [run_item(name, size, device) for size, device in runs for name in args.items]
    report = {
        "device": _device_name(args.cpu_smoke),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_smoke": args.cpu_smoke,
        "passed": all(r["passed"] for r in records),
        "items": records,
        "table": table(records),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(report["table"])
    print(f"{'passed' if report['passed'] else 'FAILED'}; written to {args.out}")
    return 0 if report["passed"] else 1


def _device_name(cpu_only: bool) -> str:
    if cpu_only or not torch.cuda.is_available():
        return (
            f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    return f"{torch.cuda.get_device_name()} ({memory:.0f} GiB)"


if __name__ == "__main__":
    sys.exit(main())
