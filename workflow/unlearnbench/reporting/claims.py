"""Verdicts on a paper's claims, computed from replicate measurements (never written by hand).

A claim is a rule declared in the config: "the statistic is below ``threshold``" (direction
``below``) or "above ``threshold``" (direction ``above``). Its data are measurements per unit
(a canary, or one value per seed) from several replicate seeds, as a frame with columns
``seed``, ``unit``, ``value``.

Statistics:

* **Estimate**: the mean over seeds of the per-seed means. Each seed weighs equally, however
  many units it has: the seed (a whole training run) is the replicate, units are nested in it.
* **Two-level bootstrap**: one resample draws the seeds with replacement (as many as there are
  seeds), then, for every drawn seed, that seed's units with replacement (as many as it has),
  and computes the estimate on the result. This propagates both between-seed and
  within-seed variability.
* **Interval**: percentile interval of the resampled estimates at ``level``
  (linear interpolation between order statistics, ``numpy.quantile``'s default).
* **p-value**: one-sided bootstrap p for the claim,
  ``p = (1 + #{resamples on the wrong side of the threshold or equal to it}) / (1 + n)``;
  it is never 0, so that no finite number of resamples claims certainty.
* **Holm-Bonferroni**: step-down adjustment across all claims evaluated together (family-wise
  error rate ``alpha``).
* **Verdict**: ``held`` if the Holm-adjusted p < ``alpha``; else ``not held`` if the interval
  lies strictly on the other side of the threshold (the data contradict the claim); else
  ``inconclusive``. Claims without data, or with fewer than 2 seeds (``Claim.min_seeds``: 1
  for a claim that pools one replicate's units), are ``inconclusive`` with a ``reason`` and
  take no part in the Holm correction.

Each claim resamples with its own generator, derived from the base seed and a SHA-256 hash of
the claim id, so that adding, removing or reordering claims never changes another claim's
numbers. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .render import MISSING

Direction = Literal["below", "above"]
DIRECTIONS: tuple[str, ...] = ("below", "above")
STATISTICS: tuple[str, ...] = ("mean",)
VERDICTS: tuple[str, ...] = ("held", "not held", "inconclusive")

COLUMNS: tuple[str, ...] = (
    "id",
    "claim",
    "estimate",
    "ci_low",
    "ci_high",
    "level",
    "p_value",
    "p_holm",
    "seeds",
    "units",
    "verdict",
    "reason",
    "metric",
    "a",
    "b",
    "point",
    "direction",
    "threshold",
)
MIN_SEEDS = 2
# Largest number of unit draws held in memory at once (doubles); larger jobs run in chunks of
# resamples, which gives the same numbers as one pass (see two_level_bootstrap).
_MAX_DRAWS = 1 << 22


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class _Groups:
    """Validated data, sorted by seed then unit: the values of seed ``k`` are
    ``values[offsets[k]:offsets[k] + counts[k]]``."""

    seeds: tuple[object, ...]
    values: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray


def _groups(data: pd.DataFrame) -> _Groups:
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    missing = [c for c in ("seed", "unit", "value") if c not in data.columns]
    if missing:
        raise ValueError(f"data lacks column(s) {', '.join(missing)}; needs seed, unit, value")
    if data.empty:
        raise ValueError("data is empty: no measurements to resample")
    if data["seed"].isna().any() or data["unit"].isna().any():
        raise ValueError("data has a missing seed or unit label")
    try:
        values = data["value"].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"data column 'value' is not numeric: {err}") from err
    bad = ~np.isfinite(values)
    if bad.any():
        seeds = sorted(set(data.loc[bad, "seed"].tolist()), key=str)
        kind = "NaN" if np.isnan(values[bad]).all() else "NaN or infinite"
        raise ValueError(
            f"data has {int(bad.sum())} {kind} value(s) (seed(s) {', '.join(map(str, seeds))}); "
            "drop or fix them before resampling"
        )
    dupes = data.duplicated(["seed", "unit"])
    if dupes.any():
        first = data.loc[dupes, ["seed", "unit"]].iloc[0].tolist()
        raise ValueError(
            f"data has {int(dupes.sum())} duplicated (seed, unit) pair(s), e.g. {tuple(first)}; "
            "each unit must appear once per seed"
        )
    frame = pd.DataFrame({"seed": data["seed"], "unit": data["unit"], "value": values})
    frame = frame.sort_values(["seed", "unit"], kind="stable")
    counts_by_seed = frame.groupby("seed", sort=True).size()
    counts = counts_by_seed.to_numpy(dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return _Groups(
        seeds=tuple(counts_by_seed.index.tolist()),
        values=frame["value"].to_numpy(dtype=float),
        counts=counts,
        offsets=offsets,
    )


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")


# --------------------------------------------------------------------------------------------
# statistics


def point_estimate(data: pd.DataFrame) -> float:
    """The mean over seeds of the per-seed means of ``value`` (each seed weighs equally)."""
    g = _groups(data)
    sums = np.add.reduceat(g.values, g.offsets)
    return float((sums / g.counts).sum() / len(g.counts))


def two_level_bootstrap(
    data: pd.DataFrame,
    n_resamples: int,
    rng: np.random.Generator,
    statistic: str = "mean",
) -> np.ndarray:
    """``n_resamples`` two-level bootstrap replicates of the mean over seeds of per-seed means.

    ``data`` has columns ``seed``, ``unit``, ``value``; rows are sorted by seed then unit first,
    so the row order of ``data`` does not matter. One resample draws ``S`` seeds with replacement
    (``S`` = number of seeds), then for each drawn seed ``n_s`` of its units with replacement
    (``n_s`` = its number of units), and returns the mean over the ``S`` drawn seeds of their
    resampled means: each seed weighs equally, whatever its number of units. Seeds may have
    different numbers of units. ``statistic`` is ``"mean"`` (the only one implemented).

    Random numbers: ``rng`` is split into two child generators (``rng.spawn(2)``, so ``rng``
    must carry a SeedSequence, as ``np.random.default_rng`` does); the first gives the seed
    draws, the second the unit draws, both as uniform doubles ``u`` mapped to ``floor(u * n)``.
    Resample ``r`` takes, in order, its ``S`` seed uniforms from the first stream and, for its
    drawn seeds in order, ``n_s`` unit uniforms each from the second. The vectorised code
    consumes both streams in exactly that order, so the result equals an explicit double loop
    and does not depend on the chunking used to bound memory.
    """
    _check_statistic(statistic)
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, not {n_resamples!r}")
    n_resamples = int(n_resamples)
    g = _groups(data)
    n_seeds = len(g.counts)
    seed_rng, unit_rng = rng.spawn(2)
    out = np.empty(n_resamples, dtype=float)
    chunk = max(1, _MAX_DRAWS // (n_seeds * int(g.counts.max())))
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        drawn = np.floor(seed_rng.random((c, n_seeds)) * n_seeds).astype(np.int64)
        drawn = np.minimum(drawn, n_seeds - 1).ravel()  # (c * S,) row-major: resample, slot
        lengths = g.counts[drawn]
        draw_len = np.repeat(lengths, lengths)
        local = np.floor(unit_rng.random(int(lengths.sum())) * draw_len).astype(np.int64)
        index = np.repeat(g.offsets[drawn], lengths) + np.minimum(local, draw_len - 1)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        means = np.add.reduceat(g.values[index], starts) / lengths
        out[start : start + c] = means.reshape(c, n_seeds).sum(axis=1) / n_seeds
    return out


def _check_resampled(resampled: np.ndarray) -> np.ndarray:
    values = np.asarray(resampled, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no resampled statistics")
    if np.isnan(values).any():
        raise ValueError("resampled statistics contain NaN")
    return values


def bootstrap_p_value(resampled: np.ndarray, threshold: float, direction: Direction) -> float:
    """One-sided bootstrap p for "the statistic is below ``threshold``" (``direction="below"``)
    or "above ``threshold``" (``"above"``): ``(1 + k) / (1 + n)`` with ``n`` resamples of which
    ``k`` lie on the wrong side of the threshold or on it (``>=`` for below, ``<=`` for above).
    """
    values = _check_resampled(resampled)
    if direction == "below":
        wrong = int(np.count_nonzero(values >= threshold))
    elif direction == "above":
        wrong = int(np.count_nonzero(values <= threshold))
    else:
        raise ValueError(f"direction must be 'below' or 'above', not {direction!r}")
    return (1 + wrong) / (1 + values.size)


def percentile_interval(resampled: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval: the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the resampled statistics (linear interpolation)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level!r}")
    values = _check_resampled(resampled)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order of the input.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of
    the ``i``-th is ``max_{j <= i} min(1, (m - j + 1) p_(j))``: step-down, monotone in the raw
    p, capped at 1. Ties keep their input order (which does not change the values).
    """
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1]; got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m, dtype=float)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


# --------------------------------------------------------------------------------------------
# claims


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: "the statistic of ``metric`` is ``direction`` ``threshold``".

    ``metric``, ``a``, ``b`` (e.g. the two methods or models compared), ``point`` (e.g. the
    epsilon, cycle or repetition the claim is about) and ``unit`` (of the estimate) are
    free-form labels filled by the caller and copied to the output table.
    """

    id: str
    text: str
    direction: Direction
    threshold: float
    metric: str | None = None
    a: str | None = None
    b: str | None = None
    point: str | None = None
    unit: str | None = None
    # Fewest seeds to resample: 2 for the two-level bootstrap; 1 for a claim whose data pool
    # one replicate's units under one seed label (a study on one replicate: exploratory).
    min_seeds: int = MIN_SEEDS

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"claim id must be a non-empty string, not {self.id!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"claim {self.id!r}: direction must be 'below' or 'above', not {self.direction!r}"
            )
        threshold = float(self.threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"claim {self.id!r}: threshold must be finite, not {threshold!r}")
        object.__setattr__(self, "threshold", threshold)


def claim_generator(seed: int, claim_id: str) -> np.random.Generator:
    """The claim's own generator: a SeedSequence of the base seed and the first 128 bits of the
    SHA-256 of the claim id (stable across processes, unlike the salted ``hash()``)."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    digest = hashlib.sha256(f"claims/{claim_id}".encode()).digest()
    entropy = [int(seed), int.from_bytes(digest[:16], "little")]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _verdict(claim: Claim, p_holm: float, ci: tuple[float, float], alpha: float) -> str:
    if p_holm < alpha:
        return "held"
    low, high = ci
    contradicted = low > claim.threshold if claim.direction == "below" else high < claim.threshold
    return "not held" if contradicted else "inconclusive"


def evaluate_claims(
    claims: Sequence[Claim],
    data: Mapping[str, pd.DataFrame],
    n_resamples: int = 10_000,
    level: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per claim (in the order given) with columns ``COLUMNS``.

    ``data[claim.id]`` holds the claim's measurements (columns ``seed``, ``unit``, ``value``).
    For each claim: ``estimate`` (mean over seeds of per-seed means), the ``level`` percentile
    interval ``ci_low``, ``ci_high`` and the raw one-sided ``p_value`` from a two-level bootstrap
    of ``n_resamples`` resamples with the claim's own generator (``claim_generator(seed, id)``),
    ``p_holm`` (Holm across the claims evaluated here), ``seeds`` (distinct seeds), ``units``
    (measurements over all seeds) and ``verdict``:

    * ``held``: ``p_holm < alpha``;
    * ``not held``: otherwise, if the interval lies strictly on the other side of the threshold
      (``ci_low > threshold`` for a "below" claim, ``ci_high < threshold`` for "above");
    * ``inconclusive``: otherwise.

    A claim without data (absent or empty frame) or with fewer than ``claim.min_seeds`` seeds
    (2 unless the claim pools units under one seed) is
    ``inconclusive`` with a ``reason``, NaN numbers, and takes no part in the Holm correction
    (it adds no test to the family). ``reason`` is empty for evaluated claims. Malformed data
    (missing columns, NaN values, duplicated units) raise ValueError naming the claim.
    ``table.attrs`` records ``n_resamples``, ``level``, ``alpha`` and ``seed``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level!r}")
    ids = [claim.id for claim in claims]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicated claim id(s): {', '.join(dupes)}")

    rows: list[dict[str, object]] = []
    tested: list[int] = []  # rows that take part in the Holm correction
    for claim in claims:
        row: dict[str, object] = {
            "id": claim.id,
            "claim": claim.text,
            "estimate": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "level": float(level),
            "p_value": math.nan,
            "p_holm": math.nan,
            "seeds": 0,
            "units": 0,
            "verdict": "inconclusive",
            "reason": "",
            "metric": claim.metric,
            "a": claim.a,
            "b": claim.b,
            "point": claim.point,
            "direction": claim.direction,
            "threshold": claim.threshold,
        }
        rows.append(row)
        frame = data.get(claim.id)
        if frame is None or len(frame) == 0:
            row["reason"] = "no measurements"
            continue
        try:
            groups = _groups(frame)
        except ValueError as err:
            raise ValueError(f"claim {claim.id!r}: {err}") from err
        row["seeds"] = len(groups.counts)
        row["units"] = int(groups.counts.sum())
        if len(groups.counts) < claim.min_seeds:
            row["reason"] = (
                f"{len(groups.counts)} seed; at least {claim.min_seeds} needed to resample seeds"
            )
            continue
        resampled = two_level_bootstrap(frame, n_resamples, claim_generator(seed, claim.id))
        low, high = percentile_interval(resampled, level)
        row.update(
            estimate=point_estimate(frame),
            ci_low=low,
            ci_high=high,
            p_value=bootstrap_p_value(resampled, claim.threshold, claim.direction),
        )
        tested.append(len(rows) - 1)

    for i, p_adj in zip(tested, holm([rows[i]["p_value"] for i in tested]), strict=True):
        row = rows[i]
        row["p_holm"] = p_adj
        row["verdict"] = _verdict(
            claims[i], p_adj, (float(row["ci_low"]), float(row["ci_high"])), alpha
        )

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table = table.astype({"seeds": "int64", "units": "int64"})
    table.attrs.update(
        n_resamples=int(n_resamples), level=float(level), alpha=float(alpha), seed=int(seed)
    )
    return table


# --------------------------------------------------------------------------------------------
# report


def _sig(value: object, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits; MISSING for NaN or None."""
    if value is None:
        return MISSING
    x = float(value)  # type: ignore[arg-type]
    if math.isnan(x):
        return MISSING
    text = f"{x:.{digits}g}"
    return "0" if text in ("-0", "0") else text


def _cell(value: object) -> str:
    return str(value).replace("|", r"\|").replace("\n", " ")


def claims_markdown(
    table: pd.DataFrame, *, n_resamples: int | None = None, alpha: float | None = None
) -> str:
    """The claims table (from ``evaluate_claims``) as Markdown, with a footnote stating the rule.

    Columns: claim, the claimed rule (``< threshold`` or ``> threshold``), estimate [CI] (3
    significant digits), Holm-adjusted p (2 significant digits), verdict (with its reason where
    there is one) and seeds / units. ``n_resamples`` and ``alpha`` default to ``table.attrs``
    (set by ``evaluate_claims``) and are left out of the footnote if unknown.
    """
    n_resamples = n_resamples if n_resamples is not None else table.attrs.get("n_resamples")
    alpha = alpha if alpha is not None else table.attrs.get("alpha")
    levels = sorted({float(x) for x in table["level"].dropna()}) if len(table) else []
    level = levels[0] if len(levels) == 1 else table.attrs.get("level")
    ci_name = f"{_sig(100 * level)}% CI" if level is not None else "CI"

    header = ["Claim", "Rule", f"Estimate [{ci_name}]", "p (Holm)", "Verdict", "Seeds / units"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.itertuples(index=False):
        sign = "<" if row.direction == "below" else ">"
        if math.isnan(float(row.estimate)):
            estimate = MISSING
        else:
            estimate = f"{_sig(row.estimate)} [{_sig(row.ci_low)}, {_sig(row.ci_high)}]"
        reason = row.reason if isinstance(row.reason, str) else ""  # NaN after a CSV round trip
        verdict = f"{row.verdict} ({reason})" if reason else str(row.verdict)
        cells = [
            row.claim,
            f"{sign} {_sig(row.threshold)}",
            estimate,
            _sig(row.p_holm, 2),
            verdict,
            f"{row.seeds} / {row.units}",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")

    resamples = f"{int(n_resamples):,} resamples" if n_resamples is not None else "resamples"
    level_text = f"{_sig(100 * level)}%" if level is not None else "percentile"
    alpha_text = f"{_sig(alpha)}" if alpha is not None else "alpha"
    footnote = (
        f"Estimate: mean over seeds of per-seed means; two-level bootstrap ({resamples}: seeds "
        f"with replacement, then units within each seed), {level_text} percentile CI, one-sided "
        f"p with Holm correction across claims. Verdict: held if p (Holm) < {alpha_text}; "
        "not held if the CI lies entirely on the other side of the threshold; else inconclusive "
        "(also when data are missing or come from fewer than 2 seeds, unless the claim pools "
        "units; those take no part in the Holm correction)."
    )
    return "\n".join([*lines, "", footnote]) + "\n"
