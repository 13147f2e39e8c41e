"""The inverse empirical Fisher without the m x d gradient matrix (``fisher.storage: matrix_free``).

At OPT-2.7B one per-example gradient is 10.6 GB, so m = 256 of them (2.7 TB) fit neither a GPU
nor a node. Here G is never stored: its rows are recomputed, ``rows`` per-example gradients at a
time into two reusable (rows, d) buffers, whenever an operation needs them, and every quantity
of ``woodbury`` is built from row chunks instead of column chunks:

- set-up: the Gram matrix K = G_b G_b^T of each dual block tile by tile, K[i, j] = G_i G_j^T for
  row chunks j <= i (chunk i held while chunks 0..i-1 are recomputed beside it), the n x n
  matrix G_b^T G_b of each primal block from the diagonal chunks; then the factors of
  ``woodbury``. n(n+1)/2 chunk computations for n = ceil(m / rows): about m^2 / (2 rows)
  per-example gradients, against m when G is stored.
- F^{-1} x: one pass for the m-vectors u_b = G_b x_b, the m x m solves, one pass for
  y_b = (x_b - G_b^T v_b) / lam: 2m per-example gradients.
- diag(G^T G / m): one pass. diag(F^{-1}) = (1 - colsum((L^{-1} G)^2)) / lam: row chunk r of
  L^{-1} G is sum_{k <= r} L^{-1}[r, k] G_k, again n(n+1)/2 chunk computations.

Memory: the model, two (rows, d) float32 chunks and one chunk's activations, the factors, and
in products two float32 d-vectors (x and y: float64 ones would be 21 GB each at OPT-2.7B, so y
accumulates in float32 across the row chunks; every m-vector and m x m matrix is float64).

The weights are not copied (another 10.6 GB at OPT-2.7B): the Fisher recomputes gradients at
the model's current weights and refuses if they are not the ones it was set up at (its
fingerprint), e.g. a second Newton step with the starting Fisher; the config check refuses
such settings before any job. Results equal the stored-G Fisher's to float32 rounding (the
tiles sum in another order; tests: against ``WoodburyFisher`` and the dense inverse).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..lm_data import collate
from ..logs import progress_bar
from ..models import fingerprint
from ..provenance import peak_memory_mb
from .estimation import (
    FisherConfig,
    block_ranges,
    fisher_sample,
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
    checked_cholesky,
    column_chunks,
    dual_coefficients,
    dual_factor,
    factor_metadata,
    primal_diag,
    primal_solve,
    row_tiles,
    uses_dual_form,
    write_artifact,
)

log = logging.getLogger(__name__)


class GradientRows:
    """The rows of G on demand: per-example gradients of m fixed sequences at ``model``'s
    current weights, ``rows`` at a time, into one of two reusable buffers (``slot``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        sequences: Sequence[Sequence[int]],
        pad_id: int,
        method: str,
        rows: int,
    ) -> None:
        self.model, self.sequences, self.pad_id = model, list(sequences), pad_id
        self.method, self.rows = method, rows
        self.d = flat_dim(parameter_layout(model))
        self.device = next(model.parameters()).device
        self.computed = 0  # per-example gradients computed so far: the time this mode costs
        self._buffers: dict[int, torch.Tensor] = {}

    @property
    def m(self) -> int:
        return len(self.sequences)

    def tiles(self) -> list[Block]:
        return row_tiles(self.m, self.rows)

    def compute(self, lo: int, hi: int, slot: int = 0) -> torch.Tensor:
        """G[lo:hi] (float32, on the model's device), valid until ``slot`` is computed again."""
        if slot not in self._buffers:
            self._buffers[slot] = torch.empty(
                self.rows, self.d, dtype=torch.float32, device=self.device
            )
        out = self._buffers[slot][: hi - lo]
        batch = collate(self.sequences[lo:hi], self.pad_id)
        per_example_gradients(
            self.model, batch.input_ids, batch.attention_mask, batch.labels,
            method=self.method, chunk_size=self.rows, out=out, progress=False,
        )  # fmt: skip
        self.computed += hi - lo
        return out

    def release(self) -> None:
        """Free the buffers between operations (the unlearning job needs the memory)."""
        self._buffers.clear()

    def weights_fingerprint(self) -> str:
        """The weights the rows are computed at, now (``models.fingerprint``)."""
        return fingerprint(self.model)

    def parameter_names(self) -> list[str]:
        return [s.name for s in parameter_layout(self.model)]


class MatrixFreeFisher:
    """``WoodburyFisher``'s interface (ihvp, diag_empirical, diag_inverse, save) with G
    recomputed from ``source`` for every operation (a ``GradientRows``, or anything with its
    ``m``, ``d``, ``rows``, ``device``, ``tiles``, ``compute``, ``release``,
    ``weights_fingerprint`` and ``parameter_names``: the tests use fixed matrices)."""

    def __init__(
        self,
        source: GradientRows,
        lam: float,
        blocks: list[Block],
        factors: list[torch.Tensor],
        *,
        fingerprint: str,
        parameter_names: list[str] | None = None,
        cost: dict | None = None,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        record: dict | None = None,
    ) -> None:
        self.source, self.lam, self.blocks, self.factors = source, float(lam), blocks, factors
        self.fingerprint, self.parameter_names = fingerprint, parameter_names
        self.cost = dict(cost or {})
        self.chunk_columns, self.row_block = chunk_columns, row_block
        self.record = dict(record or {})
        self._diag: torch.Tensor | None = None

    @property
    def m(self) -> int:
        return self.source.m

    @property
    def d(self) -> int:
        return self.source.d

    @property
    def device(self) -> torch.device:
        return self.source.device

    def _dual(self) -> list[int]:
        return [k for k, (a, b) in enumerate(self.blocks) if uses_dual_form(b - a, self.m)]

    @classmethod
    def estimate(
        cls,
        model: torch.nn.Module,
        retain_sequences: Sequence[Sequence[int]],
        cfg: FisherConfig,
        pad_id: int,
        progress: bool | None = None,
    ) -> MatrixFreeFisher:
        """``estimate_fisher``'s sample of D+ and blocks, set up without storing G."""
        rows = fisher_sample(len(retain_sequences), cfg)
        sequences = [retain_sequences[i] for i in rows]
        method = resolved_method(cfg, next(model.parameters()).device)
        source = GradientRows(model, sequences, pad_id, method, cfg.recompute_rows)
        fisher = cls.set_up(source, cfg.damping, block_ranges(model, cfg), progress=progress)
        fisher.record = {
            "storage": "matrix_free",
            "sample": sample_record(rows, sequences, cfg, method),
        }
        return fisher

    @classmethod
    def set_up(
        cls,
        source: GradientRows,
        lam: float,
        blocks: Sequence[Sequence[int]] | None = None,
        *,
        chunk_columns: int = CHUNK_COLUMNS,
        row_block: int = ROW_BLOCK,
        progress: bool | None = None,
    ) -> MatrixFreeFisher:
        """The factors from Gram tiles of recomputed row chunks (see the module docstring)."""
        m, d, device = source.m, source.d, source.device
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lambda must be a positive finite number, got {lam}")
        blocks = check_blocks(blocks, d)
        dual = {k for k, (a, b) in enumerate(blocks) if uses_dual_form(b - a, m)}
        sums = {
            k: torch.zeros(*((m, m) if k in dual else (b - a, b - a)), dtype=torch.float64,
                           device=device)
            for k, (a, b) in enumerate(blocks)
        }  # fmt: skip
        start = time.perf_counter()
        tiles = source.tiles()
        pairs = len(tiles) * (len(tiles) + 1) // 2
        with progress_bar("Fisher set-up (matrix-free)", pairs, enabled=progress) as bar:
            for i, (r0, r1) in enumerate(tiles):
                Gi = source.compute(r0, r1, slot=0)
                for k, (a, b) in enumerate(blocks):
                    if k not in dual:
                        Gb = Gi[:, a:b].double()
                        sums[k] += Gb.T @ Gb
                for c0, c1 in tiles[: i + 1]:
                    Gj = Gi if c0 == r0 else source.compute(c0, c1, slot=1)
                    for k in dual:
                        a, b = blocks[k]
                        for cols in column_chunks(a, b, chunk_columns):
                            sums[k][r0:r1, c0:c1] += Gi[:, cols] @ Gj[:, cols].T
                    bar.update()
        source.release()
        factors = []
        for k, block in enumerate(blocks):
            if k in dual:
                K = torch.tril(sums[k]) + torch.tril(sums[k], -1).T
                factors.append(dual_factor(K, m, lam, block))
            else:
                K = sums[k] / m
                K.diagonal().add_(lam)
                factors.append(checked_cholesky(K, block))
        cost = {
            "setup_wall_s": round(time.perf_counter() - start, 3),
            "setup_gradients": source.computed,
            "process_peak_rss_mb": round(peak_memory_mb(), 1),
        }
        log.info("matrix-free set-up: %d per-example gradients for m = %d", source.computed, m)
        return cls(
            source, lam, blocks, factors, fingerprint=source.weights_fingerprint(),
            parameter_names=source.parameter_names(), cost=cost,
            chunk_columns=chunk_columns, row_block=row_block,
        )  # fmt: skip

    @classmethod
    def from_artifact(
        cls,
        art: Artifact,
        model: torch.nn.Module,
        retain_sequences: Sequence[Sequence[int]],
        pad_id: int,
    ) -> MatrixFreeFisher:
        """A stored matrix-free Fisher (factors and sample) for ``model`` (checked by the
        reader) and this job's D+, from which its rows are taken again."""
        sample = art.meta["sample"]
        sequences = sampled_sequences(sample, retain_sequences, str(art.path))
        source = GradientRows(
            model, sequences, pad_id, sample["gradient_method"], sample["recompute_rows"]
        )
        return cls(
            source, art.meta["lambda"], art.blocks, [L.to(source.device) for L in art.factors],
            fingerprint=art.meta["fingerprint"], parameter_names=art.meta.get("parameter_names"),
            cost=art.meta.get("cost"), chunk_columns=art.meta["chunk_columns"],
            row_block=art.meta["row_block"], record=art.record,
        )  # fmt: skip

    def _check_weights(self) -> None:
        if self.source.weights_fingerprint() != self.fingerprint:
            raise ValueError(
                "fisher.storage: matrix_free recomputes the per-example gradients at the "
                "weights it was set up at, and the model's weights have changed since; "
                "re-estimate it at the new weights (refresh_fisher: true, iterations with a "
                "fresh Fisher) or use fisher.storage: device or host"
            )

    def ihvp(self, x: torch.Tensor) -> torch.Tensor:
        """F^{-1} x: two passes over recomputed rows (u = G x, then x - G^T K^{-1} u)."""
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        self._check_weights()
        xg = x.to(device=self.device, dtype=torch.float32)
        y = xg.clone()
        dual = self._dual()
        for k, ((a, b), L) in enumerate(zip(self.blocks, self.factors, strict=True)):
            if k not in dual:
                y[a:b] = primal_solve(y[a:b].double(), L).float()
        if not dual:
            return y.to(x.dtype)
        U = torch.zeros(len(dual), self.m, dtype=torch.float64, device=self.device)
        for r0, r1 in self.source.tiles():
            Gi = self.source.compute(r0, r1)
            for row, k in enumerate(dual):
                for cols in column_chunks(*self.blocks[k], self.chunk_columns):
                    U[row, r0:r1] += Gi[:, cols] @ xg[cols]
        V = [
            dual_coefficients(U[row], self.factors[k], torch.float32) for row, k in enumerate(dual)
        ]
        for r0, r1 in self.source.tiles():
            Gi = self.source.compute(r0, r1)
            for row, k in enumerate(dual):
                for cols in column_chunks(*self.blocks[k], self.chunk_columns):
                    y[cols] -= Gi[:, cols].T @ V[row][r0:r1]
        self.source.release()
        for k in dual:
            a, b = self.blocks[k]
            y[a:b] /= self.lam
        return y.to(x.dtype)

    def diag_empirical(self) -> torch.Tensor:
        """diag(G^T G / m) in float64: one pass over recomputed rows."""
        self._check_weights()
        out = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        for r0, r1 in self.source.tiles():
            Gi = self.source.compute(r0, r1)
            for cols in column_chunks(0, self.d, self.chunk_columns):
                out[cols] += Gi[:, cols].double().square().sum(0)
        self.source.release()
        return out / self.m

    def diag_inverse(self) -> torch.Tensor:
        """diag(F^{-1}), cached: per dual block (1 - colsum(Q^2)) / lam, Q = L^{-1} G built
        row chunk by row chunk from recomputed chunks (float32 products, float64 sums)."""
        if self._diag is not None:
            return self._diag
        self._check_weights()
        diag = torch.empty(self.d, dtype=torch.float64, device=self.device)
        dual = self._dual()
        for k, ((a, b), L) in enumerate(zip(self.blocks, self.factors, strict=True)):
            if k not in dual:
                diag[a:b] = primal_diag(L)
        eye = torch.eye(self.m, dtype=torch.float64, device=self.device)
        inverses = {
            k: torch.linalg.solve_triangular(self.factors[k], eye, upper=False).float()
            for k in dual
        }
        sq_norms = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        tiles = self.source.tiles()
        Q = torch.empty(self.source.rows, self.d, dtype=torch.float32, device=self.device)
        for r, (r0, r1) in enumerate(tiles):
            Qr = Q[: r1 - r0].zero_()
            for c0, c1 in tiles[: r + 1]:
                Gk = self.source.compute(c0, c1)
                for k in dual:
                    for cols in column_chunks(*self.blocks[k], self.chunk_columns):
                        Qr[:, cols] += inverses[k][r0:r1, c0:c1] @ Gk[:, cols]
            for k in dual:
                for cols in column_chunks(*self.blocks[k], self.chunk_columns):
                    sq_norms[cols] += Qr[:, cols].double().square().sum(0)
        self.source.release()
        for k in dual:
            a, b = self.blocks[k]
            diag[a:b] = (1 - sq_norms[a:b]) / self.lam
        self._diag = diag.float()
        return self._diag

    def metadata(self) -> dict[str, Any]:
        return factor_metadata(self, "float32")

    def save(self, tensors_path, meta_path) -> None:
        """The factors and the sample record (no G: consumers recompute its rows)."""
        tensors = {f"factor.{k}": L for k, L in enumerate(self.factors)}
        write_artifact(tensors_path, meta_path, self.metadata(), tensors)
