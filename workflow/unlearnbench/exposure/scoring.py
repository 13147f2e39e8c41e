"""Log-perplexity of digit secrets: the scoring primitives shared by every exposure estimator.

A candidate secret c of k digits, after a fixed prefix, has log-perplexity
``Px(c) = -sum_j log p(c_j | prefix, c_<j)`` (natural log, nats), where p is the model's softmax
over its FULL vocabulary evaluated at the digit token: the model is free to put mass on
non-digit tokens, and that mass counts against every candidate. Only the k secret tokens are
scored; the prefix is common to all candidates.

Candidates are int64 tensors of digit values 0..9, shape (n, k); ``digit_ids[d]`` is the token id
of digit d (the tokenizer guarantees that a k-digit secret is exactly k such tokens).

Here: ``score_full_sequences`` (the obvious scorer: prefix + candidate, no cache; the reference),
``DigitScorer`` (cached forwards returning digit log-probs, fast), ``PrefixState`` (the prefix
run once, its key/value cache reused) and ``score_with_prefix`` (whole candidates on top of that
cache, for sampling-based estimators).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

# Rows of logits per block of the output layer (512 x V=8192 float32 = 16 MiB). Measured on the
# 2-core machine, a tree walk: 128-2048 rows all ~20% faster than unblocked with one thread; with
# two threads and a busy neighbour, 128 rows were 1.7x slower than 512 (each op is an OpenMP
# region that waits for a descheduled thread, and small blocks mean many ops).
CPU_HEAD_BLOCK = 512
ACCELERATOR_HEAD_BLOCK = 4096

# One (keys, values) pair per layer, each (batch, heads, length, head_dim).
KeyValues = list[tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) and no autograd, restoring the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module, device: torch.device | str | None = None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def digit_log_probs(logits: torch.Tensor, digit_ids: torch.Tensor) -> torch.Tensor:
    """log p(digit) under the full-vocabulary softmax: (..., V) logits -> (..., 10) float64.

    The normaliser (logsumexp over all V logits) is the one cost that cannot be restricted to the
    10 digit rows of the output layer; it is computed once per position, in float32 like the
    logits, and the subtraction is done in float64 so that sums over k positions add no error.
    """
    logits = logits.float()
    normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
    return logits.index_select(-1, digit_ids).double() - normaliser.double()


def _cache_keyword(model: torch.nn.Module) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40);
    the old name only for a model that declares it and not the new one."""
    params = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in params and "cache" not in params else "cache"


def forward_with_cache(
    model: torch.nn.Module, input_ids: torch.Tensor, past: KeyValues | None, position: int
) -> tuple[torch.Tensor, KeyValues]:
    """Run ``model`` on ``input_ids`` (B, T) placed at positions ``position..position+T-1``.

    ``model`` is a causal LM (returns ``.logits``) or its base model (``.last_hidden_state``);
    the output tensor (B, T, V or H) is returned with the grown key/values. ``past`` tensors may
    be expanded views (stride 0 in the batch dimension): the cache copies them once when it
    appends the new keys, so a shared prefix is never materialised per row beforehand.
    """
    batch, length = input_ids.shape
    cache = _cache_holding(past)
    positions = torch.arange(position, position + length, device=input_ids.device)
    out = model(
        input_ids=input_ids,
        position_ids=positions.unsqueeze(0).expand(batch, length),
        use_cache=True,
        **{_cache_keyword(model): cache},
    )
    hidden = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return hidden, [(keys, values) for keys, values, *_ in cache]


def _cache_holding(past: KeyValues | None) -> DynamicCache:
    """A DynamicCache over ``past`` without copying it.

    The constructor's ``ddp_cache_data`` path concatenates each tensor onto an empty one, a full
    copy of the batch's cache before the forward's own concatenation (measured: 15% of a tree
    walk). So the layers are created from zero-length slices and then pointed at ``past``; if a
    future transformers changes the layer objects, the copying constructor is used instead.
    """
    if past is None:
        return DynamicCache()
    cache = DynamicCache(ddp_cache_data=[(k[..., :0, :], v[..., :0, :]) for k, v in past])
    layers = getattr(cache, "layers", [])
    if len(layers) != len(past) or not all(hasattr(layer, "keys") for layer in layers):
        return DynamicCache(ddp_cache_data=past)
    for layer, (keys, values) in zip(layers, past, strict=True):
        layer.keys, layer.values = keys, values
    return cache


def _digit_log_probs_in_place(logits: torch.Tensor, digit_ids: torch.Tensor) -> torch.Tensor:
    """``digit_log_probs`` of a block of logits that it overwrites: no (rows, V) temporaries."""
    logits = logits.float()  # a no-op for float32 models
    chosen = logits.index_select(-1, digit_ids).double()
    peak = logits.amax(dim=-1, keepdim=True)
    total = logits.sub_(peak).exp_().sum(dim=-1, keepdim=True)
    return chosen - (peak.double() + total.double().log())


def head_blocks(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    block: int,
    starts: Iterable[int] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, logits)`` of the rows ``hidden[start : start + block]``: the output layer applied
    block by block into one reused buffer (each block overwrites the last), so the (rows, V)
    logits of a big batch never exist at once. ``starts``: the blocks wanted (None: all).
    ``DigitScorer`` and ``trie_walk.TokenScorer`` reduce each block in place."""
    weight, bias = head.weight, head.bias
    buffer = hidden.new_empty(min(len(hidden), block), weight.shape[0])
    for start in range(0, len(hidden), block) if starts is None else starts:
        rows = hidden[start : start + block]
        logits = buffer[: len(rows)]
        if bias is None:
            torch.mm(rows, weight.t(), out=logits)
        else:
            torch.addmm(bias, rows, weight.t(), out=logits)
        yield start, logits


class DigitScorer:
    """Digit log-probs of a causal LM, with the output layer applied in row blocks.

    The (rows, V) logits of a big batch do not fit in the CPU cache, and writing them, then
    reading them again (three times: max, exp, sum) for the logsumexp costs about as much as the
    matmul that made them. So when the model's logits are exactly
    ``output_embeddings(base_model(x))``, checked numerically on the prefix, the base model runs
    once and the head + logsumexp run on blocks of ``head_block`` rows that stay in cache. Any
    other model (logit scaling, soft capping, ...) falls back to its own ``forward``. On an
    accelerator, whose caches are not the point and whose kernel launches are, the default block
    is large.
    """

    def __init__(
        self, model: torch.nn.Module, digit_ids: torch.Tensor, head_block: int | None = None
    ):
        self.model, self.digit_ids = model, digit_ids
        on_cpu = digit_ids.device.type == "cpu"
        self.head_block = head_block or (CPU_HEAD_BLOCK if on_cpu else ACCELERATOR_HEAD_BLOCK)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        base = getattr(model, "base_model", model)
        fast = isinstance(head, torch.nn.Linear) and base is not model
        self.head: torch.nn.Linear | None = head if fast else None
        self.base = base if fast else model

    def verify(self, input_ids: torch.Tensor) -> None:
        """Keep the blocked head only if it reproduces the model's own digit log-probs."""
        if self.head is None:
            return
        reference = digit_log_probs(self.model(input_ids=input_ids).logits, self.digit_ids)
        blocked, _ = self.step(input_ids, None, 0)
        if not torch.allclose(blocked, reference, rtol=0.0, atol=1e-4):
            self.head, self.base = None, self.model

    def step(
        self, input_ids: torch.Tensor, past: KeyValues | None, position: int
    ) -> tuple[torch.Tensor, KeyValues]:
        """(B, T) tokens after ``past`` -> digit log-probs (B, T, 10) float64 and key/values."""
        out, key_values = forward_with_cache(self.base, input_ids, past, position)
        if self.head is None:
            return digit_log_probs(out, self.digit_ids), key_values
        flat = out.reshape(-1, out.shape[-1])
        return self._head_log_probs(flat).view(*out.shape[:-1], 10), key_values

    def _head_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) final hidden states -> (N, 10) digit log-probs, one reused logits buffer."""
        assert self.head is not None
        log_probs = torch.empty(len(hidden), 10, dtype=torch.float64, device=hidden.device)
        for start, logits in head_blocks(hidden, self.head, self.head_block):
            log_probs[start : start + len(logits)] = _digit_log_probs_in_place(
                logits, self.digit_ids
            )
        return log_probs


def expand_key_values(past: KeyValues, batch: int) -> KeyValues:
    """A batch-1 cache seen as ``batch`` rows without copying."""
    return [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in past]


def select_key_values(past: KeyValues, rows: torch.Tensor) -> KeyValues:
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in past]


@dataclass
class PrefixState:
    """The prefix run once: its cache and the log-probabilities of the first secret digit."""

    key_values: KeyValues
    first_digit_log_probs: torch.Tensor  # (10,) float64
    length: int

    @classmethod
    def compute(cls, scorer: DigitScorer, prefix_ids: Sequence[int]) -> PrefixState:
        if len(prefix_ids) == 0:
            raise ValueError("exposure: the canary prefix is empty; a secret needs a context")
        ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=scorer.digit_ids.device)
        scorer.verify(ids)
        log_probs, key_values = scorer.step(ids, None, 0)
        return cls(key_values, log_probs[0, -1], len(prefix_ids))


def gather_log_perplexity(step_log_probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(n, k, 10) per-step digit log-probs and (n, k) digits -> (n,) float64 log-perplexity.

    Summed left to right (j = 1..k), the order in which the tree accumulates its partial sums.
    """
    chosen = step_log_probs.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)
    total = torch.zeros(chosen.shape[0], dtype=torch.float64, device=chosen.device)
    for j in range(chosen.shape[1]):
        total = total - chosen[:, j]
    return total


def score_full_sequences(
    model: torch.nn.Module,
    prefix_ids: Sequence[int],
    candidates: torch.Tensor,
    digit_ids: torch.Tensor,
    batch_size: int = 512,
) -> torch.Tensor:
    """Px of each candidate, scoring prefix + candidate as one sequence: no cache, no pruning.

    This is the reference every faster path is checked against, and the arbiter of near-ties in
    the tree (``tree``). Call it inside ``eval_mode``.
    """
    device = digit_ids.device
    prefix = torch.tensor(list(prefix_ids), dtype=torch.long, device=device)
    n_prefix, k = len(prefix), candidates.shape[1]
    out = torch.empty(candidates.shape[0], dtype=torch.float64, device=device)
    for start in range(0, candidates.shape[0], batch_size):
        batch = candidates[start : start + batch_size].to(device)
        ids = torch.cat([prefix.expand(len(batch), -1), digit_ids[batch]], dim=1)
        logits = model(input_ids=ids).logits
        # The logits at position t predict token t + 1: positions P-1 .. P+k-2 predict the digits.
        step = digit_log_probs(logits[:, n_prefix - 1 : n_prefix + k - 1], digit_ids)
        out[start : start + len(batch)] = gather_log_perplexity(step, batch)
    return out


def score_with_prefix(
    scorer: DigitScorer, prefix: PrefixState, candidates: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Px of each candidate on top of the prefix cache: k - 1 tokens per candidate, not P + k.

    One token per forward, the same cached single-token steps as the tree walk
    (``tree``), so the gap between these values and ``score_full_sequences`` measures
    the tree's rounding error.
    """
    digit_ids = scorer.digit_ids
    device = digit_ids.device
    n, k = candidates.shape
    out = torch.empty(n, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        batch = candidates[start : start + batch_size].to(device)
        steps = [prefix.first_digit_log_probs.expand(len(batch), -1)]
        past = expand_key_values(prefix.key_values, len(batch))
        for j in range(k - 1):
            log_probs, past = scorer.step(digit_ids[batch[:, j : j + 1]], past, prefix.length + j)
            steps.append(log_probs[:, -1])
        out[start : start + len(batch)] = gather_log_perplexity(torch.stack(steps, dim=1), batch)
    return out


def digits_tensor(secret: str, device: torch.device | None = None) -> torch.Tensor:
    """'4819' -> tensor([[4, 8, 1, 9]]); non-digit characters (separators) are ignored."""
    digits = [int(ch) for ch in secret if ch.isdigit()]
    if not digits:
        raise ValueError(f"exposure: secret {secret!r} has no digits")
    return torch.tensor([digits], dtype=torch.long, device=device)


def digit_id_tensor(digit_token_ids: Sequence[int], device: torch.device) -> torch.Tensor:
    if len(digit_token_ids) != 10 or len(set(digit_token_ids)) != 10:
        raise ValueError(
            f"exposure: digit_token_ids must be 10 distinct token ids (of '0'..'9'), "
            f"got {list(digit_token_ids)}"
        )
    return torch.tensor(list(digit_token_ids), dtype=torch.long, device=device)
