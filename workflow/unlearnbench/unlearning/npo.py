"""Negative preference optimisation (NPO; Zhang et al. 2024): a bounded alternative to
gradient ascent that stops pushing a forget sequence once it is unlikely enough.

    L_NPO = -(2 / beta) E_{x in B-} log sigmoid(-beta log(p_theta(x) / p_ref(x)))

with p_ref the model before unlearning (its sequence log-probabilities are taken once, at the
start) and log p(x) the sequence's summed token log-probability. As beta -> 0 the gradient
becomes gradient ascent's; for beta > 0 it vanishes as p_theta(x) falls below p_ref(x), which
is what keeps NPO from collapsing the model. Plain steps theta <- theta - lr grad L_NPO, as
gradient ascent takes them, over forget batches in a seeded order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights
from .objectives import BatchCycle, flat_gradient, sequence_log_probs


class NPO(UnlearningMethod):
    name = "npo"
    PARAMS: ClassVar[dict[str, Param]] = {
        "lr": Param("float", 0.02, 0, exclusive=True, maximum=1, help="the step size"),
        "beta": Param("float", 0.1, 0, exclusive=True, help="the inverse temperature"),
        "batch_size": Param("int", 8, 1, help="forget rows per step"),
        "max_steps": Param("int", 5, 1, help="the number of steps"),
        "eval_every": Param("int", 1, 1, help="steps between trajectory measurements"),
    }
    STRENGTH = ("lr", "max_steps")
    PROGRESSIVE = "max_steps"

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        was_training = model.training
        model.eval()
        with torch.no_grad():  # the reference: the model before any step
            reference = torch.cat(
                [
                    sequence_log_probs(model, ctx.forget[lo : lo + 32], ctx.pad_id)
                    for lo in range(0, len(ctx.forget), 32)
                ]
            )
        n = len(ctx.forget)
        batches = BatchCycle(
            n,
            h["batch_size"],
            lambda k: torch.randperm(n, generator=ctx.generator(self.name, "order", k)).tolist(),
        )
        try:
            for step in range(1, h["max_steps"] + 1):
                rows = batches.next()
                with torch.enable_grad():
                    logp = sequence_log_probs(model, [ctx.forget[i] for i in rows], ctx.pad_id)
                    ratio = logp - reference[rows]
                    loss = -(2 / h["beta"]) * torch.nn.functional.logsigmoid(-h["beta"] * ratio)
                    loss = loss.mean()
                    grad = flat_gradient(model, loss)
                add_to_weights(model, -h["lr"] * grad)
                if step % h["eval_every"] == 0 or step == h["max_steps"]:
                    ctx.record(step, batch_loss=float(loss.detach()))
        finally:
            model.train(was_training)
        return {"steps": h["max_steps"]}
