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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation import EvalConfig, load_scoring_data, score_model
from ..evaluation.canary_scores import exposures_of
from ..evaluation.language import perplexity
from ..fisher.estimation import FisherConfig
from ..lm_data import encode_texts
from ..models import context_length
from ..provenance import read_json
from ..replicate import ReplicateFiles
from ..texts import read_texts
from ..tokenizer import load_tokenizer
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


def run_grid(
    method: str,
    points: list[dict[str, Any]],
    grid: Mapping[str, Sequence[Any]],
    model: torch.nn.Module,
    make_ctx: Callable[[Callable[..., dict]], UnlearnContext],
    on_point: Callable[[int, float], None],
) -> set[int]:
    """Run every point of ``method``'s grid from the model's current weights (restored before
    each run); ``on_point(index, seconds)`` is called when the model is at point ``index``,
    with the seconds of unlearning that led there. A knob the method reads off along one run
    (``PROGRESSIVE``) costs one run per combination of the other knobs. Returns the points lost
    to divergence (the weights stopped being finite before them)."""
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cls = method_class(method)
    progressive = cls.PROGRESSIVE if cls.PROGRESSIVE in grid else None
    reached_points: set[int] = set()
    for run in _runs(points, progressive):
        model.load_state_dict(original)
        hyper = dict(points[run[-1]])  # the run's strongest point: its progressive maximum
        if progressive is not None and "eval_every" in hyper:
            hyper["eval_every"] = 1  # every step reaches the record hook; marks pick points
        marks = {points[i][progressive]: i for i in run} if progressive else {}
        clock = {"unlearning": 0.0, "since": time.perf_counter()}

        def reached(index: int, clock: dict = clock) -> None:
            clock["unlearning"] += time.perf_counter() - clock["since"]
            if not _finite(model):
                raise Diverged(index)
            was_training = model.training
            on_point(index, round(clock["unlearning"], 3))
            model.train(was_training)
            reached_points.add(index)
            clock["since"] = time.perf_counter()

        def record(step: int, marks: dict = marks, **extra: Any) -> dict:
            mark = extra.get("epoch", step) if progressive == "epochs" else step
            if mark in marks:
                reached(marks[mark])
            return {}

        try:
            make_method(method, hyper).run(model, make_ctx(record))
            if progressive is None:
                reached(run[0])
        except Diverged:
            log.warning("%s diverged in the run of %s", method, points[run[-1]])
    model.load_state_dict(original)
    return set(range(len(points))) - reached_points


def _context(data: Any, replicate: ReplicateFiles, fisher_cfg, fisher) -> Callable:
    forget = [data.sequences[i] for i in data.forget_rows]
    retain = [data.sequences[i] for i in data.retain_rows]

    def make_ctx(record: Callable[..., dict]) -> UnlearnContext:
        return UnlearnContext(
            forget=forget,
            retain=retain,
            pad_id=data.pad_id,
            seed=replicate.seed,
            record=record,
            fisher_cfg=fisher_cfg,
            fisher=fisher,
        )

    return make_ctx


def _grid(method: str, base_hyper: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]):
    """The method's class, its grid (knobs with values) and points, every point checked."""
    cls = method_class(method)
    base = make_method(method, base_hyper).hyper
    grid = {k: v for k, v in grid.items() if v is not None}
    points = grid_points(cls.STRENGTH, base, grid)
    for point in points:
        make_method(method, point)  # refuse a bad grid value before any work
    return cls, base, grid, points


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
    cls, base, grid, points = _grid(method, base_hyper, grid)
    replicate.require("original", "retrained_metrics")
    cfg = EvalConfig.from_settings(eval_settings, seed=replicate.seed)
    scoring = load_scoring_data(replicate, cfg, device)
    model, data = setup_replicate(replicate, replicate.original, device)
    fisher = load_fisher(replicate.fisher, model, data) if cls.needs_fisher else None
    before = snapshot(model)
    records: list[dict[str, Any] | None] = [None] * len(points)
    start = time.perf_counter()

    def describe(index: int) -> dict[str, Any]:
        point = points[index]
        knobs = {k: point[k] for k in grid}
        return {"hyper": point, "knobs": knobs, "strength": strength(cls.STRENGTH, point)}

    def score(index: int, unlearning_seconds: float) -> None:
        scored = time.perf_counter()
        metrics = score_model(model, scoring, cfg)
        records[index] = {
            **describe(index),
            "diverged": False,
            "metrics": metrics,
            "weight_delta": weight_delta(before, model),
            "seconds": {
                "unlearning": unlearning_seconds,
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

    lost = run_grid(
        method, points, grid, model, _context(data, replicate, fisher_cfg, fisher), score
    )
    for i in sorted(lost):  # reported, never selected
        records[i] = {**describe(i), "diverged": True, "metrics": None}

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


def matched_utility_stage(
    method: str,
    base_hyper: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    replicate: ReplicateFiles,
    fisher_cfg: FisherConfig | None,
    utility_budget: float,
    batch_size: int,
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The matched-utility point of ``method``'s grid on a replicate without canaries (the
    real-world study): every point run from the original model and scored on the validation
    split alone, then ``frontier.select_operating_points``' rule (the strongest point whose
    validation perplexity stays within ``utility_budget`` times the original's). Where no
    point stays within it, the weakest point that did not diverge (``reached`` false).

    Returns the chosen point's hyperparameters and a record of the sweep."""
    cls, _, grid, points = _grid(method, base_hyper, grid)
    replicate.require("original", "validation")
    model, data = setup_replicate(replicate, replicate.original, device)
    fisher = load_fisher(replicate.fisher, model, data) if cls.needs_fisher else None
    tokenizer = load_tokenizer(replicate.tokenizer_dir)
    texts = read_texts([replicate.validation])
    validation = encode_texts(tokenizer, texts, context_length(model.config))

    def validation_ppl() -> float | None:
        return perplexity(model, validation, data.pad_id, batch_size, "validation")["perplexity"]

    original = validation_ppl()
    if original is None:
        raise ValueError(f"{replicate.validation}: no validation text to measure utility on")
    scores: list[float | None] = [None] * len(points)

    def score(index: int, _seconds: float) -> None:
        scores[index] = validation_ppl()
        log.info("%s %s: validation perplexity %.1f", method, points[index], scores[index])

    run_grid(method, points, grid, model, _context(data, replicate, fisher_cfg, fisher), score)
    budget = utility_budget * original
    chosen = select_operating_points(
        [None] * len(points), scores, target_tuning_exposure=0.0, validation_budget=budget
    )["matched_utility"]
    usable = [i for i, v in enumerate(scores) if v is not None]
    if not usable:
        raise ValueError(
            f"{method}: every grid point diverged on {replicate.dataset} seed {replicate.seed}; "
            f"change unlearn.frontier.{method}"
        )
    reached = chosen["index"] is not None
    index = chosen["index"] if reached else usable[0]  # points are ordered weakest first
    record = {
        "point": "matched_utility",
        "reached": reached,
        "index": index,
        "knobs": {k: points[index][k] for k in grid},
        "rule": chosen["rule"],
        "validation_perplexity": {"original": original, "budget": budget, "points": scores},
        "grid": [{k: p[k] for k in grid} for p in points],
    }
    return dict(points[index]), record
