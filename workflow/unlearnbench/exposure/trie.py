"""The trie of all 10^k candidates' token sequences, for a tokenizer that merges digits.

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

The tails are inserted into a trie (shared token prefixes are one node); ``trie_walk`` walks it
with exact pruning. Building the trie never holds one Python object per candidate: texts are
tokenized in chunks by the tokenizer's batch call and kept as flat int32 arrays; the trie is
built level by level with ``np.unique`` and stored as flat arrays (parent, token, children as
contiguous ranges). Its size is estimated before tokenizing and tracked while building;
``build_trie`` refuses past its memory budget. GPT-2's tokenizer, 6 digits after "my pin code
is ": 10^6 leaves under ~17,000 inner nodes (the digit tree has 111,111).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..logs import progress_bar
from .sequences import encode_batch, encode_text, shared_length

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


def _shared_length_flat(
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
    probe_ids = encode_batch(tokenizer, probe_texts)
    for text, ids in zip(probe_texts[:CONSISTENCY_PROBES], probe_ids, strict=False):
        if encode_text(tokenizer, text) != ids:
            raise ValueError(
                f"exposure: {text!r} tokenises differently alone than in the tokenizer's batch "
                "call; exact ranks need one tokenization"
            )
    max_tail = max(len(ids) - shared_length(ids, prefix_ids) for ids in probe_ids)
    _refuse_memory(space, fmt.k, trie_bytes(space, max_tail), budget)

    tails, tail_lengths, shared = [], [], []
    with progress_bar("exposure trie: tokenize", space, enabled=progress, unit="cand") as bar:
        for first in range(0, space, TOKENIZE_CHUNK):
            stop = min(space, first + TOKENIZE_CHUNK)
            ids = encode_batch(tokenizer, fmt.texts(prefix, first, stop))
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))
            del ids
            n_shared = _shared_length_flat(flat, np.cumsum(lengths) - lengths, lengths, prefix_ids)
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


class TrieCache:
    """Tries of one tokenizer by (prefix, secret format, separator): one trie serves every secret
    of its format after its prefix, under every model a job scores."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._tries: dict[tuple[str, str, tuple[int, ...]], TokenTrie] = {}

    def __len__(self) -> int:
        return len(self._tries)

    def get(self, tokenizer: Any, canary: Any, progress: bool | None = None) -> TokenTrie:
        """The trie of ``canary`` (an ``exposure.canary.Canary``), built on first use."""
        key = (canary.prefix, canary.layout, tuple(canary.separator))
        if key not in self._tries:
            self._tries[key] = build_trie(
                tokenizer, canary.prefix, canary.secret, canary.separator, self.max_bytes, progress
            )
        return self._tries[key]
