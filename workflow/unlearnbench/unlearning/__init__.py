"""Unlearning methods, one module each, behind one interface and a registry.

- ``base``: the interface (``UnlearningMethod``, its ``Param`` declarations, checked once) and
  what a method is handed (``UnlearnContext``: D-, D+, the Fisher, the trajectory recorder).
- ``registry``: methods by name (``make_method``); the config schema's names follow it.
- ``fisher_removal``, ``fisher_forgetting``, ``gradient_ascent``, ``finetune_retain``: the methods.
- ``objectives``: the LM loss and its flat gradient; ``trajectory``: metrics after every step;
  ``weight_delta``: how far each layer type moved.
- ``stage``: ``unlearn_stage``, one request on a replicate (the ``unlearn`` rules).
"""

from .base import Param, UnlearnContext, UnlearningMethod
from .registry import default_hyper, make_method, method_names, needs_fisher
from .stage import unlearn_request, unlearn_stage

__all__ = [
    "Param",
    "UnlearnContext",
    "UnlearningMethod",
    "default_hyper",
    "make_method",
    "method_names",
    "needs_fisher",
    "unlearn_request",
    "unlearn_stage",
]
