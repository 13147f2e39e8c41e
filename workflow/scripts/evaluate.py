"""Adapter of rules evaluate and evaluate_dp (workflow/rules/evaluate.smk): score each model of
``input.models`` into the metrics file at the same position of ``output.metrics``."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import record_metrics
from unlearnbench.stage import start_stage

params = dict(snakemake.params.items())
# model_files() lists config.json then model.safetensors per model: one folder per model.
model_dirs = list(dict.fromkeys(str(Path(path).parent) for path in snakemake.input.models))

log = start_stage(snakemake.log[0], params, threads=snakemake.threads)
for model_dir, metrics_path in zip(model_dirs, snakemake.output.metrics, strict=True):
    record_metrics(
        metrics_path,
        model_dir,
        snakemake.wildcards.dataset,
        params["evaluate"],
        params["seed"],
        snakemake.input,
        log,
    )
