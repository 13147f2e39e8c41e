"""The download target's package code, offline: hub datasets through datasets' builders on local
files, the hub model from a fake Hugging Face cache (the layout huggingface_hub writes), so no
test needs the network. Offline, the target verifies the cache and names what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from snakemake_runner import config_of
from unlearnbench.download import MODEL_PATTERNS, download_assets, hub_assets
from unlearnbench.settings import validate_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Fresh datasets and hub caches for this test (never the user's)."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def fake_model(hub_cache: Path, repo: str, files: dict[str, str]) -> None:
    """A model repository as huggingface_hub caches it: refs/main names the snapshot's commit."""
    root = hub_cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)


def local_dataset(tmp_path: Path, rows: int = 12) -> dict:
    path = tmp_path / "local.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"row {i} of a local corpus"}) + "\n" for i in range(rows))
    )
    return {
        "key": "datasets[3]",
        "dataset": "local",
        "path": "json",
        "name": None,
        "split": "train",
        "revision": None,
        "data_files": [str(path)],
    }


MODEL_FILES = {"config.json": "{}", "model.safetensors": "weights", "tokenizer.json": "{}"}


def test_paper_yaml_names_its_hub_datasets_at_their_revisions():
    config = validate_config(config_of("config.yaml", "paper.yaml"))
    assets = hub_assets(config)
    paths = [d["path"] for d in assets["datasets"]]
    assert paths == [ds["hub"]["path"] for ds in config["datasets"] if ds["source"] == "hub"]
    assert all(
        set(d) == {"key", "dataset", "path", "name", "split", "revision", "data_files"}
        for d in assets["datasets"]
    )
    if config["model"]["source"] == "scratch":
        assert assets["model"] is None
    config["model"].update(source="facebook/opt-125m", revision="abc")
    assert hub_assets(config)["model"] == {"source": "facebook/opt-125m", "revision": "abc"}


def test_offline_the_target_verifies_every_asset_in_the_cache(tmp_path, caches):
    fake_model(caches, "org/tiny", MODEL_FILES)
    assets = {
        "datasets": [local_dataset(tmp_path)],
        "model": {"source": "org/tiny", "revision": None},
    }
    manifest = download_assets(assets, offline=True)
    assert manifest["offline"] is True
    [dataset] = manifest["datasets"]
    assert dataset["rows"] == 12 and dataset["columns"] == ["text"] and dataset["cache_files"] >= 1
    model = manifest["model"]
    assert model["commit"] == COMMIT and set(model["files"]) == set(MODEL_FILES)
    # Loaded the one way the data stage loads it: the cached split is what prepare_corpus reads.
    from unlearnbench.corpora.hub import read_hub

    options = {k: assets["datasets"][0][k] for k in ("path", "split", "data_files")}
    assert len(read_hub(**options).documents) == 12


def test_a_model_missing_from_the_cache_is_named_with_the_fix(tmp_path, caches):
    assets = {"datasets": [], "model": {"source": "org/absent", "revision": "v1"}}
    with pytest.raises(
        RuntimeError, match=r"model\.source: 'org/absent' at revision 'v1'.*local cache.*network"
    ):
        download_assets(assets, offline=True)


def test_a_revision_without_safetensors_is_refused(tmp_path, caches):
    fake_model(caches, "org/pickled", {"config.json": "{}", "tokenizer.json": "{}"})
    assets = {"datasets": [], "model": {"source": "org/pickled", "revision": None}}
    with pytest.raises(RuntimeError, match=r"model\.revision: .*no safetensors weights"):
        download_assets(assets, offline=True)


def test_a_dataset_that_cannot_load_names_its_key(tmp_path, caches):
    entry = {**local_dataset(tmp_path), "data_files": [str(tmp_path / "gone.jsonl")]}
    with pytest.raises(
        RuntimeError, match=r"datasets\[3\]\.hub\.path: 'json'.*could not be loaded"
    ):
        download_assets({"datasets": [entry], "model": None}, offline=False)


def test_only_loading_files_are_fetched():
    assert "*.safetensors" in MODEL_PATTERNS and "tokenizer.json" in MODEL_PATTERNS
    assert not any(p.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5")) for p in MODEL_PATTERNS)
