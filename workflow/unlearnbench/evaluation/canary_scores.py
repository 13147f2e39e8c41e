"""Canaries under a model: exposure (exact and/or extrapolated), greedy extraction, per role.

Every record keeps the canary's ``role`` (removed, tuning, control, phantom: see
``unlearnbench.canaries``), so that summaries, operating-point selection (tuning canaries
only) and verdicts (removed canaries only) each read exactly the canaries they may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import exposure
from ..canaries import ROLES
from ..lm_data import sequence_prefix_ids
from ..logs import progress
from ..seeding import derive_seed
from .config import EvalConfig

SCORES = ("exposure_exact", "exposure_extrapolated", "secret_log_perplexity")


@dataclass(frozen=True)
class Probe:
    """One canary ready to be scored: its table row and tokens, computed once per job."""

    canary_id: int
    group: int
    role: str
    in_forget_set: bool
    repetitions: int
    canary: exposure.Canary  # the secret after <|endoftext|> + prefix, as in training

    @property
    def secret(self) -> str:
        return self.canary.secret


def make_probes(tokenizer: Any, canaries: pd.DataFrame) -> list[Probe]:
    separator = sequence_prefix_ids(tokenizer, "")  # what lm_data puts before every text
    return [
        Probe(
            canary_id=int(row.canary_id),
            group=int(row.group),
            role=str(row.role),
            in_forget_set=bool(row.in_forget_set),
            repetitions=int(row.repetitions),
            canary=exposure.encode_canary(tokenizer, row.prefix, str(row.secret), separator),
        )
        for row in canaries.itertuples()
    ]


def canary_metrics(
    model: torch.nn.Module,
    tokenizer: Any,
    probes: Sequence[Probe],
    cfg: EvalConfig,
    tries: exposure.TrieCache | None = None,
) -> list[dict]:
    """Exposure (exact rank and/or skew-normal estimate) and greedy extraction per canary, for
    any tokenizer (``exposure.encode_canary``); ``tries``: the job's tries, reused by every model
    it scores (a tokenizer that merges digits ranks in them)."""
    tries = exposure.TrieCache() if tries is None else tries
    records = []
    for probe in progress(probes, desc="exposure", total=len(probes)):
        canary = probe.canary
        record: dict[str, Any] = {
            "canary_id": probe.canary_id,
            "group": probe.group,
            "role": probe.role,
            "in_forget_set": probe.in_forget_set,
            "repetitions": probe.repetitions,
            "space_size": canary.space_size,
            "estimator": cfg.estimator,
        }
        if cfg.estimator in ("exact", "both"):
            rank = exposure.rank_canary(model, tokenizer, canary, cfg.max_exact_space, tries=tries)
            record.update(
                rank=rank.rank,
                exposure_exact=rank.exposure,
                secret_log_perplexity=rank.secret_log_perplexity,
                candidates_scored=rank.candidates_scored,
            )
        if cfg.estimator in ("extrapolated", "both"):
            generator = torch.Generator().manual_seed(
                derive_seed(cfg.seed, "eval", "exposure", probe.canary_id)
            )
            samples = exposure.sample_candidates(
                tokenizer, canary, cfg.extrapolation_samples, generator
            )
            fit = exposure.extrapolate(model, samples)
            record.update(exposure_extrapolated=fit["exposure"], skewnorm=fit["skewnorm"])
            record.setdefault("secret_log_perplexity", fit["secret_log_perplexity"])
        extraction = exposure.extract_canary(model, tokenizer, canary)
        record["extracted"] = bool(extraction.matches)
        records.append(record)
    return records


def summarise(records: list[dict]) -> dict[str, Any]:
    """Means and maxima per canary role and estimator, and extraction rates.

    ``forget`` (every canary of the forget set: removed and tuning) and ``control`` keep the
    summary the earlier tables read.
    """
    parts = {role: [r for r in records if r["role"] == role] for role in ROLES}
    parts["forget"] = [r for r in records if r["in_forget_set"]]
    out: dict[str, Any] = {}
    for part, chosen in parts.items():
        out[f"{part}_canaries"] = len(chosen)
        out[f"extraction_rate_{part}"] = (
            float(np.mean([r["extracted"] for r in chosen])) if chosen else None
        )
        for key in SCORES:
            values = [r[key] for r in chosen if r.get(key) is not None]
            out[f"{key}_{part}_mean"] = float(np.mean(values)) if values else None
            out[f"{key}_{part}_max"] = float(np.max(values)) if values else None
    return out


def exposures_of(records: Sequence[dict], role: str) -> list[float]:
    """The main exposure (exact where computed) of every canary of ``role``, by canary id."""
    chosen = sorted((r for r in records if r["role"] == role), key=lambda r: r["canary_id"])
    return [main_exposure(r) for r in chosen]


def main_exposure(record: dict) -> float:
    value = record.get("exposure_exact")
    return float(record["exposure_extrapolated"] if value is None else value)
