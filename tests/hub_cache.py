"""A fake Hugging Face hub cache with tiny random models, for offline tests of the hub path.

``build_hub_cache(hf_home)`` writes, under ``hf_home/hub``, the layout ``from_pretrained`` reads
with ``HF_HUB_OFFLINE=1`` (``models--<org>--<name>/refs/main`` holding a commit, and
``snapshots/<commit>/`` holding the files):

- ``facebook/opt-125m``: a tiny random ``OPTForCausalLM`` (2 layers, 32 wide) whose tokenizer
  is GPT-2's real byte-level BPE (``tests/data/gpt2_bpe``) with OPT's special tokens ``</s>``
  (bos/eos) and ``<pad>`` added, its embedding padded past the tokenizer as OPT's is (50272 rows
  for 50265 tokens there; 8 extra rows here), weights stored in float16 like the real checkpoint;
- ``gpt2``: a tiny random ``GPT2LMHeadModel`` with GPT-2's own tokenizer (50257 tokens).

Both sit at the revisions ``config/paper.yaml`` pins (``REVISIONS``), so the paper config's
``model`` block resolves as it is. Models are saved with ``save_pretrained`` (safetensors).
Run ``python tests/hub_cache.py <hf_home>`` to build one for a manual paper-smoke run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, OPTConfig, OPTForCausalLM

TESTS = Path(__file__).resolve().parent
GPT2_BPE = TESTS / "data" / "gpt2_bpe"
PAPER = TESTS.parent / "config" / "paper.yaml"
OPT_PAD_ROWS = 8  # embedding rows past the tokenizer (OPT pads 50265 tokens to 50272 rows)


def paper_revisions() -> dict[str, str]:
    """The pinned revision of each hub model ``config/paper.yaml`` names (its ``model`` block and
    the commented alternatives ``# source: <id>  revision: <commit>``)."""
    text = PAPER.read_text()
    model = yaml.safe_load(text)["model"]
    revisions = {model["source"]: model["revision"]}
    for line in text.splitlines():
        parts = line.replace("#", " ").split()
        if len(parts) == 4 and parts[0] == "source:" and parts[2] == "revision:":
            revisions.setdefault(parts[1], parts[3])
    return revisions


def gpt2_tokenizer(**special: str) -> GPT2TokenizerFast:
    """GPT-2's real byte-level BPE. transformers 5 takes the files as ``vocab=`` / ``merges=``
    (``vocab_file=`` silently gives an empty vocabulary)."""
    return GPT2TokenizerFast(
        vocab=str(GPT2_BPE / "encoder.json"), merges=str(GPT2_BPE / "vocab.bpe"), **special
    )


def opt_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's BPE with OPT's special tokens: ``</s>`` is bos and eos, ``<pad>`` pads."""
    return gpt2_tokenizer(bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>")


def tiny_opt(tokenizer, seed: int = 0, rows: int | None = None) -> OPTForCausalLM:
    config = OPTConfig(
        vocab_size=rows or len(tokenizer) + OPT_PAD_ROWS,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=2,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        dropout=0.1,  # as the real OPT config: the base-model stage must switch it off
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return OPTForCausalLM(config)


def tiny_gpt2(tokenizer, seed: int = 0, rows: int | None = None) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=rows or len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def write_snapshot(
    hub: Path, repo_id: str, revision: str, model, tokenizer, branch: str | None = "main"
) -> Path:
    """Save ``model`` and ``tokenizer`` as the snapshot ``revision`` of ``repo_id`` in the hub
    cache ``hub``; ``branch`` (if any) points at it."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    shutil.rmtree(snapshot, ignore_errors=True)
    snapshot.mkdir(parents=True)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    if branch is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / branch).write_text(revision)
    return snapshot


def build_hub_cache(hf_home: str | Path) -> dict[str, str]:
    """The tiny OPT and GPT-2 under ``hf_home/hub`` at paper.yaml's revisions; returns them."""
    hub = Path(hf_home) / "hub"
    revisions = paper_revisions()
    opt, gpt2 = opt_tokenizer(), gpt2_tokenizer()
    write_snapshot(
        hub, "facebook/opt-125m", revisions["facebook/opt-125m"],
        tiny_opt(opt).to(torch.float16), opt,
    )  # fmt: skip
    write_snapshot(hub, "gpt2", revisions["gpt2"], tiny_gpt2(gpt2), gpt2)
    return {"facebook/opt-125m": revisions["facebook/opt-125m"], "gpt2": revisions["gpt2"]}


@contextlib.contextmanager
def offline_hub(hf_home: str | Path) -> Iterator[None]:
    """In this process: hub loads read ``hf_home`` only, offline. huggingface_hub reads its
    cache folder and offline flag into constants at import, so those are patched as well."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env(hf_home).items():
            patch.setenv(name, value)
        patch.setattr(constants, "HF_HUB_CACHE", str(Path(hf_home) / "hub"))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


def offline_env(hf_home: str | Path) -> dict[str, str]:
    """Environment variables that make every hub load read ``hf_home`` only."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hub_cache.py <hf_home>")
    print(json.dumps(build_hub_cache(sys.argv[1]), indent=2))
