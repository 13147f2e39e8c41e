"""Resumable training state as safetensors + JSON (never pickles).

A training rule keeps its checkpoint OUTSIDE its declared outputs (Snakemake deletes the
outputs of a failed or killed job) and resumes from it on ``--rerun-incomplete``. The state is
everything the next step depends on: weights, optimizer moments and counters, the step count,
the loss history and any extra RNG or accountant state a caller adds. Restoring it exactly makes
a resumed run bitwise equal to an uninterrupted one on CPU.

A checkpoint also records what it was trained from (``inputs_fingerprint``: the starting
weights and every token of the data, so also the tokenizer, plus the recipe). ``resume``
discards, with a log line, a checkpoint whose record differs from the run asking for it: the
data changed under the same recipe and example count, or the file is unreadable. Training then
restarts from scratch, which is always correct; resuming would give a model that no clean run
produces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..provenance import atomic_path

STATE_FILE = "state.safetensors"
META_FILE = "state.json"
log = logging.getLogger(__name__)


def inputs_fingerprint(start_fingerprint: str, sequences: Sequence[Sequence[int]]) -> str:
    """sha256 of the starting weights' fingerprint and every token of every sequence."""
    digest = hashlib.sha256(start_fingerprint.encode())
    for sequence in sequences:
        digest.update(len(sequence).to_bytes(4, "little"))
        digest.update(np.asarray(sequence, dtype="<i8").tobytes())
    return digest.hexdigest()


def resume(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    expected: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Restore the checkpoint in ``directory`` if every entry of ``expected`` equals what it
    recorded; otherwise discard it (a log line says why) and return None: start afresh."""
    directory = Path(directory)
    meta_file = directory / META_FILE
    if not meta_file.is_file():
        return None
    try:
        recorded = json.loads(meta_file.read_text())["meta"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        recorded, why = None, f"unreadable ({type(err).__name__}: {err})"
    else:
        differ = [key for key, value in expected.items() if recorded.get(key) != value]
        why = f"written for other {', '.join(differ)}" if differ else ""
    if recorded is not None and not why:
        try:
            return load_checkpoint(directory, model, optimizer)
        except ValueError as err:
            why = str(err)
    log.warning("%s: checkpoint discarded, training restarts from scratch: %s", directory, why)
    clear_checkpoint(directory)
    return None


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write weights + optimizer state + ``meta`` (JSON-able) atomically (tensors, then meta)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in _unique_state(model).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    for name, value in (extra_tensors or {}).items():
        tensors[f"extra/{name}"] = value.contiguous()
    with atomic_path(directory / STATE_FILE) as tmp:
        save_file(tensors, str(tmp))
    full_meta = {"meta": meta, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    with atomic_path(directory / META_FILE) as tmp:
        tmp.write_text(json.dumps(full_meta, sort_keys=True))


def load_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Restore into ``model``/``optimizer``; return (meta, extra tensors), or None if absent.

    A checkpoint that cannot be read is discarded with a warning-worthy error message rather
    than resumed from: training then restarts from scratch, which is always correct.
    """
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file() or not (directory / META_FILE).is_file():
        return None
    try:
        tensors = load_file(str(directory / STATE_FILE))
        full_meta = json.loads((directory / META_FILE).read_text())
    except Exception as err:
        raise ValueError(
            f"{directory}: checkpoint unreadable ({type(err).__name__}: {err}); delete this "
            "directory to restart the training from scratch"
        ) from None
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    result = model.load_state_dict(model_state, strict=False)
    aliases = set(model.state_dict()) - set(_unique_state(model))
    if result.unexpected_keys or set(result.missing_keys) - aliases:
        raise ValueError(
            f"{directory}: checkpoint does not match the model (missing "
            f"{sorted(set(result.missing_keys) - aliases)[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}); delete this directory to restart the training"
        )
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in full_meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": full_meta["param_groups"]})
    extra = {k[len("extra/") :]: v for k, v in tensors.items() if k.startswith("extra/")}
    return full_meta["meta"], extra


def clear_checkpoint(directory: str | os.PathLike) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases (GPT-2 ties lm_head to the token embedding)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor
    return out
