"""A method's frontier: every strength of its grid, and the operating points chosen on it.

No hand-picked point decides a comparison. Each method declares the knobs that set its strength
(``STRENGTH``); the config gives a grid of values (``unlearn.frontier.<method>``); every grid
point is run from the original model and scored. Two operating points are then chosen per
method, by a rule that reads only the tuning canaries and the validation split (never the
evaluation canaries, never the test split):

- matched erasure: the weakest point whose tuning canaries' mean exposure reaches the retrained
  model's, within the retrain-vs-retrain noise floor (``erasure_target``: the retrained model
  is the target, its twin trained on another data order says how close is "reached");
- matched utility: the strongest point whose validation perplexity stays within
  ``utility_budget`` times the original model's.

Points are ordered by strength: the product of the method's strength knobs (ties in grid
order). A knob a method reads off along one run (``PROGRESSIVE``: gradient steps, epochs) costs
one run per combination of the other knobs, scored as the run passes each listed value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

SELECTIONS = ("matched_erasure", "matched_utility")


def grid_points(
    strength_knobs: Sequence[str], base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]
) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values over ``base``, weakest first (a knob whose
    values are None is not swept: it keeps ``base``'s setting)."""
    grid = {k: v for k, v in grid.items() if v is not None}
    if not grid:
        raise ValueError("unlearn.frontier: a method's grid names no knob; give at least one")
    for knob, values in grid.items():
        if knob not in base:
            raise ValueError(
                f"unlearn.frontier.{knob}: not a hyperparameter of the method; use one of "
                f"{', '.join(base)}"
            )
        if not values:
            raise ValueError(f"unlearn.frontier.{knob}: empty list; give at least one value")
    knobs = list(grid)
    points = [
        {**base, **dict(zip(knobs, values, strict=True))}
        for values in itertools.product(*(grid[k] for k in knobs))
    ]
    order = sorted(range(len(points)), key=lambda i: (strength(strength_knobs, points[i]), i))
    return [points[i] for i in order]


def strength(strength_knobs: Sequence[str], hyper: Mapping[str, Any]) -> float:
    return math.prod(float(hyper[k]) for k in strength_knobs) if strength_knobs else 0.0


def erasure_target(retrained: float, twin: float | None) -> dict[str, float | None]:
    """The tuning-canary exposure a point must reach for matched erasure.

    Under the retrained model the tuning canaries were never trained on, so their mean exposure
    is a draw at chance level (a few canaries: ~1 bit of spread on the CPU default), and
    demanding a point beat that draw would demand over-unlearning whenever the draw is low.
    The yardstick for "as low as retraining" is how far two retrained models lie apart on the
    same canaries: the target is the retrained mean plus |retrained - twin| (twin: the same
    recipe with another data order). Without a twin the target is the retrained mean.
    """
    floor = abs(retrained - twin) if twin is not None else None
    return {
        "tuning_exposure": retrained + (floor or 0.0),
        "retrained_tuning_exposure": retrained,
        "twin_tuning_exposure": twin,
        "noise_floor": floor,
    }


def select_operating_points(
    tuning_exposure: Sequence[float | None],
    validation_perplexity: Sequence[float | None],
    target_tuning_exposure: float,
    validation_budget: float,
) -> dict[str, dict[str, Any]]:
    """The two operating points, as indices into points ordered weakest first.

    The arguments are everything the rule may see: per point the tuning canaries' mean
    exposure and the validation perplexity, the retrained model's tuning-canary exposure and
    the validation perplexity allowed. A point with a missing value never qualifies.
    """
    if len(tuning_exposure) != len(validation_perplexity):
        raise ValueError("selection: one tuning exposure and one validation perplexity a point")
    erasure = [
        i
        for i, value in enumerate(tuning_exposure)
        if value is not None and value <= target_tuning_exposure
    ]
    utility = [
        i
        for i, value in enumerate(validation_perplexity)
        if value is not None and value <= validation_budget
    ]
    return {
        "matched_erasure": {
            "index": erasure[0] if erasure else None,
            "rule": "weakest point whose tuning canaries' mean exposure <= the retrained "
            f"model's plus the retrain-vs-retrain noise floor ({target_tuning_exposure:.4g} bits)",
            "reason": None if erasure else "no point of the grid erases that much",
        },
        "matched_utility": {
            "index": utility[-1] if utility else None,
            "rule": f"strongest point whose validation perplexity <= {validation_budget:.4g}",
            "reason": None if utility else "every point of the grid costs more utility",
        },
    }


# Where a side study runs a method: its base setting (unlearn.methods), or an operating point of
# its frontier on the same replicate (chosen on the tuning canaries and the validation split).
OPERATING_POINTS = ("base", *SELECTIONS)


def operating_hyper(
    base: Mapping[str, Any],
    frontier: Mapping[str, Any] | None,
    point: str,
    key: str = "unlearn.cycle_point",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hyperparameters a side study runs a method at, and a record of where they came from.

    ``point`` "base" keeps ``base``; otherwise the grid point ``frontier["selection"][point]``
    chose (a frontier file of sweep_frontier). A point the frontier did not reach falls back to
    its strongest grid point that did not diverge (the closest the grid came), and the record
    says so (``reached`` false). ``key``: the config key that chose ``point``, for errors."""
    if point not in OPERATING_POINTS:
        raise ValueError(f"{key}: {point!r}; use one of {', '.join(OPERATING_POINTS)}")
    if point == "base":
        return dict(base), {"point": "base", "reached": True, "index": None}
    if frontier is None:
        raise ValueError(f"{key}: {point} needs the method's frontier file")
    index = frontier["selection"][point]["index"]
    reached = index is not None
    if not reached:
        usable = [i for i, p in enumerate(frontier["points"]) if not p["diverged"]]
        if not usable:
            raise ValueError(
                f"{key}: every grid point of {frontier.get('method')}'s frontier diverged; "
                f"widen unlearn.frontier or set {key}: base"
            )
        index = max(usable, key=lambda i: frontier["points"][i]["strength"])
    chosen = frontier["points"][index]
    record = {"point": point, "reached": reached, "index": index, "knobs": chosen["knobs"]}
    return dict(chosen["hyper"]), record
