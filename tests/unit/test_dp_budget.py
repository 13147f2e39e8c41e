"""dp_budget's screen against Opacus's accountants: whenever it calls a target epsilon surely
reachable, both accountants agree; it needs no torch; the sweep's step count is dp_sweep's."""

from __future__ import annotations

import itertools

import pytest
from opacus.accountants import RDPAccountant
from snakemake_runner import run_without_torch
from unlearnbench import dp_budget
from unlearnbench.training.dp_accounting import epsilon_floor

pytestmark = [
    pytest.mark.filterwarnings("ignore:Optimal order is the"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log"),  # PRV at q = 1
]

# (N, expected batch, epochs, delta): the default's, paper.yaml's and corner shapes.
SHAPES = [
    (350, 32, 12, 1e-4),
    (350, 32, 12, 1 / 350),
    (40_000, 32, 12, 1e-6),
    (20, 2, 2, 1e-5),
    (5_000, 1, 50, 1e-8),
    (1_000, 1_000, 1, 1e-3),
]


def test_orders_are_orders_opacus_tries():
    assert set(dp_budget.RDP_ORDERS) <= set(RDPAccountant.DEFAULT_ALPHAS)


@pytest.mark.parametrize(("shape", "accountant"), list(itertools.product(SHAPES, ["rdp", "prv"])))
def test_bound_is_above_what_the_accountant_reports(shape, accountant):
    n, batch, epochs, delta = shape
    steps = dp_budget.steps_per_epoch(n, batch) * epochs
    floor = epsilon_floor(dp_budget.sample_rate(n, batch), steps, delta, accountant)
    bound = dp_budget.epsilon_upper_bound(dp_budget.MAX_NOISE_MULTIPLIER, steps, delta)
    assert floor <= bound + (dp_budget.PRV_ERROR_MARGIN if accountant == "prv" else 0)
    # The screen's verdict is never wrong where it speaks: just above the bound is reachable.
    q = dp_budget.sample_rate(n, batch)
    target = bound + dp_budget.PRV_ERROR_MARGIN
    assert dp_budget.surely_reachable(target, q, steps, delta) and floor <= target
    assert not dp_budget.surely_reachable(floor / 2, q, steps, delta)  # it asks, never refuses
    # The second stage: Opacus's own RDP analysis at a subset of its orders bounds both.
    rdp = dp_budget.rdp_epsilon(dp_budget.MAX_NOISE_MULTIPLIER, q, steps, delta)
    assert floor <= rdp + (dp_budget.PRV_ERROR_MARGIN if accountant == "prv" else 0)


def test_rdp_stage_is_opacus_rdp_accountant_at_those_orders():
    q, steps, delta = 0.01, 1_000, 1e-6
    accountant = RDPAccountant()
    accountant.history = [(dp_budget.MAX_NOISE_MULTIPLIER, q, steps)]
    report = accountant.get_epsilon(delta=delta, alphas=list(dp_budget.RDP_ORDERS))
    assert dp_budget.rdp_epsilon(dp_budget.MAX_NOISE_MULTIPLIER, q, steps, delta) == report
    assert accountant.get_epsilon(delta=delta) <= report


def test_an_absurd_run_is_settled_without_torch():
    """2 x 10^12 sequences (a config the planner refuses later): the closed form is loose at
    so many steps, the RDP stage settles it, and neither loads torch or the PRV accountant."""
    run_without_torch(
        "from unlearnbench import dp_budget as b\n"
        "n = 2 * 10**12; steps = 12 * b.steps_per_epoch(n, 32)\n"
        "assert not b.epsilon_upper_bound(1e3, steps, 1 / n) < 8\n"
        "assert b.surely_reachable(8.0, b.sample_rate(n, 32), steps, 1 / n)"
    )


def test_bound_is_the_gaussian_rdp_bound_by_hand():
    # One step, sigma 1000, delta 1e-5: min over orders of a / 2e6 + log(1e5) / (a - 1).
    expected = min(a / 2e6 + 11.512925464970229 / (a - 1) for a in dp_budget.RDP_ORDERS)
    assert dp_budget.epsilon_upper_bound(1e3, 1, 1e-5) == pytest.approx(expected, rel=1e-12)
    assert dp_budget.epsilon_upper_bound(1e3, 1, 1e-5) == pytest.approx(11.512925 / 62, rel=1e-3)


def test_sweep_steps():
    assert dp_budget.prefix_steps(12, 0.25) == 3 and dp_budget.prefix_steps(2, 0.01) == 1
    assert dp_budget.sweep_extra_steps(12, 1, 0.25) == 0
    assert dp_budget.sweep_extra_steps(12, 3, 0.25) == 6
    assert dp_budget.sample_rate(12, 2) == 1 / 6 and dp_budget.steps_per_epoch(13, 2) == 7
