# Derived lists, wildcard constraints and the helpers every rule file uses.
import os
import re
from pathlib import Path

PACKAGE = Path(workflow.basedir) / "workflow" / "unlearnbench"

DATASET = {ds["name"]: ds for ds in config["datasets"]}
DATASETS = list(DATASET)
# Only general-text datasets get injected canaries; realworld ones are studied as they are.
NLP_DATASETS = [name for name, ds in DATASET.items() if ds["kind"] == "nlp"]
REALWORLD_DATASETS = [name for name, ds in DATASET.items() if ds["kind"] == "realworld"]
REPLICATES = config["replicates"]
SPLITS = ["train", "validation", "test"]


def eps_label(epsilon):
    """An epsilon as it appears in paths: 1 -> "1", 0.5 -> "0.5" (no trailing ".0")."""
    return f"{epsilon:g}"


# DP-SGD target epsilons by path label; the models are named dp_eps~<label>.
EPSILON = {eps_label(e): e for e in config["train_dp"]["epsilons"]}
DP_MODELS = [f"dp_eps~{label}" for label in EPSILON]
# Wildcard constraints are declared in the Snakefile (the linter wants no directives here).


def code(*modules):
    """Inputs naming the package files a job imports; Snakemake does not track Python imports,
    so listing them makes an edit rerun exactly the rules that use the edited module.
    A name is a module (``seeding``) or a subpackage (``corpora``, all of its files)."""
    files = ["__init__.py", "logs.py", "provenance.py"]
    for name in modules:
        if (PACKAGE / name).is_dir():
            files += sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / name).glob("*.py"))
        else:
            files.append(f"{name}.py")
    return [str(PACKAGE / f) for f in dict.fromkeys(files)]


def log_path(rule, *wildcards):
    return os.path.join("results", "logs", rule, *wildcards) + ".log"


def benchmark_path(rule, *wildcards):
    return os.path.join("results", "benchmarks", rule, *wildcards) + ".tsv"


TOKENIZER = "results/tokenizer/tokenizer.json"
MODEL_FILES = ["config.json", "model.safetensors"]


def model_files(directory):
    """The files save_pretrained writes for a model saved in ``directory``."""
    return [f"{directory}/{name}" for name in MODEL_FILES]
