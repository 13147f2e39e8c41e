"""Per-example gradients of the causal-LM loss, flattened into one preallocated m x d matrix.

One example is one sequence; its loss is the mean next-token cross-entropy over its real
tokens (``lm_data`` conventions: labels equal ``IGNORE_INDEX`` on padding). Row i of the result
is the gradient of example i's loss with respect to the chosen parameters, flattened in the
order of ``parameter_layout`` (a tied tensor, such as GPT-2's embedding and LM head, counts once).

Two methods give the same numbers:
- ``loop``: one forward/backward per example. Fastest on CPU (machine-facts.md: 1.5 s per 100
  sequences of the default model against 4.1 s for vmap) and the obvious reference.
- ``vmap``: ``torch.func.vmap(grad(...))`` over chunks of examples; batches the work for a GPU.
Rows are written straight into the output buffer (no list of m gradients then a stack, which
would double peak memory for m = 1024).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

from ..lm_data import IGNORE_INDEX
from ..logs import progress, progress_bar

METHODS = ("loop", "vmap", "auto")


@dataclass(frozen=True)
class ParameterSlice:
    """Where one parameter tensor lives in the flat gradient vector."""

    name: str
    start: int
    stop: int
    shape: tuple[int, ...]


def parameter_layout(
    model: torch.nn.Module, names: Sequence[str] | None = None
) -> list[ParameterSlice]:
    """Flat layout of ``names`` (default: all trainable parameters), tied tensors once.

    A name may be any alias of a tied tensor (``lm_head.weight`` = ``transformer.wte.weight``);
    it maps to the canonical name that ``named_parameters()`` reports.
    """
    canonical = dict(model.named_parameters())  # remove_duplicate=True: one name per tensor
    name_of = {id(p): n for n, p in canonical.items()}
    aliases = {n: name_of[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    if names is None:
        names = [n for n, p in canonical.items() if p.requires_grad]
    unknown = [n for n in names if n not in aliases]
    if unknown:
        raise ValueError(
            f"unknown parameter names {unknown}; the model has: {', '.join(canonical)}"
        )
    layout, start = [], 0
    for name in dict.fromkeys(aliases[n] for n in names):  # ordered, duplicates dropped
        param = canonical[name]
        layout.append(ParameterSlice(name, start, start + param.numel(), tuple(param.shape)))
        start += param.numel()
    if not layout:
        raise ValueError("no parameters selected: pass at least one trainable parameter name")
    return layout


def layout_blocks(layout: Sequence[ParameterSlice]) -> list[tuple[int, int]]:
    """Per-tensor blocks for the block-diagonal Fisher."""
    return [(s.start, s.stop) for s in layout]


def flat_dim(layout: Sequence[ParameterSlice]) -> int:
    return layout[-1].stop


def default_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)


def sequence_losses(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, shape (B,).

    A target counts when it is not ``IGNORE_INDEX`` and the token predicting it is real: with
    left padding the last pad would otherwise "predict" the first real token from a context of
    nothing but padding.
    """
    targets = labels[:, 1:]
    valid = (targets != IGNORE_INDEX) & attention_mask[:, :-1].bool()
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(),
        targets.masked_fill(~valid, IGNORE_INDEX),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return (losses * valid).sum(dim=1) / valid.sum(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only: explicit ids keep GPT-2 right under batching
    (it builds batch-1 positions otherwise) and make left padding equivalent to none."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


def per_example_gradients(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    parameter_names: Sequence[str] | None = None,
    method: str = "auto",
    chunk_size: int = 16,
    out: torch.Tensor | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Gradients of each sequence's mean token loss, as rows of an (m, d) float32 matrix.

    ``method``: "loop", "vmap", or "auto" (vmap when the model is on CUDA, else loop).
    ``out``: optional preallocated (m, d) buffer (it may live on another device, e.g. CPU RAM
    for a GPU model). ``progress``: a bar on the log stream; None shows it only on a terminal.
    The model runs in eval mode (no dropout) and is left as it was found.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if labels is None:
        labels = default_labels(input_ids, attention_mask)
    targets_per_example = (labels[:, 1:] != IGNORE_INDEX) & attention_mask[:, :-1].bool()
    empty = (targets_per_example.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"examples {empty[:10]} have no target token (need >= 2 real tokens)")
    device = next(model.parameters()).device
    if method == "auto":
        method = "vmap" if device.type == "cuda" else "loop"
    layout = parameter_layout(model, parameter_names)
    m, d = input_ids.shape[0], flat_dim(layout)
    if out is None:
        out = torch.empty(m, d, dtype=torch.float32, device=device)
    elif tuple(out.shape) != (m, d):
        raise ValueError(f"out has shape {tuple(out.shape)}; expected ({m}, {d})")
    frozen = [
        s.name for s, p in zip(layout, _tensors(model, layout), strict=True) if not p.requires_grad
    ]
    if frozen:
        raise ValueError(f"parameters {frozen} are frozen (requires_grad=False); leave them out")
    batch = [t.to(device) for t in (input_ids, attention_mask, labels)]
    run = _loop if method == "loop" else _vmap
    with _eval_mode(model), torch.enable_grad():  # callers may sit inside torch.no_grad()
        run(model, layout, *batch, out, chunk_size, progress)
    return out


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _trim(mask_rows: torch.Tensor) -> slice:
    """Columns from the first to the last real token of any row: padding costs no compute."""
    real = mask_rows.bool().any(dim=0).nonzero().flatten()
    return slice(int(real[0]), int(real[-1]) + 1)


def _loop(model, layout, input_ids, attention_mask, labels, out, _chunk, show) -> None:
    tensors = _tensors(model, layout)
    for i in progress(range(input_ids.shape[0]), desc="per-example grads", enabled=show):
        cols = _trim(attention_mask[i : i + 1])
        ids, mask, lab = (t[i : i + 1, cols] for t in (input_ids, attention_mask, labels))
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).logits
        loss = sequence_losses(logits, lab, mask)[0]
        for s, g in zip(layout, torch.autograd.grad(loss, tensors), strict=True):
            out[i, s.start : s.stop].copy_(g.reshape(-1))


def _vmap(model, layout, input_ids, attention_mask, labels, out, chunk_size, show) -> None:
    params = {s.name: p.detach() for s, p in zip(layout, _tensors(model, layout), strict=True)}
    dtype = next(iter(params.values())).dtype

    def loss_of_one(p, ids, mask, lab):
        ids, mask, lab = ids[None], mask[None], lab[None]
        logits = functional_call(
            model,
            p,  # the other parameters and buffers come from the model; ties are kept
            (ids,),
            {
                "attention_mask": _additive_mask(mask, dtype),
                "position_ids": position_ids_from_mask(mask),
            },
        ).logits
        return sequence_losses(logits, lab, mask)[0]

    per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0, 0))
    m = input_ids.shape[0]
    with (
        _eager_attention(model),
        progress_bar("per-example grads (vmap)", m, enabled=show) as bar,
    ):
        for lo in range(0, m, chunk_size):
            hi = min(lo + chunk_size, m)
            cols = _trim(attention_mask[lo:hi])
            rows = (t[lo:hi, cols] for t in (input_ids, attention_mask, labels))
            grads = per_example(params, *rows)
            for s in layout:
                out[lo:hi, s.start : s.stop].copy_(grads[s.name].reshape(hi - lo, -1))
            bar.update(hi - lo)


def _tensors(model: torch.nn.Module, layout: Sequence[ParameterSlice]) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    return [params[s.name] for s in layout]


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, T, T) causal + padding mask, additive. transformers builds its own mask with a
    data-dependent "all real tokens?" shortcut that vmap cannot trace; a 4-D mask is used as is.
    The most negative finite float (not -inf) keeps fully masked pad rows free of NaN."""
    length = mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = causal & mask[:, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)  # the model's dtype
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


@contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Eager attention under vmap: torch has no batching rule for the CPU SDPA kernels and
    falls back to a slow per-example loop (3x slower on the default model)."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)
