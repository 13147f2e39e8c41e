"""The one interface every unlearning method implements, and what a method is handed.

A method is a class with a ``name``, a declaration of its hyperparameters (``PARAMS``: type,
default, bound) and ``run(model, ctx)``, which changes the model's weights in place and reports
what it did. ``ctx`` (``UnlearnContext``) carries the request: the forget sequences D-, the
retained sequences D+, the seed and the trajectory recorder, plus the Fisher machinery for
second-order methods. Hyperparameters are checked here, once, with errors that name the config
key (``unlearn.methods.<method>.<param>``) and the fix.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..fisher.estimation import FisherConfig
from ..fisher.per_example_grads import flat_dim, parameter_layout
from ..fisher.storage import Fisher, fit_fisher
from ..seeding import torch_generator
from .objectives import lm_loss_gradient, predicted_tokens

KEY = "unlearn.methods"


@dataclass(frozen=True)
class Param:
    """One hyperparameter: kind ("float", "int", "bool"), default, an optional lower bound
    (``minimum``, strict when ``exclusive``) and upper bound (``maximum``, inclusive).
    ``nullable``: null (None) is a valid value. The config schema's method blocks state the
    same (tests/unit/test_knobs.py holds them equal)."""

    kind: str
    default: Any
    minimum: float | None = None
    exclusive: bool = False
    nullable: bool = False
    help: str = ""
    maximum: float | None = None

    def bound(self) -> str:
        return f"{'>' if self.exclusive else '>='} {self.minimum:g}"


def check_hyper(method: str, params: Mapping[str, Param], hyper: Mapping[str, Any]) -> dict:
    """``hyper`` with defaults filled in; unknown keys, wrong types and values out of range are
    a ValueError naming ``unlearn.methods.<method>.<param>`` and the fix."""
    if not isinstance(hyper, Mapping):
        raise ValueError(f"{KEY}.{method}: hyperparameters must be a mapping, got {hyper!r}")
    for key in hyper:
        if key not in params:
            raise ValueError(
                f"{KEY}.{method}.{key}: unknown hyperparameter; {method} takes "
                f"{', '.join(params)} (remove it or fix its spelling)"
            )
    out = {}
    for key, spec in params.items():
        value = hyper.get(key, spec.default)
        where = f"{KEY}.{method}.{key}"
        if value is None:
            if not spec.nullable:
                raise ValueError(f"{where}: must be set (null is not allowed); {spec.help}")
            out[key] = None
            continue
        if spec.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: must be a number, got {value!r}")
        elif spec.kind == "int" and not float(value).is_integer():
            raise ValueError(f"{where}: must be an integer, got {value!r}")
        elif not math.isfinite(value):
            raise ValueError(f"{where}: must be finite, got {value!r}")
        if spec.kind == "int":
            value = int(value)
        elif spec.kind == "float":
            value = float(value)
        if spec.minimum is not None and spec.kind != "bool":
            too_small = value <= spec.minimum if spec.exclusive else value < spec.minimum
            if too_small:
                raise ValueError(
                    f"{where}: must be {spec.bound()}, got {value!r}; set a value "
                    f"{spec.bound()}{' (' + spec.help + ')' if spec.help else ''}"
                )
        if spec.maximum is not None and spec.kind != "bool" and value > spec.maximum:
            raise ValueError(
                f"{where}: must be <= {spec.maximum:g}, got {value!r}; set a value <= "
                f"{spec.maximum:g}{' (' + spec.help + ')' if spec.help else ''}"
            )
        out[key] = value
    return out


@dataclass
class UnlearnContext:
    """One unlearning request as a method sees it.

    ``keys`` distinguish requests of one run (e.g. ("cycle", 2)) in derived seeds.
    ``record(step, **extra)`` measures the trajectory at the current weights and returns the
    point (``trajectory.Trajectory.measure``); the caller has recorded step 0.
    ``fisher`` is the estimate at the starting weights (or None: ``fisher_at`` estimates it from
    D+ with ``fisher_cfg``).
    """

    forget: Sequence[Any]
    retain: Sequence[Sequence[int]]
    pad_id: int
    seed: int
    record: Callable[..., dict]
    keys: tuple = ()
    fisher_cfg: FisherConfig | None = None
    fisher: Fisher | None = None
    trajectory: list[dict] = field(default_factory=list)
    fisher_seconds: float = 0.0
    fisher_estimates: int = 0
    # (model, forget rows) -> (flat gradient, loss) of the objective being unlearned; None: the
    # mean LM loss (``objectives.lm_loss_gradient``). Tests plug in problems with known answers.
    objective: Callable[[torch.nn.Module, Sequence[Any]], tuple[torch.Tensor, float]] | None = None
    # |D-| / |D+| in the objective's units (None: predicted tokens, as the mean LM losses).
    forget_weight: float | None = None

    @property
    def newton_scale(self) -> float:
        """|D-| / |D+|: the factor of the Newton step that removes D- from the full objective.

        The original minimises (|D+| L(D+) + |D-| L(D-)) / |D|, so at its optimum
        grad L(D+) = -(|D-| / |D+|) grad L(D-), and one Newton step on L(D+) is
        theta + (|D-| / |D+|) H(D+)^{-1} grad L(D-). Second-order methods state their step
        size as a multiple of it: gamma = 1 is that Newton step.
        """
        if self.forget_weight is not None:
            return self.forget_weight
        forget, retain = predicted_tokens(self.forget), predicted_tokens(self.retain)
        if not retain:
            raise ValueError("unlearn: the retained set is empty, so D+ defines no Newton step")
        return forget / retain

    def forget_gradient(
        self, model: torch.nn.Module, rows: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, float]:
        """(grad L(D-), L(D-)) at the current weights, over ``rows`` of D- (None: all)."""
        chosen = self.forget if rows is None else [self.forget[i] for i in rows]
        if self.objective is not None:
            return self.objective(model, chosen)
        return lm_loss_gradient(model, chosen, self.pad_id)

    def generator(self, method: str, *keys: object) -> torch.Generator:
        return torch_generator(self.seed, "unlearn", method, *self.keys, *keys)

    def fisher_at(self, model: torch.nn.Module, refresh: bool = False) -> Fisher:
        """The Fisher to use at the current weights: the stored one, or a fresh estimate at
        the current weights when ``refresh`` or when none is stored (in ``fisher_cfg``'s
        storage, sharded when the job runs on several GPUs). (The stage checks that a given
        Fisher belongs to the starting weights.)"""
        if not refresh and self.fisher is not None:
            return self.fisher
        if self.fisher_cfg is None:
            raise ValueError(
                "fisher: no Fisher configuration given to re-estimate the Fisher at the "
                "current weights; pass fisher_cfg"
            )
        start = time.perf_counter()
        self.fisher = fit_fisher(model, self.retain, self.fisher_cfg, self.pad_id)
        self.fisher_seconds += time.perf_counter() - start
        self.fisher_estimates += 1
        return self.fisher


class UnlearningMethod(ABC):
    """Base class: ``make_method`` validates ``hyper`` into ``self.hyper`` (a plain dict)."""

    name: ClassVar[str]
    needs_fisher: ClassVar[bool] = False
    PARAMS: ClassVar[dict[str, Param]]
    # The knobs whose product orders a method's points by strength on its frontier, and the
    # one knob (if any) read off along a single run (steps, epochs) instead of a fresh run.
    STRENGTH: ClassVar[tuple[str, ...]] = ()
    PROGRESSIVE: ClassVar[str | None] = None

    def __init__(self, hyper: Mapping[str, Any] | None = None) -> None:
        self.hyper = check_hyper(self.name, self.PARAMS, hyper or {})

    @abstractmethod
    def run(self, model: torch.nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
        """Unlearn ``ctx.forget`` from ``model`` in place; return at least ``{"steps": int}``."""


# Flat-vector helpers shared by the methods (coordinates in ``parameter_layout`` order, tied
# tensors once: the same order as the Fisher's columns).


def check_fisher_layout(fisher: Fisher, model: torch.nn.Module) -> None:
    names = [s.name for s in parameter_layout(model)]
    if fisher.d != flat_dim(parameter_layout(model)) or (
        fisher.parameter_names is not None and list(fisher.parameter_names) != names
    ):
        raise ValueError(
            "fisher: the Fisher estimate covers other parameters than this model's "
            f"({fisher.d} coordinates); rerun estimate_fisher for this model"
        )


@torch.no_grad()
def add_to_weights(model: torch.nn.Module, delta: torch.Tensor) -> None:
    """theta += delta (flat, ``parameter_layout`` order)."""
    params = dict(model.named_parameters())
    for s in parameter_layout(model):
        p = params[s.name]
        p.add_(delta[s.start : s.stop].view(s.shape).to(device=p.device, dtype=p.dtype))
