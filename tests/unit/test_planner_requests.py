"""What rules ask for scales with the model and the device: walltime and memory requests from
the planner's estimates, hub models sized from their shapes, GPUs read from set-resources."""

from __future__ import annotations

import copy

import pytest
from snakemake.resources import Resources
from snakemake_runner import config_of
from unlearnbench.planner import (
    MAX_RUNTIME_MIN,
    PlanError,
    check_plan,
    estimates,
    memory_request_mb,
    runtime_request_min,
    set_resource_gpus,
    tokens_per_sequence,
)
from unlearnbench.settings import validate_config

FLOORS = {"pretrain_base": 120, "finetune": 120, "retrain": 120, "train_dp": 180,
          "estimate_fisher": 60, "sweep_frontier": 120, "evaluate": 60}  # fmt: skip


def default():
    return validate_config(config_of("config.yaml"))


def hub(source: str, **data):
    """The default with a hub model (set after validation: hub sources are wired by another
    change) and optionally other data settings."""
    config = copy.deepcopy(default())
    config["model"] = {**config["model"], "source": source}
    config["data"] = {**config["data"], **data}
    return config


def test_the_default_asks_for_its_floors_on_cpus_and_gpus():
    config = default()
    for rule, floor in FLOORS.items():
        assert runtime_request_min(config, rule, floor) == floor, rule
        assert runtime_request_min(config, rule, floor, gpus=1) == floor, rule


def test_a_hub_model_is_sized_at_every_stage_and_walltime_grows_with_it():
    small = hub("facebook/opt-125m", max_examples=50_000)
    large = hub("facebook/opt-1.3b", max_examples=50_000)
    rules = {e.rule for e in estimates(small)}
    assert {"finetune", "retrain", "train_dp", "estimate_fisher", "evaluate"} <= rules
    assert "fisher_scaling" not in rules  # it trains scratch models of its own widths
    for rule in ("finetune", "train_dp", "sweep_frontier"):
        gpu_small = runtime_request_min(small, rule, 1, gpus=1)
        gpu_large = runtime_request_min(large, rule, 1, gpus=1)
        cpu_small = runtime_request_min(small, rule, 1, gpus=0)
        assert gpu_small < gpu_large and gpu_small < cpu_small, rule
    assert memory_request_mb(large, "finetune", 1) > memory_request_mb(small, "finetune", 1)
    assert estimates(hub("someone/unknown-model")) == []


def test_the_context_is_the_hub_model_s_own():
    long_examples = {"max_example_chars": 100_000}
    assert tokens_per_sequence(hub("gpt2", **long_examples)) == 1024
    assert tokens_per_sequence(hub("facebook/opt-125m", **long_examples)) == 2048
    config = default()
    config["data"] = {**config["data"], **long_examples}
    assert tokens_per_sequence(config) == config["model"]["n_positions"]


def test_micro_batches_lower_the_training_memory_estimate():
    config = hub("facebook/opt-125m", max_examples=50_000, max_example_chars=1000)
    whole = memory_request_mb(config, "finetune", 1)
    config["train"]["finetune"] = {**config["train"]["finetune"], "micro_batch_size": 4}
    assert memory_request_mb(config, "finetune", 1) < whole


def test_gpus_are_read_from_set_resources_as_snakemake_parses_them():
    parsed = {
        "finetune": Resources.parse(["gpu=1", 'slurm_partition="gpu"'], allow_expressions=True)
    }
    assert set_resource_gpus(parsed, "finetune") == 1
    assert set_resource_gpus(parsed, "evaluate") == 0
    assert set_resource_gpus({"evaluate": {"gpu": 2}}, "evaluate") == 2
    assert set_resource_gpus({"evaluate": {"mem_mb": 9}}, "evaluate", declared=0) == 0


def test_a_stage_longer_than_any_cluster_job_is_refused():
    config = hub("facebook/opt-2.7b", max_examples=10**7)
    config["train"]["finetune"] = {**config["train"]["finetune"], "epochs": 10_000}
    with pytest.raises(PlanError, match=r"rule finetune would run at least .* beyond any cluster"):
        check_plan(config, {"finetune": {"gpu": 1}}, local=False)
    assert MAX_RUNTIME_MIN == 7 * 24 * 60
