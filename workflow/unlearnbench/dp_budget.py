"""DP-SGD's step budget and whether a target epsilon can be reached, without torch (read at DAG
build by the config check; training/dp_accounting.py does the exact accounting in the job).

A target epsilon is reachable when some noise multiplier up to ``MAX_NOISE_MULTIPLIER`` spends
no more than it. Deciding that exactly needs Opacus's accountant, whose import costs ~3 s of
every DAG build (it loads torch). ``surely_reachable`` answers first from a closed-form upper
bound of what that much noise spends, which settles every practical target (epsilon above
~0.3-0.5) of a practical run; then (many steps make the closed form loose) from Opacus's own
Renyi analysis of the subsampled Gaussian, a module of numpy and scipy alone, loaded without
the rest of Opacus. Only a target near the floor asks the accountant itself.

The bound: DP-SGD's steps are subsampled Gaussian mechanisms of noise multiplier sigma;
subsampling never weakens privacy, so each step's Renyi DP at order alpha is at most the
unsubsampled Gaussian's, alpha / (2 sigma^2); ``steps`` of them compose to
steps * alpha / (2 sigma^2), and the classic conversion (Mironov 2017, Prop. 3) gives
epsilon <= steps * alpha / (2 sigma^2) + log(1/delta) / (alpha - 1) for every alpha > 1. Opacus's
RDP accountant reports at most this at each order it tries (a tighter subsampled bound and
conversion), so the bound is taken over orders it tries (it minimises over its own ~150, up to
63: a larger order would bound the true epsilon but not its report). Its PRV accountant reports
the true epsilon to within its error bound (``PRV_ERROR_MARGIN`` covers it).
tests/unit/test_dp_budget.py checks both stages against both accountants.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from pathlib import Path
from types import ModuleType

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


@functools.cache
def opacus_rdp_analysis() -> ModuleType:
    """``opacus/accountants/analysis/rdp.py`` (numpy and scipy only), loaded without running
    ``opacus/__init__.py``, which imports torch."""
    package = importlib.util.find_spec("opacus")  # finds the package, runs none of it
    path = Path(package.submodule_search_locations[0]) / "accountants" / "analysis" / "rdp.py"
    spec = importlib.util.spec_from_file_location(f"{__package__}._opacus_rdp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rdp_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """What Opacus's RDP accountant reports for ``steps`` steps at (sigma, q), or more: its own
    analysis over ``RDP_ORDERS``, a subset of the orders it minimises over."""
    analysis = opacus_rdp_analysis()
    orders = list(RDP_ORDERS)
    rdp = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        epsilon, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


def surely_reachable(epsilon: float, q: float, steps: int, delta: float) -> bool:
    """True when ``MAX_NOISE_MULTIPLIER`` certainly spends less than ``epsilon`` under either
    accountant; False means only that the accountant must be asked."""
    sigma = MAX_NOISE_MULTIPLIER
    if epsilon_upper_bound(sigma, steps, delta) + PRV_ERROR_MARGIN <= epsilon:
        return True
    return rdp_epsilon(sigma, q, steps, delta) + PRV_ERROR_MARGIN <= epsilon
