"""The config schema and the cross-field rules: shipped configs pass, bad ones name their key."""

from __future__ import annotations

import copy

import pytest
from snakemake_runner import config_of
from unlearnbench.settings import ConfigError, load_schema, validate_config


@pytest.mark.parametrize(
    "overlays",
    [("config.yaml",), ("config.yaml", "smoke.yaml"), ("config.yaml", "paper.yaml")],
)
def test_shipped_configs_are_valid(overlays):
    validate_config(config_of(*overlays))


def test_defaults_are_filled():
    config = validate_config(
        {"datasets": [{"name": "news", "source": "news"}], "pretrain": {"datasets": ["news"]}}
    )
    assert config["datasets"][0]["kind"] == "nlp"
    assert config["data"]["max_examples"] == 1500
    assert config["canaries"]["secret_digits"] == 6


def test_every_schema_key_has_description_and_default():
    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{name} lacks a description"
            if name not in node.get("required", []):
                assert "default" in sub, f"{path}{name} lacks a default"
            walk(sub, f"{path}{name}.")
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{path or 'top'} is not closed"
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[].")

    walk(load_schema(), "")


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


# (change, key the message must name, a word of the fix or problem)
BAD_CONFIGS = [
    ({"data.unknown_key": 1}, "data", "unknown_key"),
    ({"seed": "abc"}, "seed", "integer"),
    ({"datasets": []}, "datasets", "non-empty"),
    ({"datasets.0.source": "gutenberg"}, "datasets[0].source", "gutenberg"),
    ({"datasets.0.kind": "private"}, "datasets[0].kind", "private"),
    ({"datasets.1.name": "wikipedia"}, "datasets", "unique"),
    ({"datasets.0.name": "Wiki Pedia"}, "datasets[0].name", "match"),
    ({"datasets.0.source": "hub"}, "datasets[0].hub.path", "hub.path"),
    ({"datasets.0.hub": {"path": "x/y"}}, "datasets[0].hub", "source: hub"),
    ({"pretrain.datasets": ["nope"]}, "pretrain.datasets", "nope"),
    ({"pretrain.datasets": ["credits"]}, "pretrain.datasets", "realworld"),
    ({"data.validation_fraction": 0.5, "data.test_fraction": 0.45}, "data.test_fraction", "0.9"),
    ({"data.validation_fraction": -0.1}, "data.validation_fraction", "minimum"),
    ({"data.max_examples": 0}, "data.max_examples", "minimum"),
    ({"data.min_example_chars": 500}, "data.min_example_chars", "max_example_chars"),
    ({"tokenizer.vocab_size": 100}, "tokenizer.vocab_size", "minimum"),
    ({"canaries.templates": ["no placeholder"]}, "canaries.templates[0]", "match"),
    ({"canaries.templates": ["{secret} first"]}, "canaries.templates[0]", "match"),
    ({"canaries.secret_digits": 0}, "canaries.secret_digits", "minimum"),
    ({"canaries.secret_digits": 2}, "canaries.secret_digits", "too small"),
    ({"canaries.repetitions": [0, 1]}, "canaries.repetitions[0]", "minimum"),
    ({"canaries.repetitions": [2000]}, "canaries.repetitions", "max_examples"),
    ({"canaries.forget_per_repetition": 5}, "canaries.forget_per_repetition", "per_repetition"),
    ({"canaries.requests": 13}, "canaries.requests", "empty"),
    ({"replicates": []}, "replicates", "non-empty"),
    ({"canaries.secret_digits": 8}, "evaluate.exposure.estimator", "max_exact_space"),
    ({"evaluate.exposure.estimator": "guess"}, "evaluate.exposure.estimator", "guess"),
    ({"model.n_head": 3}, "model.n_head", "divide"),
    ({"train.finetune.lr": 0}, "train.finetune.lr", "Peak learning rate"),
    ({"replicates": [1, 1]}, "replicates", "unique"),
    ({"train_dp.epsilons": [-1]}, "train_dp.epsilons[0]", "minimum"),
    ({"train_dp.epsilons": [0]}, "train_dp.epsilons[0]", "minimum"),
    ({"train_dp.delta": 0.01}, "train_dp.delta", "1/N"),
    ({"train_dp.delta": 1.5}, "train_dp.delta", "maximum"),
    ({"train_dp.accountant": "gdp"}, "train_dp.accountant", "gdp"),
    ({"unlearn.run": ["newton_magic"]}, "unlearn.run[0]", "newton_magic"),
    ({"unlearn.methods.retrain_all": {}}, "unlearn.methods", "retrain_all"),
    (
        {"unlearn.methods.fisher_removal.gamma": -1},
        "unlearn.methods.fisher_removal.gamma",
        "minimum",
    ),
    ({"unlearn.methods.gradient_ascent.bogus": 1}, "unlearn.methods.gradient_ascent", "bogus"),
    ({"fisher.damping": 0}, "fisher.damping", "minimum"),
    ({"fisher.blocks": "diagonal"}, "fisher.blocks", "diagonal"),
    (
        {"onion.templates": ["a is {secret}", "b is {secret}", "c is {secret}"]},
        "onion.templates",
        "even",
    ),
    (
        {"onion.templates": ["a is {secret}", "b is{secret}"]},
        "onion.templates[1]",
        "does not match",
    ),
    ({"onion.siblings": [4, 8]}, "onion.siblings", "decrease"),
    ({"onion.siblings": [200, 8]}, "onion.siblings", "corpus rows"),
    ({"fisher.storage": "disk"}, "fisher.storage", "disk"),
    ({"fisher.storage": "matrix_free", "fisher.dtype": "bfloat16"}, "fisher.dtype", "stores none"),
    (
        {"fisher.storage": "matrix_free", "unlearn.methods.fisher_removal.iterations": 2},
        "unlearn.methods.fisher_removal.iterations",
        "matrix_free",
    ),
    (  # Fisher Forgetting has no refresh: its second step always reuses the starting Fisher
        {"fisher.storage": "matrix_free", "unlearn.frontier.fisher_forgetting.iterations": [1, 3]},
        "unlearn.methods.fisher_forgetting.iterations",
        "3 steps",
    ),
    ({"onion.method": "forget_all"}, "onion.method", "forget_all"),
    ({"onion.method": "grad_diff"}, "onion.method", "unlearn.run"),
    (
        {"unlearn.run": ["fisher_removal"], "claims.rules": [], "claims.studies": []},
        "unlearn.cycle_methods",
        "cycle_point: base",
    ),
    # side-study claims: an arm the config does not run, a metric of another study, an arm of
    # the old onion design, an id taken by a protocol claim
    ({"claims.studies.0.a": "gradient_ascent"}, "claims.studies[0].a", "cycle"),
    ({"claims.studies.5.a": "dp_eps~4"}, "claims.studies[5].a", "dp_eps~8"),
    ({"claims.studies.0.metric": "requested_excess"}, "claims.studies[0].metric", "cycles"),
    ({"claims.studies.1.a": "targeted"}, "claims.studies[1].a", "masked"),
    (
        {"claims.studies.1.metric": "control_exposure_shift"},
        "claims.studies[1].metric",
        "control_exposure_shift",
    ),
    ({"claims.studies.0.id": "fr_erases_more_than_ga"}, "claims.studies[0].id", "two claims"),
    ({"claims.studies.7.b": "unlearned~fisher_removal"}, "claims.studies[7].b", "itself"),
]


@pytest.mark.parametrize(("change", "key", "word"), BAD_CONFIGS)
def test_bad_config_names_key(change, key, word):
    config = copy.deepcopy(config_of("config.yaml"))
    for dotted, value in change.items():
        _set(config, dotted, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert f"{key}:" in message, message
    assert word in message, message


SCHEMA_KEYWORDS = {
    "$schema", "$defs", "$ref", "type", "description", "default", "properties",
    "additionalProperties", "required", "items", "enum", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minItems", "uniqueItems", "oneOf",
}  # fmt: skip


def test_matrix_free_takes_several_steps_with_a_fresh_fisher():
    config = config_of("config.yaml")
    config["fisher"] |= {"storage": "matrix_free", "recompute_rows": 4}
    config["unlearn"]["methods"]["fisher_removal"] |= {"iterations": 3, "refresh_fisher": True}
    validate_config(config)  # every step re-estimates the Fisher at the current weights
    config["fisher"]["storage"] = "host"
    config["unlearn"]["methods"]["fisher_forgetting"]["iterations"] = 2
    validate_config(config)  # a stored G serves any weights


def test_schema_nodes_use_only_schema_keywords_and_whole_descriptions():
    """A comma inside an unquoted flow-mapping description cut it short and turned its rest
    into a stray key: seven messages read `expected: m` and the like."""

    def walk(node, path):
        if not isinstance(node, dict):
            return
        assert set(node) <= SCHEMA_KEYWORDS, f"{path}: stray keys {set(node) - SCHEMA_KEYWORDS}"
        if "description" in node:
            text = node["description"].strip()
            assert text.endswith((".", ")")) and len(text.split()) >= 2, f"{path}: {text!r}"
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        for i, option in enumerate(node.get("oneOf", [])):
            walk(option, f"{path}|{i}")

    walk(load_schema(), "config")


def test_schema_method_names_equal_the_registry_names():
    """The schema's method enums and blocks, and the torch-free name list, must agree."""
    from unlearnbench.method_names import METHODS

    unlearn = load_schema()["properties"]["unlearn"]["properties"]
    assert set(unlearn["methods"]["properties"]) == set(METHODS)
    assert unlearn["run"]["items"]["enum"] == list(METHODS)
    assert unlearn["cycle_methods"]["items"]["enum"] == list(METHODS)
    onion = load_schema()["properties"]["onion"]["properties"]["method"]
    assert onion["enum"] == list(METHODS)
    realworld = load_schema()["properties"]["realworld"]["properties"]["methods"]
    assert realworld["items"]["enum"] == list(METHODS)
    assert set(unlearn["frontier"]["properties"]) == set(METHODS)


def test_frontier_defaults_are_the_embedded_grids():
    """A config that names no frontier gets the embedded default's grids (so a minimal config
    still has a frontier to compare on), and a knob the default does not sweep stays null."""
    grids = config_of("config.yaml")["unlearn"]["frontier"]
    schema = load_schema()["properties"]["unlearn"]["properties"]["frontier"]["properties"]
    for method, knobs in schema.items():
        for knob, spec in knobs["properties"].items():
            assert spec["default"] == grids[method].get(knob), f"{method}.{knob}"
