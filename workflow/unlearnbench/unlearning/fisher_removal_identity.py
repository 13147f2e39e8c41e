"""Fisher Removal with F = lambda I: the same Newton-scaled step without any curvature.

    theta' = theta + gamma (|D-| / |D+|) grad L(D-; theta) / lambda

The ablation that isolates what the second-order information buys: lambda is the Fisher's own
damping (``fisher.damping``), so at every gamma this step and Fisher Removal's differ only in
F^{-1} versus (lambda I)^{-1}, which is what F^{-1} becomes away from the span of the retained
gradients. It is one full-batch gradient-ascent step at rate gamma |D-| / (|D+| lambda); no
Fisher is estimated.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights


class FisherRemovalIdentity(UnlearningMethod):
    name = "fisher_removal_identity"
    PARAMS: ClassVar[dict[str, Param]] = {
        "gamma": Param("float", 1.0, 0, exclusive=True, help="1 = the Newton step"),
    }
    STRENGTH = ("gamma",)

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        if ctx.fisher_cfg is None:
            raise ValueError(
                f"unlearn.methods.{self.name}: the step divides by the Fisher's damping lambda; "
                "pass the fisher settings (fisher.damping)"
            )
        grad, _ = ctx.forget_gradient(model)
        delta = (self.hyper["gamma"] * ctx.newton_scale / ctx.fisher_cfg.damping) * grad
        add_to_weights(model, delta)
        ctx.record(1, step_norm=float(delta.norm()), grad_norm=float(grad.norm()))
        return {"steps": 1, "step_norms": [float(delta.norm())]}
