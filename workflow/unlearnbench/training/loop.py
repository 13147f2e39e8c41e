"""Deterministic, resumable training of a causal LM on a list of token sequences.

One loop serves pretraining, fine-tuning, retraining and the fine-tune-on-D+ baseline. Data
order comes from the ``data_order`` seed stream with the epoch as key, and the learning rate is
a pure function of the step, so restoring weights + optimizer state at a step boundary is all a
resumed run needs to continue bitwise identically (CPU; same thread count).

A step's batch may be split into micro-batches (``micro_batch_size``: what fits a GPU at a long
context): each micro-batch's summed token loss is divided by the whole batch's token count, so
the accumulated gradient is the batch's mean-loss gradient, up to float rounding. The forward
pass runs under the job's autocast policy (``compute.autocast_forward``: bf16 on GPUs when
``compute.precision`` says so, never on the CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..compute import autocast_forward
from ..lm_data import IGNORE_INDEX, Batch, collate, mean_loss, token_losses
from ..logs import progress
from ..models import fingerprint
from ..seeding import torch_generator
from .checkpoint import clear_checkpoint, inputs_fingerprint, resume, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe (``train.<stage>.*`` of the config)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    checkpoint_every: int = 50
    micro_batch_size: int | None = None  # None: the whole batch in one forward pass
    key: str = "train"  # config path, for error messages

    def __post_init__(self) -> None:
        micro_ok = self.micro_batch_size is None or self.micro_batch_size >= 1
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("lr", self.lr <= 1, "<= 1"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("micro_batch_size", micro_ok, ">= 1"),
        ]
        for name, ok, bound in checks:
            if not ok:
                raise ValueError(f"{self.key}.{name}: must be {bound}, got {getattr(self, name)}")


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then linear decay to 10 % of the peak (a pure function of the step)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    return cfg.lr * (1.0 - 0.9 * (step - cfg.warmup_steps) / span)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # foreach=False: one fixed code path, so results do not depend on a heuristic choice.
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False
    )


def accumulate_gradient(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], pad_id: int, micro: int | None
) -> tuple[torch.Tensor, int]:
    """Backpropagate the batch's mean next-token loss into ``model``'s ``.grad``, ``micro``
    sequences at a time; return (the loss, detached; the batch's real tokens).

    One micro-batch is exactly the plain step (``mean_loss``), so a recipe without
    ``micro_batch_size`` computes what it always did, bit for bit.
    """
    device = next(model.parameters()).device  # batches follow the model
    if micro is None or micro >= len(sequences):
        batch = collate(sequences, pad_id).to(device)
        with autocast_forward(device):
            loss = mean_loss(model, batch)
        loss.backward()
        return loss.detach(), int(batch.attention_mask.sum())
    chunks = [collate(sequences[i : i + micro], pad_id) for i in range(0, len(sequences), micro)]
    # The mean over the whole batch's predicted tokens, as mean_loss takes it.
    predicted = max(1, sum(_predicted_tokens(chunk) for chunk in chunks))
    total = torch.zeros((), dtype=torch.float32, device=device)
    for chunk in chunks:
        chunk = chunk.to(device)
        with autocast_forward(device):
            summed, _ = token_losses(model, chunk)
        part = summed.sum() / predicted
        part.backward()
        total += part.detach().float()
    tokens = sum(int(chunk.attention_mask.sum()) for chunk in chunks)
    return total, tokens


def _predicted_tokens(batch: Batch) -> int:
    """Positions with a next-token target (every real token but each sequence's first)."""
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def epoch_order(n: int, epoch: int, cfg: TrainConfig) -> torch.Tensor:
    return torch.randperm(n, generator=torch_generator(cfg.seed, "data_order", epoch))


def train(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    cfg: TrainConfig,
    pad_id: int,
    checkpoint_dir: str | Path | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; return the history (loss per epoch, steps, throughput).

    With ``checkpoint_dir``, state is saved every ``cfg.checkpoint_every`` steps and at the end
    of each epoch, and a run finds and resumes from it; the directory is removed on success.
    ``on_step(step)`` is called after each optimizer step (tests use it to interrupt a run).
    """
    if not sequences:
        raise ValueError(f"{cfg.key}: no training examples; check the dataset's train split")
    model.train()
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(sequences) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    step: int = 0
    history: dict[str, Any] = {"epoch_loss": [], "tokens": 0, "seconds": 0.0}
    # What a checkpoint must have been trained from to be resumed (checkpoint.resume).
    expected = {
        "config": asdict(cfg),
        "examples": len(sequences),
        "inputs": inputs_fingerprint(fingerprint(model), sequences),
    }
    resumed = resume(checkpoint_dir, model, optimizer, expected) if checkpoint_dir else None
    if resumed is not None:
        meta, _ = resumed
        step, history, running = meta["step"], meta["history"], meta["running"]
        log.info("resuming from step %d of %d", step, total_steps)
    else:
        running = {"loss": 0.0, "tokens": 0}
    bar = progress(range(step, total_steps), desc=cfg.key, total=total_steps - step)
    start = time.perf_counter()
    for step in bar:
        epoch, index = divmod(step, steps_per_epoch)
        order = epoch_order(len(sequences), epoch, cfg)
        rows = order[index * cfg.batch_size : (index + 1) * cfg.batch_size].tolist()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss, tokens = accumulate_gradient(
            model, [sequences[i] for i in rows], pad_id, cfg.micro_batch_size
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        running["loss"] += loss.item() * tokens
        running["tokens"] += tokens
        history["tokens"] += tokens
        done = step + 1
        if done % steps_per_epoch == 0:
            history["epoch_loss"].append(running["loss"] / max(1, running["tokens"]))
            log.info("epoch %d: loss %.4f", epoch + 1, history["epoch_loss"][-1])
            running = {"loss": 0.0, "tokens": 0}
        if checkpoint_dir and (done % cfg.checkpoint_every == 0 or done % steps_per_epoch == 0):
            history["seconds"] += time.perf_counter() - start
            start = time.perf_counter()
            meta = {
                "step": done,
                "history": history,
                "running": running,
                **expected,
            }
            save_checkpoint(checkpoint_dir, model, optimizer, meta)
        if on_step is not None:
            on_step(done)
    history["seconds"] += time.perf_counter() - start
    history["steps"] = total_steps
    history["tokens_per_second"] = history["tokens"] / max(history["seconds"], 1e-9)
    model.eval()
    if checkpoint_dir:
        clear_checkpoint(checkpoint_dir)
    return history
