"""A hub model named by ``model.source``, as this machine holds it: checked before any job.

``model.source`` is "scratch", a hub model id ("gpt2", "facebook/opt-125m") at a pinned
``model.revision``, or a local directory written by ``save_pretrained``. Where the files can be
found without a network call (the hub cache that ``HF_HOME`` / ``HF_HUB_CACHE`` name, or the
directory itself), the model's embedding rows (config.json ``vocab_size``) and its tokenizer's
size are read here, with the standard library only, so that a model that cannot embed every
token of its tokenizer is refused before hours of jobs. Nothing here downloads: a model not yet
cached is checked when the base-model stage loads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hub_snapshots import COMMIT, commit_of, hub_cache, is_local, snapshot

__all__ = ["COMMIT", "commit_of", "hub_cache", "is_local", "model_problem", "snapshot"]

# A hub repository id: a name, or an owner and a name (the hub's own rule, without the length).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # a fast tokenizer; a GPT-2/OPT-style slow one


def embedding_rows(folder: Path) -> int | None:
    """The model's vocabulary rows (config.json ``vocab_size``), None where it is not there."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("vocab_size")
    return value if isinstance(value, int) else None


def tokenizer_size(folder: Path) -> int | None:
    """1 + the largest token id the tokenizer in ``folder`` can produce (its vocabulary and its
    added tokens), None where it has no tokenizer file this reader knows."""
    ids: list[int] = []
    fast = folder / "tokenizer.json"
    if fast.is_file():
        data = json.loads(fast.read_text())
        vocab = data.get("model", {}).get("vocab", {})
        ids += vocab.values() if isinstance(vocab, dict) else range(len(vocab))
        ids += [token["id"] for token in data.get("added_tokens", [])]
    elif (folder / "vocab.json").is_file():
        ids += json.loads((folder / "vocab.json").read_text()).values()
        config = folder / "tokenizer_config.json"
        if config.is_file():
            added = json.loads(config.read_text()).get("added_tokens_decoder", {})
            ids += [int(i) for i in added]
    return max(ids) + 1 if ids else None


def model_problem(model: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> tuple:
    """``(key, problem, fix)`` for the first thing wrong with ``model.*``, or ``()``."""
    source, revision = model["source"], model["revision"]
    if source == "scratch":
        if revision is not None:
            return (
                "model.revision",
                f"{revision!r} is given, but a model trained from scratch has no revision",
                "remove it (null), or name a hub model in model.source",
            )
        return ()
    if is_local(source):
        if revision is not None:
            return (
                "model.revision",
                f"{source!r} is a local directory, which has no revisions",
                "set model.revision: null (the base model's manifest records the weights' hash)",
            )
    elif not HUB_ID.match(source):
        return (
            "model.source",
            f"{source!r} is neither 'scratch', a hub model id (name or owner/name) nor an "
            "existing directory",
            "name a hub model (e.g. facebook/opt-125m) or a directory written by save_pretrained",
        )
    elif revision is None:
        return (
            "model.revision",
            f"the hub model {source!r} is not pinned: its weights and tokenizer could change "
            "between runs",
            "set model.revision to a commit of its repository (40 hex digits)",
        )
    folder = snapshot(source, revision, environ)
    rows = None if folder is None else embedding_rows(folder)
    tokens = None if folder is None else tokenizer_size(folder)
    if rows is not None and tokens is not None and rows < tokens:
        return (
            "model.source",
            f"{source!r} at revision {revision} has {rows} token embeddings but its tokenizer "
            f"has {tokens} tokens ({folder}), so some token ids have no embedding",
            "use a revision (or directory) whose model and tokenizer belong together",
        )
    return ()


def missing_files(model: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """What an offline run would not find of a hub model ('' when everything is there)."""
    folder = snapshot(model["source"], model["revision"], environ)
    if folder is None:
        return "not in the local cache"
    lacking = [] if (folder / "config.json").is_file() else ["config.json"]
    weights = ("model.safetensors", "model.safetensors.index.json")  # one file, or shards
    if not any((folder / name).is_file() for name in weights):
        lacking.append("model.safetensors")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        lacking.append("a tokenizer (tokenizer.json or vocab.json)")
    return f"cached without {', '.join(lacking)}" if lacking else ""
