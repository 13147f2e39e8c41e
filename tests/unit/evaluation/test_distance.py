"""Forget quality (two-sample KS) and over-unlearning (one-sided Mann-Whitney), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from unlearnbench.evaluation.distance import (
    OVER_UNLEARNING_ALPHA,
    forget_quality,
    over_unlearning,
)


def slow_ks_statistic(a, b) -> float:
    """sup_x |F_a(x) - F_b(x)|, checked at every sample point (where the sup is reached)."""
    return max(
        abs(sum(v <= x for v in a) / len(a) - sum(v <= x for v in b) / len(b)) for x in [*a, *b]
    )


# --- forget quality ----------------------------------------------------------------------------


def test_identical_samples_are_indistinguishable():
    values = [0.5, 1.0, 1.0, 2.5, 3.0]
    assert forget_quality(values, list(values)) == {"ks_statistic": 0.0, "ks_p_value": 1.0}


def test_disjoint_samples_have_statistic_one_and_the_exact_small_p_value():
    # All orderings of 3 + 3 values are equally likely; 2 of C(6, 3) = 20 separate them fully.
    out = forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert out["ks_statistic"] == 1.0
    assert out["ks_p_value"] == pytest.approx(2 / 20, rel=1e-9)
    far = forget_quality([float(i) for i in range(10)], [float(i) for i in range(20, 30)])
    assert far["ks_p_value"] == pytest.approx(2 / math.comb(20, 10), rel=1e-9)
    assert far["ks_p_value"] < 1e-4


def test_ks_statistic_equals_the_largest_ecdf_gap():
    assert forget_quality([1, 2, 3, 4], [3, 4, 5, 6])["ks_statistic"] == 0.5
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.normal(size=rng.integers(2, 15)).round(1).tolist()  # ties within and across
        b = (rng.normal(size=rng.integers(2, 15)) + 0.5).round(1).tolist()
        out = forget_quality(a, b)
        assert out["ks_statistic"] == pytest.approx(slow_ks_statistic(a, b), abs=1e-12)
        assert 0.0 <= out["ks_p_value"] <= 1.0


def test_forget_quality_is_symmetric_in_its_two_samples():
    a, b = [0.1, 0.7, 2.0, 3.5], [0.2, 0.3, 0.4, 5.0, 6.0]
    assert forget_quality(a, b) == pytest.approx(forget_quality(b, a))


@pytest.mark.parametrize(("removed", "reference"), [([], [1.0, 2.0]), ([1.0], []), ([], [])])
def test_forget_quality_of_an_empty_sample_is_none(removed, reference):
    assert forget_quality(removed, reference) == {"ks_statistic": None, "ks_p_value": None}


# --- over-unlearning ---------------------------------------------------------------------------


def test_removed_far_below_the_phantoms_is_flagged():
    removed, phantoms = [0.1, 0.2, 0.3, 0.4, 0.5], [5.0, 6.0, 7.0, 8.0, 9.0]
    out = over_unlearning(removed, phantoms)
    # Exact null: the 5 removed ranks are the lowest 5 of 10 in 1 of C(10, 5) = 252 orderings.
    assert out["p_value"] == pytest.approx(1 / 252, rel=1e-9)
    assert out["flag"] is True
    assert out["removed_minus_phantom_mean"] == pytest.approx(0.3 - 7.0)


def test_removed_above_the_phantoms_is_not_flagged():
    out = over_unlearning([5.0, 6.0, 7.0, 8.0, 9.0], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert out["p_value"] == pytest.approx(1.0)
    assert out["flag"] is False
    assert out["removed_minus_phantom_mean"] == pytest.approx(6.7)


def test_one_removed_below_one_phantom_is_not_enough_evidence():
    out = over_unlearning([0.0], [10.0])
    assert out["p_value"] == pytest.approx(0.5)
    assert out["p_value"] >= OVER_UNLEARNING_ALPHA
    assert out["flag"] is False


def test_gap_is_the_difference_of_the_means():
    removed, phantoms = [1.5, 2.0, 4.25], [3.0, 0.5, 2.0, 7.0]
    gap = over_unlearning(removed, phantoms)["removed_minus_phantom_mean"]
    assert gap == pytest.approx(np.mean(removed) - np.mean(phantoms), abs=1e-12)
    assert gap == pytest.approx(7.75 / 3 - 12.5 / 4, abs=1e-12)


def test_flag_follows_the_p_value_against_alpha():
    rng = np.random.default_rng(1)
    for shift in (-3.0, -1.0, -0.3, 0.0, 0.5):
        phantoms = rng.normal(size=12).tolist()
        removed = (rng.normal(size=10) + shift).tolist()
        out = over_unlearning(removed, phantoms)
        assert out["flag"] is (out["p_value"] < OVER_UNLEARNING_ALPHA)
    assert over_unlearning((rng.normal(size=10) - 3).tolist(), phantoms)["flag"] is True


@pytest.mark.parametrize(("removed", "phantoms"), [([], [1.0, 2.0]), ([1.0], []), ([], [])])
def test_over_unlearning_of_an_empty_sample_is_unflagged_with_no_p_value(removed, phantoms):
    out = over_unlearning(removed, phantoms)
    assert out == {"p_value": None, "flag": False, "removed_minus_phantom_mean": None}
