"""Adapter of rule unlearn_realworld (workflow/rules/realworld.smk): one method, one request on
a real-world replicate (the strings find_secrets chose), at realworld.point: the method's base
setting, or its matched-utility point on this replicate's frontier, chosen on the validation
split alone; then the strings are re-scored under the unlearned model in the same process."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.realworld.stages import record_secret_scores
from unlearnbench.unlearning.frontier import operating_hyper
from unlearnbench.unlearning.frontier_stage import matched_utility_stage
from unlearnbench.unlearning.stage import unlearn_stage

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
method, seed = snakemake.wildcards.method, params["seed"]
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, seed)
fisher_cfg = FisherConfig(**params["fisher"], seed=seed) if params["fisher"] else None
out_dir = Path(out.model[0]).parent


def unlearn(frame):
    if params["point"] == "base":
        hyper, point = operating_hyper(params["hyper"], None, "base", key="realworld.point")
    else:
        hyper, point = matched_utility_stage(
            method,
            params["hyper"],
            params["grid"],
            replicate,
            fisher_cfg,
            params["utility_budget"],
            params["batch_size"],
            device=frame.device,
        )
    frame.log.info("setting: %s (%s)", hyper, {k: point[k] for k in ("point", "reached")})
    manifest = unlearn_stage(
        method, hyper, replicate, fisher_cfg, params["trajectory"], out_dir, device=frame.device
    )
    return {**manifest, "operating_point": point}


frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_stage(out.manifest, params, {"unlearn": seed, "eval": seed}, unlearn, frame)
record_secret_scores(out_dir, replicate, params, inp, out, frame)
