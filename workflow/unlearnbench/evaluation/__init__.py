"""Scoring any model the same way (every model of the study goes through ``score_model``).

- ``config``: ``EvalConfig`` (``evaluate.*`` of the config).
- ``language``: perplexity, and the per-token KL divergence to the retrained model.
- ``canary_scores``: exposure (exact, extrapolated) and greedy extraction of every canary, by
  role (removed, tuning, control, phantom).
- ``membership``: membership-inference attacks (loss, zlib, Min-K%, Min-K%++, reference) and
  their AUC, members = removed canaries, non-members = phantoms.
- ``distance``: forget quality (KS test against the retrained model) and over-unlearning.
- ``model_scores``: ``ScoringData`` (a replicate's inputs, loaded once per job),
  ``score_model`` and ``record_metrics``.
"""

from .config import EvalConfig
from .model_scores import ScoringData, load_scoring_data, record_metrics, score_model

__all__ = ["EvalConfig", "ScoringData", "load_scoring_data", "record_metrics", "score_model"]
