"""Adapter of rule onion_unlearn (workflow/rules/unlearn.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.onion import onion_stage

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
base = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, params["seed"])
fisher_cfg = FisherConfig(**params["fisher"], seed=params["seed"]) if params["fisher"] else None


def study(k):
    """Selection k's request (rule onion_request's files, in params.selections order)."""
    replicate = base.with_request(
        inp.request_forget[k], inp.request_retain[k], inp.request_canaries[k]
    )
    return lambda frame: onion_stage(
        inp.request_manifest[k],
        params["onion"]["method"],
        params["hyper"],
        replicate,
        fisher_cfg=fisher_cfg,
        trajectory=params["trajectory"],
        device=frame.device,
    )


# One process for both selections (importing torch and transformers costs ~8 s per process);
# each selection is its own result: own metrics file, provenance and cost, one shared log.
frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
for k, (selection, metrics_path) in enumerate(zip(params["selections"], out.metrics, strict=True)):
    record_stage(
        metrics_path,
        {**params, "selection": selection},
        {"unlearn": params["seed"], "eval": params["seed"]},
        study(k),
        frame,
    )
