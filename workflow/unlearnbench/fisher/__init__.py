"""The inverse empirical Fisher of the retained data, in Woodbury form (never a d x d matrix).

- ``per_example_grads``: one flattened gradient per example, rows of an m x d matrix, and the
  flat parameter layout every second-order method shares.
- ``woodbury``: ``WoodburyFisher``: F^{-1} x and diag(F^{-1}) from G, full or block-diagonal;
  the artifact format.
- ``estimation``: ``estimate_fisher`` (a seeded sample of D+ at the current weights, G on the
  device or in host RAM, float32 or bfloat16).
- ``matrix_free``: ``MatrixFreeFisher``, G never stored, its rows recomputed.
- ``sharded``: ``ShardedWoodburyFisher``, G's columns over the ranks of a process group.
- ``storage``: which of them a config and process group ask for (``fit_fisher``,
  ``load_fisher``) and the ``estimate_fisher`` rule's stage.
- ``launch``: a rule's adapter once per GPU under torchrun.
- ``memory``: the planner's peak-memory model of all of it (no torch).
- ``tensor_file``: reading a saved artifact bit for bit.
"""

from .estimation import FisherConfig, estimate_fisher
from .per_example_grads import flat_dim, parameter_layout, per_example_gradients
from .storage import estimate_fisher_stage, fit_fisher, load_fisher
from .woodbury import WoodburyFisher

__all__ = [
    "FisherConfig",
    "WoodburyFisher",
    "estimate_fisher",
    "estimate_fisher_stage",
    "fit_fisher",
    "flat_dim",
    "load_fisher",
    "parameter_layout",
    "per_example_gradients",
]
