"""Adapter of rule score_secrets (workflow/rules/realworld.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.realworld import RealworldConfig, score_secrets_stage
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
cfg = RealworldConfig(**params["realworld"], seed=params["seed"])
inp, out = snakemake.input, snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"eval": params["seed"]},
    lambda log: score_secrets_stage(
        Path(inp.model[0]).parent,
        Path(inp.tokenizer).parent,
        inp.train,
        [inp.validation, inp.test],
        cfg,
        inp.reference,
        inp.heldout_reference,
        out.secrets,
    ),
    threads=snakemake.threads,
)
