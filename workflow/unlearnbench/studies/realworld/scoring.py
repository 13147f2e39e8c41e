"""How much a model memorised a naturally occurring string: bits over a reference model.

The main score follows the reference-model comparison of Carlini et al. 2021 ("Extracting
Training Data from Large Language Models"). With Px the log-perplexity of the string (nats,
summed over its tokens, teacher-forced after a fixed context) under the scored model and
ref_Px under a reference model that never saw the corpus (the BASE model: pretrained on general
text only, the model the original was fine-tuned from),

    memorisation = (ref_Px - Px) / ln 2   (bits),

how many bits better the scored model predicts the string than a model that never saw it:
0 when fine-tuning taught nothing about it, k when it became 2^k times likelier. What the base
model already predicts (common formats, a name that the context spells out, a domain named
earlier in the row) cancels, which is what a raw rank against random substitutes cannot do:
random-letter substitutes tokenize into many more BPE tokens than a real address, so even an
untrained model ranks most real addresses first. That rank is kept as a secondary column,
``exposure`` = log2(samples + 1) - log2(rank) against ``samples`` format-preserving random
substitutes (Secret Sharer exposure over a sampled space; ties count against the string), for
comparison with the canary study only; nothing is decided by it.

Which occurrence: the FIRST one that lies inside the model's trained window (rows longer than
the context are cut in training). Not the maximum over occurrences: that would cost one scoring
per copy (some credits addresses occur 20+ times), and the maximum of several noisy scores grows
with the number of copies by itself, which would bias the very trend (memorisation vs
repetition) the case study reports. One fixed context per string is also the same for every
model (the reference included), so scores compare across models. The context is the tokens of
that row within ``context_chars`` characters before the string (``<|endoftext|>`` too when the
window reaches the row start), at the positions they had in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...exposure.scoring import eval_mode, expand_key_values, forward_with_cache, model_device
from ...logs import progress
from ...seeding import numpy_rng
from .strings import Secret, substitutes


@dataclass(frozen=True)
class Probe:
    """One string ready to score: its context and its candidates as token ids."""

    masked: str
    context_ids: list[int]
    position: int  # position id of the first context token
    candidates: list[list[int]]  # [string, *substitutes], each as the tokens it occupies
    matches_training: bool  # the string's tokens equal those of the row as trained


@dataclass(frozen=True)
class Score:
    masked: str
    log_perplexity: float  # Px of the string (nats)
    extracted: bool  # greedy decoding after the context reproduces the string's tokens
    exposure: float  # secondary: rank against the substitutes, in bits (module docstring)
    rank: int


def memorisation_bits(ref_log_perplexity, log_perplexity):
    """(ref_Px - Px) / ln 2: bits by which the scored model beats the reference on the string."""
    return (np.asarray(ref_log_perplexity) - np.asarray(log_perplexity)) / math.log(2)


def substitute_exposure(rank: int, samples: int) -> float:
    """Bits of a string's rank among itself and ``samples`` substitutes: log2(samples + 1) -
    log2(rank). Not the canary exposure of ``unlearnbench.exposure`` (a rank in the whole
    space R): a secondary, Secret-Sharer-style reading over a small sample."""
    if not 1 <= rank <= samples + 1:
        raise ValueError(f"realworld: rank {rank} outside 1..{samples + 1}")
    return math.log2(samples + 1) - math.log2(rank)


def _encoded_row(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def build_probe(
    secret: Secret,
    texts: Sequence[str],
    tokenizer,
    n_positions: int,
    context_chars: int,
    samples: int,
    seed: int,
    key: str = "realworld",
) -> Probe | None:
    """The probe of ``secret`` at its first trained occurrence; None if no occurrence was trained.

    The string's tokens are those overlapping its characters (the first may carry the space
    before it, as byte-level BPE attaches it); each candidate is that same span with the string
    replaced and re-tokenized. Substitutes come from the ``eval`` stream keyed by the masked id,
    identical for every model. If a long substitute would run past the model's window, the
    probe slides left (positions) and, if it must, drops context from the left.
    """
    eos = tokenizer.eos_token_id
    for occ in secret.occurrences:
        text = texts[occ.row]
        ids, offsets = _encoded_row(tokenizer, text)
        inside = [i for i, (lo, hi) in enumerate(offsets) if lo < occ.end and hi > occ.start]
        first, last = inside[0], inside[-1]
        # Training sequences are eos + row tokens + eos cut to n_positions: token i sits at i + 1.
        if last + 1 < n_positions:
            break
    else:
        return None
    window = occ.start - context_chars
    lo = next((i for i in range(first) if offsets[i][0] >= window), first)
    lo = min(lo, first - 1) if first > 0 else 0
    context = ids[lo:first]
    position = lo + 1
    if lo == 0 and (window <= 0 or first == 0):
        context, position = [eos, *context], 0
    lead = text[offsets[first][0] : occ.start]
    trail = text[occ.end : offsets[last][1]]
    raw = text[occ.start : occ.end]
    rng = numpy_rng(seed, "eval", key, secret.masked)
    candidates = [
        tokenizer.encode(lead + c + trail, add_special_tokens=False)
        for c in [raw, *substitutes(raw, samples, rng)]
    ]
    longest = max(len(c) for c in candidates)
    if longest >= n_positions:
        return None
    overflow = len(context) + longest - n_positions
    if overflow > 0:
        context, position = context[overflow:], 0
    position = max(0, min(position, n_positions - len(context) - longest))
    return Probe(
        masked=secret.masked,
        context_ids=context,
        position=position,
        candidates=candidates,
        matches_training=candidates[0] == ids[first : last + 1],
    )


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def candidate_log_perplexities(
    model: torch.nn.Module, probe: Probe, batch_size: int, pad_id: int
) -> tuple[np.ndarray, bool]:
    """Px (float64, nats) of every candidate of ``probe``, and whether the first is extracted.

    The context runs once; its key/value cache is shared (an expanded view) by batches of
    candidates, right-padded: causal attention never lets a real token see the padding after it,
    so no mask is needed and padded positions are just not summed. Greedy decoding reproduces
    the string iff at every step the argmax given the context and the string's previous tokens
    is the string's next token, which the string's own teacher-forced pass already shows.
    """
    device = model_device(model)
    ctx = torch.tensor([probe.context_ids], dtype=torch.long, device=device)
    out = np.empty(len(probe.candidates), dtype=np.float64)
    extracted = False
    with eval_mode(model):
        logits, past = forward_with_cache(model, ctx, None, probe.position)
        first = torch.log_softmax(logits[0, -1].float(), dim=-1)
        after = probe.position + len(probe.context_ids)
        for start in range(0, len(probe.candidates), batch_size):
            ids, mask = _pad(probe.candidates[start : start + batch_size], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            chosen = first[ids[:, :1]]  # (B, 1)
            if ids.shape[1] > 1:
                step, _ = forward_with_cache(
                    model, ids[:, :-1], expand_key_values(past, len(ids)), after
                )
                log_probs = torch.log_softmax(step.float(), dim=-1)
                chosen = torch.cat([chosen, log_probs.gather(-1, ids[:, 1:, None])[..., 0]], 1)
                if start == 0:
                    greedy = torch.cat([first.argmax()[None], log_probs[0].argmax(-1)])
            elif start == 0:
                greedy = first.argmax()[None]
            if start == 0:
                n = int(mask[0].sum())
                extracted = bool(torch.equal(greedy[:n], ids[0, :n]))
            px = -(chosen.double() * mask).sum(dim=1)
            out[start : start + len(ids)] = px.cpu().numpy()
    return out, extracted


def score_probes(
    model: torch.nn.Module, probes: Sequence[Probe], batch_size: int, pad_id: int
) -> list[Score]:
    """Px, extraction and the substitute rank of each probe's string under ``model``."""
    scores = []
    for probe in progress(probes, desc="secrets"):
        px, extracted = candidate_log_perplexities(model, probe, batch_size, pad_id)
        samples = len(px) - 1
        rank = 1 + int(np.sum(px[1:] <= px[0]))
        scores.append(
            Score(
                masked=probe.masked,
                log_perplexity=float(px[0]),
                extracted=extracted,
                exposure=substitute_exposure(rank, samples),
                rank=rank,
            )
        )
    return scores


def reference_log_perplexities(
    model: torch.nn.Module, probes: Sequence[Probe], pad_id: int
) -> np.ndarray:
    """Px (float64, nats) of each probe's string alone (no substitutes) under ``model``: the
    same context, positions and tokens as ``score_probes``, one teacher-forced pass each."""
    out = np.empty(len(probes), dtype=np.float64)
    for i, probe in enumerate(progress(probes, desc="reference")):
        alone = replace(probe, candidates=probe.candidates[:1])
        out[i] = candidate_log_perplexities(model, alone, 1, pad_id)[0][0]
    return out
