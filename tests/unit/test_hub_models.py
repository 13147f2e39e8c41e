"""Hub models with their own tokenizer, offline, on a fake hub cache (``tests/hub_cache.py``):
the tokenizer and base-model stages (OPT and GPT-2), the float32 load, the revision pin, the
refusal of a model that cannot embed its tokenizer's tokens, the context-length helper."""

from __future__ import annotations

import pytest
import torch
from hub_cache import (
    OPT_PAD_ROWS,
    build_hub_cache,
    gpt2_tokenizer,
    offline_hub,
    opt_tokenizer,
    tiny_gpt2,
    write_snapshot,
)
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, OPTConfig
from unlearnbench.fisher import memory
from unlearnbench.models import (
    ModelConfig,
    context_length,
    fingerprint,
    load_hub_model,
    load_model,
)
from unlearnbench.planner import model_shape, tokens_per_sequence
from unlearnbench.tokenizer import fetch_tokenizer, load_tokenizer
from unlearnbench.training.loop import TrainConfig
from unlearnbench.training.stages import fetch_base_model, pretrain_base

OPT, GPT2 = "facebook/opt-125m", "gpt2"
OTHER = "b" * 40  # a second snapshot of gpt2, reachable only by its commit
SMALL = "c" * 40  # gpt2 with fewer embedding rows than its tokenizer has tokens
TEXT = "the pin code of 42 doors is 0123456789 and tokens merge"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The paper revisions of both models, plus gpt2 at OTHER (other weights) and SMALL."""
    home = tmp_path_factory.mktemp("hf")
    revisions = build_hub_cache(home)
    tokenizer = gpt2_tokenizer()
    write_snapshot(home / "hub", GPT2, OTHER, tiny_gpt2(tokenizer, seed=1), tokenizer, None)
    small = tiny_gpt2(tokenizer, rows=len(tokenizer) - 1)
    write_snapshot(home / "hub", GPT2, SMALL, small, tokenizer, None)
    with offline_hub(home):
        yield revisions


def model_cfg(hub, source: str, revision: str | None = None) -> ModelConfig:
    return ModelConfig(source=source, revision=revision or hub[source])


@pytest.mark.parametrize("source", [OPT, GPT2])
def test_the_tokenizer_stage_saves_the_hub_models_own_tokenizer(hub, tmp_path, source):
    manifest = fetch_tokenizer(source, hub[source], tmp_path / "tokenizer")
    saved = load_tokenizer(tmp_path / "tokenizer")  # what every later stage loads
    original = opt_tokenizer() if source == OPT else gpt2_tokenizer()
    assert saved.encode(TEXT, add_special_tokens=False) == original.encode(
        TEXT, add_special_tokens=False
    )
    assert len(saved) == len(original) == manifest["vocab_size"]
    assert saved.eos_token == original.eos_token == manifest["special_tokens"]["eos_token"]
    assert (manifest["source"], manifest["revision"], manifest["commit"]) == (
        source, hub[source], hub[source],
    )  # fmt: skip
    assert "not used" in manifest["not_used"]


@pytest.mark.parametrize("source", [OPT, GPT2])
def test_the_base_model_stage_saves_the_hub_weights_in_float32(hub, tmp_path, source):
    fetch_tokenizer(source, hub[source], tmp_path / "tokenizer")
    manifest = fetch_base_model(model_cfg(hub, source), tmp_path / "tokenizer", tmp_path / "base")
    with safe_open(tmp_path / "base" / "model.safetensors", "pt") as stored:
        dtypes = {stored.get_tensor(name).dtype for name in stored.keys()}  # noqa: SIM118
    assert dtypes == {torch.float32} and manifest["dtype"] == "float32"
    # The OPT snapshot is stored in float16, as the real one: transformers 5 would keep it.
    as_stored = AutoModelForCausalLM.from_pretrained(source, revision=hub[source])
    assert next(as_stored.parameters()).dtype == (torch.float16 if source == OPT else torch.float32)
    base = load_model(tmp_path / "base")
    for (name, got), (_, want) in zip(
        base.state_dict().items(), as_stored.state_dict().items(), strict=True
    ):
        assert torch.equal(got, want.float()), name
    assert manifest["fingerprint"] == fingerprint(base)
    dropouts = {k: v for k, v in vars(base.config).items() if k.endswith(("dropout", "pdrop"))}
    assert dropouts and set(dropouts.values()) == {0.0}  # the OPT snapshot says 0.1
    assert manifest["context_length"] == context_length(base.config) == 128
    assert manifest["embedding_rows"] >= manifest["tokenizer_size"]
    assert (manifest["revision"], manifest["commit"]) == (hub[source], hub[source])


def test_the_revision_pins_the_weights(hub):
    tokens = len(gpt2_tokenizer())
    pinned = load_hub_model(model_cfg(hub, GPT2), tokens)
    other = load_hub_model(model_cfg(hub, GPT2, OTHER), tokens)
    main = load_hub_model(model_cfg(hub, GPT2, "main"), tokens)  # refs/main: the paper's
    assert fingerprint(pinned) == fingerprint(main) != fingerprint(other)
    reference = tiny_gpt2(gpt2_tokenizer(), seed=1)
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    with pytest.raises(OSError):
        load_hub_model(model_cfg(hub, GPT2, "d" * 40), tokens)  # not cached, offline


def test_a_hub_id_without_a_revision_is_refused():
    with pytest.raises(ValueError, match=r"^model\.revision: .*pinned"):
        ModelConfig(source=GPT2)


def test_a_model_that_cannot_embed_its_tokenizer_is_refused_at_job_time(hub, tmp_path):
    fetch_tokenizer(GPT2, SMALL, tmp_path / "tokenizer")
    with pytest.raises(ValueError, match=r"^model\.source: 'gpt2' .* 50256 token embeddings .*"
                                         r"50257 tokens"):  # fmt: skip
        fetch_base_model(model_cfg(hub, GPT2, SMALL), tmp_path / "tokenizer", tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_pretraining_refuses_a_hub_model(hub, tmp_path):
    recipe = TrainConfig(epochs=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match=r"^model\.source: .*fetch_base_model"):
        pretrain_base(model_cfg(hub, OPT), tmp_path, ["x"], recipe, tmp_path, tmp_path, seed=0)


def test_context_length_reads_each_architectures_key(tmp_path):
    assert context_length(GPT2Config(n_positions=96)) == 96
    assert context_length(OPTConfig(max_position_embeddings=2048)) == 2048
    assert context_length({"model_type": "opt", "max_position_embeddings": 64}) == 64
    assert context_length({"model_type": "gpt2", "n_positions": 32, "n_ctx": 16}) == 32
    with pytest.raises(ValueError, match="no context length"):
        context_length({"model_type": "mystery", "hidden_size": 8})


@pytest.mark.parametrize("source", [OPT, GPT2])
def test_the_planner_sizes_the_cached_model_itself(hub, source):
    """The planner reads the shape from the cached config.json: the tiny model, not the
    published 125 M one; its count equals the real model's parameters (tied head once)."""
    model = AutoModelForCausalLM.from_pretrained(source, revision=hub[source])
    config = {
        "model": {"source": source, "revision": hub[source], "n_positions": 9999},
        "data": {"max_example_chars": 100_000},
    }
    shape = model_shape(config)
    assert shape.d == sum(p.numel() for p in model.parameters())
    assert tokens_per_sequence(config) == 128  # the model's context, not model.n_positions
    assert shape.d < memory.MODELS[source].d // 10


def test_opts_padding_rows_past_its_tokenizer_are_accepted(hub):
    """OPT pads its embedding past the tokenizer (50272 rows for 50265 tokens); the fake
    snapshot does the same (refs/main resolves to it, as on the hub)."""
    tokenizer = AutoTokenizer.from_pretrained(OPT, revision="main")
    model = load_hub_model(model_cfg(hub, OPT, "main"), len(tokenizer))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + OPT_PAD_ROWS
