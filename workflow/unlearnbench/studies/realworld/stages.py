"""The case study's two stages as functions of paths (rules find_secrets and unlearn_realworld).

``find_secrets_stage`` scores the ``max_strings`` most frequent e-mail addresses and phone
numbers of the training split under the original model AND under the base model it was
fine-tuned from (the reference, which never saw the corpus), and turns the ``forget_top`` most
memorised into an unlearning request: the forget/retain manifests have the format of canary
injection's, so the unlearning rules consume them unchanged. ``score_secrets_stage`` scores the
same strings under an unlearned model, reusing the reference's log-perplexities from
find_secrets' table (no base model needed). Every table holds masked ids only; the raw strings
never leave memory.

Columns (``COLUMNS``; the re-scoring adds ``removed`` and ``over_unlearned``):
    masked, kind, occurrences       the string (masked id), e-mail/phone, copies in the split
    memorisation                    bits over the reference (scoring.py): THE score
    heldout_baseline                95th percentile of the memorisation of held-out strings
                                    (validation/test, never trained) under the same model
    excess                          memorisation - heldout_baseline: what training on the
                                    string added beyond learning the corpus's style
    log_perplexity                  Px of the string under this model (nats)
    ref_log_perplexity              Px under the base model (nats), copied when re-scored
    extracted                       greedy decoding after the context reproduces the string
    exposure                        secondary: rank against ``samples`` random substitutes (bits)
    memorised                       the ORIGINAL model's excess >= memorised_above
    in_forget_set                   one of the strings the unlearning request names
    retained_occurrences            occurrences left in D+ (rows with a requested string go)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...artifacts import check, describe_files
from ...compute import place_model
from ...models import context_length, fingerprint, load_model
from ...provenance import atomic_path, write_json
from ...replicate import ReplicateFiles
from ...stage import record_stage
from ...texts import read_texts
from ...tokenizer import load_tokenizer
from .scoring import Probe, build_probe, memorisation_bits, reference_log_perplexities, score_probes
from .strings import Secret, sensitive_strings

log = logging.getLogger(__name__)

COLUMNS = [
    "masked",
    "kind",
    "occurrences",
    "memorisation",
    "heldout_baseline",
    "excess",
    "log_perplexity",
    "ref_log_perplexity",
    "extracted",
    "exposure",
    "memorised",
    "in_forget_set",
    "retained_occurrences",
]
# Decided once, under the original model, and carried into every unlearned model's table.
CARRIED = ["ref_log_perplexity", "memorised", "in_forget_set", "retained_occurrences"]


@dataclass(frozen=True)
class RealworldConfig:
    """``realworld.*`` of the config (see config/config.yaml for the reasons of each default)."""

    context_chars: int = 200
    samples: int = 50
    forget_top: int = 5
    batch_size: int = 64
    memorised_above: float = 4.0
    removed_below: float = 1.0
    over_unlearned_below: float = 1.0
    max_strings: int = 200
    seed: int = 0
    key: str = "realworld"

    def __post_init__(self) -> None:
        minimum = {
            "context_chars": 1,
            "samples": 10,
            "forget_top": 1,
            "batch_size": 1,
            "max_strings": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{self.key}.{name}: must be an integer >= {low}, got {value!r}")
        for name in ("memorised_above", "removed_below", "over_unlearned_below"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{self.key}.{name}: must be a number >= 0 (bits), got {value!r}")
        if self.removed_below > self.memorised_above:
            raise ValueError(
                f"{self.key}.removed_below: {self.removed_below} bits exceeds "
                f"{self.key}.memorised_above = {self.memorised_above} bits, so a string could "
                "count as memorised and removed at once; lower it"
            )
        if self.forget_top > self.max_strings:
            raise ValueError(
                f"{self.key}.forget_top: {self.forget_top} exceeds {self.key}.max_strings = "
                f"{self.max_strings}, the strings scored; lower it or raise max_strings"
            )


def _probes(
    secrets: list[Secret], texts, tokenizer, n_positions: int, cfg: RealworldConfig, limit: int
) -> tuple[list[Probe], int]:
    """Probes of the first ``limit`` strings (in the given order) that have a trained occurrence,
    and how many strings were skipped for having none."""
    probes, skipped = [], 0
    for secret in secrets:
        if len(probes) >= limit:
            break
        probe = build_probe(
            secret, texts, tokenizer, n_positions, cfg.context_chars, cfg.samples, cfg.seed, cfg.key
        )
        if probe is None:
            skipped += 1
        else:
            probes.append(probe)
    return probes, skipped


def _load(model_dir, tokenizer_dir, device: str):
    tokenizer = load_tokenizer(tokenizer_dir)
    return tokenizer, place_model(load_model(model_dir, vocab_size=len(tokenizer)), device)


def _score(
    model,
    tokenizer,
    texts: list[str],
    cfg: RealworldConfig,
    keep: set[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[list[Secret], list[Probe], pd.DataFrame, dict[str, Any]]:
    """Strings of ``texts``, their probes and this model's scores (one row a probe).

    Without ``keep``: the ``max_strings`` most frequent strings that were trained (occurrences
    descending, then masked id, so the choice is deterministic and reveals nothing), leaving
    out ``exclude``; with it, exactly those strings.
    """
    found = [s for s in sensitive_strings(texts) if s.masked not in exclude]
    if keep is None:
        order = sorted(found, key=lambda s: (-len(s.occurrences), s.masked))
        limit = cfg.max_strings
    else:
        order = [s for s in found if s.masked in keep]
        limit = len(order)
    context = context_length(model.config)
    probes, skipped = _probes(order, texts, tokenizer, context, cfg, limit)
    log.info(
        "%d strings in %d rows; %d scored (max_strings %d), %d skipped as beyond the window",
        len(found),
        len(texts),
        len(probes),
        cfg.max_strings,
        skipped,
    )
    scores = score_probes(model, probes, cfg.batch_size, tokenizer.eos_token_id)
    by_id = {s.masked: s for s in found}
    scored = [by_id[p.masked] for p in probes]
    table = pd.DataFrame(
        {
            "masked": [s.masked for s in scored],
            "kind": [s.kind for s in scored],
            "occurrences": [len(s.occurrences) for s in scored],
            "log_perplexity": [score.log_perplexity for score in scores],
            "extracted": [score.extracted for score in scores],
            "exposure": [score.exposure for score in scores],
        }
    )
    info = {
        "rows": len(texts),
        "strings": len(found),
        "emails": sum(s.kind == "email" for s in found),
        "phones": sum(s.kind == "phone" for s in found),
        "scored": len(probes),
        "scored_occurrences_min": min((len(s.occurrences) for s in scored), default=0),
        "beyond_trained_window": skipped,
        "retokenized_differently": sum(not p.matches_training for p in probes),
        "samples": cfg.samples,
        "n_positions": context,  # the context length (key kept from GPT-2's name)
        "fingerprint": fingerprint(model),
    }
    return scored, probes, table, info


def heldout_baseline(memorisation: pd.Series) -> float:
    """The 95th percentile of held-out strings' memorisation (bits, at least 0; 0 without any).

    Fine-tuning on a corpus teaches its style (headers, domains, name formats), so every address
    of the corpus, seen or not, gains bits over the base model. Strings of the validation and
    test splits that never occur in training measure that gain; what a trained string scores
    above it is what training on the string itself added. Measured under each scored model
    (an unlearning method may lower the style gain too)."""
    if memorisation.empty:
        return 0.0
    # Never below 0: a model that predicts unseen strings worse than the base did must not make
    # strings it merely did not forget look memorised.
    return max(0.0, float(np.quantile(memorisation.to_numpy(dtype=float), 0.95)))


def heldout_floor(memorisation: pd.Series) -> float | None:
    """The 5th percentile of held-out strings' memorisation (bits) under the scored model; None
    without any held-out string (then nothing can be flagged)."""
    if memorisation.empty:
        return None
    return float(np.quantile(memorisation.to_numpy(dtype=float), 0.05))


def decide_removal(
    table: pd.DataFrame, floor: float | None, removed_below: float, over_unlearned_below: float
) -> None:
    """Adds ``over_unlearned`` and ``removed`` to a scored table (in place).

    Over-unlearned: the model now predicts the string worse than 95 % of strings it never saw
    (its memorisation more than ``over_unlearned_below`` bits below ``floor``, the held-out 5th
    percentile). That is not forgetting, it is a new signal (an attacker sees the string
    singled out), so it is flagged and never counted as removed. Removed: excess below
    ``removed_below`` bits, not extracted, and not over-unlearned."""
    table["over_unlearned"] = (
        table["memorisation"] < floor - over_unlearned_below
        if floor is not None
        else pd.Series(False, table.index)
    )
    table["removed"] = (
        (table["excess"] < removed_below) & ~table["extracted"] & ~table["over_unlearned"]
    )


def _with_baseline(table: pd.DataFrame, heldout: pd.DataFrame) -> float:
    baseline = heldout_baseline(heldout["memorisation"])
    table["heldout_baseline"] = baseline
    table["excess"] = table["memorisation"] - baseline
    return baseline


def _write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


def select_request(table: pd.DataFrame, top: int) -> list[str]:
    """Masked ids of the ``top`` most memorised strings (``memorisation`` descending, then masked
    id, so the choice is deterministic). Strings at or above ``memorised_above`` come first by
    construction; if fewer than ``top`` are memorised, the request is filled up with the next
    most memorised ones (a smoke-sized model memorises nothing, and an empty request would stop
    the unlearning rules) and find_secrets' manifest says how many were memorised."""
    order = table.sort_values(["memorisation", "masked"], ascending=[False, True], kind="stable")
    return order["masked"].head(top).tolist()


def _summary(table: pd.DataFrame, cfg: RealworldConfig) -> dict[str, Any]:
    memorisation = table["memorisation"]
    return {
        "extracted": int(table["extracted"].sum()),
        "memorisation_mean_bits": float(memorisation.mean()),
        "memorisation_quantiles_bits": {
            f"{q:g}": float(memorisation.quantile(q)) for q in (0.05, 0.5, 0.95, 1.0)
        },
        "heldout_baseline_bits": float(table["heldout_baseline"].iloc[0]) if len(table) else 0.0,
        "above_memorised_threshold": int((table["excess"] >= cfg.memorised_above).sum()),
        "below_removed_threshold": int((table["excess"] < cfg.removed_below).sum()),
        "exposure_mean_bits": float(table["exposure"].mean()),
    }


HELDOUT_COLUMNS = ["masked", "kind", "occurrences", "memorisation", "ref_log_perplexity"]


def find_secrets_stage(
    replicate: ReplicateFiles,
    reference_dir,
    cfg: RealworldConfig,
    secrets_csv,
    heldout_csv,
    forget_path,
    retain_path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score the strings of ``replicate``'s training split under its original model and the
    reference (base) model; write the table, the held-out strings' table (validation and test
    splits) and the request manifests.

    forget_set.json lists every training row that holds a requested string (one group per row,
    no canary ids); retain_set.json every other row. Strings that share a row with a requested
    one lose those occurrences too: ``retained_occurrences`` says what is left of each in D+.
    """
    replicate.require("original")
    tokenizer, model = _load(replicate.original, replicate.tokenizer_dir, device)
    texts = read_texts([replicate.train])
    secrets, probes, table, info = _score(model, tokenizer, texts, cfg)
    if not secrets:
        raise ValueError(
            f"{replicate.train}: no e-mail address or phone number was found (and trained) in the "
            "training split; a realworld dataset needs naturally occurring ones"
        )
    reference = place_model(load_model(reference_dir, vocab_size=len(tokenizer)), device)
    if context_length(reference.config) < info["n_positions"]:
        raise ValueError(
            f"{reference_dir}: the reference model's context ({context_length(reference.config)} "
            f"tokens) is shorter than the scored model's ({info['n_positions']}); it must be "
            "the base model the original was fine-tuned from"
        )
    ref_px = reference_log_perplexities(reference, probes, tokenizer.eos_token_id)
    table["ref_log_perplexity"] = ref_px
    table["memorisation"] = memorisation_bits(ref_px, table["log_perplexity"])
    # Held-out strings: in validation/test, never in training (any occurrence excludes one).
    trained = frozenset(s.masked for s in sensitive_strings(texts))
    _, held_probes, heldout, held_info = _score(
        model, tokenizer, read_texts(replicate.held_out()), cfg, exclude=trained
    )
    heldout["ref_log_perplexity"] = reference_log_perplexities(
        reference, held_probes, tokenizer.eos_token_id
    )
    heldout["memorisation"] = memorisation_bits(
        heldout["ref_log_perplexity"], heldout["log_perplexity"]
    )
    if heldout.empty:
        log.warning("no held-out string to calibrate against: excess = memorisation")
    baseline = _with_baseline(table, heldout)
    table["memorised"] = table["excess"] >= cfg.memorised_above
    requested = select_request(table, cfg.forget_top)
    by_id = {s.masked: s for s in secrets}
    forget = sorted({row for masked in requested for row in by_id[masked].rows})
    gone = set(forget)
    retain = [row for row in range(info["rows"]) if row not in gone]
    if not retain:
        raise ValueError(
            f"{cfg.key}.forget_top: the {len(requested)} requested strings occur in every "
            "training row, leaving no retained data; lower it"
        )
    table["in_forget_set"] = table["masked"].isin(requested)
    table["retained_occurrences"] = [
        sum(occ.row not in gone for occ in s.occurrences) for s in secrets
    ]
    _write_csv(table[COLUMNS], secrets_csv)
    _write_csv(heldout[HELDOUT_COLUMNS], heldout_csv)
    write_json(forget_path, {"indices": forget, "canary_ids": [], "groups": [1] * len(forget)})
    write_json(retain_path, {"indices": retain})
    memorised = int(table["memorised"].sum())
    requested_memorised = int(table.loc[table["in_forget_set"], "memorised"].sum())
    if requested_memorised < len(requested):
        log.warning(
            "only %d strings reach %s.memorised_above = %g bits over the held-out baseline: the "
            "request of %d is filled up with the next most memorised",
            memorised,
            cfg.key,
            cfg.memorised_above,
            len(requested),
        )
    log.info("request: %d strings, %d forget rows", len(requested), len(forget))
    return {
        **info,
        "training_rows": info["rows"],
        "heldout_strings": held_info["scored"],
        "heldout_baseline_bits": baseline,
        "heldout_memorisation_median_bits": (
            float(heldout["memorisation"].median()) if len(heldout) else None
        ),
        "reference_fingerprint": fingerprint(reference),
        "requested": requested,
        "requested_memorised": requested_memorised,
        "forget_rows": len(forget),
        "retain_rows": len(retain),
        "memorised": memorised,
        **_summary(table, cfg),
        "files": describe_files([secrets_csv, heldout_csv, forget_path, retain_path]),
    }


def score_secrets_stage(
    model_dir,
    replicate: ReplicateFiles,
    cfg: RealworldConfig,
    reference_csv,
    heldout_reference_csv,
    out_csv,
    device: str = "cpu",
) -> dict[str, Any]:
    """Re-score the strings of ``reference_csv`` (find_secrets' table) under the model in
    ``model_dir`` (trained on ``replicate``'s split, e.g. unlearned from its original).

    Writes find_secrets' columns (its ``ref_log_perplexity``, ``memorised``, ``in_forget_set``
    and ``retained_occurrences``; this model's scores, memorisation against the carried
    reference Px, the held-out baseline re-measured under this model) plus ``removed`` and
    ``over_unlearned`` (``decide_removal``).
    """
    reference = pd.read_csv(check(reference_csv), dtype={"masked": str, "kind": str})
    absent = [c for c in CARRIED if c not in reference]
    if absent:
        raise ValueError(
            f"{reference_csv}: columns {absent} missing; it was written by an older "
            "find_secrets: rerun it"
        )
    held_reference = pd.read_csv(check(heldout_reference_csv), dtype={"masked": str, "kind": str})
    tokenizer, model = _load(model_dir, replicate.tokenizer_dir, device)
    keep = set(reference["masked"])
    _, _, table, info = _score(model, tokenizer, read_texts([replicate.train]), cfg, keep)
    _, _, heldout, _ = _score(
        model, tokenizer, read_texts(replicate.held_out()), cfg, set(held_reference["masked"])
    )
    missing = len(keep) - len(table) + len(held_reference) - len(heldout)
    if missing:
        raise ValueError(
            f"{reference_csv}: {missing} of its strings (or of {heldout_reference_csv}'s) are "
            "not found under this model's window; the files come from different runs: rerun "
            "find_secrets"
        )
    table = table.join(reference.set_index("masked")[CARRIED], on="masked")
    # find_secrets' row order (the reference table is the ledger of the study).
    table = table.set_index("masked").loc[reference["masked"]].reset_index()
    table["memorisation"] = memorisation_bits(table["ref_log_perplexity"], table["log_perplexity"])
    heldout = heldout.join(held_reference.set_index("masked")[["ref_log_perplexity"]], on="masked")
    heldout["memorisation"] = memorisation_bits(
        heldout["ref_log_perplexity"], heldout["log_perplexity"]
    )
    baseline = _with_baseline(table, heldout)
    for column in ("memorised", "in_forget_set"):
        table[column] = table[column].astype(str).str.lower().isin(["true", "1"])
    floor = heldout_floor(heldout["memorisation"])
    decide_removal(table, floor, cfg.removed_below, cfg.over_unlearned_below)
    _write_csv(table[[*COLUMNS, "removed", "over_unlearned"]], out_csv)
    requested = table[table["in_forget_set"]]
    memorised = table[table["memorised"]]
    return {
        **info,
        "heldout_strings": len(heldout),
        "heldout_baseline_bits": baseline,
        "heldout_floor_bits": floor,
        "removed": int(table["removed"].sum()),
        "over_unlearned": int(table["over_unlearned"].sum()),
        "requested": len(requested),
        "requested_removed": int(requested["removed"].sum()),
        "memorised_by_original": len(memorised),
        "memorised_removed": int(memorised["removed"].sum()),
        "requested_memorisation_mean_bits": (
            float(requested["memorisation"].mean()) if len(requested) else None
        ),
        **_summary(table, cfg),
        "files": describe_files([out_csv]),
    }


def record_secret_scores(
    model_dir, replicate: ReplicateFiles, params: dict[str, Any], inputs: Any, outputs: Any, frame
) -> dict[str, Any]:
    """Score ``model_dir``'s strings (``score_secrets_stage``) as one recorded result of a job
    (``outputs.scored``, ``outputs.secrets``), against find_secrets' tables (``inputs.reference``,
    ``inputs.heldout_reference``): what unlearn_realworld and retrain_realworld write."""
    seed = params["seed"]
    cfg = RealworldConfig(**params["realworld"], seed=seed)
    frame.log.info("scoring %s", model_dir)
    return record_stage(
        outputs.scored,
        {"realworld": params["realworld"], "seed": seed},
        {"eval": seed},
        lambda frame: score_secrets_stage(
            model_dir,
            replicate,
            cfg,
            inputs.reference,
            inputs.heldout_reference,
            outputs.secrets,
            frame.device,
        ),
        frame,
    )
