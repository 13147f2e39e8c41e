"""Cross-field rules a schema cannot express, checked after it (``check_config``).

Each rule that breaks raises ``ConfigError("<key>: <problem>; <fix>")`` naming the first key
to change. The resource plan (``planner``) runs after these, once the rules' resources are
known.
"""

from __future__ import annotations

import string
from typing import Any

from ..study_names import METRICS, ONION_POINTS, ONION_SELECTIONS
from .hub_model import model_problem
from .schema import ConfigError

# A canary space must be much larger than the number of canaries: secrets are drawn without
# repetition and must not occur in the corpus, and every other canary's secret is a candidate
# that competes in the rank.
MIN_SPACE_PER_CANARY = 10


def eps_label(epsilon: float) -> str:
    """An epsilon as it appears in paths: 1 -> "1", 0.5 -> "0.5" (no trailing ".0")."""
    return f"{epsilon:g}"


NOISE_FREE_LABEL = "inf"  # dp_eps~inf: the DP recipe without noise (epsilon = infinity)


def dp_epsilons(train_dp: dict[str, Any]) -> dict[str, float | None]:
    """The DP-SGD models by path label: one per target epsilon, plus (``noise_free_control``)
    the same recipe without noise, as ``None``: the control that separates what clipping and
    Poisson sampling cost from what the noise costs."""
    models: dict[str, float | None] = {eps_label(e): e for e in train_dp["epsilons"]}
    if train_dp.get("noise_free_control"):
        models[NOISE_FREE_LABEL] = None
    return models


def resolve_dp_budget(config: dict[str, Any]) -> None:
    """train_dp.epochs / batch_size left null take the non-private fine-tune's, in place: DP-SGD
    then gets the same step budget as the model it is compared with, also when that changes."""
    for key in ("epochs", "batch_size"):
        if config["train_dp"][key] is None:
            config["train_dp"][key] = config["train"]["finetune"][key]


def check_config(config: dict[str, Any]) -> None:
    """Cross-field rules; raises ConfigError naming the first broken rule."""
    names = [d["name"] for d in config["datasets"]]
    kinds = {d["name"]: d["kind"] for d in config["datasets"]}
    _fail_if(
        len(set(names)) != len(names),
        "datasets",
        f"dataset names must be unique, got {names}",
        "rename the duplicates",
    )
    for i, ds in enumerate(config["datasets"]):
        has_path = ds["hub"].get("path") is not None
        _fail_if(
            ds["source"] == "hub" and not has_path,
            f"datasets[{i}].hub.path",
            f"dataset {ds['name']!r} has source 'hub' but no hub.path",
            "set hub.path to a hub dataset id (e.g. Salesforce/wikitext) or a builder "
            "(text, json, parquet) with hub.data_files",
        )
        _fail_if(
            ds["source"] != "hub" and has_path,
            f"datasets[{i}].hub",
            f"dataset {ds['name']!r} reads the offline source {ds['source']!r}, so its hub "
            "settings would be ignored",
            "remove the hub block or set source: hub",
        )
    for name in config["pretrain"]["datasets"]:
        _fail_if(
            name not in kinds,
            "pretrain.datasets",
            f"{name!r} is not a configured dataset",
            f"use names from datasets: {', '.join(names)}",
        )
        _fail_if(
            kinds[name] == "realworld",
            "pretrain.datasets",
            f"{name!r} is a realworld dataset: pretraining on it would let the base model see the "
            "very strings the unintended-memorisation study measures",
            "pretrain on nlp datasets only",
        )
    _check_data(config["data"])
    _check_frontier(config["unlearn"])
    _check_study_replicates(config)
    _check_claims(config)
    _check_model(config["model"])
    _check_fisher(config)
    model = config["model"]
    _fail_if(
        model["n_embd"] % model["n_head"] != 0,
        "model.n_head",
        f"{model['n_head']} heads do not divide model.n_embd = {model['n_embd']}",
        "choose n_embd as a multiple of n_head",
    )
    if any(kind == "nlp" for kind in kinds.values()):
        _check_canaries(config["canaries"], config["data"])
        _check_templates(config["canaries"]["templates"])
        _check_epsilons(config["train_dp"]["epsilons"])
        _check_exposure(config["evaluate"]["exposure"], config["canaries"])
        _check_dp(config["train_dp"], config["canaries"], config["data"])
        n_canaries = len(config["canaries"]["repetitions"]) * config["canaries"]["per_repetition"]
        _fail_if(
            config["onion"]["remove"] >= n_canaries,
            "onion.remove",
            f"removing {config['onion']['remove']} of the {n_canaries} canaries leaves no "
            "control canary to observe",
            f"set onion.remove below {n_canaries}",
        )
    # Last: the study claims name models (DP epsilons) whose own checks come first.
    _check_study_claims(config)


def _check_data(data: dict[str, Any]) -> None:
    held_out = data["validation_fraction"] + data["test_fraction"]
    _fail_if(
        held_out >= 0.9,
        "data.test_fraction",
        f"validation_fraction + test_fraction = {held_out:g} leaves almost nothing to train on",
        "keep their sum below 0.9",
    )
    _fail_if(
        data["min_example_chars"] > data["max_example_chars"],
        "data.min_example_chars",
        f"{data['min_example_chars']} exceeds data.max_example_chars = {data['max_example_chars']}",
        "lower min_example_chars or raise max_example_chars",
    )


def max_train_examples(data: dict[str, Any]) -> int:
    """Upper bound of a training split's size before canaries, from the caps alone."""
    held_out = data["validation_fraction"] + data["test_fraction"]
    return int(data["max_examples"] * (1 - held_out))


def _check_canaries(can: dict[str, Any], data: dict[str, Any]) -> None:
    n_canaries = len(can["repetitions"]) * can["per_repetition"] + can["phantoms"]
    n_forget = len(can["repetitions"]) * can["forget_per_repetition"]
    space = 10 ** can["secret_digits"]
    _fail_if(
        can["tuning_per_repetition"] >= can["forget_per_repetition"],
        "canaries.tuning_per_repetition",
        f"{can['tuning_per_repetition']} of {can['forget_per_repetition']} forget canaries per "
        "count would leave no evaluation canary",
        "keep it below canaries.forget_per_repetition",
    )
    _fail_if(
        can["forget_per_repetition"] > can["per_repetition"],
        "canaries.forget_per_repetition",
        f"{can['forget_per_repetition']} exceeds canaries.per_repetition = {can['per_repetition']}",
        "lower forget_per_repetition or raise per_repetition",
    )
    _fail_if(
        can["requests"] > n_forget,
        "canaries.requests",
        f"{can['requests']} unlearning requests but only {n_forget} forget canaries, so some "
        "request would be empty",
        "lower requests or raise canaries.forget_per_repetition",
    )
    _fail_if(
        space < MIN_SPACE_PER_CANARY * n_canaries,
        "canaries.secret_digits",
        f"a space of 10^{can['secret_digits']} secrets is too small for {n_canaries} canaries "
        f"(need at least {MIN_SPACE_PER_CANARY} candidates per canary)",
        "raise secret_digits or use fewer canaries",
    )
    bound = max_train_examples(data)
    _fail_if(
        max(can["repetitions"]) > bound,
        "canaries.repetitions",
        f"a canary inserted {max(can['repetitions'])} times would exceed the at most {bound} "
        "training examples allowed by data.max_examples",
        "lower the repetition counts or raise data.max_examples",
    )


def _check_dp(dp: dict[str, Any], can: dict[str, Any], data: dict[str, Any]) -> None:
    """delta must not exceed 1/N. N is only known once the data exist, but the config bounds
    it (capped split plus canary copies); checking against that bound here catches a wrong
    delta before hours of jobs, and train_dp checks the exact N again."""
    if dp["delta"] is None:
        return
    n_max = max_train_examples(data) + sum(can["repetitions"]) * can["per_repetition"]
    _fail_if(
        dp["delta"] > 1 / n_max,
        "train_dp.delta",
        f"{dp['delta']} exceeds 1/N = {1 / n_max:.3g} for the up to N = {n_max} training "
        "sequences this config allows; a delta that large admits publishing an example verbatim",
        "leave train_dp.delta unset (null = 1/N) or choose a smaller value, e.g. 1e-5",
    )


def _check_exposure(exp: dict[str, Any], can: dict[str, Any]) -> None:
    space = 10 ** can["secret_digits"]
    _fail_if(
        exp["estimator"] != "extrapolated" and space > exp["max_exact_space"],
        "evaluate.exposure.estimator",
        f"exact enumeration of |R| = 10^{can['secret_digits']} candidates exceeds "
        f"evaluate.exposure.max_exact_space = {exp['max_exact_space']}",
        "use estimator: extrapolated, or raise max_exact_space (time grows with |R|)",
    )


def _check_templates(templates: list[str]) -> None:
    """Exactly one {secret}, and no other placeholder (str.format would fail on it)."""
    for i, template in enumerate(templates):
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        _fail_if(
            fields.count("secret") != 1,
            f"canaries.templates[{i}]",
            f"{template!r} has {{secret}} {fields.count('secret')} times",
            "use it exactly once, at the end after a space",
        )
        others = sorted(set(fields) - {"secret"})
        _fail_if(
            bool(others),
            f"canaries.templates[{i}]",
            f"{template!r} has other placeholders {others}",
            "write literal braces as {{ and }}, or remove them",
        )


def _check_epsilons(epsilons: list[float]) -> None:
    """Two epsilons that print alike would share one model path: one model would be lost."""
    labels: dict[str, float] = {}
    for i, epsilon in enumerate(epsilons):
        label = eps_label(epsilon)
        _fail_if(
            label in labels,
            f"train_dp.epsilons[{i}]",
            f"{epsilon!r} and {labels.get(label)!r} share the path label dp_eps~{label}",
            "give epsilons that differ in their first 6 significant digits",
        )
        labels[label] = epsilon


STUDY_REPLICATES = (
    ("train_dp", "replicates"),
    ("unlearn", "cycle_replicates"),
    ("onion", "replicates"),
    ("realworld", "replicates"),
)


def _check_study_replicates(config: dict[str, Any]) -> None:
    for block, key in STUDY_REPLICATES:
        chosen = config[block][key]
        extra = sorted(set(chosen or []) - set(config["replicates"]))
        _fail_if(
            bool(extra),
            f"{block}.{key}",
            f"seeds {extra} are not among replicates {config['replicates']}",
            "choose a subset of replicates (or null for all of them)",
        )


def _check_claims(config: dict[str, Any]) -> None:
    nlp = [d["name"] for d in config["datasets"] if d["kind"] == "nlp"]
    chosen = config["claims"]["datasets"] or []
    unknown = sorted(set(chosen) - set(nlp))
    _fail_if(
        bool(unknown),
        "claims.datasets",
        f"{unknown} are not nlp datasets of this config",
        f"choose among {', '.join(nlp)} (or null for all)",
    )
    seen: set[str] = set()
    for i, rule in enumerate(config["claims"]["rules"]):
        _fail_if(
            rule["id"] in seen,
            f"claims.rules[{i}].id",
            f"{rule['id']!r} names two claims",
            "give every claim its own id",
        )
        seen.add(rule["id"])
        for side in ("a", "b"):
            _fail_if(
                rule[side] not in config["unlearn"]["run"],
                f"claims.rules[{i}].{side}",
                f"{rule[side]!r} is not among unlearn.run, so it has no frontier to judge",
                "add it to unlearn.run or change the claim",
            )
        _fail_if(
            rule["a"] == rule["b"],
            f"claims.rules[{i}].b",
            "compares a method with itself",
            "name two different methods",
        )


def _study_arms(config: dict[str, Any]) -> dict[str, list[str]]:
    """The arms a study claim may name, per study, in this config."""
    dp = [f"dp_eps~{label}" for label in dp_epsilons(config["train_dp"])]
    realworld = config["realworld"]["methods"] or config["unlearn"]["run"]
    return {
        "models": ["original", "retrained", *dp],
        "cycles": list(config["unlearn"]["cycle_methods"]),
        "onion": list(ONION_SELECTIONS),
        "realworld": ["retrained", *(f"unlearned~{m}" for m in realworld)],
    }


def _check_study_claims(config: dict[str, Any]) -> None:
    seen = {rule["id"] for rule in config["claims"]["rules"]}
    arms = _study_arms(config)
    for i, rule in enumerate(config["claims"]["studies"]):
        key = f"claims.studies[{i}]"
        _fail_if(
            rule["id"] in seen,
            f"{key}.id",
            f"{rule['id']!r} names two claims",
            "give every claim (rules and studies) its own id",
        )
        seen.add(rule["id"])
        study = rule["study"]
        _fail_if(
            rule["metric"] not in METRICS[study],
            f"{key}.metric",
            f"{rule['metric']!r} is not a measurement of the {study} study",
            f"use one of {', '.join(METRICS[study])}",
        )
        for side in ("a", "b"):
            _fail_if(
                rule[side] not in arms[study],
                f"{key}.{side}",
                f"{rule[side]!r} is not an arm of the {study} study in this config",
                f"use one of {', '.join(arms[study]) or '(none: the study has no arms)'}",
            )
        _fail_if(rule["a"] == rule["b"], f"{key}.b", "compares an arm with itself", "name two")
        _fail_if(
            study == "onion" and rule.get("point") not in ONION_POINTS,
            f"{key}.point",
            "an onion claim needs the arm it judges",
            f"set point to one of {', '.join(ONION_POINTS)}",
        )
        _fail_if(
            study != "onion" and rule.get("point") is not None,
            f"{key}.point",
            f"only onion claims have a point; the {study} study would ignore it",
            "remove it",
        )
        _fail_if(
            study == "onion"
            and rule.get("point") == "unlearn"
            and rule["metric"] == "control_log_perplexity_shift",
            f"{key}.metric",
            "the onion study's unlearning arm records exposure only",
            "use control_exposure_shift, or point: retrain",
        )


def _check_frontier(unlearn: dict[str, Any]) -> None:
    """Every method that runs has a grid: its frontier is what it is compared on; a cycle method
    that runs at an operating point needs that frontier."""
    if unlearn["cycle_point"] != "base":
        missing = [m for m in unlearn["cycle_methods"] if m not in unlearn["run"]]
        _fail_if(
            bool(missing),
            "unlearn.cycle_methods",
            f"{missing} run the cycles at their {unlearn['cycle_point']} point, but have no "
            "frontier (not in unlearn.run)",
            "add them to unlearn.run, or set unlearn.cycle_point: base",
        )
    for method in unlearn["run"]:
        grid = {k: v for k, v in unlearn["frontier"][method].items() if v is not None}
        _fail_if(
            not grid,
            f"unlearn.frontier.{method}",
            "no knob has values, so the method has no frontier to be compared on",
            "give the values of its strength knob(s), e.g. gamma: [0.01, 0.1, 1]",
        )


def _check_model(model: dict[str, Any]) -> None:
    """Scratch without a revision; a hub id pinned to a revision; a local directory without one;
    and, where the files are on this machine, a model that embeds every token of its tokenizer
    (``hub_model``)."""
    problem = model_problem(model)
    if problem:
        _fail_if(True, *problem)


def _check_fisher(config: dict[str, Any]) -> None:
    from ..planner import scratch_parameters

    fisher = config["fisher"]
    if fisher["blocks"] != "fixed" or config["model"]["source"] != "scratch":
        return
    d = scratch_parameters(config["model"], config["tokenizer"]["vocab_size"])
    _fail_if(
        fisher["block_size"] >= d,
        "fisher.block_size",
        f"{fisher['block_size']} covers the whole model ({d} parameters), so blocks: fixed "
        "would be one block",
        f"use blocks: full, or a block_size below {d}",
    )


def _fail_if(condition: bool, key: str, problem: str, fix: str) -> None:
    if condition:
        raise ConfigError(f"{key}: {problem}; {fix}")
