"""Scoring any model the same way: perplexity, canary exposure and greedy extraction.

Every model of the study (original, retrained, DP-SGD, each unlearning method and cycle) goes
through ``evaluate_model``, so numbers are comparable by construction. Canary contexts follow
``lm_data``: the secret is scored after ``<|endoftext|> + prefix``, the context it was trained in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import exposure
from .canaries import read_canaries
from .lm_data import collate, encode_texts, sequence_prefix_ids, token_losses
from .logs import progress
from .models import fingerprint, load_model
from .replicate import ReplicateFiles
from .seeding import derive_seed, numpy_rng
from .stage import Frame, record_stage
from .texts import read_index_set, read_texts
from .tokenizer import load_tokenizer

ESTIMATORS = ("exact", "extrapolated", "both")
EVAL_MINIMUMS = {
    "batch_size": 1,
    "retain_sample": 1,
    "max_exact_space": 10,
    "extrapolation_samples": 100,
}
EXPOSURE_KEYS = ("max_exact_space", "extrapolation_samples")  # under evaluate.exposure


@dataclass(frozen=True)
class EvalConfig:
    """``evaluate.*`` of the config."""

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
        # The schema's bounds (workflow/schemas/config.schema.yaml), for callers outside it.
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


@torch.inference_mode()
def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int, desc: str) -> dict:
    """Token-level perplexity exp(total loss / total predicted tokens) over ``texts``."""
    if not texts:
        return {"perplexity": None, "loss": None, "tokens": 0, "examples": 0}
    sequences = encode_texts(tokenizer, texts, model.config.n_positions)
    # Sorting by length keeps padding (wasted compute) low; the sum does not depend on order.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    total, count = 0.0, 0
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc=f"perplexity {desc}", total=len(starts)):
        rows = [sequences[i] for i in order[start : start + batch_size]]
        loss, tokens = token_losses(model, collate(rows, tokenizer.eos_token_id))
        total += float(loss.double().sum())
        count += int(tokens.sum())
    mean = total / max(count, 1)
    return {"perplexity": math.exp(mean), "loss": mean, "tokens": count, "examples": len(texts)}


def canary_metrics(model, tokenizer, canaries: pd.DataFrame, cfg: EvalConfig) -> list[dict]:
    """Exposure (exact rank and/or skew-normal estimate) and greedy extraction per canary."""
    records = []
    for row in progress(canaries.itertuples(), desc="exposure", total=len(canaries)):
        prefix_ids = sequence_prefix_ids(tokenizer, row.prefix)
        _, digit_ids = exposure.canary_token_ids(tokenizer, row.prefix, row.secret)
        k = len(row.secret)
        record: dict[str, Any] = {
            "canary_id": int(row.canary_id),
            "group": int(row.group),
            "in_forget_set": bool(row.in_forget_set),
            "repetitions": int(row.repetitions),
            "space_size": 10**k,
            "estimator": cfg.estimator,
        }
        if cfg.estimator in ("exact", "both"):
            exposure.check_exact_space(10**k, cfg.max_exact_space)
            rank = exposure.exact_rank(
                model, prefix_ids, row.secret, digit_ids, max_space=cfg.max_exact_space
            )
            record.update(
                rank=rank.rank,
                exposure_exact=rank.exposure,
                secret_log_perplexity=rank.secret_log_perplexity,
                candidates_scored=rank.candidates_scored,
            )
        if cfg.estimator in ("extrapolated", "both"):
            generator = torch.Generator().manual_seed(
                derive_seed(cfg.seed, "eval", "exposure", int(row.canary_id))
            )
            fit = exposure.extrapolated_exposure(
                model, prefix_ids, row.secret, digit_ids, cfg.extrapolation_samples, generator
            )
            record.update(exposure_extrapolated=fit["exposure"], skewnorm=fit["skewnorm"])
        extraction = exposure.greedy_extract(
            model, prefix_ids, k, digit_ids, secret=row.secret, tokenizer=tokenizer
        )
        record["extracted"] = bool(extraction.matches)
        records.append(record)
    return records


def summarise(records: list[dict]) -> dict[str, Any]:
    """Means and maxima over removed (forget) and control canaries, per estimator."""
    out: dict[str, Any] = {}
    for part, wanted in (("forget", True), ("control", False)):
        chosen = [r for r in records if r["in_forget_set"] == wanted]
        out[f"{part}_canaries"] = len(chosen)
        out[f"extraction_rate_{part}"] = (
            float(np.mean([r["extracted"] for r in chosen])) if chosen else None
        )
        for key in ("exposure_exact", "exposure_extrapolated"):
            values = [r[key] for r in chosen if r.get(key) is not None]
            out[f"{key}_{part}_mean"] = float(np.mean(values)) if values else None
            out[f"{key}_{part}_max"] = float(np.max(values)) if values else None
    return out


def evaluate_model(
    model_dir: str | Path, replicate: ReplicateFiles, cfg: EvalConfig, device: str = "cpu"
) -> dict[str, Any]:
    """Score the model in ``model_dir`` on ``replicate``'s data (on ``device``)."""
    replicate.require("test", "forget", "retain", "canaries")
    tokenizer = load_tokenizer(replicate.tokenizer_dir)
    model = load_model(model_dir, vocab_size=len(tokenizer)).to(device)
    train = read_texts([replicate.train])
    forget = read_index_set(replicate.forget)["indices"]
    retain = read_index_set(replicate.retain)["indices"]
    # A fixed, seeded sample of D+ (same rows for every model of a replicate).
    sample_size = min(cfg.retain_sample, len(retain))
    sample = sorted(
        numpy_rng(cfg.seed, "eval", "retain_sample")
        .choice(retain, size=sample_size, replace=False)
        .tolist()
    )
    ppl = {
        "test": perplexity(model, tokenizer, read_texts([replicate.test]), cfg.batch_size, "test"),
        "retain_sample": perplexity(
            model, tokenizer, [train[i] for i in sample], cfg.batch_size, "D+"
        ),
        "forget": perplexity(model, tokenizer, [train[i] for i in forget], cfg.batch_size, "D-"),
    }
    records = canary_metrics(model, tokenizer, read_canaries(replicate.canaries), cfg)
    return {
        "model": str(model_dir),
        "fingerprint": fingerprint(model),
        "perplexity": ppl,
        "canaries": records,
        "summary": summarise(records),
    }


def record_metrics(
    metrics_path: str | Path,
    model_dir: str | Path,
    replicate: ReplicateFiles,
    settings: Mapping[str, Any],
    frame: Frame,
) -> dict[str, Any]:
    """Score the model saved in ``model_dir`` and write its metrics file, with the provenance
    rule evaluate records (params ``{"evaluate": settings, "seed": replicate.seed}``).

    evaluate, evaluate_dp, unlearn and unlearn_cycles all write through this, so every metrics
    file has one shape whichever job wrote it.
    """
    cfg = EvalConfig.from_settings(settings, seed=replicate.seed)

    def score(frame: Frame) -> dict[str, Any]:
        metrics = evaluate_model(model_dir, replicate, cfg, frame.device)
        return {
            "dataset": replicate.dataset,
            "seed": replicate.seed,
            "model_name": Path(model_dir).name,
            **metrics,
        }

    frame.log.info("scoring %s", model_dir)
    params = {"evaluate": settings, "seed": replicate.seed}
    return record_stage(metrics_path, params, {"eval": replicate.seed}, score, frame)
