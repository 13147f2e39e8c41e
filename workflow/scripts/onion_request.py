"""Adapter of rule onion_request (workflow/rules/unlearn.smk): the onion study's subset S of one
selection as a request (forget/retain manifests, canary table), for its retrain and its
unlearning arm alike."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import run_stage
from unlearnbench.studies.onion import onion_request_stage

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, params["seed"])

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"onion_random": params["seed"]},
    lambda frame: onion_request_stage(
        snakemake.wildcards.selection,
        params["n_remove"],
        replicate,
        inp.original_eval,
        {"forget": out.forget, "retain": out.retain, "canaries": out.canaries},
    ),
)
