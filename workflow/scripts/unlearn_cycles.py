"""Adapter of rule unlearn_cycles (workflow/rules/unlearn.smk): K sequential requests, then
every cycle's saved model scored as rule evaluate would score it."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.artifacts import describe_files
from unlearnbench.evaluation import EvalConfig, load_scoring_data, record_metrics
from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.provenance import read_json
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import run_stage
from unlearnbench.studies.cycles import unlearn_cycles_stage
from unlearnbench.unlearning.frontier import operating_hyper

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
out = snakemake.output
replicate = ReplicateFiles.from_inputs(snakemake.input, snakemake.wildcards.dataset, params["seed"])
fisher_cfg = FisherConfig(**params["fisher"], seed=params["seed"]) if params["fisher"] else None
# model_files() lists config.json then model.safetensors per cycle: one folder per cycle.
out_dirs = list(dict.fromkeys(str(Path(path).parent) for path in out.models))


def cycles_then_scores(frame):
    # Named input "frontier" only when unlearn.cycle_point is not base (Namedlist: getattr).
    frontier_path = getattr(snakemake.input, "frontier", None)
    frontier = read_json(frontier_path) if frontier_path else None
    hyper, point = operating_hyper(params["hyper"], frontier, params["cycle_point"])
    if not point["reached"]:
        frame.log.warning("%s not reached on this replicate: the strongest grid point", point)
    frame.log.info("cycle setting: %s (%s)", hyper, point)
    result = unlearn_cycles_stage(
        snakemake.wildcards.method,
        hyper,
        replicate,
        fisher_cfg,
        params["trajectory"],
        params["requests"],
        out_dirs,
        device=frame.device,
    )
    # Each cycle's saved model, reloaded from disk, scored exactly as rule evaluate would.
    cfg = EvalConfig.from_settings(params["evaluate"], seed=params["seed"])
    data = load_scoring_data(replicate, cfg, frame.device)
    for cycle, metrics_path in zip(result["cycles"], out.metrics, strict=True):
        record_metrics(metrics_path, cycle["model"], replicate, params["evaluate"], frame, data)
    # The cycles' models live under results/models/: recorded here, by relative path.
    files = describe_files(out.models, relative_to=Path(out.manifest).parent)
    return {**result, "operating_point": point, "files": files}


run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": params["seed"], "eval": params["seed"]},
    cycles_then_scores,
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
