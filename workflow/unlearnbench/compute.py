"""Where and in what precision a job computes, chosen once per job by the stage frame.

Device. A job runs on CUDA when its rule asks for a GPU (``resources: gpu``; the GPU profiles
give the heavy rules one with ``set-resources``), else on the CPU. ``CUDA_VISIBLE_DEVICES``
(which Slurm sets to the GPUs it granted) decides what the job sees; asking for more GPUs than
it sees is refused at once rather than left to run for hours on the CPU. ``compute.device: cpu``
keeps every job on the CPU even where its rule was given a GPU: on a GPU node that reproduces
the CPU results bit for bit. (There is no ``cuda`` override: a job on a GPU that Snakemake did
not count as taken would share it with every other job it starts.)

Precision. Weights, gradients, optimizer state and the Fisher's gradients are float32 whatever
the checkpoint stored (``place_model``: transformers 5 keeps a hub checkpoint's float16), and
the Woodbury set-up accumulates in float64. ``compute.precision: bf16`` runs the forward passes
that tolerate it under bf16 autocast: training steps (the loss and its backward pass) and
perplexity scoring. It never touches exposure ranks (candidates differ by less than bf16 can
resolve), per-example gradients, Newton steps or DP-SGD. It acts on CUDA only: CPU results
stay bitwise float32.

The frame sets the job's policy (``precision_policy``); code marks the regions where autocast
is safe with ``autocast_forward(device)``, so the policy reaches them without a parameter
through every call. torch is imported lazily: stages that never touch a model stay light.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

DEVICES = ("auto", "cpu")
PRECISIONS = ("float32", "bf16")
# The autocast dtype of each precision (None: no autocast).
AUTOCAST_DTYPE = {"float32": None, "bf16": "bfloat16"}


@dataclass(frozen=True)
class Compute:
    """The ``compute`` block of the config (a rule's ``compute`` param)."""

    device: str = "auto"
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(
                f"compute.device: {self.device!r} is not one of {', '.join(DEVICES)}; use auto "
                "(the rule's gpu resource decides) or cpu"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"compute.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}; "
                "use float32, or bf16 for autocast on GPUs"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Compute:
        """The rule's ``compute`` param, or the defaults for a rule that passes none."""
        return cls(**params.get("compute", {}))


def choose_device(gpus: int | None, override: str = "auto") -> str:
    """ "cuda" for a job whose rule asks for GPUs (``resources: gpu``), else "cpu";
    ``override`` "cpu" (``compute.device``) keeps the job on the CPU in any case.

    A job that asked for GPUs and sees fewer (CUDA_VISIBLE_DEVICES empty, no driver) is
    refused: on a cluster it would silently run for hours on the CPU instead.
    """
    Compute(device=override)  # the same readable error for a bad override
    if not gpus or override == "cpu":
        return "cpu"  # torch is not imported: light stages stay light
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"resources.gpu: this job asks for {gpus} GPU(s) but CUDA is not available here "
            f"(CUDA_VISIBLE_DEVICES={visible}); run it on a GPU node, or set the rule's gpu "
            "resource to 0 (set-resources in the profile) to run it on the CPU"
        )
    seen = torch.cuda.device_count()
    if seen < gpus:
        raise RuntimeError(
            f"resources.gpu: this job asks for {gpus} GPU(s) but sees {seen} "
            f"(CUDA_VISIBLE_DEVICES={visible}); give the job as many GPUs as its rule asks for, "
            "or lower the rule's gpu resource (set-resources in the profile)"
        )
    return "cuda"


# The autocast dtype of the running job (None: float32 everywhere) and whether it may act on
# the CPU (tests only: the frame never allows it, so CPU results stay bitwise float32).
_POLICY: ContextVar[tuple[str | None, bool]] = ContextVar("autocast_policy", default=(None, False))


def autocast_dtype(device: str, precision: str) -> str | None:
    """The dtype a job on ``device`` autocasts its safe regions to: bf16 on CUDA only."""
    if not str(device).startswith("cuda"):
        return None
    return AUTOCAST_DTYPE[Compute(precision=precision).precision]


@contextmanager
def precision_policy(dtype: str | None, allow_cpu: bool = False) -> Iterator[None]:
    """Within the block, ``autocast_forward`` regions autocast to ``dtype`` (None: never).
    ``allow_cpu`` lets tests exercise the bf16 code path on the CPU."""
    token = _POLICY.set((dtype, allow_cpu))
    try:
        yield
    finally:
        _POLICY.reset(token)


def autocast_forward(device: Any):
    """Autocast for a forward pass on ``device`` (a torch.device or a name) under the job's
    policy: ``torch.autocast`` to the policy's dtype on CUDA, a no-op otherwise."""
    dtype, allow_cpu = _POLICY.get()
    if dtype is None:
        return nullcontext()
    import torch

    kind = torch.device(device).type
    if kind != "cuda" and not (allow_cpu and kind == "cpu"):
        return nullcontext()
    return torch.autocast(kind, dtype=getattr(torch, dtype))


def place_model(model: Any, device: Any) -> Any:
    """The model on ``device`` in float32 (a float32 model on its device is left as it is, so
    CPU results do not change): every stage computes on float32 weights, whatever dtype the
    checkpoint stored."""
    import torch

    return model.to(device=device, dtype=torch.float32)
