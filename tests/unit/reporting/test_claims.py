"""Claims: two-level bootstrap (against an explicit loop), p-value, interval, Holm, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references.bootstrap_loop import slow_bootstrap
from unlearnbench.reporting import claims as claims_module
from unlearnbench.reporting.claims import (
    COLUMNS,
    Claim,
    bootstrap_p_value,
    claim_generator,
    claims_markdown,
    evaluate_claims,
    holm,
    percentile_interval,
    point_estimate,
    two_level_bootstrap,
)


def frame(per_seed: dict[int, list[float]]) -> pd.DataFrame:
    rows = [(s, f"c{u:03d}", v) for s, values in per_seed.items() for u, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["seed", "unit", "value"])


def normal_data(mean: float, sd: float, seeds: int = 3, units: int = 30, key: int = 0):
    rng = np.random.default_rng(1000 + key)
    return frame({s: list(rng.normal(mean, sd, units)) for s in range(seeds)})


# --------------------------------------------------------------------------------------------
# two_level_bootstrap, point_estimate


def test_bootstrap_equals_explicit_double_loop_bit_for_bit():
    # Unequal unit counts (5, 1, 8, 3) and integer values: every sum is exact, so the vectorised
    # summation order cannot matter and the two must agree exactly, draw for draw.
    rng = np.random.default_rng(7)
    data = frame(
        {s: list(rng.integers(-50, 50, n).astype(float)) for s, n in enumerate([5, 1, 8, 3])}
    )
    data = data.sample(frac=1.0, random_state=3)  # row order must not matter
    fast = two_level_bootstrap(data, 400, np.random.default_rng(11))
    slow = slow_bootstrap(data, 400, np.random.default_rng(11))
    np.testing.assert_array_equal(fast, slow)


def test_bootstrap_matches_loop_on_real_valued_data_and_across_chunks(monkeypatch):
    data = frame({0: [0.1, 0.7, 0.3], 1: [2.5, -1.25], 2: list(np.linspace(-1, 1, 11))})
    slow = slow_bootstrap(data, 300, np.random.default_rng(5))
    fast = two_level_bootstrap(data, 300, np.random.default_rng(5))
    np.testing.assert_allclose(fast, slow, rtol=1e-13, atol=1e-15)
    # memory chunking (here 1 resample per chunk) must not change the numbers
    monkeypatch.setattr(claims_module, "_MAX_DRAWS", 1)
    np.testing.assert_array_equal(two_level_bootstrap(data, 300, np.random.default_rng(5)), fast)


def test_bootstrap_is_centred_on_the_estimate():
    data = normal_data(-1.0, 1.0)
    resampled = two_level_bootstrap(data, 10_000, np.random.default_rng(0))
    assert resampled.shape == (10_000,)
    assert abs(resampled.mean() - point_estimate(data)) < 0.02


def test_seeds_weigh_equally_whatever_their_unit_counts():
    data = frame({0: [0.0] * 99, 1: [3.0]})  # pooled mean would be 0.03
    assert point_estimate(data) == 1.5
    resampled = two_level_bootstrap(data, 2_000, np.random.default_rng(0))
    # one seed's units are all equal: a resample is 0, 1.5 or 3 with probabilities 1/4, 1/2, 1/4
    assert set(np.unique(resampled)) == {0.0, 1.5, 3.0}
    assert abs(np.mean(resampled == 1.5) - 0.5) < 0.05


def test_one_value_per_seed_is_a_plain_bootstrap_of_seeds():
    data = pd.DataFrame({"seed": [0, 1, 2], "unit": 0, "value": [1.0, 2.0, 4.0]})
    resampled = two_level_bootstrap(data, 20_000, np.random.default_rng(1))
    assert point_estimate(data) == pytest.approx(7 / 3)
    assert resampled.mean() == pytest.approx(7 / 3, abs=0.02)
    assert resampled.min() == 1.0 and resampled.max() == 4.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame(columns=["seed", "unit", "value"]), "empty"),
        (pd.DataFrame({"seed": [0, 1], "unit": [0, 0], "value": [1.0, np.nan]}), "NaN"),
        (pd.DataFrame({"seed": [0, 1], "value": [1.0, 2.0]}), "unit"),
        (pd.DataFrame({"seed": [0, 0], "unit": [1, 1], "value": [1.0, 2.0]}), "duplicated"),
    ],
)
def test_bad_data_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        two_level_bootstrap(data, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        point_estimate(data)


def test_unknown_statistic_and_bad_resample_count_are_refused():
    data = normal_data(0.0, 1.0)
    with pytest.raises(ValueError, match="statistic"):
        two_level_bootstrap(data, 10, np.random.default_rng(0), statistic="median")
    with pytest.raises(ValueError, match="n_resamples"):
        two_level_bootstrap(data, 0, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# p-value, interval, Holm


def test_p_value_on_a_known_resample_array():
    resampled = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # n = 9
    # below 0: wrong side or equal = {0, 1, 2, 3, 4, 5} -> (1 + 6) / 10
    assert bootstrap_p_value(resampled, 0.0, "below") == pytest.approx(0.7)
    # above 0: {-3, -2, -1, 0} -> (1 + 4) / 10
    assert bootstrap_p_value(resampled, 0.0, "above") == pytest.approx(0.5)
    # never 0: every resample on the right side still gives 1 / (n + 1)
    assert bootstrap_p_value(resampled, 10.0, "below") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="direction"):
        bootstrap_p_value(resampled, 0.0, "less")


def test_percentile_interval_on_a_known_resample_array():
    resampled = np.arange(101, dtype=float)  # quantile q is exactly 100 q
    assert percentile_interval(resampled, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(resampled[::-1], 0.5) == pytest.approx((25.0, 75.0))
    with pytest.raises(ValueError, match="level"):
        percentile_interval(resampled, 1.0)


def test_holm_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02]
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_holm_is_monotone_and_never_below_the_raw_p():
    raw = np.random.default_rng(3).uniform(0, 0.2, 25)
    adjusted = np.array(holm(raw))
    order = np.argsort(raw)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= raw) and np.all(adjusted <= 1)


# --------------------------------------------------------------------------------------------
# evaluate_claims, claims_markdown

BELOW = Claim("below", "the effect is negative", "below", 0.0, metric="delta", a="x", b="y")


def test_table_columns_and_counts():
    table = evaluate_claims([BELOW], {"below": normal_data(-1.0, 1.0)}, n_resamples=500)
    assert list(table.columns) == list(COLUMNS)
    row = table.iloc[0]
    assert (row["seeds"], row["units"]) == (3, 90)
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
    assert (row["metric"], row["a"], row["b"], row["direction"]) == ("delta", "x", "y", "below")


def test_clear_effect_in_the_claimed_direction_is_held():
    row = evaluate_claims([BELOW], {"below": normal_data(-1.0, 1.0)}).iloc[0]
    assert row["verdict"] == "held" and row["reason"] == ""
    assert row["p_holm"] < 0.05 and row["ci_high"] < 0


def test_clear_effect_in_the_other_direction_is_not_held():
    row = evaluate_claims([BELOW], {"below": normal_data(1.0, 1.0)}).iloc[0]
    assert row["verdict"] == "not held" and row["ci_low"] > 0


def test_above_claims_mirror_below_claims():
    above = Claim("above", "the effect is positive", "above", 0.0)
    data = {"above": normal_data(1.0, 1.0)}
    assert evaluate_claims([above], data).iloc[0]["verdict"] == "held"
    data = {"above": normal_data(-1.0, 1.0)}
    assert evaluate_claims([above], data).iloc[0]["verdict"] == "not held"


def test_noise_around_the_threshold_is_inconclusive():
    data = frame({s: [-1.0, 1.0] * 15 for s in range(3)})  # symmetric about 0, estimate 0
    row = evaluate_claims([BELOW], {"below": data}).iloc[0]
    assert row["verdict"] == "inconclusive"
    assert row["ci_low"] < 0 < row["ci_high"] and row["p_value"] > 0.3


def test_one_seed_or_no_data_is_inconclusive_with_a_reason_and_no_holm_share():
    other = Claim("other", "another negative effect", "below", 0.0)
    data = {"below": normal_data(-1.0, 1.0, seeds=1), "other": normal_data(-1.0, 1.0, key=1)}
    missing = Claim("missing", "never measured", "above", 0.0)
    table = evaluate_claims([BELOW, other, missing], data).set_index("id")
    assert table.loc["below", "verdict"] == "inconclusive"
    assert "seed" in table.loc["below", "reason"]
    assert (table.loc["below", "seeds"], table.loc["below", "units"]) == (1, 30)
    assert (
        table.loc[["below", "missing"], ["estimate", "ci_low", "p_value", "p_holm"]]
        .isna()
        .all(axis=None)
    )
    assert table.loc["missing", "reason"] == "no measurements"
    assert table.loc["missing", "seeds"] == 0
    # the only evaluated claim is a family of one: its Holm p is its raw p
    assert table.loc["other", "p_holm"] == table.loc["other", "p_value"]
    assert table.loc["other", "verdict"] == "held"


def test_holm_is_applied_across_claims():
    weak = Claim("weak", "a weak effect", "below", 0.0)
    data = {"below": normal_data(-1.0, 1.0), "weak": normal_data(-0.15, 1.0, key=2)}
    table = evaluate_claims([BELOW, weak], data).set_index("id")
    assert table["p_holm"].tolist() == pytest.approx(holm(table["p_value"].tolist()))


def test_same_inputs_give_the_identical_table():
    data = {"below": normal_data(-0.2, 1.0)}
    first = evaluate_claims([BELOW], data, n_resamples=2_000, seed=4)
    second = evaluate_claims([BELOW], data, n_resamples=2_000, seed=4)
    pd.testing.assert_frame_equal(first, second)
    assert claims_markdown(first) == claims_markdown(second)
    changed = evaluate_claims([BELOW], data, n_resamples=2_000, seed=5)
    assert changed.loc[0, "ci_low"] != first.loc[0, "ci_low"]


def test_adding_a_claim_does_not_change_another_claims_numbers():
    new = Claim("new", "a new claim", "above", 0.0)
    data = {"below": normal_data(-0.2, 1.0), "new": normal_data(0.5, 1.0, key=3)}
    alone = evaluate_claims([BELOW], data, n_resamples=2_000).set_index("id")
    both = evaluate_claims([new, BELOW], data, n_resamples=2_000).set_index("id")
    cols = ["estimate", "ci_low", "ci_high", "p_value"]
    assert both.loc["below", cols].tolist() == alone.loc["below", cols].tolist()


def test_claim_generator_is_stable_and_per_claim():
    draw = claim_generator(0, "a").random(3)
    np.testing.assert_array_equal(draw, claim_generator(0, "a").random(3))
    assert not np.array_equal(draw, claim_generator(0, "b").random(3))
    assert not np.array_equal(draw, claim_generator(1, "a").random(3))


def test_claims_are_validated():
    with pytest.raises(ValueError, match="direction"):
        Claim("c", "text", "less", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicated"):
        evaluate_claims([BELOW, BELOW], {})
    bad = pd.DataFrame({"seed": [0, 1], "unit": [0, 0], "value": [1.0, np.nan]})
    with pytest.raises(ValueError, match=r"'below'.*NaN"):
        evaluate_claims([BELOW], {"below": bad})


def test_markdown_table_and_footnote():
    one = Claim("one", "one seed | only", "above", 1.0)
    data = {"below": normal_data(-1.0, 1.0), "one": normal_data(2.0, 1.0, seeds=1)}
    table = evaluate_claims([BELOW, one], data, n_resamples=1_000)
    text = claims_markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| Claim | Rule | Estimate [95% CI] | p (Holm) | Verdict | Seeds / units |"
    row = table.iloc[0]
    assert lines[2] == (
        f"| the effect is negative | < 0 | {row['estimate']:.3g} [{row['ci_low']:.3g}, "
        f"{row['ci_high']:.3g}] | {row['p_holm']:.2g} | held | 3 / 90 |"
    )
    assert lines[3].startswith(r"| one seed \| only | > 1 | – | – | inconclusive (1 seed")
    assert lines[3].endswith("| 1 / 30 |")
    footnote = lines[-1]
    assert "two-level bootstrap (1,000 resamples" in footnote
    assert "Holm" in footnote and "p (Holm) < 0.05" in footnote
    # from a CSV round trip (attrs lost, reasons NaN) it still renders
    restored = pd.DataFrame(table.to_dict("list"))
    restored["reason"] = restored["reason"].replace("", np.nan)
    assert claims_markdown(restored, n_resamples=1_000, alpha=0.05) == text
