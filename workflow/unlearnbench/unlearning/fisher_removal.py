"""Fisher Removal: a Newton step that undoes the forget set's influence (the paper's method).

    theta' = theta + gamma (|D-| / |D+|) F^{-1} grad L(D-; theta)

``gamma`` is a multiple of the Newton step (``UnlearnContext.newton_scale``): gamma = 1 is the
step that removes D- exactly for a quadratic objective whose retained Hessian is F.

At the optimum of the full objective the retained gradient balances the forget gradient, so a
Newton step on the retained objective from theta moves along F^{-1} grad L(D-): it ascends the
forget loss in the metric of the retained data, where directions D+ needs are stiff and move
little. F is the damped empirical Fisher of D+ (``fisher.estimation``), inverted with Woodbury.
With ``iterations`` T > 1 the step is repeated with fresh forget gradients at the current
weights; ``refresh_fisher`` re-estimates F at the current weights before each further step
(T - 1 extra estimates; otherwise the starting Fisher is reused).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights, check_fisher_layout


class FisherRemoval(UnlearningMethod):
    name = "fisher_removal"
    needs_fisher = True
    PARAMS: ClassVar[dict[str, Param]] = {
        "gamma": Param("float", 1.0, 0, exclusive=True, help="1 = the Newton step"),
        "iterations": Param("int", 1, 1, help="Newton steps, each with fresh forget gradients"),
        "refresh_fisher": Param("bool", False),
    }

    STRENGTH = ("gamma",)

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        gamma = self.hyper["gamma"] * ctx.newton_scale
        step_norms = []
        for t in range(1, self.hyper["iterations"] + 1):
            fisher = ctx.fisher_at(model, refresh=t > 1 and self.hyper["refresh_fisher"])
            check_fisher_layout(fisher, model)
            grad, _ = ctx.forget_gradient(model)
            delta = gamma * fisher.ihvp(grad)
            add_to_weights(model, delta)
            step_norms.append(float(delta.norm()))
            ctx.record(t, step_norm=step_norms[-1], grad_norm=float(grad.norm()))
        return {"steps": self.hyper["iterations"], "step_norms": step_norms}
