"""Unlearning methods (one module each), their registry, trajectory and stage functions."""

from .base import Param, UnlearnContext, UnlearningMethod
from .registry import default_hyper, make_method, method_names, needs_fisher
from .stage import unlearn_cycles_stage, unlearn_stage

__all__ = [
    "Param",
    "UnlearnContext",
    "UnlearningMethod",
    "default_hyper",
    "make_method",
    "method_names",
    "needs_fisher",
    "unlearn_cycles_stage",
    "unlearn_stage",
]
