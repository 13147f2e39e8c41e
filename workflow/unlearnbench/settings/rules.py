"""Cross-field rules a schema cannot express, checked after it (``check_config``).

Each rule that breaks raises ``ConfigError("<key>: <problem>; <fix>")`` naming the first key
to change. The resource plan (``planner``) runs after these, once the rules' resources are
known.
"""

from __future__ import annotations

import string
from typing import Any

from .. import dp_budget
from ..method_names import needs_fisher
from ..study_names import METRICS, ONION_ARMS
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
    _check_fisher_storage(config)
    _check_compute(config)
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
        _check_dp_reachable(config["train_dp"], config["canaries"], config["data"])
        _check_ghost_clipping(config["train_dp"], config["model"])
        _check_onion(config)
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


def _check_dp_reachable(dp: dict[str, Any], can: dict[str, Any], data: dict[str, Any]) -> None:
    """A target epsilon no noise multiplier reaches is refused here, not in the job. The job
    calibrates for the exact N; before the data exist the config bounds N (at least the canary
    copies, at most the capped split plus them), and the epsilon is refused only when it is out
    of reach at both ends (what the most noise spends moves little with N, mostly through
    delta = 1/N). Ends that dp_budget's closed form settles never load the accountant."""
    if dp["epochs"] is None or dp["batch_size"] is None:
        return  # resolve_dp_budget fills them in validate_config, before this check
    copies = sum(can["repetitions"]) * can["per_repetition"]
    sizes = sorted({max(1, copies), max_train_examples(data) + copies})
    rates = 1 if isinstance(dp["lr"], int | float) else len(dp["lr"])
    for i, epsilon in enumerate(dp["epsilons"]):
        floors = [_epsilon_floor(dp, epsilon, n, rates) for n in sizes]
        if any(floor is None or floor <= epsilon for floor in floors):
            continue
        sweep = f", {rates} candidate rates" if rates > 1 else ""
        delta = "1/N" if dp["delta"] is None else f"{dp['delta']:g}"
        _fail_if(
            True,
            f"train_dp.epsilons[{i}]",
            f"target epsilon {epsilon:g} is unreachable: even noise multiplier "
            f"{dp_budget.MAX_NOISE_MULTIPLIER:g} spends {min(floors):.3g} or more "
            f"(train_dp.accountant {dp['accountant']}, delta {delta}, {dp['epochs']} epochs "
            f"at expected batch {dp['batch_size']}{sweep}, for any of the {sizes[0]} to "
            f"{sizes[-1]} training sequences data.max_examples and the canaries allow)",
            "raise the epsilon or train_dp.delta, or use train_dp.accountant: prv (tighter)",
        )


def _check_ghost_clipping(dp: dict[str, Any], model: dict[str, Any]) -> None:
    """Ghost clipping cannot clip a parameter two layers share; a GPT-2 trained from scratch
    ties its token embedding to its output layer (a hub model is checked by the job, which
    sees its weights)."""
    _fail_if(
        dp["grad_sample_mode"] == "ghost"
        and dp["trainable"] == "all"
        and model["source"] == "scratch",
        "train_dp.grad_sample_mode",
        "ghost clipping cannot clip the token embedding the GPT-2 trained from scratch shares "
        "with its output layer (tied embeddings), and train_dp.trainable: all trains it",
        "use folded (the default), lean or hooks, or train_dp.trainable: last_block or "
        "norms_biases",
    )


def _epsilon_floor(dp: dict[str, Any], epsilon: float, n: int, rates: int) -> float | None:
    """What the most noise spends on N = n sequences; None when it is surely below epsilon."""
    delta = dp["delta"] if dp["delta"] is not None else 1 / n
    total = dp_budget.steps_per_epoch(n, dp["batch_size"]) * dp["epochs"]
    steps = total + dp_budget.sweep_extra_steps(total, rates, dp["sweep_fraction"])
    q = dp_budget.sample_rate(n, dp["batch_size"])
    if dp_budget.surely_reachable(epsilon, q, steps, delta):
        return None
    # Rare (epsilon near the floor): the accountant itself, at the price of loading torch.
    from ..training.dp_accounting import epsilon_floor

    return epsilon_floor(q, steps, delta, dp["accountant"])


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
        "onion": list(ONION_ARMS),
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


def _check_onion(config: dict[str, Any]) -> None:
    """The onion study's design (studies.onion.OnionConfig: even templates, decreasing
    siblings, enough secrets), a random arm that can draw as many corpus rows as the treated
    maskers hold, and a frontier for an unlearning arm that runs at an operating point."""
    from ..studies.onion import OnionConfig

    onion = config["onion"]
    try:
        OnionConfig(
            templates=onion["templates"],
            siblings=onion["siblings"],
            secret_digits=config["canaries"]["secret_digits"],
            seed=0,
            phantoms=onion["phantoms"],
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    data = config["data"]
    train_rows = int(
        data["max_examples"] * (1 - data["validation_fraction"] - data["test_fraction"])
    )
    masker_rows = len(onion["templates"]) // 2 * onion["siblings"][0]
    _fail_if(
        masker_rows > train_rows,
        "onion.siblings",
        f"the treated maskers hold {masker_rows} rows, more than the about {train_rows} "
        "corpus rows the random arm draws as many from",
        "lower the masker's count (onion.siblings[0]) or use fewer onion.templates",
    )
    _fail_if(
        onion["point"] != "base" and onion["method"] not in config["unlearn"]["run"],
        "onion.method",
        f"{onion['method']!r} runs at its {onion['point']} point, but has no frontier (not in "
        "unlearn.run)",
        "add it to unlearn.run, or set onion.point: base",
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


def _methods_that_run(config: dict[str, Any]) -> list[str]:
    unlearn = config["unlearn"]
    realworld = config["realworld"]["methods"] or unlearn["run"]
    names = [*unlearn["run"], *unlearn["cycle_methods"], config["onion"]["method"], *realworld]
    return list(dict.fromkeys(names))


def _check_fisher_storage(config: dict[str, Any]) -> None:
    """matrix_free stores no G, and recomputes its rows at the weights it was set up at: a
    bfloat16 G means nothing there, and a Fisher method that steps again with the starting
    Fisher (iterations > 1 without a fresh Fisher) would find the weights changed."""
    fisher = config["fisher"]
    if fisher["storage"] != "matrix_free":
        return
    _fail_if(
        fisher["dtype"] != "float32",
        "fisher.dtype",
        f"{fisher['dtype']} is the precision of a stored G, and storage matrix_free stores none "
        "(its recomputed rows are float32)",
        "set fisher.dtype: float32, or fisher.storage: device or host",
    )
    unlearn = config["unlearn"]
    for method in _methods_that_run(config):
        if not needs_fisher(method):
            continue
        base, grid = unlearn["methods"][method], unlearn["frontier"].get(method) or {}

        def values(knob: str, default: Any, base=base, grid=grid, method=method) -> list:
            swept = grid.get(knob) if method in unlearn["run"] else None
            return [base.get(knob, default), *(swept or [])]

        steps = max(values("iterations", 1))
        # fisher_forgetting has no refresh: every step after the first uses the starting Fisher
        stale = "refresh_fisher" not in base or False in values("refresh_fisher", False)
        _fail_if(
            steps > 1 and stale,
            f"unlearn.methods.{method}.iterations",
            f"{steps} steps reuse the starting Fisher at changed weights, which storage "
            "matrix_free cannot (it recomputes the gradients at the weights it was set up at)",
            "set iterations: 1 (here and in unlearn.frontier), refresh_fisher: true where the "
            "method has it, or fisher.storage: device or host",
        )


def _check_compute(config: dict[str, Any]) -> None:
    """bf16 acts on CUDA only, and a micro-batch larger than its batch splits nothing: both
    would be settings that silently do nothing."""
    compute = config["compute"]
    _fail_if(
        compute["precision"] == "bf16" and compute["device"] == "cpu",
        "compute.precision",
        "bf16 autocast acts on CUDA only, and compute.device: cpu keeps every job on the CPU",
        "use precision: float32, or device: auto with a GPU profile",
    )
    for stage, recipe in config["train"].items():
        micro = recipe.get("micro_batch_size")
        _fail_if(
            micro is not None and micro >= recipe["batch_size"],
            f"train.{stage}.micro_batch_size",
            f"{micro} is not below batch_size = {recipe['batch_size']}, so no step is split",
            "lower it, or set it to null",
        )


def _fail_if(condition: bool, key: str, problem: str, fix: str) -> None:
    if condition:
        raise ConfigError(f"{key}: {problem}; {fix}")
