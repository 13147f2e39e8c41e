"""One source per knob: the schema and the code that reads each value agree on what is allowed.

Method hyperparameters are stated once, in each method's ``PARAMS``; the schema's method blocks
must offer exactly those keys, with the same types, defaults, bounds and null-ability. Every
other block is read by a dataclass config that checks its own values (a stage can be called
without the workflow); for every bounded number the dataclass must accept the schema's bound
(or the nearest allowed value of an exclusive one) and refuse the first value beyond it, and a
dataclass default must equal the schema's.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
from snakemake_runner import config_of
from unlearnbench.canaries import CanaryConfig
from unlearnbench.corpora import SplitConfig
from unlearnbench.evaluation import EvalConfig
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.models import ModelConfig
from unlearnbench.settings import load_schema, validate_config, without
from unlearnbench.studies.fisher_scaling import ScalingConfig
from unlearnbench.studies.onion import OnionConfig
from unlearnbench.studies.realworld.stages import RealworldConfig
from unlearnbench.training.dp_sweep import dp_settings
from unlearnbench.training.loop import TrainConfig
from unlearnbench.unlearning.registry import METHODS
from unlearnbench.unlearning.trajectory import TrajectoryConfig

SCHEMA = load_schema()
DEFAULT = validate_config(config_of("config.yaml"))
KIND = {"float": "number", "int": "integer", "bool": "boolean"}


def block(path: str) -> dict:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
        if "$ref" in node:
            node = {**SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
    return node


def values(path: str) -> dict:
    node = DEFAULT
    for part in path.split("."):
        node = node[part]
    return copy.deepcopy(node)


# Each config block, and how the code builds its dataclass from that block's values.
BUILDERS = {
    "data": lambda v: SplitConfig(**v, seed=0),
    "canaries": lambda v: CanaryConfig(**v, seed=0),
    "model": lambda v: ModelConfig(**v),
    "train.pretrain": lambda v: TrainConfig(**v, seed=0, key="train.pretrain"),
    "train.finetune": lambda v: TrainConfig(**v, seed=0, key="train.finetune"),
    "train_dp": lambda v: dp_settings(
        without(v, "epsilons", "replicates", "noise_free_control"), target_epsilon=1.0, seed=0
    )[0],
    "fisher": lambda v: FisherConfig(**v, seed=0),
    "unlearn.trajectory": TrajectoryConfig.from_dict,
    "realworld": lambda v: RealworldConfig(
        **without(v, "replicates", "methods", "indelible_margin", "point"), seed=0
    ),
    "onion": lambda v: OnionConfig(
        **without(v, "replicates", "method", "point"), secret_digits=4, seed=0
    ),
    "evaluate": lambda v: EvalConfig.from_settings(v, seed=0),
    "evaluate.exposure": lambda v: EvalConfig.from_settings(
        {**values("evaluate"), "exposure": v}, seed=0
    ),
    "scaling": lambda v: ScalingConfig(
        examples=tuple(v["examples"]), widths=tuple(v["widths"]), damping=1e-3
    ),
}


# Keys no stage reads (a table's own setting): the schema alone bounds them.
TABLE_ONLY = {("realworld", "indelible_margin")}


def bound_cases():
    """(block, key, inside value, outside value) for every bounded number of every block."""
    for path in BUILDERS:
        for key, spec in block(path).get("properties", {}).items():
            if (path, key) in TABLE_ONLY:
                continue
            kind = spec.get("type")
            kinds = kind if isinstance(kind, list) else [kind]
            if "integer" in kinds:
                step = 1
            elif "number" in kinds:
                step = None
            else:
                continue
            for bound, side in (
                ("minimum", -1),
                ("exclusiveMinimum", -1),
                ("maximum", 1),
                ("exclusiveMaximum", 1),
            ):
                if bound not in spec:
                    continue
                edge = spec[bound]
                exclusive = bound.startswith("exclusive")
                if step:  # integers
                    inside = edge - side if exclusive else edge
                    outside = edge if exclusive else edge + side
                else:
                    nudge = math.ulp(edge) * 4 if edge else 1e-12
                    inside = edge - side * nudge if exclusive else edge
                    outside = edge if exclusive else edge + side * max(nudge, abs(edge) * 1e-6)
                yield pytest.param(path, key, inside, outside, id=f"{path}.{key}.{bound}")


# Values whose bound the dataclass cannot reach alone because another value of the same block
# constrains it first (the cross-field rule is tested in test_settings); the dataclass is then
# given a block that lets the bound itself decide.
ADJUST = {
    ("data", "max_example_chars"): {"min_example_chars": 1},
    ("data", "validation_fraction"): {"test_fraction": 0.1},
    ("data", "test_fraction"): {"validation_fraction": 0.1},
    ("canaries", "per_repetition"): {
        "forget_per_repetition": 1,
        "tuning_per_repetition": 0,
        "requests": 1,
    },
    ("canaries", "forget_per_repetition"): {"requests": 1, "tuning_per_repetition": 0},
    ("canaries", "secret_digits"): {
        "per_repetition": 1,
        "forget_per_repetition": 1,
        "tuning_per_repetition": 0,
        "phantoms": 0,
        "repetitions": [1],
        "requests": 1,
    },
    ("model", "n_embd"): {"n_head": 1},
    ("model", "n_head"): {"n_embd": 64},
    ("realworld", "max_strings"): {"forget_top": 1},
    ("realworld", "memorised_above"): {"removed_below": 0.0},
}


@pytest.mark.parametrize(("path", "key", "inside", "outside"), list(bound_cases()))
def test_dataclass_bounds_equal_the_schema_bounds(path, key, inside, outside):
    base = {**values(path), **ADJUST.get((path, key), {})}
    BUILDERS[path]({**base, key: inside})  # the schema allows it: so must the code
    with pytest.raises(ValueError, match=key):
        BUILDERS[path]({**base, key: outside})


@pytest.mark.parametrize("path", [p for p in BUILDERS if p != "evaluate.exposure"])
def test_dataclass_defaults_equal_the_schema_defaults(path):
    builder = BUILDERS[path]
    made = builder(values(path))
    if not dataclasses.is_dataclass(made):
        return
    for field in dataclasses.fields(made):
        spec = block(path).get("properties", {}).get(field.name)
        if spec is None or field.default is dataclasses.MISSING:
            continue
        assert field.default == spec["default"], f"{path}.{field.name}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_schema_method_block_is_the_methods_params(name):
    """Same keys, kinds, defaults, bounds and null-ability: PARAMS is the one statement."""
    spec = block(f"unlearn.methods.{name}")["properties"]
    params = METHODS[name].PARAMS
    assert sorted(spec) == sorted(params)
    for key, param in params.items():
        node = spec[key]
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert KIND[param.kind] in kinds, (name, key)
        assert ("null" in kinds) == param.nullable, (name, key)
        assert node["default"] == param.default, (name, key)
        if param.minimum is None:
            assert "minimum" not in node and "exclusiveMinimum" not in node, (name, key)
        else:
            bound = "exclusiveMinimum" if param.exclusive else "minimum"
            assert node.get(bound) == param.minimum, (name, key, bound)
        assert node.get("maximum") == param.maximum, (name, key)
