# unlearnbench: machine unlearning for language models, end to end.
# Reproduces "Second-Order Information Matters: Revisiting Machine Unlearning for LLMs"
# (arXiv 2403.10557). Run: snakemake --cores all   (see README.md)
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# The schema (closed objects, types, bounds, defaults) and the cross-field rules run here, in
# one package function, so a wrong config fails before any job with "<key>: <problem>; <fix>".
sys.path.insert(0, f"{workflow.basedir}/workflow")
from unlearnbench.settings import validate_config

validate_config(config)


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fisher.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/realworld.smk"
include: "workflow/rules/evaluate.smk"
# Last: the cost table collects the benchmark files of every rule defined above.
include: "workflow/rules/report.smk"


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
