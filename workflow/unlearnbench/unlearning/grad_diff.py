"""Gradient difference (GradDiff; Liu et al. 2022, the TOFU baseline): ascend the forget loss
and descend the retain loss in the same step.

    theta <- theta + lr (grad L(B-; theta) - alpha grad L(B+; theta))

B- cycles through D- and B+ through D+, each in a fresh seeded order every pass; plain steps as
gradient ascent takes them. The retain term is what keeps utility: alpha = 0 is gradient ascent.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights
from .objectives import BatchCycle, lm_loss_gradient


class GradDiff(UnlearningMethod):
    name = "grad_diff"
    PARAMS: ClassVar[dict[str, Param]] = {
        "lr": Param("float", 0.02, 0, exclusive=True, maximum=1, help="the step size"),
        "batch_size": Param("int", 8, 1, help="forget (and retain) rows per step"),
        "max_steps": Param("int", 5, 1, help="the number of steps"),
        "retain_weight": Param("float", 1.0, 0, help="alpha, the weight of the retain descent"),
        "eval_every": Param("int", 1, 1, help="steps between trajectory measurements"),
    }
    STRENGTH = ("lr", "max_steps")
    PROGRESSIVE = "max_steps"

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper

        def order(side: str):
            return lambda n: (
                lambda k: torch.randperm(n, generator=ctx.generator(self.name, side, k)).tolist()
            )

        forget = BatchCycle(len(ctx.forget), h["batch_size"], order("forget")(len(ctx.forget)))
        retain = BatchCycle(len(ctx.retain), h["batch_size"], order("retain")(len(ctx.retain)))
        for step in range(1, h["max_steps"] + 1):
            up, forget_loss = ctx.forget_gradient(model, forget.next())
            rows = retain.next()
            down, retain_loss = lm_loss_gradient(model, [ctx.retain[i] for i in rows], ctx.pad_id)
            delta = h["lr"] * (up - h["retain_weight"] * down)
            add_to_weights(model, delta)
            if step % h["eval_every"] == 0 or step == h["max_steps"]:
                ctx.record(step, batch_loss=forget_loss, retain_batch_loss=retain_loss)
        return {"steps": h["max_steps"]}
