"""Adapter of rule find_secrets (workflow/rules/realworld.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.realworld import RealworldConfig, find_secrets_stage
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
cfg = RealworldConfig(**params["realworld"], seed=params["seed"])
inp, out = snakemake.input, snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"eval": params["seed"]},
    lambda log: find_secrets_stage(
        Path(inp.model[0]).parent,
        Path(inp.reference[0]).parent,
        Path(inp.tokenizer).parent,
        inp.train,
        [inp.validation, inp.test],
        cfg,
        out.secrets,
        out.heldout,
        out.forget,
        out.retain,
    ),
    threads=snakemake.threads,
)
