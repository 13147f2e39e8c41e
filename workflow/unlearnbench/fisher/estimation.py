"""The damped empirical Fisher of the retained data D+ at the current weights.

``estimate_fisher`` draws a seeded sample of m rows of D+, computes their per-example gradients
in float32 (``per_example_grads``), chunk by chunk straight into one preallocated (m, d) matrix
(peak memory = that matrix plus one chunk's activations, so m = 1024 fits where m copies would
not), and sets up ``WoodburyFisher`` with the chosen block structure. The matrix is stored as
``fisher.storage`` and ``fisher.dtype`` say: next to the model (``device``) or in host RAM
(``host``), in float32 or bfloat16 (the storage modes that never hold it are in
``matrix_free.py`` and ``sharded.py``; ``storage.py`` picks one). The artifact carries the
model's fingerprint: a consumer refuses a Fisher of other weights; and its ``sample`` record
(the rows of D+ and a digest of their tokens), from which a consumer can recompute G.

The sample depends only on the seed (stream ``unlearn``, key ``fisher``), so a Fisher
re-estimated at new weights (refresh, unlearning cycles) sees the same rows.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..lm_data import collate
from ..logs import progress
from ..models import fingerprint
from ..seeding import numpy_rng
from .per_example_grads import flat_dim, layout_blocks, parameter_layout, per_example_gradients
from .woodbury import WoodburyFisher, fixed_size_blocks

log = logging.getLogger(__name__)

BLOCKINGS = ("full", "layer", "fixed")
GRADIENT_METHODS = ("auto", "loop", "vmap")
STORAGE_MODES = ("device", "host", "matrix_free")  # fisher.memory.STORAGE_MODES
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GRADIENT_CHUNK = 32  # sequences per per-example-gradient call: bounds activation memory


@dataclass(frozen=True)
class FisherConfig:
    """``fisher.*`` of the config.

    examples: m, rows of D+ whose per-example gradients form F.
    damping: lambda of F = lambda I + G^T G / m.
    blocks: "full" (one block), "layer" (one block per parameter tensor) or "fixed"
    (consecutive blocks of ``block_size`` coordinates).
    storage: where G lives, "device", "host" or "matrix_free" (never stored: recomputed
    ``recompute_rows`` per-example gradients at a time); dtype: G's, "float32" or "bfloat16".
    """

    examples: int
    damping: float
    blocks: str = "full"
    block_size: int = 65536
    gradient_method: str = "auto"
    storage: str = "device"
    dtype: str = "float32"
    recompute_rows: int = 16
    seed: int = 0
    key: str = "fisher"  # config path, for error messages

    def __post_init__(self) -> None:
        if isinstance(self.examples, bool) or not isinstance(self.examples, int):
            raise ValueError(f"{self.key}.examples: must be an integer, got {self.examples!r}")
        if self.examples < 2:
            raise ValueError(f"{self.key}.examples: must be >= 2, got {self.examples}")
        if not (isinstance(self.damping, int | float) and math.isfinite(self.damping)):
            raise ValueError(f"{self.key}.damping: must be a finite number, got {self.damping!r}")
        if self.damping <= 0:
            raise ValueError(f"{self.key}.damping: must be > 0, got {self.damping}")
        if self.blocks not in BLOCKINGS:
            raise ValueError(
                f"{self.key}.blocks: unknown {self.blocks!r}; use one of {', '.join(BLOCKINGS)}"
            )
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int):
            raise ValueError(f"{self.key}.block_size: must be an integer, got {self.block_size!r}")
        if self.block_size < 1:
            raise ValueError(f"{self.key}.block_size: must be >= 1, got {self.block_size}")
        for name, known in (
            ("gradient_method", GRADIENT_METHODS),
            ("storage", STORAGE_MODES),
            ("dtype", tuple(DTYPES)),
        ):
            if getattr(self, name) not in known:
                raise ValueError(
                    f"{self.key}.{name}: unknown {getattr(self, name)!r}; use one of "
                    f"{', '.join(known)}"
                )
        rows = self.recompute_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"{self.key}.recompute_rows: must be an integer >= 1, got {rows!r}")


def fisher_sample(n_retained: int, cfg: FisherConfig) -> list[int]:
    """Sorted positions (into the retained sequences) of the m rows that form F.

    m = ``cfg.examples``, or all of D+ when D+ is smaller: a real-world request's forget set is
    decided by the data (a string repeated in 130 of 320 credits examples takes them all), so a
    fixed m can exceed D+; F then uses every retained row, and the manifest's ``m`` says so.
    """
    if n_retained < 1:
        raise ValueError(
            f"{cfg.key}: the retained set is empty, so there is no Fisher of D+; the forget set "
            "holds every training example (check the request: canaries or realworld.forget_top)"
        )
    if cfg.examples >= n_retained:
        if cfg.examples > n_retained:
            log.warning(
                "%s.examples = %d exceeds the retained set (%d examples): F uses all of them",
                cfg.key,
                cfg.examples,
                n_retained,
            )
        return list(range(n_retained))
    rng = numpy_rng(cfg.seed, "unlearn", "fisher")
    return sorted(rng.choice(n_retained, size=cfg.examples, replace=False).tolist())


def block_ranges(model: torch.nn.Module, cfg: FisherConfig) -> list[tuple[int, int]] | None:
    layout = parameter_layout(model)
    if cfg.blocks == "layer":
        return layout_blocks(layout)
    if cfg.blocks == "fixed":
        return fixed_size_blocks(flat_dim(layout), cfg.block_size)
    return None


def resolved_method(cfg: FisherConfig, device: torch.device) -> str:
    """``auto`` made concrete (vmap on CUDA, loop elsewhere): consumers that recompute G use
    the method that computed it."""
    if cfg.gradient_method != "auto":
        return cfg.gradient_method
    return "vmap" if device.type == "cuda" else "loop"


def sequences_digest(sequences: Sequence[Sequence[int]]) -> str:
    """sha256 of token sequences: a consumer that recomputes G checks it has the same rows."""
    digest = hashlib.sha256()
    for seq in sequences:
        digest.update(len(seq).to_bytes(4, "little"))
        digest.update(torch.tensor(seq, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def sample_record(
    rows: Sequence[int], sequences: Sequence[Sequence[int]], cfg: FisherConfig, method: str
) -> dict[str, Any]:
    """What a consumer needs to recompute G: the rows of D+, their digest and how."""
    return {
        "rows": list(rows),
        "sha256": sequences_digest(sequences),
        "gradient_method": method,
        "recompute_rows": cfg.recompute_rows,
    }


def sampled_sequences(
    sample: dict[str, Any], retain_sequences: Sequence[Sequence[int]], where: str
) -> list[Sequence[int]]:
    """The Fisher's m sequences, taken from this job's D+ by the artifact's ``sample`` record
    and checked against its digest (``where`` names the artifact in the error)."""
    rows = sample["rows"]
    if rows and max(rows) >= len(retain_sequences):
        raise ValueError(
            f"{where}: the Fisher's sample names row {max(rows)} of D+, which has "
            f"{len(retain_sequences)} rows here; rerun estimate_fisher"
        )
    sequences = [retain_sequences[i] for i in rows]
    if sequences_digest(sequences) != sample["sha256"]:
        raise ValueError(
            f"{where}: this job's D+ rows differ from those the Fisher was estimated on "
            "(their token digest differs); rerun estimate_fisher"
        )
    return sequences


def gradient_storage(m: int, d: int, cfg: FisherConfig, device: torch.device) -> torch.Tensor:
    """An empty G as ``fisher.storage`` and ``fisher.dtype`` ask: on the model's device, or in
    host RAM (pinned next to a GPU, so that column chunks stream to it)."""
    dtype = DTYPES[cfg.dtype]
    if cfg.storage == "host":
        return torch.empty(m, d, dtype=dtype, pin_memory=device.type == "cuda")
    return torch.empty(m, d, dtype=dtype, device=device)


def gradient_matrix(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
    method: str | None = None,
) -> torch.Tensor:
    """G: the per-example gradients of ``sequences`` at ``model``'s weights, stored as ``cfg``
    says, computed ``GRADIENT_CHUNK`` sequences per call straight into it."""
    device = next(model.parameters()).device
    G = gradient_storage(len(sequences), flat_dim(parameter_layout(model)), cfg, device)
    chunks = range(0, len(sequences), GRADIENT_CHUNK)
    for lo in progress(chunks, desc="Fisher gradients", total=len(chunks)):
        hi = min(lo + GRADIENT_CHUNK, len(sequences))
        batch = collate(sequences[lo:hi], pad_id)
        per_example_gradients(
            model,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            method=method or cfg.gradient_method,
            out=G[lo:hi],  # a row slice of a contiguous matrix: written in place
            progress=False,
        )
    return G


def estimate_fisher(
    model: torch.nn.Module,
    retain_sequences: Sequence[Sequence[int]],
    cfg: FisherConfig,
    pad_id: int,
) -> WoodburyFisher:
    """Inverse damped empirical Fisher of ``cfg.examples`` seeded rows of D+ at ``model``'s
    current weights (all trainable parameters, tied tensors once), G stored on the device or
    the host (``cfg.storage``: matrix_free is ``matrix_free.MatrixFreeFisher``). ``cost`` of
    the result holds ``gradient_wall_s`` and ``setup_wall_s``."""
    if cfg.storage == "matrix_free":
        raise ValueError(
            f"{cfg.key}.storage: matrix_free stores no G; estimate it with "
            "fisher.storage.fit_fisher (MatrixFreeFisher)"
        )
    rows = fisher_sample(len(retain_sequences), cfg)
    layout = parameter_layout(model)
    device = next(model.parameters()).device
    sequences = [retain_sequences[i] for i in rows]
    log.info(
        "Fisher: m = %d per-example gradients of d = %d parameters", len(rows), flat_dim(layout)
    )
    start = time.perf_counter()
    G = gradient_matrix(model, sequences, cfg, pad_id)
    gradient_seconds = time.perf_counter() - start
    fisher = WoodburyFisher.from_gradients(
        G,
        cfg.damping,
        block_ranges(model, cfg),
        fingerprint=fingerprint(model),
        parameter_names=[s.name for s in layout],
        progress=False,
        device=device,
    )
    fisher.cost["gradient_wall_s"] = round(gradient_seconds, 3)
    method = resolved_method(cfg, device)
    fisher.record = {"storage": cfg.storage, "sample": sample_record(rows, sequences, cfg, method)}
    return fisher
