"""Fisher Forgetting: a noisy Newton step (Golatkar et al. 2020, as the paper adapts it).

    theta' = theta + [gamma (|D-| / |D+|) F^{-1} grad L(D-; theta)]
                   + (mu sigma^2)^{1/4} diag(F^{-1})^{1/4} * n

n ~ N(0, I) from the seeded ``unlearn`` stream. The noise is largest where the retained data
constrain the weights least (large diag(F^{-1})) and hides what the Newton step cannot remove;
Golatkar's F^{-1/4} is realised through the diagonal of F^{-1} (our choice: the full matrix
power is out of reach). ``newton: false`` keeps only the noise. With ``iterations`` T > 1 both
terms are applied T times (fresh forget gradients, fresh noise) with the starting Fisher.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights, check_fisher_layout


class FisherForgetting(UnlearningMethod):
    name = "fisher_forgetting"
    needs_fisher = True
    PARAMS: ClassVar[dict[str, Param]] = {
        "gamma": Param("float", 1.0, 0, exclusive=True, help="1 = the Newton step"),
        "newton": Param("bool", True),
        "mu": Param("float", 1e-6, 0, help="noise scale factor (0 = no noise)"),
        "sigma": Param("float", 1e-5, 0, help="noise standard deviation factor (0 = no noise)"),
        "iterations": Param("int", 1, 1, help="noisy Newton steps"),
    }

    STRENGTH = ("gamma",)

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        fisher = ctx.fisher_at(model)
        check_fisher_layout(fisher, model)
        noise_scale = (h["mu"] * h["sigma"] ** 2) ** 0.25
        # diag(F^{-1}) > 0 in exact arithmetic; clamp rounding noise before the root.
        std = noise_scale * fisher.diag_inverse().clamp(min=0).pow(0.25).float()
        newton_norms, noise_norms = [], []
        for t in range(1, h["iterations"] + 1):
            delta = torch.zeros(fisher.d, dtype=torch.float32, device=std.device)
            extra: dict[str, Any] = {}
            if h["newton"]:
                grad, _ = ctx.forget_gradient(model)
                newton = h["gamma"] * ctx.newton_scale * fisher.ihvp(grad)
                newton_norms.append(float(newton.norm()))
                delta += newton
                extra["grad_norm"] = float(grad.norm())
            noise = torch.randn(fisher.d, generator=ctx.generator(self.name, "noise", t))
            noise = std * noise.to(std.device)
            noise_norms.append(float(noise.norm()))
            delta += noise
            add_to_weights(model, delta)
            ctx.record(t, step_norm=float(delta.norm()), noise_norm=noise_norms[-1], **extra)
        return {
            "steps": h["iterations"],
            "newton_norms": newton_norms,
            "noise_norms": noise_norms,
            "noise_std_mean": float(std.double().mean()),
            "noise_std_max": float(std.max()),
        }
