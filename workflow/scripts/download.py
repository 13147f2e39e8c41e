"""Adapter of rule download (workflow/rules/download.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.download import download_assets
from unlearnbench.settings.offline import offline
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())

# Offline (HF_HUB_OFFLINE set) the same calls only read the cache: the target verifies it.
run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {},
    lambda frame: download_assets(params["assets"], offline()),
)
