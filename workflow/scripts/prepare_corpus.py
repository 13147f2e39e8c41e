"""Adapter of rule prepare_corpus (workflow/rules/data.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.corpora import SplitConfig, prepare_corpus
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
split = SplitConfig(**params["split"], seed=params["seed"])
out = snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"split": params["seed"]},
    lambda frame: prepare_corpus(
        snakemake.wildcards.dataset,
        params["source"],
        split,
        train_path=out.train,
        validation_path=out.validation,
        test_path=out.test,
    ),
)
