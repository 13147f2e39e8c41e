"""The DP-SGD device check (issue 16): every grad-sample route on a GPU, a few minutes.

    PYTHONPATH=workflow:tests/unit/training python tests/benchmarks/gpu_check_dp.py \
        [--device cuda] [--size 124m|tiny] [--batch 16] [--steps 10]

No download: GPT-2 124M and OPT-125m shapes are built with random weights (random tokens; the
numbers measure speed and memory, not learning). For each shape and route:

1. correctness on the device: a tiny model's per-sample gradients (tied embeddings, OPT's
   padding row) against single-example backward passes on the same device, at float32
   tolerance (atol 1e-5, rtol 1e-3: GPU kernels sum in other orders than the CPU's);
2. a whole ``train_dp`` run of a few steps with calibrated noise on the device (the noise
   generator and every tensor of the step live there; a CPU generator would raise);
3. throughput: DP / non-private tokens per second in one run, and peak GPU memory.

``--device cpu --size tiny`` runs the same script here (CI's machine) in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from test_dp_routes import (
    PER_SAMPLE_MODES,
    loop_gradients,
    per_sample_gradients,
    sequences,
    tiny_model,
    tiny_opt,
)
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM
from unlearnbench.lm_data import collate, mean_loss
from unlearnbench.training.dp import DPConfig, train_dp
from unlearnbench.training.dp import make_optimizer as make_dp_optimizer
from unlearnbench.training.dp_routes import GRAD_SAMPLE_MODES, attach
from unlearnbench.training.loop import TrainConfig, make_optimizer

SIZES = {  # width, layers, heads, context, vocabulary
    "124m": (768, 12, 12, 1024, 50257),
    "tiny": (64, 2, 4, 128, 1000),
}


def build(shape: str, size: str, tied: bool, device: str) -> torch.nn.Module:
    width, layers, heads, context, vocab = SIZES[size]
    torch.manual_seed(0)
    if shape == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab, n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg).to(device).train()
    cfg = OPTConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, ffn_dim=4 * width,
        num_attention_heads=heads, max_position_embeddings=context, word_embed_proj_dim=width,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=tied,
    )  # fmt: skip
    return OPTForCausalLM(cfg).to(device).train()


def random_sequences(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        [0, *torch.randint(2, vocab, (length - 2,), generator=gen).tolist(), 0] for _ in range(n)
    ]


def check_per_sample(device: str) -> None:
    for name, build_tiny in (("gpt2", tiny_model), ("opt", tiny_opt)):
        rows = sequences()
        for mode in PER_SAMPLE_MODES:
            model = build_tiny().to(device)
            expected = loop_gradients(model, rows)
            got = per_sample_gradients(model, mode, rows)
            worst = max(
                float((got[n][i] - expected[i][n]).abs().max()) for n in got for i in range(4)
            )
            ok = all(
                torch.allclose(got[n][i], expected[i][n], atol=1e-5, rtol=1e-3)
                for n in got
                for i in range(4)
            )
            print(
                f"per-sample {name:>4} {mode:>9}: max |error| {worst:.2e} {'ok' if ok else 'FAIL'}"
            )


def check_train_dp(shape: str, size: str, device: str, batch: int) -> None:
    _, _, _, context, vocab = SIZES[size]
    data = random_sequences(4 * batch, min(context, 128), vocab)
    for mode in GRAD_SAMPLE_MODES:
        model = build(shape, size, tied=mode != "ghost", device=device)
        cfg = DPConfig(
            epochs=1, batch_size=batch, lr=1e-4, target_epsilon=8.0, seed=0, grad_sample_mode=mode
        )
        result = train_dp(model, data, cfg, pad_id=0)
        where = {p.device.type for p in model.parameters()}
        print(
            f"train_dp {shape} {mode:>9}: {result['steps_done']} steps, epsilon "
            f"{result['epsilon']:.3f}, parameters on {where}"
        )


def throughput(shape: str, size: str, device: str, batch: int, steps: int) -> None:
    _, _, _, context, vocab = SIZES[size]
    length = min(context, 256)
    data = collate(random_sequences(batch, length, vocab, seed=1), 0).to(device)
    tokens = int(data.attention_mask.sum())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(step) -> tuple[float, float]:
        for _ in range(2):
            step()
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            seconds.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        return tokens / statistics.median(seconds), peak

    def plain(tied: bool):
        net = build(shape, size, tied, device)
        optimizer = make_optimizer(net, TrainConfig(epochs=1, batch_size=batch, lr=1e-4, seed=0))

        def step():
            loss = mean_loss(net, data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()

        return step

    base = {tied: timed(plain(tied)) for tied in (True, False)}
    print(f"{shape} {size}, batch {batch} x {length} tokens on {device}")
    print(f"  non-private: {base[True][0]:9.0f} tok/s, peak {base[True][1]:.1f} GiB")
    for mode in GRAD_SAMPLE_MODES:
        tied = mode != "ghost"
        net = build(shape, size, tied, device)
        cfg = DPConfig(
            epochs=1, batch_size=batch, lr=1e-4, target_epsilon=8, seed=0, grad_sample_mode=mode
        )
        generator = torch.Generator(device=device)
        route = attach(net, make_dp_optimizer(net, cfg), 1000 * batch, cfg, 1.0, generator)
        try:
            rate, peak = timed(lambda route=route: route.step(data))
        except torch.OutOfMemoryError:
            print(f"  {mode:>9}: out of memory")
            continue
        finally:
            route.cleanup()
        ratio = rate / base[tied][0]
        print(f"  {mode:>9}: {rate:9.0f} tok/s ({ratio:.2f} x non-private), peak {peak:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="124m", choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}")
    check_per_sample(args.device)
    for shape in ("gpt2", "opt"):
        check_train_dp(shape, "tiny", args.device, batch=4)
        throughput(shape, args.size, args.device, args.batch, args.steps)


if __name__ == "__main__":
    main()
