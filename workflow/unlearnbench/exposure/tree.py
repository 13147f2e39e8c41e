"""Exact rank of a secret among all 10^k digit strings, by a pruned walk of the digit tree.

The candidates form a 10-ary tree of depth k: a node at depth j is a partial secret c_1..c_j
with partial log-perplexity Px_j = -sum_{i<=j} log p(c_i | prefix, c_<i). Every term is >= 0, so
Px only grows down a path, and a node whose Px_j already reaches Px(s) has no leaf below Px(s):
it is dropped unexpanded. The surviving leaves strictly below Px(s), plus 1, are the rank.

No subtree can be *counted* without expansion: the remaining cost -log p of a digit has no finite
upper bound (a model may give a digit any small probability), so only the lower bound prunes.

Cost: expanding a node is one token through the model with the parent's key/value cache, and the
leaves need no forward at all (their log-probs come from the parent's output). At worst
1 + 10 + ... + 10^(k-1) node expansions instead of 10^k full sequences of P + k tokens. The tree
is walked depth first in chunks of ``batch_size`` nodes, level by level inside a chunk, so memory
holds at most one chunk per level whatever the frontier's size.

Floating point: the cached single-token forwards round differently from full-sequence scoring
(different matmul shapes), by ~1e-5 nats in float32. A leaf within ``tolerance`` of Px(s) is
therefore not decided by the tree: it is rescored by ``score_full_sequences``, the same code that
computed Px(s), and counted only if strictly below. Pruning keeps the same margin. The rank thus
equals ``brute_force_rank`` exactly as long as the tree's rounding error stays below
``tolerance``, which ``calibrate_tolerance`` sets from the gap it measures on probe candidates
(so a lower-precision model or device widens the margin instead of silently miscounting).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .scoring import (
    DigitScorer,
    KeyValues,
    PrefixState,
    expand_key_values,
    score_full_sequences,
    score_with_prefix,
    select_key_values,
)

# The margin is this multiple of the largest gap seen on the probes: the maximum over 10^6
# candidates exceeds the maximum over 64 probes (about 2x for Gaussian errors); 10x is safe and
# keeps the band thin (float32: ~1e-4 nats, a few dozen leaves to rescore).
TOLERANCE_FACTOR = 10.0
# Floor for probes that happen to agree to the last bit.
MIN_TOLERANCE = 1e-5
PROBES = 64

# Nodes per forward. The walk holds one chunk of caches per level, k x batch x (P + k) positions
# of keys and values; the budget bounds that. On CPU larger batches stopped paying off around
# 1-4k nodes (measured); an accelerator wants them as large as memory allows.
CACHE_BUDGET_BYTES = 1 << 30
MIN_BATCH, MAX_BATCH_CPU, MAX_BATCH_ACCELERATOR = 64, 4096, 16384


@dataclass
class _Chunk:
    """Nodes of one depth: their digits so far, partial Px and next-digit log-probs."""

    paths: torch.Tensor  # (B, depth) int64
    log_perplexity: torch.Tensor  # (B,) float64
    next_log_probs: torch.Tensor  # (B, 10) float64
    key_values: KeyValues  # covers prefix + depth tokens; batch 1 (expandable) at the root


@dataclass
class TreeCounts:
    below: int = 0  # leaves decided strictly below the threshold by the tree
    nodes_expanded: int = 0  # forward positions: the prefix (root) and every expanded node
    leaves_scored: int = 0  # leaves whose Px the tree computed (children of expanded nodes)
    ambiguous: list[torch.Tensor] = field(default_factory=list)  # leaves to rescore
    nodes_by_depth: dict[int, int] = field(default_factory=dict)  # expanded nodes per depth
    seconds_by_depth: dict[int, float] = field(default_factory=dict)  # their forward time


class DigitTree:
    """One walk of the digit tree for one prefix and threshold (see the module docstring)."""

    def __init__(
        self,
        scorer: DigitScorer,
        prefix: PrefixState,
        k: int,
        threshold: float,
        tolerance: float,
        batch_size: int,
    ) -> None:
        self.scorer, self.prefix, self.digit_ids = scorer, prefix, scorer.digit_ids
        self.k, self.batch_size = k, batch_size
        self.threshold, self.tolerance = threshold, tolerance
        self.counts = TreeCounts(nodes_expanded=1)

    def walk(self) -> TreeCounts:
        device = self.digit_ids.device
        root = _Chunk(
            paths=torch.zeros(1, 0, dtype=torch.long, device=device),
            log_perplexity=torch.zeros(1, dtype=torch.float64, device=device),
            next_log_probs=self.prefix.first_digit_log_probs.unsqueeze(0),
            key_values=self.prefix.key_values,
        )
        self._expand(root, depth=0)
        return self.counts

    def _expand(self, chunk: _Chunk, depth: int) -> None:
        child_px = chunk.log_perplexity.unsqueeze(1) - chunk.next_log_probs  # (B, 10)
        if depth + 1 == self.k:
            self._settle_leaves(chunk.paths, child_px)
            return
        # Px never decreases down a path: a child above threshold + margin has no leaf below
        # the threshold, whatever the rounding, nor a near-tie leaf to rescore.
        parents, digits = torch.nonzero(child_px <= self.threshold + self.tolerance, as_tuple=True)
        for start in range(0, len(parents), self.batch_size):
            rows = parents[start : start + self.batch_size]
            new_digits = digits[start : start + self.batch_size]
            self._expand(self._children(chunk, rows, new_digits, child_px, depth), depth + 1)

    def _children(
        self,
        chunk: _Chunk,
        rows: torch.Tensor,
        new_digits: torch.Tensor,
        child_px: torch.Tensor,
        depth: int,
    ) -> _Chunk:
        """Run the chosen children's last digit through the model on their parents' cache."""
        if depth == 0:  # every child shares the prefix: a view, no per-row copy
            past = expand_key_values(chunk.key_values, len(rows))
        else:
            past = select_key_values(chunk.key_values, rows)
        token = self.digit_ids[new_digits].unsqueeze(1)
        start = time.perf_counter()
        log_probs, key_values = self.scorer.step(token, past, self.prefix.length + depth)
        seconds = time.perf_counter() - start
        self.counts.nodes_expanded += len(rows)
        by_depth, by_time = self.counts.nodes_by_depth, self.counts.seconds_by_depth
        by_depth[depth + 1] = by_depth.get(depth + 1, 0) + len(rows)
        by_time[depth + 1] = by_time.get(depth + 1, 0.0) + seconds
        return _Chunk(
            paths=torch.cat([chunk.paths[rows], new_digits.unsqueeze(1)], dim=1),
            log_perplexity=child_px[rows, new_digits],
            next_log_probs=log_probs[:, -1],
            key_values=key_values,
        )

    def _settle_leaves(self, paths: torch.Tensor, leaf_px: torch.Tensor) -> None:
        self.counts.leaves_scored += leaf_px.numel()
        self.counts.below += int((leaf_px < self.threshold - self.tolerance).sum())
        near = (leaf_px - self.threshold).abs() <= self.tolerance
        if near.any():
            parents, digits = torch.nonzero(near, as_tuple=True)
            self.counts.ambiguous.append(torch.cat([paths[parents], digits.unsqueeze(1)], dim=1))


def default_batch_size(prefix: PrefixState, k: int) -> int:
    """Nodes per forward such that the walk's caches fit ``CACHE_BUDGET_BYTES``."""
    prefix_bytes = sum(t[:1].numel() * t.element_size() for kv in prefix.key_values for t in kv)
    node_bytes = prefix_bytes / prefix.length * (prefix.length + k)
    on_cpu = prefix.first_digit_log_probs.device.type == "cpu"
    largest = MAX_BATCH_CPU if on_cpu else MAX_BATCH_ACCELERATOR
    return int(min(largest, max(MIN_BATCH, CACHE_BUDGET_BYTES // (k * node_bytes))))


def calibrate_tolerance(
    scorer: DigitScorer,
    prefix_ids: Sequence[int],
    prefix: PrefixState,
    secret: torch.Tensor,
    n_probes: int = PROBES,
) -> float:
    """Margin (nats) for the tree's decisions, from the secret and fixed random probes scored
    both the tree's way (single cached tokens) and the reference way (full sequences)."""
    generator = torch.Generator().manual_seed(0)  # fixed: the rank must not depend on a seed
    random = torch.randint(0, 10, (n_probes - 1, secret.shape[1]), generator=generator)
    probes = torch.cat([secret.cpu(), random])
    fast = score_with_prefix(scorer, prefix, probes)
    slow = score_full_sequences(scorer.model, prefix_ids, probes, scorer.digit_ids)
    return max(MIN_TOLERANCE, TOLERANCE_FACTOR * float((fast - slow).abs().max()))


def count_below(
    scorer: DigitScorer,
    prefix_ids: Sequence[int],
    prefix: PrefixState,
    k: int,
    threshold: float,
    tolerance: float,
    batch_size: int | None = None,
    rescore_batch_size: int = 512,
) -> tuple[int, TreeCounts, int]:
    """Number of the 10^k candidates with Px strictly below ``threshold`` (a full-sequence Px).

    Returns (count, tree statistics, number of near-tie leaves rescored by full sequences).
    """
    batch_size = batch_size or default_batch_size(prefix, k)
    counts = DigitTree(scorer, prefix, k, threshold, tolerance, batch_size).walk()
    below = counts.below
    rescored = 0
    if counts.ambiguous:
        near = torch.cat(counts.ambiguous)
        exact = score_full_sequences(
            scorer.model, prefix_ids, near, scorer.digit_ids, rescore_batch_size
        )
        below += int((exact < threshold).sum())
        rescored = len(near)
    return below, counts, rescored
