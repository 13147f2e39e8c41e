"""Partial reruns on a completed smoke study: a change reruns exactly what it invalidates.

Each test asks `snakemake -n` on a copy of the finished study and compares the whole job table
with the jobs the change must trigger (derived below from config/smoke.yaml), so a missing
`code=` input or a value read outside `params:` shows up as a missing job, and an over-broad
dependency as an extra one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from snakemake_runner import REPO, SMOKE, config_of, job_counts, run_snakemake
from unlearnbench import import_graph
from unlearnbench.method_names import reads_fisher_settings
from unlearnbench.settings import dp_epsilons

pytestmark = pytest.mark.slow


SMOKE_CONFIG = config_of("config.yaml", "smoke.yaml")
NLP = sum(d["kind"] == "nlp" for d in SMOKE_CONFIG["datasets"])
REALWORLD = sum(d["kind"] == "realworld" for d in SMOKE_CONFIG["datasets"])
CYCLE_METHODS = SMOKE_CONFIG["unlearn"]["cycle_methods"]
METHODS = SMOKE_CONFIG["unlearn"]["run"]
REALWORLD_METHODS = SMOKE_CONFIG["realworld"]["methods"] or METHODS
SEEDS = len(SMOKE_CONFIG["replicates"])


def side_seeds(block: str, key: str = "replicates") -> int:
    """How many replicates a side study runs on (its own subset, or all)."""
    chosen = SMOKE_CONFIG[block].get(key)
    return SEEDS if chosen is None else len(set(chosen) & set(SMOKE_CONFIG["replicates"]))


RUNS = NLP * SEEDS  # nlp replicates: every frontier, Fisher and evaluate job is one per run
DP_RUNS = NLP * side_seeds("train_dp")
CYCLE_RUNS = NLP * side_seeds("unlearn", "cycle_replicates")
ONION_RUNS = NLP * side_seeds("onion")
REALWORLD_RUNS = REALWORLD * side_seeds("realworld")
# Tables and figures that read unlearning results (all but the DP, onion and scaling ones).
UNLEARNING_REPORTS = {
    "tabulate_results": 1,
    "tabulate_claims": 1,
    "tabulate_realworld": 1,
    "plot_realworld": 1,
    "plot_privacy_utility": 1,
    "plot_unlearning_cycles": 1,
    "plot_weight_changes": 1,
}
# Every change reruns some job, so the cost table (which reads every benchmark file) and
# `all` follow (`tables_and_figures` is a target whose inputs `all` lists, not a job).
ALWAYS = {"tabulate_cost": 1, "all": 1}


def dry_run(study, overlay: str | None = None) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` would run, optionally with an overlay on smoke."""
    configs = ["config/smoke.yaml"]
    if overlay is not None:
        (study / "change.yaml").write_text(overlay)
        configs.append("change.yaml")
    proc = run_snakemake(study, "all", "-n", "--cores", "1", "--configfile", *configs)
    return job_counts(proc.stdout)


def test_completed_study_reruns_nothing(smoke_study):
    start = time.perf_counter()
    proc = run_snakemake(smoke_study, "all", "-n", "--cores", "1", *SMOKE)
    seconds = time.perf_counter() - start
    print(f"dry run of the completed smoke study: {seconds:.1f} s")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_one_method_hyperparameter_reruns_only_that_method(study_copy):
    jobs = dry_run(study_copy, "unlearn:\n  methods:\n    gradient_ascent:\n      lr: 0.015\n")
    in_cycles = "gradient_ascent" in CYCLE_METHODS
    expected = {
        # Each job scores the models it makes: no evaluate job follows.
        "sweep_frontier": RUNS,
        "unlearn_realworld": REALWORLD_RUNS * ("gradient_ascent" in REALWORLD_METHODS),
        "unlearn_cycles": CYCLE_RUNS * in_cycles,
        **UNLEARNING_REPORTS,
        "plot_unlearning_cycles": int(in_cycles),
        **ALWAYS,
    }
    assert jobs == {k: v for k, v in expected.items() if v}


def test_an_evaluate_setting_rescores_every_nlp_model(study_copy):
    # Frontier and cycle jobs score their own models (one process instead of two), so they
    # rerun with the evaluate rule; the trained models are only re-scored, and the real-world
    # study (its own settings) stays.
    methods = len(METHODS)
    retain_sample = SMOKE_CONFIG["evaluate"]["retain_sample"] + 10
    jobs = dry_run(study_copy, f"evaluate:\n  retain_sample: {retain_sample}\n")
    expected = {
        "evaluate": RUNS,
        "evaluate_dp": DP_RUNS,
        "sweep_frontier": methods * RUNS,
        "unlearn_cycles": len(CYCLE_METHODS) * CYCLE_RUNS,
        # The onion study's models are re-scored (evaluate_onion is `use rule evaluate`), its
        # unlearning arm scores its own model; nothing is retrained (its design reads no
        # metric of the main study).
        "evaluate_onion": ONION_RUNS,
        "onion_unlearn": ONION_RUNS,
        **UNLEARNING_REPORTS,
        "tabulate_realworld": 0,
        "plot_realworld": 0,
        "tabulate_dp": 1,
        "plot_onion_effect": 1,
        **ALWAYS,
    }
    assert jobs == {k: v for k, v in expected.items() if v}


def test_editing_a_module_reruns_exactly_its_importers(study_copy):
    module = study_copy / "workflow/unlearnbench/studies/onion.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    expected = {
        # its split and requests may change: every arm's model follows
        "inject_onion_canaries": ONION_RUNS,
        "retrain": 4 * ONION_RUNS,
        "evaluate_onion": ONION_RUNS,
        "onion_unlearn": ONION_RUNS,
        "plot_onion_effect": 1,
        "tabulate_claims": 1,
        **ALWAYS,
    }
    assert dry_run(study_copy) == expected


def rule_graph(study) -> dict[str, set[str]]:
    """Rule -> the rules that consume its outputs (`snakemake --rulegraph`)."""
    dot = run_snakemake(study, "--rulegraph", "--cores", "1", *SMOKE).stdout
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', dot))
    children: dict[str, set[str]] = {name: set() for name in names.values()}
    for parent, child in re.findall(r"(\d+) -> (\d+)", dot):
        children[names[parent]].add(names[child])
    return children


def with_descendants(children: dict[str, set[str]], roots: set[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        rule = todo.pop()
        if rule not in seen:
            seen.add(rule)
            todo.extend(children.get(rule, ()))
    return seen


def importers(study, module: str) -> set[str]:
    """Rules whose adapter script imports ``module``, by the import closure."""
    scripts = (study / "workflow" / "scripts").glob("*.py")
    rules = {s.stem for s in scripts if module in import_graph.script_closure(s)}
    # evaluate_dp and the study retrains' scoring are `use rule evaluate`: the same script
    scored = {"evaluate_dp", "evaluate_cycle_retrains", "evaluate_onion"}
    return rules | (scored if "evaluate" in rules else set())


@pytest.mark.parametrize(
    "module", ["unlearnbench.stage", "unlearnbench.replicate", "unlearnbench.pii"]
)
def test_editing_a_shared_module_reruns_exactly_the_rules_that_import_it(study_copy, module):
    """stage.py (the adapters' frame) was once in no code= list: an edit reran nothing."""
    path = Path(*module.split(".")).with_suffix(".py")
    source = study_copy / "workflow" / path
    source.write_text(source.read_text() + "\n# an edit\n")
    every = job_counts(run_snakemake(study_copy, "-n", "--forceall", "--cores", "1", *SMOKE).stdout)
    direct = importers(study_copy, module) & set(every)  # rules with jobs in this config
    assert direct, f"no rule imports {module}"
    jobs = dry_run(study_copy)
    # The importers rerun, every job of them, and what consumes their outputs; nothing else.
    assert set(jobs) == with_descendants(rule_graph(study_copy), direct)
    assert {rule: jobs[rule] for rule in direct} == {rule: every[rule] for rule in direct}


def test_editing_a_test_only_reference_reruns_nothing(study_copy):
    reference = study_copy / "tests" / "references" / "fisher_recursion.py"
    reference.parent.mkdir(parents=True)
    reference.write_text((REPO / "tests/references/fisher_recursion.py").read_text() + "# edit\n")
    proc = run_snakemake(study_copy, "all", "-n", "--cores", "1", *SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_a_fisher_setting_reruns_only_what_reads_the_fisher(study_copy):
    """Gradient ascent and fine-tuning never read the Fisher: they stay."""
    fisher_methods = [m for m in METHODS if reads_fisher_settings(m)]
    fisher_cycles = [m for m in CYCLE_METHODS if reads_fisher_settings(m)]
    realworld_fisher = [m for m in REALWORLD_METHODS if reads_fisher_settings(m)]
    jobs = dry_run(study_copy, "fisher:\n  damping: 0.002\n")
    expected = {
        "estimate_fisher": RUNS + REALWORLD_RUNS * bool(realworld_fisher),
        "fisher_scaling": 1,
        "plot_fisher_scaling": 1,
        "sweep_frontier": len(fisher_methods) * RUNS,
        "unlearn_realworld": len(realworld_fisher) * REALWORLD_RUNS,
        "unlearn_cycles": len(fisher_cycles) * CYCLE_RUNS,
        "onion_unlearn": ONION_RUNS * reads_fisher_settings(SMOKE_CONFIG["onion"]["method"]),
        "plot_onion_effect": reads_fisher_settings(SMOKE_CONFIG["onion"]["method"]),
        **UNLEARNING_REPORTS,
        **ALWAYS,
    }
    assert jobs == {k: v for k, v in expected.items() if v}


def test_rewriting_a_module_with_the_same_bytes_reruns_nothing(study_copy):
    module = study_copy / "workflow/unlearnbench/studies/onion.py"
    module.write_bytes(module.read_bytes())  # new mtime, same content
    proc = run_snakemake(study_copy, "all", "-n", "--cores", "1", *SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_adding_an_epsilon_adds_only_its_jobs(study_copy):
    epsilons = [*SMOKE_CONFIG["train_dp"]["epsilons"], 3]
    jobs = dry_run(study_copy, f"train_dp:\n  epsilons: {epsilons}\n")
    expected = {
        "train_dp": DP_RUNS,
        "evaluate_dp": DP_RUNS,  # rescores the replicate's DP models; the original's metrics stay
        "tabulate_dp": 1,
        "plot_privacy_utility": 1,
        "tabulate_claims": 1,  # its DP claims read the DP models' metrics
        **ALWAYS,
    }
    assert jobs == expected


def test_the_noise_free_dp_control_is_one_more_dp_model(study_copy):
    assert SMOKE_CONFIG["train_dp"]["noise_free_control"]  # the smoke study runs it
    # Without the control, the claim that compares with it must go too (the config check
    # refuses a claim on a model that is not trained).
    studies = [c for c in SMOKE_CONFIG["claims"]["studies"] if "dp_eps~inf" not in (c["a"], c["b"])]
    overlay = {"train_dp": {"noise_free_control": False}, "claims": {"studies": studies}}
    jobs = dry_run(study_copy, yaml.safe_dump(overlay))
    # Taking it away retrains nothing; as for an epsilon added, the replicate's one evaluate_dp
    # job (it scores all of its DP models) reruns, and the DP tables and figure are rebuilt.
    expected = {
        "evaluate_dp": DP_RUNS,
        "tabulate_dp": 1,
        "plot_privacy_utility": 1,
        "tabulate_claims": 1,
        **ALWAYS,
    }
    assert jobs == expected


def test_adding_a_method_to_the_cycle_study_adds_only_its_jobs(study_copy):
    added = next(m for m in SMOKE_CONFIG["unlearn"]["run"] if m not in CYCLE_METHODS)
    jobs = dry_run(study_copy, f"unlearn:\n  cycle_methods: {[*CYCLE_METHODS, added]}\n")
    expected = {
        "unlearn_cycles": CYCLE_RUNS,  # scores its own cycle models: no evaluate job
        "plot_unlearning_cycles": 1,
        "tabulate_claims": 1,  # reads every cycle model's metrics
        **ALWAYS,
    }
    assert jobs == expected


def test_adding_a_dataset_adds_only_its_jobs(study_copy):
    datasets = SMOKE_CONFIG["datasets"] + [
        {"name": "shakespeare", "source": "shakespeare", "kind": "nlp"}
    ]
    jobs = dry_run(study_copy, yaml.safe_dump({"datasets": datasets}))
    methods = len(METHODS)
    epsilons = len(dp_epsilons(SMOKE_CONFIG["train_dp"]))  # with the noise-free control
    cycles = len(CYCLE_METHODS)
    expected = {
        "prepare_corpus": 1,
        "inject_canaries": SEEDS,
        "finetune": SEEDS,
        # the target and its twin; the onion study's four retrained arms; each cycle
        # request's but the last
        "retrain": 2 * SEEDS
        + 4 * side_seeds("onion")
        + (SMOKE_CONFIG["canaries"]["requests"] - 1) * side_seeds("unlearn", "cycle_replicates"),
        "inject_onion_canaries": side_seeds("onion"),
        "evaluate_onion": side_seeds("onion"),
        "cycle_request": (SMOKE_CONFIG["canaries"]["requests"] - 1)
        * side_seeds("unlearn", "cycle_replicates"),
        "evaluate_cycle_retrains": (SMOKE_CONFIG["canaries"]["requests"] > 1)
        * side_seeds("unlearn", "cycle_replicates"),
        "train_dp": epsilons * side_seeds("train_dp"),
        "estimate_fisher": SEEDS,
        "sweep_frontier": methods * SEEDS,
        "unlearn_cycles": cycles * side_seeds("unlearn", "cycle_replicates"),
        "onion_unlearn": side_seeds("onion"),
        "evaluate": SEEDS,
        "evaluate_dp": side_seeds("train_dp"),
        **UNLEARNING_REPORTS,
        "tabulate_realworld": 0,
        "plot_realworld": 0,
        "tabulate_dp": 1,
        "plot_onion_effect": 1,
        **ALWAYS,
    }
    assert jobs == {k: v for k, v in expected.items() if v}
