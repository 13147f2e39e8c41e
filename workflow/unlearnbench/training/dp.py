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
  resume mid-epoch. Opacus gets a plain ``DataLoader`` with ``poisson_sampling=False``; it reads
  the sample rate from it the same way ``DPDataLoader`` would (q = 1 / len(loader)).
- **Noise is a pure function of the step too**: the generator Opacus draws noise from is
  re-seeded from the ``dp`` stream keyed by t before each step. A checkpoint therefore needs
  weights, optimizer moments, the step and the accountant's history, nothing else.
- **The noise multiplier** is calibrated for the steps actually run (dp_accounting.py), then
  ``make_private`` is called, as ``make_private_with_epsilon`` does.
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
- Opacus attaches its hooks without wrapping the model (``wrap_model=False``), so the model
  keeps its parameter names and checkpoints are the plain model's state dict.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.grad_sample import register_grad_sampler
from opacus.optimizers import DPOptimizer
from torch.utils.data import DataLoader
from transformers.pytorch_utils import Conv1D

from ..lm_data import Batch, collate, token_losses
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
from .param_subset import TRAINABLE, freeze_all_but

log = logging.getLogger(__name__)

GRAD_SAMPLE_MODES = ("hooks", "functorch")  # "ew" fails on GPT-2's Conv1D, "ghost" needs untied


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
    grad_sample_mode: str = "hooks"
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
                "use 'hooks' (fastest here)",
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


def per_sequence_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, float, int]:
    """Mean over sequences of each sequence's mean token loss (the per-sample objective), and
    the batch's summed token loss and predicted-token count (for token-mean reporting)."""
    # Opacus's per-sample hooks need every layer's (B, T, .) layout: no padding skipping.
    total, count = token_losses(model, batch, skip_padding=False)
    loss = (total / count.clamp(min=1)).mean()
    return loss, float(total.detach().sum()), int(count.sum())


def private_step(
    model: torch.nn.Module, optimizer: DPOptimizer, batch: Batch | None
) -> tuple[float, int]:
    """One DP-SGD step on ``batch`` (None: an empty Poisson batch); returns (summed token loss,
    predicted tokens). Clipping, noise, averaging and accounting happen in ``optimizer.step``."""
    optimizer.zero_grad(set_to_none=True)
    if batch is None:
        # Nothing to forward: zero per-sample gradients make Opacus take its empty-batch path
        # (clip nothing, add noise, step, count the step for the accountant).
        for p in optimizer.params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        optimizer.step()
        return 0.0, 0
    loss, total, count = per_sequence_loss(model, batch)
    with warnings.catch_warnings():
        # The token embedding's input (ids) needs no gradient; Opacus's hook still fires.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()
    optimizer.step()
    return total, count


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    n: int,
    cfg: DPConfig,
    noise: float,
    noise_generator: torch.Generator | None = None,
):
    """Attach Opacus to ``model`` (hooks, no wrapper) and wrap ``optimizer``.

    Returns (engine, hooks, dp_optimizer); call ``hooks.cleanup()`` when done. The DataLoader
    only tells Opacus N and the sample rate: batches come from ``poisson_rows``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # deliberate, above
        engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=False)
    indices = DataLoader(range(n), batch_size=cfg.batch_size)
    hooks, dp_optimizer, _ = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=indices,
        noise_multiplier=noise,
        max_grad_norm=cfg.max_grad_norm,
        poisson_sampling=False,  # we sample (Poisson, same q) ourselves: see module docstring
        noise_generator=noise_generator,
        grad_sample_mode=cfg.grad_sample_mode,
        wrap_model=False,
    )
    hooks.forbid_grad_accumulation()  # make_private does this only for its own Poisson loader
    return engine, hooks, dp_optimizer


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

    noise_generator = torch.Generator(device="cpu")
    engine, hooks, dp_optimizer = make_private(model, optimizer, n, cfg, noise, noise_generator)
    if accountant_state is not None:
        engine.accountant.load_state_dict(
            {
                "history": [tuple(entry) for entry in accountant_state["history"]],
                "mechanism": accountant_state["mechanism"],
            }
        )
    try:
        done = step  # steps taken so far (more than stop when resumed past it)
        bar = progress(range(step, stop), desc=cfg.key, total=max(0, stop - step))
        start = time.perf_counter()
        for step in bar:
            rows = poisson_rows(n, q, cfg.seed, step)
            batch = collate([sequences[i] for i in rows], pad_id) if rows else None
            noise_generator.manual_seed(derive_seed(cfg.seed, "dp", "noise", step))
            loss_sum, count = private_step(model, dp_optimizer, batch)
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
                    "accountant": dict(engine.accountant.state_dict()),
                }
                save_checkpoint(checkpoint_dir, model, optimizer, meta)
            if on_step is not None:
                on_step(done)
        history["seconds"] += time.perf_counter() - start
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        hooks.cleanup()  # the caller gets a plain model back, also after an error
        model.requires_grad_(True)
    model.eval()
    # Without noise nothing is guaranteed (epsilon = infinity): recorded as null. With other
    # runs accounted (a sweep), the guarantee covers them all: this run's steps and theirs.
    epsilon_run = engine.accountant.get_epsilon(delta=delta) if noise > 0 else None
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
        "expected_batch_size": dp_optimizer.expected_batch_size,  # Opacus: int(N * q)
        "max_grad_norm": cfg.max_grad_norm,
        "accountant": cfg.accountant,
        "steps": total_steps,
        "steps_done": done,
        "trainable": cfg.trainable,
        "trained_parameters": trained_coordinates,
        **history,
        "tokens_per_second": history["tokens"] / max(history["seconds"], 1e-9),
    }


@register_grad_sampler(Conv1D)
def conv1d_grad_sample(
    layer: Conv1D, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients of transformers' ``Conv1D`` (GPT-2's linear layers, weight stored
    (in, out)): one batched matmul instead of Opacus's per-layer functorch fallback."""
    inputs = activations[0].to(backprops.dtype)
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.einsum("n...i,n...j->nij", inputs, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = torch.einsum("n...k->nk", backprops)
    return grads
