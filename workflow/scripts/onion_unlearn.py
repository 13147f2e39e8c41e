"""Adapter of rule onion_unlearn (workflow/rules/onion.smk): onion.method removes the treated
maskers from the onion study's original model at onion.point; the model is saved and scored."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import record_metrics
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.provenance import read_json
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.onion import onion_unlearn_stage
from unlearnbench.unlearning.frontier import operating_hyper

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
seed = params["seed"]
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, seed)
fisher_cfg = FisherConfig(**params["fisher"], seed=seed) if params["fisher"] else None
model_dir = Path(out.model[0]).parent


def unlearn(frame):
    # Named input "frontier" only when onion.point is not base (Namedlist: getattr).
    frontier_path = getattr(inp, "frontier", None)
    frontier = read_json(frontier_path) if frontier_path else None
    hyper, point = operating_hyper(params["hyper"], frontier, params["point"], key="onion.point")
    if not point["reached"]:
        frame.log.warning("%s not reached on this replicate: the strongest grid point", point)
    frame.log.info("onion setting: %s (%s)", hyper, point)
    manifest = onion_unlearn_stage(
        params["method"],
        hyper,
        replicate,
        fisher_cfg,
        params["trajectory"],
        model_dir,
        device=frame.device,
    )
    return {**manifest, "operating_point": point}


# One process: the unlearning, then the saved model scored as evaluate_onion scores the others.
frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
record_stage(out.manifest, params, {"unlearn": seed, "eval": seed}, unlearn, frame)
record_metrics(out.metrics, model_dir, replicate, params["evaluate"], frame)
