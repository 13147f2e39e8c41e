"""compute.* and train.*.micro_batch_size: settings that would silently do nothing are refused
before any job, naming their key."""

from __future__ import annotations

import copy

import pytest
from snakemake_runner import config_of
from unlearnbench.settings import ConfigError, validate_config


def default():
    return copy.deepcopy(config_of("config.yaml"))


@pytest.mark.parametrize(
    ("block", "change", "key", "word"),
    [
        ("compute", {"device": "cuda"}, "compute.device", "cuda"),
        ("compute", {"precision": "fp16"}, "compute.precision", "fp16"),
        ("compute", {"device": "cpu", "precision": "bf16"}, "compute.precision", "CUDA only"),
        ("train.finetune", {"micro_batch_size": 32}, "train.finetune.micro_batch_size", "split"),
        ("train.pretrain", {"micro_batch_size": 0}, "train.pretrain.micro_batch_size", "minimum"),
    ],
)
def test_bad_compute_settings_name_their_key(block, change, key, word):
    config = default()
    node = config
    for part in block.split("."):
        node = node[part]
    node.update(change)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"{key}:" in str(err.value) and word in str(err.value), str(err.value)


def test_the_default_computes_in_float32_where_the_rules_say():
    config = validate_config(default())
    assert config["compute"] == {"device": "auto", "precision": "float32"}
    assert config["train"]["finetune"]["micro_batch_size"] is None


def test_bf16_and_micro_batches_are_accepted_where_they_act():
    config = default()
    config["compute"]["precision"] = "bf16"
    config["train"]["finetune"]["micro_batch_size"] = 8
    validate_config(config)
