"""The two-level bootstrap of the claims table as an explicit double loop: the slow, obvious
reference that ``unlearnbench.reporting.claims.two_level_bootstrap`` is checked against (unit
test, draw for draw) and timed against (tests/benchmarks/bench_bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def slow_bootstrap(data: pd.DataFrame, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The two-level bootstrap as an explicit double loop, one scalar draw at a time, consuming
    the generator as documented: child streams ``rng.spawn(2)`` for seeds and units, uniform
    ``u`` mapped to ``floor(u * n)``, seeds sorted, units sorted within a seed."""
    seed_stream, unit_stream = rng.spawn(2)
    ordered = data.sort_values(["seed", "unit"])
    groups = [g["value"].tolist() for _, g in ordered.groupby("seed", sort=True)]
    out = []
    for _ in range(n_resamples):
        per_seed = []
        for _ in range(len(groups)):
            values = groups[int(seed_stream.random() * len(groups))]
            total = 0.0
            for _ in range(len(values)):
                total += values[int(unit_stream.random() * len(values))]
            per_seed.append(total / len(values))
        grand = 0.0
        for m in per_seed:
            grand += m
        out.append(grand / len(per_seed))
    return np.array(out)
