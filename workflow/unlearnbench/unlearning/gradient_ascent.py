"""Gradient ascent on the forget set (Jang et al. 2022; the paper's Algorithm 1).

    for each forget batch B-:  theta <- theta + lr grad L(B-; theta)

Plain steps (no optimizer state, no clipping), as in Algorithm 1. Batches cycle through D- in a
seeded order (a fresh permutation per pass). The trajectory is measured every ``eval_every``
steps and after the last; with ``exposure_threshold`` set, ascent stops at the first
measurement whose mean exposure of the removed canaries is <= the threshold (bits), as Jang et
al. stop once the target sequences are forgotten. Otherwise it runs ``max_steps`` steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights


class GradientAscent(UnlearningMethod):
    name = "gradient_ascent"
    PARAMS: ClassVar[dict[str, Param]] = {
        "lr": Param("float", 0.02, 0, exclusive=True, maximum=1, help="the ascent step size"),
        "batch_size": Param("int", 8, 1, help="forget rows per step"),
        "max_steps": Param("int", 5, 1, help="the most ascent steps"),
        "exposure_threshold": Param(
            "float", None, 0, nullable=True, help="null = always run max_steps"
        ),
        "eval_every": Param("int", 1, 1, help="steps between trajectory measurements"),
    }

    STRENGTH = ("lr", "max_steps")
    PROGRESSIVE = "max_steps"

    def _reached(self, point: dict[str, Any]) -> bool:
        threshold, mean = self.hyper["exposure_threshold"], point.get("exposure_removed_mean")
        return threshold is not None and mean is not None and mean <= threshold

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        if ctx.trajectory and self._reached(ctx.trajectory[-1]):
            return {"steps": 0, "stopped_early": True}
        n = len(ctx.forget)
        step, order, position, epoch = 0, [], 0, 0
        stopped = False
        while step < h["max_steps"]:
            if position >= len(order):
                gen = ctx.generator(self.name, "order", epoch)
                order, position, epoch = torch.randperm(n, generator=gen).tolist(), 0, epoch + 1
            rows = order[position : position + h["batch_size"]]
            position += h["batch_size"]
            grad, loss = ctx.forget_gradient(model, rows)
            add_to_weights(model, h["lr"] * grad)
            step += 1
            if step % h["eval_every"] == 0 or step == h["max_steps"]:
                point = ctx.record(step, batch_loss=loss, grad_norm=float(grad.norm()))
                if self._reached(point):
                    stopped = True
                    break
        return {"steps": step, "stopped_early": stopped}
