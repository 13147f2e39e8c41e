"""The frontier stage: one method's whole grid on one replicate, in one process.

Every point starts from the original model (the stored Fisher belongs to those weights), is
scored exactly as every other model (``evaluation.score_model``: canaries of every role,
perplexity including the validation split, KL to the retrained model, membership inference,
forget quality), and the two operating points are chosen from the tuning canaries and the
validation split only (``frontier.select_operating_points``), against the retrained model
and its twin (``frontier.erasure_target``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation import EvalConfig, load_scoring_data, score_model
from ..evaluation.canary_scores import exposures_of
from ..fisher.estimation import FisherConfig
from ..provenance import read_json
from ..replicate import ReplicateFiles
from .base import UnlearnContext
from .frontier import erasure_target, grid_points, select_operating_points, strength
from .registry import make_method, method_class
from .stage import load_fisher, setup_replicate
from .weight_delta import snapshot, weight_delta

log = logging.getLogger(__name__)


class Diverged(Exception):
    """The weights stopped being finite: this point and the stronger ones of its run are lost."""


def _finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _runs(points: list[dict], progressive: str | None) -> list[list[int]]:
    """Indices of the points each run produces: one point a run, or (progressive knob) every
    point sharing the other knobs' values, read off in order along one run."""
    if progressive is None:
        return [[i] for i in range(len(points))]
    key = [tuple(sorted((k, v) for k, v in p.items() if k != progressive)) for p in points]
    runs: dict[tuple, list[int]] = {}
    for i, k in enumerate(key):
        runs.setdefault(k, []).append(i)
    return [sorted(ids, key=lambda i: points[i][progressive]) for ids in runs.values()]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def frontier_stage(
    method: str,
    base_hyper: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    replicate: ReplicateFiles,
    fisher_cfg: FisherConfig | None,
    eval_settings: Mapping[str, Any],
    utility_budget: float,
    original_metrics: str | Path,
    device: str = "cpu",
    twin_metrics: str | Path | None = None,
) -> dict[str, Any]:
    """Run and score every point of ``method``'s grid; choose its operating points
    (``twin_metrics``: the retrained twin's metrics, for the noise floor of the target)."""
    cls = method_class(method)
    base = make_method(method, base_hyper).hyper
    grid = {k: v for k, v in grid.items() if v is not None}
    points = grid_points(cls.STRENGTH, base, grid)
    for point in points:
        make_method(method, point)  # refuse a bad grid value before any work
    replicate.require("original", "retrained_metrics")
    cfg = EvalConfig.from_settings(eval_settings, seed=replicate.seed)
    scoring = load_scoring_data(replicate, cfg, device)
    model, data = setup_replicate(replicate, replicate.original, device)
    fisher = load_fisher(replicate.fisher, model, data) if cls.needs_fisher else None
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = snapshot(model)
    forget = [data.sequences[i] for i in data.forget_rows]
    retain = [data.sequences[i] for i in data.retain_rows]
    records: list[dict[str, Any] | None] = [None] * len(points)
    progressive = cls.PROGRESSIVE if cls.PROGRESSIVE in grid else None
    start = time.perf_counter()

    for run in _runs(points, progressive):
        model.load_state_dict(original)
        hyper = dict(points[run[-1]])  # the run's strongest point: its progressive maximum
        if progressive is not None and "eval_every" in hyper:
            hyper["eval_every"] = 1  # every step reaches the record hook; marks pick points
        marks = {points[i][progressive]: i for i in run} if progressive else {}
        clock = {"unlearning": 0.0, "since": time.perf_counter()}

        def score(index: int, clock: dict = clock) -> None:
            clock["unlearning"] += time.perf_counter() - clock["since"]
            scored = time.perf_counter()
            was_training = model.training
            metrics = score_model(model, scoring, cfg)
            model.train(was_training)
            records[index] = {
                "hyper": points[index],
                "knobs": {k: points[index][k] for k in grid},
                "strength": strength(cls.STRENGTH, points[index]),
                "diverged": False,
                "metrics": metrics,
                "weight_delta": weight_delta(before, model),
                "seconds": {
                    "unlearning": round(clock["unlearning"], 3),
                    "scoring": round(time.perf_counter() - scored, 3),
                },
            }
            log.info(
                "%s %s: tuning exposure %.2f, validation perplexity %.1f",
                method,
                records[index]["knobs"],
                _mean(exposures_of(metrics["canaries"], "tuning")) or float("nan"),
                metrics["perplexity"]["validation"]["perplexity"],
            )
            clock["since"] = time.perf_counter()

        def record(step: int, marks: dict = marks, **extra: Any) -> dict:
            mark = extra.get("epoch", step) if progressive == "epochs" else step
            if mark in marks:
                if not _finite(model):
                    raise Diverged(mark)
                score(marks[mark])
            return {}

        ctx = UnlearnContext(
            forget=forget,
            retain=retain,
            pad_id=data.pad_id,
            seed=replicate.seed,
            record=record,
            fisher_cfg=fisher_cfg,
            fisher=fisher,
        )
        try:
            make_method(method, hyper).run(model, ctx)
            if progressive is None:
                if not _finite(model):
                    raise Diverged(None)
                score(run[0])
        except Diverged:
            log.warning("%s diverged in the run of %s", method, points[run[-1]])
        for i in run:
            if records[i] is None:  # lost to divergence: reported, never selected
                records[i] = {
                    "hyper": points[i],
                    "knobs": {k: points[i][k] for k in grid},
                    "strength": strength(cls.STRENGTH, points[i]),
                    "diverged": True,
                    "metrics": None,
                }

    retrained = _mean(exposures_of(read_json(replicate.retrained_metrics)["canaries"], "tuning"))
    budget = utility_budget * read_json(original_metrics)["perplexity"]["validation"]["perplexity"]
    if retrained is None:
        raise ValueError(
            f"{replicate.retrained_metrics}: no tuning canary; set canaries.tuning_per_repetition "
            ">= 1 so operating points can be chosen without the evaluation canaries"
        )
    twin = (
        _mean(exposures_of(read_json(twin_metrics)["canaries"], "tuning"))
        if twin_metrics is not None
        else None
    )
    target = erasure_target(retrained, twin)
    selection = select_operating_points(
        [_tuning_mean(r) for r in records],
        [_validation(r) for r in records],
        target_tuning_exposure=target["tuning_exposure"],
        validation_budget=budget,
    )
    return {
        "method": method,
        "base_hyper": base,
        "grid": {k: list(v) for k, v in grid.items()},
        "strength_knobs": list(cls.STRENGTH),
        "points": records,
        "selection": selection,
        "target": {**target, "validation_perplexity_budget": budget},
        "seconds": round(time.perf_counter() - start, 3),
    }


def _tuning_mean(record: dict) -> float | None:
    if record["diverged"]:
        return None
    return _mean(exposures_of(record["metrics"]["canaries"], "tuning"))


def _validation(record: dict) -> float | None:
    return (
        None if record["diverged"] else record["metrics"]["perplexity"]["validation"]["perplexity"]
    )
