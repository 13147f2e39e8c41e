"""What unlearning does step by step: the data behind the "exposure vs unlearning step" figure.

At step 0 and after every iteration (or evaluation step) of a method, ``Trajectory.measure``
records, at the current weights:
- the forget loss L(D-) (mean LM loss over the rows being unlearned);
- the retain loss on a fixed seeded sample of D+ (the same rows at every step and for every
  method of a replicate);
- the extrapolated exposure (skew-normal fit, Carlini et al. 2019 Sec. 4.3) of every canary, with
  the SAME candidate sample at every step: each canary's candidates are drawn (and tokenized)
  once from a generator seeded by (seed, "eval", "exposure", canary_id), as in
  ``evaluation.canary_metrics``, so a change of exposure along the trajectory is a change of
  the model, not of the sample;
- means per canary role: ``removed`` (in this request), ``control`` (never requested), and, in
  unlearning cycles, ``earlier`` (removed by a previous request) and ``pending`` (a later one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..exposure.canary import Canary
from ..exposure.extrapolated import SampledCandidates, extrapolate, sample_candidates
from ..seeding import derive_seed, numpy_rng
from .objectives import mean_lm_loss

ROLES = ("removed", "control", "earlier", "pending")
TRAJECTORY_KEYS = {"samples": 10, "retain_sample": 1, "batch_size": 1}  # key -> minimum


@dataclass(frozen=True)
class TrajectoryConfig:
    """``unlearn.trajectory.*``: candidates per canary for the exposure fit, D+ rows in the
    retain-loss sample, sequences per forward pass."""

    samples: int = 256
    retain_sample: int = 64
    batch_size: int = 64

    def __post_init__(self) -> None:
        for key, minimum in TRAJECTORY_KEYS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"unlearn.trajectory.{key}: must be an integer >= {minimum}, got {value!r}"
                )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrajectoryConfig:
        unknown = sorted(set(values) - set(TRAJECTORY_KEYS))
        if unknown:
            raise ValueError(
                f"unlearn.trajectory.{unknown[0]}: unknown key; known keys: "
                f"{', '.join(TRAJECTORY_KEYS)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class CanaryProbe:
    """A canary as the trajectory scores it: ``exposure.encode_canary`` after the separator of
    ``lm_data.sequence_prefix_ids`` (any tokenizer)."""

    canary_id: int
    group: int
    repetitions: int
    canary: Canary
    role: str = "control"

    @property
    def secret(self) -> str:
        return self.canary.secret


def canary_role(group: int, removed: Iterable[int], earlier: Iterable[int] = ()) -> str:
    """Role of a canary of unlearning group ``group`` (0 = control) in a request."""
    if group == 0:
        return "control"
    if group in set(removed):
        return "removed"
    return "earlier" if group in set(earlier) else "pending"


def retain_sample_rows(n_retained: int, size: int, seed: int) -> list[int]:
    """Positions of the fixed D+ sample (seeded; identical for every method of a replicate)."""
    size = min(size, n_retained)
    rng = numpy_rng(seed, "unlearn", "trajectory", "retain_sample")
    return sorted(rng.choice(n_retained, size=size, replace=False).tolist())


class Trajectory:
    def __init__(
        self,
        forget: Sequence[Sequence[int]],
        retain_sample: Sequence[Sequence[int]],
        canaries: Sequence[CanaryProbe],
        pad_id: int,
        cfg: TrajectoryConfig,
        seed: int,
        tokenizer: Any = None,
    ) -> None:
        """``tokenizer``: needed only for canaries whose digits it merges (their samples are
        tokenized once, here)."""
        self.forget, self.retain_sample, self.canaries = forget, retain_sample, list(canaries)
        self.pad_id, self.cfg, self.seed, self.tokenizer = pad_id, cfg, seed, tokenizer
        self.points: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._samples: dict[int, SampledCandidates] = {}

    def _candidates(self, canary: CanaryProbe) -> SampledCandidates:
        """The canary's secret and samples, drawn (and tokenized) once: the same at every step."""
        if canary.canary_id not in self._samples:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, "eval", "exposure", canary.canary_id)
            )
            self._samples[canary.canary_id] = sample_candidates(
                self.tokenizer, canary.canary, self.cfg.samples, generator
            )
        return self._samples[canary.canary_id]

    def _exposure(self, model: torch.nn.Module, canary: CanaryProbe) -> dict[str, Any]:
        fit = extrapolate(model, self._candidates(canary))
        return {
            "canary_id": canary.canary_id,
            "group": canary.group,
            "repetitions": canary.repetitions,
            "role": canary.role,
            "exposure": _finite(fit["exposure"]),
            "exposure_unclipped": _finite(fit["exposure_unclipped"]),
            "secret_log_perplexity": _finite(fit["secret_log_perplexity"]),
        }

    def measure(self, model: torch.nn.Module, step: int, **extra: Any) -> dict[str, Any]:
        """Record and return the point at ``step`` (``extra``: method-specific numbers)."""
        start = time.perf_counter()
        bs = self.cfg.batch_size
        point: dict[str, Any] = {
            "step": int(step),
            "forget_loss": _finite(mean_lm_loss(model, self.forget, self.pad_id, bs, "D-")),
            "retain_loss": _finite(
                mean_lm_loss(model, self.retain_sample, self.pad_id, bs, "D+ sample")
            ),
        }
        records = [self._exposure(model, canary) for canary in self.canaries]
        point["canaries"] = records
        for role in ROLES:
            values = [
                r["exposure"] for r in records if r["role"] == role and r["exposure"] is not None
            ]
            point[f"exposure_{role}_mean"] = float(np.mean(values)) if values else None
        point.update({k: _finite(v) if isinstance(v, float) else v for k, v in extra.items()})
        self.points.append(point)
        self.seconds += time.perf_counter() - start
        return point


def _finite(value: float) -> float | None:
    """JSON has no Inf/NaN (write_json refuses them): a diverged loss becomes null."""
    return value if math.isfinite(value) else None
