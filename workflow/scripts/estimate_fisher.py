"""Adapter of rule estimate_fisher (workflow/rules/fisher.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher_estimation import FisherConfig, estimate_fisher_stage
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
cfg = FisherConfig(**params["fisher"], seed=params["seed"])
inp, out = snakemake.input, snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": params["seed"]},
    lambda log: estimate_fisher_stage(
        Path(inp.model[0]).parent,
        Path(inp.tokenizer).parent,
        inp.train,
        inp.retain,
        cfg,
        out.tensors,
        out.meta,
    ),
    threads=snakemake.threads,
)
