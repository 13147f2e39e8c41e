# Derived lists, wildcard constraints and the helpers every rule file uses.
import os
import re
from pathlib import Path

from unlearnbench.download import hub_assets
from unlearnbench.import_graph import files_of, script_closure
from unlearnbench.method_names import needs_fisher, reads_fisher_settings
from unlearnbench.planner import memory_request_mb, runtime_request_min, set_resource_gpus
from unlearnbench.reporting import paths
from unlearnbench.settings import dp_epsilons, without
from unlearnbench.study_names import ONION_ARM_REQUEST, ONION_REQUESTS, ONION_RETRAIN_ARMS


def canonical(value):
    """A config value with its mappings' keys sorted, recursively. Snakemake compares params by
    their text, so without this an overlay that merely lists a dataset's keys in another order
    (``yaml.safe_dump`` sorts them) would look like a change and rerun the whole study."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


# Keys sorted once here (see canonical()): rules pass these dicts on as params.
DATASET = {ds["name"]: canonical(ds) for ds in config["datasets"]}
DATASETS = list(DATASET)
# Only general-text datasets get injected canaries; realworld ones are studied as they are.
NLP_DATASETS = [name for name, ds in DATASET.items() if ds["kind"] == "nlp"]
REALWORLD_DATASETS = [name for name, ds in DATASET.items() if ds["kind"] == "realworld"]
# The datasets the claims are judged on (the others are breadth: in the tables only).
VERDICT_DATASETS = config["claims"]["datasets"] or NLP_DATASETS
REPLICATES = config["replicates"]
# Device override and precision (unlearnbench.compute) of the rules that compute with a model,
# as a param, so changing them reruns those jobs; whether a job gets a GPU is its gpu resource.
COMPUTE = canonical(config["compute"])


def study_replicates(block, key="replicates"):
    """The replicate seeds a side study runs on: its own subset, or every replicate."""
    chosen = config[block][key]
    return REPLICATES if chosen is None else [seed for seed in REPLICATES if seed in chosen]


DP_REPLICATES = study_replicates("train_dp")
CYCLE_REPLICATES = study_replicates("unlearn", "cycle_replicates")
ONION_REPLICATES = study_replicates("onion")
REALWORLD_REPLICATES = study_replicates("realworld")
SPLITS = ["train", "validation", "test"]


# DP-SGD target epsilons by path label; the models are named dp_eps~<label> (None: the
# noise-free control, dp_eps~inf).
EPSILON = dp_epsilons(config["train_dp"])
EPSILONS = list(EPSILON)
DP_MODELS = [f"dp_eps~{label}" for label in EPSILON]

# Unlearning methods to run (the schema allows exactly the names of the package's method
# registry). K = sequential requests of the multi-cycle study.
METHODS = config["unlearn"]["run"]
REQUESTS = config["canaries"]["requests"]
UNLEARNED_MODELS = [f"unlearned~{method}" for method in METHODS]
# The real-world study's methods: its own list, or every method of unlearn.run.
REALWORLD_METHODS = config["realworld"]["methods"] or METHODS
# The retrained model (the target) and its twin with another data order (the noise floor).
RETRAINED_MODELS = ["retrained", "retrained_reorder"]
# The side studies' gold standards, trained like the retrained model on their own D+: cycle
# request k < K (D minus groups 1..k; after request K every group is gone, and the retrained
# model is its gold standard) and the onion study's D minus each selection's subset.
CYCLE_RETRAINS = [f"retrained_request~{k}" for k in range(1, REQUESTS)]
# The onion study's models (studies.onion): the retrained arms, then the unlearned one.
ONION_RETRAINS = [f"onion~{arm}" for arm in ONION_RETRAIN_ARMS]
ONION_MODELS = [*ONION_RETRAINS, "onion~unlearned"]
# Retrains whose data order is not the replicate's: the noise floors.
REORDERED = ["retrained_reorder", "onion~reorder"]


def onion_request(request, name):
    """A file of one onion request (studies.onion.REQUESTS), for the rule's wildcards."""
    return (
        f"{paths.ONION_REQUEST.format(dataset='{dataset}', seed='{seed}', request=request)}/{name}"
    )


def retain_set(wc):
    """The D+ a retrain trains on: the replicate's, a cycle request's or an onion arm's."""
    if wc.retrain.startswith("retrained_request~"):
        request = wc.retrain.split("~", 1)[1]
        folder = paths.CYCLE_REQUEST.format(dataset=wc.dataset, seed=wc.seed, request=request)
        return f"{folder}/retain_set.json"
    if wc.retrain.startswith("onion~"):
        request = ONION_ARM_REQUEST[wc.retrain.split("~", 1)[1]]
        folder = paths.ONION_REQUEST.format(dataset=wc.dataset, seed=wc.seed, request=request)
        return f"{folder}/retain_set.json"
    return f"{replicate_dir('canaries', wc)}/retain_set.json"


def retrain_split(wc):
    """The training split a retrain's retain set indexes: the onion study's own (the corpus
    with sibling canaries) or the replicate's, with its canaries."""
    if wc.retrain.startswith("onion~"):
        return f"{paths.ONION_DATA.format(dataset=wc.dataset, seed=wc.seed)}/train.parquet"
    return f"{replicate_dir('canaries', wc)}/train.parquet"


def fisher_settings(method):
    """The fisher block for a method that reads the Fisher, else nothing: a change of the
    Fisher's settings then reruns only the Fisher-based methods."""
    return config["fisher"] if reads_fisher_settings(method) else {}


# What every unlearning job passes to its method (unlearn, unlearn_realworld, unlearn_cycles).
UNLEARN_PARAMS = {
    "hyper": lambda wc: config["unlearn"]["methods"][wc.method],
    "trajectory": config["unlearn"]["trajectory"],
    "fisher": lambda wc: fisher_settings(wc.method),
    "seed": lambda wc: int(wc.seed),
}


def operating_frontier(point, method="{method}"):
    """A side study's frontier input: the method's frontier on the same replicate, whose
    operating point ``point`` the study runs it at (none for the base setting)."""
    if point == "base":
        return {}
    return {"frontier": f"results/frontier/{{dataset}}/seed~{{seed}}/{method}.json"}


CYCLE_MODELS = [
    f"cycle~{k}~{m}" for m in config["unlearn"]["cycle_methods"] for k in range(1, REQUESTS + 1)
]


def replicate_dir(stage, wc):
    return f"results/{stage}/{wc.dataset}/seed~{wc.seed}"


def training_split(wc):
    """What the original model of a dataset trains on: the split with canaries (nlp), or the
    split as it is (realworld, where nothing is injected)."""
    if DATASET[wc.dataset]["kind"] == "nlp":
        return f"{replicate_dir('canaries', wc)}/train.parquet"
    return f"results/data/{wc.dataset}/train.parquet"


def request_manifests(wc):
    """The forget set D- and retained set D+ of a replicate: chosen canaries' copies (nlp), or
    the rows holding the real-world strings the original model memorised most (realworld)."""
    stage = "canaries" if DATASET[wc.dataset]["kind"] == "nlp" else "realworld"
    folder = replicate_dir(stage, wc)
    return {"forget": f"{folder}/forget_set.json", "retain": f"{folder}/retain_set.json"}


# Wildcard constraints are declared in the Snakefile (the linter wants no directives here).


def one_of(names):
    """A wildcard constraint matching exactly ``names``; with none, a pattern that matches
    nothing (an empty alternation would match anything, and every rule would compete for
    every path: a config without real-world datasets failed with AmbiguousRuleException)."""
    names = list(names)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def code(script):
    """Inputs naming the package files that workflow/scripts/<script>.py imports, transitively
    (read from the imports by unlearnbench.import_graph, never listed by hand). Snakemake does
    not track Python imports; listing them makes an edit rerun exactly the rules whose code
    runs the edited module."""
    path = Path(workflow.basedir) / "workflow" / "scripts" / f"{script}.py"
    # Relative to the working directory, so that moving or copying a finished study (workflow
    # and results together) keeps the recorded input sets equal and reruns nothing.
    return [os.path.relpath(p) for p in files_of(script_closure(path))]


def mem_mb(rule, floor):
    """A rule's memory request: the planner's estimate for this config plus a quarter, at
    least ``floor`` (the default study's need), so paper-scale configs ask for what they use."""
    return memory_request_mb(config, rule, floor)


def gpus_given(rule):
    """The GPUs a rule's jobs get: what --set-resources gives it (the GPU profiles), else none
    (the rules declare gpu=0, since the embedded default runs on CPUs)."""
    return set_resource_gpus(workflow.resource_settings.overwrite_resources, rule)


def runtime_min(rule, floor, like=None):
    """A rule's walltime request: the planner's expected time for this config on the device its
    jobs get (the estimate of rule ``like``, if it shares one), twice over, at least ``floor``
    (the default study's need). Scales with the model, so paper-scale jobs are not killed."""
    return runtime_request_min(config, like or rule, floor, gpus_given(rule))


def log_path(rule, *wildcards):
    return os.path.join("results", "logs", rule, *wildcards) + ".log"


def benchmark_path(rule, *wildcards):
    return os.path.join("results", "benchmarks", rule, *wildcards) + ".tsv"


# A hub model brings its weights and tokenizer: rules fetch_tokenizer and fetch_base_model
# replace train_tokenizer and pretrain_base (data.smk, train.smk), with the same outputs.
HUB_MODEL = config["model"]["source"] != "scratch"
TOKENIZER = "results/tokenizer/tokenizer.json"
MODEL_FILES = ["config.json", "model.safetensors"]


def model_files(directory):
    """The files save_pretrained writes for a model saved in ``directory``."""
    return [f"{directory}/{name}" for name in MODEL_FILES]


def fisher_input(wc, method=None):
    """Fisher-based methods read the stored estimate; the others do not wait for it."""
    if needs_fisher(method or wc.method):
        folder = replicate_dir("fisher", wc)
        return {
            "fisher_tensors": f"{folder}/fisher.safetensors",
            "fisher_meta": f"{folder}/fisher.json",
        }
    return {}


# What scoring an nlp replicate's model reads besides the model itself: the evaluate rules and
# the unlearning jobs that score their own models name these inputs alike (the names
# unlearnbench.replicate.ReplicateFiles.from_inputs reads).
EVALUATE_DATA = {
    "tokenizer": TOKENIZER,
    "test": "results/data/{dataset}/test.parquet",
    "validation": "results/data/{dataset}/validation.parquet",
    # the retrained model (KL to it) and the base model (membership inference's reference)
    "retrained": model_files("results/models/{dataset}/seed~{seed}/retrained"),
    "base": model_files("results/models/base"),
    "train": "results/canaries/{dataset}/seed~{seed}/train.parquet",
    "forget": "results/canaries/{dataset}/seed~{seed}/forget_set.json",
    "retain": "results/canaries/{dataset}/seed~{seed}/retain_set.json",
    "canaries": "results/canaries/{dataset}/seed~{seed}/canaries.csv",
}


def scored_after_retrained(models):
    """The inputs of a job that scores ``models`` of a replicate after the retrained model
    (whose metrics the KL and forget-quality columns compare with)."""
    return {
        **EVALUATE_DATA,
        "retrained_metrics": "results/eval/{dataset}/seed~{seed}/retrained.json",
        "models": [
            path
            for model in models
            for path in model_files(f"results/models/{{dataset}}/seed~{{seed}}/{model}")
        ],
        "code": code("evaluate"),
    }


def metrics_of(models):
    return [
        ensure(f"results/eval/{{dataset}}/seed~{{seed}}/{model}.json", non_empty=True)
        for model in models
    ]
