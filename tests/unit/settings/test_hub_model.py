"""model.source and model.revision before any job (``settings.hub_model``): pinning, local
directories, and a cached model whose embedding cannot hold its tokenizer's tokens. The cache
here is hand-written JSON in the hub's layout (no weights needed to read sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from snakemake_runner import config_of
from unlearnbench.settings import ConfigError, check_config, validate_config
from unlearnbench.settings.hub_model import (
    commit_of,
    missing_files,
    model_problem,
    snapshot,
    tokenizer_size,
)
from unlearnbench.settings.offline import missing_assets

REV = "a" * 40


def model(source="scratch", revision=None) -> dict:
    return {"source": source, "revision": revision}


def write_snapshot(hf_home: Path, repo: str, rows: int, tokenizer: dict, files=()) -> Path:
    """A cached snapshot at REV (refs/main too) with config.json, tokenizer files, ``files``."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    folder = root / "snapshots" / REV
    folder.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REV)
    (folder / "config.json").write_text(json.dumps({"model_type": "opt", "vocab_size": rows}))
    for name, content in tokenizer.items():
        (folder / name).write_text(json.dumps(content))
    for name in files:
        (folder / name).write_text("")
    return folder


def fast_tokenizer(n_vocab: int, added: list[int]) -> dict:
    """tokenizer.json: a vocabulary of ids 0..n_vocab-1 and added tokens with their own ids."""
    return {
        "tokenizer.json": {
            "model": {"vocab": {f"t{i}": i for i in range(n_vocab)}},
            "added_tokens": [{"id": i, "content": f"<{i}>"} for i in added],
        }
    }


def slow_tokenizer(n_vocab: int, added: list[int]) -> dict:
    """vocab.json + tokenizer_config.json, as facebook/opt-* ship it (no tokenizer.json)."""
    return {
        "vocab.json": {f"t{i}": i for i in range(n_vocab)},
        "tokenizer_config.json": {"added_tokens_decoder": {str(i): {} for i in added}},
    }


def env(hf_home: Path) -> dict[str, str]:
    return {"HF_HOME": str(hf_home)}


def test_scratch_takes_no_revision_and_a_hub_id_needs_one():
    assert model_problem(model()) == ()
    key, problem, fix = model_problem(model(revision=REV))
    assert key == "model.revision" and "scratch" in problem and "null" in fix
    key, problem, fix = model_problem(model("facebook/opt-125m"), {"HF_HOME": "/nonexistent"})
    assert key == "model.revision" and "not pinned" in problem and "commit" in fix
    assert model_problem(model("gpt2", REV), {"HF_HOME": "/nonexistent"}) == ()


def test_a_local_directory_needs_no_revision_and_refuses_one(tmp_path):
    assert model_problem(model(str(tmp_path))) == ()
    key, problem, _ = model_problem(model(str(tmp_path), REV))
    assert key == "model.revision" and "local directory" in problem


def test_a_source_that_is_no_hub_id_and_no_directory_is_refused(tmp_path):
    key, problem, _ = model_problem(model("a/b/c", REV))
    assert key == "model.source" and "neither" in problem


@pytest.mark.parametrize("layout", [fast_tokenizer, slow_tokenizer])
def test_a_cached_model_must_embed_every_token_of_its_tokenizer(tmp_path, layout):
    # OPT's real sizes: 50265 tokens (specials inside the vocabulary) in 50272 rows: fine.
    write_snapshot(tmp_path, "facebook/opt-125m", 50272, layout(50265, [0, 1, 2, 3]))
    assert model_problem(model("facebook/opt-125m", REV), env(tmp_path)) == ()
    assert model_problem(model("facebook/opt-125m", "main"), env(tmp_path)) == ()
    # An added token beyond the rows: id 50272 has no embedding.
    write_snapshot(tmp_path, "org/small", 50272, layout(50265, [50272]))
    key, problem, fix = model_problem(model("org/small", REV), env(tmp_path))
    assert key == "model.source" and "50272 token embeddings" in problem
    assert "50273 tokens" in problem and "belong together" in fix


def test_the_refusal_comes_before_any_job_through_the_config_check(tmp_path, monkeypatch):
    write_snapshot(tmp_path, "org/small", 100, fast_tokenizer(101, []))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    config = validate_config(config_of("config.yaml"))
    config["model"] = {**config["model"], **model("org/small", REV)}
    with pytest.raises(ConfigError, match=r"^model\.source: 'org/small' at revision a+ has 100 "):
        check_config(config)


def test_tokenizer_size_counts_the_largest_id(tmp_path):
    assert tokenizer_size(tmp_path) is None
    for name, content in fast_tokenizer(10, [10, 11]).items():
        (tmp_path / name).write_text(json.dumps(content))
    assert tokenizer_size(tmp_path) == 12


def test_revisions_resolve_like_the_hub_cache(tmp_path):
    folder = write_snapshot(tmp_path, "org/m", 10, fast_tokenizer(10, []))
    assert snapshot("org/m", REV, env(tmp_path)) == folder
    assert snapshot("org/m", "main", env(tmp_path)) == folder
    assert snapshot("org/m", "v2", env(tmp_path)) is None  # an unknown branch
    assert snapshot("org/m", "b" * 40, env(tmp_path)) is None  # an uncached commit
    assert commit_of("org/m", "main", env(tmp_path)) == REV
    assert commit_of(str(tmp_path), None) is None  # a local directory has no commit


def test_an_offline_run_needs_the_model_its_weights_and_tokenizer_cached(tmp_path):
    config = {"datasets": [], "model": model("org/m", REV)}
    offline = {**env(tmp_path), "HF_HUB_OFFLINE": "1"}
    assert missing_assets(config, offline) == [
        ("model.source", f"org/m@{REV}", "not in the local cache")
    ]
    write_snapshot(tmp_path, "org/m", 10, {})
    assert "model.safetensors, a tokenizer" in missing_files(config["model"], offline)
    folder = snapshot("org/m", REV, offline)
    (folder / "model.safetensors").write_text("")
    (folder / "vocab.json").write_text("{}")
    assert missing_assets(config, offline) == []
