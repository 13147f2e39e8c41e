"""Fisher estimation's peak memory, before anything is allocated (no torch: the planner reads it
while Snakemake builds the DAG).

The rule ``estimate_fisher`` holds, per process: the model's float32 weights (4 d bytes), the
workspace of the per-example gradients (one example's gradient and activations for ``loop``,
16 of each for ``vmap``), and in turn the m x d gradient matrix G and the Woodbury set-up
(one float64 m x m Cholesky factor per dual block, n x n per primal block, and a Gram matrix
being factored: about 4 m x m float64 at once). Where G lives is the storage mode:

- ``device``: G on the GPU, next to the model, its columns split over W GPUs when sharded
  (``sharded.py``: each rank also holds a full-width buffer of the rows in flight). Saving
  copies G and the factors to host memory.
- ``host``: G in host RAM (each rank's columns when sharded), column blocks streamed to the
  GPU (two m x 65536 buffers).
- ``matrix_free``: G never stored (``matrix_free.py``); per-example gradients are recomputed
  ``recompute_rows`` at a time into two (rows, d) chunks, so memory is the model, those chunks,
  a gradient workspace and the Gram sums beside the factors, and time grows instead
  (``setup_gradients``: about m^2 / (2 rows) per-example gradients for the set-up). One process
  only: it has no columns to shard.

On a CPU run (no GPU) every mode is host memory. All three modes are implemented; only the
device mode's peaks are calibrated (below), the other two follow the same terms.

Calibration: ``estimate_fisher`` then ``save`` on CPU (storage device = host memory, ``loop``,
128-token sequences, vocabulary 2048, random weights, one thread), each point in a fresh
process; growth = peak ru_maxrss minus ru_maxrss once the model is built, against the
prediction less the weights (already in that baseline):

    model   d          m     blocks  measured MB  predicted MB  error
    2 x 64  239,360    16    full         37.1          27.9    -25 % (-9 MB)
    2 x 64  239,360    64    full         82.1          71.7    -13 % (-10 MB)
    2 x 64  239,360    256   full        259.8         247.1     -5 %
    2 x 64  239,360    1024  full        991.0         975.0     -2 %
    2 x 64  239,360    1024  layer      1129.0        1049.0     -7 %
    2 x 64  239,360    2048  full       2016.2        2030.0     +1 %
    4 x 256 3,716,608  64    layer       959.1         969.5     +1 %
    4 x 256 3,716,608  256   full       3683.6        3691.7     +0 %

With full blocks and from 1 GB of G up it is within 2 % (5 % at 0.25 GB); below ~100 MB a
fixed ~10 MB (autograd and allocator state of the first backward) is missing; per-tensor
blocks at large m keep ~one more m x m float64 per dual block than counted (allocator
retention, a guess). The process itself measured 430-450 MB here (``PROCESS_MB`` = 700 is the
planner's figure for a whole job, pandas and all). The GPU terms (CUDA context, vmap
workspace) are not measured: no GPU on this machine.

The paper-scale table (GPT-2 and OPT, m = 16..1024, 1-8 GPUs of 80 GB, per storage mode):
``PYTHONPATH=workflow python -m unlearnbench.fisher.memory --table`` (``--blocks layer``,
``--gradient-method auto``, ``--dtype bfloat16`` for the variants).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MB = 2**20
GB = 2**30
GPU_MB = 80 * 1024  # one 80 GB GPU (A100 / H100)
CUDA_CONTEXT_MB = 1024  # CUDA context and cuBLAS workspaces (not measured here: no GPU)
PROCESS_MB = 700  # Python + torch + transformers in one job (planner.PROCESS_MB)
STORAGE_MODES = ("device", "host", "matrix_free")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
VMAP_ROWS = 16  # per_example_gradients' vmap chunk (and sharded.VMAP_ROWS)
CHUNK_COLUMNS = 1 << 16  # woodbury.CHUNK_COLUMNS: the column block streamed in host mode
MAX_GPUS = 8  # one node: launch_command's torchrun is standalone
HOST_MB = 2 * 1024 * 1024  # the table's node: 2 TiB of RAM (an 8-GPU DGX H100)


@dataclass(frozen=True)
class ModelShape:
    """A GPT-2 or OPT decoder's trainable tensors (the LM head tied to the embeddings)."""

    label: str
    family: str  # "gpt2" or "opt"
    n_layer: int
    width: int
    n_head: int
    vocab: int
    positions: int
    ffn: int = 0  # 0: 4 x width
    embed_dim: int = 0  # OPT's word_embed_proj_dim (0: width)
    final_norm: bool = True  # OPT-350m has none (post-LayerNorm)

    def tensor_sizes(self) -> list[int]:
        """numel of every trainable tensor (the per-tensor blocks of ``blocks: layer``)."""
        h, ffn, embed = self.width, self.ffn or 4 * self.width, self.embed_dim or self.width
        norm = [h, h]
        if self.family == "gpt2":
            layer = [*norm, h * 3 * h, 3 * h, h * h, h, *norm, h * ffn, ffn, ffn * h, h]
            return [self.vocab * h, self.positions * h, *layer * self.n_layer, *norm]
        if self.family != "opt":
            raise ValueError(f"unknown model family {self.family!r}; known: gpt2, opt")
        attention = [h * h, h] * 4  # k, v, q, out projections
        layer = [*attention, *norm, h * ffn, ffn, ffn * h, h, *norm]
        projections = [h * embed, embed * h] if embed != h else []
        head = [self.vocab * embed, (self.positions + 2) * h, *projections]
        return [*head, *(norm if self.final_norm else []), *layer * self.n_layer]

    @property
    def d(self) -> int:
        return sum(self.tensor_sizes())


# Published shapes (the hub configs); d: 124,439,808 / 354,823,168 / 125,239,296 /
# 331,196,416 / 1,315,758,080 / 2,651,596,800 parameters.
MODELS = {
    "gpt2": ModelShape("GPT-2 124M", "gpt2", 12, 768, 12, 50257, 1024),
    "gpt2-medium": ModelShape("GPT-2 355M", "gpt2", 24, 1024, 16, 50257, 1024),
    "facebook/opt-125m": ModelShape("OPT-125m", "opt", 12, 768, 12, 50272, 2048),
    "facebook/opt-350m": ModelShape(
        "OPT-350m", "opt", 24, 1024, 16, 50272, 2048, embed_dim=512, final_norm=False
    ),
    "facebook/opt-1.3b": ModelShape("OPT-1.3b", "opt", 24, 2048, 32, 50272, 2048),
    "facebook/opt-2.7b": ModelShape("OPT-2.7b", "opt", 32, 2560, 32, 50272, 2048),
}


def hub_shape(label: str, config: dict) -> ModelShape | None:
    """The shape of a GPT-2 or OPT from its saved config.json (None: another architecture)."""
    kind = config.get("model_type")
    if kind == "gpt2":
        return ModelShape(
            label, "gpt2", config["n_layer"], config["n_embd"], config["n_head"],
            config["vocab_size"], config["n_positions"], ffn=config.get("n_inner") or 0,
        )  # fmt: skip
    if kind == "opt":
        final = config.get("do_layer_norm_before", True)
        final = final and not config.get("_remove_final_layer_norm", False)
        return ModelShape(
            label, "opt", config["num_hidden_layers"], config["hidden_size"],
            config["num_attention_heads"], config["vocab_size"],
            config["max_position_embeddings"], ffn=config["ffn_dim"],
            embed_dim=config.get("word_embed_proj_dim") or 0, final_norm=final,
        )  # fmt: skip
    return None


def scratch_shape(model: dict, vocab: int) -> ModelShape:
    """The config's GPT-2 trained from scratch (``model.*``, ``tokenizer.vocab_size``)."""
    return ModelShape(
        "scratch", "gpt2", model["n_layer"], model["n_embd"], model["n_head"], vocab,
        model["n_positions"],
    )  # fmt: skip


def block_widths(shape: ModelShape, blocks: str = "full", block_size: int = 65536) -> list[int]:
    """Widths of the Fisher's blocks for ``fisher.blocks`` (full, layer, fixed)."""
    d = shape.d
    if blocks == "full":
        return [d]
    if blocks == "layer":
        return shape.tensor_sizes()
    if blocks == "fixed":
        return [block_size] * (d // block_size) + ([d % block_size] if d % block_size else [])
    raise ValueError(f"fisher.blocks: unknown {blocks!r}; use one of full, layer, fixed")


def activation_bytes(shape: ModelShape, rows: int, tokens: int, backward: bool = True) -> float:
    """A forward pass of ``rows`` sequences of ``tokens``: per layer and token ~70 width plus
    10 heads x tokens float32 values kept for backward (1/4 of them without), and the logits:
    three vocabulary-sized buffers per token with backward (logits, log-softmax, gradient),
    two without (the planner's formula, calibrated on the default study)."""
    n_tokens = rows * tokens
    per_token = shape.n_layer * (70 * shape.width + 10 * shape.n_head * tokens)
    if not backward:
        per_token /= 4
    return n_tokens * per_token * 4 + (12 if backward else 8) * n_tokens * shape.vocab


def gradient_rows(gradient_method: str, device: str) -> int:
    """Per-example gradients materialised at once: ``auto`` is vmap on a GPU, loop on a CPU."""
    if gradient_method not in ("auto", "loop", "vmap"):
        raise ValueError(f"fisher.gradient_method: unknown {gradient_method!r}")
    vmap = gradient_method == "vmap" or (gradient_method == "auto" and device == "gpu")
    return VMAP_ROWS if vmap else 1


@dataclass(frozen=True)
class FisherMemory:
    """Peak memory of one ``estimate_fisher`` job: ``gpu_mb`` per GPU (0 on a CPU run) and
    ``host_mb`` for the whole job (every process); ``parts`` (MB, one process) explain them."""

    storage: str
    device: str
    gpus: int
    gpu_mb: float
    host_mb: float
    parts: dict[str, float] = field(default_factory=dict)

    def fits(self, gpu_mb: float = GPU_MB, host_mb: float | None = None) -> bool:
        return self.gpu_mb <= gpu_mb and (host_mb is None or self.host_mb <= host_mb)


def fisher_memory(
    shape: ModelShape,
    m: int,
    tokens: int,
    *,
    blocks: str = "full",
    block_size: int = 65536,
    storage: str = "device",
    dtype: str = "float32",
    gpus: int = 1,
    gradient_method: str = "auto",
    device: str = "gpu",
    process_mb: float = PROCESS_MB,
    recompute_rows: int = 16,
) -> FisherMemory:
    """Peak memory of estimating F from m per-example gradients of ``tokens``-token sequences.

    ``gpus``: processes (one per GPU); in ``device`` and ``host`` mode G's columns are split
    over them (matrix_free runs in one process: ``gpus`` is ignored there).
    ``device``: "gpu" or "cpu" (then everything is host memory and ``gpus`` is ignored).
    ``recompute_rows``: matrix_free's chunk of recomputed gradients.
    """
    if storage not in STORAGE_MODES:
        raise ValueError(f"fisher.storage: unknown {storage!r}; use one of {STORAGE_MODES}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"fisher.dtype: unknown {dtype!r}; use one of {tuple(DTYPE_BYTES)}")
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be gpu or cpu, got {device!r}")
    ranks = max(1, gpus) if device == "gpu" and storage != "matrix_free" else 1
    d, rows = shape.d, gradient_rows(gradient_method, device)
    if storage == "matrix_free" and rows > 1:
        rows = recompute_rows  # vmap computes a whole chunk at once
    widths = block_widths(shape, blocks, block_size)
    dual = [w for w in widths if w >= m]
    primal = [w for w in widths if w < m]
    # Primal blocks go round robin to the ranks (sharded.shard_plan): the busiest rank's share.
    primal_share = max(sum(w * w for w in primal[r::ranks]) for r in range(ranks))
    factors = 8 * (len(dual) * m * m + primal_share)
    widest_primal = max(primal, default=0)
    setup = 8 * max(4 * m * m if dual else 0, m * widest_primal + 2 * widest_primal**2)
    if dtype != "float32":  # products upcast each column chunk of G to float32
        setup += m * min(CHUNK_COLUMNS, d) * 4
    weights = 4 * d
    workspace = rows * 4 * d + activation_bytes(shape, rows, tokens)
    stored = m * math.ceil(d / ranks) * DTYPE_BYTES[dtype]
    sharded_rows = rows * 4 * d if ranks > 1 else 0
    parts = {"weights": weights, "gradient workspace": workspace, "factors": factors}
    parts["set-up"] = setup
    # matrix_free: two chunks of recomputed rows (one when a chunk holds all m), and the Gram
    # sums beside the factors
    held = min(recompute_rows, m)
    chunks, sums = (1 if held == m else 2) * held * 4 * d, factors
    if device == "cpu":
        if storage == "matrix_free":
            parts |= {"recomputed chunks": chunks, "Gram sums": sums}
            on_device = weights + chunks + workspace + sums + factors + setup
        else:
            parts["G"] = stored
            on_device = weights + stored + max(workspace, factors + setup)
        return FisherMemory(storage, device, 1, 0.0, process_mb + on_device / MB, _mb(parts))
    cuda = CUDA_CONTEXT_MB * MB
    if storage == "device":
        parts |= {"G": stored, "row buffer": sharded_rows}
        gpu = cuda + weights + stored + max(workspace + sharded_rows, factors + setup)
        host = stored + factors  # saving: G and the factors copied to host memory
    elif storage == "host":
        stream = 2 * m * min(CHUNK_COLUMNS, d) * DTYPE_BYTES[dtype]
        parts |= {"G (host)": stored, "stream buffers": stream, "row buffer": sharded_rows}
        gpu = cuda + weights + max(workspace + sharded_rows, stream + factors + setup)
        host = stored + factors
    else:
        parts |= {"recomputed chunks": chunks, "Gram sums": sums}
        gpu = cuda + weights + chunks + workspace + sums + factors + setup
        host = factors
    host_per_rank = process_mb * MB + max(weights, host)  # the model is loaded on the host first
    return FisherMemory(storage, device, ranks, gpu / MB, ranks * host_per_rank / MB, _mb(parts))


def _mb(parts: dict[str, float]) -> dict[str, float]:
    return {name: value / MB for name, value in parts.items()}


def fewest_gpus(
    shape: ModelShape, m: int, tokens: int, *, gpu_mb: float = GPU_MB, max_gpus: int = MAX_GPUS,
    host_mb: float | None = None, **kwargs,
) -> int | None:  # fmt: skip
    """The fewest GPUs (of one node) on which the estimate fits, or None."""
    for gpus in range(1, max_gpus + 1):
        if fisher_memory(shape, m, tokens, gpus=gpus, **kwargs).fits(gpu_mb, host_mb):
            return gpus
    return None


def largest_m(
    shape: ModelShape, tokens: int, gpus: int, *, gpu_mb: float = GPU_MB, **kwargs
) -> int:
    """The largest m (>= 2) that fits ``gpus`` GPUs, or 0 if even m = 2 does not."""

    def fits(m: int) -> bool:
        return fisher_memory(shape, m, tokens, gpus=gpus, **kwargs).fits(gpu_mb)

    if not fits(2):
        return 0
    lo, hi = 2, 4
    while fits(hi) and hi < 1 << 30:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def setup_gradients(m: int, rows: int) -> int:
    """Per-example gradients a matrix-free set-up computes (``MatrixFreeFisher.set_up``): every
    row chunk once as the held chunk, and again beside each later chunk."""
    sizes = [min(rows, m - lo) for lo in range(0, m, rows)]
    return sum(size + sum(sizes[:i]) for i, size in enumerate(sizes))


def largest_recompute_rows(
    shape: ModelShape, m: int, tokens: int, *, gpu_mb: float = GPU_MB, **kwargs
) -> int:
    """The largest ``fisher.recompute_rows`` (<= m) at which a matrix-free estimate fits one GPU,
    or 0 if even one row does not (fewer recomputations: m^2 / (2 rows))."""
    kwargs = {key: v for key, v in kwargs.items() if key != "recompute_rows"}
    kwargs["storage"] = "matrix_free"

    def fits(rows: int) -> bool:
        return fisher_memory(shape, m, tokens, recompute_rows=rows, **kwargs).gpu_mb <= gpu_mb

    if not fits(1):
        return 0
    lo, hi = 1, m + 1
    while hi - lo > 1:  # fits(lo), and hi is past the end or does not fit
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def gpu_refusal(
    shape: ModelShape,
    m: int,
    tokens: int,
    *,
    gpus: int = 1,
    gpu_mb: float = GPU_MB,
    storage: str = "device",
    host_mb: float | None = None,
    **kwargs,
) -> str | None:
    """None if the estimate fits ``gpus`` GPUs of ``gpu_mb``, else why not and what to change,
    the config key first (another storage mode is offered only where it also fits the job's
    ``host_mb``, when given)."""
    if storage == "matrix_free" and gpus > 1:
        return (
            f"fisher.storage: matrix_free runs in one process (it stores no columns to shard), "
            f"but rule estimate_fisher asks for {gpus} GPUs; give it resources gpu=1, or set "
            "fisher.storage: device or host for the sharded Fisher"
        )
    need = fisher_memory(shape, m, tokens, gpus=gpus, storage=storage, **kwargs)
    if need.gpu_mb <= gpu_mb:
        return None
    parts = need.parts
    rows = gradient_rows(kwargs.get("gradient_method", "auto"), "gpu")
    if storage == "matrix_free":
        key = "fisher.recompute_rows"
        problem = (
            f"{kwargs.get('recompute_rows', 16)} recomputed gradients of d = {shape.d:,} "
            f"parameters held twice ({parts['recomputed chunks'] / 1024:,.1f} GiB)"
        )
    elif rows > 1 and parts["gradient workspace"] > max(parts.get("G", 0), gpu_mb / 2):
        key = "fisher.gradient_method"
        problem = (
            f"vmap holds {rows} per-example gradients and their activations at once "
            f"({parts['gradient workspace'] / 1024:,.1f} GiB)"
        )
    else:
        key = "fisher.examples"
        problem = f"m = {m} gradients of d = {shape.d:,} parameters"
        if "G" in parts:
            problem += f" ({parts['G'] / 1024:,.1f} GiB of G per GPU)"
    fixes = []
    if rows > 1:
        loop = {**kwargs, "gradient_method": "loop"}
        if fisher_memory(shape, m, tokens, gpus=gpus, storage=storage, **loop).gpu_mb <= gpu_mb:
            fixes.append("set fisher.gradient_method: loop")
    if storage == "matrix_free":
        fewer = largest_recompute_rows(shape, m, tokens, gpu_mb=gpu_mb, **kwargs)
        if fewer:
            fixes.append(f"lower fisher.recompute_rows to {fewer}")
    else:
        more = fewest_gpus(shape, m, tokens, gpu_mb=gpu_mb, storage=storage, **kwargs)
        if more is not None:
            fixes.append(f"ask for {more} GPUs (resources gpu={more}: the sharded Fisher)")
    smaller = largest_m(shape, tokens, gpus, gpu_mb=gpu_mb, storage=storage, **kwargs)
    if 2 <= smaller < m:
        fixes.append(f"lower fisher.examples to {smaller}")
    for mode in STORAGE_MODES:
        other = fisher_memory(shape, m, tokens, gpus=gpus, storage=mode, **kwargs)
        one_process = mode == "matrix_free" and gpus > 1
        if mode != storage and other.fits(gpu_mb, host_mb) and not one_process:
            fixes.append(f"set fisher.storage: {mode} ({other.gpu_mb / 1024:,.1f} GiB)")
            break
    return (
        f"{key}: rule estimate_fisher would need about {need.gpu_mb:,.0f} MB per GPU on {gpus} "
        f"GPU{'s' if gpus > 1 else ''} ({problem}; storage {storage}), more than a GPU's "
        f"{gpu_mb:,.0f} MB; " + ("; or ".join(fixes) if fixes else "no setting fits one node")
    )


# The paper-scale table (README "Memory and time at scale"; ``--table``).

TABLE_MODELS = tuple(MODELS)
TABLE_EXAMPLES = (16, 64, 256, 1024)
TABLE_GPUS = (1, 2, 4, 8)
# paper.yaml's 1000-character examples at ~3 characters a token (planner.tokens_per_sequence).
TABLE_TOKENS = 336


def _cell(gib: float, fits: bool) -> str:
    return f"{gib:,.1f}" if fits else f"**{gib:,.0f}** ✗"


def markdown_table(
    models: Iterable[str] = TABLE_MODELS,
    examples: Sequence[int] = TABLE_EXAMPLES,
    gpus: Sequence[int] = TABLE_GPUS,
    *,
    tokens: int = TABLE_TOKENS,
    blocks: str = "full",
    dtype: str = "float32",
    gradient_method: str = "loop",
    gpu_mb: float = GPU_MB,
    host_mb: float = HOST_MB,
    storage_modes: Sequence[str] = STORAGE_MODES,
) -> str:
    """One Markdown table per storage mode: per-GPU peak (GiB) at each GPU count, ✗ where it
    exceeds ``gpu_mb``, the job's host memory on one GPU (✗ over ``host_mb``), and the fewest
    GPUs of one node on which both fit; for matrix_free (one GPU), the largest
    ``recompute_rows`` that fits, its peak and the gradients its set-up recomputes."""
    out = [
        f"Fisher estimation's peak memory (GiB): {tokens}-token sequences, blocks {blocks}, "
        f"G in {dtype}, gradients by {gradient_method}, GPUs of {gpu_mb / 1024:g} GiB, a node "
        f"of {host_mb / 1024:g} GiB RAM (✗: does not fit). Host: the whole job on one GPU "
        f"(each further GPU adds its process, {PROCESS_MB / 1024:.1f} GiB)."
    ]
    for storage in storage_modes:
        kw = dict(blocks=blocks, storage=storage, dtype=dtype, gradient_method=gradient_method)
        if storage == "matrix_free":
            out.append(_matrix_free_table(models, examples, tokens, gpu_mb, host_mb, kw))
            continue
        head = ["model", "d", "m", "G (GiB)", *(f"{g} GPU{'s' * (g > 1)}" for g in gpus)]
        head += ["host", "fewest GPUs"]
        lines = [f"\n**storage: {storage}**\n", _row(head), _row(["---"] * len(head))]
        for name in models:
            shape = MODELS[name]
            for m in examples:
                cells = [shape.label, f"{shape.d / 1e6:,.0f} M", str(m)]
                cells.append(f"{m * shape.d * DTYPE_BYTES[dtype] / GB:,.1f}")
                for g in gpus:
                    need = fisher_memory(shape, m, tokens, gpus=g, **kw)
                    cells.append(_cell(need.gpu_mb / 1024, need.gpu_mb <= gpu_mb))
                host = fisher_memory(shape, m, tokens, gpus=1, **kw).host_mb
                fewest = fewest_gpus(shape, m, tokens, gpu_mb=gpu_mb, host_mb=host_mb, **kw)
                cells.append(_cell(host / 1024, host <= host_mb))
                cells.append(str(fewest) if fewest else "none")
                lines.append(_row(cells))
        out.append("\n".join(lines))
    return "\n".join(out) + "\n"


def _matrix_free_table(
    models: Iterable[str],
    examples: Sequence[int],
    tokens: int,
    gpu_mb: float,
    host_mb: float,
    kw: dict,
) -> str:
    """matrix_free runs on one GPU: the largest recompute_rows that fits, the peak there, and
    the per-example gradients its set-up computes (m when G is stored)."""
    head = ["model", "d", "m", "G not stored (GiB)", "recompute_rows", "1 GPU", "host"]
    head.append("set-up gradients")
    lines = ["\n**storage: matrix_free** (one GPU)\n", _row(head), _row(["---"] * len(head))]
    for name in models:
        shape = MODELS[name]
        for m in examples:
            cells = [shape.label, f"{shape.d / 1e6:,.0f} M", str(m), f"{m * shape.d * 4 / GB:,.1f}"]
            rows = largest_recompute_rows(shape, m, tokens, gpu_mb=gpu_mb, **kw)
            need = fisher_memory(shape, m, tokens, recompute_rows=max(rows, 1), **kw)
            cells.append(str(rows) if rows else "none")
            cells.append(_cell(need.gpu_mb / 1024, need.gpu_mb <= gpu_mb))
            cells.append(_cell(need.host_mb / 1024, need.host_mb <= host_mb))
            cells.append(f"{setup_gradients(m, rows):,}" if rows else "-")
            lines.append(_row(cells))
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unlearnbench.fisher.memory",
        description="Fisher estimation's peak memory at paper scale, per storage mode.",
    )
    parser.add_argument("--table", action="store_true", help="print the Markdown table")
    parser.add_argument("--blocks", default="full", choices=("full", "layer"))
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPE_BYTES))
    parser.add_argument("--gradient-method", default="loop", choices=("auto", "loop", "vmap"))
    parser.add_argument("--tokens", type=int, default=TABLE_TOKENS)
    args = parser.parse_args(argv)
    if not args.table:
        parser.print_help()
        return 2
    table = markdown_table(
        tokens=args.tokens,
        blocks=args.blocks,
        dtype=args.dtype,
        gradient_method=args.gradient_method,
    )
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
