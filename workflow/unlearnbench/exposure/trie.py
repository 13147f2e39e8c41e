"""Exact rank of a secret for any tokenizer, by a pruned walk of the trie of candidate tokens.

A tokenizer that merges digits (GPT-2's byte-level BPE: " 123", "45", " 000000") gives each of
the 10^k candidates its own token sequence, so the 10-ary digit tree of ``tree`` does not apply.
Each candidate's canary text, prefix + candidate in the secret's format, is tokenized the way the
canary itself is (one ``encode`` of the whole text, so merges across the prefix/secret boundary,
such as the prefix's trailing space joining the first digits, happen as in training). The
tokens every candidate shares with the prefix's own tokens are the context; the rest, the
candidate's tail, is what is scored: Px(c) = -sum_j log p(t_j | context, t_<j) over the tail,
under the full-vocabulary softmax. For a tokenizer with one token per digit this is the digit
tree's Px exactly; tokens shared by all candidates add the same cost to each, so where exactly
the context ends never changes a rank.

The tails are inserted into a trie (shared token prefixes are one node) and walked as ``tree``
walks the digit tree: depth first in chunks of ``batch_size`` nodes, each expansion one token
through the model on its parent's key/value cache, a node whose partial Px already exceeds
Px(s) + tolerance dropped with its subtree (every term is >= 0), leaves within the tolerance of
Px(s) rescored by the full-sequence scorer (``score_token_sequences``) that also computed Px(s).
The tolerance is calibrated on probe candidates as in ``tree``.

Building the trie never holds one Python object per candidate: texts are tokenized in chunks by
the tokenizer's batch call and kept as flat int32 arrays; the trie is built level by level with
``np.unique`` and stored as flat arrays (parent, token, children as contiguous ranges). Its size
is estimated before tokenizing and tracked while building; ``build_trie`` refuses past its
memory budget. GPT-2's tokenizer, 6 digits after "my pin code is ": 10^6 leaves under ~17,000
inner nodes (the digit tree has 111,111).
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..logs import progress_bar
from .scoring import (
    KeyValues,
    digit_log_probs,
    expand_key_values,
    forward_with_cache,
    gather_log_perplexity,
    select_key_values,
)
from .tree import (
    CACHE_BUDGET_BYTES,
    MAX_BATCH_ACCELERATOR,
    MAX_BATCH_CPU,
    MIN_BATCH,
    MIN_TOLERANCE,
    PROBES,
    TOLERANCE_FACTOR,
)

# Candidates tokenized per batch call: big enough that the call's overhead vanishes, small
# enough that one chunk's Python strings and id lists stay a few tens of MiB.
TOKENIZE_CHUNK = 1 << 15
CHUNK_OVERHEAD_BYTES = TOKENIZE_CHUNK * 1024
# Per candidate: lengths, offsets, its node at the current depth, the level's keys and inverse
# (int64 each); per tail token: the token (int32) and at most one node (token, parent, leaf
# count: int32; first child: int64).
BYTES_PER_CANDIDATE = 5 * 8
BYTES_PER_TOKEN = 4 + 20
MEMORY_FRACTION = 0.5  # of the available memory, the default budget of one trie
SIZE_PROBES = 256  # candidates tokenized to estimate the tail length before building
CONSISTENCY_PROBES = 16  # candidates encoded one by one and compared with the batch call

# Output-layer rows per block: (rows, V) float32 logits stay ~16 MiB on CPU (V = 50257: 83 rows)
# and are large on an accelerator; the fallback (the model's own forward) holds (batch, V).
CPU_HEAD_BYTES, ACCELERATOR_HEAD_BYTES = 16 << 20, 1 << 30
FALLBACK_LOGITS_BYTES = 256 << 20
# Full-sequence scoring: logits of one batch. Above ~32 MiB every batch's fresh tensors are
# mapped and page-faulted anew (measured: 64 MiB 2x slower than 16 MiB).
# Rows are bounded too: a batch is filled up to its full size even for one tail.
SEQUENCE_LOGITS_BYTES, MIN_SEQUENCE_BATCH, MAX_SEQUENCE_BATCH = 16 << 20, 8, 512


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids from a transformers tokenizer or a raw ``tokenizers.Tokenizer``."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(encoded, "ids", encoded))


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """``encode_text`` of each text, through the fast tokenizer's batch call when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    batch = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if batch is None:
        return [encode_text(tokenizer, text) for text in texts]
    return [encoding.ids for encoding in batch(texts, add_special_tokens=False)]


class SecretFormat:
    """The secret's layout: digit runs and the literal text around them ("555-1234")."""

    def __init__(self, secret: str) -> None:
        self.pieces = re.split(r"(\d+)", secret)  # literals at even, digit runs at odd indices
        self.k = sum(ch.isdigit() for ch in secret)
        if self.k == 0:
            raise ValueError(f"exposure: secret {secret!r} has no digits")
        self.layout = re.sub(r"\d", "#", secret)
        self._plain = len(self.pieces) == 3 and not self.pieces[0] and not self.pieces[2]

    def texts(self, prefix: str, start: int, stop: int) -> list[str]:
        """prefix + candidate for candidates ``start..stop-1`` (candidate i: i's k digits)."""
        k = self.k
        if self._plain:
            return [f"{prefix}{i:0{k}d}" for i in range(start, stop)]
        runs = [len(run) for run in self.pieces[1::2]]
        bounds = list(itertools.accumulate(runs, initial=0))
        literals = self.pieces[0::2]
        out = []
        for i in range(start, stop):
            digits = f"{i:0{k}d}"
            parts = [prefix, literals[0]]
            for j in range(len(runs)):
                parts += [digits[bounds[j] : bounds[j + 1]], literals[j + 1]]
            out.append("".join(parts))
        return out


def available_memory() -> int:
    """Bytes the system can still hand out (Linux: MemAvailable; else free physical pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def trie_bytes(space_size: int, max_tail: int) -> int:
    """Upper bound of ``build_trie``'s peak memory for tails of at most ``max_tail`` tokens."""
    per_candidate = BYTES_PER_CANDIDATE + max_tail * BYTES_PER_TOKEN
    return space_size * per_candidate + CHUNK_OVERHEAD_BYTES


def _refuse_memory(space_size: int, k: int, needed: int, budget: int) -> None:
    if needed > budget:
        raise ValueError(
            f"evaluate.exposure.max_exact_space: the exact rank of a {k}-digit secret under a "
            f"tokenizer that merges digits needs the token trie of all {space_size:,} "
            f"candidates, about {needed / 2**20:,.0f} MiB, over the {budget / 2**20:,.0f} MiB "
            "budget (max_trie_bytes, by default half the available memory); use fewer digits "
            "(canaries.secret_digits), a tokenizer with one token per digit, or lower "
            "max_exact_space to refuse up front"
        )


def _shared_length(
    flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, prefix_ids: Sequence[int]
) -> int:
    """How many leading tokens every sequence shares with ``prefix_ids``."""
    for j, token in enumerate(prefix_ids):
        index = np.minimum(offsets + j, len(flat) - 1)
        if not ((lengths > j) & (flat[index] == token)).all():
            return j
    return len(prefix_ids)


def _drop_leading(flat: np.ndarray, lengths: np.ndarray, n_drop: int) -> np.ndarray:
    """The flat tokens of each sequence without its first ``n_drop`` tokens."""
    offsets = np.cumsum(lengths) - lengths
    position = np.arange(len(flat)) - np.repeat(offsets, lengths)
    return flat[position >= n_drop]


def _prepend(flat: np.ndarray, lengths: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """The same fixed ``tokens`` put before every sequence."""
    m = len(tokens)
    out = np.empty(len(flat) + m * len(lengths), dtype=flat.dtype)
    starts = np.cumsum(lengths + m) - (lengths + m)
    fixed = np.zeros(len(out), dtype=bool)
    fixed[(starts[:, None] + np.arange(m)).ravel()] = True
    out[fixed] = np.tile(np.asarray(tokens, dtype=flat.dtype), len(lengths))
    out[~fixed] = flat
    return out


@dataclass
class TokenTrie:
    """The candidates' tails as a trie in flat arrays; node 0 is the root (the context).

    Nodes are numbered level by level and, within a level, by (parent, token), so the children
    of node i are the contiguous ids ``child_start[i] : child_start[i + 1]``, sorted by token.
    """

    prefix: str
    layout: str  # the secret's format, digits as '#'
    context_ids: list[int]  # tokens before every tail (caller's context + shared prefix tokens)
    extra_context: list[int]  # the caller's part of context_ids (before the prefix text)
    token: np.ndarray  # (M,) int32: token on the edge into the node (root: -1)
    parent: np.ndarray  # (M,) int32 (root: -1)
    child_start: np.ndarray  # (M + 1,) int64
    leaves: np.ndarray  # (M,) int32: candidates whose tail ends at the node
    level_start: np.ndarray  # (depth + 2,) int64: first node id of each depth
    space_size: int
    seconds: float = 0.0  # tokenizing and building

    @property
    def n_nodes(self) -> int:
        return len(self.token)

    @property
    def n_inner(self) -> int:
        """Nodes with children (the walk's worst case, root included)."""
        return int((np.diff(self.child_start) > 0).sum())

    @property
    def max_depth(self) -> int:
        return len(self.level_start) - 2

    def has_children(self, nodes: np.ndarray) -> np.ndarray:
        return self.child_start[nodes + 1] > self.child_start[nodes]

    def children(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in ``nodes`` of each child, child id), children grouped by parent in order."""
        starts, counts = self.child_start[nodes], np.diff(self.child_start)[nodes]
        rows = np.repeat(np.arange(len(nodes)), counts)
        first = np.cumsum(counts) - counts
        return rows, np.arange(len(rows)) - np.repeat(first - starts, counts)

    def sequences(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tails of ``nodes`` as (n, max length) int64, padded with 0, and their lengths."""
        nodes = np.asarray(nodes, dtype=np.int64)
        depth = np.searchsorted(self.level_start, nodes, side="right") - 1
        out = np.zeros((len(nodes), max(1, int(depth.max(initial=0)))), dtype=np.int64)
        current, position = nodes.copy(), depth - 1
        while (position >= 0).any():
            rows = np.flatnonzero(position >= 0)
            out[rows, position[rows]] = self.token[current[rows]]
            current[rows] = self.parent[current[rows]]
            position -= 1
        return out, depth

    def find(self, tail: Sequence[int]) -> int:
        """The node of a tail, or -1 when it is not in the trie."""
        node = 0
        for token in tail:
            start, stop = self.child_start[node], self.child_start[node + 1]
            at = start + np.searchsorted(self.token[start:stop], token)
            if at == stop or self.token[at] != token:
                return -1
            node = int(at)
        return node

    def locate(self, tokenizer: Any, secret: str) -> int:
        """The leaf of ``secret``, tokenized alone exactly as the canary text is."""
        if re.sub(r"\d", "#", secret) != self.layout:
            raise ValueError(f"exposure: secret {secret!r} does not have the trie's format")
        ids = self.extra_context + encode_text(tokenizer, self.prefix + secret)
        context = len(self.context_ids)
        node = self.find(ids[context:]) if ids[:context] == self.context_ids else -1
        if node < 0 or self.leaves[node] == 0:
            raise ValueError(
                f"exposure: canary {self.prefix + secret!r} tokenises differently alone than in "
                "the tokenizer's batch call; its rank would not be exact"
            )
        return node


def build_trie(
    tokenizer: Any,
    prefix: str,
    secret: str,
    context_ids: Sequence[int] = (),
    max_bytes: int | None = None,
    progress: bool | None = None,
) -> TokenTrie:
    """The trie of all 10^k candidates in ``secret``'s format after ``prefix`` (see module).

    ``context_ids`` go before the prefix text (e.g. the separator training puts before every
    sequence). ``max_bytes`` bounds the trie's memory (None: half of the available memory).
    """
    start_time = time.perf_counter()
    fmt = SecretFormat(secret)
    space = 10**fmt.k
    budget = int(available_memory() * MEMORY_FRACTION) if max_bytes is None else max_bytes
    prefix_ids = encode_text(tokenizer, prefix)

    # Estimate before the long tokenization: the tails of a few fixed probes.
    generator = np.random.default_rng(0)
    probes = sorted({0, space - 1, *generator.integers(0, space, SIZE_PROBES).tolist()})
    probe_texts = [fmt.texts(prefix, i, i + 1)[0] for i in probes]
    probe_ids = _encode_batch(tokenizer, probe_texts)
    for text, ids in zip(probe_texts[:CONSISTENCY_PROBES], probe_ids, strict=False):
        if encode_text(tokenizer, text) != ids:
            raise ValueError(
                f"exposure: {text!r} tokenises differently alone than in the tokenizer's batch "
                "call; exact ranks need one tokenization"
            )
    max_tail = max(len(ids) - _shared_length_one(ids, prefix_ids) for ids in probe_ids)
    _refuse_memory(space, fmt.k, trie_bytes(space, max_tail), budget)

    tails, tail_lengths, shared = [], [], []
    with progress_bar("exposure trie: tokenize", space, enabled=progress, unit="cand") as bar:
        for first in range(0, space, TOKENIZE_CHUNK):
            stop = min(space, first + TOKENIZE_CHUNK)
            ids = _encode_batch(tokenizer, fmt.texts(prefix, first, stop))
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))
            del ids
            n_shared = _shared_length(flat, np.cumsum(lengths) - lengths, lengths, prefix_ids)
            lengths -= n_shared
            if (lengths <= 0).any():
                raise ValueError(f"exposure: a candidate of {prefix + secret!r} adds no token")
            tails.append(_drop_leading(flat, lengths + n_shared, n_shared))
            tail_lengths.append(lengths)
            shared.append(n_shared)
            max_tail = max(max_tail, int(lengths.max()) + n_shared - min(shared))
            _refuse_memory(space, fmt.k, trie_bytes(space, max_tail), budget)
            bar.update(stop - first)

    # Chunks that shared more prefix tokens get those tokens back: every tail starts after the
    # tokens shared by all candidates.
    n_context = min(shared)
    for i, n_shared in enumerate(shared):
        if n_shared > n_context:
            tails[i] = _prepend(tails[i], tail_lengths[i], prefix_ids[n_context:n_shared])
            tail_lengths[i] = tail_lengths[i] + (n_shared - n_context)
    context = [*context_ids, *prefix_ids[:n_context]]
    if not context:
        raise ValueError("exposure: the canary prefix is empty; a secret needs a context")
    flat = np.concatenate(tails)
    lengths = np.concatenate(tail_lengths)
    del tails, tail_lengths
    trie = _levels(flat, lengths)
    return TokenTrie(
        prefix=prefix,
        layout=fmt.layout,
        context_ids=context,
        extra_context=list(context_ids),
        space_size=space,
        seconds=time.perf_counter() - start_time,
        **trie,
    )


def _shared_length_one(ids: Sequence[int], prefix_ids: Sequence[int]) -> int:
    n = 0
    while n < min(len(ids), len(prefix_ids)) and ids[n] == prefix_ids[n]:
        n += 1
    return n


def _levels(flat: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Trie arrays of the sequences ``flat`` (concatenated) of ``lengths``, level by level."""
    offsets = np.cumsum(lengths) - lengths
    node = np.zeros(len(lengths), dtype=np.int64)  # each sequence's node at the current depth
    width = int(flat.max()) + 1
    tokens, parents, level_start = [np.array([-1])], [np.array([-1])], [0, 1]
    for depth in range(int(lengths.max())):
        active = np.flatnonzero(lengths > depth)
        keys, inverse = np.unique(
            node[active] * width + flat[offsets[active] + depth], return_inverse=True
        )
        parents.append(keys // width)
        tokens.append(keys % width)
        node[active] = level_start[-1] + inverse
        level_start.append(level_start[-1] + len(keys))
    parent = np.concatenate(parents).astype(np.int32)
    n_nodes = len(parent)
    # Ids are sorted by parent (levels in order, (parent, token) within one): children contiguous.
    child_start = 1 + np.searchsorted(parent[1:], np.arange(n_nodes + 1))
    child_start[-1] = n_nodes
    return {
        "token": np.concatenate(tokens).astype(np.int32),
        "parent": parent,
        "child_start": child_start.astype(np.int64),
        "leaves": np.bincount(node, minlength=n_nodes).astype(np.int32),
        "level_start": np.asarray(level_start, dtype=np.int64),
    }


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
        weight, bias = self.head.weight, self.head.bias
        result = torch.empty(len(rows), dtype=torch.float64, device=out.device)
        edges = torch.arange(0, len(out) + self.head_block, self.head_block, device=rows.device)
        bounds = torch.searchsorted(rows, edges).tolist()
        buffer = out.new_empty(min(len(out), self.head_block), weight.shape[0])
        for block, start in enumerate(range(0, len(out), self.head_block)):
            lo, hi = bounds[block], bounds[block + 1]
            if lo == hi:
                continue
            hidden = out[start : start + self.head_block]
            logits = buffer[: len(hidden)]
            if bias is None:
                torch.mm(hidden, weight.t(), out=logits)
            else:
                torch.addmm(bias, hidden, weight.t(), out=logits)
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


def score_token_sequences(
    model: torch.nn.Module,
    context_ids: Sequence[int],
    sequences: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Px of each tail (row of ``sequences``, its first ``lengths`` tokens) after the context,
    scoring context + tail as one sequence: no cache, no pruning; the reference and the arbiter
    of near-ties, with ``scoring.score_full_sequences``' arithmetic (the same numbers for digit
    tokens). Call it inside ``eval_mode``.

    A tail's Px must not depend on which tails it is scored with (Px(s) alone, near-ties in a
    few, the brute force in all): the matmul kernels round differently for few rows (measured:
    one row, or one to three tails of one token, ~3e-7 nats off). So every forward has the same
    shape for a given tail length: tails of one length are batched together (no padding token
    enters a forward) and the last batch is filled up with copies of its last tail.
    """
    device = next(model.parameters()).device
    context = torch.tensor(list(context_ids), dtype=torch.long, device=device)
    sequences, lengths = torch.as_tensor(sequences), torch.as_tensor(lengths)
    n_context = len(context)
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    vocab = model.config.vocab_size
    out = torch.empty(len(sequences), dtype=torch.float64, device=device)
    for length in torch.unique(lengths).tolist():
        index = torch.nonzero(lengths == length).squeeze(1)
        positions = length if keep else n_context + length
        predicting = torch.arange(n_context - 1, n_context + length - 1, device=device)
        rows_fitting = SEQUENCE_LOGITS_BYTES // (4 * vocab * positions)
        batch = batch_size or min(MAX_SEQUENCE_BATCH, max(MIN_SEQUENCE_BATCH, rows_fitting))
        for start in range(0, len(index), batch):
            rows = index[start : start + batch]
            tail = sequences[rows.cpu(), :length].to(device)
            filled = torch.cat([tail, tail[-1:].expand(batch - len(tail), -1)])
            ids = torch.cat([context.expand(batch, -1), filled], dim=1)
            if keep:  # the output layer only where it predicts a tail token
                step_logits = model(input_ids=ids, logits_to_keep=predicting).logits
            else:
                step_logits = model(input_ids=ids).logits[:, n_context - 1 : -1]
            columns = torch.unique(tail)
            step = digit_log_probs(step_logits, columns)[: len(tail)]
            out[rows.to(device)] = gather_log_perplexity(step, torch.searchsorted(columns, tail))
    return out


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
