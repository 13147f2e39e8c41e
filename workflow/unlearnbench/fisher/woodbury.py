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

Precision: products over G run in G's dtype (float32 for models) with partial sums per column
chunk accumulated in float64; every m x m (or n x n) matrix is float64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
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


def empirical_diagonal(G: torch.Tensor, chunk_columns: int) -> torch.Tensor:
    """diag(G^T G / m) in float64, column chunk by column chunk (no m x d copy)."""
    out = torch.empty(G.shape[1], dtype=torch.float64, device=G.device)
    for cols in column_chunks(0, G.shape[1], chunk_columns):
        out[cols] = G[:, cols].double().square().mean(0)
    return out


def column_chunks(start: int, stop: int, size: int) -> Iterator[slice]:
    for lo in range(start, stop, size):
        yield slice(lo, min(lo + size, stop))


def row_tiles(m: int, row_block: int) -> list[Block]:
    return [(lo, min(lo + row_block, m)) for lo in range(0, m, row_block)]


def uses_dual_form(width: int, m: int) -> bool:
    return width >= m  # the m x m (Woodbury) form is the smaller one


def gram(G: torch.Tensor, a: int, b: int, chunk: int, row_block: int, bar: Any) -> torch.Tensor:
    """G[:, a:b] G[:, a:b]^T in float64. Only lower row tiles are multiplied (K is symmetric:
    about half the flops of one big matmul for m >> row_block); column chunks bound how many
    float32 products one partial sum accumulates."""
    m = G.shape[0]
    K = torch.zeros(m, m, dtype=torch.float64, device=G.device)
    tiles = row_tiles(m, row_block)
    for cols in column_chunks(a, b, chunk):
        part = G[:, cols]
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


def primal_factor(G: torch.Tensor, a: int, b: int, lam: float, block: Block) -> torch.Tensor:
    """Cholesky factor of the n x n block lam I + G[:, a:b]^T G[:, a:b] / m (n = b - a < m)."""
    Gb = G[:, a:b].double()
    K = Gb.T @ Gb / G.shape[0]
    K.diagonal().add_(lam)
    return checked_cholesky(K, block)


def dual_project(G: torch.Tensor, xg: torch.Tensor, a: int, b: int, chunk: int) -> torch.Tensor:
    """G[:, a:b] x[a:b] in float64 (float32 products per column chunk)."""
    u = torch.zeros(G.shape[0], dtype=torch.float64, device=G.device)
    for cols in column_chunks(a, b, chunk):
        u += G[:, cols] @ xg[cols]
    return u


def dual_coefficients(u: torch.Tensor, L: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """K^{-1} u, in G's dtype for the back-projection."""
    return torch.cholesky_solve(u[:, None], L)[:, 0].to(dtype)


def dual_update(
    G: torch.Tensor, y: torch.Tensor, v: torch.Tensor, a: int, b: int, chunk: int, lam: float
) -> None:
    """y[a:b] <- (y[a:b] - G[:, a:b]^T v) / lam, in place."""
    for cols in column_chunks(a, b, chunk):
        y[cols] -= G[:, cols].T @ v
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
    product on this machine."""
    m = G.shape[0]
    eye = torch.eye(m, dtype=L.dtype, device=L.device)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False).to(G.dtype)
    ones = torch.ones(row_block, dtype=G.dtype, device=G.device)
    out = torch.empty(b - a, dtype=torch.float64, device=G.device)
    for cols in column_chunks(a, b, chunk):
        part = G[:, cols]
        sq_norms = torch.zeros(cols.stop - cols.start, dtype=torch.float64, device=G.device)
        for r0, r1 in row_tiles(m, row_block):
            Q = L_inv[r0:r1, :r1] @ part[:r1]
            sq_norms += ones[: r1 - r0] @ Q.square()  # float64 across tiles
        out[cols.start - a : cols.stop - a] = (1 - sq_norms) / lam
    return out


class WoodburyFisher:
    """F^{-1} for F = lam I + G^T G / m (block-diagonal if blocks), from G and Cholesky factors."""

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
    ) -> None:
        self.gradients, self.lam, self.blocks, self.factors = gradients, float(lam), blocks, factors
        self.fingerprint = fingerprint
        self.parameter_names = parameter_names  # what the d coordinates are (per_example_grads)
        self.cost = dict(cost or {})
        self.chunk_columns, self.row_block = chunk_columns, row_block
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
    ) -> WoodburyFisher:
        """Set up F^{-1} from per-example gradients G (m, d). G is kept, not copied (a 6 GB
        matrix at m = 1024): do not modify it afterwards. ``fingerprint`` (of the model weights)
        and ``parameter_names`` (the layout of G's columns) are stored with the artifact."""
        if G.ndim != 2 or not G.is_floating_point():
            raise ValueError(f"G must be a 2-D float tensor (m, d); got {G.dtype} {tuple(G.shape)}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lambda must be a positive finite number, got {lam}")
        G = G.contiguous()
        m, d = G.shape
        blocks = check_blocks(blocks, d)
        start = time.perf_counter()
        factors = []
        with progress_bar("Fisher set-up", d, enabled=progress, unit="col") as bar:
            for a, b in blocks:
                if uses_dual_form(b - a, m):
                    K = gram(G, a, b, chunk_columns, row_block, bar)
                    factors.append(dual_factor(K, m, lam, (a, b)))
                else:
                    factors.append(primal_factor(G, a, b, lam, (a, b)))
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
        )

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        """F^{-1} x, O(m d): per dual block (x - G^T K^{-1} G x) / lam; per primal block a solve."""
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        G = self.gradients
        xg = x.to(device=G.device, dtype=G.dtype)
        y = x.to(device=G.device, dtype=torch.float64).clone()
        for (a, b), L in zip(self.blocks, self.factors, strict=True):
            if not uses_dual_form(b - a, self.m):
                y[a:b] = primal_solve(y[a:b], L)
                continue
            u = dual_project(G, xg, a, b, self.chunk_columns)
            v = dual_coefficients(u, L, G.dtype)
            dual_update(G, y, v, a, b, self.chunk_columns, self.lam)
        return y.to(x.dtype)

    def diag_empirical(self) -> torch.Tensor:
        """diag(G^T G / m): the undamped empirical Fisher's diagonal (float64), one pass over G
        column chunk by column chunk (no d x d and no m x d copy)."""
        return empirical_diagonal(self.gradients, self.chunk_columns)

    def diag_inverse(self) -> torch.Tensor:
        """diag(F^{-1}), computed on first call and cached: per dual block
        (1 - colsum(Q^2)) / lam with Q = L^{-1} G, one pass over G."""
        if self._diag is None:
            G = self.gradients
            diag = torch.empty(self.d, dtype=torch.float64, device=G.device)
            for (a, b), L in zip(self.blocks, self.factors, strict=True):
                if uses_dual_form(b - a, self.m):
                    diag[a:b] = dual_diag(G, a, b, L, self.lam, self.chunk_columns, self.row_block)
                else:
                    diag[a:b] = primal_diag(L)
            self._diag = diag.to(G.dtype)
        return self._diag

    # Artifacts: safetensors (tensors) + JSON (metadata), both written atomically.

    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "m": self.m,
            "d": self.d,
            "lambda": self.lam,
            "blocks": [list(block) for block in self.blocks],
            "block_forms": [
                "dual" if uses_dual_form(b - a, self.m) else "primal" for a, b in self.blocks
            ],
            "dtype": str(self.gradients.dtype).removeprefix("torch."),
            "fingerprint": self.fingerprint,
            "parameter_names": self.parameter_names,
            "cost": self.cost,
            "has_diag_inverse": self._diag is not None,
            # Summation order of the float32 products: restored on load, so that a loaded
            # Fisher reproduces the saved one bit for bit.
            "chunk_columns": self.chunk_columns,
            "row_block": self.row_block,
        }

    def save(self, tensors_path: str | Path, meta_path: str | Path) -> None:
        tensors = {"gradients": self.gradients}
        tensors |= {f"factor.{k}": L for k, L in enumerate(self.factors)}
        if self._diag is not None:
            tensors["diag_inverse"] = self._diag
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        # One entry only: safetensors writes the metadata's entries in a per-process random
        # order (a Rust HashMap), so two would break bitwise-identical artifacts across runs.
        # The format is in the JSON metadata, which load checks first.
        header = {"fingerprint": self.fingerprint}
        with atomic_path(tensors_path) as tmp:
            save_file(tensors, tmp, metadata=header)
        write_json(meta_path, {**self.metadata(), "tensors_file": Path(tensors_path).name})

    @classmethod
    def load(
        cls,
        tensors_path: str | Path,
        meta_path: str | Path,
        expected_fingerprint: str | None = None,
        device: str | torch.device = "cpu",
    ) -> WoodburyFisher:
        """Load and check an artifact: format, fingerprint, shapes; corrupted files are a
        ValueError that names the file and the fix."""
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
        tensors = {name: t.to(device) for name, t in tensors.items()}
        return cls._from_loaded(tensors, header, meta, tensors_path)

    @classmethod
    def _from_loaded(cls, tensors: dict, header: dict, meta: dict, path: Path) -> WoodburyFisher:
        def fail(problem: str) -> ValueError:
            return ValueError(f"{path}: {problem}; delete it and {RERUN}")

        if header.get("fingerprint") != meta["fingerprint"]:
            raise fail("tensors and metadata come from different runs (fingerprints differ)")
        m, d, blocks = meta["m"], meta["d"], check_blocks(meta["blocks"], meta["d"])
        G = tensors.get("gradients")
        if G is None or tuple(G.shape) != (m, d) or str(G.dtype) != f"torch.{meta['dtype']}":
            raise fail(f"gradients missing or not ({m}, {d}) {meta['dtype']}")
        factors = []
        for k, (a, b) in enumerate(blocks):
            size = m if uses_dual_form(b - a, m) else b - a
            L = tensors.get(f"factor.{k}")
            if L is None or tuple(L.shape) != (size, size) or not torch.isfinite(L).all():
                raise fail(f"factor {k} missing, not ({size}, {size}) or not finite")
            factors.append(L)
        diag = tensors.get("diag_inverse")
        if diag is not None and tuple(diag.shape) != (d,):
            raise fail(f"diag_inverse not of shape ({d},)")
        return cls(
            G,
            meta["lambda"],
            blocks,
            factors,
            fingerprint=meta["fingerprint"],
            parameter_names=meta.get("parameter_names"),
            cost=meta.get("cost"),
            diag=diag,
            chunk_columns=meta.get("chunk_columns", CHUNK_COLUMNS),
            row_block=meta.get("row_block", ROW_BLOCK),
        )
