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
from ..training.loop import TrainConfig, train
from .base import KEY, Param, UnlearnContext, UnlearningMethod


class FinetuneRetain(UnlearningMethod):
    name = "finetune_retain"
    PARAMS: ClassVar[dict[str, Param]] = {
        "epochs": Param("int", 1, 1, help="passes over D+"),
        "batch_size": Param("int", 32, 1, help="retained rows per step"),
        "lr": Param("float", 1e-3, 0, exclusive=True, maximum=1, help="the peak learning rate"),
    }

    STRENGTH = ("epochs",)
    PROGRESSIVE = "epochs"

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        cfg = TrainConfig(
            epochs=h["epochs"],
            batch_size=h["batch_size"],
            lr=h["lr"],
            # A short continuation at a constant-then-decaying rate: no warm-up, no decay of
            # the weights (the method's own choices, not config knobs).
            warmup_steps=0,
            weight_decay=0.0,
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
