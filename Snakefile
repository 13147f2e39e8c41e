# unlearnbench: machine unlearning for language models, end to end.
# Reproduces "Second-Order Information Matters: Revisiting Machine Unlearning for LLMs"
# (arXiv 2403.10557). Run: snakemake --cores all   (see README.md)
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Every config file read strictly (no key twice), then the merged config against the schema
# and the cross-field rules, so a wrong config fails before any job with
# "<key>: <problem>; <fix>"; the resource plan follows once the rules are defined (below).
sys.path.insert(0, f"{workflow.basedir}/workflow")
from unlearnbench.planner import check_workflow
from unlearnbench.settings import check_config_files, exit_on_config_error, validate_config

with exit_on_config_error():
    check_config_files(workflow.configfiles)
    validate_config(config)


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=one_of(DATASETS),
    seed=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fisher.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/realworld.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/onion.smk"
include: "workflow/rules/download.smk"
# Last: the cost table collects the benchmark files of every rule defined above.
include: "workflow/rules/report.smk"


# Every heavy rule's memory and time estimated from the config, against its declared resources
# (and, run locally, this machine's memory): what cannot fit is refused before any job.
with exit_on_config_error():
    check_workflow(config, workflow.rules, local=workflow.local_exec)


rule all:
    default_target: True
    input:
        rules.data.input,
        rules.models.input,
        rules.evaluations.input,
        rules.unlearning.input,
        rules.realworld.input,
        "results/scaling/fisher_scaling.csv",
        rules.tables_and_figures.input,
