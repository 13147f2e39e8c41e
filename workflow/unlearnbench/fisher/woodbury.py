"""Inverse of the damped empirical Fisher, never formed as a d x d matrix.

F = lam I + (1/m) G^T G, where G (m x d) holds one flattened per-example gradient per row.

The paper's static M-FAC / WoodFisher recursion
    F_0^{-1} = I / lam,  h_i = F_{i-1}^{-1} g_i,  den_i = m + g_i^T h_i,
    F_i^{-1} = F_{i-1}^{-1} - h_i h_i^T / den_i
costs O(m^2 d) memory-bound vector operations; ``tests/references/fisher_recursion.py`` keeps
it as the reference.
The same inverse follows from the Woodbury identity with K = G G^T + m lam I (m x m):
    F^{-1} = (1/lam) (I - G^T K^{-1} G).
The two are one computation: with the Cholesky factor K = L L^T, the recursion is Gaussian
elimination of K in row order, and
    den_i = L_ii^2 / lam,   h_i = (L_ii / lam) (L^{-1} G)_i
(``recursion_factors`` in ``tests/references/fisher_recursion.py``; tests check it against
the literal recursion).
So ``WoodburyFisher`` keeps G itself (by reference, no copy) and one Cholesky factor per block.
Set-up is one Gram product (compute-bound BLAS-3, lower tiles only since K is symmetric) and an
O(m^3) factorisation; F^{-1} x takes two passes over G; diag(F^{-1}) =
(1 - colsum((L^{-1} G)^2)) / lam takes one triangular solve over G, on first request (Fisher
Forgetting needs it, Removal does not).

Blocks: a partition of the coordinates into (start, stop) ranges (per parameter tensor, or fixed
size). F is replaced by its block-diagonal part; blocks are independent. A block narrower than m
uses the primal form instead (Cholesky of its own n x n block of F): exact, and cheaper there.

Precision: products over G run in float32 (float64 when G is float64) with partial sums per
column chunk accumulated in float64; every m x m (or n x n) matrix is float64. G may be stored
in bfloat16 (``fisher.dtype``): each column chunk is upcast to float32 before it is multiplied,
so only the storage is rounded, never a sum.

Where G lives (``fisher.storage``): next to the model (``device``), or in host RAM while the
products run on the model's device (``host``): every helper below takes G's columns through
``columns``, which is a plain view when G is float32 on the compute device (the default, bit for
bit the code before storage modes existed) and one copy of a column chunk otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..logs import progress_bar
from ..provenance import atomic_path, peak_memory_mb, read_json, write_json
from .tensor_file import read_tensors

Block = tuple[int, int]
FORMAT = "unlearnbench.woodbury_fisher/1"
CHUNK_COLUMNS = 1 << 16  # columns of G per product: bounds workspace and float32 partial sums
ROW_BLOCK = 128  # row tile of the symmetric Gram product and of L^{-1} G
RERUN = "rerun estimate_fisher"


def fixed_size_blocks(d: int, size: int) -> list[Block]:
    """Consecutive blocks of ``size`` coordinates; the last one may be shorter."""
    if size < 1:
        raise ValueError(f"block size must be >= 1, got {size}")
    return [(start, min(start + size, d)) for start in range(0, d, size)]


def check_blocks(blocks: Sequence[Sequence[int]] | None, d: int) -> list[Block]:
    """Blocks sorted by start; they must tile [0, d) exactly (None = one block)."""
    if blocks is None:
        return [(0, d)]
    ordered = sorted((int(a), int(b)) for a, b in blocks)
    edge = 0
    for a, b in ordered:
        if a != edge or b <= a:
            raise ValueError(
                f"blocks must tile [0, {d}) without gaps, overlaps or empty ranges; "
                f"block ({a}, {b}) follows coordinate {edge}"
            )
        edge = b
    if edge != d:
        raise ValueError(f"blocks cover [0, {edge}) but the gradients have d = {d} coordinates")
    return ordered


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """What products over G run in: G's own dtype for float32 and float64, float32 for a
    narrower storage (bfloat16 sums would lose about three digits)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def columns(G: torch.Tensor, cols: slice, device: torch.device | None = None) -> torch.Tensor:
    """G[:, cols] in the work dtype on ``device`` (None: G's): a view when G already is both,
    else one copy of the chunk (host storage streams it, bfloat16 storage upcasts it)."""
    return G[:, cols].to(device=device or G.device, dtype=work_dtype(G.dtype), non_blocking=True)


def empirical_diagonal(
    G: torch.Tensor, chunk_columns: int, device: torch.device | None = None
) -> torch.Tensor:
    """diag(G^T G / m) in float64, column chunk by column chunk (no m x d copy)."""
    out = torch.empty(G.shape[1], dtype=torch.float64, device=device or G.device)
    for cols in column_chunks(0, G.shape[1], chunk_columns):
        out[cols] = columns(G, cols, device).double().square().mean(0)
    return out


def column_chunks(start: int, stop: int, size: int) -> Iterator[slice]:
    for lo in range(start, stop, size):
        yield slice(lo, min(lo + size, stop))


def row_tiles(m: int, row_block: int) -> list[Block]:
    return [(lo, min(lo + row_block, m)) for lo in range(0, m, row_block)]


def uses_dual_form(width: int, m: int) -> bool:
    return width >= m  # the m x m (Woodbury) form is the smaller one


def gram(
    G: torch.Tensor,
    a: int,
    b: int,
    chunk: int,
    row_block: int,
    bar: Any,
    device: torch.device | None = None,
) -> torch.Tensor:
    """G[:, a:b] G[:, a:b]^T in float64. Only lower row tiles are multiplied (K is symmetric:
    about half the flops of one big matmul for m >> row_block); column chunks bound how many
    float32 products one partial sum accumulates."""
    m = G.shape[0]
    K = torch.zeros(m, m, dtype=torch.float64, device=device or G.device)
    tiles = row_tiles(m, row_block)
    for cols in column_chunks(a, b, chunk):
        part = columns(G, cols, device)
        for t, (r0, r1) in enumerate(tiles):
            for c0, c1 in tiles[: t + 1]:
                K[r0:r1, c0:c1] += part[r0:r1] @ part[c0:c1].T
        bar.update(cols.stop - cols.start)
    return torch.tril(K) + torch.tril(K, -1).T


def checked_cholesky(K: torch.Tensor, block: Block) -> torch.Tensor:
    if not torch.isfinite(K).all():
        raise ValueError(f"block {block}: the per-example gradients contain NaN or Inf")
    L, info = torch.linalg.cholesky_ex(K)
    if info.item() != 0:
        raise ValueError(
            f"block {block}: damped Gram matrix not positive definite in float64; "
            "increase lambda or check the per-example gradients"
        )
    return L


# One block's computations, shared by ``WoodburyFisher`` and the process-sharded Fisher
# (``sharded.py``): there a rank holds some columns of a dual block, sums the partial m-vectors
# and Gram matrices with the other ranks, and runs the same code on its own columns.


def dual_factor(K: torch.Tensor, m: int, lam: float, block: Block) -> torch.Tensor:
    """Cholesky factor of K + m lam I, from the (summed) Gram matrix K = G_b G_b^T."""
    K.diagonal().add_(m * lam)
    return checked_cholesky(K, block)


def primal_factor(
    G: torch.Tensor, a: int, b: int, lam: float, block: Block, device: torch.device | None = None
) -> torch.Tensor:
    """Cholesky factor of the n x n block lam I + G[:, a:b]^T G[:, a:b] / m (n = b - a < m)."""
    Gb = columns(G, slice(a, b), device).double()
    K = Gb.T @ Gb / G.shape[0]
    K.diagonal().add_(lam)
    return checked_cholesky(K, block)


def dual_project(G: torch.Tensor, xg: torch.Tensor, a: int, b: int, chunk: int) -> torch.Tensor:
    """G[:, a:b] x[a:b] in float64 (float32 products per column chunk) on xg's device."""
    u = torch.zeros(G.shape[0], dtype=torch.float64, device=xg.device)
    for cols in column_chunks(a, b, chunk):
        u += columns(G, cols, xg.device) @ xg[cols]
    return u


def dual_coefficients(u: torch.Tensor, L: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """K^{-1} u, in the work dtype for the back-projection."""
    return torch.cholesky_solve(u[:, None], L)[:, 0].to(dtype)


def dual_update(
    G: torch.Tensor, y: torch.Tensor, v: torch.Tensor, a: int, b: int, chunk: int, lam: float
) -> None:
    """y[a:b] <- (y[a:b] - G[:, a:b]^T v) / lam, in place (on y's device)."""
    for cols in column_chunks(a, b, chunk):
        y[cols] -= columns(G, cols, y.device).T @ v
    y[a:b] /= lam


def primal_solve(y: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_solve(y[:, None], L)[:, 0]


def primal_diag(L: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(L).diagonal()


def dual_diag(
    G: torch.Tensor, a: int, b: int, L: torch.Tensor, lam: float, chunk: int, row_block: int
) -> torch.Tensor:
    """(1 - colsum(Q^2)) / lam over columns a:b, Q = L^{-1} G, as matrix products with the
    explicit triangular inverse, row tile by row tile, skipping its zero upper tiles: BLAS-3
    speed, where a triangular solve with a wide right-hand side ran 3-4x slower than the Gram
    product on this machine. Runs on L's device."""
    m, device, dtype = G.shape[0], L.device, work_dtype(G.dtype)
    eye = torch.eye(m, dtype=L.dtype, device=device)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False).to(dtype)
    ones = torch.ones(row_block, dtype=dtype, device=device)
    out = torch.empty(b - a, dtype=torch.float64, device=device)
    for cols in column_chunks(a, b, chunk):
        part = columns(G, cols, device)
        sq_norms = torch.zeros(cols.stop - cols.start, dtype=torch.float64, device=device)
        for r0, r1 in row_tiles(m, row_block):
            Q = L_inv[r0:r1, :r1] @ part[:r1]
            sq_norms += ones[: r1 - r0] @ Q.square()  # float64 across tiles
        out[cols.start - a : cols.stop - a] = (1 - sq_norms) / lam
    return out


class WoodburyFisher:
    """F^{-1} for F = lam I + G^T G / m (block-diagonal if blocks), from G and Cholesky factors.

    ``device``: where the products run and the factors live (default: G's device; G in host
    RAM with a GPU ``device`` is the ``host`` storage mode). ``record``: what the artifact's
    metadata adds about how G was made (storage, sample), for consumers that recompute it."""

    def __init__(
        self,
        gradients: torch.Tensor,
        lam: float,
        blocks: list[Block],
        factors: list[torch.Tensor],
        *,
        fingerprint: str = "",
        parameter_names: list[str] | None = None,
        cost: dict | None = None,
        diag: torch.Tensor | None = None,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        device: torch.device | str | None = None,
        record: dict | None = None,
    ) -> None:
        self.gradients, self.lam, self.blocks, self.factors = gradients, float(lam), blocks, factors
        self.fingerprint = fingerprint
        self.parameter_names = parameter_names  # what the d coordinates are (per_example_grads)
        self.cost = dict(cost or {})
        self.chunk_columns, self.row_block = chunk_columns, row_block
        self.device = torch.device(device) if device is not None else gradients.device
        self.record = dict(record or {})
        self._diag = diag

    @property
    def m(self) -> int:
        return self.gradients.shape[0]

    @property
    def d(self) -> int:
        return self.gradients.shape[1]

    @classmethod
    def from_gradients(
        cls,
        G: torch.Tensor,
        lam: float,
        blocks: Sequence[Sequence[int]] | None = None,
        *,
        fingerprint: str = "",
        parameter_names: list[str] | None = None,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        progress: bool | None = None,
        device: torch.device | str | None = None,
    ) -> WoodburyFisher:
        """Set up F^{-1} from per-example gradients G (m, d). G is kept, not copied (a 6 GB
        matrix at m = 1024): do not modify it afterwards. ``fingerprint`` (of the model weights)
        and ``parameter_names`` (the layout of G's columns) are stored with the artifact;
        ``device``: where the set-up and later products run (default: G's device)."""
        if G.ndim != 2 or not G.is_floating_point():
            raise ValueError(f"G must be a 2-D float tensor (m, d); got {G.dtype} {tuple(G.shape)}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lambda must be a positive finite number, got {lam}")
        G = G.contiguous()
        m, d = G.shape
        device = torch.device(device) if device is not None else G.device
        blocks = check_blocks(blocks, d)
        start = time.perf_counter()
        factors = []
        with progress_bar("Fisher set-up", d, enabled=progress, unit="col") as bar:
            for a, b in blocks:
                if uses_dual_form(b - a, m):
                    K = gram(G, a, b, chunk_columns, row_block, bar, device)
                    factors.append(dual_factor(K, m, lam, (a, b)))
                else:
                    factors.append(primal_factor(G, a, b, lam, (a, b), device))
                    bar.update(b - a)
        cost = {  # the caller may add the cost of computing G
            "setup_wall_s": round(time.perf_counter() - start, 3),
            "process_peak_rss_mb": round(peak_memory_mb(), 1),
        }
        return cls(
            G,
            lam,
            blocks,
            factors,
            fingerprint=fingerprint,
            parameter_names=parameter_names,
            cost=cost,
            chunk_columns=chunk_columns,
            row_block=row_block,
            device=device,
        )

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        """F^{-1} x, O(m d): per dual block (x - G^T K^{-1} G x) / lam; per primal block a solve."""
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        G, dtype = self.gradients, work_dtype(self.gradients.dtype)
        xg = x.to(device=self.device, dtype=dtype)
        y = x.to(device=self.device, dtype=torch.float64).clone()
        for (a, b), L in zip(self.blocks, self.factors, strict=True):
            if not uses_dual_form(b - a, self.m):
                y[a:b] = primal_solve(y[a:b], L)
                continue
            u = dual_project(G, xg, a, b, self.chunk_columns)
            v = dual_coefficients(u, L, dtype)
            dual_update(G, y, v, a, b, self.chunk_columns, self.lam)
        return y.to(x.dtype)

    def diag_empirical(self) -> torch.Tensor:
        """diag(G^T G / m): the undamped empirical Fisher's diagonal (float64), one pass over G
        column chunk by column chunk (no d x d and no m x d copy)."""
        return empirical_diagonal(self.gradients, self.chunk_columns, self.device)

    def diag_inverse(self) -> torch.Tensor:
        """diag(F^{-1}), computed on first call and cached: per dual block
        (1 - colsum(Q^2)) / lam with Q = L^{-1} G, one pass over G."""
        if self._diag is None:
            G = self.gradients
            diag = torch.empty(self.d, dtype=torch.float64, device=self.device)
            for (a, b), L in zip(self.blocks, self.factors, strict=True):
                if uses_dual_form(b - a, self.m):
                    diag[a:b] = dual_diag(G, a, b, L, self.lam, self.chunk_columns, self.row_block)
                else:
                    diag[a:b] = primal_diag(L)
            self._diag = diag.to(work_dtype(G.dtype))
        return self._diag

    # Artifacts: safetensors (tensors) + JSON (metadata), both written atomically.

    def metadata(self) -> dict:
        return {
            **factor_metadata(self, str(self.gradients.dtype).removeprefix("torch.")),
            "has_diag_inverse": self._diag is not None,
        }

    def save(
        self, tensors_path: str | Path, meta_path: str | Path, *, gradients: bool = True
    ) -> None:
        """The artifact; ``gradients=False`` leaves G out (its consumers recompute it from
        ``record``'s sample: the artifact is then O(m^2) per block, not m x d)."""
        tensors = {f"factor.{k}": L for k, L in enumerate(self.factors)}
        if gradients:
            tensors = {"gradients": self.gradients, **tensors}
        if self._diag is not None:
            tensors["diag_inverse"] = self._diag
        write_artifact(tensors_path, meta_path, self.metadata(), tensors)

    @classmethod
    def load(
        cls,
        tensors_path: str | Path,
        meta_path: str | Path,
        expected_fingerprint: str | None = None,
        device: str | torch.device = "cpu",
    ) -> WoodburyFisher:
        """Load and check an artifact that holds G: format, fingerprint, shapes; corrupted files
        are a ValueError that names the file and the fix."""
        art = read_artifact(tensors_path, meta_path, expected_fingerprint)
        if art.gradients is None:
            raise art.fail(f"gradients missing (the {art.meta.get('storage')} artifact)")
        return cls.from_artifact(art, art.gradients.to(device), device)

    @classmethod
    def from_artifact(
        cls, art: Artifact, G: torch.Tensor, device: str | torch.device
    ) -> WoodburyFisher:
        """The stored Fisher with gradients ``G`` (read back, or recomputed from the artifact's
        sample), products on ``device``."""
        return cls(
            G,
            art.meta["lambda"],
            art.blocks,
            [L.to(device) for L in art.factors],
            fingerprint=art.meta["fingerprint"],
            parameter_names=art.meta.get("parameter_names"),
            cost=art.meta.get("cost"),
            diag=None if art.diag is None else art.diag.to(device),
            chunk_columns=art.meta.get("chunk_columns", CHUNK_COLUMNS),
            row_block=art.meta.get("row_block", ROW_BLOCK),
            device=device,
            record=art.record,
        )


# The artifact on disk, whatever computed it (``WoodburyFisher``, the matrix-free and the
# sharded Fisher all write this format; only the first needs "gradients" in it).

RECORD_KEYS = ("storage", "sample")  # what a Fisher's ``record`` adds to the metadata


def factor_metadata(fisher: Any, dtype: str) -> dict:
    """The metadata every Fisher artifact has (``fisher``: m, d, lam, blocks, fingerprint,
    parameter_names, cost, chunk_columns, row_block, record)."""
    return {
        "format": FORMAT,
        "m": fisher.m,
        "d": fisher.d,
        "lambda": fisher.lam,
        "blocks": [list(block) for block in fisher.blocks],
        "block_forms": [
            "dual" if uses_dual_form(b - a, fisher.m) else "primal" for a, b in fisher.blocks
        ],
        "dtype": dtype,
        "fingerprint": fisher.fingerprint,
        "parameter_names": fisher.parameter_names,
        "cost": fisher.cost,
        # Summation order of the float32 products: restored on load, so that a loaded
        # Fisher reproduces the saved one bit for bit.
        "chunk_columns": fisher.chunk_columns,
        "row_block": fisher.row_block,
        **{key: fisher.record[key] for key in RECORD_KEYS if key in fisher.record},
    }


def write_artifact(
    tensors_path: str | Path, meta_path: str | Path, meta: dict, tensors: dict
) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    # One entry only: safetensors writes the metadata's entries in a per-process random
    # order (a Rust HashMap), so two would break bitwise-identical artifacts across runs.
    # The format is in the JSON metadata, which load checks first.
    header = {"fingerprint": meta["fingerprint"]}
    with atomic_path(tensors_path) as tmp:
        save_file(tensors, tmp, metadata=header)
    write_json(meta_path, {**meta, "tensors_file": Path(tensors_path).name})


@dataclass
class Artifact:
    """A checked artifact's contents, on the CPU (``gradients``/``diag`` None where absent)."""

    path: Path
    meta: dict
    blocks: list[Block]
    factors: list[torch.Tensor]
    gradients: torch.Tensor | None
    diag: torch.Tensor | None

    @property
    def record(self) -> dict:
        return {key: self.meta[key] for key in RECORD_KEYS if key in self.meta}

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {problem}; delete it and {RERUN}")


def read_artifact(
    tensors_path: str | Path, meta_path: str | Path, expected_fingerprint: str | None = None
) -> Artifact:
    """Read and check an artifact: format, fingerprint, shapes; corrupted files are a ValueError
    that names the file and the fix."""
    tensors_path, meta_path = Path(tensors_path), Path(meta_path)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a {FORMAT} metadata file; {RERUN}")
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise ValueError(
            f"{meta_path}: the Fisher estimate was computed for model "
            f"{meta.get('fingerprint')!r}, not for this model ({expected_fingerprint!r}); "
            f"{RERUN} for this model"
        )
    if not tensors_path.is_file():
        raise FileNotFoundError(f"{tensors_path}: missing; {RERUN}")
    header, tensors = read_tensors(tensors_path, fix=RERUN)
    art = Artifact(tensors_path, meta, [], [], tensors.get("gradients"), None)
    if header.get("fingerprint") != meta["fingerprint"]:
        raise art.fail("tensors and metadata come from different runs (fingerprints differ)")
    m, d = meta["m"], meta["d"]
    art.blocks = check_blocks(meta["blocks"], d)
    G = art.gradients
    if G is not None and (tuple(G.shape) != (m, d) or str(G.dtype) != f"torch.{meta['dtype']}"):
        raise art.fail(f"gradients not ({m}, {d}) {meta['dtype']}")
    for k, (a, b) in enumerate(art.blocks):
        size = m if uses_dual_form(b - a, m) else b - a
        L = tensors.get(f"factor.{k}")
        if L is None or tuple(L.shape) != (size, size) or not torch.isfinite(L).all():
            raise art.fail(f"factor {k} missing, not ({size}, {size}) or not finite")
        art.factors.append(L)
    art.diag = tensors.get("diag_inverse")
    if art.diag is not None and tuple(art.diag.shape) != (d,):
        raise art.fail(f"diag_inverse not of shape ({d},)")
    return art
