"""DP-SGD's step budget and whether a target epsilon can be reached, without torch (read at DAG
build by the config check; training/dp_accounting.py does the exact accounting in the job).

A target epsilon is reachable when some noise multiplier up to ``MAX_NOISE_MULTIPLIER`` spends
no more than it. Deciding that exactly needs Opacus's accountant, whose import costs ~3 s of
every DAG build (it loads torch). ``surely_reachable`` first answers from a closed-form upper
bound of what that much noise spends, which settles every practical target (epsilon above
~0.3-0.5); only a target near the bound asks the accountant.

The bound: DP-SGD's steps are subsampled Gaussian mechanisms of noise multiplier sigma;
subsampling never weakens privacy, so each step's Renyi DP at order alpha is at most the
unsubsampled Gaussian's, alpha / (2 sigma^2); ``steps`` of them compose to
steps * alpha / (2 sigma^2), and the classic conversion (Mironov 2017, Prop. 3) gives
epsilon <= steps * alpha / (2 sigma^2) + log(1/delta) / (alpha - 1) for every alpha > 1. Opacus's
RDP accountant reports at most this at each order it tries (a tighter subsampled bound and
conversion), so the bound is taken over orders it tries (it minimises over its own ~150, up to
63: a larger order would bound the true epsilon but not its report). Its PRV accountant reports
the true epsilon to within its error bound (``PRV_ERROR_MARGIN`` covers it).
tests/unit/test_dp_budget.py checks the screen against both accountants.
"""

from __future__ import annotations

import math

MAX_NOISE_MULTIPLIER = 1e3  # beyond this the updates are noise: the budget is a config mistake
# Opacus's PRV accountant reports an upper bound within eps_error = 0.01 of the true epsilon
# (plus its discretisation); a margin five times that keeps the screen on the safe side.
PRV_ERROR_MARGIN = 0.05
# Integer orders of Opacus's RDPAccountant.DEFAULT_ALPHAS (1.1, 1.2, ..., 10.9, 12, ..., 63).
RDP_ORDERS = (*range(2, 11), *range(12, 64))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def sample_rate(n: int, batch_size: int) -> float:
    """Opacus's convention (``DPDataLoader.from_data_loader``): q = 1 / steps per epoch."""
    return 1 / steps_per_epoch(n, batch_size)


def prefix_steps(total_steps: int, fraction: float) -> int:
    """Steps each candidate rate of a sweep trains before the choice (training/dp_sweep.py):
    at least one, at most the whole run."""
    return min(total_steps, max(1, math.ceil(fraction * total_steps)))


def sweep_extra_steps(total_steps: int, rates: int, fraction: float) -> int:
    """Steps of the losing candidates of a sweep over ``rates`` rates, which the privacy
    budget also covers (0 without a sweep)."""
    return (rates - 1) * prefix_steps(total_steps, fraction) if rates > 1 else 0


def epsilon_upper_bound(sigma: float, steps: int, delta: float) -> float:
    """An upper bound of the epsilon ``steps`` DP-SGD steps at noise multiplier ``sigma`` spend,
    whatever the sample rate (module docstring)."""
    return min(
        steps * alpha / (2 * sigma**2) + math.log(1 / delta) / (alpha - 1) for alpha in RDP_ORDERS
    )


def surely_reachable(epsilon: float, steps: int, delta: float) -> bool:
    """True when ``MAX_NOISE_MULTIPLIER`` certainly spends less than ``epsilon`` under either
    accountant; False means only that the accountant must be asked."""
    bound = epsilon_upper_bound(MAX_NOISE_MULTIPLIER, steps, delta)
    return bound + PRV_ERROR_MARGIN <= epsilon
