"""Benchmark: the claims table's vectorised two-level bootstrap against the explicit loop.

    PYTHONPATH=workflow:tests python tests/benchmarks/bench_bootstrap.py [--resamples 2000]

Data shaped like the default's claims: 6 replicates (2 datasets x 3 seeds) of 8 removed
canaries each, and a larger case (10 replicates x 100 units). Both implementations draw the
same numbers from the same generator (checked here as in the unit test), so the ratio is pure
implementation cost. Prints one row per case and the ratio last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from references.bootstrap_loop import slow_bootstrap
from unlearnbench.reporting.claims import two_level_bootstrap


def data(seeds: int, units: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(s, f"u{u}", float(rng.normal())) for s in range(seeds) for u in range(units)]
    return pd.DataFrame(rows, columns=["seed", "unit", "value"])


def timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    ratios = []
    for seeds, units in [(6, 8), (10, 100)]:
        frame = data(seeds, units)
        slow_s, slow = timed(slow_bootstrap, frame, args.resamples, np.random.default_rng(1))
        fast_s, fast = timed(two_level_bootstrap, frame, args.resamples, np.random.default_rng(1))
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
        ratios.append(slow_s / fast_s)
        print(
            f"{seeds} replicates x {units} units, {args.resamples} resamples: loop {slow_s:.3f} s, "
            f"vectorised {fast_s:.4f} s, {slow_s / fast_s:.0f}x"
        )
    print(f"ratio (loop / vectorised): {min(ratios):.0f}-{max(ratios):.0f}x")


if __name__ == "__main__":
    main()
