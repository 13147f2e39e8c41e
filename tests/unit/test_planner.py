"""The resource plan: parameter counts against real models, shipped configs fit, and the
impossible is refused with the key to change (from the config alone: nothing is allocated)."""

from __future__ import annotations

import pytest
from snakemake_runner import config_of, run_without_torch
from transformers import GPT2Config, GPT2LMHeadModel
from unlearnbench.fisher import memory
from unlearnbench.planner import (
    PlanError,
    check_plan,
    estimates,
    memory_request_mb,
    runtime_request_min,
    scratch_parameters,
)
from unlearnbench.settings import validate_config

# The rules' declared resources of the default study (floors; workflow/rules/*.smk).
RESOURCES = {
    "inject_canaries": {"mem_mb": 1000, "runtime": 10},
    "pretrain_base": {"mem_mb": 4000, "runtime": 120},
    "finetune": {"mem_mb": 3000, "runtime": 120},
    "retrain": {"mem_mb": 3000, "runtime": 120},
    "train_dp": {"mem_mb": 4000, "runtime": 180},
    "estimate_fisher": {"mem_mb": 6000, "runtime": 60},
    "sweep_frontier": {"mem_mb": 6000, "runtime": 120},
    "evaluate": {"mem_mb": 3000, "runtime": 60},
    "fisher_scaling": {"mem_mb": 8000, "runtime": 60},
}


@pytest.mark.parametrize(
    ("layers", "width", "context", "vocab"), [(1, 16, 32, 50), (2, 64, 128, 2048)]
)
def test_parameter_count_equals_a_real_gpt2(layers, width, context, vocab):
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=2, n_positions=context, vocab_size=vocab)
    model = GPT2LMHeadModel(cfg)  # tied embeddings: parameters() yields the shared one once
    real = sum(p.numel() for p in model.parameters())
    layout = {"n_layer": layers, "n_embd": width, "n_positions": context}
    assert scratch_parameters(layout, vocab) == real


@pytest.mark.parametrize(
    ("overlays", "local"),
    [
        (("config.yaml",), True),
        (("config.yaml", "smoke.yaml"), True),
        # Paper scale runs on a cluster and asks it for what it needs (OPT-125m's Fisher alone
        # is over 100 GB at m = 256): only its rules' declared resources bound it.
        (("config.yaml", "paper.yaml"), False),
    ],
)
def test_shipped_configs_fit_their_declared_resources(overlays, local):
    """Each rule asks, as the rules do (common.smk mem_mb / runtime_min), for the planner's
    memory and time at least at its floor."""
    config = validate_config(config_of(*overlays))
    resources = {
        r: {
            "mem_mb": memory_request_mb(config, r, v["mem_mb"]),
            "runtime": runtime_request_min(config, r, v["runtime"]),
        }
        for r, v in RESOURCES.items()
    }
    check_plan(config, resources, machine_mb=24_000, local=local)


def test_the_default_study_asks_for_no_more_than_its_floors():
    config = validate_config(config_of("config.yaml"))
    for rule, declared in RESOURCES.items():
        assert memory_request_mb(config, rule, declared["mem_mb"]) == declared["mem_mb"], rule


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"model": {"n_embd": 100_000, "n_head": 4}}, "model.n_embd"),
        ({"model": {"n_positions": 10**8}}, "model.n_positions"),
        ({"fisher": {"examples": 10**6}, "data": {"max_examples": 10**6}}, "fisher.examples"),
        ({"train_dp": {"batch_size": 10**6}}, "train_dp.batch_size"),
    ],
)
def test_what_cannot_fit_is_refused_with_its_key(change, key):
    config = validate_config(config_of("config.yaml"))
    for block, values in change.items():
        config[block] = {**config[block], **values}
    with pytest.raises(PlanError, match=rf"{key}: rule \w+ would"):
        check_plan(config, RESOURCES, machine_mb=24_000, local=True)


def test_a_cluster_run_is_held_to_the_rules_memory_not_this_machines():
    config = validate_config(config_of("config.yaml"))
    config["fisher"] = {**config["fisher"], "examples": 40_000}  # ~38 GB of gradients
    config["data"] = {**config["data"], "max_examples": 100_000}
    big = {rule: {**v, "mem_mb": 200_000} for rule, v in RESOURCES.items()}
    check_plan(config, big, machine_mb=24_000, local=False)
    with pytest.raises(PlanError, match="this machine's memory"):
        check_plan(config, big, machine_mb=24_000, local=True)


def test_gpu_rules_are_timed_at_a_gpu_rate():
    config = validate_config(config_of("config.yaml"))
    cpu = {e.rule: e.seconds for e in estimates(config, "cpu")}
    gpu = {e.rule: e.seconds for e in estimates(config, "gpu")}
    assert all(gpu[r] < cpu[r] or cpu[r] == 0 for r in cpu)


# estimate_fisher through fisher.memory: GPUs, hub models, and no torch at DAG build.


def test_the_planner_imports_no_torch(tmp_path):
    run_without_torch(
        "from snakemake_runner import config_of\n"
        "from unlearnbench.planner import check_plan\n"
        "from unlearnbench.settings import validate_config\n"
        "check_plan(validate_config(config_of('config.yaml')), "
        "{'estimate_fisher': {'mem_mb': 6000, 'gpu': 2}}, 24000)\n"
        # paper.yaml's epsilons too: the DP reachability check settles them without torch
        "validate_config(config_of('config.yaml', 'paper.yaml'))"
    )


def test_a_gpu_rule_is_held_to_its_gpus_memory():
    config = validate_config(config_of("config.yaml"))
    gpu_rule = {"estimate_fisher": {"mem_mb": 6000, "gpu": 1}}
    (fisher,) = check_plan(config, gpu_rule, machine_mb=24_000)
    assert 0 < fisher.gpu_memory_mb < fisher.memory_mb + memory.CUDA_CONTEXT_MB
    refusal = r"fisher\.examples: rule estimate_fisher would need about [\d,]+ MB per GPU on 1 GPU"
    with pytest.raises(PlanError, match=refusal + r" .* more than a GPU's 500 MB"):
        check_plan(config, gpu_rule, machine_mb=24_000, gpu_mb=500)


def test_a_hub_models_fisher_is_sized_and_the_refusal_says_how_many_gpus():
    config = validate_config(config_of("config.yaml"))
    config["model"] = {**config["model"], "source": "gpt2"}  # G: 256 x 124 M floats, 119 GiB
    config["fisher"] = {**config["fisher"], "gradient_method": "loop"}  # auto: vmap, 3 GPUs
    one, two = ({"estimate_fisher": {"mem_mb": 500_000, "gpu": n}} for n in (1, 2))
    with pytest.raises(PlanError, match=r"fisher\.examples: .* ask for 2 GPUs"):
        check_plan(config, one, local=False)
    (fisher,) = check_plan(config, two, local=False)
    assert fisher.gpu_memory_mb < memory.GPU_MB and "d = 124439808" in fisher.detail
    with pytest.raises(PlanError, match=r"fisher\.examples: rule estimate_fisher would need"):
        check_plan(config, {"estimate_fisher": {"mem_mb": 6000}}, local=False)  # on CPUs
    config["model"] = {**config["model"], "source": "some/unknown-model"}
    assert estimates(config) == []


def test_ghost_clipping_is_sized_without_per_sample_gradients():
    config = validate_config(config_of("config.yaml"))
    ghost = validate_config({**config, "train_dp": {**config["train_dp"], "trainable": "last_block",
                                                    "grad_sample_mode": "ghost"}})  # fmt: skip
    memory_of = {
        mode: next(e.memory_mb for e in estimates(c) if e.rule == "train_dp")
        for mode, c in (("lean", config), ("ghost", ghost))
    }
    d = scratch_parameters(config["model"], config["tokenizer"]["vocab_size"])
    per_sample_mb = 2 * config["train_dp"]["batch_size"] * d * 4 / 2**20
    assert memory_of["lean"] - memory_of["ghost"] == pytest.approx(per_sample_mb)


def test_matrix_free_is_sized_without_g_on_one_gpu_only():
    config = validate_config(config_of("config.yaml"))
    config["model"] = {**config["model"], "source": "facebook/opt-2.7b"}
    config["fisher"] |= {"storage": "matrix_free", "gradient_method": "loop", "recompute_rows": 2}
    one, two = ({"estimate_fisher": {"mem_mb": 500_000, "gpu": n}} for n in (1, 2))
    (fisher,) = check_plan(config, one, local=False)
    assert fisher.gpu_memory_mb < memory.GPU_MB and "storage matrix_free" in fisher.detail
    assert fisher.memory_mb < 20_000  # no G in host memory either (2.5 TB at m = 256)
    with pytest.raises(PlanError, match=r"fisher\.storage: matrix_free runs in one process .* "
                       r"rule estimate_fisher asks for 2 GPUs"):  # fmt: skip
        check_plan(config, two, local=False)
    sweep = {"sweep_frontier": {"mem_mb": 500_000, "gpu": 4}}
    with pytest.raises(PlanError, match=r"rule sweep_frontier asks for 4 GPUs"):
        check_plan(config, sweep, local=False)
    config["fisher"]["recompute_rows"] = 16
    with pytest.raises(PlanError, match=r"fisher\.recompute_rows: .* lower fisher\.recompute_rows "
                       r"to 2; or lower fisher\.examples to \d+$"):  # fmt: skip
        check_plan(config, one, local=False)


def test_host_storage_and_bfloat16_size_the_gradients_where_they_live():
    config = validate_config(config_of("config.yaml"))
    config["model"] = {**config["model"], "source": "gpt2"}  # G: 119 GiB at m = 256
    config["fisher"] |= {"gradient_method": "loop", "storage": "host"}
    rule = {"estimate_fisher": {"mem_mb": 150_000, "gpu": 1}}
    (host,) = check_plan(config, rule, local=False)
    assert host.gpu_memory_mb < 5_000 and host.memory_mb > 120_000
    config["fisher"]["dtype"] = "bfloat16"
    (half,) = check_plan(config, rule, local=False)
    assert half.memory_mb < host.memory_mb - 55_000
    with pytest.raises(PlanError, match=r"fisher\.examples: .* lower fisher\.examples or "
                       r"fisher\.dtype"):  # fmt: skip
        check_plan(config, {"estimate_fisher": {"mem_mb": 20_000, "gpu": 1}}, local=False)
