"""Every hub asset a config names, fetched into the local Hugging Face cache (rule ``download``).

Compute nodes of a cluster often have no network, and a job that first needs a hub asset would
fail hours into a run. So, once, on a login node with network and the cache on the shared file
system (``HF_HOME``): ``snakemake download``; then the study runs with ``HF_HUB_OFFLINE=1``
(``settings.offline`` checks the cache before any job).

- Datasets are loaded exactly as the data stage loads them (``corpora.hub.load_split``: the same
  ``datasets.load_dataset`` call at the same revision), so the prepared Arrow files a compute
  node memory-maps are the ones cached here.
- The model repository (``model.source`` at ``model.revision``; a scratch model has none) comes
  through ``huggingface_hub.snapshot_download``, restricted to what loading needs: the config,
  the safetensors weights and the tokenizer files (a hub model brings its own tokenizer). A
  revision without safetensors weights is refused: the loaders never read pickles.

Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``), the same calls only read the cache: the
target then verifies that everything is there, and names what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What loading a causal LM and its tokenizer reads from a repository (no pickled weights).
MODEL_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.model",  # sentencepiece tokenizers
]
# The hub block's keys that choose what load_dataset reads (text_field only picks a column).
DATASET_KEYS = ("path", "name", "split", "revision", "data_files")


def hub_assets(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hub assets of ``config`` as plain values (the rule's params): every hub dataset's
    load arguments, and the hub model's id and revision (None for a model trained from
    scratch)."""
    datasets = [
        {
            "key": f"datasets[{i}]",
            "dataset": ds["name"],
            **{key: ds["hub"].get(key) for key in DATASET_KEYS},
        }
        for i, ds in enumerate(config["datasets"])
        if ds["source"] == "hub"
    ]
    model = config["model"]
    hub_model = None
    if model["source"] != "scratch":
        hub_model = {"source": model["source"], "revision": model.get("revision")}
    return {"datasets": datasets, "model": hub_model}


def download_assets(assets: Mapping[str, Any], offline: bool) -> dict[str, Any]:
    """Fetch (or, ``offline``, verify) every asset; return what is now in the cache."""
    mode = "verified in the cache (offline)" if offline else "downloaded or found in the cache"
    count = len(assets["datasets"])
    log.info("hub assets: %d datasets, model %s; %s", count, assets["model"], mode)
    datasets = [_dataset(entry, offline) for entry in assets["datasets"]]
    model = _model(assets["model"], offline) if assets["model"] else None
    return {"offline": offline, "datasets": datasets, "model": model}


def _dataset(entry: Mapping[str, Any], offline: bool) -> dict[str, Any]:
    from .corpora.hub import load_split  # datasets: heavy, and not needed to plan the DAG

    options = {key: entry[key] for key in DATASET_KEYS}
    try:
        split = load_split(**options)
    except Exception as err:  # connection, missing cache, unknown config: the same fix
        where = "is not in the local cache" if offline else "could not be loaded"
        raise RuntimeError(
            f"{entry['key']}.hub.path: {entry['path']!r} (name {entry['name']!r}, split "
            f"{entry['split']!r}, revision {entry['revision']!r}) {where} "
            f"({type(err).__name__}: {err}); "
            + (
                "run the download target on a machine with network and the same HF_HOME, "
                "or unset HF_HUB_OFFLINE"
                if offline
                else "check the dataset id, name, split and revision, and the network"
            )
        ) from None
    files = [Path(f["filename"]) for f in split.cache_files]
    record = {
        "dataset": entry["dataset"],
        **options,
        "rows": split.num_rows,
        "columns": list(split.column_names),
        "cache_files": len(files),
        "cache_bytes": sum(f.stat().st_size for f in files if f.exists()),
    }
    log.info("dataset %s: %d rows in %d cache files", entry["dataset"], record["rows"], len(files))
    return record


def _model(model: Mapping[str, Any], offline: bool) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    source, revision = model["source"], model["revision"]
    try:
        folder = Path(
            snapshot_download(
                source, revision=revision, allow_patterns=MODEL_PATTERNS, local_files_only=offline
            )
        )
    except Exception as err:
        fix = (
            "run the download target on a machine with network and the same HF_HOME, or unset "
            "HF_HUB_OFFLINE"
            if offline
            else "check model.source and model.revision, the network, and HF_TOKEN for gated models"
        )
        raise RuntimeError(
            f"model.source: {source!r} at revision {revision!r} could not be "
            f"{'found in the local cache' if offline else 'fetched'} "
            f"({type(err).__name__}: {err}); {fix}"
        ) from None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = [str(p.relative_to(folder)) for p in files]
    if not any(name.endswith(".safetensors") for name in names):
        raise RuntimeError(
            f"model.revision: {source!r} at {revision!r} has no safetensors weights (files: "
            f"{', '.join(names) or 'none'}); pin a revision that has them (the hub's "
            "safetensors conversion is often a refs/pr/<n> revision)"
        )
    log.info("model %s: %d files at commit %s", source, len(files), folder.name)
    return {
        "source": source,
        "revision": revision,
        "commit": folder.name,  # the snapshot folder is named by the resolved commit
        "files": {name: p.stat().st_size for name, p in zip(names, files, strict=True)},
    }
