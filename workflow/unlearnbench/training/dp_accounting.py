"""DP-SGD's privacy accounting: sample rate, delta, the noise multiplier that spends exactly the
target epsilon, and whether any noise can reach it.

Kept apart from the training loop (dp.py) so that the config check (settings/rules.py) can ask,
before any job, whether a target epsilon is reachable at all, with the very functions a
``train_dp`` job calibrates with.

- **Exact step count.** ``make_private_with_epsilon`` calibrates for ``int(epochs / q)``
  steps, which float rounding makes one short of ``epochs / q`` for about 5 % of dataset sizes
  (e.g. 93 steps per epoch): the run would then overspend its budget. We calibrate with
  the steps actually run (``_calibrate``: the window Opacus's ``get_noise_multiplier`` targets,
  found in half the accountant calls).
- **Accountant** defaults to ``"prv"``, Opacus's default: numerical composition of privacy
  loss random variables (Gopi et al. 2021) gives a tighter epsilon than RDP for the same
  noise, so less noise for the same guarantee; it reports an upper bound (eps_error 0.01).
  ``"rdp"`` stays available for comparison with older papers.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING

from opacus.accountants import create_accountant

from ..dp_budget import MAX_NOISE_MULTIPLIER, sample_rate, steps_per_epoch

if TYPE_CHECKING:
    from .dp import DPConfig

ACCOUNTANTS = ("prv", "rdp")


def resolve_delta(cfg: DPConfig, n: int) -> float:
    """``cfg.delta``, or 1/N; a delta above 1/N is refused.

    Publishing each training example in the clear with probability delta is (0, delta)-DP, so a
    delta of 1/N or more admits leaking about one whole example: delta should be well below
    1/N. 1/N itself is the literature's usual (boundary) choice for these experiments
    (paper-notes.md) and the default; anything larger is a mistake.
    """
    bound = 1 / n
    if cfg.delta is None:
        return bound
    if cfg.delta > bound:
        raise ValueError(
            f"{cfg.key}.delta: delta must be <= 1/N = {bound:.3g} (N = {n} training sequences), "
            f"got {cfg.delta}; a larger delta allows publishing a training example verbatim. "
            "Choose a smaller delta, or leave it unset for 1/N"
        )
    return cfg.delta


EPSILON_TOLERANCE = 0.01  # spent epsilon lands in [target - 0.01, target], as with Opacus


def spent_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """Epsilon that ``steps`` Poisson-sampled steps at noise multiplier ``sigma`` spend."""
    acc = create_accountant(mechanism=accountant)
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        # At much noise RDP's best order is its largest one; the warning is meaningless.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=64)
def _calibrate(epsilon: float, delta: float, q: float, steps: int, accountant: str) -> float:
    """The noise multiplier whose spent epsilon lies in [epsilon - EPSILON_TOLERANCE, epsilon].

    Spent epsilon falls smoothly with sigma, so regula falsi (Illinois variant) on log sigma
    reaches the window in ~6 accountant calls where Opacus's ``get_noise_multiplier`` bisects
    ~13 times; a PRV call costs ~0.6 s, so this saves ~4 s of every train_dp job.
    tests/unit/training/test_dp.py checks the window and compares with Opacus's search.
    """

    def gap(log_sigma: float) -> float:  # > 0: overspends; the goal is the window's middle
        spent = spent_epsilon(math.exp(log_sigma), q, steps, delta, accountant)
        spent = spent if math.isfinite(spent) else 1e6  # far too little noise: just "too much"
        return spent - (epsilon - EPSILON_TOLERANCE / 2)

    # Bracket the root by doubling/halving from sigma = 1 (the usual order of magnitude).
    lo = hi = 0.0
    f_lo = f_hi = gap(0.0)
    while f_hi > 0:
        lo, f_lo = hi, f_hi
        hi += math.log(2)
        f_hi = gap(hi)
    while f_lo <= 0:
        if abs(f_lo) <= EPSILON_TOLERANCE / 2:
            return math.exp(lo)
        hi, f_hi = lo, f_lo
        lo -= math.log(2)
        f_lo = gap(lo)
    side = 0
    for _ in range(100):
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        f_x = gap(x)
        if abs(f_x) <= EPSILON_TOLERANCE / 2:
            return math.exp(x)
        if f_x > 0:  # x overspends: it replaces the low end
            lo, f_lo = x, f_x
            if side == -1:
                f_hi /= 2  # Illinois: halve the stale end so the bracket shrinks from both sides
            side = -1
        else:
            hi, f_hi = x, f_x
            if side == 1:
                f_lo /= 2
            side = 1
    raise RuntimeError(f"noise calibration for epsilon {epsilon} did not converge")


def epsilon_floor(q: float, steps: int, delta: float, accountant: str) -> float:
    """The least epsilon ``steps`` steps at sample rate q can spend: at noise multiplier
    ``MAX_NOISE_MULTIPLIER`` (more noise would leave nothing to learn)."""
    return spent_epsilon(MAX_NOISE_MULTIPLIER, q, steps, delta, accountant)


def check_reachable(cfg: DPConfig, n: int, population: str = "") -> None:
    """A readable error if no sensible noise multiplier keeps the run within ``cfg``'s
    (target_epsilon, delta) on N = ``n`` training sequences. ``population`` says where N comes
    from (the config check passes the bound the data caps allow)."""
    if cfg.target_epsilon is None:
        return
    delta = resolve_delta(cfg, n)
    q = sample_rate(n, cfg.batch_size)
    steps = accounted_steps(cfg, n)
    floor = epsilon_floor(q, steps, delta, cfg.accountant)
    if floor > cfg.target_epsilon:
        raise ValueError(
            f"{cfg.key}.epsilons: target epsilon {cfg.target_epsilon} is unreachable with "
            f"{steps} accounted steps ({cfg.epochs} epochs, {cfg.key}.epochs, of "
            f"{steps_per_epoch(n, cfg.batch_size)} steps, plus {cfg.extra_accounted_steps} "
            f"of a rate sweep) at sample "
            f"rate {q:.3g} ({cfg.key}.batch_size = {cfg.batch_size} of N = {n}{population}, "
            f"delta = {delta:.3g}, {cfg.key}.accountant = {cfg.accountant}): even noise "
            f"multiplier {MAX_NOISE_MULTIPLIER:g} spends {floor:.3g}. Raise the target "
            f"epsilon, or lower {cfg.key}.epochs or {cfg.key}.batch_size"
        )


def noise_multiplier(cfg: DPConfig, n: int) -> float:
    """The smallest noise multiplier (to Opacus's tolerance) that keeps the whole run within
    (target_epsilon, delta); a readable error if no sensible one exists. 0 for the noise-free
    control (target_epsilon None)."""
    if cfg.target_epsilon is None:
        return 0.0
    check_reachable(cfg, n)
    delta = resolve_delta(cfg, n)
    q = sample_rate(n, cfg.batch_size)
    return _calibrate(cfg.target_epsilon, delta, q, accounted_steps(cfg, n), cfg.accountant)


def accounted_steps(cfg: DPConfig, n: int) -> int:
    """The steps the privacy budget covers: this run's and ``cfg.extra_accounted_steps``."""
    return steps_per_epoch(n, cfg.batch_size) * cfg.epochs + cfg.extra_accounted_steps
