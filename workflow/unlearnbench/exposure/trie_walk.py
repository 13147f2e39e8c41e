"""Exact rank of a secret in the trie of its candidates' token sequences (``trie``), by a pruned
walk, as ``tree`` walks the digit tree.

Depth first in chunks of ``batch_size`` nodes, each expansion one token through the model on its
parent's key/value cache, a node whose partial Px already exceeds Px(s) + tolerance dropped with
its subtree (every term is >= 0), leaves within the tolerance of Px(s) rescored by the
full-sequence scorer (``sequences.score_token_sequences``) that also computed Px(s). The
tolerance is calibrated on probe candidates as in ``tree``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..logs import progress_bar
from .scoring import (
    KeyValues,
    expand_key_values,
    forward_with_cache,
    head_blocks,
    select_key_values,
)
from .sequences import score_token_sequences
from .tree import (
    CACHE_BUDGET_BYTES,
    MAX_BATCH_ACCELERATOR,
    MAX_BATCH_CPU,
    MIN_BATCH,
    MIN_TOLERANCE,
    PROBES,
    TOLERANCE_FACTOR,
)
from .trie import TokenTrie

# Output-layer rows per block: (rows, V) float32 logits stay ~16 MiB on CPU (V = 50257: 83 rows)
# and are large on an accelerator; the fallback (the model's own forward) holds (batch, V).
CPU_HEAD_BYTES, ACCELERATOR_HEAD_BYTES = 16 << 20, 1 << 30
FALLBACK_LOGITS_BYTES = 256 << 20


class TokenScorer:
    """Log-probs of chosen next tokens of a causal LM, the output layer applied in row blocks.

    As ``scoring.DigitScorer``, but each row asks for its own tokens (a node's children): when
    the logits are ``output_embeddings(base_model(x))`` (checked on the context) the base model
    runs once and the head + logsumexp run on blocks of rows; otherwise the model's forward.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        base = getattr(model, "base_model", model)
        fast = isinstance(head, torch.nn.Linear) and base is not model
        self.head: torch.nn.Linear | None = head if fast else None
        self.base = base if fast else model
        self.vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
        head_bytes = CPU_HEAD_BYTES if device.type == "cpu" else ACCELERATOR_HEAD_BYTES
        self.head_block = max(16, head_bytes // (4 * self.vocab))

    def step(
        self, input_ids: torch.Tensor, past: KeyValues | None, position: int
    ) -> tuple[torch.Tensor, KeyValues]:
        """(B, T) tokens after ``past`` -> the last position's output (B, H or V), key/values."""
        out, key_values = forward_with_cache(self.base, input_ids, past, position)
        return out[:, -1], key_values

    def verify(self, context: torch.Tensor) -> None:
        """Keep the blocked head only if it reproduces the model's own log-probs."""
        if self.head is None:
            return
        hidden, _ = forward_with_cache(self.base, context, None, 0)
        rows = torch.arange(context.shape[1], device=self.device).repeat_interleave(self.vocab)
        tokens = torch.arange(self.vocab, device=self.device).repeat(context.shape[1])
        blocked = self.log_probs(hidden[0], rows, tokens).view(-1, self.vocab)
        reference = torch.log_softmax(self.model(input_ids=context).logits[0].float(), dim=-1)
        if not torch.allclose(blocked, reference.double(), rtol=0.0, atol=1e-4):
            self.head, self.base = None, self.model

    def log_probs(
        self, out: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """log p(tokens[i]) at ``out[rows[i]]`` (rows ascending), float64, full softmax."""
        if self.head is None:  # out are logits
            logits = out.float()
            normaliser = torch.logsumexp(logits, dim=-1)
            return logits[rows, tokens].double() - normaliser[rows].double()
        result = torch.empty(len(rows), dtype=torch.float64, device=out.device)
        edges = torch.arange(0, len(out) + self.head_block, self.head_block, device=rows.device)
        bounds = torch.searchsorted(rows, edges).tolist()
        starts = range(0, len(out), self.head_block)
        wanted = [start for block, start in enumerate(starts) if bounds[block] < bounds[block + 1]]
        for start, logits in head_blocks(out, self.head, self.head_block, wanted):
            block = start // self.head_block
            lo, hi = bounds[block], bounds[block + 1]
            logits = logits.float()  # a no-op for float32 models
            local = rows[lo:hi] - start
            chosen = logits[local, tokens[lo:hi]].double()
            peak = logits.amax(dim=-1, keepdim=True)
            total = logits.sub_(peak).exp_().sum(dim=-1)
            normaliser = peak.squeeze(-1).double() + total.double().log()
            result[lo:hi] = chosen - normaliser[local]
        return result


@dataclass
class ContextState:
    """The context run once: its cache and its last output (the first tail token's state)."""

    key_values: KeyValues
    out: torch.Tensor  # (1, H or V)
    length: int

    @classmethod
    def compute(cls, scorer: TokenScorer, context_ids: Sequence[int]) -> ContextState:
        ids = torch.tensor([list(context_ids)], dtype=torch.long, device=scorer.device)
        scorer.verify(ids)
        out, key_values = scorer.step(ids, None, 0)
        return cls(key_values, out, len(context_ids))


def score_cached(
    scorer: TokenScorer, state: ContextState, sequences: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Px of tails the walk's way (single cached tokens, blocked head), to calibrate it."""
    device = scorer.device
    sequences, lengths = sequences.to(device), lengths.to(device)
    n = len(sequences)
    rows = torch.arange(n, device=device)
    px = torch.zeros(n, dtype=torch.float64, device=device)
    out, past, out_rows = state.out, expand_key_values(state.key_values, n), torch.zeros_like(rows)
    for j in range(sequences.shape[1]):
        log_probs = scorer.log_probs(out, out_rows, sequences[:, j])
        px = torch.where(lengths > j, px - log_probs, px)
        if j + 1 < sequences.shape[1]:
            out, past = scorer.step(sequences[:, j : j + 1], past, state.length + j)
            out_rows = rows
    return px


def calibrate_tolerance(
    scorer: TokenScorer, trie: TokenTrie, state: ContextState, secret_node: int
) -> float:
    """Margin (nats) for the walk's decisions, from the secret and fixed random leaves scored
    both the walk's way and the reference way (as ``tree.calibrate_tolerance``)."""
    leaves = np.flatnonzero(trie.leaves)
    generator = np.random.default_rng(0)  # fixed: the rank must not depend on a seed
    probes = generator.choice(leaves, min(PROBES - 1, len(leaves)), replace=False)
    sequences, lengths = trie.sequences(np.concatenate([[secret_node], probes]))
    sequences, lengths = torch.from_numpy(sequences), torch.from_numpy(lengths)
    fast = score_cached(scorer, state, sequences, lengths)
    slow = score_token_sequences(scorer.model, trie.context_ids, sequences, lengths)
    return max(MIN_TOLERANCE, TOLERANCE_FACTOR * float((fast - slow).abs().max()))


@dataclass
class TrieCounts:
    below: int = 0  # candidates decided strictly below the threshold by the walk
    nodes_expanded: int = 1  # forward positions: the context (root) and every expanded node
    leaves_scored: int = 0  # leaf nodes whose Px the walk computed
    ambiguous: list[np.ndarray] = field(default_factory=list)  # leaf nodes to rescore
    nodes_by_depth: dict[int, int] = field(default_factory=dict)
    seconds_by_depth: dict[int, float] = field(default_factory=dict)


class TrieWalk:
    """One pruned walk of the trie for one threshold (see the module docstring)."""

    def __init__(
        self,
        scorer: TokenScorer,
        trie: TokenTrie,
        state: ContextState,
        threshold: float,
        tolerance: float,
        batch_size: int,
        bar: Any,
    ) -> None:
        self.scorer, self.trie, self.state = scorer, trie, state
        self.threshold, self.tolerance, self.batch_size = threshold, tolerance, batch_size
        self.counts, self.bar = TrieCounts(), bar
        self.leaves = torch.from_numpy(trie.leaves)

    def walk(self) -> TrieCounts:
        device = self.scorer.device
        root_px = torch.zeros(1, dtype=torch.float64, device=device)
        self._expand(np.zeros(1, dtype=np.int64), root_px, self.state.out, self.state.key_values, 0)
        return self.counts

    def _expand(
        self,
        nodes: np.ndarray,
        px: torch.Tensor,
        out: torch.Tensor,
        key_values: KeyValues,
        depth: int,
    ) -> None:
        device = self.scorer.device
        rows_np, children = self.trie.children(nodes)
        rows = torch.from_numpy(rows_np).to(device)
        tokens = torch.from_numpy(self.trie.token[children].astype(np.int64)).to(device)
        child_px = px[rows] - self.scorer.log_probs(out, rows, tokens)
        leaf = self.trie.leaves[children] > 0
        if leaf.any():
            self._settle(children[leaf], child_px[torch.from_numpy(leaf).to(device)])
        # Px never decreases down a path: beyond threshold + margin no leaf below, nor a near tie.
        open_ = self.trie.has_children(children)
        open_ &= (child_px <= self.threshold + self.tolerance).cpu().numpy()
        chosen = np.flatnonzero(open_)
        for start in range(0, len(chosen), self.batch_size):
            part = chosen[start : start + self.batch_size]
            part_t = torch.from_numpy(part).to(device)
            if depth == 0:  # every child shares the context: a view, no per-row copy
                past = expand_key_values(key_values, len(part))
            else:
                past = select_key_values(key_values, rows[part_t])
            begin = time.perf_counter()
            child_out, child_kv = self.scorer.step(
                tokens[part_t].unsqueeze(1), past, self.state.length + depth
            )
            seconds = time.perf_counter() - begin
            self.counts.nodes_expanded += len(part)
            by_depth, by_time = self.counts.nodes_by_depth, self.counts.seconds_by_depth
            by_depth[depth + 1] = by_depth.get(depth + 1, 0) + len(part)
            by_time[depth + 1] = by_time.get(depth + 1, 0.0) + seconds
            self.bar.update(len(part))
            self._expand(children[part], child_px[part_t], child_out, child_kv, depth + 1)

    def _settle(self, nodes: np.ndarray, leaf_px: torch.Tensor) -> None:
        multiplicity = self.leaves[nodes].to(leaf_px.device)
        self.counts.leaves_scored += len(nodes)
        below = leaf_px < self.threshold - self.tolerance
        self.counts.below += int(multiplicity[below].sum())
        near = ((leaf_px - self.threshold).abs() <= self.tolerance).cpu().numpy()
        if near.any():
            self.counts.ambiguous.append(nodes[near])


def default_batch_size(scorer: TokenScorer, state: ContextState, trie: TokenTrie) -> int:
    """Nodes per forward such that the walk's caches (one chunk per level) fit the budget."""
    prefix_bytes = sum(t[:1].numel() * t.element_size() for kv in state.key_values for t in kv)
    depth = max(1, trie.max_depth)
    node_bytes = prefix_bytes / state.length * (state.length + depth)
    largest = MAX_BATCH_CPU if scorer.device.type == "cpu" else MAX_BATCH_ACCELERATOR
    if scorer.head is None:  # the model's forward returns (batch, V) logits
        largest = min(largest, FALLBACK_LOGITS_BYTES // (4 * scorer.vocab))
    return int(min(largest, max(MIN_BATCH, CACHE_BUDGET_BYTES // (depth * node_bytes))))


@dataclass(frozen=True)
class TrieRank:
    below: int  # candidates strictly below the threshold
    threshold: float  # Px(s) from full-sequence scoring
    tolerance: float
    counts: TrieCounts
    rescored: int


def count_below_trie(
    model: torch.nn.Module,
    trie: TokenTrie,
    secret_node: int,
    device: torch.device,
    batch_size: int | None = None,
    tolerance: float | None = None,
    progress: bool | None = None,
) -> TrieRank:
    """Candidates of ``trie`` strictly below the Px of the leaf ``secret_node``.

    Call it inside ``eval_mode``. ``batch_size``: nodes per forward (None: as many as the cache
    budget allows); ``tolerance``: the near-tie margin in nats (None: calibrated).
    """
    secret, length = (torch.from_numpy(a) for a in trie.sequences(np.array([secret_node])))
    threshold = float(score_token_sequences(model, trie.context_ids, secret, length)[0])
    scorer = TokenScorer(model, device)
    state = ContextState.compute(scorer, trie.context_ids)
    if tolerance is None:
        tolerance = calibrate_tolerance(scorer, trie, state, secret_node)
    batch_size = batch_size or default_batch_size(scorer, state, trie)
    with progress_bar("exposure trie: walk", trie.n_inner, enabled=progress, unit="node") as bar:
        counts = TrieWalk(scorer, trie, state, threshold, tolerance, batch_size, bar).walk()
    below, rescored = counts.below, 0
    if counts.ambiguous:
        near = np.concatenate(counts.ambiguous)
        sequences, lengths = (torch.from_numpy(a) for a in trie.sequences(near))
        exact = score_token_sequences(model, trie.context_ids, sequences, lengths).cpu()
        multiplicity = torch.from_numpy(trie.leaves[near]).long()
        below += int(multiplicity[exact < threshold].sum())
        rescored = len(near)
    return TrieRank(below, threshold, tolerance, counts, rescored)
