"""Training a causal LM: deterministic, resumable, and (``dp``) differentially private.

- ``loop``: ``TrainConfig`` and ``train`` (AdamW, warm-up then linear decay, clipping).
- ``checkpoint``: resume state outside the rules' outputs (Snakemake deletes a killed job's).
- ``stages``: the rules' stages: ``pretrain_base``, ``finetune_from``.
- ``dp``: DP-SGD with Opacus (Poisson sampling, per-sample clipping, calibrated noise), and
  ``dp_stage`` the rule's stage; ``dp_accounting`` the noise calibration, ``dp_routes`` how
  per-sample gradients are found (``dp_lean``, ``dp_folded``, ``dp_layers``: GPT-2's and
  OPT's layers under Opacus), ``dp_sweep`` the rate sweep. None is imported here: they load
  Opacus, which only the DP rule needs.
"""

from .loop import TrainConfig, train
from .stages import finetune_from, pretrain_base

__all__ = ["TrainConfig", "finetune_from", "pretrain_base", "train"]
