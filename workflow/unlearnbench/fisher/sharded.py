"""The inverse empirical Fisher with its coordinates sharded over processes (torch.distributed).

At paper scale the m x d gradient matrix does not fit one device (OPT-1.3b, m = 1024: 5.4 TB
in float32). Here each of W ranks holds the columns G[:, S_r] of a fixed partition of the d
coordinates, and F = lam I + G^T G / m (block-diagonal if blocks) is applied as in
``woodbury``, whose per-block code is reused unchanged:

- a dual block (width >= m) is split into W contiguous column ranges, one per rank. Set-up:
  each rank forms its partial Gram G_r G_r^T (m x m, float64), an all-reduce sums them, and
  every rank factors the same K + m lam I. F^{-1} v for v sliced the same way: each rank
  projects u_r = G_r v_r, one all-reduce sums the m-vectors of all dual blocks at once, every
  rank solves K w = u and back-projects on its own columns, (v_r - G_r^T w) / lam.
  diag(F^{-1}) = (1 - colsum((L^{-1} G)^2)) / lam is column-wise: local, no communication.
- a primal block (width < m, e.g. a LayerNorm vector when m is large) is not split: its n x n
  factor needs all its columns, and it is small. Primal blocks go round robin to the ranks;
  their products and diagonal are local to the owner.

Communication per product: one all-reduce of (dual blocks) x m float64 values; per set-up, one
m x m all-reduce per dual block. With W = 1 (or no process group) every operation is the
single-process one in the same order, so results are bit for bit ``WoodburyFisher``'s. With
W > 1 the float32 column chunks of the products end at other coordinates, so results agree
to rounding, not bitwise (a change of GPU count changes the last bits): in the tests, 5e-8
relative on a tiny GPT-2's gradients, 3.6e-13 with float64 gradients, and on an
ill-conditioned float32 problem 1.7e-4, where the single-process result is as far from the
float64 one (the sharded result is as accurate, within 1.7x).

Gradients (``estimate_sharded_fisher``): every rank computes all m per-example gradients with
the full (replicated) model, a few rows at a time into a (rows, d) buffer, and keeps its
columns, stored as ``fisher.storage`` (device or host RAM) and ``fisher.dtype`` say. Redundant
gradient compute (W x), no m x d communication; a row split with an all-to-all is the next
step where gradients dominate the cost.

Artifact (``save``): the factors of every block (a primal block's factor is sent from its
owner) and the sample record, never G: the same format as a matrix-free Fisher's, readable by
any number of ranks. A consumer rank recomputes its own columns (one gradient pass) and takes
the factors (``from_artifact``); ``GatheredFisher`` gives the unlearning methods the
single-process interface (whole d-vectors in and out; one broadcast, the m-vector
all-reduce and an all-gather per product).

Launching: ``launch.py`` runs a rule's adapter once per GPU under torchrun when the rule's
``gpu`` resource is above 1; every rank joins the process group (``launch.init_distributed``)
before the Fisher is built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..lm_data import collate
from ..logs import progress, progress_bar
from ..models import fingerprint
from ..provenance import peak_memory_mb
from .estimation import (
    FisherConfig,
    block_ranges,
    fisher_sample,
    gradient_storage,
    resolved_method,
    sample_record,
    sampled_sequences,
)
from .per_example_grads import flat_dim, parameter_layout, per_example_gradients
from .woodbury import (
    CHUNK_COLUMNS,
    ROW_BLOCK,
    Artifact,
    Block,
    check_blocks,
    dual_coefficients,
    dual_diag,
    dual_factor,
    dual_project,
    dual_update,
    empirical_diagonal,
    factor_metadata,
    gram,
    primal_diag,
    primal_factor,
    primal_solve,
    uses_dual_form,
    work_dtype,
    write_artifact,
)

VMAP_ROWS = 16  # per_example_gradients' vmap chunk: the rows of the full-width buffer


@dataclass(frozen=True)
class Piece:
    """One block as one rank sees it."""

    block: Block  # the block's global coordinates
    columns: Block  # the global coordinates of it this rank holds (start == stop: none)
    local: Block  # where those columns sit in the rank's local matrix
    dual: bool

    @property
    def width(self) -> int:
        return self.columns[1] - self.columns[0]


def shard_plan(blocks: Sequence[Block], m: int, rank: int, world: int) -> list[Piece]:
    """What rank ``rank`` of ``world`` holds of each block (every block listed, in order: the
    collectives of dual blocks involve every rank, holding columns or not)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    pieces, offset, primal_seen = [], 0, 0
    for a, b in blocks:
        dual = uses_dual_form(b - a, m)
        if dual:
            lo, hi = a + (b - a) * rank // world, a + (b - a) * (rank + 1) // world
        else:
            owner = primal_seen % world
            primal_seen += 1
            lo, hi = (a, b) if owner == rank else (a, a)
        pieces.append(Piece((a, b), (lo, hi), (offset, offset + hi - lo), dual))
        offset += hi - lo
    return pieces


def shard_width(pieces: Sequence[Piece]) -> int:
    return sum(p.width for p in pieces)


def take_columns(
    full: torch.Tensor, pieces: Sequence[Piece], out: torch.Tensor | None = None
) -> torch.Tensor:
    """This rank's coordinates of a full-width vector (d,) or matrix (rows, d), in local order."""
    if out is None:
        out = full.new_empty((*full.shape[:-1], shard_width(pieces)))
    for p in pieces:
        if p.width:
            out[..., p.local[0] : p.local[1]] = full[..., p.columns[0] : p.columns[1]]
    return out


def rank_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _all_reduce(tensor: torch.Tensor, group, op=None) -> None:
    if dist.is_available() and dist.is_initialized() and tensor.numel():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM, group=group)


def _check_sizes(m: int, width: int, device: torch.device, group) -> int:
    """Every rank must have the same m (or the collectives would mismatch); returns the total
    width over the ranks (d)."""
    m_range = torch.tensor([m, -m], dtype=torch.int64, device=device)
    _all_reduce(m_range, group, dist.ReduceOp.MAX if dist.is_available() else None)
    if (int(m_range[0]), -int(m_range[1])) != (m, m):
        raise ValueError(
            f"ranks hold different numbers of gradient rows (m from {-int(m_range[1])} to "
            f"{int(m_range[0])}): every rank must hold the same m examples"
        )
    total = torch.tensor([width], dtype=torch.int64, device=device)
    _all_reduce(total, group)
    return int(total[0])


class ShardedWoodburyFisher:
    """``WoodburyFisher``'s interface on this rank's columns: ``ihvp`` takes and returns the
    local slice of a d-vector (``take``, ``gather`` convert), ``diag_inverse`` and
    ``diag_empirical`` return the local slice. Every rank must call ``from_gradients`` and
    ``ihvp`` together (they contain collectives); the diagonals are local."""

    def __init__(
        self,
        gradients: torch.Tensor,
        lam: float,
        blocks: list[Block],
        pieces: list[Piece],
        factors: list[torch.Tensor | None],
        *,
        d: int,
        rank: int = 0,
        world_size: int = 1,
        group: dist.ProcessGroup | None = None,
        fingerprint: str = "",
        parameter_names: list[str] | None = None,
        cost: dict | None = None,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        device: torch.device | str | None = None,
        record: dict | None = None,
    ) -> None:
        self.gradients, self.lam, self.blocks = gradients, float(lam), blocks
        self.pieces, self.factors = pieces, factors  # factor None: a primal block held elsewhere
        self._d, self.rank, self.world_size, self.group = d, rank, world_size, group
        self.fingerprint, self.parameter_names = fingerprint, parameter_names
        self.cost = dict(cost or {})
        self.chunk_columns, self.row_block = chunk_columns, row_block
        # Where products run (G may sit in host RAM: fisher.storage host).
        self.device = torch.device(device) if device is not None else gradients.device
        self.record = dict(record or {})
        self._diag: torch.Tensor | None = None

    @property
    def m(self) -> int:
        return self.gradients.shape[0]

    @property
    def d(self) -> int:
        return self._d

    @property
    def local_d(self) -> int:
        return self.gradients.shape[1]

    @property
    def columns(self) -> list[Block]:
        """The global coordinate ranges this rank holds, in local order."""
        return [p.columns for p in self.pieces if p.width]

    @classmethod
    def from_gradients(
        cls,
        G: torch.Tensor,
        lam: float,
        blocks: Sequence[Sequence[int]] | None = None,
        *,
        d: int | None = None,
        group: dist.ProcessGroup | None = None,
        fingerprint: str = "",
        parameter_names: list[str] | None = None,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        progress: bool | None = None,
        device: torch.device | str | None = None,
    ) -> ShardedWoodburyFisher:
        """Set up F^{-1} from this rank's columns G (m, local width) of the per-example
        gradients; which columns a rank holds is ``shard_plan(blocks, m, rank, world)``
        (``take_columns`` cuts them out of full rows). ``d`` (the global width) is summed over
        the ranks when not given. G is kept, not copied; ``device``: where the set-up and
        products run (default G's)."""
        if G.ndim != 2 or not G.is_floating_point():
            raise ValueError(f"G must be a 2-D float tensor (m, d); got {G.dtype} {tuple(G.shape)}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lambda must be a positive finite number, got {lam}")
        G = G.contiguous()
        device = torch.device(device) if device is not None else G.device
        rank, world = rank_world(group)
        m = G.shape[0]
        total = _check_sizes(m, G.shape[1], device, group)
        d = total if d is None else d
        blocks = check_blocks(blocks, d)
        pieces = shard_plan(blocks, m, rank, world)
        if G.shape[1] != shard_width(pieces) or total != d:
            raise ValueError(
                f"rank {rank} of {world}: G has {G.shape[1]} columns (all ranks: {total}) but "
                f"its shard of d = {d} has {shard_width(pieces)}: the columns "
                f"{[p.columns for p in pieces if p.width][:4]}...; cut them with take_columns"
            )
        start = time.perf_counter()
        factors: list[torch.Tensor | None] = []
        failure = ""
        with progress_bar("Fisher set-up (shard)", G.shape[1], enabled=progress, unit="col") as bar:
            for p in pieces:
                a, b = p.local
                if p.dual:
                    K = gram(G, a, b, chunk_columns, row_block, bar, device)
                    _all_reduce(K, group)  # every rank then factors the same K
                    factors.append(dual_factor(K, m, lam, p.block))
                elif p.width:
                    try:  # local: a failure must not leave the other ranks in a collective
                        factors.append(primal_factor(G, a, b, lam, p.block, device))
                    except ValueError as err:
                        failure = str(err)
                        factors.append(None)
                    bar.update(b - a)
                else:
                    factors.append(None)
        failed = torch.tensor([1.0 if failure else 0.0], device=device)
        _all_reduce(failed, group)
        if failed.item():
            raise ValueError(failure or "another rank's primal block failed its set-up")
        cost = {
            "setup_wall_s": round(time.perf_counter() - start, 3),
            "process_peak_rss_mb": round(peak_memory_mb(), 1),
        }
        return cls(
            G, lam, blocks, pieces, factors, d=d, rank=rank, world_size=world, group=group,
            fingerprint=fingerprint, parameter_names=parameter_names, cost=cost,
            chunk_columns=chunk_columns, row_block=row_block, device=device,
        )  # fmt: skip

    @classmethod
    def from_artifact(
        cls,
        art: Artifact,
        G: torch.Tensor,
        *,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
    ) -> ShardedWoodburyFisher:
        """A stored Fisher on this rank: its columns G of the gradients (``shard_plan`` of the
        artifact's blocks) and the stored factors it needs (every dual block's, its own primal
        blocks'); no set-up."""
        rank, world = rank_world(group)
        m, d = art.meta["m"], art.meta["d"]
        pieces = shard_plan(art.blocks, m, rank, world)
        if tuple(G.shape) != (m, shard_width(pieces)):
            raise ValueError(
                f"rank {rank} of {world}: G is {tuple(G.shape)}, its shard of the stored Fisher "
                f"is ({m}, {shard_width(pieces)})"
            )
        device = torch.device(device) if device is not None else G.device
        factors = [
            L.to(device) if p.dual or p.width else None
            for p, L in zip(pieces, art.factors, strict=True)
        ]
        return cls(
            G, art.meta["lambda"], art.blocks, pieces, factors, d=d, rank=rank,
            world_size=world, group=group, fingerprint=art.meta["fingerprint"],
            parameter_names=art.meta.get("parameter_names"), cost=art.meta.get("cost"),
            chunk_columns=art.meta["chunk_columns"], row_block=art.meta["row_block"],
            device=device, record=art.record,
        )  # fmt: skip

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of F^{-1} x, from this rank's slice of x (collective)."""
        if tuple(x.shape) != (self.local_d,):
            raise ValueError(
                f"x must have this rank's shape ({self.local_d},), got {tuple(x.shape)}"
            )
        G, dtype = self.gradients, work_dtype(self.gradients.dtype)
        xg = x.to(device=self.device, dtype=dtype)
        y = x.to(device=self.device, dtype=torch.float64).clone()
        dual = [k for k, p in enumerate(self.pieces) if p.dual]
        U = torch.empty(len(dual), self.m, dtype=torch.float64, device=self.device)
        for row, k in enumerate(dual):
            U[row] = dual_project(G, xg, *self.pieces[k].local, self.chunk_columns)
        _all_reduce(U, self.group)
        for row, k in enumerate(dual):
            p = self.pieces[k]
            if p.width:
                v = dual_coefficients(U[row], self.factors[k], dtype)
                dual_update(G, y, v, *p.local, self.chunk_columns, self.lam)
        for p, L in zip(self.pieces, self.factors, strict=True):
            if not p.dual and p.width:
                y[p.local[0] : p.local[1]] = primal_solve(y[p.local[0] : p.local[1]], L)
        return y.to(x.dtype)

    def diag_empirical(self) -> torch.Tensor:
        """This rank's slice of diag(G^T G / m) (float64; local)."""
        return empirical_diagonal(self.gradients, self.chunk_columns, self.device)

    def diag_inverse(self) -> torch.Tensor:
        """This rank's slice of diag(F^{-1}), cached (local: its columns and the shared
        factors)."""
        if self._diag is None:
            G = self.gradients
            diag = torch.empty(self.local_d, dtype=torch.float64, device=self.device)
            for p, L in zip(self.pieces, self.factors, strict=True):
                a, b = p.local
                if p.dual and p.width:
                    diag[a:b] = dual_diag(G, a, b, L, self.lam, self.chunk_columns, self.row_block)
                elif p.width:
                    diag[a:b] = primal_diag(L)
            self._diag = diag.to(work_dtype(G.dtype))
        return self._diag

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a full d-vector (e.g. a replicated model's flat gradient)."""
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        return take_columns(x, self.pieces)

    def gather(self, y: torch.Tensor) -> torch.Tensor:
        """The full d-vector on every rank from each rank's slice (collective)."""
        if tuple(y.shape) != (self.local_d,):
            raise ValueError(
                f"y must have this rank's shape ({self.local_d},), got {tuple(y.shape)}"
            )
        if self.world_size == 1:
            return y.clone()  # one rank holds every column, in global order
        plans = [
            shard_plan(self.blocks, self.m, r, self.world_size) for r in range(self.world_size)
        ]
        widest = max(shard_width(plan) for plan in plans)
        padded = y.new_zeros(widest)
        padded[: self.local_d] = y
        parts = [y.new_empty(widest) for _ in plans]
        dist.all_gather(parts, padded, group=self.group)  # all_gather wants equal sizes
        out = y.new_empty(self.d)
        for plan, part in zip(plans, parts, strict=True):
            for p in plan:
                if p.width:
                    out[p.columns[0] : p.columns[1]] = part[p.local[0] : p.local[1]]
        return out

    def metadata(self) -> dict:
        """The artifact's metadata: the whole Fisher's (as ``WoodburyFisher``'s), plus the
        processes that estimated it."""
        dtype = str(self.gradients.dtype).removeprefix("torch.")
        return {**factor_metadata(self, dtype), "world_size": self.world_size}

    def all_factors(self) -> list[torch.Tensor]:
        """Every block's factor on every rank (collective): a primal block's comes from the
        rank that owns it."""
        world = self.world_size
        plans = [shard_plan(self.blocks, self.m, r, world) for r in range(world)]
        out = []
        for k, (p, L) in enumerate(zip(self.pieces, self.factors, strict=True)):
            if not p.dual and self.world_size > 1:
                owner = next(r for r, plan in enumerate(plans) if plan[k].width)
                if not p.width:
                    n = p.block[1] - p.block[0]
                    L = torch.empty(n, n, dtype=torch.float64, device=self.device)
                dist.broadcast(L, src=owner, group=self.group)
            out.append(L)
        return out

    def save(self, tensors_path, meta_path) -> None:
        """Every rank writes the factors and the sample record (collective; no G: a consumer
        recomputes its columns). The launcher keeps rank 0's files."""
        tensors = {f"factor.{k}": L for k, L in enumerate(self.all_factors())}
        write_artifact(tensors_path, meta_path, self.metadata(), tensors)


class GatheredFisher:
    """A ``ShardedWoodburyFisher`` behind the single-process interface the unlearning methods
    use: ``ihvp`` and the diagonals take and return whole d-vectors on every rank. Rank 0's
    x is broadcast first, so every rank's replica takes exactly the same step even where GPUs
    computed the forget gradient with other rounding."""

    def __init__(self, sharded: ShardedWoodburyFisher) -> None:
        self.sharded = sharded
        for name in ("m", "d", "lam", "blocks", "fingerprint", "parameter_names", "cost", "record"):
            setattr(self, name, getattr(sharded, name))

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        shard = self.sharded
        full = x.to(device=shard.device).contiguous()
        if shard.world_size > 1:
            dist.broadcast(full, src=0, group=shard.group)
        return shard.gather(shard.ihvp(shard.take(full))).to(x.dtype)

    def diag_empirical(self) -> torch.Tensor:
        return self.sharded.gather(self.sharded.diag_empirical())

    def diag_inverse(self) -> torch.Tensor:
        return self.sharded.gather(self.sharded.diag_inverse())

    def metadata(self) -> dict:
        return self.sharded.metadata()

    def save(self, tensors_path, meta_path) -> None:
        self.sharded.save(tensors_path, meta_path)


def sharded_gradients(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    pieces: Sequence[Piece],
    cfg: FisherConfig,
    pad_id: int,
    method: str,
) -> torch.Tensor:
    """This rank's columns of G for ``sequences``: the full rows a few at a time into a
    (rows, d) buffer, stored as ``cfg.storage`` / ``cfg.dtype`` say."""
    device = next(model.parameters()).device
    m, d = len(sequences), flat_dim(parameter_layout(model))
    rank, _ = rank_world(None)
    step = VMAP_ROWS if method == "vmap" else 1  # full-width rows held at once
    G = gradient_storage(m, shard_width(pieces), cfg, device)
    buffer = torch.empty(step, d, dtype=torch.float32, device=device)
    chunks = range(0, m, step)
    for lo in progress(chunks, desc=f"Fisher gradients (rank {rank})", total=len(chunks)):
        hi = min(lo + step, m)
        batch = collate(sequences[lo:hi], pad_id)
        per_example_gradients(
            model, batch.input_ids, batch.attention_mask, batch.labels,
            method=method, chunk_size=VMAP_ROWS, out=buffer[: hi - lo], progress=False,
        )  # fmt: skip
        take_columns(buffer[: hi - lo], pieces, out=G[lo:hi])
    return G


def estimate_sharded_fisher(
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
    group: dist.ProcessGroup | None = None,
) -> ShardedWoodburyFisher:
    """``estimate_fisher`` on this rank's columns: the same seeded m rows of D+, every rank with
    the whole model (call it on every rank, with the same weights)."""
    if cfg.storage == "matrix_free":
        raise ValueError(
            f"{cfg.key}.storage: matrix_free runs in one process (it holds no columns to "
            "shard); give the rule one GPU, or use storage device or host"
        )
    rows = fisher_sample(len(retain_sequences), cfg)
    sequences = [retain_sequences[i] for i in rows]
    layout = parameter_layout(model)
    m, d = len(rows), flat_dim(layout)
    rank, world = rank_world(group)
    device = next(model.parameters()).device
    pieces = shard_plan(check_blocks(block_ranges(model, cfg), d), m, rank, world)
    method = resolved_method(cfg, device)
    start = time.perf_counter()
    G = sharded_gradients(model, sequences, pieces, cfg, pad_id, method)
    gradient_seconds = time.perf_counter() - start
    fisher = ShardedWoodburyFisher.from_gradients(
        G, cfg.damping, block_ranges(model, cfg), d=d, group=group,
        fingerprint=fingerprint(model), parameter_names=[s.name for s in layout], progress=False,
        device=device,
    )  # fmt: skip
    fisher.cost["gradient_wall_s"] = round(gradient_seconds, 3)
    fisher.record = {"storage": cfg.storage, "sample": sample_record(rows, sequences, cfg, method)}
    return fisher


def load_sharded_fisher(
    art: Artifact,
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
    group: dist.ProcessGroup | None = None,
) -> ShardedWoodburyFisher:
    """A stored Fisher on this rank: its columns of a G stored in the artifact, or else
    recomputed from the artifact's sample (one gradient pass), stored as ``cfg`` says."""
    rank, world = rank_world(group)
    device = next(model.parameters()).device
    pieces = shard_plan(art.blocks, art.meta["m"], rank, world)
    if art.gradients is not None:
        G = take_columns(art.gradients, pieces)
        G = G if cfg.storage == "host" else G.to(device)
    else:
        sample = art.meta["sample"]
        sequences = sampled_sequences(sample, retain_sequences, str(art.path))
        G = sharded_gradients(model, sequences, pieces, cfg, pad_id, sample["gradient_method"])
    return ShardedWoodburyFisher.from_artifact(art, G, group=group, device=device)
