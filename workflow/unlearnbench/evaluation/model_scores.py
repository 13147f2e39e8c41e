"""Scoring any model the same way: perplexity, distance to the retrained model, canary
exposure and extraction, membership inference, over-unlearning.

Every model of the study (original, retrained, DP-SGD, every point of every unlearning
frontier, every cycle) goes through ``score_model`` with the replicate's ``ScoringData``,
loaded once per job, so numbers are comparable by construction. Canary contexts follow
``lm_data``: the secret is scored after ``<|endoftext|> + prefix``, the context it was trained
in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..canaries import read_canaries
from ..compute import place_model
from ..exposure import TrieCache
from ..lm_data import encode_texts
from ..models import context_length, fingerprint, load_model
from ..provenance import read_json
from ..replicate import ReplicateFiles
from ..seeding import numpy_rng
from ..stage import Frame, record_stage
from ..texts import read_index_set, read_texts
from ..tokenizer import load_tokenizer
from .canary_scores import Probe, canary_metrics, exposures_of, make_probes, summarise
from .config import MIN_K_FRACTION, EvalConfig
from .distance import forget_quality, over_unlearning
from .language import perplexity
from .membership import attack_aucs, sequence_statistics

log = logging.getLogger(__name__)

# Splits whose per-token KL to the retrained model is reported (utility "as the retrained").
KL_SPLITS = ("test", "retain_sample")


@dataclass
class ScoringData:
    """One replicate's scoring inputs, tokenised once per job."""

    tokenizer: Any
    probes: list[Probe]
    sequences: dict[str, list[list[int]]]  # test, validation, retain_sample, forget
    members: list[list[int]]  # removed canaries' texts (membership inference)
    nonmembers: list[list[int]]  # phantoms' texts: the same templates, never trained
    member_texts: list[str]
    nonmember_texts: list[str]
    reference: torch.nn.Module | None = None  # the retrained model (KL)
    reference_records: list[dict] | None = None  # its canary records (forget quality)
    base_stats: dict[str, list] | None = None  # the base model's token statistics (MIA)
    # The canaries' token tries (a tokenizer that merges digits): built once, for every model.
    tries: TrieCache = field(default_factory=TrieCache)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.eos_token_id


def _retain_sample(retain: list[int], cfg: EvalConfig) -> list[int]:
    """A fixed, seeded sample of D+ (the same rows for every model of a replicate)."""
    size = min(cfg.retain_sample, len(retain))
    rng = numpy_rng(cfg.seed, "eval", "retain_sample")
    return sorted(rng.choice(retain, size=size, replace=False).tolist())


def load_scoring_data(
    replicate: ReplicateFiles, cfg: EvalConfig, device: str = "cpu"
) -> ScoringData:
    """Texts, canaries and (where the bundle names them) the retrained model, its canary
    records and the base model's statistics, for scoring models of ``replicate``."""
    replicate.require("test", "validation", "forget", "retain", "canaries")
    tokenizer = load_tokenizer(replicate.tokenizer_dir)
    context = _context(replicate, tokenizer)
    train = read_texts([replicate.train])
    forget = read_index_set(replicate.forget)["indices"]
    retain = read_index_set(replicate.retain)["indices"]
    texts = {
        "test": read_texts([replicate.test]),
        "validation": read_texts([replicate.validation]),
        "retain_sample": [train[i] for i in _retain_sample(retain, cfg)],
        "forget": [train[i] for i in forget],
    }
    table = read_canaries(replicate.canaries)
    member_texts = table.loc[table["role"] == "removed", "text"].tolist()
    nonmember_texts = table.loc[table["role"] == "phantom", "text"].tolist()
    data = ScoringData(
        tokenizer=tokenizer,
        probes=make_probes(tokenizer, table),
        sequences={k: encode_texts(tokenizer, v, context) for k, v in texts.items()},
        members=encode_texts(tokenizer, member_texts, context),
        nonmembers=encode_texts(tokenizer, nonmember_texts, context),
        member_texts=member_texts,
        nonmember_texts=nonmember_texts,
    )
    if replicate.retrained is not None:
        data.reference = place_model(
            load_model(replicate.retrained, vocab_size=len(tokenizer)), device
        )
    if replicate.retrained_metrics is not None:
        data.reference_records = read_json(replicate.retrained_metrics)["canaries"]
    if replicate.base is not None and data.members and data.nonmembers:
        base = place_model(load_model(replicate.base, vocab_size=len(tokenizer)), device)
        data.base_stats = _membership_stats(base, data, cfg)
        del base
    return data


def _context(replicate: ReplicateFiles, tokenizer: Any) -> int:
    model_dir = replicate.retrained or replicate.original or replicate.base
    if model_dir is None:
        raise ValueError(f"{replicate.dataset}: no model to read the context length from")
    return context_length(read_json(Path(model_dir) / "config.json"))


def _membership_stats(model: torch.nn.Module, data: ScoringData, cfg: EvalConfig) -> dict:
    return {
        "members": sequence_statistics(model, data.members, data.pad_id, cfg.batch_size),
        "nonmembers": sequence_statistics(model, data.nonmembers, data.pad_id, cfg.batch_size),
    }


def score_model(model: torch.nn.Module, data: ScoringData, cfg: EvalConfig) -> dict[str, Any]:
    """Every metric of one model on one replicate's data (see the module docstring)."""
    model.eval()
    ppl = {
        split: perplexity(
            model,
            sequences,
            data.pad_id,
            cfg.batch_size,
            split,
            reference=data.reference if split in KL_SPLITS else None,
        )
        for split, sequences in data.sequences.items()
    }
    records = canary_metrics(model, data.tokenizer, data.probes, cfg, data.tries)
    out: dict[str, Any] = {
        "fingerprint": fingerprint(model),
        "perplexity": ppl,
        "canaries": records,
        "summary": summarise(records),
        "over_unlearning": over_unlearning(
            exposures_of(records, "removed"), exposures_of(records, "phantom")
        ),
        "forget_quality": forget_quality(
            exposures_of(records, "removed"),
            exposures_of(data.reference_records or [], "removed"),
        ),
        "membership": None,
    }
    if data.members and data.nonmembers:
        stats = _membership_stats(model, data, cfg)
        base = data.base_stats or {}
        out["membership"] = attack_aucs(
            stats["members"],
            stats["nonmembers"],
            data.member_texts,
            data.nonmember_texts,
            reference_member_stats=base.get("members"),
            reference_nonmember_stats=base.get("nonmembers"),
            k=MIN_K_FRACTION,
        )
    return out


def record_metrics(
    metrics_path: str | Path,
    model_dir: str | Path,
    replicate: ReplicateFiles,
    settings: Mapping[str, Any],
    frame: Frame,
    data: ScoringData | None = None,
) -> dict[str, Any]:
    """Score the model saved in ``model_dir`` and write its metrics file, with the provenance
    rule evaluate records (params ``{"evaluate": settings, "seed": replicate.seed}``).

    ``data``: the job's ScoringData when it scores several models (loaded here otherwise).
    evaluate, evaluate_dp and unlearn_cycles all write through this, so every metrics file has
    one shape whichever job wrote it.
    """
    cfg = EvalConfig.from_settings(settings, seed=replicate.seed)

    def score(frame: Frame) -> dict[str, Any]:
        scoring = data if data is not None else load_scoring_data(replicate, cfg, frame.device)
        tokenizer = scoring.tokenizer
        model = place_model(load_model(model_dir, vocab_size=len(tokenizer)), frame.device)
        return {
            "dataset": replicate.dataset,
            "seed": replicate.seed,
            "model_name": Path(model_dir).name,
            "model": str(model_dir),
            **score_model(model, scoring, cfg),
        }

    frame.log.info("scoring %s", model_dir)
    params = {"evaluate": settings, "seed": replicate.seed}
    return record_stage(metrics_path, params, {"eval": replicate.seed}, score, frame)
