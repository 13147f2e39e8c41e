"""Unlearning methods, one module each, behind one interface and a registry.

- ``base``: the interface (``UnlearningMethod``, its ``Param`` declarations, checked once) and
  what a method is handed (``UnlearnContext``: D-, D+, the Fisher, the trajectory recorder).
- ``registry``: methods by name (``make_method``); the config schema's names follow it.
- ``fisher_removal``, ``fisher_forgetting``, ``fisher_removal_identity`` (F = lambda I),
  ``gradient_ascent``, ``grad_diff``, ``npo``, ``finetune_retain``: the methods.
- ``frontier``: a method's grid, ordered by strength, and the blind operating-point rule;
  ``frontier_stage``: the whole grid run and scored on a replicate (rule ``sweep_frontier``).
- ``objectives``: the LM loss and its flat gradient; ``trajectory``: metrics after every step;
  ``weight_delta``: how far each layer type moved.
- ``stage``: ``unlearn_stage``, one request at one setting (the cycle, onion and real-world
  studies).
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
