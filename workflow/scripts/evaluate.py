"""Adapter of rule evaluate and the rules that ``use rule evaluate`` (evaluate_dp,
evaluate_cycle_retrains, evaluate_onion): score each model of ``input.models`` into the
metrics file at the same position of ``output.metrics``, with one ScoringData for the job.
evaluate and evaluate_onion score their retrained model (``input.retrained``) first: its
canary records are what the others' forget quality is measured against (the other rules read
them from the retrained model's metrics file)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import EvalConfig, load_scoring_data, record_metrics
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import logged_failures, start_stage

params = dict(snakemake.params.items())
replicate = ReplicateFiles.from_inputs(snakemake.input, snakemake.wildcards.dataset, params["seed"])
# model_files() lists config.json then model.safetensors per model: one folder per model.
model_dirs = list(dict.fromkeys(str(Path(path).parent) for path in snakemake.input.models))

frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
cfg = EvalConfig.from_settings(params["evaluate"], seed=params["seed"])
with logged_failures(frame.log):  # data shared by every model of the job, read once
    data = load_scoring_data(replicate, cfg, frame.device)
for model_dir, metrics_path in zip(model_dirs, snakemake.output.metrics, strict=True):
    manifest = record_metrics(metrics_path, model_dir, replicate, params["evaluate"], frame, data)
    if data.reference_records is None and Path(model_dir) == replicate.retrained:
        data.reference_records = manifest["canaries"]
