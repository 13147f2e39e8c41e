"""DP-SGD training of a causal LM with Opacus: the differentially private baseline.

Each step samples a Poisson batch (every training sequence independently with probability q),
clips every sequence's gradient to ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` to the sum and averages over the expected batch size
(Abadi et al. 2016, as Opacus implements it). The noise multiplier is calibrated so that the
whole run spends at most ``target_epsilon`` at ``delta``; the accountant then reports what was
spent.

Design choices, each for determinism and exact resumption:

- **Poisson sampling is ours, accounting is Opacus's.** Step t's batch is a pure function of
  (seed, t): each example is kept iff a uniform draw from the ``data_order`` stream keyed by t
  is < q. This is exactly the subsampling the accountant analyses (same q, one accountant step
  per optimizer step), but unlike Opacus's ``DPDataLoader`` it needs no sampler state to
  resume mid-epoch. Opacus's optimizer and accountant get the sample rate ``DPDataLoader``
  would give them (q = 1 / steps per epoch) and its expected batch size (int(N q)).
- **Noise is a pure function of the step too**: the generator Opacus draws noise from lives
  on the model's device and is re-seeded from the ``dp`` stream keyed by t before each step. A
  checkpoint therefore needs weights, optimizer moments, the step and the accountant's
  history, nothing else. Batches are drawn on the CPU and moved to the model's device.
- **The noise multiplier** is calibrated for the steps actually run (dp_accounting.py).
- **Per-sample gradients** come by one of several routes (``grad_sample_mode``, dp_routes.py),
  all ending in Opacus's clipping, noise and accountant.
- **Loss = mean over sequences of each sequence's mean token loss.** Opacus's hooks scale the
  backprops by the batch size, so each per-sample gradient is the gradient of that sequence's
  own loss. A token-mean over the whole batch would divide sequence i's gradient by the
  batch's total token count, making it depend on the other sequences in the batch: the
  per-sample clipping bound would then no longer bound one example's influence.
- **Empty batches** (probability (1 - q)^N, real for tiny data) skip the forward and backward
  pass but not the step: Opacus clips nothing, adds the noise, the optimizer steps and the
  accountant counts it, exactly as Opacus treats an empty ``DPDataLoader`` batch. Skipping the
  noisy update itself would publish the data-dependent fact that the batch was empty.
- ``secure_mode=False``: seeded pseudo-randomness is what makes runs reproducible; a
  production release would retrain with ``secure_mode=True`` (Opacus's advice).
- Every route attaches hooks without wrapping the model, so the model keeps its parameter
  names and checkpoints are the plain model's state dict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..lm_data import collate
from ..logs import progress
from ..models import fingerprint
from ..seeding import derive_seed, torch_generator
from .checkpoint import clear_checkpoint, inputs_fingerprint, resume, save_checkpoint
from .dp_accounting import (
    ACCOUNTANTS,
    accounted_steps,
    noise_multiplier,
    resolve_delta,
    sample_rate,
    spent_epsilon,
    steps_per_epoch,
)
from .dp_routes import GRAD_SAMPLE_MODES, attach
from .param_subset import TRAINABLE, freeze_all_but

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPConfig:
    """A DP-SGD recipe (``train_dp.*`` of the config; one job per target epsilon)."""

    epochs: int
    batch_size: int  # expected Poisson batch size
    lr: float
    target_epsilon: float | None  # None: no noise (epsilon = infinity), the clipping-only control
    seed: int
    delta: float | None = None  # None: 1/N, N = number of training sequences
    max_grad_norm: float = 1.0  # per-sample clipping bound C
    accountant: str = "prv"
    grad_sample_mode: str = "folded"
    trainable: str = "all"  # which parameters DP-SGD trains (param_subset.TRAINABLE)
    # Steps of other runs on the same data that the same (epsilon, delta) must also cover (a
    # rate sweep's candidates, dp_sweep): the noise is calibrated for all of them together.
    extra_accounted_steps: int = 0
    checkpoint_every: int = 50
    key: str = "train_dp"  # config path, for error messages

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "must be >= 1", "train for at least one epoch"),
            ("batch_size", self.batch_size >= 1, "must be >= 1", "use an expected batch >= 1"),
            ("lr", 0 < self.lr <= 1, "must be in (0, 1]", "use a positive rate of at most 1"),
            (
                "epsilons",
                self.target_epsilon is None or self.target_epsilon > 0,
                "target epsilon must be > 0",
                "list positive epsilons (e.g. 1, 2, 4, 8)",
            ),
            (
                "delta",
                self.delta is None or 0 < self.delta < 1,
                "must be in (0, 1)",
                "leave it unset for 1/N or give a small positive value",
            ),
            (
                "max_grad_norm",
                self.max_grad_norm > 0,
                "must be > 0",
                "use a positive clipping bound (e.g. 1.0)",
            ),
            (
                "accountant",
                self.accountant in ACCOUNTANTS,
                f"must be one of {ACCOUNTANTS}",
                "choose 'prv' (tighter, Opacus's default) or 'rdp'",
            ),
            (
                "grad_sample_mode",
                self.grad_sample_mode in GRAD_SAMPLE_MODES,
                f"must be one of {GRAD_SAMPLE_MODES}",
                "use 'folded' (the fastest here), or see dp_routes.py",
            ),
            (
                "trainable",
                self.trainable in TRAINABLE,
                f"must be one of {TRAINABLE}",
                "train 'all' parameters or a subset ('norms_biases', 'last_block')",
            ),
            (
                "extra_accounted_steps",
                self.extra_accounted_steps >= 0,
                "must be >= 0",
                "count the other runs' steps, or 0",
            ),
            (
                "checkpoint_every",
                self.checkpoint_every >= 1,
                "must be >= 1",
                "checkpoint every N >= 1 steps",
            ),
        ]
        for name, ok, problem, fix in checks:
            if not ok:
                value = self.target_epsilon if name == "epsilons" else getattr(self, name)
                raise ValueError(f"{self.key}.{name}: {problem}, got {value}; {fix}")


def poisson_rows(n: int, q: float, seed: int, step: int) -> list[int]:
    """Step ``step``'s batch: each of the n examples independently with probability q."""
    draws = torch.rand(n, generator=torch_generator(seed, "data_order", "dp_poisson", step))
    return torch.nonzero(draws < q).flatten().tolist()


def make_optimizer(model: torch.nn.Module, cfg: DPConfig) -> torch.optim.Optimizer:
    # DP-Adam (Adam on the privatised gradient is post-processing: privacy is unchanged);
    # foreach=False as in training.py: one fixed code path. Frozen parameters (a trainable
    # subset) are left out, so Opacus neither clips nor noises them.
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.0, foreach=False)


def train_dp(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    cfg: DPConfig,
    pad_id: int,
    checkpoint_dir: str | Path | None = None,
    on_step: Callable[[int], None] | None = None,
    until: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place with DP-SGD; return the privacy spent and the history.

    With ``checkpoint_dir``, state is saved every ``cfg.checkpoint_every`` steps and at the end
    of each epoch, and a run finds and resumes from it (bitwise equal to an uninterrupted run on
    CPU); the directory is removed on success. ``on_step(step)`` runs after each step.

    ``until`` stops after that many steps (of the whole run's schedule and noise) and keeps the
    checkpoint there, so a later call with the same ``checkpoint_dir`` continues the very same
    run: a rate sweep's candidates are prefixes of full runs (dp_sweep). A run already past
    ``until`` is returned as resumed, untrained.
    """
    n = len(sequences)
    if not n:
        raise ValueError(f"{cfg.key}: no training examples; check the dataset's train split")
    delta = resolve_delta(cfg, n)
    q = sample_rate(n, cfg.batch_size)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    total_steps = per_epoch * cfg.epochs
    noise = noise_multiplier(cfg, n)  # errors out before the model is touched
    stop = total_steps if until is None else min(until, total_steps)
    if until is not None and not checkpoint_dir:
        raise ValueError("train_dp: stopping early (until) needs a checkpoint_dir to continue from")
    log.info(
        "DP-SGD: noise multiplier %.4f, sample rate %.4g, %d steps, delta %.3g",
        noise,
        q,
        total_steps,
        delta,
    )

    model.train()
    trained_coordinates = freeze_all_but(model, cfg.trainable)
    optimizer = make_optimizer(model, cfg)
    step = 0
    history: dict[str, Any] = {"epoch_loss": [], "tokens": 0, "seconds": 0.0, "empty_batches": 0}
    running = {"loss": 0.0, "tokens": 0}
    accountant_state = None
    # What a checkpoint must have been trained from to be resumed (checkpoint.resume).
    expected = {
        "config": asdict(cfg),
        "examples": n,
        "noise_multiplier": noise,
        "inputs": inputs_fingerprint(fingerprint(model), sequences),
    }
    resumed = resume(checkpoint_dir, model, optimizer, expected) if checkpoint_dir else None
    if resumed is not None:
        meta, _ = resumed
        step, history, running = meta["step"], meta["history"], meta["running"]
        accountant_state = meta["accountant"]
        log.info("resuming from step %d of %d", step, total_steps)

    # Noise is drawn where the gradients live (Opacus draws it on the gradient's device).
    device = next(model.parameters()).device
    noise_generator = torch.Generator(device=device)
    route = None
    try:
        route = attach(model, optimizer, n, cfg, noise, noise_generator)
        if accountant_state is not None:
            route.accountant.load_state_dict(
                {
                    "history": [tuple(entry) for entry in accountant_state["history"]],
                    "mechanism": accountant_state["mechanism"],
                }
            )
        done = step  # steps taken so far (more than stop when resumed past it)
        bar = progress(range(step, stop), desc=cfg.key, total=max(0, stop - step))
        start = time.perf_counter()
        for step in bar:
            rows = poisson_rows(n, q, cfg.seed, step)
            batch = collate([sequences[i] for i in rows], pad_id).to(device) if rows else None
            noise_generator.manual_seed(derive_seed(cfg.seed, "dp", "noise", step))
            loss_sum, count = route.step(batch)
            running["loss"] += loss_sum
            running["tokens"] += count
            history["tokens"] += int(batch.attention_mask.sum()) if batch is not None else 0
            history["empty_batches"] += batch is None
            done = step + 1
            if done % per_epoch == 0:
                history["epoch_loss"].append(running["loss"] / max(1, running["tokens"]))
                log.info("epoch %d: loss %.4f", done // per_epoch, history["epoch_loss"][-1])
                running = {"loss": 0.0, "tokens": 0}
            boundary = done % cfg.checkpoint_every == 0 or done % per_epoch == 0 or done == stop
            if checkpoint_dir and boundary:
                history["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                meta = {
                    "step": done,
                    "history": history,
                    "running": running,
                    **expected,
                    "accountant": dict(route.accountant.state_dict()),
                }
                save_checkpoint(checkpoint_dir, model, optimizer, meta)
            if on_step is not None:
                on_step(done)
        history["seconds"] += time.perf_counter() - start
    finally:
        if route is not None:
            route.cleanup()  # the caller gets a plain model back, also after an error
        model.requires_grad_(True)
    model.eval()
    # Without noise nothing is guaranteed (epsilon = infinity): recorded as null. With other
    # runs accounted (a sweep), the guarantee covers them all: this run's steps and theirs.
    epsilon_run = route.accountant.get_epsilon(delta=delta) if noise > 0 else None
    epsilon = epsilon_run
    if noise > 0 and cfg.extra_accounted_steps:
        epsilon = spent_epsilon(noise, q, accounted_steps(cfg, n), delta, cfg.accountant)
    if checkpoint_dir and stop == total_steps:
        clear_checkpoint(checkpoint_dir)
    return {
        "epsilon": epsilon,
        "epsilon_this_run": epsilon_run,
        "accounted_steps": accounted_steps(cfg, n),
        "target_epsilon": cfg.target_epsilon,
        "noise_free": noise == 0,
        "delta": delta,
        "noise_multiplier": noise,
        "sample_rate": q,
        "expected_batch_size": route.optimizer.expected_batch_size,  # Opacus: int(N * q)
        "max_grad_norm": cfg.max_grad_norm,
        "accountant": cfg.accountant,
        "grad_sample_mode": cfg.grad_sample_mode,
        "steps": total_steps,
        "steps_done": done,
        "trainable": cfg.trainable,
        "trained_parameters": trained_coordinates,
        **history,
        "tokens_per_second": history["tokens"] / max(history["seconds"], 1e-9),
    }
