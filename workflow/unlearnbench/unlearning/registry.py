"""Unlearning methods by name: adding a method = one module, one line here, one config block.

The config schema's method enum must equal ``method_names()`` (a test keeps them in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import KEY, UnlearningMethod
from .finetune_retain import FinetuneRetain
from .fisher_forgetting import FisherForgetting
from .fisher_removal import FisherRemoval
from .fisher_removal_identity import FisherRemovalIdentity
from .grad_diff import GradDiff
from .gradient_ascent import GradientAscent
from .npo import NPO

METHODS: dict[str, type[UnlearningMethod]] = {
    cls.name: cls
    for cls in (
        FinetuneRetain,
        FisherForgetting,
        FisherRemoval,
        FisherRemovalIdentity,
        GradDiff,
        GradientAscent,
        NPO,
    )
}


def method_names() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[UnlearningMethod]:
    if name not in METHODS:
        raise ValueError(
            f"{KEY}: unknown method {name!r}; known methods: {', '.join(method_names())}"
        )
    return METHODS[name]


def make_method(name: str, hyper: Mapping[str, Any] | None = None) -> UnlearningMethod:
    """An instance of method ``name`` with checked hyperparameters (defaults filled in)."""
    return method_class(name)(hyper)


def needs_fisher(name: str) -> bool:
    return method_class(name).needs_fisher


def default_hyper(name: str) -> dict[str, Any]:
    return {key: spec.default for key, spec in method_class(name).PARAMS.items()}
