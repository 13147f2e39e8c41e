"""Adapter of rule fetch_tokenizer (workflow/rules/data.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.stage import run_stage
from unlearnbench.tokenizer import fetch_tokenizer

params = dict(snakemake.params.items())

run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {},
    lambda frame: fetch_tokenizer(
        params["source"], params["revision"], Path(snakemake.output.tokenizer).parent
    ),
)
