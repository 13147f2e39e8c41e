"""Will every stage fit? Memory and time per rule, estimated from the config before any job.

A config can be valid value by value and still impossible: a model 10^5 wide, 10^12 canaries,
a context of 10^8 tokens, an exact rank over 10^18 candidates. Such a job would run for years,
or grow until the kernel kills it and takes the machine's other work down with it. This module
estimates each heavy rule's peak memory and time from the config alone (no torch) and refuses,
naming the estimate and the key to change, what cannot fit the rule's declared resources
(``mem_mb``, ``runtime``) or, for local runs, this machine's memory.

The estimates are deliberately simple upper-ish formulas, calibrated on the default study's
measured peaks (results/tables/cost.md: 0.5-1.1 GB per torch job, ~0.6 GB of which is Python,
torch and transformers). Time uses an optimistic rate (``RATE``), so only a job that cannot
finish even at that rate is refused: the check catches the impossible, not the merely slow.

``estimate_fisher`` is sized by ``fisher/memory.py`` (storage modes, blocks, GPUs; calibrated
on measured peaks), for a GPT-2 from scratch and for the hub models whose shapes it knows
(GPT-2, OPT); a rule that asks for GPUs is also held to their memory (``GPU_MB`` each,
``UNLEARNBENCH_GPU_MB`` overrides), and the refusal says on how many GPUs it would fit. Every
other heavy rule is sized from the same shapes (scratch or a known hub model).

What rules ask for scales with the model: ``memory_request_mb`` (the estimate plus a quarter)
and ``runtime_request_min`` (the estimate at an expected rate, ``EXPECTED_RATE``, twice over),
on the device the job gets (its ``gpu`` resource, as the GPU profiles set it).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from .hub_snapshots import snapshot
from .settings.rules import dp_epsilons
from .settings.schema import ConfigError

MB = 2**20
PROCESS_MB = 700  # Python + torch + transformers + pandas in one job (measured 535-700 MB)
CHARS_PER_TOKEN = 3.0  # BPE with split digits: ~3.9 measured on the default; 3 errs high
BYTES_PER_ROW = 400  # a text row in pandas/Python: the characters plus object overhead
# FLOP/s a job cannot beat: 4x the measured training rate on a 2-core CPU (97 GFLOP/s) and
# about a dense bf16 H100 for a GPU job.
RATE = {"cpu": 4e11, "gpu": 1e15}
# FLOP/s a job is expected to reach, for runtime requests: the training rate measured on the
# 2-core machine (97 GFLOP/s, README "Benchmarks") and, for a GPU job, 20 TFLOP/s: about 30 %
# of an H100's float32 peak (an assumption until tests/gpu/check_gpu.py measures it).
EXPECTED_RATE = {"cpu": 1e11, "gpu": 2e13}
# A cluster job's longest walltime: a stage whose lower bound exceeds it cannot run as one job.
MAX_RUNTIME_MIN = 7 * 24 * 60
CACHE_BUDGET_MB = 1024  # the digit-tree walk's key/value cache (exposure.tree)
# Rules whose adapter runs once per GPU under torchrun when they ask for more than one
# (fisher.launch): the Fisher's estimate and the unlearning jobs that read or estimate one.
SHARDED_RULES = (
    "estimate_fisher", "sweep_frontier", "unlearn_realworld", "unlearn_cycles", "onion_unlearn",
)  # fmt: skip
# fetch_base_model: float32 weights (4 bytes), the checkpoint read (up to 4) and the safetensors
# buffer written (4); an upper-ish reading of how transformers loads and saves, not measured.
FETCH_BYTES_PER_PARAMETER = 12


class PlanError(ConfigError):
    """A stage that cannot fit; the message names the estimate and the key to change."""


@dataclass(frozen=True)
class Estimate:
    rule: str
    memory_mb: float
    seconds: float
    keys: tuple[str, ...]  # the config keys that drive it, the main one first
    detail: str
    gpu_memory_mb: float = 0.0  # per GPU, for a rule that runs on GPUs


@cache
def fisher_memory_module() -> ModuleType:
    """``fisher/memory.py``, loaded without running ``fisher/__init__.py`` (which imports torch
    and transformers: 7 s at every DAG build); the module needs only the standard library."""
    if "unlearnbench.fisher.memory" in sys.modules:
        return sys.modules["unlearnbench.fisher.memory"]
    name = f"{__package__}._fisher_memory"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "fisher/memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def model_shape(config: Mapping[str, Any]):
    """The model's shape (``fisher.memory.ModelShape``): the GPT-2 trained from scratch, a hub
    model from its cached config.json or a shape the planner knows (GPT-2, OPT), or None."""
    memory, model = fisher_memory_module(), config["model"]
    if model["source"] == "scratch":
        return memory.scratch_shape(model, config["tokenizer"]["vocab_size"])
    # A hub model's own config.json where it is on this machine (settings.hub_model), else its
    # published shape.
    folder = snapshot(model["source"], model["revision"])
    if folder is not None and (folder / "config.json").is_file():
        shape = memory.hub_shape(model["source"], json.loads((folder / "config.json").read_text()))
        if shape is not None:
            return shape
    return memory.MODELS.get(model["source"])


def scratch_parameters(model: Mapping[str, Any], vocab_size: int) -> int:
    """Trainable parameters of a GPT-2 trained from scratch (tied embeddings counted once)."""
    width, layers, context = model["n_embd"], model["n_layer"], model["n_positions"]
    per_layer = 12 * width * width + 13 * width  # attention + MLP weights, biases, 2 LayerNorms
    return vocab_size * width + context * width + layers * per_layer + 2 * width


def parameter_driver(model: Mapping[str, Any], vocab_size: int) -> str:
    """The config key whose term dominates ``scratch_parameters`` (the one to lower)."""
    width = model["n_embd"]
    terms = {
        "tokenizer.vocab_size": vocab_size * width,
        "model.n_positions": model["n_positions"] * width,
        "model.n_embd": model["n_layer"] * 12 * width * width,
    }
    return max(terms, key=terms.__getitem__)


def context_tokens(config: Mapping[str, Any]) -> int:
    """The model's context: model.n_positions from scratch, a hub model's own where known."""
    shape = model_shape(config)
    if config["model"]["source"] != "scratch" and shape is not None:
        return shape.positions
    return config["model"]["n_positions"]


def tokens_per_sequence(config: Mapping[str, Any]) -> int:
    """Tokens of the longest sequence: an example's characters, cut to the model's context (a
    hub model's own, ``n_positions`` for a scratch model or an unknown hub model)."""
    chars = config["data"]["max_example_chars"]
    return min(context_tokens(config), math.ceil(chars / CHARS_PER_TOKEN) + 2)


def training_rows(config: Mapping[str, Any]) -> tuple[int, int]:
    """(rows of the largest training split, canary copies in it) the config allows."""
    data, can = config["data"], config["canaries"]
    held_out = data["validation_fraction"] + data["test_fraction"]
    corpus = int(data["max_examples"] * (1 - held_out))
    copies = sum(can["repetitions"]) * can["per_repetition"]
    return corpus + copies, copies


def _activations_bytes(batch: int, config: Mapping[str, Any], backward: bool) -> float:
    """What a forward pass of ``batch`` sequences holds (``fisher.memory.activation_bytes``)."""
    return fisher_memory_module().activation_bytes(
        model_shape(config), batch, tokens_per_sequence(config), backward
    )


def _fisher_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``fisher.*`` as ``fisher.memory`` takes it."""
    fisher = config["fisher"]
    keys = ("blocks", "block_size", "storage", "dtype", "gradient_method", "recompute_rows")
    return {key: fisher[key] for key in keys}


def _gradient_passes(config: Mapping[str, Any], m: int) -> int:
    """Per-example gradients the Fisher's set-up computes: m, or matrix_free's recomputations."""
    fisher = config["fisher"]
    if fisher["storage"] != "matrix_free":
        return m
    return fisher_memory_module().setup_gradients(m, fisher["recompute_rows"])


def _stored_gradients_mb(config: Mapping[str, Any], m: int, d: int) -> float:
    """G as a Fisher-reading job holds it (none for matrix_free)."""
    fisher = config["fisher"]
    if fisher["storage"] == "matrix_free":
        return 0.0
    return m * d * fisher_memory_module().DTYPE_BYTES[fisher["dtype"]] / MB


def _fisher_estimate(config: Mapping[str, Any], device: str, gpus: int) -> Estimate | None:
    """estimate_fisher: host memory of the job (every process), memory per GPU, and time."""
    shape = model_shape(config)
    if shape is None:
        return None
    memory = fisher_memory_module()
    rows, _ = training_rows(config)
    m, d, seq = min(config["fisher"]["examples"], rows), shape.d, tokens_per_sequence(config)
    need = memory.fisher_memory(
        shape, m, seq, gpus=gpus, device=device, process_mb=PROCESS_MB, **_fisher_settings(config)
    )
    keys = ["fisher.examples"]
    if config["fisher"]["storage"] == "host":
        keys.append("fisher.dtype")  # G in host RAM: bfloat16 halves it
    if config["model"]["source"] == "scratch":
        keys.append(parameter_driver(config["model"], config["tokenizer"]["vocab_size"]))
    g_mb = m * d * memory.DTYPE_BYTES[config["fisher"]["dtype"]] / MB
    passes = _gradient_passes(config, m)
    return Estimate(
        "estimate_fisher",
        need.host_mb + _text_mb(config),
        (6 * d * passes * seq + 2 * m * m * d) / RATE[device],
        tuple(keys),
        f"m = {m} gradients of d = {d} parameters ({g_mb:,.0f} MB, storage "
        f"{config['fisher']['storage']}, {passes} gradient computations)",
        need.gpu_mb,
    )


def _text_mb(config: Mapping[str, Any]) -> float:
    rows, _ = training_rows(config)
    return 3 * rows * max(BYTES_PER_ROW, config["data"]["max_example_chars"] * 2) / MB


def _train_memory_mb(d: int, batch: int, config: Mapping[str, Any]) -> float:
    """Weights, gradients and two Adam moments (16 bytes a parameter) and one step's
    activations, on top of the process itself."""
    return PROCESS_MB + (16 * d + _activations_bytes(batch, config, backward=True)) / MB


def _score_memory_mb(d: int, batch: int, config: Mapping[str, Any]) -> float:
    """Weights (and a second model: the reference or the retrained one) and one forward."""
    return PROCESS_MB + (8 * d + _activations_bytes(batch, config, backward=False)) / MB


def estimates(config: Mapping[str, Any], device: str = "cpu", gpus: int = 1) -> list[Estimate]:
    """Peak memory (MB) and a lower bound of the time (s) of each heavy rule's job (``gpus``:
    the GPUs a GPU job has; only the sharded Fisher uses more than one)."""
    shape = model_shape(config)
    if shape is None:  # a hub model of unknown shape: nothing to size it by
        return []
    vocab = config["tokenizer"]["vocab_size"]
    d = shape.d
    scratch = config["model"]["source"] == "scratch"
    size_key = parameter_driver(config["model"], vocab) if scratch else "model.source"
    rate = RATE[device]
    rows, copies = training_rows(config)
    seq = tokens_per_sequence(config)
    train, dp, fisher = config["train"], config["train_dp"], config["fisher"]
    out = []

    def add(rule: str, memory_mb: float, flops: float, key: str, detail: str) -> None:
        keys = tuple(dict.fromkeys((key, size_key)))  # the model's size drives every stage
        out.append(Estimate(rule, memory_mb, flops / rate, keys, detail))

    text_mb = _text_mb(config)
    if not scratch:
        add(
            "fetch_base_model",
            PROCESS_MB + FETCH_BYTES_PER_PARAMETER * d / MB,
            0.0,
            "model.source",
            f"{d} parameters loaded in float32 and saved",
        )
    add(
        "inject_canaries",
        PROCESS_MB / 2 + text_mb,
        0.0,
        "canaries.per_repetition",
        f"{rows} training rows, {copies} of them canary copies",
    )
    for rule, recipe, examples in (
        ("pretrain_base", train["pretrain"], rows * len(config["pretrain"]["datasets"])),
        ("finetune", train["finetune"], rows),
        ("retrain", train["finetune"], rows),
    ):
        # One forward pass holds a micro-batch's activations (training.loop).
        micro = recipe.get("micro_batch_size") or recipe["batch_size"]
        add(
            rule,
            _train_memory_mb(d, micro, config) + text_mb,
            6 * d * examples * seq * recipe["epochs"],
            size_key,
            f"{d} parameters, {examples} sequences of <= {seq} tokens, {recipe['epochs']} epochs",
        )
    poisson = 2 * dp["batch_size"]  # a Poisson batch can exceed its expectation
    # Ghost clipping keeps per-sample gradient norms, never the gradients themselves.
    ghost = dp["grad_sample_mode"] == "ghost"
    add(
        "train_dp",
        _train_memory_mb(d, poisson, config) + (0 if ghost else poisson * d * 4 / MB) + text_mb,
        6 * d * rows * seq * dp["epochs"],
        "train_dp.batch_size",
        f"{'ghost clipping' if ghost else 'per-sample gradients'} of up to {poisson} sequences "
        f"x {d} parameters",
    )
    m = min(fisher["examples"], rows)
    fisher_mb = _stored_gradients_mb(config, m, d) + 2 * m * m * 8 / MB  # G, Gram and factor
    out.append(_fisher_estimate(config, device, gpus))
    batch = config["unlearn"]["trajectory"]["batch_size"]
    points = max((_grid_size(g) for g in config["unlearn"]["frontier"].values()), default=1)
    add(
        "sweep_frontier",
        _train_memory_mb(d, batch, config) + 2 * fisher_mb + 16 * d / MB + text_mb,
        6 * d * rows * seq * points,
        "fisher.examples",
        f"the Fisher (m = {m}, d = {d}), the original weights kept, {points} grid points",
    )
    for rule in ("unlearn_cycles", "unlearn_realworld", "onion_unlearn"):
        add(
            rule,
            _train_memory_mb(d, batch, config) + 2 * fisher_mb + 8 * d / MB + text_mb,
            6 * d * rows * seq,
            "fisher.examples",
            f"the Fisher (m = {m}, d = {d}) loaded and re-estimated, the model's copies",
        )
    can, exposure = config["canaries"], config["evaluate"]["exposure"]
    n_canaries = len(can["repetitions"]) * can["per_repetition"] + can["phantoms"]
    k = can["secret_digits"]
    if exposure["estimator"] == "extrapolated":
        nodes, scored = exposure["extrapolation_samples"] * k, "extrapolated"
    else:
        nodes, scored = (10**k - 1) // 9, "exact"  # every inner node of the digit tree
    models = {"evaluate": 2, "evaluate_dp": len(dp_epsilons(config["train_dp"]))}
    for rule, count in models.items():
        add(
            rule,
            _score_memory_mb(d, config["evaluate"]["batch_size"], config)
            + CACHE_BUDGET_MB
            + text_mb,
            2 * d * nodes * n_canaries * count,  # one token through the model per node
            "canaries.secret_digits"
            if scored == "exact"
            else "evaluate.exposure.extrapolation_samples",
            f"{scored} rank of {n_canaries} canaries over 10^{k} candidates, {count} models",
        )
    real = config["realworld"]
    add(
        "find_secrets",
        _score_memory_mb(d, real["batch_size"], config) + text_mb,
        2 * d * real["max_strings"] * (real["samples"] + 1) * seq * 2,
        "realworld.max_strings",
        f"{real['max_strings']} strings x {real['samples']} substitutes, two models",
    )
    scaling = config["scaling"]
    widths, largest_m = max(scaling["widths"]), max(scaling["examples"])
    if not scratch:  # the scaling study trains scratch models of its own widths
        return out
    widest = scratch_parameters({**config["model"], "n_embd": widths}, vocab)
    add(
        "fisher_scaling",
        _train_memory_mb(widest, 32, config) + largest_m * widest * 4 / MB,
        6 * widest * largest_m * seq * len(scaling["widths"]) * len(scaling["examples"]),
        "scaling.widths",
        f"gradients of m = {largest_m} at width {widths} ({widest} parameters)",
    )
    return out


def _grid_size(grid: Mapping[str, Any]) -> int:
    return math.prod(len(v) for v in grid.values() if v is not None)


def memory_request_mb(config: Mapping[str, Any], rule: str, floor: int) -> int:
    """What a rule should ask for: its estimate with a quarter on top, at least ``floor``
    (rules declare ``mem_mb`` through this, so requests grow with the config, e.g. on Slurm)."""
    by_rule = {e.rule: e for e in estimates(config)}
    if rule not in by_rule:
        return floor
    return max(floor, math.ceil(1.25 * by_rule[rule].memory_mb / 100) * 100)


def runtime_request_min(config: Mapping[str, Any], rule: str, floor: int, gpus: int = 0) -> int:
    """A rule's walltime request (minutes): twice its estimate at the rate a job is expected to
    reach on its device (``gpus``: the GPUs the job gets), at least ``floor``. Estimates are
    lower bounds at ``RATE``; rescaled to ``EXPECTED_RATE``, they become expected times."""
    device = "gpu" if gpus else "cpu"
    by_rule = {e.rule: e for e in estimates(config, device, max(gpus, 1))}
    if rule not in by_rule:
        return floor
    expected_s = by_rule[rule].seconds * RATE[device] / EXPECTED_RATE[device]
    return max(floor, math.ceil(2 * expected_s / 60))


def set_resource_gpus(overrides: Mapping[str, Any], rule: str, declared: int = 0) -> int:
    """The GPUs ``--set-resources`` (e.g. a GPU profile) gives ``rule``, else ``declared``.
    ``overrides``: Snakemake's ``workflow.resource_settings.overwrite_resources`` (resource
    objects as parsed from the command line or profile, or plain values)."""
    given = overrides.get(rule, {})
    value = given.get("gpu") if hasattr(given, "get") else None
    if value is None:
        return declared
    value = getattr(value, "value", value)  # snakemake.resources.Resource or a plain number
    return int(value) if isinstance(value, int | float) else declared


def declared_resources(rules: Iterable[Any]) -> dict[str, dict[str, float]]:
    """``{rule: {"mem_mb": ..., "runtime": ..., "gpu": ...}}`` of Snakemake rules, where they are
    plain numbers (``--set-resources`` overrides included; callables are left out)."""
    out: dict[str, dict[str, float]] = {}
    for rule in rules:
        values = {}
        names = list(rule.resources.keys())
        for key in ("mem_mb", "runtime", "gpu"):
            if key in names:
                res = rule.resources[key]
                value = None if res.is_evaluable() else res.value
                if isinstance(value, int | float):
                    values[key] = value
        out[rule.name] = values
    return out


def machine_memory_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _human(seconds: float) -> str:
    for unit, size in (("years", 3.15e7), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_plan(
    config: Mapping[str, Any],
    resources: Mapping[str, Mapping[str, float]],
    machine_mb: float | None = None,
    local: bool = True,
    gpu_mb: float | None = None,
) -> list[Estimate]:
    """Refuse (PlanError listing every stage that cannot fit) or return the estimates.
    ``gpu_mb``: memory of one GPU (default ``fisher.memory.GPU_MB``, 80 GB)."""
    problems = []
    plans = []
    one_process = set()  # rules refused for asking matrix_free to run on several GPUs
    gpu_mb = fisher_memory_module().GPU_MB if gpu_mb is None else gpu_mb
    for rule, declared in resources.items():
        gpus = int(declared.get("gpu") or 0)
        device = "gpu" if gpus else "cpu"
        plans += [e for e in estimates(config, device, max(gpus, 1)) if e.rule == rule]
        if gpus > 1 and rule in SHARDED_RULES and config["fisher"]["storage"] == "matrix_free":
            one_process.add(rule)
            problems.append(
                f"fisher.storage: matrix_free runs in one process (it stores no columns to "
                f"shard), but rule {rule} asks for {gpus} GPUs; give it resources gpu=1, or set "
                "fisher.storage: device or host for the sharded Fisher"
            )
    for e in plans:
        if e.gpu_memory_mb > gpu_mb and e.rule not in one_process:
            problems.append(_fisher_gpu_refusal(config, resources[e.rule], gpu_mb))
        declared = resources.get(e.rule, {})
        limit = declared.get("mem_mb")
        where = "the rule's mem_mb"
        if local and machine_mb is not None and (limit is None or machine_mb < limit):
            limit, where = machine_mb, "this machine's memory"
        lower = " or ".join(e.keys)
        if limit is not None and e.memory_mb > limit:
            problems.append(
                f"{e.keys[0]}: rule {e.rule} would need about {e.memory_mb:,.0f} MB ({e.detail}), "
                f"more than {where} ({limit:,.0f} MB); lower {lower} (or run the rule where "
                "there is more memory, with --set-resources)"
            )
        if e.seconds > 60 * MAX_RUNTIME_MIN:
            problems.append(
                f"{e.keys[0]}: rule {e.rule} would run at least {_human(e.seconds)} "
                f"({e.detail}), beyond any cluster job's walltime "
                f"({_human(60 * MAX_RUNTIME_MIN)}); lower {lower}"
            )
            continue
        runtime = declared.get("runtime")
        if runtime is not None and e.seconds > 60 * runtime:
            problems.append(
                f"{e.keys[0]}: rule {e.rule} would run at least {_human(e.seconds)} "
                f"({e.detail}), beyond its runtime of {runtime} min; lower {lower}"
            )
    if problems:
        raise PlanError("the config cannot fit:\n  " + "\n  ".join(problems))
    return plans


def _fisher_gpu_refusal(
    config: Mapping[str, Any], declared: Mapping[str, float], gpu_mb: float
) -> str:
    """Why estimate_fisher does not fit its GPUs, and on how many (or with what) it would."""
    rows, _ = training_rows(config)
    m = min(config["fisher"]["examples"], rows)
    return fisher_memory_module().gpu_refusal(
        model_shape(config), m, tokens_per_sequence(config), gpus=int(declared["gpu"]),
        gpu_mb=gpu_mb, host_mb=declared.get("mem_mb"), **_fisher_settings(config),
    )  # fmt: skip


def check_workflow(config: Mapping[str, Any], rules: Iterable[Any], local: bool) -> None:
    """The Snakefile's call: estimates against the rules' resources and, run locally, this
    machine's memory (``UNLEARNBENCH_MACHINE_MB`` overrides what /proc/meminfo says; a GPU's
    memory is ``UNLEARNBENCH_GPU_MB``, default 80 GB)."""
    override = os.environ.get("UNLEARNBENCH_MACHINE_MB")
    machine = float(override) if override else machine_memory_mb()
    gpu = os.environ.get("UNLEARNBENCH_GPU_MB")
    check_plan(config, declared_resources(rules), machine, local, float(gpu) if gpu else None)
