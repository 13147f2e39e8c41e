"""The inverse empirical Fisher of the retained data, in Woodbury form (never a d x d matrix).

- ``per_example_grads``: one flattened gradient per example, rows of an m x d matrix, and the
  flat parameter layout every second-order method shares.
- ``woodbury``: ``WoodburyFisher``: F^{-1} x and diag(F^{-1}) from G, full or block-diagonal.
- ``estimation``: ``estimate_fisher`` (a seeded sample of D+ at the current weights) and the
  ``estimate_fisher`` rule's stage.
- ``tensor_file``: reading a saved artifact bit for bit.
"""

from .estimation import FisherConfig, estimate_fisher, estimate_fisher_stage
from .per_example_grads import flat_dim, parameter_layout, per_example_gradients
from .woodbury import WoodburyFisher

__all__ = [
    "FisherConfig",
    "WoodburyFisher",
    "estimate_fisher",
    "estimate_fisher_stage",
    "flat_dim",
    "parameter_layout",
    "per_example_gradients",
]
