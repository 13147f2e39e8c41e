"""Multiple unlearning cycles: K sequential requests, each from the previous request's model.

The paper's Fisher Forgetting is meant to keep utility over repeated requests; this study chains
them the way a deployed model meets them ("memory-free": each request updates the latest
weights, no stored history). Cycle k forgets only the rows of canary group k, starting from
cycle k-1's model (cycle 1 from the original). Its retained set is D minus every group removed
so far: the groups still pending are in the model's training data until their own request.
Fisher-based methods estimate the Fisher of that retained set at each cycle's starting weights,
cycle 1 included (the stored estimate is of the final D+, which omits the pending groups).
Each method runs every request at one setting: its base one, or (``unlearn.cycle_point``) the
operating point its frontier chose on the same replicate, so that the methods compared meet the
requests at matched single-request erasure (or utility).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..fisher.estimation import FisherConfig
from ..models import save_model
from ..replicate import ReplicateFiles
from ..unlearning.registry import make_method
from ..unlearning.stage import setup_replicate, unlearn_request
from ..unlearning.trajectory import TrajectoryConfig

log = logging.getLogger(__name__)


def unlearn_cycles_stage(
    method: str,
    hyper: Mapping[str, Any],
    replicate: ReplicateFiles,
    fisher_cfg: FisherConfig | None,
    trajectory: Mapping[str, int],
    requests: int,
    out_dirs: Sequence[str | Path],
    device: str = "cpu",
) -> dict[str, Any]:
    """K = ``requests`` sequential requests on ``replicate``; cycle k's model is saved to
    ``out_dirs[k-1]``. Every cycle estimates the Fisher of its own retained set at its starting
    weights with ``fisher_cfg`` (``replicate.fisher`` is not read)."""
    unlearner = make_method(method, hyper)
    trajectory_cfg = TrajectoryConfig.from_dict(dict(trajectory))
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise ValueError(f"unlearn.cycles: requests must be an integer >= 1, got {requests!r}")
    if len(out_dirs) != requests:
        raise ValueError(
            f"unlearn.cycles: {len(out_dirs)} output directories for {requests} requests; "
            "give one model directory per cycle"
        )
    if unlearner.needs_fisher and fisher_cfg is None:
        raise ValueError(
            f"unlearn.cycles: {method} re-estimates the Fisher every cycle; pass fisher_cfg"
        )
    replicate.require("original")
    model, data = setup_replicate(replicate, replicate.original, device)
    if data.groups != list(range(1, requests + 1)):
        raise ValueError(
            f"unlearn.cycles: {requests} requests, but the forget set's request groups are "
            f"{data.groups}; set canaries.requests to the number of cycles (and rerun "
            "inject_canaries)"
        )
    start = time.perf_counter()
    cycles = []
    for k in range(1, requests + 1):
        log.info("unlearning cycle %d of %d (%s)", k, requests, method)
        cycle = unlearn_request(
            model,
            unlearner,
            data,
            [k],
            earlier=list(range(1, k)),
            fisher=None,  # estimated on this request's retained set
            fisher_cfg=fisher_cfg,
            trajectory_cfg=trajectory_cfg,
            seed=replicate.seed,
            keys=("cycle", k),
        )
        save_model(model, out_dirs[k - 1])
        cycles.append({"cycle": k, "model": str(out_dirs[k - 1]), **cycle})
    return {
        "method": method,
        "hyper": unlearner.hyper,
        "requests": requests,
        "cycles": cycles,
        "seconds": {
            "total": round(time.perf_counter() - start, 3),
            "per_cycle": [c["seconds"]["total"] for c in cycles],
        },
    }
