"""Adapter of rule fetch_base_model (workflow/rules/train.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.models import ModelConfig
from unlearnbench.stage import run_stage
from unlearnbench.training.stages import fetch_base_model

params = dict(snakemake.params.items())

run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {},
    lambda frame: fetch_base_model(
        ModelConfig(source=params["source"], revision=params["revision"]),
        Path(snakemake.input.tokenizer).parent,
        out_dir=Path(snakemake.output.model[0]).parent,
    ),
)
