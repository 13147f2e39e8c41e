"""A corpus of bad configs, each tried as a user would (`snakemake -n --configfile bad.yaml`):
every one must be refused before any job, with the config key named, the problem and a fix in
one message, and no Python traceback. Memory-hungry cases (a model 10^5 wide, 10^12 canaries)
are refused by the resource plan, from the config alone: nothing is allocated.
"""

from __future__ import annotations

import os

import pytest
from snakemake_runner import config_of, job_counts, run_snakemake

DEFAULT = config_of("config.yaml")

pytestmark = pytest.mark.slow

EXTRAPOLATED = "evaluate:\n  exposure:\n    estimator: extrapolated\n"

# (name, overlay, key named in the message, a word of the problem)
BAD = [
    ("width_1e5", "model:\n  n_embd: 100000\n  n_head: 4\n", "model.n_embd", "MB"),
    (
        "canaries_1e12",
        # delta null: the default's 1e-4 would (rightly) be refused first, as above 1/N
        "canaries:\n  per_repetition: 200000000000\n  secret_digits: 14\n"
        + "train_dp:\n  delta: null\n"
        + EXTRAPOLATED,
        "canaries.per_repetition",
        "MB",
    ),
    ("context_1e8", "model:\n  n_positions: 100000000\n", "model.n_positions", "MB"),
    (
        "exact_1e18",
        "canaries:\n  secret_digits: 18\nevaluate:\n  exposure:\n    estimator: exact\n"
        "    max_exact_space: 1000000000000000000\n",
        "canaries.secret_digits",
        "years",
    ),
    ("dp_batch_1e6", "train_dp:\n  batch_size: 1000000\n", "train_dp.batch_size", "MB"),
    ("scaling_wide", "scaling:\n  widths: [100000]\n", "scaling.widths", "MB"),
    ("float_epochs", "train:\n  finetune:\n    epochs: 2.0\n", "train.finetune.epochs", "integer"),
    (
        "bool_batch",
        "train:\n  finetune:\n    batch_size: true\n",
        "train.finetune.batch_size",
        "integer",
    ),
    ("float_replicate", "replicates: [1.0]\n", "replicates[0]", "integer"),
    ("infinite_epsilon", "train_dp:\n  epsilons: [.inf]\n", "train_dp.epsilons[0]", "finite"),
    ("nan_fraction", "data:\n  test_fraction: .nan\n", "data.test_fraction", "finite"),
    (
        "nan_gamma",
        "unlearn:\n  methods:\n    fisher_removal:\n      gamma: .nan\n",
        "unlearn.methods.fisher_removal.gamma",
        "finite",
    ),
    (
        "duplicate_key",
        "train:\n  finetune:\n    lr: 0.1\n    lr: 0.2\n",
        "train.finetune.lr",
        "twice",
    ),
    ("empty_mapping_for_list", "datasets: {}\n", "datasets", "array"),
    ("empty_datasets", "datasets: []\n", "datasets", "non-empty"),
    ("empty_methods", "unlearn:\n  run: []\n", "unlearn.run", "non-empty"),
    (
        "epsilon_label_clash",
        "train_dp:\n  epsilons: [0.1, 0.1000001]\n",
        "train_dp.epsilons[1]",
        "label",
    ),
    (
        "secret_twice",
        'canaries:\n  templates: ["my {secret} pin is {secret}"]\n',
        "canaries.templates[0]",
        "2 times",
    ),
    (
        "other_placeholder",
        'canaries:\n  templates: ["the {name} code is {secret}"]\n',
        "canaries.templates[0]",
        "placeholders",
    ),
    (
        "no_placeholder",
        'canaries:\n  templates: ["no placeholder"]\n',
        "canaries.templates[0]",
        "match",
    ),
    ("hub_model_unpinned", "model:\n  source: gpt2\n", "model.revision", "pinned"),
    ("hub_model_bad_id", "model:\n  source: a/b/c\n  revision: main\n", "model.source", "id"),
    (
        "block_beyond_model",
        "fisher:\n  blocks: fixed\n  block_size: 100000000\n",
        "fisher.block_size",
        "one block",
    ),
    ("fisher_m_1", "fisher:\n  examples: 1\n", "fisher.examples", "minimum"),
    ("seed_word", "seed: twelve\n", "seed", "integer"),
    ("negative_epsilon", "train_dp:\n  epsilons: [-1]\n", "train_dp.epsilons[0]", "minimum"),
    ("delta_above_1_over_n", "train_dp:\n  delta: 0.01\n", "train_dp.delta", "1/N"),
    ("unknown_method", "unlearn:\n  run: [magic_forget]\n", "unlearn.run[0]", "magic_forget"),
    ("tiny_secret_space", "canaries:\n  secret_digits: 2\n", "canaries.secret_digits", "too small"),
    (
        "repetitions_beyond_data",
        "canaries:\n  repetitions: [5000]\n",
        "canaries.repetitions",
        "max_examples",
    ),
    (
        "negative_gamma",
        "unlearn:\n  methods:\n    fisher_removal:\n      gamma: -1\n",
        "unlearn.methods.fisher_removal.gamma",
        "minimum",
    ),
    (
        "ascent_rate_above_1",
        "unlearn:\n  methods:\n    gradient_ascent:\n      lr: 2\n",
        "unlearn.methods.gradient_ascent.lr",
        "maximum",
    ),
    ("unknown_key", "canaries:\n  bogus: 1\n", "canaries", "bogus"),
    (
        "realworld_pretraining",
        "pretrain:\n  datasets: [credits]\n",
        "pretrain.datasets",
        "realworld",
    ),
    ("negative_cap", "data:\n  max_examples: -5\n", "data.max_examples", "minimum"),
    ("heads_do_not_divide", "model:\n  n_head: 3\n", "model.n_head", "divide"),
    (
        "unknown_estimator",
        "evaluate:\n  exposure:\n    estimator: guess\n",
        "evaluate.exposure.estimator",
        "guess",
    ),
    (
        "onion_odd_templates",
        "onion:\n  templates: ['a is {secret}', 'b is {secret}', 'c is {secret}']\n",
        "onion.templates",
        "even",
    ),
]


@pytest.mark.parametrize(("name", "overlay", "key", "word"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_before_any_job_with_its_key(workflow_copy, name, overlay, key, word):
    (workflow_copy / "bad.yaml").write_text(overlay)
    proc = run_snakemake(
        workflow_copy, "-n", "--cores", "1", "--configfile", "bad.yaml", check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert f"{key}:" in out and word in out, out[-2000:]
    assert "Traceback" not in out and 'File "' not in out, out[-2000:]
    assert not (workflow_copy / "results").exists()


def test_offline_run_names_the_hub_dataset_missing_from_the_cache(workflow_copy, tmp_path):
    (workflow_copy / "bad.yaml").write_text(
        "datasets:\n  - name: wiki\n    source: hub\n    hub: {path: Salesforce/wikitext}\n"
        "pretrain:\n  datasets: [wiki]\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    proc = run_snakemake(
        workflow_copy, "-n", "--cores", "1", "--configfile", "bad.yaml", check=False, env=env
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets[0].hub.path: 'Salesforce/wikitext' is not in the local cache" in out, out
    assert not (workflow_copy / "results").exists()


def test_a_config_file_that_is_not_a_mapping_is_refused_before_any_job(workflow_copy):
    """Snakemake itself reads --configfile files first, so the message is the engine's."""
    (workflow_copy / "bad.yaml").write_text("- a\n- b\n")
    proc = run_snakemake(
        workflow_copy, "-n", "--cores", "1", "--configfile", "bad.yaml", check=False
    )
    assert proc.returncode != 0 and "keys at top level" in proc.stdout + proc.stderr
    assert not (workflow_copy / "results").exists()


def test_a_config_without_realworld_datasets_plans(workflow_copy):
    """An empty alternation in a wildcard constraint once constrained nothing: every rule
    competed for every path (AmbiguousRuleException)."""
    (workflow_copy / "nlp_only.yaml").write_text(
        "datasets:\n  - {name: news, source: news, kind: nlp}\npretrain:\n  datasets: [news]\n"
    )
    proc = run_snakemake(workflow_copy, "-n", "--cores", "1", "--configfile", "nlp_only.yaml")
    jobs = job_counts(proc.stdout)
    assert "find_secrets" not in jobs and "unlearn_realworld" not in jobs
    methods, seeds = len(DEFAULT["unlearn"]["run"]), len(DEFAULT["replicates"])
    assert jobs["sweep_frontier"] == methods * seeds and jobs["evaluate"] == seeds
