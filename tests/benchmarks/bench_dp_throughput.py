"""DP-SGD vs non-private training throughput, per grad-sample route, on GPT-2- and OPT-shaped
models, measured in one run.

    PYTHONPATH=workflow python tests/benchmarks/bench_dp_throughput.py [--steps 30] [--rounds 5]
        [--threads 1] [--shapes gpt2,opt] [--modes lean,folded,hooks,functorch,vmap,ghost]

Each shape trains the same model on the same fixed batch of 32 random sequences of 90-110
tokens: non-private (``mean_loss``, global clipping, AdamW, as ``training.train`` does), and
DP-SGD through each route of ``train_dp.grad_sample_mode`` (training/dp_routes.py), one step
exactly as ``train_dp`` takes it (clipping, seeded noise, accounting). Shapes: GPT-2 with 2
layers of width 128, context 128, vocabulary 8192 (tied embeddings, as the default's model but
with a 4x vocabulary, the shape of the earlier measurements); OPT with the same sizes and a
4x MLP. Ghost clipping refuses tied embeddings, so its row trains an untied copy of each shape
and is compared with that copy's own non-private step.

Modes are interleaved round by round, so a load change on the shared machine hits all of them
alike; each reports its median round. ``--threads 1`` (the train_dp rule's thread count) with
the CPU-time column is the reliable reading when other jobs share the machine. The last lines
give each shape's fastest route and its ratio (project goal: >= 0.8).

Where the time goes (GPT-2 shape): the tied embedding / output layer's per-sample gradients
(32 x 8192 x 128 per step) dominate the per-sample work; ``lean`` saves the batch gradient
that Opacus's ``hooks`` computes and discards (a third of the backward pass's matmuls);
``folded`` also drops Opacus's product of the (32, length, 8192) output gradient with the batch
size (folded into the clip factors), runs the output layer on real positions only and forms
the per-sample gradients one matmul per sequence (training/dp_folded.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM
from unlearnbench.lm_data import collate, mean_loss
from unlearnbench.training.dp import DPConfig
from unlearnbench.training.dp import make_optimizer as make_dp_optimizer
from unlearnbench.training.dp_routes import GRAD_SAMPLE_MODES, attach
from unlearnbench.training.loop import TrainConfig, make_optimizer

VOCAB, EOS, BATCH, WIDTH, LAYERS, CONTEXT = 8192, 0, 32, 128, 2, 128


def batch_of_sequences(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(90, 111, (BATCH,), generator=gen).tolist()
    return collate([torch.randint(2, VOCAB, (n,), generator=gen).tolist() for n in lengths], EOS)


def build(shape: str, tied: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    if shape == "gpt2":
        cfg = GPT2Config(
            vocab_size=VOCAB, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=4,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg).train()
    cfg = OPTConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, ffn_dim=4 * WIDTH,
        num_attention_heads=4, max_position_embeddings=CONTEXT, word_embed_proj_dim=WIDTH,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=tied,
    )  # fmt: skip
    return OPTForCausalLM(cfg).train()


def non_private_step_fn(batch, shape: str, tied: bool = True):
    net = build(shape, tied)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-4, seed=0)
    optimizer = make_optimizer(net, cfg)

    def step():
        loss = mean_loss(net, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        optimizer.step()

    return step


def dp_step_fn(batch, shape: str, mode: str):
    net = build(shape, tied=mode != "ghost")
    cfg = DPConfig(
        epochs=1, batch_size=BATCH, lr=1e-4, target_epsilon=8, seed=0, grad_sample_mode=mode
    )
    generator = torch.Generator()
    # The step's cost does not depend on the noise multiplier: skip the calibration.
    route = attach(net, make_dp_optimizer(net, cfg), 1000 * BATCH, cfg, 1.0, generator)

    def step():
        generator.manual_seed(0)
        route.step(batch)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--shapes", default="gpt2,opt", help="model shapes")
    parser.add_argument("--modes", default=",".join(GRAD_SAMPLE_MODES), help="DP routes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = batch_of_sequences()
    tokens = int(batch.attention_mask.sum())
    shapes, modes = args.shapes.split(","), args.modes.split(",")
    steps = {}
    for shape in shapes:
        steps[(shape, "non-private")] = non_private_step_fn(batch, shape)
        if "ghost" in modes:
            steps[(shape, "non-private, untied")] = non_private_step_fn(batch, shape, tied=False)
        for mode in modes:
            steps[(shape, mode)] = dp_step_fn(batch, shape, mode)
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    per_round = max(1, args.steps // args.rounds)
    seconds: dict[tuple, list[float]] = {name: [] for name in steps}
    cpu_seconds: dict[tuple, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                step()
            seconds[name].append((time.perf_counter() - start) / per_round)
            cpu_seconds[name].append((time.process_time() - cpu_start) / per_round)
    rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    cpu_rate = {name: tokens / statistics.median(s) for name, s in cpu_seconds.items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} x "
        f"{tokens / BATCH:.0f} tokens, {args.rounds} rounds x {per_round} steps per mode"
    )
    print("shape, mode: wall-clock tokens/s (x non-private) | tokens per CPU-second (x)")
    best = {}
    for (shape, mode), value in rate.items():
        base = (shape, "non-private, untied" if mode == "ghost" else "non-private")
        ratio, cpu_ratio = value / rate[base], cpu_rate[(shape, mode)] / cpu_rate[base]
        spread = max(seconds[(shape, mode)]) / min(seconds[(shape, mode)])
        print(
            f"{shape:>5}, {mode:>19}: {value:7.0f} ({ratio:.2f}) | "
            f"{cpu_rate[(shape, mode)]:7.0f} ({cpu_ratio:.2f}); slowest/fastest round {spread:.2f}"
        )
        if mode in GRAD_SAMPLE_MODES and ratio > best.get(shape, ("", 0.0))[1]:
            best[shape] = (mode, ratio, cpu_ratio)
    for shape, (mode, ratio, cpu_ratio) in best.items():
        print(
            f"{shape}: fastest DP route {mode}, dp-sgd throughput ratio (dp/non-private) "
            f"{ratio:.2f} wall clock, {cpu_ratio:.2f} CPU time"
        )


if __name__ == "__main__":
    main()
