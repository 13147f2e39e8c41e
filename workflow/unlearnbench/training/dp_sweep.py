"""DP-SGD's learning rate chosen on the validation split, inside the privacy budget.

The rate that suits DP-SGD depends on the noise, so one fixed rate for every epsilon favours
some epsilons over others. A short sweep per epsilon picks it instead:

1. every candidate rate trains the first ``fraction`` of the full run (the full run's steps,
   schedule and noise: a prefix of the run it would be), and is scored on the validation split;
2. the candidate with the lowest validation loss continues from its checkpoint to the end.

The final model is therefore bitwise the full run at the chosen rate, and the sweep costs
``(k - 1) * fraction`` extra runs for k rates instead of k - 1.

**Privacy.** Every candidate trains on the private data, so choosing among them is not free
(Papernot & Steinke 2022). Here the noise is calibrated for all the steps the sweep takes
(``DPConfig.extra_accounted_steps``: the k - 1 losing prefixes plus the whole final run, at the
same noise and sampling rate), so by composition the whole procedure, candidates included, is
(epsilon, delta)-DP; picking one by its loss on the validation split (no training example) is
post-processing. The manifest reports the epsilon of the whole procedure and of the final run.

**Resumption.** Candidates keep their checkpoints at the prefix's end and the validation losses
are written to ``sweep.json`` as soon as they are known, so a killed job re-chooses nothing:
it reloads the losses and continues the winner.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..dp_budget import prefix_steps, steps_per_epoch, sweep_extra_steps
from ..evaluation.language import perplexity
from .dp import DPConfig, train_dp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPSweep:
    """The rates a DP-SGD job chooses from (``train_dp.lr``) and each one's share of the run."""

    lrs: tuple[float, ...]
    fraction: float = 0.25

    def __post_init__(self) -> None:
        if not self.lrs:
            raise ValueError("train_dp.lr: give at least one learning rate")
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"train_dp.lr: the rates must differ, got {list(self.lrs)}")
        for lr in self.lrs:
            if not 0 < lr <= 1:
                raise ValueError(f"train_dp.lr: must be in (0, 1], got {lr}")
        if not 0 < self.fraction <= 1:
            raise ValueError(
                f"train_dp.sweep_fraction: must be in (0, 1], got {self.fraction}; "
                "give the share of the run each candidate rate trains, e.g. 0.25"
            )


def dp_settings(
    block: Mapping[str, Any], target_epsilon: float | None, seed: int
) -> tuple[DPConfig, DPSweep]:
    """The ``train_dp`` block (minus the job-choosing keys) as a recipe and its rate sweep."""
    settings = dict(block)
    lr = settings.pop("lr")
    sweep = DPSweep(
        (lr,) if isinstance(lr, int | float) else tuple(lr),
        settings.pop("sweep_fraction", DPSweep.fraction),
    )
    recipe = DPConfig(**settings, lr=sweep.lrs[0], target_epsilon=target_epsilon, seed=seed)
    return recipe, sweep


def rate_label(lr: float) -> str:
    return f"lr~{lr:g}"


def _losses(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.exists() else {}


def sweep_dp(
    fresh_model: Callable[[], torch.nn.Module],
    sequences: Sequence[Sequence[int]],
    validation: Sequence[Sequence[int]],
    cfg: DPConfig,
    sweep: DPSweep,
    pad_id: int,
    checkpoint_dir: str | Path,
    eval_batch_size: int = 64,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The DP-SGD model at the rate of ``sweep.lrs`` with the lowest validation loss, and its
    record. ``fresh_model()`` returns a new copy of the starting model each call. One rate: a
    plain DP-SGD run (no sweep, nothing extra accounted). ``cfg.lr`` is ignored.
    """
    lrs = sweep.lrs
    if not validation and len(lrs) > 1:
        raise ValueError("train_dp.lr: a rate sweep needs a non-empty validation split")
    checkpoint_dir = Path(checkpoint_dir)
    if len(lrs) == 1:
        model = fresh_model()
        result = train_dp(model, sequences, replace(cfg, lr=lrs[0]), pad_id, checkpoint_dir)
        return model, {**result, "lr": lrs[0], "sweep": []}

    total = steps_per_epoch(len(sequences), cfg.batch_size) * cfg.epochs
    prefix = prefix_steps(total, sweep.fraction)
    swept = replace(cfg, extra_accounted_steps=sweep_extra_steps(total, len(lrs), sweep.fraction))
    record_path = checkpoint_dir / "sweep.json"
    losses = _losses(record_path)
    for lr in lrs:
        label = rate_label(lr)
        if label in losses:
            continue  # scored before a restart; its checkpoint may have moved on since
        model = fresh_model()
        train_dp(
            model, sequences, replace(swept, lr=lr), pad_id, checkpoint_dir / label, until=prefix
        )
        scored = perplexity(model, validation, pad_id, eval_batch_size, f"validation {label}")
        losses[label] = scored["loss"]
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(losses, indent=1))
        log.info(
            "DP rate %g: validation loss %.4f after %d of %d steps",
            lr,
            losses[label],
            prefix,
            total,
        )
    best = min(lrs, key=lambda lr: (losses[rate_label(lr)], lr))  # ties: the smaller rate
    model = fresh_model()
    result = train_dp(
        model, sequences, replace(swept, lr=best), pad_id, checkpoint_dir / rate_label(best)
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the losers' prefixes and the record
    sweep = [
        {"lr": lr, "validation_loss": losses[rate_label(lr)], "chosen": lr == best} for lr in lrs
    ]
    return model, {**result, "lr": best, "sweep": sweep, "sweep_prefix_steps": prefix}
