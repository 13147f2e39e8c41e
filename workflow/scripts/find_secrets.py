"""Adapter of rule find_secrets (workflow/rules/realworld.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import run_stage
from unlearnbench.studies.realworld.stages import RealworldConfig, find_secrets_stage

params = dict(snakemake.params.items())
cfg = RealworldConfig(**params["realworld"], seed=params["seed"])
replicate = ReplicateFiles.from_inputs(snakemake.input, snakemake.wildcards.dataset, params["seed"])
out = snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"eval": params["seed"]},
    lambda frame: find_secrets_stage(
        replicate,
        Path(snakemake.input.reference[0]).parent,
        cfg,
        out.secrets,
        out.heldout,
        out.forget,
        out.retain,
        frame.device,
    ),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
