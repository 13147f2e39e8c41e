"""Adapter of rule estimate_fisher (workflow/rules/fisher.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.fisher.storage import estimate_fisher_stage
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import run_stage

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
cfg = FisherConfig(**params["fisher"], seed=params["seed"])
replicate = ReplicateFiles.from_inputs(snakemake.input, snakemake.wildcards.dataset, params["seed"])
out = snakemake.output

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": params["seed"]},
    lambda frame: estimate_fisher_stage(replicate, cfg, out.tensors, out.meta, frame.device),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
