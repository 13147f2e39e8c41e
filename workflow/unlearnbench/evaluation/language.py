"""Utility of a model on text: perplexity, and how far its predictions are from the retrained
model's (KL divergence), token by token on the same texts.

Perplexity is exp(total loss / predicted tokens) over a set of texts. The KL divergence
KL(p_model || p_reference) is averaged over the same predicted positions: it is zero for a
model that predicts exactly as the retrained one, whatever the text's own likelihood, so it
separates "as good as retraining" from "as good, but differently". Both come from one pass
per batch (the reference's pass runs beside the model's, nothing is cached: a vocabulary-wide
cache of a test split would not fit at paper scale). The forward passes run under the job's
autocast policy (bf16 on GPUs with ``compute.precision: bf16``); the log-softmax and the sums
stay float32 and float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..compute import autocast_forward
from ..lm_data import HEAD_ON_BASE_OUTPUT, IGNORE_INDEX, Batch, collate
from ..logs import progress


def target_log_probs(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax over the vocabulary at every predicted position (N, V) float32, the
    target token of each position (N,)), positions in row-major order of the batch."""
    ignore = torch.full_like(batch.labels[:, :1], IGNORE_INDEX)
    targets = torch.cat([batch.labels[:, 1:], ignore], dim=1)
    mask = targets != IGNORE_INDEX
    if getattr(getattr(model, "config", None), "model_type", None) in HEAD_ON_BASE_OUTPUT:
        # The output layer on real positions only (as lm_data.token_losses does).
        hidden = model.base_model(**batch.model_inputs()).last_hidden_state
        logits = model.get_output_embeddings()(hidden[mask])
    else:
        logits = model(**batch.model_inputs()).logits[mask]
    return torch.log_softmax(logits.float(), dim=-1), targets[mask]


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    desc: str,
    reference: torch.nn.Module | None = None,
) -> dict:
    """Token-level perplexity over ``sequences``; with ``reference``, also the mean per-token
    KL(model || reference) in nats."""
    if not sequences:
        return {"perplexity": None, "loss": None, "tokens": 0, "examples": 0, "kl": None}
    device = next(model.parameters()).device
    # Sorting by length keeps padding (wasted compute) low; the sums do not depend on order.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    total = kl_total = 0.0
    count = 0
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc=f"perplexity {desc}", total=len(starts)):
        rows = [sequences[i] for i in order[start : start + batch_size]]
        batch = collate(rows, pad_id).to(device)
        with autocast_forward(device):
            logp, targets = target_log_probs(model, batch)
        total -= float(logp.gather(1, targets[:, None]).double().sum())
        count += int(targets.numel())
        if reference is not None:
            with autocast_forward(device):
                ref_logp, _ = target_log_probs(reference, batch)
            kl = (logp.exp() * (logp - ref_logp)).sum(dim=1)
            kl_total += float(kl.double().sum())
    if count == 0:  # only one-token sequences: nothing is predicted, as for no sequences
        return {
            "perplexity": None,
            "loss": None,
            "tokens": 0,
            "examples": len(sequences),
            "kl": None,
        }
    mean = total / count
    return {
        "perplexity": math.exp(mean),
        "loss": mean,
        "tokens": count,
        "examples": len(sequences),
        "kl": kl_total / count if reference is not None else None,
    }
