"""``evaluate.*`` of the config, checked once (the schema states the same bounds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ESTIMATORS = ("exact", "extrapolated", "both")
EVAL_MINIMUMS = {
    "batch_size": 1,
    "retain_sample": 1,
    "max_exact_space": 10,
    "extrapolation_samples": 100,
}
EXPOSURE_KEYS = ("max_exact_space", "extrapolation_samples")  # under evaluate.exposure
# Min-K% and Min-K%++ keep this fraction of a sequence's least likely tokens (Shi et al. 2024
# and Zhang et al. 2024 report 20 % as a robust choice).
MIN_K_FRACTION = 0.2


@dataclass(frozen=True)
class EvalConfig:
    """How every model is scored: batch size, D+ sample, exposure estimator."""

    batch_size: int
    retain_sample: int
    estimator: str
    max_exact_space: int
    extrapolation_samples: int
    seed: int

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"evaluate.exposure.estimator: unknown {self.estimator!r}; use one of "
                f"{', '.join(ESTIMATORS)}"
            )
        for key, minimum in EVAL_MINIMUMS.items():
            if getattr(self, key) < minimum:
                where = "evaluate.exposure" if key in EXPOSURE_KEYS else "evaluate"
                raise ValueError(f"{where}.{key}: must be >= {minimum}, got {getattr(self, key)}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], seed: int) -> EvalConfig:
        """From the config's ``evaluate`` block (the rules' ``params.evaluate``)."""
        return cls(
            batch_size=settings["batch_size"],
            retain_sample=settings["retain_sample"],
            estimator=settings["exposure"]["estimator"],
            max_exact_space=settings["exposure"]["max_exact_space"],
            extrapolation_samples=settings["exposure"]["extrapolation_samples"],
            seed=seed,
        )
