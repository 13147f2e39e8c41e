"""Fine-tuning on D+ only: the catastrophic-forgetting baseline.

Training simply continues on the retained rows (``training.train``: AdamW, linear decay, no
warm-up, gradient clipping at 1) in the hope that the forget set fades. The data order draws from
the ``unlearn`` stream, not the original fine-tuning's, and the trajectory is measured after
every epoch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..seeding import derive_seed
from ..training import TrainConfig, train
from .base import KEY, Param, UnlearnContext, UnlearningMethod


class FinetuneRetain(UnlearningMethod):
    name = "finetune_retain"
    PARAMS: ClassVar[dict[str, Param]] = {
        "epochs": Param("int", 1, 1, help="passes over D+"),
        "batch_size": Param("int", 32, 1, help="retained rows per step"),
        "lr": Param("float", 1e-3, 0, exclusive=True, help="the peak learning rate"),
    }

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        cfg = TrainConfig(
            epochs=h["epochs"],
            batch_size=h["batch_size"],
            lr=h["lr"],
            seed=derive_seed(ctx.seed, "unlearn", self.name, *ctx.keys),
            key=f"{KEY}.{self.name}",
        )
        steps_per_epoch = math.ceil(len(ctx.retain) / h["batch_size"])

        def after_step(done: int) -> None:
            if done % steps_per_epoch == 0:
                ctx.record(done, epoch=done // steps_per_epoch)

        history = train(model, ctx.retain, cfg, ctx.pad_id, on_step=after_step)
        model.eval()
        return {"steps": history["steps"], "epoch_loss": history["epoch_loss"]}
