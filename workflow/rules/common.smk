# Derived lists, wildcard constraints and the helpers every rule file uses.
from pathlib import Path

PACKAGE = Path(workflow.basedir) / "workflow" / "unlearnbench"

DATASET = {ds["name"]: ds for ds in config["datasets"]}
DATASETS = list(DATASET)
# Only general-text datasets get injected canaries; realworld ones are studied as they are.
NLP_DATASETS = [name for name, ds in DATASET.items() if ds["kind"] == "nlp"]
REPLICATES = config["replicates"]
SPLITS = ["train", "validation", "test"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


def code(*modules):
    """The package files a rule imports, as inputs: Snakemake does not track Python imports,
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
    return "results/logs/" + "/".join([rule, *wildcards]) + ".log"


def benchmark_path(rule, *wildcards):
    return "results/benchmarks/" + "/".join([rule, *wildcards]) + ".tsv"
