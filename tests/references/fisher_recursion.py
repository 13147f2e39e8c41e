"""The paper's form of the inverse Fisher, and the slow references the fast form is tested against.

Static M-FAC / WoodFisher (Frantar et al. 2021; Singh & Alistarh 2020), per block:
    F_0^{-1} = I / lam,  h_i = F_{i-1}^{-1} g_i,  den_i = m + g_i^T h_i,
    F^{-1} x = x / lam - sum_i (h_i . x / den_i) h_i,
    diag(F^{-1}) = 1 / lam - sum_i h_i^2 / den_i.
``literal_recursion`` computes h_i one rank-one update at a time (O(m^2 d) memory-bound matrix-
vector passes); ``recursion_factors`` derives the same h_i and den_i from ``WoodburyFisher``'s
Cholesky factors (den_i = L_ii^2 / lam, h_i = (L_ii / lam) (L^{-1} G)_i); ``dense_inverse`` forms
the d x d inverse for small d. ``correlated_gradients`` are the synthetic G the Fisher tests
share, ``MatrixRows`` serves a fixed G as a matrix-free Fisher's recomputed rows, ``rel_err``
is their yardstick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from unlearnbench.fisher.woodbury import (
    CHUNK_COLUMNS,
    Block,
    WoodburyFisher,
    check_blocks,
    checked_cholesky,
    column_chunks,
    row_tiles,
    uses_dual_form,
)

DENSE_MAX_D = 4096  # dense_inverse is a test reference only


def _off(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm: None = only on a terminal


@dataclass
class RecursionFactors:
    """Per block k: rows h_i of H[:, block] and den[k, i]."""

    H: torch.Tensor  # (m, d)
    den: torch.Tensor  # (n_blocks, m) float64
    lam: float
    blocks: list[Block]
    chunk_columns: int = CHUNK_COLUMNS

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float64) / self.lam
        for (a, b), den in zip(self.blocks, self.den, strict=True):
            Hb = self.H[:, a:b]
            coef = (Hb @ x[a:b].to(self.H.dtype)).double() / den
            y[a:b] -= (Hb.T @ coef.to(self.H.dtype)).double()
        return y.to(x.dtype)

    def diag_inverse(self) -> torch.Tensor:
        diag = torch.full((self.H.shape[1],), 1 / self.lam, dtype=torch.float64)
        for (a, b), den in zip(self.blocks, self.den, strict=True):
            for cols in column_chunks(a, b, self.chunk_columns):
                diag[cols] -= self.H[:, cols].double().square().T @ (1 / den)
        return diag.to(self.H.dtype)


def literal_step(
    Gb: torch.Tensor, Hb: torch.Tensor, den_b: torch.Tensor, i: int, lam: float
) -> float:
    """Step i for one block: h_i = F_{i-1}^{-1} g_i written into Hb[i]; returns den_i.

    F_{i-1}^{-1} g = g / lam - sum_{j<i} (h_j . g / den_j) h_j: two passes over h_1..h_{i-1}
    (as matrix-vector products, the fastest way to run the recursion as written).
    """
    g, h = Gb[i], Hb[i]
    torch.div(g, lam, out=h)
    if i:
        coef = (Hb[:i] @ g).double() / den_b[:i]
        h.addmv_(Hb[:i].T, coef.to(Hb.dtype), alpha=-1)
    return Gb.shape[0] + float(torch.dot(g, h))


def literal_recursion(
    G: torch.Tensor,
    lam: float,
    blocks: Sequence[Sequence[int]] | None = None,
    progress: bool | None = None,
) -> RecursionFactors:
    """The paper's recursion, one rank-one update at a time: O(m^2 d), the reference."""
    m, d = G.shape
    blocks = check_blocks(blocks, d)
    H = torch.empty_like(G)
    den = torch.empty(len(blocks), m, dtype=torch.float64)
    with tqdm(total=m * len(blocks), desc="literal recursion", disable=_off(progress)) as bar:
        for k, (a, b) in enumerate(blocks):
            for i in range(m):
                den[k, i] = literal_step(G[:, a:b], H[:, a:b], den[k], i, lam)
                bar.update()
    return RecursionFactors(H, den, float(lam), blocks)


def recursion_factors(fisher: WoodburyFisher) -> RecursionFactors:
    """The paper's h_i and den_i derived from the Cholesky factors (float64 algebra): shows the
    fast set-up is the recursion itself, not an approximation of it."""
    G, m, lam = fisher.gradients, fisher.m, fisher.lam
    H = torch.empty_like(G)
    den = torch.empty(len(fisher.blocks), m, dtype=torch.float64)
    for k, ((a, b), L) in enumerate(zip(fisher.blocks, fisher.factors, strict=True)):
        if not uses_dual_form(b - a, m):  # a primal factor does not give h_i: factor K here
            Gb = G[:, a:b].double()
            L = checked_cholesky(Gb @ Gb.T + m * lam * torch.eye(m, dtype=torch.float64), (a, b))
        diag_L = L.diagonal()
        den[k] = diag_L.square() / lam
        for cols in column_chunks(a, b, fisher.chunk_columns):
            Q = torch.linalg.solve_triangular(L, G[:, cols].double(), upper=False)
            H[:, cols] = (diag_L / lam)[:, None] * Q
    return RecursionFactors(H, den, lam, list(fisher.blocks), fisher.chunk_columns)


def dense_inverse(
    G: torch.Tensor, lam: float, blocks: Sequence[Sequence[int]] | None = None
) -> torch.Tensor:
    """(lam I + G^T G / m)^{-1} in float64 (its block-diagonal part if blocks are given)."""
    m, d = G.shape
    if d > DENSE_MAX_D:
        raise ValueError(f"dense_inverse forms a d x d matrix; d = {d} > {DENSE_MAX_D}")
    G64 = G.double()
    F = G64.T @ G64 / m
    if blocks is not None:
        keep = torch.zeros(d, d, dtype=torch.bool)
        for a, b in check_blocks(blocks, d):
            keep[a:b, a:b] = True
        F = F * keep
    return torch.linalg.inv(F + lam * torch.eye(d, dtype=torch.float64))


def correlated_gradients(m: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Rows share a rank-3 part, like real per-example gradients: an ill-conditioned Gram."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(m, 3, generator=gen, dtype=torch.float64) @ torch.randn(
        3, d, generator=gen, dtype=torch.float64
    )
    return (shared + 0.1 * torch.randn(m, d, generator=gen, dtype=torch.float64)).to(dtype)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())


class MatrixRows:
    """A fixed G served the way ``GradientRows`` serves recomputed gradients: chunk by chunk,
    counting the rows it hands out."""

    def __init__(self, G: torch.Tensor, rows: int) -> None:
        self.G, self.rows, self.computed = G, rows, 0
        self.m, self.d, self.device = G.shape[0], G.shape[1], G.device
        self.weights = "fixed"

    def tiles(self):
        return row_tiles(self.m, self.rows)

    def compute(self, lo: int, hi: int, slot: int = 0) -> torch.Tensor:
        self.computed += hi - lo
        return self.G[lo:hi].clone()  # a fresh buffer, as a recomputation gives

    def release(self) -> None:
        pass

    def weights_fingerprint(self) -> str:
        return self.weights

    def parameter_names(self) -> None:
        return None
