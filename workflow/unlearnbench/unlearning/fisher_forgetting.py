"""Fisher Forgetting: a noisy Newton step (Golatkar et al. 2020, as the paper adapts it).

    theta' = theta + [gamma (|D-| / |D+|) F^{-1} grad L(D-; theta)]  + c * w * n
    w_i    = (diag(G^T G / m)_i + floor)^(-1/4),  scaled to ||w|| = 1
    c      = noise * || gamma (|D-| / |D+|) F^{-1} grad L(D-) ||

n ~ N(0, I) from the seeded ``unlearn`` stream, so E||c w n|| ~ noise x the Newton term's norm.
Golatkar's noise is F^{-1/4}-shaped: largest where the retained data constrain the weights least.
We take that shape from the undamped diagonal of the empirical Fisher of D+, not from
diag((lambda I + G^T G/m)^{-1}): with the default lambda the damping swamps the Fisher there,
the shape is flat to 0.3 % and the noise is isotropic (measured on the default; it made this
method Fisher Removal at a smaller gamma). ``noise_floor`` (a fraction of the diagonal's mean)
bounds the shape where D+ gives no curvature at all (e.g. unused embedding rows), which would
otherwise take all the noise. The noise is sized in units of the Newton term so that one grid
(``unlearn.frontier``) spans "negligible" to "dominant" on any model. ``newton: false`` keeps
only the noise (still sized by the Newton term it leaves out). With ``iterations`` T > 1 both
terms are applied T times (fresh forget gradients, fresh noise) with the starting Fisher.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Param, UnlearnContext, UnlearningMethod, add_to_weights, check_fisher_layout


def noise_shape(diagonal: torch.Tensor, floor: float) -> torch.Tensor:
    """Unit-norm per-coordinate noise weights (diag + floor * mean(diag))^(-1/4) (float64); a
    zero diagonal (no curvature anywhere) gives the isotropic shape."""
    diagonal = diagonal.double().clamp(min=0)
    mean = float(diagonal.mean())
    w = torch.ones_like(diagonal) if mean == 0.0 else (diagonal + floor * mean).pow(-0.25)
    return w / w.norm()


class FisherForgetting(UnlearningMethod):
    name = "fisher_forgetting"
    needs_fisher = True
    PARAMS: ClassVar[dict[str, Param]] = {
        "gamma": Param("float", 1.0, 0, exclusive=True, help="1 = the Newton step"),
        "newton": Param("bool", True),
        "noise": Param("float", 1.0, 0, help="noise norm / the Newton term's norm (0 = none)"),
        "noise_floor": Param(
            "float", 0.01, 0, exclusive=True, help="Fisher diagonal floor / its mean"
        ),
        "iterations": Param("int", 1, 1, help="noisy Newton steps"),
    }

    STRENGTH = ("gamma",)

    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        h = self.hyper
        fisher = ctx.fisher_at(model)
        check_fisher_layout(fisher, model)
        shape = noise_shape(fisher.diag_empirical(), h["noise_floor"]).float()
        newton_norms, noise_norms = [], []
        for t in range(1, h["iterations"] + 1):
            grad, _ = ctx.forget_gradient(model)
            newton = h["gamma"] * ctx.newton_scale * fisher.ihvp(grad)
            newton_norms.append(float(newton.norm()))
            delta = newton.clone() if h["newton"] else torch.zeros_like(newton)
            n = torch.randn(fisher.d, generator=ctx.generator(self.name, "noise", t))
            noise = (h["noise"] * newton_norms[-1]) * shape.to(newton.device) * n.to(newton.device)
            noise_norms.append(float(noise.norm()))
            delta += noise
            add_to_weights(model, delta)
            ctx.record(
                t,
                step_norm=float(delta.norm()),
                noise_norm=noise_norms[-1],
                grad_norm=float(grad.norm()),
            )
        return {
            "steps": h["iterations"],
            "newton_norms": newton_norms,
            "noise_norms": noise_norms,
            # How far from isotropic the noise is: max/min weight (1 = isotropic).
            "noise_shape_max_over_min": float(shape.max() / shape.min()),
        }
