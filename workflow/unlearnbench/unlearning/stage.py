"""The unlearning stage as a plain function of a replicate (the rules' adapters call it).

``unlearn_stage`` removes one request (all forget rows, or the rows of chosen groups) from the
original model and saves the unlearned model; ``unlearn_request`` is the in-memory step it
(and the cycle study, ``studies.cycles``) runs. The manifest holds the trajectory
(``trajectory``), the weight change per layer type (``weight_delta``), fingerprints before and
after, and the cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..canaries import read_canaries
from ..compute import place_model
from ..exposure import encode_canary
from ..fisher import storage
from ..fisher.estimation import FisherConfig
from ..fisher.storage import Fisher
from ..lm_data import encode_texts, sequence_prefix_ids
from ..models import context_length, fingerprint, load_model, save_model
from ..replicate import ReplicateFiles
from ..texts import read_index_set, read_texts, retained_after
from ..tokenizer import load_tokenizer
from .base import UnlearnContext, UnlearningMethod
from .registry import make_method
from .trajectory import CanaryProbe, Trajectory, TrajectoryConfig, canary_role, retain_sample_rows
from .weight_delta import snapshot, weight_delta

log = logging.getLogger(__name__)
FisherPaths = tuple[str | Path, str | Path] | Sequence[str | Path] | None


@dataclass
class ReplicateData:
    """One replicate's data as token sequences (rows of the canary-injected train split)."""

    sequences: list[list[int]]
    forget_rows: list[int]
    forget_groups: list[int]
    retain_rows: list[int]
    probes: list[CanaryProbe]  # every canary, role "control" until a request assigns roles
    pad_id: int
    tokenizer: Any = None  # tokenizes samples of canaries whose digits it merges

    @property
    def groups(self) -> list[int]:
        return sorted(set(self.forget_groups))

    def rows_of(self, groups: Sequence[int] | None) -> list[int]:
        if groups is None:
            return list(self.forget_rows)
        unknown = sorted(set(groups) - set(self.groups))
        if unknown:
            raise ValueError(
                f"unlearn: request groups {unknown} are not in the forget set (its groups: "
                f"{self.groups}); choose groups from 1 to canaries.requests"
            )
        wanted = set(groups)
        return [r for r, g in zip(self.forget_rows, self.forget_groups, strict=True) if g in wanted]

    def retained_rows(self, removed_so_far: Sequence[int] | None) -> list[int]:
        """D+ of a request: every row that no request so far has removed (None: all removed);
        see ``texts.retained_after``."""
        return retained_after(
            self.retain_rows, self.forget_rows, self.forget_groups, removed_so_far
        )


def load_replicate(tokenizer, files: ReplicateFiles, max_length: int) -> ReplicateData:
    """The replicate's training split as token sequences, its request and its canary probes."""
    files.require("forget", "retain")
    train_path, forget_path, retain_path = files.train, files.forget, files.retain
    texts = read_texts([train_path])
    forget = read_index_set(forget_path)
    retain = read_index_set(retain_path)["indices"]
    groups = forget.get("groups") or [1] * len(forget["indices"])
    if len(groups) != len(forget["indices"]):
        raise ValueError(
            f"{forget_path}: 'groups' and 'indices' differ in length; rerun inject_canaries"
        )
    # Real-world datasets have no canary table (None): no exposure, losses only.
    table = pd.DataFrame() if files.canaries is None else read_canaries(files.canaries)
    separator = sequence_prefix_ids(tokenizer, "")  # what lm_data puts before every text
    probes = [
        CanaryProbe(
            canary_id=int(row.canary_id),
            group=int(row.group),
            repetitions=int(row.repetitions),
            canary=encode_canary(tokenizer, row.prefix, str(row.secret), separator),
        )
        for row in table.itertuples()
        # a phantom was never trained: nothing to follow along the trajectory
        if int(row.repetitions) != 0
    ]
    return ReplicateData(
        sequences=encode_texts(tokenizer, texts, max_length),
        forget_rows=[int(i) for i in forget["indices"]],
        forget_groups=[int(g) for g in groups],
        retain_rows=[int(i) for i in retain],
        probes=probes,
        pad_id=tokenizer.eos_token_id,
        tokenizer=tokenizer,
    )


def load_fisher(
    fisher_paths: FisherPaths, model: torch.nn.Module, data: ReplicateData
) -> Fisher | None:
    """The Fisher artifact, refused (naming the file and the fix) if it belongs to other
    weights than ``model``'s; ``data``'s D+ (the retain manifest's rows, the estimate's D+)
    gives the rows a matrix-free or sharded artifact's consumer recomputes."""
    if fisher_paths is None:
        return None
    tensors, meta = fisher_paths
    retain = [data.sequences[i] for i in data.retain_rows]
    return storage.load_fisher(tensors, meta, model, retain, data.pad_id)


def _check_finite(model: torch.nn.Module, method: str, step: int) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(
                f"unlearn.methods.{method}: weight {name} is not finite after step {step}; "
                "the method diverged: lower its step size (lr or gamma)"
            )


def unlearn_request(
    model: torch.nn.Module,
    method: UnlearningMethod,
    data: ReplicateData,
    groups: Sequence[int] | None,
    *,
    earlier: Sequence[int] = (),
    fisher: Fisher | None,
    fisher_cfg: FisherConfig | None,
    trajectory_cfg: TrajectoryConfig,
    seed: int,
    keys: tuple = (),
) -> dict[str, Any]:
    """Unlearn the forget rows of ``groups`` (None: all) from ``model`` in place."""
    start = time.perf_counter()
    rows = data.rows_of(groups)
    if not rows:
        raise ValueError("unlearn: the request has no forget rows; check forget_set.json")
    removed = data.groups if groups is None else sorted(set(groups))
    forget = [data.sequences[i] for i in rows]
    retained = data.retained_rows(None if groups is None else [*removed, *earlier])
    retain = [data.sequences[i] for i in retained]
    sample = retain_sample_rows(len(retain), trajectory_cfg.retain_sample, seed)
    probes = [
        CanaryProbe(**{**p.__dict__, "role": canary_role(p.group, removed, earlier)})
        for p in data.probes
    ]
    trajectory = Trajectory(
        forget, [retain[i] for i in sample], probes, data.pad_id, trajectory_cfg, seed,
        data.tokenizer,
    )  # fmt: skip
    fingerprint_before = fingerprint(model)
    if fisher is not None and fisher.fingerprint != fingerprint_before:
        raise ValueError(
            "unlearn: the Fisher estimate was computed for other weights than the model being "
            "unlearned; rerun estimate_fisher for this model"
        )
    before = snapshot(model)

    def record(step: int, **extra: Any) -> dict[str, Any]:
        _check_finite(model, method.name, step)
        point = trajectory.measure(model, step, **extra)
        ctx.trajectory.append(point)
        log.info(
            "%s step %d: forget loss %s, retain loss %s, removed exposure %s",
            method.name,
            step,
            point["forget_loss"],
            point["retain_loss"],
            point["exposure_removed_mean"],
        )
        return point

    ctx = UnlearnContext(
        forget=forget,
        retain=retain,
        pad_id=data.pad_id,
        seed=seed,
        record=record,
        keys=keys,
        fisher_cfg=fisher_cfg,
        fisher=fisher,
    )
    if method.needs_fisher:
        ctx.fisher_at(model)  # estimated here when no artifact was given
    record(0)
    traj_before, fisher_before = trajectory.seconds, ctx.fisher_seconds
    method_start = time.perf_counter()
    result = method.run(model, ctx)
    method_seconds = time.perf_counter() - method_start
    _check_finite(model, method.name, result["steps"])
    # The method's own work: its run minus the trajectory measurements and Fisher estimates in it.
    own_seconds = (
        method_seconds - (trajectory.seconds - traj_before) - (ctx.fisher_seconds - fisher_before)
    )
    fisher_info = None
    if method.needs_fisher and ctx.fisher is not None:
        used = ctx.fisher
        fisher_info = {
            "source": "artifact" if fisher is not None else "estimated",
            "m": used.m,
            "d": used.d,
            "lambda": used.lam,
            "blocks": len(used.blocks),
            "estimates": ctx.fisher_estimates,
            "estimate_seconds": round(ctx.fisher_seconds, 3),
            "artifact_cost": fisher.cost if fisher is not None else None,
        }
    return {
        "method": method.name,
        "hyper": method.hyper,
        "groups": removed,
        "earlier_groups": sorted(set(earlier)),
        "forget_rows": rows,
        "retain_rows": len(retained),
        "removed_canaries": sorted(p.canary_id for p in probes if p.role == "removed"),
        "control_canaries": sorted(p.canary_id for p in probes if p.role == "control"),
        "steps": int(result["steps"]),
        "result": {k: v for k, v in result.items() if k != "steps"},
        "trajectory": ctx.trajectory,
        "weight_delta": weight_delta(before, model),
        "fingerprint_before": fingerprint_before,
        "fingerprint_after": fingerprint(model),
        "fisher": fisher_info,
        "seconds": {
            "total": round(time.perf_counter() - start, 3),
            "unlearning": round(own_seconds, 3),
            "fisher": round(ctx.fisher_seconds, 3),
            "trajectory": round(trajectory.seconds, 3),
        },
    }


def setup_replicate(
    files: ReplicateFiles, model_dir: str | Path, device: str
) -> tuple[torch.nn.Module, ReplicateData]:
    """The model in ``model_dir`` on ``device`` and the replicate's data, tokenised."""
    tokenizer = load_tokenizer(files.tokenizer_dir)
    model = place_model(load_model(model_dir, vocab_size=len(tokenizer)), device)
    return model, load_replicate(tokenizer, files, context_length(model.config))


def unlearn_stage(
    method: str,
    hyper: Mapping[str, Any],
    replicate: ReplicateFiles,
    fisher_cfg: FisherConfig | None,
    trajectory: Mapping[str, int],
    out_dir: str | Path,
    groups: Sequence[int] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Unlearn the forget rows (all groups, or only ``groups``) from ``replicate``'s original
    model with ``method``; save the result to ``out_dir`` and return the manifest.

    Fisher-based methods use ``replicate.fisher`` (an ``estimate_fisher`` artifact for this
    model) or, without one, estimate it here with ``fisher_cfg``.
    """
    unlearner = make_method(method, hyper)  # refuse bad settings before loading anything
    trajectory_cfg = TrajectoryConfig.from_dict(dict(trajectory))
    replicate.require("original")
    model, data = setup_replicate(replicate, replicate.original, device)
    fisher = load_fisher(replicate.fisher, model, data) if unlearner.needs_fisher else None
    manifest = unlearn_request(
        model,
        unlearner,
        data,
        None if groups is None else list(groups),
        fisher=fisher,
        fisher_cfg=fisher_cfg,
        trajectory_cfg=trajectory_cfg,
        seed=replicate.seed,
    )
    return {**manifest, "files": save_model(model, out_dir)}
