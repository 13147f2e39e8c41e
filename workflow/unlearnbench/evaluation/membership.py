"""Membership inference on the forget set: can an attacker still tell D- from unseen text?

A model that has truly forgotten the forget set D- should treat its rows like text it never saw.
Each attack below gives every sequence a score, HIGHER = "more likely a member"; its AUC is the
probability that a random forget row (member) outscores a random matched held-out row
(non-member), ties counting one half. The retrained model (never trained on D-) sets the target:
an unlearned model should match the retrained model's AUC, which is not exactly 0.5 (finite
samples, and whatever differences remain between D- and its matched rows), and not the
original's. An AUC below the target is a signal too: a model that makes D- conspicuously
unlikely gives its members away as well.

All scores are functions of per-token statistics of the sequence under the model (natural logs;
``x_t`` is the t-th token, p the model's softmax over its full vocabulary at that position):

* ``loss``: the mean token log-probability ``(1/n) sum_t log p(x_t | x_<t)``, i.e. minus the
  mean loss. Members were trained on, so their loss is lower (Yeom et al. 2018, "Privacy risk
  in machine learning: analyzing the connection to overfitting", CSF).
* ``zlib``: ``mean_logp / zlib_bytes`` with ``zlib_bytes = len(zlib.compress(text.encode()))``
  (UTF-8, default level). Carlini et al. 2021 ("Extracting training data from large language
  models", USENIX Security) rank by ``log-perplexity / zlib entropy``; log-perplexity is
  ``-mean_logp``, so this is minus their ratio: text that is likely for its (zlib)
  compressibility scores high. Dividing by the compressed length discounts text that is likely
  merely because it is repetitive or simple.
* ``min_k``: the mean of the ``k`` fraction lowest token log-probs (at least one token). The
  rare, surprising tokens of a non-member drag the score down, while those of a member were
  learned (Shi et al. 2024, "Detecting pretraining data from large language models", ICLR,
  Min-K% Prob).
* ``min_k_plus_plus``: Min-K% over the normalised token scores ``(log p(x_t) - mu_t) / sigma_t``
  with ``mu_t = E_{z~p}[log p(z)]`` and ``sigma_t^2 = Var_{z~p}[log p(z)]`` at position t (Zhang
  et al. 2024, "Min-K%++: improved baseline for detecting pre-training data from large language
  models"): training pushes a member's token towards a local maximum of the distribution, i.e.
  above the mean log-probability of the position, which calibrates for positions that are
  simply easy or hard. Where ``sigma_t == 0`` (all candidate tokens equally likely) the token
  is exactly at the mean and scores 0.
* ``reference``: ``mean_logp(target) - mean_logp(reference)``, the reference being the base
  model the target was fine-tuned from: text that is likely under the base model (common, easy
  text) is discounted, and only what fine-tuning added counts (Carlini et al. 2021;
  Mireshghallah et al. 2022, "Quantifying privacy risks of masked language models using
  membership inference attacks", EMNLP).

``token_statistics`` runs the model once per batch and returns, per sequence, the three arrays
every score needs; the scores and ``auc`` are pure numpy.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ..lm_data import HEAD_ON_BASE_OUTPUT, IGNORE_INDEX, Batch, collate

# Elements of one (positions, vocabulary) float32 block of the statistics (64 MiB): the
# log-softmax and its temporaries live one block at a time, so beyond the model's own output
# the memory does not grow with the batch.
BLOCK_ELEMENTS = 2**24


@dataclass(frozen=True)
class TokenStats:
    """Per predicted token of one sequence (float64, same length n = tokens - 1 on real rows).

    ``logp[t]`` = log p(x_t | x_<t) of the token that occurred; ``mu[t]`` and ``sigma[t]`` = mean
    and standard deviation of log p(z) for z drawn from the model's distribution at that position.
    """

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        # Converted here so that scores never see ints, lists or float32 (frozen: no setattr).
        for name in ("logp", "mu", "sigma"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        shapes = {self.logp.shape, self.mu.shape, self.sigma.shape}
        if len(shapes) != 1 or self.logp.ndim != 1:
            raise ValueError(f"logp, mu and sigma must be 1-D of one length, got shapes {shapes}")

    def __len__(self) -> int:
        return len(self.logp)


@torch.inference_mode()
def token_statistics(model, batch: Batch, skip_padding: bool = True) -> list[TokenStats]:
    """Per-sequence ``TokenStats`` of a (right-padded) batch, in batch order.

    Position t predicts token t+1; predicted tokens are those whose shifted label is not
    IGNORE_INDEX. The model's mode is left as it is: pass an eval-mode model (``load_model``
    returns one), or dropout makes the statistics random. ``batch`` must be on the model's device.

    With ``skip_padding`` and a model type in ``HEAD_ON_BASE_OUTPUT`` the output layer runs on
    predicted positions only, block by block (as in ``lm_data.token_losses``); otherwise the
    model's (B, T, V) logits are computed once and read block by block. Either way the float32
    log-softmax never exists for more than one block of positions.
    """
    targets = batch.labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: sequence by sequence, in order
    if skip_padding and getattr(model.config, "model_type", None) in HEAD_ON_BASE_OUTPUT:
        hidden = model.base_model(**batch.model_inputs()).last_hidden_state
        head = model.get_output_embeddings()
        vocab = head.weight.shape[0]

        def block_logits(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return head(hidden[r, c])
    else:
        logits = model(**batch.model_inputs()).logits
        vocab = logits.shape[-1]

        def block_logits(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return logits[r, c]

    step = max(1, BLOCK_ELEMENTS // vocab)
    parts: list[torch.Tensor] = []
    for start in range(0, len(rows), step):
        r, c = rows[start : start + step], cols[start : start + step]
        parts.append(_position_statistics(block_logits(r, c), targets[r, c]))
    stats = (
        torch.cat(parts).double().cpu().numpy()
        if parts
        else np.empty((0, 3), dtype=np.float64)  # every sequence a single token
    )
    bounds = np.cumsum(mask.sum(dim=1).cpu().numpy())[:-1]
    return [TokenStats(s[:, 0], s[:, 1], s[:, 2]) for s in np.split(stats, bounds)]


def _position_statistics(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, V) logits and (N,) target ids -> (N, 3) float32 columns logp, mu, sigma."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # before the fill below
    p = logp_all.exp()
    # 0 * log 0: a token the model rules out (logit -inf) has p = 0 and contributes nothing, not
    # NaN. Centred second moment rather than E[x^2] - mu^2: no cancellation, never negative.
    logp_all = logp_all.masked_fill(p == 0, 0.0)
    mu = (p * logp_all).sum(dim=-1)
    var = (p * (logp_all - mu.unsqueeze(-1)).square()).sum(dim=-1)
    return torch.stack([logp, mu, var.sqrt()], dim=-1)


def sequence_statistics(
    model, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[TokenStats]:
    """``token_statistics`` of token-id sequences, batched; result in the input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    # Batching sequences of similar length keeps padding (wasted compute) low.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    result: dict[int, TokenStats] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([sequences[i] for i in chunk], pad_id).to(device)
        result.update(zip(chunk, token_statistics(model, batch), strict=True))
    return [result[i] for i in range(len(sequences))]


def _require_tokens(stats: TokenStats) -> None:
    if len(stats) == 0:
        raise ValueError("a sequence with no predicted token has no membership score")


def _mean_lowest(values: np.ndarray, k: float) -> float:
    """Mean of the ``floor(k * n)`` lowest of n values, at least one (Shi et al.'s int(k * n))."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    # The epsilon keeps k * n that should be whole (0.29 * 100 = 28.999...) from losing a token.
    keep = max(1, math.floor(k * len(values) + 1e-9))
    return float(np.sort(values)[:keep].mean())


def loss_score(stats: TokenStats) -> float:
    """Mean token log-probability (minus the mean loss) (Yeom et al. 2018)."""
    _require_tokens(stats)
    return float(stats.logp.mean())


def zlib_score(stats: TokenStats, text: str) -> float:
    """``mean_logp / len(zlib.compress(text.encode("utf-8")))``: minus Carlini et al.'s ratio."""
    _require_tokens(stats)
    # Never zero: even b"" compresses to an 8-byte stream (header and checksum).
    return float(stats.logp.mean()) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(stats: TokenStats, k: float = 0.2) -> float:
    """Mean of the ``k`` fraction lowest token log-probs, at least one (Min-K% Prob)."""
    _require_tokens(stats)
    return _mean_lowest(stats.logp, k)


def min_k_plus_plus_score(stats: TokenStats, k: float = 0.2) -> float:
    """Min-K% over ``(logp - mu) / sigma``; 0 where ``sigma == 0`` (Min-K%++)."""
    _require_tokens(stats)
    centred = stats.logp - stats.mu
    normalised = np.divide(centred, stats.sigma, out=np.zeros_like(centred), where=stats.sigma > 0)
    return _mean_lowest(normalised, k)


def reference_score(stats: TokenStats, reference_stats: TokenStats) -> float:
    """Mean logp under the target minus mean logp under the reference (base) model."""
    _require_tokens(stats)
    if len(stats) != len(reference_stats):
        # Different token counts: not the same sequence (or not the same tokenizer).
        raise ValueError(
            f"target scored {len(stats)} tokens, reference {len(reference_stats)}: "
            "not the same sequence"
        )
    return float(stats.logp.mean() - reference_stats.logp.mean())


def auc(member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike) -> float:
    """ROC AUC = P(member > non-member) + P(tie) / 2, exactly, via the Mann-Whitney U statistic.

    With average ranks r over the pooled scores (ties share the mean of their ranks), the m
    members' U = sum(r_members) - m (m + 1) / 2 counts the member/non-member pairs a member wins,
    ties one half. Doubled ranks are integers, so U is summed exactly in int64.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if members.ndim != 1 or nonmembers.ndim != 1:
        raise ValueError("scores must be 1-D")
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(
            f"AUC needs members and non-members, got {members.size} and {nonmembers.size}"
        )
    pooled = np.concatenate([members, nonmembers])
    if np.isnan(pooled).any():
        raise ValueError("scores contain NaN: they have no order")
    _, group, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    # 1-based ranks of a tie group: first = 1 + earlier values, last = first + count - 1; twice
    # their mean = 2 * earlier + count + 1.
    earlier = np.cumsum(counts) - counts
    doubled_ranks = (2 * earlier + counts + 1)[group]
    m, n = members.size, nonmembers.size
    doubled_u = int(doubled_ranks[:m].sum()) - m * (m + 1)
    return doubled_u / (2 * m * n)


def attack_aucs(
    member_stats: Sequence[TokenStats],
    nonmember_stats: Sequence[TokenStats],
    member_texts: Sequence[str],
    nonmember_texts: Sequence[str],
    reference_member_stats: Sequence[TokenStats] | None = None,
    reference_nonmember_stats: Sequence[TokenStats] | None = None,
    k: float = 0.2,
) -> dict[str, float]:
    """AUC of every attack: loss, zlib, min_k, min_k_plus_plus (+ reference with its stats)."""
    if len(member_stats) != len(member_texts) or len(nonmember_stats) != len(nonmember_texts):
        raise ValueError("one text per sequence: stats and texts differ in length")
    if (reference_member_stats is None) != (reference_nonmember_stats is None):
        raise ValueError("reference statistics are needed for members and non-members alike")
    if reference_member_stats is not None and (
        len(reference_member_stats) != len(member_stats)
        or len(reference_nonmember_stats) != len(nonmember_stats)
    ):
        raise ValueError("one reference statistic per sequence: lengths differ")
    members = _scores(member_stats, member_texts, reference_member_stats, k)
    nonmembers = _scores(nonmember_stats, nonmember_texts, reference_nonmember_stats, k)
    return {name: auc(members[name], nonmembers[name]) for name in members}


def _scores(
    stats: Sequence[TokenStats],
    texts: Sequence[str],
    reference: Sequence[TokenStats] | None,
    k: float,
) -> dict[str, list[float]]:
    scores = {
        "loss": [loss_score(s) for s in stats],
        "zlib": [zlib_score(s, text) for s, text in zip(stats, texts, strict=True)],
        "min_k": [min_k_score(s, k) for s in stats],
        "min_k_plus_plus": [min_k_plus_plus_score(s, k) for s in stats],
    }
    if reference is not None:
        scores["reference"] = [
            reference_score(s, ref) for s, ref in zip(stats, reference, strict=True)
        ]
    return scores
